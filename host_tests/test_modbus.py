# Modbus RTU server on a fake UART (CPython and MicroPython): framing, the register map read
# from the status view, the exception policy (01 locked / unknown function, 02 address, 03
# value, 04 device failure), broadcasts executed without an answer, the lock state register,
# the pack identity read-only.
from fake_bms import FakeBms

from bms import events as ev
from bms import regmap
from bms.config import ConfigError, field_index
from bms.modbus import ModbusServer, Rs485, crc16

UNLOCK = regmap.UNLOCK_ADDR


class FakePin:
    def __init__(self):
        self.v = 0
        self.history = []

    def value(self, v=None):
        if v is None:
            return self.v
        self.v = v
        self.history.append(v)


class FakeUart:
    """machine.UART subset; write() records the DE level it was called with."""

    def __init__(self, de=None, flush=True):
        self.rx = bytearray()
        self.out = []
        self.de = de
        self.de_at_write = []
        self.flushes = 0
        if not flush:
            self.flush = None

    def any(self):
        return len(self.rx)

    def readinto(self, buf, nbytes=None):
        n = min(len(buf) if nbytes is None else nbytes, len(self.rx))
        for i in range(n):
            buf[i] = self.rx[i]
        self.rx = self.rx[n:]
        return n

    def write(self, buf):
        self.out.append(bytes(buf))
        if self.de is not None:
            self.de_at_write.append(self.de.v)
        return len(buf)

    def flush(self):
        self.flushes += 1


def frame(*b):
    f = bytearray(b)
    c = crc16(f, len(f))
    f.append(c & 0xFF)
    f.append(c >> 8)
    return bytes(f)


def read_req(unit, fc, addr, cnt):
    return frame(unit, fc, addr >> 8, addr & 0xFF, cnt >> 8, cnt & 0xFF)


def write1(unit, addr, value):
    value &= 0xFFFF
    return frame(unit, 6, addr >> 8, addr & 0xFF, value >> 8, value & 0xFF)


def write_n(unit, addr, words):
    b = [unit, 16, addr >> 8, addr & 0xFF, 0, len(words), 2 * len(words)]
    for w in words:
        w &= 0xFFFF
        b += [w >> 8, w & 0xFF]
    return frame(*b)


class Rig:
    def __init__(self, **cfg):
        self.bms = FakeBms(**cfg)
        self.de = FakePin()
        self.uart = FakeUart(self.de)
        self.srv = ModbusServer(self.uart, self.de, self.bms.cfg, self.bms.events)
        self.bms.modbus = self.srv
        self.t = 1000

    def xfer(self, req, chunks=1):
        """Send a request (optionally split), poll through the silence; the response or None."""
        self.bms.fill(self.t)  # the app fills the status view every cycle
        self.uart.out = []
        step = (len(req) + chunks - 1) // chunks
        for i in range(0, len(req), step):
            self.uart.rx += req[i:i + step]
            self.srv.poll(self.bms, self.t)
            self.t += 1
        for _ in range(3):
            self.t += 5
            self.srv.poll(self.bms, self.t)
        self.t += 20
        if not self.uart.out:
            return None
        assert len(self.uart.out) == 1
        r = self.uart.out[0]
        assert crc16(r, len(r) - 2) == r[-2] | (r[-1] << 8)
        return r

    def regs(self, addr, cnt, fc=3):
        r = self.xfer(read_req(1, fc, addr, cnt))
        assert r is not None and r[1] == fc and r[2] == 2 * cnt, r
        return [(r[3 + 2 * i] << 8) | r[4 + 2 * i] for i in range(cnt)]

    def exc(self, req):
        r = self.xfer(req)
        assert r is not None and len(r) == 5 and r[1] & 0x80, r
        return r[2]


# Addresses from tools/regmap.csv (test_cpy_regmap checks the CSV against the generated map).
ADDR = {
    "map_version": 0,
    "cells": 2,
    "pack_mv": 10,
    "current_ma": 12,
    "soc": 60,
    "cell1_mv": 100,
    "temp1_dc": 120,
    "faults": 41,
    "cfg_chemistry": 1000,
    "cfg_cells": 1001,
    "cfg_capacity_mah": 1002,
    "cfg_dsg_max_ma": 1409,
    "shunt_uohm": 1004,
    "cvl_mv": 80,
    "lock_state": 202,
    "cfg_chg_oc_ma": 1029,
    "cfg_cell_ov_mv": 1010,
    "cfg_cell_ov_release_mv": 1011,
}


