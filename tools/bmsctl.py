#!/usr/bin/env python3
"""bmsctl: talk to the BMS over Modbus RTU (RS485) in engineering units (CPython, pymodbus).

    bmsctl.py --port /dev/ttyUSB0 status          state, pack, current, SOC, FETs, faults, limits
    bmsctl.py --port ... cells                    cell voltages (lowest/highest marked), temps
    bmsctl.py --port ... faults                   active faults, warnings, latched faults by name
    bmsctl.py --port ... get chg_temp_max soc     values by name, in engineering units
    bmsctl.py --port ... --pin 1234 set chg_temp_max 45      (45 degC)
    bmsctl.py --port ... config                   every configuration value with its range
    bmsctl.py --port ... dump                     every register of tools/regmap.csv
    bmsctl.py --port ... log board.csv            poll into a CSV (the simulator's columns)
    bmsctl.py --port ... watch                    a live view (Ctrl-C ends it)
    bmsctl.py names [TEXT]                        register names, units and ranges (no board)

Names come from tools/regmap.csv (the file the firmware's map is generated from). A name can
be given without its cfg_ prefix and without its unit suffix: chg_temp_max = cfg_chg_temp_max_dc.
Values are in engineering units: temperatures in degC (the registers hold 0.1 degC), SOC in %,
everything else in the unit its name carries (mV, mA, ms, mAh, %). A unit may be written
with the number and is converted: 3.65V, 3650mV, 50A, 2s, 5min, 100Ah, 45C. --raw shows and
takes register values instead. States, enums, faults and flags are shown by name; an enum is
set by name (set can_profile victron).

`set` unlocks with --pin (the BMS's modbus_pin, set on the REPL), checks the value against the
field's range and the configuration's rules (the firmware's own bms.config) before it sends
anything, writes, reads back and locks again.

Exit status: 0 done; 1 the BMS refused (locked, wrong PIN, PIN hold-off, a value its
configuration rejects); 2 a mistake on the command line (unknown command or register, a value
out of range or breaking a rule, a read-only register): nothing was sent; 3 no connection (the
port cannot be opened, or no reply: wiring, baud rate, unit id). Every error is one line.
"""
import csv
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import gen_regmap  # noqa: E402
from cli import Parser  # noqa: E402

PROG = "bmsctl.py"
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_NOLINK = 3
PIN_HOLDOFF_S = 10  # bms.modbus: a wrong PIN blocks unlocking this long


class CtlError(Exception):
    def __init__(self, text, code):
        Exception.__init__(self, text)
        self.code = code


def _firmware():
    for p in (os.path.join(HERE, "compat"), os.path.join(ROOT, "firmware")):
        if p not in sys.path:
            sys.path.insert(0, p)


def fault_names():
    _firmware()
    from bms.protection import FAULT_NAMES

    return FAULT_NAMES


def state_names():
    _firmware()
    from bms.protection import STATE_NAMES

    return STATE_NAMES


FLAG_NAMES = ("cells", "pack", "current", "temps", "cc_new")

# --- units --------------------------------------------------------------------------------
# register unit (regmap.csv) -> (display unit, register units per display unit)
_DISPLAY = {"0.1 degC": ("°C", 10)}
# accepted unit words in values -> (canonical display unit, factor to it)
_IN_UNITS = {
    "mv": ("mV", 1), "v": ("mV", 1000),
    "ma": ("mA", 1), "a": ("mA", 1000),
    "mah": ("mAh", 1), "ah": ("mAh", 1000),
    "ms": ("ms", 1), "s": ("ms", 1000), "min": ("ms", 60000), "h": ("ms", 3600000),
    "us": ("us", 1),
    "c": ("°C", 1), "°c": ("°C", 1), "degc": ("°C", 1),
    "%": ("%", 1), "pct": ("%", 1),
    "mw": ("mW", 1), "w": ("mW", 1000),
    "mohm": ("mohm", 1), "ohm": ("mohm", 1000),
    "uohm": ("uohm", 1),
    "permille": ("permille", 1),
}
_SUFFIXES = ("_ma_s", "_mv_s", "_uv_s", "_mv", "_ma", "_ms", "_dc", "_us", "_pct", "_mah",
             "_mohm", "_uohm", "_mw", "_uv", "_permille", "_s")


def short_name(name):
    return name[4:] if name.startswith("cfg_") else name


def bare_name(name):
    n = short_name(name)
    for suf in _SUFFIXES:
        if n.endswith(suf):
            return n[: -len(suf)]
    return n


