# bms.protection: faults, tiers and the one BMS state machine -> FET commands.
#
# Called every 250 ms by the app after the AFE read (also after a failed read):
#
#     prot.update(snap, now_ms)
#     afe.clear_status(prot.clear_stat)   # only the SYS_STAT bits protection handled
#     if prot.afe_restore: rewrite CHG_ON/DSG_ON and CELLBAL
#     afe.set_fets(prot.chg_fet, prot.dsg_fet)
#
# The order matters: SYS_STAT bits are judged on the read of this cycle and cleared after it.
# update() allocates nothing under MicroPython: small ints only, preallocated arrays.
#
# Tiers (like foxBMS 2):
#   warning     reported in `warnings` (same bit numbers as FAULT_NAMES); derates limits only.
#   protection  reported in `faults`; the FET of the fault's direction (CHG, DSG or both) opens.
#   latched     reported in `latched` (and `faults`); both FETs stay open until
#               reset_latched(); SCD / hardware OCD / software over-current after more than
#               cfg.oc_retry_max retries, and a cell below cfg.cell_deep_uv_mv.
#
# States and transitions (evaluated at the end of every update, top row first):
#
#   from        condition                                                  to
#   any         request_ship()                                             SHUTDOWN (terminal)
#   BOOT        no complete measurement yet (errors == 0, fresh, flags     BOOT
#               CELLS|PACK|TEMPS|CURRENT all valid)
#   BOOT        complete measurement; faults judged with zero set-delay    (next rows)
#   not BOOT    latched != 0                                               LATCHED
#   not BOOT    faults != 0 (a direction is blocked)                       FAULT
#   not BOOT    no fault, chg_enable and dsg_enable both False             STANDBY
#   not BOOT    no fault, a direction enabled                              NORMAL
#   LATCHED     reset_latched() accepted: re-judged at the next update     (rows above)
#
# BOOT, STANDBY, LATCHED, SHUTDOWN: both FETs off. NORMAL: chg_allowed / dsg_allowed follow
# chg_enable / dsg_enable. FAULT: each direction is allowed unless an active fault's direction
# mask covers it. Every transition is logged as EV_STATE (a = old, b = new).
#
# Debounce: a fault sets when its condition has held for its delay (a value inside the
# hysteresis band holds the timer; a value past the release level resets it). It clears when
# its release condition (value back past the hysteresis) has held for cfg.release_delay_ms.
# A cycle without a valid reading of the quantity holds the timers. Retry faults (chg_oc,
# dsg_oc, hw_ocd, scd) clear cfg.oc_retry_ms after they set (software over-current: once the
# current is back under the limit; hardware: the SYS_STAT bit is cleared at that moment); the
# trip that finds the trip counter at cfg.oc_retry_max latches. The counter of each retry
# fault decays by one for every 4 * cfg.oc_retry_ms without a trip of that fault.
# SYS_STAT: OV/UV bits are cleared with the software release of cell OV/UV, XREADY after it
# has been set for 3 s (OVRD_ALERT 10 s), SCD/OCD at the retry time; never CC_READY.
# Fault list with directions, tiers and release conditions: README, "Protection".
#
# Body diode: when the charge FET is open only for cell_ov / pack_ov / hw_ov / chg_ot /
# chg_ut and the pack discharges (current < -cfg.body_diode_ma), the charge FET closes
# until the discharge current falls below cfg.body_diode_ma / 2 (it is never closed unless
# the pack is discharging); the discharge FET likewise for cell_uv / pack_uv / hw_uv /
# dsg_ot / dsg_ut while charging. Never for latched faults, AFE lost/stale, SCD/OCD or any
# other fault.
from array import array

from micropython import const

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
from bms.snapshot import (
    FLAG_CELLS_VALID,
    FLAG_CURRENT_VALID,
    FLAG_PACK_VALID,
    FLAG_TEMPS_VALID,
    STAT_OCD,
    STAT_OV,
    STAT_OVRD,
    STAT_SCD,
    STAT_UV,
    STAT_XREADY,
    TEMP_INVALID_DC,
)

