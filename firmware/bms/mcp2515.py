# bms.mcp2515: MCP2515 stand-alone CAN controller over machine.SPI with a chip-select Pin.
#
# Polling driver, never blocks the caller on the bus:
#   send(can_id, data, dlc) -> bool   loads a free TX buffer (TXB0..2); False when none is free
#   recv_into(buf) -> [can_id, dlc]   or None; reads RXB0 then RXB1 (RXB0 rolls over into RXB1)
#   service(now_ms)                   once per comms cycle: error counters, TX abort, bus-off
# The result of recv_into() is ONE preallocated 2-element list, reused by every call: unpack it
# at once (`can_id, dlc = r`). Extended (29-bit) frames: can_id | EXT_FLAG (bit 29, so the value
# stays a small int on 32-bit ports), on send() and in what recv_into() returns.
#
# Bit timing (BTLMODE = 1, SJW = 1 TQ, single sampling, sample point 75 %):
#   crystal  rate   TQ/bit  BRP  PRSEG+1 PHSEG1+1 PHSEG2+1   CNF1  CNF2  CNF3
#   16 MHz   500 k    16     0      6       5        4       0x00  0xAC  0x03
#   16 MHz   250 k    16     1      6       5        4       0x01  0xAC  0x03
#   16 MHz   125 k    16     3      6       5        4       0x03  0xAC  0x03
#    8 MHz   500 k     8     0      3       2        2       0x00  0x91  0x01
#    8 MHz   250 k    16     0      6       5        4       0x00  0xAC  0x03
#    8 MHz   125 k    16     1      6       5        4       0x01  0xAC  0x03
# TQ = 2 (BRP + 1) / Fosc; bit = 1 + (PRSEG+1) + (PHSEG1+1) + (PHSEG2+1) TQ; sample point =
# (1 + PRSEG+1 + PHSEG1+1) / bit = 12/16 or 6/8 = 75 %. Other crystals: bit_timing() computes
# the same layout (16 TQ preferred, else 8 TQ) or raises ValueError.
#
# Errors (datasheet error states): error-passive at TEC or REC > 127, bus-off at TEC > 255.
# * No ACK (inverter off): the chip retransmits forever, TEC sticks at 128. service() aborts
#   (CANCTRL.ABAT) every TX buffer pending longer than tx_timeout_ms and counts it in .aborts;
#   send() keeps returning quickly (True while a buffer is free, else False).
# * Bus-off (EFLG.TXBO): pending frames are aborted (stale data is dropped), send() returns False
#   and the chip recovers by itself after 128 x 11 recessive bits; .bus_offs counts entries.
# Nothing here allocates after __init__.
from micropython import const

# SPI instructions
_RESET = const(0xC0)
_READ = const(0x03)
_WRITE = const(0x02)
_BITMOD = const(0x05)
_READ_RX0 = const(0x90)  # READ RX BUFFER from RXB0SIDH (0x94: RXB1SIDH)
_LOAD_TX0 = const(0x40)  # LOAD TX BUFFER at TXB0SIDH (0x42, 0x44: TXB1, TXB2)
_RTS = const(0x80)  # request to send: 0x81 TXB0, 0x82 TXB1, 0x84 TXB2
_READ_STATUS = const(0xA0)

# Registers
_CANSTAT = const(0x0E)
_CANCTRL = const(0x0F)
_TEC = const(0x1C)
_RXM0 = const(0x20)
_RXM1 = const(0x24)
_CNF3 = const(0x28)
_CANINTE = const(0x2B)
_CANINTF = const(0x2C)
_EFLG = const(0x2D)
_TXB0CTRL = const(0x30)
_RXB0CTRL = const(0x60)
_RXB1CTRL = const(0x70)

# CANINTF / EFLG / TXBnCTRL bits
_RX0IF = const(0x01)
_RX1IF = const(0x02)
_ERRIF = const(0x20)
_MERRF = const(0x80)
EFLG_EWARN = const(0x01)
EFLG_RXWAR = const(0x02)
EFLG_TXWAR = const(0x04)
EFLG_RXEP = const(0x08)
EFLG_TXEP = const(0x10)
EFLG_TXBO = const(0x20)
EFLG_RX0OVR = const(0x40)
EFLG_RX1OVR = const(0x80)
_TXREQ = const(0x08)
_ABAT = const(0x10)

