# rp2emu_probe: the firmware's figures on the emulated Pico. Runs on the chip, never on a board.
#
# tools/rp2emu puts this module (compiled, /lib/rp2emu_probe.mpy) and a /boot.py that imports it
# next to the dist in the emulated Pico's filesystem. MicroPython runs boot.py before main.py,
# so the probe measures the imports, then wraps bms.app.Bms methods; main.py then runs the
# firmware unchanged. Figures go to the console as lines "@@rp2emu <kind> <ints...>", which
# the runner passes to the bridge (tools/rp2emu/bridge.py):
#   heap T U           heap size, bytes in use before the firmware (after a collection)
#                      (this and the mod lines are measured in boot.py, printed at Bms.boot())
#   mod NAME A R B     module import: A bytes allocated with the collector off (garbage
#                      included), R bytes still held after a collection, B bytes held before
#   boot L F           after Bms.boot(): bytes held by the firmware (L), free heap (F)
#   stats ...          every 10 s of chip time (_report): see the columns there
# Cycle times are ticks_us around Bms.fast_cycle/slow_cycle/comms_cycle: CPU and bus time
# (the I2C and SPI transfers block). Allocation = gc.mem_alloc() growth across one call
# (every 4th fast and every 2nd slow cycle: it walks the heap; calls during which the
# collector ran are left out). The collection before each report runs
# outside the measured calls.
import gc
import sys
import time
from array import array

from micropython import const

_REPORT_CYCLES = const(40)


def _p(*a):
    print("@@rp2emu", *a)


try:
    with open("/rp2emu.txt") as _f:
        _MODS = _f.read().split()
except OSError:
    _MODS = ["bms.app"]
# boot.py runs before the USB host has enumerated the console: keep the import figures in a
# preallocated array and print them with the boot line.
_M = array("l", [0] * (3 * len(_MODS)))
try:
    open("/rp2emu_ram").close()
    _RAM = True
except OSError:
    _RAM = False
gc.collect()
_BASE = gc.mem_alloc()
_FREE0 = gc.mem_free()
# A name with a leading "-" is a module the firmware does not hold after boot (imported later,
# never, or dropped after use): measured, then dropped again, so it neither counts in the
# heap held before the next module nor stays for the boot figure.
_LAZY = bytearray(len(_MODS))
for _i in range(len(_MODS)):
    if _MODS[_i][0] == "-":
        _MODS[_i] = _MODS[_i][1:]
        _LAZY[_i] = 1
for _i in range(len(_MODS)):
    gc.collect()
    _b = gc.mem_alloc()
    gc.disable()
    _ok = True
    try:
        __import__(_MODS[_i])
    except ImportError:
        _ok = False
    _a = gc.mem_alloc()
    gc.enable()
    gc.collect()
    _M[3 * _i] = _a - _b if _ok else -1
    _M[3 * _i + 1] = gc.mem_alloc() - _b if _ok else -1
    _M[3 * _i + 2] = _b - _BASE
    for _j in range(_i + 1):  # this one, and a lazy one its import brought back
        if _LAZY[_j] and _MODS[_j] in sys.modules:
            sys.modules.pop(_MODS[_j])
            _pkg = sys.modules.get("bms")
            if _pkg is not None and hasattr(_pkg, _MODS[_j][4:]):
                delattr(_pkg, _MODS[_j][4:])

import bms.app as _app  # noqa: E402

_B = _app.Bms
_orig_boot = _B.boot
_orig_fast = _B.fast_cycle
_orig_slow = _B.slow_cycle
_orig_comms = _B.comms_cycle
# 0 n_fast, 1 us_fast, 2 max_fast, 3 alloc_fast, 4 n_alloc_fast, 5 n_slow, 6 us_slow,
# 7 max_slow, 8 alloc_slow, 9 n_alloc_slow, 10 n_comms, 11 us_comms
_S = array("l", [0] * 12)
_ma = gc.mem_alloc
_us = time.ticks_us
_diff = time.ticks_diff


