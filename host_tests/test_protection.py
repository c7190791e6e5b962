# Tests of bms.protection (CPython and MicroPython): every fault sets after its delay and
# releases after its hysteresis + release delay, direction blocking, body diode, retry and
# latch, boot, AFE loss, SYS_STAT handling, events, and a seeded random sequence runner that
# checks the safety invariants on every step (the MicroPython counterpart of
# test_cpy_protection_props.py, which imports Rig and Invariants from here).
import random

from bms import events as ev
from bms import protection
from bms.config import Config
from bms.events import EventLog
from bms.protection import (
    FAULT_DIRS,
    FAULT_NAMES,
    MASK_CHG,
    MASK_DSG,
    STAT_OCD,
    STAT_OV,
    STAT_OVRD,
    STAT_SCD,
    STAT_UV,
    STAT_XREADY,
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
    """A snapshot, a config, a log and Protection, driven like the app does every 250 ms."""

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
        self.clear_log = 0  # SYS_STAT bits the app was told to clear, accumulated

    def set_cells(self, mv, idx=None, pack=None):
        s = self.snap
        for i in range(s.n_cells):
            if idx is None or i == idx:
                s.cell_mv[i] = mv
        total = 0
        for i in range(s.n_cells):
            total += s.cell_mv[i]
        s.pack_mv = total if pack is None else pack

    def set_temps(self, dc, idx=None):
        s = self.snap
        for i in range(s.n_temps):
            if idx is None or i == idx:
                s.temp_dc[i] = dc

    def step(self, n=1, dt=CYCLE, ok=True, fresh=True):
        """n cycles: a read (good, failed, or none at all) then update(), then the app's
        write-1-to-clear of clear_stat."""
        p = self.p
        s = self.snap
        for _ in range(n):
            self.now += dt
            if not ok:
                s.errors += 1
                s.error_total += 1
            elif fresh:
                s.errors = 0
                s.seq += 1
                s.t_ms = self.now
                s.update_stats()
            p.update(s, self.now)
            if p.clear_stat:
                s.sys_stat &= ~p.clear_stat
                self.clear_log |= p.clear_stat
        return p

    def boot(self):
        self.step()
        assert self.p.state == STATE_NORMAL, STATE_NAMES[self.p.state]
        assert self.p.chg_fet and self.p.dsg_fet
        return self

    def codes(self, code):
        return [e for e in self.ev.to_list() if e[1] == code]


def steps_to(rig, pred, limit=2000):
    """Cycles until pred() holds (after a step); fails beyond limit."""
    for k in range(1, limit + 1):
        rig.step()
        if pred():
            return k
    raise AssertionError("condition not reached")


# --- basic API ----------------------------------------------------------------------------


def test_names_and_dirs():
    assert len(FAULT_NAMES) == len(FAULT_DIRS) == 24
    for n in ("cell_ov", "cell_uv", "pack_ov", "pack_uv", "chg_oc", "dsg_oc", "hw_ocd", "scd",
              "chg_ot", "chg_ut", "dsg_ot", "dsg_ut", "fet_ot", "imbalance", "temp_sensor",
              "cell_implausible", "sum_mismatch", "afe_lost", "afe_stale", "xready", "ovrd",
              "hw_ov", "hw_uv", "deep_uv"):
        assert n in FAULT_NAMES
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


def test_boot_implausible_temperature_keeps_fets_off():
    r = Rig()
    r.set_temps(TEMP_INVALID_DC, 1)
    r.step()
    p = r.p
    assert p.state == STATE_FAULT
    assert p.faults & bit("temp_sensor")
    assert not p.chg_fet and not p.dsg_fet


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
TEMP_D = protection._temp_debounce(Config().temp_delay_ms)


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
    for _ in range(rel // CYCLE):
        r.step()
        assert p.faults & b, name
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
        r.snap.sys_stat |= STAT_SCD
        r.step()
        assert p.faults & b and not p.chg_fet and not p.dsg_fet
        if trip == 2:
            break
        assert p.clear_stat == 0
        r.step(5000 // CYCLE - 1)
        assert p.faults & b and p.clear_stat == 0 and r.snap.sys_stat & STAT_SCD
        r.step()
        assert p.clear_stat == STAT_SCD and p.afe_restore
        assert not p.faults & b and p.chg_fet and p.dsg_fet
    assert p.latched & b and p.state == STATE_LATCHED
    r.step(100)
    assert p.clear_stat == 0 and r.snap.sys_stat & STAT_SCD  # left set while latched
    assert not p.chg_fet and not p.dsg_fet
    assert p.reset_latched(r.now)
    r.step()  # the stale SCD bit is cleared, not judged as a new trip
    assert p.clear_stat & STAT_SCD and p.state == STATE_NORMAL and p.dsg_fet
    r.step(10)
    assert p.faults == 0


def test_hw_ocd_blocks_discharge_only_and_retries():
    r = Rig().boot()
    p = r.p
    r.snap.sys_stat |= STAT_OCD
    r.step()
    assert p.faults & bit("hw_ocd") and p.chg_fet and not p.dsg_fet
    steps_to(r, lambda: not p.faults & bit("hw_ocd"))
    assert r.clear_log & STAT_OCD and p.dsg_fet
    assert p.trips[FAULT_NAMES.index("hw_ocd")] == 1


def test_retry_counter_decays_after_quiet_period():
    r = Rig(oc_retry_ms=1000, oc_retry_max=1).boot()
    p = r.p
    i = FAULT_NAMES.index("scd")
    r.snap.sys_stat |= STAT_SCD
    r.step()
    r.step(4)
    assert not p.faults & bit("scd") and p.trips[i] == 1
    r.step(4 * 1000 // CYCLE)  # 4 * oc_retry_ms without a trip
    assert p.trips[i] == 0
    r.snap.sys_stat |= STAT_SCD
    r.step(5)
    assert not p.latched and p.trips[i] == 1  # would have latched without the decay
    r.snap.sys_stat |= STAT_SCD
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


# --- hardware bits ------------------------------------------------------------------------


def test_hw_ov_cleared_only_on_software_release():
    r = Rig().boot()
    p = r.p
    r.set_cells(3700, 1)
    r.snap.sys_stat |= STAT_OV
    r.step()
    assert p.faults & bit("hw_ov") and not p.chg_fet and p.dsg_fet
    r.set_cells(3500, 1)  # below OV, above the release level: the bit stays
    r.step(40)
    assert r.snap.sys_stat & STAT_OV and not r.clear_log & STAT_OV
    r.set_cells(3400, 1)
    steps_to(r, lambda: not p.faults & (bit("hw_ov") | bit("cell_ov")))
    assert r.clear_log & STAT_OV and not r.snap.sys_stat & STAT_OV
    assert p.chg_fet


def test_hw_uv_cleared_only_on_software_release():
    r = Rig().boot()
    p = r.p
    r.snap.sys_stat |= STAT_UV
    r.set_cells(2600, 0)
    r.step()
    assert p.faults & bit("hw_uv") and not p.dsg_fet and p.chg_fet
    r.step(40)
    assert r.snap.sys_stat & STAT_UV
    r.set_cells(3100, 0)
    steps_to(r, lambda: p.faults == 0)
    assert r.clear_log & STAT_UV and p.dsg_fet


def test_xready_cleared_after_3s_then_restore():
    r = Rig().boot()
    p = r.p
    r.snap.sys_stat |= STAT_XREADY
    r.step()
    assert p.faults & bit("xready") and not p.chg_fet and not p.dsg_fet
    for _ in range(3000 // CYCLE - 1):
        r.step()
        assert not p.clear_stat & STAT_XREADY
    r.step()
    assert p.clear_stat & STAT_XREADY
    assert not r.snap.sys_stat & STAT_XREADY
    n = steps_to(r, lambda: not p.faults & bit("xready"))
    assert n == r.cfg.release_delay_ms // CYCLE + 1
    assert p.afe_restore and p.chg_fet and p.dsg_fet


def test_xready_recurring_is_cleared_every_3s():
    r = Rig().boot()
    p = r.p
    times = []
    for _ in range(60):
        r.snap.sys_stat |= STAT_XREADY  # keeps coming back
        r.step()
        if p.clear_stat & STAT_XREADY:
            times.append(r.now)
        assert not p.chg_fet and not p.dsg_fet
    assert len(times) >= 4
    for a, b in zip(times, times[1:]):
        assert b - a >= 3000


def test_ovrd_alert():
    r = Rig().boot()
    p = r.p
    r.snap.sys_stat |= STAT_OVRD
    r.step()
    assert p.faults & bit("ovrd") and not p.chg_fet and not p.dsg_fet
    r.step(10000 // CYCLE - 1)
    assert not r.clear_log & STAT_OVRD
    r.step()
    assert r.clear_log & STAT_OVRD
    steps_to(r, lambda: p.faults == 0)
    assert p.chg_fet and p.dsg_fet


def test_clear_stat_only_handled_bits():
    r = Rig().boot()
    r.snap.sys_stat = 0x80  # CC_READY is not protection's business
    r.step(50)
    assert r.clear_log == 0


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
            r.snap.sys_stat |= STAT_SCD
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


# --- seeded random sequences: the safety invariants on every step --------------------------


class Invariants:
    """Checks, after every update(), the properties of the issue:
    * the charge FET is never on for more than the fault's delay + one cycle while any cell
      is above cell_ov_mv or a temperature is outside the charge window (except while the
      pack discharges: body diode); the discharge FET likewise (cell_uv, discharge window);
    * both FETs off in the cycle in which a read failed (snap.errors > 0) or the data is older
      than stale_ms; no FET on while a latched fault stands; none before the first complete
      measurement; none in SHUTDOWN.
    """

    def __init__(self, rig):
        self.r = rig
        self.booted = False
        self.runs = {}  # name -> time the FET was first seen on while the condition held
        self.last = rig.now

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
        on = p.chg_fet or p.dsg_fet
        if s.errors > 0 or now - s.t_ms > c.stale_ms:
            assert not on, "FET on with the AFE lost or stale"
        if p.latched:
            assert not on, "FET on with a latched fault"
        if p.state in (STATE_BOOT, STATE_SHUTDOWN, STATE_STANDBY, STATE_LATCHED):
            assert not on, STATE_NAMES[p.state]
        complete = s.errors == 0 and (s.flags & ALL) == ALL and now - s.t_ms <= c.stale_ms
        if not self.booted:
            assert not on or complete
            self.booted = complete
        dt = now - self.last
        self.last = now
        if not complete:
            # Without a complete reading nothing can be judged: the runs pause (protection's
            # timers hold too, and afe_stale opens both FETs after stale_ms).
            for k in list(self.runs):
                if _FET_OF[k] == "chg" and not p.chg_fet or _FET_OF[k] == "dsg" and not p.dsg_fet:
                    del self.runs[k]
                else:
                    self.runs[k] += dt
            return
        cmax = max(s.cell_mv[i] for i in range(s.n_cells))
        cmin = min(s.cell_mv[i] for i in range(s.n_cells))
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


_FET_OF = {"cell_ov": "chg", "chg_ut": "chg", "chg_ot": "chg", "chg_oc": "chg",
           "cell_uv": "dsg", "dsg_ut": "dsg", "dsg_ot": "dsg", "dsg_oc": "dsg"}
_BD_CHG_OK = bit("cell_ov") | bit("pack_ov") | bit("hw_ov") | bit("chg_ot") | bit("chg_ut")
_BD_DSG_OK = bit("cell_uv") | bit("pack_uv") | bit("hw_uv") | bit("dsg_ot") | bit("dsg_ut")

_STAT_BITS = (STAT_OCD, STAT_SCD, STAT_OV, STAT_UV, STAT_OVRD, STAT_XREADY)


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
    elif kind == "stat":
        s.sys_stat |= _STAT_BITS[rnd(len(_STAT_BITS))]
    elif kind == "err":
        for _ in range(1 + rnd(4)):
            rig.step(ok=False)
            yield_check(rig)
    elif kind == "stale":
        for _ in range(1 + rnd(8)):
            rig.step(fresh=False)
            yield_check(rig)
    elif kind == "flags":
        s.flags = ALL & ~(1 << rnd(4)) if rnd(3) == 0 else ALL
    elif kind == "pack":
        s.pack_mv += (rnd(3) - 1) * 600
    elif kind == "die":
        s.die_temp_dc = (TEMP_INVALID_DC, 400, 850)[rnd(3)]
    elif kind == "reset":
        rig.p.reset_latched(rig.now)
    elif kind == "enable":
        rig.p.chg_enable = rnd(4) != 0
        rig.p.dsg_enable = rnd(4) != 0
    dt = CYCLE if rnd(4) else (100, 400, 1000, 1200)[rnd(4)]
    rig.step(dt=dt)
    yield_check(rig)


def yield_check(rig):
    rig.inv.check()


OPS = ("cell", "walk", "walk", "temp", "cur", "cur", "stat", "err", "stale", "flags", "pack",
       "die", "reset", "enable", "none", "none", "none")


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
    r.snap.sys_stat |= STAT_SCD
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
