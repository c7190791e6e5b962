"""Register-level emulator of a TI BQ76920/30/40 AFE (host only).

Built from shared/reference/bq769x0.md (datasheet facts), independent of the driver.

    emu = BQ769x0Emu(pack, variant="bq76920", address=0x08, crc=True, gain_uv=380,
                     offset_mv=30, shunt_uohm=1000, n_temps=None, cc_sign=1, seed=1)
    emu.tick(dt_ms)               # after pack.step(dt_ms, ...): timers, conversions, trips

Bus side (called by machine_api.I2C): ``i2c_write(reg, data)``, ``i2c_read(reg, buf)``,
``i2c_present()``; with CRC on, ``data`` is d0, crc0, d1, crc1, ... and reads return a CRC
after every data byte (CRC-8/0x07, init 0; first byte over addr byte + ..., later bytes
over the data byte alone). A bad write CRC raises OSError(EIO) and nothing is written; a
write that ends without its CRC byte is silently ignored. Absent chip (``lost``, shipped)
raises OSError(ENODEV). Every transaction works on a snapshot of the registers, so
HI/LO pairs read in one transaction are consistent; two transactions can straddle a
conversion.

Chip behaviour: reset values, W1C + latching SYS_STAT (ALERT = any bit: ``emu.alert``),
CC_READY every 250 ms with CC_EN, CC_ONESHOT, cell/BAT conversions every 250 ms while
ADC_EN (code = round((mV - offset) * 1000 / gain), optional noise), BAT = floor(sum/4)
over all channels, TS every 2 s (NTC beta model with 10 k pull-up to 3.3 V, or die
temperature with TEMP_SEL = 0), coulomb counter (8.44 uV LSB, +-32000, sign = cc_sign,
+ = charge with cc_sign=1; ``cc_offset_ma``/``cc_offset_lsb`` add a sense offset).
Protection: OV/UV on the 14-bit codes with PROTECT3 delays (only with ADC_EN; UV skips
cells below UVMINQUAL 0x0518; the delay timer restarts when the condition goes away);
OCD/SCD on the shunt voltage (RSNS, thresholds, delays; SCD trips whenever a step is
above its threshold); DELAY_DIS (trip at the next conversion); FET rules of DS Table
8-1 (the chip only ever clears CHG_ON/DSG_ON). CB bits drive the pack bleed
(``bal_cells``); adjacent bits in a group count as a violation (``violations``,
``violation_log``); CB cleared on XREADY and boot. SHIP: two-step sequence on SYS_CTRL1
(01 then 10, from 00); then registers reset and the chip is silent until ``boot()``.

Fault injection: inject_xready(), inject_ovrd_alert(), inject_crc_errors(n),
inject_nack(n), ``lost = True``, ``stale = True`` (ADC results freeze), pack.ts_fault,
power_on_reset(adc_on, keep_data) (registers back to their defaults while the MCU runs),
upset(reg, xor_mask) (bits of one register flip), ``tap_fault = (cell, mv, bad, n)`` (a cell
tap reads mv on `bad` of every `n` conversions).
Test hooks: ``trips`` (list of (t_ms, name), capped at 1000), ``trip_count`` (dict),
``violations``, ``writes``/``reads`` (transaction counters), ``nacks``, ``t_ms``.
"""

import errno
import math

from simlib.profile import Rng

SYS_STAT = 0x00
CELLBAL1 = 0x01
SYS_CTRL1 = 0x04
SYS_CTRL2 = 0x05
PROTECT1 = 0x06
PROTECT2 = 0x07
PROTECT3 = 0x08
OV_TRIP = 0x09
UV_TRIP = 0x0A
CC_CFG = 0x0B
VC1_HI = 0x0C
BAT_HI = 0x2A
TS1_HI = 0x2C
CC_HI = 0x32
ADCGAIN1 = 0x50
ADCOFFSET = 0x51
ADCGAIN2 = 0x59

