# simlib.mcp2515_emu: register-level MCP2515 emulator behind the machine.SPI API, a virtual CAN
# bus, and a candump logger. Runs under CPython and MicroPython (host VM).
#
#   bus = VirtualBus(bitrate=500000)
#   emu = MCP2515Emu(bus)               # emu.spi (machine.SPI API), emu.cs, emu.int_pin (Pin API)
#   drv = bms.mcp2515.MCP2515(emu.spi, emu.cs, crystal_hz=8000000)
#   bus.advance(ms)                     # simulated time: retries, bus-off recovery, node ticks
#   bus.log_file = open("can.log", "w") # candump -L lines "(12.345000) can0 351#..." (sim time)
#
# Modelled (datasheet behaviour, simplified where noted):
# * instructions RESET, READ, WRITE, BIT MODIFY, LOAD TX BUFFER, RTS, READ STATUS, RX STATUS,
#   READ RX BUFFER (RXnIF cleared when CS rises);
# * modes normal / sleep / loopback / listen-only / configuration (CANSTAT follows REQOP at
#   once); CNF1-3, filters and masks writable only in configuration mode;
# * bit-modify only on the bit-modifiable registers (others: mask = 0xFF);
# * TX: a requested buffer is offered to the bus at once (highest TXP, then highest buffer
#   number first) and retried on every bus.advance(); no other acknowledging node -> ACK error:
#   TEC += 8 up to 128 (error-passive; an error-passive transmitter's ACK errors do not count),
#   TXERR set, frame stays pending, exactly like the chip; ABAT / clearing TXREQ aborts (ABTF);
# * bus.fault = True (shorted bus): every attempt is a bit error, TEC += 8 -> bus-off (> 255);
#   recovery after 128 x 11 recessive bits of simulated time once the fault is gone;
# * RX with masks/filters (EXIDE honoured), RXM = 11 receive-any, RXB0 -> RXB1 rollover (BUKT),
#   RXnOVR on overflow, REC decrements on good frames; EFLG EWARN/RXWAR/TXWAR/RXEP/TXEP/TXBO.
# Not modelled: bit-level arbitration (frames are atomic), remote frames, sleep wake-up, CLKOUT.

# Registers
CANSTAT = 0x0E
CANCTRL = 0x0F
TEC = 0x1C
REC = 0x1D
CNF3 = 0x28
CNF2 = 0x29
CNF1 = 0x2A
CANINTE = 0x2B
CANINTF = 0x2C
EFLG = 0x2D
TXBCTRL = (0x30, 0x40, 0x50)
RXB0CTRL = 0x60
RXB1CTRL = 0x70

MODE_NORMAL = 0x00
MODE_SLEEP = 0x20
MODE_LOOPBACK = 0x40
MODE_LISTEN = 0x60
MODE_CONFIG = 0x80

_BITMOD_REGS = (0x0C, 0x0D, 0x0F, 0x28, 0x29, 0x2A, 0x2B, 0x2C, 0x2D, 0x30, 0x40, 0x50, 0x60,
                0x70)
_FILTER_ADDRS = (0x00, 0x04, 0x08, 0x10, 0x14, 0x18)
EXT_FLAG = 0x20000000


def _config_only(a):
    return a < 0x0C or 0x10 <= a < 0x1C or 0x20 <= a <= 0x2A


