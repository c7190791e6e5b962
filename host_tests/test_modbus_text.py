# Text settings over Modbus (strN registers: Wi-Fi and MQTT), both interpreters.
from fake_bms import FakeBms
from test_modbus import FakePin, FakeUart, read_req, write1, write_n

from bms import regmap
from bms.modbus import ModbusServer

PIN = 4321


def _addr(name):
    R = regmap.REGS
    for o in range(0, len(R), regmap.REC_SIZE):
        if regmap.PATHS[(R[o + 3] << 8) | R[o + 4]] == name and R[o + 2] >> 4 == regmap.K_TEXT:
            return (R[o] << 8) | R[o + 1], R[o + 5]
    raise KeyError(name)


def _server():
    bms = FakeBms(modbus_pin=PIN)
    de = FakePin()
    uart = FakeUart(de)
    srv = ModbusServer(uart, de, bms.cfg, bms.events)
    bms.modbus = srv
    return bms, uart, srv


def _ask(bms, uart, srv, req, t):
    uart.out = []
    uart.rx += req
    srv.poll(bms, t)
    srv.poll(bms, t + 10)
    return uart.out[-1] if uart.out else None


def _words(text, n):
    b = text.encode() + bytes(2 * n)
    return [(b[2 * i] << 8) | b[2 * i + 1] for i in range(n)]


def test_text_settings_read_and_write_whole():
    bms, uart, srv = _server()
    bms.cfg.update({"mqtt_host": "10.0.0.7"})
    a, n = _addr("mqtt_host")
    r = _ask(bms, uart, srv, read_req(1, 3, a, n), 1000)
    assert r[1] == 3 and r[2] == 2 * n
    assert bytes(r[3:3 + 2 * n]).rstrip(b"\0") == b"10.0.0.7"
    # a read starting inside the text gives its later bytes
    r = _ask(bms, uart, srv, read_req(1, 3, a + 1, 2), 1100)
    assert bytes(r[3:7]) == b".0.0"  # bytes 2..5 of "10.0.0.7"
    # locked: refused (01, the server is in the wrong state); unlocked: written whole
    r = _ask(bms, uart, srv, write_n(1, a, _words("broker.lan", n)), 1200)
    assert r[1] == 0x90 and r[2] == 1 and bms.cfg.mqtt_host == "10.0.0.7"
    assert _ask(bms, uart, srv, write1(1, regmap.UNLOCK_ADDR, PIN), 1300)[1] == 6
    r = _ask(bms, uart, srv, write_n(1, a, _words("broker.lan", n)), 1400)
    assert r[1] == 16 and bms.cfg.mqtt_host == "broker.lan"
    # part of a text, a write starting inside it, bad UTF-8, a rule broken: refused
    before = bms.cfg.as_dict()
    for req in (write_n(1, a, _words("x", n - 1)), write_n(1, a + 1, _words("x", n - 1)),
                write1(1, a, 0x4142), write_n(1, a, [0xFFFE] + [0] * (n - 1)),
                write_n(1, a, _words("a b", n))):
        r = _ask(bms, uart, srv, req, 1500)
        assert r[1] & 0x80 and r[2] in (2, 3), r
    assert bms.cfg.as_dict() == before


def test_secrets_and_pins_are_not_in_the_map():
    names = set(regmap.PATHS)
    for secret in ("wifi_password", "mqtt_password", "mqtt_pin", "modbus_pin"):
        assert secret not in names
    for text in ("wifi_ssid", "mqtt_host", "mqtt_user", "mqtt_prefix"):
        _addr(text)
