# Control on the virtual board (tools/sim.py under micropython, the simulated inverter obeys
# the limits it receives): with a 5 % capacity and SOC spread no cell reaches the
# over-voltage protection limit while charging (the limits stop it first), the limits never
# rise faster than their ramps, no charge current flows into the cells below the minimum
# charge temperature, the heater runs before charging starts, and an imbalanced pack held
# at the top gets balanced. CPython only.
import csv
import json
import os

import longruns

def _get(name):
    """(config, log rows) of the simulator run `name` (host_tests/longruns.py)."""
    d, _ = longruns.get(name)
    with open(os.path.join(d, "log.csv")) as f:
        cfg = json.loads(f.readline()[len("# config: "):])
        rows = list(csv.DictReader(f))
    return cfg, rows


def test_no_cell_reaches_over_voltage_with_5pct_spread():
    for name in ("imbalance", "imbalance-15"):
        _no_ov(*_get(name))


def _no_ov(cfg, rows):
    top = max(int(r["true_cell_max_mv"]) for r in rows)
    # The pack really was charged to the top (the test would be empty otherwise) ...
    assert top >= cfg["chg_cell_mv"] - 30, top
    # ... and the limits held every cell below the protection limit: no trip, no warning.
    assert top < cfg["cell_ov_mv"], top
    assert not any("cell_ov" in r["faults"] or "hw_ov" in r["faults"] for r in rows)
    spread = [int(r["cell_max_mv"]) - int(r["cell_min_mv"]) for r in rows]
    assert max(spread) > 20  # the spread was real


def test_imbalanced_pack_on_charge_gets_balanced():
    from bms.balancing import mask_ok
    from bms.bq769x0 import BQ769x0

    cfg, rows = _get("imbalance-15")
    cells = ["cell%d_mv" % (i + 1) for i in range(cfg["cells"])]
    groups = BQ769x0(None, cfg["cells"]).cell_groups  # the groups the app's driver gives
    bleeding = [int(r["bal_mask"]) for r in rows if int(r["bal_mask"] or 0)]
    assert all(mask_ok(m, groups) for m in bleeding)  # never two neighbours of one group
    assert sum(bin(m).count("1") for m in bleeding) / len(bleeding) >= 2.0  # in parallel
    end = rows[-1]
    vs = [int(end[c]) for c in cells]
    assert int(rows[0]["cell_max_mv"]) - int(rows[0]["cell_min_mv"]) > 0
    assert max(vs) >= cfg["bal_min_cell_mv"]  # still at the top of charge...
    assert max(vs) - min(vs) <= 10, vs  # ...with every cell within 10 mV
    first_top = min(int(r["t_s"]) for r in rows
                    if int(r["cell_max_mv"]) >= cfg["bal_min_cell_mv"])
    spread_top = [int(r["cell_max_mv"]) - int(r["cell_min_mv"]) for r in rows
                  if int(r["t_s"]) >= first_top + 600]
    assert max(spread_top) > 50  # it was far apart at the top when it started


def _rises(rows, col):
    out = []
    for a, b in zip(rows, rows[1:]):
        out.append(int(b[col]) - int(a[col]))
    return out


def test_limits_never_rise_faster_than_the_ramp():
    for name in ("imbalance", "cold-morning", "imbalance-15"):
        cfg, rows = _get(name)
        body = rows[2:]  # the first update after boot sets the limits directly
        cells = cfg["cells"]
        assert max(_rises(body, "ccl_ma")) <= cfg["ccl_ramp_ma_s"], name
        assert max(_rises(body, "dcl_ma")) <= cfg["dcl_ramp_ma_s"], name
        assert max(_rises(body, "cvl_mv")) <= cells * cfg["cvl_ramp_mv_s"], name
        assert min(int(r["cvl_mv"]) for r in rows) > 0  # never a zero charge voltage


def test_no_charge_current_below_the_minimum_charge_temperature():
    cfg, rows = _get("cold-morning")
    cold = [r for r in rows if float(r["true_temp_c"]) * 10 < cfg["chg_temp_min_dc"]]
    assert len(cold) > 300, len(cold)  # the pack really was below 0 degC for a while
    assert all(int(r["true_current_ma"]) <= 0 for r in cold)
    assert all(int(r["ccl_ma"]) <= cfg["heater_ma"] for r in cold)


def test_heater_runs_before_charging():
    cfg, rows = _get("cold-morning")
    heat = [int(r["t_s"]) for r in rows if r["heater"] == "1"]
    charge = [int(r["t_s"]) for r in rows if int(r["true_current_ma"]) > 0]
    assert heat and charge, (len(heat), len(charge))
    assert heat[0] < charge[0]
    # charging starts only once the pack is above the charge minimum
    first = next(r for r in rows if int(r["true_current_ma"]) > 0)
    assert float(first["true_temp_c"]) * 10 >= cfg["chg_temp_min_dc"]
