# firmware/main.py runs unchanged under the micropython command against the virtual board
# (boards/sim: simulated time follows the wall clock). The test talks to it on the serial
# console like a user (the line console is the documented fallback when aiorepl is not
# installed), uses the diagnostics functions and checks what they print against the
# simulator's truth. It also runs a fire drill: the measure+protect task raises once, the
# FETs go off (safe state), the event log records the task error, and the task restarts.
# CPython only (subprocess).
import os
import re
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPY = os.path.join(ROOT, ".venv", "bin", "micropython")


def _session(commands):
    env = dict(os.environ, MICROPYPATH="boards/sim:firmware:tools:.:.frozen")
    p = subprocess.Popen(
        [MPY, "-X", "heapsize=2M", "firmware/main.py"],
        cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )
    try:
        for pause, cmd in commands:
            time.sleep(pause)
            p.stdin.write(cmd + "\n")
            p.stdin.flush()
        out, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    return out


def _section(out, start, end):
    i = out.index(start)
    j = out.index(end, i + len(start))
    return out[i + len(start):j]


_OUT = []


def _run():
    if not _OUT:
        _OUT.append(_session([
            (5.0, 'print("=STATUS")'),
            (0.0, "bms.status()"),
            (0.0, 'print("=TRUTH", hw.sim.true_cell_min_mv(), hw.sim.true_cell_max_mv(), '
                  'hw.sim.pack.temp_c, hw.sim.pack.cells, hw.sim.fet_on("chg"), '
                  'hw.sim.fet_on("dsg"))'),
            (0.0, 'print("=CELLS")'),
            (0.0, "bms.cells()"),
            (0.0, 'print("=FAULTS")'),
            (0.0, "bms.faults()"),
            (0.0, 'print("=SET")'),
            (0.0, 'bms.set("cell_ov_mv", 9999)'),
            (0.0, 'bms.set("imbalance_warn_mv", 80)'),
            (0.0, 'print("=CONFIG")'),
            (0.0, "bms.config()"),
            (0.0, 'print("=DRILL", hw.clock.now_ms())'),
            (0.0, 'bms.drill("measure")'),
            (2.0, 'print("=FETLOG", hw.sim.fet_history)'),
            (0.0, 'print("=LOG")'),
            (0.0, "bms.log(12)"),
            (0.0, 'print("=AFTER")'),
            (0.0, "bms.status()"),
            (0.0, 'print("=END")'),
            (0.0, "raise SystemExit"),
        ]))
    return _OUT[0]


def _value(table, item):
    for line in table.splitlines():
        if line.startswith(item + " "):
            return line[len(item):].strip()
    raise AssertionError("no row %r in\n%s" % (item, table))


def test_status_matches_truth():
    out = _run()
    status = _section(out, "=STATUS", "=TRUTH")
    truth = _section(out, "=TRUTH", "=CELLS").split()
    tmin, tmax, temp, cells, chg, dsg = (int(truth[0]), int(truth[1]), float(truth[2]),
                                         int(truth[3]), truth[4], truth[5])
    assert _value(status, "state") == "normal"
    lo, hi = re.match(r"(\d+)\.\.(\d+) mV", _value(status, "cells")).groups()
    # The AFE measures through its 14-bit ADC (gain/offset trimmed): within 5 mV of truth.
    assert abs(int(lo) - tmin) <= 5 and abs(int(hi) - tmax) <= 5, (lo, hi, tmin, tmax)
    t1 = float(re.search(r"T1 (-?\d+\.\d) C", _value(status, "temperature")).group(1))
    assert abs(t1 - temp) <= 1.0
    assert _value(status, "FETs") == "chg %s  dsg %s" % (
        "on" if chg == "True" else "off", "on" if dsg == "True" else "off")
    cells_table = _section(out, "=CELLS", "=FAULTS")
    rows = [ln.split() for ln in cells_table.splitlines() if ln.strip()[:1].isdigit()]
    assert len(rows) == cells
    mvs = [int(r[1]) for r in rows]
    assert min(mvs) == int(lo) and max(mvs) == int(hi)


def test_faults_and_config_changes():
    out = _run()
    assert "no faults, no warnings" in _section(out, "=FAULTS", "=SET")
    s = _section(out, "=SET", "=CONFIG")
    assert "rejected: cell_ov_mv" in s  # out of range: named field and rule
    assert "imbalance_warn_mv = 80" in s
    config = _section(out, "=CONFIG", "=DRILL")
    assert re.search(r"^imbalance_warn_mv\s+80$", config, re.M)
    assert re.search(r"^cell_ov_mv\s+3650$", config, re.M)  # the rejected value left no trace


def test_fire_drill_safe_state_log_and_restart():
    out = _run()
    t_drill = int(_section(out, "=DRILL", "\n").split()[0])
    hist = eval(_section(out, "=FETLOG", "=LOG").strip())
    after = [(t, c, d) for t, c, d in hist if t >= t_drill]
    # Safe state: both FETs off right after the task failed ...
    off = [h for h in after if h[1] == 0 and h[2] == 0]
    assert off, hist
    # ... and back on once the restarted task ran a healthy cycle.
    on_again = [h for h in after if h[0] > off[0][0] and h[1] == 1 and h[2] == 1]
    assert on_again and on_again[0][0] - off[0][0] <= 1000, hist
    log = _section(out, "=LOG", "=AFTER")
    assert re.search(r"task_error\s+0 1", log), log
    assert _value(_section(out, "=AFTER", "=END"), "state") == "normal"
