"""Replay a CSV trace through the firmware's own estimator (bms.estimator).

Runs under `micropython` and `python3`:

    python3 tools/replay.py TRACE.csv --capacity-ah 5.0 [--chemistry nmc] [--charge-mv 4190]
        [--initial-soc 50] [--ocv-table own.csv] [--out est.csv] [--gain 1.01]
        [--offset-ma 2.5] [--noise-mv 2] [--seed 1] [--cells N] [--score-from-s 3600]

Input columns (header row, comma separated): t_s, current_A (+ = charging), voltage_V (one
cell or the mean cell) and/or cell1_V ... cellN_V, temp_C; optional soc_true (0..1).
Each row becomes one Snapshot: the cells, and the row's charge as 250 ms coulomb-counter
samples (trapezoidal current over the interval since the previous row; irregular steps
and duplicate timestamps are handled, sub-mA remainders carried to the next row), then
Estimator.update(). Rows are read and written one at a time.
Output columns: t_s, soc_pct, soc_err_pct, soh_pct, capacity_ah, r_mohm[, soc_true_pct].
With soc_true present the last line printed is `soc_rmse_pct=... soc_max_err_pct=...`.
--charge-mv: the charger's (or inverter's CVL) cell voltage, as a user sets chg_cell_mv.
--ocv-table: the cell's own OCV table (CSV soc,ocv_V; soc 0..1 evenly spaced), as a board's
OCV_TABLE; without it the built-in generic table of the chemistry is used.
--gain/--offset-ma/--noise-mv add sensor errors (current gain, current offset in mA,
Gaussian cell-voltage noise in mV); --initial-soc absent = boot guess from the OCV curve.
Bad input (missing file, a file of another kind, bad option) -> one line on stderr, exit 2.
"""
import math
import random
import sys


def _here():
    f = globals().get("__file__") or sys.argv[0]
    k = f.rfind("/")
    return f[:k] if k >= 0 else "."


_ROOT = _here() + "/.."
sys.path.insert(0, _ROOT + "/firmware")
if sys.implementation.name != "micropython":
    sys.path.insert(0, _ROOT + "/tools/compat")  # CPython stand-in for `micropython`

from bms.config import Config  # noqa: E402
from bms.estimator import Estimator  # noqa: E402
from bms.events import EventLog  # noqa: E402
from bms.snapshot import (  # noqa: E402
    FLAG_CC_NEW,
    FLAG_CELLS_VALID,
    FLAG_CURRENT_VALID,
    FLAG_PACK_VALID,
    FLAG_TEMPS_VALID,
    Snapshot,
)


def _gauss(rng):
    u = rng.random()
    while u <= 1e-12:
        u = rng.random()
    return math.sqrt(-2.0 * math.log(u)) * math.cos(2.0 * math.pi * rng.random())


def _float(s):
    s = s.strip()
    if not s or s.lower() == "nan":
        return None
    return float(s)