def unit_of(r):
    """(display unit, register counts per display unit after the map's scale)."""
    if r["unit"] in _DISPLAY:
        return _DISPLAY[r["unit"]]
    if r["unit"] == "0.01 %":  # the register counts 0.01 %: whatever the map's scale
        return "%", 100 * r["div"] / r["mul"]
    if r["unit"] == "uohm":
        return ("mΩ" if r["mul"] == 1000 else "µΩ"), 1
    if r["unit"] == "enum":
        return "", 1
    return r["unit"], 1


def _choices(r):
    """Names of an enum register or of a state register (from the map's description)."""
    if r["unit"] == "enum" and r["range"]:
        return [c.split(" = ", 1)[1] for c in r["range"].split(", ")]
    if r["name"] == "prot_state":
        return list(state_names())
    d = r["description"]
    if "(" in d and d.rstrip().endswith(")"):
        inner = d[d.index("(") + 1:-1]
        parts = [p.strip().split(" ", 1) for p in inner.split(",")]
        if all(len(p) == 2 and p[0].isdigit() for p in parts):
            out = {}
            for k, v in parts:
                out[int(k)] = v
            if sorted(out) == list(range(len(out))):
                return [out[i] for i in range(len(out))]
    return None


_BOOLS = {"chg_fet": ("off", "on"), "dsg_fet": ("off", "on"), "chg_allowed": ("no", "yes"),
          "dsg_allowed": ("no", "yes"), "chg_enable": ("no", "yes"), "dsg_enable": ("no", "yes"),
          "force_charge": ("no", "yes"), "full_charge_req": ("no", "yes"),
          "inverter_present": ("lost", "present"), "unlock": ("locked", "unlocked")}


def mask_names(mask, names):
    out = [names[i] if i < len(names) else "bit%d" % i for i in range(32) if mask >> i & 1]
    return ", ".join(out) or "-"


def _num(v):
    if isinstance(v, float):
        txt = "%.3f" % v
        return txt.rstrip("0").rstrip(".") if "." in txt else txt
    return str(v)


def show(r, v, raw=False):
    """A register's decoded value as text, with its unit or name."""
    if isinstance(v, str):  # a text setting
        return v
    if raw:
        return str(encode_raw(r, v))
    name = r["name"]
    if name in ("faults", "warnings", "latched"):
        return mask_names(int(v), fault_names())
    if name == "snap_flags":
        return mask_names(int(v), FLAG_NAMES)
    if name == "bal_mask":
        cells = [str(i + 1) for i in range(16) if int(v) >> i & 1]
        return ("cells " + ", ".join(cells)) if cells else "-"
    if name in _BOOLS:
        return _BOOLS[name][1 if v else 0]
    if r["unit"] == "0.1 degC" and int(v) == -32768:
        return "invalid"
    ch = _choices(r)
    if ch is not None:
        i = int(v)
        return ch[i] if 0 <= i < len(ch) else "%d (unknown)" % i
    unit, per = unit_of(r)
    val = v / per if per != 1 else v
    return (_num(val) + (" " + unit if unit else "")).strip()


def shown_name(r, raw=False):
    """The name to print with a value: without the unit suffix when the value is converted
    (chg_temp_max = 45 °C, not chg_temp_max_dc)."""
    if not raw and r["unit"] in _DISPLAY:
        return bare_name(r["name"])
    return short_name(r["name"])


def encode_raw(r, v):
    """Decoded value -> register integer (undoing the map's scale)."""
    return int(round(v * r["mul"] / r["div"]))


def range_text(r):
    if not r["range"]:
        return ""
    if r["unit"] == "enum":
        return ", ".join(_choices(r) or [])
    lo, hi = [int(x) for x in r["range"].split(" .. ")]
    unit, per = unit_of(r)
    return "%s .. %s%s" % (_num(lo / per if per != 1 else lo),
                           _num(hi / per if per != 1 else hi), " " + unit if unit else "")


