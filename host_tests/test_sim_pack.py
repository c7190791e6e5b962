# Tests of the simulator's pack truth model, OCV tables and home-day profile.
from testlib import approx

from simlib import ocv_data
from simlib.pack import Pack
from simlib.profile import HomeDay, Rng


def _run(p, seconds, ma, chg=1, dsg=1, bal=0):
    for _ in range(int(seconds * 4)):
        p.step(250, ma, chg, dsg, bal)


def test_ocv_tables():
    for t in (ocv_data.LFP, ocv_data.NMC, ocv_data.LTO):
        assert len(t) == 41
        assert all(t[k] < t[k + 1] for k in range(40))
    assert ocv_data.LFP[0] == 2010 and ocv_data.LFP[40] == 3598
    assert ocv_data.NMC[0] == 2520 and ocv_data.NMC[40] == 4194
    assert ocv_data.LTO[0] == 1500 and ocv_data.LTO[40] == 2800
    assert 2300 <= ocv_data.ocv_mv(ocv_data.LTO, 0.5) <= 2500
    assert approx(ocv_data.soc_from_ocv(ocv_data.NMC, ocv_data.ocv_mv(ocv_data.NMC, 0.37)),
                  0.37, 1e-6)


def test_ocv_at_rest_equals_curve():
    for chem, table in (("lfp", ocv_data.LFP), ("nmc", ocv_data.NMC), ("lto", ocv_data.LTO)):
        for soc in (0.1, 0.5, 0.8125):
            p = Pack(chem, 4, 10000, 1, soc=soc, self_discharge_pct_month=0.0)
            _run(p, 10, 0)
            exp = ocv_data.ocv_mv(table, soc)
            for i in range(4):
                assert abs(p.cell_mv(i) - exp) <= 1, (chem, soc, p.cell_mv(i), exp)
                assert p.true_soc(i) == soc
            assert approx(p.true_soc(), soc, 1e-9)


def test_charge_increases_soc_by_integral():
    p = Pack("nmc", 3, 10000, 2, soc=0.2, self_discharge_pct_month=0.0)
    _run(p, 3600, 5000)  # 5 Ah into 10 Ah
    for i in range(3):
        assert approx(p.true_soc(i), 0.7, 1e-6)
    assert approx(p.ah_in, 5.0, 1e-6)
    _run(p, 1800, -4000)
    assert approx(p.true_soc(), 0.5, 1e-6)
    # under load the terminal voltage sits below OCV (R0 + RC)
    assert p.cell_mv(0) < ocv_data.ocv_mv(ocv_data.NMC, 0.5) - 5


def test_blocked_direction_gives_zero_current():
    p = Pack("lfp", 4, 10000, 1, soc=0.5, self_discharge_pct_month=0.0)
    p.step(250, 5000, 0, 1, 0)  # charge with CHG off
    assert p.current_ma == 0 and p.true_soc(0) == 0.5
    p.step(250, -5000, 1, 0, 0)  # discharge with DSG off
    assert p.current_ma == 0 and p.true_soc(0) == 0.5
    p.step(250, 5000, 1, 0, 0)  # charge passes the DSG body diode
    assert p.current_ma == 5000
    p.step(250, -5000, 0, 1, 0)  # discharge passes the CHG body diode
    assert p.current_ma == -5000
    p.step(250, -5000, 0, 0, 0)
    assert p.current_ma == 0


def test_balancing_drains_a_cell():
    p = Pack("lfp", 4, 10000, 1, soc=0.6, self_discharge_pct_month=0.0, bleed_ohm=66.0)
    _run(p, 3600, 0, bal=0b0010)
    drop = 0.6 - p.true_soc(1)
    exp = 3.3 / 66.0 * 0.7 * 1000 / 10000  # ~35 mA for 1 h out of 10 Ah
    assert abs(drop - exp) < 0.1 * exp, drop
    assert p.true_soc(0) == 0.6 and p.true_soc(2) == 0.6
    assert p.bleed_mah[1] > 30 and p.bleed_mah[0] == 0


def test_thermal_model_warms_with_current_and_cools():
    p = Pack("nmc", 4, 5000, 1, soc=0.9, ambient_c=20.0)
    _run(p, 1200, -10000)  # 2 C
    t_hot = p.temp_c
    assert t_hot > 21.0, t_hot
    _run(p, 7200, 0)
    assert p.temp_c < t_hot - 0.5 and p.temp_c >= 20.0
    q = Pack("lfp", 4, 5000, 1, ambient_c=20.0)
    q.heater_w = 20.0
    _run(q, 600, 0)
    assert q.temp_c > 22.0