class Replay:
    """Feeds rows (dicts of floats) to an Estimator; also usable in-process (bench_soc)."""

    def __init__(self, chemistry, capacity_ah, cells=None, initial_soc=None, gain=1.0,
                 offset_ma=0.0, noise_mv=0.0, seed=1, n_cells=3, charge_mv=None,
                 ocv_table=None):
        cap = int(round(capacity_ah * 1000))
        # cells below the configuration's 1 Ah minimum are replayed as k in parallel (the
        # estimator only sees current / capacity); capacity outputs are divided back by k
        self.k = 1 if cap >= 1000 else 1000 // max(cap, 1) + 1
        cap *= self.k
        self.n = max(3, n_cells if cells is None else cells)
        self.cfg = Config(chemistry, self.n, cap)
        if charge_mv:
            # The charger of the trace, set as a user sets the BMS's charge voltage: the
            # estimator's "at the top" threshold (soc_full_mv) follows it, absorb_margin_mv below.
            ch = {"chg_cell_mv": charge_mv, "ccl_zero_mv": charge_mv + 5,
                  "ccl_knee_mv": charge_mv - 50, "float_cell_mv": charge_mv - 50,
                  "soc_full_mv": charge_mv - self.cfg.absorb_margin_mv}
            if charge_mv + 5 >= self.cfg.cell_ov_mv:  # a charger above the preset OV limit
                ch["cell_ov_mv"] = charge_mv + 30
                ch["hw_cell_ov_mv"] = max(self.cfg.hw_cell_ov_mv, charge_mv + 80)
            self.cfg.update(ch)
        self.events = EventLog(64)
        self.est = Estimator(self.cfg, self.events, ocv_table)
        self.snap = Snapshot(self.n, 1)
        self.initial_soc = initial_soc
        self.gain = gain
        self.offset_ma = offset_ma
        self.noise_mv = noise_mv
        self.rng = random.Random(seed) if hasattr(random, "Random") else None
        if self.rng is None:
            random.seed(seed)
            self.rng = random
        self.t_prev = None
        self.i_prev = 0.0
        self.ticks = 0  # 250 ms samples emitted
        self.rem = 0.0  # mA*sample remainder not yet emitted as an integer
        self.started = False
        self.sq = 0.0
        self.count = 0
        self.max_err = 0.0

    def step(self, t_s, current_a, cells_v, temp_c):
        snap = self.snap
        i_ma = (current_a * 1000.0 * self.gain + self.offset_ma) * self.k
        for k in range(self.n):
            v = cells_v[k if k < len(cells_v) else len(cells_v) - 1]
            mv = v * 1000.0
            if self.noise_mv > 0:
                mv += self.noise_mv * _gauss(self.rng)
            snap.cell_mv[k] = int(round(mv))
        snap.temp_dc[0] = int(round(temp_c * 10)) if temp_c is not None else 250
        snap.update_stats()
        snap.pack_mv = snap.cell_sum_mv
        snap.current_ma = int(round(i_ma))
        snap.chg_fet = True
        snap.dsg_fet = True
        snap.flags = FLAG_CELLS_VALID | FLAG_PACK_VALID | FLAG_CURRENT_VALID | FLAG_TEMPS_VALID
        ticks = int(round(t_s * 4))
        if self.t_prev is None:
            self.ticks = ticks
            self.i_prev = i_ma
        n = ticks - self.ticks
        if n > 0:
            q = (self.i_prev + i_ma) * 0.5 * n + self.rem  # mA * samples
            qi = int(round(q))
            self.rem = q - qi
            snap.cc_sum_ma += qi
            snap.cc_samples += n
            snap.cc_seq += n
            snap.flags |= FLAG_CC_NEW
            self.ticks = ticks
        self.i_prev = i_ma
        self.t_prev = t_s
        now_ms = int(t_s * 1000)
        snap.t_ms = now_ms
        snap.seq += 1
        if not self.started:
            self.started = True
            if self.initial_soc is not None:
                self.est.set_soc(self.initial_soc, now_ms)
            elif not self.est.init_from_ocv(snap, now_ms):
                self.est.set_soc(50.0, now_ms, 50.0)
        if n > 0 or snap.cc_samples == 0:
            self.est.update(snap, now_ms)
        return self.est

    def score(self, soc_true_pct):
        e = abs(self.est.soc_pct - soc_true_pct)
        self.sq += e * e
        self.count += 1
        if e > self.max_err:
            self.max_err = e
        return e

    def rmse(self):
        return math.sqrt(self.sq / self.count) if self.count else 0.0


class TraceError(Exception):
    """Bad input: one line for the user (exit status 2)."""