def parse_value(r, text, raw=False):
    """The register value (firmware units) for a user's text. CtlError (usage) if bad."""
    name = short_name(r["name"])
    if r["type"].startswith("str"):  # text: written whole, at most 2 bytes per register
        if len(text.encode()) > 2 * r["words"]:
            raise CtlError("%s holds at most %d bytes" % (name, 2 * r["words"]), EXIT_USAGE)
        return text
    t = text.strip()
    ch = _choices(r)
    if ch is not None and r["unit"] == "enum":
        if t in ch:
            return ch.index(t)
        if t.isdigit() and int(t) < len(ch):
            return int(t)
        raise CtlError("%s: %r is not one of %s" % (name, text, ", ".join(ch)), EXIT_USAGE)
    if raw:
        try:
            return int(t, 0)
        except ValueError:
            raise CtlError("%s: --raw wants a whole number, got %r" % (name, text),
                           EXIT_USAGE) from None
    unit, per = unit_of(r)
    k = len(t)
    while k > 0 and not (t[k - 1].isdigit() or t[k - 1] == "."):
        k -= 1
    num, word = t[:k].strip(), t[k:].strip().lower()
    try:
        x = float(num)
    except ValueError:
        raise CtlError("%s: %r is not a number%s" % (name, text,
                       (" (in %s)" % unit) if unit else ""), EXIT_USAGE) from None
    if word:
        if word not in _IN_UNITS or _IN_UNITS[word][0] != unit:
            raise CtlError("%s is in %s; %r does not convert to it" % (name, unit or "counts",
                           text), EXIT_USAGE)
        x *= _IN_UNITS[word][1]
    reg = x * per
    if abs(reg - round(reg)) > 1e-6:
        raise CtlError("%s takes steps of %s %s; %r is between two" % (
            name, _num(1 / per), unit, text), EXIT_USAGE)
    return int(round(reg))


# --- the link -------------------------------------------------------------------------
class Link:
    """Modbus RTU client with errors that say what happened and what to do."""

    def __init__(self, port, baud=9600, unit=1, timeout=1.0):
        import logging

        logging.getLogger("pymodbus").setLevel(logging.CRITICAL + 1)
        logging.getLogger("pymodbus").propagate = False
        self.port, self.baud, self.unit = port, baud, unit
        import serial

        try:
            s = serial.Serial(port, baudrate=baud, timeout=0)
            s.close()
        except (serial.SerialException, OSError, ValueError) as e:
            import stat

            if not os.path.exists(port):
                reason = "no such port"
            elif not stat.S_ISCHR(os.stat(port).st_mode):
                reason = "not a serial port"
            elif getattr(e, "errno", None):
                reason = os.strerror(e.errno)
            else:
                reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CtlError("cannot open %s (%s): check --port; Linux: /dev/ttyUSB0 for a USB "
                           "RS485 adapter" % (port, reason), EXIT_NOLINK) from None
        from pymodbus.client import ModbusSerialClient

        self.client = ModbusSerialClient(port, baudrate=baud, bytesize=8, parity="N",
                                         stopbits=1, timeout=timeout, retries=1)
        if not self.client.connect():
            raise CtlError("cannot open %s as a serial port" % port, EXIT_NOLINK)

    def close(self):
        self.client.close()

    def no_reply(self):
        return CtlError("no reply from unit %d on %s at %d baud: check the wiring (A/B, "
                        "ground), the baud rate (--baud, the BMS's modbus_baud) and the unit id "
                        "(--unit, its modbus_unit)" % (self.unit, self.port, self.baud),
                        EXIT_NOLINK)

    def call(self, fn, *a, **kw):
        from pymodbus.exceptions import ModbusException

        try:
            rr = fn(*a, device_id=self.unit, **kw)
        except ModbusException:
            raise self.no_reply() from None
        except OSError as e:
            raise CtlError("%s: %s" % (self.port, e.strerror or e), EXIT_NOLINK) from None
        if rr.isError():
            code = getattr(rr, "exception_code", None)
            if code is None:
                raise self.no_reply()
            return code, rr
        return 0, rr

    def read(self, address, count):
        code, rr = self.call(self.client.read_holding_registers, address, count=count)
        if code == 2:
            raise CtlError("the BMS has no register %d..%d: its register map differs from "
                           "tools/regmap.csv (compare map_version; update the firmware or the "
                           "tools)" % (address, address + count - 1), EXIT_REFUSED)
        if code:
            raise CtlError("the BMS refused to read %d..%d (Modbus exception %d)" % (
                address, address + count - 1, code), EXIT_REFUSED)
        return rr.registers

    def write(self, address, words):
        if len(words) == 1:
            return self.call(self.client.write_register, address, words[0])[0]
        return self.call(self.client.write_registers, address, words)[0]


