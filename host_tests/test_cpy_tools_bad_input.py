# Every host tool, given what a user gets wrong (a typo, a missing file, a file of another
# kind, a value out of range, a port that is not there), answers with a short message that
# names the mistake and a non-zero exit status (2 for a mistake on the command line), never a
# traceback and never silence. The Makefile's board targets too. CPython only (subprocesses).
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
MPY = os.path.join(ROOT, ".venv", "bin", "micropython")
TMP = tempfile.mkdtemp()
NOT_A_LOG = os.path.join(ROOT, "README.md")
BINARY = os.path.join(TMP, "binary.csv")
EMPTY_LOG = os.path.join(TMP, "empty.csv")
SIM_LOG = os.path.join(TMP, "sim.csv")
TRACE = "tools/traces/lfp_c2_shortcv.csv"


def _sim(*args):
    return [MPY, "tools/sim.py"] + list(args)


def _py(tool, *args):
    return [PY, "tools/" + tool] + list(args)


# (command, expected exit status or None for "not 0", words the message must contain)
CASES = [
    # tools/sim.py (under micropython)
    (_sim("--cells", "20"), 2, "3 to 15"),
    (_sim("--cells", "0"), 2, "3 to 15"),
    (_sim("--cells", "abc"), 2, "abc"),
    (_sim("--capacity-ah", "0"), 2, "--capacity-ah"),
    (_sim("--chemistry", "lipo"), 2, "lipo"),
    (_sim("--speed", "fast"), 2, "fast"),
    (_sim("--speed", "0"), 2, "--speed"),
    (_sim("--hours", "-1"), 2, "--hours"),
    (_sim("--hours", "0"), 2, "--hours"),
    (_sim("--soc", "-5"), 2, "--soc"),
    (_sim("--soc", "150"), 2, "--soc"),
    (_sim("--scenario", "nope"), 2, "nope"),
    (_sim("--bogus"), 2, "--bogus"),
    (_sim("stray"), 2, "stray"),
    (_sim("--seed"), 2, "--seed"),
    (_sim("--log-every", "0"), 2, "--log-every"),
    (_sim("--set", "cell_ov_mv=9999"), 2, "cell_ov_mv"),
    (_sim("--set", "nonsense"), 2, "name=value"),
    (_sim("--set", "no_such_field=1"), 2, "no_such_field"),
    (_sim("--board", "nope"), 2, "nope"),
    (_sim("--board", "rp2_pico", "--cells", "5"), 2, "board"),
    (_sim("--log", "/proc/nope/log.csv"), 2, "/proc/nope"),
    (_sim("--out", "/proc/version"), 2, "/proc/version"),
    (_sim("--rs485", "/dev/nonexistent-tty"), 2, "nonexistent"),
    (_sim("--can-bridge", "/dev/nonexistent-tty"), 2, "nonexistent"),
    # tools/plot.py
    (_py("plot.py"), 2, "log"),
    (_py("plot.py", "/nonexistent/sim.csv"), 2, "nonexistent"),
    (_py("plot.py", NOT_A_LOG), 2, "not a BMS log"),
    (_py("plot.py", ROOT + "/tools"), 2, "folder"),
    (_py("plot.py", BINARY), 2, "not"),
    (_py("plot.py", EMPTY_LOG), 2, "no rows"),
    (_py("plot.py", "--bogus", "x.csv"), 2, "--bogus"),
    # tools/canmon.py
    (_py("canmon.py", "--log", "/nonexistent/can.log"), 2, "nonexistent"),
    (_py("canmon.py", "--log", NOT_A_LOG), 2, "no CAN frames"),
    (_py("canmon.py", "--log", NOT_A_LOG, "--id", "xyz"), 2, "xyz"),
    (_py("canmon.py", "-i", "socketcan", "-c", "nocan0"), 2, "nocan0"),
    (_py("canmon.py", "-i", "slcan", "-c", "/dev/nonexistent-tty"), 2, "nonexistent"),
    (_py("canmon.py", "-i", "nosuchinterface"), 2, "nosuchinterface"),
    (_py("canmon.py", "-b", "fast"), 2, "fast"),
    (_py("canmon.py", "--dbc", NOT_A_LOG, "--log", NOT_A_LOG), 2, "DBC"),
    # tools/bmsctl.py
    (_py("bmsctl.py"), 2, "command"),
    (_py("bmsctl.py", "frobnicate"), 2, "frobnicate"),
    (_py("bmsctl.py", "status"), 2, "--port"),
    (_py("bmsctl.py", "--port", "/dev/nonexistent-tty", "status"), 3, "nonexistent"),
    (_py("bmsctl.py", "--port", NOT_A_LOG, "status"), 3, "not a serial port"),
    (_py("bmsctl.py", "--port", "/dev/x", "get", "no_such_register"), 2, "no_such_register"),
    (_py("bmsctl.py", "--port", "/dev/x", "set", "chg_temp_max", "95"), 2, "out of range"),
    (_py("bmsctl.py", "--port", "/dev/x", "set", "chg_temp_max", "warm"), 2, "warm"),
    (_py("bmsctl.py", "--port", "/dev/x", "set", "chg_temp_max", "45V"), 2, "45V"),
    (_py("bmsctl.py", "--port", "/dev/x", "set", "chg_temp_max", "45"), 2, "--pin"),
    (_py("bmsctl.py", "--port", "/dev/x", "--pin", "1", "set", "soc", "50"), 2, "read-only"),
    (_py("bmsctl.py", "--port", "/dev/x", "--pin", "1", "set", "chemistry", "lfp"), 2,
     "board identity"),
    (_py("bmsctl.py", "--port", "/dev/x", "--pin", "1", "set", "can_profile", "pylontech"), 2,
     "pylontech"),
    (_py("bmsctl.py", "--port", "/dev/x", "--unit", "0", "status"), 2, "--unit"),
    (_py("bmsctl.py", "--baud", "fast", "status"), 2, "fast"),
    (_py("bmsctl.py", "--port", "/dev/x", "log"), 2, "FILE"),
    # tools/bench.py (command line only: a real run takes minutes)
    (_py("bench.py", "--only", "nothing"), 2, "nothing"),
    (_py("bench.py", "--bogus"), 2, "--bogus"),
    # tools/replay.py
    (_py("replay.py", "/nonexistent/trace.csv", "--capacity-ah", "5"), 2, "cannot open"),
    (_py("replay.py", NOT_A_LOG, "--capacity-ah", "5"), 2, "not a trace"),
    (_py("replay.py", BINARY, "--capacity-ah", "5"), 2, "trace"),
    (_py("replay.py", SIM_LOG, "--capacity-ah", "5"), 2, "sim.py log"),
    (_py("replay.py", TRACE), 2, "--capacity-ah"),
    (_py("replay.py", TRACE, "--capacity-ah", "-1"), 2, "--capacity-ah"),
    (_py("replay.py", TRACE, "--capacity-ah", "5", "--chemistry", "lipo"), 2, "--chemistry"),
    (_py("replay.py", TRACE, "--capacity-ah", "5", "--ocv-table", "/nonexistent.csv"), 2,
     "nonexistent"),
    (_py("replay.py", TRACE, "--capacity-ah", "5", "--bogus"), 2, "--bogus"),
    # the Makefile's board targets
    (["make", "-s", "dist", "BOARD=sim"], None, "virtual board"),
    (["make", "-s", "dist", "BOARD=no_such_board"], None, "no_such_board"),
    (["make", "-s", "flash", "BOARD=no_such_board"], None, "no_such_board"),
    (["make", "-s", "repl", "PORT=/dev/nonexistent-tty"], None, "does not exist"),
    (["make", "-s", "check-board", "BOARD=../README.md"], None, "README.md"),
]


