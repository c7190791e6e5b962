# Inverter CAN link: frame bytes per profile, the flag rules of issue 12, cadence, inverter
# presence, profile switching (both interpreters). Frames are encoded from the status view
# (bms.status.Status) filled from a FakeBms, as the app fills it.
from fake_bms import FakeBms, bit

from bms import events as ev
from bms import mcp2515 as M
from bms.canbus import CanProtocol
from bms.snapshot import TEMP_INVALID_DC
from simlib.inverter import Inverter
from simlib.mcp2515_emu import MCP2515Emu, VirtualBus

PROFILES = ("pylon", "victron", "sma", "deye", "solark")


class FakeCan:
    """send() accepts `room` frames, then refuses until free() is called; RX from a list."""

    def __init__(self, room=3):
        self.room = room
        self.used = 0
        self.sent = []  # (can_id, bytes)
        self.rx = []

    def free(self):
        self.used = 0

    def send(self, can_id, data, dlc):
        if self.used >= self.room:
            return False
        self.used += 1
        self.sent.append((can_id, bytes(data[:dlc])))
        return True

    def recv_into(self, buf):
        if not self.rx:
            return None
        cid, data = self.rx.pop(0)
        for i in range(len(data)):
            buf[i] = data[i]
        return [cid, len(data)]


def _proto(profile="pylon", **kw):
    bms = FakeBms(can_profile=profile, **kw)
    can = FakeCan(room=10**6)
    p = CanProtocol(can, bms.cfg, bms.events)
    return bms, can, p


def _enc(bms, p):
    p.encode(bms.fill())
    return p


def u16(f, o):
    return f[o] | (f[o + 1] << 8)


def s16(f, o):
    v = u16(f, o)
    return v - 0x10000 if v & 0x8000 else v


def _reference_state(bms):
    lim = bms.limits
    lim.cvl_mv = 53200
    lim.ccl_ma = 370000
    lim.dcl_ma = 370000
    lim.dvl_mv = 46000
    bms.est.soc_pct = 26.0
    bms.est.soh_pct = 100.0
    bms.snap.pack_mv = 48660
    bms.snap.current_ma = 0
    bms.snap.temp_dc[0] = 330
    bms.snap.temp_dc[1] = 200
    bms.snap.update_stats()


def test_reference_samples():
    # The genuine-Pylontech sample frames (diyBMSv4ESP32 main.cpp comment; OpenDTU PR #1213)
    # from the same state. NMC, 15 cells: CVL 53.2 V is inside its maximum (62.25 V).
    bms, can, p = _proto(can_modules=10, chemistry="nmc")
    _reference_state(bms)
    _enc(bms, p)
    assert bytes(p.frame(0x351)) == bytes.fromhex("1402740E740ECC01")
    assert bytes(p.frame(0x355)) == bytes.fromhex("1A00640000000000")  # bytes 4-7 blank
    assert bytes(p.frame(0x356)) == bytes.fromhex("021300004A010000")
    assert bytes(p.frame(0x359)) == bytes.fromhex("000000000A504E00")
    assert bytes(p.frame(0x35C)) == bytes.fromhex("C000000000000000")
    assert bytes(p.frame(0x35E)) == b"PYLON   "
    # deye: the same plus SOC 0.01 % in 0x355 bytes 4-5 and the cycle count in 0x356 6-7
    bms, can, p = _proto("deye", can_modules=10, chemistry="nmc")
    _reference_state(bms)
    bms.est.cycles = 12.7
    _enc(bms, p)
    assert bytes(p.frame(0x355)) == bytes.fromhex("1A006400280A0000")
    assert bytes(p.frame(0x356)) == bytes.fromhex("021300004A010C00")
    assert bytes(p.frame(0x351)) == bytes.fromhex("1402740E740ECC01")
    # solark: pack voltage in 0.1 V (Sol-Ark rev 1.3)
    bms, can, p = _proto("solark", can_modules=10, chemistry="nmc")
    _reference_state(bms)
    _enc(bms, p)
    assert bytes(p.frame(0x356)) == bytes.fromhex("E70100004A010000")  # 48.7 V
    assert u16(p.frame(0x379), 0) == 100  # Ah