ST_CC_READY = 0x80
ST_XREADY = 0x20
ST_OVRD = 0x10
ST_UV = 0x08
ST_OV = 0x04
ST_SCD = 0x02
ST_OCD = 0x01

CHG_ON = 0x01
DSG_ON = 0x02
CC_ONESHOT = 0x20
CC_EN = 0x40
DELAY_DIS = 0x80
ADC_EN = 0x10
TEMP_SEL = 0x08

UVMINQUAL = 0x0518

SCD_MV = ((22, 33, 44, 56, 67, 78, 89, 100), (44, 67, 89, 111, 133, 155, 178, 200))
SCD_DELAY_US = (70, 100, 200, 400)
OCD_MV = ((8, 11, 14, 17, 19, 22, 25, 28, 31, 33, 36, 39, 42, 44, 47, 50),
          (17, 22, 28, 33, 39, 44, 50, 56, 61, 67, 72, 78, 83, 89, 94, 100))
OCD_DELAY_MS = (8, 20, 40, 80, 160, 320, 640, 1280)
OV_DELAY_MS = (1000, 2000, 4000, 8000)
UV_DELAY_MS = (1000, 4000, 8000, 16000)

# variant: (channels, CELLBAL registers, TS inputs, ms from boot to first valid cell data)
VARIANTS = {
    "bq76920": (5, 1, 1, 250),
    "bq76930": (10, 2, 2, 400),
    "bq76940": (15, 3, 3, 800),
}

# channels carrying cells, in cell order (DS Tables 9-2 ... 9-4)
CELL_CHANNELS = {
    ("bq76920", 3): (1, 2, 5),
    ("bq76920", 4): (1, 2, 3, 5),
    ("bq76920", 5): (1, 2, 3, 4, 5),
    ("bq76930", 6): (1, 2, 5, 6, 7, 10),
    ("bq76930", 7): (1, 2, 3, 5, 6, 7, 10),
    ("bq76930", 8): (1, 2, 3, 5, 6, 7, 8, 10),
    ("bq76930", 9): (1, 2, 3, 4, 5, 6, 7, 8, 10),
    ("bq76930", 10): (1, 2, 3, 4, 5, 6, 7, 8, 9, 10),
    ("bq76940", 9): (1, 2, 5, 6, 7, 10, 11, 12, 15),
    ("bq76940", 10): (1, 2, 3, 5, 6, 7, 10, 11, 12, 15),
    ("bq76940", 11): (1, 2, 3, 5, 6, 7, 8, 10, 11, 12, 15),
    ("bq76940", 12): (1, 2, 3, 5, 6, 7, 8, 10, 11, 12, 13, 15),
    ("bq76940", 13): (1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15),
    ("bq76940", 14): (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15),
    ("bq76940", 15): tuple(range(1, 16)),
}

# writable bits per control register (everything else is read-only or absent)
_WMASK = {
    CELLBAL1: 0x1F, 0x02: 0x1F, 0x03: 0x1F,
    SYS_CTRL1: 0x1F, SYS_CTRL2: 0xFF, PROTECT1: 0xBF, PROTECT2: 0x7F, PROTECT3: 0xFF,
    OV_TRIP: 0xFF, UV_TRIP: 0xFF, CC_CFG: 0x3F,
}

_RESET = ((OV_TRIP, 0xAC), (UV_TRIP, 0x97))


def crc8(data, crc=0):
    """CRC-8, polynomial 0x07, MSB first, init 0 (CRC-8/SMBUS)."""
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _crc_table():
    t = bytearray(256)
    for i in range(256):
        t[i] = crc8((i,))
    return bytes(t)


CRC_TABLE = _crc_table()


def default_variant(cells):
    if cells <= 5:
        return "bq76920"
    if cells <= 10:
        return "bq76930"
    return "bq76940"


