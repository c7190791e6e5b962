# bms.ha: what goes over MQTT, as text. Home Assistant discovery configs, the state JSON,
# alert messages, and the parser of command payloads. Pure functions of the status view
# (bms.status.Status), the event entries and the configuration: no I/O, both interpreters.
#
# Topics (P = cfg.mqtt_prefix, N = node id = P with "/" replaced by "_"):
#   P/availability          "online" / "offline" (retained; "offline" is the last will)
#   P/state                 one JSON object with every value (every mqtt_period_ms and at
#                           once on a change of state, faults, warnings or FETs)
#   P/alert                 one JSON object per fault/warning raised or cleared (QoS 1)
#   P/cmd  ->  P/cmd/result PIN-protected configuration writes (only with mqtt_pin != 0)
#   homeassistant/<component>/N/<object>/config   discovery (retained)
import json

from bms import events as ev
from bms.faults import names as fault_names
from bms.faults import unit as fault_unit
from bms.protection import FAULT_NAMES, STATE_NAMES, UNKNOWN
from bms.snapshot import TEMP_INVALID_DC

DISCOVERY_PREFIX = "homeassistant"
HA_STATUS_TOPIC = "homeassistant/status"  # HA's birth message: "online" -> rediscover
MODE_NAMES = ("bulk", "absorption", "float")

# sensors: (object id, name, state key, device_class, unit, state_class, display precision)
_SENSORS = (
    ("pack_voltage", "Pack voltage", "v", "voltage", "V", "measurement", 2),
    ("current", "Current", "i", "current", "A", "measurement", 2),
    ("power", "Power", "p", "power", "W", "measurement", 0),
    ("soc", "State of charge", "soc", "battery", "%", "measurement", 1),
    ("soh", "State of health", "soh", None, "%", "measurement", 1),
    ("cell_min", "Cell min", "cmin", "voltage", "V", "measurement", 3),
    ("cell_max", "Cell max", "cmax", "voltage", "V", "measurement", 3),
    ("cell_delta", "Cell delta", "cdelta", "voltage", "mV", "measurement", 0),
    ("cvl", "Charge voltage limit", "cvl", "voltage", "V", "measurement", 2),
    ("ccl", "Charge current limit", "ccl", "current", "A", "measurement", 1),
    ("dcl", "Discharge current limit", "dcl", "current", "A", "measurement", 1),
    ("energy_in", "Energy charged", "e_in", "energy", "kWh", "total_increasing", 2),
    ("energy_out", "Energy discharged", "e_out", "energy", "kWh", "total_increasing", 2),
    ("cycles", "Cycles", "cycles", None, None, "total_increasing", 1),
    ("afe_temperature", "AFE temperature", "t_afe", "temperature", "\u00b0C", "measurement",
     1),
)
# text sensors: (object id, name, state key, options or None, icon)
_TEXTS = (
    ("state", "State", "state", STATE_NAMES, "mdi:battery-check"),
    ("faults", "Faults", "faults", None, "mdi:alert"),
    ("warnings", "Warnings", "warnings", None, "mdi:alert-outline"),
    ("charge_mode", "Charge mode", "mode", MODE_NAMES, "mdi:battery-charging"),
    ("balancing_cells", "Balancing cells", "bal_cells", None, "mdi:scale-balance"),
)
# binary sensors: (object id, name, state key, device_class)
_BINARIES = (
    ("problem", "Problem", "problem", "problem"),
    ("charge_fet", "Charge FET", "chg_fet", "power"),
    ("discharge_fet", "Discharge FET", "dsg_fet", "power"),
    ("charge_allowed", "Charge allowed", "chg_ok", None),
    ("discharge_allowed", "Discharge allowed", "dsg_ok", None),
    ("balancing", "Balancing", "bal", "running"),
)

# Unit of the value an EV_FAULT_SET/CLEAR entry carries, per fault index (README, Faults).
# "dC" = 0.1 degC (published in degC); "stat" = SYS_STAT bits; "" = a count.
ALERT_CODES = (ev.EV_FAULT_SET, ev.EV_FAULT_CLEAR, ev.EV_WARN_SET, ev.EV_WARN_CLEAR,
               ev.EV_LATCH, ev.EV_LATCH_RESET)

# command refusals (EV_MQTT a = 2, b = code; "error" in P/cmd/result)
CMD_TOO_LONG = 1
CMD_NOT_JSON = 2
CMD_BAD_FORM = 3
CMD_BAD_PIN = 4
CMD_HOLDOFF = 5
CMD_NOT_WRITABLE = 6
CMD_INVALID = 7
CMD_DISABLED = 8
CMD_TEXT = ("", "too long", "not JSON", "bad form", "wrong PIN", "PIN hold-off",
            "not writable", "invalid value", "commands disabled")
CMD_MAX_BYTES = 256
CMD_MAX_FIELDS = 8


def node_id(prefix):
    return prefix.replace("/", "_")


def topic(prefix, leaf):
    return prefix + "/" + leaf