def read_rows(path):
    """Yield dicts column -> float (None for NaN/empty), one row at a time."""
    try:
        f = open(path)
    except OSError:
        raise TraceError("cannot open %s" % path) from None
    try:
        first = f.readline()
        if first.startswith("# config:"):
            raise TraceError("%s is a tools/sim.py log, not a trace: needs the columns t_s, "
                             "current_A and voltage_V or cell1_V..." % path)
        header = [h.strip() for h in first.split(",")]
        lineno = 1
        while True:
            line = f.readline()
            lineno += 1
            if not line:
                break
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split(",")
            row = {}
            for k in range(min(len(header), len(parts))):
                try:
                    row[header[k]] = _float(parts[k])
                except ValueError:
                    raise TraceError("%s line %d: %s is not a number (%r)" % (
                        path, lineno, header[k], parts[k].strip())) from None
            yield row
    except UnicodeError:
        raise TraceError("%s is not a text CSV trace" % path) from None
    finally:
        f.close()


def check_header(path):
    """The trace's column names; TraceError when it is not a trace this tool reads."""
    try:
        f = open(path)
    except OSError:
        raise TraceError("cannot open %s" % path) from None
    try:
        try:
            first = f.readline()
        except UnicodeError:
            raise TraceError("%s is not a text CSV trace" % path) from None
    finally:
        f.close()
    if first.startswith("# config:"):
        raise TraceError("%s is a tools/sim.py log, not a trace: needs the columns t_s, "
                         "current_A and voltage_V or cell1_V..." % path)
    cols = [h.strip() for h in first.split(",")]
    if "t_s" not in cols or "current_A" not in cols or not (
            "voltage_V" in cols or "cell1_V" in cols):
        raise TraceError("%s is not a trace: needs the columns t_s, current_A and voltage_V or "
                         "cell1_V... (found: %s)" % (path, ", ".join(cols[:8]) or "nothing"))
    return cols


def cell_columns(row):
    cols = []
    k = 1
    while ("cell%d_V" % k) in row:
        cols.append("cell%d_V" % k)
        k += 1
    return cols


USAGE = ("usage: replay.py TRACE.csv --capacity-ah AH [--chemistry lfp|nmc|lto] "
         "[--charge-mv MV] [--initial-soc PCT] [--ocv-table FILE.csv] [--out FILE.csv] "
         "[--gain G] [--offset-ma MA] [--noise-mv MV] [--seed N] [--cells N] [--score-from-s S]")

_NUM = {"capacity-ah": (0.05, 5000.0), "initial-soc": (0.0, 100.0), "gain": (0.5, 1.5),
        "offset-ma": (-1e6, 1e6), "noise-mv": (0.0, 1000.0), "seed": (0, 1e9),
        "cells": (1, 15), "score-from-s": (0.0, 1e12), "charge-mv": (1500, 4500)}


def _parse(argv):
    opts = {"chemistry": "lfp", "capacity-ah": None, "initial-soc": None, "out": None,
            "gain": "1.0", "offset-ma": "0", "noise-mv": "0", "seed": "1", "cells": None,
            "score-from-s": "0", "charge-mv": None, "ocv-table": None}
    path = None
    k = 0
    while k < len(argv):
        a = argv[k]
        if a in ("-h", "--help"):
            return None, None
        if a.startswith("--"):
            key = a[2:]
            if "=" in key:
                key, val = key.split("=", 1)
            else:
                k += 1
                if k >= len(argv):
                    raise TraceError("missing value for --" + key)
                val = argv[k]
            if key not in opts:
                raise TraceError("unknown option --" + key)
            opts[key] = val
        elif path is None:
            path = a
        else:
            raise TraceError("one trace file only (got %s and %s)" % (path, a))
        k += 1
    if path is None:
        raise TraceError("no trace file given")
    if opts["capacity-ah"] is None:
        raise TraceError("--capacity-ah is required (the pack's nominal capacity)")
    if opts["chemistry"] not in ("lfp", "nmc", "lto"):
        raise TraceError("--chemistry must be lfp, nmc or lto")
    out = {"chemistry": opts["chemistry"], "out": opts["out"], "ocv-table": opts["ocv-table"]}
    for key in _NUM:
        v = opts[key]
        if v is None:
            out[key] = None
            continue
        try:
            x = float(v)
        except ValueError:
            raise TraceError("--%s: not a number: %s" % (key, v)) from None
        lo, hi = _NUM[key]
        if not lo <= x <= hi:
            raise TraceError("--%s must be in %g..%g" % (key, lo, hi))
        out[key] = x
    return path, out


