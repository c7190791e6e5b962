# Fuzzing the receive paths (CPython only, hypothesis): random and mutated Modbus frames and CAN
# frames. No exception may escape; an invalid frame changes neither state nor configuration.
from fake_bms import FAULT_NAMES, FakeBms
from hypothesis import given, settings
from hypothesis import strategies as st
from test_modbus import FakePin, FakeUart, frame, read_req, write1, write_n

from bms import mcp2515 as M
from bms.canbus import CanProtocol
from bms.modbus import ModbusServer, crc16
from simlib.mcp2515_emu import MCP2515Emu, PyNode, VirtualBus

PIN = 4321


def _server(unlock=True):
    bms = FakeBms(modbus_pin=PIN)
    de = FakePin()
    uart = FakeUart(de)
    srv = ModbusServer(uart, de, bms.cfg, bms.events)
    bms.modbus = srv
    t = 1000
    if unlock:
        uart.rx += write1(1, 200, PIN)
        srv.poll(bms, t)
        srv.poll(bms, t + 10)
        assert srv.unlocked
    return bms, uart, srv, t + 100


def _feed(bms, uart, srv, t, data, chunks):
    pos = 0
    for c in chunks:
        if pos >= len(data):
            break
        uart.rx += data[pos:pos + c]
        pos += c
        srv.poll(bms, t)
        t += 1
    uart.rx += data[pos:]
    for _ in range(3):
        srv.poll(bms, t)
        t += 5
    return t


def _valid_crc(b):
    return len(b) >= 4 and crc16(b, len(b) - 2) == b[-2] | (b[-1] << 8)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400), chunks=st.lists(st.integers(1, 40), max_size=20))
def test_modbus_random_bytes(data, chunks):
    bms, uart, srv, t = _server()
    before = bms.cfg.as_dict()
    ev_before = bms.events.total
    _feed(bms, uart, srv, t, data, chunks)
    if bms.cfg.as_dict() != before:
        # only possible if the random data contained a well-formed, CRC-valid write frame
        assert srv.config_writes > 0
    else:
        assert srv.config_writes == 0
    assert bms.events.total >= ev_before
    # still answers afterwards
    uart.out = []
    _feed(bms, uart, srv, t + 1000, read_req(1, 3, 0, 1), [8])
    assert uart.out and uart.out[-1][:3] == b"\x01\x03\x02"


_GOOD = [
    write1(1, 1010, 3600),
    write_n(1, 1010, [3700, 3600]),
    write_n(1, 1002, [1, 0]),
    write1(1, 1600, 1),
    write1(1, 200, 0),
    read_req(1, 3, 100, 15),
    frame(1, 0x2B, 0x0E, 0x01, 0x00),
]


@settings(max_examples=400, deadline=None)
@given(
    which=st.integers(0, len(_GOOD) - 1),
    flips=st.lists(st.tuples(st.integers(0, 300), st.integers(0, 7)), min_size=1, max_size=4),
    cut=st.one_of(st.none(), st.integers(0, 20)),
    extra=st.binary(max_size=4),
)
def test_modbus_mutated_frames_change_nothing(which, flips, cut, extra):
    bms, uart, srv, t = _server()
    good = bytearray(_GOOD[which])
    for pos, bit in flips:
        good[pos % len(good)] ^= 1 << bit
    if cut is not None:
        good = good[:cut]
    bad = bytes(good) + extra
    if _valid_crc(bad) or _valid_crc(bytes(good)):
        return  # a mutation that happens to be a valid frame is not "invalid"
    before = bms.cfg.as_dict()
    gen = bms.cfg.generation
    unlocked = srv.unlocked
    uart.out = []
    _feed(bms, uart, srv, t, bad, [len(bad)])
    assert bms.cfg.as_dict() == before and bms.cfg.generation == gen
    assert srv.unlocked == unlocked
    assert uart.out == []  # invalid frames are never answered


@settings(max_examples=200, deadline=None)
@given(words=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=10),
       addr=st.integers(990, 1700))
