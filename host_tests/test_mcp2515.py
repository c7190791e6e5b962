# MCP2515 driver against the register-level emulator (CPython and MicroPython).
from testlib import raises

from bms import mcp2515 as M
from simlib.mcp2515_emu import MCP2515Emu, PyNode, VirtualBus

FRAME_351 = b"\x14\x02\x74\x0e\x74\x0e\xcc\x01"


def _setup(crystal=8000000, rate=500000, peer=True, mode=M.MODE_NORMAL, **kw):
    bus = VirtualBus(bitrate=rate)
    emu = MCP2515Emu(bus)
    p = PyNode(bus) if peer else None
    drv = M.MCP2515(emu.spi, emu.cs, crystal_hz=crystal, bitrate=rate, **kw)
    drv.init(mode)
    return bus, emu, p, drv


def test_bit_timing_table():
    table = {
        (16000000, 500000): (0x00, 0xAC, 0x03),
        (16000000, 250000): (0x01, 0xAC, 0x03),
        (16000000, 125000): (0x03, 0xAC, 0x03),
        (8000000, 500000): (0x00, 0x91, 0x01),
        (8000000, 250000): (0x00, 0xAC, 0x03),
        (8000000, 125000): (0x01, 0xAC, 0x03),
    }
    for (xtal, rate), cnf in table.items():
        assert M.bit_timing(xtal, rate) == cnf, (xtal, rate)
        assert M.sample_point_pct(cnf[1], cnf[2]) == 75
        # bit time check: TQ = 2 (BRP + 1) / Fosc, bit = 1 + prop + ps1 + ps2 TQ
        brp = cnf[0] & 0x3F
        ntq = 1 + (cnf[1] & 7) + 1 + ((cnf[1] >> 3) & 7) + 1 + (cnf[2] & 7) + 1
        assert xtal // (2 * (brp + 1) * ntq) == rate
        bus, emu, p, drv = _setup(xtal, rate)
        assert (emu.regs[0x2A], emu.regs[0x29], emu.regs[0x28]) == cnf
    raises(ValueError, M.bit_timing, 8000000, 1000000)  # 4 TQ only: refused
    raises(ValueError, M.MCP2515, None, None, 7372800, 500000)


def test_cnf_writable_only_in_config_mode():
    bus, emu, p, drv = _setup()
    drv.write_reg(0x2A, 0x3F)
    assert emu.regs[0x2A] == 0x00
    assert drv.set_mode(M.MODE_CONFIG)
    drv.write_reg(0x2A, 0x3F)
    assert emu.regs[0x2A] == 0x3F


def test_no_chip_raises_oserror():
    class DeadSPI:
        def write(self, b):
            pass

        def readinto(self, b, w=0):
            for i in range(len(b)):
                b[i] = 0xFF

    class P:
        def value(self, v=None):
            return 1

    drv = M.MCP2515(DeadSPI(), P())
    raises(OSError, drv.init)


def test_tx_through_all_three_buffers():
    bus, emu, p, drv = _setup()
    p.on = False  # nobody acks: frames stay pending, one per buffer
    assert drv.send(0x351, FRAME_351, 8)
    assert drv.send(0x355, b"\x1a\x00\x64\x00", 4)
    assert drv.send(0x356, b"\x01\x02\x03\x04\x05\x06", 6)
    assert drv.tx_pending() == 3
    assert not drv.send(0x359, b"", 0)  # no free buffer: False at once
    assert drv.tx_busy == 1
    # the ids and data landed in TXB0, TXB1, TXB2
    assert emu.regs[0x31] == 0x351 >> 3 and emu.regs[0x32] == (0x351 & 7) << 5
    assert emu.regs[0x41] == 0x355 >> 3 and emu.regs[0x45] == 4
    assert bytes(emu.regs[0x56:0x5C]) == b"\x01\x02\x03\x04\x05\x06"
    p.on = True
    bus.advance(1)
    assert drv.tx_pending() == 0
    ids = sorted(f[1] for f in p.received)
    assert ids == [0x351, 0x355, 0x356]
    got = dict((f[1], f[2]) for f in p.received)
    assert got[0x351] == FRAME_351
    assert got[0x355] == b"\x1a\x00\x64\x00"


