# docs/build-your-pack.md followed as written: its shell blocks run in order and its board.py
# block is applied to the copied board folder (each line replaces the line of the same
# constant; every constant must already be there). Only the folder name is made unique (so a
# user's own boards/my_pack is never touched) and the outputs of `make dist` / `make sim` go to
# a temporary folder (DIST=, SIMOUT=). Then: the board checks, the dist holds the compiled
# board, and the simulator ran the guide's pack (its cell count, its AFE). The wiring diagrams
# in docs/ are what tools/gen_wiring.py makes from the board files. CPython only.
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUIDE = os.path.join(ROOT, "docs", "build-your-pack.md")


def blocks():
    """[(kind, text)] of the code blocks marked <!-- guide-test: KIND -->, in order."""
    with open(GUIDE) as f:
        text = f.read()
    out = []
    for m in re.finditer(r"<!-- guide-test: (\S+) -->\s*```\w*\n(.*?)```", text, re.S):
        out.append((m.group(1), m.group(2)))
    return out


def test_the_guide_builds_and_simulates_its_pack():
    name = "guide_test_%d" % os.getpid()
    tmp = tempfile.mkdtemp()
    board_dir = os.path.join(ROOT, "boards", name)
    consts = {}
    logs = []
    assert [k for k, _ in blocks()] == ["shell", "board.py", "shell"], blocks()
    try:
        for kind, text in blocks():
            text = text.replace("my_pack", name)
            if kind == "board.py":
                path = os.path.join(board_dir, "board.py")
                with open(path) as f:
                    lines = f.read().split("\n")
                for line in text.strip().split("\n"):
                    key = line.split("=")[0].strip()
                    hits = [i for i, ln in enumerate(lines) if re.match(r"%s\s*=" % key, ln)]
                    assert len(hits) == 1, "the guide changes %s, the board has it %d times" % (
                        key, len(hits))
                    lines[hits[0]] = line
                    consts[key] = line.split("=", 1)[1].strip()
                with open(path, "w") as f:
                    f.write("\n".join(lines))
                continue
            for cmd in text.strip().split("\n"):
                if cmd.startswith("make dist"):
                    cmd += " DIST=%s/dist" % tmp
                if cmd.startswith("make sim"):
                    cmd += " SIMOUT=%s/sim" % tmp
                p = subprocess.run(cmd, shell=True, cwd=ROOT, capture_output=True, text=True,
                                   timeout=900)
                logs.append((cmd, p.stdout + p.stderr))
                assert p.returncode == 0, "%s:\n%s" % (cmd, (p.stdout + p.stderr)[-3000:])
        cells = int(consts["CELLS"])
        variant = consts["AFE_VARIANT"].strip('"')
        check = [out for cmd, out in logs if cmd.startswith("make check-board")][0]
        assert "%d x LFP" % cells in check and variant.upper() in check, check
        assert os.path.exists(os.path.join(tmp, "dist", "lib", "board.mpy"))
        with open(os.path.join(tmp, "sim", "summary.json")) as f:
            s = json.load(f)
        assert s["board"] == name and s["cells"] == cells, s
        assert variant.upper() in s["pack"], s["pack"]
        assert s["expect_ok"], s["expect"]
        with open(os.path.join(tmp, "sim", "sim.csv")) as f:
            f.readline()
            header = f.readline().strip().split(",")
        assert "cell%d_mv" % cells in header and "cell%d_mv" % (cells + 1) not in header
        assert os.path.getsize(os.path.join(tmp, "sim", "sim.png")) > 10000
    finally:
        shutil.rmtree(board_dir, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


def test_wiring_diagrams_match_the_board_files():
    p = subprocess.run([sys.executable, "tools/gen_wiring.py", "--check"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    with open(os.path.join(ROOT, "docs", "wiring-rp2_pico.svg")) as f:
        svg = f.read()
    for pin in ("GP4 I2C SDA", "GP5 I2C SCL", "GP21 ALERT", "BQ76940", "shunt 0.5"):
        assert pin in svg, pin


def test_board_check_names_the_wrong_constant():
    name = "guide_bad_%d" % os.getpid()
    d = os.path.join(ROOT, "boards", name)
    try:
        shutil.copytree(os.path.join(ROOT, "boards", "rp2_pico"), d)
        path = os.path.join(d, "board.py")
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(text.replace("CELLS = 15", "CELLS = 16  # the common 48 V LFP build"))
        p = subprocess.run(["make", "-s", "dist", "BOARD=" + name, "DIST=" + d + "/dist"],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
        out = p.stdout + p.stderr
        assert p.returncode != 0 and "CELLS = 16" in out and "two AFEs" in out, out
        assert "Traceback" not in out
    finally:
        shutil.rmtree(d, ignore_errors=True)
