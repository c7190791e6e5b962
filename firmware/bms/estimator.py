# bms.estimator: state of charge, state of health and lifetime counters (1 s task, floats).
#
# SOC = coulomb counting of the AFE's coulomb-counter samples (no gaps: every 250 ms sample is
# drained from the snapshot accumulator), with a learnt zero-current offset, a deadband and a
# charge efficiency. Every SOC carries an honest 1-sigma uncertainty soc_err_pct, rebuilt at
# each update from what happened since the last anchor (its sigma, then the current gain and
# capacity uncertainty times the net charge, the offset uncertainty times the time, the
# efficiency times the charge in), and every voltage reading is weighted by what it can tell
# (bms.ocv.Table.reading: the table's own uncertainty - a generic table is worth less than the
# cell's own -, its slope there, the hysteresis state, relaxation, temperature, IR).
#
# Anchors (README "SOC and SOH estimation" has the rules and their reasons):
#   full, tail     max cell >= soc_full_mv, 0 <= I <= soc_tail_ma after charging, held
#                  soc_full_hold_ms -> the table SOC at the charge voltage (chg_cell_mv)
#                  minus the tail's IR drop, on the charge branch (~99-100 %)
#   full, stop     the charge reached the top and then stopped (charger done, inverter stops at
#                  CVL, drop to float, PV fading): the current at the top tells how full: at a
#                  tail current as above; above it, a reading of the IR-compensated top voltage
#   empty          IR-compensated min cell <= soc_empty_mv while discharging, held -> a table
#                  reading (refined while the voltage keeps falling)
#   rest           |I| < soc_rest_ma: a reading after a quarter of soc_rest_ms, re-done from the
#                  same prior once settled (soc_rest_ms and dV/dt < soc_rest_dvdt_uv_s)
# A reading moves SOC by the Kalman weight of the two uncertainties, never by more than twice
# the prior's sigma, and is dropped when the two disagree beyond 3 sigma: on the LFP plateau
# with a generic table the reading's sigma is tens of %, so a rest there moves SOC by little.
# Counting alone never reaches 100 % (or 0 %): it stops at 99 % (1 %) until a sync.
#
# SOH: capacity from the charge counted between two reference points (anchors, settled rests
# with sigma <= 3 %) at least soc_cap_min_dsoc_pct apart, as a Kalman update of the capacity
# and its own uncertainty (persisted), each step bounded to soc_cap_step_pct of nominal;
# per-cell DC resistance from current steps (dV/dI, filtered, outliers rejected).
#
# Float precision: boards have 32-bit floats. Small increments are collected in an
# accumulator and moved into SOC, the learning counter and the lifetime totals in chunks;
# the totals are kept as an int (Ah, Wh) plus a float remainder.
import math

from micropython import const

from bms import ocv
from bms.events import EV_CONFIG_REJECT, EV_SOC_SYNC
from bms.snapshot import FLAG_CELLS_VALID, FLAG_CURRENT_VALID, TEMP_INVALID_DC

SYNC_FULL = const(1)
SYNC_EMPTY = const(2)
SYNC_REST = const(3)
SYNC_TOP = const(4)  # charge stopped at the top above the tail current: a reading, not 100 %

STATE_VERSION = const(2)

_RELEASE = 0.03  # a sync is re-armed once SOC moved this far away from the synced value
_CC_CAP_HI = 0.99  # counting alone stops here until a full sync
_CC_CAP_LO = 0.01
_ERR_MIN = 0.3
_GAIN_UNC = 0.01  # current gain uncertainty (fraction of the net charge)
_EFF_UNC = 0.002  # charge efficiency uncertainty (fraction of the charge in)
_CAP_UNC0 = 12.0  # % uncertainty of the configured nominal capacity until learnt
_CAP_UNC_MIN = 0.7
_HYST_Q = 0.08  # the hysteresis state switches over ~8 % of capacity
# CV time constant until learnt (charge a CV phase still puts in = current x tau): LFP's
# steep top ends a CV within minutes, NMC's slope needs tens of minutes.
_CV_TAU_S = {"lfp": 120.0, "nmc": 900.0, "lto": 300.0}
_DVDT_WINDOW_MS = const(300000)
_R_FIRST_N = const(10)  # resistance samples before the trend reference is fixed
_REF_MAX_AGE_MS = 14 * 86400000  # capacity references older than this are dropped
_NREF = const(3)
_REF_SIG_MAX = 4.0  # % : a rest reading this good is a capacity reference point
_CAP_REL_MAX = 4.0  # % : a capacity measurement worse than this (sigma / span) is dropped


def _clamp(x, lo, hi):
    return lo if x < lo else (hi if x > hi else x)