def test_rx_both_buffers_and_rollover():
    bus, emu, p, drv = _setup()
    buf = bytearray(8)
    assert drv.recv_into(buf) is None
    p.send(0x305, bytes(8))
    p.send(0x307, b"\x12\x34\x00\x00VIC\x00")
    p.send(0x123, b"\x01")  # both buffers full: overflow
    assert emu.regs[0x2C] & 3 == 3
    r = drv.recv_into(buf)
    assert r is not None and r[0] == 0x305 and r[1] == 8
    r = drv.recv_into(buf)
    assert r[0] == 0x307 and r[1] == 8 and bytes(buf[4:7]) == b"VIC"
    assert drv.recv_into(buf) is None
    drv.service(0)
    assert drv.rx_overflows == 1
    assert emu.regs[0x2D] & 0xC0 == 0  # RXnOVR cleared by the driver
    assert drv.rx_frames == 2


def test_extended_id_roundtrip_and_int_pin():
    bus = VirtualBus()
    emu = MCP2515Emu(bus)
    drv = M.MCP2515(emu.spi, emu.cs, int_pin=emu.int_pin)
    drv.init(M.MODE_LOOPBACK)
    buf = bytearray(8)
    assert drv.recv_into(buf) is None  # INT high: no SPI transfer needed
    drv.set_filters((0, 0), (M.EXT_FLAG, M.EXT_FLAG, 0, 0, 0, 0))  # RXB0 takes 29-bit frames
    assert drv.send(0x18FF50E5 | M.EXT_FLAG, b"\xAA\xBB", 2)
    assert emu.int_pin.value() == 0
    r = drv.recv_into(buf)
    assert r is not None and r[0] == 0x18FF50E5 | M.EXT_FLAG and r[1] == 2 and drv.rx_ext
    assert buf[0] == 0xAA and buf[1] == 0xBB


def test_loopback_mode():
    bus, emu, p, drv = _setup(peer=False, mode=M.MODE_LOOPBACK)
    assert emu.mode == M.MODE_LOOPBACK
    buf = bytearray(8)
    assert drv.send(0x351, FRAME_351, 8)  # no other node needed in loopback
    r = drv.recv_into(buf)
    assert r is not None and r[0] == 0x351 and bytes(buf) == FRAME_351
    assert drv.tec == 0


def test_listen_only_does_not_ack_or_send():
    bus, emu, p, drv = _setup(mode=M.MODE_LISTEN)
    assert p.send(0x305, bytes(8)) is False  # the MCP2515 alone does not ACK in listen-only
    other = PyNode(bus)
    assert p.send(0x305, bytes(8))
    buf = bytearray(8)
    assert drv.recv_into(buf)[0] == 0x305
    drv.send(0x351, FRAME_351, 8)
    bus.advance(5)
    assert all(f[1] != 0x351 for f in other.received)


def test_filters_and_masks():
    bus, emu, p, drv = _setup()
    # RXB0: exactly 0x305 / 0x307; RXB1: 0x300..0x30F via mask 0x7F0
    assert drv.set_filters((0x7FF, 0x7F0), (0x305, 0x307, 0x300, 0x300, 0x300, 0x300))
    assert emu.mode == M.MODE_NORMAL
    buf = bytearray(8)
    for cid in (0x351, 0x305, 0x30A, 0x400):
        p.send(cid, b"\x00")
    seen = []
    while True:
        r = drv.recv_into(buf)
        if r is None:
            break
        seen.append(r[0])
    assert seen == [0x305, 0x30A]


def test_no_ack_goes_error_passive_without_blocking_then_aborts():
    bus, emu, p, drv = _setup(tx_timeout_ms=500)
    p.on = False  # inverter switched off
    t = 0
    sent = 0
    for _ in range(30):  # 3 s of 100 ms comms cycles
        drv.service(t)
        if drv.send(0x351, FRAME_351, 8):
            sent += 1
        bus.advance(100)
        t += 100
    drv.service(t)
    assert drv.tec == 128  # error-passive plateau, never bus-off on ACK errors
    assert drv.state == M.STATE_PASSIVE
    assert drv.eflg & M.EFLG_TXEP
    assert drv.aborts >= 2  # stale frames were aborted with ABAT
    assert sent > 3  # buffers were freed again: the sender is never stuck
    # the inverter comes back: frames flow, TEC decays
    p.on = True
    drv.service(t + 100)
    assert drv.send(0x351, FRAME_351, 8)
    bus.advance(1)
    assert any(f[1] == 0x351 for f in p.received)
    drv.service(t + 200)
    assert drv.tec < 128


