# Independent property runs (issue #11): the firmware (bms.app.Bms, public API only) against
# an independent datasheet-level BQ76940 model (indep_bq76940) in a random true world with
# random faults: partial readings (NACK bursts, corrupted bytes), implausible cell taps,
# thermistor open/short, a stalled converter, AFE power-on resets (ADC on or off after the
# wake-up), single-bit register upsets, XREADY. Every 250 ms step is judged in wall-clock
# time from the TRUE event (invariants I1-I8: see host_tests/indep_harness.py).
#
# Runs under CPython (pytest) and MicroPython (host_tests/run_mpy.py indep_afe_props):
# 4 x 5000 = 2*10^4 fast-cycle steps. A failure lists the first reports of every seed:
# seed, step, time, true values, chip registers, firmware state, recent injections.
# Reproduce one seed: Rig(seed, board=...).run(steps) from host_tests/indep_harness.py (the
# random generator is the harness's own, so a seed gives the same run under both VMs).
import gc

import indep_harness as h

STEPS = 5000


def _run(seeds, steps, board_kw=None, **kw):
    reports = []
    for seed in seeds:
        board = h.Board(**board_kw) if board_kw else None
        rig = h.Rig(seed, board=board, max_violations=3, tag="props", **kw)
        try:
            rig.run(steps)
            found = rig.all_violations()
            if found:
                reports.append(rig.summary())
                reports.extend(found[:4])
        finally:
            rig.close()
            rig = None
            gc.collect()
    assert not reports, "\n".join(reports)


def test_bq76940_15s_lfp_random_faults():
    # rp2_pico-like board: BQ7694003 at 0x08 with CRC, 15 LFP cells, 0.5 mOhm, 3 NTC
    _run((11, 12, 13), STEPS)


def test_bq76940_10s_random_faults():
    # the same chip carrying 10 cells (inputs 1,2,3,5,6,7,10,11,12,15 per the DS table)
    _run((21,), STEPS, board_kw={"CELLS": 10})