class Estimator:
    def __init__(self, cfg, events, ocv_table=None):
        """ocv_table: the cell's own OCV table (0.1 mV, evenly spaced 0..100 %), e.g. the
        board file's OCV_TABLE; None = the table in force for the chemistry (bms.ocv). An
        invalid table falls back to the built-in one: table_rejected, EV_CONFIG_REJECT a=-1."""
        self.cfg = cfg
        self.events = events
        self.chem = cfg.chemistry
        self.table_rejected = False
        try:
            self.table = ocv.Table(cfg.chemistry, ocv_table)
        except ValueError:
            # a bad board table must not stop the BMS: the generic one, and say so
            self.table = ocv.Table(cfg.chemistry)
            self.table_rejected = True
            events.add(0, EV_CONFIG_REJECT, -1, 0)
        self.nominal_mah = float(cfg.capacity_mah)
        # Published values
        self.soc_pct = 50.0
        self.soc_err_pct = 100.0
        self.capacity_mah = self.nominal_mah
        self.cap_err_pct = _CAP_UNC0
        self.soh_pct = 100.0
        self.r_mohm = cfg.soc_r_cell_uohm / 1000.0  # per cell
        self.r_first_mohm = 0.0  # 0 = resistance not learnt yet
        self.r_trend = 1.0
        self.r_count = 0
        self.cycles = 0.0
        self.chg_mah_total = 0.0
        self.dsg_mah_total = 0.0
        self.chg_wh_total = 0.0
        self.dsg_wh_total = 0.0
        self.last_sync_ms = None
        self.last_sync_kind = 0
        self.offset_ma = 0.0
        self.offset_learnt = False
        self.current_ma = 0.0  # offset-corrected mean current of the last update
        self.synced = False  # at least one full or empty sync since the state was created
        self.hyst = 0.0  # hysteresis state: -1 discharge branch .. +1 charge branch
        # SOC internals
        self._soc = 0.5
        self._acc_mah = 0.0  # charge not yet moved into _soc / _net_mah
        self._net_mah = 0.0  # net charge since the last capacity reference
        self._full_latch = False
        self._empty_latch = False
        self._empty_soc = 0.0
        self._full_t0 = -1
        self._empty_t0 = -1
        self._dir = 0  # +1 last significant current was charging, -1 discharging
        # uncertainty since the last anchor
        self._sig_a = 100.0  # sigma at the anchor, %
        self._a_net = 0.0  # net mAh since (weighted x2 outside 10-40 degC)
        self._a_chg = 0.0  # charged mAh since (weighted)
        self._a_s = 0.0  # seconds since (weighted)
        # top of charge
        self._top_i = 0.0  # charging current at the last update at the top (0 = not at top)
        self._top_mv = 0.0
        self._top_seen = False  # this charge reached the top
        self._top_off_ms = -1  # when the voltage left the top while charging on
        self._chg_ms = 0  # how long the current has been charging without a break
        self._cv_i0 = 0.0  # current when the top was reached
        self._cv_q = 0.0  # mAh charged at the top
        self.cv_tau_s = _CV_TAU_S[cfg.chemistry]  # CV time constant: learnt, persisted
        self._tau_n = 0
        # lifetime totals: int part + float remainder
        self._chg_ah = 0
        self._dsg_ah = 0
        self._chg_wh = 0
        self._dsg_wh = 0
        self._chg_r = 0.0  # mAh
        self._dsg_r = 0.0
        self._chgw_r = 0.0  # Wh
        self._dsgw_r = 0.0
        # rest detection
        self._last_ms = None
        self._rest_ms = 0
        self._rest_stage = 0  # 0 none yet, 1 early reading done, 2 settled reading done
        self._rest_next_ms = 0  # rest time of the next early try
        self._rb_soc = 0.0  # prior before this rest's first reading
        self._rb_sig = 0.0
        self._rb_net = 0.0
        self._net_run = 0.0  # running net mAh (never reset; for re-blending)
        self._vf = 0.0  # filtered mean cell voltage, mV
        self._vf_ok = False
        self._v_rest0 = 0.0  # mean cell voltage when the rest began
        self._win_ms = 0
        self._win_v = 0.0
        self._dvdt = 1e9  # uV/s over the last window
        # empty refinement
        self._empty_open = False  # discharge still going after an empty anchor
        self._empty_vmin = 0.0
        # capacity references: soc, sigma %, net mAh relative to the newest, ms
        self._refs = []
        self.cap_updates = 0
        # resistance
        self._i_prev = None
        self._v_prev = 0.0
        self._di_prev = 0.0
        # EKF (soc is self._soc)
        self._v1 = 0.0
        self._p00 = 0.01
        self._p01 = 0.0
        self._p11 = 1.0
        self._publish()

    # ------------------------------------------------------------------ public API
    def set_soc(self, pct, now_ms, err_pct=20.0):
        """Initial guess (OCV at boot, or persisted): sets SOC without counting it as a sync."""
        self._soc = _clamp(float(pct), 0.0, 100.0) / 100.0
        self._acc_mah = 0.0
        self._restart_sigma(_clamp(float(err_pct), _ERR_MIN, 100.0))
        self._publish()

    def init_from_ocv(self, snap, now_ms):
        """Boot guess from the mean cell voltage, weighted like any reading (not rested:
        hysteresis unknown, relaxation up to 20 mV). Returns True when it is worth a guess
        (sigma <= 10 %); elsewhere (LFP plateau) the caller decides."""
        if not snap.flags & FLAG_CELLS_VALID:
            return False
        v = snap.cell_sum_mv / snap.n_cells
        z, sz = self.table.reading(v, 0.0, self.table.hyst_mv * 0.5 + 20.0)
        if sz > 10.0:
            return False
        self.set_soc(z * 100.0, now_ms, sz)
        return True

    def update(self, snap, now_ms):
        cfg = self.cfg
        n = snap.cc_samples
        s = snap.cc_sum_ma
        snap.cc_samples = 0
        snap.cc_sum_ma = 0
        dt_ms = 0 if self._last_ms is None else now_ms - self._last_ms
        if dt_ms < 0:
            dt_ms = 0
        self._last_ms = now_ms
        temp_c = self._temp_c(snap)
        cells_ok = bool(snap.flags & FLAG_CELLS_VALID) and snap.cell_sum_mv > 0
        i = self.current_ma
        if n > 0:
            i_meas = s / n
            dt_s = n * 0.25
            self._learn_offset(snap, i_meas, dt_s)
            i = i_meas - self.offset_ma
            if -cfg.soc_deadband_ma < i < cfg.soc_deadband_ma:
                i = 0.0
            self.current_ma = i
            self._count(i, dt_s, snap, temp_c)
        if i > cfg.soc_rest_ma:
            self._dir = 1
            self._chg_ms += dt_ms
        else:
            self._chg_ms = 0
            if i < -cfg.soc_rest_ma:
                self._dir = -1
        if cells_ok:
            v_mean = snap.cell_sum_mv / snap.n_cells
            self._track_rest(i, v_mean, now_ms, dt_ms)
            if n > 0:
                self._learn_r(snap, v_mean, temp_c)
                if cfg.soc_ekf:
                    self._ekf(i, n * 0.25, v_mean, temp_c)
            self._check_full(snap, v_mean, i, now_ms, n * 0.25)
            self._check_empty(snap, i, now_ms)
            self._check_rest(i, now_ms, temp_c)
        else:
            self._full_t0 = -1
            self._empty_t0 = -1
        self._publish()

    # ------------------------------------------------------------------ counting
    def _count(self, i, dt_s, snap, temp_c):
        dq = i * dt_s / 3600.0  # mAh
        v_pack = snap.pack_mv if snap.pack_mv > 0 else snap.cell_sum_mv
        dwh = dq * v_pack / 1.0e6
        w = 2.0 if temp_c < 10.0 or temp_c > 40.0 else 1.0
        cap = self.capacity_mah
        if dq > 0:
            self._chg_r += dq
            self._chgw_r += dwh
            self._a_chg += dq * w
            dq *= self.cfg.soc_chg_eff_permille / 1000.0
            self.hyst += (1.0 - self.hyst) * _clamp(dq / (_HYST_Q * cap), 0.0, 1.0)
        elif dq < 0:
            self._dsg_r -= dq
            self._dsgw_r -= dwh
            self.hyst += (-1.0 - self.hyst) * _clamp(-dq / (_HYST_Q * cap), 0.0, 1.0)
        self._acc_mah += dq
        self._a_net += dq * w
        self._a_s += dt_s * w
        if abs(self._acc_mah) >= cap * 0.0005:
            self._move_acc()
        if self._chg_r >= 1000.0:
            k = int(self._chg_r // 1000.0)
            self._chg_ah += k
            self._chg_r -= k * 1000.0
        if self._dsg_r >= 1000.0:
            k = int(self._dsg_r // 1000.0)
            self._dsg_ah += k
            self._dsg_r -= k * 1000.0
        if self._chgw_r >= 1.0:
            k = int(self._chgw_r)
            self._chg_wh += k
            self._chgw_r -= k
        if self._dsgw_r >= 1.0:
            k = int(self._dsgw_r)
            self._dsg_wh += k
            self._dsgw_r -= k

    def _move_acc(self):
        q = self._acc_mah
        self._acc_mah = 0.0
        self._net_mah += q
        self._net_run += q
        soc = self._soc + q / self.capacity_mah
        hi = 1.0 if self._full_latch else _CC_CAP_HI
        lo = 0.0 if self._empty_latch else _CC_CAP_LO
        if q > 0 and soc > hi:
            soc = max(hi, self._soc)
        elif q < 0 and soc < lo:
            soc = min(lo, self._soc)
        self._soc = _clamp(soc, 0.0, 1.0)

    def _off_unc_ma(self):
        cfg = self.cfg
        if self.offset_learnt:
            return cfg.soc_deadband_ma + cfg.soc_offset_max_ma / 10.0
        return cfg.soc_offset_max_ma / 3.0

    def _sigma(self):
        """1-sigma SOC uncertainty (%) now: the anchor's, grown by what happened since."""
        cap = self.capacity_mah
        gc = math.sqrt(_GAIN_UNC * _GAIN_UNC + (self.cap_err_pct / 100.0) ** 2)
        e_net = gc * self._a_net / cap * 100.0
        e_off = self._off_unc_ma() * self._a_s / 3600.0 / cap * 100.0
        e_eff = _EFF_UNC * self._a_chg / cap * 100.0
        s = math.sqrt(self._sig_a * self._sig_a + e_net * e_net + e_off * e_off + e_eff * e_eff)
        return _clamp(s, _ERR_MIN, 100.0)

    def _restart_sigma(self, sig):
        self._sig_a = sig
        self._a_net = 0.0
        self._a_chg = 0.0
        self._a_s = 0.0
        self.soc_err_pct = sig
        self._p00 = (sig / 100.0) ** 2
        self._p01 = 0.0

    def _learn_offset(self, snap, i_meas, dt_s):
        """Zero-current offset: both FETs open (true current 0), or a long quiet rest."""
        cfg = self.cfg
        if not snap.flags & FLAG_CURRENT_VALID:
            return
        lim = cfg.soc_offset_max_ma
        if abs(i_meas) > lim:
            return
        if not snap.chg_fet and not snap.dsg_fet:
            k = dt_s / 60.0
        elif self._rest_ms >= min(cfg.soc_rest_ms, 600000):
            k = dt_s / 600.0
        else:
            return
        if k > 1.0:
            k = 1.0
        self.offset_ma = _clamp(self.offset_ma + (i_meas - self.offset_ma) * k, -lim, lim)
        self.offset_learnt = True

    # ------------------------------------------------------------------ anchors
    def _full_value(self, v_mv, i_ma):
        """SOC when a charge ends at the top: where a CV phase at v_mv would converge (the
        table at v_mv, charge branch), minus what it would still put in from current i_ma:
        i_ma x the CV time constant (learnt from the pack's own CV phases)."""
        z, sz = self.table.reading(v_mv, 1.0, 2.0)
        rem = i_ma * self.cv_tau_s / 3600.0 / self.capacity_mah  # fraction
        sr = rem * 100.0 * (0.3 if self._tau_n else 0.5)
        return z - rem, math.sqrt(sz * sz + sr * sr)

    def _check_full(self, snap, v_mean, i, now_ms, dt_s):
        cfg = self.cfg
        top = snap.cell_max_mv >= cfg.soc_full_mv
        if self._full_latch:
            self._top_seen = False
        elif i > cfg.soc_rest_ma:
            if top and self._chg_ms >= 60000:  # not a short (regenerative) charge pulse
                self._top_off_ms = -1
                if not self._top_seen:
                    self._top_seen = True
                    self._cv_i0 = i
                    self._cv_q = 0.0
                    self._top_i = i
                self._cv_q += i * dt_s / 3600.0
                if i <= self._top_i:
                    self._top_i = i  # the lowest charging current seen at the top
                    self._top_mv = v_mean
            elif self._top_seen and i > cfg.soc_tail_ma:
                if self._top_off_ms < 0:
                    self._top_off_ms = now_ms
                elif now_ms - self._top_off_ms > 120000:
                    self._learn_tau()
                    self._top_seen = False  # charging on below the top: not the end
        elif self._top_seen:
            # the charge ended after reaching the top: charger done, inverter stopped at CVL,
            # drop to float, PV gone. The current at the top says how full the cell is.
            self._learn_tau()
            self._top_seen = False
            z, sz = self._full_value(self._top_mv, self._top_i)
            if self._top_i <= cfg.soc_tail_ma or z >= 0.985:
                self._full(self._top_mv, self._top_i, now_ms)
            else:
                self._blend(z, sz, now_ms, SYNC_TOP, False)
            return
        if (
            top
            and -cfg.soc_deadband_ma <= i <= cfg.soc_tail_ma
            and self._dir > 0
            and not self._full_latch
        ):
            if self._full_t0 < 0:
                self._full_t0 = now_ms
            elif now_ms - self._full_t0 >= cfg.soc_full_hold_ms:
                self._learn_tau()
                self._full(v_mean, max(i, 0.0), now_ms)
        else:
            self._full_t0 = -1

    def _learn_tau(self):
        """A CV phase (current falling to a third or less while the voltage stays at the top)
        gives its time constant: for an exponential decay, charge in = tau x (I0 - I1)."""
        i0 = self._cv_i0
        i1 = self._top_i
        if self._top_seen and i1 > 0.0 and i0 >= 3.0 * i1 and self._cv_q > 0.0:
            tau = _clamp(self._cv_q * 3600.0 / (i0 - i1), 10.0, 7200.0)
            self.cv_tau_s += (tau - self.cv_tau_s) * (0.5 if self._tau_n < 3 else 0.2)
            self._tau_n += 1
        self._cv_i0 = 0.0

    def _full(self, v_mv, i_ma, now_ms):
        self._full_t0 = -1
        self._top_seen = False
        z, sz = self._full_value(v_mv, i_ma)
        self._full_latch = True
        self._empty_latch = False
        self._empty_open = False
        self._anchor(z, sz, now_ms, SYNC_FULL)

    def _check_empty(self, snap, i, now_ms):
        cfg = self.cfg
        if i >= -cfg.soc_deadband_ma:
            self._empty_t0 = -1
            self._empty_open = False
            return
        v_comp = snap.cell_min_mv - i * self.r_mohm / 1000.0  # i < 0: adds the IR drop back
        if self._empty_open and v_comp < self._empty_vmin - 50.0:
            self._empty_vmin = v_comp
            z, sz = self._empty_reading(v_comp, i)
            if z < self._soc:  # deeper: this reading replaces the last (same polarisation)
                self._move_acc()
                self._soc = z
                self._restart_sigma(sz)
            return
        if self._empty_latch or v_comp > cfg.soc_empty_mv:
            self._empty_t0 = -1
            return
        if self._empty_t0 < 0:
            self._empty_t0 = now_ms
        elif now_ms - self._empty_t0 >= cfg.soc_empty_hold_ms:
            self._empty_t0 = -1
            z, sz = self._empty_reading(v_comp, i)
            self._empty_latch = True
            self._empty_soc = z
            self._full_latch = False
            self._anchor(z, sz, now_ms, SYNC_EMPTY, False)
            self._empty_open = True
            self._empty_vmin = v_comp

    def _empty_reading(self, v_comp, i):
        """The cut-off under load: the IR-compensated voltage read on the discharge branch.
        Diffusion polarisation at the end of a discharge is far larger than the 1 s IR (several
        hundred mV at 0.3 C on some cells): the reading carries 30 % SOC per 1 C of load. Its
        capacity reference comes from the rest that follows, not from this reading."""
        ir = -i * self.r_mohm / 1000.0
        z, sz = self.table.reading(v_comp, -1.0, math.sqrt(25.0 + (0.5 * ir) ** 2))
        pol = -30.0 * i / self.capacity_mah
        return z, math.sqrt(sz * sz + pol * pol)

    def _anchor(self, soc, err, now_ms, kind, ref=True):
        self._move_acc()
        self._soc = _clamp(soc, 0.0, 1.0)
        self._restart_sigma(max(err, _ERR_MIN))
        self.synced = True
        self.last_sync_ms = now_ms
        self.last_sync_kind = kind
        self.events.add(now_ms, EV_SOC_SYNC, kind, int(self._soc * 10000))
        if ref:
            self._reference(self._soc, err, now_ms)

    def _blend(self, z, sz, now_ms, kind, ref):
        """A reading z (fraction) with sigma sz (%): Kalman-weighted move, at most twice the
        prior's sigma, dropped when the two disagree beyond 3 sigma. Returns the new sigma or
        a negative number when dropped."""
        self._move_acc()
        sp = self._sigma()
        d = (z - self._soc) * 100.0
        tot = sp * sp + sz * sz
        if d * d > 9.0 * tot:
            return -1.0
        k = sp * sp / tot
        move = _clamp(k * d, -2.0 * sp, 2.0 * sp)
        self._soc = _clamp(self._soc + move / 100.0, 0.0, 1.0)
        post = math.sqrt(sp * sp * sz * sz / tot)
        floor = min(sp, self.table.soc_sigma_pct(z))
        if post < floor:
            post = floor  # the table's systematic part does not average away
        self._restart_sigma(max(post, _ERR_MIN))
        self.last_sync_ms = now_ms
        self.last_sync_kind = kind
        self.events.add(now_ms, EV_SOC_SYNC, kind, int(self._soc * 10000))
        if ref:
            self._reference(self._soc, post, now_ms)
        return post

    # ------------------------------------------------------------------ rest / OCV
    def _track_rest(self, i, v_mean, now_ms, dt_ms):
        if abs(i) < self.cfg.soc_rest_ma:
            self._rest_ms += dt_ms
        else:
            self._rest_ms = 0
            self._rest_stage = 0
            self._rest_next_ms = 0
            self._vf_ok = False
        if not self._vf_ok:
            self._vf = v_mean
            self._v_rest0 = v_mean
            self._vf_ok = True
            self._win_ms = now_ms
            self._win_v = v_mean
            self._dvdt = 1e9
            return
        k = dt_ms / 60000.0
        self._vf += (v_mean - self._vf) * (1.0 if k > 1.0 else k)
        if now_ms - self._win_ms >= _DVDT_WINDOW_MS:
            self._dvdt = abs(self._vf - self._win_v) * 1.0e6 / (now_ms - self._win_ms)
            self._win_ms = now_ms
            self._win_v = self._vf

    def _check_rest(self, i, now_ms, temp_c):
        """OCV reading in a rest: an early one (from 1 min; the relaxation still to come is in
        its sigma: 30 mV until dV/dt is known, then dV/dt x half the rest time), taken only
        when it would cut the uncertainty at least in half, retried every 5 min; then, once
        settled (soc_rest_ms, dV/dt < soc_rest_dvdt_uv_s), again from the same prior (the
        early reading is replaced, not counted twice)."""
        cfg = self.cfg
        if self._rest_stage >= 2 or not 0.0 <= temp_c <= 50.0 or self._rest_ms < 60000:
            return
        if self._full_latch and self._soc >= 0.99:
            return
        need = cfg.soc_rest_ms * (2 if temp_c < 10.0 else 1)
        settled = self._rest_ms >= need and self._dvdt <= cfg.soc_rest_dvdt_uv_s
        if not settled and (self._rest_stage == 1 or self._rest_ms < self._rest_next_ms):
            return
        self._rest_next_ms = self._rest_ms + 300000
        t = self.table
        ir = i * self.r_mohm / 1000.0  # a "rest" may carry a small load: take its IR out
        h = t.hyst_mv * 0.5
        if self._dvdt > 1e8:  # dV/dt not known yet: twice what it relaxed so far, >= 30 mV
            relax = max(30.0, 2.0 * abs(self._vf - self._v_rest0))
        else:
            relax = self._dvdt * cfg.soc_rest_ms / 2.0e6  # uV/s x (rest time / 2) -> mV
            if not settled and self._rest_ms < need // 4 and relax < 10.0:
                relax = 10.0
        extra = math.sqrt(
            (h * (1.0 - abs(self.hyst)) + 0.3 * h) ** 2
            + relax * relax
            + (0.5 * ir) ** 2
            + (0.3 * (temp_c - 25.0)) ** 2
            + 1.0
        )
        z, sz = t.reading(self._vf - ir, self.hyst, extra)
        if self._rest_stage == 1:
            # settled: replace the early reading, starting again from the prior before it
            self._move_acc()
            self._soc = _clamp(self._rb_soc + (self._net_run - self._rb_net) / self.capacity_mah,
                               0.0, 1.0)
            self._restart_sigma(self._rb_sig)
        else:
            self._move_acc()
            sp = self._sigma()
            if not settled and sz >= 0.5 * sp:
                return  # worth little now: try again later
            self._rb_soc = self._soc
            self._rb_sig = sp
            self._rb_net = self._net_run
        self._rest_stage = 2 if settled else 1
        ref = sz <= _REF_SIG_MAX and 10.0 <= temp_c <= 45.0
        self._blend(z, sz, now_ms, SYNC_REST, ref)

    # ------------------------------------------------------------------ SOH
    def _reference(self, soc_ref, sig_pct, now_ms):
        """A trustworthy SOC point (sig_pct: its uncertainty): learn capacity from the charge
        passed since the best of the last few reference points (largest span for its
        uncertainty, span >= soc_cap_min_dsoc_pct), as a Kalman update of the capacity and its
        uncertainty; each step is bounded to soc_cap_step_pct of nominal."""
        self._move_acc()
        net = self._net_mah
        cfg = self.cfg
        refs = self._refs
        k = 0
        while k < len(refs):
            if now_ms - refs[k][3] > _REF_MAX_AGE_MS:
                refs.pop(k)
            else:
                k += 1
        best = None
        best_q = 0.0
        for r in refs:
            dsoc = soc_ref - r[0]
            dq = net - r[2]
            if abs(dsoc) * 100.0 < cfg.soc_cap_min_dsoc_pct or dq * dsoc <= 0:
                continue
            # offset over the time between the two points adds to the span's uncertainty
            e_off = self._off_unc_ma() * (now_ms - r[3]) / 3.6e6 / self.capacity_mah * 100.0
            sig = math.sqrt(sig_pct * sig_pct + r[1] * r[1] + e_off * e_off)
            quality = abs(dsoc) * 100.0 / sig
            if quality > best_q:
                best_q = quality
                best = (dsoc, dq, sig)
        if best is not None:
            dsoc, dq, sig = best
            q_new = dq / dsoc
            nom = self.nominal_mah
            cap = self.capacity_mah
            if 0.5 * nom <= q_new <= 1.3 * nom and sig / abs(dsoc) <= _CAP_REL_MAX:
                vc = (self.cap_err_pct / 100.0 * cap) ** 2
                rel = sig / (abs(dsoc) * 100.0)
                vm = (rel * q_new) ** 2 + (0.005 * q_new) ** 2
                if (q_new - cap) ** 2 <= 9.0 * (vc + vm):
                    gain = vc / (vc + vm)
                    lim = nom * cfg.soc_cap_step_pct / 100.0
                    step = gain * (q_new - cap)
                    done = _clamp(step, -lim, lim)
                    self.capacity_mah = cap + done
                    # a bounded step leaves the rest of the way uncertain
                    post = math.sqrt(vc * vm / (vc + vm) + (step - done) ** 2)
                    post = post / self.capacity_mah * 100.0
                    self.cap_err_pct = max(_CAP_UNC_MIN, post)
                    self.cap_updates += 1
        # keep the charge counter relative to the newest reference (float precision)
        for r in refs:
            r[2] -= net
        refs.append([soc_ref, sig_pct, 0.0, now_ms])
        if len(refs) > _NREF:
            refs.pop(0)
        self._net_mah = 0.0

    def _learn_r(self, snap, v_mean, temp_c):
        cfg = self.cfg
        i_now = snap.current_ma - self.offset_ma
        if self._i_prev is not None and 0.15 <= self._soc <= 0.9:
            di = i_now - self._i_prev
            dv = v_mean - self._v_prev
            if abs(di) >= cfg.soc_r_step_ma and abs(self._di_prev) < cfg.soc_r_step_ma / 4:
                r_new = dv / di * 1000.0
                r0 = cfg.soc_r_cell_uohm / 1000.0
                if r0 * 0.05 < r_new < r0 * 20.0 and 10.0 <= temp_c <= 45.0:
                    if self.r_count == 0:
                        self.r_mohm = r_new
                    else:
                        d = _clamp(r_new - self.r_mohm, -0.3 * self.r_mohm, 0.3 * self.r_mohm)
                        self.r_mohm += 0.1 * d
                    self.r_count += 1
                    if self.r_count == _R_FIRST_N:
                        self.r_first_mohm = self.r_mohm
            self._di_prev = di
        self._i_prev = i_now
        self._v_prev = v_mean

    # ------------------------------------------------------------------ EKF
    def _ekf(self, i, dt_s, v_mean, temp_c):
        """1RC extended Kalman filter on the mean cell (soc_ekf = 1); SOC predicted by
        counting. Its measurement noise includes the table's uncertainty, and it never
        lowers the SOC uncertainty below the table's SOC-axis sigma."""
        r0 = self.r_mohm * 0.7
        if temp_c < 25.0:
            r0 *= math.exp(3000.0 * (1.0 / (temp_c + 273.15) - 1.0 / 298.15))
        r1 = self.r_mohm * 0.5
        a = math.exp(-dt_s / 60.0)
        self._v1 = a * self._v1 + (1.0 - a) * r1 * i / 1000.0  # mV
        cap = self.capacity_mah
        q_soc = (self.cfg.soc_deadband_ma + abs(i) * _GAIN_UNC) * dt_s / 3600.0 / cap
        p00 = self._p00 + q_soc * q_soc + 1e-9 * dt_s
        p01 = self._p01 * a
        p11 = self._p11 * a * a + 0.25 * dt_s
        self._p00 = p00
        self._p01 = p01
        self._p11 = p11
        t = self.table
        soc = self._soc + self._acc_mah / cap
        slope = t.slope(soc)
        if slope * 1000.0 < self.cfg.soc_slope_min_uv:
            return
        h0 = slope * 100.0  # mV per unit SOC
        v_pred = t.mv(soc, self.hyst) + self._v1 + i * r0 / 1000.0
        y = v_mean - v_pred
        r_meas = 15.0 * 15.0 + t.sig_mv * t.sig_mv
        s = h0 * h0 * p00 + 2.0 * h0 * p01 + p11 + r_meas
        k0 = (p00 * h0 + p01) / s
        k1 = (p01 * h0 + p11) / s
        if abs(y) > 4.0 * math.sqrt(s):
            return  # outlier (transient, bad sample): skip
        self._soc = _clamp(self._soc + k0 * y, 0.0, 1.0)
        self._v1 += k1 * y
        self._p00 = p00 - k0 * (h0 * p00 + p01)
        self._p01 = p01 - k0 * (h0 * p01 + p11)
        self._p11 = p11 - k1 * (h0 * p01 + p11)
        floor = (t.soc_sigma_pct(soc) / 100.0) ** 2
        if self._p00 < floor:
            self._p00 = floor
        e = 100.0 * math.sqrt(self._p00)
        if e < self._sigma():
            self._restart_sigma(e)

    # ------------------------------------------------------------------ helpers
    def _temp_c(self, snap):
        lo = snap.temp_min_dc
        hi = snap.temp_max_dc
        if lo == TEMP_INVALID_DC or hi == TEMP_INVALID_DC:
            return 25.0
        return (lo + hi) / 20.0

    def _publish(self):
        if self._full_latch and self._soc < 1.0 - _RELEASE:
            self._full_latch = False  # re-arm the full sync after a real discharge
        if self._empty_latch and self._soc > self._empty_soc + _RELEASE:
            self._empty_latch = False
        cap = self.capacity_mah
        self.soc_pct = _clamp((self._soc + self._acc_mah / cap) * 100.0, 0.0, 100.0)
        self.soc_err_pct = self._sigma()
        self.soh_pct = cap / self.nominal_mah * 100.0
        if self.r_first_mohm > 0.0:
            self.r_trend = self.r_mohm / self.r_first_mohm
        self.chg_mah_total = self._chg_ah * 1000.0 + self._chg_r
        self.dsg_mah_total = self._dsg_ah * 1000.0 + self._dsg_r
        self.chg_wh_total = self._chg_wh + self._chgw_r
        self.dsg_wh_total = self._dsg_wh + self._dsgw_r
        self.cycles = self.dsg_mah_total / self.nominal_mah

    # ------------------------------------------------------------------ persistence
    def state_dict(self):
        self._move_acc()
        self._publish()
        return {
            "v": STATE_VERSION,
            "chem": self.chem,
            "soc": self._soc * 100.0,
            "err": self.soc_err_pct,
            "cap": self.capacity_mah,
            "capu": self.cap_err_pct,
            "r": self.r_mohm,
            "r0": self.r_first_mohm,
            "rn": self.r_count,
            "off": self.offset_ma,
            "offl": 1 if self.offset_learnt else 0,
            "sync": 1 if self.synced else 0,
            "full": 1 if self._full_latch else 0,
            "empty": 1 if self._empty_latch else 0,
            "hyst": self.hyst,
            "tau": self.cv_tau_s,
            "taun": self._tau_n,
            "tot": [self._chg_ah, self._chg_r, self._dsg_ah, self._dsg_r,
                    self._chg_wh, self._chgw_r, self._dsg_wh, self._dsgw_r],
        }

    def load_state(self, d):
        """Restore a state_dict() (this version or version 1). Raises ValueError (and changes
        nothing) on bad data."""
        if not isinstance(d, dict) or d.get("v") not in (1, STATE_VERSION):
            raise ValueError("state version")
        if d.get("chem") != self.chem:
            raise ValueError("state chemistry")
        nom = self.nominal_mah
        soc = _num(d, "soc", 0.0, 100.0)
        err = _num(d, "err", 0.0, 100.0)
        cap = _num(d, "cap", 0.3 * nom, 1.5 * nom)
        r = _num(d, "r", 0.0, 1.0e6)
        r0 = _num(d, "r0", 0.0, 1.0e6)
        rn = int(_num(d, "rn", 0, 1 << 30))
        off = _num(d, "off", -self.cfg.soc_offset_max_ma, self.cfg.soc_offset_max_ma)
        flags = [_num(d, k, 0, 1) for k in ("offl", "sync", "full", "empty")]
        if d["v"] >= 2:
            capu = _num(d, "capu", 0.0, 100.0)
            hyst = _num(d, "hyst", -1.0, 1.0)
            tau = _num(d, "tau", 10.0, 7200.0)
            taun = int(_num(d, "taun", 0, 1 << 30))
        else:
            tau = self.cv_tau_s
            taun = 0
            capu = 2.0 if flags[1] else _CAP_UNC0
            hyst = 0.0
        tot = d.get("tot")
        if not isinstance(tot, list) or len(tot) != 8:
            raise ValueError("state tot")
        vals = []
        for k in range(8):
            x = tot[k]
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not x >= 0:
                raise ValueError("state tot")
            if k % 2 == 0:
                if x != int(x) or x > (1 << 30):
                    raise ValueError("state tot")
                x = int(x)
            elif x >= (1000.0 if k < 4 else 1.0):
                raise ValueError("state tot")
            vals.append(x)
        if r <= 0.0:
            raise ValueError("state r")
        # all valid: apply
        self._soc = soc / 100.0
        self._acc_mah = 0.0
        self._restart_sigma(max(err, _ERR_MIN))
        self.capacity_mah = cap
        self.cap_err_pct = max(capu, _CAP_UNC_MIN)
        self.r_mohm = r
        self.r_first_mohm = r0
        self.r_count = rn
        self.offset_ma = off
        self.offset_learnt = bool(flags[0])
        self.synced = bool(flags[1])
        self._full_latch = bool(flags[2])
        self._empty_latch = bool(flags[3])
        self.hyst = float(hyst)
        self.cv_tau_s = float(tau)
        self._tau_n = taun
        (self._chg_ah, self._chg_r, self._dsg_ah, self._dsg_r,
         self._chg_wh, self._chgw_r, self._dsg_wh, self._dsgw_r) = vals
        self._refs = []  # charge during the power-off is unknown: no capacity reference
        self._publish()


def _num(d, key, lo, hi):
    x = d.get(key)
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise ValueError("state " + key)
    if not lo <= x <= hi:  # also rejects NaN
        raise ValueError("state " + key)
    return x
