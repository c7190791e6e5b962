# fake_bq: a minimal BQ769x0 register map behind the machine.I2C API, for the driver tests.
#
# Independent of the driver and of tools/simlib: its own bit-serial CRC, its own register
# rules (W1C SYS_STAT, masks, ship state machine), fault injection (NACK, corrupt CRC) and an
# optional transaction log. readfrom_mem_into/writeto_mem allocate nothing while log is None,
# so the driver can be heap-locked around a read cycle.


def crc_bits(crc, byte):
    """One byte of CRC-8/0x07, bit by bit (independent of the driver's table)."""
    crc ^= byte
    for _ in range(8):
        if crc & 0x80:
            crc = ((crc << 1) ^ 0x07) & 0xFF
        else:
            crc = (crc << 1) & 0xFF
    return crc


def _evens(buf):
    # (a separate function: a comprehension inside writeto_mem would turn buf into a closure
    # cell, which MicroPython allocates on every call)
    return bytes([buf[2 * i] for i in range(len(buf) // 2)])


class FakeBQ:
    def __init__(self, address=0x08, crc=True, gain_uv=382, offset_mv=0, junk=True):
        self.address = address
        self.crc = crc
        self.regs = bytearray(0x60)
        self.log = None  # a list to record ("r", reg, nbytes) / ("w", reg, bytes(data))
        self.nack_reads = 0  # next N reads raise OSError
        self.nack_writes = 0  # next N writes raise OSError
        self.corrupt_reads = 0  # next N reads get a wrong last CRC byte
        self.bad_crc_writes = 0  # writes refused for a wrong CRC
        self.reserved_violations = 0  # writes with a reserved bit set
        self.shipped = False
        self._ship_step = 0
        self.junk = junk  # set reserved bits of read-only data registers (drivers mask them)
        self.reset()
        self.set_gain(gain_uv, offset_mv)

    def reset(self):
        r = self.regs
        for i in range(len(r)):
            r[i] = 0
        r[0x09] = 0xAC
        r[0x0A] = 0x97
        self.shipped = False
        self._ship_step = 0

    def power_on_reset(self, adc_on=False, keep_data=True):
        """The chip resets while the MCU keeps running: the control and protection registers
        (0x00..0x0B) are back at their datasheet defaults (OV_TRIP 0xAC, UV_TRIP 0x97, the
        rest 0; SYS_CTRL1 = ADC_EN if adc_on, the DS ambiguity of bq769x0.md 2.3). The
        factory trim (0x50..0x59) stays; the measurement registers keep their last values
        (frozen: this fake has no ADC) unless keep_data is False."""
        r = self.regs
        for a in range(0x0C):
            r[a] = 0
        r[0x09] = 0xAC
        r[0x0A] = 0x97
        if adc_on:
            r[0x04] = 0x10
        if not keep_data:
            for a in range(0x0C, 0x34):
                r[a] = 0
        self._ship_step = 0

    # ------------------------------------------------------------ test helpers

    def trip(self, bits):
        """The chip latches SYS_STAT bits and does what DS Table 8-1 says: OV, XREADY and
        OVRD_ALERT clear CHG_ON; UV, OCD, SCD, XREADY and OVRD_ALERT clear DSG_ON; XREADY
        also clears every CB bit."""
        r = self.regs
        r[0] |= bits
        if bits & 0x34:
            r[5] &= ~0x01 & 0xFF
        if bits & 0x3B:
            r[5] &= ~0x02 & 0xFF
        if bits & 0x20:
            r[1] = r[2] = r[3] = 0

    def set_gain(self, gain_uv, offset_mv):
        code = gain_uv - 365
        j = 0xF3 if self.junk else 0
        self.regs[0x50] = j | ((code >> 3) << 2)
        self.regs[0x59] = (0x1F if self.junk else 0) | ((code & 7) << 5)
        self.regs[0x51] = offset_mv & 0xFF
        self.gain_uv = gain_uv
        self.offset_mv = offset_mv

    def set_adc(self, reg, code, bits14=True):
        hi = (code >> 8) & 0xFF
        if bits14 and self.junk:
            hi |= 0xC0
        self.regs[reg] = hi
        self.regs[reg + 1] = code & 0xFF

    def set_cell_adc(self, ch, code):
        """ch: 1-based VC channel."""
        self.set_adc(0x0C + 2 * (ch - 1), code)

    def mv_to_adc(self, mv):
        return ((mv - self.offset_mv) * 1000 + self.gain_uv // 2) // self.gain_uv

    def set_cell_mv(self, ch, mv):
        self.set_cell_adc(ch, self.mv_to_adc(mv))

    def set_bat(self, code):
        self.set_adc(0x2A, code, False)

    def set_ts(self, i, code):
        """i: 1-based TS input."""
        self.set_adc(0x2C + 2 * (i - 1), code)

    def set_cc(self, raw, ready=True):
        self.set_adc(0x32, raw & 0xFFFF, False)
        if ready:
            self.regs[0] |= 0x80

    def stat(self):
        return self.regs[0]

    # ------------------------------------------------------------ register semantics

    def _store(self, reg, v):
        r = self.regs
        if reg == 0x00:
            # W1C: a 1 in reserved b6 cannot set anything (TI's example clears with 0xFF),
            # so it is not counted as a violation.
            r[0] &= ~v & 0xFF
        elif 0x01 <= reg <= 0x03:
            if v & 0xE0:
                self.reserved_violations += 1
            r[reg] = v & 0x1F
        elif reg == 0x04:
            if v & 0x64:
                self.reserved_violations += 1
            shut = v & 0x03
            if shut == 0:
                self._ship_step = 1
            elif shut == 1 and self._ship_step == 1:
                self._ship_step = 2
            elif shut == 2 and self._ship_step == 2:
                self.shipped = True
                self._ship_step = 0
            else:
                self._ship_step = 0
            r[4] = (r[4] & 0x80) | (v & 0x1B)
        elif reg == 0x05:
            if v & 0x1C:
                self.reserved_violations += 1
            r[5] = v & 0xE3
        elif reg == 0x06:
            if v & 0x20:
                self.reserved_violations += 1
            r[6] = (r[6] & 0x40) | (v & 0x9F)
        elif reg == 0x07:
            r[7] = (r[7] & 0x80) | (v & 0x7F)
        elif reg == 0x08:
            if v & 0x0F:
                self.reserved_violations += 1
            r[8] = v & 0xF0
        elif reg in (0x09, 0x0A):
            r[reg] = v
        elif reg == 0x0B:
            if v & 0xC0:
                self.reserved_violations += 1
            r[0x0B] = v & 0x3F
        # everything else is read-only

    # ------------------------------------------------------------ machine.I2C API

    def readfrom_mem_into(self, addr, memaddr, buf):
        if addr != self.address or self.shipped:
            raise OSError(19)
        if self.log is not None:
            self.log.append(("r", memaddr, len(buf)))
        if self.nack_reads:
            self.nack_reads -= 1
            raise OSError(5)
        n = len(buf)
        r = self.regs
        if self.crc:
            c = crc_bits(0, (addr << 1) | 1)
            for i in range(n // 2):
                d = r[(memaddr + i) % len(r)]
                c = crc_bits(c, d)
                buf[2 * i] = d
                buf[2 * i + 1] = c
                c = 0
            if self.corrupt_reads:
                self.corrupt_reads -= 1
                buf[n - 1] ^= 0x5A
        else:
            for i in range(n):
                buf[i] = r[(memaddr + i) % len(r)]

    def readfrom_mem(self, addr, memaddr, n):
        b = bytearray(n)
        self.readfrom_mem_into(addr, memaddr, b)
        return bytes(b)

    def writeto_mem(self, addr, memaddr, buf):
        if addr != self.address or self.shipped:
            raise OSError(19)
        if self.nack_writes:
            self.nack_writes -= 1
            if self.log is not None:
                self.log.append(("w!", memaddr, bytes(buf)))
            raise OSError(5)
        n = len(buf)
        if self.crc:
            if n == 1:
                return  # STOP before the CRC byte: nothing to NACK, the write is not applied
            if n % 2:
                raise OSError(5)
            c = crc_bits(crc_bits(crc_bits(0, addr << 1), memaddr), buf[0])
            if c != buf[1]:
                self.bad_crc_writes += 1
                raise OSError(5)  # NACK on the CRC byte, write not applied
            for i in range(1, n // 2):
                if crc_bits(0, buf[2 * i]) != buf[2 * i + 1]:
                    self.bad_crc_writes += 1
                    raise OSError(5)
            for i in range(n // 2):
                self._store(memaddr + i, buf[2 * i])
            if self.log is not None:
                self.log.append(("w", memaddr, _evens(buf)))
        else:
            for i in range(n):
                self._store(memaddr + i, buf[i])
            if self.log is not None:
                self.log.append(("w", memaddr, bytes(buf)))

    # ------------------------------------------------------------ log helpers

    def writes(self, reg=None):
        """Data written (list of bytes objects), optionally to one register only."""
        return [e[2] for e in self.log if e[0] == "w" and (reg is None or e[1] == reg)]

    def reads(self):
        return [(e[1], e[2]) for e in self.log if e[0] == "r"]