class Bms:
    def __init__(self, link, rows):
        self.link = link
        self.rows = rows
        self.by_name = dict((r["name"], r) for r in rows)

    @staticmethod
    def decode(r, words):
        if r["type"].startswith("str"):  # text: 2 UTF-8 bytes per register, NUL-padded
            b = bytes(x for w in words for x in (w >> 8, w & 0xFF))
            return b.rstrip(b"\0").decode(errors="replace")
        if r["words"] == 2:
            v = (words[0] << 16) | words[1]
            if r["type"] == "s32" and v & 0x80000000:
                v -= 1 << 32
        else:
            v = words[0]
            if r["type"] == "s16" and v & 0x8000:
                v -= 1 << 16
        if (r["mul"], r["div"]) != (1, 1):
            return v * r["div"] / r["mul"]
        return v

    def read_rows(self, rows):
        """{name: decoded value} in contiguous reads of up to 100 registers."""
        rows = sorted(rows, key=lambda r: r["address"])
        out = {}
        i = 0
        while i < len(rows):
            j = i
            end = rows[i]["address"] + rows[i]["words"]
            while (j + 1 < len(rows) and rows[j + 1]["address"] == end
                   and end + rows[j + 1]["words"] - rows[i]["address"] <= 100):
                j += 1
                end = rows[j]["address"] + rows[j]["words"]
            words = self.link.read(rows[i]["address"], end - rows[i]["address"])
            for r in rows[i:j + 1]:
                o = r["address"] - rows[i]["address"]
                out[r["name"]] = self.decode(r, words[o:o + r["words"]])
            i = j + 1
        return out

    def read(self, *names):
        return self.read_rows([self.by_name[n] for n in names])

    def live(self):
        """Every register below the configuration (the measurements and states)."""
        v = self.read_rows([r for r in self.rows if r["address"] < 200])
        return v

    def config_values(self):
        return self.read_rows([r for r in self.rows if r["name"].startswith("cfg_")])

    def unlock(self, pin):
        code = self.link.write(self.by_name["unlock"]["address"], [pin])
        if code == 3:
            raise CtlError("wrong PIN: the BMS refuses further unlocking for %d s (give its "
                           "modbus_pin with --pin)" % PIN_HOLDOFF_S, EXIT_REFUSED)
        if code in (1, 4):  # 1: the server is in the wrong state (map v2); 4: older firmware
            state = None
            if "lock_state" in self.by_name:
                try:
                    state = self.read_rows([self.by_name["lock_state"]])["lock_state"]
                except CtlError:
                    state = None
            if state == 3:
                raise CtlError("configuration over Modbus is off on this BMS (modbus_pin = 0): "
                               "set a PIN on the REPL, bms.set('modbus_pin', 1234)",
                               EXIT_REFUSED)
            if state == 2:
                raise CtlError("unlock refused: a wrong PIN was tried in the last %d s; wait "
                               "%d s, then try again" % (PIN_HOLDOFF_S, PIN_HOLDOFF_S),
                               EXIT_REFUSED)
            raise CtlError("unlock refused: a wrong PIN was tried in the last %d s (wait %d s, "
                           "then try again), or Modbus configuration is off on this BMS "
                           "(modbus_pin = 0: set a PIN on the REPL, bms.set('modbus_pin', "
                           "1234))" % (PIN_HOLDOFF_S, PIN_HOLDOFF_S), EXIT_REFUSED)
        if code:
            raise CtlError("unlock refused (Modbus exception %d)" % code, EXIT_REFUSED)

    def lock(self):
        self.link.write(self.by_name["unlock"]["address"], [0])


def resolve(rows, name, writable=False):
    """The register row for a user's name (cfg_ prefix and unit suffix optional)."""
    by = dict((r["name"], r) for r in rows)
    n = name.strip()
    for cand in (n, "cfg_" + n):
        if cand in by and (not writable or by[cand]["access"] == "rw"):
            return by[cand]
    hits = [r for r in rows if bare_name(r["name"]) == n or short_name(r["name"]) == n]
    if writable:
        rw = [r for r in hits if r["access"] == "rw"]
        hits = rw or hits
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise CtlError("%r is ambiguous: %s" % (name, ", ".join(short_name(r["name"])
                                                              for r in hits)), EXIT_USAGE)
    import difflib

    close = difflib.get_close_matches(n, [short_name(r["name"]) for r in rows]
                                      + [bare_name(r["name"]) for r in rows], n=3)
    raise CtlError("unknown register %r%s ('names' lists them)" % (
        name, (": did you mean " + " or ".join(sorted(set(close))) + "?") if close else ""),
        EXIT_USAGE)


# --- commands ---------------------------------------------------------------------------
def _t(v):
    return "invalid" if v == -32768 else "%.1f °C" % (v / 10)