def _run(case):
    cmd, code, words = case
    env = dict(os.environ, MICROPYPATH="firmware:tools:.:.frozen")
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    return case, p


def test_every_tool_answers_bad_input_in_a_line():
    with open(BINARY, "wb") as f:
        f.write(bytes(range(256)) * 8)
    with open(EMPTY_LOG, "w") as f:
        f.write("t_s,current_ma,cell_min_mv\n")
    with open(SIM_LOG, "w") as f:  # the head of a tools/sim.py log
        f.write("# config: chemistry=lfp cells=4\nt_s,current_ma,cell_min_mv\n0,0,3300\n")
    bad = []
    with ThreadPoolExecutor(max_workers=4) as ex:
        for (cmd, code, words), p in ex.map(_run, CASES):
            text = (p.stdout + p.stderr).strip()
            lines = [ln for ln in text.splitlines() if ln.strip()]
            what = " ".join(cmd[1:] if cmd[0] != "make" else cmd)
            if p.returncode == 0 or (code is not None and p.returncode != code):
                bad.append("%s: exit %d (want %s): %s" % (what, p.returncode, code or "!= 0",
                                                          text[-300:]))
            elif "Traceback" in text:
                bad.append("%s: traceback: %s" % (what, text[-300:]))
            elif not 1 <= len(lines) <= 3:
                bad.append("%s: %d lines: %s" % (what, len(lines), text[-400:]))
            elif words.lower() not in text.lower():
                bad.append("%s: the message does not say %r: %s" % (what, words, text))
    assert not bad, "\n".join(bad)


def test_help_of_every_tool():
    env = dict(os.environ, MICROPYPATH="firmware:tools:.:.frozen")
    for cmd in (_sim("--help"), _py("plot.py", "--help"), _py("canmon.py", "--help"),
                _py("bmsctl.py", "--help"), _py("bmsctl.py", "set", "--help"),
                _py("bench.py", "--help"), _py("boardfile.py")):
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        text = p.stdout + p.stderr
        assert "usage" in text.lower(), (cmd, text)
        assert "Traceback" not in text, (cmd, text)
        if cmd[-1] == "--help":
            assert p.returncode == 0, (cmd, text)
