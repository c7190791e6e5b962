# Tests of bms.balancing: the chip's groups (from the AFE driver: input map, cell_groups),
# adjacency rule, greedy selection, gates, hysteresis.
from bms.balancing import Balancer, mask_ok
from bms.bq769x0 import BQ769x0, input_map
from bms.config import Config
from bms.snapshot import FLAG_CELLS_VALID, FLAG_PACK_VALID, FLAG_TEMPS_VALID, TEMP_INVALID_DC
from bms.snapshot import Snapshot
from testlib import raises


class Prot:
    def __init__(self, faults=0, latched=0, warnings=0):
        self.faults = faults
        self.latched = latched
        self.warnings = warnings
        self.chg_allowed = True
        self.dsg_allowed = True


class Est:
    soc_pct = 95.0
    soc_err_pct = 2.0


def make_snap(cells, temp_dc=250, die_dc=TEMP_INVALID_DC, t_ms=0):
    s = Snapshot(len(cells), 1)
    for i, v in enumerate(cells):
        s.cell_mv[i] = v
    s.temp_dc[0] = temp_dc
    s.die_temp_dc = die_dc
    s.pack_mv = sum(cells)
    s.flags = FLAG_CELLS_VALID | FLAG_PACK_VALID | FLAG_TEMPS_VALID
    s.t_ms = t_ms
    s.update_stats()
    return s


def groups_of(n, variant=None):
    """The groups the app gives the balancer: its AFE driver's cell_groups."""
    return BQ769x0(None, n, variant=variant).cell_groups


def balancer(cfg):
    return Balancer(cfg, groups_of(cfg.cells))


def bits(mask):
    return [i + 1 for i in range(16) if mask >> i & 1]


# Datasheet input map (bq769x0.md 6): '20 for 3-5, '30 for 6-10, '40 for 11-15 cells.
DS_MAP = {
    3: (1, 2, 5),
    4: (1, 2, 3, 5),
    5: (1, 2, 3, 4, 5),
    6: (1, 2, 5, 6, 7, 10),
    7: (1, 2, 3, 5, 6, 7, 10),
    8: (1, 2, 3, 5, 6, 7, 8, 10),
    9: (1, 2, 3, 4, 5, 6, 7, 8, 10),
    10: tuple(range(1, 11)),
    11: (1, 2, 3, 5, 6, 7, 8, 10, 11, 12, 15),
    12: (1, 2, 3, 5, 6, 7, 8, 10, 11, 12, 13, 15),
    13: (1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15),
    14: tuple(range(1, 14)) + (15,),
    15: tuple(range(1, 16)),
}


def test_input_map_follows_datasheet_map():
    for n in range(3, 16):
        assert input_map(n) == DS_MAP[n], n
    raises(ValueError, input_map, 2)
    raises(ValueError, input_map, 16)