def entity_count(n_cells, n_temps):
    return len(_SENSORS) + len(_TEXTS) + len(_BINARIES) + n_cells + n_temps


def _device(prefix, board, fw):
    return {
        "identifiers": [node_id(prefix)],
        "name": "BMS " + prefix,
        "manufacturer": "MicroPython BMS",
        "model": "BQ769x0 (" + board + ")",
        "sw_version": fw,
    }


def discovery(i, prefix, n_cells, n_temps, board="bms", fw="1.0"):
    """The i-th discovery message as (topic, payload), or None past the last one."""
    node = node_id(prefix)
    d = {
        "availability_topic": topic(prefix, "availability"),
        "state_topic": topic(prefix, "state"),
        "device": _device(prefix, board, fw),
        "origin": {"name": "mpy-bms"},
        "has_entity_name": True,
    }
    comp = "sensor"
    k = i
    if k < len(_SENSORS):
        oid, name, key, dc, unit, sc, prec = _SENSORS[k]
        tpl = "{{ value_json.%s }}" % key
    else:
        k -= len(_SENSORS)
        dc = unit = sc = prec = None
        if k < n_cells:
            oid = "cell%d" % (k + 1)
            name = "Cell %d" % (k + 1)
            tpl = "{{ value_json.cells[%d] }}" % k
            dc, unit, sc, prec = "voltage", "V", "measurement", 3
        elif k - n_cells < n_temps:
            k -= n_cells
            oid = "temperature%d" % (k + 1)
            name = "Temperature %d" % (k + 1)
            tpl = "{{ value_json.temps[%d] }}" % k
            dc, unit, sc, prec = "temperature", "\u00b0C", "measurement", 1
        else:
            k -= n_cells + n_temps
            if k < len(_TEXTS):
                oid, name, key, options, icon = _TEXTS[k]
                tpl = "{{ value_json.%s }}" % key
                d["icon"] = icon
                if options is not None:
                    dc = "enum"
                    d["options"] = list(options)
            else:
                k -= len(_TEXTS)
                if k >= len(_BINARIES):
                    return None
                comp = "binary_sensor"
                oid, name, key, dc = _BINARIES[k]
                tpl = "{{ value_json.%s }}" % key
                d["payload_on"] = "ON"
                d["payload_off"] = "OFF"
    d["name"] = name
    d["unique_id"] = node + "_" + oid
    d["value_template"] = tpl
    if dc is not None:
        d["device_class"] = dc
    if unit is not None:
        d["unit_of_measurement"] = unit
    if sc is not None:
        d["state_class"] = sc
    if prec is not None:
        d["suggested_display_precision"] = prec
    return "%s/%s/%s/%s/config" % (DISCOVERY_PREFIX, comp, node, oid), json.dumps(d)


def _onoff(x):
    return '"ON"' if x else '"OFF"'


def _t(dc):
    return "null" if dc == TEMP_INVALID_DC else "%.1f" % (dc / 10)


def names(mask):
    """'a,b,c' for the set fault bits (Home Assistant shows commas), 'none' for none."""
    return fault_names(mask).replace("|", ",") if mask else "none"


def _cells(mask):
    return ",".join([str(i + 1) for i in range(16) if mask & (1 << i)])


def state_payload(st, now_ms):
    """The P/state JSON of a Status. Volts/amps with mV/mA resolution (exactly the log's
    integers / 1000); t_ms is the time of the status' last fill."""
    p = []
    a = p.append
    a('{"t_ms":%d,"now_ms":%d' % (st.t_ms, now_ms))
    a(',"valid":%s' % ("true" if st.ready else "false"))
    a(',"v":%.3f,"i":%.3f,"p":%.1f' % (st.pack_mv / 1000, st.current_ma / 1000,
                                       st.pack_mv * st.current_ma / 1000000))
    a(',"soc":%.2f,"soh":%.2f,"soc_err":%.2f' % (st.soc_pct, st.soh_pct, st.soc_err_pct))
    a(',"cmin":%.3f,"cmax":%.3f,"cdelta":%d' % (st.cell_min_mv / 1000, st.cell_max_mv / 1000,
                                              st.cell_max_mv - st.cell_min_mv))
    a(',"cmin_idx":%d,"cmax_idx":%d' % (st.cell_min_idx + 1, st.cell_max_idx + 1))
    a(',"cvl":%.3f,"ccl":%.3f,"dcl":%.3f' % (st.cvl_mv / 1000, st.ccl_ma / 1000,
                                             st.dcl_ma / 1000))
    a(',"e_in":%.3f,"e_out":%.3f,"cycles":%.2f' % (st.chg_wh / 1000,
                                                   st.dsg_wh / 1000,
                                                   st.cycles))
    a(',"t_afe":%s' % _t(st.die_temp_dc))
    a(',"state":"%s","mode":"%s"' % (STATE_NAMES[st.state] if 0 <= st.state < len(STATE_NAMES)
                                     else "?", MODE_NAMES[st.mode]
                                     if 0 <= st.mode < len(MODE_NAMES) else "?"))
    a(',"problem":%s,"faults":"%s","warnings":"%s","latched":"%s"' % (
        _onoff(st.faults), names(st.faults), names(st.warnings), names(st.latched)))
    a(',"chg_fet":%s,"dsg_fet":%s' % (_onoff(st.chg_fet), _onoff(st.dsg_fet)))
    a(',"chg_ok":%s,"dsg_ok":%s' % (_onoff(st.chg_enable), _onoff(st.dsg_enable)))
    a(',"bal":%s,"bal_cells":"%s"' % (_onoff(st.bal_mask), _cells(st.bal_mask)))
    a(',"cells":[%s]' % ",".join(["%.3f" % (st.cell_mv[i] / 1000) for i in range(st.n_cells)]))
    a(',"temps":[%s]}' % ",".join([_t(st.temp_dc[i]) for i in range(st.n_temps)]))
    return "".join(p)


