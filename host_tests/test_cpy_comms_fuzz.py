# Fuzzing the receive paths (CPython only): random and mutated Modbus requests and CAN frames,
# 10^5 of each (seeded, reproducible) plus hypothesis-driven shapes. No exception may
# escape; nothing changes except through the documented, PIN-protected writes (Modbus) or
# the inverter's presence (CAN); the work per poll stays bounded.
import random

from fake_bms import FakeBms
from hypothesis import given, settings
from hypothesis import strategies as st
from test_modbus import FakePin, FakeUart, frame, read_req, write1, write_n

from bms import events as ev
from bms import mcp2515 as M
from bms import regmap
from bms.canbus import PROFILES, CanProtocol
from bms.modbus import ModbusServer, crc16
from simlib.mcp2515_emu import MCP2515Emu, PyNode, VirtualBus

PIN = 4321
N_FUZZ = 100000
_ALLOWED_MB_EVENTS = (ev.EV_CONFIG, ev.EV_CONFIG_REJECT, ev.EV_UNLOCK)


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


# --- Modbus: 10^5 requests -------------------------------------------------------------------
def _writable():
    """Addresses of writable registers (config fields and the specials)."""
    R = regmap.REGS
    out = []
    for i in range(len(R) // 8):
        o = i * 8
        if (R[o + 2] >> 2) & 2:
            out.append((R[o] << 8) | R[o + 1])
    return out


def _random_request(rng, writable):
    k = rng.random()
    if k < 0.25:  # noise: random bytes, random length (CRC almost never valid)
        return bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 40)))
    unit = rng.choice((0, 1, 1, 1, 2, rng.randrange(256)))
    if k < 0.45:  # a read, any address and count
        return read_req(unit, rng.choice((3, 4)), rng.randrange(0x10000), rng.randrange(130))
    if k < 0.70:  # FC 6 near the writable registers (incl. identity, unlock, factory reset)
        a = rng.choice(writable) + rng.choice((0, 0, 0, 1, -1, 2))
        return write1(unit, a & 0xFFFF, rng.getrandbits(16))
    if k < 0.85:  # FC 16, sometimes with a wrong byte count
        a = rng.choice(writable) + rng.choice((0, 0, -1, 1))
        words = [rng.getrandbits(16) for _ in range(rng.randrange(1, 8))]
        f = bytearray(write_n(unit, a & 0xFFFF, words))
        if rng.random() < 0.2:
            f[6] = rng.getrandbits(8)
            c = crc16(f, len(f) - 2)
            f[-2], f[-1] = c & 0xFF, c >> 8
        return bytes(f)
    if k < 0.93:  # an unknown function code with a valid CRC
        return frame(unit, rng.randrange(256), *[rng.getrandbits(8) for _ in range(4)])
    # a valid frame with a flipped bit (CRC now wrong)
    f = bytearray(write1(1, rng.choice(writable), rng.getrandbits(16)))
    f[rng.randrange(len(f))] ^= 1 << rng.randrange(8)
    return bytes(f)


def _touches_only_writable(req, writable):
    fc = req[1]
    a = (req[2] << 8) | req[3]
    if fc == 6:
        return a in writable
    n = (req[4] << 8) | req[5]
    return all(x in writable or x - 1 in writable for x in range(a, a + n))


def test_modbus_1e5_requests_change_state_only_through_pin_protected_writes():
    rng = random.Random(12)
    writable = set(_writable())
    wl = sorted(writable)
    bms, uart, srv, t = _server(unlock=False)
    cfg = bms.cfg
    before = cfg.as_dict()
    answered = exceptions = changed = unlocked_seen = 0
    for i in range(N_FUZZ):
        if i % 97 == 0:  # now and then the right PIN (addressed or broadcast), or a relock
            req = write1(rng.choice((0, 1)), 200, PIN if rng.random() < 0.8 else 0)
        else:
            req = _random_request(rng, wl)
        was_unlocked = srv.unlocked
        ev_total = bms.events.total
        uart.out = []
        uart.rx += req
        srv.poll(bms, t)
        t += 10  # a silence: the request is framed and handled (one poll per request)
        srv.poll(bms, t)
        t += 10
        valid = _valid_crc(req)
        unit = req[0] if req else -1
        after = cfg.as_dict()
        if after != before:
            # only a valid write addressed to us or broadcast, to writable registers only,
            # while unlocked (the unlock write itself changes no configuration)
            assert valid and unit in (0, 1) and req[1] in (6, 16), req.hex()
            assert was_unlocked and _touches_only_writable(req, writable), req.hex()
            changed += 1
            before = after
        if srv.unlocked and not was_unlocked:
            assert valid and unit in (0, 1) and req[1] in (6, 16), req.hex()
            a = (req[2] << 8) | req[3]
            assert a == 200, req.hex()
            unlocked_seen += 1
        for e in bms.events.last(bms.events.total - ev_total):
            assert e[1] in _ALLOWED_MB_EVENTS, e
        if uart.out:
            r = uart.out[-1]
            assert valid and unit == 1, req.hex()  # never an answer to noise or broadcasts
            answered += 1
            if r[1] & 0x80:
                exceptions += 1
                assert r[2] in (1, 2, 3), r.hex()  # 04 only for a failing device
        if srv._n or srv._skip:  # re-synchronise on a silence like a real line
            t += 10
            srv.poll(bms, t)
    assert answered > N_FUZZ // 3 and exceptions > 0 and changed > 0 and unlocked_seen > 0
    # the server still answers correctly afterwards
    uart.out = []
    _feed(bms, uart, srv, t + 1000, read_req(1, 3, 0, 1), [8])
    assert uart.out and uart.out[-1][:3] == b"\x01\x03\x02"


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
    for pos, b in flips:
        good[pos % len(good)] ^= 1 << b
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
        assert r[2] in (1, 2, 3)
    # whatever was accepted passed Config's validation: a fresh Config accepts it too
    from bms.config import Config

    Config(cells=15, **dict((k, v) for k, v in bms.cfg.as_dict().items() if k != "cells"))
    assert bms.cfg.chemistry == "lfp" and bms.cfg.cells == 15  # identity untouched


