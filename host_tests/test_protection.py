# Tests of bms.protection (CPython and MicroPython): every fault sets after its delay and
# releases after its hysteresis + release delay, direction blocking, body diode, retry and
# latch, boot, AFE loss, SYS_STAT handling, events, and a seeded random sequence runner that
# checks the safety invariants on every step (the MicroPython counterpart of
# test_cpy_protection_props.py, which imports Rig and Invariants from here).
import random

from bms import events as ev
from bms import faults as ft
from bms import protection
from bms.afe import (
    CFG_ERR,
    TRIP_DEVICE,
    TRIP_OCD,
    TRIP_OV,
    TRIP_OVRD,
    TRIP_SCD,
    TRIP_UV,
)
from bms.config import Config
from bms.events import EventLog
from bms.protection import (
    FAULT_DIRS,
    FAULT_NAMES,
    MASK_CHG,
    MASK_DSG,
    STATE_BOOT,
    STATE_FAULT,
    STATE_LATCHED,
    STATE_NAMES,
    STATE_NORMAL,
    STATE_SHUTDOWN,
    STATE_STANDBY,
    Protection,
    fault_names,
)
from bms.snapshot import (
    FLAG_CELLS_VALID,
    FLAG_CURRENT_VALID,
    FLAG_PACK_VALID,
    FLAG_TEMPS_VALID,
    TEMP_INVALID_DC,
    Snapshot,
)

ALL = FLAG_CELLS_VALID | FLAG_PACK_VALID | FLAG_CURRENT_VALID | FLAG_TEMPS_VALID
CYCLE = 250


def bit(name):
    return 1 << FAULT_NAMES.index(name)


class Rig:
    """A snapshot, a config, a log and Protection, driven like the app does every 250 ms:
    read (the driver fills the snapshot), update(), then the driver's ack_trips(prot.ack),
    modelled here as clearing the acknowledged trips in the snapshot (the chip's hold-off
    times are the driver's business and tested with the driver)."""

    def __init__(self, cells=4, n_temps=2, chemistry="lfp", **over):
        self.cfg = Config(chemistry, cells, 100000, **over)
        self.ev = EventLog(512)
        self.snap = Snapshot(cells, n_temps)
        self.p = Protection(self.cfg, self.ev)
        self.now = 0
        self.mv = 3300
        self.set_cells(3300)
        self.set_temps(250)
        self.snap.flags = ALL
        self.ack_log = 0  # trips protection acknowledged, accumulated
        self.new_read = False  # the last step read the AFE successfully
        self.trips_in = 0  # trips that read reported
        self._flags = None  # flags of the last good read while the driver reports none

    def set_cells(self, mv, idx=None, pack=None):
        s = self.snap
        for i in range(s.n_cells):
            if idx is None or i == idx:
                s.cell_mv[i] = mv
        total = 0
        for i in range(s.n_cells):
            total += s.cell_mv[i]
        s.pack_mv = total if pack is None else pack

    def set_flags(self, flags):
        """The flags the next good read reports."""
        if self._flags is not None:
            self._flags = flags
        self.snap.flags = flags

    def set_temps(self, dc, idx=None):
        s = self.snap
        for i in range(s.n_temps):
            if idx is None or i == idx:
                s.temp_dc[i] = dc

    def read(self, ok=True, fresh=True, cfg_err=0):
        """What the driver's read() does to the snapshot: a good read (fresh), a bus failure
        (ok=False: errors counted, flags 0), a refused read (cfg_err: the chip lost its
        configuration; flags 0, no new seq), or no read at all (fresh=False)."""
        s = self.snap
        if not ok or cfg_err:
            if self._flags is None:
                self._flags = s.flags
            s.flags = 0
            if not ok:
                s.errors += 1
                s.error_total += 1
            else:
                s.errors = 0
                s.cfg_err = CFG_ERR | cfg_err
        elif fresh:
            if self._flags is not None:
                if s.flags == 0:  # (unless the test set the flags of this read itself)
                    s.flags = self._flags
                self._flags = None
            s.errors = 0
            s.cfg_err = 0
            s.seq += 1
            s.t_ms = self.now
            s.update_stats()

    def step(self, n=1, dt=CYCLE, ok=True, fresh=True, cfg_err=0):
        """n cycles: a read (good, failed, refused, or none at all), update(), then the
        driver clears the trips protection acknowledged."""
        p = self.p
        s = self.snap
        for _ in range(n):
            self.now += dt
            self.read(ok, fresh, cfg_err)
            self.new_read = ok and fresh and not cfg_err
            self.trips_in = s.trips  # what the chip reports (as of the last good read)
            p.update(s, self.now)
            # bms.app: afe.ack_trips(prot.ack) after a read that succeeded (not refused)
            if p.ack and s.errors == 0 and s.cfg_err == 0:
                s.trips &= ~p.ack
                self.ack_log |= p.ack
        return p

    def boot(self):
        self.step()
        assert self.p.state == STATE_NORMAL, STATE_NAMES[self.p.state]
        assert self.p.chg_fet and self.p.dsg_fet
        return self

    def codes(self, code):
        return [e for e in self.ev.to_list() if e[1] == code]

    def set_events(self, name):
        """EV_FAULT_SET entries of fault `name`."""
        i = FAULT_NAMES.index(name)
        return [e for e in self.codes(ev.EV_FAULT_SET) if e[2] == i]


def steps_to(rig, pred, limit=2000):
    """Cycles until pred() holds (after a step); fails beyond limit."""
    for k in range(1, limit + 1):
        rig.step()
        if pred():
            return k
    raise AssertionError("condition not reached")


# --- basic API ----------------------------------------------------------------------------


def test_names_and_dirs():
    assert len(FAULT_NAMES) == len(FAULT_DIRS) == 25
    # names and bit numbers are an interface (event log, Modbus, CAN): stable order
    assert FAULT_NAMES == (
        "cell_ov", "cell_uv", "pack_ov", "pack_uv", "chg_oc", "dsg_oc", "hw_ocd", "scd",
        "chg_ot", "chg_ut", "dsg_ot", "dsg_ut", "fet_ot", "imbalance", "temp_sensor",
        "cell_implausible", "sum_mismatch", "afe_lost", "afe_stale", "xready", "ovrd",
        "hw_ov", "hw_uv", "deep_uv", "afe_config")
    assert fault_names(0) == ""
    assert fault_names(bit("cell_ov") | bit("scd")) == "cell_ov|scd"
    assert MASK_CHG & bit("cell_ov") and not MASK_DSG & bit("cell_ov")
    assert MASK_DSG & bit("cell_uv") and not MASK_CHG & bit("cell_uv")
    assert not (MASK_CHG | MASK_DSG) & bit("imbalance")
    assert len(STATE_NAMES) == 6


def test_boot_fets_off_until_complete_measurement():
    r = Rig()
    p = r.p
    assert p.state == STATE_BOOT and not p.chg_fet and not p.dsg_fet
    for missing in (FLAG_CELLS_VALID, FLAG_PACK_VALID, FLAG_TEMPS_VALID, FLAG_CURRENT_VALID):
        r.snap.flags = ALL & ~missing
        r.step()
        assert p.state == STATE_BOOT and not p.chg_fet and not p.dsg_fet
    r.step(ok=False)
    assert p.state == STATE_BOOT and not p.chg_fet and not p.dsg_fet
    r.snap.flags = ALL
    r.step()  # afe_lost from the failed read must release first
    assert not p.chg_fet and not p.dsg_fet
    steps_to(r, lambda: p.state == STATE_NORMAL)
    assert p.chg_fet and p.dsg_fet and p.chg_allowed and p.dsg_allowed
    assert p.faults == 0
    st = r.codes(ev.EV_STATE)
    assert st[0][2] == STATE_BOOT


def test_boot_first_read_complete_goes_normal_at_once():
    r = Rig().boot()
    assert r.codes(ev.EV_STATE) == [(CYCLE, ev.EV_STATE, STATE_BOOT, STATE_NORMAL)]


def test_boot_implausible_reading_keeps_fets_off_and_judges_nothing():
    """BOOT: nothing but afe_lost/afe_config is judged before the first complete, plausible
    reading (an open thermistor, an implausible cell, a sum mismatch keep the pack in BOOT
    with both FETs off); that reading is then judged with zero set delays."""
    for bad in ("temp", "cell", "sum"):
        r = Rig()
        if bad == "temp":
            r.set_temps(TEMP_INVALID_DC, 1)
        elif bad == "cell":
            r.set_cells(5200, 2, pack=13200)
        else:
            r.set_cells(3300, pack=14000)
        p = r.p
        for _ in range(40):  # 10 s: longer than every set delay
            r.step()
            assert p.state == STATE_BOOT, bad
            assert not p.chg_fet and not p.dsg_fet and not p.good, bad
            assert p.faults == 0 and p.warnings == 0 and p.latched == 0, bad
        assert [e[1] for e in r.ev.to_list()] == [], bad
        r.set_temps(250)
        r.set_cells(3300)
        r.set_cells(3700, 0)  # now plausible and complete, and a cell above cell_ov_mv
        r.step()
        assert p.good and p.state == STATE_FAULT, bad
        assert p.faults == bit("cell_ov") and not p.chg_fet and p.dsg_fet, bad


def test_boot_faults_without_delay():
    r = Rig()
    r.set_cells(3700)  # above cell_ov_mv at power-up: the charge FET never closes
    r.step()
    p = r.p
    assert p.faults & bit("cell_ov") and p.state == STATE_FAULT
    assert not p.chg_fet and p.dsg_fet
    r = Rig()
    r.set_temps(-50)  # below 0 degC: no charging from the first cycle on
    r.step()
    assert r.p.faults & bit("chg_ut") and not r.p.chg_fet and r.p.dsg_fet


# --- every fault: delay, hysteresis band, release ------------------------------------------


# Temperature faults: temp_delay_ms counts from the true crossing and includes the AFE's
# temperature conversion period, so the debounce after the first reading is shorter.
TEMP_D = max(0, Config().temp_delay_ms - protection.TEMP_SAMPLE_MS)


