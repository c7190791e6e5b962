# bms.canbus: the inverter protocol on CAN (Pylontech-compatible LV frames, Victron/SMA variant).
#
#   p = CanProtocol(can, cfg, events)   can: bms.mcp2515.MCP2515 (send / recv_into / service)
#   p.poll(bms, now_ms)                 call every comms cycle (e.g. 20-100 ms); never blocks
#   p.inverter_present(now_ms) -> bool
#
# 500 kbit/s, 11-bit ids, every frame DLC 8, little-endian, the whole set once per second
# (frames are queued while a TX buffer is free; the rest follow on the next polls; a set that
# could not leave within its second is dropped and counted, never sent late).
#
#   id     content (profile)                 encoding
#   0x351  CVL, CCL, DCL, DVL (both)         u16 0.1 V, s16 0.1 A, s16 0.1 A, u16 0.1 V
#   0x355  SOC, SOH, SOC hi-res (both)       u16 1 %, u16 1 %, u16 0.01 %
#   0x356  voltage, current, temperature     s16 0.01 V, s16 0.1 A (+ = charge), s16 0.1 degC
#   0x359  protection/warning flags (both)   bytes 0-3 flag bits, 4 modules, 5-6 "PN", 7 0
#   0x35C  request flags (both)              b7 charge en, b6 discharge en, b5/b4 force, b3 full
#   0x35E  manufacturer (both)               8 ASCII ("PYLON   " / "MPY-BMS ")
#   0x35A  alarm/warning bit pairs (victron) 01 = raised, 10 = ok, 00 = not supported
#   0x35F  model, firmware, capacity (victr) u16 0, u16 version, u16 Ah, u16 0
#   0x370  BMS name part 1 (victron)         8 ASCII
#   0x371  BMS name part 2 (victron)         8 ASCII
#   0x373  min/max cell mV, min/max temp K   u16 x 4
# Values come from a duck-typed state: bms.snap, bms.prot (faults, warnings, latched,
# chg_allowed, dsg_allowed), bms.est (soc_pct, soh_pct), bms.limits (cvl_mv, ccl_ma, dcl_ma,
# dvl_mv, chg_enable, dsg_enable, force_charge, full_charge_req).
#
# Rules applied here on top of the limits (the inverter must never see a dangerous number):
# * CVL is never 0 (Victron discharges towards it): below 0.1 V the pack voltage is sent,
#   else cfg.pack_uv_mv.
# * charge not allowed (limits.chg_enable false or prot.chg_allowed false): CCL = 0, 0x35C bit 7
#   clear, and CVL lowered to the present pack voltage (DC-coupled MPPTs follow CVL only);
#   discharge not allowed: DCL = 0, bit 6 clear. CCL/DCL are always sent positive.
# * Protection faults -> 0x359 protection bits and 0x35A alarms; warnings -> warning bits. Fault
#   names are mapped to inverter categories by name (classify()), resolved once at init from
#   bms.protection.FAULT_NAMES (and WARNING_NAMES when it exists).
#   Victron profile: a low-voltage FAULT is sent as a 0x35A *warning*, not an alarm (an alarm
#   makes GX/SMA systems stop charging, the one thing that fixes it); 0x359 still carries it.
#
# Inverter presence: any 0x305 or 0x307 frame refreshes it; none for cfg.can_inverter_timeout_ms
# (default 60 s; use 600000 for a Victron GX, which may pause 0x305 for up to 10 min) = lost.
# When the inverter disappears the BMS keeps protecting and keeps sending (nothing is changed:
# limits and FETs stay what protection and control decide -- the BMS protects itself), logs
# EV_INVERTER (a = 0, b = seconds since the last frame), and logs EV_INVERTER (1, gap s) when
# it comes back. Frames nobody acknowledges are aborted by the MCP2515 driver.
from micropython import const

from bms.events import EV_INVERTER

PROFILES = ("pylon", "victron")
FW_VERSION = const(0x0100)  # reported in 0x35F (major.minor in two bytes)

# Fault categories (what an inverter can be told)
CAT_NONE = const(0)
CAT_HIGH_V = const(1)
CAT_LOW_V = const(2)
CAT_HIGH_T = const(3)
CAT_LOW_T = const(4)
CAT_CHG_HIGH_T = const(5)
CAT_CHG_LOW_T = const(6)
CAT_DSG_OC = const(7)
CAT_CHG_OC = const(8)
CAT_SHORT = const(9)
CAT_INTERNAL = const(10)
CAT_IMBALANCE = const(11)