def render_status(v):
    names = state_names()
    st = int(v["prot_state"])
    cur = v["current_ma"] / 1000
    lines = [
        "state     %s        FETs: charge %s, discharge %s   allowed: charge %s, discharge %s" % (
            names[st] if st < len(names) else st, "on" if v["chg_fet"] else "off",
            "on" if v["dsg_fet"] else "off", "yes" if v["chg_allowed"] else "no",
            "yes" if v["dsg_allowed"] else "no"),
        "pack      %.3f V   current %+.3f A (%s)" % (
            v["pack_mv"] / 1000, cur, "charging" if cur > 0 else "discharging" if cur < 0
            else "idle"),
        "cells     %d mV (#%d) .. %d mV (#%d), spread %d mV, %d cells" % (
            v["cell_min_mv"], v["cell_min_idx"] + 1, v["cell_max_mv"], v["cell_max_idx"] + 1,
            v["cell_max_mv"] - v["cell_min_mv"], v["cells"]),
        "temps     %s .. %s   AFE die %s" % (_t(v["temp_min_dc"]), _t(v["temp_max_dc"]),
                                             _t(v["die_temp_dc"])),
        "SOC       %.2f %% ± %.2f %%   SOH %.2f %%   capacity %.3f Ah   cycles %d" % (
            v["soc"], v["soc_err"], v["soh"], v["capacity_mah"] / 1000, v["cycles"]),
        "faults    %s" % mask_names(int(v["faults"]), fault_names()),
        "warnings  %s" % mask_names(int(v["warnings"]), fault_names()),
        "latched   %s" % mask_names(int(v["latched"]), fault_names()),
        "limits    CVL %.2f V   CCL %.1f A   DCL %.1f A   DVL %.2f V" % (
            v["cvl_mv"] / 1000, v["ccl_ma"] / 1000, v["dcl_ma"] / 1000, v["dvl_mv"] / 1000),
        "balancing %s   inverter %s   AFE read errors %d" % (
            show({"name": "bal_mask"}, v["bal_mask"]),
            "present" if v["inverter_present"] else "lost", v["afe_error_total"]),
    ]
    return "\n".join(lines)


def render_cells(v):
    n = int(v["cells"])
    vals = [v["cell%d_mv" % (i + 1)] for i in range(n)]
    lo, hi = min(vals), max(vals)
    bal = int(v["bal_mask"])
    out = []
    for i, mv in enumerate(vals):
        mark = " lowest" if mv == lo and lo != hi else " highest" if mv == hi and lo != hi else ""
        out.append("cell %2d  %5d mV  %+4d%s%s" % (i + 1, mv, mv - sum(vals) // n, mark,
                                                    "  bleeding" if bal >> i & 1 else ""))
    for i in range(int(v["temps"])):
        out.append("temp %d   %s" % (i + 1, _t(v["temp%d_dc" % (i + 1)])))
    return "\n".join(out)


def cmd_status(b, a):
    print(render_status(b.live()))


def cmd_cells(b, a):
    print(render_cells(b.live()))


def cmd_faults(b, a):
    v = b.read("faults", "warnings", "latched")
    for k in ("faults", "warnings", "latched"):
        print("%-9s %s" % (k, mask_names(int(v[k]), fault_names())))


def cmd_get(b, a):
    if not a.names:
        raise CtlError("get wants one or more register names ('names' lists them)", EXIT_USAGE)
    rows = [resolve(b.rows, n) for n in a.names]
    v = b.read_rows(rows)
    for r in rows:
        print("%s = %s" % (shown_name(r, a.raw), show(r, v[r["name"]], a.raw)))


def prepare_set(rows, a):
    """Everything about a set that needs no board: name, value, range, PIN."""
    r = resolve(rows, a.name, writable=True)
    if r["access"] != "rw" or r["name"] == "unlock":
        why = ("board identity, from the board file" if r["name"].startswith("cfg_")
               else "a measurement or state")
        raise CtlError("%s is read-only (%s); 'config' lists what can be set" % (
            short_name(r["name"]), why), EXIT_USAGE)
    value = parse_value(r, a.value, a.raw)
    if r["range"] and r["unit"] != "enum" and not isinstance(value, str):
        lo, hi = [int(x) for x in r["range"].split(" .. ")]
        if not lo <= value <= hi:
            raise CtlError("%s %s is out of range: %s" % (short_name(r["name"]),
                           show(r, value), range_text(r)), EXIT_USAGE)
    if a.pin is None:
        raise CtlError("set needs the PIN: --pin PIN (the BMS's modbus_pin, set on the REPL "
                       "with bms.set('modbus_pin', 1234))", EXIT_USAGE)
    if not 1 <= a.pin <= 9999:
        raise CtlError("--pin %d: a PIN is 1 .. 9999" % a.pin, EXIT_USAGE)
    return r, value


