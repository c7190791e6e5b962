# Independent property test (issue #11), CPython only: hypothesis draws the pack (9-15 cells
# on a BQ76940, chemistry, CRC or not), the chip's factory GAIN/OFFSET, the ADC_EN-at-wake
# ambiguity and the fault mix; each example runs the firmware (bms.app.Bms, public API) for
# STEPS fast cycles against the independent datasheet model (indep_bq76940) and is judged
# every 250 ms step in wall-clock time from the TRUE event (invariants I1-I8 in
# host_tests/indep_harness.py). EXAMPLES x STEPS = 10^5 steps (repeated examples are skipped
# with assume(), so these are 10^5 distinct steps).
#
# Deterministic (derandomize, no example database) and without shrinking (a run is already
# indexed by its seed; the report names seed, step, true values and registers). Reproduce a
# failing example with indep_harness.Rig(seed, board=..., ...).run(STEPS) using the printed
# arguments.
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

import indep_harness as h

STEPS = 5000
EXAMPLES = 20

PROFILES = {
    "mixed": h.Injector.DEFAULT_RATES,
    "resets": {"reset": 300, "upset": 250, "dead": 1500, "tap": 2000, "ts": 3000},
    "readings": {"tap": 200, "ts": 300, "stall": 500, "dead": 400, "xready": 1500},
    "quiet": {},
}
# derandomized generation can repeat an example: a passed one is not run again (a failed
# one must stay repeatable: hypothesis replays it to report it)
_PASSED = set()


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          phases=(Phase.explicit, Phase.generate),
          suppress_health_check=(HealthCheck.too_slow, HealthCheck.filter_too_much))
@given(seed=st.integers(0, 2 ** 31 - 1),
       cells=st.sampled_from((15, 15, 14, 12, 10, 9)),
       chemistry=st.sampled_from(("lfp", "lfp", "nmc", "lto")),
       crc=st.booleans(),
       gain_uv=st.integers(365, 396),
       offset_mv=st.integers(-30, 30),
       adc_on_at_boot=st.booleans(),
       profile=st.sampled_from(sorted(PROFILES)),
       nack_prob=st.integers(0, 300),
       corrupt_prob=st.integers(0, 600))
def test_indep_afe_invariants_hold(seed, cells, chemistry, crc, gain_uv, offset_mv,
                                   adc_on_at_boot, profile, nack_prob, corrupt_prob):
    key = (seed, cells, chemistry, crc, gain_uv, offset_mv, adc_on_at_boot, profile,
           nack_prob, corrupt_prob)
    assume(key not in _PASSED)
    board = h.Board(CELLS=cells, CHEMISTRY=chemistry, AFE_CRC=crc)
    rig = h.Rig(seed, board=board, gain_uv=gain_uv, offset_mv=offset_mv,
                rates=PROFILES[profile], nack_prob=nack_prob,
                # without CRC the host cannot see a corrupted byte: no corruption then
                corrupt_prob=corrupt_prob if crc else 0,
                adc_on_at_boot=adc_on_at_boot, max_violations=3, tag="hyp")
    try:
        rig.run(STEPS)
        found = rig.all_violations()
        assert not found, "\n".join([rig.summary()] + found[:4])
        _PASSED.add(key)
    finally:
        rig.close()
