#!/usr/bin/env python3
"""Generate firmware/bms/regmap.py and docs/modbus.md from tools/regmap.csv (CPython).

    python tools/gen_regmap.py            write both files
    python tools/gen_regmap.py --check    exit 1 when a generated file is out of date

tools/regmap.csv is the ONE register map. Columns:
  address      register address (0-based, PDU address), decimal
  name         unique identifier
  type         u16 | s16 | u32 | s32 (32-bit values: two registers, high word first)
               | strN (text configuration fields: N registers, 2 bytes each, UTF-8, first
               byte high, NUL-padded; read and written as a whole)
  access       r (read only) | rw (also writable with FC 6/16)
  scale        register = value * scale ("100") or value / scale ("1/10"), integer result
  unit         unit of the register value (documentation)
  source       const:N | cfg.FIELD | special:unlock | special:factory_reset |
               OBJ.ATTR[.ATTR][[INDEX]] on the BMS object
  description  documentation
Writable rows are configuration fields (cfg.*, validated by bms.config) and the specials.
"""
import csv
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSV_PATH = os.path.join(ROOT, "tools", "regmap.csv")
PY_PATH = os.path.join(ROOT, "firmware", "bms", "regmap.py")
MD_PATH = os.path.join(ROOT, "docs", "modbus.md")

TYPES = {"u16": (0, 1, 0, 0xFFFF), "s16": (1, 1, -0x8000, 0x7FFF),
         "u32": (2, 2, 0, 0xFFFFFFFF), "s32": (3, 2, -0x80000000, 0x7FFFFFFF)}
ACCESS = {"r": 1, "rw": 3}
KINDS = {"const": 0, "attr": 1, "index": 2, "cfg": 3, "special": 4, "text": 5}
_STR = re.compile(r"^str(\d+)$")
ROOTS = ("snap", "prot", "est", "limits", "can", "modbus", "events", "cfg", "status")
SPECIALS = ("unlock", "factory_reset")
NOT_MAPPED = ("modbus_pin", "mqtt_pin", "wifi_password", "mqtt_password")  # never over Modbus
_PATH = re.compile(r"^([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)+)(?:\[(\d+)\])?$")


class MapError(Exception):
    pass


def _config():
    for p in (os.path.join(ROOT, "tools", "compat"), os.path.join(ROOT, "firmware")):
        if p not in sys.path:
            sys.path.insert(0, p)
    from bms import config_tables as config

    return config


def parse_scale(s):
    s = s.strip() or "1"
    if "/" in s:
        a, b = s.split("/", 1)
        mul, div = int(a), int(b)
    else:
        mul, div = int(s), 1
    if mul < 1 or div < 1:
        raise MapError("scale must be positive: %r" % s)
    return mul, div


def parse_source(src):
    """(kind, path, index) for a source expression."""
    src = src.strip()
    if src.startswith("const:"):
        return KINDS["const"], None, int(src[6:], 0)
    if src.startswith("special:"):
        name = src[8:]
        if name not in SPECIALS:
            raise MapError("unknown special %r" % name)
        return KINDS["special"], name, 0
    if src.startswith("cfg."):
        return KINDS["cfg"], src[4:], 0
    m = _PATH.match(src)
    if not m:
        raise MapError("bad source %r" % src)
    path = tuple(m.group(1).split("."))
    if path[0] not in ROOTS:
        raise MapError("unknown root object %r in %r" % (path[0], src))
    if m.group(2) is not None:
        return KINDS["index"], path, int(m.group(2))
    return KINDS["attr"], path, 0


def load(path=CSV_PATH):
    """Read and validate the CSV. Returns a list of dict rows sorted by address."""
    config = _config()
    fields = dict((f[0], f) for f in config.FIELDS)
    rows = []
    with open(path, newline="") as fh:
        for n, r in enumerate(csv.DictReader(fh), start=2):
            try:
                row = _row(r, fields)
            except (MapError, ValueError, KeyError) as e:
                raise MapError("%s line %d: %s" % (os.path.basename(path), n, e)) from None
            rows.append(row)
    rows.sort(key=lambda r: r["address"])
    names = set()
    end = -1
    for r in rows:
        if r["name"] in names:
            raise MapError("duplicate name %s" % r["name"])
        names.add(r["name"])
        if r["address"] <= end:
            raise MapError("register %s at %d overlaps the previous one" % (r["name"],
                                                                              r["address"]))
        end = r["address"] + r["words"] - 1
        if end > 0xFFFF:
            raise MapError("address out of range: %s" % r["name"])
    return rows