# --- CAN: 10^5 received frames ---------------------------------------------------------------
class _Can:
    def __init__(self, frames=()):
        self.frames = list(frames)
        self.sent = 0
        self.received = 0
        self.delivered = set()

    def send(self, *a):
        self.sent += 1
        return True

    def recv_into(self, buf):
        if not self.frames:
            return None
        cid, d = self.frames.pop(0)
        for i in range(len(d)):
            buf[i] = d[i]
        self.received += 1
        self.delivered.add(cid)
        return [cid, len(d)]


def _view(s):
    return (s.seq, s.pack_mv, s.current_ma, s.cvl_mv, s.ccl_ma, s.dcl_ma, s.dvl_mv,
            s.chg_enable, s.dsg_enable, s.force_charge, s.full_charge_req, s.faults,
            s.warnings, s.soc_cpct, s.temp_report_dc, bytes(s.cell_mv))


def test_can_1e5_received_frames_change_nothing_but_presence():
    rng = random.Random(34)
    per = N_FUZZ // len(PROFILES)
    total = 0
    for prof in PROFILES:
        bms = FakeBms(can_profile=prof)
        bms.limits.force_charge = 1
        bms.fill()
        can = _Can()
        p = CanProtocol(can, bms.cfg, bms.events)
        cfg_before = bms.cfg.as_dict()
        view = _view(bms.status)
        p.encode(bms.status)
        enc = [bytes(p._bufs[i]) for i in range(p._n)]
        rx_ids = p.prof.RX_IDS
        t = 0
        n = 0
        while n < per:
            k = rng.randrange(1, 12)
            for _ in range(k):
                r = rng.random()
                if r < 0.3:
                    cid = rng.choice((0x305, 0x306, 0x307, 0x300, 0x351, 0x35C, 0x301))
                elif r < 0.9:
                    cid = rng.randrange(0x800)
                else:
                    cid = rng.getrandbits(29) | M.EXT_FLAG
                d = bytes(rng.getrandbits(8) for _ in range(rng.randrange(9)))
                if rng.random() < 0.05:
                    d = b"\x12\x34\x00\x00VIC"
                can.frames.append((cid, d))
            r0 = can.received
            p.poll(bms, t)
            assert can.received - r0 <= 8  # bounded work per poll
            n += can.received - r0
            if p.present:  # only the profile's inverter ids make it present
                assert can.delivered & set(rx_ids)
            t += rng.choice((20, 20, 100, 5000, 70000))
        total += n
        assert bms.cfg.as_dict() == cfg_before
        assert _view(bms.status) == view  # the view is the app's: CAN never writes it
        p.encode(bms.status)
        assert [bytes(p._bufs[i]) for i in range(p._n)] == enc
        for e in bms.events.to_list():
            assert e[1] == ev.EV_INVERTER  # the only event CAN traffic can cause
        assert p.victron_gx == (prof == "victron" and p.victron_gx)
    assert total >= N_FUZZ - len(PROFILES) * 8


@settings(max_examples=100, deadline=None)
@given(frames=st.lists(st.tuples(st.integers(0, 0x7FF), st.binary(max_size=8),
                                 st.booleans()), max_size=40),
       prof=st.sampled_from(PROFILES))
def test_can_random_frames_through_the_emulated_controller(frames, prof):
    bus = VirtualBus()
    emu = MCP2515Emu(bus)
    peer = PyNode(bus)
    drv = M.MCP2515(emu.spi, emu.cs)
    drv.init()
    bms = FakeBms(can_profile=prof)
    p = CanProtocol(drv, bms.cfg, bms.events)
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

    def readinto(self, buf, nbytes=None):
        n = len(buf) if nbytes is None else min(nbytes, len(buf))
        for i in range(n):
            buf[i] = 0x55
        self.read_total += n
        return n


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
    proto = CanProtocol(can, bms.cfg, bms.events)
    for k in range(50):
        before = can.received
        proto.poll(bms, t0 + 20 * k)
        assert can.received - before <= 8
