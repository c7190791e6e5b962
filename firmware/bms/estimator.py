# bms.estimator: state of charge, state of health and lifetime counters (1 s task, floats).
#
# SOC = coulomb counting of the AFE's coulomb-counter samples (no gaps: every 250 ms sample is
# drained from the snapshot accumulator), with a learnt zero-current offset, a deadband and a
# charge efficiency. Anchors pull it back:
#   full sync   max cell >= soc_full_mv, 0 <= I < soc_tail_ma, held soc_full_hold_ms -> 100 %
#   empty sync  IR-compensated min cell <= soc_empty_mv while discharging, held -> the OCV
#               table's SOC at that voltage (0 % at the table's end, a few % above it)
#   rest        |I| < soc_rest_ma for soc_rest_ms and dV/dt < soc_rest_dvdt_uv_s: OCV look-up,
#               only where the OCV curve is steep (>= soc_slope_min_uv per %), weighted by the
#               uncertainties of both (never inside the LFP plateau)
#   EKF         optional 1RC extended Kalman filter on the mean cell voltage (soc_ekf), with
#               the same slope gate (on for NMC, off by default for LFP and LTO)
# Counting alone never reaches 100 % (or 0 %): it stops at 99 % (1 %) until a sync says full
# (empty), so a wrong capacity cannot make the SOC sit at 100 % while the pack still charges.
# soc_err_pct grows with time (offset) and throughput (gain, capacity) since the last anchor
# and shrinks at an anchor (TI MaxError style).
#
# SOH: capacity from the charge passed between two reference points (full, empty, qualified
# rest) at least soc_cap_min_dsoc_pct apart, filtered (weighted by the SOC span, each step
# bounded to soc_cap_step_pct of nominal); per-cell DC resistance from current steps (dV/dI,
# filtered, outliers rejected); r_trend = r / first learnt r.
#
# Float precision: boards have 32-bit floats. Small increments are collected in an
# accumulator and moved into SOC, the learning counter and the lifetime totals in chunks;
# the totals are kept as an int (Ah, Wh) plus a float remainder, so nothing overflows or
# stops counting after years.
import math

from micropython import const

from bms import ocv
from bms.events import EV_SOC_SYNC
from bms.snapshot import FLAG_CELLS_VALID, FLAG_CURRENT_VALID, TEMP_INVALID_DC

SYNC_FULL = const(1)
SYNC_EMPTY = const(2)
SYNC_REST = const(3)

STATE_VERSION = const(1)

_MAH_PER_MA_SAMPLE = 0.25 / 3600.0  # one 250 ms sample of 1 mA in mAh
_RELEASE = 0.03  # a sync is re-armed once SOC moved this far away from the synced value
_CC_CAP_HI = 0.99  # counting alone stops here until a full sync
_CC_CAP_LO = 0.01
_ERR_FULL = 1.0  # % uncertainty right after a full sync
_ERR_EMPTY = 5.0  # the cut-off under load is a few % away from true empty (overpotential)
_ERR_MIN = 0.5
_GAIN_UNC = 0.01  # current gain uncertainty (fraction of the charge moved)
_DVDT_WINDOW_MS = const(300000)
_R_FIRST_N = const(10)  # resistance samples before the trend reference is fixed
_REF_MAX_AGE_MS = 14 * 86400000  # capacity references older than this are dropped


def _clamp(x, lo, hi):
    return lo if x < lo else (hi if x > hi else x)