def test_every_frame_dlc_8_and_profile_id_sets():
    want = {
        "pylon": (0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E),
        "deye": (0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E),
        "solark": (0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E, 0x379),
        "victron": (0x351, 0x355, 0x356, 0x35A, 0x35E, 0x35F, 0x370, 0x371, 0x373),
        "sma": (0x351, 0x355, 0x356, 0x35A, 0x35E, 0x35F),  # only SMA-documented ids
    }
    for prof in PROFILES:
        bms, can, p = _proto(prof)
        bms.fill()
        p.poll(bms, 0)
        assert tuple(c for c, d in can.sent) == want[prof], prof
        assert all(len(d) == 8 for c, d in can.sent), prof


def test_rounding_never_above_a_limit():
    bms, can, p = _proto()
    bms.snap.current_ma = -12345  # discharging 12.3 A
    bms.snap.pack_mv = 52345
    _enc(bms, p)
    f = p.frame(0x356)
    assert u16(f, 0) == 5235  # 52.35 V in 0.01 V (half away from zero)
    assert f[2] == 0x85 and f[3] == 0xFF  # -123 = -12.3 A, s16 little-endian
    bms.snap.current_ma = 5049
    _enc(bms, p)
    assert u16(p.frame(0x356), 2) == 50
    # limits: CVL/CCL/DCL rounded down (never above what the BMS allows), DVL up
    bms.limits.cvl_mv = 51749
    bms.limits.ccl_ma = 12399
    bms.limits.dcl_ma = 99
    bms.limits.dvl_mv = 43401
    _enc(bms, p)
    f = p.frame(0x351)
    assert (u16(f, 0), u16(f, 2), u16(f, 4), u16(f, 6)) == (517, 123, 0, 435)


def test_cvl_never_zero_and_never_above_the_maximum():
    for prof in PROFILES:
        bms, can, p = _proto(prof)
        cfg = bms.cfg
        for cvl in (0, 1, 100, 40000, 51750, 60000, 200000):
            bms.limits.cvl_mv = cvl
            _enc(bms, p)
            v = u16(p.frame(0x351), 0)
            assert v >= cfg.cells * cfg.cell_uv_release_mv // 100, (prof, cvl, v)
            assert v * 100 <= cfg.cells * cfg.chg_cell_mv, (prof, cvl, v)
            assert bms.status.cvl_mv == max(cfg.cells * cfg.cell_uv_release_mv,
                                            min(cvl, cfg.cells * cfg.chg_cell_mv))


def _charge_requested(prof, p):
    """Whether a frame set asks for charge: b7 or a force/full bit (Pylon family), or a
    CCL above 0 (every profile)."""
    if u16(p.frame(0x351), 2) > 0:
        return True
    f = p.frame(0x35C)
    return f is not None and f[0] & 0xB8 != 0


def test_no_charge_request_while_charging_is_blocked():
    # Issue 12: limits ask for force and full charge, but protection blocks charging or the
    # charge FET is commanded off: CCL 0, b7 clear, no force/full bit, in every profile.
    for prof in PROFILES:
        for case in ("not_allowed", "fet_off", "ccl_zero"):
            bms, can, p = _proto(prof)
            lim = bms.limits
            lim.force_charge = 1
            lim.full_charge_req = True
            if case == "not_allowed":
                bms.prot.chg_allowed = False
            elif case == "fet_off":
                bms.prot.chg_fet = False
            else:
                lim.ccl_ma = 0
            _enc(bms, p)
            st = bms.status
            assert not st.chg_enable and st.ccl_ma == 0 and not st.force_charge
            assert not st.full_charge_req
            assert not _charge_requested(prof, p), (prof, case)
            assert u16(p.frame(0x351), 4) > 0  # discharge still allowed
            if p.frame(0x35C) is not None:
                assert p.frame(0x35C)[0] == 0x40


