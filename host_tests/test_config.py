# Tests of bms.config (CPython and MicroPython): presets valid, every protection rule rejects
# with the field and the rule named, the previous configuration stays in force, type checks.
from bms.config import (
    CHEMISTRIES,
    Config,
    ConfigError,
    check_value,
    defaults,
    field_index,
)
from bms.config_tables import FIELDS, PRESETS, RULES
from testlib import raises

_PROT_FIRST = field_index("cell_ov_mv")
_PROT_LAST = field_index("plaus_delay_ms")


def _is_prot(name):
    return isinstance(name, str) and _PROT_FIRST <= field_index(name) <= _PROT_LAST


def test_presets_valid_for_all_sizes():
    for chem in CHEMISTRIES:
        for cells in (3, 4, 5, 8, 10, 15):
            for cap in (1000, 5000, 50000, 100000, 280000, 2000000):
                c = Config(chem, cells, cap)
                assert c.chemistry == chem and c.cells == cells
                assert c.cell_uv_mv < c.cell_uv_release_mv < c.cell_ov_release_mv < c.cell_ov_mv
                assert c.hw_cell_uv_mv < c.cell_uv_mv and c.cell_ov_mv < c.hw_cell_ov_mv
                assert c.dsg_oc_ma < c.hw_ocd_ma < c.hw_scd_ma


def test_documented_defaults():
    d = defaults("lfp", 4, 100000)
    assert (d["cell_ov_mv"], d["cell_ov_release_mv"], d["cell_uv_mv"]) == (3650, 3450, 2700)
    assert (d["hw_cell_ov_mv"], d["hw_cell_uv_mv"], d["cell_deep_uv_mv"]) == (3750, 2500, 2000)
    assert d["chg_temp_min_dc"] == 0  # no charging below 0 degC
    assert (d["pack_ov_mv"], d["pack_uv_mv"]) == (14400, 11200)
    assert (d["dsg_oc_ma"], d["hw_ocd_ma"], d["hw_scd_ma"]) == (100000, 150000, 300000)
    assert d["chg_oc_ma"] == 50000
    n = defaults("nmc", 4, 100000)
    assert (n["cell_ov_mv"], n["cell_uv_mv"], n["hw_cell_ov_mv"]) == (4200, 3000, 4250)
    t = defaults("lto", 4, 100000)
    assert (t["cell_ov_mv"], t["cell_uv_mv"]) == (2750, 1800)
    assert t["chg_temp_min_dc"] < 0  # LTO charges below freezing
    for chem in CHEMISTRIES:
        assert chem in PRESETS


def test_every_field_has_a_default():
    d = defaults()
    for f in FIELDS:
        assert f[0] in d, f[0]


def _term(values, t):
    if isinstance(t, str):
        return values[t]
    if isinstance(t, int):
        return t
    if isinstance(t, dict):
        return t[values["chemistry"]]
    a = _term(values, t[0])
    b = _term(values, t[2])
    return a + b if t[1] == "+" else a - b if t[1] == "-" else a * b


# Rules that no single in-range change can break.
_MULTI = {
    "dsg_temp_min_dc < dsg_temp_max_dc": {"dsg_temp_min_dc": 200, "dsg_temp_max_dc": 150},
    "temp_release_dc < chg_temp_max_dc - chg_temp_min_dc": {"temp_release_dc": 200,
                                                            "chg_temp_max_dc": 150},
    "warn_margin_dc < chg_temp_max_dc - chg_temp_min_dc": {"warn_margin_dc": 200,
                                                           "chg_temp_max_dc": 150},
}


def test_each_protection_rule_rejected_with_field_named():
    checked = 0
    for a, op, b, text in RULES:
        if not _is_prot(a):
            continue
        base = Config("lfp", 3, 100000)
        vals = base.as_dict()
        t = _term(vals, b)
        f = FIELDS[field_index(a)]
        cands = {"<": (t, t + 1), "<=": (t + 1, t + 10), ">=": (t - 1, t - 10)}[op]
        hit = False
        for v in cands + (f[1], f[2]):
            if not f[1] <= v <= f[2]:
                continue
            try:
                Config("lfp", 3, 100000).update({a: v})
            except ConfigError as e:
                if e.field == a and e.rule == text:
                    hit = True
                    break
                continue
        if not hit and isinstance(b, str):  # a at its range end: move b instead
            fb = FIELDS[field_index(b)]
            x = vals[a]
            for v in {"<": (x, x - 1), "<=": (x - 1, x - 10), ">=": (x + 1, x + 10)}[op]:
                if not fb[1] <= v <= fb[2]:
                    continue
                try:
                    Config("lfp", 3, 100000).update({b: v})
                except ConfigError as e:
                    if e.field == a and e.rule == text:
                        hit = True
                        break
        if not hit and text in _MULTI:
            e = raises(ConfigError, base.update, _MULTI[text])
            hit = e.field == a and e.rule == text
        assert hit, text
        checked += 1
    assert checked >= 25