def test_cold_raises_resistance_and_hysteresis():
    warm = Pack("lfp", 1, 10000, 1, soc=0.5, ambient_c=25.0)
    cold = Pack("lfp", 1, 10000, 1, soc=0.5, ambient_c=-10.0)
    warm.step(250, -10000, 1, 1, 0)
    cold.step(250, -10000, 1, 1, 0)
    drop_w = warm.ocv_mv(0) - warm.cell_mv(0)
    drop_c = cold.ocv_mv(0) - cold.cell_mv(0)
    assert drop_c > 1.5 * drop_w > 0
    # LFP hysteresis: after charging the rested voltage is above the mean curve
    p = Pack("lfp", 1, 10000, 1, soc=0.45, self_discharge_pct_month=0.0)
    _run(p, 720, 5000)  # 10 % throughput: ~86 % of the way to the charge branch
    _run(p, 600, 0)
    mean = ocv_data.ocv_mv(ocv_data.LFP, p.true_soc(0))
    assert 7 <= p.cell_mv(0) - mean <= 11
    _run(p, 1440, -5000)
    _run(p, 600, 0)
    mean = ocv_data.ocv_mv(ocv_data.LFP, p.true_soc(0))
    assert -11 <= p.cell_mv(0) - mean <= -7


def test_spread_aging_self_discharge_and_determinism():
    a = Pack("lfp", 8, 10000, 7, soc=0.5, capacity_spread=0.05, soc_spread=0.03)
    b = Pack("lfp", 8, 10000, 7, soc=0.5, capacity_spread=0.05, soc_spread=0.03)
    c = Pack("lfp", 8, 10000, 8, soc=0.5, capacity_spread=0.05, soc_spread=0.03)
    assert a.cap_mah == b.cap_mah and a.soc == b.soc
    assert a.soc != c.soc
    assert max(a.soc) - min(a.soc) > 0.005
    # pack SOC is limited by the weakest cell
    assert a.true_soc() < 0.5 + 0.03
    p = Pack("lfp", 2, 10000, 1, soc=0.5, self_discharge_pct_month=3.0)
    _run(p, 3600, 0)
    assert 0.49995 < p.true_soc(0) < 0.5
    p.age(capacity_factor=0.8)
    p.set_soc(0.5)
    _run(p, 3600, 2000)
    assert approx(p.true_soc(0), 0.5 + 2.0 / 8.0, 2e-4)


def test_fault_injection_offsets():
    p = Pack("lfp", 4, 10000, 1, soc=0.5)
    p.cell_offset_mv[1] = 50
    p.cell_force_mv[2] = 3900
    _run(p, 1, 0)
    assert p.cell_mv(1) == p.cell_mv(0) + 50
    assert p.cell_mv(2) == 3900


def test_rng_deterministic():
    a = Rng(5)
    b = Rng(5)
    xs = [a.uniform() for _ in range(100)]
    assert xs == [b.uniform() for _ in range(100)]
    assert 0.3 < sum(xs) / 100 < 0.7


def _mean(prof, h0, h1, day=0):
    s = 0
    n = 0
    t = day * 86400000 + int(h0 * 3600000)
    while t < day * 86400000 + int(h1 * 3600000):
        s += prof.current_ma(t)
        n += 1
        t += 60000
    return s / n


def test_home_day_profile_plausible():
    cap = 100000
    prof = HomeDay(cap, 1)
    assert _mean(prof, 10, 14) > 0.05 * cap  # PV charges at midday
    assert _mean(prof, 0, 5) < -0.005 * cap  # load at night
    assert _mean(prof, 20, 23) < -0.01 * cap
    lo = hi = 0
    for m in range(1440 * 3):
        i = prof.current_ma(m * 60000 + 250)
        lo = min(lo, i)
        hi = max(hi, i)
    assert -0.5 * cap <= lo and hi <= 0.5 * cap
    # seeded, and a new day every day
    again = HomeDay(cap, 1)
    assert [again.current_ma(t * 250) for t in range(0, 400000, 997)] == \
           [HomeDay(cap, 1).current_ma(t * 250) for t in range(0, 400000, 997)]
    d0 = [prof.current_ma(m * 60000) for m in range(1440)]
    d1 = [prof.current_ma(86400000 + m * 60000) for m in range(1440)]
    assert d0 != d1
    # interpolates between minutes
    a = prof.current_ma(12 * 3600000)
    b = prof.current_ma(12 * 3600000 + 60000)
    mid = prof.current_ma(12 * 3600000 + 30000)
    assert min(a, b) <= mid <= max(a, b)