def load_table(path):
    """An OCV table CSV (columns soc, ocv_V; soc 0..1 evenly spaced) as 0.1 mV ints."""
    t = []
    for r in read_rows(path):
        v = r.get("ocv_V")
        if v is None or r.get("soc") is None:
            raise TraceError("%s: an OCV table needs the columns soc and ocv_V" % path)
        t.append(int(round(v * 10000)))
    return t


def main(argv):
    path, o = _parse(argv)
    if path is None:
        print(USAGE)
        doc = globals().get("__doc__")  # MicroPython keeps no docstrings
        if doc:
            print(doc)
        return 0
    cols = check_header(path)
    table = load_table(o["ocv-table"]) if o["ocv-table"] else None
    rp = None
    out = None
    score_from = o["score-from-s"]
    has_truth = "soc_true" in cols
    vcols = None
    for row in read_rows(path):
        t = row.get("t_s")
        i = row.get("current_A")
        if t is None or i is None:
            continue
        if vcols is None:
            vcols = cell_columns(row) or ["voltage_V"]
            init = o["initial-soc"]
            try:
                rp = Replay(o["chemistry"], o["capacity-ah"],
                            cells=int(o["cells"]) if o["cells"] else None,
                            initial_soc=init, gain=o["gain"], offset_ma=o["offset-ma"],
                            noise_mv=o["noise-mv"], seed=int(o["seed"]), n_cells=len(vcols),
                            charge_mv=int(o["charge-mv"]) if o["charge-mv"] else None,
                            ocv_table=table)
            except ValueError as e:  # ConfigError, a bad OCV table
                raise TraceError(str(e)) from None
            if o["out"]:
                try:
                    out = open(o["out"], "w")
                except OSError:
                    raise TraceError("cannot write %s" % o["out"]) from None
                out.write("t_s,soc_pct,soc_err_pct,soh_pct,capacity_ah,r_mohm")
                out.write(",soc_true_pct\n" if has_truth else "\n")
        vs = [row.get(c) for c in vcols]
        if None in vs:
            continue
        est = rp.step(t, i, vs, row.get("temp_C"))
        truth = row.get("soc_true") if has_truth else None
        if truth is not None and t >= score_from:
            rp.score(truth * 100.0)
        if out:
            out.write("%.1f,%.3f,%.3f,%.2f,%.4f,%.3f" % (
                t, est.soc_pct, est.soc_err_pct, est.soh_pct,
                est.capacity_mah / 1000.0 / rp.k, est.r_mohm * rp.k))
            out.write(",%.3f\n" % (truth * 100.0) if truth is not None else "\n")
    if out:
        out.close()
    if rp is None:
        raise TraceError("%s has no data rows" % path)
    est = rp.est
    print("rows=%d capacity_ah=%.4f soh_pct=%.2f r_mohm=%.2f cycles=%.2f" % (
        rp.count, est.capacity_mah / 1000.0 / rp.k, est.soh_pct, est.r_mohm * rp.k, est.cycles))
    if has_truth:
        print("soc_rmse_pct=%.3f soc_max_err_pct=%.3f" % (rp.rmse(), rp.max_err))
    return 0


if __name__ == "__main__":
    try:
        rc = main(sys.argv[1:])
    except TraceError as e:
        sys.stderr.write("replay.py: %s\n" % e)
        rc = 2
    sys.exit(rc)
