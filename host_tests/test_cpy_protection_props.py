# Property tests of bms.protection (CPython, hypothesis): random sequences of cell voltages,
# temperatures, currents, SYS_STAT bits, failed reads and missing reads; the safety
# invariants of test_protection.Invariants are checked after every cycle:
#   * the charge FET is never on longer than the fault's delay + one 250 ms cycle while a cell
#     is above cell_ov_mv or a temperature is outside the charge window (body diode excepted,
#     and then only while the pack discharges); the discharge FET likewise;
#   * both FETs are off in the cycle in which the AFE is lost (snap.errors > 0) or stale;
#   * no FET is on while a latched fault stands, before the first complete measurement, in
#     STANDBY, LATCHED or SHUTDOWN.
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_protection import (
    CYCLE,
    OPS,
    Invariants,
    Rig,
    bit,
    make_random_rig,
    random_step,
)

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
                     "oc_chg", "oc_dsg", "deep")),
    st.integers(1, 60),  # cycles
    st.sampled_from((0, -3000, 3000, -700, 700)),  # current during the phase
)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_phase, min_size=1, max_size=12), st.sampled_from((0, 250, 1000, 2000, 5000)),
       st.sampled_from((0, 1, 3)))
def test_phases_keep_the_invariants(phases, delay, retries):
    r = Rig(cell_ov_delay_ms=delay, cell_uv_delay_ms=delay, temp_delay_ms=delay,
            oc_retry_ms=2000, oc_retry_max=retries)
    inv = Invariants(r)
    r.step()
    inv.check()
    for kind, cycles, cur in phases:
        r.set_cells(3300)
        r.set_temps(250)
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
        for _ in range(cycles):
            if kind == "scd":
                r.snap.sys_stat |= 0x02
            r.step(ok=kind != "err", fresh=kind != "stale")
            inv.check()
        if r.p.latched and kind != "deep":
            r.p.reset_latched(r.now)


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