def test_crc_vectors():
    assert crc16(b"123456789", 9) == 0x4B37
    f = frame(0x01, 0x03, 0x00, 0x00, 0x00, 0x01)
    assert f[-2:] == b"\x84\x0a"
    assert crc16(b"xx123456789", 9, 2) == 0x4B37


def test_read_holding_and_input_same_map():
    r = Rig()
    r.bms.est.soc_pct = 55.55
    r.bms.snap.current_ma = -12345
    a = r.regs(0, 4)
    assert a[0] == regmap.MAP_VERSION and a[2] == 15
    assert r.regs(0, 4, fc=4) == a
    pack = r.regs(10, 4)
    assert (pack[0] << 16 | pack[1]) == r.bms.snap.pack_mv
    cur = pack[2] << 16 | pack[3]
    assert cur - (1 << 32) == -12345  # s32, high word first
    assert r.regs(60, 1) == [5555]  # 0.01 %
    cells = r.regs(100, 15)
    assert cells == [3300] * 15
    assert r.regs(120, 3) == [250, 260, 0]  # third thermistor absent: 0
    assert r.srv.frames == 7 - 1 and r.srv.exceptions == 0


def test_temperature_negative_and_absent_cells():
    r = Rig(cells=4)
    r.bms.snap.temp_dc[0] = -105
    r.bms.snap.update_stats()
    assert r.regs(120, 1) == [0x10000 - 105]
    assert r.regs(104, 2) == [0, 0]  # cells 5, 6 do not exist in a 4S pack


def test_exceptions_01_02_03():
    r = Rig()
    assert r.exc(frame(1, 0x2B, 0, 0, 0, 1)) == 1  # unknown function
    assert r.exc(read_req(1, 3, 5, 1)) == 2  # unmapped address
    assert r.exc(read_req(1, 3, 0, 6)) == 2  # range runs into a gap
    assert r.exc(read_req(1, 3, 0, 0)) == 3  # quantity 0
    assert r.exc(read_req(1, 3, 0, 126)) == 3  # quantity > 125
    assert r.exc(write1(1, 10, 5)) == 2  # read-only register
    assert r.srv.exceptions == 6


def test_locked_write_refused_and_logged():
    # locked: 01 (MBAP section 7: the server is in the wrong state for this request)
    r = Rig(modbus_pin=1234)
    before = r.bms.cfg.cell_ov_mv
    assert r.regs(ADDR["lock_state"], 1) == [0]
    assert r.exc(write1(1, ADDR["cfg_cell_ov_mv"], 3600)) == 1
    assert r.bms.cfg.cell_ov_mv == before
    e = r.bms.events.get(0)
    assert e[1:] == (ev.EV_CONFIG_REJECT, field_index("cell_ov_mv"), 3600)


def test_unlock_then_write_validated():
    r = Rig(modbus_pin=1234)
    assert r.regs(UNLOCK, 1) == [0]
    resp = r.xfer(write1(1, UNLOCK, 1234))
    assert resp == write1(1, UNLOCK, 1234)  # FC 6 echoes the request
    assert r.srv.unlocked and r.regs(UNLOCK, 1) == [1]
    assert r.bms.events.get(0)[1:] == (ev.EV_UNLOCK, 1, 1)
    gen = r.bms.cfg.generation
    resp = r.xfer(write1(1, ADDR["cfg_cell_ov_mv"], 3600))
    assert resp is not None and resp[1] == 6
    assert r.bms.cfg.cell_ov_mv == 3600 and r.bms.cfg.generation == gen + 1
    assert r.bms.events.get(0)[1:] == (ev.EV_CONFIG, field_index("cell_ov_mv"), 3600)
    assert r.regs(ADDR["cfg_cell_ov_mv"], 1) == [3600]
    # out of range: exception 03, nothing changes, the rejection is logged
    r.t += 2000
    assert r.exc(write1(1, ADDR["cfg_cell_ov_mv"], 9999)) == 3
    assert r.bms.cfg.cell_ov_mv == 3600
    assert r.bms.events.get(0)[1:] == (ev.EV_CONFIG_REJECT, field_index("cell_ov_mv"), 9999)
    # a cross-field rule (release must stay below the limit) goes through the same validation
    r.t += 2000
    assert r.exc(write1(1, ADDR["cfg_cell_ov_release_mv"], 3700)) == 3
    # FC 16: both at once is applied atomically
    resp = r.xfer(write_n(1, ADDR["cfg_cell_ov_mv"], [3700, 3600]))
    assert resp == frame(1, 16, 0x03, 0xF2, 0, 2)
    assert r.bms.cfg.cell_ov_mv == 3700 and r.bms.cfg.cell_ov_release_mv == 3600


