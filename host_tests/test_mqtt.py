# MQTT / Home Assistant payloads, command handling and the wire client's parser, under both
# interpreters (the end-to-end runs against a real broker are test_cpy_mqtt_*.py).
import json

from testlib import raises

from bms import events as ev
from bms import ha
from bms import mqttc
from bms.config import Config, ConfigError
from bms.events import EventLog
from bms.mqtt import CommandGate, writable_fields
from bms.snapshot import TEMP_INVALID_DC
from bms.status import Status

# Units Home Assistant accepts per device class (developers.home-assistant.io, sensor and
# MQTT discovery docs), for the classes used here.
HA_UNITS = {
    "voltage": ("V", "mV"),
    "current": ("A", "mA"),
    "power": ("W", "kW"),
    "energy": ("Wh", "kWh"),
    "temperature": ("\u00b0C", "\u00b0F"),
    "battery": ("%",),
    "enum": (None,),
}
STATE_CLASSES = ("measurement", "total", "total_increasing")


def _all_discovery(n_cells=15, n_temps=3, prefix="home/bms1"):
    out = []
    i = 0
    while True:
        m = ha.discovery(i, prefix, n_cells, n_temps, "esp32_devkit", "1.0")
        if m is None:
            return out
        out.append((m[0], json.loads(m[1])))
        i += 1


def test_discovery_configs_carry_the_required_keys_and_units():
    msgs = _all_discovery()
    assert len(msgs) == ha.entity_count(15, 3)
    uids = set()
    names = set()
    for topic, d in msgs:
        parts = topic.split("/")
        assert parts[0] == "homeassistant" and parts[-1] == "config", topic
        assert parts[1] in ("sensor", "binary_sensor") and parts[2] == "home_bms1"
        assert d["state_topic"] == "home/bms1/state"
        assert d["availability_topic"] == "home/bms1/availability"
        assert d["device"]["identifiers"] == ["home_bms1"] and d["device"]["name"]
        assert d["unique_id"].startswith("home_bms1_") and d["unique_id"] not in uids
        uids.add(d["unique_id"])
        assert d["name"] not in names
        names.add(d["name"])
        assert d["value_template"].startswith("{{ value_json.")
        dc = d.get("device_class")
        if parts[1] == "binary_sensor":
            assert d["payload_on"] == "ON" and d["payload_off"] == "OFF"
            assert dc in (None, "problem", "power", "running")
            assert "unit_of_measurement" not in d and "state_class" not in d
            continue
        if dc is not None:
            assert d.get("unit_of_measurement") in HA_UNITS[dc], (d["name"], dc)
        if dc == "enum":
            assert d["options"] and "state_class" not in d
        if "state_class" in d:
            assert d["state_class"] in STATE_CLASSES
        if dc == "energy":
            assert d["state_class"] in ("total", "total_increasing")
    cells = [d for t, d in msgs if "/cell" in t and "cell_m" not in t and "delta" not in t]
    assert len(cells) == 15
    assert all(d["device_class"] == "voltage" and d["unit_of_measurement"] == "V"
               for d in cells)
    temps = [d for t, d in msgs if "/temperature" in t]
    assert len(temps) == 3 and temps[0]["unit_of_measurement"] == "\u00b0C"
    keys = [d["value_template"].split("value_json.")[1].split(" ")[0] for t, d in msgs]
    for k in ("v", "i", "p", "soc", "soh", "cmin", "cmax", "cvl", "ccl", "dcl", "state",
              "faults", "warnings", "problem", "chg_fet", "dsg_fet", "bal"):
        assert k in keys, k


def _status():
    st = Status(4, 2)
    st.valid = True
    st.ready = True
    st.t_ms = 12750
    st.pack_mv = 13250
    st.current_ma = -12345
    for i, v in enumerate((3300, 3310, 3320, 3320)):
        st.cell_mv[i] = v
    st.cell_min_mv, st.cell_max_mv, st.cell_min_idx, st.cell_max_idx = 3300, 3320, 0, 2
    st.temp_dc[0] = 253
    st.temp_dc[1] = TEMP_INVALID_DC
    st.temp_max_dc = 253
    st.state = 3
    st.faults = 1 | (1 << 13)
    st.warnings = 1 << 13
    st.chg_fet = False
    st.dsg_fet = True
    st.soc_pct = 55.555
    st.cvl_mv = 13800
    st.dcl_ma = 80000
    st.bal_mask = 0b101
    return st


def test_state_payload_is_json_with_exact_values():
    d = json.loads(ha.state_payload(_status(), 13000))
    assert d["t_ms"] == 12750 and d["now_ms"] == 13000
    assert d["v"] == 13.25 and d["i"] == -12.345
    assert abs(d["p"] - (-163.6)) < 0.06
    assert d["cells"] == [3.3, 3.31, 3.32, 3.32]
    assert d["temps"] == [25.3, None]  # an open thermistor is null ("unknown" in HA)
    assert d["state"] == "fault" and d["problem"] == "ON"
    assert d["faults"] == "cell_ov,imbalance" and d["warnings"] == "imbalance"
    assert d["chg_fet"] == "OFF" and d["dsg_fet"] == "ON"
    assert d["bal"] == "ON" and d["bal_cells"] == "1,3"
    assert d["cdelta"] == 20 and d["soc"] == 55.55 or d["soc"] == 55.56


