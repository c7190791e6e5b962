# bms.canbus: the inverter CAN link, profile-independent part: frame scheduling, receive,
# inverter presence, and the encoding helpers the profiles share. The frames of each inverter
# family live in one module per profile, bms.can_<name> (cfg.can_profile); only the chosen
# one is imported.
#
#   p = CanProtocol(can, cfg, events)   can: bms.mcp2515.MCP2515 (send / recv_into / service)
#   p.poll(bms, now_ms)                 every comms cycle; never blocks. Reads bms.status
#                                       (bms.status.Status, the outbound view) and nothing
#                                       else of the app object.
#   p.inverter_present(now_ms) -> bool
#
# A profile module (README "Inverter brands") defines:
#   NAME      its can_profile value
#   FRAMES    ((can_id, period_ms, encoder), ...) in sending order. encoder(b, st, p) writes
#             the 8 bytes of b (zeroed before) from the status view st; p is this object (cfg,
#             fault masks per category, helpers). Encoders allocate nothing.
#   RX_IDS    ids from the inverter that mean "present" (e.g. 0x305)
#   on_rx(p, can_id, dlc, buf)   optional: what else a received frame tells (bounded work)
#
# Scheduling: 11-bit ids, every frame DLC 8. A frame is encoded when it is due (every frame
# due at the same moment is encoded from the same status, so 0x351 and 0x35C always agree)
# and queued while a TX buffer is free; the rest follow on the next polls. A frame still
# waiting when it is due again is dropped and counted (tx_dropped), never sent late. Nothing
# is sent before the status view is ready (a complete reading and a control cycle: never a
# 0 % SOC or a CVL at its floor from an empty view).
#
# Receive: at most _RX_MAX frames per poll. Only ids in RX_IDS matter: they refresh the
# inverter's presence (and 0x305's payload is kept in inv_data); nothing received changes a
# limit, a flag, the configuration or a FET. None for cfg.can_inverter_timeout_ms (default
# 60 s) = lost: EV_INVERTER (0, seconds since the last frame); back: EV_INVERTER (1, gap s).
# The BMS keeps protecting and keeps sending the same frames while the inverter is away.
from array import array

from micropython import const

from bms.events import EV_INVERTER
from bms.faults import CAT_LOW_V, CATEGORY, N_CAT, N_FAULTS

PROFILES = ("pylon", "victron", "sma", "deye", "solark")  # = config can_profile choices
FW_VERSION = const(0x0100)  # reported in 0x35F (major.minor in two bytes)

NO_BIT = const(0xFF)
# 0x35A (SMA/Victron) item of each category: pair index 0..12 (byte = item // 4, bits =
# 2 * (item % 4)); item 0 is "general", 9 "contactor" (not supported), 13..15 reserved.
ITEM_35A = b"\xff\x01\x02\x03\x04\x05\x06\x07\x08\x0a\x0b\x0c"
_ITEM_INTERNAL = const(11)
_ITEMS_35A = const(13)

_RX_MAX = const(8)  # frames drained per poll


def put16(b, o, v):
    b[o] = v & 0xFF
    b[o + 1] = (v >> 8) & 0xFF


def clamp(v, lo, hi):
    return lo if v < lo else hi if v > hi else v