STATE_BOOT = const(0)
STATE_STANDBY = const(1)
STATE_NORMAL = const(2)
STATE_FAULT = const(3)
STATE_LATCHED = const(4)
STATE_SHUTDOWN = const(5)
STATE_NAMES = ("boot", "standby", "normal", "fault", "latched", "shutdown")

# Fault bit indices (bit = 1 << index); the same numbering is used for warnings.
F_CELL_OV = const(0)
F_CELL_UV = const(1)
F_PACK_OV = const(2)
F_PACK_UV = const(3)
F_CHG_OC = const(4)
F_DSG_OC = const(5)
F_HW_OCD = const(6)
F_SCD = const(7)
F_CHG_OT = const(8)
F_CHG_UT = const(9)
F_DSG_OT = const(10)
F_DSG_UT = const(11)
F_FET_OT = const(12)
F_IMBALANCE = const(13)
F_TEMP_SENSOR = const(14)
F_CELL_IMPLAUSIBLE = const(15)
F_SUM_MISMATCH = const(16)
F_AFE_LOST = const(17)
F_AFE_STALE = const(18)
F_XREADY = const(19)
F_OVRD = const(20)
F_HW_OV = const(21)
F_HW_UV = const(22)
F_DEEP_UV = const(23)
_N = const(24)

FAULT_NAMES = (
    "cell_ov",
    "cell_uv",
    "pack_ov",
    "pack_uv",
    "chg_oc",
    "dsg_oc",
    "hw_ocd",
    "scd",
    "chg_ot",
    "chg_ut",
    "dsg_ot",
    "dsg_ut",
    "fet_ot",
    "imbalance",
    "temp_sensor",
    "cell_implausible",
    "sum_mismatch",
    "afe_lost",
    "afe_stale",
    "xready",
    "ovrd",
    "hw_ov",
    "hw_uv",
    "deep_uv",
)

# Direction of each fault: which FET it opens (0 = warning only).
DIR_NONE = const(0)
DIR_CHG = const(1)
DIR_DSG = const(2)
DIR_BOTH = const(3)
FAULT_DIRS = (
    DIR_CHG,  # cell_ov
    DIR_DSG,  # cell_uv
    DIR_CHG,  # pack_ov
    DIR_DSG,  # pack_uv
    DIR_CHG,  # chg_oc
    DIR_DSG,  # dsg_oc
    DIR_DSG,  # hw_ocd (the AFE opens DSG)
    DIR_BOTH,  # scd
    DIR_CHG,  # chg_ot
    DIR_CHG,  # chg_ut
    DIR_DSG,  # dsg_ot
    DIR_DSG,  # dsg_ut
    DIR_BOTH,  # fet_ot
    DIR_NONE,  # imbalance (warning only)
    DIR_BOTH,  # temp_sensor
    DIR_BOTH,  # cell_implausible
    DIR_BOTH,  # sum_mismatch
    DIR_BOTH,  # afe_lost
    DIR_BOTH,  # afe_stale
    DIR_BOTH,  # xready
    DIR_BOTH,  # ovrd
    DIR_CHG,  # hw_ov
    DIR_DSG,  # hw_uv
    DIR_BOTH,  # deep_uv (latched)
)

# Masks (bit = 1 << F_*), spelled out so they are compile-time constants.
MASK_CHG = const(0x00BFD395)  # faults that open the charge FET
MASK_DSG = const(0x00DFDCEA)  # faults that open the discharge FET
MASK_RETRY = const(0x000000F0)  # chg_oc, dsg_oc, hw_ocd, scd: retry, then latch
MASK_LATCHABLE = const(0x008000F0)  # retry faults and deep_uv
_BD_CHG = const(0x00200305)  # cell_ov, pack_ov, chg_ot, chg_ut, hw_ov: body diode allowed
_BD_DSG = const(0x00400C0A)  # cell_uv, pack_uv, dsg_ot, dsg_ut, hw_uv
_B_SCD = const(0x80)
_B_HW_OCD = const(0x40)
_B_DEEP_UV = const(0x00800000)