class Estimator:
    def __init__(self, cfg, events):
        self.cfg = cfg
        self.events = events
        self.chem = cfg.chemistry
        self.nominal_mah = float(cfg.capacity_mah)
        # Published values
        self.soc_pct = 50.0
        self.soc_err_pct = 100.0
        self.capacity_mah = self.nominal_mah
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
        self._rest_done = False
        self._vf = 0.0  # filtered mean cell voltage, mV
        self._vf_ok = False
        self._win_ms = 0
        self._win_v = 0.0
        self._dvdt = 1e9  # uV/s over the last window
        # capacity reference
        self._refs = []  # capacity reference points [soc, sigma %, net mAh, ms]
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
        self.soc_err_pct = _clamp(float(err_pct), _ERR_MIN, 100.0)
        self._p00 = (self.soc_err_pct / 100.0) ** 2
        self._publish()

    def init_from_ocv(self, snap, now_ms):
        """Boot guess from the mean cell voltage where the OCV curve is informative.

        Returns True when used. Elsewhere (LFP plateau) the caller keeps the persisted SOC.
        """
        if not snap.flags & FLAG_CELLS_VALID:
            return False
        v = snap.cell_sum_mv / snap.n_cells
        soc = ocv.soc_from_mv(self.chem, v)
        slope = ocv.min_slope_mv_pct(self.chem, soc)
        if slope * 1000.0 < self.cfg.soc_slope_min_uv:
            return False
        sig = self._ocv_sigma_pct(slope) * 2.0  # not rested: wider
        self.set_soc(soc * 100.0, now_ms, sig)
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
        elif i < -cfg.soc_rest_ma:
            self._dir = -1
        if cells_ok:
            v_mean = snap.cell_sum_mv / snap.n_cells
            self._track_rest(i, v_mean, now_ms, dt_ms)
            if n > 0:
                self._learn_r(snap, v_mean, temp_c)
                if cfg.soc_ekf:
                    self._ekf(i, n * 0.25, v_mean, temp_c)
            self._check_full(snap, i, now_ms)
            self._check_empty(snap, i, now_ms)
            self._check_rest(now_ms, temp_c)
        else:
            self._full_t0 = -1
            self._empty_t0 = -1
        self._publish()

    # ------------------------------------------------------------------ counting
    def _count(self, i, dt_s, snap, temp_c):
        dq = i * dt_s / 3600.0  # mAh
        v_pack = snap.pack_mv if snap.pack_mv > 0 else snap.cell_sum_mv
        dwh = dq * v_pack / 1.0e6
        if dq > 0:
            self._chg_r += dq
            self._chgw_r += dwh
            dq *= self.cfg.soc_chg_eff_permille / 1000.0
        elif dq < 0:
            self._dsg_r -= dq
            self._dsgw_r -= dwh
        self._acc_mah += dq
        # uncertainty growth: offset over time, gain/capacity over throughput
        cap = self.capacity_mah
        cfg = self.cfg
        off_unc = cfg.soc_deadband_ma if self.offset_learnt else cfg.soc_offset_max_ma / 4
        growth = (abs(dq) * (_GAIN_UNC + self._cap_unc()) + off_unc * dt_s / 3600.0) / cap * 100.0
        if temp_c < 10.0 or temp_c > 40.0:
            growth *= 2.0
        self.soc_err_pct = min(100.0, self.soc_err_pct + growth)
        # move accumulated charge in chunks (32-bit float precision)
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
        soc = self._soc + q / self.capacity_mah
        hi = 1.0 if self._full_latch else _CC_CAP_HI
        lo = 0.0 if self._empty_latch else _CC_CAP_LO
        if q > 0 and soc > hi:
            soc = max(hi, self._soc)
        elif q < 0 and soc < lo:
            soc = min(lo, self._soc)
        self._soc = _clamp(soc, 0.0, 1.0)

    def _cap_unc(self):
        return 0.02 if self.synced else 0.05

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
    def _check_full(self, snap, i, now_ms):
        cfg = self.cfg
        if (
            snap.cell_max_mv >= cfg.soc_full_mv
            and -cfg.soc_deadband_ma <= i < cfg.soc_tail_ma
            and self._dir > 0
            and not self._full_latch
        ):
            if self._full_t0 < 0:
                self._full_t0 = now_ms
            elif now_ms - self._full_t0 >= cfg.soc_full_hold_ms:
                self._full_t0 = -1
                self._full_latch = True
                self._empty_latch = False
                self._anchor(1.0, _ERR_FULL, now_ms, SYNC_FULL)
        else:
            self._full_t0 = -1

    def _check_empty(self, snap, i, now_ms):
        cfg = self.cfg
        if i >= -cfg.soc_deadband_ma or self._empty_latch:
            self._empty_t0 = -1
            return
        v_comp = snap.cell_min_mv - i * self.r_mohm / 1000.0  # i < 0: adds the IR drop back
        if v_comp > cfg.soc_empty_mv:
            self._empty_t0 = -1
            return
        if self._empty_t0 < 0:
            self._empty_t0 = now_ms
        elif now_ms - self._empty_t0 >= cfg.soc_empty_hold_ms:
            self._empty_t0 = -1
            soc = ocv.soc_from_mv(self.chem, v_comp, ocv.BRANCH_DSG)
            self._empty_latch = True
            self._empty_soc = soc
            self._full_latch = False
            self._anchor(soc, _ERR_EMPTY, now_ms, SYNC_EMPTY)

    def _anchor(self, soc, err, now_ms, kind):
        self._move_acc()
        self._soc = soc
        self.soc_err_pct = err
        self._p00 = (err / 100.0) ** 2
        self._p01 = 0.0
        self.synced = True
        self.last_sync_ms = now_ms
        self.last_sync_kind = kind
        self.events.add(now_ms, EV_SOC_SYNC, kind, int(soc * 10000))
        self._reference(soc, err, now_ms)

    # ------------------------------------------------------------------ rest / OCV
    def _track_rest(self, i, v_mean, now_ms, dt_ms):
        if abs(i) < self.cfg.soc_rest_ma:
            self._rest_ms += dt_ms
        else:
            self._rest_ms = 0
            self._rest_done = False
            self._vf_ok = False
        if not self._vf_ok:
            self._vf = v_mean
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

    def _ocv_sigma_pct(self, slope):
        e = ocv.TABLE_ERR_MV[self.chem] + ocv.HYST_MV[self.chem] * 0.25 + 2.0
        return e / slope

    def _check_rest(self, now_ms, temp_c):
        """OCV correction after a proper rest, only where the curve is steep.

        Normal rule: rest >= soc_rest_ms and dV/dt < soc_rest_dvdt_uv_s. Where the curve is
        so steep that even the relaxation still to come (dV/dt x 1 h) is worth <= 1 % SOC
        (the ends of the LFP curve), a quarter of the rest time is enough.
        """
        cfg = self.cfg
        if self._rest_done or not 5.0 <= temp_c <= 45.0 or self._dvdt > 1e8:
            return
        need = cfg.soc_rest_ms * (2 if temp_c < 10.0 else 1)
        if self._rest_ms < need // 4:
            return
        soc_o = ocv.soc_from_mv(self.chem, self._vf, self._dir)
        slope = ocv.min_slope_mv_pct(self.chem, soc_o)
        if slope * 1000.0 < cfg.soc_slope_min_uv:
            return  # flat part of the curve: voltage says nothing useful
        sig = self._ocv_sigma_pct(slope)
        settled = self._rest_ms >= need and self._dvdt <= cfg.soc_rest_dvdt_uv_s
        if not settled:
            sig += self._dvdt * 3.6e-3 / slope  # uV/s * 3600 s -> mV, / (mV per %)
            if sig > 1.0:
                return
        self._rest_done = True
        self._move_acc()
        err = self.soc_err_pct
        k = err * err / (err * err + sig * sig)
        self._soc = _clamp(self._soc + k * (soc_o - self._soc), 0.0, 1.0)
        var = err * err * sig * sig / (err * err + sig * sig)
        self.soc_err_pct = max(_ERR_MIN, math.sqrt(var))
        self._p00 = (self.soc_err_pct / 100.0) ** 2
        self.last_sync_ms = now_ms
        self.last_sync_kind = SYNC_REST
        self.events.add(now_ms, EV_SOC_SYNC, SYNC_REST, int(self._soc * 10000))
        if sig <= 3.0 and 10.0 <= temp_c <= 45.0:
            self._reference(soc_o, sig, now_ms)

    # ------------------------------------------------------------------ SOH
    def _reference(self, soc_ref, sig_pct, now_ms):
        """A trustworthy SOC point (sig_pct: its uncertainty): learn capacity from the charge
        passed since the best of the last few reference points (largest span for its
        uncertainty, span >= soc_cap_min_dsoc_pct). The gain is weighted by the span and by
        how uncertain the span is; each step is bounded to soc_cap_step_pct of nominal."""
        self._move_acc()
        net = self._net_mah
        refs = [r for r in self._refs if now_ms - r[3] <= _REF_MAX_AGE_MS]
        best = None
        best_q = 0.0
        for r in refs:
            dsoc = soc_ref - r[0]
            dq = net - r[2]
            if abs(dsoc) * 100.0 < self.cfg.soc_cap_min_dsoc_pct or dq * dsoc <= 0:
                continue
            quality = abs(dsoc) * 100.0 / (sig_pct + r[1])
            if quality > best_q:
                best_q = quality
                best = (dsoc, dq, r[1])
        if best is not None:
            dsoc, dq, sig0 = best
            q_new = dq / dsoc
            nom = self.nominal_mah
            if 0.5 * nom <= q_new <= 1.3 * nom:
                rel = (sig_pct + sig0) / (abs(dsoc) * 100.0) / 0.02
                gain = abs(dsoc) / (1.0 + rel * rel)
                lim = nom * self.cfg.soc_cap_step_pct / 100.0
                self.capacity_mah += _clamp(gain * (q_new - self.capacity_mah), -lim, lim)
                self.cap_updates += 1
        # keep the charge counter relative to the newest reference (float precision)
        for r in refs:
            r[2] -= net
        refs.append([soc_ref, sig_pct, 0.0, now_ms])
        if len(refs) > 3:
            refs.pop(0)
        self._refs = refs
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
        """1RC extended Kalman filter on the mean cell; SOC predicted by counting (done)."""
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
        soc = self._soc + self._acc_mah / cap
        slope = ocv.slope_mv_pct(self.chem, soc)
        if slope * 1000.0 < self.cfg.soc_slope_min_uv:
            return
        h0 = slope * 100.0  # mV per unit SOC
        v_pred = ocv.mv_from_soc(self.chem, soc) + self._v1 + i * r0 / 1000.0
        y = v_mean - v_pred
        r_meas = 15.0 * 15.0
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
        if self._p00 < 1e-8:
            self._p00 = 1e-8
        e = max(1.0, 300.0 * math.sqrt(self._p00))
        if e < self.soc_err_pct:
            self.soc_err_pct = e

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
            "r": self.r_mohm,
            "r0": self.r_first_mohm,
            "rn": self.r_count,
            "off": self.offset_ma,
            "offl": 1 if self.offset_learnt else 0,
            "sync": 1 if self.synced else 0,
            "full": 1 if self._full_latch else 0,
            "empty": 1 if self._empty_latch else 0,
            "tot": [self._chg_ah, self._chg_r, self._dsg_ah, self._dsg_r,
                    self._chg_wh, self._chgw_r, self._dsg_wh, self._dsgw_r],
        }

    def load_state(self, d):
        """Restore a state_dict(). Raises ValueError (and changes nothing) on bad data."""
        if not isinstance(d, dict) or d.get("v") != STATE_VERSION:
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
        self.soc_err_pct = max(err, _ERR_MIN)
        self._p00 = (self.soc_err_pct / 100.0) ** 2
        self.capacity_mah = cap
        self.r_mohm = r
        self.r_first_mohm = r0
        self.r_count = rn
        self.offset_ma = off
        self.offset_learnt = bool(flags[0])
        self.synced = bool(flags[1])
        self._full_latch = bool(flags[2])
        self._empty_latch = bool(flags[3])
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
