# tools/replay.py under python3 and under the MicroPython unix port (CPython test: subprocess).
import math
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPLAY = os.path.join(ROOT, "tools", "replay.py")
MPY = os.path.join(ROOT, ".venv", "bin", "micropython")

sys.path.insert(0, os.path.join(ROOT, "firmware"))
from bms import ocv  # noqa: E402


def _trace(path):
    """2 h of a 5 Ah NMC cell: discharge, rest, charge; irregular dt and a duplicate row."""
    cap = 5.0
    soc = 0.6
    t = 0.0
    with open(path, "w") as f:
        f.write("t_s,current_A,voltage_V,temp_C,soc_true\n")
        k = 0
        while t < 7200:
            i = -2.0 if t < 2400 else (0.0 if t < 3600 else 1.5)
            v = ocv.mv_from_soc("nmc", soc) / 1000.0 + i * 0.03
            f.write("%.1f,%.3f,%.4f,25.0,%.5f\n" % (t, i, v, soc))
            if k == 10:
                f.write("%.1f,%.3f,%.4f,25.0,%.5f\n" % (t, i, v, soc))  # duplicate stamp
            dt = 1.0 if k % 7 else 2.5
            soc += i * dt / 3600.0 / cap
            t += dt
            k += 1


def _run(cmd, tmp):
    out = os.path.join(tmp, "est.csv")
    r = subprocess.run(cmd + [REPLAY, os.path.join(tmp, "trace.csv"), "--chemistry", "nmc",
                              "--capacity-ah", "5.0", "--initial-soc", "60", "--out", out],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    parts = dict(p.split("=") for p in last.split())
    assert sorted(parts) == ["soc_max_err_pct", "soc_rmse_pct"], last
    rmse = float(parts["soc_rmse_pct"])
    assert math.isfinite(rmse) and rmse < 2.0, last
    with open(out) as f:
        header = f.readline().strip().split(",")
        rows = [line.strip().split(",") for line in f if line.strip()]
    for col in ("t_s", "soc_pct", "soh_pct", "capacity_ah"):
        assert col in header, header
    assert len(rows) > 5000
    soc = [float(r[header.index("soc_pct")]) for r in rows]
    assert all(0.0 <= s <= 100.0 for s in soc)
    return soc


def test_replay_python3_and_micropython_agree():
    with tempfile.TemporaryDirectory() as tmp:
        _trace(os.path.join(tmp, "trace.csv"))
        a = _run([sys.executable], tmp)
        assert os.path.exists(MPY), "run `make venv` first"
        b = _run([MPY], tmp)
        assert len(a) == len(b)
        assert max(abs(x - y) for x, y in zip(a, b)) < 0.05


def _bad(cmd, args):
    r = subprocess.run(cmd + [REPLAY] + args, capture_output=True, text=True, timeout=120,
                       cwd=ROOT)
    return r.returncode, r.stdout, r.stderr


def test_replay_rejects_bad_input_with_one_line():
    with tempfile.TemporaryDirectory() as tmp:
        simlog = os.path.join(tmp, "sim.csv")
        with open(simlog, "w") as f:
            f.write('# config: {"chemistry": "lfp"}\nt_s,state,soc_pct,current_ma\n0,1,50,0\n')
        other = os.path.join(tmp, "other.csv")
        with open(other, "w") as f:
            f.write("time,amps,volts\n0,1,3.3\n")
        garbage = os.path.join(tmp, "garbage.csv")
        with open(garbage, "w") as f:
            f.write("t_s,current_A,voltage_V\n0,1,3.3\n1,abc,3.3\n")
        cases = (
            [os.path.join(tmp, "missing.csv"), "--capacity-ah", "5"],
            [simlog, "--capacity-ah", "5"],
            [other, "--capacity-ah", "5"],
            [garbage, "--capacity-ah", "5"],
            [other],
            [simlog, "--capacity-ah", "five"],
            [simlog, "--capacity-ah", "5", "--chemistry", "lead"],
            [simlog, "--capacity-ah", "5", "--bogus", "1"],
            [],
        )
        for cmd in ([sys.executable], [MPY]):
            for args in cases:
                rc, out, err = _bad(cmd, args)
                lines = err.strip().splitlines()
                assert rc == 2, (cmd, args, rc, out, err)
                assert len(lines) == 1 and lines[0].startswith("replay.py: "), (args, err)
                assert "Traceback" not in err
            rc, out, err = _bad(cmd, ["--help"])
            assert rc == 0 and "usage: replay.py" in out and not err, (rc, err)
