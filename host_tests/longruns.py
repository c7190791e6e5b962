# The long simulator runs of the CPython tests (a simulated day and the control runs: minutes
# each under micropython). conftest.py starts the ones the collected tests need in one
# background thread when the session begins, and moves those tests to the end of the session,
# so the runs use the core the other tests leave idle. A test calls get(name): the result of
# the background run (waiting for it if needed), or, when nothing was started (a single
# test run by hand), the run done there and then. The results are the same either way.
import os
import subprocess
import tempfile
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPY = os.path.join(ROOT, ".venv", "bin", "micropython")

# name: (test module that reads it, tools/sim.py arguments); {d} = the run's own folder.
# Longest first: the background thread runs them in this order.
RUNS = {
    "day-can": ("test_cpy_can_day",
                ["--hours", "24", "--quiet", "--log", "{d}/log.csv", "--candump", "{d}/can.log"]),
    # an imbalanced pack on a charger (0.3 C), charged to the top and held there (from 75 %)
    "imbalance": ("test_cpy_control_sim",
                  ["--scenario", "imbalance", "--hours", "18", "--soc", "75", "--quiet",
                   "--log", "{d}/log.csv"]),
    # the same on 15 cells of 2 Ah (a BQ76940, three groups): balanced within hours
    "imbalance-15": ("test_cpy_control_sim",
                     ["--scenario", "imbalance", "--hours", "16", "--soc", "80", "--cells", "15",
                      "--capacity-ah", "2", "--quiet", "--log", "{d}/log.csv"]),
    "cold-morning": ("test_cpy_control_sim",
                     ["--scenario", "cold-morning", "--quiet", "--log", "{d}/log.csv"]),
}

_lock = threading.Lock()
_done = {}  # name -> threading.Event (runs given to the background thread)
_results = {}  # name -> (folder, CompletedProcess)


def modules():
    return set(m for m, _ in RUNS.values())


def _run(name):
    d = tempfile.mkdtemp(prefix="bms-%s-" % name)
    args = [a.replace("{d}", d) for a in RUNS[name][1]]
    env = dict(os.environ, MICROPYPATH="firmware:tools:.:.frozen")
    p = subprocess.run([MPY, "-X", "heapsize=2M", "tools/sim.py"] + args, cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=1500, stdin=subprocess.DEVNULL)
    return d, p


def _background(names):
    for n in names:
        try:
            r = _run(n)
        except Exception as e:  # reported by the test that reads this run
            r = (None, e)
        _results[n] = r
        _done[n].set()


def start(for_modules):
    """Start the runs the given test modules read (once per session)."""
    with _lock:
        names = [n for n, (m, _) in RUNS.items() if m in for_modules and n not in _done]
        for n in names:
            _done[n] = threading.Event()
    if names:
        threading.Thread(target=_background, args=(names,), daemon=True).start()


def get(name):
    """(folder, CompletedProcess) of run `name`; AssertionError when it failed."""
    with _lock:
        ev = _done.get(name)
        if ev is None:
            _done[name] = ev = threading.Event()
            mine = True
        else:
            mine = False
    if mine:
        try:
            _results[name] = _run(name)
        except Exception as e:
            _results[name] = (None, e)
        ev.set()
    ev.wait()
    d, p = _results[name]
    if d is None:
        raise AssertionError("simulator run %s: %r" % (name, p))
    assert p.returncode == 0, "simulator run %s failed:\n%s\n%s" % (
        name, p.stdout[-2000:], p.stderr[-2000:])
    return d, p
