# SOC/SOH against the world: PyBaMM cells (tools/traces/, made by tools/gen_traces.py) replayed
# through the firmware's estimator with the BUILT-IN generic OCV tables (what a user has) and
# the sensor errors: current gain +/-1 %, offset 0.05 % C, 2 mV noise, a start 20 points
# wrong, the charger's voltage configured as a user would. The same rows go through a plain
# coulomb counter with a full-sync rule (tools/bench_soc.NaiveCounter). CPython only.
import math
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import bench_soc  # noqa: E402
import replay  # noqa: E402
from bms import ocv  # noqa: E402
from bms.estimator import SYNC_EMPTY, SYNC_FULL  # noqa: E402

TR = os.path.join(ROOT, "tools", "traces")


def _case(name):
    for c in bench_soc.CASES:
        if c[0] == name:
            return c
    raise KeyError(name)


def _runs(name, gains=(1.01, 0.99), own=False, naive=False):
    ocv.reset_tables()
    _, chem, vc, nom, own_file, _ = _case(name)
    rows = bench_soc.load(os.path.join(TR, name + ".csv"))
    cap_true = bench_soc.true_capacity_ah(rows)
    t_full = bench_soc.first_full_end(rows, cap_true)
    s0 = rows[0]["soc_true"] * 100.0
    soc0 = s0 + 20.0 if s0 <= 80.0 else s0 - 20.0
    tab = list(replay.read_rows(os.path.join(TR, own_file))) if own else None
    out = []
    for g in gains:
        r = bench_soc.run(rows, chem, nom, g, soc0, vc, t_full, tab, naive)
        r["cap_err"] = (r["cap_ah"] - cap_true) / cap_true * 100.0
        out.append(r)
    return out


def test_lfp_short_cv_charger_recognised_as_full():
    """The issue's LFP day: C/2 CC-CV to 3.55 V, ~2 min of CV to a C/30 tail."""
    est = _runs("lfp_c2_shortcv")
    nv = _runs("lfp_c2_shortcv", naive=True)
    for e, n in zip(est, nv):
        assert e["rmse_f"] <= 2.0 and e["max_f"] <= 5.0, e
        assert e["rmse_f"] <= n["rmse_f"], (e, n)
        assert e["rmse"] <= 8.0 and e["cov"] >= 95.0, e


def test_lfp_chargers_without_a_tail_and_with_float():
    """An inverter that stops at its CVL (no CV), and absorption followed by float."""
    for name in ("lfp_cvl_stop", "lfp_float", "lfp_longcv"):
        est = _runs(name)
        nv = _runs(name, naive=True)
        worst_e = max(r["rmse_f"] for r in est)
        worst_n = max(r["rmse_f"] for r in nv)
        assert worst_e <= 2.0 and max(r["max_f"] for r in est) <= 5.0, (name, est)
        assert worst_e <= worst_n, (name, worst_e, worst_n)
        assert min(r["cov"] for r in est) >= 95.0, (name, est)


def test_plateau_rest_never_jumps_beyond_its_uncertainty():
    """Rests on the LFP plateau (generic table): between two rows SOC moves by the charge
    counted plus at most twice the uncertainty it had (the issue: 39.7 -> 23.4 % with the
    truth at 39.4 %), and the truth stays within +/-2 sigma on >= 95 % of the rows."""
    ocv.reset_tables()
    for name in ("lfp_c2_shortcv", "lfp_cvl_stop", "lfp_float"):
        _, chem, vc, nom, _, _ = _case(name)
        rows = bench_soc.load(os.path.join(TR, name + ".csv"))
        rp = replay.Replay(chem, nom, initial_soc=rows[0]["soc_true"] * 100.0, gain=1.01,
                           offset_ma=0.5 * nom, noise_mv=2.0, seed=3, charge_mv=vc)
        prev = None
        inside = 0
        for r in rows:
            est = rp.step(r["t_s"], r["current_A"], [r["voltage_V"]], r["temp_C"])
            if prev is not None:
                counted = (est.chg_mah_total - prev[2] - est.dsg_mah_total + prev[3])
                counted = counted / est.capacity_mah * 100.0
                jump = est.soc_pct - prev[0] - counted
                anchor = (est.last_sync_ms == int(r["t_s"] * 1000)
                          and est.last_sync_kind in (SYNC_FULL, SYNC_EMPTY))
                if not anchor:
                    assert abs(jump) <= 2.0 * prev[1] + 0.3, (name, r["t_s"], prev, est.soc_pct)
            prev = (est.soc_pct, est.soc_err_pct, est.chg_mah_total, est.dsg_mah_total)
            if abs(est.soc_pct - r["soc_true"] * 100.0) <= 2.0 * est.soc_err_pct:
                inside += 1
        assert inside >= 0.95 * len(rows), (name, inside, len(rows))


def test_nmc_charger_below_100_and_wrong_start():
    """NMC charged to 4.10 V only: the naive counter calls it 100 %, the estimator reads the
    charge voltage. From a start 20 points wrong in the middle of the curve (3.75 V, where
    known NMC cells lie up to 19 % apart through the generic table) the whole trace stays
    within 4 % RMSE with the truth inside 2 sigma."""
    est = _runs("nmc_mohtat_410")
    nv = _runs("nmc_mohtat_410", naive=True)
    for e, n in zip(est, nv):
        assert e["rmse"] <= 4.0 and e["cov"] >= 95.0, e
        assert e["rmse_f"] < n["rmse_f"] / 2, (e, n)
    chen = _runs("nmc_chen_419")
    for e in chen:
        assert e["rmse"] <= 4.0 and e["cov"] >= 95.0, e


def test_nmc_cell_far_from_the_generic_table_is_honest():
    """The Ecker2015 cell sits up to 19 % (100 mV) from the generic NMC table mid-range: the
    uncertainty says so (truth within 2 sigma on >= 95 % of rows), and after the first full
    charge the error stays what the capacity error (the configured nominal is 7 % below the
    cell's) makes of counting: within 3 % RMSE, 5 % max."""
    for e in _runs("nmc_ecker_float"):
        assert e["cov"] >= 95.0, e
        assert e["rmse_f"] <= 3.0 and e["max_f"] <= 5.0, e


def test_own_table_is_worth_more():
    """The cell's own OCV table (board OCV_TABLE): NMC after the first full charge within
    1 % RMSE / 3 % max on the 4.19 V charger."""
    own = _runs("nmc_chen_419", own=True)
    gen = _runs("nmc_chen_419")
    for o, g in zip(own, gen):
        assert o["rmse_f"] <= 1.0 and o["max_f"] <= 3.0, o
        assert o["rmse_f"] < g["rmse_f"]


def test_aged_nmc_capacity_learnt():
    """87-88 % of nominal: two full cycles, or two home days with one full charge and one
    deep discharge, with the built-in table."""
    for name in ("nmc_aged_cycles", "nmc_aged_home"):
        for r in _runs(name):
            assert abs(r["cap_err"]) <= 3.0, (name, r)
            assert r["cov"] >= 95.0, (name, r)


def test_aged_lfp_capacity_learnt_with_own_table_and_moves_with_generic():
    for r in _runs("lfp_aged_cycles", own=True):
        assert abs(r["cap_err"]) <= 3.0, r
    for r in _runs("lfp_aged_cycles"):
        assert abs(r["cap_err"]) <= 6.0 and r["cov"] >= 95.0, r  # never stuck at nominal
        assert math.isfinite(r["rmse"])
