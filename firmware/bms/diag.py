# bms.diag: diagnostics on the serial REPL while the BMS keeps protecting.
#
# With micropython-lib's aiorepl installed (make flash does it), the REPL runs as one more
# asyncio task next to the BMS, and the name `bms` is bound to a Diag:
#
#   bms.status()  bms.cells()  bms.faults()  bms.log(n)  bms.config()  bms.set(name, value)
#   bms.clear_faults()  bms.balance_test(cell)  bms.ship()
#   bms.mqtt()  bms.mqtt(ssid=..., password=..., host=..., enable=1, ...)   (Wi-Fi boards)
#
# Each prints a readable table and returns None (or a value a script can use: set() returns
# the applied value, clear_faults() whether the latch was released). Every change goes
# through the same validation as the Modbus and file paths (Config.update).
from bms import events as ev

_BALANCE_TEST_MS = 60000
# bms.mqtt() keyword -> configuration field
_MQTT_KEYS = {
    "enable": "mqtt_enable",
    "ssid": "wifi_ssid",
    "password": "wifi_password",
    "host": "mqtt_host",
    "port": "mqtt_port",
    "user": "mqtt_user",
    "mqtt_password": "mqtt_password",
    "tls": "mqtt_tls",
    "prefix": "mqtt_prefix",
    "period_s": "mqtt_period_ms",
    "pin": "mqtt_pin",
}