def test_driver_cell_groups():
    assert groups_of(4) == (0, 0, 0, 0)
    assert groups_of(7) == (0, 0, 0, 0, 1, 1, 1)
    assert groups_of(9) == (0, 0, 0, 0, 0, 1, 1, 1, 1)
    assert groups_of(13) == (0,) * 5 + (1,) * 4 + (2,) * 4
    assert groups_of(15) == (0,) * 5 + (1,) * 5 + (2,) * 5
    for n in range(3, 16):
        g = groups_of(n)
        assert g == tuple((ch - 1) // 5 for ch in DS_MAP[n]), n  # the input map's groups
        counts = [g.count(k) for k in range(3)]
        assert all(c == 0 or c >= 3 for c in counts), n  # >= 3 cells per used group
    # a BQ76940 with 10 cells spreads them over three groups: other neighbours
    assert groups_of(10, 76940) == (0, 0, 0, 0, 1, 1, 1, 2, 2, 2)


def test_balancer_takes_the_driver_groups():
    cfg = Config("lfp", 10, 100000)
    cells = [3500] * 10
    b30 = Balancer(cfg, groups_of(10))  # BQ76930: 5 + 5
    b40 = Balancer(cfg, groups_of(10, 76940))  # BQ76940: 4 + 3 + 3
    assert b30.groups == groups_of(10) and b40.groups == groups_of(10, 76940)
    m30 = b30.select(cells, 3400)
    m40 = b40.select(cells, 3400)
    assert mask_ok(m30, b30.groups) and mask_ok(m40, b40.groups)
    assert bits(m30) == [1, 3, 5, 6, 8, 10]
    assert bits(m40) == [1, 3, 5, 7, 8, 10]  # cells 7|8: different groups on the '40
    assert not mask_ok(m40, b30.groups)


def test_mask_ok():
    g = groups_of(15)
    assert mask_ok(0b10101, g)
    assert not mask_ok(0b11, g)
    assert mask_ok(0b110000, g)  # cells 5 and 6: different groups
    assert not mask_ok(1 << 15, g)  # no cell 16


def maximal(mask, cells, floor, groups):
    """No candidate above floor could be added without breaking the adjacency rule."""
    n = len(cells)
    for i in range(n):
        if mask >> i & 1 or cells[i] <= floor:
            continue
        nb = (i > 0 and groups[i - 1] == groups[i] and mask >> (i - 1) & 1) or (
            i + 1 < n and groups[i + 1] == groups[i] and mask >> (i + 1) & 1
        )
        if not nb:
            return False
    return True


def test_15_cells_all_high_three_per_group_alternating():
    cfg = Config("lfp", 15, 100000)
    b = balancer(cfg)
    cells = [3500] * 15
    g = b.groups
    m1 = b.select(cells, 3400)
    assert bits(m1) == [1, 3, 5, 6, 8, 10, 11, 13, 15]
    assert mask_ok(m1, g) and maximal(m1, cells, 3405, g)
    b.mask = m1
    m2 = b.select(cells, 3400)
    assert bits(m2) == [2, 4, 7, 9, 12, 14]
    assert mask_ok(m2, g) and maximal(m2, cells, 3405, g)
    b.mask = m2
    assert b.select(cells, 3400) == m1


def test_update_alternates_and_respects_adjacency_14_high():
    cfg = Config("lfp", 15, 100000)
    b = balancer(cfg)
    cells = [3500] * 14 + [3450]
    p = Prot()
    seen = []
    for k in range(4):
        t = k * cfg.bal_period_ms
        m = b.update(make_snap(cells, t_ms=t), p, Est(), t)
        assert b.active
        assert mask_ok(m, b.groups)
        assert not m >> 14 & 1  # the low cell never bleeds
        assert maximal(m, cells, 3450 + cfg.bal_stop_mv, b.groups)
        seen.append(m)
    assert seen[0] == seen[2] and seen[1] == seen[3] and seen[0] != seen[1]
    assert seen[0] | seen[1] == (1 << 14) - 1  # every high cell gets its turn


def test_two_adjacent_high_cells_take_turns():
    cfg = Config("lfp", 4, 100000)
    b = balancer(cfg)
    cells = [3480, 3475, 3420, 3420]
    got = []
    for k in range(4):
        t = k * cfg.bal_period_ms
        got.append(b.update(make_snap(cells, t_ms=t), Prot(), Est(), t))
    assert got == [0b0001, 0b0010, 0b0001, 0b0010]
    # far higher cell keeps priority (more than bal_swap_mv above its neighbour)
    b = balancer(cfg)
    cells = [3500, 3440, 3420, 3420]
    for k in range(3):
        t = k * cfg.bal_period_ms
        assert b.update(make_snap(cells, t_ms=t), Prot(), Est(), t) == 0b0001


def test_mask_held_between_periods():
    cfg = Config("lfp", 4, 100000)
    b = balancer(cfg)
    cells = [3480, 3475, 3420, 3420]
    m = b.update(make_snap(cells, t_ms=0), Prot(), Est(), 0)
    assert b.update(make_snap(cells, t_ms=2000), Prot(), Est(), 2000) == m
    t = cfg.bal_period_ms
    assert b.update(make_snap(cells, t_ms=t), Prot(), Est(), t) != m


def test_start_stop_hysteresis():
    cfg = Config("lfp", 4, 100000)  # start 15 mV, stop 5 mV
    b = balancer(cfg)
    clock = [0]

    def step(cells):
        clock[0] += cfg.bal_period_ms
        return b.update(make_snap(cells, t_ms=clock[0]), Prot(), Est(), clock[0])

    assert step([3450, 3440, 3440, 3440]) == 0 and not b.active  # 10 mV: not started
    assert step([3450, 3440, 3440, 3435]) == 0  # exactly 15: not above the start
    assert step([3456, 3440, 3440, 3440]) == 0b0001 and b.active  # 16 mV: starts
    assert step([3450, 3440, 3440, 3440]) == 0b0001 and b.active  # 10 mV: keeps going
    assert step([3446, 3440, 3440, 3440]) == 0b0001  # 6 mV: keeps going
    assert step([3445, 3440, 3440, 3440]) == 0 and not b.active  # 5 mV: stops
    assert step([3450, 3440, 3440, 3440]) == 0 and not b.active  # 10 mV: stays off


def test_only_cells_above_min_plus_stop_bleed():
    cfg = Config("lfp", 5, 100000)
    b = balancer(cfg)
    m = b.update(make_snap([3460, 3400, 3404, 3406, 3402]), Prot(), Est(), 0)
    assert bits(m) == [1, 4]  # above min + bal_stop_mv (3405) only
    m = balancer(cfg).update(make_snap([3460, 3400, 3404, 3406, 3450]), Prot(), Est(), 0)
    assert m == 0b10001  # greedy: 3460, then 3450; 3406 is next to a bleeding cell


def test_inhibits():
    cfg = Config("lfp", 4, 100000)
    cells = [3480, 3440, 3440, 3440]

    def run(snap, prot, c=cfg):
        b = balancer(c)
        return b.update(snap, prot, Est(), snap.t_ms), b

    assert run(make_snap(cells), Prot())[0] == 1
    m, b = run(make_snap(cells), Prot(faults=4))
    assert m == 0 and not b.active and b.reason == "fault"
    assert run(make_snap(cells), Prot(latched=1))[0] == 0
    assert run(make_snap(cells), Prot(warnings=8))[0] == 1  # warnings do not stop it
    # hot die, hot cells, no cell temperature
    assert run(make_snap(cells, die_dc=cfg.bal_die_max_dc), Prot())[0] == 0
    assert run(make_snap(cells, die_dc=cfg.bal_die_max_dc - 1), Prot())[0] == 1
    assert run(make_snap(cells, temp_dc=cfg.bal_temp_max_dc), Prot())[0] == 0
    assert run(make_snap(cells, temp_dc=TEMP_INVALID_DC), Prot())[0] == 0
    # low voltage: top cell below the knee (LFP 3.40 V), or a cell near empty
    assert run(make_snap([3390, 3300, 3300, 3300]), Prot())[0] == 0
    assert run(make_snap([3450, 3400, 3400, 2950]), Prot())[0] == 0
    # invalid / stale data
    s = make_snap(cells)
    s.flags = 0
    assert run(s, Prot())[0] == 0
    b = balancer(cfg)
    assert b.update(make_snap(cells, t_ms=0), Prot(), Est(), cfg.stale_ms + 1) == 0
    # disabled
    assert run(make_snap(cells), Prot(), Config("lfp", 4, 100000, bal_enable=0))[0] == 0
    # NMC needs a higher top cell
    nmc = Config("nmc", 4, 100000)
    assert run(make_snap([3790, 3700, 3700, 3700]), Prot(), nmc)[0] == 0
    assert run(make_snap([3850, 3800, 3800, 3800]), Prot(), nmc)[0] == 1


def test_die_temperature_hysteresis():
    cfg = Config("lfp", 4, 100000)
    b = balancer(cfg)
    cells = [3480, 3440, 3440, 3440]
    hot = cfg.bal_die_max_dc
    assert b.update(make_snap(cells, die_dc=hot, t_ms=0), Prot(), Est(), 0) == 0
    # still inhibited just below the limit, released temp_release_dc below it
    assert b.update(make_snap(cells, die_dc=hot - 1, t_ms=1), Prot(), Est(), 1) == 0
    lo = hot - cfg.temp_release_dc - 1
    assert b.update(make_snap(cells, die_dc=lo, t_ms=2), Prot(), Est(), 2) == 1


def test_power_budget_limits_parallel_count():
    # 3.5 V over 100 ohm = 122 mW per cell; 300 mW allows two cells
    cfg = Config("lfp", 15, 100000, bal_max_mw=300)
    b = balancer(cfg)
    m = b.update(make_snap([3500] * 14 + [3400]), Prot(), Est(), 0)
    assert bits(m) == [1, 3]
    assert balancer(Config("lfp", 15, 100000, bal_max_mw=0)).select([3500] * 15, 3400) == 0


def test_custom_group_map():
    cfg = Config("lfp", 6, 100000)
    b = Balancer(cfg, (0, 0, 0, 1, 1, 1))
    assert b.n_cells == 6
    assert bits(b.select([3500] * 6, 3400)) == [1, 3, 4, 6]
    raises(ValueError, Balancer, cfg, (0, 0))
    raises(ValueError, Balancer, cfg, (0,) * 16)


def test_plateau_cells_are_not_bled_even_a_few_mv_above_the_lowest():
    """LFP at the top: cell 1 on the knee, the others on the plateau where 8 mV say nothing
    about their charge. Only the knee cell bleeds; the plateau cells take the charger's
    current and catch up."""
    cfg = Config("lfp", 5, 100000)
    cells = [3460, 3352, 3348, 3356, 3350]
    m = balancer(cfg).update(make_snap(cells), Prot(), Est(), 0)
    assert m == 0b00001
    # once cell 4 reaches the knee it bleeds too (not adjacent to cell 1)
    cells = [3460, 3352, 3348, cfg.bal_min_cell_mv + 5, 3350]
    assert balancer(cfg).update(make_snap(cells), Prot(), Est(), 0) == 0b01001