def div_round(v, d):
    """v / d rounded half away from zero, integers only."""
    if v >= 0:
        return (v + d // 2) // d
    return -((-v + d // 2) // d)


def div_up(v, d):
    """v / d rounded up (v >= 0)."""
    return (v + d - 1) // d


def text(b, s, o=0):
    """8 characters of s from offset o, space-padded."""
    n = len(s)
    for i in range(8):
        b[i] = s[o + i] if o + i < n else 0x20


def kelvin(dc):
    """0.1 degC -> whole kelvin, rounded."""
    return clamp((dc + 2736) // 10, 0, 65535)


class CanProtocol:
    def __init__(self, can, cfg, events):
        self.can = can
        self.cfg = cfg
        self.events = events
        # fault mask of each inverter category (from the fault table's category column)
        m = array("l", [0] * N_CAT)
        for i in range(N_FAULTS):
            m[CATEGORY[i]] |= 1 << i
        self.catmask = m
        self._svc = getattr(can, "service", None)  # bound once: no allocation per poll
        self._has_tto = hasattr(can, "tx_timeout_ms")
        self._bufs = []
        self._load(cfg.can_profile)  # name, prof, _frames, _on_rx, _n, _due, _pend
        self._rx = bytearray(8)
        self._last_rx_ms = 0
        self._seen = False
        self._gap_s = 0
        self._t0 = None  # first poll with a valid status
        self.present = 0  # 1 while the inverter is present (for the Modbus map)
        self.victron_gx = False  # 0x307 carried "VIC"
        self.inv_data = bytearray(8)  # last 0x305 payload (SMA sends V/I/T/SOC in it)
        # counters
        self.sets = 0  # frame sets started (the profile's first frame encoded)
        self.tx_frames = 0  # frames queued in the controller
        self.tx_dropped = 0  # frames that could not be queued before they were due again
        self.rx_frames = 0
        self.rx_other = 0  # frames with ids the profile does not use
        self.spi_errors = 0

    # --- profile ----------------------------------------------------------------------------
    def _load(self, name):
        """Import bms.can_<name> (only the chosen profile is in RAM) and size the buffers."""
        if name not in PROFILES:
            name = PROFILES[0]
        mod = __import__("bms.can_" + name, None, None, ("FRAMES",))
        self.name = name
        self.prof = mod
        self._frames = mod.FRAMES
        self._on_rx = getattr(mod, "on_rx", None)
        n = len(mod.FRAMES)
        if len(self._bufs) < n:
            self._bufs = [bytearray(8) for _ in range(n)]
        self._n = n
        self._due = [0] * n  # next due time per frame (a list: times outgrow 32-bit arrays)
        self._pend = bytearray(n)
        self._t0 = None

    # --- presence ---------------------------------------------------------------------------
    def inverter_present(self, now_ms):
        return self._seen and now_ms - self._last_rx_ms <= self.cfg.can_inverter_timeout_ms

    def _check_presence(self, now_ms):
        p = 1 if self.inverter_present(now_ms) else 0
        if p != self.present:
            self.present = p
            if p:
                # b: seconds of silence before this frame (0 on the first contact)
                self.events.add(now_ms, EV_INVERTER, 1, self._gap_s)
            else:
                self.events.add(now_ms, EV_INVERTER, 0, (now_ms - self._last_rx_ms) // 1000)

    # --- receive ----------------------------------------------------------------------------
    def _drain(self, now_ms):
        can = self.can
        buf = self._rx
        ids = self.prof.RX_IDS
        for _ in range(_RX_MAX):
            r = can.recv_into(buf)
            if r is None:
                return
            cid = r[0]
            dlc = r[1]
            self.rx_frames += 1
            if cid in ids:
                # the silence before it, kept for the "back" event (several frames may come
                # in one poll: only the first after a loss counts)
                if not self._seen:
                    self._gap_s = 0
                elif now_ms - self._last_rx_ms > self.cfg.can_inverter_timeout_ms:
                    self._gap_s = (now_ms - self._last_rx_ms) // 1000
                self._last_rx_ms = now_ms
                self._seen = True
                if cid == 0x305:
                    for i in range(8):
                        self.inv_data[i] = buf[i] if i < dlc else 0
                f = self._on_rx
                if f is not None:
                    f(self, cid, dlc, buf)
            else:
                self.rx_other += 1

    # --- poll ---------------------------------------------------------------------------------
    def poll(self, bms, now_ms):
        # Service the controller, drain RX, update presence, encode due frames, queue them.
        # Never blocks; an SPI error (OSError) is counted and retried next time.
        if self.cfg.can_profile != self.name:
            self._load(self.cfg.can_profile)
        try:
            if self._svc is not None:
                self._svc(now_ms)
            self._drain(now_ms)
        except OSError:
            self.spi_errors += 1
        self._check_presence(now_ms)
        st = bms.status
        if not st.ready:
            return
        if self._has_tto:
            self.can.tx_timeout_ms = self.cfg.can_tx_timeout_ms
        frames = self._frames
        due = self._due
        pend = self._pend
        bufs = self._bufs
        if self._t0 is None:
            self._t0 = now_ms
            for i in range(self._n):
                due[i] = now_ms
        for i in range(self._n):
            if now_ms - due[i] >= 0:
                per = frames[i][1]
                if pend[i]:
                    self.tx_dropped += 1
                self._encode_one(i, st)
                pend[i] = 1
                if i == 0:
                    self.sets += 1
                due[i] += per
                if now_ms - due[i] >= 0:  # (re)anchor after a stall: never a burst
                    due[i] = now_ms + per
        try:
            can = self.can
            for i in range(self._n):
                if pend[i]:
                    if not can.send(frames[i][0], bufs[i], 8):
                        break
                    pend[i] = 0
                    self.tx_frames += 1
        except OSError:
            self.spi_errors += 1

    # --- encoding ---------------------------------------------------------------------------
    def _encode_one(self, i, st):
        b = self._bufs[i]
        for k in range(8):
            b[k] = 0
        self._frames[i][2](b, st, self)

    def encode(self, st):
        """Encode every frame of the profile from the status view now (tests, diagnostics)."""
        if self.cfg.can_profile != self.name:
            self._load(self.cfg.can_profile)
        for i in range(self._n):
            self._encode_one(i, st)

    def frame(self, can_id):
        """The last encoded payload of can_id (8 bytes) or None. For tests and diagnostics."""
        for i in range(self._n):
            if self._frames[i][0] == can_id:
                return self._bufs[i]
        return None

    def ids(self):
        return tuple(f[0] for f in self._frames)

    # --- helpers for the profiles ---------------------------------------------------------------
    def flag_bits(self, b, o, mask, table):
        """Set the bit table[category] (byte * 8 + bit from offset o; NO_BIT: none) of every
        category that has a fault in mask."""
        cm = self.catmask
        for c in range(1, N_CAT):
            if mask & cm[c]:
                pos = table[c]
                if pos != NO_BIT:
                    b[o + (pos >> 3)] |= 1 << (pos & 7)

    def alarms_35a(self, b, st, low_v_warning=True):
        """SMA/Victron 0x35A: alarms (bytes 0-3) from the faults, warnings (4-7) from the
        warnings; 2 bits per item, 01 raised, 10 cleared/OK, 00 not supported (SMA-TI 7.1).
        low_v_warning: a low-voltage FAULT is sent as a warning (an alarm puts an SMA SI into
        standby and a GX stops charging, the one thing that helps)."""
        for k in range(_ITEMS_35A):
            if k != 9:  # contactor: not supported
                s = 2 * (k & 3)
                b[k >> 2] |= 2 << s
                b[4 + (k >> 2)] |= 2 << s
        cm = self.catmask
        faults = st.faults
        warns = st.warnings
        any_a = False
        any_w = False
        for c in range(1, N_CAT):
            item = ITEM_35A[c]
            if faults & cm[c]:
                if c == CAT_LOW_V and low_v_warning:
                    _raise(b, 4, item)
                    any_w = True
                else:
                    _raise(b, 0, item)
                    any_a = True
            if warns & cm[c]:
                _raise(b, 4, item)
                any_w = True
        if not st.temp_valid:  # a thermistor without a value: BMS internal warning
            _raise(b, 4, _ITEM_INTERNAL)
            any_w = True
        if any_a:
            _raise(b, 0, 0)
        if any_w:
            _raise(b, 4, 0)


def _raise(b, o, item):
    i = o + (item >> 2)
    s = 2 * (item & 3)
    b[i] = (b[i] & ~(3 << s) & 0xFF) | (1 << s)
