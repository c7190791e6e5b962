# bms.balancing: passive (bleed) balancing for the BQ769x0.
#
# Balancer.update() runs in a slow task (every 1..5 s) and returns .mask (bit i = cell i+1)
# for the driver's set_balance(); .active says whether a balancing run is in progress.
#
# The chip's rule comes from its driver: `groups` (the driver's cell_groups) gives the group
# of each cell, and two neighbouring cells of one group never bleed together (on the BQ769x0:
# 5-input groups VC1-5, VC6-10, VC11-15, cells placed by the datasheet's input map; two cells
# of a group that are neighbours in cell order count as adjacent even when a shorted input
# lies between them). Cells of different groups may bleed together.
#
# Selection: every bal_period_ms the cells above min + bal_stop_mv and at or above
# bal_min_cell_mv are taken greedily, highest first, skipping a cell whose neighbour in the
# same group is already taken, until the bleed power budget (bal_max_mw, each cell
# V^2/bal_r_mohm) is used. A cell that bled in the last period ranks bal_swap_mv lower, so two
# adjacent high cells take turns. Cells below bal_min_cell_mv are never chosen: on the LFP
# plateau a few mV say nothing about a cell's charge; they catch up from the charger while
# the knee cells bleed (limits.py keeps absorption going while the balancer bleeds).
#
# Gates (all must hold, else mask 0 and the run ends): bal_enable, fresh valid cell data,
# no protection fault or latch, highest cell >= bal_min_cell_mv (the upper knee where the
# curve shows imbalance), lowest cell >= cell_uv_release_mv, a valid cell temperature below
# bal_temp_max_dc, the AFE die (when measured) below bal_die_max_dc. The temperature gates
# release temp_release_dc lower. A run starts when max - min > bal_start_mv and ends when
# max - min <= bal_stop_mv.
from bms.snapshot import FLAG_CELLS_VALID, TEMP_INVALID_DC


def mask_ok(mask, groups):
    """True when no two neighbouring cells of one group are both set in mask."""
    for i in range(len(groups) - 1):
        if (mask >> i) & 3 == 3 and groups[i] == groups[i + 1]:
            return False
    return mask >> len(groups) == 0


class Balancer:
    def __init__(self, cfg, groups):
        """groups: the AFE group of each cell (index 0 = cell 1), from the AFE driver."""
        self.cfg = cfg
        n = len(groups)
        if not 3 <= n <= 15:
            raise ValueError("3..15 cells")
        self.n_cells = n
        self.groups = tuple(groups)
        # adj[i]: bit mask of the cells that may not bleed together with cell i
        adj = []
        for i in range(n):
            m = 0
            if i > 0 and self.groups[i - 1] == self.groups[i]:
                m |= 1 << (i - 1)
            if i + 1 < n and self.groups[i + 1] == self.groups[i]:
                m |= 1 << (i + 1)
            adj.append(m)
        self._adj = tuple(adj)
        self.mask = 0
        self.active = False
        self.reason = "off"  # why the mask is what it is (for the status page)
        self._t_sel = 0
        self._hot = False

    def _stop(self, reason):
        self.mask = 0
        self.active = False
        self.reason = reason
        return 0

    def update(self, snap, prot, est, now_ms):
        cfg = self.cfg
        n = self.n_cells
        if not cfg.bal_enable:
            return self._stop("disabled")
        if not snap.flags & FLAG_CELLS_VALID or snap.age_ms(now_ms) > cfg.stale_ms:
            return self._stop("no data")
        if prot.faults or getattr(prot, "latched", 0):
            return self._stop("fault")
        # temperatures, with hysteresis: hot until below limit - temp_release_dc
        rel = cfg.temp_release_dc if self._hot else 0
        t = snap.temp_max_dc
        die = snap.die_temp_dc
        hot = t == TEMP_INVALID_DC or t >= cfg.bal_temp_max_dc - rel
        if die != TEMP_INVALID_DC and die >= cfg.bal_die_max_dc - rel:
            hot = True
        self._hot = hot
        if hot:
            return self._stop("temperature")
        cells = snap.cell_mv
        lo = hi = cells[0]
        for i in range(1, n):
            v = cells[i]
            if v < lo:
                lo = v
            if v > hi:
                hi = v
        if hi < cfg.bal_min_cell_mv or lo < cfg.cell_uv_release_mv:
            return self._stop("voltage")
        spread = hi - lo
        if self.active:
            if spread <= cfg.bal_stop_mv:
                return self._stop("balanced")
        elif spread <= cfg.bal_start_mv:
            return self._stop("balanced")
        if self.active and self.mask and now_ms - self._t_sel < cfg.bal_period_ms:
            # keep the selection until the next period, minus cells that fell to the bottom
            # or off the knee
            floor = self._floor(lo)
            m = self.mask
            for i in range(n):
                if m >> i & 1 and cells[i] <= floor:
                    m &= ~(1 << i)
            self.mask = m
            if m:
                return m
        self._t_sel = now_ms
        self.active = True
        self.reason = "bleeding"
        self.mask = self.select(cells, lo)
        return self.mask

    def _floor(self, lo):
        """A cell bleeds only above this: min + bal_stop_mv, and on the upper knee (at or
        above bal_min_cell_mv). Below the knee (the LFP plateau) a few mV say nothing about
        which cell holds more charge, and bleeding a low cell only delays the balance."""
        cfg = self.cfg
        floor = lo + cfg.bal_stop_mv
        knee = cfg.bal_min_cell_mv - 1
        return floor if floor > knee else knee

    def select(self, cells, lo):
        """The bleed mask for these cell voltages (no gates): greedy, highest first."""
        cfg = self.cfg
        prev = self.mask
        floor = self._floor(lo)
        budget = cfg.bal_max_mw
        r = cfg.bal_r_mohm
        taken = 0
        blocked = 0
        while True:
            best = -1
            best_key = 0
            for i in range(self.n_cells):
                b = 1 << i
                if (taken | blocked) & b:
                    continue
                v = cells[i]
                if v <= floor:
                    continue
                key = v - cfg.bal_swap_mv if prev & b else v
                if best < 0 or key > best_key:
                    best = i
                    best_key = key
            if best < 0:
                break
            v = cells[best]
            p = v * v // r  # mW
            if p > budget:
                break
            budget -= p
            taken |= 1 << best
            blocked |= self._adj[best]
        return taken