def cmd_set(b, a):
    r, value = prepare_set(b.rows, a)
    _check_rules(b, r, value)
    b.unlock(a.pin)
    try:
        if isinstance(value, str):  # NUL-padded to the register count, sent whole
            bb = value.encode() + bytes(2 * r["words"] - len(value.encode()))
            words = [(bb[i] << 8) | bb[i + 1] for i in range(0, len(bb), 2)]
        elif r["words"] == 2:
            words = [(value >> 16) & 0xFFFF, value & 0xFFFF]
        else:
            words = [value & 0xFFFF]
        code = b.link.write(r["address"], words)
        if code == 1:
            raise CtlError("configuration is locked: the unlock did not hold (another client "
                           "locked it?); try again with --pin", EXIT_REFUSED)
        if code == 2:
            raise CtlError("%s is read-only on this BMS" % short_name(r["name"]), EXIT_REFUSED)
        if code == 4:
            raise CtlError("the BMS could not apply %s = %s: its AFE did not take the hardware "
                           "limit (see the event log: bms.log() on the REPL)" % (
                               short_name(r["name"]), show(r, value)), EXIT_REFUSED)
        if code == 3:
            raise CtlError("the BMS refused %s = %s: a rule of its configuration (its firmware "
                           "may differ from these tools; see 'config')" % (
                               short_name(r["name"]), show(r, value)), EXIT_REFUSED)
        if code:
            raise CtlError("the BMS refused the write (Modbus exception %d)" % code,
                           EXIT_REFUSED)
        back = b.read_rows([r])[r["name"]]
    finally:
        try:
            b.lock()
        except CtlError:
            pass
    print("%s = %s" % (shown_name(r, a.raw), show(r, back, a.raw)))


def config_dict(b):
    """The BMS's configuration as the firmware names it: {field: value}, enums by choice,
    texts as text (read over Modbus)."""
    _firmware()
    from bms.config_tables import FIELDS

    fields = dict((f[0], f) for f in FIELDS)
    cur = b.config_values()
    out = {}
    for row in b.rows:
        if row["name"].startswith("cfg_"):
            k = row["name"][4:]
            v = cur[row["name"]]
            f = fields.get(k)
            if not isinstance(v, str):
                v = int(v)
                if f is not None and len(f) == 2 and 0 <= v < len(f[1]):
                    v = f[1][v]
            out[k] = v
    return out


def _check_rules(b, r, value):
    """The firmware's own validation (bms.config) on the BMS's current configuration."""
    _firmware()
    from bms.config import Config, ConfigError
    from bms.config_tables import FIELDS

    fields = dict((f[0], f) for f in FIELDS)
    vals = config_dict(b)
    name = r["name"][4:]
    f = fields.get(name)
    new = f[1][value] if f is not None and len(f) == 2 else value
    try:
        cfg = Config(vals["chemistry"], vals["cells"], vals["capacity_mah"])
        cfg.update(dict((k, v) for k, v in vals.items() if k in fields))
    except (ConfigError, KeyError, TypeError, ValueError):
        return  # the BMS's configuration is not this firmware's: let the BMS judge
    try:
        cfg.update({name: new})
    except ConfigError as e:
        raise CtlError("%s = %s breaks a rule of the configuration: %s" % (
            short_name(r["name"]), show(r, value), e.rule), EXIT_USAGE) from None


def cmd_config(b, a):
    rows = [r for r in b.rows if r["name"].startswith("cfg_")]
    v = b.read_rows(rows)
    for r in rows:
        print("%-28s %14s   (%s)" % (short_name(r["name"]), show(r, v[r["name"]], a.raw),
                                     range_text(r)))


def cmd_dump(b, a):
    v = b.read_rows(b.rows)
    for r in b.rows:
        print("%5d %-28s %s" % (r["address"], r["name"], show(r, v[r["name"]], a.raw)))


def cmd_names(rows, a):
    for r in rows:
        n = short_name(r["name"])
        if a.text and a.text not in n and a.text not in r["description"]:
            continue
        unit, _ = unit_of(r)
        print("%-28s %-2s %-6s %-22s %s" % (n, r["access"], unit, range_text(r),
                                           r["description"]))


