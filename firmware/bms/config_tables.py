# bms.config_tables: the configuration's field table (types and ranges), its cross-field rules,
# the chemistry presets and the documented defaults, and the checks that use them.
#
# Used only while a configuration is built or changed (boot, REPL, Modbus, MQTT): bms.config
# imports this module for that moment and lets it go again, so the tables take no RAM on the
# board the rest of the time. Host tools may import it directly.

# Field table: (name, lo, hi) for ints, (name, (choice, ...)) for enums, and
# (name, STR or SECRET, max length) for text (see check_value; SECRET: never shown).
# Order is stable: the index of a field is used in event-log entries and the Modbus map.
FIELDS = (
    # --- pack ---------------------------------------------------------------------
    ("chemistry", ("lfp", "nmc", "lto")),  # bms.config.CHEMISTRIES
    ("cells", 3, 15),
    ("capacity_mah", 1000, 2000000),  # nominal capacity of the pack
    # --- protection (bms.protection) ------------------------------------------------
    ("cell_ov_mv", 2000, 4500),  # software cell over-voltage: charge FET opens
    ("cell_ov_release_mv", 2000, 4500),
    ("cell_ov_delay_ms", 0, 60000),
    ("cell_uv_mv", 1200, 4000),  # software cell under-voltage: discharge FET opens
    ("cell_uv_release_mv", 1200, 4000),
    ("cell_uv_delay_ms", 0, 60000),
    ("cell_deep_uv_mv", 1000, 3500),  # below this a cell is damaged: latched fault
    ("cell_deep_uv_delay_ms", 0, 600000),
    ("hw_cell_ov_mv", 2000, 4700),  # AFE hardware OV trip (outer layer)
    ("hw_cell_ov_delay_ms", 1000, 8000),
    ("hw_cell_uv_mv", 1500, 3200),  # AFE hardware UV trip (outer layer)
    ("hw_cell_uv_delay_ms", 1000, 16000),
    ("pack_ov_mv", 6000, 80000),
    ("pack_uv_mv", 3000, 70000),
    ("pack_v_release_mv", 0, 5000),  # hysteresis of the pack limits
    ("pack_v_delay_ms", 0, 60000),
    ("chg_oc_ma", 100, 1000000),  # software charge over-current (sustained)
    ("chg_oc_delay_ms", 0, 60000),
    ("dsg_oc_ma", 100, 1000000),  # software discharge over-current (sustained)
    ("dsg_oc_delay_ms", 0, 60000),
    ("hw_ocd_ma", 100, 2000000),  # AFE hardware discharge over-current
    ("hw_ocd_delay_ms", 8, 1280),
    ("hw_scd_ma", 100, 4000000),  # AFE hardware short circuit
    ("hw_scd_delay_us", 70, 400),
    ("oc_retry_ms", 1000, 3600000),  # hold-off before re-closing after OCD/SCD/over-current
    ("oc_retry_max", 0, 20),  # retries before the fault latches
    ("chg_temp_min_dc", -400, 400),  # no charging below (default 0 degC)
    ("chg_temp_max_dc", 0, 800),
    ("dsg_temp_min_dc", -500, 300),
    ("dsg_temp_max_dc", 0, 900),
    ("temp_release_dc", 0, 200),  # hysteresis of all temperature limits
    ("temp_delay_ms", 0, 60000),
    ("fet_temp_max_dc", 300, 1500),  # MOSFET/board/AFE die over-temperature
    ("imbalance_warn_mv", 5, 2000),  # cell spread warning
    ("release_delay_ms", 0, 600000),  # a fault must stay released this long before clearing
    ("stale_ms", 250, 10000),  # snapshot older than this = stale: both FETs off
    ("warn_margin_mv", 0, 500),  # warnings this far inside the cell OV/UV limits
    ("warn_margin_dc", 0, 200),  # warnings this far inside the temperature limits
    ("warn_margin_pct", 0, 50),  # current warnings at this % below the over-current limits
    ("body_diode_ma", 0, 100000),  # |current| above which the open FET is closed again
    ("sum_tol_mv", 10, 10000),  # |sum of cells - pack voltage| above this = implausible
    ("plaus_delay_ms", 0, 10000),  # debounce of the plausibility faults (sensor, cell, sum)
    # --- estimation (bms.estimator) -------------------------------------------------
    ("soc_full_mv", 2000, 4500),  # full sync: max cell at or above this while charging ...
    ("soc_tail_ma", 1, 1000000),  # ... with 0 <= current below this tail current ...
    ("soc_full_hold_ms", 0, 3600000),  # ... held this long -> SOC 100 %
    ("soc_empty_mv", 1000, 4000),  # empty sync: IR-compensated min cell at or below this ...
    ("soc_empty_hold_ms", 0, 600000),  # ... while discharging, held this long
    ("soc_rest_ma", 1, 100000),  # |current| below this counts as rest
    ("soc_rest_ms", 60000, 86400000),  # minimum rest before an OCV correction
    ("soc_rest_dvdt_uv_s", 1, 1000),  # and the mean cell voltage settled below this (uV/s)
    ("soc_slope_min_uv", 0, 100000),  # OCV correction only where dOCV/dSOC >= this (uV per %)
    ("soc_deadband_ma", 0, 10000),  # |current| below this (after offset) counts as zero
    ("soc_chg_eff_permille", 900, 1000),  # charge efficiency (coulombic), per mille
    ("soc_offset_max_ma", 0, 100000),  # largest zero-current offset that may be learnt
    ("soc_ekf", 0, 1),  # 1 = model-based (1RC EKF) voltage correction, slope-gated
    ("soc_cap_min_dsoc_pct", 10, 100),  # capacity learning: min SOC span between references
    ("soc_cap_step_pct", 1, 50),  # capacity learning: max change per update, % of nominal
    ("soc_r_step_ma", 1, 1000000),  # resistance learning: min current step
    ("soc_r_cell_uohm", 10, 10000000),  # initial per-cell DC resistance (until learnt)
    # --- control (bms.balancing, bms.limits, bms.thermal) ---------------------------
    # balancing (bms.balancing)
    ("bal_enable", 0, 1),  # 1 = passive balancing allowed
    ("bal_start_mv", 2, 500),  # start when max - min cell exceeds this
    ("bal_stop_mv", 1, 499),  # stop when max - min cell is at or below this
    ("bal_min_cell_mv", 1500, 4500),  # only when the highest cell is at least this (upper knee)
    ("bal_swap_mv", 0, 100),  # a cell bled last period yields to a neighbour within this
    ("bal_period_ms", 250, 600000),  # the bleed selection is recomputed this often
    ("bal_r_mohm", 1000, 1000000),  # bleed path resistance per cell (for the power budget)
    ("bal_max_mw", 0, 100000),  # total bleed power budget of the board
    ("bal_temp_max_dc", 0, 900),  # no balancing with the hottest cell at/above this
    ("bal_die_max_dc", 0, 1500),  # no balancing with the AFE die at/above this
    # charge / discharge limits (bms.limits)
    ("chg_cell_mv", 1500, 4500),  # bulk/absorption charge voltage per cell
    ("float_cell_mv", 1500, 4500),  # float voltage per cell
    ("cvl_gain_pct", 10, 1000),  # max-cell controller gain: CVL moves cells*pct/100 per mV
    ("ccl_knee_mv", 1500, 4500),  # CCL tapers linearly from the max cell at this...
    ("ccl_zero_mv", 1500, 4500),  # ...to 0 at this
    ("dcl_knee_mv", 1500, 4500),  # DCL tapers from the min cell at this to 0 at cell_uv_mv
    ("dvl_cell_mv", 1000, 4000),  # discharge voltage limit per cell (sent to the inverter)
    ("chg_max_ma", 0, 1000000),  # charge current limit (before derating)
    ("dsg_max_ma", 0, 2000000),  # discharge current limit (before derating)
    ("ccl_ramp_ma_s", 1, 100000),  # CCL rises at most this fast
    ("dcl_ramp_ma_s", 1, 100000),  # DCL rises at most this fast
    ("cvl_ramp_mv_s", 1, 100),  # CVL rises at most cells * this fast (per cell, mV/s)
    ("lim_hold_ms", 0, 600000),  # CCL/DCL stay down this long after a cut
    ("cvl_hold_ms", 0, 600000),  # CVL stays down this long after a cut
    ("warn_derate_pct", 0, 100),  # CCL/DCL factor while protection reports a warning
    ("ccl_cold_pct", 0, 100),  # CCL at chg_temp_min_dc (% of chg_max_ma)...
    ("ccl_cold_full_dc", -400, 800),  # ...rising linearly to 100 % at this
    ("ccl_hot_start_dc", -400, 800),  # CCL falls linearly from 100 % at this...
    ("ccl_hot_pct", 0, 100),  # ...to this % at chg_temp_max_dc (0 above)
    ("dcl_cold_pct", 0, 100),  # DCL at dsg_temp_min_dc (% of dsg_max_ma)...
    ("dcl_cold_full_dc", -500, 900),  # ...rising linearly to 100 % at this
    ("dcl_hot_start_dc", -500, 900),  # DCL falls linearly from 100 % at this...
    ("dcl_hot_pct", 0, 100),  # ...to this % at dsg_temp_max_dc (0 above)
    ("ccl_soc_taper_pct", 0, 50),  # CCL tapers over this many % below the SOC cap
    ("dcl_soc_taper_pct", 0, 50),  # DCL tapers below this SOC...
    ("soc_taper_floor_pct", 0, 100),  # ...down to this % of the limit (at the cap / at 0 %)
    ("absorb_margin_mv", 0, 200),  # "at charge voltage" = max cell >= chg_cell_mv - this
    ("absorb_spread_mv", 1, 500),  # absorption settles only with max - min cell <= this
    ("tail_ma", 0, 1000000),  # absorption settles only with the current <= this
    ("absorb_ms", 0, 86400000),  # settled this long -> float (full charge done)
    ("absorb_max_ms", 0, 86400000),  # absorption ends after this long in any case...
    ("absorb_bal_max_ms", 0, 172800000),  # ...or this long while the balancer bleeds
    ("float_ramp_ms", 0, 86400000),  # CVL moves from charge to float voltage over this time
    ("rebulk_soc_pct", 0, 100),  # float -> bulk below this SOC
    ("max_soc_pct", 20, 100),  # daily SOC cap (CCL 0 above it); 100 = no cap
    ("full_charge_days", 0, 60),  # a full charge (cap lifted) every N days; 0 = never
    ("full_err_pct", 0, 100),  # a full charge is also requested when the SOC error exceeds this
    ("soc_hyst_pct", 1, 20),  # hysteresis of the SOC holds (cap, storage, force charge)
    ("storage_mode", 0, 1),  # 1 = hold the pack at storage_soc_pct
    ("storage_soc_pct", 10, 90),
    ("force_charge_soc_pct", 0, 50),  # request a forced charge at/below this SOC
    # thermal management (bms.thermal)
    ("have_heater", 0, 1),  # a heater output exists on the board
    ("heater_on_dc", -400, 400),  # heater on below this (coldest cell) when charge is wanted
    ("heater_off_dc", -400, 400),  # heater off at/above this
    ("heater_ma", 0, 100000),  # what the heater draws from the pack (information, not a CCL)
    ("have_fan", 0, 1),  # a fan/cooling output exists on the board
    ("fan_on_dc", 0, 900),  # fan on at/above this (hottest cell)
    ("fan_off_dc", 0, 900),  # fan off below this
    # --- communication (bms.mcp2515, bms.canbus + bms.can_<profile>, bms.modbus) ------
    # inverter profile (README "Inverter brands"): one module bms.can_<name> each; append only
    ("can_profile", ("pylon", "victron", "sma", "deye", "solark")),
    ("can_modules", 1, 32),  # module count reported in 0x359 byte 4
    ("can_inverter_timeout_ms", 1000, 3600000),  # no 0x305/0x307 this long = inverter lost
    ("can_tx_timeout_ms", 50, 5000),  # a TX frame pending this long (no ACK) is aborted
    ("modbus_unit", 1, 247),  # Modbus RTU unit id (slave address)
    ("modbus_baud", 1200, 115200),  # RS485 baud rate (8N1)
    ("modbus_pin", 0, 9999),  # PIN that unlocks config writes over Modbus; 0 = writes disabled
    ("modbus_unlock_ms", 10000, 3600000),  # relock after this long without an accepted write
    # MQTT / Home Assistant over Wi-Fi (bms.mqtt). Strings: (name, STR or SECRET, max length);
    # SECRET values are stored but never readable over Modbus or MQTT, nor printed.
    ("mqtt_enable", 0, 1),  # 1 = join Wi-Fi and publish to the broker (boards with Wi-Fi)
    ("wifi_ssid", "str", 32),
    ("wifi_password", "secret", 64),
    ("mqtt_host", "str", 48),  # broker host name or IP address ("" = none)
    ("mqtt_port", 1, 65535),
    ("mqtt_user", "str", 32),  # "" = connect without user name and password
    ("mqtt_password", "secret", 64),
    ("mqtt_tls", 0, 2),  # 0 plain TCP, 1 TLS (no certificate check), 2 TLS + CA check
    ("mqtt_prefix", "str", 32),  # topic prefix, also the Home Assistant node id
    ("mqtt_period_ms", 1000, 3600000),  # state published this often (and at once on change)
    ("mqtt_pin", 0, 9999),  # PIN that MQTT commands must carry; 0 = commands disabled
    # --- runtime (bms.app) ----------------------------------------------------------
)

