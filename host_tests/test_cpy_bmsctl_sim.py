# tools/bmsctl.py against the firmware on the virtual board (tools/sim.py --rs485 on one end
# of a PTY pair, bmsctl on the other), as a person uses it: values in engineering units both
# ways (45 degC in, register 450; register 440 in with --raw, 44 degC out), states and enums
# by name, every refusal with its own words and exit status (no PIN, wrong PIN, PIN hold-off,
# out of range, a rule of the configuration, a read-only register, no reply from a wrong unit
# id), and `log` writing a CSV that tools/plot.py and tools/replay.py accept. CPython only.
import csv
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

from ptypair import PtyPair  # noqa: E402

MPY = os.path.join(ROOT, ".venv", "bin", "micropython")
PIN = 2468


class Sim:
    def __init__(self, tmp):
        self.pty = PtyPair()
        env = dict(os.environ, MICROPYPATH="firmware:tools:.:.frozen")
        # speed 2: the BMS's 10 s PIN hold-off lasts 5 s of wall time
        self.p = subprocess.Popen(
            [MPY, "-X", "heapsize=2M", "tools/sim.py", "--speed", "2", "--hours", "2",
             "--quiet", "--rs485", self.pty.path1, "--set", "modbus_pin=%d" % PIN,
             "--out", os.path.join(tmp, "sim")],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.p.stdout.readline()
        assert "RS485" in line, line

    def close(self):
        self.p.kill()
        self.p.wait()
        self.pty.close()


def ctl(sim, *args, timeout=60):
    p = subprocess.run([sys.executable, "tools/bmsctl.py", "--port", sim.pty.path2,
                        "--timeout", "1"] + list(args), cwd=ROOT, capture_output=True,
                       text=True, timeout=timeout)
    assert "Traceback" not in p.stderr, p.stderr
    return p.returncode, p.stdout, p.stderr.strip()


def test_bmsctl_against_the_simulator():
    tmp = tempfile.mkdtemp()
    sim = Sim(tmp)
    try:
        _units_and_names(sim)
        _refusals(sim)
        _log_plot_replay(sim, tmp)
    finally:
        sim.close()


def _units_and_names(sim):
    # the BMS boots first: FETs off until its first complete reading (the thermistors'
    # first conversion, 2.5 s after the AFE's init)
    for _ in range(60):
        rc, out, err = ctl(sim, "status")
        if rc == 0 and "state     normal" in out:
            break
        time.sleep(0.5)
    assert rc == 0, err
    assert "state     normal" in out, out  # a name, not a number
    assert "FETs: charge on, discharge on" in out, out
    rc, out, err = ctl(sim, "get", "chemistry", "prot_state", "can_state", "chg_temp_max")
    assert rc == 0, err
    got = dict(line.split(" = ", 1) for line in out.splitlines())
    assert got["chemistry"] == "lfp" and got["prot_state"] == "normal", got
    assert got["can_state"] == "active", got
    assert got["chg_temp_max"].endswith("°C"), got
    # degC in: 45 means 45 degC, stored as 450 (0.1 degC) ...
    rc, out, err = ctl(sim, "--pin", str(PIN), "set", "chg_temp_max", "43")
    assert rc == 0, err
    assert out.strip() == "chg_temp_max = 43 °C", out
    rc, out, err = ctl(sim, "--raw", "get", "chg_temp_max")
    assert out.strip() == "chg_temp_max_dc = 430", out
    # ... and the register in with --raw, degC out
    rc, out, err = ctl(sim, "--raw", "--pin", str(PIN), "set", "cfg_chg_temp_max_dc", "440")
    assert rc == 0, err
    rc, out, err = ctl(sim, "get", "chg_temp_max_dc")
    assert out.strip() == "chg_temp_max = 44 °C", out
    # units written with the number convert: 3.45 V is 3450 mV
    rc, out, err = ctl(sim, "--pin", str(PIN), "set", "chg_cell", "3.45V")
    assert rc == 0, err
    assert out.strip() == "chg_cell_mv = 3450 mV", out
    rc, out, err = ctl(sim, "--pin", str(PIN), "set", "imbalance_warn", "0.08V")
    assert out.strip() == "imbalance_warn_mv = 80 mV", (out, err)


def _refusals(sim):
    pin = ["--pin", str(PIN)]
    rc, out, err = ctl(sim, "set", "chg_temp_max", "40")
    assert rc == 2 and "--pin" in err, err
    rc, out, err = ctl(sim, *pin, "set", "chg_temp_max", "95")
    assert rc == 2 and "out of range" in err and "0 .. 80 °C" in err, err
    rc, out, err = ctl(sim, *pin, "set", "cell_ov", "3.4V")  # below its release level
    assert rc == 2 and "rule" in err and "cell_ov_release_mv" in err, err
    rc, out, err = ctl(sim, *pin, "set", "soc", "50")
    assert rc == 2 and "read-only" in err, err
    rc, out, err = ctl(sim, "--unit", "7", "status")
    assert rc == 3 and "no reply from unit 7" in err and "--baud" in err, err
    # A wrong PIN, then the right one within the BMS's 10 s hold-off.
    rc, out, err = ctl(sim, "--pin", str(PIN + 1), "set", "chg_temp_max", "42")
    assert rc == 1 and "wrong PIN" in err and "10 s" in err, err
    rc, out, err = ctl(sim, *pin, "set", "chg_temp_max", "42")
    assert rc == 1 and "wait 10 s" in err, err
    time.sleep(5.5)  # 11 s of simulated time at --speed 2
    rc, out, err = ctl(sim, *pin, "set", "chg_temp_max", "42")
    assert rc == 0 and out.strip() == "chg_temp_max = 42 °C", (out, err)


def _log_plot_replay(sim, tmp):
    log = os.path.join(tmp, "board.csv")
    rc, out, err = ctl(sim, "log", log, "--count", "6", "--interval", "0.5")
    assert rc == 0, err
    with open(log) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    for col in ("t_s", "soc_pct", "pack_mv", "current_ma", "chg_fet", "dsg_fet", "cvl_mv",
                "ccl_ma", "dcl_ma", "cell1_mv", "cell4_mv", "current_A", "cell4_V", "temp_C"):
        assert col in rows[0], col
    assert rows[0]["state_code"] == "2"  # normal
    assert 4 * 2500 < int(rows[0]["pack_mv"]) < 4 * 3650
    png = os.path.join(tmp, "board.png")
    p = subprocess.run([sys.executable, "tools/plot.py", log, "-o", png], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and os.path.getsize(png) > 10000, p.stderr
    p = subprocess.run([sys.executable, "tools/replay.py", log, "--capacity-ah", "100"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    rc, out, err = ctl(sim, "watch", "--count", "1")
    assert rc == 0 and "state     normal" in out and "cell  4" in out, out + err