# --- log and watch ------------------------------------------------------------------------
# The simulator's columns a board can report, in the simulator's order, then what
# tools/replay.py reads (t_s, current_A, cellN_V, temp_C). Every value is a number (replay
# reads every column as one): the simulator's text columns state, faults and warnings are
# state_code (bms.protection.STATE_NAMES index), fault_mask (faults | latched) and
# warning_mask (bit i = bms.protection.FAULT_NAMES[i], as the Modbus registers).
LOG_COLUMNS = ("t_s", "state_code", "soc_pct", "pack_mv", "current_ma", "cell_min_mv",
               "cell_max_mv", "t_min_c", "t_max_c", "chg_fet", "dsg_fet", "fault_mask",
               "bal_mask", "cvl_mv", "ccl_ma", "dcl_ma", "warning_mask", "soc_err_pct",
               "soh_pct", "capacity_ah", "inverter")


def log_header(n_cells):
    return (list(LOG_COLUMNS) + ["cell%d_mv" % (i + 1) for i in range(n_cells)]
            + ["current_A"] + ["cell%d_V" % (i + 1) for i in range(n_cells)] + ["temp_C"])


def _c(dc):
    return "" if dc == -32768 else "%.1f" % (dc / 10)


def log_row(t, v):
    n = int(v["cells"])
    row = [
        "%.1f" % t, int(v["prot_state"]), "%.2f" % v["soc"], v["pack_mv"], v["current_ma"],
        v["cell_min_mv"], v["cell_max_mv"], _c(v["temp_min_dc"]), _c(v["temp_max_dc"]),
        v["chg_fet"], v["dsg_fet"], int(v["faults"]) | int(v["latched"]), v["bal_mask"],
        v["cvl_mv"], v["ccl_ma"], v["dcl_ma"], int(v["warnings"]), "%.2f" % v["soc_err"],
        "%.1f" % v["soh"], "%.2f" % (v["capacity_mah"] / 1000), v["inverter_present"],
    ]
    cells = [int(v["cell%d_mv" % (i + 1)]) for i in range(n)]
    row += cells
    row.append("%.3f" % (v["current_ma"] / 1000))
    row += ["%.3f" % (mv / 1000) for mv in cells]
    row.append(_c(v["temp_max_dc"]))
    return row


def cmd_log(b, a):
    if a.interval <= 0:
        raise CtlError("--interval %g: more than 0 s" % a.interval, EXIT_USAGE)
    try:
        f = open(a.file, "w", newline="")
    except OSError as e:
        raise CtlError("cannot write %s (%s)" % (a.file, e.strerror or e), EXIT_USAGE) from None
    rows = 0
    misses = 0
    with f:
        conf = config_dict(b)
        side = os.path.splitext(a.file)[0] + ".config.json"
        with open(side, "w") as fh:
            json.dump(conf, fh)
        first = b.live()
        n = int(first["cells"])
        w = csv.writer(f)
        w.writerow(log_header(n))
        t0 = time.monotonic()
        nxt = t0
        v = first
        print("logging unit %d on %s into %s (configuration: %s), every %g s; Ctrl-C ends"
              % (b.link.unit, b.link.port, a.file, side, a.interval), file=sys.stderr)
        try:
            while True:
                if v is None:
                    try:
                        v = b.live()
                        misses = 0
                    except CtlError as e:
                        if e.code != EXIT_NOLINK:
                            raise
                        misses += 1
                        print("%s (%d in a row)" % (e, misses), file=sys.stderr)
                        if misses >= 10:
                            raise
                if v is not None:
                    w.writerow(log_row(time.monotonic() - t0, v))
                    f.flush()
                    rows += 1
                    v = None
                if a.count and rows >= a.count:
                    break
                nxt += a.interval
                time.sleep(max(0.0, nxt - time.monotonic()))
        except KeyboardInterrupt:
            pass
    print("%d rows written to %s" % (rows, a.file), file=sys.stderr)


def cmd_watch(b, a):
    if a.interval <= 0:
        raise CtlError("--interval %g: more than 0 s" % a.interval, EXIT_USAGE)
    tty = sys.stdout.isatty()
    k = 0
    try:
        while True:
            v = b.live()
            text = "%s  unit %d on %s  (every %g s, Ctrl-C ends)\n\n%s\n\n%s" % (
                time.strftime("%H:%M:%S"), b.link.unit, b.link.port, a.interval,
                render_status(v), render_cells(v))
            if tty:
                sys.stdout.write("\033[H\033[J" + text + "\n")
            else:
                sys.stdout.write(text + "\n\n")
            sys.stdout.flush()
            k += 1
            if a.count and k >= a.count:
                break
            time.sleep(a.interval)
    except KeyboardInterrupt:
        pass