# 0x359: category -> (byte 0/1 of the group, bit); groups: protection bytes 0-1, warning 2-3
_P359 = (
    (-1, 0),  # none
    (0, 1),  # high voltage
    (0, 2),  # low voltage
    (0, 3),  # high temperature
    (0, 4),  # low temperature
    (0, 3),  # high temperature while charging
    (0, 4),  # low temperature while charging
    (0, 7),  # discharge over-current
    (1, 0),  # charge over-current
    (0, 7),  # short circuit: discharge over-current
    (1, 3),  # system error
    (-1, 0),  # imbalance: no Pylon bit
)
# 0x35A: category -> item (2-bit pair index 0..12, byte = item // 4, shift = 2 * (item % 4))
_A35A = (-1, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12)
_ITEMS_35A = const(13)  # 0 general .. 12 imbalance; item 9 (contactor) is "not supported"

# Fallback fault names when bms.protection is not importable (the protection module's names
# are used when it exists; classify() maps any name by its tokens).
DEFAULT_FAULT_NAMES = (
    "cell_ov", "cell_uv", "pack_ov", "pack_uv", "chg_oc", "dsg_oc", "hw_ocd", "scd", "chg_ot",
    "chg_ut", "dsg_ot", "dsg_ut", "fet_ot", "imbalance", "temp_sensor", "cell_implausible",
    "sum_mismatch", "afe_lost", "afe_stale", "xready", "ovrd", "hw_ov", "hw_uv", "deep_uv",
)

_IDS_PYLON = (0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E)
_IDS_VICTRON = (0x351, 0x355, 0x356, 0x359, 0x35A, 0x35C, 0x35E, 0x35F, 0x370, 0x371, 0x373)
_NAME_PYLON = b"PYLON   "
_NAME_OWN = b"MPY-BMS "
_BMS_NAME = b"MicroPython BMS "
_CYCLE_MS = const(1000)
_RX_MAX = const(8)  # frames drained per poll
_TEMP_INVALID = const(-32768)


def classify(name):
    # Inverter category of a fault/warning name, from its '_'-separated tokens.
    t = name.lower().split("_")
    chg = "chg" in t or "charge" in t
    if "scd" in t or "short" in t:
        return CAT_SHORT
    if "ocd" in t:
        return CAT_DSG_OC
    if "oc" in t or "overcurrent" in t:
        return CAT_CHG_OC if chg else CAT_DSG_OC
    if "ov" in t or "overvoltage" in t:
        return CAT_HIGH_V
    if "uv" in t or "undervoltage" in t:
        return CAT_LOW_V
    hot = "ot" in t or "hot" in t or "overtemp" in t or ("temp" in t and ("max" in t or "high"
                                                                          in t))
    cold = "ut" in t or "cold" in t or "undertemp" in t or ("temp" in t and ("min" in t or "low"
                                                                             in t))
    if hot:
        return CAT_CHG_HIGH_T if chg else CAT_HIGH_T
    if cold:
        return CAT_CHG_LOW_T if chg else CAT_LOW_T
    if "imbalance" in t:
        return CAT_IMBALANCE
    return CAT_INTERNAL


def _names_from_protection():
    try:
        from bms import protection
    except ImportError:
        return None, None
    f = getattr(protection, "FAULT_NAMES", None)
    w = getattr(protection, "WARNING_NAMES", None) or getattr(protection, "WARN_NAMES", None)
    return f, w


def _put16(b, o, v):
    b[o] = v & 0xFF
    b[o + 1] = (v >> 8) & 0xFF


def _clamp(v, lo, hi):
    return lo if v < lo else hi if v > hi else v