def test_32bit_and_enum_config_registers():
    r = Rig(modbus_pin=42)
    r.xfer(write1(1, UNLOCK, 42))
    a = ADDR["cfg_chg_oc_ma"]
    assert r.exc(write1(1, a, 1)) == 2  # half of a 32-bit register
    assert r.exc(write1(1, a + 1, 1)) == 2
    resp = r.xfer(write_n(1, a, [45000 >> 16, 45000 & 0xFFFF]))
    assert resp is not None and resp[1] == 16
    assert r.bms.cfg.chg_oc_ma == 45000
    w = r.regs(a, 2)
    assert w[0] << 16 | w[1] == 45000
    # the pack's identity comes from the board file: read-only, also while unlocked
    a = ADDR["cfg_capacity_mah"]
    w = r.regs(a, 2)
    assert w[0] << 16 | w[1] == 100000
    assert r.exc(write_n(1, a, [120000 >> 16, 120000 & 0xFFFF])) == 2
    assert r.exc(write1(1, ADDR["cfg_cells"], 14)) == 2
    assert r.exc(write1(1, ADDR["cfg_chemistry"], 1)) == 2
    assert r.bms.cfg.capacity_mah == 100000 and r.bms.cfg.cells == 15
    pa = 1600  # cfg_can_profile
    assert r.regs(pa, 1) == [0]
    for i, name in enumerate(("pylon", "victron", "sma", "deye", "solark")):
        r.xfer(write1(1, pa, i))
        assert r.bms.cfg.can_profile == name and r.regs(pa, 1) == [i]
    r.t += 2000
    assert r.exc(write1(1, pa, 7)) == 3  # no such choice


def test_pack_identity_read_only():
    # chemistry, cells, capacity and shunt of a live pack cannot be changed over the bus
    # (02, unlocked or not), alone or inside a multi-register write
    r = Rig(modbus_pin=42)
    r.bms.cfg.identity_locked = True
    before = r.bms.cfg.as_dict()
    gen = r.bms.cfg.generation
    for unlocked in (False, True):
        if unlocked:
            r.xfer(write1(1, UNLOCK, 42))
        assert r.exc(write1(1, ADDR["cfg_chemistry"], 1)) == 2
        assert r.exc(write1(1, ADDR["cfg_cells"], 4)) == 2
        assert r.exc(write_n(1, ADDR["cfg_capacity_mah"], [0, 50000 >> 8])) == 2
        assert r.exc(write_n(1, ADDR["shunt_uohm"], [0, 500])) == 2
        assert r.exc(write_n(1, 1000, [1, 4, 0, 2000])) == 2
        # a write that starts at a writable register and runs into the identity: 02 too
        assert r.exc(write_n(1, 999, [0, 1])) == 2
    assert r.bms.cfg.as_dict() == before and r.bms.cfg.generation == gen
    w = r.regs(ADDR["shunt_uohm"], 2)
    assert w[0] << 16 | w[1] == 1000
    assert r.regs(ADDR["cfg_chemistry"], 1) == [0]


def test_wrong_pin_holdoff_and_relock():
    r = Rig(modbus_pin=1234, modbus_unlock_ms=60000)
    assert r.exc(write1(1, UNLOCK, 1111)) == 3
    assert not r.srv.unlocked
    assert r.bms.events.get(0)[1:] == (ev.EV_UNLOCK, 0, 1)
    assert r.regs(ADDR["lock_state"], 1) == [2]
    assert r.exc(write1(1, UNLOCK, 1234)) == 1  # hold-off after a wrong PIN: wrong state
    r.t += 11000
    r.xfer(write1(1, UNLOCK, 1234))
    assert r.srv.unlocked and r.regs(ADDR["lock_state"], 1) == [1]
    r.t += 61000
    r.srv.poll(r.bms, r.t)
    assert not r.srv.unlocked
    assert r.bms.events.get(0)[1:] == (ev.EV_UNLOCK, 0, 1)
    assert r.exc(write1(1, ADDR["cfg_cell_ov_mv"], 3600)) == 1
    # writing 0 locks at once
    r.xfer(write1(1, UNLOCK, 1234))
    r.xfer(write1(1, UNLOCK, 0))
    assert not r.srv.unlocked


def test_pin_zero_disables_config_writes():
    r = Rig()  # default modbus_pin = 0
    assert r.regs(ADDR["lock_state"], 1) == [3]
    assert r.exc(write1(1, UNLOCK, 1234)) == 1
    assert r.exc(write1(1, UNLOCK, 1)) == 1
    assert r.exc(write1(1, ADDR["cfg_cell_ov_mv"], 3600)) == 1
    assert not r.srv.unlocked


