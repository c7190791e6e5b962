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
# Units are in the names (mV, mA, 0.1 degC, %; _cpct = 0.01 %); temperatures are
# TEMP_INVALID_DC when absent, except the *_report_dc values (never a sentinel).
#
# Semantics (README "What the inverter and the EMS are told"):
#   chg_enable   charging is allowed NOW: protection allows it, its charge FET command is on,
#                limits.ccl_ma is at least 0.1 A (one count on the wire: a charge enable never
#                goes out with a CCL that reads 0) and a complete reading exists. ccl_ma is 0
#                otherwise.
#   dsg_enable   the same for discharging; dcl_ma is 0 otherwise.
#   cvl_mv       bms.limits' CVL (held, never tracking the pack voltage, while charging is
#                blocked), kept within [cells x cell_uv_release_mv, cvl_max_mv].
#   cvl_max_mv   the configured maximum: cells x chg_cell_mv.
#   force_charge 1 = "charge before shutdown" request (SOC at force_charge_soc_pct), only
#                while chg_enable; every profile clears its force bits otherwise.
#   full_charge_req  the scheduled full charge (full_charge_days) is due, only while
#                chg_enable; never from an uncertain SOC alone.
#   temp_valid   every configured thermistor reads a valid value.
#   temp_report_dc / temp_report_min_dc   hottest / coldest valid thermistor; with none
#                valid: the last valid value, else the AFE die temperature, else 25.0 degC
#                (SMA Sunny Island's own default). Protocols send these, never a sentinel;
#                an invalid sensor is told by the BMS-internal flags (temp_valid False and
#                the temp_sensor fault).
#   heater       the heater output is on. It is powered from the pack: the inverter is never
#                asked for heater current (ccl_ma stays 0 while the cells are too cold).
from array import array

from bms.snapshot import FLAG_CELLS_VALID, TEMP_INVALID_DC

_T_DEFAULT_DC = 250  # 25.0 degC: what an SMA SI assumes for an invalid temperature
_MIN_LIMIT_MA = 100  # 0.1 A: the smallest current limit the protocols can send