# Absolute per-chemistry bounds of the hardware (outer-layer) cell limits.
_CHEM_OV_MAX = {"lfp": 3800, "nmc": 4350, "lto": 2900}
_CHEM_UV_MIN = {"lfp": 2000, "nmc": 2500, "lto": 1500}

# Cross-field rules: (a, op, b, text). Checked on the would-be result of every update.
RULES = (
    ("cell_uv_mv", "<", "cell_uv_release_mv", "cell_uv_mv < cell_uv_release_mv"),
    ("cell_uv_release_mv", "<", "cell_ov_release_mv", "cell_uv_release_mv < cell_ov_release_mv"),
    ("cell_ov_release_mv", "<", "cell_ov_mv", "cell_ov_release_mv < cell_ov_mv"),
    ("cell_ov_mv", "<", "hw_cell_ov_mv",
     "cell_ov_mv < hw_cell_ov_mv (hardware is the outer layer)"),
    ("hw_cell_uv_mv", "<", "cell_uv_mv",
     "hw_cell_uv_mv < cell_uv_mv (hardware is the outer layer)"),
    ("cell_deep_uv_mv", "<", "cell_uv_mv", "cell_deep_uv_mv < cell_uv_mv"),
    ("pack_uv_mv", "<", "pack_ov_mv", "pack_uv_mv < pack_ov_mv"),
    ("dsg_oc_ma", "<", "hw_ocd_ma", "dsg_oc_ma < hw_ocd_ma (hardware is the outer layer)"),
    ("hw_ocd_ma", "<", "hw_scd_ma", "hw_ocd_ma < hw_scd_ma"),
    ("chg_temp_min_dc", "<", "chg_temp_max_dc", "chg_temp_min_dc < chg_temp_max_dc"),
    ("dsg_temp_min_dc", "<", "dsg_temp_max_dc", "dsg_temp_min_dc < dsg_temp_max_dc"),
    ("dsg_temp_min_dc", "<=", "chg_temp_min_dc", "dsg_temp_min_dc <= chg_temp_min_dc"),
    # protection, continued: a term may also be (x, op, y) with op in + - * (x, y: field
    # names, ints or terms), or a dict chemistry -> int (a per-chemistry bound).
    ("chg_temp_max_dc", "<=", "dsg_temp_max_dc", "chg_temp_max_dc <= dsg_temp_max_dc"),
    ("hw_cell_ov_mv", "<=", _CHEM_OV_MAX, "hw_cell_ov_mv <= chemistry maximum"),
    ("hw_cell_uv_mv", ">=", _CHEM_UV_MIN, "hw_cell_uv_mv >= chemistry minimum"),
    ("temp_release_dc", "<", ("chg_temp_max_dc", "-", "chg_temp_min_dc"),
     "temp_release_dc < chg_temp_max_dc - chg_temp_min_dc"),  # (implies the dsg window)
    ("pack_v_release_mv", "<", ("pack_ov_mv", "-", "pack_uv_mv"),
     "pack_v_release_mv < pack_ov_mv - pack_uv_mv"),
    ("pack_ov_mv", "<=", ("cells", "*", "hw_cell_ov_mv"), "pack_ov_mv <= cells * hw_cell_ov_mv"),
    ("pack_uv_mv", ">=", ("cells", "*", "hw_cell_uv_mv"), "pack_uv_mv >= cells * hw_cell_uv_mv"),
    ("warn_margin_mv", "<", ("cell_ov_mv", "-", "cell_ov_release_mv"),
     "warn_margin_mv < cell_ov_mv - cell_ov_release_mv"),
    ("warn_margin_dc", "<", ("chg_temp_max_dc", "-", "chg_temp_min_dc"),
     "warn_margin_dc < chg_temp_max_dc - chg_temp_min_dc"),
    ("chg_oc_ma", "<=", "hw_scd_ma", "chg_oc_ma <= hw_scd_ma"),
    ("body_diode_ma", "<", "chg_oc_ma", "body_diode_ma < chg_oc_ma"),
    ("body_diode_ma", "<", "dsg_oc_ma", "body_diode_ma < dsg_oc_ma"),
    ("sum_tol_mv", "<", ("cells", "*", "cell_uv_mv"), "sum_tol_mv < cells * cell_uv_mv"),
    # control (bms.balancing, bms.limits, bms.thermal)
    ("bal_stop_mv", "<", "bal_start_mv", "bal_stop_mv < bal_start_mv"),
    ("float_cell_mv", "<", "chg_cell_mv", "float_cell_mv < chg_cell_mv"),
    ("cell_uv_release_mv", "<", "float_cell_mv", "cell_uv_release_mv < float_cell_mv"),
    ("chg_cell_mv", "<", "ccl_zero_mv", "chg_cell_mv < ccl_zero_mv (CCL > 0 at the target)"),
    ("soc_full_mv", "<=", ("chg_cell_mv", "-", "absorb_margin_mv"),
     "soc_full_mv <= chg_cell_mv - absorb_margin_mv (the full sync must be reachable)"),
    ("ccl_knee_mv", "<", "ccl_zero_mv", "ccl_knee_mv < ccl_zero_mv"),
    ("ccl_zero_mv", "<", "cell_ov_mv", "ccl_zero_mv < cell_ov_mv"),
    ("cell_uv_mv", "<", "dcl_knee_mv", "cell_uv_mv < dcl_knee_mv"),
    ("cell_uv_mv", "<", "dvl_cell_mv", "cell_uv_mv < dvl_cell_mv"),
    ("chg_temp_min_dc", "<", "ccl_cold_full_dc", "chg_temp_min_dc < ccl_cold_full_dc"),
    ("ccl_cold_full_dc", "<=", "ccl_hot_start_dc", "ccl_cold_full_dc <= ccl_hot_start_dc"),
    ("ccl_hot_start_dc", "<", "chg_temp_max_dc", "ccl_hot_start_dc < chg_temp_max_dc"),
    ("dsg_temp_min_dc", "<", "dcl_cold_full_dc", "dsg_temp_min_dc < dcl_cold_full_dc"),
    ("dcl_cold_full_dc", "<=", "dcl_hot_start_dc", "dcl_cold_full_dc <= dcl_hot_start_dc"),
    ("dcl_hot_start_dc", "<", "dsg_temp_max_dc", "dcl_hot_start_dc < dsg_temp_max_dc"),
    ("absorb_ms", "<=", "absorb_max_ms", "absorb_ms <= absorb_max_ms"),
    ("absorb_max_ms", "<=", "absorb_bal_max_ms", "absorb_max_ms <= absorb_bal_max_ms"),
    ("force_charge_soc_pct", "<", "storage_soc_pct", "force_charge_soc_pct < storage_soc_pct"),
    ("heater_on_dc", "<", "heater_off_dc", "heater_on_dc < heater_off_dc"),
    ("fan_off_dc", "<", "fan_on_dc", "fan_off_dc < fan_on_dc"),
)

