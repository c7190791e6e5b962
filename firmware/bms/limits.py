# bms.limits: charge/discharge limits sent to the inverter (CVL, CCL, DCL, DVL), the charge
# mode (bulk, absorption, float) and the request flags. Runs in a slow task (about every
# second).
#
# Limits(cfg, thermal=None).update(snap, prot, est, now_ms) reads the snapshot, the
# protection result (duck-typed: prot.chg_allowed, prot.dsg_allowed, prot.faults,
# prot.warnings, prot.latched) and the estimator (est.soc_pct, est.soc_err_pct; est may be
# None = SOC unknown: the SOC rules are skipped). All outputs are positive ints.
#
# CCL and DCL are the MINIMUM of independent curves (README, "Control", has them with their
# defaults). CVL is min(nominal, max-cell controller) and never 0. Cuts act at once; rises
# are limited to a ramp (ccl/dcl_ramp_ma_s, cells * cvl_ramp_mv_s) and wait a hold time after
# any cut (lim_hold_ms, cvl_hold_ms), so limits never oscillate faster than the hold time. A
# current limit at 0 restarts only once its target reaches 1.5 % of the configured maximum.
#
# Charging blocked (CCL 0, for whatever reason): CVL is HELD, never tracking the pack voltage
# (issue 12: a CVL that follows every sag and recovery made inverters toggle). It is set to
# the pack voltage rounded UP to 0.1 V when charging stops, and only ever raised while blocked:
# to the pack voltage (rounded up) when the pack rests higher (current at most tail_ma), so
# it is never left below a resting pack (an SMA SI or a Deye discharges towards a CVL below
# the voltage it measures). It never exceeds cells x chg_cell_mv and never falls below
# cells x cell_uv_release_mv. A charger that ignores CCL 0 cannot drag it up (no rise while
# current flows in).
#
# Flags: force_charge (SOC at force_charge_soc_pct, cleared force_charge_soc_pct +
# soc_hyst_pct higher; only while CCL > 0), full_charge_req (the scheduled full charge is due:
# full_charge_days; NOT set for an uncertain SOC, which only lifts the SOC cap). The heater
# never raises CCL: below the charge minimum CCL is 0 whether the heater runs or not; the
# heater is powered from the pack (README "Heater and fan").
from micropython import const

from bms.snapshot import FLAG_CELLS_VALID, TEMP_INVALID_DC

MODE_BULK = const(0)
MODE_ABSORPTION = const(1)
MODE_FLOAT = const(2)
MODE_NAMES = ("bulk", "absorption", "float")

_DT_MAX_MS = const(10000)  # a ramp step never counts more than this much elapsed time
_SPREAD_HYST_MV = const(5)  # the absorption timer restarts above absorb_spread_mv + this
_MIN_ON_PERMILLE = const(15)  # a current limit leaves 0 only for a target >= 1.5 % of max


def lin(x, x0, y0, x1, y1):
    """Piecewise-linear: y0 at or before x0, y1 at or after x1, a straight line between."""
    if x1 == x0:
        return y1 if x >= x1 else y0
    if x0 < x1:
        if x <= x0:
            return y0
        if x >= x1:
            return y1
    else:
        if x >= x0:
            return y0
        if x <= x1:
            return y1
    return y0 + (y1 - y0) * (x - x0) // (x1 - x0)


class Ramp:
    """A limit that falls at once and rises at most rate_per_s, after hold_ms since a cut."""

    def __init__(self):
        self.value = None  # None until the first target
        self.hold_until = 0
        self._frac = 0  # rise earned but not yet applied, in unit*ms (< 1000)
        self._t = 0

    def step(self, target, now_ms, rate_per_s, hold_ms):
        v = self.value
        t0 = self._t
        self._t = now_ms
        if v is None or target < v:
            if v is not None:  # a cut: at once, then hold
                self.hold_until = now_ms + hold_ms
            v = target
            self._frac = 0
        elif target > v:
            if now_ms < self.hold_until:
                self._frac = 0
            else:
                # only time after the hold counts
                dt = now_ms - (t0 if t0 > self.hold_until else self.hold_until)
                if dt > _DT_MAX_MS:
                    dt = _DT_MAX_MS
                elif dt < 0:
                    dt = 0
                acc = self._frac + rate_per_s * dt
                inc = acc // 1000
                if v + inc >= target:
                    v = target
                    self._frac = 0
                else:
                    v += inc
                    self._frac = acc - inc * 1000
        else:
            self._frac = 0
        self.value = v
        return v

    def set(self, v, now_ms):
        """Jump to v (no hold, no ramp): a held CVL that must follow a resting pack up."""
        self.value = v
        self._frac = 0
        self._t = now_ms
        return v