def test_modbus_valid_writes_always_validated(words, addr):
    bms, uart, srv, t = _server()
    uart.out = []
    _feed(bms, uart, srv, t, write_n(1, addr, words), [100])
    assert len(uart.out) == 1
    r = uart.out[0]
    if r[1] & 0x80:
        assert r[2] in (2, 3, 4)
    # whatever was accepted passed Config's validation: a fresh Config accepts it too
    from bms.config import Config

    Config(cells=15, **dict((k, v) for k, v in bms.cfg.as_dict().items() if k != "cells"))


class _Can:
    def __init__(self, frames):
        self.frames = list(frames)
        self.sent = 0

    def send(self, *a):
        self.sent += 1
        return True

    def recv_into(self, buf):
        if not self.frames:
            return None
        cid, d = self.frames.pop(0)
        for i in range(len(d)):
            buf[i] = d[i]
        return [cid, len(d)]


@settings(max_examples=300, deadline=None)
@given(frames=st.lists(st.tuples(st.integers(0, 0x1FFFFFFF | M.EXT_FLAG),
                                 st.binary(max_size=8)), max_size=30))
def test_can_random_frames(frames):
    bms = FakeBms()
    can = _Can(frames)
    p = CanProtocol(can, bms.cfg, bms.events, fault_names=FAULT_NAMES)
    cfg_before = bms.cfg.as_dict()
    p.encode(bms)
    enc_before = [bytes(p._frames[i]) for i in range(p._n)]
    t = 0
    for _ in range(6):
        p.poll(bms, t)
        t += 300
    assert bms.cfg.as_dict() == cfg_before
    p.encode(bms)
    assert [bytes(p._frames[i]) for i in range(p._n)] == enc_before
    inv = any(c in (0x305, 0x307) for c, d in frames)
    assert bool(p.present) == inv
    for e in bms.events.to_list():
        assert e[1] == 17  # EV_INVERTER is the only event CAN traffic can cause


@settings(max_examples=100, deadline=None)
@given(frames=st.lists(st.tuples(st.integers(0, 0x7FF), st.binary(max_size=8),
                                 st.booleans()), max_size=40))
def test_can_random_frames_through_the_emulated_controller(frames):
    bus = VirtualBus()
    emu = MCP2515Emu(bus)
    peer = PyNode(bus)
    drv = M.MCP2515(emu.spi, emu.cs)
    drv.init()
    bms = FakeBms()
    p = CanProtocol(drv, bms.cfg, bms.events, fault_names=FAULT_NAMES)
    t = 0
    for cid, data, ext in frames:
        peer.send(cid, data, ext)
        if cid & 3 == 0:
            p.poll(bms, t)
            t += 50
            bus.set_time(t)
    for _ in range(10):
        p.poll(bms, t)
        t += 50
    assert drv.state in (M.STATE_ACTIVE, M.STATE_WARNING, M.STATE_PASSIVE)


class _FloodUart(FakeUart):
    """A line that never goes quiet: always has more garbage to read."""

    def __init__(self):
        FakeUart.__init__(self)
        self.read_total = 0

    def any(self):
        return 1000

    def readinto(self, buf):
        for i in range(len(buf)):
            buf[i] = 0x55
        self.read_total += len(buf)
        return len(buf)


class _FloodCan:
    """A CAN controller whose receive buffers are never empty."""

    def __init__(self):
        self.received = 0

    def recv_into(self, buf):
        self.received += 1
        return [0x305, 8]

    def send(self, can_id, data, dlc):
        return True

    def init(self, *a):
        pass


@settings(max_examples=20, deadline=None)
@given(st.integers(min_value=0, max_value=10 ** 6))
def test_receive_paths_do_bounded_work_per_poll(t0):
    # The control loop keeps its period when a poll can never run away: under a flood that
    # never ends, each poll returns after a bounded amount of work (counted, not timed).
    bms = FakeBms()
    uart = _FloodUart()
    srv = ModbusServer(uart, FakePin(), bms.cfg, bms.events)
    for k in range(50):
        before = uart.read_total
        srv.poll(bms, t0 + k)
        assert uart.read_total - before <= 9 * 256
    can = _FloodCan()
    proto = CanProtocol(can, bms.cfg, bms.events, fault_names=FAULT_NAMES)
    for k in range(50):
        before = can.received
        proto.poll(bms, t0 + 20 * k)
        assert can.received - before <= 64
