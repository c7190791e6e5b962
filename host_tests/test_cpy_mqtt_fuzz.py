# Fuzzing what arrives over MQTT (CPython): command payloads (random bytes, random JSON, and
# near-valid commands with wrong PINs, unknown/secret fields, out-of-range values) through
# the same CommandGate the firmware uses, and broker byte streams through the client's
# parser. Every bad input is refused, nothing changes, refusals are logged at most once a
# second, nothing raises out. > 10^4 cases per target.
import json
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from bms import events as ev
from bms import ha, mqttc
from bms.config import Config, ConfigError
from bms.config_tables import FIELDS
from bms.events import EventLog
from bms.mqtt import CommandGate, writable_fields

PIN = 4321
WRITABLE = sorted(writable_fields())
ALL_NAMES = [f[0] for f in FIELDS]


def _gate():
    cfg = Config("lfp", 4, 100000, mqtt_pin=PIN)
    log = EventLog(64)
    return CommandGate(cfg, log), cfg, log


def _expected(cfg, payload, now, gate):
    """What the gate must do, decided independently: the new config, or None (refused)."""
    try:
        d = json.loads(payload)
    except ValueError:
        return None
    if (not isinstance(d, dict) or set(d) != {"pin", "set"} or len(payload) > 256
            or type(d["pin"]) is not int or d["pin"] != PIN or now < gate._block_until):
        return None
    ch = d["set"]
    if not isinstance(ch, dict) or not 1 <= len(ch) <= 8:
        return None
    out = {}
    for k, v in ch.items():
        if k not in WRITABLE or type(v) not in (int, str):
            return None
        f = FIELDS[ALL_NAMES.index(k)]
        if len(f) == 2 and type(v) is int:
            if not 0 <= v < len(f[1]):
                return None
            v = f[1][v]
        out[k] = v
    trial = Config("lfp", 4, 100000, mqtt_pin=PIN)
    trial.update(cfg.as_dict())
    try:
        trial.update(out)
    except (ConfigError, TypeError, ValueError):
        return None
    return trial.as_dict()


def _random_value(rnd):
    return rnd.choice([
        rnd.randrange(-10, 10), rnd.randrange(-2**31, 2**31), rnd.randrange(0, 5000),
        "", "x" * rnd.randrange(0, 40), "victron", "pylon", 1.5, 2.0, True, None, [1], {"a": 1},
    ])


def _random_payload(rnd):
    k = rnd.randrange(6)
    if k == 0:  # raw bytes
        return bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 300)))
    if k == 1:  # JSON of a random shape
        return json.dumps(rnd.choice([[], {}, None, 1, "s", {"pin": PIN}, {"set": {}},
                                      [PIN, {"a": 1}]])).encode()
    if k == 5:  # a plausible command: the right PIN, one field, a value in its range
        name = rnd.choice(WRITABLE)
        f = FIELDS[ALL_NAMES.index(name)]
        v = rnd.choice(f[1]) if len(f) == 2 else rnd.randrange(f[1], f[2] + 1)
        return json.dumps({"pin": PIN, "set": {name: v}}).encode()
    names = WRITABLE + ["mqtt_pin", "modbus_pin", "wifi_password", "mqtt_host", "nope", ""]
    ch = {}
    for _ in range(rnd.randrange(0, 10)):
        ch[rnd.choice(names)] = _random_value(rnd)
    pin = rnd.choice([PIN, PIN, PIN + 1, 0, -1, "4321", 99999, True])
    d = {"pin": pin, "set": ch}
    if k == 3:
        d["extra"] = 1
    p = json.dumps(d).encode()
    if k == 4 and p:  # truncated / bit-flipped
        i = rnd.randrange(len(p))
        p = p[:i] + bytes([p[i] ^ (1 << rnd.randrange(8))]) + p[i + 1:]
    return p


def test_fuzz_commands_12000():
    rnd = random.Random(1)
    gate, cfg, log = _gate()
    now = 0
    accepted = 0
    for _ in range(12000):
        now += rnd.choice((7, 50, 300, 2000, 11000))
        p = _random_payload(rnd)
        before = cfg.as_dict()
        want = _expected(cfg, p, now, gate)
        n0 = log.total
        ok, code, field, applied = gate.handle(p, now)
        if want is None:
            assert not ok, p
            assert cfg.as_dict() == before, p
            # a refusal adds at most one event (EV_MQTT, EV_UNLOCK or EV_CONFIG_REJECT)
            assert log.total - n0 <= 1
        else:
            assert ok, (p, code, field)
            assert cfg.as_dict() == want
            accepted += 1
            for entry in log.last(log.total - n0):
                assert entry[1] == ev.EV_CONFIG
    assert accepted > 50  # the generator reaches the accepted path too
    # protection-relevant values stay within their validated ranges whatever was accepted
    Config("lfp", 4, 100000).update(cfg.as_dict())


def test_refusal_flood_logs_at_most_one_event_per_second():
    rnd = random.Random(2)
    gate, cfg, log = _gate()
    n0 = log.total
    for i in range(10000):  # 10000 bad payloads within 10 s
        gate.handle(bytes(rnd.randrange(256) for _ in range(20)), i)
    assert log.total - n0 <= 11


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                    | st.text(max_size=20),
                    lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=12), c,
                                                                         max_size=5),
                    max_leaves=20))
def test_fuzz_structured_json_never_changes_anything(obj):
    gate, cfg, log = _gate()
    before = cfg.as_dict()
    p = json.dumps(obj).encode()
    ok, code, field, applied = gate.handle(p, 100000)
    if not ok:
        assert cfg.as_dict() == before
    assert code in range(len(ha.CMD_TEXT))


def _connected():
    c = mqttc.MqttClient(rx_size=512, tx_size=2048)
    c.state = mqttc.ST_CONNACK
    c.feed(b"\x20\x02\x00\x00")
    return c


def test_fuzz_broker_streams_12000():
    rnd = random.Random(3)
    good = [b"\xd0\x00", b"\x40\x02\x00\x01", b"\x90\x03\x00\x01\x00",
            b"\x30\x07\x00\x03a/bxy", b"\x32\x09\x00\x03a/b\x00\x05xy"]
    errors = 0
    for _ in range(12000):
        c = _connected()
        got = []
        c.on_message = lambda t, p, got=got: got.append((t, p))
        stream = b""
        for _ in range(rnd.randrange(1, 6)):
            if rnd.random() < 0.6:
                stream += rnd.choice(good)
            else:
                stream += bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 40)))
        try:
            i = 0
            while i < len(stream):  # delivered in random pieces, as TCP does
                k = rnd.randrange(1, 16)
                c.feed(stream[i:i + k])
                i += k
        except mqttc.MqttError:  # the only way out: poll() turns it into EVT_DOWN
            errors += 1
        assert c._rxn <= 512
        for t, p in got:
            assert len(t) + len(p) <= 512
    assert 0 < errors < 12000
