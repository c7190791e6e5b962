# `make dist BOARD=...` writes the exact file set for a board. Every module that main.py can
# import (statically, lazy imports included) is in it as .mpy, only MicroPython's own modules
# (and aiorepl, which make flash installs with mip) come from elsewhere, nothing from the
# host side is in it, and the compiled set really imports under the micropython command.
# CPython only (make, subprocess).
import ast
import os
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPY = os.path.join(ROOT, ".venv", "bin", "micropython")
# Modules a MicroPython board provides (built in, or installed by make flash through mip).
ON_BOARD = {"micropython", "array", "asyncio", "gc", "json", "os", "select", "sys", "time",
            "struct", "math", "binascii", "errno", "machine", "aiorepl",
            "socket", "ssl", "network"}  # Wi-Fi boards (MQTT): rp2 Pico W, esp32


def _imports(path):
    tree = ast.parse(open(path).read())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            if node.module == "bms":
                out.update("bms." + a.name for a in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__":
            if node.args and isinstance(node.args[0], ast.Constant):
                out.add(node.args[0].value)
    return out


def _closure(board):
    src = {"__main__": os.path.join(ROOT, "firmware", "main.py"),
           "board": os.path.join(ROOT, "boards", board, "board.py")}
    todo = ["__main__", "board"]
    seen = set()
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        path = src.get(m) or os.path.join(ROOT, "firmware", *m.split(".")) + ".py"
        if not os.path.exists(path):
            continue
        for dep in _imports(path):
            if dep.startswith("bms") or dep == "board":
                todo.append(dep)
            else:
                assert dep in ON_BOARD, "%s imports %s, which a board does not have" % (m, dep)
    return seen - {"__main__"}


def _dist(board):
    d = os.path.join(tempfile.mkdtemp(), board)
    p = subprocess.run(["make", "-s", "dist", "BOARD=" + board, "DIST=" + d], cwd=ROOT,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    files = set()
    for dirpath, _, names in os.walk(d):
        for n in names:
            files.add(os.path.relpath(os.path.join(dirpath, n), d))
    return d, files


def _check(board):
    d, files = _dist(board)
    needed = _closure(board)
    for m in needed:
        rel = "lib/" + m.replace(".", "/") + ".mpy"
        if m == "bms":
            rel = "lib/bms/__init__.mpy"
        assert rel in files, "%s missing from the %s file set" % (rel, board)
    assert "main.py" in files
    for f in files:
        assert f == "main.py" or (f.startswith("lib/") and f.endswith(".mpy")), f
        for host in ("simlib", "compat", "test", "fakes", "tools", "sim"):
            assert host not in f.split("/")[-1] and host not in f.split("/")[:-1], f
    # The compiled set loads: every firmware module imports from the dist folder alone.
    mods = sorted(m for m in needed if m != "board") + ["board"]
    env = dict(os.environ, MICROPYPATH=os.path.join(d, "lib") + ":.frozen")
    p = subprocess.run([MPY, "-c", "import " + ", ".join(mods) + "; print('ok')"],
                       cwd=tempfile.gettempdir(), env=env, capture_output=True, text=True)
    assert p.stdout.strip() == "ok", p.stdout + p.stderr
    with open(os.path.join(d, "lib", "board.mpy"), "rb") as f:
        head = f.read(4)
    assert head[0] == ord("M") and head[1] == 6  # .mpy v6: MicroPython 1.23 or later
    return needed


def test_dist_rp2_pico():
    needed = _check("rp2_pico")
    for m in ("bms.app", "bms.bq769x0", "bms.protection", "bms.canbus", "bms.modbus",
              "bms.diag", "board"):
        assert m in needed


def test_dist_esp32_devkit():
    _check("esp32_devkit")


def test_dist_rp2_picow():
    needed = _check("rp2_picow")
    for m in ("bms.mqtt", "bms.mqttc", "bms.ha"):
        assert m in needed
