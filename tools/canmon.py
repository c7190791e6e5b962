#!/usr/bin/env python3
"""canmon: print BMS/inverter CAN frames decoded with tools/bms.dbc (CPython, cantools).

    canmon.py -i socketcan -c can0                 live, any python-can interface
    canmon.py -i slcan -c /dev/ttyACM0 -b 500000
    canmon.py --log build/sim/can.log              a candump log (-L format or classic)
    canmon.py --log can.log --id 351,35C --raw     only some ids, also the raw bytes
    canmon.py --profile sma --log can.log          decode with tools/dbc/<profile>.dbc

Lines: time, id, message name, then every signal as name=value unit (choices by name).
Unknown ids print raw. python-can is needed only for live interfaces.
Exit status: 0 done (or Ctrl-C); 2 a mistake: a missing or unreadable log, a file that holds
no CAN frames, a bad --id, an interface that cannot be opened (one line on stderr says which).
"""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cli import Parser  # noqa: E402

PROG = "canmon.py"


class MonError(Exception):
    pass

HERE = os.path.dirname(os.path.abspath(__file__))
DBC = os.path.join(HERE, "bms.dbc")  # pylon + victron frames; per profile: dbc/<profile>.dbc


def dbc_path(profile):
    """The DBC of an inverter profile (can_profile), e.g. tools/dbc/sma.dbc."""
    return os.path.join(HERE, "dbc", profile + ".dbc")

# (1700000000.123456) can0 351#1402740E740ECC01
_LOG_L = re.compile(r"^\((\d+(?:\.\d+)?)\)\s+(\S+)\s+([0-9A-Fa-f]{1,8})#([0-9A-Fa-f]*)\s*$")
#   can0  351   [8]  14 02 74 0E 74 0E CC 01
_LOG_C = re.compile(r"^\s*(?:\((\d+(?:\.\d+)?)\)\s+)?(\S+)\s+([0-9A-Fa-f]{1,8})\s+\[(\d)\]\s*"
                    r"((?:[0-9A-Fa-f]{2}\s*)*)$")


def parse_log_line(line):
    """(t_s or None, channel, can_id, is_ext, bytes) or None for lines that are not frames."""
    m = _LOG_L.match(line)
    if m:
        ids = m.group(3)
        return (float(m.group(1)), m.group(2), int(ids, 16), len(ids) > 3,
                bytes.fromhex(m.group(4)))
    m = _LOG_C.match(line)
    if m:
        ids = m.group(3)
        t = float(m.group(1)) if m.group(1) else None
        data = bytes.fromhex(m.group(5).replace(" ", ""))
        return (t, m.group(2), int(ids, 16), len(ids) > 3, data[: int(m.group(4))])
    return None


def load_db(path=DBC):
    import cantools

    try:
        return cantools.database.load_file(path)
    except OSError as e:
        raise MonError("cannot read the DBC %s (%s)" % (path, e.strerror or e)) from None
    except Exception as e:  # cantools raises its own parse errors
        raise MonError("%s is not a DBC file (%s)" % (path, str(e).splitlines()[0][:80])) \
            from None


def parse_ids(text):
    """{ids} from '351,35C' (hex, optional 0x); MonError on anything else."""
    ids = set()
    for x in text.split(","):
        x = x.strip()
        if not x:
            continue
        try:
            v = int(x, 16)
        except ValueError:
            raise MonError("--id %r: give hex CAN ids separated by commas, e.g. --id 351,35C"
                           % text) from None
        if not 0 <= v <= 0x1FFFFFFF:
            raise MonError("--id %s: a CAN id is at most 1FFFFFFF" % x)
        ids.add(v)
    return ids


def format_frame(db, t, can_id, data, raw=False):
    ts = "%12.3f" % t if t is not None else " " * 12
    head = "%s  %03X" % (ts, can_id)
    try:
        msg = db.get_message_by_frame_id(can_id)
    except KeyError:
        return "%s  %-18s %s" % (head, "?", data.hex(" ").upper())
    try:
        sig = msg.decode(bytes(data) + bytes(max(0, msg.length - len(data))),
                         decode_choices=True)
    except Exception as e:  # a frame that does not fit the DBC: show it, keep going
        return "%s  %-18s undecodable (%s) %s" % (head, msg.name, e, data.hex(" ").upper())
    parts = []
    for s in msg.signals:
        v = sig.get(s.name)
        if isinstance(v, float):
            v = ("%.3f" % v).rstrip("0").rstrip(".")
        parts.append("%s=%s%s" % (s.name, v, (" " + s.unit) if s.unit else ""))
    text = "%s  %-18s %s" % (head, msg.name, "  ".join(parts))
    if raw:
        text += "  [" + data.hex(" ").upper() + "]"
    return text