def test_device_failure_only_when_the_hardware_refuses():
    # A valid value the AFE hook refuses: 04. A value against the configuration's own
    # rules: 03 (the hook is not even asked).
    r = Rig(modbus_pin=5)
    calls = []

    def afe_hook(cfg, new):
        calls.append(new["hw_cell_ov_mv"])
        if new["hw_cell_ov_mv"] != cfg.hw_cell_ov_mv:
            raise ConfigError("hw_cell_ov_mv", "the AFE did not hold it")

    r.bms.cfg.hooks.append(afe_hook)
    r.xfer(write1(1, UNLOCK, 5))
    a = 1019  # cfg_hw_cell_ov_mv
    before = r.bms.cfg.hw_cell_ov_mv
    assert r.exc(write1(1, a, before + 20)) == 4
    assert r.exc(write1(1, a, 9999)) == 3  # out of range: the hook never sees it
    assert r.bms.cfg.hw_cell_ov_mv == before and len(calls) == 1
    # factory reset: refused by the device -> 04; no reset offered -> 01; bad value -> 03
    r.srv.on_factory_reset = lambda now, itf: ConfigError("x", "AFE not reachable")
    assert r.exc(write1(1, 201, 1)) == 4
    assert r.exc(write1(1, 201, 2)) == 3
    r2 = Rig(modbus_pin=5)
    r2.xfer(write1(1, UNLOCK, 5))
    assert r2.exc(write1(1, 201, 1)) == 1


def test_broadcast_writes_executed_never_answered():
    # MODBUS over Serial Line V1.02 2.1: a server executes a broadcast write and sends no
    # reply, not even an exception. Reads to unit 0 are ignored.
    r = Rig(modbus_pin=77)
    assert r.xfer(write1(0, ADDR["cfg_cell_ov_mv"], 3600)) is None  # locked: nothing
    assert r.bms.cfg.cell_ov_mv != 3600
    assert r.xfer(write1(0, UNLOCK, 77)) is None  # the PIN by broadcast unlocks
    assert r.srv.unlocked
    assert r.xfer(write1(0, ADDR["cfg_cell_ov_mv"], 3600)) is None
    assert r.bms.cfg.cell_ov_mv == 3600
    assert r.xfer(write_n(0, ADDR["cfg_cell_ov_mv"], [3700, 3600])) is None
    assert r.bms.cfg.cell_ov_mv == 3700 and r.bms.cfg.cell_ov_release_mv == 3600
    r.t += 2000
    assert r.xfer(write1(0, ADDR["cfg_cell_ov_mv"], 9999)) is None  # refused, silently
    assert r.bms.cfg.cell_ov_mv == 3700
    assert r.xfer(write1(0, ADDR["cfg_chemistry"], 1)) is None
    assert r.bms.cfg.chemistry == "lfp"
    assert r.xfer(read_req(0, 3, 0, 1)) is None
    assert r.xfer(frame(0, 0x2B, 0x0E, 1, 0)) is None
    assert r.srv.broadcasts == 6 and r.srv.exceptions == 0 and r.srv.frames == 0
    w = r.regs(158, 2)
    assert w[0] << 16 | w[1] == 6


def test_registers_read_the_status_view():
    # What the EMS reads is what the inverter is told: the status view, gated permissions.
    r = Rig()
    lim = r.bms.limits
    lim.force_charge = 1
    lim.full_charge_req = True
    r.bms.prot.chg_fet = False  # protection commands the charge FET off
    regs = r.regs(80, 17)
    st = r.bms.status
    cvl = regs[0] << 16 | regs[1]
    assert cvl == st.cvl_mv and 0 < cvl <= st.cvl_max_mv
    assert regs[2:4] == [0, 0]  # CCL 0 while charging is not enabled
    assert regs[4] << 16 | regs[5] == lim.dcl_ma
    assert regs[8:12] == [0, 1, 0, 0]  # chg_enable, dsg_enable, force, full
    assert regs[15] << 16 | regs[16] == st.cvl_max_mv == 15 * r.bms.cfg.chg_cell_mv
    assert r.regs(33, 2) == [0, 1]  # FET commands
    r.bms.prot.chg_fet = True
    regs = r.regs(80, 12)
    assert regs[2] << 16 | regs[3] == lim.ccl_ma and regs[8:12] == [1, 1, 1, 1]