def test_force_and_full_charge_only_with_charge_enable():
    for prof in ("pylon", "deye", "solark"):
        bms, can, p = _proto(prof)
        bms.limits.force_charge = 1
        bms.limits.full_charge_req = True
        _enc(bms, p)
        # b7 + b6 + b4 (force charge II / Sol-Ark "request 1") + b3; never b5
        assert p.frame(0x35C)[0] == 0x80 | 0x40 | 0x10 | 0x08, prof
        bms.limits.dcl_ma = 0
        _enc(bms, p)
        assert p.frame(0x35C)[0] == 0x80 | 0x10 | 0x08
        assert u16(p.frame(0x351), 4) == 0  # b6 clear <=> DCL 0


def test_flags_0x359_from_the_fault_table():
    bms, can, p = _proto()
    bms.prot.faults = bit("cell_ov") | bit("dsg_ut")
    bms.prot.latched = bit("afe_lost")
    bms.prot.warnings = bit("chg_oc") | bit("cell_uv")
    _enc(bms, p)
    f = p.frame(0x359)
    assert f[0] == 0x02 | 0x10  # high V, low T
    assert f[1] == 0x08 | 0x80  # system error: b1.3 (vendor documents) and b1.7 (bit-7 readers)
    assert f[2] == 0x04  # warning low V
    assert f[3] == 0x01  # warning charge over-current
    bms.prot.faults = bit("scd")  # short circuit -> discharge over-current bit
    bms.prot.latched = 0
    bms.prot.warnings = bit("afe_stale")  # internal warning: b3.3 only, never b3.7
    _enc(bms, p)
    f = p.frame(0x359)
    assert f[0] == 0x80 and f[1] == 0 and f[2] == 0 and f[3] == 0x08
    # every fault of the table maps to a bit, except the warning-only imbalance
    from bms import faults

    for i in range(faults.N_FAULTS):
        bms.prot.faults = 1 << i
        bms.prot.warnings = 0
        _enc(bms, p)
        f = p.frame(0x359)
        assert (f[0] | f[1]) != 0 or faults.NAMES[i] == "imbalance", faults.NAMES[i]
    # Sol-Ark: system error b1.3 only (b1.7 is "N/A" there)
    bms, can, p = _proto("solark")
    bms.prot.faults = bit("afe_config")
    _enc(bms, p)
    assert p.frame(0x359)[1] == 0x08


def test_invalid_temperature_sends_a_valid_value_and_the_flag():
    bms, can, p = _proto()
    _enc(bms, p)
    assert s16(p.frame(0x356), 4) == 260  # hottest of 25.0 / 26.0
    # one sensor open: the hottest valid one, plus the BMS-internal warning at once
    bms.snap.temp_dc[1] = TEMP_INVALID_DC
    bms.snap.update_stats()
    _enc(bms, p)
    assert s16(p.frame(0x356), 4) == 250
    assert p.frame(0x359)[3] & 0x08
    # none valid: the last valid value, never 0x8000
    bms.snap.temp_dc[0] = TEMP_INVALID_DC
    bms.snap.update_stats()
    _enc(bms, p)
    assert s16(p.frame(0x356), 4) == 250 and p.frame(0x359)[3] & 0x08
    # none ever valid: the AFE die temperature, else 25.0 degC
    for prof in PROFILES:
        bms, can, p = _proto(prof)
        bms.snap.temp_dc[0] = bms.snap.temp_dc[1] = TEMP_INVALID_DC
        bms.snap.update_stats()
        bms.status.__init__(bms.snap.n_cells, bms.snap.n_temps)
        _enc(bms, p)
        assert s16(p.frame(0x356), 4) == 250, prof
        bms.snap.die_temp_dc = 312
        bms.status.__init__(bms.snap.n_cells, bms.snap.n_temps)
        _enc(bms, p)
        assert s16(p.frame(0x356), 4) == 312, prof
        if prof in ("victron", "sma"):
            a = p.frame(0x35A)
            assert (a[6] >> 6) & 3 == 1 and a[4] & 3 == 1  # BMS internal + general warning
            if prof == "victron":
                f = p.frame(0x373)
                assert u16(f, 4) == u16(f, 6) == 304  # 31.2 degC in K