def _row(r, fields):
    row = {
        "address": int(r["address"]),
        "name": r["name"].strip(),
        "type": r["type"].strip(),
        "access": r["access"].strip(),
        "scale": (r["scale"] or "1").strip(),
        "unit": (r["unit"] or "").strip(),
        "source": r["source"].strip(),
        "description": (r["description"] or "").strip(),
    }
    if not re.match(r"^[a-z_][a-z0-9_]*$", row["name"]):
        raise MapError("bad name %r" % row["name"])
    text = _STR.match(row["type"])
    if text:
        code, words, lo, hi = 0, int(text.group(1)), 0, 0
        if not 1 <= words <= 64:
            raise MapError("strN: N must be 1..64")
    elif row["type"] not in TYPES:
        raise MapError("bad type %r" % row["type"])
    else:
        code, words, lo, hi = TYPES[row["type"]]
    if row["access"] not in ACCESS:
        raise MapError("bad access %r" % row["access"])
    row["tcode"] = code
    row["words"] = words
    row["mul"], row["div"] = parse_scale(row["scale"])
    kind, path, idx = parse_source(row["source"])
    row["kind"], row["path"], row["index"] = kind, path, idx
    row["range"] = ""
    if kind == KINDS["cfg"]:
        if path in NOT_MAPPED:
            raise MapError("%s must not be in the Modbus map" % path)
        if path not in fields:
            raise MapError("unknown config field %r" % path)
        if (row["mul"], row["div"]) != (1, 1):
            raise MapError("configuration registers use scale 1")
        f = fields[path]
        if isinstance(f[1], str) or text:  # a text field <-> a strN register
            if not (isinstance(f[1], str) and text):
                raise MapError("text fields (and only they) use strN registers: %s" % path)
            if f[1] == "secret":
                raise MapError("%s is secret: never in the Modbus map" % path)
            if f[2] > 2 * words:
                raise MapError("%s holds up to %d characters, str%d only %d bytes" % (
                    path, f[2], words, 2 * words))
            row["kind"] = KINDS["text"]
            row["index"] = words
            row["range"] = "text, up to %d bytes (UTF-8, NUL-padded)" % (2 * words)
            return row
        if len(f) == 2:
            flo, fhi = 0, len(f[1]) - 1
            row["range"] = ", ".join("%d = %s" % (i, c) for i, c in enumerate(f[1]))
        else:
            flo, fhi = f[1], f[2]
            row["range"] = "%d .. %d" % (flo, fhi)
        if flo < lo or fhi > hi:
            raise MapError("config range %d..%d does not fit %s" % (flo, fhi, row["type"]))
    elif row["access"] != "r" and kind != KINDS["special"]:
        raise MapError("only configuration fields and specials may be writable")
    if kind == KINDS["const"] and not lo <= idx <= hi:
        raise MapError("constant does not fit the type")
    return row


def _lit(v):
    if isinstance(v, tuple):
        return "(" + ", ".join('"%s"' % x for x in v) + ("," if len(v) == 1 else "") + ")"
    return '"%s"' % v


def tables(rows):
    """(records, paths, consts, scales): what render_py writes, also used by the tests."""
    paths, consts, scales = [], [], [(1, 1)]
    recs = []
    for r in rows:
        kind = r["kind"]
        if kind == KINDS["const"]:
            if r["index"] not in consts:
                consts.append(r["index"])
            ref = consts.index(r["index"])
            idx = 0
        else:
            if r["path"] not in paths:
                paths.append(r["path"])
            ref = paths.index(r["path"])
            idx = r["index"]
        sc = (r["mul"], r["div"])
        if sc not in scales:
            scales.append(sc)
        if idx > 255 or ref > 0xFFFF or len(scales) > 255:
            raise MapError("table limits exceeded at %s" % r["name"])
        tak = r["tcode"] | (ACCESS[r["access"]] << 2) | (kind << 4)
        recs.append(bytes((r["address"] >> 8, r["address"] & 0xFF, tak, ref >> 8, ref & 0xFF,
                           idx, scales.index(sc), 0)))
    return recs, paths, consts, scales