# Operation modes (CANCTRL.REQOP / CANSTAT.OPMOD, bits 7..5)
MODE_NORMAL = const(0x00)
MODE_SLEEP = const(0x20)
MODE_LOOPBACK = const(0x40)
MODE_LISTEN = const(0x60)
MODE_CONFIG = const(0x80)

# Bus states (.state)
STATE_ACTIVE = const(0)
STATE_WARNING = const(1)  # TEC or REC >= 96
STATE_PASSIVE = const(2)  # TEC or REC > 127
STATE_BUS_OFF = const(3)

EXT_FLAG = const(0x20000000)  # or-ed into can_id for a 29-bit frame (fits a small int)
_EXT_MASK = const(0x1FFFFFFF)
_MODE_TRIES = const(20)


def bit_timing(crystal_hz, bitrate):
    # (CNF1, CNF2, CNF3) for a 75 % sample point, SJW 1, single sampling; ValueError if none.
    for ntq in (16, 8):
        div = 2 * bitrate * ntq
        if div <= 0 or crystal_hz % div:
            continue
        brp = crystal_hz // div - 1
        if not 0 <= brp <= 63:
            continue
        ps2 = ntq // 4
        tseg1 = ntq - 1 - ps2  # PropSeg + PS1
        prop = tseg1 // 2
        ps1 = tseg1 - prop
        cnf1 = brp  # SJW = 1 TQ (bits 7-6 = 0)
        cnf2 = 0x80 | ((ps1 - 1) << 3) | (prop - 1)  # BTLMODE, single sample
        cnf3 = ps2 - 1
        return (cnf1, cnf2, cnf3)
    raise ValueError("no MCP2515 bit timing for this crystal and bit rate")


def sample_point_pct(cnf2, cnf3):
    # Sample point in % of the bit time for given CNF2/CNF3 (BTLMODE = 1).
    prop = (cnf2 & 7) + 1
    ps1 = ((cnf2 >> 3) & 7) + 1
    ps2 = (cnf3 & 7) + 1
    return 100 * (1 + prop + ps1) // (1 + prop + ps1 + ps2)


