# bms.protection: faults, tiers and the one BMS state machine -> FET commands.
#
# Called every 250 ms by the app after the AFE read (also after a failed read):
#
#     prot.update(snap, now_ms)
#     afe.ack_trips(prot.ack, now_ms)      # the AFE trips protection has handled
#     afe.set_fets(prot.chg_fet, prot.dsg_fet)
#
# The fault list is one table (bms.faults): name, direction, tier, category, the measured
# quantity and the config fields of its limit, delay, release and warning margin. update()
# is a few small evaluators over it (reading quality, AFE health, plausibility, the generic
# threshold rows, the AFE's own trips), one debounce primitive shared by faults and
# warnings, and the state machine. Chip facts stay in the driver: protection sees the
# chip-neutral trip flags of bms.afe (Snapshot.trips) and acknowledges them in `ack`.
# update() allocates nothing under MicroPython: small ints only, preallocated arrays.
#
# Tiers: warning (`warnings`, same bit numbers; derates limits only), protection (`faults`:
# the FET(s) of the fault's direction open), latched (`latched` and `faults`: both FETs open
# until reset_latched()): deep_uv at once, retry faults beyond cfg.oc_retry_max.
#
# States (judged at the end of every update, first match wins):
#   any       request_ship()                                            SHUTDOWN (terminal)
#   BOOT      no complete, plausible reading yet                          BOOT
#   BOOT      first complete reading: every fault judged with zero delay   (next rows)
#   not BOOT  latched != 0                                                LATCHED
#   not BOOT  a protection fault is active                                FAULT
#   not BOOT  no fault, chg_enable and dsg_enable both False              STANDBY
#   not BOOT  no fault                                                    NORMAL
# BOOT, STANDBY, LATCHED, SHUTDOWN: both FETs off. Every transition: EV_STATE (old, new).
#
# Time never stops for safety. A cycle in which a quantity is unknown (failed or refused read,
# missing flag, an implausible cell, an invalid thermistor) counts as out of limits for every
# fault that quantity guards: its set timer keeps running (it starts if it was not running).
# When the timer expires on an unknown value the fault sets, unless active faults already
# hold open every FET it opens (afe_lost, afe_config, cell_implausible, temp_sensor, ...: the
# log then names the cause, not every limit it hides). A fault never clears on an unknown
# value. Quality faults (T_STICKY) forgive bad readings only after release_delay_ms of good
# ones, so an intermittent fault still trips. Latching faults latch only on a known value.
# Hence the worst case from a true crossing to the FET opening is the delay plus one cycle,
# whatever the pattern of missing reads. FETs close (0 -> 1) only in a cycle whose reading is
# complete, fresh and plausible (every cell, pack, current, every thermistor, the sum check).
from array import array

from micropython import const

from bms import faults as ft
from bms.afe import TRIP_DEVICE, TRIP_OCD, TRIP_OV, TRIP_OVRD, TRIP_SCD, TRIP_UV
from bms.events import (
    EV_AFE_STAT,
    EV_FAULT_CLEAR,
    EV_FAULT_SET,
    EV_LATCH,
    EV_LATCH_RESET,
    EV_STATE,
    EV_WARN_CLEAR,
    EV_WARN_SET,
)
from bms.faults import (  # noqa: F401 (re-exported: the names other modules import from here)
    DIR_BOTH,
    DIR_CHG,
    DIR_DSG,
    DIR_NONE,
    F_AFE_CONFIG,
    F_AFE_LOST,
    F_AFE_STALE,
    F_CELL_IMPLAUSIBLE,
    F_CELL_OV,
    F_CELL_UV,
    F_CHG_OC,
    F_CHG_OT,
    F_CHG_UT,
    F_DEEP_UV,
    F_DSG_OC,
    F_DSG_OT,
    F_DSG_UT,
    F_FET_OT,
    F_HW_OCD,
    F_HW_OV,
    F_HW_UV,
    F_IMBALANCE,
    F_OVRD,
    F_PACK_OV,
    F_PACK_UV,
    F_SCD,
    F_SUM_MISMATCH,
    F_TEMP_SENSOR,
    F_XREADY,
    MASK_BD_CHG,
    MASK_BD_DSG,
    MASK_CHG,
    MASK_DSG,
    MASK_LATCHABLE,
    MASK_RETRY,
)
from bms.snapshot import (
    FLAG_CELLS_VALID,
    FLAG_CURRENT_VALID,
    FLAG_PACK_VALID,
    FLAG_TEMPS_VALID,
    TEMP_INVALID_DC,
)