def render_py(rows):
    recs, paths, consts, scales = tables(rows)
    out = [
        "# bms.regmap: the Modbus register map. GENERATED by tools/gen_regmap.py from",
        "# tools/regmap.csv -- do not edit; change the CSV and run `python tools/gen_regmap.py`.",
        "#",
        "# REGS: 8 bytes per register, sorted by address:",
        "#   [0:2] address (big-endian)",
        "#   [2]   type | access << 2 | kind << 4",
        "#         type T_*: 32-bit types use two registers, high word first",
        "#         access: A_READ | A_WRITE",
        "#         kind K_*: CONST value CONSTS[ref]; ATTR getattr chain PATHS[ref] from the BMS",
        "#         object; INDEX the same, then [index]; CFG config field PATHS[ref];",
        "#         SPECIAL handled by the server (PATHS[ref] names it); TEXT a text",
        "#         config field PATHS[ref] over [index] registers (UTF-8, NUL-padded)",
        "#   [3:5] ref (big-endian)   [5] index   [6] scale: SCALES[i] = (mul, div)   [7] 0",
        "# register = value * mul // div (rounded for floats), clamped to the type's range.",
        "from micropython import const",
        "",
        "T_U16 = const(0)",
        "T_S16 = const(1)",
        "T_U32 = const(2)",
        "T_S32 = const(3)",
        "A_READ = const(1)",
        "A_WRITE = const(2)",
        "K_CONST = const(0)",
        "K_ATTR = const(1)",
        "K_INDEX = const(2)",
        "K_CFG = const(3)",
        "K_SPECIAL = const(4)",
        "K_TEXT = const(5)",
        "REC_SIZE = const(8)",
        "",
    ]
    ver = [r for r in rows if r["name"] == "map_version"]
    out.append("MAP_VERSION = const(%d)" % (ver[0]["index"] if ver else 0))
    unlock = [r for r in rows if r["kind"] == KINDS["special"] and r["path"] == "unlock"]
    out.append("UNLOCK_ADDR = const(%d)" % (unlock[0]["address"] if unlock else -1))
    out.append("N_REGS = const(%d)" % len(rows))
    out.append("")
    out.append("REGS = (")
    for rec, r in zip(recs, rows):
        out.append('    b"%s"  # %d %s' % ("".join("\\x%02x" % b for b in rec), r["address"],
                                           r["name"]))
    out.append(")")
    out.append("")
    out.append("PATHS = (")
    for p in paths:
        out.append("    %s," % _lit(p))
    out.append(")")
    out.append("")
    out.append("CONSTS = (%s)" % "".join("%d, " % c for c in consts).rstrip())
    out.append("SCALES = (%s)" % "".join("(%d, %d), " % sc for sc in scales).rstrip())
    return "\n".join(out) + "\n"


def _md_escape(s):
    return s.replace("|", "\\|")


