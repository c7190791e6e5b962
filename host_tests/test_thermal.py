# Tests of bms.thermal: heater and fan with hysteresis, absent outputs, fail-safes.
from bms.config import Config
from bms.snapshot import FLAG_CELLS_VALID, FLAG_TEMPS_VALID, TEMP_INVALID_DC, Snapshot
from bms.thermal import Thermal


def make_snap(temps, cells=(3300, 3300, 3300, 3300), t_ms=0):
    s = Snapshot(len(cells), len(temps))
    for i, v in enumerate(cells):
        s.cell_mv[i] = v
    for i, t in enumerate(temps):
        s.temp_dc[i] = t
    s.flags = FLAG_CELLS_VALID | FLAG_TEMPS_VALID
    s.t_ms = t_ms
    s.update_stats()
    return s


def cfg(**kw):
    return Config("lfp", 4, 100000, have_heater=1, have_fan=1, **kw)


def test_heater_hysteresis():
    c = cfg()  # on below 5 degC, off at 10 degC
    th = Thermal(c)
    seq = [(60, False), (49, True), (80, True), (99, True), (100, False), (60, False), (49, True)]
    for k, (temp, want) in enumerate(seq):
        th.update(make_snap([temp], t_ms=k), k)
        assert th.heater == want, (temp, want)
    assert th.heater_on_ms > 0


def test_heater_only_when_charge_is_wanted_and_safe():
    c = cfg()
    th = Thermal(c)
    assert not th.update(make_snap([-100]), 0, charge_wanted=False)
    assert th.update(make_snap([-100]), 0)
    # the coldest cell decides on, any sensor at the off level turns it off
    assert not th.update(make_snap([-100, 100]), 0)
    # empty pack, invalid temperature, stale data: off
    assert not Thermal(c).update(make_snap([-100], cells=(2900, 3300, 3300, 3300)), 0)
    assert not Thermal(c).update(make_snap([TEMP_INVALID_DC]), 0)
    assert not Thermal(c).update(make_snap([-100]), c.stale_ms + 1)


def test_absent_outputs_stay_off():
    c = Config("lfp", 4, 100000)  # defaults: no heater, no fan
    th = Thermal(c)
    th.update(make_snap([-200]), 0)
    assert not th.heater and not th.fan
    th.update(make_snap([600]), 0)
    assert not th.fan
    th = Thermal(c, have_heater=True, have_fan=True)  # constructor flags win
    th.update(make_snap([-200]), 0)
    assert th.heater
    th = Thermal(cfg(), have_heater=False, have_fan=False)
    th.update(make_snap([600]), 0)
    assert not th.fan


def test_fan_hysteresis_and_fail_safe():
    th = Thermal(cfg())  # on at 35 degC, off below 30 degC
    seq = [(250, False), (349, False), (350, True), (320, True), (300, True), (299, False)]
    for temp, want in seq:
        th.update(make_snap([temp]), 0)
        assert th.fan == want, (temp, want)
    th.update(make_snap([TEMP_INVALID_DC]), 0)
    assert th.fan and not th.heater
    # the hottest sensor decides
    th = Thermal(cfg())
    th.update(make_snap([200, 360]), 0)
    assert th.fan