def test_named_rules():
    c = Config("lfp", 4, 100000)
    e = raises(ConfigError, c.update, {"cell_ov_release_mv": 3700})
    assert e.field == "cell_ov_release_mv" and "cell_ov_release_mv < cell_ov_mv" in e.rule
    e = raises(ConfigError, c.update, {"hw_cell_ov_mv": 3600})
    assert e.field == "cell_ov_mv" and "outer layer" in e.rule
    e = raises(ConfigError, c.update, {"hw_cell_uv_mv": 2800})
    assert e.field == "hw_cell_uv_mv" and "outer layer" in e.rule
    e = raises(ConfigError, c.update, {"hw_ocd_ma": 90000})
    assert e.field == "dsg_oc_ma"
    e = raises(ConfigError, c.update, {"hw_scd_ma": 150000})
    assert e.field == "hw_ocd_ma"
    e = raises(ConfigError, c.update, {"temp_release_dc": 200, "chg_temp_max_dc": 150})
    assert e.field == "temp_release_dc"
    e = raises(ConfigError, c.update, {"chemistry": "lto"})  # LFP limits on an LTO pack
    assert e.field == "hw_cell_ov_mv" and "chemistry" in e.rule
    e = raises(ConfigError, c.update, {"cells": 8})  # pack limits of 4 cells
    assert e.field in ("pack_ov_mv", "pack_uv_mv")
    e = raises(ConfigError, c.update, {"chg_temp_min_dc": -250})
    assert e.field == "dsg_temp_min_dc"
    e = raises(ConfigError, c.update, {"body_diode_ma": 60000})
    assert e.field == "body_diode_ma"


def test_rejected_update_keeps_previous_config():
    c = Config("lfp", 4, 100000)
    before = c.as_dict()
    gen = c.generation
    raises(ConfigError, c.update, {"cell_ov_delay_ms": 500, "cell_uv_mv": 3100})
    assert c.as_dict() == before and c.generation == gen
    assert c.cell_ov_delay_ms == 2000 and c.cell_uv_mv == 2700
    raises(ConfigError, c.set, "cell_ov_mv", "high")
    assert c.cell_ov_mv == 3650
    c.update({"cell_ov_delay_ms": 500})
    assert c.cell_ov_delay_ms == 500 and c.generation == gen + 1


def test_rejected_update_keeps_protection_behaviour():
    from test_protection import Rig, bit

    r = Rig().boot()
    raises(ConfigError, r.cfg.update, {"cell_ov_mv": 3300, "cell_ov_delay_ms": 0})
    r.step(20)
    assert r.p.faults == 0 and r.p.chg_fet
    r.set_cells(3660, 0)
    r.step(9)
    assert r.p.faults == bit("cell_ov")


def test_type_and_range_errors():
    c = Config()
    for v in ("3650", None, 3650.5, True, [3650]):
        e = raises(ConfigError, c.set, "cell_ov_mv", v)
        assert e.field == "cell_ov_mv" and "integer" in e.rule
    assert check_value("cell_ov_mv", 3600.0) == 3600 and isinstance(
        check_value("cell_ov_mv", 3600.0), int)
    e = raises(ConfigError, c.set, "cell_ov_mv", 5000)
    assert e.field == "cell_ov_mv" and "2000..4500" in e.rule
    e = raises(ConfigError, c.set, "stale_ms", 100)
    assert e.field == "stale_ms"
    e = raises(ConfigError, c.set, "chemistry", "lead")
    assert e.field == "chemistry"
    e = raises(ConfigError, c.set, "no_such_field", 1)
    assert e.field == "no_such_field" and "unknown" in e.rule
    e = raises(ConfigError, Config, "lead")
    assert e.field == "chemistry"
    e = raises(ConfigError, Config, "lfp", 4, 100000, cell_uv_mv=3200)
    assert e.field == "cell_uv_mv"
    assert str(e).startswith("cell_uv_mv: ")


# --- hooks, the pack's identity, factory reset -------------------------------------------------


def test_hooks_see_the_would_be_values_before_they_apply():
    c = Config("lfp", 4, 100000)
    seen = []

    def hook(cfg, new):
        # called after validation, before the change applies: cfg still holds the old value
        seen.append((cfg.cell_ov_mv, new["cell_ov_mv"], new["cell_uv_mv"], cfg.generation))

    c.hooks.append(hook)
    c.update({"cell_ov_mv": 3600})
    assert seen == [(3650, 3600, 2700, 0)]
    assert c.cell_ov_mv == 3600 and c.generation == 1
    c.set("imbalance_warn_mv", 80)  # every accepted change goes through the hooks
    assert len(seen) == 2 and seen[1][0] == 3600