class VirtualBus:
    # A CAN bus: frames are atomic; delivered to every listening node but the sender.

    def __init__(self, bitrate=500000, channel="can0"):
        self.bitrate = bitrate
        self.channel = channel
        self.nodes = []
        self.now_ms = 0
        self.log_file = None  # file object: candump -L lines with simulated time
        self.fault = False  # True: shorted bus, every transmission attempt fails (bit error)
        self.frames = 0

    def attach(self, node):
        if node not in self.nodes:
            self.nodes.append(node)

    def detach(self, node):
        if node in self.nodes:
            self.nodes.remove(node)

    def advance(self, ms):
        # Advance simulated time by ms and let every node run (retries, periodic frames).
        self.now_ms += ms
        for n in list(self.nodes):
            n.tick(self.now_ms, ms)

    def set_time(self, now_ms):
        if now_ms > self.now_ms:
            self.advance(now_ms - self.now_ms)

    def transmit(self, sender, can_id, ext, data, dlc):
        # One transmission attempt. True when some other node acknowledged it.
        if self.fault:
            return False
        acked = False
        for n in self.nodes:
            if n is not sender and n.acks():
                acked = True
                break
        if not acked:
            return False
        self.frames += 1
        payload = bytes(data[:dlc])
        for n in self.nodes:
            if n is not sender and n.hears():
                n.deliver(can_id, ext, payload, dlc)
        if self.log_file is not None:
            self.log_file.write(candump_line(self.now_ms, self.channel, can_id, ext, payload))
        return True


def candump_line(now_ms, channel, can_id, ext, payload):
    # '(12.345000) can0 351#1402740E740ECC01' plus newline (candump -L format).
    ids = ("%08X" % can_id) if ext else ("%03X" % can_id)
    hexdata = "".join("%02X" % b for b in payload)
    return "(%d.%06d) %s %s#%s\n" % (now_ms // 1000, (now_ms % 1000) * 1000, channel, ids,
                                      hexdata)


class PyNode:
    # A plain bus node written in Python (test peer, simulated inverter base).

    def __init__(self, bus, ack=True):
        self.bus = bus
        self.on = True
        self.ack = ack
        self.received = []  # (t_ms, can_id, bytes)
        self.keep = 200
        bus.attach(self)

    def acks(self):
        return self.on and self.ack

    def hears(self):
        return self.on

    def deliver(self, can_id, ext, data, dlc):
        self.received.append((self.bus.now_ms, can_id | (EXT_FLAG if ext else 0), data))
        if len(self.received) > self.keep:
            del self.received[0]
        self.on_frame(can_id, data)

    def on_frame(self, can_id, data):
        pass

    def tick(self, now_ms, ms):
        pass

    def send(self, can_id, data, ext=False):
        # Transmit at once; True when acknowledged (no retries: a simple node).
        if not self.on:
            return False
        return self.bus.transmit(self, can_id, ext, bytes(data), len(data))


class EmuPin:
    # machine.Pin API for the chip-select input of the emulator.

    def __init__(self, emu):
        self._emu = emu
        self._v = 1

    def value(self, v=None):
        if v is None:
            return self._v
        v = 1 if v else 0
        if v != self._v:
            self._v = v
            if v:
                self._emu._cs_high()
            else:
                self._emu._cs_low()
        return None

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def init(self, *a, **k):
        pass


class EmuIntPin:
    # The INT output (active low): 0 while an enabled CANINTF flag is set.

    def __init__(self, emu):
        self._emu = emu

    def value(self, v=None):
        r = self._emu.regs
        return 0 if r[CANINTF] & r[CANINTE] else 1

    def __call__(self, v=None):
        return self.value()

    def irq(self, *a, **k):
        pass

    def init(self, *a, **k):
        pass


class EmuSPI:
    # machine.SPI API. Bytes are clocked through the emulator only while CS is low.

    def __init__(self, emu):
        self._emu = emu

    def init(self, *a, **k):
        pass

    def deinit(self):
        pass

    def write(self, buf):
        x = self._emu._xfer
        for b in buf:
            x(b)

    def readinto(self, buf, write=0):
        x = self._emu._xfer
        for i in range(len(buf)):
            buf[i] = x(write)

    def read(self, n, write=0):
        b = bytearray(n)
        self.readinto(b, write)
        return bytes(b)

    def write_readinto(self, out, inp):
        x = self._emu._xfer
        for i in range(len(out)):
            inp[i] = x(out[i])


