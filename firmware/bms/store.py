# bms.store: persistence of the estimator state, the event log and the configuration.
#
# Each kind ("state", "events", "config") has two slot files, <root>/<kind>.a and .b. A save
# writes the slot that does NOT hold the newest good record, then reads it back and checks
# it; the newest good record is therefore never touched, and a power cut at any point
# leaves at least the previous complete record. A record is one header line and a JSON
# payload:
#     BMS1 <kind> <seq> <length> <crc32 hex>\n{...json...}
# load() takes the valid record with the highest sequence number. A slot that exists but
# fails the checks (interrupted write, flash error) is reported: EV_STORE b=2 when the other
# slot served (fell back to the previous record), b=4 when nothing valid is left, b=3 when
# there is no record at all. load() never raises for bad data; it returns None.
#
# Flash wear: maybe_save() writes at most once per interval per kind (state: 5 min), skips
# unchanged payloads, and writes at once when forced (shutdown, faults).
import json
import os

from micropython import const

from bms.events import EV_STORE

try:
    from binascii import crc32 as _crc32
except ImportError:  # ports built without binascii.crc32
    _crc32 = None

VERSION = const(1)
KINDS = ("state", "events", "config")  # index + 1 = EV_STORE a value

ST_OK = const(0)
ST_SAVED = const(1)
ST_FALLBACK = const(2)
ST_MISSING = const(3)
ST_CORRUPT = const(4)
ST_FOREIGN = const(5)  # (config) saved for another pack identity: not applied (bms.app)

INTERVAL_MS = {"state": 300000, "events": 600000, "config": 0}


def crc32(data, crc=0):
    """CRC-32 (IEEE 802.3, as zlib/binascii)."""
    if _crc32 is not None:
        return _crc32(data, crc) & 0xFFFFFFFF
    crc = ~crc & 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 & -(crc & 1))
    return ~crc & 0xFFFFFFFF


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


class Store:
    def __init__(self, root="/data", events=None):
        self.root = root
        self.events = events
        self.status = {}  # kind -> ST_* of the last load/save
        self._seq = {}  # kind -> sequence number of the newest good record
        self._slot = {}  # kind -> "a"/"b" holding it
        self._last_ms = {}  # kind -> time of the last write
        self._last_crc = {}  # kind -> crc of the last payload written
        self.writes = 0
        try:
            os.mkdir(root)
        except OSError:
            pass  # exists (or read-only: saves will report it)

    def _path(self, kind, slot):
        return "%s/%s.%s" % (self.root, kind, slot)

    def _report(self, kind, code, now_ms=0):
        self.status[kind] = code
        if self.events is not None and code != ST_OK:
            a = KINDS.index(kind) + 1 if kind in KINDS else 0
            self.events.add(now_ms, EV_STORE, a, code)

    def _read(self, kind, slot):
        """(seq, dict) of a valid record, None when absent, False when present but bad."""
        path = self._path(kind, slot)
        try:
            f = open(path, "rb")
        except OSError:
            return None
        try:
            try:
                data = f.read()
            finally:
                f.close()
        except OSError:
            return False
        try:
            nl = data.index(b"\n")
            head = data[:nl].decode().split(" ")
            payload = data[nl + 1:]
            if len(head) != 5 or head[0] != "BMS%d" % VERSION or head[1] != kind:
                return False
            seq = int(head[2])
            if int(head[3]) != len(payload) or int(head[4], 16) != crc32(payload):
                return False
            d = json.loads(payload.decode())
        except (ValueError, IndexError, UnicodeError, TypeError):
            return False
        if not isinstance(d, dict):
            return False
        return (seq, d)

    def load(self, kind, now_ms=0):
        """The newest valid record of kind as a dict, or None. Reports via status/EV_STORE."""
        best = None
        bad = 0
        for slot in ("a", "b"):
            r = self._read(kind, slot)
            if r is False:
                bad += 1
            elif r is not None and (best is None or r[0] > best[0]):
                best = (r[0], r[1], slot)
        if best is None:
            self._seq.pop(kind, None)
            self._slot.pop(kind, None)
            self._report(kind, ST_CORRUPT if bad else ST_MISSING, now_ms)
            return None
        self._seq[kind] = best[0]
        self._slot[kind] = best[2]
        self._report(kind, ST_FALLBACK if bad else ST_OK, now_ms)
        return best[1]

    def save(self, kind, d, now_ms=0, _payload=None):
        """Write d as the newest record of kind. Returns True when written and verified."""
        payload = _payload if _payload is not None else json.dumps(d).encode()
        if kind not in self._seq:
            self._scan(kind)
        seq = self._seq.get(kind, 0) + 1
        slot = "b" if self._slot.get(kind) == "a" else "a"
        crc = crc32(payload)
        head = ("BMS%d %s %d %d %08x\n" % (VERSION, kind, seq, len(payload), crc)).encode()
        path = self._path(kind, slot)
        try:
            f = open(path, "wb")
            try:
                f.write(head)
                f.write(payload)
            finally:
                f.close()
            self.writes += 1
        except OSError:
            self._last_ms[kind] = now_ms  # a failing flash is retried at the interval, not flooded
            self._report(kind, ST_CORRUPT, now_ms)
            return False
        r = self._read(kind, slot)
        if not r or r[0] != seq:
            self._last_ms[kind] = now_ms
            self._report(kind, ST_CORRUPT, now_ms)
            return False
        self._seq[kind] = seq
        self._slot[kind] = slot
        self._last_crc[kind] = crc
        self._last_ms[kind] = now_ms
        self.status[kind] = ST_SAVED
        return True

    def maybe_save(self, kind, d, now_ms, force=False):
        """Save when forced, or when the interval passed and the content changed."""
        payload = json.dumps(d).encode()
        if not force:
            last = self._last_ms.get(kind)
            if last is not None and now_ms - last < INTERVAL_MS.get(kind, 300000):
                return False
            if self._last_crc.get(kind) == crc32(payload):
                self._last_ms[kind] = now_ms
                return False
        ok = self.save(kind, d, now_ms, payload)
        if ok and force:
            self._report(kind, ST_SAVED, now_ms)
        return ok

    def _scan(self, kind):
        """Find the newest good record without reporting (first save after boot)."""
        best = None
        for slot in ("a", "b"):
            r = self._read(kind, slot)
            if r and (best is None or r[0] > best[0]):
                best = (r[0], slot)
        if best is not None:
            self._seq[kind] = best[0]
            self._slot[kind] = best[1]

    def erase(self, kind):
        for slot in ("a", "b"):
            p = self._path(kind, slot)
            if _exists(p):
                os.remove(p)
        self._seq.pop(kind, None)
        self._slot.pop(kind, None)
        self._last_crc.pop(kind, None)
