# Inverter CAN protocol: frame bytes, rules, cadence, inverter presence (both interpreters).
from fake_bms import FAULT_NAMES, FakeBms, bit

from bms import events as ev
from bms import mcp2515 as M
from bms.canbus import (
    CAT_CHG_HIGH_T,
    CAT_CHG_OC,
    CAT_DSG_OC,
    CAT_HIGH_V,
    CAT_INTERNAL,
    CAT_LOW_T,
    CAT_LOW_V,
    CAT_SHORT,
    CanProtocol,
    classify,
)
from simlib.inverter import Inverter
from simlib.mcp2515_emu import MCP2515Emu, VirtualBus


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
    p = CanProtocol(can, bms.cfg, bms.events, fault_names=FAULT_NAMES)
    return bms, can, p


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
    bms, can, p = _proto(can_modules=10)
    _reference_state(bms)
    p.encode(bms)
    assert bytes(p.frame(0x351)) == bytes.fromhex("1402740E740ECC01")
    assert bytes(p.frame(0x355))[:4] == bytes.fromhex("1A006400")
    assert bytes(p.frame(0x355))[4:] == bytes.fromhex("280A0000")  # 26.00 % hi-res
    assert bytes(p.frame(0x356)) == bytes.fromhex("021300004A010000")
    assert bytes(p.frame(0x359)) == bytes.fromhex("000000000A504E00")
    assert bytes(p.frame(0x35C)) == bytes.fromhex("C000000000000000")
    assert bytes(p.frame(0x35E)) == b"PYLON   "


def test_negative_current_and_rounding():
    bms, can, p = _proto()
    bms.snap.current_ma = -12345  # discharging 12.3 A
    bms.snap.pack_mv = 52345
    p.encode(bms)
    f = p.frame(0x356)
    assert f[0] | (f[1] << 8) == 5235  # 52.35 V in 0.01 V (half away from zero)
    assert f[2] == 0x85 and f[3] == 0xFF  # -123 = -12.3 A, s16 little-endian
    bms.snap.current_ma = 5049
    p.encode(bms)
    f = p.frame(0x356)
    assert f[2] | (f[3] << 8) == 50


def test_cvl_never_zero():
    bms, can, p = _proto()
    bms.limits.cvl_mv = 0
    bms.snap.pack_mv = 49500
    p.encode(bms)
    f = p.frame(0x351)
    assert f[0] | (f[1] << 8) == 495
    bms.snap.pack_mv = 0  # no measurement either: the configured pack UV limit
    p.encode(bms)
    f = p.frame(0x351)
    assert f[0] | (f[1] << 8) == bms.cfg.pack_uv_mv // 100
    assert f[0] | (f[1] << 8) > 0


def test_charge_not_allowed_lowers_cvl_and_zeroes_ccl():
    bms, can, p = _proto()
    bms.snap.pack_mv = 52000
    bms.limits.cvl_mv = 54000
    bms.prot.chg_allowed = False
    p.encode(bms)
    f = p.frame(0x351)
    assert f[0] | (f[1] << 8) == 520  # CVL = present voltage
    assert f[2] == 0 and f[3] == 0  # CCL 0
    assert f[4] | (f[5] << 8) == 1000  # DCL unchanged 100.0 A
    assert p.frame(0x35C)[0] == 0x40  # discharge only
    bms.prot.chg_allowed = True
    bms.limits.dsg_enable = False
    bms.limits.force_charge = 1
    bms.limits.full_charge_req = True
    p.encode(bms)
    f = p.frame(0x351)
    assert f[4] == 0 and f[5] == 0
    assert p.frame(0x35C)[0] == 0x80 | 0x20 | 0x08
    bms.limits.force_charge = 2
    p.encode(bms)
    assert p.frame(0x35C)[0] == 0x80 | 0x10 | 0x08


def test_limits_always_positive_and_clamped():
    bms, can, p = _proto()
    bms.limits.dcl_ma = -50000  # a wrong sign upstream must never reach the inverter
    bms.limits.ccl_ma = 9000000
    p.encode(bms)
    f = p.frame(0x351)
    assert f[4] == 0 and f[5] == 0
    assert f[2] | (f[3] << 8) == 32767


def test_classify_names():
    assert classify("cell_ov") == CAT_HIGH_V
    assert classify("hw_cell_uv") == CAT_LOW_V
    assert classify("cell_deep_uv") == CAT_LOW_V
    assert classify("chg_oc") == CAT_CHG_OC
    assert classify("dsg_oc") == CAT_DSG_OC
    assert classify("ocd") == CAT_DSG_OC
    assert classify("scd") == CAT_SHORT
    assert classify("chg_ot") == CAT_CHG_HIGH_T
    assert classify("dsg_ut") == CAT_LOW_T
    assert classify("afe") == CAT_INTERNAL
    assert classify("stale") == CAT_INTERNAL


