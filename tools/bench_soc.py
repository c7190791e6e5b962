"""SOC/SOH accuracy benchmark (`make bench-soc`, CPython). Prints figures, asserts nothing.

Replays through the firmware's own estimator (tools/replay.py, in-process):
  * the PyBaMM ground-truth traces in tools/traces/ (made by tools/gen_traces.py), and
  * the measured CALCE A123 LFP traces, read at run time from ../shared/reference/data/
    (GPL-3.0 redistribution: never copied into this repository).
Sensor errors on every run: current gain +1 % and -1 % (both reported, the worse one
decides), current offset 50 mA per 100 Ah (scaled to the cell), cell-voltage noise 2 mV rms,
initial SOC 20 points wrong. The "aged" runs give the estimator a nominal capacity 12 % above
the true one and score the learnt capacity after the two full cycles.

Scoring: RMSE and max |SOC - true SOC| over all rows, and over the rows after convergence
(NMC: after the first hour; LFP: after the first full/empty anchor, since the LFP plateau
cannot reveal a wrong initial SOC). True capacity = least-squares slope of the counted
charge against the true SOC over the trace.
"""
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import replay  # noqa: E402
from bms import ocv  # noqa: E402

SHARED = os.path.join(ROOT, "..", "shared", "reference", "data")

TARGETS = {"nmc": (1.0, 3.0), "lfp": (2.0, 5.0)}  # RMSE, max (%)
# The OCV table of the model cell itself (PyBaMM equilibrium, shared reference data): the
# "table measured on the actual cell" case. The firmware default tables are measured curves
# of other cells (APR18650M1B, LG M50T) and show what a generic table costs.
OWN_TABLE = {"nmc": "ocv_Chen2020_model.csv", "lfp": "ocv_Prada2013_model.csv"}
DEFAULT_TABLES = dict(ocv.TABLES)


def load(path):
    rows = []
    for r in replay.read_rows(path):
        if r.get("t_s") is None or r.get("current_A") is None or r.get("voltage_V") is None:
            continue
        rows.append(r)
    return rows


def true_capacity_ah(rows):
    q = 0.0
    xs = []
    ys = []
    prev = None
    for r in rows:
        if prev is not None:
            dt = r["t_s"] - prev["t_s"]
            if dt > 0:
                q += (r["current_A"] + prev["current_A"]) * 0.5 * dt / 3600.0
        prev = r
        xs.append(r["soc_true"])
        ys.append(q)
    n = len(xs)
    mx = sum(xs) / n
    my = sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx = sum((x - mx) ** 2 for x in xs)
    return sxy / sxx


def run(rows, chem, cap_ah, gain, soc0, converge_s, hours_per_row=None):
    offset_ma = 50.0 * cap_ah / 100.0  # 50 mA on a 100 Ah pack
    # The PyBaMM NMC traces charge with CC-CV to 4.2 V: configure the pack's charge voltage to
    # match (4190 mV, the highest the protection rules allow below cell_ov_mv 4200).
    charge_mv = 4190 if chem == "nmc" else None
    rp = replay.Replay(chem, cap_ah, initial_soc=soc0, gain=gain, offset_ma=offset_ma,
                       noise_mv=2.0, seed=7, charge_mv=charge_mv)
    sq_all = sq_conv = 0.0
    n_all = n_conv = 0
    mx_all = mx_conv = 0.0
    t_conv = None
    for r in rows:
        est = rp.step(r["t_s"], r["current_A"], [r["voltage_V"]], r.get("temp_C"))
        e = abs(est.soc_pct - r["soc_true"] * 100.0)
        sq_all += e * e
        n_all += 1
        mx_all = max(mx_all, e)
        if t_conv is None:
            if converge_s is not None and r["t_s"] >= converge_s:
                t_conv = r["t_s"]
            elif converge_s is None and est.last_sync_kind in (1, 2):
                t_conv = r["t_s"]
        if t_conv is not None:
            sq_conv += e * e
            n_conv += 1
            mx_conv = max(mx_conv, e)
    return {
        "rmse": math.sqrt(sq_all / n_all),
        "max": mx_all,
        "rmse_c": math.sqrt(sq_conv / n_conv) if n_conv else float("nan"),
        "max_c": mx_conv if n_conv else float("nan"),
        "t_conv_h": (t_conv / 3600.0) if t_conv is not None else float("nan"),
        "cap_ah": rp.est.capacity_mah / 1000.0,
        "r_mohm": rp.est.r_mohm,
        "syncs": rp.events.total,
    }


