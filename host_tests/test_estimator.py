# Tests of bms.estimator (SOC, SOH, counters) and bms.ocv. CPython and MicroPython.
#
# The plant is NOT the estimator's table: its cells follow the OCV of other cells (the PyBaMM
# Prada2013 LFP and Chen2020 NMC model cells, tools/traces/ocv_*.csv), with a +/-10 mV LFP
# hysteresis, series resistance and one RC polarisation, while the estimator uses the built-in
# generic tables - what a user has. Chargers: CC-CV with short and long CV phases, tails from
# C/50 to C/20, an inverter that stops at its CVL, a drop to float.
import json

from bms import ocv
from bms.config import Config
from bms.estimator import SYNC_EMPTY, SYNC_FULL, SYNC_REST, Estimator
from bms.events import EV_CONFIG_REJECT, EV_SOC_SYNC, EventLog
from bms.snapshot import (
    FLAG_CELLS_VALID,
    FLAG_CURRENT_VALID,
    FLAG_PACK_VALID,
    FLAG_TEMPS_VALID,
    Snapshot,
)
from testlib import approx, raises

# Model-cell OCV tables (0.1 mV, 41 points, 0..100 %): the plants' cells.
PRADA = (
    20000, 25369, 27853, 29057, 29781, 30444, 31080, 31491, 31685, 31781, 31857, 31945, 32058,
    32190, 32324, 32439, 32525, 32584, 32621, 32645, 32660, 32670, 32678, 32683, 32688, 32693,
    32700, 32712, 32740, 32809, 32926, 33037, 33097, 33122, 33132, 33137, 33142, 33146, 33164,
    33359, 36000,
)
CHEN = (
    25000, 29212, 31094, 32107, 32959, 33787, 34339, 34641, 34852, 35056, 35286, 35545, 35814,
    36068, 36290, 36487, 36670, 36855, 37054, 37273, 37509, 37750, 37984, 38200, 38406, 38624,
    38896, 39206, 39479, 39713, 39943, 40181, 40421, 40640, 40809, 40911, 40967, 41048, 41236,
    41564, 42000,
)
PLANT = {"lfp": (PRADA, 10.0), "nmc": (CHEN, 2.0)}  # table, half hysteresis (mV)


def _plant_ocv(t, soc):
    n = len(t) - 1
    if soc <= 0.0:
        return t[0] * 0.1
    if soc >= 1.0:
        return t[n] * 0.1
    x = soc * n
    i = int(x)
    return (t[i] + (t[i + 1] - t[i]) * (x - i)) * 0.1


