# indep_bq76940: an independent, datasheet-level model of a TI BQ769x0 (written for the
# BQ76940, usable for 9-15 cells and also for the '20/'30 input maps) and the machine.I2C
# bus in front of it. Helper module for the host tests (not collected: no test_ prefix).
#
# Written from ../shared/reference/bq769x0.md (the datasheet facts; "REF §x" below) and
# the project's README only -- never from firmware/bms/bq769x0.py or tools/simlib/afe_emu.py,
# so the tests built on it do not share the driver's assumptions.
#
# What the model does (REF section in brackets):
#   * I2C at 0x08 with or without CRC-8/0x07 [1.3, 1.4]: a bad write CRC NACKs (OSError) and
#     that byte is not applied; a read clocks data/CRC pairs; auto-increment both ways.
#   * register map and reset values [2.1]; SYS_STAT write-1-to-clear [2.2]; CC_CFG, PROTECT1-3,
#     OV_TRIP/UV_TRIP [2.5, 4, 5]; factory ADCGAIN1/2 and ADCOFFSET [3.1].
#   * conversions on a 250 ms tick: cells and BAT only while ADC_EN [3.2, 3.3, 7.1]; the
#     thermistors (TEMP_SEL=1) or the die (TEMP_SEL=0) every 2 s (8 ticks) [3.5, 3.6]; the
#     coulomb counter every tick while CC_EN, or once after CC_ONESHOT [2.4, 3.4].
#   * hardware OV/UV with the PROTECT3 delays only while ADC_EN, UV ignoring cells below
#     UVMINQUAL [4, 5.3]; OCD/SCD on the shunt voltage [5.1, 5.2]; the FET rules [5.5]: the
#     device only ever clears CHG_ON/DSG_ON; XREADY and the ALERT override [8.3, 8.4];
#     ship-mode two-step [8.2].
#   * fault injection: power-on reset (ADC on or off after the wake-up, REF 2.3 [AMBIGUOUS];
#     result registers zeroed or left as they were), single-bit register upsets, NACKs,
#     corrupted read bytes, a cell tap reading a fixed wrong voltage on chosen conversions,
#     thermistor open/short, a stalled converter (results frozen, no CC_READY), XREADY.
#
# Bookkeeping for the judges: every tick and every bus transaction advances `seq`; each
# result register remembers the seq of the conversion that produced it and whether that
# conversion was sound (no tap fault, no thermistor fault, thermistor mode); each register
# remembers its last read (seq, clean or not, and what the content was at that moment).
import math

# Registers [REF 2.1]
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
NREGS = 0x60

# SYS_STAT bits
ST_CC_READY = 0x80
ST_XREADY = 0x20
ST_OVRD = 0x10
ST_UV = 0x08
ST_OV = 0x04
ST_SCD = 0x02
ST_OCD = 0x01
# SYS_CTRL1 / SYS_CTRL2 bits
C1_ADC_EN = 0x10
C1_TEMP_SEL = 0x08
C2_DELAY_DIS = 0x80
C2_CC_EN = 0x40
C2_CC_ONESHOT = 0x20
C2_DSG_ON = 0x02
C2_CHG_ON = 0x01

RESET_VALUES = {OV_TRIP: 0xAC, UV_TRIP: 0x97}  # every other control register resets to 0
UVMINQUAL = 0x0518  # [REF 4]
CC_MAX = 32000  # [REF 3.4, INFERRED saturation]