def _boot(self):
    _orig_boot(self)
    gc.collect()
    live = gc.mem_alloc() - _BASE
    free = gc.mem_free()
    _p("heap", _FREE0 + _BASE, _BASE)
    for i in range(len(_MODS)):
        _p("mod", _MODS[i], _M[3 * i], _M[3 * i + 1], _M[3 * i + 2])
    _p("boot", live, free)
    if _RAM:
        _ram_map(self)


def _freed(obj, name):
    # bytes freed when obj.name stops holding its value (destructive: --ram-map runs only);
    # the first collection takes the garbage of the previous line's print
    gc.collect()
    a = gc.mem_alloc()
    setattr(obj, name, None)
    gc.collect()
    return a - gc.mem_alloc()


def _ram_map(bms):
    # Where the firmware's heap goes, after boot: every object the Bms instance holds, then
    # every global of every bms module (tables, functions and classes with their bytecode),
    # each freed in turn and measured, then each module itself; what is left are the
    # interned names (qstrs), which are never freed. Then the run ends.
    import sys

    gc.collect()
    # holders first, then what they share (events, cfg, hw), so each part is counted once
    names = [n for n in ("can", "modbus", "limits", "thermal", "bal", "est", "prot", "afe",
                         "store", "snap", "events", "cfg", "hw") if n in bms.__dict__]
    names += [n for n in bms.__dict__ if n not in names]
    for name in names:
        _p("ram", "bms", name, _freed(bms, name))
    pkg = sys.modules.get("bms")
    for mname in _MODS:
        mod = sys.modules.get(mname)
        if mod is None:
            continue
        for name in dir(mod):
            if name.startswith("__"):
                continue
            try:
                _p("ram", mname, name, _freed(mod, name))
            except (AttributeError, TypeError):
                pass
    for mname in _MODS:
        # the module object and its dict (what the globals above did not hold)
        a = gc.mem_alloc()
        sys.modules.pop(mname, None)
        if pkg is not None and mname.startswith("bms."):
            try:
                setattr(pkg, mname[4:], None)
            except AttributeError:
                pass
        gc.collect()
        _p("ram", mname, "(module)", a - gc.mem_alloc())
    _p("ram", "-", "(left)", gc.mem_alloc() - _BASE)
    _p("end")  # the runner stops here (a SystemExit would soft-reset and boot again)
    while True:
        time.sleep_ms(1000)


def _fast(self, now):
    # gc.mem_alloc() walks the whole heap's allocation table: every 4th cycle only
    s = _S
    probe = not s[0] & 3
    a0 = _ma() if probe else 0
    t0 = _us()
    r = _orig_fast(self, now)
    dt = _diff(_us(), t0)
    s[0] += 1
    s[1] += dt
    if dt > s[2]:
        s[2] = dt
    if probe:
        da = _ma() - a0
        if da >= 0:
            s[3] += da
            s[4] += 1
    if s[0] >= _REPORT_CYCLES:
        _report()
    return r


def _slow(self, now):
    s = _S
    probe = not s[5] & 1
    a0 = _ma() if probe else 0
    t0 = _us()
    _orig_slow(self, now)
    dt = _diff(_us(), t0)
    s[5] += 1
    s[6] += dt
    if dt > s[7]:
        s[7] = dt
    if probe:
        da = _ma() - a0
        if da >= 0:
            s[8] += da
            s[9] += 1


def _comms(self, now):
    t0 = _us()
    _orig_comms(self, now)
    s = _S
    s[10] += 1
    s[11] += _diff(_us(), t0)


def _report():
    # live free n_fast us_fast max_fast alloc_fast n_slow us_slow max_slow alloc_slow
    # n_alloc_fast n_alloc_slow n_comms us_comms
    s = _S
    gc.collect()
    _p("stats", _ma() - _BASE, gc.mem_free(), s[0], s[1], s[2], s[3], s[5], s[6], s[7], s[8],
       s[4], s[9], s[10], s[11])
    for i in range(12):
        s[i] = 0


_B.boot = _boot
_B.fast_cycle = _fast
_B.slow_cycle = _slow
_B.comms_cycle = _comms