def test_victron_and_sma_alarm_pairs():
    for prof in ("victron", "sma"):
        bms, can, p = _proto(prof)
        _enc(bms, p)
        assert bytes(p.frame(0x35A)) == bytes.fromhex("AAAAA202AAAAA202")  # all OK
        bms.prot.faults = bit("cell_ov") | bit("cell_uv")
        _enc(bms, p)
        a = p.frame(0x35A)
        assert a[0] == 0xA5  # general raised, high V raised, low V ok, high T ok
        assert a[4] & 0x03 == 0x01  # general warning raised
        assert (a[4] >> 4) & 3 == 1  # low-voltage fault sent as a warning, not an alarm
        bms.prot.faults = bit("chg_ut")
        _enc(bms, p)
        a = p.frame(0x35A)
        assert (a[1] >> 4) & 3 == 1  # low temperature while charging
    bms, can, p = _proto("victron")
    _enc(bms, p)
    assert bytes(p.frame(0x370)) + bytes(p.frame(0x371)) == b"MicroPython BMS "
    assert bytes(p.frame(0x35E)) == b"MPY-BMS "
    f = p.frame(0x373)
    assert u16(f, 0) == 3300 and u16(f, 2) == 3300
    assert u16(f, 4) == 298 and u16(f, 6) == 299  # 25.0 / 26.0 degC in K
    assert u16(p.frame(0x35F), 4) == 100


def test_sma_values_stay_inside_the_documented_ranges():
    bms, can, p = _proto("sma")
    bms.limits.ccl_ma = 300000  # 300 A: outside SMA's 0-120 A, the SI would ignore it
    bms.limits.dcl_ma = 500000
    bms.limits.dvl_mv = 30000
    _enc(bms, p)
    f = p.frame(0x351)
    assert 410 <= u16(f, 0) <= 630
    assert u16(f, 2) == 1200 and u16(f, 4) == 1200 and u16(f, 6) == 410
    f = p.frame(0x35F)
    assert u16(f, 0) == 0xFFFF and u16(f, 6) == 0xFFFF  # fields without a value: invalid


def test_cadence_one_set_per_second_never_blocks():
    bms, can, p = _proto()
    bms.fill()
    can.room = 3  # three TX buffers
    t = 0
    per_poll = []
    for _ in range(25):  # 2.5 s at 100 ms
        n0 = len(can.sent)
        p.poll(bms, t)
        per_poll.append(len(can.sent) - n0)
        can.free()
        t += 100
    assert per_poll[0] == 3 and per_poll[1] == 3 and per_poll[2] == 0
    assert per_poll[10] == 3 and per_poll[11] == 3 and per_poll[12] == 0
    assert sum(per_poll) == 18 and p.sets == 3
    # buffers that never free up: frames are dropped, not queued late
    can.room = 0
    for _ in range(20):
        p.poll(bms, t)
        t += 100
    assert p.tx_dropped >= 6


def test_nothing_sent_before_the_view_is_ready():
    bms, can, p = _proto()
    bms.status.__init__(bms.snap.n_cells, bms.snap.n_temps)
    bms.status.fill_fast(bms, 0)  # a reading, but no control cycle yet (SOC, limits)
    p.poll(bms, 0)
    assert can.sent == []
    bms.status.fill_slow(bms, 0)
    p.poll(bms, 10)
    assert len(can.sent) == 6