class Status:
    def __init__(self, n_cells, n_temps):
        self.n_cells = n_cells
        self.n_temps = n_temps
        self.valid = False  # a complete reading has been seen since boot
        self.ready = False  # valid, and a control cycle (SOC, limits) has filled it too:
        #                     inverter frames start only then (never SOC 0 or CVL at its floor)
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
        self.temp_valid = False
        self.temp_report_dc = _T_DEFAULT_DC  # sent to inverters (hottest), never a sentinel
        self.temp_report_min_dc = _T_DEFAULT_DC  # (coldest)
        self._t_hi = TEMP_INVALID_DC  # last valid hottest / coldest
        self._t_lo = TEMP_INVALID_DC
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
        self.cvl_max_mv = 0
        self.ccl_ma = 0  # 0 whenever chg_enable is False
        self.dcl_ma = 0  # 0 whenever dsg_enable is False
        self.dvl_mv = 0
        self.force_charge = 0  # 1: "charge before shutdown" request; only while chg_enable
        self.full_charge_req = False  # scheduled full charge due; only while chg_enable
        # estimation and control (slow)
        self.soc_pct = 0.0
        self.soc_err_pct = 100.0
        self.soh_pct = 100.0
        self.soc_cpct = 0  # the same as ints in 0.01 % (protocols read these: no floats)
        self.soc_err_cpct = 10000
        self.soh_cpct = 10000
        self.capacity_mah = 0
        self.cycles = 0
        self.chg_wh = 0.0  # energy counters (Wh, since the counters began; MQTT energy sensors)
        self.dsg_wh = 0.0
        self.cycles_n = 0  # whole equivalent cycles (int)
        self.r_cell_uohm = 0  # estimated cell resistance (int)
        self.mode = 0
        self.bal_mask = 0
        self.heater = False
        self.fan = False
        # identity, configuration and AFE health (slow)
        self.shunt_uohm = 0
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
            ok = self.n_temps > 0
            for i in range(self.n_temps):
                t = src[i]
                dst[i] = t
                if t == TEMP_INVALID_DC:
                    ok = False
            self.temp_valid = ok
            self.temp_min_dc = snap.temp_min_dc
            self.temp_max_dc = snap.temp_max_dc
            self.die_temp_dc = snap.die_temp_dc
            self._report_temps()
        self.state = prot.state
        self.faults = prot.faults | prot.latched
        self.warnings = prot.warnings
        self.latched = prot.latched
        self.chg_fet = prot.chg_fet
        self.dsg_fet = prot.dsg_fet
        self._permissions(bms)
        self.t_ms = now_ms
        self.seq += 1

    def _report_temps(self):
        # Hottest/coldest valid sensor; else the last valid one; else the die; else 25.0 degC.
        hi = self.temp_max_dc
        lo = self.temp_min_dc
        if hi != TEMP_INVALID_DC:
            self._t_hi = hi
            self._t_lo = lo
        elif self._t_hi != TEMP_INVALID_DC:
            hi = self._t_hi
            lo = self._t_lo
        elif self.die_temp_dc != TEMP_INVALID_DC:
            hi = lo = self.die_temp_dc
        else:
            hi = lo = _T_DEFAULT_DC
        self.temp_report_dc = hi
        self.temp_report_min_dc = lo

    def fill_slow(self, bms, now_ms):
        """Copy estimation and control outputs (the 1 s control cycle: floats allowed)."""
        est = bms.est
        lim = bms.limits
        self.soc_pct = est.soc_pct
        self.soc_err_pct = est.soc_err_pct
        self.soh_pct = est.soh_pct
        self.soc_cpct = _cpct(est.soc_pct)
        self.soc_err_cpct = _cpct(est.soc_err_pct)
        self.soh_cpct = _cpct(est.soh_pct)
        self.capacity_mah = int(est.capacity_mah)
        self.cycles = est.cycles
        self.chg_wh = est.chg_wh_total
        self.dsg_wh = est.dsg_wh_total
        self.cycles_n = int(est.cycles) if est.cycles > 0 else 0
        self.r_cell_uohm = int(est.r_mohm * 1000 + 0.5)
        self.mode = lim.mode
        self.bal_mask = bms.bal_mask if bms.bal_mask > 0 else 0
        self.heater = bool(bms.thermal.heater)
        self.fan = bool(bms.thermal.fan)
        afe = getattr(bms, "afe", None)
        self.shunt_uohm = getattr(afe, "shunt_uohm", 0) if afe is not None else 0
        self.config_foreign = 1 if bms.config_foreign else 0
        self.afe_refusals = bms.afe_refusals
        self.afe_inits = bms.afe_inits
        if self.valid:
            self.ready = True
        self._permissions(bms)
        self.t_ms = now_ms
        self.seq += 1

    def _permissions(self, bms):
        prot = bms.prot
        lim = bms.limits
        cfg = bms.cfg
        ok = self.valid
        chg = ok and prot.chg_allowed and prot.chg_fet and lim.ccl_ma >= _MIN_LIMIT_MA
        dsg = ok and prot.dsg_allowed and prot.dsg_fet and lim.dcl_ma >= _MIN_LIMIT_MA
        self.chg_enable = bool(chg)
        self.dsg_enable = bool(dsg)
        self.ccl_ma = lim.ccl_ma if chg else 0
        self.dcl_ma = lim.dcl_ma if dsg else 0
        hi = cfg.cells * cfg.chg_cell_mv
        lo = cfg.cells * cfg.cell_uv_release_mv
        v = lim.cvl_mv
        self.cvl_mv = hi if v > hi else lo if v < lo else v
        self.cvl_max_mv = hi
        self.dvl_mv = lim.dvl_mv
        self.force_charge = 1 if chg and lim.force_charge else 0
        self.full_charge_req = bool(chg and lim.full_charge_req)


def _cpct(x):
    """A percentage (float) as an int in 0.01 %, clamped to 0..10000."""
    v = int(x * 100 + 0.5)
    return 0 if v < 0 else 10000 if v > 10000 else v