class MCP2515Emu:
    def __init__(self, bus=None, bitrate_check=True):
        self.regs = bytearray(128)
        self.spi = EmuSPI(self)
        self.cs = EmuPin(self)
        self.int_pin = EmuIntPin(self)
        self.bus = bus
        self._state = 0  # 0 idle (CS high), 1 instruction, 2 read, 3 write, ...
        self._addr = 0
        self._bm = []
        self._rx_clear = 0
        self._busoff_ms = 0
        self.attempts = 0
        self.spi_errors = 0
        self.reset()
        if bus is not None:
            bus.attach(self)

    # --- state --------------------------------------------------------------------------
    def reset(self):
        r = self.regs
        for i in range(128):
            r[i] = 0
        r[CANCTRL] = 0x87
        r[CANSTAT] = 0x80
        self._busoff_ms = 0

    @property
    def mode(self):
        return self.regs[CANSTAT] & 0xE0

    @property
    def tec(self):
        return self.regs[TEC]

    @property
    def rec(self):
        return self.regs[REC]

    def bus_off(self):
        return bool(self.regs[EFLG] & 0x20)

    # --- bus node interface -------------------------------------------------------------------
    def acks(self):
        return self.mode == MODE_NORMAL and not self.bus_off()

    def hears(self):
        return self.mode in (MODE_NORMAL, MODE_LISTEN) and not self.bus_off()

    def deliver(self, can_id, ext, data, dlc):
        self._receive(can_id, ext, data, dlc)

    def tick(self, now_ms, ms):
        r = self.regs
        if self.bus_off():
            if self.bus is not None and self.bus.fault:
                self._busoff_ms = 0
                return
            self._busoff_ms += ms
            need = max(1, (128 * 11 * 1000 + self.bus.bitrate - 1) // self.bus.bitrate)
            if self._busoff_ms >= need:
                r[TEC] = 0
                r[REC] = 0
                self._busoff_ms = 0
                self._update_eflg()
        if not self.bus_off():
            # a pending frame is retried continuously; ~4 attempts per ms is plenty to reach
            # the error counter plateaus the chip reaches in a few ms
            for _ in range(min(64, max(4, 4 * ms))):
                if self._next_tx() < 0 or self.bus_off():
                    break
                self._try_tx()

    # --- SPI ------------------------------------------------------------------------------
    def _cs_low(self):
        self._state = 1

    def _cs_high(self):
        if self._rx_clear:
            self.regs[CANINTF] &= ~self._rx_clear & 0xFF
            self._rx_clear = 0
        self._state = 0

    def _xfer(self, b):
        st = self._state
        if st == 0:
            self.spi_errors += 1  # clocked with CS high: the chip ignores it
            return 0xFF
        if st == 1:
            return self._instruction(b)
        if st == 2:  # read
            v = self._read(self._addr)
            self._addr = (self._addr + 1) & 0x7F
            return v
        if st == 3:  # write address
            self._addr = b & 0x7F
            self._state = 4
            return 0xFF
        if st == 4:  # write data
            self._write(self._addr, b)
            self._addr = (self._addr + 1) & 0x7F
            return 0xFF
        if st == 5:  # read address
            self._addr = b & 0x7F
            self._state = 2
            return 0xFF
        if st == 6:  # bit modify: address, mask, data
            self._bm.append(b)
            if len(self._bm) == 3:
                self._bit_modify(self._bm[0] & 0x7F, self._bm[1], self._bm[2])
                self._state = 9
            return 0xFF
        if st == 7:  # READ STATUS (repeats)
            return self._status()
        if st == 8:  # RX STATUS (repeats)
            return self._rx_status()
        if st == 10:  # LOAD TX BUFFER data
            a = self._addr
            ctrl = a & 0xF0
            if not self.regs[ctrl] & 0x08:  # ignored while TXREQ is set
                self.regs[a] = b
            self._addr = a + 1 if (a & 0x0F) < 0x0D else a
            return 0xFF
        return 0xFF  # st 9: instruction finished, extra bytes ignored

    def _instruction(self, b):
        if b == 0xC0:
            self.reset()
            self._state = 9
        elif b == 0x03:
            self._state = 5
        elif b == 0x02:
            self._state = 3
        elif b == 0x05:
            self._bm = []
            self._state = 6
        elif b in (0x90, 0x92, 0x94, 0x96):
            n = (b >> 2) & 1
            self._addr = (0x61, 0x66, 0x71, 0x76)[(b >> 1) & 3]
            self._rx_clear = 1 << n
            self._state = 2
        elif 0x40 <= b <= 0x45:
            self._addr = (0x31, 0x36, 0x41, 0x46, 0x51, 0x56)[b - 0x40]
            self._state = 10
        elif 0x80 <= b <= 0x87:
            for n in range(3):
                if b & (1 << n):
                    self._request(n)
            self._state = 9
        elif b == 0xA0:
            self._state = 7
        elif b == 0xB0:
            self._state = 8
        else:
            self._state = 9
        return 0xFF

    def _status(self):
        r = self.regs
        f = r[CANINTF]
        s = f & 0x03
        s |= 0x04 if r[0x30] & 0x08 else 0
        s |= 0x08 if f & 0x04 else 0
        s |= 0x10 if r[0x40] & 0x08 else 0
        s |= 0x20 if f & 0x08 else 0
        s |= 0x40 if r[0x50] & 0x08 else 0
        s |= 0x80 if f & 0x10 else 0
        return s

    def _rx_status(self):
        r = self.regs
        f = r[CANINTF] & 3
        s = f << 6
        if f & 1:
            b = 0x60
            hit = r[RXB0CTRL] & 1
        elif f & 2:
            b = 0x70
            hit = r[RXB1CTRL] & 7
        else:
            return s
        if r[b + 2] & 0x08:
            s |= 0x10
        return s | hit

    def _read(self, a):
        if (a & 0x0F) == 0x0E:
            a = CANSTAT
        elif (a & 0x0F) == 0x0F:
            a = CANCTRL
        return self.regs[a]

    def _write(self, a, v):
        r = self.regs
        lo = a & 0x0F
        if lo == 0x0E:
            return  # CANSTAT is read-only
        if lo == 0x0F:
            a = CANCTRL
        if a in (TEC, REC):
            return
        if _config_only(a) and self.mode != MODE_CONFIG:
            return
        if a == CANCTRL:
            old = r[CANCTRL]
            r[CANCTRL] = v
            if (v ^ old) & 0xE0 or (r[CANSTAT] & 0xE0) != (v & 0xE0):
                r[CANSTAT] = (r[CANSTAT] & 0x1F) | (v & 0xE0)
            if v & 0x10:
                self._abort_all()
            else:
                self._try_tx()
            return
        if a == EFLG:
            r[EFLG] &= (v | 0x3F)  # only RX0OVR / RX1OVR can be (cleared) by the host
            return
        if a in TXBCTRL:
            old = r[a]
            new = (old & 0x70) | (v & 0x0B)
            r[a] = new
            if new & 0x08 and not old & 0x08:
                r[a] &= ~0x70 & 0xFF
                self._try_tx()
            elif old & 0x08 and not new & 0x08:
                r[a] |= 0x40  # aborted by clearing TXREQ
            return
        if a == RXB0CTRL:
            r[a] = (r[a] & 0x0B) | (v & 0x64)
            return
        if a == RXB1CTRL:
            r[a] = (r[a] & 0x0F) | (v & 0x60)
            return
        if 0x61 <= a <= 0x6D or 0x71 <= a <= 0x7D:
            return  # receive buffers are read-only
        if (a & 0xF0) in (0x30, 0x40, 0x50) and lo >= 1 and r[a & 0xF0] & 0x08:
            return  # TX buffer locked while TXREQ is set
        r[a] = v

    def _bit_modify(self, a, mask, data):
        if (a & 0x0F) == 0x0F:
            a = CANCTRL
        if a not in _BITMOD_REGS:
            mask = 0xFF
        if a == EFLG:
            # host may only clear RXnOVR: compute the AND pattern directly
            keep = (~mask | data | 0x3F) & 0xFF
            self.regs[EFLG] &= keep
            return
        old = self._read(a)
        self._write(a, (old & ~mask & 0xFF) | (data & mask))

    # --- transmit ---------------------------------------------------------------------------
    def _request(self, n):
        c = TXBCTRL[n]
        r = self.regs
        if not r[c] & 0x08:
            r[c] = (r[c] & 0x03) | 0x08
            self._try_tx()

    def _abort_all(self):
        r = self.regs
        for c in TXBCTRL:
            if r[c] & 0x08:
                r[c] = (r[c] & 0x03) | 0x40

    def _next_tx(self):
        r = self.regs
        best = -1
        for n in (2, 1, 0):
            c = TXBCTRL[n]
            if r[c] & 0x08 and (best < 0 or (r[c] & 3) > (r[TXBCTRL[best]] & 3)):
                best = n
        return best

    def _try_tx(self):
        # One attempt for the highest-priority pending buffer. True when one was sent.
        r = self.regs
        if r[CANCTRL] & 0x10:
            self._abort_all()
            return False
        mode = self.mode
        if mode in (MODE_CONFIG, MODE_SLEEP, MODE_LISTEN) or self.bus_off():
            return False
        n = self._next_tx()
        if n < 0:
            return False
        c = TXBCTRL[n]
        sidh = r[c + 1]
        sidl = r[c + 2]
        ext = bool(sidl & 0x08)
        if ext:
            can_id = ((sidh << 21) | ((sidl & 0xE0) << 13) | ((sidl & 3) << 16)
                      | (r[c + 3] << 8) | r[c + 4])
        else:
            can_id = (sidh << 3) | (sidl >> 5)
        dlc = min(8, r[c + 5] & 0x0F)
        data = bytes(r[c + 6:c + 6 + dlc])
        self.attempts += 1
        if mode == MODE_LOOPBACK:
            ok = True
            self._receive(can_id, ext, data, dlc)
        else:
            ok = self.bus is not None and self.bus.transmit(self, can_id, ext, data, dlc)
        if ok:
            r[c] &= ~0x78 & 0xFF
            r[CANINTF] |= 0x04 << n
            if r[TEC]:
                r[TEC] -= 1
            self._update_eflg()
            return True
        r[c] |= 0x10  # TXERR
        if self.bus is not None and self.bus.fault:
            tec = r[TEC] + 8  # bit error: counts in every state
        elif r[TEC] < 128:
            tec = min(128, r[TEC] + 8)  # ACK error; stops at error-passive
        else:
            tec = r[TEC]
        if tec > 255:
            r[TEC] = 255
            r[EFLG] |= 0x20
            self._busoff_ms = 0
        else:
            r[TEC] = tec
        self._update_eflg()
        return False

    # --- receive ----------------------------------------------------------------------------
    def _match(self, fi, mask_addr, can_id, ext):
        r = self.regs
        fa = _FILTER_ADDRS[fi]
        fext = bool(r[fa + 1] & 0x08)
        if fext != ext:
            return False
        if ext:
            m = ((r[mask_addr] << 21) | ((r[mask_addr + 1] & 0xE0) << 13)
                 | ((r[mask_addr + 1] & 3) << 16) | (r[mask_addr + 2] << 8) | r[mask_addr + 3])
            f = ((r[fa] << 21) | ((r[fa + 1] & 0xE0) << 13) | ((r[fa + 1] & 3) << 16)
                 | (r[fa + 2] << 8) | r[fa + 3])
        else:
            m = (r[mask_addr] << 3) | (r[mask_addr + 1] >> 5)
            f = (r[fa] << 3) | (r[fa + 1] >> 5)
        return (can_id & m) == (f & m)

    def _receive(self, can_id, ext, data, dlc):
        r = self.regs
        rxm0 = (r[RXB0CTRL] >> 5) & 3
        rxm1 = (r[RXB1CTRL] >> 5) & 3
        hit0 = -1
        if rxm0 == 3:
            hit0 = 0
        else:
            for fi in (0, 1):
                if self._match(fi, 0x20, can_id, ext):
                    hit0 = fi
                    break
        if hit0 >= 0:
            if not r[CANINTF] & 0x01:
                self._load_rx(0x60, can_id, ext, data, dlc)
                r[RXB0CTRL] = (r[RXB0CTRL] & 0xFE) | hit0
                r[CANINTF] |= 0x01
            elif r[RXB0CTRL] & 0x04 and not r[CANINTF] & 0x02:
                self._load_rx(0x70, can_id, ext, data, dlc)
                r[RXB1CTRL] = (r[RXB1CTRL] & 0xF8) | hit0
                r[CANINTF] |= 0x02
            else:
                r[EFLG] |= 0x40
                r[CANINTF] |= 0x20
            self._rec_ok()
            return
        hit1 = -1
        if rxm1 == 3:
            hit1 = 2
        else:
            for fi in (2, 3, 4, 5):
                if self._match(fi, 0x24, can_id, ext):
                    hit1 = fi
                    break
        if hit1 >= 0:
            if not r[CANINTF] & 0x02:
                self._load_rx(0x70, can_id, ext, data, dlc)
                r[RXB1CTRL] = (r[RXB1CTRL] & 0xF8) | hit1
                r[CANINTF] |= 0x02
            else:
                r[EFLG] |= 0x80
                r[CANINTF] |= 0x20
        self._rec_ok()

    def _rec_ok(self):
        if self.regs[REC]:
            self.regs[REC] -= 1
            self._update_eflg()

    def _load_rx(self, base, can_id, ext, data, dlc):
        r = self.regs
        if ext:
            r[base + 1] = (can_id >> 21) & 0xFF
            r[base + 2] = ((can_id >> 13) & 0xE0) | 0x08 | ((can_id >> 16) & 3)
            r[base + 3] = (can_id >> 8) & 0xFF
            r[base + 4] = can_id & 0xFF
        else:
            r[base + 1] = can_id >> 3
            r[base + 2] = (can_id & 7) << 5
            r[base + 3] = 0
            r[base + 4] = 0
        r[base + 5] = dlc
        for i in range(8):
            r[base + 6 + i] = data[i] if i < dlc else 0

    def _update_eflg(self):
        r = self.regs
        tec = r[TEC]
        rec = r[REC]
        old = r[EFLG]
        e = old & 0xE0  # TXBO, RXnOVR kept
        if not e & 0x20 or tec < 255:
            e &= ~0x20 & 0xFF
        if tec >= 96 or rec >= 96:
            e |= 0x01
        if rec >= 96:
            e |= 0x02
        if tec >= 96:
            e |= 0x04
        if rec >= 128:
            e |= 0x08
        if tec >= 128:
            e |= 0x10
        if old & 0x20 and tec >= 255:
            e |= 0x20
        r[EFLG] = e
        if (e ^ old) & 0x3F and e & 0x3F:
            r[CANINTF] |= 0x20  # ERRIF on a change of the error state

    # --- test helpers -------------------------------------------------------------------------
    def force_errors(self, tec=None, rec=None):
        # Set error counters directly (fault injection in tests).
        if tec is not None:
            self.regs[TEC] = min(255, tec)
            if tec > 255:
                self.regs[EFLG] |= 0x20
        if rec is not None:
            self.regs[REC] = min(255, rec)
        self._update_eflg()
