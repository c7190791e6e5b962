"""SOC/SOH accuracy benchmark (`make bench-soc`, CPython). Prints figures, asserts nothing.

What a user gets: the firmware's estimator with the BUILT-IN generic OCV tables (measured
curves of other cells), replayed in-process through tools/replay.py on
  * the PyBaMM traces in tools/traces/ (made by tools/gen_traces.py: several parameter sets,
    chargers with short and long CV phases, C/50..C/20 tails, an inverter that stops at CVL,
    absorption + float, aged cells at 87-88 % of nominal), and
  * the measured CALCE A123 LFP traces, read at run time from ../shared/reference/data/
    (GPL-3.0 redistribution: never copied into this repository).
Each trace runs three ways on the same rows with the same sensor errors:
  est/gen   the estimator, built-in table (what a user has)
  est/own   the estimator with the model cell's own OCV table installed (extra rows)
  naive     a plain coulomb counter with a full-sync rule (NaiveCounter below, ~30 lines)
Sensor errors on every run: current gain +1 % and -1 % (both run, the worse decides), current
offset 50 mA per 100 Ah (0.05 % C), cell-voltage noise 2 mV rms, initial SOC 20 points wrong
(the estimator is told +/-20 % uncertainty), the trace's charger voltage configured as a user
would (--charge-mv), the datasheet (fresh) capacity as nominal.

Columns: rmse/max over the whole trace; rmse_f/max_f after the end of the first full charge
(from the truth: the first end of charging above 97 % true SOC, plus one minute for the
BMS to see the current stop); cov = share of rows with the
truth within +/-2 sigma of the estimate (sigma = soc_err_pct; target >= 95 %); cap = learnt
capacity error against the trace's true capacity (least-squares slope of counted charge
against true SOC). --quick: one gain sign only.
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
TRACES = os.path.join(HERE, "traces")

# name: chemistry, charger cell voltage (mV), nominal Ah (datasheet), own table, kind
CASES = (
    ("lfp_c2_shortcv", "lfp", 3550, 2.3, "ocv_Prada2013.csv", "days"),
    ("lfp_cvl_stop", "lfp", 3500, 2.3, "ocv_Prada2013.csv", "days"),
    ("lfp_float", "lfp", 3500, 2.3, "ocv_Prada2013.csv", "days"),
    ("lfp_longcv", "lfp", 3600, 2.3, "ocv_Prada2013.csv", "days"),
    ("nmc_chen_419", "nmc", 4190, 5.0, "ocv_Chen2020.csv", "days"),
    ("nmc_mohtat_410", "nmc", 4100, 5.0, "ocv_Mohtat2020.csv", "days"),
    ("nmc_ecker_float", "nmc", 4190, 0.15625, "ocv_Ecker2015.csv", "days"),
    ("lfp_aged_cycles", "lfp", 3600, 2.3, "ocv_Prada2013.csv", "aged"),
    ("nmc_aged_cycles", "nmc", 4190, 5.0, "ocv_Chen2020.csv", "aged"),
    ("lfp_aged_home", "lfp", 3550, 2.3, "ocv_Prada2013.csv", "aged"),
    ("nmc_aged_home", "nmc", 4190, 5.0, "ocv_Chen2020.csv", "aged"),
)
TARGETS = {"nmc": (1.0, 3.0, 3.0), "lfp": (2.0, 5.0, 8.0)}  # after full: RMSE, max; whole RMSE


class NaiveCounter:
    """The baseline: count the current, clamp to 0..100 %, and set 100 % when the charger is
    at its voltage (max cell >= charge voltage - 20 mV) with a small tail (0 <= I <= C/20)."""

    def __init__(self, cfg):
        self.cap = float(cfg.capacity_mah)
        self.full_mv = cfg.chg_cell_mv - 20
        self.tail_ma = cfg.capacity_mah / 20.0
        self.soc_pct = 50.0
        self.soc_err_pct = float("nan")
        self.capacity_mah = self.cap
        self.r_mohm = 0.0
        self.cycles = 0.0
        self.last_sync_kind = 0

    def set_soc(self, pct, now_ms, err_pct=20.0):
        self.soc_pct = pct

    def init_from_ocv(self, snap, now_ms):
        return False

    def update(self, snap, now_ms):
        n = snap.cc_samples
        if n:
            i = snap.cc_sum_ma / n
            self.soc_pct += i * n * 0.25 / 3600.0 / self.cap * 100.0
            self.soc_pct = min(100.0, max(0.0, self.soc_pct))
            if snap.cell_max_mv >= self.full_mv and 0.0 <= i <= self.tail_ma:
                self.soc_pct = 100.0
                self.last_sync_kind = 1
        snap.cc_samples = 0
        snap.cc_sum_ma = 0


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


def first_full_end(rows, cap_ah):
    """Time at which the first full charge ended (truth above 97 % - or within 2 points of the
    trace's highest SOC for a charger set below 100 % -, then charging stopped)."""
    top = min(0.97, max(r["soc_true"] for r in rows) - 0.02)
    k = 0
    while k < len(rows) and rows[k]["soc_true"] < top:
        k += 1
    while k < len(rows) and rows[k]["current_A"] > cap_ah / 50.0:
        k += 1
    return rows[k]["t_s"] + 60.0 if k < len(rows) else None  # a minute to see it stop


def run(rows, chem, cap_ah, gain, soc0, charge_mv, t_full, own_rows=None, naive=False):
    offset_ma = 50.0 * cap_ah / 100.0  # 50 mA on a 100 Ah pack
    table = None
    if own_rows:
        table = [int(round(r["ocv_V"] * 10000)) for r in own_rows]
    rp = replay.Replay(chem, cap_ah, initial_soc=soc0, gain=gain, offset_ma=offset_ma,
                       noise_mv=2.0, seed=7, charge_mv=charge_mv, ocv_table=table)
    if naive:
        rp.est = NaiveCounter(rp.cfg)
    sq = sq_f = 0.0
    n = n_f = n_cov = 0
    mx = mx_f = 0.0
    for r in rows:
        est = rp.step(r["t_s"], r["current_A"], [r["voltage_V"]], r.get("temp_C"))
        e = abs(est.soc_pct - r["soc_true"] * 100.0)
        sq += e * e
        n += 1
        mx = max(mx, e)
        if not naive and e <= 2.0 * est.soc_err_pct:
            n_cov += 1
        if t_full is not None and r["t_s"] >= t_full:
            sq_f += e * e
            n_f += 1
            mx_f = max(mx_f, e)
    return {
        "rmse": math.sqrt(sq / n), "max": mx,
        "rmse_f": math.sqrt(sq_f / n_f) if n_f else float("nan"),
        "max_f": mx_f if n_f else float("nan"),
        "cov": n_cov / n * 100.0 if not naive else float("nan"),
        "cap_ah": rp.est.capacity_mah / 1000.0 / rp.k,
    }


def worse(a, b):
    if a is None:
        return b
    out = {}
    for k in a:
        if k == "cap_err":
            out[k] = a[k] if abs(a[k]) >= abs(b[k]) else b[k]
        elif k == "cov":
            out[k] = min(a[k], b[k])
        else:
            out[k] = max(a[k], b[k])
    return out


def bench(quick=False, only=None, true_cap=False):
    gains = (1.01,) if quick else (1.01, 0.99)
    jobs = []
    for name, chem, vc, nom, own, kind in CASES:
        if only and name not in only:
            continue
        jobs.append((name, os.path.join(TRACES, name + ".csv"), chem, vc, nom,
                     os.path.join(TRACES, own), kind))
    for name in ("DST", "US06"):
        if only and "calce_" + name.lower() not in only:
            continue
        jobs.append(("calce_" + name.lower(), os.path.join(SHARED, "CALCE_A123_%s_20C.csv" % name),
                     "lfp", 3600, 1.1, None, "calce"))
    print("SOC/SOH benchmark: gain %s, offset 0.05 %% C, 2 mV noise, SOC0 20 points wrong; "
          "worse gain sign shown" % "/".join("%+.0f %%" % ((g - 1) * 100) for g in gains))
    print("%-17s %-9s %6s %6s | %6s %6s | %5s | %7s" % (
        "trace", "run", "rmse", "max", "rmse_f", "max_f", "cov%", "cap_err"))
    results = {}
    for name, path, chem, vc, nom, own, kind in jobs:
        if not os.path.exists(path):
            print("%-17s missing: %s" % (name, path))
            continue
        rows = load(path)
        cap_true = true_capacity_ah(rows)
        t_full = first_full_end(rows, cap_true) if kind != "calce" else rows[0]["t_s"]
        s0 = rows[0]["soc_true"] * 100.0
        soc0 = s0 + 20.0 if s0 <= 80.0 else s0 - 20.0
        own_rows = list(replay.read_rows(own)) if own else None
        runs = [("est/gen", None, False), ("naive", None, True)]
        if own_rows:
            runs.insert(1, ("est/own", own_rows, False))
        if true_cap:
            runs.insert(1, ("est/capT", None, False))
        for label, tab, naive in runs:
            w = None
            for g in gains:
                res = run(rows, chem, cap_true if label == "est/capT" else nom, g, soc0, vc,
                          t_full, tab, naive)
                res["cap_err"] = (res.pop("cap_ah") - cap_true) / cap_true * 100.0
                w = worse(w, res)
            results[(name, label)] = w
            print("%-17s %-9s %6.2f %6.2f | %6.2f %6.2f | %5.1f | %+6.2f%%" % (
                name, label, w["rmse"], w["max"], w["rmse_f"], w["max_f"], w["cov"],
                w["cap_err"]))
    return results


def verdicts(results):
    print()
    print("Acceptance (est/gen = built-in tables; 'after full' = after the first full charge):")
    for name, chem, _vc, _nom, _own, kind in CASES:
        g = results.get((name, "est/gen"))
        nv = results.get((name, "naive"))
        if g is None:
            continue
        t_rmse, t_max, t_whole = TARGETS[chem]
        items = []
        if kind == "days":
            items.append(("after full %.1f/%.1f <= %.0f/%.0f" % (
                g["rmse_f"], g["max_f"], t_rmse, t_max),
                g["rmse_f"] <= t_rmse and g["max_f"] <= t_max))
            items.append(("whole %.1f <= %.0f" % (g["rmse"], t_whole), g["rmse"] <= t_whole))
        else:
            items.append(("capacity %+.1f %% within 3 %%" % g["cap_err"],
                          abs(g["cap_err"]) <= 3.0))
        if nv is not None:
            items.append(("not worse than naive after full (%.2f vs %.2f)" % (
                g["rmse_f"], nv["rmse_f"]), g["rmse_f"] <= nv["rmse_f"] + 1e-9))
        items.append(("2-sigma coverage %.1f %% >= 95" % g["cov"], g["cov"] >= 95.0))
        print("%-17s %s" % (name, "; ".join(
            "%s: %s" % (t, "met" if ok else "NOT MET") for t, ok in items)))


def main(argv):
    quick = "--quick" in argv
    only = [a for a in argv if not a.startswith("--")]
    ocv.reset_tables()
    res = bench(quick, set(only) if only else None, "--true-cap" in argv)
    verdicts(res)


if __name__ == "__main__":
    main(sys.argv[1:])
