# bms.status: the one outbound view. What the outside world (inverter CAN, Modbus, the REPL,
# MQTT) is told, filled by the app once per cycle; no protocol reads the app object itself,
# so what the inverter is told and what an EMS reads are the same numbers by construction.
#
#   st = Status(n_cells, n_temps)
#   st.fill_fast(bms, now_ms)    end of every 250 ms measure+protect cycle (ints only, no
#                                allocation): measurements, protection, permissions
#   st.fill_slow(bms, now_ms)    end of every 1 s control cycle: SOC/SOH, limits, outputs
#
# Permissions are recomputed in both fills from the newest protection and limits, so a FET
# that protection opened in this cycle is never reported as "charge allowed" afterwards.
# Units are in the names (mV, mA, 0.1 degC, %); temperatures are TEMP_INVALID_DC when absent.
from array import array

from bms.snapshot import FLAG_CELLS_VALID, TEMP_INVALID_DC


class Status:
    def __init__(self, n_cells, n_temps):
        self.n_cells = n_cells
        self.n_temps = n_temps
        self.valid = False  # a complete reading has been seen since boot
        self.slow_valid = False  # and a control cycle ran after it (SOC, limits are real)
        self.t_ms = 0  # time of the last fill
        self.seq = 0  # incremented by every fill (readers can tell a new cycle)
        # measurements (fast)
        self.pack_mv = 0
        self.current_ma = 0
        self.cell_mv = array("h", [0] * n_cells)
        self.cell_min_mv = 0
        self.cell_max_mv = 0
        self.cell_min_idx = 0
        self.cell_max_idx = 0
        self.temp_dc = array("h", [TEMP_INVALID_DC] * n_temps)
        self.temp_min_dc = TEMP_INVALID_DC
        self.temp_max_dc = TEMP_INVALID_DC
        self.die_temp_dc = TEMP_INVALID_DC
        # protection (fast)
        self.state = 0
        self.faults = 0  # active protection faults (latched included), bit = FAULT_NAMES index
        self.warnings = 0
        self.latched = 0
        self.chg_fet = False  # FET commands of protection
        self.dsg_fet = False
        # what the inverter / EMS is told (fast and slow)
        self.chg_enable = False  # charging is allowed now: protection, FET and limits agree
        self.dsg_enable = False
        self.cvl_mv = 0
        self.ccl_ma = 0  # 0 whenever chg_enable is False
        self.dcl_ma = 0  # 0 whenever dsg_enable is False
        self.dvl_mv = 0
        self.force_charge = 0  # 0, 1 (force charge I) or 2 (II); only while chg_enable
        self.full_charge_req = False
        # estimation and control (slow)
        self.soc_pct = 0.0
        self.soc_err_pct = 100.0
        self.soh_pct = 100.0
        self.capacity_mah = 0
        self.cycles = 0
        self.chg_wh = 0.0  # energy counters (Wh, since the counters began; MQTT energy sensors)
        self.dsg_wh = 0.0
        self.mode = 0
        self.bal_mask = 0
        self.heater = False
        self.fan = False
        # configuration and AFE health (slow)
        self.config_foreign = 0  # 1: a stored configuration for another pack was not applied
        self.afe_refusals = 0  # readings refused: the AFE lost its configuration
        self.afe_inits = 0  # re-initialisations of the AFE

    def fill_fast(self, bms, now_ms):
        """Copy measurements and protection outputs; recompute the permissions. Allocates
        nothing (ints and bools only)."""
        snap = bms.snap
        prot = bms.prot
        if snap.seq > 0 and snap.errors == 0 and snap.flags & FLAG_CELLS_VALID:
            self.valid = True
            self.pack_mv = snap.pack_mv
            self.current_ma = snap.current_ma
            src = snap.cell_mv
            dst = self.cell_mv
            for i in range(self.n_cells):
                dst[i] = src[i]
            self.cell_min_mv = snap.cell_min_mv
            self.cell_max_mv = snap.cell_max_mv
            self.cell_min_idx = snap.cell_min_idx
            self.cell_max_idx = snap.cell_max_idx
            src = snap.temp_dc
            dst = self.temp_dc
            for i in range(self.n_temps):
                dst[i] = src[i]
            self.temp_min_dc = snap.temp_min_dc
            self.temp_max_dc = snap.temp_max_dc
            self.die_temp_dc = snap.die_temp_dc
        self.state = prot.state
        self.faults = prot.faults | prot.latched
        self.warnings = prot.warnings
        self.latched = prot.latched
        self.chg_fet = prot.chg_fet
        self.dsg_fet = prot.dsg_fet
        self._permissions(bms)
        self.t_ms = now_ms
        self.seq += 1

    def fill_slow(self, bms, now_ms):
        """Copy estimation and control outputs (float references, no new objects)."""
        est = bms.est
        lim = bms.limits
        self.soc_pct = est.soc_pct
        self.soc_err_pct = est.soc_err_pct
        self.soh_pct = est.soh_pct
        self.capacity_mah = est.capacity_mah
        self.cycles = est.cycles
        self.chg_wh = est.chg_wh_total
        self.dsg_wh = est.dsg_wh_total
        self.mode = lim.mode
        self.full_charge_req = lim.full_charge_req
        self.bal_mask = bms.bal_mask if bms.bal_mask > 0 else 0
        self.heater = bms.thermal.heater
        self.fan = bms.thermal.fan
        self.config_foreign = 1 if bms.config_foreign else 0
        self.afe_refusals = bms.afe_refusals
        self.afe_inits = bms.afe_inits
        if self.valid:
            self.slow_valid = True
        self._permissions(bms)
        self.t_ms = now_ms
        self.seq += 1

    def _permissions(self, bms):
        prot = bms.prot
        lim = bms.limits
        chg = prot.chg_allowed and prot.chg_fet and lim.ccl_ma > 0
        dsg = prot.dsg_allowed and prot.dsg_fet and lim.dcl_ma > 0
        self.chg_enable = chg
        self.dsg_enable = dsg
        self.ccl_ma = lim.ccl_ma if chg else 0
        self.dcl_ma = lim.dcl_ma if dsg else 0
        self.cvl_mv = lim.cvl_mv
        self.dvl_mv = lim.dvl_mv
        self.force_charge = lim.force_charge if chg else 0
