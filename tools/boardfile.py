# tools/boardfile.py: read and check the constants of a board file (boards/NAME/board.py)
# without importing it (no `machine`, no side effects). MicroPython and CPython.
#
#   consts = read_constants("boards/rp2_pico/board.py")    # {"CELLS": 15, "AFE_CRC": True, ...}
#   problems = check_pack(consts)                           # [] or ["CELLS = 16: ...", ...]
#
# Only top-level lines `NAME = literal  # comment` count: ints (decimal, hex, binary, with _),
# floats, quoted strings, True/False/None and const(...) around any of them. Other lines are
# ignored. tools/sim.py --board uses the pack constants; tools/gen_wiring.py the pins.

VARIANTS = {
    # AFE part: (cells min, cells max, thermistor inputs)
    "bq76920": (3, 5, 1),
    "bq76930": (6, 10, 2),
    "bq76940": (9, 15, 3),
}
CHEMISTRIES = ("lfp", "nmc", "lto")
# The shunt sees OCD 8..100 mV and SCD 22..200 mV (BQ769x0 PROTECT1/2 with RSNS 0/1).
OCD_MV = (8, 100)
SCD_MV = (22, 200)


def _strip_comment(s):
    quote = None
    for i in range(len(s)):
        c = s[i]
        if quote:
            if c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c == "#":
            return s[:i]
    return s


def parse_literal(text):
    """The value of a literal, or raise ValueError."""
    s = text.strip()
    if s.startswith("const(") and s.endswith(")"):
        s = s[6:-1].strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "\"'":
        return s[1:-1]
    if s == "True":
        return True
    if s == "False":
        return False
    if s == "None":
        return None
    t = s.replace("_", "")
    neg = t.startswith("-")
    if neg:
        t = t[1:]
    low = t.lower()
    if low.startswith("0x"):
        v = int(low[2:], 16)
    elif low.startswith("0b"):
        v = int(low[2:], 2)
    elif low.isdigit():
        v = int(low)
    else:
        v = float(low)  # raises ValueError for anything else
    return -v if neg else v


def read_constants(path):
    """Top-level `NAME = literal` assignments (upper-case names) of a board file."""
    out = {}
    with open(path) as f:
        for line in f:
            if not line or not ("A" <= line[0] <= "Z"):
                continue
            k = line.find("=")
            if k < 0:
                continue
            name = line[:k].strip()
            if not name or not all(c.isupper() or c.isdigit() or c == "_" for c in name):
                continue
            if line[k + 1:k + 2] == "=":  # a comparison, not an assignment
                continue
            try:
                out[name] = parse_literal(_strip_comment(line[k + 1:]))
            except ValueError:
                pass
    return out


def _isint(v):
    return isinstance(v, int) and not isinstance(v, bool)


def check_pack(c):
    """Problems with the pack constants of a board (a list of one-line messages)."""
    bad = []
    variant = c.get("AFE_VARIANT")
    if variant not in VARIANTS:
        bad.append("AFE_VARIANT = %r: one of %s" % (variant, ", ".join(sorted(VARIANTS))))
        lo, hi, nt = 3, 15, 3
    else:
        lo, hi, nt = VARIANTS[variant]
    cells = c.get("CELLS")
    if not _isint(cells) or not lo <= cells <= hi:
        more = ""
        if _isint(cells) and cells > 15:
            more = " (more than 15 cells in series need two AFEs or another chip)"
        bad.append("CELLS = %r: a %s handles %d to %d cells%s" % (cells, variant or "BQ769x0",
                                                                   lo, hi, more))
    if c.get("CHEMISTRY") not in CHEMISTRIES:
        bad.append("CHEMISTRY = %r: one of %s" % (c.get("CHEMISTRY"), ", ".join(CHEMISTRIES)))
    cap = c.get("CAPACITY_MAH")
    if not _isint(cap) or not 1000 <= cap <= 2000000:
        bad.append("CAPACITY_MAH = %r: 1000 .. 2000000 (1 Ah .. 2000 Ah)" % (cap,))
    shunt = c.get("SHUNT_UOHM")
    if not _isint(shunt) or not 50 <= shunt <= 100000:
        bad.append("SHUNT_UOHM = %r: the shunt in micro-ohm, 50 .. 100000" % (shunt,))
    n = c.get("N_TEMPS")
    if not _isint(n) or not 1 <= n <= nt:
        bad.append("N_TEMPS = %r: 1 .. %d thermistors on a %s" % (n, nt, variant or "BQ769x0"))
    if c.get("AFE_ADDRESS") not in (0x08, 0x18):
        bad.append("AFE_ADDRESS = %r: 0x08 (BQ769x0x00..03) or 0x18 (06/07 parts)"
                   % (c.get("AFE_ADDRESS"),))
    if not isinstance(c.get("AFE_CRC"), bool):
        bad.append("AFE_CRC = %r: True for the xx01/xx03/07 parts, else False"
                   % (c.get("AFE_CRC"),))
    beta = c.get("THERMISTOR_BETA")
    if not _isint(beta) or not 2000 <= beta <= 6000:
        bad.append("THERMISTOR_BETA = %r: the NTC's beta in K, 2000 .. 6000" % (beta,))
    return bad