class Limits:
    def __init__(self, cfg, thermal=None, chg_warn_mask=-1, dsg_warn_mask=-1, cold_fault_mask=0):
        # chg_warn_mask / dsg_warn_mask: which protection warning bits derate CCL / DCL
        # (default: every warning derates both). cold_fault_mask: accepted for compatibility
        # and unused (the heater no longer asks the inverter for current, issue 12).
        self.cfg = cfg
        self.thermal = thermal
        self.chg_warn_mask = chg_warn_mask
        self.dsg_warn_mask = dsg_warn_mask
        self.cold_fault_mask = cold_fault_mask
        self.cvl_mv = cfg.cells * cfg.cell_uv_release_mv
        self.ccl_ma = 0
        self.dcl_ma = 0
        self.dvl_mv = cfg.cells * cfg.dvl_cell_mv
        self.chg_enable = False
        self.dsg_enable = False
        self.force_charge = False
        self.full_charge_req = False
        self.charge_wanted = True  # SOC below the cap: pass to Thermal.update()
        self.heating = False  # the heater runs while the cells are below the charge minimum
        self.mode = MODE_BULK
        self.soc_cap_pct = 100  # the SOC cap in force
        self.full_seq = 0  # completed (settled) full charges: sync the SOC to 100 % on change
        self.since_full_s = 0  # seconds since the last full charge (persist and restore)
        self._ccl = Ramp()
        self._dcl = Ramp()
        self._cvl = Ramp()
        self._t_last = None
        self._ms_acc = 0
        self._t_abs = 0  # absorption entered
        self._t_settle = None  # absorption conditions hold since
        self._t_float = 0  # float entered
        self._cap_hold = False
        self._dsg_hold = False
        self._blocked = False  # charging blocked (CCL 0): CVL held at _hold_mv
        self._hold_mv = 0
        self._cold = False
        self.bal_active = False  # the balancer is bleeding (app sets it before update())

    def mode_name(self):
        return MODE_NAMES[self.mode]

    # --- helpers -------------------------------------------------------------------
    def _clock(self, now_ms):
        if self._t_last is not None:
            d = now_ms - self._t_last
            if d > 0:
                d += self._ms_acc
                self.since_full_s += d // 1000
                self._ms_acc = d % 1000
        self._t_last = now_ms

    def _nominal_cell_mv(self, now_ms):
        cfg = self.cfg
        if self.mode != MODE_FLOAT:
            return cfg.chg_cell_mv
        el = now_ms - self._t_float
        if el >= cfg.float_ramp_ms:
            return cfg.float_cell_mv
        return lin(el, 0, cfg.chg_cell_mv, cfg.float_ramp_ms, cfg.float_cell_mv)

    def _full_done(self, settled):
        if settled:
            self.full_seq += 1
        self.since_full_s = 0
        self._ms_acc = 0

    def _modes(self, snap, soc, now_ms, full_due):
        cfg = self.cfg
        hi = snap.cell_max_mv
        at_v = hi >= cfg.chg_cell_mv - cfg.absorb_margin_mv
        low = soc is not None and soc < cfg.rebulk_soc_pct
        m = self.mode
        if m == MODE_BULK:
            if at_v and snap.current_ma >= 0:
                self.mode = MODE_ABSORPTION
                self._t_abs = now_ms
                self._t_settle = None
        elif m == MODE_ABSORPTION:
            if low:
                self.mode = MODE_BULK
                return
            spread = hi - snap.cell_min_mv
            lim = cfg.absorb_spread_mv + (_SPREAD_HYST_MV if self._t_settle is not None else 0)
            ok = at_v and snap.current_ma <= cfg.tail_ma and spread <= lim
            if not ok:
                self._t_settle = None
            elif self._t_settle is None:
                self._t_settle = now_ms
            settled = self._t_settle is not None and now_ms - self._t_settle >= cfg.absorb_ms
            # While the balancer bleeds, absorption goes on (up to absorb_bal_max_ms): held at
            # the top, the charger feeds the low cells while the high ones bleed.
            lim_ms = cfg.absorb_bal_max_ms if self.bal_active else cfg.absorb_max_ms
            if settled or now_ms - self._t_abs >= lim_ms:
                self.mode = MODE_FLOAT
                self._t_float = now_ms
                self._full_done(settled)
        else:
            if low or full_due:
                self.mode = MODE_BULK

    # --- main ----------------------------------------------------------------------
    def update(self, snap, prot, est, now_ms):
        cfg = self.cfg
        n = cfg.cells
        self._clock(now_ms)
        floor = n * cfg.cell_uv_release_mv
        valid = bool(snap.flags & FLAG_CELLS_VALID) and snap.age_ms(now_ms) <= cfg.stale_ms
        # The SOC is used only while its error is at most full_err_pct (in storage mode the
        # best estimate is used anyway); a worse SOC asks for a full charge to resync.
        storage = cfg.storage_mode
        soc = None
        resync = False
        if est is not None:
            if storage or est.soc_err_pct <= cfg.full_err_pct:
                soc = est.soc_pct
            else:
                resync = True

        # SOC cap and the full-charge schedule
        scheduled = (not storage and cfg.full_charge_days > 0
                     and self.since_full_s >= cfg.full_charge_days * 86400)
        full_due = scheduled or (not storage and resync)
        # Only the schedule asks the inverter for a full charge (Pylon's b3 semantics: no
        # full charge for a long time). An uncertain SOC lifts the cap (the pack may charge
        # to full when there is energy for it) but does not ask for grid energy.
        self.full_charge_req = scheduled
        if storage:
            cap = cfg.storage_soc_pct
        elif full_due:
            cap = 100
        else:
            cap = cfg.max_soc_pct
        self.soc_cap_pct = cap
        hyst = cfg.soc_hyst_pct
        if soc is None or cap >= 100:
            self._cap_hold = False
        elif self._cap_hold:
            self._cap_hold = soc >= cap - hyst
        else:
            self._cap_hold = soc >= cap
        if soc is None or not storage:
            self._dsg_hold = False
        elif self._dsg_hold:
            self._dsg_hold = soc < cfg.storage_soc_pct
        else:
            self._dsg_hold = soc <= cfg.storage_soc_pct - hyst
        self.charge_wanted = not self._cap_hold
        if soc is None:
            self.force_charge = False
        elif self.force_charge:
            self.force_charge = soc < cfg.force_charge_soc_pct + hyst
        else:
            self.force_charge = soc <= cfg.force_charge_soc_pct

        if valid:
            self._modes(snap, soc, now_ms, full_due)
            ccl, dcl = self._currents(snap, prot, soc, cap)
        else:
            ccl = dcl = 0

        # current ramps: leave 0 only for a meaningful target
        if self._ccl.value == 0 and ccl * 1000 < cfg.chg_max_ma * _MIN_ON_PERMILLE:
            ccl = 0
        if self._dcl.value == 0 and dcl * 1000 < cfg.dsg_max_ma * _MIN_ON_PERMILLE:
            dcl = 0
        self.ccl_ma = self._ccl.step(ccl, now_ms, cfg.ccl_ramp_ma_s, cfg.lim_hold_ms)
        self.dcl_ma = self._dcl.step(dcl, now_ms, cfg.dcl_ramp_ma_s, cfg.lim_hold_ms)

        # charge voltage
        if valid:
            cell_t = self._nominal_cell_mv(now_ms)
            cvl = n * cell_t
            total = snap.cell_sum_mv
            # max-cell controller: the pack voltage at which the highest cell reaches the
            # target if every cell moved alike (gain cells * cvl_gain_pct / 100 per mV)
            p = total + (cell_t - snap.cell_max_mv) * n * cfg.cvl_gain_pct // 100
            if self.ccl_ma == 0:
                # Charging blocked: hold CVL (DC-coupled chargers follow CVL only, so it must
                # not stay at the charge target), never tracking the pack voltage down.
                up = (total + 99) // 100 * 100  # the pack voltage rounded up to 0.1 V
                if not self._blocked:
                    self._blocked = True
                    prev = self._cvl.value
                    self._hold_mv = up if prev is None or up < prev else prev
                elif (up > self._hold_mv and snap.current_ma <= cfg.tail_ma
                      and snap.cell_max_mv < cell_t):
                    # the pack rests higher (no cell at the target): never leave CVL below it
                    self._hold_mv = up
                if self._hold_mv < cvl:
                    cvl = self._hold_mv
            else:
                self._blocked = False
                if p < cvl:
                    cvl = p
        else:
            cvl = self._cvl.value if self._cvl.value is not None else floor
        if cvl < floor:
            cvl = floor
        if self._blocked and valid and self._cvl.value is not None and cvl > self._cvl.value:
            self.cvl_mv = self._cvl.set(cvl, now_ms)  # a held CVL rises at once (at rest)
        else:
            self.cvl_mv = self._cvl.step(cvl, now_ms, n * cfg.cvl_ramp_mv_s, cfg.cvl_hold_ms)
        self.dvl_mv = n * cfg.dvl_cell_mv
        self.chg_enable = self.ccl_ma > 0
        self.dsg_enable = self.dcl_ma > 0
        if not self.chg_enable:
            self.force_charge = False

    def _currents(self, snap, prot, soc, cap):
        cfg = self.cfg
        chg_max = max_current(cfg.chg_max_ma, cfg.chg_oc_ma, cfg.warn_margin_pct)
        dsg_max = max_current(cfg.dsg_max_ma, cfg.dsg_oc_ma, cfg.warn_margin_pct)
        hi = snap.cell_max_mv
        lo = snap.cell_min_mv
        tmin = snap.temp_min_dc
        tmax = snap.temp_max_dc
        # --- charge ---
        # cell voltage taper near the top
        ccl = lin(hi, cfg.ccl_knee_mv, chg_max, cfg.ccl_zero_mv, 0)
        # temperature: 0 below chg_temp_min_dc (released temp_release_dc above it), cold and
        # hot tables in % of chg_max
        if tmin == TEMP_INVALID_DC or tmax == TEMP_INVALID_DC:
            self._cold = True
            t_pct = 0
        else:
            rel = cfg.temp_release_dc if self._cold else 0
            self._cold = tmin < cfg.chg_temp_min_dc + rel
            if self._cold or tmax >= cfg.chg_temp_max_dc:
                t_pct = 0
            else:
                t_pct = lin(tmin, cfg.chg_temp_min_dc, cfg.ccl_cold_pct, cfg.ccl_cold_full_dc, 100)
                h = lin(tmax, cfg.ccl_hot_start_dc, 100, cfg.chg_temp_max_dc, cfg.ccl_hot_pct)
                if h < t_pct:
                    t_pct = h
        c = chg_max * t_pct // 100
        if c < ccl:
            ccl = c
        # SOC: taper over ccl_soc_taper_pct below the cap, 0 while held above the cap
        if soc is not None:
            if self._cap_hold:
                ccl = 0
            else:
                f = _soc_pct10(soc)
                c = lin(
                    f,
                    (cap - cfg.ccl_soc_taper_pct) * 10,
                    chg_max,
                    cap * 10,
                    chg_max * cfg.soc_taper_floor_pct // 100,
                )
                if c < ccl:
                    ccl = c
        if prot.warnings & self.chg_warn_mask:
            ccl = ccl * cfg.warn_derate_pct // 100
        if not prot.chg_allowed:
            ccl = 0
        # heater: it runs from the pack; below the charge minimum CCL stays 0 (issue 12)
        th = self.thermal
        self.heating = bool(self._cold and th is not None and th.heater)
        # --- discharge ---
        dcl = lin(lo, cfg.cell_uv_mv, 0, cfg.dcl_knee_mv, dsg_max)
        if tmin != TEMP_INVALID_DC and tmax != TEMP_INVALID_DC:
            if tmin < cfg.dsg_temp_min_dc or tmax >= cfg.dsg_temp_max_dc:
                t_pct = 0
            else:
                t_pct = lin(tmin, cfg.dsg_temp_min_dc, cfg.dcl_cold_pct, cfg.dcl_cold_full_dc, 100)
                h = lin(tmax, cfg.dcl_hot_start_dc, 100, cfg.dsg_temp_max_dc, cfg.dcl_hot_pct)
                if h < t_pct:
                    t_pct = h
            c = dsg_max * t_pct // 100
            if c < dcl:
                dcl = c
        if soc is not None:
            if self._dsg_hold:
                dcl = 0
            else:
                c = lin(
                    _soc_pct10(soc),
                    0,
                    dsg_max * cfg.soc_taper_floor_pct // 100,
                    cfg.dcl_soc_taper_pct * 10,
                    dsg_max,
                )
                if c < dcl:
                    dcl = c
        if prot.warnings & self.dsg_warn_mask:
            dcl = dcl * cfg.warn_derate_pct // 100
        if not prot.dsg_allowed:
            dcl = 0
        if ccl < 0:
            ccl = 0
        if dcl < 0:
            dcl = 0
        return ccl, dcl


def max_current(limit_ma, oc_ma, warn_margin_pct):
    """The configured maximum, kept 5 % below protection's over-current warning level
    (oc_ma * (100 - warn_margin_pct) %) so that an inverter using the whole limit never
    causes a warning (which would derate and make the limit oscillate) or a trip."""
    m = oc_ma * (95 - warn_margin_pct) // 100
    return limit_ma if limit_ma < m else (m if m > 0 else 0)


def _soc_pct10(soc):
    """SOC in 0.1 % as an int, clamped to 0..1000."""
    f = int(soc * 10)
    if f < 0:
        return 0
    if f > 1000:
        return 1000
    return f
