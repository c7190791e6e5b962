# bms.snapshot: the one measurement snapshot, updated in place every 250 ms.
#
# The AFE driver fills it; every other part only reads it. Units are in the names:
#   *_mv  millivolt (int)      *_ma  milliampere (int, + = charging, - = discharging)
#   *_dc  deci-degree Celsius  *_ms  milliseconds since boot (monotonic)
# Nothing here allocates after __init__.
from array import array

from micropython import const

# Sentinel for a temperature input that is absent or unreadable.
TEMP_INVALID_DC = const(-32768)

# Bits of Snapshot.flags (measurement quality, set by the AFE driver).
FLAG_CELLS_VALID = const(0x01)  # every cell of this cycle was read (CRC-checked, ADC running);
#                                  plausibility (0.5..5 V) is protection's judgement
FLAG_PACK_VALID = const(0x02)  # pack voltage read
FLAG_CURRENT_VALID = const(0x04)  # current is from a CC result of this or the previous cycle
FLAG_TEMPS_VALID = const(0x08)  # thermistors read (values may still be implausible)
FLAG_CC_NEW = const(0x10)  # a new 250 ms coulomb-counter sample arrived in this cycle


class Snapshot:
    def __init__(self, n_cells, n_temps):
        if not 3 <= n_cells <= 15:
            raise ValueError("n_cells must be 3..15")
        if not 1 <= n_temps <= 3:
            raise ValueError("n_temps must be 1..3")
        self.n_cells = n_cells
        self.n_temps = n_temps
        self.cell_mv = array("h", [0] * n_cells)  # cell 1 is index 0 (bottom of the stack)
        self.temp_dc = array("h", [TEMP_INVALID_DC] * n_temps)  # external thermistors
        self.pack_mv = 0  # AFE BAT measurement
        self.current_ma = 0  # from the coulomb counter, + = charging
        self.die_temp_dc = TEMP_INVALID_DC  # AFE die temperature when measured
        self.trips = 0  # the AFE's own protection trips reported at this read (bms.afe TRIP_*)
        self.cfg_err = 0  # != 0: the AFE does not hold its configuration (bms.afe CFG_ERR)
        self.chg_fet = False  # FET state read back from the AFE
        self.dsg_fet = False
        self.bal_mask = 0  # balancing bits applied, bit 0 = cell 1
        self.flags = 0  # FLAG_* above
        self.t_ms = 0  # time of the last successful read
        self.seq = 0  # successful reads since boot
        self.cc_seq = 0  # coulomb-counter samples since boot (each covers 250 ms)
        # Charge accumulator for the estimator, drained (reset to 0) by it: the sum of
        # current_ma over cc_samples new 250 ms samples. Samples the driver missed (a late
        # cycle) are filled with the last current and counted in cc_missed.
        self.cc_sum_ma = 0
        self.cc_samples = 0
        self.cc_missed = 0
        self.errors = 0  # consecutive failed reads (0 = the last read succeeded)
        self.error_total = 0  # failed reads since boot
        # Derived in update_stats(), read by everybody else.
        self.cell_min_mv = 0
        self.cell_max_mv = 0
        self.cell_min_idx = 0
        self.cell_max_idx = 0
        self.cell_sum_mv = 0
        self.temp_min_dc = TEMP_INVALID_DC
        self.temp_max_dc = TEMP_INVALID_DC

    def update_stats(self):
        """Recompute min/max/sum after the cells and temperatures were written."""
        cells = self.cell_mv
        lo = hi = cells[0]
        lo_i = hi_i = 0
        total = 0
        for i in range(self.n_cells):
            v = cells[i]
            total += v
            if v < lo:
                lo = v
                lo_i = i
            if v > hi:
                hi = v
                hi_i = i
        self.cell_min_mv = lo
        self.cell_max_mv = hi
        self.cell_min_idx = lo_i
        self.cell_max_idx = hi_i
        self.cell_sum_mv = total
        tlo = thi = TEMP_INVALID_DC
        for i in range(self.n_temps):
            t = self.temp_dc[i]
            if t == TEMP_INVALID_DC:
                continue
            if tlo == TEMP_INVALID_DC or t < tlo:
                tlo = t
            if thi == TEMP_INVALID_DC or t > thi:
                thi = t
        self.temp_min_dc = tlo
        self.temp_max_dc = thi

    def age_ms(self, now_ms):
        """How old the last good reading is."""
        return now_ms - self.t_ms
