# The dist on the emulated Pico, end to end. Needs the official MicroPython RPI_PICO image:
# RP2_FW=path/to/RPI_PICO.uf2 (the user's input; CI has none, so these are skipped there).
# Minutes each: the emulator runs MicroPython at a few million instructions per second.
import json
import os
import pty
import select
import signal
import subprocess
import sys
import tempfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RP2EMU = os.path.join(ROOT, "tools", "rp2emu")
FW = os.environ.get("RP2_FW", "")
sys.path.insert(0, RP2EMU)


def _need_image():
    if not FW:
        pytest.skip("RP2_FW (the official MicroPython RPI_PICO .uf2) is not set")
    subprocess.run(["make", "-s", "--no-print-directory", "rp2emu-deps"], cwd=ROOT, check=True)


def test_scenario_run_reads_the_afe_through_the_rp2_port():
    _need_image()
    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run([sys.executable, os.path.join(RP2EMU, "rp2emu.py"), "--fw", FW,
                            "--scenario", "normal", "--hours", "0.006", "--quiet", "--out", d],
                           cwd=ROOT, capture_output=True, text=True, timeout=3600)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        fig = json.loads(r.stdout.strip().splitlines()[-1])
        with open(os.path.join(d, "rp2emu.csv")) as f:
            lines = f.read().splitlines()
        with open(os.path.join(d, "can.log")) as f:
            can = f.read()
    head = lines[1].split(",")
    rows = [dict(zip(head, x.split(","))) for x in lines[2:]]
    normal = [r for r in rows if r["state"] == "normal"]
    assert normal, "the firmware never reached NORMAL"
    # cell voltages measured by the firmware through the emulated BQ769x0 match the truth
    r = normal[-1]
    assert abs(int(r["cell_max_mv"]) - int(r["true_cell_max_mv"])) < 15
    assert r["chg_fet"] == "1" and r["dsg_fet"] == "1"
    assert " 351#" in can and " 355#" in can  # limits and SOC frames out of the MCP2515 model
    assert fig["rp2_wdt_resets"] == 0
    for k in ("rp2_heap_free_kb", "rp2_firmware_heap_kb", "rp2_import_peak_kb",
              "rp2_fast_cycle_ms", "rp2_slow_cycle_ms", "rp2_alloc_bytes_per_cycle"):
        assert fig[k] is not None and fig[k] >= 0, k


def _pty_run(argv, sends, wait_for, timeout):
    """Run argv on a PTY, type each of sends, until wait_for appears; returns the output."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(argv[0], argv)
    out = b""
    end = time.time() + timeout
    i = 0
    next_send = time.time() + 2
    try:
        while time.time() < end and wait_for.encode() not in out:
            if i < len(sends) and time.time() >= next_send:
                os.write(fd, sends[i])
                i += 1
                next_send = time.time() + 30
            r, _, _ = select.select([fd], [], [], 0.5)
            if r:
                try:
                    out += os.read(fd, 4096)
                except OSError:
                    break
        os.write(fd, b"\x1d")  # Ctrl-]: leave mpremote's terminal
        time.sleep(1)
    finally:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
        os.waitpid(pid, 0)
        os.close(fd)
    return out.decode(errors="replace")


def test_make_flash_and_make_repl_on_the_emulated_pico():
    _need_image()
    import lfsimage

    with tempfile.TemporaryDirectory() as d:
        link = os.path.join(d, "tty")
        srv = subprocess.Popen([sys.executable, os.path.join(RP2EMU, "rp2emu.py"), "--fw", FW,
                                "--pty", "--blank", "--out", d, "--quiet"], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True)
        try:
            line = srv.stdout.readline()
            while "console is" not in line:
                assert line, "the PTY server ended"
                line = srv.stdout.readline()
            r = subprocess.run(["make", "-s", "--no-print-directory", "flash", "PORT=" + link,
                                "AIOREPL=0"], cwd=ROOT, capture_output=True, text=True,
                               timeout=1800)
            assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
            assert "flashed rp2_pico" in r.stdout
            # after the reset main.py runs the BMS; its line console answers on the REPL
            out = _pty_run(["make", "-s", "--no-print-directory", "repl", "PORT=" + link],
                           [b"bms.status()\r"] * 20, "uptime", 900)
            assert "state" in out and "heater/fan" in out and "uptime" in out, out[-2000:]
        finally:
            srv.send_signal(signal.SIGTERM)
            srv.wait(timeout=120)
        with open(os.path.join(d, "flash.bin"), "rb") as f:
            flash = f.read()
        with open(os.path.join(d, "runner.json")) as f:
            runner = json.load(f)
    files = lfsimage.listing(flash)
    assert "/main.py" in files and "/lib/bms/app.mpy" in files and "/lib/board.mpy" in files
    assert runner["forced_resets"] >= 1 and runner["wdt_resets"] == 0
    assert runner["flash"]["errors"] == 0 and runner["flash"]["erases"] > 0


def test_a_watchdog_expiry_restarts_the_mcu_and_keeps_the_flash():
    _need_image()
    import lfsimage

    with tempfile.TemporaryDirectory() as d:
        link = os.path.join(d, "tty")
        srv = subprocess.Popen([sys.executable, os.path.join(RP2EMU, "rp2emu.py"), "--fw", FW,
                                "--pty", "--blank", "--out", d, "--quiet"], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True)
        mpremote = os.path.join(ROOT, ".venv", "bin", "mpremote")
        try:
            line = srv.stdout.readline()
            while "console is" not in line:
                assert line, "the PTY server ended"
                line = srv.stdout.readline()
            r = subprocess.run([mpremote, "connect", link, "exec",
                                "f = open('/keep.txt', 'w')\nf.write('kept')\nf.close()\n"
                                "import machine; machine.WDT(timeout=500)"],
                               capture_output=True, text=True, timeout=600)
            assert r.returncode == 0, r.stdout + r.stderr
            # nobody feeds it now: the chip restarts; the console answers again afterwards
            time.sleep(5)
            r = subprocess.run([mpremote, "connect", link, "eval",
                                "__import__('machine').reset_cause()"],
                               capture_output=True, text=True, timeout=600)
            assert r.returncode == 0, r.stdout + r.stderr
            assert r.stdout.strip() == "3"  # machine.WDT_RESET
        finally:
            srv.send_signal(signal.SIGTERM)
            srv.wait(timeout=120)
        with open(os.path.join(d, "flash.bin"), "rb") as f:
            flash = f.read()
        with open(os.path.join(d, "runner.json")) as f:
            runner = json.load(f)
    assert runner["wdt_resets"] >= 1
    assert lfsimage.read(flash, "/keep.txt") == b"kept"