def test_hook_refusal_changes_nothing():
    c = Config("lfp", 4, 100000)
    calls = []

    def refuse(cfg, new):
        calls.append(new.get("hw_cell_ov_mv"))
        if new["hw_cell_ov_mv"] != cfg.hw_cell_ov_mv:
            raise ConfigError("hw_cell_ov_mv", "the AFE cannot place it")

    c.hooks.append(refuse)
    before = c.as_dict()
    e = raises(ConfigError, c.update, {"hw_cell_ov_mv": 3800, "imbalance_warn_mv": 80})
    assert e.field == "hw_cell_ov_mv" and e.rule == "the AFE cannot place it"
    assert c.as_dict() == before and c.generation == 0
    assert c.hw_cell_ov_mv == 3750 and c.imbalance_warn_mv == before["imbalance_warn_mv"]
    c.update({"imbalance_warn_mv": 80})  # a change the hook accepts
    assert c.imbalance_warn_mv == 80 and c.generation == 1


def test_hooks_run_only_on_validated_values():
    c = Config("lfp", 4, 100000)
    calls = []
    c.hooks.append(lambda cfg, new: calls.append(1))
    raises(ConfigError, c.set, "cell_ov_mv", 9999)  # out of range
    raises(ConfigError, c.set, "hw_cell_ov_mv", 3600)  # breaks a rule
    raises(ConfigError, c.set, "no_such_field", 1)
    assert calls == [] and c.generation == 0


def test_identity_locked_refuses_chemistry_cells_capacity():
    c = Config("lfp", 4, 100000)
    c.identity_locked = True
    before = c.as_dict()
    for name, value in (("chemistry", "nmc"), ("cells", 5), ("capacity_mah", 50000)):
        e = raises(ConfigError, c.update, {name: value})
        assert e.field == name and "board file" in e.rule, (name, e.rule)
        assert c.as_dict() == before and c.generation == 0
        e = raises(ConfigError, c.update, {"imbalance_warn_mv": 80, name: value})
        assert e.field == name and c.imbalance_warn_mv == before["imbalance_warn_mv"]
    # the same values are no change: a full dict (e.g. a saved configuration) still applies
    d = c.as_dict()
    d["imbalance_warn_mv"] = 80
    c.update(d)
    assert c.imbalance_warn_mv == 80 and c.chemistry == "lfp" and c.cells == 4
    # not locked (a Config of its own, e.g. the simulator's): the identity may change
    u = Config("lfp", 4, 100000)
    u.update({"capacity_mah": 50000})
    assert u.capacity_mah == 50000


def test_factory_reset_restores_the_defaults_of_this_identity():
    for chem, cells, cap in (("lfp", 4, 100000), ("nmc", 8, 50000), ("lto", 15, 20000)):
        c = Config(chem, cells, cap, imbalance_warn_mv=80, release_delay_ms=500)
        c.identity_locked = True
        c.update({"cell_ov_delay_ms": 500})
        gen = c.generation
        seen = []
        c.hooks.append(lambda cfg, new, seen=seen: seen.append(dict(new)))
        c.factory_reset()
        assert c.as_dict() == defaults(chem, cells, cap), chem
        assert (c.chemistry, c.cells, c.capacity_mah) == (chem, cells, cap)
        assert c.generation == gen + 1
        assert seen == [defaults(chem, cells, cap)]  # through the hooks, like every change


def test_factory_reset_refused_by_a_hook_changes_nothing():
    c = Config("lfp", 4, 100000, hw_cell_ov_mv=3800)
    before = c.as_dict()

    def refuse(cfg, new):
        raise ConfigError("hw_cell_ov_mv", "the AFE is not reachable now; nothing was changed")

    c.hooks.append(refuse)
    e = raises(ConfigError, c.factory_reset)
    assert e.field == "hw_cell_ov_mv" and "not reachable" in e.rule
    assert c.as_dict() == before and c.generation == 0


def test_tables_are_let_go_after_use():
    # The ranges, rules, presets and defaults are needed only while a configuration is built
    # or changed: bms.config lets the tables module go again (RAM on the board).
    import sys

    import bms
    from bms.config import CHOICES

    assert CHOICES["chemistry"] == CHEMISTRIES
    c = Config("nmc", 8, 50000)
    assert "bms.config_tables" not in sys.modules and not hasattr(bms, "config_tables")
    c.set("imbalance_warn_mv", 80)
    raises(ConfigError, c.set, "cell_ov_mv", 9999)
    assert "bms.config_tables" not in sys.modules
    assert c.imbalance_warn_mv == 80 and c.cell_ov_mv == 4200