def test_flags_0x359_from_faults_and_warnings():
    bms, can, p = _proto()
    bms.prot.faults = bit("cell_ov") | bit("dsg_ut")
    bms.prot.latched = bit("afe")
    bms.prot.warnings = bit("chg_oc") | bit("cell_uv")
    p.encode(bms)
    f = p.frame(0x359)
    assert f[0] == 0x02 | 0x10  # high V, low T
    assert f[1] == 0x08  # system error (latched AFE fault)
    assert f[2] == 0x04  # warning low V
    assert f[3] == 0x01  # warning charge over-current
    bms.prot.faults = bit("scd")  # short circuit -> discharge over-current bit
    bms.prot.latched = 0
    bms.prot.warnings = 0
    p.encode(bms)
    assert p.frame(0x359)[0] == 0x80 and p.frame(0x359)[1] == 0


def test_victron_profile_frames_and_alarm_pairs():
    bms, can, p = _proto("victron")
    p.poll(bms, 0)
    ids = [c for c, d in can.sent]
    assert ids == [0x351, 0x355, 0x356, 0x359, 0x35A, 0x35C, 0x35E, 0x35F, 0x370, 0x371, 0x373]
    assert all(len(d) == 8 for c, d in can.sent)
    assert bytes(p.frame(0x35A)) == bytes.fromhex("AAAAA202AAAAA202")  # all OK
    assert bytes(p.frame(0x370)) + bytes(p.frame(0x371)) == b"MicroPython BMS "
    assert bytes(p.frame(0x35E)) == b"MPY-BMS "
    bms.prot.faults = bit("cell_ov") | bit("cell_uv")
    p.encode(bms)
    a = p.frame(0x35A)
    assert a[0] == 0xA5  # general raised, high V raised, low V ok, high T ok
    assert a[4] & 0x03 == 0x01  # general warning raised
    assert (a[4] >> 4) & 3 == 1  # low-voltage fault sent as a warning, not an alarm
    f = p.frame(0x373)
    assert f[0] | (f[1] << 8) == 3300 and f[2] | (f[3] << 8) == 3300
    assert f[4] | (f[5] << 8) == 298 and f[6] | (f[7] << 8) == 299  # 25.0 / 26.0 degC in K
    cap = p.frame(0x35F)
    assert cap[4] | (cap[5] << 8) == 100


def test_cadence_one_set_per_second_never_blocks():
    bms, can, p = _proto()
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
    # buffers that never free up: sets are dropped, not queued late
    can.room = 0
    for _ in range(20):
        p.poll(bms, t)
        t += 100
    assert p.tx_dropped >= 6


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
    can.rx.append((0x307, b"\x12\x34\x00\x00VIC\x00"))
    p.poll(bms, 70000)
    assert p.present == 1 and p.victron_gx
    assert bms.events.get(0)[1:] == (ev.EV_INVERTER, 1, 69)
    can.rx.append((0x123, bytes(8)))  # other traffic does not count
    p.poll(bms, 200000)
    assert p.present == 0 and p.rx_other == 1


def test_victron_timeout_configurable():
    bms, can, p = _proto(can_inverter_timeout_ms=600000)
    can.rx.append((0x305, bytes(8)))
    p.poll(bms, 0)
    p.poll(bms, 599000)
    assert p.present == 1


def test_with_emulator_and_simulated_inverter():
    bus = VirtualBus()
    emu = MCP2515Emu(bus)
    inv = Inverter(bus)
    bms = FakeBms()
    drv = M.MCP2515(emu.spi, emu.cs, crystal_hz=8000000, bitrate=500000)
    drv.init()
    p = CanProtocol(drv, bms.cfg, bms.events, fault_names=FAULT_NAMES)
    bms.limits.ccl_ma = 20000
    bms.limits.cvl_mv = 54000
    t = 0
    for _ in range(30):
        bus.set_time(t)
        p.poll(bms, t)
        t += 100
    assert p.present == 1
    assert inv.ccl_ma == 20000 and inv.cvl_mv == 54000 and inv.chg_enable
    assert inv.requested_ma(50000, 49500) == 20000
    assert inv.requested_ma(-200000, 49500) == -100000
    assert inv.requested_ma(50000, 54000) == 0  # at CVL: no charge
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