_FLAGS_ALL = const(0x0F)  # FLAG_CELLS_VALID | FLAG_PACK_VALID | FLAG_CURRENT_VALID | TEMPS
_XREADY_HOLD_MS = const(3000)  # XREADY is cleared only after it has been set this long
_OVRD_HOLD_MS = const(10000)  # OVRD_ALERT likewise
_DECAY_FACTOR = const(4)  # retry counter -1 per _DECAY_FACTOR * oc_retry_ms without a trip
_CELL_MIN_MV = const(500)  # cell readings outside 0.5..5.0 V are physically implausible
_CELL_MAX_MV = const(5000)
_TEMP_MIN_DC = const(-500)  # temperatures outside -50..+130 degC = open/shorted sensor
_TEMP_MAX_DC = const(1300)
_T_CAP = const(0x20000000)  # timers saturate here (stays a small int)
_DT_MAX = const(60000)  # a longer gap between updates counts as this long


# The AFE converts temperatures every 2 s (+3.5 % timing tolerance) at 0.1 degC resolution:
# that much of a temperature delay is spent before a reading can show the crossing.
TEMP_SAMPLE_MS = const(2500)


def _temp_debounce(delay_ms):
    d = delay_ms - TEMP_SAMPLE_MS
    return d if d > 0 else 0


def fault_names(mask):
    """'a|b|c' for the set bits of mask ('' for 0). Allocates: for logs and the REPL."""
    out = []
    for i in range(len(FAULT_NAMES)):
        if mask & (1 << i):
            out.append(FAULT_NAMES[i])
    return "|".join(out)


def _mask(direction):
    m = 0
    for i in range(len(FAULT_DIRS)):
        if FAULT_DIRS[i] & direction:
            m |= 1 << i
    return m