def run_log(db, path, ids, raw, out=sys.stdout):
    if os.path.isdir(path):
        raise MonError("%s is a folder, not a CAN log" % path)
    try:
        fh = open(path, encoding="utf-8", errors="strict")
    except OSError as e:
        raise MonError("cannot read %s (%s)" % (path, e.strerror or e)) from None
    n = 0
    frames = 0
    try:
        with fh:
            for line in fh:
                f = parse_log_line(line)
                if f is None:
                    continue
                frames += 1
                t, _ch, cid, _ext, data = f
                if ids and cid not in ids:
                    continue
                out.write(format_frame(db, t, cid, data, raw) + "\n")
                n += 1
    except UnicodeDecodeError:
        raise MonError("%s is not a CAN log (not text)" % path) from None
    except BrokenPipeError:  # canmon ... | head
        return n
    if not frames:
        raise MonError("%s holds no CAN frames (candump -L '(t) can0 351#...' or classic "
                       "candump lines expected)" % path)
    return n


def run_live(db, interface, channel, bitrate, ids, raw):
    try:
        import can
    except ImportError:
        raise MonError("live capture needs python-can (pip install python-can)") from None

    kw = {"interface": interface, "channel": channel}
    if bitrate:
        kw["bitrate"] = bitrate
    try:
        bus = can.Bus(**kw)
    except Exception as e:  # python-can raises many kinds (CanError, OSError, ValueError ...)
        hint = ""
        if interface == "socketcan":
            hint = ("; is it up? sudo ip link set %s up type can bitrate %d" % (
                channel, bitrate or 500000))
        raise MonError("cannot open CAN interface %s channel %s (%s)%s" % (
            interface, channel, str(e).splitlines()[0][:100] if str(e) else type(e).__name__,
            hint)) from None
    with bus:
        try:
            while True:
                m = bus.recv(timeout=1.0)
                if m is None or m.is_error_frame:
                    continue
                if ids and m.arbitration_id not in ids:
                    continue
                print(format_frame(db, m.timestamp, m.arbitration_id, bytes(m.data), raw),
                      flush=True)
        except KeyboardInterrupt:
            pass


def main(argv=None):
    ap = Parser(prog=PROG, description=__doc__.split("\n")[0])
    ap.add_argument("--dbc", default=DBC, help="DBC file (default tools/bms.dbc)")
    ap.add_argument("--profile", default="", help="the BMS's can_profile: use its DBC "
                    "(tools/dbc/PROFILE.dbc)")
    ap.add_argument("--log", help="candump log file instead of a live interface")
    ap.add_argument("-i", "--interface", default="socketcan", help="python-can interface")
    ap.add_argument("-c", "--channel", default="can0", help="its channel (default can0)")
    ap.add_argument("-b", "--bitrate", type=int, default=0, help="bit/s (default: as set up)")
    ap.add_argument("--id", default="", help="comma-separated hex ids to show")
    ap.add_argument("--raw", action="store_true", help="also the raw bytes")
    a = ap.parse_args(argv)
    try:
        ids = parse_ids(a.id)
        if a.bitrate < 0:
            raise MonError("--bitrate %d: above 0" % a.bitrate)
        if a.profile:
            import glob

            known = sorted(os.path.basename(p)[:-4] for p in glob.glob(dbc_path("*")))
            if a.profile not in known:
                raise MonError("--profile %s: one of %s" % (a.profile, ", ".join(known)))
        db = load_db(dbc_path(a.profile) if a.profile else a.dbc)
        if a.log:
            run_log(db, a.log, ids, a.raw)
        else:
            run_live(db, a.interface, a.channel, a.bitrate, ids, a.raw)
    except MonError as e:
        sys.stderr.write("%s: %s\n" % (PROG, e))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