def test_alert_payload_names_fault_tier_value():
    st = _status()
    d = json.loads(ha.alert_payload(1000, ev.EV_FAULT_SET, 0, 3672, st, 1250))
    assert d["fault"] == "cell_ov" and d["tier"] == "protection" and d["raised"] is True
    assert d["value"] == 3672 and d["unit"] == "mV" and d["pub_ms"] == 1250
    assert "cell_ov raised" in d["message"]
    d = json.loads(ha.alert_payload(1000, ev.EV_FAULT_CLEAR, 8, 420, st, 1250))
    assert d["fault"] == "chg_ot" and d["raised"] is False and d["value"] == 42.0
    assert d["unit"] == "\u00b0C"
    d = json.loads(ha.alert_payload(1000, ev.EV_WARN_SET, 13, 120, st, 1250))
    assert d["tier"] == "warning"
    d = json.loads(ha.alert_payload(1000, ev.EV_LATCH, 23, 1900, st, 1250))
    assert d["tier"] == "latched" and d["fault"] == "deep_uv"
    d = json.loads(ha.alert_payload(1000, ev.EV_LATCH_RESET, 1 << 7, 0, st, 1250, lost=3))
    assert d["fault"] == "scd" and d["raised"] is False and d["lost"] == 3
    d = json.loads(ha.alert_payload(1000, ev.EV_FAULT_SET, 24, 0x10B, st, 1250))
    assert d["fault"] == "afe_config" and d["tier"] == "protection"
    # a fault set because its value was unknown for its delay carries no number
    d = json.loads(ha.alert_payload(1000, ev.EV_FAULT_SET, 0, 0x3FFFFFFF, st, 1250))
    assert d["fault"] == "cell_ov" and d["value"] is None


def test_parse_command_accepts_only_the_one_shape():
    assert ha.parse_command(b'{"pin": 12, "set": {"can_modules": 3}}') == (12, {"can_modules": 3})
    bad = (b"x" * 300, b"", b"nope", b"[1,2]", b'{"pin": 12}', b'{"pin": "12", "set": {"a": 1}}',
           b'{"pin": 0, "set": {"a": 1}}', b'{"pin": 12, "set": {}}', b'{"pin": 12, "set": 5}',
           b'{"pin": 12, "set": {"a": 1.5}}', b'{"pin": 12, "set": {"a": true}}',
           b'{"pin": 12, "set": {"a": [1]}}', b'{"pin": true, "set": {"a": 1}}',
           b'{"pin": 12, "set": {"a": 1}, "x": 1}', b'\xff\xfe{', b'{"pin": 12, "set": {"a": 1,'
           b'"b": 1, "c": 1, "d": 1, "e": 1, "f": 1, "g": 1, "h": 1, "i": 1}}')
    for p in bad:
        e = raises(ha.CommandError, ha.parse_command, p)
        assert e.code in (ha.CMD_TOO_LONG, ha.CMD_NOT_JSON, ha.CMD_BAD_FORM), p


def _gate(pin=1234):
    cfg = Config("lfp", 4, 100000, mqtt_pin=pin)
    log = EventLog(64)
    return CommandGate(cfg, log), cfg, log


def _codes(log):
    return [(c, a, b) for t, c, a, b in log.to_list()]


def test_commands_are_the_same_pin_protected_writes_as_modbus():
    g, cfg, log = _gate(0)
    before = cfg.as_dict()
    ok, code, field, applied = g.handle(b'{"pin": 1234, "set": {"can_modules": 3}}', 0)
    assert not ok and code == ha.CMD_DISABLED and cfg.as_dict() == before
    g, cfg, log = _gate()
    before = cfg.as_dict()
    ok, code, field, applied = g.handle(b'{"pin": 1111, "set": {"can_modules": 3}}', 0)
    assert not ok and code == ha.CMD_BAD_PIN and cfg.as_dict() == before
    assert (ev.EV_UNLOCK, 0, 3) in _codes(log)
    # hold-off: even the right PIN is refused for 10 s
    ok, code, field, applied = g.handle(b'{"pin": 1234, "set": {"can_modules": 3}}', 5000)
    assert not ok and code == ha.CMD_HOLDOFF and cfg.as_dict() == before
    ok, code, field, applied = g.handle(b'{"pin": 1234, "set": {"can_modules": 3}}', 10000)
    assert ok and cfg.can_modules == 3 and applied == {"can_modules": 3}
    assert (ev.EV_CONFIG, cfg.names().index("can_modules"), 3) in _codes(log)
    # enum by name or by index, as over Modbus
    assert g.handle(b'{"pin": 1234, "set": {"can_profile": "victron"}}', 11000)[0]
    assert cfg.can_profile == "victron"
    assert g.handle(b'{"pin": 1234, "set": {"can_profile": 0}}', 12000)[0]
    assert cfg.can_profile == "pylon"
    before = cfg.as_dict()
    # out of range, a broken rule, an unknown or a non-writable field: refused, nothing changes
    for p in (b'{"pin": 1234, "set": {"can_modules": 99}}',
              b'{"pin": 1234, "set": {"cell_ov_release_mv": 3700}}',
              b'{"pin": 1234, "set": {"can_modules": 2, "cell_ov_mv": 9999}}',
              b'{"pin": 1234, "set": {"can_profile": 7}}',
              b'{"pin": 1234, "set": {"no_such_field": 1}}',
              b'{"pin": 1234, "set": {"mqtt_pin": 1}}',
              b'{"pin": 1234, "set": {"modbus_pin": 1}}',
              b'{"pin": 1234, "set": {"wifi_password": "x"}}',
              b'{"pin": 1234, "set": {"mqtt_host": "evil"}}'):
        ok, code, field, applied = g.handle(p, 20000)
        assert not ok and code in (ha.CMD_INVALID, ha.CMD_NOT_WRITABLE), p
        assert field is not None
    assert cfg.as_dict() == before