COMMANDS = {
    "status": (cmd_status, "state, pack, current, SOC, FETs, faults, limits"),
    "cells": (cmd_cells, "cell voltages and temperatures"),
    "faults": (cmd_faults, "active faults, warnings and latched faults by name"),
    "get": (cmd_get, "registers by name, in engineering units"),
    "set": (cmd_set, "change a configuration value (needs --pin)"),
    "config": (cmd_config, "every configuration value with its range"),
    "dump": (cmd_dump, "every register of tools/regmap.csv"),
    "log": (cmd_log, "poll the board into a CSV (the simulator's columns) until Ctrl-C"),
    "watch": (cmd_watch, "a live view, refreshed every --interval seconds"),
    "names": (None, "register names, units and ranges (needs no board)"),
}


def parser():
    import argparse

    common = Parser(add_help=False)
    g = common.add_argument_group("connection")
    g.add_argument("--port", default=argparse.SUPPRESS,
                   help="serial port of the RS485 adapter (or a PTY of tools/sim.py --rs485)")
    g.add_argument("--baud", type=int, default=argparse.SUPPRESS, help="default 9600")
    g.add_argument("--unit", type=int, default=argparse.SUPPRESS, help="Modbus unit id, "
                   "default 1")
    g.add_argument("--timeout", type=float, default=argparse.SUPPRESS,
                   help="seconds to wait for a reply, default 1")
    g.add_argument("--pin", type=int, default=argparse.SUPPRESS, help="the BMS's modbus_pin "
                   "(for set)")
    g.add_argument("--raw", action="store_true", default=argparse.SUPPRESS,
                   help="register values instead of engineering units")
    ap = Parser(prog=PROG, parents=[common], description=__doc__.split("\n")[0],
                epilog="Exit status: 0 done; 1 the BMS refused; 2 a mistake on the command "
                "line (nothing sent); 3 no connection. Units and names: see the README.")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, helptext) in COMMANDS.items():
        sp = sub.add_parser(name, parents=[common], help=helptext, description=helptext)
        if name == "get":
            sp.add_argument("names", nargs="*", metavar="NAME")
        elif name == "set":
            sp.add_argument("name", metavar="NAME")
            sp.add_argument("value", metavar="VALUE")
        elif name in ("log", "watch"):
            if name == "log":
                sp.add_argument("file", metavar="FILE.csv")
            sp.add_argument("--interval", type=float, default=1.0, help="seconds, default 1")
            sp.add_argument("--count", type=int, default=0, help="stop after N rows/views")
        elif name == "names":
            sp.add_argument("text", nargs="?", default="", help="only names containing it")
    return ap


def main(argv=None):
    a = parser().parse_args(argv)
    for k, d in (("port", None), ("baud", 9600), ("unit", 1), ("timeout", 1.0), ("pin", None),
                 ("raw", False)):
        if not hasattr(a, k):
            setattr(a, k, d)
    try:
        return run(a)
    except CtlError as e:
        sys.stderr.write("%s: %s\n" % (PROG, e))
        return e.code
    except gen_regmap.MapError as e:
        sys.stderr.write("%s: tools/regmap.csv: %s\n" % (PROG, e))
        return EXIT_USAGE


def run(a):
    if not a.command:
        raise CtlError("which command? one of %s (--help explains them)" % ", ".join(COMMANDS),
                       EXIT_USAGE)
    rows = gen_regmap.load()
    if a.command == "names":
        cmd_names(rows, a)
        return 0
    if a.command == "set":
        prepare_set(rows, a)  # a typo or a bad value is reported before the port is opened
    if a.command == "get":
        for n in a.names:
            resolve(rows, n)
    if not a.port:
        raise CtlError("%s needs --port (e.g. --port /dev/ttyUSB0)" % a.command, EXIT_USAGE)
    if not 1 <= a.unit <= 247:
        raise CtlError("--unit %d: a Modbus unit id is 1 .. 247" % a.unit, EXIT_USAGE)
    if a.baud <= 0 or a.timeout <= 0:
        raise CtlError("--baud and --timeout must be above 0", EXIT_USAGE)
    link = Link(a.port, a.baud, a.unit, a.timeout)
    try:
        COMMANDS[a.command][0](Bms(link, rows), a)
    finally:
        link.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
