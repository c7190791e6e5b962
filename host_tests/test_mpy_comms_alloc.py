# MicroPython only: the 20 ms comms task allocates nothing. With micropython.heap_lock() any
# allocation raises MemoryError. Covered inside the lock, for every inverter profile:
# Status.fill_fast (the 250 ms view fill), CanProtocol.poll encoding and queueing every frame
# set and draining received frames (MCP2515 driver on the register-level emulator, replayed
# without allocation), and a Modbus server polled idle and answering reads of the whole
# status block (after one warm-up request per response length: the response views are cached).
import micropython
from fake_bms import FakeBms, bit

from bms.canbus import PROFILES, CanProtocol
from bms.modbus import ModbusServer, crc16


class ReplayCan:
    """A CAN controller stand-in that accepts frames and delivers a fixed RX frame without
    allocating (the MCP2515 driver's own hot path has its test in test_mcp2515)."""

    def __init__(self):
        self.sent = 0
        self.rx_left = 0
        self._r = [0x305, 8]

    def send(self, can_id, data, dlc):
        self.sent += 1
        return True

    def recv_into(self, buf):
        if self.rx_left <= 0:
            return None
        self.rx_left -= 1
        for i in range(8):
            buf[i] = 0
        return self._r

    def service(self, now_ms):
        pass


class ReplayUart:
    """machine.UART subset over preallocated buffers."""

    def __init__(self):
        self.rx = bytearray(64)
        self.n = 0
        self.pos = 0
        self.written = 0

    def load(self, req):
        for i in range(len(req)):
            self.rx[i] = req[i]
        self.n = len(req)
        self.pos = 0

    def any(self):
        return self.n - self.pos

    def readinto(self, buf, nbytes=None):
        k = self.n - self.pos
        if nbytes is not None and nbytes < k:
            k = nbytes
        for i in range(k):
            buf[i] = self.rx[self.pos + i]
        self.pos += k
        return k

    def write(self, buf):
        self.written += len(buf)
        return len(buf)

    def flush(self):
        pass


def _read_req(addr, cnt):
    f = bytearray((1, 3, addr >> 8, addr & 0xFF, 0, cnt))
    c = crc16(f, 6)
    f.append(c & 0xFF)
    f.append(c >> 8)
    return bytes(f)


def test_can_poll_and_status_fill_allocate_nothing():
    for prof in PROFILES:
        bms = FakeBms(can_profile=prof)
        bms.prot.faults = bit("cell_ov") | bit("afe_stale")
        bms.prot.warnings = bit("chg_oc")
        bms.limits.force_charge = 1
        bms.est.cycles = 3.5
        bms.fill()
        can = ReplayCan()
        p = CanProtocol(can, bms.cfg, bms.events)
        t = 0
        p.poll(bms, t)  # warm-up outside the lock (first-time attribute creation)
        n0 = can.sent
        micropython.heap_lock()
        try:
            for k in range(40):
                t += 250
                can.rx_left = 3
                bms.status.fill_fast(bms, t)
                p.poll(bms, t)
                if k == 20:
                    bms.snap.temp_dc[0] = -32768  # a sensor opens: still no allocation
        finally:
            micropython.heap_unlock()
        assert can.sent - n0 >= 9 * len(p._frames), (prof, can.sent)
        assert p.present == 1


def test_modbus_idle_and_reads_allocate_nothing():
    bms = FakeBms()
    uart = ReplayUart()
    srv = ModbusServer(uart, None, bms.cfg, bms.events)
    bms.modbus = srv
    reqs = (_read_req(0, 4), _read_req(10, 26), _read_req(40, 12), _read_req(60, 7),
            _read_req(80, 17), _read_req(100, 15), _read_req(200, 3))
    t = 1000
    for r in reqs:  # warm-up: one response of each length makes its cached view
        uart.load(r)
        srv.poll(bms, t)
        t += 10
        srv.poll(bms, t)
        t += 10
    w0 = uart.written
    micropython.heap_lock()
    try:
        for _k in range(30):
            for r in reqs:
                uart.load(r)
                srv.poll(bms, t)
                t += 10
                srv.poll(bms, t)  # idle poll
                t += 10
    finally:
        micropython.heap_unlock()
    assert srv.exceptions == 0
    assert uart.written - w0 == 30 * sum(5 + 2 * r[5] for r in reqs)