def _div_round(v, d):
    # v / d rounded half away from zero, integers only.
    if v >= 0:
        return (v + d // 2) // d
    return -((-v + d // 2) // d)


class CanProtocol:
    def __init__(self, can, cfg, events, fault_names=None, warning_names=None):
        self.can = can
        self.cfg = cfg
        self.events = events
        if fault_names is None:
            fault_names, wn = _names_from_protection()
            if warning_names is None:
                warning_names = wn
        if fault_names is None:
            fault_names = DEFAULT_FAULT_NAMES
        if warning_names is None:
            warning_names = fault_names
        self.fault_names = fault_names
        self.warning_names = warning_names
        self._cat_f = bytearray(32)
        self._cat_w = bytearray(32)
        for i in range(min(32, len(fault_names))):
            self._cat_f[i] = classify(fault_names[i])
        for i in range(min(32, len(warning_names))):
            self._cat_w[i] = classify(warning_names[i])
        self._frames = [bytearray(8) for _ in range(len(_IDS_VICTRON))]
        self._ids = _IDS_PYLON
        self._n = 0  # frames in the current set
        self._idx = 0  # next frame of the set to queue
        self._next_ms = 0
        self._started = False
        self._rx = bytearray(8)
        self._last_rx_ms = 0
        self._seen = False
        self.present = 0  # 1 while the inverter is present (for the Modbus map)
        self.victron_gx = False  # 0x307 carried "VIC"
        self.inv_data = bytearray(8)  # last 0x305 payload (SMA sends V/I/T/SOC in it)
        # counters
        self.sets = 0  # frame sets started
        self.tx_frames = 0  # frames queued in the controller
        self.tx_dropped = 0  # frames of a set that could not be queued within its second
        self.rx_frames = 0
        self.rx_other = 0  # frames with ids we do not use
        self.spi_errors = 0

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

    _gap_s = 0

    # --- receive ----------------------------------------------------------------------------
    def _drain(self, now_ms):
        can = self.can
        buf = self._rx
        for _ in range(_RX_MAX):
            r = can.recv_into(buf)
            if r is None:
                return
            cid = r[0]
            dlc = r[1]
            self.rx_frames += 1
            if cid == 0x305 or cid == 0x307:
                self._gap_s = (now_ms - self._last_rx_ms) // 1000 if self._seen else 0
                self._last_rx_ms = now_ms
                self._seen = True
                if cid == 0x305:
                    for i in range(8):
                        self.inv_data[i] = buf[i] if i < dlc else 0
                elif dlc >= 7 and buf[4] == 0x56 and buf[5] == 0x49 and buf[6] == 0x43:
                    self.victron_gx = True
            else:
                self.rx_other += 1

    # --- poll ---------------------------------------------------------------------------------
    def poll(self, bms, now_ms):
        # Service the controller, drain RX, update presence, queue due frames. Never blocks;
        # an SPI error (OSError) is counted and retried next time.
        try:
            svc = getattr(self.can, "service", None)
            if svc is not None:
                svc(now_ms)
            self._drain(now_ms)
        except OSError:
            self.spi_errors += 1
        self._check_presence(now_ms)
        if not self._started or now_ms >= self._next_ms:
            if self._idx < self._n:
                self.tx_dropped += self._n - self._idx
            self.encode(bms)
            self._idx = 0
            self.sets += 1
            if not self._started or now_ms - self._next_ms >= _CYCLE_MS:
                self._next_ms = now_ms + _CYCLE_MS  # (re)anchor after a stall
            else:
                self._next_ms += _CYCLE_MS
            self._started = True
        try:
            ids = self._ids
            frames = self._frames
            while self._idx < self._n:
                i = self._idx
                if not self.can.send(ids[i], frames[i], 8):
                    break
                self._idx = i + 1
                self.tx_frames += 1
        except OSError:
            self.spi_errors += 1

    # --- encoding ---------------------------------------------------------------------------
    def frame(self, can_id):
        # The last encoded payload of can_id (8 bytes) or None. For tests and diagnostics.
        for i in range(self._n):
            if self._ids[i] == can_id:
                return self._frames[i]
        return None

    def encode(self, bms):
        # Encode the whole frame set of the configured profile from the state.
        victron = self.cfg.can_profile == "victron"
        if hasattr(self.can, "tx_timeout_ms"):
            self.can.tx_timeout_ms = self.cfg.can_tx_timeout_ms
        self._ids = _IDS_VICTRON if victron else _IDS_PYLON
        self._n = len(self._ids)
        for i in range(self._n):
            self._encode_one(self._ids[i], self._frames[i], bms, victron)

    def _encode_one(self, cid, b, bms, victron):
        for i in range(8):
            b[i] = 0
        snap = bms.snap
        prot = bms.prot
        lim = bms.limits
        if cid == 0x351:
            chg_ok, dsg_ok = self._allowed(prot, lim)
            cvl = int(getattr(lim, "cvl_mv", 0) or 0)
            pack = snap.pack_mv
            if not chg_ok and pack >= 100:
                cvl = min(cvl, pack) if cvl >= 100 else pack
            if cvl < 100:
                cvl = pack if pack >= 100 else self.cfg.pack_uv_mv
            ccl = int(getattr(lim, "ccl_ma", 0) or 0) if chg_ok else 0
            dcl = int(getattr(lim, "dcl_ma", 0) or 0) if dsg_ok else 0
            dvl = int(getattr(lim, "dvl_mv", 0) or 0)
            if dvl < 100:
                dvl = self.cfg.pack_uv_mv
            _put16(b, 0, _clamp(_div_round(cvl, 100), 1, 65535))
            _put16(b, 2, _clamp(_div_round(ccl, 100), 0, 32767))
            _put16(b, 4, _clamp(_div_round(dcl, 100), 0, 32767))
            _put16(b, 6, _clamp(_div_round(dvl, 100), 1, 65535))
        elif cid == 0x355:
            est = bms.est
            soc = _clamp(getattr(est, "soc_pct", 0) or 0, 0, 100)
            soh = _clamp(getattr(est, "soh_pct", 0) or 0, 0, 100)
            _put16(b, 0, int(soc + 0.5))
            _put16(b, 2, int(soh + 0.5))
            _put16(b, 4, int(soc * 100 + 0.5))
        elif cid == 0x356:
            _put16(b, 0, _clamp(_div_round(snap.pack_mv, 10), 0, 32767))
            _put16(b, 2, _clamp(_div_round(snap.current_ma, 100), -32767, 32767))
            t = snap.temp_max_dc
            _put16(b, 4, t if t != _TEMP_INVALID else -32768)  # 0x8000 = invalid (SMA-TI)
        elif cid == 0x359:
            faults = prot.faults | getattr(prot, "latched", 0)
            self._flags359(b, 0, faults, self._cat_f)
            self._flags359(b, 2, prot.warnings, self._cat_w)
            b[4] = self.cfg.can_modules
            b[5] = 0x50  # 'P'
            b[6] = 0x4E  # 'N'
        elif cid == 0x35A:
            self._alarms(b, prot)
        elif cid == 0x35C:
            chg_ok, dsg_ok = self._allowed(prot, lim)
            f = 0
            if chg_ok:
                f |= 0x80
            if dsg_ok:
                f |= 0x40
            fc = getattr(lim, "force_charge", 0)
            if fc:
                f |= 0x10 if fc == 2 else 0x20
            if getattr(lim, "full_charge_req", False):
                f |= 0x08
            b[0] = f
        elif cid == 0x35E:
            self._text(b, _NAME_OWN if victron else _NAME_PYLON, 0)
        elif cid == 0x35F:
            cap = getattr(bms.est, "capacity_mah", 0) or self.cfg.capacity_mah
            _put16(b, 2, FW_VERSION)
            _put16(b, 4, _clamp(int(cap) // 1000, 0, 65535))
        elif cid == 0x370:
            self._text(b, _BMS_NAME, 0)
        elif cid == 0x371:
            self._text(b, _BMS_NAME, 8)
        elif cid == 0x373:
            _put16(b, 0, _clamp(snap.cell_min_mv, 0, 65535))
            _put16(b, 2, _clamp(snap.cell_max_mv, 0, 65535))
            _put16(b, 4, _kelvin(snap.temp_min_dc))
            _put16(b, 6, _kelvin(snap.temp_max_dc))

    @staticmethod
    def _allowed(prot, lim):
        chg = bool(getattr(prot, "chg_allowed", True)) and bool(getattr(lim, "chg_enable", True))
        dsg = bool(getattr(prot, "dsg_allowed", True)) and bool(getattr(lim, "dsg_enable", True))
        return chg, dsg

    @staticmethod
    def _text(b, s, o):
        for i in range(8):
            b[i] = s[o + i] if o + i < len(s) else 0x20

    @staticmethod
    def _flags359(b, o, mask, cats):
        i = 0
        while mask and i < 32:
            if mask & 1:
                grp, bit = _P359[cats[i]]
                if grp >= 0:
                    b[o + grp] |= 1 << bit
            mask >>= 1
            i += 1

    def _alarms(self, b, prot):
        # every supported item starts "OK" (10), contactor (item 9) "not supported" (00)
        for k in range(_ITEMS_35A):
            if k != 9:
                b[k // 4] |= 0x2 << (2 * (k % 4))
                b[4 + k // 4] |= 0x2 << (2 * (k % 4))
        faults = prot.faults | getattr(prot, "latched", 0)
        warns = prot.warnings
        cf = self._cat_f
        cw = self._cat_w
        any_alarm = False
        any_warn = False
        for i in range(32):
            bit = 1 << i
            if faults & bit:
                c = cf[i]
                if c == CAT_LOW_V:
                    any_warn = True
                    self._raise(b, 4, _A35A[c])
                elif c != CAT_NONE:
                    any_alarm = True
                    self._raise(b, 0, _A35A[c])
            if warns & bit and cw[i] != CAT_NONE:
                any_warn = True
                self._raise(b, 4, _A35A[cw[i]])
        if any_alarm:
            self._raise(b, 0, 0)
        if any_warn:
            self._raise(b, 4, 0)

    @staticmethod
    def _raise(b, o, item):
        if item < 0:
            return
        i = o + item // 4
        s = 2 * (item % 4)
        b[i] = (b[i] & ~(3 << s) & 0xFF) | (1 << s)


def _kelvin(dc):
    if dc == _TEMP_INVALID:
        return 0
    return _clamp((dc + 2736) // 10, 0, 65535)