def current_ranges_a(shunt_uohm):
    """(OCD min, OCD max, SCD min, SCD max) in A that the AFE can trip at on this shunt."""
    return (OCD_MV[0] * 1000.0 / shunt_uohm, OCD_MV[1] * 1000.0 / shunt_uohm,
            SCD_MV[0] * 1000.0 / shunt_uohm, SCD_MV[1] * 1000.0 / shunt_uohm)


def describe(c):
    """One line about the pack of a board (constants already checked)."""
    ocd_lo, ocd_hi, scd_lo, scd_hi = current_ranges_a(c["SHUNT_UOHM"])
    return ("%d x %s %g Ah on a %s (0x%02X, %s), %g mOhm shunt (the AFE trips OCD at %g..%g A, "
            "SCD at %g..%g A), %d thermistor%s" % (
                c["CELLS"], c["CHEMISTRY"].upper(), c["CAPACITY_MAH"] / 1000,
                c["AFE_VARIANT"].upper(), c["AFE_ADDRESS"], "CRC" if c["AFE_CRC"] else "no CRC",
                c["SHUNT_UOHM"] / 1000, round(ocd_lo), round(ocd_hi), round(scd_lo),
                round(scd_hi), c["N_TEMPS"], "" if c["N_TEMPS"] == 1 else "s"))


def shunt_notes(c):
    """Notes on the default hardware current limits of this pack against its shunt."""
    import os
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for p in (os.path.join(root, "tools", "compat"), os.path.join(root, "firmware")):
        if p not in sys.path:
            sys.path.insert(0, p)
    from bms.config import defaults

    d = defaults(c["CHEMISTRY"], c["CELLS"], c["CAPACITY_MAH"])
    out = []
    for key, (lo, hi) in (("hw_ocd_ma", OCD_MV), ("hw_scd_ma", SCD_MV)):
        mv = d[key] * c["SHUNT_UOHM"] / 1e6
        if mv > hi:
            out.append("note: the default %s = %d A is %.0f mV on this shunt, above the AFE's "
                       "%d mV: it will trip at %g A instead (logged as config_reject); a "
                       "shunt of at most %d uOhm, or set %s lower after the first boot" % (
                           key, d[key] // 1000, mv, hi, round(hi * 1000 / c["SHUNT_UOHM"]),
                           int(hi * 1e6 / d[key]), key))
        elif mv < lo:
            out.append("note: the default %s = %d A is %.1f mV on this shunt, below the AFE's "
                       "%d mV: it will trip at %g A instead; a larger shunt gives the AFE "
                       "room" % (key, d[key] // 1000, mv, lo, round(lo * 1000 / c["SHUNT_UOHM"])))
    return out


def main(argv):
    import sys

    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python tools/boardfile.py boards/NAME/board.py   (make check-board "
              "BOARD=NAME): check a board's pack constants", file=sys.stderr)
        return 2
    path = argv[0]
    try:
        c = read_constants(path)
    except OSError as e:
        print("%s: cannot read it (%s)" % (path, e.strerror or e), file=sys.stderr)
        return 2
    bad = check_pack(c)
    if bad:
        for b in bad:
            print("%s: %s" % (path, b), file=sys.stderr)
        return 2
    print("%s: %s" % (path, describe(c)))
    for n in shunt_notes(c):
        print("  " + n)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