def test_bus_off_recovery_drops_stale_frames():
    bus, emu, p, drv = _setup()
    bus.fault = True  # shorted bus: bit errors
    assert drv.send(0x351, FRAME_351, 8)
    assert drv.send(0x355, b"\x01", 1)
    bus.advance(50)
    drv.service(50)
    assert drv.state == M.STATE_BUS_OFF and drv.bus_offs == 1
    assert not drv.send(0x356, b"\x01", 1)  # refused while bus-off
    bus.fault = False
    bus.advance(10)  # 128 x 11 recessive bits pass: hardware recovers by itself
    drv.service(60)
    assert drv.state == M.STATE_ACTIVE and drv.tec == 0
    drv.service(70)  # ABAT released
    assert drv.tx_pending() == 0
    bus.advance(5)
    assert not any(f[1] == 0x351 for f in p.received)  # the stale frames were dropped
    assert drv.send(0x356, b"\x01", 1)
    bus.advance(1)
    assert any(f[1] == 0x356 for f in p.received)


def test_candump_log_uses_sim_time():
    class W:
        def __init__(self):
            self.lines = []

        def write(self, s):
            self.lines.append(s)

    bus, emu, p, drv = _setup()
    bus.log_file = W()
    bus.advance(12345)
    drv.send(0x351, FRAME_351, 8)
    assert bus.log_file.lines == ["(12.345000) can0 351#1402740E740ECC01\n"]


def test_recv_result_reused_no_alloc_per_frame():
    bus, emu, p, drv = _setup()
    buf = bytearray(8)
    p.send(0x305, bytes(8))
    r1 = drv.recv_into(buf)
    p.send(0x305, bytes(8))
    r2 = drv.recv_into(buf)
    assert r1 is r2  # one preallocated result object


class _QuietSPI:
    # answers every read with `fill` and allocates nothing (the emulator itself allocates)
    def __init__(self):
        self.fill = 0

    def write(self, buf):
        pass

    def readinto(self, buf, write=0):
        f = self.fill
        for i in range(len(buf)):
            buf[i] = f


class _QuietPin:
    def value(self, v=None):
        return 1


def test_hot_path_does_not_allocate():
    import micropython

    spi = _QuietSPI()
    drv = M.MCP2515(spi, _QuietPin())
    buf = bytearray(8)
    data = b"\x01\x02\x03\x04\x05\x06\x07\x08"
    drv.service(0)
    drv.send(0x351, data, 8)
    micropython.heap_lock()
    try:
        for t in range(10):
            spi.fill = 0x00  # no TXREQ, no RX, no errors
            drv.service(t)
            ok = drv.send(0x351, data, 8)
            spi.fill = 0x01  # RX0IF set; every RX byte 0x01
            r = drv.recv_into(buf)
    finally:
        micropython.heap_unlock()
    assert ok and r is not None and r[1] == 1


def test_emulator_bit_modify_and_rx_status():
    bus, emu, p, drv = _setup()
    drv.modify(0x2B, 0x0F, 0xFF)  # CANINTE is bit-modifiable
    assert emu.regs[0x2B] == 0x0F | (_INTE & 0xF0)
    drv.modify(0x31, 0x0F, 0xAB)  # TXB0SIDH is not: the mask acts as 0xFF
    assert emu.regs[0x31] == 0xAB
    p.send(0x123, b"\x01\x02")
    cmd = bytearray(b"\xb0")
    out = bytearray(1)
    emu.cs.value(0)
    emu.spi.write(cmd)
    emu.spi.readinto(out)
    emu.cs.value(1)
    assert out[0] >> 6 == 1  # message in RXB0, standard data frame, filter 0
    drv.set_mode(M.MODE_LOOPBACK)
    assert drv.read_reg(0x5E) == drv.read_reg(0x0E) == M.MODE_LOOPBACK  # CANSTAT mirrored


_INTE = 0x01 | 0x02 | 0x20  # what init() enables
