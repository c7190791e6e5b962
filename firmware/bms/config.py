# bms.config: the one configuration object, validated in one place.
#
# Every path that changes configuration (boot file, REPL bms.set(), Modbus writes) goes
# through Config.update(): each value is checked against its field's type and range, then
# the cross-field rules are checked on the would-be result; on any failure a ConfigError
# names the field and the rule, and the configuration in force does not change.
#
# All values are ints in the unit their name carries (mV, mA, ms, dc = 0.1 degC, pct,
# mohm, uohm, s), except the few enum fields (strings from a fixed set).
#
# Sections below are owned by feature modules; add fields to your own section only.
CHEMISTRIES = ("lfp", "nmc", "lto")


class ConfigError(ValueError):
    """An invalid configuration value. .field names the field, .rule says what is wrong."""

    def __init__(self, field, rule):
        super().__init__("%s: %s" % (field, rule))
        self.field = field
        self.rule = rule


# Field table: (name, lo, hi) for ints, (name, (choice, ...)) for enums.
# Order is stable: the index of a field is used in event-log entries and the Modbus map.
FIELDS = (
    # --- pack ---------------------------------------------------------------------
    ("chemistry", CHEMISTRIES),
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
    # --- estimation (bms.estimator) -------------------------------------------------
    # --- control (bms.balancing, bms.limits, bms.thermal) ---------------------------
    # --- communication (bms.mcp2515, bms.pylontech, bms.modbus) ----------------------
    # --- runtime (bms.app) ----------------------------------------------------------
)

# Cross-field rules: (a, op, b, text). Checked on the would-be result of every update.
RULES = (
    ("cell_uv_mv", "<", "cell_uv_release_mv", "cell_uv_mv < cell_uv_release_mv"),
    ("cell_uv_release_mv", "<", "cell_ov_release_mv", "cell_uv_release_mv < cell_ov_release_mv"),
    ("cell_ov_release_mv", "<", "cell_ov_mv", "cell_ov_release_mv < cell_ov_mv"),
    ("cell_ov_mv", "<", "hw_cell_ov_mv", "cell_ov_mv < hw_cell_ov_mv (hardware is the outer layer)"),
    ("hw_cell_uv_mv", "<", "cell_uv_mv", "hw_cell_uv_mv < cell_uv_mv (hardware is the outer layer)"),
    ("cell_deep_uv_mv", "<", "cell_uv_mv", "cell_deep_uv_mv < cell_uv_mv"),
    ("pack_uv_mv", "<", "pack_ov_mv", "pack_uv_mv < pack_ov_mv"),
    ("dsg_oc_ma", "<", "hw_ocd_ma", "dsg_oc_ma < hw_ocd_ma (hardware is the outer layer)"),
    ("hw_ocd_ma", "<", "hw_scd_ma", "hw_ocd_ma < hw_scd_ma"),
    ("chg_temp_min_dc", "<", "chg_temp_max_dc", "chg_temp_min_dc < chg_temp_max_dc"),
    ("dsg_temp_min_dc", "<", "dsg_temp_max_dc", "dsg_temp_min_dc < dsg_temp_max_dc"),
    ("dsg_temp_min_dc", "<=", "chg_temp_min_dc", "dsg_temp_min_dc <= chg_temp_min_dc"),
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
        "chg_oc_ma": c // 2,  # 0.5 C
        "chg_oc_delay_ms": 2000,
        "dsg_oc_ma": c,  # 1 C
        "dsg_oc_delay_ms": 2000,
        "hw_ocd_ma": c * 3 // 2,  # 1.5 C
        "hw_ocd_delay_ms": 320,
        "hw_scd_ma": c * 3,  # 3 C
        "hw_scd_delay_us": 200,
        "oc_retry_ms": 30000,
        "oc_retry_max": 3,
        "chg_temp_min_dc": 0,
        "chg_temp_max_dc": 450,
        "dsg_temp_min_dc": -200,
        "dsg_temp_max_dc": 550,
        "temp_release_dc": 30,
        "temp_delay_ms": 2000,
        "fet_temp_max_dc": 800,
        "imbalance_warn_mv": 100,
        "release_delay_ms": 2000,
        "stale_ms": 1000,
        "warn_margin_mv": 50,
        "warn_margin_dc": 50,
        "warn_margin_pct": 10,
        "body_diode_ma": 1000,
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
}


def field_index(name):
    """Stable index of a field (used in events and the Modbus map); -1 when unknown."""
    return _INDEX.get(name, -1)


def check_value(name, value):
    """Type- and range-check one value. Returns the value as stored; raises ConfigError."""
    i = _INDEX.get(name, -1)
    if i < 0:
        raise ConfigError(name, "unknown field")
    f = FIELDS[i]
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
        if a in values and b in values and not _OPS[op](values[a], values[b]):
            raise ConfigError(a, text)


class Config:
    """The configuration in force. Read fields as attributes: cfg.cell_ov_mv."""

    def __init__(self, chemistry="lfp", cells=4, capacity_mah=100000, **overrides):
        self._values = {}
        v = defaults(chemistry, cells, capacity_mah)
        v.update(overrides)
        self._apply(self._validated(v))
        self.generation = 0  # incremented by every accepted change

    def _validated(self, values):
        out = {}
        for k in values:
            out[k] = check_value(k, values[k])
        for f in FIELDS:
            if f[0] not in out:
                raise ConfigError(f[0], "missing")
        check_rules(out)
        return out

    def _apply(self, values):
        self._values = values
        for k in values:
            setattr(self, k, values[k])

    def get(self, name):
        if name not in self._values:
            raise ConfigError(name, "unknown field")
        return self._values[name]

    def update(self, changes):
        """Apply a dict of changes atomically. Raises ConfigError and changes nothing on error."""
        v = dict(self._values)
        for k in changes:
            v[k] = changes[k]
        self._apply(self._validated(v))
        self.generation += 1

    def set(self, name, value):
        self.update({name: value})

    def as_dict(self):
        return dict(self._values)

    def names(self):
        return [f[0] for f in FIELDS]