class Pack:
    """Test plant: 4 equal cells of another cell type than the estimator's table."""

    def __init__(self, chem="nmc", cap_mah=10000, soc=0.5, r_mohm=20.0):
        self.chem = chem
        self.table, self.h_mv = PLANT[chem]
        self.cap = cap_mah
        self.soc = soc
        self.r = r_mohm
        self.h = 0.0  # hysteresis state -1..1
        self.v_rc = 0.0  # polarisation, mV
        self.snap = Snapshot(4, 1)
        self.t_ms = 0
        self.i_ma = 0
        self.offset_ma = 0
        self.fets = True
        self.watch = None  # list: capacity appended at every capacity update
        self._nup = 0

    def ocv_mv(self):
        return _plant_ocv(self.table, self.soc) + self.h * self.h_mv

    def cell_mv(self):
        return self.ocv_mv() + self.i_ma * self.r / 1000.0 + self.v_rc

    def step(self, est, i_ma, seconds, dt_s=1):
        """Run seconds at current i_ma (true), one estimator update every dt_s seconds."""
        snap = self.snap
        for _ in range(int(seconds // dt_s)):
            self.i_ma = i_ma
            dq = i_ma * dt_s / 3600.0 / self.cap
            self.soc += dq
            if dq:
                tgt = 1.0 if dq > 0 else -1.0
                self.h += (tgt - self.h) * min(1.0, abs(dq) / 0.08)
            a = dt_s / 60.0
            self.v_rc += (i_ma * self.r * 0.5 / 1000.0 - self.v_rc) * (a if a < 1.0 else 1.0)
            n = dt_s * 4
            meas = i_ma + self.offset_ma
            snap.cc_sum_ma += meas * n
            snap.cc_samples += n
            snap.current_ma = meas
            mv = int(round(self.cell_mv()))
            for k in range(4):
                snap.cell_mv[k] = mv
            snap.temp_dc[0] = 250
            snap.update_stats()
            snap.pack_mv = snap.cell_sum_mv
            snap.chg_fet = self.fets
            snap.dsg_fet = self.fets
            snap.flags = FLAG_CELLS_VALID | FLAG_PACK_VALID | FLAG_CURRENT_VALID | FLAG_TEMPS_VALID
            self.t_ms += dt_s * 1000
            est.update(snap, self.t_ms)
            if self.watch is not None and est.cap_updates != self._nup:
                self._nup = est.cap_updates
                self.watch.append(est.capacity_mah)

    def cc_cv(self, est, v_max, c_rate=0.5, tail_div=30, dt_s=2):
        """CC at c_rate until a cell reaches v_max, then CV at v_max until the current falls
        to C/tail_div, then the charger stops."""
        i = int(self.cap * c_rate)
        while self.cell_mv() < v_max and self.soc < 1.0:
            self.step(est, i, dt_s, dt_s)
        while True:
            i = int((v_max - self.ocv_mv() - self.v_rc) * 1000.0 / self.r)
            if i <= self.cap // tail_div or self.soc >= 1.0:
                break
            self.step(est, i, dt_s, dt_s)

    def discharge_to(self, est, v_min, c_rate=0.3, dt_s=10):
        i = -int(self.cap * c_rate)
        while self.cell_mv() > v_min and self.soc > 0.0:
            self.step(est, i, dt_s, dt_s)

    def err(self, est):
        return est.soc_pct - self.soc * 100.0


def make(chem="nmc", cap=10000, table=None, **kw):
    cfg = Config(chem, 4, cap, **kw)
    ev = EventLog(64)
    return Estimator(cfg, ev, table), ev


def syncs(ev, kind=None):
    out = []
    for t, code, a, b in ev.to_list():
        if code == EV_SOC_SYNC and (kind is None or a == kind):
            out.append((t, a, b))
    return out


def test_ocv_tables_monotonic_and_inverse():
    for chem in ("lfp", "nmc", "lto"):
        t = ocv.table(chem)
        for k in range(1, len(t)):
            assert t[k] > t[k - 1]
        for soc in (0.05, 0.3, 0.55, 0.8, 0.97):
            mv = ocv.mv_from_soc(chem, soc)
            assert approx(ocv.soc_from_mv(chem, mv), soc, 1e-4)
            tab = ocv.Table(chem)
            assert approx(tab.soc(tab.mv(soc, 0.5), 0.5), soc, 1e-4)
    assert ocv.slope_mv_pct("lfp", 0.5) < 1.0
    assert ocv.slope_mv_pct("nmc", 0.5) > 5.0
    raises(ValueError, ocv.set_table, "nmc", (1, 2, 3))
    raises(ValueError, ocv.Table, "nmc", (30000,) * 20)  # not increasing
    raises(ValueError, ocv.Table, "nmc", ("x",) * 20)
    raises(ValueError, ocv.Table, "abc")


def test_readings_weighted_by_what_the_table_can_tell():
    gen = ocv.Table("lfp")
    own = ocv.Table("lfp", PRADA)
    assert not gen.own and own.own
    # LFP plateau, generic table: a rested voltage says almost nothing
    _, s_plateau = gen.reading(3290.0, 0.0, 5.0)
    assert s_plateau > 15.0, s_plateau
    # the same voltage through the cell's own table is worth more
    _, s_own = own.reading(3260.0, 0.0, 5.0)
    assert s_own < s_plateau
    # NMC, generic table: at 3.75 V known NMC cells lie 0-19 % apart (the Ecker2015 cell's
    # flat part), so the reading is worth little; above 60 % a few %; the cell's own: ~1 %
    _, s_nmc = ocv.Table("nmc").reading(3750.0, 0.0, 2.0)
    _, s_nmc_hi = ocv.Table("nmc").reading(4020.0, 0.0, 2.0)
    _, s_nmc_own = ocv.Table("nmc", CHEN).reading(3750.0, 0.0, 2.0)
    assert s_nmc > 6.0 and 1.5 < s_nmc_hi < 5.0 and s_nmc_own < 1.5, (
        s_nmc, s_nmc_hi, s_nmc_own)
    # at the top of charge the tables meet: the reading is centred on the table's own value,
    # not pulled below it by the cut interval
    z, s_top = ocv.Table("nmc").reading(4190.0, 1.0, 2.0)
    assert abs(z - ocv.Table("nmc").soc(4190.0, 1.0)) < 1e-6 and s_top < 2.5, (z, s_top)


def test_cc_accuracy_and_drain():
    est, _ = make("lfp", 10000)
    p = Pack("lfp", 10000, soc=0.5)
    est.set_soc(50.0, 0)
    p.step(est, -1000, 3600, dt_s=5)  # 1 A for 1 h, 20 samples per update
    assert p.snap.cc_samples == 0 and p.snap.cc_sum_ma == 0
    assert approx(est.soc_pct, 40.0, 0.05), est.soc_pct
    p.step(est, 2000, 1800, dt_s=1)
    assert approx(est.soc_pct, 50.0 - 0.01 * 0.1, 0.06), est.soc_pct  # 99.9 % efficiency
    assert approx(est.dsg_mah_total, 1000.0, 0.5)
    assert approx(est.chg_mah_total, 1000.0, 0.5)
    assert est.dsg_wh_total > 0 and est.chg_wh_total > 0
    assert approx(est.cycles, 0.1, 1e-3)


def test_cc_alone_never_reports_full():
    est, _ = make("lfp", 10000)
    p = Pack("lfp", 10000, soc=0.5)
    est.set_soc(95.0, 0)
    p.step(est, 1000, 1800, dt_s=10)  # the plant stays on its plateau: no sync possible
    assert approx(est.soc_pct, 99.0, 0.01), est.soc_pct


def test_short_cv_charger_is_full():
    """The issue's charger: C/2 CC to 3.55 V, about 2 minutes of CV down to C/30, stop."""
    est, ev = make("lfp", 10000, chg_cell_mv=3550, ccl_zero_mv=3560, soc_full_mv=3540)
    p = Pack("lfp", 10000, soc=0.6, r_mohm=10)
    est.set_soc(40.0, 0)  # 20 points low
    p.cc_cv(est, 3550, 0.5, 30)
    p.step(est, 0, 300, dt_s=2)
    assert len(syncs(ev, SYNC_FULL)) == 1
    assert est.soc_pct >= 98.0 and abs(p.err(est)) <= 1.5, (est.soc_pct, p.soc)
    assert abs(p.err(est)) <= 2.0 * est.soc_err_pct
    # floating at the top for hours: no repeated sync, no drift
    p.step(est, 0, 7200, dt_s=10)
    assert len(syncs(ev, SYNC_FULL)) == 1 and est.soc_pct >= 98.0
    # a discharge leaves the top at once and follows the charge; the next charge syncs again
    p.step(est, -2000, 1800, dt_s=10)
    assert abs(p.err(est)) <= 1.5, (est.soc_pct, p.soc)
    p.cc_cv(est, 3550, 0.5, 30)
    p.step(est, -200, 120, dt_s=2)  # the house load takes over at once
    assert len(syncs(ev, SYNC_FULL)) == 2 and abs(p.err(est)) <= 1.5


def test_full_for_tails_c50_to_c20_and_long_cv():
    for tail_div, c_rate in ((50, 0.2), (30, 0.5), (20, 0.5)):
        est, ev = make("lfp", 10000, chg_cell_mv=3600, ccl_zero_mv=3610, soc_full_mv=3590)
        p = Pack("lfp", 10000, soc=0.7, r_mohm=10)
        est.set_soc(60.0, 0)
        p.cc_cv(est, 3600, c_rate, tail_div)
        p.step(est, 0, 120, dt_s=2)
        assert len(syncs(ev, SYNC_FULL)) == 1, (tail_div, syncs(ev))
        assert abs(p.err(est)) <= 1.5, (tail_div, est.soc_pct, p.soc)


def test_inverter_stopping_at_cvl_and_float():
    # no CV at all: the charge current stops when a cell reaches the CVL (3.50 V)
    est, ev = make("lfp", 10000, chg_cell_mv=3500, soc_full_mv=3490)
    p = Pack("lfp", 10000, soc=0.7, r_mohm=10)
    est.set_soc(55.0, 0)
    i = 3300
    while p.cell_mv() < 3500:
        p.step(est, i, 2, 2)
    p.step(est, 0, 600, dt_s=2)
    assert syncs(ev), "a charge that stopped at the CVL is a reading"
    assert abs(p.err(est)) <= 2.0 * est.soc_err_pct and abs(p.err(est)) <= 2.5, (
        est.soc_pct, est.soc_err_pct, p.soc)
    # absorption at 3.45 V, then the charger drops to float: voltage falls, current ~0
    est, ev = make("lfp", 10000)
    p = Pack("lfp", 10000, soc=0.7, r_mohm=10)
    est.set_soc(55.0, 0)
    p.cc_cv(est, 3450, 0.25, 15)
    p.step(est, 0, 3600, dt_s=10)
    assert len(syncs(ev, SYNC_FULL)) == 1
    assert abs(p.err(est)) <= 2.0, (est.soc_pct, p.soc)


def test_nmc_charger_below_full_is_not_100():
    """A 4.10 V charger fills an NMC cell to about 90 %: "full" follows the charge voltage."""
    est, ev = make("nmc", 10000, chg_cell_mv=4100, float_cell_mv=4050, soc_full_mv=4090)
    p = Pack("nmc", 10000, soc=0.5, r_mohm=20)
    est.set_soc(50.0, 0)
    p.cc_cv(est, 4100, 0.3, 50)
    p.step(est, 0, 300, dt_s=5)
    assert syncs(ev, SYNC_FULL)
    assert est.soc_pct < 97.0 and abs(p.err(est)) <= 4.0, (est.soc_pct, p.soc)
    assert abs(p.err(est)) <= 2.0 * est.soc_err_pct


def test_empty_sync():
    est, ev = make("lfp", 10000)
    p = Pack("lfp", 10000, soc=0.2, r_mohm=10)
    est.set_soc(40.0, 0)
    p.discharge_to(est, 2850, dt_s=1)
    p.step(est, -3000, 20, dt_s=1)
    s = syncs(ev, SYNC_EMPTY)
    assert len(s) >= 1, s
    assert est.soc_pct < 10.0
    assert abs(p.err(est)) <= 2.0 * est.soc_err_pct, (est.soc_pct, est.soc_err_pct, p.soc)


def test_plateau_rest_moves_soc_little():
    """A rest in the LFP plateau, through the generic table: the reading is worth little, so
    it never moves SOC by more than the uncertainty allows, and the truth stays inside it."""
    for soc0 in (0.25, 0.4, 0.6, 0.8):
        est, ev = make("lfp", 10000)
        p = Pack("lfp", 10000, soc=soc0 + 0.05, r_mohm=10)
        est.set_soc(soc0 * 100.0 + 5.0, 0, 3.0)  # as after a full sync and some counting
        p.step(est, -2000, 900, dt_s=10)
        before = est.soc_pct
        sig = est.soc_err_pct
        p.step(est, 0, 6 * 3600, dt_s=10)
        assert abs(est.soc_pct - before) <= 2.0 * sig, (soc0, before, est.soc_pct, sig)
        assert abs(p.err(est)) <= 2.0 * est.soc_err_pct, (soc0, est.soc_pct, p.soc)


def test_rest_correction_nmc():
    """Above 60 % known NMC tables agree within a few %: a rest corrects a start 30 points
    wrong to within 5 %. Mid-range (3.7-3.8 V) they do not (one known cell lies 19 % off): the
    same rest moves SOC honestly - the truth inside 2 sigma - but is worth less."""
    est, ev = make("nmc", 10000)
    p = Pack("nmc", 10000, soc=0.8)
    est.set_soc(50.0, 0, 20.0)
    p.step(est, -3000, 600, dt_s=10)  # a discharge, then a rest
    p.step(est, 0, 3600, dt_s=10)
    assert syncs(ev, SYNC_REST)
    assert abs(p.err(est)) <= 5.0 and abs(p.err(est)) <= 2.0 * est.soc_err_pct, (
        est.soc_pct, p.soc)
    assert est.soc_err_pct < 5.0
    mid, _ = make("nmc", 10000)
    pm = Pack("nmc", 10000, soc=0.5)
    mid.set_soc(80.0, 0, 20.0)
    pm.step(mid, -3000, 600, dt_s=10)
    pm.step(mid, 0, 3600, dt_s=10)
    assert abs(pm.err(mid)) < 30.0 - 10.0 and abs(pm.err(mid)) <= 2.0 * mid.soc_err_pct, (
        mid.soc_pct, pm.soc, mid.soc_err_pct)
    assert mid.soc_err_pct > est.soc_err_pct
    # with the cell's own table the same mid-range rest is worth more
    est2, _ = make("nmc", 10000, CHEN)
    p2 = Pack("nmc", 10000, soc=0.5)
    est2.set_soc(80.0, 0, 20.0)
    p2.step(est2, -3000, 600, dt_s=10)
    p2.step(est2, 0, 3600, dt_s=10)
    assert abs(p2.err(est2)) <= 1.5 and est2.soc_err_pct < mid.soc_err_pct


def test_offset_calibration():
    est, _ = make("lfp", 100000)
    p = Pack("lfp", 100000, soc=0.5)
    p.offset_ma = 40  # the sensor reads 40 mA with no current
    est.set_soc(50.0, 0)
    p.fets = False  # both FETs open: the true current is zero
    p.step(est, 0, 600, dt_s=1)
    assert approx(est.offset_ma, 40.0, 1.0), est.offset_ma
    p.fets = True
    p.step(est, 0, 10 * 3600, dt_s=10)
    assert abs(p.err(est)) <= 2.0 * est.soc_err_pct


def test_offset_learnt_in_long_rest():
    est, _ = make("nmc", 100000)
    p = Pack("nmc", 100000, soc=0.5)
    p.offset_ma = -60
    est.set_soc(50.0, 0)
    p.step(est, 0, 3 * 3600, dt_s=10)
    assert approx(est.offset_ma, -60.0, 3.0), est.offset_ma


def test_capacity_learnt_on_an_aged_pack():
    """85 % of nominal, two full cycles: within 3 %, each step bounded, persisted."""
    est, _ = make("nmc", 10000, chg_cell_mv=4180, ccl_zero_mv=4190, soc_full_mv=4170)
    p = Pack("nmc", 8500, soc=0.5)
    est.set_soc(50.0, 0)
    caps = [est.capacity_mah]
    p.watch = caps
    for _ in range(2):
        p.cc_cv(est, 4180, 0.3, 30)
        p.step(est, 0, 1800, dt_s=10)
        p.discharge_to(est, 3000)
        p.step(est, 0, 1800, dt_s=10)
    p.cc_cv(est, 4180, 0.3, 30)
    p.step(est, 0, 600, dt_s=10)
    steps = [abs(caps[k + 1] - caps[k]) for k in range(len(caps) - 1)]
    lim = 10000 * est.cfg.soc_cap_step_pct / 100.0
    assert steps and max(steps) <= lim + 1e-6, steps
    assert abs(est.capacity_mah - 8500) / 8500 < 0.03, caps
    assert est.cap_err_pct < 5.0
    assert approx(est.soh_pct, est.capacity_mah / 100.0, 1e-6)
    est2, _ = make("nmc", 10000)
    est2.load_state(json.loads(json.dumps(est.state_dict())))
    assert approx(est2.capacity_mah, est.capacity_mah, 1e-6)
    assert approx(est2.cap_err_pct, est.cap_err_pct, 1e-6)


def test_one_bad_update_moves_capacity_little():
    est, _ = make("nmc", 10000)
    p = Pack("nmc", 10000, soc=0.5)
    est.set_soc(50.0, 0)
    p.cc_cv(est, 4150, 0.3, 30)
    p.discharge_to(est, 3000)
    p.step(est, 0, 3600, dt_s=10)
    c0 = est.capacity_mah
    p.offset_ma = -150  # a wild measurement error during one cycle
    p.cc_cv(est, 4150, 0.3, 30)
    p.step(est, 0, 600, dt_s=10)
    assert abs(est.capacity_mah - c0) <= 10000 * est.cfg.soc_cap_step_pct / 100.0 + 1e-6


def test_resistance_from_steps():
    est, _ = make("lfp", 10000)
    p = Pack("lfp", 10000, soc=0.5, r_mohm=50.0)
    est.set_soc(50.0, 0)
    for _ in range(40):
        p.step(est, 0, 20)
        p.step(est, -3000, 20)
    assert 45.0 <= est.r_mohm <= 60.0, est.r_mohm  # R plus the polarisation of one second
    assert approx(est.r_trend, 1.0, 0.05)
    p.r = 65.0
    p.soc = 0.5
    for _ in range(150):
        p.step(est, 0, 20)
        p.step(est, 2000, 20)
    assert est.r_trend > 1.15, est.r_trend


def test_uncertainty_grows_then_shrinks():
    est, _ = make("lfp", 10000, soc_full_hold_ms=60000)
    p = Pack("lfp", 10000, soc=0.5, r_mohm=10)
    est.set_soc(50.0, 0)
    p.cc_cv(est, 3450, 0.3, 30)
    p.step(est, 0, 600, dt_s=10)
    e0 = est.soc_err_pct
    assert e0 <= 1.5
    last = e0
    for _ in range(6):
        p.step(est, -1000, 1800, dt_s=10)
        assert est.soc_err_pct > last
        last = est.soc_err_pct
    p.cc_cv(est, 3450, 0.3, 30)
    p.step(est, 0, 600, dt_s=10)
    assert est.soc_err_pct <= e0 + 0.2


def test_ekf_with_own_table_converges():
    est, _ = make("nmc", 10000, CHEN, soc_ekf=1)
    p = Pack("nmc", 10000, soc=0.4, r_mohm=20.0)
    est.set_soc(65.0, 0, 25.0)
    for _ in range(12):
        p.step(est, -2000, 300, dt_s=1)
        p.step(est, 1500, 300, dt_s=1)
    assert abs(p.err(est)) <= 3.0, (est.soc_pct, p.soc)


def test_board_table_installed():
    est, _ = make("lfp", 10000, PRADA)
    assert est.table.own and est.table.t == PRADA
    est2, _ = make("lfp", 10000)
    assert not est2.table.own and not est2.table_rejected
    est3, ev3 = make("lfp", 10000, (1, 2, 3))  # a bad board table: generic, and logged
    assert est3.table_rejected and not est3.table.own
    assert [e for e in ev3.to_list() if e[1] == EV_CONFIG_REJECT and e[2] == -1]


def test_state_roundtrip_and_rejects_bad_data():
    est, _ = make("nmc", 10000)
    p = Pack("nmc", 10000, soc=0.5)
    est.set_soc(50.0, 0)
    p.step(est, -2500, 3600, dt_s=10)
    p.step(est, 2000, 1800, dt_s=10)
    d = json.loads(json.dumps(est.state_dict()))
    est2, _ = make("nmc", 10000)
    est2.load_state(d)
    for k in ("soc_pct", "soc_err_pct", "capacity_mah", "r_mohm", "chg_mah_total",
              "dsg_mah_total", "chg_wh_total", "dsg_wh_total", "cycles", "hyst", "cv_tau_s"):
        assert approx(getattr(est2, k), getattr(est, k), 1e-6), k
    bad = []
    for key, val in (("v", 99), ("soc", 150.0), ("cap", -1), ("err", "x"), ("r", 0.0),
                     ("chem", "lfp"), ("tot", [1, 2]), ("off", 1e9), ("soc", float("nan")),
                     ("hyst", 3.0), ("tau", 0.0)):
        x = dict(d)
        x[key] = val
        bad.append(x)
    x = dict(d)
    del x["cap"]
    bad.append(x)
    bad.append([1, 2, 3])
    x = dict(d)
    x["tot"] = [0, 0.5, 0, 5000.0, 0, 0.1, 0, 0.1]  # remainder beyond one unit
    bad.append(x)
    before = est2.state_dict()
    for x in bad:
        raises(ValueError, est2.load_state, x)
    assert est2.state_dict() == before
    # a version-1 record (before the capacity uncertainty was kept) still loads
    v1 = dict(d)
    for k in ("capu", "hyst", "tau", "taun"):
        del v1[k]
    v1["v"] = 1
    est3, _ = make("nmc", 10000)
    est3.load_state(v1)
    assert approx(est3.soc_pct, est.soc_pct, 1e-6)


def test_counters_do_not_lose_small_increments():
    est, _ = make("lfp", 100000)
    est.load_state(dict(est.state_dict(), tot=[10000000, 0.0, 10000000, 0.0, 0, 0.0, 0, 0.0]))
    p = Pack("lfp", 100000, soc=0.5)
    p.step(est, 500, 3600, dt_s=1)  # 500 mAh in 0.14 mAh steps on top of 10 GAh
    assert approx(est.chg_mah_total - 1.0e10, 500.0, 0.1), est.chg_mah_total