def test_command_refusals_are_logged_at_most_once_a_second():
    g, cfg, log = _gate()
    n0 = log.total
    for i in range(100):
        g.handle(b"garbage", i * 10)
    assert log.total - n0 == 1
    assert _codes(log)[-1] == (ev.EV_MQTT, 2, ha.CMD_NOT_JSON)


def test_writable_fields_are_the_modbus_ones():
    w = writable_fields()
    assert "can_modules" in w and "cell_ov_mv" in w
    for secret in ("modbus_pin", "mqtt_pin", "wifi_password", "mqtt_password"):
        assert secret not in w
    # the link's own settings are Modbus registers, but not writable over MQTT
    assert not [n for n in w if n.startswith("mqtt_") or n.startswith("wifi_")]


def test_text_settings_validated_and_secrets_masked():
    c = Config("lfp", 4, 100000)
    assert c.mqtt_enable == 0 and c.mqtt_prefix == "bms" and c.mqtt_port == 1883
    c.update({"wifi_ssid": "home", "wifi_password": "s3cret", "mqtt_host": "192.168.1.2",
              "mqtt_enable": 1})
    d = c.public_dict()
    assert d["wifi_password"] == "***" and d["mqtt_password"] == ""
    assert "s3cret" not in json.dumps(d) and c.as_dict()["wifi_password"] == "s3cret"
    before = c.as_dict()
    for bad in ({"mqtt_prefix": ""}, {"mqtt_prefix": "a/#"}, {"mqtt_prefix": "/a"},
                {"mqtt_host": ""}, {"mqtt_host": "a b"}, {"wifi_ssid": "x" * 33},
                {"wifi_password": 1234}, {"mqtt_user": "a\nb"}, {"mqtt_port": 0},
                {"mqtt_tls": 3}, {"mqtt_period_ms": 10}):
        raises(ConfigError, c.update, bad)
    assert c.as_dict() == before


def _client_up():
    c = mqttc.MqttClient(rx_size=64, tx_size=256)
    got = []
    drops = []
    c.on_message = lambda t, p: got.append((t, p))
    c.on_drop = lambda k, n: drops.append((k, n))
    c.state = mqttc.ST_CONNACK
    assert c.feed(b"\x20\x02\x00\x00") == mqttc.EVT_UP
    return c, got, drops


def test_client_parses_split_packets_and_skips_oversize_ones():
    c, got, drops = _client_up()
    pkt = b"\x30\x0a\x00\x03a/bhello"
    for i in range(len(pkt)):  # one byte at a time
        c.feed(pkt[i:i + 1])
    assert got == [(b"a/b", b"hello")]
    big = b"\x30\xe8\x07\x00\x03a/b" + b"x" * 995  # 1000-byte body in a 64-byte buffer
    c.feed(big + pkt)
    assert drops == [(0x30, 1003)] and got[-1] == (b"a/b", b"hello") and len(got) == 2
    c.feed(b"\xd0\x00")  # PINGRESP
    assert c.state == mqttc.ST_UP


def test_client_refuses_broker_garbage():
    for junk in (b"\x20\x02\x00\x00", b"\xf0\x00", b"\x30\xff\xff\xff\xff\x7f",
                 b"\x62\x02\x00\x01", b"\x30\x03\x00\x09a", b"\x36\x05\x00\x01a\x00\x01",
                 b"\xd0\x01\x00"):
        c, got, drops = _client_up()
        raises(mqttc.MqttError, c.feed, junk)
    c = mqttc.MqttClient()
    c.state = mqttc.ST_CONNACK
    e = raises(mqttc.MqttError, c.feed, b"\x20\x02\x00\x05")  # not authorised
    assert e.args[0] == mqttc.R_REFUSED


def test_client_output_buffer_refuses_what_does_not_fit():
    c, got, drops = _client_up()
    assert c.publish("t", "x" * 100) == 1
    assert c.publish("t", "y" * 100, qos=1) == 1  # packet id 1
    assert c.publish("t", "z" * 100) == 0  # 256-byte buffer full: the caller retries
    assert c.pending() == 2 + 3 + 100 + 2 + 3 + 2 + 100
