# Property tests of bms.protection (CPython, hypothesis): random sequences of cell voltages,
# temperatures, currents, AFE trips (bms.afe TRIP_*), failed, refused (cfg_err), stale,
# incomplete and implausible readings; the safety invariants of test_protection.Invariants
# are checked after every cycle:
#   * time never stops: the charge FET is never on longer than the fault's delay + one 250 ms
#     cycle while a cell is above cell_ov_mv or a temperature is outside the charge window
#     (body diode excepted, and then only while the pack discharges), whatever the pattern
#     of missing or unknown readings; the discharge FET likewise;
#   * both FETs are off in the cycle in which the AFE is lost (snap.errors > 0), refused the
#     read (snap.cfg_err) or is stale;
#   * no FET is on while a latched fault stands, in BOOT, STANDBY, LATCHED or SHUTDOWN; in
#     BOOT nothing but afe_lost/afe_config is judged;
#   * a FET closes only in a cycle with a complete, fresh, plausible reading (prot.good);
#   * no fault clears while its condition holds (only on a known value past its release
#     level, held for release_delay_ms); UNKNOWN-valued sets and latches as documented;
#   * prot.ack holds only trips the chip reports.
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_protection import (
    ALL,
    BAD_MV,
    CYCLE,
    FLAG_CELLS_VALID,
    OPS,
    TEMP_INVALID_DC,
    Invariants,
    Rig,
    bit,
    make_random_rig,
    random_step,
)

from bms.afe import TRIP_SCD
from bms.protection import STATE_NORMAL


class _Src:
    """Turns hypothesis' list of ints into the rnd(n) source of random_step()."""

    def __init__(self, ints):
        self.ints = ints
        self.i = 0

    def __call__(self, n):
        if self.i < len(self.ints):
            v = self.ints[self.i]
            self.i += 1
            return v % n
        return 0


_SETTINGS = settings(max_examples=1500, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@_SETTINGS
@given(st.lists(st.integers(0, 1 << 16), min_size=20, max_size=1200))
def test_random_sequences_keep_the_invariants(ints):
    rnd = _Src(ints)
    r = make_random_rig(rnd)
    r.step()
    r.inv.check()
    while rnd.i < len(ints):
        random_step(r, rnd, OPS)


# Structured phases: each holds one condition for a number of cycles, so that delays run out.
_phase = st.tuples(
    st.sampled_from(("ok", "ov", "uv", "cold", "hot", "very_hot", "err", "stale", "scd",
                     "oc_chg", "oc_dsg", "deep", "cfg", "implausible", "flicker_ov",
                     "flicker_deep", "no_cells", "no_temps", "sensor")),
    st.integers(1, 60),  # cycles
    st.sampled_from((0, -3000, 3000, -700, 700)),  # current during the phase
)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_phase, min_size=1, max_size=12), st.sampled_from((0, 250, 1000, 2000, 5000)),
       st.sampled_from((0, 1, 3)), st.sampled_from((0, 250, 1000, 3000)))
def test_phases_keep_the_invariants(phases, delay, retries, plaus):
    r = Rig(cell_ov_delay_ms=delay, cell_uv_delay_ms=delay, temp_delay_ms=delay,
            oc_retry_ms=2000, oc_retry_max=retries, plaus_delay_ms=plaus)
    inv = Invariants(r)
    r.inv = inv
    r.step()
    inv.check()
    for kind, cycles, cur in phases:
        r.set_cells(3300)
        r.set_temps(250)
        r.set_flags(ALL)
        r.snap.current_ma = cur
        if kind == "ov":
            r.set_cells(3700, 0)
        elif kind == "uv":
            r.set_cells(2600, 1)
        elif kind == "cold":
            r.set_temps(-50)
        elif kind == "hot":
            r.set_temps(470)
        elif kind == "very_hot":
            r.set_temps(600)
        elif kind == "oc_chg":
            r.snap.current_ma = 60000
        elif kind == "oc_dsg":
            r.snap.current_ma = -120000
        elif kind == "deep":
            r.set_cells(1800, 2)
        elif kind == "implausible":
            r.set_cells(BAD_MV[cycles % 2], 2, pack=13200)
        elif kind == "no_cells":
            r.set_flags(ALL & ~FLAG_CELLS_VALID)
        elif kind == "no_temps":
            r.set_flags(ALL & ~0x08)
        elif kind == "sensor":
            r.set_temps(TEMP_INVALID_DC, 0)
        for k in range(cycles):
            if kind == "scd":
                r.snap.trips |= TRIP_SCD
            if kind in ("flicker_ov", "flicker_deep"):
                true = 3700 if kind == "flicker_ov" else 1800
                r.set_cells(true if k % 5 == cycles % 5 else BAD_MV[k % 2], 1, pack=13200)
            r.step(ok=kind != "err", fresh=kind != "stale", cfg_err=0x09 if kind == "cfg" else 0)
            inv.check()
        if r.p.latched and kind not in ("deep", "flicker_deep"):
            r.p.reset_latched(r.now)
            inv.sync()


@settings(max_examples=60, deadline=None)
@given(st.integers(3651, 4400), st.sampled_from((0, 250, 2000, 10000)),
       st.integers(0, 80))
def test_ov_opens_charge_fet_exactly_after_delay(mv, delay, extra):
    r = Rig(cell_ov_delay_ms=delay).boot()
    r.set_cells(mv, 3)
    n = delay // CYCLE
    for _ in range(n):
        r.step()
        assert r.p.chg_fet
    r.step()
    assert not r.p.chg_fet and r.p.dsg_fet and r.p.faults & bit("cell_ov")
    r.step(extra)
    assert not r.p.chg_fet
    assert r.p.state != STATE_NORMAL