def test_inverter_presence_and_timeout():
    bms, can, p = _proto()
    assert not p.inverter_present(0)
    p.poll(bms, 0)
    assert bms.events.count == 0
    can.rx.append((0x305, bytes(8)))
    p.poll(bms, 1000)
    assert p.inverter_present(1000) and p.present == 1
    assert bms.events.get(0)[1:] == (ev.EV_INVERTER, 1, 0)
    p.poll(bms, 60000)
    assert p.inverter_present(60000)
    p.poll(bms, 61001)
    assert not p.inverter_present(61001) and p.present == 0
    assert bms.events.get(0)[1:] == (ev.EV_INVERTER, 0, 60)
    n_sent = len(can.sent)
    p.poll(bms, 62100)
    assert len(can.sent) > n_sent  # keeps sending while the inverter is away
    can.rx.append((0x305, bytes(8)))
    p.poll(bms, 70000)
    assert p.present == 1
    assert bms.events.get(0)[1:] == (ev.EV_INVERTER, 1, 69)
    can.rx.append((0x123, bytes(8)))  # other traffic does not count
    can.rx.append((0x307, b"\x12\x34\x00\x00VIC\x00"))  # nor 0x307 for a Pylon inverter
    p.poll(bms, 200000)
    assert p.present == 0 and p.rx_other == 2 and not p.victron_gx


def test_victron_gx_and_timeout_configurable():
    bms, can, p = _proto("victron", can_inverter_timeout_ms=600000)
    can.rx.append((0x307, b"\x12\x34\x00\x00VIC\x00"))
    p.poll(bms, 0)
    assert p.present == 1 and p.victron_gx
    p.poll(bms, 599000)
    assert p.present == 1
    bms, can, p = _proto("sma")
    can.rx.append((0x306, bytes(8)))
    p.poll(bms, 0)
    assert p.present == 1
    p.poll(bms, 70000)
    assert p.present == 0
    can.rx += [(0x305, bytes(8)), (0x306, bytes(8)), (0x307, bytes(8))]  # one SI second
    p.poll(bms, 90000)
    assert p.present == 1 and bms.events.get(0)[1:] == (ev.EV_INVERTER, 1, 90)


def test_profile_switch_at_run_time():
    bms, can, p = _proto()
    p.poll(bms, 0)
    assert p.name == "pylon" and len(can.sent) == 6
    bms.cfg.set("can_profile", "sma")
    can.sent = []
    p.poll(bms, 1000)
    assert p.name == "sma"
    assert [c for c, d in can.sent] == [0x351, 0x355, 0x356, 0x35A, 0x35E, 0x35F]


def test_with_emulator_and_simulated_inverter():
    for prof in PROFILES:
        bus = VirtualBus()
        emu = MCP2515Emu(bus)
        inv = Inverter(bus, profile=prof)
        bms = FakeBms(can_profile=prof)
        drv = M.MCP2515(emu.spi, emu.cs, crystal_hz=8000000, bitrate=500000)
        drv.init()
        p = CanProtocol(drv, bms.cfg, bms.events)
        bms.limits.ccl_ma = 20000
        bms.limits.cvl_mv = 51700
        bms.fill()
        t = 0
        for _ in range(30):
            bus.set_time(t)
            p.poll(bms, t)
            t += 100
        assert p.present == 1, prof
        assert inv.ccl_ma == 20000 and inv.cvl_mv == 51700 and inv.chg_enable, prof
        assert inv.pack_mv == 49500, (prof, inv.pack_mv)
        assert inv.requested_ma(50000, 49500) == 20000
        assert inv.requested_ma(-200000, 49500) == -100000
        assert inv.requested_ma(50000, 51700) == 0  # at CVL: no charge
        if prof != "pylon":
            continue
        # inverter switched off: the pack keeps running, nothing blocks, frames get aborted
        inv.on = False
        for _ in range(700):  # 70 s
            bus.set_time(t)
            p.poll(bms, t)
            t += 100
        assert p.present == 0
        assert drv.tec == 128 and drv.aborts > 0
        assert bms.events.get(0)[1:3] == (ev.EV_INVERTER, 0)
        assert inv.requested_ma(50000, 49500) == 0
        inv.on = True
        for _ in range(30):
            bus.set_time(t)
            p.poll(bms, t)
            t += 100
        assert p.present == 1 and inv.limits_valid()