STATE_BOOT = const(0)
STATE_STANDBY = const(1)
STATE_NORMAL = const(2)
STATE_FAULT = const(3)
STATE_LATCHED = const(4)
STATE_SHUTDOWN = const(5)
STATE_NAMES = ("boot", "standby", "normal", "fault", "latched", "shutdown")

FAULT_NAMES = ft.NAMES
FAULT_DIRS = ft.DIRS
fault_names = ft.names
UNKNOWN = const(0x3FFFFFFF)  # EV_FAULT_SET value of a fault set because its value was unknown

_N = ft.N_FAULTS
_FLAGS_ALL = FLAG_CELLS_VALID | FLAG_PACK_VALID | FLAG_CURRENT_VALID | FLAG_TEMPS_VALID
_DECAY_FACTOR = const(4)  # retry counter -1 per _DECAY_FACTOR * oc_retry_ms without a trip
_CELL_MIN_MV = const(500)  # cell readings outside 0.5..5.0 V are physically implausible
_CELL_MAX_MV = const(5000)
_TEMP_MIN_DC = const(-500)  # temperatures outside -50..+130 degC = open/shorted sensor
_TEMP_MAX_DC = const(1300)
_T_CAP = const(0x20000000)  # timers saturate here (stays a small int)
_DT_MAX = const(60000)  # a longer gap between updates counts as this long

# Kept for callers that imported them from here (the AFE's temperature sample time is a chip
# fact: the driver's TEMP_SAMPLE_MS is what the app passes in).
TEMP_SAMPLE_MS = const(2500)
SAMPLE_MS = const(250)  # cells, pack and current: one BQ769x0 conversion (the app passes it)
_T_BELOW = ft.T_BELOW
_T_RETRY = ft.T_RETRY
_T_LATCH = ft.T_LATCH
_T_WARN_ONLY = ft.T_WARN_ONLY
_T_STICKY = ft.T_STICKY
# Quantities that are always measured: unknown = out of limits. The FET sensor is optional
# (no sensor = nothing to judge), the spread only feeds a warning.
_Q_MUST = ((1 << ft.Q_CELL_MAX) | (1 << ft.Q_CELL_MIN) | (1 << ft.Q_PACK) | (1 << ft.Q_CHG_I)
           | (1 << ft.Q_DSG_I) | (1 << ft.Q_TEMP_MAX) | (1 << ft.Q_TEMP_MIN))
_QS = bytes(r[4] for r in ft.FAULTS)
_THRESHOLD_ROWS = bytes(i for i in range(_N) if ft.FAULTS[i][4] != ft.Q_NONE)


def _cap(t):
    return t if t < _T_CAP else _T_CAP