# Per-cell values of each chemistry. Pack-level defaults are derived in defaults().
PRESETS = {
    "lfp": {
        "cell_ov_mv": 3650,
        "cell_ov_release_mv": 3450,
        "cell_uv_mv": 2700,
        "cell_uv_release_mv": 3000,
        "cell_deep_uv_mv": 2000,
        "hw_cell_ov_mv": 3750,
        "hw_cell_uv_mv": 2500,
        "pack_ov_cell_mv": 3600,
        "pack_uv_cell_mv": 2800,
        # control: charge/float voltage, current tapers, balancing and DVL per cell
        "chg_cell_mv": 3450,
        "float_cell_mv": 3375,
        "ccl_knee_mv": 3400,
        "ccl_zero_mv": 3550,
        "dcl_knee_mv": 3050,
        "dvl_cell_mv": 2900,
        "bal_min_cell_mv": 3400,
        "chg_temp_min_dc": 0,  # no charging below 0 degC (lithium plating)
        "chg_temp_max_dc": 450,
        "dsg_temp_min_dc": -200,
        "dsg_temp_max_dc": 550,
    },
    "nmc": {
        "cell_ov_mv": 4200,
        "cell_ov_release_mv": 4100,
        "cell_uv_mv": 3000,
        "cell_uv_release_mv": 3300,
        "cell_deep_uv_mv": 2500,
        "hw_cell_ov_mv": 4250,
        "hw_cell_uv_mv": 2800,
        "pack_ov_cell_mv": 4150,
        "pack_uv_cell_mv": 3100,
        # control
        "chg_cell_mv": 4150,
        "float_cell_mv": 4100,
        "ccl_knee_mv": 4100,
        "ccl_zero_mv": 4180,
        "dcl_knee_mv": 3400,
        "dvl_cell_mv": 3200,
        "bal_min_cell_mv": 3800,
        "chg_temp_min_dc": 0,
        "chg_temp_max_dc": 450,
        "dsg_temp_min_dc": -200,
        "dsg_temp_max_dc": 600,
    },
    "lto": {
        "cell_ov_mv": 2750,
        "cell_ov_release_mv": 2600,
        "cell_uv_mv": 1800,
        "cell_uv_release_mv": 2000,
        "cell_deep_uv_mv": 1500,
        "hw_cell_ov_mv": 2800,
        "hw_cell_uv_mv": 1700,
        "pack_ov_cell_mv": 2700,
        "pack_uv_cell_mv": 1900,
        # control
        "chg_cell_mv": 2650,
        "float_cell_mv": 2550,
        "ccl_knee_mv": 2600,
        "ccl_zero_mv": 2700,
        "dcl_knee_mv": 2100,
        "dvl_cell_mv": 2000,
        "bal_min_cell_mv": 2500,
        "chg_temp_min_dc": -200,  # LTO accepts charge well below 0 degC
        "chg_temp_max_dc": 550,
        "dsg_temp_min_dc": -300,
        "dsg_temp_max_dc": 600,
    },
}