def check_fault(r, name, trip, band, release, delay_ms, chg_after, dsg_after,
                release_ms=None):
    """trip(): make the condition true; band(): inside the hysteresis (must not release);
    release(): past the release level. Checks the delay, the FETs and the events."""
    p = r.p
    b = bit(name)
    trip()
    n = delay_ms // CYCLE
    for _ in range(n):  # first sighting at t0, then n-1 more cycles: not yet
        r.step()
        assert not p.faults & b, name
    r.step()  # t0 + delay
    assert p.faults & b, name
    assert p.chg_fet == chg_after and p.dsg_fet == dsg_after, (name, p.chg_fet, p.dsg_fet)
    assert p.state == STATE_FAULT
    # (other faults may trip in the same cycle, e.g. dsg_ot with an out-of-range sensor)
    assert [e for e in r.codes(ev.EV_FAULT_SET)
            if e[2] == FAULT_NAMES.index(name) and e[0] == r.now], name
    if band is not None:
        band()
        r.step(40)
        assert p.faults & b, name
    release()
    rel = r.cfg.release_delay_ms if release_ms is None else release_ms
    t_rel = r.now + CYCLE  # the first reading past the release level
    for _ in range(rel // CYCLE):
        r.step()
        assert p.faults & b, (name, "released %d ms after the first reading past the "
                              "release level, release delay %d ms" % (r.now - t_rel, rel))
    r.step()
    assert not p.faults & b, name
    assert [e for e in r.codes(ev.EV_FAULT_CLEAR)
            if e[2] == FAULT_NAMES.index(name) and e[0] == r.now], name


def test_cell_ov():
    r = Rig().boot()
    check_fault(r, "cell_ov", lambda: r.set_cells(3660, 2), lambda: r.set_cells(3500, 2),
                lambda: r.set_cells(3440, 2), 2000, False, True)
    assert r.p.state == STATE_NORMAL and r.p.chg_fet


def test_cell_ov_exactly_at_limit_is_not_a_fault():
    r = Rig().boot()
    r.set_cells(3650, 1)
    r.step(20)
    assert not r.p.faults & bit("cell_ov")


def test_cell_uv():
    r = Rig().boot()
    check_fault(r, "cell_uv", lambda: r.set_cells(2690, 0), lambda: r.set_cells(2900, 0),
                lambda: r.set_cells(3010, 0), 2000, True, False)


def test_pack_ov():
    r = Rig(pack_ov_mv=13600).boot()
    check_fault(r, "pack_ov", lambda: r.set_cells(3450), lambda: r.set_cells(3350),
                lambda: r.set_cells(3290), 2000, False, True)


def test_pack_uv():
    r = Rig(pack_uv_mv=12000).boot()
    check_fault(r, "pack_uv", lambda: r.set_cells(2950), lambda: r.set_cells(3050),
                lambda: r.set_cells(3150), 2000, True, False)


def test_chg_ot():
    r = Rig().boot()
    check_fault(r, "chg_ot", lambda: r.set_temps(460, 0), lambda: r.set_temps(430, 0),
                lambda: r.set_temps(410, 0), TEMP_D, False, True)


def test_chg_ut_no_charging_below_zero():
    r = Rig().boot()
    check_fault(r, "chg_ut", lambda: r.set_temps(-10, 1), lambda: r.set_temps(20, 1),
                lambda: r.set_temps(40, 1), TEMP_D, False, True)


def test_dsg_ot():
    r = Rig().boot()
    check_fault(r, "dsg_ot", lambda: r.set_temps(560), lambda: r.set_temps(530),
                lambda: r.set_temps(400), TEMP_D, False, False)


def test_dsg_ut():
    r = Rig().boot()
    check_fault(r, "dsg_ut", lambda: r.set_temps(-210), lambda: r.set_temps(-180),
                lambda: r.set_temps(100), TEMP_D, False, False)


def test_fet_ot_from_die_temperature():
    r = Rig().boot()

    def die(v):
        r.snap.die_temp_dc = v

    check_fault(r, "fet_ot", lambda: die(810), lambda: die(780), lambda: die(760), TEMP_D,
                False, False)
    die(TEMP_INVALID_DC)  # no sensor: never a fault
    r.step(20)
    assert r.p.faults == 0


def test_fet_ot_from_optional_board_sensor():
    r = Rig()
    r.snap.fet_temp_dc = 300  # a snapshot with a board FET sensor
    r.boot()
    check_fault(r, "fet_ot", lambda: setattr(r.snap, "fet_temp_dc", 900), None,
                lambda: setattr(r.snap, "fet_temp_dc", 700), TEMP_D, False, False)


def test_temp_sensor_open_or_shorted():
    r = Rig().boot()
    check_fault(r, "temp_sensor", lambda: r.set_temps(TEMP_INVALID_DC, 1), None,
                lambda: r.set_temps(250, 1), TEMP_D, False, False)
    check_fault(r, "temp_sensor", lambda: r.set_temps(1400, 0), None,
                lambda: r.set_temps(250, 0), TEMP_D, False, False)


def test_cell_implausible():
    r = Rig().boot()
    check_fault(r, "cell_implausible", lambda: r.set_cells(0, 3, pack=9900), None,
                lambda: r.set_cells(3300, 3), 1000, False, False)
    # (cell_uv also trips on the 0 mV reading after its own delay: the cell may really be low)


def test_sum_mismatch():
    r = Rig().boot()
    check_fault(r, "sum_mismatch", lambda: r.set_cells(3300, pack=13600), None,
                lambda: r.set_cells(3300), 1000, False, False)


# --- over-current: retry, then latch ------------------------------------------------------


def test_chg_oc_retry_then_latch():
    r = Rig().boot()
    p = r.p
    b = bit("chg_oc")
    for trip in range(4):
        r.snap.current_ma = 60000
        r.step(8)
        assert not p.faults & b
        r.step()
        assert p.faults & b and not p.chg_fet
        r.snap.current_ma = 0
        if trip < 3:
            assert not p.latched and p.dsg_fet
            r.step(30000 // CYCLE - 1)
            assert p.faults & b
            r.step()
            assert not p.faults & b and p.chg_fet
    assert p.latched & b and p.state == STATE_LATCHED
    assert not p.chg_fet and not p.dsg_fet
    r.step(1000)
    assert p.latched & b and not p.chg_fet and not p.dsg_fet
    assert r.codes(ev.EV_LATCH)[-1][2] == FAULT_NAMES.index("chg_oc")
    assert p.reset_latched(r.now)
    assert r.codes(ev.EV_LATCH_RESET)[-1][2] == b
    r.step()
    assert p.state == STATE_NORMAL and p.chg_fet and p.dsg_fet


def test_dsg_oc_holds_while_current_flows():
    r = Rig().boot()
    p = r.p
    r.snap.current_ma = -110000
    r.step(9)
    assert p.faults & bit("dsg_oc") and not p.dsg_fet and p.chg_fet
    r.step(200)  # current still flowing (welded FET?): no retry
    assert p.faults & bit("dsg_oc")
    r.snap.current_ma = 0
    r.step()
    assert not p.faults & bit("dsg_oc") and p.dsg_fet


def test_scd_retry_then_latch_and_reset():
    r = Rig(oc_retry_max=2, oc_retry_ms=5000).boot()
    p = r.p
    b = bit("scd")
    for trip in range(3):
        r.snap.trips |= TRIP_SCD
        r.step()
        assert p.faults & b and not p.chg_fet and not p.dsg_fet
        if trip == 2:
            break
        assert p.ack == 0
        r.step(5000 // CYCLE - 1)
        assert p.faults & b and p.ack == 0 and r.snap.trips & TRIP_SCD
        r.step()
        assert p.ack == TRIP_SCD  # acknowledged at the retry time, not before
        assert not p.faults & b and p.chg_fet and p.dsg_fet
    assert p.latched & b and p.state == STATE_LATCHED
    r.step(100)
    assert p.ack == 0 and r.snap.trips & TRIP_SCD  # left set while latched
    assert not r.ack_log & ~TRIP_SCD
    assert not p.chg_fet and not p.dsg_fet
    assert p.reset_latched(r.now)
    r.step()  # the stale SCD trip is acknowledged, not judged as a new trip
    assert p.ack & TRIP_SCD and p.state == STATE_NORMAL and p.dsg_fet
    assert p.trips[FAULT_NAMES.index("scd")] == 0
    r.step(10)
    assert p.faults == 0


def test_hw_ocd_blocks_discharge_only_and_retries():
    r = Rig().boot()
    p = r.p
    r.snap.trips |= TRIP_OCD
    r.step()
    assert p.faults & bit("hw_ocd") and p.chg_fet and not p.dsg_fet
    assert p.ack == 0
    t0 = r.now
    steps_to(r, lambda: not p.faults & bit("hw_ocd"))
    assert r.now - t0 == r.cfg.oc_retry_ms
    assert p.ack == TRIP_OCD and r.ack_log == TRIP_OCD and p.dsg_fet
    assert p.trips[FAULT_NAMES.index("hw_ocd")] == 1


def test_retry_counter_decays_after_quiet_period():
    r = Rig(oc_retry_ms=1000, oc_retry_max=1).boot()
    p = r.p
    i = FAULT_NAMES.index("scd")
    r.snap.trips |= TRIP_SCD
    r.step()
    r.step(4)
    assert not p.faults & bit("scd") and p.trips[i] == 1
    r.step(4 * 1000 // CYCLE)  # 4 * oc_retry_ms without a trip
    assert p.trips[i] == 0
    r.snap.trips |= TRIP_SCD
    r.step(5)
    assert not p.latched and p.trips[i] == 1  # would have latched without the decay
    r.snap.trips |= TRIP_SCD
    r.step()
    assert p.latched & bit("scd")


# --- deep discharge: latched, reset refused while it stands -------------------------------


def test_deep_uv_latches_and_reset_refused_while_low():
    r = Rig().boot()
    p = r.p
    r.set_cells(1900, 0)
    r.step(40)
    assert not p.faults & bit("deep_uv")
    r.step(1)
    assert p.latched & bit("deep_uv") and p.state == STATE_LATCHED
    assert not p.chg_fet and not p.dsg_fet
    assert not p.reset_latched(r.now)
    assert not r.codes(ev.EV_LATCH_RESET)
    r.set_cells(2100, 0)
    r.step()
    assert p.reset_latched(r.now)
    r.step()
    assert p.state == STATE_FAULT and p.faults & bit("cell_uv") and not p.latched
    assert p.chg_fet and not p.dsg_fet


def test_restore_latched_after_reboot():
    r = Rig()
    r.p.restore_latched(bit("deep_uv") | bit("cell_ov"), 0)
    r.step()
    assert r.p.latched == bit("deep_uv") and r.p.state == STATE_LATCHED
    assert not r.p.chg_fet and not r.p.dsg_fet


# --- the AFE's own trips (bms.afe TRIP_*) and their acknowledgement ----------------------------


def test_hw_ov_acked_only_on_software_release():
    r = Rig().boot()
    p = r.p
    r.set_cells(3700, 1)
    r.snap.trips |= TRIP_OV
    r.step()
    assert p.faults & bit("hw_ov") and not p.chg_fet and p.dsg_fet
    assert p.ack == 0
    r.set_cells(3500, 1)  # below OV, above the release level: the trip stays
    r.step(40)
    assert r.snap.trips & TRIP_OV and not r.ack_log & TRIP_OV
    r.set_cells(3400, 1)
    steps_to(r, lambda: not p.faults & bit("hw_ov"))
    assert p.ack == TRIP_OV  # acknowledged in the cycle hw_ov released
    assert not r.snap.trips & TRIP_OV
    steps_to(r, lambda: not p.faults & (bit("hw_ov") | bit("cell_ov")))
    assert p.chg_fet


def test_hw_uv_acked_only_on_software_release():
    r = Rig().boot()
    p = r.p
    r.snap.trips |= TRIP_UV
    r.set_cells(2600, 0)
    r.step()
    assert p.faults & bit("hw_uv") and not p.dsg_fet and p.chg_fet
    r.step(40)
    assert r.snap.trips & TRIP_UV and not r.ack_log & TRIP_UV
    r.set_cells(3100, 0)
    steps_to(r, lambda: not p.faults & bit("hw_uv"))
    assert p.ack == TRIP_UV
    steps_to(r, lambda: p.faults == 0)
    assert r.ack_log == TRIP_UV and p.dsg_fet


def test_xready_sets_at_once_and_is_acked_once():
    r = Rig().boot()
    p = r.p
    r.snap.trips |= TRIP_DEVICE
    r.step()
    assert p.faults & bit("xready") and not p.chg_fet and not p.dsg_fet
    assert p.ack == TRIP_DEVICE  # once, when the fault sets (the driver holds it off)
    assert r.set_events("xready")[-1][0] == r.now
    assert r.codes(ev.EV_AFE_STAT)[-1] == (r.now, ev.EV_AFE_STAT, TRIP_DEVICE, TRIP_DEVICE)
    # the chip keeps reporting it (its hold-off): no second acknowledgement, FETs stay off
    for _ in range(20):
        r.snap.trips |= TRIP_DEVICE
        r.step()
        assert p.ack == 0 and p.faults & bit("xready")
        assert not p.chg_fet and not p.dsg_fet
    r.snap.trips &= ~TRIP_DEVICE  # the driver cleared it after the chip's hold-off
    # released once reads without the trip have held for release_delay_ms
    for _ in range(r.cfg.release_delay_ms // CYCLE):
        r.step()
        assert p.faults & bit("xready") and not p.chg_fet and not p.dsg_fet
    r.step()
    assert not p.faults & bit("xready")
    assert p.chg_fet and p.dsg_fet and p.state == STATE_NORMAL
    assert len(r.codes(ev.EV_AFE_STAT)) == 1


def test_ovrd_sets_at_once_and_is_acked_once():
    r = Rig().boot()
    p = r.p
    r.snap.trips |= TRIP_OVRD
    r.step()
    assert p.faults & bit("ovrd") and not p.chg_fet and not p.dsg_fet
    assert p.ack == TRIP_OVRD
    for _ in range(40):
        r.snap.trips |= TRIP_OVRD  # still held by the external protector
        r.step()
        assert p.ack == 0 and not p.chg_fet and not p.dsg_fet
    assert r.ack_log == TRIP_OVRD
    r.snap.trips &= ~TRIP_OVRD
    steps_to(r, lambda: p.faults == 0)
    assert p.chg_fet and p.dsg_fet


def test_device_trip_again_after_release_is_acked_again():
    r = Rig().boot()
    p = r.p
    r.snap.trips |= TRIP_DEVICE
    r.step()
    steps_to(r, lambda: p.faults == 0)
    r.snap.trips |= TRIP_DEVICE
    r.step()
    assert p.faults & bit("xready") and p.ack == TRIP_DEVICE
    assert len(r.codes(ev.EV_AFE_STAT)) == 2


def test_ack_rules_per_trip():
    """prot.ack holds only trips reported at this read and handled in this cycle: OV/UV at
    the software release of cell OV/UV, OCD/SCD at the retry time, DEVICE/OVRD once when
    their fault sets."""
    cases = (
        (TRIP_OV, "hw_ov", lambda r: r.set_cells(3700, 0), lambda r: r.set_cells(3300, 0)),
        (TRIP_UV, "hw_uv", lambda r: r.set_cells(2600, 0), lambda r: r.set_cells(3300, 0)),
        (TRIP_OCD, "hw_ocd", None, None),
        (TRIP_SCD, "scd", None, None),
        (TRIP_DEVICE, "xready", None, None),
        (TRIP_OVRD, "ovrd", None, None),
    )
    for trip, name, cause, fix in cases:
        r = Rig(oc_retry_ms=2000).boot()
        p = r.p
        if cause:
            cause(r)
        r.snap.trips |= trip
        r.step()
        assert p.faults & bit(name), name
        at_once = trip in (TRIP_DEVICE, TRIP_OVRD)
        assert p.ack == (trip if at_once else 0), name
        acks = [r.now] if at_once else []
        if fix:
            fix(r)
        for _ in range(80):
            if not r.snap.trips & trip and not at_once:
                break
            if at_once and len(acks) == 1 and r.now < 3000 + acks[0]:
                r.snap.trips |= trip  # keeps being reported for a while
            r.step()
            assert not p.ack & ~trip, name  # never another trip than the one reported
            if p.ack:
                acks.append(r.now)
                # acknowledged in the cycle the fault released (or, DEVICE/OVRD, set)
                assert at_once or not p.faults & bit(name), name
        assert len(acks) == 1, (name, acks)
        if trip in (TRIP_OCD, TRIP_SCD):
            assert acks[0] == CYCLE * 2 + 2000, (name, acks)


def test_no_ack_without_a_reported_trip():
    r = Rig().boot()
    r.step(50)
    assert r.ack_log == 0
    # trips are judged on a new read only: a failed or a missing read acknowledges nothing
    r.snap.trips = TRIP_OV
    r.step(3, ok=False)
    r.step(2, fresh=False)
    assert r.ack_log == 0 and not r.p.faults & bit("hw_ov")


# --- AFE lost / stale -----------------------------------------------------------------------


def test_afe_lost_both_off_in_the_same_cycle():
    r = Rig().boot()
    p = r.p
    r.step(ok=False)
    assert p.faults & bit("afe_lost") and not p.chg_fet and not p.dsg_fet
    r.step(3, ok=False)
    assert not p.chg_fet and not p.dsg_fet
    r.step()
    assert not p.chg_fet
    steps_to(r, lambda: p.faults == 0)
    assert p.chg_fet and p.dsg_fet


def test_afe_stale():
    r = Rig().boot()
    p = r.p
    for _ in range(r.cfg.stale_ms // CYCLE):  # no new read; data up to stale_ms old is used
        r.step(fresh=False)
        assert p.chg_fet and p.dsg_fet
    r.step(fresh=False)
    assert p.faults & bit("afe_stale") and not p.chg_fet and not p.dsg_fet
    steps_to(r, lambda: p.faults == 0)


def test_incomplete_measurement_becomes_stale():
    r = Rig().boot()
    p = r.p
    r.snap.flags = ALL & ~FLAG_CELLS_VALID
    n = steps_to(r, lambda: not p.chg_fet)
    assert n * CYCLE <= r.cfg.stale_ms + CYCLE
    assert p.faults & bit("afe_stale") and not p.dsg_fet


# --- direction blocking and body diode ------------------------------------------------------


def test_body_diode_charge_fet_during_discharge():
    r = Rig().boot()
    p = r.p
    r.set_cells(3700, 0)
    r.step(9)
    assert p.faults & bit("cell_ov") and not p.chg_fet and p.dsg_fet
    r.snap.current_ma = -2000
    r.step()
    assert p.chg_fet and not p.chg_allowed  # closed for the discharge
    r.snap.current_ma = -600  # above the off level (body_diode_ma / 2): stays
    r.step()
    assert p.chg_fet
    r.snap.current_ma = -400
    r.step()
    assert not p.chg_fet
    r.snap.current_ma = -2000
    r.step()
    assert p.chg_fet
    r.snap.current_ma = 100  # a charge current: off in this very cycle
    r.step()
    assert not p.chg_fet


def test_body_diode_for_charge_temperature():
    r = Rig().boot()
    r.set_temps(-50)
    r.snap.current_ma = -5000
    r.step(9)
    assert r.p.faults & bit("chg_ut") and r.p.chg_fet and not r.p.chg_allowed


def test_body_diode_discharge_fet_during_charge():
    r = Rig().boot()
    p = r.p
    r.set_cells(2600, 3)
    r.step(9)
    assert not p.dsg_fet and p.chg_fet
    r.snap.current_ma = 3000
    r.step()
    assert p.dsg_fet and not p.dsg_allowed
    r.snap.current_ma = -10
    r.step()
    assert not p.dsg_fet


def test_no_body_diode_for_other_faults():
    # charge blocked also by chg_oc: no body diode
    r = Rig().boot()
    p = r.p
    r.set_cells(3700, 0)
    r.snap.current_ma = 60000
    r.step(9)
    r.snap.current_ma = -5000
    r.step()
    assert p.faults & bit("chg_oc") and not p.chg_fet
    # SCD / AFE lost / latched: nothing closes
    for setup in ("scd", "lost", "latched"):
        r = Rig().boot()
        p = r.p
        r.set_cells(3700, 0)
        r.snap.current_ma = -5000
        r.step(9)
        assert p.chg_fet  # body diode active
        if setup == "scd":
            r.snap.trips |= TRIP_SCD
            r.step()
        elif setup == "lost":
            r.step(ok=False)
        else:
            r.set_cells(1900, 1)
            r.step(41)
            assert p.latched
        assert not p.chg_fet and not p.dsg_fet, setup


def test_user_enables_and_standby():
    r = Rig().boot()
    p = r.p
    p.chg_enable = False
    r.step()
    assert p.state == STATE_NORMAL and not p.chg_fet and p.dsg_fet
    p.dsg_enable = False
    r.step()
    assert p.state == STATE_STANDBY and not p.chg_fet and not p.dsg_fet
    p.chg_enable = p.dsg_enable = True
    r.step()
    assert p.state == STATE_NORMAL and p.chg_fet and p.dsg_fet


def test_ship_is_terminal():
    r = Rig().boot()
    p = r.p
    assert p.request_ship(r.now)
    assert p.state == STATE_SHUTDOWN and not p.chg_fet and not p.dsg_fet
    r.step(10)
    assert p.state == STATE_SHUTDOWN and not p.chg_fet and not p.dsg_fet
    assert not p.reset_latched(r.now)
    assert r.codes(ev.EV_STATE)[-1][2:] == (STATE_NORMAL, STATE_SHUTDOWN)


# --- warnings, config changes, events -------------------------------------------------------


def test_warnings_do_not_open_fets():
    r = Rig().boot()
    p = r.p
    r.set_cells(3620, 0)  # within warn_margin_mv of cell_ov_mv
    r.set_temps(420)  # within warn_margin_dc of chg_temp_max_dc
    r.snap.current_ma = -95000  # above 90 % of dsg_oc_ma
    r.step(9)
    assert p.warnings & bit("cell_ov") and p.warnings & bit("chg_ot")
    assert p.warnings & bit("dsg_oc") and p.warnings & bit("imbalance")
    assert p.faults == 0 and p.chg_fet and p.dsg_fet and p.state == STATE_NORMAL
    assert r.codes(ev.EV_WARN_SET)
    r.set_cells(3300)
    r.set_temps(250)
    r.snap.current_ma = 0
    r.step(9)
    assert p.warnings == 0 and r.codes(ev.EV_WARN_CLEAR)


def test_imbalance_warning():
    r = Rig().boot()
    r.set_cells(3420, 2)
    r.step(9)
    assert r.p.warnings == bit("imbalance") and r.p.faults == 0


def test_config_change_takes_effect():
    r = Rig().boot()
    p = r.p
    r.step(10)
    assert p.faults == 0
    r.cfg.update({"pack_uv_mv": 13400})  # pack is at 13200 mV
    r.step(9)
    assert p.faults == bit("pack_uv") and not p.dsg_fet and p.chg_fet
    r.cfg.update({"pack_uv_mv": 11200, "release_delay_ms": 0})
    r.step()
    assert p.faults == 0 and p.dsg_fet


def test_fault_events_carry_values():
    r = Rig().boot()
    r.set_cells(3712, 1)
    r.step(9)
    e = r.codes(ev.EV_FAULT_SET)[-1]
    assert e == (r.now, ev.EV_FAULT_SET, FAULT_NAMES.index("cell_ov"), 3712)
    assert r.codes(ev.EV_STATE)[-1][2:] == (STATE_NORMAL, STATE_FAULT)


# --- time never stops: intermittent and unknown readings ------------------------------------

UNKNOWN = protection.UNKNOWN
BAD_MV = (5200, 300)  # implausible cell readings (outside 0.5..5 V): an open or shorted tap


def flicker(r, n, bad, phase, idx=2, true=None):
    """n cycles in which cell idx reads `bad` on 4 of every 5 cycles (the good one at
    position `phase` of each 5) and `true` (default: its value now) on the others; the pack
    voltage (a separate measurement) stays true. Yields after each cycle."""
    s = r.snap
    true = s.cell_mv[idx] if true is None else true
    pack = s.pack_mv
    for k in range(n):
        s.cell_mv[idx] = true if k % 5 == phase else bad
        s.pack_mv = pack
        r.step()
        yield k
    s.cell_mv[idx] = true


def first_step(r, pred, steps):
    """Time of the first cycle (of the generator `steps`) after which pred() holds."""
    for _ in steps:
        if pred():
            return r.now
    raise AssertionError("condition not reached")


def test_flicker_charge_fet_off_within_the_ov_delay():
    """One cell implausible on 4 of 5 cycles while a cell (the flickering one, or another)
    is above cell_ov_mv: the charge FET is off within cell_ov_delay_ms + one cycle of the
    first reading above the limit, whatever the phase of the flicker."""
    for bad in BAD_MV:
        for high in (2, 0):  # the flickering cell itself is high, or another cell is
            for phase in range(5):
                r = Rig().boot()
                p = r.p
                r.set_cells(3700, high)
                # the first reading of the flicker: above the limit, or unknown (which
                # counts as out of limits: the timer starts either way)
                t0 = r.now + CYCLE
                t = first_step(r, lambda p=p: not p.chg_fet, flicker(r, 60, bad, phase))
                assert t - t0 <= r.cfg.cell_ov_delay_ms + CYCLE, (bad, high, phase, t - t0)


def test_flicker_cell_implausible_sets_within_its_delay():
    """Quality faults are sticky: bad time accumulates (forgiven only after
    release_delay_ms of good readings), so 4 bad readings of 5 still trip within the delay
    + one cycle of the first bad reading."""
    for bad in BAD_MV:
        for phase in range(5):
            r = Rig().boot()
            p = r.p
            t0 = r.now + CYCLE if phase else r.now + 2 * CYCLE  # the first bad reading
            t = first_step(r, lambda p=p: p.faults & bit("cell_implausible"),
                           flicker(r, 60, bad, phase))
            assert t - t0 <= r.cfg.plaus_delay_ms + CYCLE, (bad, phase, t - t0)
            assert not p.chg_fet and not p.dsg_fet


def test_flicker_with_a_longer_plausibility_delay():
    for phase in range(5):
        r = Rig(plaus_delay_ms=4000).boot()
        p = r.p
        t0 = r.now + CYCLE if phase else r.now + 2 * CYCLE
        t = first_step(r, lambda p=p: p.faults & bit("cell_implausible"),
                       flicker(r, 80, 5200, phase))
        assert t - t0 <= 4000 + CYCLE, (phase, t - t0)


def test_flicker_deep_uv_latches_after_its_delay():
    """A cell truly below cell_deep_uv_mv whose tap reads implausible on 4 cycles of 5:
    deep_uv latches about cell_deep_uv_delay_ms after the first low reading (at the next
    known reading after the delay), not 5 times later."""
    for bad in BAD_MV:
        for phase in range(5):
            r = Rig().boot()
            p = r.p
            d = r.cfg.cell_deep_uv_delay_ms
            t0 = r.now + CYCLE * (phase + 1)  # the first (known) low reading
            t = first_step(r, lambda p=p: p.latched & bit("deep_uv"),
                           flicker(r, 400, bad, phase, true=1900))
            assert d - 4 * CYCLE <= t - t0 <= d + 5 * CYCLE, (bad, phase, t - t0)
            e = r.codes(ev.EV_LATCH)[-1]
            assert e[2] == FAULT_NAMES.index("deep_uv") and e[3] == 1900  # a known value


def test_flicker_thermistor_fets_off_within_the_temperature_delay():
    """One thermistor hot, the other invalid (open) or implausible on 4 cycles of 5: both
    FETs are off within temp_delay_ms + one cycle of the first hot reading."""
    for bad in (TEMP_INVALID_DC, 1400, -600):
        for phase in range(5):
            r = Rig().boot()
            p = r.p
            r.set_temps(600, 0)  # above dsg_temp_max_dc (and chg_temp_max_dc)
            t0 = r.now + CYCLE
            for k in range(60):
                r.set_temps(250 if k % 5 == phase else bad, 1)
                r.step()
                if not p.chg_fet and not p.dsg_fet:
                    break
            assert not p.chg_fet and not p.dsg_fet, (bad, phase)
            assert r.now - t0 <= r.cfg.temp_delay_ms + CYCLE, (bad, phase, r.now - t0)


def test_flicker_incomplete_flags_trip_afe_stale():
    for missing in (FLAG_CELLS_VALID, FLAG_PACK_VALID, FLAG_CURRENT_VALID, FLAG_TEMPS_VALID):
        for phase in range(5):
            r = Rig().boot()
            p = r.p
            t0 = None
            for k in range(60):
                r.set_flags(ALL if k % 5 == phase else ALL & ~missing)
                r.step()
                if t0 is None and k % 5 != phase:
                    t0 = r.now
                if p.faults & bit("afe_stale"):
                    break
            assert p.faults & bit("afe_stale"), (missing, phase)
            assert not p.chg_fet and not p.dsg_fet
            assert r.now - t0 <= r.cfg.stale_ms + CYCLE, (missing, phase, r.now - t0)


def test_afe_lost_for_10s_sets_no_cell_or_temperature_fault():
    """An unknown value counts as out of limits, but when its timer expires while active
    faults already hold open every FET it opens, the log names the cause only."""
    r = Rig().boot()
    p = r.p
    r.step(40, ok=False)
    assert p.faults == bit("afe_lost") and not p.chg_fet and not p.dsg_fet
    assert [e[2] for e in r.codes(ev.EV_FAULT_SET)] == [FAULT_NAMES.index("afe_lost")]
    steps_to(r, lambda: p.faults == 0)
    assert p.chg_fet and p.dsg_fet and p.state == STATE_NORMAL
    assert len(r.codes(ev.EV_FAULT_SET)) == 1
    # likewise 10 s of refused reads (the AFE lost its configuration)
    r.step(40, cfg_err=0x09)
    assert p.faults == bit("afe_config") and not p.chg_fet and not p.dsg_fet
    assert [e[2] for e in r.codes(ev.EV_FAULT_SET)][1:] == [FAULT_NAMES.index("afe_config")]


def test_unknown_value_covered_by_the_plausibility_fault():
    """plaus_delay_ms < cell_ov_delay_ms: the implausible cell opens both FETs first; cell
    OV/UV (whose value is unknown) are not set on top of it."""
    r = Rig().boot()
    p = r.p
    r.set_cells(5200, 1, pack=13200)
    r.step(40)
    assert p.faults == bit("cell_implausible"), fault_names(p.faults)
    assert not p.latched
    # an invalid thermistor: temp_sensor and the window share temp_delay_ms; one entry
    r = Rig().boot()
    r.set_temps(TEMP_INVALID_DC, 0)
    r.step(40)
    assert r.p.faults == bit("temp_sensor"), fault_names(r.p.faults)


def test_unknown_value_not_covered_sets_with_value_unknown():
    """plaus_delay_ms > cell_ov_delay_ms: cell OV and UV (their value unknown) set at their
    own delay, logged with the value UNKNOWN; deep_uv never latches on an unknown value."""
    for bad in BAD_MV:
        r = Rig(plaus_delay_ms=3000).boot()
        p = r.p
        r.set_cells(bad, 1, pack=13200)
        t0 = r.now + CYCLE
        r.step(r.cfg.cell_ov_delay_ms // CYCLE)
        assert p.faults == 0 and p.chg_fet and p.dsg_fet  # a FET already on may stay on
        r.step()
        assert r.now - t0 == r.cfg.cell_ov_delay_ms
        assert p.faults == bit("cell_ov") | bit("cell_uv"), fault_names(p.faults)
        assert not p.chg_fet and not p.dsg_fet
        for name in ("cell_ov", "cell_uv"):
            assert r.set_events(name)[-1] == (r.now, ev.EV_FAULT_SET,
                                              FAULT_NAMES.index(name), UNKNOWN)
        steps_to(r, lambda p=p: p.faults & bit("cell_implausible"))
        assert r.now - t0 == 3000
        r.step(80)  # 20 s: past cell_deep_uv_delay_ms
        assert not p.latched
        # a fault never clears on an unknown value
        assert p.faults & bit("cell_ov") and p.faults & bit("cell_uv")


def test_unknown_temperature_not_covered_sets_the_window_faults():
    """A thermistor that is read but implausible: with temp_sensor slower than the window
    faults (plaus_delay is not its delay: temp_delay_ms is shared), all of them set at once
    here; the value is unknown so only temp_sensor carries a reading."""
    r = Rig().boot()
    p = r.p
    r.set_temps(1400, 1)  # above +130 degC: an implausible (shorted) sensor
    steps_to(r, lambda: p.faults)
    assert p.faults & bit("temp_sensor")
    assert not p.chg_fet and not p.dsg_fet
    for name in ("chg_ot", "dsg_ot", "chg_ut", "dsg_ut"):
        for e in r.set_events(name):
            assert e[3] == UNKNOWN, (name, e)


def test_no_fault_clears_on_an_unknown_value():
    r = Rig().boot()
    p = r.p
    r.set_cells(3700, 0)
    r.step(9)
    assert p.faults == bit("cell_ov")
    r.set_cells(3300, 0)  # truly back below the release level ...
    r.set_flags(ALL & ~FLAG_CELLS_VALID)  # ... but the cells are not read
    r.step(int(r.cfg.stale_ms // CYCLE) - 1)
    assert p.faults & bit("cell_ov")
    r.step(20, ok=False)  # nor while the AFE is lost
    assert p.faults & bit("cell_ov")
    r.set_cells(5200, 2, pack=13200)  # nor on an implausible cell
    r.set_flags(ALL)
    r.step(20)
    assert p.faults & bit("cell_ov")
    r.set_cells(3300, 2)
    steps_to(r, lambda: not p.faults & bit("cell_ov"))


def test_retry_fault_does_not_clear_on_an_unknown_current():
    """dsg_oc holds while the current flows (a welded FET): at its retry time the current
    must be known to be below the limit; a missing current reading or a failed read at that
    moment must not let the discharge FET close into the over-current."""
    for how in ("flag", "read"):
        r = Rig().boot()
        p = r.p
        r.snap.current_ma = -110000
        r.step(9)
        assert p.faults & bit("dsg_oc") and not p.dsg_fet
        t_set = r.now
        while r.now - t_set < r.cfg.oc_retry_ms - CYCLE:
            r.step()
        # the retry time falls on a cycle without a current reading
        if how == "flag":
            r.set_flags(ALL & ~FLAG_CURRENT_VALID)
            r.step()
            r.set_flags(ALL)
        else:
            r.step(ok=False)
        assert p.faults & bit("dsg_oc"), how  # never cleared on an unknown value
        for _ in range(12):  # current known again, still far above the limit
            r.step()
            assert p.faults & bit("dsg_oc") and not p.dsg_fet, how
        assert p.trips[FAULT_NAMES.index("dsg_oc")] == 1, how


def test_retry_faults_latch_only_on_known_values():
    """An unknown current sets chg_oc/dsg_oc (value UNKNOWN) at their delay when nothing else
    holds the FETs open, but that is not a trip: it neither counts nor latches, even with
    oc_retry_max = 0 (the first real trip latches)."""
    r = Rig(stale_ms=5000, chg_oc_delay_ms=1000, dsg_oc_delay_ms=1000, oc_retry_max=0).boot()
    p = r.p
    r.set_flags(ALL & ~FLAG_CURRENT_VALID)
    t0 = r.now + CYCLE
    steps_to(r, lambda: p.faults)
    assert r.now - t0 == 1000
    assert p.faults == bit("chg_oc") | bit("dsg_oc"), fault_names(p.faults)
    assert r.set_events("chg_oc")[-1][3] == UNKNOWN
    assert not p.latched and p.trips[FAULT_NAMES.index("chg_oc")] == 0
    assert not p.chg_fet and not p.dsg_fet
    r.set_flags(ALL)  # known again, and low: cleared at the retry time
    steps_to(r, lambda: p.faults == 0, limit=40000 // CYCLE)
    assert not p.latched and p.chg_fet and p.dsg_fet
    r.snap.current_ma = 60000  # a real over-current now latches at once
    steps_to(r, lambda: p.latched)
    assert p.latched == bit("chg_oc") and r.codes(ev.EV_LATCH)[-1][3] == 60000


def test_retry_ack_is_not_lost_when_the_read_fails_at_the_retry_time():
    """OCD/SCD are acknowledged at their retry time; bms.app delivers prot.ack only after a
    read that succeeded. A failed read at that moment must not make the chip's still
    reported trip count as a new short circuit (one short = one trip)."""
    r = Rig(oc_retry_ms=5000).boot()
    p = r.p
    i = FAULT_NAMES.index("scd")
    r.snap.trips |= TRIP_SCD
    r.step()
    assert p.faults & bit("scd") and p.trips[i] == 1
    r.step(5000 // CYCLE - 1)
    assert p.faults & bit("scd")
    r.step(ok=False)  # the retry time, on a failed read
    steps_to(r, lambda: p.faults == 0)
    r.step(40)
    assert p.trips[i] == 1, p.trips[i]
    assert len(r.set_events("scd")) == 1
    assert not r.snap.trips & TRIP_SCD  # the driver was told to clear it
    assert p.chg_fet and p.dsg_fet


# --- the closing gate ---------------------------------------------------------------------

# Every kind of incompleteness: name -> (make it, undo it)
INCOMPLETE = (
    ("no CELLS flag", lambda r: r.set_flags(ALL & ~FLAG_CELLS_VALID), lambda r: r.set_flags(ALL)),
    ("no PACK flag", lambda r: r.set_flags(ALL & ~FLAG_PACK_VALID), lambda r: r.set_flags(ALL)),
    ("no CURRENT flag", lambda r: r.set_flags(ALL & ~FLAG_CURRENT_VALID),
     lambda r: r.set_flags(ALL)),
    ("no TEMPS flag", lambda r: r.set_flags(ALL & ~FLAG_TEMPS_VALID), lambda r: r.set_flags(ALL)),
    ("implausible cell", lambda r: r.set_cells(5200, 1, pack=r.snap.pack_mv),
     lambda r: r.set_cells(3300, 1, pack=r.snap.pack_mv)),
    ("low implausible cell", lambda r: r.set_cells(300, 1, pack=r.snap.pack_mv),
     lambda r: r.set_cells(3300, 1, pack=r.snap.pack_mv)),
    ("invalid thermistor", lambda r: r.set_temps(TEMP_INVALID_DC, 1), lambda r: r.set_temps(250)),
    ("implausible thermistor", lambda r: r.set_temps(1400, 0), lambda r: r.set_temps(250)),
    ("sum mismatch", lambda r: setattr(r.snap, "pack_mv", r.snap.pack_mv + 1000),
     lambda r: setattr(r.snap, "pack_mv", r.snap.pack_mv - 1000)),
)


def test_no_fet_closes_on_an_incomplete_reading_normal():
    for name, make, undo in INCOMPLETE + (("cfg_err", None, None),):
        for fet in ("chg", "dsg"):
            r = Rig().boot()
            p = r.p
            setattr(p, fet + "_enable", False)
            r.step()
            assert not getattr(p, fet + "_fet")
            setattr(p, fet + "_enable", True)  # allowed again, in an incomplete cycle
            if make:
                make(r)
                r.step()
            else:
                r.step(cfg_err=0x09)
            assert not p.good, name
            assert not getattr(p, fet + "_fet"), (name, fet)
            if make:
                undo(r)
                r.step()
                assert p.good and getattr(p, fet + "_fet"), (name, fet)


def test_no_body_diode_closing_on_an_incomplete_reading():
    for name, make, undo in INCOMPLETE + (("cfg_err", None, None),):
        for fet in ("chg", "dsg"):
            r = Rig().boot()
            p = r.p
            if fet == "chg":
                r.set_cells(3500, 0)
                r.step(9)
                r.set_cells(3700, 0)  # cell_ov (the hysteresis band first: no release)
                cur = -2000  # a discharge: the charge FET's body diode conducts
            else:
                r.set_cells(2600, 0)
                cur = 3000
            r.step(9)
            assert not getattr(p, fet + "_fet") and p.faults, (name, fet)
            r.snap.current_ma = cur
            if make:
                make(r)
                r.step()
            else:
                r.step(cfg_err=0x09)
            assert not getattr(p, fet + "_fet"), (name, fet)
            assert p.body_diode == 0
            if make:
                undo(r)
                r.step()
                assert p.good and getattr(p, fet + "_fet") and p.body_diode, (name, fet)


def test_a_fet_already_on_stays_on_through_one_incomplete_cycle():
    for name, make, undo in INCOMPLETE:
        r = Rig().boot()
        p = r.p
        make(r)
        r.step()
        assert not p.good and p.chg_fet and p.dsg_fet, name
        undo(r)
        r.step()
        assert p.good and p.chg_fet and p.dsg_fet and p.faults == 0, name
    # the body-diode FET likewise (except without a current reading: no body diode then)
    for name, make, _undo in INCOMPLETE:
        r = Rig().boot()
        p = r.p
        r.set_cells(3700, 0)
        r.snap.current_ma = -2000
        r.step(9)
        assert p.body_diode == 1 and p.chg_fet, name
        make(r)
        r.step()
        assert not p.good, name
        if name == "no CURRENT flag":
            assert not p.chg_fet and p.body_diode == 0
        else:
            assert p.chg_fet and p.body_diode == 1, name


# --- afe_config: the AFE lost its configuration --------------------------------------------


def test_afe_config_opens_both_fets_in_the_same_update():
    r = Rig().boot()
    p = r.p
    r.step(cfg_err=0x09)
    assert p.faults == bit("afe_config") and not p.chg_fet and not p.dsg_fet
    assert p.state == STATE_FAULT and not p.good
    assert r.set_events("afe_config")[-1] == (r.now, ev.EV_FAULT_SET,
                                              FAULT_NAMES.index("afe_config"), CFG_ERR | 0x09)
    # also in BOOT
    r = Rig()
    r.step(cfg_err=0x04)
    assert r.p.faults == bit("afe_config") and r.p.state == STATE_BOOT
    assert not r.p.chg_fet and not r.p.dsg_fet


def test_afe_config_released_only_by_complete_readings_held_release_delay():
    r = Rig().boot()
    p = r.p
    r.step(cfg_err=0x09)
    # re-initialised: reads succeed, the thermistors come after their first conversion
    r.set_flags(ALL & ~FLAG_TEMPS_VALID)
    for _ in range(12):
        r.step()
        assert p.faults & bit("afe_config") and not p.chg_fet and not p.dsg_fet
    r.set_flags(ALL)
    for _ in range(r.cfg.release_delay_ms // CYCLE):
        r.step()
        assert p.faults & bit("afe_config") and not p.chg_fet and not p.dsg_fet
    r.step()
    assert p.faults == 0 and p.chg_fet and p.dsg_fet
    # an incomplete reading restarts the release
    r.step(cfg_err=0x0A)
    r.step(4)
    r.set_flags(ALL & ~FLAG_CELLS_VALID)
    r.step()
    r.set_flags(ALL)
    for _ in range(r.cfg.release_delay_ms // CYCLE):
        r.step()
        assert p.faults & bit("afe_config"), r.now
    r.step()
    assert p.faults == 0


def test_release_counts_from_the_first_reading_past_the_release_level():
    """A fault is released once its release condition has held for release_delay_ms: the
    first reading past the release level starts that time (as a set delay starts at the
    first reading past the limit). With release_delay_ms = 250 a single reading is not
    enough."""
    r = Rig(release_delay_ms=250).boot()
    p = r.p
    r.set_cells(3700, 0)
    r.step(9)
    assert p.faults == bit("cell_ov")
    r.set_cells(3300, 0)
    r.step()
    assert p.faults == bit("cell_ov")  # held for 0 ms so far
    r.step()
    assert p.faults == 0


def test_afe_stale_release_needs_complete_readings_after_the_last_incomplete_one():
    """afe_stale is not judged while afe_lost stands; an incomplete reading in that time
    still restarts its release: it never clears after less than release_delay_ms of
    complete readings."""
    r = Rig().boot()
    p = r.p
    r.step(5, fresh=False)  # no reading for 1.25 s: stale
    assert p.faults & bit("afe_stale")
    r.step(7)  # complete readings for 1.75 s (< release_delay_ms)
    r.step(ok=False)  # AFE lost
    r.set_flags(ALL & ~FLAG_CELLS_VALID)
    r.step(7)  # reads again, incomplete
    r.set_flags(ALL)
    t_complete = r.now + CYCLE
    while p.faults & bit("afe_stale"):
        r.step()
    assert r.now - t_complete >= r.cfg.release_delay_ms, r.now - t_complete


# --- the fault table and its documentation --------------------------------------------------


def _bits(*names):
    m = 0
    for n in names:
        m |= bit(n)
    return m


def test_fault_table_masks_match_the_rows():
    rows = ft.FAULTS
    assert len(rows) == ft.N_FAULTS == len(FAULT_NAMES)
    chg = dsg = both = bd_c = bd_d = retry = latch = thr = 0
    for i in range(len(rows)):
        name, d, flags, cat, q = rows[i][:5]
        assert name == FAULT_NAMES[i] and d == FAULT_DIRS[i]
        if d in (ft.DIR_CHG, ft.DIR_BOTH):
            chg |= 1 << i
        if d in (ft.DIR_DSG, ft.DIR_BOTH):
            dsg |= 1 << i
        if d == ft.DIR_BOTH:
            both |= 1 << i
        if flags & ft.T_BD and d == ft.DIR_CHG:
            bd_c |= 1 << i
        if flags & ft.T_BD and d == ft.DIR_DSG:
            bd_d |= 1 << i
        if flags & ft.T_RETRY:
            retry |= 1 << i
        if flags & (ft.T_RETRY | ft.T_LATCH):
            latch |= 1 << i
        if q != ft.Q_NONE:
            thr |= 1 << i
        # every config field a row names exists (protection reads them by name)
        c = Config()
        for f in rows[i][5:]:
            if f is not None:
                assert hasattr(c, f), (name, f)
    assert (ft.MASK_CHG, ft.MASK_DSG, ft.MASK_BOTH) == (chg, dsg, both)
    assert (MASK_CHG, MASK_DSG) == (chg, dsg)
    assert (ft.MASK_BD_CHG, ft.MASK_BD_DSG) == (bd_c, bd_d)
    assert ft.MASK_RETRY == retry and ft.MASK_LATCHABLE == latch
    assert ft.MASK_THRESHOLD == thr
    # ... and what the README says of them (body diode, retry, latch, directions)
    assert ft.MASK_BD_CHG == _bits("cell_ov", "pack_ov", "hw_ov", "chg_ot", "chg_ut")
    assert ft.MASK_BD_DSG == _bits("cell_uv", "pack_uv", "hw_uv", "dsg_ot", "dsg_ut")
    assert ft.MASK_RETRY == _bits("chg_oc", "dsg_oc", "hw_ocd", "scd")
    assert ft.MASK_LATCHABLE == ft.MASK_RETRY | bit("deep_uv")
    assert not (MASK_CHG | MASK_DSG) & bit("imbalance")
    assert ft.MASK_BOTH & bit("afe_config") and ft.MASK_BOTH & bit("afe_lost")
    assert ft.names(_bits("cell_ov", "afe_config")) == "cell_ov|afe_config"
    tiers = [ft.tier(i) for i in range(ft.N_FAULTS)]
    assert tiers[FAULT_NAMES.index("imbalance")] == "warning"
    assert tiers[FAULT_NAMES.index("deep_uv")] == "latched"
    assert tiers[FAULT_NAMES.index("scd")] == "retry"
    assert tiers[FAULT_NAMES.index("afe_config")] == "protection"


def _readme_section(title):
    """The lines of README.md's section `title` (read line by line: the whole file does not
    fit a small MicroPython heap in one piece)."""
    import os

    here = __file__.replace("\\", "/")
    root = here[: here.rfind("/host_tests/")] if "/host_tests/" in here else "."
    path = root + "/README.md"
    try:
        os.stat(path)
    except OSError:
        path = "README.md"
    out = []
    inside = False
    with open(path) as f:
        for line in f:
            if inside:
                if line.startswith("#"):
                    break
                out.append(line.rstrip("\n"))
            elif line.rstrip("\n") == title:
                inside = True
    assert inside, title
    return out


def readme_fault_rows():
    """The rows of README.md's table in section "Faults": (index, name, dir, tier, bd)."""
    rows = []
    for line in _readme_section("### Faults"):
        line = line.strip()
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if not cells[0].isdigit():
            continue  # the header and its rule
        rows.append((int(cells[0]), cells[1].strip("`"), cells[2], cells[3], cells[-1]))
    return rows


_README_DIR = {"CHG": ft.DIR_CHG, "DSG": ft.DIR_DSG, "both": ft.DIR_BOTH, "—": ft.DIR_NONE}


def test_readme_fault_table_lists_exactly_the_faults():
    rows = readme_fault_rows()
    assert [r[1] for r in rows] == list(FAULT_NAMES), [r[1] for r in rows]
    for i, name, d, tier, bd in rows:
        assert i == FAULT_NAMES.index(name), (i, name)
        assert _README_DIR.get(d) == FAULT_DIRS[i], (name, d)
        flags = ft.FLAGS[i]
        assert (bd == "yes") == bool(flags & ft.T_BD), (name, bd)
        t = ft.tier(i)
        want = {"warning": "warning only", "latched": "**latched**",
                "retry": "protection → latched", "protection": "protection"}[t]
        assert tier == want, (name, tier, t)


# --- seeded random sequences: the safety invariants on every step --------------------------


def reading(r):
    """What the snapshot says this cycle, judged from the documentation (README "Faults",
    bms.protection header), not from protection's internals: which quantities are known
    and their values. Unknown = failed or refused read, stale data, missing flag, an
    implausible cell (outside 0.5..5 V) for the cells, an invalid or implausible thermistor
    (outside -50..+130 degC) for the temperature window."""
    s = r.snap
    c = r.cfg
    fresh = (s.errors == 0 and s.cfg_err == 0 and s.seq > 0
             and r.now - s.t_ms <= c.stale_ms)
    flags = s.flags if fresh else 0
    cells = [s.cell_mv[i] for i in range(s.n_cells)]
    temps = [s.temp_dc[i] for i in range(s.n_temps)]
    k = {"fresh": fresh, "complete": fresh and flags & ALL == ALL}
    k["cells_read"] = bool(flags & FLAG_CELLS_VALID)
    k["cells"] = k["cells_read"] and all(500 <= v <= 5000 for v in cells)
    k["cmax"] = max(cells)
    k["cmin"] = min(cells)
    k["pack"] = bool(flags & FLAG_PACK_VALID)
    k["diff"] = abs(sum(cells) - s.pack_mv)
    k["cur"] = bool(flags & FLAG_CURRENT_VALID)
    k["temps_read"] = bool(flags & FLAG_TEMPS_VALID)
    k["temps"] = k["temps_read"] and all(-500 <= t <= 1300 for t in temps)
    k["tmax"] = max(temps)
    k["tmin"] = min(temps)
    fet = [t for t in (s.die_temp_dc, getattr(s, "fet_temp_dc", TEMP_INVALID_DC))
           if -500 <= t <= 1300]
    k["fet_t"] = max(fet) if fresh and fet else None
    k["sum_ok"] = k["cells"] and k["pack"] and k["diff"] <= c.sum_tol_mv
    k["good"] = k["complete"] and k["cells"] and k["temps"] and k["diff"] <= c.sum_tol_mv
    return k


def release_holds(r, k, name):
    """The documented release condition of a fault, on this cycle's reading (None: the
    fault has no value condition: it clears by time)."""
    c = r.cfg
    s = r.snap
    if name in ("cell_ov", "hw_ov"):
        return k["cells"] and k["cmax"] < c.cell_ov_release_mv
    if name in ("cell_uv", "hw_uv"):
        return k["cells"] and k["cmin"] > c.cell_uv_release_mv
    if name == "pack_ov":
        return k["pack"] and s.pack_mv < c.pack_ov_mv - c.pack_v_release_mv
    if name == "pack_uv":
        return k["pack"] and s.pack_mv > c.pack_uv_mv + c.pack_v_release_mv
    if name == "chg_oc":
        return k["cur"] and s.current_ma <= c.chg_oc_ma
    if name == "dsg_oc":
        return k["cur"] and -s.current_ma <= c.dsg_oc_ma
    if name == "chg_ot":
        return k["temps"] and k["tmax"] < c.chg_temp_max_dc - c.temp_release_dc
    if name == "chg_ut":
        return k["temps"] and k["tmin"] > c.chg_temp_min_dc + c.temp_release_dc
    if name == "dsg_ot":
        return k["temps"] and k["tmax"] < c.dsg_temp_max_dc - c.temp_release_dc
    if name == "dsg_ut":
        return k["temps"] and k["tmin"] > c.dsg_temp_min_dc + c.temp_release_dc
    if name == "fet_ot":
        return k["fet_t"] is not None and k["fet_t"] < c.fet_temp_max_dc - c.temp_release_dc
    if name == "temp_sensor":
        return k["temps"]
    if name == "cell_implausible":
        return k["cells"]
    if name == "sum_mismatch":
        return k["sum_ok"]
    if name == "afe_lost":
        return s.errors == 0
    if name == "afe_stale":
        return k["complete"]
    if name == "afe_config":
        return s.cfg_err == 0 and k["complete"]
    if name == "xready":
        return r.new_read and not r.trips_in & TRIP_DEVICE
    if name == "ovrd":
        return r.new_read and not r.trips_in & TRIP_OVRD
    if name == "deep_uv":
        return False  # latched: only reset_latched() clears it
    return None  # hw_ocd, scd: by time (oc_retry_ms)


def value_known(k, name):
    """The quantity a threshold fault judges is known in this cycle."""
    q = ft.FAULTS[FAULT_NAMES.index(name)][4]
    if q in (ft.Q_CELL_MAX, ft.Q_CELL_MIN, ft.Q_SPREAD):
        return k["cells"]
    if q == ft.Q_PACK:
        return k["pack"]
    if q in (ft.Q_CHG_I, ft.Q_DSG_I):
        return k["cur"]
    if q in (ft.Q_TEMP_MAX, ft.Q_TEMP_MIN):
        return k["temps"]
    if q == ft.Q_FET_T:
        return k["fet_t"] is not None
    return True


class Invariants:
    """Checks, after every update(), the safety properties:
    * time never stops: the charge FET is never on for more than the fault's delay + one
      cycle while any cell is above cell_ov_mv or a temperature is outside the charge window
      (except while the pack discharges: body diode), whatever the pattern of failed,
      refused, stale, incomplete or implausible readings; the discharge FET likewise
      (cell_uv, discharge window); over-current likewise;
    * both FETs off in the cycle in which a read failed (snap.errors > 0), was refused
      (snap.cfg_err) or the data is older than stale_ms; no FET on while a latched fault
      stands; none in BOOT, STANDBY, LATCHED, SHUTDOWN;
    * in BOOT nothing but afe_lost/afe_config is judged;
    * a FET closes (0 -> 1) only in a cycle whose reading is complete, fresh and plausible,
      and prot.good says exactly that;
    * no fault clears while its condition holds: a fault clears only on a known value past
      its release level held for release_delay_ms (retry faults: oc_retry_ms after the
      trip; over-current also only once the current is known to be below the limit);
    * a fault set with the value UNKNOWN had an unknown quantity; latches happen on known
      values only;
    * prot.ack holds only trips this read reported.
    """

    def __init__(self, rig):
        self.r = rig
        self.runs = {}  # name -> time the FET was first seen on while the condition held
        self.last = rig.now
        self.n_ev = rig.ev.total
        self.sync()
        self.held = {}  # fault name -> time from which its release condition has held
        self.set_at = {}  # fault name -> time it set

    def sync(self):
        """Take the outputs as they are now (after an explicit request such as
        reset_latched(), which may clear faults without a reading)."""
        p = self.r.p
        self.faults = p.faults
        self.chg = p.chg_fet
        self.dsg = p.dsg_fet

    def _run(self, key, cond, fet_on, excused, delay):
        now = self.r.now
        if cond and fet_on and not excused:
            t0 = self.runs.get(key)
            if t0 is None:
                self.runs[key] = now
            else:
                assert now - t0 <= delay + CYCLE, (key, now - t0, delay)
        else:
            self.runs.pop(key, None)

    def check(self):
        r = self.r
        p = r.p
        s = r.snap
        c = r.cfg
        now = r.now
        k = reading(r)
        on = p.chg_fet or p.dsg_fet
        if s.errors > 0 or s.cfg_err or now - s.t_ms > c.stale_ms:
            assert not on, "FET on with the AFE lost, refused or stale"
        if p.latched:
            assert not on, "FET on with a latched fault"
        if p.state in (STATE_BOOT, STATE_SHUTDOWN, STATE_STANDBY, STATE_LATCHED):
            assert not on, STATE_NAMES[p.state]
        if p.state == STATE_BOOT:
            assert not p.faults & ~(bit("afe_lost") | bit("afe_config")), fault_names(p.faults)
        # the closing gate
        if p.state != STATE_SHUTDOWN:
            assert p.good == k["good"], (p.good, k)
        if p.chg_fet and not self.chg or p.dsg_fet and not self.dsg:
            assert k["good"], ("FET closed on an incomplete reading", k)
        # acknowledgements
        assert not p.ack & ~r.trips_in, (p.ack, r.trips_in)
        # events of this update
        new = r.ev.last(r.ev.total - self.n_ev)
        self.n_ev = r.ev.total
        for e in new:
            name = FAULT_NAMES[e[2]] if e[1] in (ev.EV_FAULT_SET, ev.EV_LATCH) else None
            if e[1] == ev.EV_FAULT_SET and e[3] == protection.UNKNOWN:
                assert not value_known(k, name), (name, k)
            if e[1] == ev.EV_LATCH and name == "deep_uv":
                assert k["cells"] and k["cmin"] < c.cell_deep_uv_mv, k
            if e[1] == ev.EV_LATCH and name == "chg_oc":
                assert k["cur"] and s.current_ma > c.chg_oc_ma
            if e[1] == ev.EV_LATCH and name == "dsg_oc":
                assert k["cur"] and -s.current_ma > c.dsg_oc_ma
        # no fault clears while its condition holds
        for i in range(len(FAULT_NAMES)):
            name = FAULT_NAMES[i]
            b = 1 << i
            rel = release_holds(r, k, name)
            if rel:
                self.held.setdefault(name, now)  # from the first reading past the release
            else:
                self.held.pop(name, None)
            if p.faults & b and not self.faults & b:
                self.set_at[name] = now
            if self.faults & b and not p.faults & b:
                if rel is None:
                    assert now - self.set_at.get(name, -10**9) >= c.oc_retry_ms, name
                    continue
                assert rel, ("cleared while its condition holds", name, k)
                if name in ("chg_oc", "dsg_oc"):
                    assert now - self.set_at.get(name, -10**9) >= c.oc_retry_ms, name
                else:
                    assert now - self.held[name] >= c.release_delay_ms, (name, self.held)
        self.last = now
        self.sync()
        # Time never stops: the runs go on whatever the reading (truth = the snapshot's
        # values, which the Rig keeps also while reads fail).
        cmax = k["cmax"]
        cmin = k["cmin"]
        temps = [s.temp_dc[i] for i in range(s.n_temps) if s.temp_dc[i] != TEMP_INVALID_DC]
        tmin = min(temps) if temps else None
        tmax = max(temps) if temps else None
        cur = s.current_ma
        self._run("cell_ov", cmax > c.cell_ov_mv, p.chg_fet, cur < 0, c.cell_ov_delay_ms)
        self._run("chg_ut", tmin is not None and tmin < c.chg_temp_min_dc, p.chg_fet, cur < 0,
                  c.temp_delay_ms)
        self._run("chg_ot", tmax is not None and tmax > c.chg_temp_max_dc, p.chg_fet, cur < 0,
                  c.temp_delay_ms)
        self._run("cell_uv", cmin < c.cell_uv_mv, p.dsg_fet, cur > 0, c.cell_uv_delay_ms)
        self._run("dsg_ut", tmin is not None and tmin < c.dsg_temp_min_dc, p.dsg_fet, cur > 0,
                  c.temp_delay_ms)
        self._run("dsg_ot", tmax is not None and tmax > c.dsg_temp_max_dc, p.dsg_fet, cur > 0,
                  c.temp_delay_ms)
        self._run("chg_oc", cur > c.chg_oc_ma, p.chg_fet, False, c.chg_oc_delay_ms)
        self._run("dsg_oc", -cur > c.dsg_oc_ma, p.dsg_fet, False, c.dsg_oc_delay_ms)
        if p.chg_fet and not p.chg_allowed:
            assert cur < 0, "body diode on without a discharge current"
        if p.dsg_fet and not p.dsg_allowed:
            assert cur > 0, "body diode on without a charge current"
        if p.faults & MASK_CHG and p.chg_fet:
            assert not p.faults & MASK_CHG & ~_BD_CHG_OK, fault_names(p.faults)
        if p.faults & MASK_DSG and p.dsg_fet:
            assert not p.faults & MASK_DSG & ~_BD_DSG_OK, fault_names(p.faults)


_BD_CHG_OK = bit("cell_ov") | bit("pack_ov") | bit("hw_ov") | bit("chg_ot") | bit("chg_ut")
_BD_DSG_OK = bit("cell_uv") | bit("pack_uv") | bit("hw_uv") | bit("dsg_ot") | bit("dsg_ut")

_TRIPS = (TRIP_OCD, TRIP_SCD, TRIP_OV, TRIP_UV, TRIP_OVRD, TRIP_DEVICE)


def random_step(rig, rnd, ops):
    """Apply one random change to the snapshot, then one cycle. `rnd(n)` -> 0..n-1."""
    s = rig.snap
    kind = ops[rnd(len(ops))]
    n = s.n_cells
    if kind == "cell":
        lvl = (3300, 3660, 3500, 3440, 2690, 2900, 3010, 1900, 2100, 0, 5600)[rnd(11)]
        rig.set_cells(lvl + rnd(40) - 20, rnd(n) if rnd(2) else None)
    elif kind == "walk":
        i = rnd(n)
        s.cell_mv[i] = max(0, min(6000, s.cell_mv[i] + rnd(201) - 100))
        rig.set_cells(s.cell_mv[i], i)
    elif kind == "temp":
        t = (250, -10, 5, 460, 420, -210, 560, 1400, TEMP_INVALID_DC)[rnd(9)]
        rig.set_temps(t, rnd(s.n_temps) if rnd(2) else None)
    elif kind == "cur":
        s.current_ma = (0, -2000, 2000, -600, 600, 60000, -110000, -300, 300)[rnd(9)]
    elif kind == "trip":
        s.trips |= _TRIPS[rnd(len(_TRIPS))]
    elif kind == "cfg":
        for _ in range(1 + rnd(4)):
            rig.step(cfg_err=0x09)
            yield_check(rig)
    elif kind == "flicker":
        # one cell implausible (or the thermistors invalid) on most of a few cycles
        i = rnd(n)
        true = s.cell_mv[i]
        bad = (300, 5200)[rnd(2)]
        for j in range(2 + rnd(8)):
            if j % 5 != 4:
                if rnd(4):
                    rig.set_cells(bad, i, pack=s.pack_mv)
                else:
                    rig.set_temps(TEMP_INVALID_DC, rnd(s.n_temps))
            rig.step()
            yield_check(rig)
            rig.set_cells(true, i, pack=s.pack_mv)
            rig.set_temps(250)
    elif kind == "err":
        for _ in range(1 + rnd(4)):
            rig.step(ok=False)
            yield_check(rig)
    elif kind == "stale":
        for _ in range(1 + rnd(8)):
            rig.step(fresh=False)
            yield_check(rig)
    elif kind == "flags":
        rig.set_flags(ALL & ~(1 << rnd(4)) if rnd(3) == 0 else ALL)
    elif kind == "pack":
        s.pack_mv += (rnd(3) - 1) * 600
    elif kind == "die":
        s.die_temp_dc = (TEMP_INVALID_DC, 400, 850)[rnd(3)]
    elif kind == "reset":
        rig.p.reset_latched(rig.now)
        rig.inv.sync()
    elif kind == "enable":
        rig.p.chg_enable = rnd(4) != 0
        rig.p.dsg_enable = rnd(4) != 0
    dt = CYCLE if rnd(4) else (100, 400, 1000, 1200)[rnd(4)]
    rig.step(dt=dt)
    yield_check(rig)


def yield_check(rig):
    rig.inv.check()


OPS = ("cell", "walk", "walk", "temp", "cur", "cur", "trip", "err", "stale", "flags", "pack",
       "die", "reset", "enable", "cfg", "flicker", "none", "none", "none")


def make_random_rig(rnd):
    over = {}
    if rnd(2):
        over = {"oc_retry_ms": 1000, "oc_retry_max": rnd(3), "release_delay_ms": 250 * rnd(5)}
    if rnd(2):
        over["cell_ov_delay_ms"] = 250 * rnd(12)
        over["temp_delay_ms"] = 250 * rnd(12)
        over["plaus_delay_ms"] = 250 * rnd(8)
    r = Rig(cells=3 + rnd(4), n_temps=1 + rnd(3), **over)
    r.inv = Invariants(r)
    return r


def run_random(seed, n_steps):
    random.seed(seed)

    def rnd(n):
        return random.randint(0, n - 1)

    r = make_random_rig(rnd)
    r.step()
    r.inv.check()
    for _ in range(n_steps):
        random_step(r, rnd, OPS)
    return r


def test_random_sequences_keep_the_invariants():
    seen = 0
    for seed in range(40):
        r = run_random(seed, 400)
        seen |= r.p.faults | r.p.latched | r.p.warnings
        for e in r.ev.to_list():
            seen |= (1 << e[2]) if e[1] in (ev.EV_FAULT_SET, ev.EV_LATCH) else 0
    # the runner really exercised the faults
    for name in ("cell_ov", "cell_uv", "scd", "afe_lost", "afe_stale", "chg_ut", "xready"):
        assert seen & bit(name), name


def test_state_transitions_logged_in_order():
    r = Rig(oc_retry_max=0)
    p = r.p
    r.boot()  # BOOT -> NORMAL
    r.set_cells(3700, 0)
    r.step(9)  # NORMAL -> FAULT (cell_ov)
    r.set_cells(3300, 0)
    r.step(9)  # FAULT -> NORMAL
    p.chg_enable = p.dsg_enable = False
    r.step()  # NORMAL -> STANDBY
    p.chg_enable = p.dsg_enable = True
    r.step()  # STANDBY -> NORMAL
    r.snap.trips |= TRIP_SCD
    r.step()  # NORMAL -> LATCHED (no retry allowed)
    assert p.reset_latched(r.now)
    r.step()  # LATCHED -> NORMAL
    p.request_ship(r.now)  # NORMAL -> SHUTDOWN
    got = [(e[2], e[3]) for e in r.codes(ev.EV_STATE)]
    assert got == [(STATE_BOOT, STATE_NORMAL), (STATE_NORMAL, STATE_FAULT),
                   (STATE_FAULT, STATE_NORMAL), (STATE_NORMAL, STATE_STANDBY),
                   (STATE_STANDBY, STATE_NORMAL), (STATE_NORMAL, STATE_LATCHED),
                   (STATE_LATCHED, STATE_NORMAL), (STATE_NORMAL, STATE_SHUTDOWN)], got
    codes = [e[1] for e in r.ev.to_list()]
    assert ev.EV_LATCH in codes and ev.EV_LATCH_RESET in codes and ev.EV_AFE_STAT in codes


def test_delays_count_from_the_true_crossing_with_the_afe_sample_time():
    # The app passes the AFE's conversion period (250 ms; thermistors 2.5 s): a reading
    # shows a crossing up to one conversion late, so the debounce after the first reading
    # beyond the limit is the delay less that, and the FET opens at most delay + one cycle
    # after the TRUE crossing however the reads fall against the conversions.
    for sample in (0, 250):
        r = Rig()
        r.p.sample_ms = sample
        r.p._gen = -1  # cached levels: refreshed with the new sample time
        r.boot()
        r.set_cells(3700, idx=1)  # above cell_ov_mv 3650
        n = 0
        while r.p.chg_fet:
            r.step()
            n += 1
            assert n < 40
        # readings 0 .. (delay - sample) / 250: the first one at the first step
        assert (n - 1) * CYCLE == r.cfg.cell_ov_delay_ms - sample, (sample, n)