class BQ769x0Emu:
    def __init__(self, pack, variant=None, address=0x08, crc=True, gain_uv=380,
                 offset_mv=30, shunt_uohm=1000, n_temps=None, cc_sign=1, seed=1,
                 noise_mv=0.0, cc_offset_lsb=0, thermistor_beta=3435, die_rise_c=0.5,
                 adc_en_on_boot=False, bat_cells=None, delay_dis_all=True,
                 boot_on_start=True):
        if variant is None:
            variant = default_variant(pack.cells)
        if variant not in VARIANTS:
            raise ValueError("unknown variant %r" % variant)
        key = (variant, pack.cells)
        if key not in CELL_CHANNELS:
            raise ValueError("%s cannot take %d cells" % (variant, pack.cells))
        self.pack = pack
        self.variant = variant
        self.address = address
        self.crc = crc
        if not 365 <= gain_uv <= 396:
            raise ValueError("gain_uv must be 365..396")
        self.gain_uv = gain_uv
        self.offset_mv = offset_mv
        self.shunt_uohm = shunt_uohm
        self.n_channels, self.n_cellbal, n_ts, self.boot_wait_ms = VARIANTS[variant]
        self.n_temps = n_ts if n_temps is None else n_temps
        self.n_ts = n_ts
        self.cc_sign = cc_sign
        self.noise_mv = noise_mv
        self.cc_offset_lsb = cc_offset_lsb
        self.cc_offset_ma = 0  # current-sense offset (fault injection), mA
        self.beta = thermistor_beta
        self.die_rise_c = die_rise_c
        self.adc_en_on_boot = adc_en_on_boot
        self.bat_cells = bat_cells
        self.delay_dis_all = delay_dis_all
        self.rng = Rng(seed * 31 + 7)
        ch = CELL_CHANNELS[key]
        self.cell_channels = ch
        # cell index carried by each channel (1-based channel -> cell or -1)
        self._chan_cell = [-1] * (self.n_channels + 1)
        for cell, c in enumerate(ch):
            self._chan_cell[c] = cell
        self._codes = [0] * (self.n_channels + 1)  # latest 14-bit code per channel
        self.regs = bytearray(256)
        self.t_ms = 0
        self.lost = False
        self.stale = False
        self.shipped = True
        self.trips = []
        self.trip_count = {}
        self.violations = 0
        self.violation_log = []
        self.writes = 0
        self.reads = 0
        self.nacks = 0
        self.crc_errors_sent = 0
        self._nack_n = 0
        self._crc_err_n = 0
        self.bal_cells = 0
        # An intermittent cell tap (fault injection): (cell index, mV read instead, bad
        # conversions, out of every n conversions) or None.
        self.tap_fault = None
        self._tap_n = 0
        if boot_on_start:
            self.boot()

    # -- reset / boot / ship ---------------------------------------------------
    def _reset_regs(self):
        r = self.regs
        for i in range(256):
            r[i] = 0
        for a, v in _RESET:
            r[a] = v
        code = self.gain_uv - 365
        r[ADCGAIN1] = (code >> 3) << 2
        r[ADCGAIN2] = (code & 7) << 5
        r[ADCOFFSET] = self.offset_mv & 0xFF
        if self.adc_en_on_boot:
            r[SYS_CTRL1] = ADC_EN
        for i in range(len(self._codes)):
            self._codes[i] = 0
        self.bal_cells = 0
        self._ship_step = 0
        self._adc_phase = 0
        self._ts_phase = 0
        self._cc_phase = 0
        self._cc_acc = 0
        self._oneshot_rem = 0
        self._oneshot_acc = 0
        self._ts_first = True
        self._ov_ms = 0
        self._uv_ms = 0
        self._ocd_ms = 0
        self._ov_code = 0x2008 | (0xAC << 4)
        self._uv_code = 0x1000 | (0x97 << 4)
        self._decode_protect()
        self._valid_in_ms = self.boot_wait_ms

    def boot(self):
        """TS1 boot pulse: SHIP -> NORMAL with register defaults, CB bits clear. A chip that is
        already in NORMAL ignores it."""
        if not self.shipped:
            return
        self.shipped = False
        self._reset_regs()

    def power_on_reset(self, adc_on=None, keep_data=True):
        """A reset of the chip while the MCU keeps running (a supply dip that does not reach
        SHIP): every control and protection register back at its default, SYS_STAT clear,
        CB bits off, FETs off. adc_on: whether the ADC comes back on by itself (the
        datasheet's ambiguity, bq769x0.md 2.3; None = the emulator's adc_en_on_boot).
        keep_data: the measurement registers keep their last values (frozen while the ADC
        stays off), else they read 0."""
        if self.shipped:
            return
        saved = bytes(self.regs[VC1_HI:CC_HI + 2])
        codes = list(self._codes)
        on_boot = self.adc_en_on_boot
        if adc_on is not None:
            self.adc_en_on_boot = adc_on
        self._reset_regs()
        self.adc_en_on_boot = on_boot
        if keep_data:
            self.regs[VC1_HI:CC_HI + 2] = saved
            self._codes[:] = codes
        self._valid_in_ms = 0
        self._record("POR")

    def upset(self, reg, xor_mask):
        """Flip bits of one register (a single-event upset): the chip acts on the new value."""
        self.regs[reg] ^= xor_mask & 0xFF
        if PROTECT1 <= reg <= UV_TRIP:
            self._decode_protect()
        if reg <= 0x03:
            self._update_bal()
        self._record("UPSET")

    def _enter_ship(self):
        self._reset_regs()
        self.shipped = True
        self._record("SHIP")

    @property
    def alert(self):
        """ALERT pin: OR of all SYS_STAT bits (False while shipped)."""
        return not self.shipped and self.regs[SYS_STAT] != 0

    @property
    def chg_on(self):
        return not self.shipped and bool(self.regs[SYS_CTRL2] & CHG_ON)

    @property
    def dsg_on(self):
        return not self.shipped and bool(self.regs[SYS_CTRL2] & DSG_ON)

    def _record(self, name):
        self.trip_count[name] = self.trip_count.get(name, 0) + 1
        if len(self.trips) < 1000:
            self.trips.append((self.t_ms, name))

    def _trip(self, bit, name, fets):
        r = self.regs
        new = not (r[SYS_STAT] & bit)
        r[SYS_STAT] |= bit
        r[SYS_CTRL2] &= ~fets & 0xFF
        if new:
            self._record(name)

    # -- fault injection ---------------------------------------------------------
    def inject_xready(self):
        if self.shipped:
            return
        self._trip(ST_XREADY, "XREADY", CHG_ON | DSG_ON)
        self._clear_cb()

    def inject_ovrd_alert(self):
        """External ALERT override; registered only while the chip drives ALERT low."""
        if self.shipped or self.regs[SYS_STAT]:
            return False
        self._trip(ST_OVRD, "OVRD_ALERT", CHG_ON | DSG_ON)
        return True

    def inject_crc_errors(self, n):
        """Corrupt one CRC byte in each of the next n read transactions."""
        self._crc_err_n = n

    def inject_nack(self, n):
        """NACK (OSError EIO) the next n transactions; writes among them are not applied."""
        self._nack_n = n

    def _clear_cb(self):
        r = self.regs
        r[CELLBAL1] = r[0x02] = r[0x03] = 0
        self.bal_cells = 0

    # -- protection decoding --------------------------------------------------------
    def _decode_protect(self):
        r = self.regs
        p1 = r[PROTECT1]
        p2 = r[PROTECT2]
        p3 = r[PROTECT3]
        rsns = 1 if p1 & 0x80 else 0
        scd_mv = SCD_MV[rsns][p1 & 7]
        ocd_mv = OCD_MV[rsns][p2 & 0x0F]
        # I (mA) = V (uV) * 1000 / R (uOhm)
        self.scd_ma = scd_mv * 1000000 // self.shunt_uohm
        self.ocd_ma = ocd_mv * 1000000 // self.shunt_uohm
        self.scd_delay_us = SCD_DELAY_US[(p1 >> 3) & 3]
        self.ocd_delay_ms = OCD_DELAY_MS[(p2 >> 4) & 7]
        self.ov_delay_ms = OV_DELAY_MS[(p3 >> 4) & 3]
        self.uv_delay_ms = UV_DELAY_MS[(p3 >> 6) & 3]
        self._ov_code = 0x2008 | (r[OV_TRIP] << 4)
        self._uv_code = 0x1000 | (r[UV_TRIP] << 4)

    def ov_threshold_mv(self):
        return self.gain_uv * self._ov_code / 1000.0 + self.offset_mv

    def uv_threshold_mv(self):
        return self.gain_uv * self._uv_code / 1000.0 + self.offset_mv

    # -- bus -----------------------------------------------------------------------------
    def i2c_present(self):
        return not (self.lost or self.shipped)

    def _bus_check(self):
        if self.lost or self.shipped:
            raise OSError(errno.ENODEV)
        if self._nack_n > 0:
            self._nack_n -= 1
            self.nacks += 1
            raise OSError(errno.EIO)

    def i2c_write(self, reg, data):
        """One write transaction: register address then data (with CRC bytes if CRC)."""
        self._bus_check()
        self.writes += 1
        if self.crc:
            n = len(data)
            if n < 2:
                return  # STOP before the CRC byte: the chip does not apply the write
            a = self.address << 1
            vals = []
            tab = CRC_TABLE
            for k in range(0, n - 1, 2):
                d = data[k]
                if k == 0:
                    c = tab[tab[tab[a] ^ (reg & 0xFF)] ^ d]
                else:
                    c = tab[d]
                if c != data[k + 1]:
                    self.nacks += 1
                    raise OSError(errno.EIO)
                vals.append(d)
            # a trailing data byte without CRC is not applied
        else:
            vals = data
        for k in range(len(vals)):
            self._write_reg((reg + k) & 0xFF, vals[k])

    def i2c_read(self, reg, buf):
        """One read transaction from reg into buf (data, CRC, data, CRC ... if CRC)."""
        self._bus_check()
        self.reads += 1
        r = self.regs
        n = len(buf)
        if not self.crc:
            for k in range(n):
                buf[k] = r[(reg + k) & 0xFF]
            return
        tab = CRC_TABLE
        first = tab[(self.address << 1) | 1]
        corrupt = self._crc_err_n > 0
        for k in range(0, n, 2):
            d = r[(reg + (k >> 1)) & 0xFF]
            buf[k] = d
            if k + 1 < n:
                c = tab[first ^ d] if k == 0 else tab[d]
                if corrupt:
                    c ^= 0x5A
                    corrupt = False
                    self._crc_err_n -= 1
                    self.crc_errors_sent += 1
                buf[k + 1] = c

    def _write_reg(self, a, v):
        r = self.regs
        if a == SYS_STAT:
            r[SYS_STAT] &= ~(v & 0xBF) & 0xFF
            return
        m = _WMASK.get(a)
        if m is None:
            return
        if a <= 0x03:
            if a > self.n_cellbal:
                return
            v &= 0x1F
            if v & (v >> 1):
                self.violations += 1
                if len(self.violation_log) < 1000:
                    self.violation_log.append((self.t_ms, a, v))
            r[a] = v
            self._update_bal()
            return
        if a == SYS_CTRL1:
            shut = v & 3
            if self._ship_step == 1 and shut == 2:
                self._enter_ship()
                return
            if shut == 1 and self._ship_step == 0:
                self._ship_step = 1
            elif shut == 0:
                self._ship_step = 0
            else:
                self._ship_step = -1
            r[a] = (r[a] & 0x80) | (v & m)
            return
        if a == SYS_CTRL2:
            old = r[a]
            v &= m
            if v & CC_ONESHOT:
                if not (v & CC_EN) and not (r[SYS_STAT] & ST_CC_READY) and \
                        not self._oneshot_rem:
                    self._oneshot_rem = 250
                    self._oneshot_acc = 0
                else:
                    v &= ~CC_ONESHOT
            if (v & CC_EN) and not (old & CC_EN):
                self._cc_phase = 0
                self._cc_acc = 0
            r[a] = v
            return
        r[a] = v & m
        if PROTECT1 <= a <= UV_TRIP:
            self._decode_protect()

    def _update_bal(self):
        r = self.regs
        mask = 0
        cc = self._chan_cell
        for g in range(self.n_cellbal):
            v = r[CELLBAL1 + g]
            for b in range(5):
                if v & (1 << b):
                    cell = cc[g * 5 + b + 1]
                    if cell >= 0:
                        mask |= 1 << cell
        self.bal_cells = mask

    # -- time ----------------------------------------------------------------------------
    def tick(self, dt_ms):
        """Advance the chip by dt_ms (<= 250) after pack.step(dt_ms, ...)."""
        self.t_ms += dt_ms
        if self.shipped:
            return
        r = self.regs
        i_ma = self.pack.current_ma
        i_cc = i_ma + self.cc_offset_ma
        ctrl2 = r[SYS_CTRL2]
        # OCD / SCD (discharge only, always active in NORMAL)
        d = -i_ma
        if d > self.ocd_ma:
            self._ocd_ms += dt_ms
            nodelay = (ctrl2 & DELAY_DIS) and self.delay_dis_all
            if d > self.scd_ma and dt_ms * 1000 > self.scd_delay_us:
                self._trip(ST_SCD, "SCD", DSG_ON)
            elif self._ocd_ms > self.ocd_delay_ms or (nodelay and self._ocd_ms >= 250):
                self._trip(ST_OCD, "OCD", DSG_ON)
                self._ocd_ms = 0
        else:
            self._ocd_ms = 0
        # coulomb counter
        if ctrl2 & CC_EN:
            self._cc_acc += i_cc * dt_ms
            self._cc_phase += dt_ms
            if self._cc_phase >= 250:
                self._cc_phase -= 250
                self._cc_done(self._cc_acc, 250)
                self._cc_acc = 0
        elif self._oneshot_rem:
            step = dt_ms if dt_ms < self._oneshot_rem else self._oneshot_rem
            self._oneshot_acc += i_cc * step
            self._oneshot_rem -= step
            if self._oneshot_rem <= 0:
                self._oneshot_rem = 0
                self._cc_done(self._oneshot_acc, 250)
                r[SYS_CTRL2] &= ~CC_ONESHOT & 0xFF
        # load detect (valid with CHG off)
        if not (r[SYS_CTRL2] & CHG_ON) and self.pack.load_present:
            r[SYS_CTRL1] |= 0x80
        else:
            r[SYS_CTRL1] &= 0x7F
        # ADC scheduler
        if self._valid_in_ms > 0:
            self._valid_in_ms -= dt_ms
            if self._valid_in_ms > 0:
                return
            self._adc_phase = 250  # first conversion right now
        if not (r[SYS_CTRL1] & ADC_EN):
            self._adc_phase = 0
            self._ts_phase = 0
            self._ts_first = True
            self._ov_ms = self._uv_ms = 0
            return
        self._adc_phase += dt_ms
        if self._adc_phase >= 250:
            self._adc_phase -= 250
            self._convert_cells()
            if self._ts_first:
                self._ts_first = False
                self._ts_phase = 0
                self._convert_ts()
        self._ts_phase += dt_ms
        if self._ts_phase >= 2000:
            self._ts_phase -= 2000
            self._convert_ts()

    def _cc_done(self, acc_ma_ms, window_ms):
        # V (uV) = I (mA) * R (uOhm) / 1000 ; code = V / 8.44 uV
        num = acc_ma_ms * self.shunt_uohm * self.cc_sign
        den = window_ms * 8440
        code = (2 * num + den) // (2 * den) + self.cc_offset_lsb
        if code > 32000:
            code = 32000
        elif code < -32000:
            code = -32000
        code &= 0xFFFF
        r = self.regs
        if not self.stale:
            r[CC_HI] = code >> 8
            r[CC_HI + 1] = code & 0xFF
        r[SYS_STAT] |= ST_CC_READY

    def _convert_cells(self):
        r = self.regs
        codes = self._codes
        if not self.stale:
            v_uv = self.pack.v_uv
            gain = self.gain_uv
            off_uv = self.offset_mv * 1000
            half = gain // 2
            noise = self.noise_mv
            rng = self.rng
            total = 0
            cc = self._chan_cell
            tap = self.tap_fault
            bad_cell = -1
            if tap is not None:
                self._tap_n += 1
                if self._tap_n % tap[3] < tap[2]:
                    bad_cell = tap[0]
            for ch in range(1, self.n_channels + 1):
                cell = cc[ch]
                if cell >= 0 and cell == bad_cell:
                    v = tap[1] * 1000 - off_uv
                    code = (v + half) // gain
                elif cell >= 0:
                    v = v_uv[cell] - off_uv
                    if noise:
                        v += int(rng.gauss() * noise * 1000.0)
                    code = (v + half) // gain
                else:
                    code = 0
                if code < 0:
                    code = 0
                elif code > 0x3FFF:
                    code = 0x3FFF
                codes[ch] = code
                total += code
                a = VC1_HI + 2 * (ch - 1)
                r[a] = code >> 8
                r[a + 1] = code & 0xFF
            bat = total >> 2
            r[BAT_HI] = (bat >> 8) & 0xFF
            r[BAT_HI + 1] = bat & 0xFF
        # OV / UV on the codes (also on frozen codes while stale)
        ovc = self._ov_code
        uvc = self._uv_code
        ov = uv = False
        cc = self._chan_cell
        for ch in range(1, self.n_channels + 1):
            code = codes[ch]
            if code >= ovc:
                ov = True
            if UVMINQUAL <= code <= uvc:
                uv = True
        nodelay = r[SYS_CTRL2] & DELAY_DIS
        # once the delay has run out, a persisting condition re-trips at every conversion
        # (clearing a FET the host rewrote); the timer restarts when the condition goes
        if ov:
            if self._ov_ms < self.ov_delay_ms:
                self._ov_ms += 250
            if nodelay or self._ov_ms >= self.ov_delay_ms:
                self._trip(ST_OV, "OV", CHG_ON)
        else:
            self._ov_ms = 0
        if uv:
            if self._uv_ms < self.uv_delay_ms:
                self._uv_ms += 250
            if nodelay or self._uv_ms >= self.uv_delay_ms:
                self._trip(ST_UV, "UV", DSG_ON)
        else:
            self._uv_ms = 0

    def _convert_ts(self):
        if self.stale:
            return
        r = self.regs
        p = self.pack
        ext = r[SYS_CTRL1] & TEMP_SEL
        for j in range(self.n_ts):
            if ext:
                f = p.ts_fault[j] if j < self.n_temps else "open"
                if p.thermistor_open:
                    f = "open"
                elif p.thermistor_short:
                    f = "short"
                if f == "open":
                    code = 8639  # 3.3 V / 382 uV
                elif f == "short":
                    code = 0
                else:
                    t = p.temp_c + p.ts_offset_c[j] + 273.15
                    rr = 10000.0 * math.exp(self.beta * (1.0 / t - 1.0 / 298.15))
                    code = int(3.3 * rr / (10000.0 + rr) / 382e-6 + 0.5)
            else:
                t = p.temp_c + self.die_rise_c
                code = int((1.2 - 0.0042 * (t - 25.0)) / 382e-6 + 0.5)
            if code < 0:
                code = 0
            elif code > 0x3FFF:
                code = 0x3FFF
            a = TS1_HI + 2 * j
            r[a] = code >> 8
            r[a + 1] = code & 0xFF

    # -- convenience for tests ---------------------------------------------------------------
    def reg(self, a):
        return self.regs[a]

    def cell_code(self, channel):
        return self._codes[channel]