class Diag:
    def __init__(self, bms, out=None):
        self._bms = bms
        self._out = out if out is not None else print

    def _p(self, *args):
        self._out(*args)

    def _now(self):
        return self._bms.clock.now_ms()

    def status(self):
        """Pack state in one table: the status view (bms.status), the numbers the inverter
        and the EMS are told."""
        from bms.protection import STATE_NAMES, fault_names

        b = self._bms
        st = b.status
        s = b.snap
        rows = (
            ("state", STATE_NAMES[st.state]),
            ("pack", "%.3f V" % (st.pack_mv / 1000)),
            ("current", "%+.2f A" % (st.current_ma / 1000)),
            ("cells", "%d..%d mV (spread %d mV)" % (st.cell_min_mv, st.cell_max_mv,
                                                    st.cell_max_mv - st.cell_min_mv)),
            ("temperature", _temps(st) + ("" if st.temp_valid else "  (sent: %.1f C)"
                                          % (st.temp_report_dc / 10))),
            ("SOC", "%.1f %% +/- %.1f %%" % (st.soc_pct, st.soc_err_pct)),
            ("SOH", "%.1f %% (%.1f Ah)" % (st.soh_pct, st.capacity_mah / 1000)),
            ("cycles", "%.1f" % st.cycles),
            ("FETs", "chg %s  dsg %s" % (_on(st.chg_fet), _on(st.dsg_fet))),
            ("enabled", "chg %s  dsg %s" % (_yes(st.chg_enable), _yes(st.dsg_enable))),
            ("faults", fault_names(st.faults) or "-"),
            ("latched", fault_names(st.latched) or "-"),
            ("warnings", fault_names(st.warnings) or "-"),
            ("limits", "CVL %.2f V  CCL %.1f A  DCL %.1f A  DVL %.2f V"
             % (st.cvl_mv / 1000, st.ccl_ma / 1000, st.dcl_ma / 1000, st.dvl_mv / 1000)),
            ("requests", "%s%s" % ("force charge " if st.force_charge else "",
                                   "full charge" if st.full_charge_req else "") or "-"),
            ("balancing", "%s" % _cells_of(st.bal_mask) if st.bal_mask else "-"),
            ("heater/fan", "%s / %s" % (_on(st.heater), _on(st.fan))),
            ("inverter", _inverter(b)),
            ("AFE errors", "%d (last %d consecutive)" % (s.error_total, s.errors)),
            ("AFE integrity", "%d readings refused, %d re-initialisations"
             % (st.afe_refusals, st.afe_inits)),
            ("configuration", "board defaults: stored one was for another pack (%s)"
             % b.config_foreign if b.config_foreign else "in force"),
            ("uptime", "%d s" % (self._now() // 1000)),
        )
        self._table(("item", "value"), rows)

    def cells(self):
        """Every cell: voltage, deviation from the mean, balancing."""
        s = self._bms.snap
        n = s.n_cells
        mean = s.cell_sum_mv // n if n else 0
        rows = []
        for i in range(n):
            v = s.cell_mv[i]
            mark = ""
            if i == s.cell_max_idx:
                mark = "max"
            elif i == s.cell_min_idx:
                mark = "min"
            rows.append(("%d" % (i + 1), "%d" % v, "%+d" % (v - mean),
                         "yes" if s.bal_mask & (1 << i) else "", mark))
        self._table(("cell", "mV", "dev", "bleed", ""), rows)

    def faults(self):
        """Active faults, latched faults and warnings, one row each."""
        from bms.protection import FAULT_NAMES

        p = self._bms.prot
        rows = []
        for i in range(len(FAULT_NAMES)):
            bit = 1 << i
            tier = ""
            if p.latched & bit:
                tier = "LATCHED"
            elif p.faults & bit:
                tier = "protection"
            elif p.warnings & bit:
                tier = "warning"
            if tier:
                rows.append((FAULT_NAMES[i], tier))
        if not rows:
            self._p("no faults, no warnings")
            return
        self._table(("fault", "tier"), rows)

    def log(self, n=20):
        """The n newest events, oldest first."""
        from bms.protection import FAULT_NAMES, STATE_NAMES

        rows = []
        for t, code, a, b in self._bms.events.last(n):
            what = ev.name(code)
            detail = "%d %d" % (a, b)
            if code == ev.EV_STATE:
                detail = "%s -> %s" % (_get(STATE_NAMES, a), _get(STATE_NAMES, b))
            elif code in (ev.EV_FAULT_SET, ev.EV_FAULT_CLEAR, ev.EV_WARN_SET, ev.EV_WARN_CLEAR,
                          ev.EV_LATCH):
                detail = "%s (%d)" % (_get(FAULT_NAMES, a), b)
            elif code in (ev.EV_CONFIG, ev.EV_CONFIG_REJECT):
                from bms.config import NAMES

                detail = "%s = %d" % (_get(NAMES, a), b)
            rows.append(("%.3f" % (t / 1000), what, detail))
        if not rows:
            self._p("event log empty")
            return
        self._table(("t_s", "event", "detail"), rows)

    def config(self):
        """The configuration in force (passwords shown as ***)."""
        d = self._bms.cfg.public_dict()
        self._table(("name", "value"), [(k, str(d[k])) for k in self._bms.cfg.names()])

    def set(self, name, value):
        """Change one configuration value (validated; saved to flash; logged)."""
        from bms.config import ConfigError, field_index

        b = self._bms
        now = self._now()
        try:
            b.cfg.set(name, value)
        except ConfigError as e:
            b.events.add(now, ev.EV_CONFIG_REJECT, field_index(name), _intpart(value))
            self._p("rejected: %s" % e)
            return None
        b.events.add(now, ev.EV_CONFIG, field_index(name), _intpart(value))
        b.save_config(now)
        self._p("%s = %s" % (name, b.cfg.public_dict()[name]))
        return b.cfg.public_dict()[name]

    def mqtt(self, **settings):
        """MQTT / Home Assistant: without arguments the link's status; with keyword
        arguments (ssid, password, host, port, user, mqtt_password, tls, prefix, period_s,
        pin, enable) the settings, applied together through the same validation, logged
        and saved. Passwords are never printed."""
        from bms.config import ConfigError, field_index

        b = self._bms
        if settings:
            changes = {}
            for k in settings:
                name = _MQTT_KEYS.get(k)
                if name is None:
                    self._p("unknown setting %s; use: %s" % (k, ", ".join(_MQTT_KEYS)))
                    return False
                v = settings[k]
                changes[name] = v * 1000 if k == "period_s" and isinstance(v, int) else v
            now = self._now()
            try:
                b.cfg.update(changes)
            except ConfigError as e:
                b.events.add(now, ev.EV_CONFIG_REJECT, field_index(e.field),
                             _intpart(changes.get(e.field, 0)))
                self._p("rejected: %s" % e)
                return False
            for name in changes:
                b.events.add(now, ev.EV_CONFIG, field_index(name), _intpart(changes[name]))
            b.save_config(now)
        c = b.cfg.public_dict()
        rows = [(k, str(c[k])) for k in ("mqtt_enable", "wifi_ssid", "wifi_password",
                                         "mqtt_host", "mqtt_port", "mqtt_user",
                                         "mqtt_password", "mqtt_tls", "mqtt_prefix",
                                         "mqtt_period_ms")]
        rows.append(("mqtt_pin", "set" if c["mqtt_pin"] else "0 (commands off)"))
        link = getattr(b, "mqtt", None)
        if link is None:
            rows.append(("link", "this board has no Wi-Fi"))
        else:
            info = link.info()
            for k in ("link", "last_reason", "connects", "published", "alerts_sent",
                      "alerts_pending", "alerts_dropped", "commands", "dropped_msgs", "errors",
                      "max_poll_us"):
                rows.append((k, str(info[k])))
        self._table(("item", "value"), rows)
        return True

    def factory_reset(self):
        """Configuration back to the board's defaults (hardware limits reprogrammed first);
        logged and saved."""
        e = self._bms.factory_reset(self._now(), 2)
        if e is not None:
            self._p("refused: %s" % e)
            return False
        self._p("configuration reset to the defaults of this board (%s, %d cells, %d mAh)"
                % (self._bms.cfg.chemistry, self._bms.cfg.cells, self._bms.cfg.capacity_mah))
        return True

    def clear_faults(self):
        """Explicit reset of latched faults (refused while the cause still stands)."""
        ok = self._bms.prot.reset_latched(self._now())
        self._p("latched faults cleared" if ok else "refused: the latched condition still stands")
        return ok

    def balance_test(self, cell):
        """Bleed one cell (1-based) for 60 s to check its balancing circuit."""
        b = self._bms
        n = b.snap.n_cells
        if not isinstance(cell, int) or not 1 <= cell <= n:
            self._p("cell must be 1..%d" % n)
            return False
        if b.prot.faults or b.prot.latched:
            self._p("refused: faults are active")
            return False
        b.bal_override = 1 << (cell - 1)
        b.bal_override_until = self._now() + _BALANCE_TEST_MS
        self._p("bleeding cell %d for %d s; watch bms.cells()" % (cell, _BALANCE_TEST_MS // 1000))
        return True

    def drill(self, task="measure"):
        """Fire drill: make one task raise once, to see the safe state, the log and the restart."""
        from bms.app import TASK_NAMES

        if task not in TASK_NAMES:
            self._p("task must be one of: " + ", ".join(TASK_NAMES))
            return False
        self._bms.drill = TASK_NAMES.index(task)
        self._p("task %s will raise once at its next cycle" % task)
        return True

    def ship(self):
        """Save state, open the FETs and put the AFE into ship mode (wake: TS1 boot pulse)."""
        self._p("entering ship mode: FETs off, AFE shut down; wake with the BOOT button")
        self._bms.ship()

    def _table(self, head, rows):
        widths = [len(h) for h in head]
        for r in rows:
            for i, c in enumerate(r):
                if len(c) > widths[i]:
                    widths[i] = len(c)
        fmt = "  ".join(["%-" + str(w) + "s" for w in widths])
        self._p((fmt % tuple(head)).rstrip())
        self._p("  ".join(["-" * w for w in widths]))
        for r in rows:
            self._p((fmt % tuple(r)).rstrip())


def _get(seq, i):
    return seq[i] if 0 <= i < len(seq) else str(i)


def _intpart(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


def _on(x):
    return "on" if x else "off"


def _yes(x):
    return "yes" if x else "no"


def _temps(s):
    parts = []
    for i in range(s.n_temps):
        t = s.temp_dc[i]
        parts.append("T%d %s" % (i + 1, "open/short" if t == -32768 else "%.1f C" % (t / 10)))
    if s.die_temp_dc != -32768:
        parts.append("die %.1f C" % (s.die_temp_dc / 10))
    return "  ".join(parts)


def _inverter(b):
    can = getattr(b, "can", None)
    if can is None:
        return "no CAN"
    return "%s, %s" % (can.name, "present" if can.present else "not present")


def _cells_of(mask):
    return ",".join([str(i + 1) for i in range(16) if mask & (1 << i)])