def alert_payload(t_ms, code, a, b, st, now_ms, lost=0):
    """One P/alert JSON for an event-log entry (code in ALERT_CODES)."""
    if code == ev.EV_LATCH_RESET:
        fault = names(a)
        tier = "latched"
        value = None
        unit = ""
        raised = False
    else:
        fault = FAULT_NAMES[a] if 0 <= a < len(FAULT_NAMES) else "?"
        raised = code in (ev.EV_FAULT_SET, ev.EV_WARN_SET, ev.EV_LATCH)
        if code in (ev.EV_WARN_SET, ev.EV_WARN_CLEAR):
            tier = "warning"
        elif code == ev.EV_LATCH or (st.latched >> a) & 1:
            tier = "latched"
        else:
            tier = "protection"
        unit = fault_unit(a) if 0 <= a < len(FAULT_NAMES) else ""
        value = None if b == UNKNOWN else b  # tripped because the value was unknown
        if unit == "dC":
            value = b / 10
            unit = "\u00b0C"
    what = ev.name(code)
    msg = "%s %s (%s)" % (fault, "raised" if raised else "cleared", tier)
    if value is not None:
        msg += ": %s %s" % (value, unit) if unit else ": %s" % value
    d = {
        "event": what,
        "fault": fault,
        "tier": tier,
        "raised": raised,
        "value": value,
        "unit": unit,
        "message": msg,
        "t_ms": t_ms,
        "pub_ms": now_ms,
        "state": STATE_NAMES[st.state] if 0 <= st.state < len(STATE_NAMES) else "?",
        "faults": names(st.faults),
        "v": st.pack_mv / 1000,
        "i": st.current_ma / 1000,
        "cmin": st.cell_min_mv / 1000,
        "cmax": st.cell_max_mv / 1000,
        "tmax": None if st.temp_max_dc == TEMP_INVALID_DC else st.temp_max_dc / 10,
        "soc": round(st.soc_pct, 1),
    }
    if lost:
        d["lost"] = lost
    return json.dumps(d)


class CommandError(Exception):
    """A refused command: .code is CMD_*, .field the field concerned (or None)."""

    def __init__(self, code, field=None):
        super().__init__(CMD_TEXT[code] if 0 <= code < len(CMD_TEXT) else "?")
        self.code = code
        self.field = field


def parse_command(payload):
    """{"pin": 1234, "set": {"name": value, ...}} -> (pin, {name: value}). Raises
    CommandError for anything else: the only accepted shape, at most CMD_MAX_BYTES bytes,
    1..CMD_MAX_FIELDS fields, values int or text (enum choices), nothing else."""
    if len(payload) > CMD_MAX_BYTES:
        raise CommandError(CMD_TOO_LONG)
    try:
        d = json.loads(payload)
    except Exception:  # noqa: BLE001 - ValueError, UnicodeError, MemoryError, RecursionError
        raise CommandError(CMD_NOT_JSON) from None
    if not isinstance(d, dict) or len(d) != 2 or "pin" not in d or "set" not in d:
        raise CommandError(CMD_BAD_FORM)
    pin = d["pin"]
    changes = d["set"]
    if isinstance(pin, bool) or not isinstance(pin, int) or not 1 <= pin <= 9999:
        raise CommandError(CMD_BAD_FORM)
    if not isinstance(changes, dict) or not 1 <= len(changes) <= CMD_MAX_FIELDS:
        raise CommandError(CMD_BAD_FORM)
    for k in changes:
        v = changes[k]
        if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, (int, str)):
            raise CommandError(CMD_BAD_FORM, k if isinstance(k, str) else None)
    return pin, changes


def result_payload(ok, code=0, field=None, applied=None):
    d = {"ok": ok}
    if not ok:
        d["error"] = CMD_TEXT[code] if 0 <= code < len(CMD_TEXT) else "?"
        if field is not None:
            d["field"] = field
    if applied is not None:
        d["set"] = applied
    return json.dumps(d)