# Cell input maps [REF 6]: channels (1-based) carrying cells, in cell order.
_MAPS = {
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
    ("bq76940", 15): (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
}
_CHANNELS = {"bq76920": 5, "bq76930": 10, "bq76940": 15}

# Delay tables [REF 5.2, 5.3] and thresholds [REF 5.1, 5.2] (mV, RSNS=0 / RSNS=1)
OV_DELAY_MS = (1000, 2000, 4000, 8000)
UV_DELAY_MS = (1000, 4000, 8000, 16000)
OCD_DELAY_MS = (8, 20, 40, 80, 160, 320, 640, 1280)
SCD_DELAY_US = (70, 100, 200, 400)
SCD_MV = ((22, 33, 44, 56, 67, 78, 89, 100), (44, 67, 89, 111, 133, 155, 178, 200))
OCD_MV = ((8, 11, 14, 17, 19, 22, 25, 28, 31, 33, 36, 39, 42, 44, 47, 50),
          (17, 22, 28, 33, 39, 44, 50, 56, 61, 67, 72, 78, 83, 89, 94, 100))

BAD_FAULT = 1
BAD_DIE = 2
BAD_SETTLE = 3


def cell_map(variant, cells):
    key = (variant, cells)
    if key not in _MAPS:
        raise ValueError("%s cannot carry %d cells" % (variant, cells))
    return _MAPS[key]


def crc8(data, crc=0):
    """CRC-8, polynomial 0x07, init 0, MSB first, no reflection, no final XOR [REF 1.4]."""
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def ov_trip_mv(reg, gain_uv, offset_mv):
    """Applied OV threshold (mV, float) of an OV_TRIP value [REF 4]."""
    return gain_uv * (0x2008 | (reg << 4)) / 1000 + offset_mv


def uv_trip_mv(reg, gain_uv, offset_mv):
    return gain_uv * (0x1000 | (reg << 4)) / 1000 + offset_mv


def thermistor_code(temp_c, beta, state=0):
    """TSx code of a 10 k NTC on the internal 10 k pull-up to 3.3 V [REF 3.5]; state 1 = open
    (the pin floats to the pull-up), 2 = short to VSS."""
    if state == 1:
        return min(16383, int(3.3 / 382e-6 + 0.5))
    if state == 2:
        return 0
    r = 10000.0 * math.exp(beta * (1.0 / (temp_c + 273.15) - 1.0 / 298.15))
    return int(3.3 * r / (10000.0 + r) / 382e-6 + 0.5)


def die_code(temp_c):
    """TSx code with TEMP_SEL=0: V = 1.200 - 0.0042 * (T - 25) [REF 3.6]."""
    return int((1.200 - 0.0042 * (temp_c - 25.0)) / 382e-6 + 0.5)


class Bq769x0Model:
    """Register-level BQ769x0. Drive it with set_inputs() and tick(now_ms) every 250 ms."""

    def __init__(self, cells=15, variant="bq76940", address=0x08, crc=True, gain_uv=380,
                 offset_mv=0, shunt_uohm=500, beta=3435, ts_phase=0, n_ts=None,
                 adc_on_at_boot=False, cc_sign=1):
        if not 365 <= gain_uv <= 396:
            raise ValueError("GAIN is 365..396 uV")
        if not -128 <= offset_mv <= 127:
            raise ValueError("OFFSET is a signed byte")
        self.variant = variant
        self.cells = cells
        self.channels = cell_map(variant, cells)
        self.nch = _CHANNELS[variant]
        self.n_ts = n_ts if n_ts is not None else {"bq76920": 1, "bq76930": 2}.get(variant, 3)
        self.address = address
        self.crc = crc
        self.gain_uv = gain_uv
        self.offset_mv = offset_mv
        self.shunt_uohm = shunt_uohm
        self.beta = beta
        self.ts_phase = ts_phase % 8
        self.cc_sign = cc_sign
        self.regs = bytearray(NREGS)
        # factory trim [REF 3.1]: code = GAIN - 365; 0x50 b3:2 = code b4:3; 0x59 b7:5 = b2:0
        code = gain_uv - 365
        self.regs[ADCGAIN1] = (code >> 3) << 2
        self.regs[ADCGAIN2] = (code & 7) << 5
        self.regs[ADCOFFSET] = offset_mv & 0xFF
        # physical inputs
        self.cell_mv = [3300] * cells
        self.current_ma = 0
        self.temps_c = [25.0] * 3
        self.die_c = 35.0
        # bookkeeping
        self.seq = 0
        self.t_ms = 0
        n = NREGS
        self.conv_seq = [0] * n  # seq of the conversion that wrote this result register
        self.conv_t = [0] * n  # chip time (ms) of that conversion
        # why that conversion is unsound: 0 sound, BAD_FAULT tap or thermistor fault,
        # BAD_DIE die temperature in a TS register, BAD_SETTLE zeros right after a wake-up
        self.conv_bad = bytearray(n)
        self.read_seq = [0] * n  # last read of this register
        self.read_clean = bytearray(n)  # 1: that read delivered the true register content
        self.read_conv_seq = [0] * n  # conv_seq of the content delivered by that read
        self.read_conv_t = [0] * n
        self.read_bad = bytearray(n)  # conv_bad of the content delivered by that read
        self.read_ok_seq = [0] * n  # seq of the last clean read
        self.last_bad_cell_read_t = -10 ** 9  # a clean read delivered a faulted cell reading
        self.last_bad_ts_read_t = -10 ** 9  # ... a faulted thermistor reading
        self.last_tap_fault_t = -10 ** 9  # a tap fault was present at a tick
        self.last_ts_fault_t = -10 ** 9  # a thermistor fault was present at a tick
        self.last_cfg_change_seq = 0  # a config register changed value (write, upset, reset)
        self.last_reset_seq = 0
        self.chg_rises = 0  # host writes that set CHG_ON from 0 (counted until taken)
        self.dsg_rises = 0
        self.fet_write_failed = False  # the last attempted write covering SYS_CTRL2 failed
        self.tx_total = 0
        self.tx_failed = 0
        self.violations = []  # protocol violations by the host (reserved bits, adjacency...)
        self.shipped = False
        # fault injection state
        self.nack_prob = 0  # per transaction, in 1/65536
        self.corrupt_prob = 0  # per read transaction, in 1/65536
        self.dead = False  # every transaction NACKs (bus or chip gone)
        self.rng = None  # object with .below(n) when nack/corrupt probabilities are used
        self.tap_cell = -1  # 0-based cell whose tap reads tap_mv on chosen conversions
        self.tap_mv = 0
        self.tap_pattern = 0  # tap fault on conversions where (conv_count % 5) < tap_pattern
        self.tap_phase = 0
        self.ts_fault = [0, 0, 0]  # 0 ok, 1 open, 2 short
        self.stalled = False  # converter stuck: no results, no CC_READY (ADC_EN still reads 1)
        self.xready_until = -1
        self.alert_forced = False
        self.settle_ticks = 0  # after a wake-up: cell results not valid yet [REF 7.1 note]
        # internal state
        self._ship_step = 0
        self._oneshot = False
        self._ov_ms = 0
        self._uv_ms = 0
        self._ocd_ms = 0
        self._conv_count = 0
        self._tick_no = 0
        self._codes = [0] * 16
        self.protect_after_tx = 0  # 0: comparators decide at the tick; n: after n transactions
        self.stat_seen = 0  # SYS_STAT as the host last read it, minus the bits it cleared since
        self._protect_pending = False
        self._tx_in_cycle = 0
        self.power_on(adc_on_at_boot, keep_results=False)

    # ---------------------------------------------------------------- configuration
    def gain_offset(self):
        return self.gain_uv, self.offset_mv

    def set_inputs(self, cell_mv, current_ma, temps_c, die_c=None):
        self.cell_mv = cell_mv
        self.current_ma = current_ma
        self.temps_c = temps_c
        if die_c is not None:
            self.die_c = die_c

    # ---------------------------------------------------------------- fault injection
    def power_on(self, adc_on=False, keep_results=False):
        """POR followed by a wake-up into NORMAL: every control register at its reset value
        [REF 2.1, 8.1]. adc_on: the [AMBIGUOUS] auto-set of ADC_EN on entering NORMAL.
        keep_results: the result registers keep their old content instead of 0."""
        r = self.regs
        for a in range(VC1_HI):
            r[a] = RESET_VALUES.get(a, 0)
        if adc_on:
            r[SYS_CTRL1] = C1_ADC_EN
        if not keep_results:
            for a in range(VC1_HI, CC_HI + 2):
                r[a] = 0
        self.seq += 1
        self.last_reset_seq = self.seq
        self.last_cfg_change_seq = self.seq
        self._ship_step = 0
        self._oneshot = False
        self._ov_ms = self._uv_ms = self._ocd_ms = 0
        self.settle_ticks = 3  # '40: 800 ms before cell data can be trusted
        self.shipped = False
        self._protect_pending = False
        self.stat_seen = 0
        self.xready_until = -1

    def upset(self, reg, bit):
        """A single-bit flip in a control register (radiation, ESD, brown-out of one latch)."""
        self.regs[reg] ^= 1 << bit
        self.seq += 1
        self.last_cfg_change_seq = self.seq

    def xready(self, now_ms, duration_ms):
        """DEVICE_XREADY held for duration_ms: FETs and CB bits cleared [REF 8.3]."""
        self.xready_until = now_ms + duration_ms
        self._xready()

    def _xready(self):
        r = self.regs
        r[SYS_STAT] |= ST_XREADY
        r[SYS_CTRL2] &= ~(C2_CHG_ON | C2_DSG_ON) & 0xFF
        r[CELLBAL1] = r[CELLBAL1 + 1] = r[CELLBAL1 + 2] = 0

    def set_alert_override(self, on):
        """The host drives ALERT high: OVRD_ALERT + both FETs off, but only while the AFE
        itself drives ALERT low, i.e. no SYS_STAT bit is set [REF 8.4]."""
        self.alert_forced = bool(on)
        self._alert_check()

    def _alert_check(self):
        if self.alert_forced and self.regs[SYS_STAT] == 0 and not self.shipped:
            self.regs[SYS_STAT] |= ST_OVRD
            self.regs[SYS_CTRL2] &= ~(C2_CHG_ON | C2_DSG_ON) & 0xFF

    # ---------------------------------------------------------------- state helpers
    def fets(self):
        v = self.regs[SYS_CTRL2]
        return (v & C2_CHG_ON) != 0, (v & C2_DSG_ON) != 0

    def take_rises(self):
        c, d = self.chg_rises, self.dsg_rises
        self.chg_rises = self.dsg_rises = 0
        return c, d

    def reg_dump(self):
        r = self.regs
        return ("SYS_STAT=%02X CTRL1=%02X CTRL2=%02X P1=%02X P2=%02X P3=%02X OV=%02X UV=%02X "
                "CC_CFG=%02X CB=%02X/%02X/%02X" % (
                    r[0], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[1], r[2], r[3]))

    # ---------------------------------------------------------------- conversions
    def _cell_code(self, mv):
        # V = GAIN * ADC / 1000 + OFFSET  [REF 3.2]  ->  ADC = round((V - OFFSET) * 1000 / GAIN)
        num = (mv - self.offset_mv) * 1000
        code = (2 * num + self.gain_uv) // (2 * self.gain_uv)
        return 0 if code < 0 else (16383 if code > 16383 else code)

    def tick(self, now_ms):
        """One 250 ms period of the chip's own scheduler ending at now_ms [REF 7.1]."""
        self.seq += 1
        self.t_ms = now_ms
        self._tick_no += 1
        if self.tap_cell >= 0 and self.tap_pattern:
            self.last_tap_fault_t = now_ms
        if self.ts_fault[0] or self.ts_fault[1] or self.ts_fault[2]:
            self.last_ts_fault_t = now_ms
        if self.shipped:
            return
        r = self.regs
        if now_ms < self.xready_until:
            self._xready()
        c2 = r[SYS_CTRL2]
        if not self.stalled and (c2 & C2_CC_EN or self._oneshot):
            cc = self.cc_sign * self.current_ma * self.shunt_uohm
            cc = (2 * cc + 8440) // 16880 if cc >= 0 else -((-2 * cc + 8440) // 16880)
            cc = max(-CC_MAX, min(CC_MAX, cc)) & 0xFFFF
            r[CC_HI] = cc >> 8
            r[CC_HI + 1] = cc & 0xFF
            self.conv_seq[CC_HI] = self.conv_seq[CC_HI + 1] = self.seq
            self.conv_t[CC_HI] = self.conv_t[CC_HI + 1] = now_ms
            r[SYS_STAT] |= ST_CC_READY
            if self._oneshot:
                self._oneshot = False
                r[SYS_CTRL2] &= ~C2_CC_ONESHOT & 0xFF
        if r[SYS_CTRL1] & C1_ADC_EN and not self.stalled:
            self._convert_cells()
            if (self._tick_no - self.ts_phase) % 8 == 0:
                self._convert_temps()
        self._tx_in_cycle = 0
        if self.protect_after_tx > 0:
            # the comparators decide while the host is on the bus: after that many
            # transactions of the coming cycle (their timeline is not the host's)
            self._protect_pending = True
        else:
            self._protect()
        self._alert_check()

    def _bus_clock(self):
        self._tx_in_cycle += 1
        if self._protect_pending and self._tx_in_cycle > self.protect_after_tx:
            self.flush_protect()

    def flush_protect(self):
        """Run a protection decision still pending from this period (end of the cycle)."""
        if self._protect_pending:
            self._protect_pending = False
            if not self.shipped:
                self._protect()
                self._alert_check()

    def _convert_cells(self):
        r = self.regs
        settling = self.settle_ticks > 0
        if settling:
            self.settle_ticks -= 1
        k = self._conv_count
        self._conv_count += 1
        codes = [0] * 16
        bad_cells = bytearray(16)
        for i in range(self.cells):
            ch = self.channels[i]
            mv = self.cell_mv[i]
            if i == self.tap_cell and (k + self.tap_phase) % 5 < self.tap_pattern:
                mv = self.tap_mv
                bad_cells[ch] = BAD_FAULT
            codes[ch] = 0 if settling else self._cell_code(mv)
            if settling:
                bad_cells[ch] = BAD_SETTLE
        # unused (shorted) inputs read ~0 V: code of 0 mV
        z = 0 if settling else self._cell_code(0)
        total = 0
        seq = self.seq
        t = self.t_ms
        for ch in range(1, self.nch + 1):
            if ch not in self.channels:
                codes[ch] = z
            c = codes[ch]
            total += c
            a = VC1_HI + 2 * (ch - 1)
            r[a] = c >> 8
            r[a + 1] = c & 0xFF
            self.conv_seq[a] = self.conv_seq[a + 1] = seq
            self.conv_t[a] = self.conv_t[a + 1] = t
            self.conv_bad[a] = self.conv_bad[a + 1] = bad_cells[ch]
        bat = total // 4  # [REF 3.3, INFERRED floor]
        r[BAT_HI] = (bat >> 8) & 0xFF
        r[BAT_HI + 1] = bat & 0xFF
        self.conv_seq[BAT_HI] = self.conv_seq[BAT_HI + 1] = seq
        self.conv_t[BAT_HI] = self.conv_t[BAT_HI + 1] = t
        self.conv_bad[BAT_HI] = self.conv_bad[BAT_HI + 1] = BAD_SETTLE if settling else 0
        self._codes = codes

    def _convert_temps(self):
        r = self.regs
        ext = r[SYS_CTRL1] & C1_TEMP_SEL
        seq = self.seq
        for i in range(self.n_ts):
            if ext:
                c = thermistor_code(self.temps_c[i], self.beta, self.ts_fault[i])
                bad = BAD_FAULT if self.ts_fault[i] else 0
            else:
                c = die_code(self.die_c + 0.5 * i)
                bad = BAD_DIE  # a die reading is never a valid thermistor reading
            a = TS1_HI + 2 * i
            r[a] = c >> 8
            r[a + 1] = c & 0xFF
            self.conv_seq[a] = self.conv_seq[a + 1] = seq
            self.conv_t[a] = self.conv_t[a + 1] = self.t_ms
            self.conv_bad[a] = self.conv_bad[a + 1] = bad

    def _protect(self):
        r = self.regs
        c2 = r[SYS_CTRL2]
        dis = c2 & C2_DELAY_DIS
        p3 = r[PROTECT3]
        if r[SYS_CTRL1] & C1_ADC_EN and not self.stalled and self.settle_ticks == 0:
            codes = self._codes
            ov_code = 0x2008 | (r[OV_TRIP] << 4)
            uv_code = 0x1000 | (r[UV_TRIP] << 4)
            over = under = False
            for ch in range(1, self.nch + 1):
                c = codes[ch]
                if c > ov_code:
                    over = True
                if UVMINQUAL <= c < uv_code:
                    under = True
            self._ov_ms = self._ov_ms + 250 if over else 0
            self._uv_ms = self._uv_ms + 250 if under else 0
            if over and self._ov_ms >= (250 if dis else OV_DELAY_MS[(p3 >> 4) & 3]):
                r[SYS_STAT] |= ST_OV
                r[SYS_CTRL2] &= ~C2_CHG_ON & 0xFF
            if under and self._uv_ms >= (250 if dis else UV_DELAY_MS[(p3 >> 6) & 3]):
                r[SYS_STAT] |= ST_UV
                r[SYS_CTRL2] &= ~C2_DSG_ON & 0xFF
        else:
            self._ov_ms = self._uv_ms = 0
        # OCD / SCD: discharge only, always active in NORMAL [REF 5.1, 5.2]
        dsg_uv = -self.current_ma * self.shunt_uohm // 1000 if self.current_ma < 0 else 0
        p1, p2 = r[PROTECT1], r[PROTECT2]
        rsns = (p1 >> 7) & 1
        if dsg_uv >= SCD_MV[rsns][p1 & 7] * 1000:
            r[SYS_STAT] |= ST_SCD
            r[SYS_CTRL2] &= ~C2_DSG_ON & 0xFF
        if dsg_uv >= OCD_MV[rsns][p2 & 15] * 1000:
            self._ocd_ms += 250
            if dis or self._ocd_ms >= OCD_DELAY_MS[(p2 >> 4) & 7]:
                r[SYS_STAT] |= ST_OCD
                r[SYS_CTRL2] &= ~C2_DSG_ON & 0xFF
        else:
            self._ocd_ms = 0

    # ---------------------------------------------------------------- register writes
    def _violation(self, text):
        if len(self.violations) < 20:
            self.violations.append("t=%d %s" % (self.t_ms, text))

    def _write_reg(self, a, v):
        r = self.regs
        old = r[a] if a < NREGS else 0
        if a == SYS_STAT:
            r[a] &= ~v & 0xFF  # write 1 to clear [REF 2.2]
            self.stat_seen &= ~v & 0xFF
            self._alert_check()
            return
        if CELLBAL1 <= a <= CELLBAL1 + 2:
            if v & 0xE0:
                self._violation("CELLBAL%d reserved bits %02X" % (a, v))
            v &= 0x1F
            if v & (v >> 1):  # REF 7.2: no two adjacent cells of one group
                self._violation("CELLBAL%d adjacent cells %02X" % (a, v))
            grp = a - CELLBAL1
            for b in range(5):
                if v & (1 << b) and (5 * grp + b + 1) not in self.channels:
                    # a shorted input carries no cell (REF 6): a wrong cell-to-input map
                    self._violation("CELLBAL%d bit %d on an input without a cell" % (a, b))
            if 5 * grp >= self.nch and v:
                self._violation("CELLBAL%d does not exist on %s" % (a, self.variant))
            r[a] = v
            return
        if a == SYS_CTRL1:
            if v & 0x04:
                self._violation("SYS_CTRL1 reserved bit 2 written 1")
            shut = v & 3
            if shut == 1 and (old & 3) == 0:
                self._ship_step = 1
            elif shut == 2 and self._ship_step == 1:
                self._ship_step = 0
                self._violation("ship mode entered")
                r[SYS_CTRL2] &= ~(C2_CHG_ON | C2_DSG_ON) & 0xFF
                self.shipped = True
            else:
                self._ship_step = 0
            nv = (old & 0x80) | (v & 0x1F)
            if (nv ^ old) & 0x1C:
                self.last_cfg_change_seq = self.seq
            r[a] = nv
            return
        if a == SYS_CTRL2:
            if v & 0x1C:
                self._violation("SYS_CTRL2 reserved bits %02X" % v)
            v &= 0xE3
            if v & C2_CHG_ON and not old & C2_CHG_ON:
                self.chg_rises += 1
            if v & C2_DSG_ON and not old & C2_DSG_ON:
                self.dsg_rises += 1
            # recovery is: clear the SYS_STAT bit, then write the FET again [REF 5.5]. Judged
            # on bits the host had read and not cleared since (a trip landing between the
            # host's last read and this write is a race no host can see)
            st = r[SYS_STAT] & self.stat_seen
            if v & C2_CHG_ON and st & (ST_OV | ST_XREADY | ST_OVRD):
                self._violation("FET gate: CHG_ON written 1 while SYS_STAT=%02X reports the "
                                "trip that opened it" % st)
            if v & C2_DSG_ON and st & (ST_UV | ST_OCD | ST_SCD | ST_XREADY | ST_OVRD):
                self._violation("FET gate: DSG_ON written 1 while SYS_STAT=%02X reports the "
                                "trip that opened it" % st)
            if v & C2_CC_ONESHOT:
                if not v & C2_CC_EN and not r[SYS_STAT] & ST_CC_READY:
                    self._oneshot = True
                else:
                    v &= ~C2_CC_ONESHOT & 0xFF
            if (v ^ old) & 0xC0:
                self.last_cfg_change_seq = self.seq
            r[a] = v
            return
        if a == PROTECT1:
            if v & 0x20:
                self._violation("PROTECT1 reserved bit 5 written 1")
            v &= 0x9F
        elif a == PROTECT2:
            v &= 0x7F
        elif a == PROTECT3:
            if v & 0x0F:
                self._violation("PROTECT3 debug bits %02X" % v)
        elif a == CC_CFG:
            v &= 0x3F
        elif a in (OV_TRIP, UV_TRIP):
            pass
        else:
            self._violation("write to read-only/unknown register %02X" % a)
            return
        if v != old:
            self.last_cfg_change_seq = self.seq
        r[a] = v

    # ---------------------------------------------------------------- the bus side
    def _fail(self):
        """Injected NACK: True when this transaction fails."""
        if self.dead or self.shipped:
            return True
        if self.nack_prob and self.rng.below(65536) < self.nack_prob:
            return True
        return False

    def i2c_write(self, addr, reg, buf):
        self._bus_clock()
        self.seq += 1
        self.tx_total += 1
        covers_ctrl2 = reg <= SYS_CTRL2 < reg + max(1, len(buf) // (2 if self.crc else 1))
        if addr != self.address or self._fail():
            self.tx_failed += 1
            if covers_ctrl2:
                self.fet_write_failed = True
            raise OSError(5)  # EIO: NACK
        if not self.crc:
            for i in range(len(buf)):
                self._write_reg(reg + i, buf[i])
            if covers_ctrl2:
                self.fet_write_failed = False
            return
        n = len(buf)
        if n % 2:
            self._violation("CRC write of %d bytes to %02X: last data byte without CRC"
                            % (n, reg))
        for j in range(n // 2):
            d = buf[2 * j]
            if j == 0:
                want = crc8((addr << 1, reg, d))
            else:
                want = crc8((d,))
            if buf[2 * j + 1] != want:
                self.tx_failed += 1
                if covers_ctrl2:
                    self.fet_write_failed = True
                self._violation("bad write CRC at %02X" % (reg + j))
                raise OSError(5)  # the slave NACKs the CRC byte; this byte is not applied
            self._write_reg(reg + j, d)
        if covers_ctrl2:
            self.fet_write_failed = False

    def i2c_read(self, addr, reg, buf):
        self._bus_clock()
        self.seq += 1
        self.tx_total += 1
        n = len(buf)
        ndata = (n + 1) // 2 if self.crc else n
        if addr != self.address or self._fail():
            self.tx_failed += 1
            for i in range(ndata):
                a = reg + i
                if a < NREGS:
                    self.read_seq[a] = self.seq
                    self.read_clean[a] = 0
            raise OSError(5)
        corrupt = -1
        if self.corrupt_prob and self.rng.below(65536) < self.corrupt_prob:
            corrupt = self.rng.below(ndata)  # this data byte arrives with one bit flipped
        r = self.regs
        seq = self.seq
        for i in range(ndata):
            a = reg + i
            d = r[a] if a < NREGS else 0
            if a == SYS_CTRL1:
                d &= 0x7F  # LOAD_PRESENT: no load detected in this model
            true_d = d
            if i == corrupt:
                d ^= 1 << self.rng.below(8)
            if self.crc:
                buf[2 * i] = d
                if 2 * i + 1 < n:
                    # the CRC the chip computes over what it sends (the line flips the data
                    # bit after the chip: the CRC is computed on the true byte)
                    if i == 0:
                        buf[1] = crc8(((addr << 1) | 1, true_d))
                    else:
                        buf[2 * i + 1] = crc8((true_d,))
            else:
                buf[i] = d
            if a < NREGS:
                self.read_seq[a] = seq
                ok = 0 if i == corrupt else 1
                self.read_clean[a] = ok
                self.read_conv_seq[a] = self.conv_seq[a]
                self.read_conv_t[a] = self.conv_t[a]
                bad = self.conv_bad[a]
                self.read_bad[a] = bad
                if ok:
                    self.read_ok_seq[a] = seq
                    if a == SYS_STAT:
                        self.stat_seen = true_d
                    if bad == BAD_FAULT:
                        if a < BAT_HI:
                            self.last_bad_cell_read_t = self.t_ms
                        elif TS1_HI <= a < CC_HI:
                            self.last_bad_ts_read_t = self.t_ms


class ModelI2C:
    """machine.I2C facade over a Bq769x0Model (only the methods a BQ769x0 driver needs)."""

    def __init__(self, model):
        self.m = model

    def readfrom_mem_into(self, addr, memaddr, buf, addrsize=8):
        self.m.i2c_read(addr, memaddr, buf)

    def readfrom_mem(self, addr, memaddr, nbytes, addrsize=8):
        buf = bytearray(nbytes)
        self.m.i2c_read(addr, memaddr, buf)
        return bytes(buf)

    def writeto_mem(self, addr, memaddr, buf, addrsize=8):
        self.m.i2c_write(addr, memaddr, buf)

    def scan(self):
        m = self.m
        return [] if (m.dead or m.shipped) else [m.address]