class Protection:
    def __init__(self, cfg, events):
        self.cfg = cfg
        self.events = events
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
        self.clear_stat = 0
        self.afe_restore = False
        self.body_diode = 0  # 1 = charge FET closed for a discharge, 2 = discharge FET
        self.trips = bytearray(_N)  # trip counters of the retry faults
        # Per-fault timers (ms, saturating) and last values.
        self._st = array("l", [0] * _N)  # set debounce
        self._rt = array("l", [0] * _N)  # release debounce / time since a retry trip
        self._qt = array("l", [0] * _N)  # quiet time since the last trip (retry decay)
        self._at = array("l", [0] * _N)  # time since the SYS_STAT bit was last cleared
        self._wst = array("l", [0] * _N)  # warning set debounce
        self._wrt = array("l", [0] * _N)  # warning release debounce
        self._pc = 0  # condition held at the previous update (bit per fault)
        self._pr = 0  # release condition held at the previous update
        self._wpc = 0
        self._wpr = 0
        self._last_ms = 0
        self._started = False
        self._seq = -1  # snap.seq of the last read whose SYS_STAT was judged
        self._inc_ms = 0  # how long the measurement has been incomplete
        self._ignore = 0  # SYS_STAT bits to clear (not judge) at the next read (after reset)
        self._snap = None
        self._fet_attr = False  # the snapshot has a board FET sensor (fet_temp_dc)
        self._cmin = 0  # last plausible minimum cell (for reset_latched)
        self._cells_ok = False
        # Sanity of the hand-written masks (import-time cost only).
        if (_mask(DIR_CHG) != MASK_CHG or _mask(DIR_DSG) != MASK_DSG
                or _FLAGS_ALL != FLAG_CELLS_VALID | FLAG_PACK_VALID | FLAG_CURRENT_VALID
                | FLAG_TEMPS_VALID):
            raise ValueError("protection masks")

    # --- debounce helpers (allocation-free; dt and now are in self._dt / self._now) --------
    def _set(self, i, val):
        bit = 1 << i
        self.faults |= bit
        self._rt[i] = 0
        self._at[i] = 0
        self._pr &= ~bit
        self.events.add(self._now, EV_FAULT_SET, i, val)

    def _clear(self, i, val):
        bit = 1 << i
        self.faults &= ~bit
        self._st[i] = 0
        self._rt[i] = 0
        self._pc &= ~bit
        self._pr &= ~bit
        self.events.add(self._now, EV_FAULT_CLEAR, i, val)

    def _fault(self, i, cond, rel, val, delay):
        """Debounce fault i. cond: trip zone, rel: release zone (neither: hysteresis band,
        timers hold). Returns 1 when the fault cleared in this call."""
        bit = 1 << i
        if self.faults & bit:
            if self.latched & bit:
                return 0
            if not rel:
                self._pr &= ~bit
                self._rt[i] = 0
                return 0
            t = 0
            if self._pr & bit:
                t = self._rt[i] + self._dt
                if t > _T_CAP:
                    t = _T_CAP
            self._pr |= bit
            if t >= self.cfg.release_delay_ms:
                self._clear(i, val)
                return 1
            self._rt[i] = t
            return 0
        if cond:
            t = 0
            if self._pc & bit:
                t = self._st[i] + self._dt
                if t > _T_CAP:
                    t = _T_CAP
            self._pc |= bit
            self._st[i] = t
            if t >= delay:
                self._set(i, val)
        elif rel:
            self._pc &= ~bit
            self._st[i] = 0
        return 0

    def _retry(self, i, cond, rel, hold, val, delay):
        """Debounce a retry fault (over-current, OCD, SCD): it clears oc_retry_ms after it
        set unless `hold`; the trip beyond oc_retry_max latches. Neither cond nor rel (no
        valid reading): the set timer holds. Returns 1 when it cleared."""
        bit = 1 << i
        dt = self._dt
        if self.faults & bit:
            if self.latched & bit:
                return 0
            t = self._rt[i] + dt
            if t > _T_CAP:
                t = _T_CAP
            self._rt[i] = t
            if t >= self.cfg.oc_retry_ms and not hold:
                self._clear(i, val)
                return 1
            return 0
        q = self._qt[i] + dt
        if q > _T_CAP:
            q = _T_CAP
        if self.trips[i] and q >= self.cfg.oc_retry_ms * _DECAY_FACTOR:
            self.trips[i] -= 1
            q = 0
        self._qt[i] = q
        if not cond:
            if rel:
                self._pc &= ~bit
                self._st[i] = 0
            return 0
        t = 0
        if self._pc & bit:
            t = self._st[i] + dt
            if t > _T_CAP:
                t = _T_CAP
        self._pc |= bit
        self._st[i] = t
        if t >= delay:
            self._set(i, val)
            self._qt[i] = 0
            n = self.trips[i]
            if n < 255:
                self.trips[i] = n + 1
            if n >= self.cfg.oc_retry_max:
                self.latched |= bit
                self.events.add(self._now, EV_LATCH, i, val)
        return 0

    def _warn(self, i, cond, rel, val, delay):
        bit = 1 << i
        if self.warnings & bit:
            if not rel:
                self._wpr &= ~bit
                self._wrt[i] = 0
                return
            t = 0
            if self._wpr & bit:
                t = self._wrt[i] + self._dt
                if t > _T_CAP:
                    t = _T_CAP
            self._wpr |= bit
            if t >= self.cfg.release_delay_ms:
                self.warnings &= ~bit
                self._wst[i] = 0
                self._wrt[i] = 0
                self._wpc &= ~bit
                self._wpr &= ~bit
                self.events.add(self._now, EV_WARN_CLEAR, i, val)
            else:
                self._wrt[i] = t
            return
        if cond:
            t = 0
            if self._wpc & bit:
                t = self._wst[i] + self._dt
                if t > _T_CAP:
                    t = _T_CAP
            self._wpc |= bit
            self._wst[i] = t
            if t >= delay:
                self.warnings |= bit
                self._wrt[i] = 0
                self._wpr &= ~bit
                self.events.add(self._now, EV_WARN_SET, i, val)
        elif rel:
            self._wpc &= ~bit
            self._wst[i] = 0

    def _hold_clear(self, i, hold, stat, statbit):
        """Clear a SYS_STAT bit (XREADY, OVRD) once its fault has been set for `hold` ms, and
        again every `hold` ms while the AFE keeps reporting it."""
        if not self.faults & (1 << i):
            return
        t = self._at[i] + self._dt
        if t > _T_CAP:
            t = _T_CAP
        if stat & statbit and t >= hold:
            self.clear_stat |= statbit
            t = 0
        self._at[i] = t

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
        self._now = now_ms
        self.clear_stat = 0
        self.afe_restore = False
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
        boot = self.state == STATE_BOOT

        # --- measurement quality ---------------------------------------------------------
        errors = snap.errors
        flags = snap.flags
        age = now_ms - snap.t_ms
        fresh = errors == 0 and snap.seq > 0 and age <= c.stale_ms
        complete = fresh and (flags & _FLAGS_ALL) == _FLAGS_ALL
        if errors == 0 and not complete:
            t = self._inc_ms + dt
            self._inc_ms = t if t < _T_CAP else _T_CAP
        else:
            self._inc_ms = 0
        new = errors == 0 and snap.seq != self._seq
        stat = 0
        if new:
            self._seq = snap.seq
            stat = snap.sys_stat & 0x3F
            ign = self._ignore
            if ign:
                # Bits left over from a latched trip that was just reset: clear, do not judge.
                self.clear_stat |= stat & ign
                stat &= ~ign
                self._ignore = 0

        cells_ok = fresh and (flags & FLAG_CELLS_VALID) != 0
        cmin = cmax = csum = 0
        cplaus = False
        if cells_ok:
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
        cv = cells_ok and cplaus
        self._cells_ok = cv
        if cv:
            self._cmin = cmin
        pack_ok = fresh and (flags & FLAG_PACK_VALID) != 0
        pack = snap.pack_mv
        cur_ok = fresh and (flags & FLAG_CURRENT_VALID) != 0
        cur = snap.current_ma

        temps_ok = fresh and (flags & FLAG_TEMPS_VALID) != 0
        tplaus = True
        tmin = tmax = 0
        nt = 0
        if temps_ok:
            temps = snap.temp_dc
            for k in range(snap.n_temps):
                t = temps[k]
                if t == TEMP_INVALID_DC:
                    tplaus = False
                    continue
                if t < _TEMP_MIN_DC or t > _TEMP_MAX_DC:
                    tplaus = False  # and still judged: too cold/hot trips OT/UT as well
                if nt == 0 or t < tmin:
                    tmin = t
                if nt == 0 or t > tmax:
                    tmax = t
                nt += 1
        tv = temps_ok and nt > 0
        fet_t = TEMP_INVALID_DC
        if fresh:
            t = snap.die_temp_dc
            if _TEMP_MIN_DC <= t <= _TEMP_MAX_DC:
                fet_t = t
            if self._fet_attr:
                t = snap.fet_temp_dc
                if _TEMP_MIN_DC <= t <= _TEMP_MAX_DC and (fet_t == TEMP_INVALID_DC or t > fet_t):
                    fet_t = t
        fv = fet_t != TEMP_INVALID_DC

        # --- AFE health: no debounce, both FETs open in this very cycle ------------------
        self._fault(F_AFE_LOST, errors > 0, errors == 0, errors, 0)
        stale = age > c.stale_ms or self._inc_ms > c.stale_ms
        self._fault(F_AFE_STALE, stale and errors == 0, not stale, age, 0)
        # XREADY / OVRD_ALERT: the AFE itself opened both FETs. The bit is cleared after a
        # hold time; the fault releases once reads show it gone for release_delay_ms.
        self._hold_clear(F_XREADY, _XREADY_HOLD_MS, stat, STAT_XREADY)
        if self._fault(F_XREADY, stat & STAT_XREADY, new and not stat & STAT_XREADY, stat, 0):
            self.afe_restore = True
        self._hold_clear(F_OVRD, _OVRD_HOLD_MS, stat, STAT_OVRD)
        if self._fault(F_OVRD, stat & STAT_OVRD, new and not stat & STAT_OVRD, stat, 0):
            self.afe_restore = True

        # --- plausibility ------------------------------------------------------------------
        pd = 0 if boot else c.plaus_delay_ms
        td = 0 if boot else _temp_debounce(c.temp_delay_ms)
        self._fault(F_TEMP_SENSOR, temps_ok and not tplaus, temps_ok and tplaus, tmin, td)
        self._fault(F_CELL_IMPLAUSIBLE, cells_ok and not cplaus, cv, cmin, pd)
        diff = csum - pack
        if diff < 0:
            diff = -diff
        sv = cv and pack_ok
        tol = c.sum_tol_mv
        self._fault(F_SUM_MISMATCH, sv and diff > tol, sv and diff <= tol, diff, pd)

        # --- cell and pack voltage -----------------------------------------------------------
        # Judged on every cell read, plausible or not: a reading beyond a limit trips it.
        ok = cells_ok
        d = 0 if boot else c.cell_ov_delay_ms
        self._fault(F_CELL_OV, ok and cmax > c.cell_ov_mv, ok and cmax < c.cell_ov_release_mv,
                    cmax, d)
        d = 0 if boot else c.cell_uv_delay_ms
        self._fault(F_CELL_UV, ok and cmin < c.cell_uv_mv, ok and cmin > c.cell_uv_release_mv,
                    cmin, d)
        d = 0 if boot else c.cell_deep_uv_delay_ms
        self._fault(F_DEEP_UV, cv and cmin < c.cell_deep_uv_mv, False, cmin, d)
        if self.faults & _B_DEEP_UV and not self.latched & _B_DEEP_UV:
            self.latched |= _B_DEEP_UV
            self.events.add(now_ms, EV_LATCH, F_DEEP_UV, cmin)
        d = 0 if boot else c.pack_v_delay_ms
        hy = c.pack_v_release_mv
        lim = c.pack_ov_mv
        self._fault(F_PACK_OV, pack_ok and pack > lim, pack_ok and pack < lim - hy, pack, d)
        lim = c.pack_uv_mv
        self._fault(F_PACK_UV, pack_ok and pack < lim, pack_ok and pack > lim + hy, pack, d)
        # Hardware OV/UV trips: set on the bit, cleared (bit and fault) on the software release.
        if self._fault(F_HW_OV, stat & STAT_OV, ok and cmax < c.cell_ov_release_mv, cmax, 0):
            self.clear_stat |= STAT_OV
        if self._fault(F_HW_UV, stat & STAT_UV, ok and cmin > c.cell_uv_release_mv, cmin, 0):
            self.clear_stat |= STAT_UV

        # --- current: software levels, hardware OCD/SCD; retry then latch -------------------
        d = 0 if boot else c.chg_oc_delay_ms
        x = cur_ok and cur > c.chg_oc_ma
        self._retry(F_CHG_OC, x, cur_ok, x, cur, d)  # no retry while the current still flows
        d = 0 if boot else c.dsg_oc_delay_ms
        x = cur_ok and -cur > c.dsg_oc_ma
        self._retry(F_DSG_OC, x, cur_ok, x, -cur, d)
        # Hardware trips: the bit stays set until cleared here, at the retry time.
        if self._retry(F_HW_OCD, stat & STAT_OCD, new, False, stat, 0):
            self.clear_stat |= STAT_OCD
        if self._retry(F_SCD, stat & STAT_SCD, new, False, stat, 0):
            self.clear_stat |= STAT_SCD

        # --- temperatures --------------------------------------------------------------------
        # temp_delay_ms counts from the TRUE crossing: it includes the AFE's 2 s temperature
        # conversion period (and 0.1 degC resolution), so the debounce after the first reading
        # beyond the limit is what is left of it.
        d = 0 if boot else _temp_debounce(c.temp_delay_ms)
        hy = c.temp_release_dc
        lim = c.chg_temp_max_dc
        self._fault(F_CHG_OT, tv and tmax > lim, tv and tmax < lim - hy, tmax, d)
        lim = c.chg_temp_min_dc
        self._fault(F_CHG_UT, tv and tmin < lim, tv and tmin > lim + hy, tmin, d)
        lim = c.dsg_temp_max_dc
        self._fault(F_DSG_OT, tv and tmax > lim, tv and tmax < lim - hy, tmax, d)
        lim = c.dsg_temp_min_dc
        self._fault(F_DSG_UT, tv and tmin < lim, tv and tmin > lim + hy, tmin, d)
        lim = c.fet_temp_max_dc
        self._fault(F_FET_OT, fv and fet_t > lim, fv and fet_t < lim - hy, fet_t, d)

        # --- warnings (derating only) --------------------------------------------------------
        self._warnings(c, cv, cmin, cmax, pack_ok, pack, cur_ok, cur, tv, tmin, tmax, fv, fet_t)

        if self.clear_stat & (STAT_OCD | STAT_SCD | STAT_OV | STAT_UV | STAT_OVRD | STAT_XREADY):
            self.afe_restore = True  # the AFE opened FETs for these: rewrite them
        if self.clear_stat:
            self.events.add(now_ms, EV_AFE_STAT, snap.sys_stat, self.clear_stat)

        # --- the state machine ---------------------------------------------------------------
        if boot and not complete:
            self._outputs_off()
            return
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
        on = c.body_diode_ma
        off = on >> 1
        if cur_ok and not (ca and da):
            if not ca and da and self.chg_enable and not f & MASK_CHG & ~_BD_CHG:
                if cur < -on or (self.body_diode == 1 and cur < -off):
                    bd = 1
            elif not da and ca and self.dsg_enable and not f & MASK_DSG & ~_BD_DSG:
                if cur > on or (self.body_diode == 2 and cur > off):
                    bd = 2
        self.body_diode = bd
        self.chg_fet = ca or bd == 1
        self.dsg_fet = da or bd == 2

    def _warnings(self, c, cv, cmin, cmax, pack_ok, pack, cur_ok, cur, tv, tmin, tmax, fv, fet_t):
        m = c.warn_margin_mv
        h = (m >> 1) + 1  # warning hysteresis: half the margin
        lim = c.cell_ov_mv - m
        self._warn(F_CELL_OV, cv and cmax > lim, cv and cmax < lim - h, cmax, c.cell_ov_delay_ms)
        lim = c.cell_uv_mv + m
        self._warn(F_CELL_UV, cv and cmin < lim, cv and cmin > lim + h, cmin, c.cell_uv_delay_ms)
        n = c.cells
        lim = c.pack_ov_mv - m * n
        d = c.pack_v_delay_ms
        self._warn(F_PACK_OV, pack_ok and pack > lim, pack_ok and pack < lim - h * n, pack, d)
        lim = c.pack_uv_mv + m * n
        self._warn(F_PACK_UV, pack_ok and pack < lim, pack_ok and pack > lim + h * n, pack, d)
        lim = c.imbalance_warn_mv
        sp = cmax - cmin
        d = c.release_delay_ms
        self._warn(F_IMBALANCE, cv and sp > lim, cv and sp < lim - (lim >> 2), sp, d)
        p = 100 - c.warn_margin_pct
        lim = c.chg_oc_ma * p // 100
        h = (c.chg_oc_ma - lim) // 2 + 1
        self._warn(F_CHG_OC, cur_ok and cur > lim, cur_ok and cur < lim - h, cur,
                   c.chg_oc_delay_ms)
        lim = c.dsg_oc_ma * p // 100
        h = (c.dsg_oc_ma - lim) // 2 + 1
        self._warn(F_DSG_OC, cur_ok and -cur > lim, cur_ok and -cur < lim - h, -cur,
                   c.dsg_oc_delay_ms)
        m = c.warn_margin_dc
        h = (m >> 1) + 1
        d = _temp_debounce(c.temp_delay_ms)
        lim = c.chg_temp_max_dc - m
        self._warn(F_CHG_OT, tv and tmax > lim, tv and tmax < lim - h, tmax, d)
        lim = c.chg_temp_min_dc + m
        self._warn(F_CHG_UT, tv and tmin < lim, tv and tmin > lim + h, tmin, d)
        lim = c.dsg_temp_max_dc - m
        self._warn(F_DSG_OT, tv and tmax > lim, tv and tmax < lim - h, tmax, d)
        lim = c.dsg_temp_min_dc + m
        self._warn(F_DSG_UT, tv and tmin < lim, tv and tmin > lim + h, tmin, d)
        lim = c.fet_temp_max_dc - m
        self._warn(F_FET_OT, fv and fet_t > lim, fv and fet_t < lim - h, fet_t, d)

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
        if lat & _B_DEEP_UV and (not self._cells_ok or self._cmin < self.cfg.cell_deep_uv_mv):
            return False
        self._ignore |= (STAT_SCD if lat & _B_SCD else 0) | (STAT_OCD if lat & _B_HW_OCD else 0)
        self.latched = 0
        self.faults &= ~lat
        self._pc &= ~lat
        self._pr &= ~lat
        for i in range(_N):
            if lat & (1 << i):
                self._st[i] = 0
                self._rt[i] = 0
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