def render_md(rows):
    o = []
    a = o.append
    a("# Modbus RTU register map")
    a("")
    a("<!-- GENERATED by tools/gen_regmap.py from tools/regmap.csv -- do not edit. -->")
    a("")
    ver = [r for r in rows if r["name"] == "map_version"]
    a("Map version %d. The BMS is a Modbus RTU server on RS485 (8N1, `modbus_baud`, default "
      "9600; unit id `modbus_unit`, default 1)." % (ver[0]["index"] if ver else 0))
    a("")
    a("* Addresses are 0-based PDU addresses. Function codes **3 and 4 read the same map**; "
      "6 and 16 write. Up to 125 registers per read, 123 per write.")
    a("* 32-bit values (`u32`, `s32`) take two registers, **high word first**; read or write "
      "both words in one request (a write of one half is refused with exception 02).")
    a("* Register = firmware value x scale, in the unit of the Unit column (`soc`: percent "
      "x 100 = 0.01 % per count). Values outside a type's range are clamped, never wrapped. "
      "Cells or thermistors the pack does not have read 0.")
    a("* Exceptions (MODBUS Application Protocol V1.1b3 section 7): **01** an unknown "
      "function code, or a write while configuration writes are locked (the server is in "
      "the wrong state for this request: read `lock_state`); **02** an address in the "
      "request is not mapped (reads) or not writable (writes: read-only registers such as "
      "the pack identity, half of a 32-bit register); **03** bad quantity/byte count, a "
      "value outside the field's range, a rule of the configuration violated, or a wrong "
      "PIN; **04** only when a valid change could not be carried out by the hardware (the "
      "AFE did not take new hardware limits).")
    a("* Broadcasts (unit 0, MODBUS over Serial Line V1.02 section 2.1): writes (FC 6, 16) "
      "are executed exactly as addressed ones (same lock, PIN and validation) and never "
      "answered, not even with an exception; reads and other functions to unit 0 are "
      "ignored. Counted in `modbus_broadcasts`.")
    a("* Unlock: write the PIN (`modbus_pin`, set on the REPL or in the config file; 0 = "
      "Modbus configuration writes disabled) to register `unlock` (`lock_state` tells the "
      "state: 0 locked, 1 unlocked, 2 hold-off, 3 disabled). Writes are then accepted "
      "until `modbus_unlock_ms` (default 5 min) pass without an accepted write; writing 0 "
      "to `unlock` locks at once. After a wrong PIN further attempts are refused for 10 s. "
      "Every accepted change is logged (EV_CONFIG), every refused one (EV_CONFIG_REJECT, at "
      "most one per second) and every unlock/lock (EV_UNLOCK).")
    a("* Configuration writes go through the same validation as every other change "
      "(`Config.update`): a multi-register write is applied atomically or not at all. "
      "Hardware limits (`hw_*`) are programmed into the AFE and read back before the write "
      "is answered; a value the AFE cannot place outside its software limit is refused (03).")
    a("* The pack's identity (chemistry, cells, capacity, shunt) comes from the board file "
      "and is read-only (exception 02 on a write). `factory_reset`: write 1 while unlocked "
      "to put the configuration back to the board's defaults (logged as EV_CONFIG_RESET).")
    a("* Measurements, limits, permissions, flags, SOC/SOH and faults are read from the "
      "status view (`bms.status`), the same numbers the inverter is told over CAN in the "
      "same cycle.")
    a("* Text settings (`strN`: N registers) hold UTF-8, two bytes per register (first byte "
      "in the high half), padded with NUL; read them whole and write them whole with one FC 16 "
      "(a write that does not cover all N registers is refused with exception 02). Passwords "
      "and PINs are not in the map.")
    a("")
    a("| Address | Name | Type | Access | Scale | Unit | Range | Description |")
    a("|---:|---|---|---|---:|---|---|---|")
    for r in rows:
        addr = str(r["address"]) if r["words"] == 1 else "%d-%d" % (r["address"],
                                                                   r["address"] + 1)
        a("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            addr, r["name"], r["type"], r["access"], r["scale"], r["unit"], r["range"],
            _md_escape(r["description"])))
    return "\n".join(o) + "\n"


def outputs(rows=None):
    if rows is None:
        rows = load()
    return {PY_PATH: render_py(rows), MD_PATH: render_md(rows)}


def main(argv):
    try:
        outs = outputs()
    except MapError as e:
        print("gen_regmap: %s" % e, file=sys.stderr)
        return 2
    stale = []
    for path, text in outs.items():
        try:
            with open(path) as fh:
                cur = fh.read()
        except OSError:
            cur = None
        if cur != text:
            stale.append(path)
            if "--check" not in argv:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w") as fh:
                    fh.write(text)
    if "--check" in argv:
        for p in stale:
            print("out of date: %s (run python tools/gen_regmap.py)" % os.path.relpath(p, ROOT))
        return 1 if stale else 0
    for p in stale:
        print("wrote %s" % os.path.relpath(p, ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