class MCP2515:
    def __init__(self, spi, cs, crystal_hz=8000000, bitrate=500000, int_pin=None,
                 tx_timeout_ms=500):
        self.spi = spi
        self.cs = cs
        self.int_pin = int_pin
        self.crystal_hz = crystal_hz
        self.bitrate = bitrate
        self.cnf = bit_timing(crystal_hz, bitrate)  # checked now: a bad board fails at boot
        self.tx_timeout_ms = tx_timeout_ms
        self.mode = MODE_CONFIG
        self._c2 = bytearray(2)
        self._c3 = bytearray(3)
        self._c4 = bytearray(4)
        self._tx = bytearray(14)  # LOAD TX instruction + SIDH SIDL EID8 EID0 DLC D0..D7
        self._rx = bytearray(13)  # SIDH SIDL EID8 EID0 DLC D0..D7
        self._regs = bytearray(18)  # TEC .. EFLG block read
        self._one = bytearray(1)
        self._res = [0, 0]
        self._tx_t = [0, 0, 0]  # time each TX buffer was loaded (ms)
        self._abat = False
        self.now_ms = 0  # last time given to service()
        self.rx_ext = False
        # Diagnostics (read them, never write)
        self.tec = 0
        self.rec = 0
        self.eflg = 0
        self.state = STATE_ACTIVE
        self.tx_frames = 0  # frames loaded into a TX buffer
        self.tx_busy = 0  # send() calls refused: no free buffer / bus-off / aborting
        self.rx_frames = 0
        self.rx_overflows = 0
        self.aborts = 0  # ABAT issued for frames nobody acknowledged
        self.bus_offs = 0  # entries into bus-off
        self.errors = 0  # ERRIF / MERRF interrupts seen

    # --- low level SPI ----------------------------------------------------------------
    def _xfer_w(self, buf):
        self.cs.value(0)
        try:
            self.spi.write(buf)
        finally:
            self.cs.value(1)

    def _read_block(self, addr, buf):
        c = self._c2
        c[0] = _READ
        c[1] = addr
        self.cs.value(0)
        try:
            self.spi.write(c)
            self.spi.readinto(buf)
        finally:
            self.cs.value(1)

    def read_reg(self, addr):
        self._read_block(addr, self._one)
        return self._one[0]

    def write_reg(self, addr, value):
        c = self._c3
        c[0] = _WRITE
        c[1] = addr
        c[2] = value
        self._xfer_w(c)

    def modify(self, addr, mask, value):
        c = self._c4
        c[0] = _BITMOD
        c[1] = addr
        c[2] = mask
        c[3] = value
        self._xfer_w(c)

    def _instr(self, code):
        self._one[0] = code
        self._xfer_w(self._one)

    def read_status(self):
        self._one[0] = _READ_STATUS
        self.cs.value(0)
        try:
            self.spi.write(self._one)
            self.spi.readinto(self._one)
        finally:
            self.cs.value(1)
        return self._one[0]

    # --- set-up -------------------------------------------------------------------------
    def reset(self):
        # RESET instruction; the chip comes up in configuration mode. OSError if it does not.
        self._instr(_RESET)
        for _ in range(_MODE_TRIES):
            if self.read_reg(_CANSTAT) & 0xE0 == MODE_CONFIG:
                self.mode = MODE_CONFIG
                self._abat = False
                return
        raise OSError("MCP2515 not responding")

    def init(self, mode=MODE_NORMAL):
        # Reset, bit timing, accept-all filters, rollover, then enter mode. OSError if no chip.
        self.reset()
        c1, c2, c3 = self.cnf
        self.write_reg(_CNF3, c3)
        self.write_reg(_CNF3 + 1, c2)
        self.write_reg(_CNF3 + 2, c1)
        if self.read_reg(_CNF3 + 2) != c1 or self.read_reg(_CNF3 + 1) != c2:
            raise OSError("MCP2515 CNF readback")
        self._set_filters_cfg((0, 0), (0, 0, 0, 0, 0, 0))
        self.write_reg(_RXB0CTRL, 0x04)  # RXM = 00 (filters, masks 0 = accept all), BUKT
        self.write_reg(_RXB1CTRL, 0x00)
        self.write_reg(_CANINTE, _RX0IF | _RX1IF | _ERRIF)  # INT pin (if wired) for RX/errors
        self.write_reg(_CANINTF, 0)
        if not self.set_mode(mode):
            raise OSError("MCP2515 mode change")

    def set_mode(self, mode):
        # Request an operation mode; True when CANSTAT confirms (bounded polling).
        self.modify(_CANCTRL, 0xE0, mode)
        for _ in range(_MODE_TRIES):
            if self.read_reg(_CANSTAT) & 0xE0 == mode:
                self.mode = mode
                return True
        return False

    def set_filters(self, masks, filters):
        # masks: 2 ids (RXM0 for RXB0, RXM1 for RXB1); filters: 6 ids (RXF0-1 -> RXB0, RXF2-5
        # -> RXB1). A mask bit 1 = compare that id bit. EXT_FLAG in a filter = match 29-bit frames.
        # Goes through configuration mode and back to the current mode.
        mode = self.mode
        if not self.set_mode(MODE_CONFIG):
            return False
        self._set_filters_cfg(masks, filters)
        return self.set_mode(mode)

    def _set_filters_cfg(self, masks, filters):
        self._write_id(_RXM0, masks[0], False)
        self._write_id(_RXM1, masks[1], False)
        for i in range(6):
            addr = i * 4 if i < 3 else 0x10 + (i - 3) * 4
            f = filters[i]
            self._write_id(addr, f, bool(f & EXT_FLAG))

    def _write_id(self, addr, can_id, ext):
        self._pack_id(self._tx, 1, can_id, ext)
        for i in range(4):
            self.write_reg(addr + i, self._tx[1 + i])

    @staticmethod
    def _pack_id(buf, o, can_id, ext):
        if ext:
            i = can_id & _EXT_MASK
            buf[o] = (i >> 21) & 0xFF
            buf[o + 1] = ((i >> 13) & 0xE0) | 0x08 | ((i >> 16) & 0x03)
            buf[o + 2] = (i >> 8) & 0xFF
            buf[o + 3] = i & 0xFF
        else:
            i = can_id & 0x7FF
            buf[o] = i >> 3
            buf[o + 1] = (i & 7) << 5
            buf[o + 2] = 0
            buf[o + 3] = 0

    # --- transmit -------------------------------------------------------------------------
    def send(self, can_id, data, dlc):
        # Queue a data frame in a free TX buffer. Non-blocking: False when none is free, while
        # bus-off or while an abort is in progress. can_id | EXT_FLAG sends a 29-bit id.
        if self._abat or self.state == STATE_BUS_OFF or dlc > 8 or dlc < 0:
            self.tx_busy += 1
            return False
        st = self.read_status()
        n = -1
        for i in range(3):
            if not st & (0x04 << (2 * i)):  # TXBnCTRL.TXREQ mirrored in READ STATUS
                n = i
                break
        if n < 0:
            self.tx_busy += 1
            return False
        tx = self._tx
        tx[0] = _LOAD_TX0 + 2 * n
        self._pack_id(tx, 1, can_id, bool(can_id & EXT_FLAG))
        tx[5] = dlc
        for i in range(8):
            tx[6 + i] = data[i] if i < dlc else 0
        self._xfer_w(tx)
        self._instr(_RTS | (1 << n))
        self._tx_t[n] = self.now_ms
        self.tx_frames += 1
        return True

    def tx_pending(self):
        # Number of TX buffers with TXREQ set.
        st = self.read_status()
        return ((st >> 2) & 1) + ((st >> 4) & 1) + ((st >> 6) & 1)

    def abort(self):
        # Abort every pending transmission (CANCTRL.ABAT); service() clears ABAT afterwards.
        self.modify(_CANCTRL, _ABAT, _ABAT)
        self._abat = True

    # --- receive --------------------------------------------------------------------------
    def any(self):
        if self.int_pin is not None and self.int_pin.value():
            return False  # INT is active low: nothing pending
        return bool(self.read_status() & (_RX0IF | _RX1IF))

    def recv_into(self, buf):
        # Copy the next received frame's data into buf (>= 8 bytes). Returns the reused list
        # [can_id, dlc] (EXT_FLAG or-ed in for 29-bit ids; .rx_ext tells too) or None.
        if self.int_pin is not None and self.int_pin.value():
            return None
        st = self.read_status()
        if st & _RX0IF:
            instr = _READ_RX0
        elif st & _RX1IF:
            instr = _READ_RX0 + 4
        else:
            return None
        rx = self._rx
        self.cs.value(0)
        try:
            self._one[0] = instr
            self.spi.write(self._one)
            self.spi.readinto(rx)
        finally:
            self.cs.value(1)  # raising CS clears RXnIF
        sidh = rx[0]
        sidl = rx[1]
        if sidl & 0x08:
            cid = ((sidh << 21) | ((sidl & 0xE0) << 13) | ((sidl & 3) << 16) | (rx[2] << 8)
                   | rx[3]) | EXT_FLAG
            self.rx_ext = True
        else:
            cid = (sidh << 3) | (sidl >> 5)
            self.rx_ext = False
        dlc = rx[4] & 0x0F
        if dlc > 8:
            dlc = 8
        for i in range(dlc):
            buf[i] = rx[5 + i]
        self.rx_frames += 1
        res = self._res
        res[0] = cid
        res[1] = dlc
        return res

    # --- supervision ----------------------------------------------------------------------
    def service(self, now_ms):
        # Read TEC/REC/EFLG/CANINTF, clear error flags, abort stale TX, track bus-off.
        # Call once per comms cycle (a few SPI transfers; never waits on the bus).
        self.now_ms = now_ms
        r = self._regs
        self._read_block(_TEC, r)  # 0x1C TEC, 0x1D REC, ..., 0x2C CANINTF, 0x2D EFLG
        self.tec = r[0]
        self.rec = r[1]
        intf = r[_CANINTF - _TEC]
        eflg = r[_EFLG - _TEC]
        self.eflg = eflg
        if intf & (_ERRIF | _MERRF):
            self.errors += 1
            self.modify(_CANINTF, _ERRIF | _MERRF, 0)
        if eflg & (EFLG_RX0OVR | EFLG_RX1OVR):
            self.rx_overflows += 1
            self.modify(_EFLG, EFLG_RX0OVR | EFLG_RX1OVR, 0)
        if eflg & EFLG_TXBO:
            if self.state != STATE_BUS_OFF:
                self.bus_offs += 1
                self.state = STATE_BUS_OFF
                self.abort()  # the frames waiting are stale when the bus comes back
            return
        if eflg & (EFLG_TXEP | EFLG_RXEP):
            self.state = STATE_PASSIVE
        elif eflg & EFLG_EWARN:
            self.state = STATE_WARNING
        else:
            self.state = STATE_ACTIVE
        st = self.read_status()
        pending = st & 0x54  # TXREQ of TXB0/1/2
        if self._abat:
            if not pending:
                self.modify(_CANCTRL, _ABAT, 0)
                self._abat = False
            return
        if pending:
            t = self._tx_t
            to = self.tx_timeout_ms
            for i in range(3):
                if st & (0x04 << (2 * i)) and now_ms - t[i] > to:
                    self.aborts += 1
                    self.abort()
                    break