def test_malformed_frames_ignored():
    r = Rig()
    good = read_req(1, 3, 0, 1)
    bad = bytearray(good)
    bad[-1] ^= 0xFF
    assert r.xfer(bytes(bad)) is None and r.srv.crc_errors == 1
    assert r.xfer(read_req(2, 3, 0, 1)) is None  # another unit
    assert r.xfer(read_req(0, 3, 0, 1)) is None  # broadcast
    assert r.xfer(good[:5]) is None  # truncated
    assert r.xfer(b"\x01") is None
    assert r.xfer(bytes(300)) is None  # overrun
    assert r.srv.frames == 0
    # the server is still in sync
    assert r.regs(0, 1) == [regmap.MAP_VERSION]
    # a request split across polls
    resp = r.xfer(good, chunks=3)
    assert resp is not None and resp[1] == 3


def test_unit_and_gap_framing():
    r = Rig(modbus_unit=17)
    assert r.xfer(read_req(1, 3, 0, 1)) is None
    resp = r.xfer(read_req(17, 3, 0, 1))
    assert resp[0] == 17
    # unknown function of unknown length: framed by silence, answered with 01
    r.uart.rx += frame(17, 0x41, 1, 2, 3)
    r.srv.poll(r.bms, r.t)
    assert not r.uart.out or r.uart.out[-1][1] != 0xC1
    r.uart.out = []
    r.t += 10
    r.srv.poll(r.bms, r.t)
    assert r.uart.out and r.uart.out[0][1] == 0xC1 and r.uart.out[0][2] == 1


def test_de_pin_turnaround():
    r = Rig()
    r.regs(0, 1)
    assert r.uart.de_at_write == [1]  # DE high while writing
    assert r.de.v == 0 and r.de.history[-2:] == [1, 0]  # then low
    assert r.uart.flushes == 1  # waited for the shift register through flush()
    # without flush(): computed wait, same pin sequence
    de = FakePin()
    u = FakeUart(de, flush=False)
    rs = Rs485(u, de, 115200)
    rs.send(bytearray(b"\x01\x02\x03"), 2)
    assert u.out == [b"\x01\x02"] and u.de_at_write == [1] and de.v == 0
    assert rs.t35_ms == 2
    assert Rs485(u, de, 9600).t35_ms == 4


def test_counters_in_map():
    r = Rig()
    r.regs(0, 1)
    r.regs(0, 1)
    w = r.regs(150, 2)
    assert (w[0] << 16 | w[1]) == 2  # modbus.frames before this request


def test_baud_from_config_applied_after_response():
    class InitUart(FakeUart):
        def __init__(self):
            FakeUart.__init__(self)
            self.bauds = []

        def init(self, baudrate=None):
            self.bauds.append(baudrate)

    bms = FakeBms(modbus_pin=7, modbus_baud=19200)
    u = InitUart()
    srv = ModbusServer(u, None, bms.cfg, bms.events)
    assert u.bauds == [19200] and srv.rs.t35_ms == 2
    u.rx += write1(1, UNLOCK, 7)
    srv.poll(bms, 100)
    u.rx += write_n(1, 1606, [0, 9600])  # cfg_modbus_baud (u32)
    srv.poll(bms, 200)
    assert len(u.out) == 2 and u.out[1][1] == 16  # answered at the old rate ...
    assert u.bauds == [19200, 9600] and srv.rs.t35_ms == 4  # ... then switched


def test_request_split_across_comms_cycles_is_answered():
    # The comms task polls every 20 ms; at 9600 baud an 8-byte request takes 8.3 ms on the
    # wire, so a poll often lands inside it (at 115200 now and then). Bytes that keep coming
    # at the next poll are the rest of the same request, not a new frame after a silence.
    r = Rig()
    # a read (FC 3), and a write of two registers (FC 16: answered 01, locked) cut anywhere
    for req, fc in ((read_req(1, 3, 0, 1), 3), (write_n(1, 1010, [3650, 3550]), 0x90)):
        for cut in range(1, len(req)):
            r.bms.fill(r.t)
            r.uart.out = []
            r.uart.rx += req[:cut]
            r.srv.poll(r.bms, r.t)
            r.t += 20
            r.uart.rx += req[cut:]
            r.srv.poll(r.bms, r.t)
            for _ in range(3):
                r.t += 20
                r.srv.poll(r.bms, r.t)
            assert len(r.uart.out) == 1 and r.uart.out[0][1] == fc, (cut, r.uart.out)
    assert r.srv.crc_errors == 0 and r.srv.malformed == 0
    # a truncated request is still dropped at the silence after it, and the next one answered
    r.uart.rx += read_req(1, 3, 0, 1)[:5]
    r.srv.poll(r.bms, r.t)
    r.t += 20
    r.srv.poll(r.bms, r.t)
    assert r.srv.malformed + r.srv.crc_errors == 1
    assert r.regs(0, 1) == [regmap.MAP_VERSION]