class Protection:
    def __init__(self, cfg, events, temp_sample_ms=TEMP_SAMPLE_MS, sample_ms=0):
        self.cfg = cfg
        self.events = events
        self.temp_sample_ms = temp_sample_ms
        self.sample_ms = sample_ms
        self.state = STATE_BOOT
        self.chg_fet = False
        self.dsg_fet = False
        self.chg_allowed = False
        self.dsg_allowed = False
        self.chg_enable = True  # user/app permission (False = keep that FET open)
        self.dsg_enable = True
        self.faults = 0
        self.warnings = 0
        self.latched = 0
        self.ack = 0  # AFE trips (bms.afe TRIP_*) handled in this cycle: the driver clears them
        self.good = False  # this cycle's reading was complete, fresh and plausible
        self.body_diode = 0  # 1 = charge FET closed for a discharge, 2 = discharge FET
        self.trips = bytearray(_N)  # trip counters of the retry faults
        n2 = 2 * _N  # timer slots: faults 0.._N-1, warnings _N..2*_N-1
        self._st = array("l", [0] * n2)  # set timer
        self._rt = array("l", [0] * n2)  # release timer (active) / good time (sticky, idle)
        self._on = bytearray(n2)  # set timer running (idle) / release timer running (active)
        self._kn = bytearray(n2)  # the running set timer has seen a known value in the trip zone
        self._gon = bytearray(n2)  # sticky: good readings inside a run are being timed
        self._qt = array("l", [0] * _N)  # quiet time since the last trip (retry decay)
        # Levels per row, refreshed from cfg whenever its generation changes.
        self._lim = array("l", [0] * _N)
        self._rel = array("l", [0] * _N)
        self._dly = array("l", [0] * _N)
        self._wlim = array("l", [0] * _N)
        self._wrel = array("l", [0] * _N)
        self._gen = -1
        self._reld = 0  # release_delay_ms
        # This cycle's quantities (bms.faults Q_*) and which are known.
        self._qv = array("l", [0] * ft.N_Q)
        self._qk = 0
        self._last_ms = 0
        self._started = False
        self._seq = -1  # snap.seq of the last read whose trips were judged
        self._ignore = 0  # trips to acknowledge (not judge) at the next read (after a reset)
        self._snap = None
        self._fet_attr = False  # the snapshot has a board FET sensor (fet_temp_dc)
        self._cmin = 0  # last plausible minimum cell (for reset_latched)
        self._cells_ok = False
        self._now = 0
        self._dt = 0
        self._boot = True
        # Per-cycle scratch (set by _measure / _health; created here so update() never grows
        # the instance dictionary).
        self._fresh = False
        self._flags = 0
        self._cread = 0
        self._cplaus = False
        self._cmin_raw = 0
        self._sum_diff = 0
        self._tplaus = False
        self._tmin_raw = 0
        self._new = False
        self._trips = 0

    # --- configuration ------------------------------------------------------------------
    def _refresh(self, c):
        """Cache each row's levels and delays (getattr by field name: allocation-free)."""
        n = c.cells
        ts = self.temp_sample_ms
        ss = self.sample_ms
        for i in range(_N):
            row = ft.FAULTS[i]
            f = row[2]
            lim = getattr(c, row[5]) if row[5] else 0
            d = getattr(c, row[6]) if row[6] else 0
            if f & ft.T_TEMP:
                d = d - ts if d > ts else 0
            elif row[4] != ft.Q_NONE:
                # a reading shows a crossing up to one AFE sample late (cells, pack and the
                # coulomb counter: 250 ms): the delay counts from the true crossing
                d = d - ss if d > ss else 0
            below = f & _T_BELOW
            rf = row[7]
            if f & _T_WARN_ONLY:
                rel = lim - (lim >> 2)
            elif rf is None:
                rel = lim
            elif f & ft.T_HYST:
                h = getattr(c, rf)
                rel = lim + h if below else lim - h
            else:
                rel = getattr(c, rf)
            self._lim[i] = lim
            self._rel[i] = rel
            self._dly[i] = d
            if row[8]:
                m = getattr(c, row[8])
                if f & ft.T_WPCT:
                    w = lim * (100 - m) // 100
                    h = (lim - w) // 2 + 1
                else:
                    k = n if f & ft.T_WPACK else 1
                    h = ((m >> 1) + 1) * k
                    w = lim + m * k if below else lim - m * k
                self._wlim[i] = w
                self._wrel[i] = w + h if below else w - h
        self._reld = c.release_delay_ms
        self._gen = c.generation

    # --- the one debounce primitive (faults and warnings) ------------------------------------
    def _db(self, k, active, cond, rel, unk, delay, sticky):
        """One step of timer slot k. cond: value in the trip zone; rel: known and in the
        release zone; unk: value unknown (counts as the trip zone); neither: the hysteresis
        band (timers hold; a timer that only unknown values started is reset by a known value
        below the limit). Sticky (quality) timers run on through good readings until those
        have held half the delay (at most release_delay_ms). Timers count from the first
        reading of their zone.
        Returns 1 when the set delay has elapsed, 2 when an active entry has been in its
        release zone for release_delay_ms, else 0.
        Contract the callers rely on (they skip the call then: _fault, _warn, _retry,
        _thresholds): inactive, timer not running (on[k] == 0), not cond and not unk ->
        returns 0 and changes nothing."""
        dt = self._dt
        on = self._on
        if active:
            if rel:
                t = _cap(self._rt[k] + dt) if on[k] else 0
                on[k] = 1
                if t >= self._reld:
                    self._rt[k] = 0
                    self._st[k] = 0
                    on[k] = 0
                    return 2
                self._rt[k] = t
            else:
                self._rt[k] = 0
                on[k] = 0
            return 0
        run = on[k]
        if cond or unk:
            self._gon[k] = 0
            if cond:
                self._kn[k] = 1
        elif run and sticky:
            # a good reading inside a run of bad ones: the run goes on (an intermittent fault
            # still trips after its delay) until good readings have held half the delay (at
            # most release_delay_ms): a single glitch is forgiven before it could trip
            if rel:
                g = _cap(self._rt[k] + dt) if self._gon[k] else 0
                self._gon[k] = 1
                f = delay >> 1
                if g >= (f if f < self._reld else self._reld):
                    on[k] = 0
                    self._st[k] = 0
                    self._gon[k] = 0
                    self._kn[k] = 0
                    return 0
                self._rt[k] = g
        else:
            if run and (rel or not self._kn[k]):
                # back past the release level, or below the limit after only unknown values
                on[k] = 0
                self._st[k] = 0
                self._kn[k] = 0
            return 0
        t = _cap(self._st[k] + dt) if run else 0
        on[k] = 1
        self._st[k] = t
        return 1 if t >= delay else 0

    def _covered(self, i):
        """Active faults (other than i) already hold open every FET that fault i opens."""
        f = self.faults & ~(1 << i)
        d = ft.DIRS[i]
        return (not d & DIR_CHG or f & MASK_CHG) and (not d & DIR_DSG or f & MASK_DSG)

    def _set(self, i, val):
        self.faults |= 1 << i
        self._rt[i] = 0
        self._on[i] = 0  # from now on: the release timer
        self._kn[i] = 0
        self._gon[i] = 0
        self.events.add(self._now, EV_FAULT_SET, i, val)

    def _clear(self, i, val):
        self.faults &= ~(1 << i)
        self._st[i] = 0
        self._rt[i] = 0
        self._on[i] = 0
        self._kn[i] = 0
        self._gon[i] = 0
        self.events.add(self._now, EV_FAULT_CLEAR, i, val)

    def _fault(self, i, cond, rel, unk, val, delay, sticky=False):
        """Debounce protection fault i. Returns True when it cleared in this call."""
        bit = 1 << i
        active = self.faults & bit
        if active:
            if self.latched & bit:
                return False
        elif not (cond or unk or self._on[i]):
            return False  # idle and nothing to time (what _db would do, without its call)
        r = self._db(i, active, cond, rel, unk, delay, sticky)
        if r == 2:
            self._clear(i, val)
            return True
        if r == 1:
            if cond or (sticky and not unk):
                self._set(i, val)
            elif not self._covered(i):
                self._set(i, UNKNOWN)
        return False

    def _warn(self, i, cond, rel, val, delay):
        k = _N + i
        bit = 1 << i
        active = self.warnings & bit
        if not (active or cond or self._on[k]):
            return  # idle and nothing to time
        r = self._db(k, active, cond, rel, False, delay, False)
        if r == 2:
            self.warnings &= ~bit
            self.events.add(self._now, EV_WARN_CLEAR, i, val)
        elif r == 1 and cond:
            self.warnings |= bit
            self._rt[k] = 0
            self._on[k] = 0
            self._kn[k] = 0
            self.events.add(self._now, EV_WARN_SET, i, val)

    def _retry(self, i, cond, rel, unk, hold, val, delay):
        """Debounce a retry fault (over-current, OCD, SCD): it clears oc_retry_ms after it set
        unless `hold`; the trip beyond oc_retry_max latches (a trip on a known value only).
        Returns True when it cleared."""
        bit = 1 << i
        c = self.cfg
        if self.faults & bit:
            if self.latched & bit:
                return False
            t = _cap(self._rt[i] + self._dt)
            self._rt[i] = t
            if t >= c.oc_retry_ms and not hold:
                self._clear(i, val)
                return True
            return False
        q = _cap(self._qt[i] + self._dt)
        if self.trips[i] and q >= c.oc_retry_ms * _DECAY_FACTOR:
            self.trips[i] -= 1
            q = 0
        self._qt[i] = q
        if not (cond or unk or self._on[i]):
            return False  # idle and nothing to time
        if self._db(i, False, cond, rel, unk, delay, False) != 1:
            return False
        if not cond:
            if not self._covered(i):
                self._set(i, UNKNOWN)
            return False
        self._set(i, val)
        self._qt[i] = 0
        n = self.trips[i]
        if n < 255:
            self.trips[i] = n + 1
        if n >= c.oc_retry_max:
            self.latched |= bit
            self.events.add(self._now, EV_LATCH, i, val)
        return False

    # --- outputs ---------------------------------------------------------------------------
    def _outputs_off(self):
        self.chg_fet = False
        self.dsg_fet = False
        self.chg_allowed = False
        self.dsg_allowed = False
        self.body_diode = 0

    def _go(self, new_state):
        old = self.state
        if new_state != old:
            self.state = new_state
            self.events.add(self._now, EV_STATE, old, new_state)

    # --- the cycle --------------------------------------------------------------------------
    def update(self, snap, now_ms):
        """Judge one snapshot (also after a failed read) and set the FET commands."""
        c = self.cfg
        if c.generation != self._gen:
            self._refresh(c)
        self._now = now_ms
        self.ack = 0
        dt = 0
        if self._started:
            dt = now_ms - self._last_ms
            if dt < 0:
                dt = 0
            elif dt > _DT_MAX:
                dt = _DT_MAX
        self._started = True
        self._last_ms = now_ms
        self._dt = dt
        if self.state == STATE_SHUTDOWN:
            self._outputs_off()
            return
        if self._snap is not snap:
            self._snap = snap
            self._fet_attr = hasattr(snap, "fet_temp_dc")
        good = self._measure(snap, now_ms)
        self.good = good
        boot = self.state == STATE_BOOT
        self._boot = boot
        self._bus(snap)
        if boot and not good:
            # Nothing else is judged before the first complete, plausible reading: FETs off.
            self._outputs_off()
            return
        self._health(snap, now_ms)
        self._plausibility(snap)
        self._thresholds()
        self._afe_trips(snap)
        if self.ack:
            self.events.add(now_ms, EV_AFE_STAT, snap.trips, self.ack)
        self._decide(good)

    def _measure(self, snap, now_ms):
        """This cycle's quantities and which of them are known. Returns True when the reading
        is complete, fresh and plausible (the only kind on which a FET may close)."""
        c = self.cfg
        qv = self._qv
        fresh = (snap.errors == 0 and snap.cfg_err == 0 and snap.seq > 0
                 and now_ms - snap.t_ms <= c.stale_ms)
        self._fresh = fresh
        flags = snap.flags if fresh else 0
        self._flags = flags
        known = 0
        # cells
        cplaus = False
        cmin = cmax = csum = 0
        if flags & FLAG_CELLS_VALID:
            cells = snap.cell_mv
            cmin = cmax = cells[0]
            cplaus = True
            for k in range(snap.n_cells):
                v = cells[k]
                csum += v
                if v < cmin:
                    cmin = v
                if v > cmax:
                    cmax = v
                if v < _CELL_MIN_MV or v > _CELL_MAX_MV:
                    cplaus = False
            if cplaus:
                known |= (1 << ft.Q_CELL_MAX) | (1 << ft.Q_CELL_MIN) | (1 << ft.Q_SPREAD)
                qv[ft.Q_CELL_MAX] = cmax
                qv[ft.Q_CELL_MIN] = cmin
                qv[ft.Q_SPREAD] = cmax - cmin
                self._cmin = cmin
        self._cread = flags & FLAG_CELLS_VALID
        self._cplaus = cplaus
        self._cells_ok = cplaus
        self._cmin_raw = cmin
        # pack and the sum check
        pack = snap.pack_mv
        if flags & FLAG_PACK_VALID:
            known |= 1 << ft.Q_PACK
            qv[ft.Q_PACK] = pack
        diff = csum - pack
        self._sum_diff = diff if diff >= 0 else -diff
        # current
        if flags & FLAG_CURRENT_VALID:
            known |= (1 << ft.Q_CHG_I) | (1 << ft.Q_DSG_I)
            qv[ft.Q_CHG_I] = snap.current_ma
            qv[ft.Q_DSG_I] = -snap.current_ma
        # thermistors: every one valid and plausible, else the window is unknown
        tplaus = False
        tmin = tmax = 0
        if flags & FLAG_TEMPS_VALID:
            temps = snap.temp_dc
            tplaus = True
            tmin = tmax = temps[0]
            for k in range(snap.n_temps):
                t = temps[k]
                if t == TEMP_INVALID_DC or t < _TEMP_MIN_DC or t > _TEMP_MAX_DC:
                    tplaus = False
                if t < tmin:
                    tmin = t
                if t > tmax:
                    tmax = t
            if tplaus:
                known |= (1 << ft.Q_TEMP_MAX) | (1 << ft.Q_TEMP_MIN)
                qv[ft.Q_TEMP_MAX] = tmax
                qv[ft.Q_TEMP_MIN] = tmin
        self._tplaus = tplaus
        self._tmin_raw = tmin
        # optional FET / die sensor
        if fresh:
            fet_t = TEMP_INVALID_DC
            t = snap.die_temp_dc
            if _TEMP_MIN_DC <= t <= _TEMP_MAX_DC:
                fet_t = t
            if self._fet_attr:
                t = snap.fet_temp_dc
                if _TEMP_MIN_DC <= t <= _TEMP_MAX_DC and (fet_t == TEMP_INVALID_DC or t > fet_t):
                    fet_t = t
            if fet_t != TEMP_INVALID_DC:
                known |= 1 << ft.Q_FET_T
                qv[ft.Q_FET_T] = fet_t
        self._qk = known
        return ((flags & _FLAGS_ALL) == _FLAGS_ALL and cplaus and tplaus
                and self._sum_diff <= c.sum_tol_mv)

    def _bus(self, snap):
        """The AFE lost (bus or CRC failure after the driver's retries), or not holding its
        configuration (reset, upset): both FETs open in this very cycle (no delay)."""
        err = snap.errors
        self._fault(F_AFE_LOST, err > 0, err == 0, False, err, 0)
        # Released only by a complete reading: after a re-initialisation the chip needs its
        # first conversions (thermistors: up to 2.5 s) before anything may close.
        cfg_err = snap.cfg_err
        complete = self._fresh and (self._flags & _FLAGS_ALL) == _FLAGS_ALL
        self._fault(F_AFE_CONFIG, cfg_err != 0, complete, False, cfg_err, 0)

    def _health(self, snap, now_ms):
        """Stale or incomplete data, and the AFE's device-fault and override trips."""
        c = self.cfg
        ok = snap.errors == 0
        cfg_err = snap.cfg_err
        age = now_ms - snap.t_ms
        complete = self._fresh and (self._flags & _FLAGS_ALL) == _FLAGS_ALL
        # A reading older than stale_ms: at once. Incomplete readings: for stale_ms in total
        # (sticky: an intermittent gap still trips). Not judged while the AFE is lost or being
        # re-initialised (those faults already hold both FETs open, for the same cause).
        if ok and cfg_err == 0 and not self.faults & ((1 << F_AFE_LOST) | (1 << F_AFE_CONFIG)):
            d = 0 if (age > c.stale_ms or self._boot) else c.stale_ms
            self._fault(F_AFE_STALE, not complete, complete, False, age, d, True)
        elif self.faults & (1 << F_AFE_STALE):
            self._rt[F_AFE_STALE] = 0  # no reading: its release starts again
            self._on[F_AFE_STALE] = 0
        # New read: the AFE's own trips (device fault, external override) open both FETs.
        new = ok and cfg_err == 0 and snap.seq != self._seq
        self._new = new
        trips = 0
        if new:
            self._seq = snap.seq
            trips = snap.trips
            ign = self._ignore
            if ign:
                # Left over from a latched trip that was just reset: acknowledge, do not judge.
                self.ack |= trips & ign
                trips &= ~ign
                self._ignore = 0
        self._trips = trips
        # Acknowledged once when the fault sets: the driver clears the trip after the chip's
        # hold-off, and again after every hold-off while the chip keeps reporting it.
        was = self.faults
        self._fault(F_XREADY, trips & TRIP_DEVICE, new and not trips & TRIP_DEVICE, False,
                    trips, 0)
        self._fault(F_OVRD, trips & TRIP_OVRD, new and not trips & TRIP_OVRD, False, trips, 0)
        raised = self.faults & ~was
        if raised & (1 << F_XREADY):
            self.ack |= TRIP_DEVICE
        if raised & (1 << F_OVRD):
            self.ack |= TRIP_OVRD

    def _plausibility(self, snap):
        """Quality faults (sticky): a thermistor open/shorted/implausible, a cell outside
        0.5..5 V (open or shorted tap), the cells not adding up to the pack voltage."""
        c = self.cfg
        boot = self._boot
        t_read = self._flags & FLAG_TEMPS_VALID
        d = 0 if boot else self._dly[F_TEMP_SENSOR]
        self._fault(F_TEMP_SENSOR, t_read and not self._tplaus, t_read and self._tplaus, False,
                    self._tmin_raw, d, True)
        c_read = self._cread
        d = 0 if boot else self._dly[F_CELL_IMPLAUSIBLE]
        self._fault(F_CELL_IMPLAUSIBLE, c_read and not self._cplaus, c_read and self._cplaus,
                    False, self._cmin_raw, d, True)
        sv = self._cplaus and self._flags & FLAG_PACK_VALID
        diff = self._sum_diff
        tol = c.sum_tol_mv
        d = 0 if boot else self._dly[F_SUM_MISMATCH]
        self._fault(F_SUM_MISMATCH, sv and diff > tol, sv and diff <= tol, False, diff, d, True)

    def _thresholds(self):
        """Every threshold row of the table: the fault and its warning."""
        qv = self._qv
        qk = self._qk
        boot = self._boot
        on = self._on
        rows = _THRESHOLD_ROWS
        for j in range(len(rows)):
            i = rows[j]
            f = ft.FLAGS[i]
            q = _QS[i]
            known = (qk >> q) & 1
            v = qv[q] if known else 0
            lim = self._lim[i]
            below = f & _T_BELOW
            if known:
                if below:
                    cond = v < lim
                    rel = v > self._rel[i]
                else:
                    cond = v > lim
                    rel = v < self._rel[i]
            else:
                cond = rel = False
            d = self._dly[i]
            bit = 1 << i
            if f & _T_WARN_ONLY:
                if cond or on[_N + i] or self.warnings & bit:
                    self._warn(i, cond, rel, v, d)
                continue
            unk = not known and (_Q_MUST >> q) & 1
            dd = 0 if boot else d
            if not (cond or unk or on[i] or self.faults & bit or f & _T_RETRY):
                pass  # idle and nothing to time: the calls below would change nothing
            elif f & _T_RETRY:
                # no retry while the current still flows, or while it is unknown
                self._retry(i, cond, rel, unk, cond or unk, v, dd)
            elif f & _T_LATCH:
                if not self.faults & bit:
                    # Latches on a known value only; an unknown one keeps its timer running.
                    if self._db(i, False, cond, rel, unk, dd, False) == 1 and cond:
                        self._set(i, v)
                        self.latched |= bit
                        self.events.add(self._now, EV_LATCH, i, v)
            else:
                self._fault(i, cond, rel, unk, v, dd)
            if known and ft.FAULTS[i][8]:
                w = self._wlim[i]
                wc = v < w if below else v > w
                if wc or on[_N + i] or self.warnings & bit:
                    self._warn(i, wc, v > self._wrel[i] if below else v < self._wrel[i], v, d)

    def _afe_trips(self, snap):
        """The AFE's own protection (outer layer): OV/UV clear with the software release of
        cell OV/UV; OCD/SCD retry like software over-current."""
        trips = self._trips
        new = self._new
        qk = self._qk
        qv = self._qv
        hi = qk >> ft.Q_CELL_MAX & 1
        v = qv[ft.Q_CELL_MAX] if hi else 0
        if self._fault(F_HW_OV, trips & TRIP_OV, hi and v < self._rel[F_HW_OV], False, v, 0):
            self.ack |= TRIP_OV
        lo = qk >> ft.Q_CELL_MIN & 1
        v = qv[ft.Q_CELL_MIN] if lo else 0
        if self._fault(F_HW_UV, trips & TRIP_UV, lo and v > self._rel[F_HW_UV], False, v, 0):
            self.ack |= TRIP_UV
        # Retried only in a cycle with a good read, so the acknowledgement reaches the chip.
        if self._retry(F_HW_OCD, trips & TRIP_OCD, new, False, not new, trips, 0):
            self.ack |= TRIP_OCD
        if self._retry(F_SCD, trips & TRIP_SCD, new, False, not new, trips, 0):
            self.ack |= TRIP_SCD

    def _decide(self, good):
        if self.latched:
            self._go(STATE_LATCHED)
        elif self.faults & (MASK_CHG | MASK_DSG):
            self._go(STATE_FAULT)
        elif not (self.chg_enable or self.dsg_enable):
            self._go(STATE_STANDBY)
        else:
            self._go(STATE_NORMAL)
        st = self.state
        if st != STATE_NORMAL and st != STATE_FAULT:
            self._outputs_off()
            return
        f = self.faults
        ca = self.chg_enable and not f & MASK_CHG
        da = self.dsg_enable and not f & MASK_DSG
        self.chg_allowed = ca
        self.dsg_allowed = da
        # Body diode: close the blocked FET while the current flows in the direction it
        # would pass anyway, but only for the faults where that is harmless.
        bd = 0
        if (self._qk >> ft.Q_CHG_I) & 1 and not (ca and da):
            cur = self._qv[ft.Q_CHG_I]
            on = self.cfg.body_diode_ma
            off = on >> 1
            if not ca and da and self.chg_enable and not f & MASK_CHG & ~MASK_BD_CHG:
                if cur < -on or (self.body_diode == 1 and cur < -off):
                    bd = 1
            elif not da and ca and self.dsg_enable and not f & MASK_DSG & ~MASK_BD_DSG:
                if cur > on or (self.body_diode == 2 and cur > off):
                    bd = 2
        chg = ca or bd == 1
        dsg = da or bd == 2
        if not good:
            # A FET closes only on a complete, fresh, plausible reading of this cycle.
            chg = chg and self.chg_fet
            dsg = dsg and self.dsg_fet
            if bd == 1 and not chg or bd == 2 and not dsg:
                bd = 0
        self.body_diode = bd
        self.chg_fet = chg
        self.dsg_fet = dsg

    # --- explicit requests ---------------------------------------------------------------------
    def reset_latched(self, now_ms):
        """Explicit reset of the latched faults (logged). Returns False, changing nothing, while
        the latched condition still stands (a cell below cell_deep_uv_mv or unknown), or in
        SHUTDOWN. The state is judged again at the next update()."""
        if self.state == STATE_SHUTDOWN:
            return False
        lat = self.latched
        if lat == 0:
            return True
        if lat & (1 << F_DEEP_UV) and (
            not self._cells_ok or self._cmin < self.cfg.cell_deep_uv_mv
        ):
            return False
        self._ignore |= ((TRIP_SCD if lat & (1 << F_SCD) else 0)
                         | (TRIP_OCD if lat & (1 << F_HW_OCD) else 0))
        self.latched = 0
        self.faults &= ~lat
        for i in range(_N):
            if lat & (1 << i):
                self._st[i] = 0
                self._rt[i] = 0
                self._on[i] = 0
                self._kn[i] = 0
                self._gon[i] = 0
                self.trips[i] = 0
        self.events.add(now_ms, EV_LATCH_RESET, lat, 0)
        return True

    def restore_latched(self, mask, now_ms):
        """Re-apply latched faults persisted before a reboot (deep_uv survives a reset)."""
        mask &= MASK_LATCHABLE
        for i in range(_N):
            bit = 1 << i
            if mask & bit and not self.latched & bit:
                self.latched |= bit
                self.faults |= bit
                self.events.add(now_ms, EV_LATCH, i, 0)

    def request_ship(self, now_ms):
        """Open both FETs for good (the app then puts the AFE into SHIP). Terminal state."""
        self._now = now_ms
        self._outputs_off()
        self._go(STATE_SHUTDOWN)
        return True

