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
# The pack's identity: set by the board file (boards/<name>/board.py), never at run time.
IDENTITY = ("chemistry", "cells", "capacity_mah")


class ConfigError(ValueError):
    """An invalid configuration value. .field names the field, .rule says what is wrong."""

    def __init__(self, field, rule):
        super().__init__("%s: %s" % (field, rule))
        self.field = field
        self.rule = rule


STR = "str"
SECRET = "secret"

# What has to stay resident: the field names (their order is the index used by events and
# the Modbus map), each field's kind and the choices of the enum fields. The table with the
# ranges, the rules, the presets and the defaults lives in bms.config_tables, imported only
# while a configuration is built or changed (below) and let go again.
K_INT = 0
K_ENUM = 1
K_TEXT = 2
K_SECRET = 3


def _tables():
    from bms import config_tables

    return config_tables


def _drop():
    """Let the tables module go (its RAM comes back at the next collection)."""
    import sys

    sys.modules.pop("bms.config_tables", None)
    pkg = sys.modules.get("bms")
    if pkg is not None and hasattr(pkg, "config_tables"):
        delattr(pkg, "config_tables")


def _resident():
    f = _tables().FIELDS
    names = tuple(x[0] for x in f)
    kinds = bytearray(len(f))
    choices = {}
    for i in range(len(f)):
        x = f[i]
        if len(x) == 2:
            kinds[i] = K_ENUM
            choices[x[0]] = x[1]
        elif isinstance(x[1], str):
            kinds[i] = K_SECRET if x[1] == SECRET else K_TEXT
    return names, bytes(kinds), choices


def _init():
    import sys

    held = "bms.config_tables" in sys.modules  # a host tool imported the tables first
    r = _resident()
    if not held:
        _drop()
    return r


NAMES, KINDS, CHOICES = _init()


def field_index(name):
    """Stable index of a field (used in events and the Modbus map); -1 when unknown."""
    try:
        return NAMES.index(name)
    except ValueError:
        return -1


def kind(name):
    """K_INT, K_ENUM, K_TEXT or K_SECRET of a field; -1 when unknown."""
    i = field_index(name)
    return KINDS[i] if i >= 0 else -1


def is_text(name):
    """True for a text field (STR or SECRET)."""
    return kind(name) in (K_TEXT, K_SECRET)


def is_secret(name):
    """True for a field whose value is never shown (passwords)."""
    return kind(name) == K_SECRET


def defaults(chemistry="lfp", cells=4, capacity_mah=100000):
    """The documented default configuration for a chemistry, cell count and capacity."""
    try:
        return _tables().defaults(chemistry, cells, capacity_mah)
    finally:
        _drop()


def check_value(name, value):
    """Type- and range-check one value. Returns the value as stored; raises ConfigError."""
    try:
        return _tables().check_value(name, value)
    finally:
        _drop()


def check_rules(values):
    """Cross-field rules on a complete dict of values; raises ConfigError naming field a."""
    try:
        _tables().check_rules(values)
    finally:
        _drop()


class Config:
    """The configuration in force. Read fields as attributes: cfg.cell_ov_mv."""

    def __init__(self, chemistry="lfp", cells=4, capacity_mah=100000, **overrides):
        self._values = {}
        try:
            v = _tables().defaults(chemistry, cells, capacity_mah)
            v.update(overrides)
            self._apply(self._validated(v))
        finally:
            _drop()
        self.generation = 0  # incremented by every accepted change
        # callables(cfg, new_values) run on the would-be result before a change is applied
        # (after validation); one that raises ConfigError refuses the change (e.g. the AFE
        # that must take new hardware limits first).
        self.hooks = []
        self.identity_locked = False  # True: IDENTITY fields are refused by update()

    def _validated(self, values):
        t = _tables()  # let go by the caller (try/finally _drop())
        out = {}
        for k in values:
            out[k] = t.check_value(k, values[k])
        for n in NAMES:
            if n not in out:
                raise ConfigError(n, "missing")
        t.check_rules(out)
        return out

    def _apply(self, values):
        self._values = values
        for k in values:
            setattr(self, k, values[k])

    def __getattr__(self, name) -> int:
        # Only reached for names that are not fields (fields are plain attributes).
        raise AttributeError(name)

    def get(self, name):
        if name not in self._values:
            raise ConfigError(name, "unknown field")
        return self._values[name]

    def update(self, changes):
        """Apply a dict of changes atomically. Raises ConfigError and changes nothing on error."""
        v = dict(self._values)
        for k in changes:
            if self.identity_locked and k in IDENTITY and changes[k] != self._values.get(k):
                raise ConfigError(k, "part of the pack's identity: set it in the board file")
            v[k] = changes[k]
        try:
            v = self._validated(v)
        finally:
            _drop()
        self._commit(v)

    def _commit(self, v):
        for h in self.hooks:
            h(self, v)
        self._apply(v)
        self.generation += 1

    def factory_reset(self):
        """Back to the documented defaults of this pack's identity (through the hooks)."""
        v = self._values
        try:
            v = self._validated(_tables().defaults(v["chemistry"], v["cells"],
                                                   v["capacity_mah"]))
        finally:
            _drop()
        self._commit(v)

    def check(self, changes):
        """Validate changes on the would-be result (ranges, rules, identity) without applying
        them and without the hooks. Raises ConfigError."""
        v = dict(self._values)
        for k in changes:
            if self.identity_locked and k in IDENTITY and changes[k] != self._values.get(k):
                raise ConfigError(k, "part of the pack's identity: set it in the board file")
            v[k] = changes[k]
        try:
            self._validated(v)
        finally:
            _drop()

    def set(self, name, value):
        self.update({name: value})

    def as_dict(self):
        return dict(self._values)

    def public_dict(self):
        """as_dict() with every SECRET value replaced by "***" (or "" when unset)."""
        d = dict(self._values)
        for i in range(len(NAMES)):
            if KINDS[i] == K_SECRET:
                n = NAMES[i]
                d[n] = "***" if d[n] else ""
        return d

    def names(self):
        return list(NAMES)