def defaults(chemistry="lfp", cells=4, capacity_mah=100000):
    """The documented default configuration for a chemistry, cell count and capacity."""
    if chemistry not in PRESETS:
        raise ConfigError("chemistry", "one of " + ", ".join(CHEMISTRIES))
    p = PRESETS[chemistry]
    c = capacity_mah
    d = {
        "chemistry": chemistry,
        "cells": cells,
        "capacity_mah": capacity_mah,
        # protection
        "cell_ov_delay_ms": 2000,
        "cell_uv_delay_ms": 2000,
        "cell_deep_uv_delay_ms": 10000,
        "hw_cell_ov_delay_ms": 2000,
        "hw_cell_uv_delay_ms": 4000,
        "pack_ov_mv": p["pack_ov_cell_mv"] * cells,
        "pack_uv_mv": p["pack_uv_cell_mv"] * cells,
        "pack_v_release_mv": 100 * cells,
        "pack_v_delay_ms": 2000,
        "chg_oc_ma": min(c // 2, 1000000),  # 0.5 C
        "chg_oc_delay_ms": 2000,
        "dsg_oc_ma": min(c, 1000000),  # 1 C
        "dsg_oc_delay_ms": 2000,
        "hw_ocd_ma": min(c * 3 // 2, 2000000),  # 1.5 C
        "hw_ocd_delay_ms": 320,
        "hw_scd_ma": min(c * 3, 4000000),  # 3 C
        "hw_scd_delay_us": 200,
        "oc_retry_ms": 30000,
        "oc_retry_max": 3,
        "chg_temp_min_dc": 0,
        "chg_temp_max_dc": 450,
        "dsg_temp_min_dc": -200,
        "dsg_temp_max_dc": 550,
        "temp_release_dc": 30,
        "temp_delay_ms": 4000,
        "fet_temp_max_dc": 800,
        "imbalance_warn_mv": 100,
        "release_delay_ms": 2000,
        "stale_ms": 1000,
        "warn_margin_mv": 50,
        "warn_margin_dc": 50,
        "warn_margin_pct": 10,
        "body_diode_ma": min(1000, c // 20),  # 1 A, at most C/20
        "sum_tol_mv": 100 + 50 * cells,
        "plaus_delay_ms": 1000,
        # estimation: sync voltages and rest time per chemistry, currents scale with C
        # The full sync must be reachable under our own charge limits: 10 mV (the default
        # absorb_margin_mv) below the charge voltage (RULES).
        "soc_full_mv": {"lfp": 3440, "nmc": 4140, "lto": 2640}[chemistry],
        "soc_tail_ma": max(1, c // 20),  # C/20: chargers end their CV at C/50..C/20
        "soc_full_hold_ms": 60000,
        "soc_empty_mv": {"lfp": 2900, "nmc": 3150, "lto": 2000}[chemistry],
        "soc_empty_hold_ms": 10000,
        "soc_rest_ma": max(1, c // 50),  # C/50
        "soc_rest_ms": {"lfp": 7200000, "nmc": 1800000, "lto": 3600000}[chemistry],
        "soc_rest_dvdt_uv_s": 10,
        "soc_slope_min_uv": 3000,  # 3 mV per % SOC: excludes the LFP plateau
        "soc_deadband_ma": min(10000, max(1, c // 10000)),  # 0.01 % of C
        "soc_chg_eff_permille": 999,
        "soc_offset_max_ma": min(100000, max(1, c // 500)),  # 0.2 % of C
        "soc_ekf": 0,  # the EKF follows the table: worth it only with the cell's own table
        "soc_cap_min_dsoc_pct": 40,
        "soc_cap_step_pct": 10,  # an aged pack (85 % of nominal) is learnt in two cycles
        "soc_r_step_ma": max(1, c // 10),  # C/10
        "soc_r_cell_uohm": min(10000000, max(10, 150000000 // c)),  # ~150 mOhm*Ah / C
        # communication
        "can_profile": "pylon",
        "can_modules": 1,
        "can_inverter_timeout_ms": 60000,  # Victron GX: 600000 (it may pause 0x305 for 10 min)
        "can_tx_timeout_ms": 500,
        "modbus_unit": 1,
        "modbus_baud": 9600,
        "modbus_pin": 0,
        "modbus_unlock_ms": 300000,
        "mqtt_enable": 0,
        "wifi_ssid": "",
        "wifi_password": "",
        "mqtt_host": "",
        "mqtt_port": 1883,
        "mqtt_user": "",
        "mqtt_password": "",
        "mqtt_tls": 0,
        "mqtt_prefix": "bms",
        "mqtt_period_ms": 10000,
        "mqtt_pin": 0,
        # control (per-cell voltages come from PRESETS)
        "bal_enable": 1,
        "bal_start_mv": 15,
        "bal_stop_mv": 5,
        "bal_swap_mv": 10,
        "bal_period_ms": 10000,
        "bal_r_mohm": 100000,  # 100 ohm: 34 mA at 3.4 V
        "bal_max_mw": 2000,
        "bal_temp_max_dc": 500,
        "bal_die_max_dc": 700,
        "cvl_gain_pct": 100,
        # 80 % of the default over-current trips (0.4 C / 0.8 C): inside their warning margin
        "chg_max_ma": min(c // 2, 1000000) * 4 // 5,
        "dsg_max_ma": min(c, 1000000) * 4 // 5,
        "ccl_ramp_ma_s": max(1, c // 100),  # 1 % of C per second
        "dcl_ramp_ma_s": max(1, c // 100),
        "cvl_ramp_mv_s": 1,
        "lim_hold_ms": 30000,
        "cvl_hold_ms": 60000,
        "warn_derate_pct": 50,
        "ccl_cold_pct": 10,
        "ccl_cold_full_dc": 100,
        "ccl_hot_start_dc": 350,
        "ccl_hot_pct": 20,
        "dcl_cold_pct": 20,
        "dcl_cold_full_dc": 0,
        "dcl_hot_start_dc": 450,
        "dcl_hot_pct": 20,
        "ccl_soc_taper_pct": 5,
        "dcl_soc_taper_pct": 10,
        "soc_taper_floor_pct": 20,
        "absorb_margin_mv": 10,
        "absorb_spread_mv": 10,
        "tail_ma": c // 50,  # 0.02 C
        "absorb_ms": 1800000,  # 30 min
        "absorb_max_ms": 14400000,  # 4 h
        "absorb_bal_max_ms": 43200000,  # 12 h
        "float_ramp_ms": 600000,  # 10 min
        "rebulk_soc_pct": 80,
        "max_soc_pct": 90,
        "full_charge_days": 7,
        "full_err_pct": 10,
        "soc_hyst_pct": 3,
        "storage_mode": 0,
        "storage_soc_pct": 50,
        "force_charge_soc_pct": 5,
        "have_heater": 0,
        "heater_on_dc": 50,
        "heater_off_dc": 100,
        "heater_ma": 2000,
        "have_fan": 0,
        "fan_on_dc": 350,
        "fan_off_dc": 300,
    }
    for k in p:
        if k in _INDEX:
            d[k] = p[k]
    return d


_INDEX = {}
for _i, _f in enumerate(FIELDS):
    _INDEX[_f[0]] = _i

_OPS = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
}
_ARITH = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
}


def _term(values, t):
    """Value of a rule term: a field name, an int, (x, op, y), or a dict chemistry -> int."""
    if isinstance(t, str):
        return values[t]
    if isinstance(t, int):
        return t
    if isinstance(t, dict):
        return t[values["chemistry"]]
    return _ARITH[t[1]](_term(values, t[0]), _term(values, t[2]))


def _has_terms(values, t):
    if isinstance(t, str):
        return t in values
    if isinstance(t, dict):
        return "chemistry" in values and values["chemistry"] in t
    if isinstance(t, tuple):
        return _has_terms(values, t[0]) and _has_terms(values, t[2])
    return True


_TOPIC_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-/"


def _check_text(name, value, maxlen):
    if not isinstance(value, str):
        raise ConfigError(name, "must be text")
    if len(value) > maxlen:
        raise ConfigError(name, "at most %d characters" % maxlen)
    for c in value:
        if ord(c) < 0x20 or ord(c) == 0x7F:
            raise ConfigError(name, "no control characters")
    if name == "mqtt_prefix":
        if not value or value[0] == "/" or value[-1] == "/" or "//" in value:
            raise ConfigError(name, "a topic: 1+ characters, no leading/trailing or double /")
        for c in value:
            if c not in _TOPIC_CHARS:
                raise ConfigError(name, "only letters, digits, _ - /")
    elif name == "mqtt_host" and " " in value:
        raise ConfigError(name, "no spaces")
    return value


def check_value(name, value):
    """Type- and range-check one value. Returns the value as stored; raises ConfigError."""
    i = _INDEX.get(name, -1)
    if i < 0:
        raise ConfigError(name, "unknown field")
    f = FIELDS[i]
    if isinstance(f[1], str):
        return _check_text(name, value, f[2])
    if len(f) == 2:
        if value not in f[1]:
            raise ConfigError(name, "must be one of " + ", ".join(f[1]))
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        # Accept integral floats (e.g. from JSON) but never silently round.
        if isinstance(value, float) and value == int(value):
            value = int(value)
        else:
            raise ConfigError(name, "must be an integer")
    if not f[1] <= value <= f[2]:
        raise ConfigError(name, "must be in %d..%d" % (f[1], f[2]))
    return value


def check_rules(values):
    """Cross-field rules on a complete dict of values; raises ConfigError naming field a."""
    for a, op, b, text in RULES:
        if (_has_terms(values, a) and _has_terms(values, b)
                and not _OPS[op](_term(values, a), _term(values, b))):
            raise ConfigError(a, text)
    # communication: MQTT needs somewhere to go
    if values.get("mqtt_enable") and not values.get("mqtt_host"):
        raise ConfigError("mqtt_enable", "mqtt_enable = 1 needs mqtt_host")


# At the end: bms.config imports this module while it is itself being imported.
from bms.config import CHEMISTRIES, ConfigError  # noqa: E402