def use_table(chem, own):
    ocv.TABLES.update(DEFAULT_TABLES)
    if own:
        rows = list(replay.read_rows(os.path.join(SHARED, OWN_TABLE[chem])))
        ocv.set_table(chem, [int(round(r["ocv_V"] * 10000)) for r in rows])


def main():
    cases = []
    for own in (True, False):
        tag = "own" if own else "gen"
        for chem in ("nmc", "lfp"):
            days = os.path.join(HERE, "traces", chem + "_days.csv")
            cycles = os.path.join(HERE, "traces", chem + "_cycles.csv")
            cases.append(("%s_days/%s" % (chem, tag), days, chem, None, own, own))
            cases.append(("%s_cycles_aged/%s" % (chem, tag), cycles, chem, 1.12, own, own))
    for name in ("DST", "US06"):
        path = os.path.join(SHARED, "CALCE_A123_%s_20C.csv" % name)
        cases.append(("calce_%s/gen" % name.lower(), path, "lfp", None, False, False))
        # the BMS saw the charge end (full sync before the block): initial SOC known
        cases.append(("calce_%s/gen/synced" % name.lower(), path, "lfp", 0.0, False, False))
    nominal = {"nmc": 5.0, "lfp": 2.3, "calce": 1.1}
    print("SOC/SOH benchmark: gain +/-1 %, offset 50 mA per 100 Ah, 2 mV noise, SOC0 +/-20 pts")
    print("%-22s %-5s %7s %7s | %7s %7s %6s | %8s %8s %7s | %s" % (
        "trace", "gain", "rmse%", "max%", "rmse_c%", "max_c%", "conv_h",
        "cap_true", "cap_est", "cap_err", "target"))
    verdicts = []
    for name, path, chem, factor, own, scored in cases:
        if not os.path.exists(path):
            print("%-22s missing: %s" % (name, path))
            verdicts.append((name, "NOT RUN (file missing)"))
            continue
        use_table(chem, own)
        rows = load(path)
        cap_true = true_capacity_ah(rows)
        cap_nom = cap_true * factor if factor else nominal["calce" if "calce" in name else chem]
        s0 = rows[0]["soc_true"] * 100.0
        soc0 = s0 + 20.0 if s0 <= 80.0 else s0 - 20.0
        if factor == 0.0:
            soc0 = s0
        converge_s = 3600.0 if chem == "nmc" else None
        worst = None
        for gain in (1.01, 0.99):
            res = run(rows, chem, cap_nom, gain, soc0, converge_s)
            cap_err = (res["cap_ah"] - cap_true) / cap_true * 100.0
            res["cap_err"] = cap_err
            print("%-22s %+4.0f%% %7.2f %7.2f | %7.2f %7.2f %6.2f | %8.4f %8.4f %+6.2f%% |" % (
                name, (gain - 1) * 100, res["rmse"], res["max"], res["rmse_c"], res["max_c"],
                res["t_conv_h"], cap_true, res["cap_ah"], cap_err))
            if worst is None or res["rmse_c"] > worst["rmse_c"] or res["max_c"] > worst["max_c"]:
                worst = res
            if factor and (worst.get("cap_worst") is None or abs(cap_err) > worst["cap_worst"]):
                worst["cap_worst"] = abs(cap_err)
        if not scored:
            verdicts.append((name, "reported only (measured data, or generic OCV table)"))
            continue
        if factor:
            ok_cap = worst.get("cap_worst", 99.0) <= 3.0
            text = "capacity within 3 %% after two full cycles: %s (SOC here: learning run)" % (
                "MET" if ok_cap else "NOT MET")
        else:
            t_rmse, t_max = TARGETS[chem]
            ok_soc = worst["rmse_c"] <= t_rmse and worst["max_c"] <= t_max
            text = "SOC RMSE <= %.0f %% and max <= %.0f %% after convergence: %s" % (
                t_rmse, t_max, "MET" if ok_soc else "NOT MET")
        verdicts.append((name, text))
    print()
    print("own = the cell's own OCV table installed (ocv.set_table), gen = firmware default table")
    for name, text in verdicts:
        print("%-22s %s" % (name, text))


if __name__ == "__main__":
    main()
