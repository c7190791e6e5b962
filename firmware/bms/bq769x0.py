# bms.bq769x0: I2C driver for the TI BQ76920 / BQ76930 / BQ76940 analog front end.
#
# Facts from the datasheet (SLUSBK2I) as summarised in shared/reference/bq769x0.md.
#
# Bus:  7-bit address 0x08 or 0x18, parts with and without CRC. With CRC every written data
#       byte carries a CRC-8/0x07 (first over addr<<1, register, data; later bytes of a block
#       over the byte alone) and every read data byte is followed by a CRC (first over
#       (addr<<1)|1 and data0, later over the data byte alone). A failed transfer (OSError from
#       the bus or a CRC mismatch) is repeated as a whole transaction, register address
#       included, up to ATTEMPTS times, then reported as AfeBusError / AfeCrcError.
# Units and sign: mV, mA (+ = charging, i.e. the raw CC sign times cc_sign), 0.1 degC.
# The periodic read() allocates nothing (preallocated buffers and memoryviews, small ints).
import math
from array import array

from micropython import const

from bms.afe import (  # noqa: F401 (the errors are re-exported for callers of this module)
    CFG_ERR,
    TRIP_DEVICE,
    TRIP_OCD,
    TRIP_OV,
    TRIP_OVRD,
    TRIP_SCD,
    TRIP_UV,
    AfeBusError,
    AfeConfigError,
    AfeCrcError,
    AfeError,
)
from bms.crc import TABLE as _CRC
from bms.snapshot import (
    FLAG_CC_NEW,
    FLAG_CELLS_VALID,
    FLAG_CURRENT_VALID,
    FLAG_PACK_VALID,
    FLAG_TEMPS_VALID,
    TEMP_INVALID_DC,
)


ATTEMPTS = const(3)  # tries per transaction (the first one plus two retries)

# Valid temperature span; a thermistor beyond it is open or shorted -> TEMP_INVALID_DC.
TEMP_MIN_DC = const(-400)
TEMP_MAX_DC = const(1250)
DIE_TEMP_MIN_DC = const(-400)
DIE_TEMP_MAX_DC = const(1500)
# First temperature conversion after init (or a TEMP_SEL change): up to 2 s (+3.5 %) plus one
# read cycle (DS 8.3.1.1.5). Until then the TS registers may hold anything (0, or the die).
_TS_FIRST_MS = const(2500)
TEMP_SAMPLE_MS = const(2500)  # a temperature reading can show a crossing this late
SAMPLE_MS = const(250)  # cells, pack and coulomb counter: one conversion every 250 ms
# Hold-offs before clearing DEVICE_XREADY (DS: "after waiting a few seconds"; LS/ARD retry
# every 3 s) and OVRD_ALERT (every 10 s), and again after every hold-off while reported.
_XREADY_HOLD_MS = const(3000)
_OVRD_HOLD_MS = const(10000)
# Physical cell range: a used input outside it clears FLAG_CELLS_VALID.
CELL_MIN_MV = const(500)
CELL_MAX_MV = const(5000)

# Registers (DS Table 8-2).
_SYS_STAT = const(0x00)
_CELLBAL1 = const(0x01)
_SYS_CTRL1 = const(0x04)
_SYS_CTRL2 = const(0x05)
_PROTECT1 = const(0x06)
_CC_CFG = const(0x0B)
_VC1_HI = const(0x0C)
_BAT_HI = const(0x2A)
_CC_END = const(0x34)  # one past CC_LO
_ADCGAIN1 = const(0x50)
_ADCGAIN2 = const(0x59)

_CC_CFG_VALUE = const(0x19)
_ADC_EN = const(0x10)
_TEMP_SEL = const(0x08)
_LOAD_PRESENT = const(0x80)
_DELAY_DIS = const(0x80)
_CC_EN = const(0x40)
_DSG_ON = const(0x02)
_CHG_ON = const(0x01)
_CC_ONESHOT = const(0x20)
_RSNS = const(0x80)
# SYS_STAT bits (DS Table 8-3), write-1-to-clear; b6 reserved.
_ST_CC_READY = const(0x80)
_ST_XREADY = const(0x20)
_ST_OVRD = const(0x10)
_ST_UV = const(0x08)
_ST_OV = const(0x04)
_ST_SCD = const(0x02)
_ST_OCD = const(0x01)
_ST_ALL = const(0xBF)
_ST_CHG_OFF = _ST_OV | _ST_XREADY | _ST_OVRD  # trips that clear CHG_ON (DS Table 8-1)
_ST_DSG_OFF = _ST_UV | _ST_OCD | _ST_SCD | _ST_XREADY | _ST_OVRD  # ... DSG_ON
_CTRL_REGS = const(12)  # SYS_STAT .. CC_CFG (0x00..0x0B): read with every measurement

_CC_NV_PER_LSB = const(8440)  # 8.44 uV per CC LSB, in nV
_CC_PERIOD_MS = const(250)
_TS_UV_PER_LSB = const(382)  # fixed, not the trimmed GAIN (DS 8.3.1.1.4)
_TS_STEP_SHIFT = const(5)  # thermistor lookup table: one point every 32 ADC codes
_TS_POINTS = const(272)  # covers ADC 0 .. 8672 (3.3 V = ADC 8639)

# Protection tables (DS Tables 8-9 .. 8-11), thresholds in mV, delays as named.
_SCD_MV = ((22, 33, 44, 56, 67, 78, 89, 100), (44, 67, 89, 111, 133, 155, 178, 200))
_OCD_MV = (
    (8, 11, 14, 17, 19, 22, 25, 28, 31, 33, 36, 39, 42, 44, 47, 50),
    (17, 22, 28, 33, 39, 44, 50, 56, 61, 67, 72, 78, 83, 89, 94, 100),
)
_SCD_DELAY_US = (70, 100, 200, 400)
_OCD_DELAY_MS = (8, 20, 40, 80, 160, 320, 640, 1280)
_OV_DELAY_MS = (1000, 2000, 4000, 8000)
_UV_DELAY_MS = (1000, 4000, 8000, 16000)

# Channels (0-based VC index) used by a 5-input group with 3, 4 or 5 cells (DS Tables 9-2..4).
_GROUP_CHANNELS = {3: (0, 1, 4), 4: (0, 1, 2, 4), 5: (0, 1, 2, 3, 4)}
_VARIANT_GROUPS = {76920: 1, 76930: 2, 76940: 3}


def variant_for(cells, variant=None):
    """Chip variant (76920 / 76930 / 76940) for a cell count; `variant` overrides the default.

    Default by cell count: 3..5 -> 76920, 6..10 -> 76930, 11..15 -> 76940. `variant` may be
    76920, "bq76930", "BQ76940", 40, ... A variant must hold >= 3 cells per 5-input group.
    """
    if not isinstance(cells, int) or not 3 <= cells <= 15:
        raise ValueError("cells must be 3..15")
    if variant is None:
        return 76920 if cells <= 5 else (76930 if cells <= 10 else 76940)
    v = variant
    if isinstance(v, str):
        s = v.lower()
        if s.startswith("bq"):
            s = s[2:]
        try:
            v = int(s)
        except ValueError:
            raise ValueError("unknown variant") from None
    if v in (20, 30, 40):
        v += 76900
    if v not in _VARIANT_GROUPS:
        raise ValueError("unknown variant")
    groups = _VARIANT_GROUPS[v]
    if not 3 * groups <= cells <= 5 * groups:
        raise ValueError("variant cannot hold this cell count")
    return v


def input_map(cells, variant=None):
    """Tuple of 1-based VC channels carrying cells 1..n, in cell order (DS 9.1.8).

    Cells are spread over the groups as evenly as possible, lower groups first (this
    reproduces DS Tables 9-2 .. 9-4); inside a group, 3 cells use inputs 1, 2, 5, four use
    1, 2, 3, 5 and five use 1..5.
    """
    v = variant_for(cells, variant)
    groups = _VARIANT_GROUPS[v]
    base, extra = divmod(cells, groups)
    out = []
    for g in range(groups):
        k = base + (1 if g < extra else 0)
        for c in _GROUP_CHANNELS[k]:
            out.append(g * 5 + c + 1)
    return tuple(out)


def cell_groups(cells, variant=None):
    """Tuple: the 5-input group (0, 1, 2) of each cell, per the input map (two neighbouring
    cells of one group never bleed together)."""
    return tuple((c - 1) // 5 for c in input_map(cells, variant))


def _gcd(a, b):
    while b:
        a, b = b, a % b
    return a


def _beta_r_to_dc(beta):
    t25_inv = 1.0 / 298.15

    def conv(r):
        return (1.0 / (t25_inv + math.log(r / 10000.0) / beta) - 273.15) * 10.0

    return conv


def _table_r_to_dc(table):
    # table: (temp_dc, r_ohm) pairs; interpolate T linearly in ln(R).
    pts = sorted((float(r), float(t)) for t, r in table)
    if len(pts) < 2 or pts[0][0] <= 0:
        raise ValueError("thermistor_table needs >= 2 points with R > 0")
    for i in range(1, len(pts)):
        if pts[i][0] == pts[i - 1][0] or pts[i][1] >= pts[i - 1][1]:
            raise ValueError("thermistor_table must be monotonic (NTC)")

    def conv(r):
        if r < pts[0][0] or r > pts[-1][0]:
            return None
        for i in range(1, len(pts)):
            r1, t1 = pts[i]
            if r <= r1:
                r0, t0 = pts[i - 1]
                f = (math.log(r) - math.log(r0)) / (math.log(r1) - math.log(r0))
                return t0 + (t1 - t0) * f
        return pts[-1][1]

    return conv


def detect(i2c):
    """Probe {0x08, 0x18} x {CRC, no CRC}: write CC_CFG = 0x19 and read it back.

    Returns (address, crc) of the first combination that answers correctly, or None.
    The CRC probe reads UV_TRIP and CC_CFG as one block: a CRC part returns UV_TRIP, CRC,
    0x19, CRC(0x19); a non-CRC part would return UV_TRIP, 0x19, VC1_HI, VC1_LO, which
    passes only for one UV_TRIP value together with VC1 = 0x194F. The non-CRC probe reads
    OV_TRIP..CC_CFG: a CRC part would put UV_TRIP (not 0x19 in practice) in the third byte.
    """
    buf = bytearray(4)
    for addr in (0x08, 0x18):
        for crc in (True, False):
            try:
                if crc:
                    w = bytearray(2)
                    w[0] = _CC_CFG_VALUE
                    w[1] = _CRC[_CRC[_CRC[addr << 1] ^ _CC_CFG] ^ _CC_CFG_VALUE]
                    i2c.writeto_mem(addr, _CC_CFG, w)
                    i2c.readfrom_mem_into(addr, _CC_CFG - 1, buf)
                    ok = (
                        buf[1] == _CRC[_CRC[(addr << 1) | 1] ^ buf[0]]
                        and buf[2] & 0x3F == _CC_CFG_VALUE
                        and buf[3] == _CRC[buf[2]]
                    )
                else:
                    i2c.writeto_mem(addr, _CC_CFG, bytes((_CC_CFG_VALUE,)))
                    r = bytearray(3)
                    i2c.readfrom_mem_into(addr, _CC_CFG - 2, r)  # OV_TRIP, UV_TRIP, CC_CFG
                    ok = r[2] == _CC_CFG_VALUE
            except OSError:
                ok = False
            if ok:
                return (addr, crc)
    return None


class BQ769x0:
    """Driver for one BQ769x0.

    i2c          object with the machine.I2C API (readfrom_mem_into, writeto_mem)
    cells        series cells 3..15
    address      0x08 or 0x18;  crc: True for CRC parts
    shunt_uohm   shunt resistance in micro-ohm (50 .. 1 000 000)
    n_temps      external thermistors to read (1 .. TS inputs of the variant)
    thermistor_beta  NTC beta (10 kOhm at 25 degC), ignored if thermistor_table is given
    temp_source  "ext" (TEMP_SEL = 1, thermistors into temp_dc) or "die" (TEMP_SEL = 0,
                 TS1 = die temperature into die_temp_dc; temp_dc stays TEMP_INVALID_DC)
    variant      None (by cell count) or 76920/76930/76940 (also "bq76940", 40): a BQ76940
                 with 9 or 10 cells uses the '40 input map
    cc_sign      +1: a positive CC register value is charging (the usual wiring: charge
                 current makes SRN negative vs SRP); -1 for boards wired the other way
    thermistor_table  optional sequence of (temp_dc, r_ohm) points instead of the beta model
    """

    def __init__(
        self,
        i2c,
        cells,
        address=0x08,
        crc=True,
        shunt_uohm=1000,
        n_temps=1,
        thermistor_beta=3435,
        temp_source="ext",
        variant=None,
        cc_sign=1,
        thermistor_table=None,
    ):
        self.variant = variant_for(cells, variant)
        if address not in (0x08, 0x18):
            raise ValueError("address must be 0x08 or 0x18")
        if crc not in (True, False):
            raise ValueError("crc must be a bool")
        if not isinstance(shunt_uohm, int) or not 50 <= shunt_uohm <= 1000000:
            raise ValueError("shunt_uohm must be 50..1000000")
        groups = _VARIANT_GROUPS[self.variant]
        if not isinstance(n_temps, int) or not 1 <= n_temps <= groups:
            raise ValueError("n_temps must be 1..TS inputs of the variant")
        if not isinstance(thermistor_beta, int) or not 1000 <= thermistor_beta <= 10000:
            raise ValueError("thermistor_beta must be 1000..10000")
        if temp_source not in ("ext", "die"):
            raise ValueError("temp_source must be 'ext' or 'die'")
        if cc_sign not in (1, -1):
            raise ValueError("cc_sign must be 1 or -1")
        self.i2c = i2c
        self.cells = cells
        self.address = address
        self.crc = crc
        self.shunt_uohm = shunt_uohm
        self.n_temps = n_temps
        self.temp_source = temp_source
        self.cc_sign = cc_sign
        self.groups = groups
        self.channels = input_map(cells, self.variant)  # 1-based VC channel per cell
        # Factory calibration (read in init()); nominal until then.
        self.gain_uv = 382
        self.offset_mv = 0
        self._gain4 = 4 * 382
        self._pack_off = 0
        # Remembered commands for restore().
        self._chg_cmd = False
        self._dsg_cmd = False
        self._bal_cmd = 0
        self.load_present = False
        self._ctrl1 = _ADC_EN | (_TEMP_SEL if temp_source == "ext" else 0)

        # CC: current_ma = raw * _cc_num / _cc_den, rounded half away from zero.
        num = _CC_NV_PER_LSB
        den = shunt_uohm
        g = _gcd(num, den)
        self._cc_num = cc_sign * (num // g)
        self._cc_den = den // g
        self._cc_half = (den // g) // 2
        self._cc_t_ms = 0
        self._cc_have = False
        self._t_first = -1
        self._cc_age = 2  # reads since the last CC sample (>1: no valid current)
        self._cc_stall = False  # the chip's conversions stopped (no CC result for 2 reads)

        # CRC seeds: CRC of the address byte alone.
        self._crc_w = _CRC[address << 1]
        self._crc_r = _CRC[(address << 1) | 1]
        s = 2 if crc else 1
        self._s = s

        # One block from SYS_STAT through the chip's top cell channel: the control and
        # protection registers (0x00..0x0B, checked against what was programmed on every
        # read) followed by VC1..VCn. Then BAT, TS1..3, CC (0x2A..0x33) - contiguous with the
        # cells on the BQ76940, so one transaction there.
        nch = 5 * groups
        cell_regs = 2 * nch
        head = _CTRL_REGS + cell_regs
        tail = _CC_END - _BAT_HI  # BAT .. CC_LO
        self._mbuf = bytearray((head + tail) * s)
        mv = memoryview(self._mbuf)
        self._merged = _CTRL_REGS + cell_regs == _BAT_HI  # '40: one transaction
        self._mv_ctrl = mv[: _CTRL_REGS * s]  # SYS_STAT .. CC_CFG (the gate of set_fets)
        if self._merged:
            self._mv_a = mv
            self._mv_b = None
        else:
            self._mv_a = mv[: head * s]
            self._mv_b = mv[head * s :]
        self._cell_idx = bytearray(cells)
        for i in range(cells):
            self._cell_idx[i] = (_CTRL_REGS + 2 * (self.channels[i] - 1)) * s
        self._bat_idx = head * s
        self._ts_idx = (head + 2) * s
        self._cc_idx = (head + (0x32 - _BAT_HI)) * s
        # What the chip must hold (checked by read()): PROTECT1..3, OV_TRIP, UV_TRIP as last
        # programmed (None until configure_protection), the CB bits commanded.
        self._prot = None
        self._cfg_ok = False  # init() and configure_protection() verified since the last reset
        self._inited = False  # init() completed since the chip last lost its configuration
        self._fet_bits = 0  # CHG_ON | DSG_ON as last written (the chip may only clear them)
        self._cb = bytearray(3)  # CB bits commanded per group (likewise)
        # Group (0, 1, 2) of each cell: two neighbouring cells of one group never bleed together.
        self.cell_groups = cell_groups(cells, self.variant)
        self._cfg_err = 0
        self._xr_since = -1  # time DEVICE_XREADY was first seen (-1: not reported)
        self._ov_since = -1  # likewise OVRD_ALERT
        self._hold_ack = 0  # XREADY / OVRD bits protection acknowledged (cleared after hold)
        self._last_stat = 0  # SYS_STAT of the last good read
        # Write buffers: one register, and blocks of up to 5 registers.
        self._wbuf = bytearray(2)
        self._w1 = memoryview(self._wbuf)[:s]
        self._bdat = bytearray(5)
        self._bbuf = bytearray(10)
        self._bal_view = memoryview(self._bbuf)[: groups * s]
        # Readback buffers for init/configure (not the periodic path).
        self._rbuf = bytearray(10)
        rv = memoryview(self._rbuf)
        self._rviews = tuple(rv[: n * s] for n in range(6))
        self._ext = temp_source == "ext"

        # Thermistor: ADC -> 0.1 degC table, one point every 32 codes (floats only here).
        conv = (
            _table_r_to_dc(thermistor_table)
            if thermistor_table is not None
            else _beta_r_to_dc(thermistor_beta)
        )
        tbl = array("h", [TEMP_INVALID_DC] * _TS_POINTS)
        for k in range(_TS_POINTS):
            v = (k << _TS_STEP_SHIFT) * _TS_UV_PER_LSB * 1e-6
            if v <= 0.0 or v >= 3.3:
                continue
            t = conv(10000.0 * v / (3.3 - v))
            if t is None:
                continue
            t = int(t + 0.5) if t >= 0 else -int(-t + 0.5)
            if TEMP_MIN_DC <= t <= TEMP_MAX_DC:
                tbl[k] = t
        self._ts_table = tbl

    # ---------------------------------------------------------------- bus primitives

    def _read(self, reg, view):
        """Block read of len(view) / stride registers from reg, CRC-checked, retried."""
        i2c = self.i2c
        addr = self.address
        crc = self.crc
        t = _CRC
        n = len(view)
        err = 0
        for _ in range(ATTEMPTS):
            try:
                i2c.readfrom_mem_into(addr, reg, view)
            except OSError:
                err = 1
                continue
            if not crc:
                return
            if t[self._crc_r ^ view[0]] != view[1]:
                err = 2
                continue
            ok = True
            for i in range(2, n, 2):
                if t[view[i]] != view[i + 1]:
                    ok = False
                    break
            if ok:
                return
            err = 2
        if err == 1:
            raise AfeBusError("AFE bus error, reg 0x%02x" % reg)
        raise AfeCrcError("AFE CRC error, reg 0x%02x" % reg)

    def _send(self, reg, view):
        i2c = self.i2c
        addr = self.address
        for _ in range(ATTEMPTS):
            try:
                i2c.writeto_mem(addr, reg, view)
                return
            except OSError:
                pass
        raise AfeBusError("AFE write failed, reg 0x%02x" % reg)

    def _write(self, reg, value):
        """Write one register (with its CRC on CRC parts), retried."""
        b = self._wbuf
        b[0] = value
        if self.crc:
            b[1] = _CRC[_CRC[self._crc_w ^ reg] ^ value]
        self._send(reg, self._w1)

    def _write_block(self, reg, n, view):
        """Write self._bdat[0:n] from reg on; view = the first n*stride bytes of _bbuf."""
        d = self._bdat
        b = self._bbuf
        if self.crc:
            for i in range(n):
                v = d[i]
                b[2 * i] = v
                b[2 * i + 1] = _CRC[v]
            b[1] = _CRC[_CRC[self._crc_w ^ reg] ^ d[0]]
        else:
            for i in range(n):
                b[i] = d[i]
        self._send(reg, view)

    def _read_regs(self, reg, n):
        """Read n (<= 5) registers into self._rbuf data bytes; returns the stride."""
        self._read(reg, self._rviews[n])
        return self._s

    def read_register(self, reg):
        """One register, CRC-checked (diagnostics; allocates)."""
        self._read_regs(reg, 1)
        return self._rbuf[0]

    def write_register(self, reg, value):
        """One register write with CRC (diagnostics). SYS_CTRL1 SHUT bits are refused."""
        if reg == _SYS_CTRL1 and value & 0x03:
            raise ValueError("use ship() for SHUT bits")
        self._write(reg, value & 0xFF)

    # ---------------------------------------------------------------- setup

    def init(self):
        """Boot configuration. Call after every AFE boot or reset (the registers are RAM).

        CC_CFG = 0x19, SYS_CTRL1 = ADC_EN | TEMP_SEL (ext) with SHUT bits 0, SYS_CTRL2 =
        CC_EN (FETs off), CELLBAL = 0, SYS_STAT = 0xFF once (W1C; as in TI's example, the
        reserved b6 cannot be set by it), then GAIN and OFFSET; CC_CFG, SYS_CTRL1 and
        SYS_CTRL2 are read back. read() refuses readings until configure_protection() has
        programmed and verified the protection registers as well."""
        self._cfg_ok = False
        self._inited = False
        self._prot = None
        self._write(_CC_CFG, _CC_CFG_VALUE)
        if self.read_register(_CC_CFG) & 0x3F != _CC_CFG_VALUE:
            raise AfeError("CC_CFG readback mismatch (address/CRC setting?)")
        self._write(_SYS_CTRL1, self._ctrl1)  # ADC_EN | TEMP_SEL, SHUT bits 0
        self._write(_SYS_CTRL2, _CC_EN)  # coulomb counter on, FETs off
        self._fet_bits = 0
        self._chg_cmd = False
        self._dsg_cmd = False
        self._bal_cmd = 0
        self._write_balance(0)
        self._write(_SYS_STAT, 0xFF)  # clear everything latched before boot, once
        st = self._read_regs(_SYS_CTRL1, 2)
        if self._rbuf[0] & 0x1F != self._ctrl1 or self._rbuf[st] & 0xFF != _CC_EN:
            raise AfeError("SYS_CTRL1/2 readback mismatch")
        s = self._read_regs(_ADCGAIN1, 2)  # ADCGAIN1, ADCOFFSET
        g1 = self._rbuf[0]
        off = self._rbuf[s]
        g2 = self.read_register(_ADCGAIN2)
        gain = 365 + (((g1 & 0x0C) << 1) | ((g2 & 0xE0) >> 5))
        self.set_calibration(gain, off - 256 if off & 0x80 else off)  # ADCOFFSET is signed
        self._cc_have = False
        self._cc_age = 2
        self._cc_stall = False
        self._t_first = -1  # time of the first read after init (temperature warm-up)
        self._xr_since = -1
        self._ov_since = -1
        self._hold_ack = 0
        self._cfg_err = 0
        self._inited = True  # configure_protection() completes the configuration

    def set_calibration(self, gain_uv, offset_mv):
        """Set GAIN (uV/LSB) and OFFSET (mV) and the integer factors derived from them."""
        if not 365 <= gain_uv <= 396 or not -128 <= offset_mv <= 127:
            raise ValueError("gain 365..396 uV, offset -128..127 mV")
        self.gain_uv = gain_uv
        self.offset_mv = offset_mv
        self._gain4 = 4 * gain_uv
        # V_BAT = 4 x GAIN x BAT + #cells x OFFSET, #cells = the configured (connected) cells.
        self._pack_off = self.cells * offset_mv

    # ---------------------------------------------------------------- conversions

    def adc_to_mv(self, adc):
        """Cell ADC code -> mV: GAIN x ADC / 1000 + OFFSET, rounded to the nearest mV."""
        return (adc * self.gain_uv + 500) // 1000 + self.offset_mv

    def bat_to_mv(self, bat):
        """BAT code -> mV: 4 x GAIN x BAT / 1000 + cells x OFFSET (nearest mV)."""
        return (bat * self._gain4 + 500) // 1000 + self._pack_off

    def cc_to_ma(self, raw):
        """Signed 16-bit CC value -> mA (8.44 uV/LSB over shunt_uohm, times cc_sign).

        Rounded to the nearest mA, halves away from zero, so +x and -x are symmetric."""
        num = raw * self._cc_num
        if num >= 0:
            return (num + self._cc_half) // self._cc_den
        return -((self._cc_half - num) // self._cc_den)

    def ts_to_dc(self, adc):
        """Thermistor ADC code -> 0.1 degC, or TEMP_INVALID_DC (open, shorted, out of range)."""
        k = adc >> _TS_STEP_SHIFT
        if k >= _TS_POINTS - 1:
            return TEMP_INVALID_DC
        tbl = self._ts_table
        a = tbl[k]
        b = tbl[k + 1]
        if a == TEMP_INVALID_DC or b == TEMP_INVALID_DC:
            return TEMP_INVALID_DC
        f = adc & ((1 << _TS_STEP_SHIFT) - 1)
        return a + (((b - a) * f + (1 << (_TS_STEP_SHIFT - 1))) >> _TS_STEP_SHIFT)

    @staticmethod
    def die_to_dc(adc):
        """Die temperature (TEMP_SEL = 0): 25 degC - (V - 1.200 V) / 4.2 mV/degC, nearest 0.1.

        Outside DIE_TEMP_MIN_DC..DIE_TEMP_MAX_DC -> TEMP_INVALID_DC."""
        t = 250 + (1200000 - adc * _TS_UV_PER_LSB + 210) // 420
        if t < DIE_TEMP_MIN_DC or t > DIE_TEMP_MAX_DC:
            return TEMP_INVALID_DC
        return t

    # ---------------------------------------------------------------- periodic read

    def read(self, snap, now_ms):
        """One measurement cycle into snap (allocates nothing when it succeeds).

        Transactions: one block from SYS_STAT through the top cell channel (the control and
        protection registers 0x00..0x0B, then VC1..VCn), and BAT, TS1..3, CC (0x2A..0x33) -
        merged into the first block on the BQ76940, where they are contiguous; then a write
        of CC_READY alone to clear it after the CC was read.
        Integrity: CC_CFG, SYS_CTRL1 (ADC_EN, TEMP_SEL, SHUT bits), SYS_CTRL2 (CC_EN, no
        DELAY_DIS/ONESHOT, CHG_ON/DSG_ON only where commanded), PROTECT1..3, OV_TRIP, UV_TRIP
        and the CB bits (only where commanded) must hold what init()/configure_protection()
        programmed. Otherwise - a reset of the chip (its defaults are back, whether its ADC
        came back on or not) or a register upset - the reading is refused: snap.cfg_err =
        CFG_ERR | the register, snap.flags = 0, AfeConfigError; every later read is refused
        too until init() and configure_protection() succeeded again.
        On a bus failure: snap.errors/error_total += 1, snap.flags = 0, the AfeError is raised
        and no other field of snap changes.
        CC accounting: each new sample adds current_ma to cc_sum_ma and 1 to cc_samples and
        cc_seq. When dt since the previous sample is >= 2 x 250 ms, n = dt // 250 samples are
        booked instead: the n - 1 missed ones carry this sample's current and are also
        counted in cc_missed.
        Pack: V_BAT = 4 x GAIN x BAT + #cells x OFFSET with #cells = the configured cells.
        """
        mb = self._mbuf
        s = self._s
        try:
            self._read(_SYS_STAT, self._mv_a)
            if not self._merged:
                self._read(_BAT_HI, self._mv_b)
            stat = mb[0]
            if stat & _ST_CC_READY and self._cfg_ok:
                self._write(_SYS_STAT, _ST_CC_READY)  # consumed: clear CC_READY only
        except AfeError:
            if self._cc_age < 2:
                self._cc_age += 1
            snap.errors += 1
            snap.error_total += 1
            snap.flags = 0
            raise
        if self._cfg_ok:
            bad = self._check(mb, s)
            if bad:  # the chip lost what was programmed: init() has to start over
                self._cfg_ok = False
                self._inited = False
                self._cfg_err = bad
        else:
            bad = self._cfg_err or 0xFF  # not (yet) programmed and verified
        snap.errors = 0
        if bad:
            snap.cfg_err = CFG_ERR | bad
            snap.flags = 0
            raise AfeConfigError("AFE register 0x%02x lost its value" % bad)
        snap.cfg_err = 0
        cc_ready = stat & _ST_CC_READY
        # The coulomb counter delivers every 250 ms while CC_EN is set. Two reads in a row
        # without a result: the chip's conversions are not running, so nothing in its result
        # registers is fresh (cells, pack, thermistors are frozen too). When results come
        # back, the thermistors wait for a conversion of their own (up to 2 s + tolerance).
        if cc_ready:
            if self._cc_stall:
                self._cc_stall = False
                self._t_first = now_ms
        elif self._cc_have and self._cc_age >= 1:
            self._cc_stall = True
        gain = self.gain_uv
        off = self.offset_mv
        idx = self._cell_idx
        cells = snap.cell_mv
        flags = FLAG_CELLS_VALID | FLAG_PACK_VALID
        converted = 0
        for i in range(self.cells):
            j = idx[i]
            raw = ((mb[j] & 0x3F) << 8) | mb[j + s]
            converted |= raw
            cells[i] = (raw * gain + 500) // 1000 + off
        if not converted:
            # Every cell code 0: the ADC has not converted yet (just after boot or a reset of
            # the AFE), so neither the cells nor the pack voltage (same scan) are readings.
            flags = 0
        if self._t_first < 0:
            self._t_first = now_ms
        j = self._bat_idx
        snap.pack_mv = (((mb[j] << 8) | mb[j + s]) * self._gain4 + 500) // 1000 + self._pack_off
        j = self._ts_idx
        warm = now_ms - self._t_first >= _TS_FIRST_MS
        if self._ext:
            temps = snap.temp_dc
            for i in range(self.n_temps):
                temps[i] = self.ts_to_dc(((mb[j] & 0x3F) << 8) | mb[j + s])
                j += 2 * s
            # The first conversion with TEMP_SEL set comes up to 2 s after init: until then a
            # TS register holds nothing (0) or the die temperature (a reset had TEMP_SEL = 0).
            if warm:
                flags |= FLAG_TEMPS_VALID
        elif warm:
            snap.die_temp_dc = self.die_to_dc(((mb[j] & 0x3F) << 8) | mb[j + s])
        if cc_ready:
            j = self._cc_idx
            raw = (mb[j] << 8) | mb[j + s]
            if raw & 0x8000:
                raw -= 0x10000
            cur = self.cc_to_ma(raw)
            n = 1
            if self._cc_have:
                dt = now_ms - self._cc_t_ms
                if dt >= 2 * _CC_PERIOD_MS:
                    n = dt // _CC_PERIOD_MS  # this sample + (n - 1) missed ones
            self._cc_have = True
            self._cc_t_ms = now_ms
            self._cc_age = 0
            snap.current_ma = cur
            snap.cc_seq += n
            snap.cc_samples += n
            snap.cc_missed += n - 1
            snap.cc_sum_ma += cur * n
            flags |= FLAG_CC_NEW | FLAG_CURRENT_VALID
        else:
            if self._cc_age < 2:
                self._cc_age += 1
            if self._cc_age <= 1:
                flags |= FLAG_CURRENT_VALID
        if self._cc_stall:
            flags = 0
        ctrl2 = mb[5 * s]
        snap.chg_fet = (ctrl2 & _CHG_ON) != 0
        snap.dsg_fet = (ctrl2 & _DSG_ON) != 0
        self.load_present = (mb[4 * s] & _LOAD_PRESENT) != 0
        cb = mb[s] & 0x1F
        if self.groups > 1:
            cb |= (mb[2 * s] & 0x1F) << 5
            if self.groups > 2:
                cb |= (mb[3 * s] & 0x1F) << 10
        bal = 0
        ch = self.channels
        for i in range(self.cells):
            if cb & (1 << (ch[i] - 1)):
                bal |= 1 << i
        snap.bal_mask = bal
        # The chip's own protection trips, chip-neutral (bms.afe TRIP_*).
        t = 0
        if stat & _ST_OV:
            t |= TRIP_OV
        if stat & _ST_UV:
            t |= TRIP_UV
        if stat & _ST_OCD:
            t |= TRIP_OCD
        if stat & _ST_SCD:
            t |= TRIP_SCD
        if stat & _ST_XREADY:
            t |= TRIP_DEVICE
            if self._xr_since < 0:
                self._xr_since = now_ms
        else:
            self._xr_since = -1
            self._hold_ack &= ~_ST_XREADY
        if stat & _ST_OVRD:
            t |= TRIP_OVRD
            if self._ov_since < 0:
                self._ov_since = now_ms
        else:
            self._ov_since = -1
            self._hold_ack &= ~_ST_OVRD
        self._last_stat = stat
        snap.trips = t
        snap.flags = flags
        snap.t_ms = now_ms
        snap.seq += 1
        snap.update_stats()

    def _check(self, mb, s):
        """Address of the first control/protection register that does not hold what was
        programmed (0: all do). The chip itself only ever clears CHG_ON/DSG_ON and CB bits."""
        if mb[11 * s] & 0x3F != _CC_CFG_VALUE:
            return _CC_CFG
        if mb[4 * s] & 0x1F != self._ctrl1:
            return _SYS_CTRL1
        c2 = mb[5 * s]
        if c2 & 0xFC != _CC_EN or c2 & 0x03 & ~self._fet_bits:
            return _SYS_CTRL2
        p = self._prot
        if p is None:
            return _PROTECT1
        if (mb[6 * s] & 0x9F != p[0] or mb[7 * s] & 0x7F != p[1] or mb[8 * s] & 0xF0 != p[2]
                or mb[9 * s] != p[3] or mb[10 * s] != p[4]):
            for k in range(5):
                if mb[(6 + k) * s] & (0x9F, 0x7F, 0xF0, 0xFF, 0xFF)[k] != p[k]:
                    return _PROTECT1 + k
        cbx = self._cb
        for g in range(self.groups):
            if mb[(1 + g) * s] & 0x1F & ~cbx[g]:
                return _CELLBAL1 + g
        return 0

    # ---------------------------------------------------------------- status, FETs, balancing

    def ack_trips(self, trips, now_ms):
        """Protection has handled these trips (bms.afe TRIP_*): clear them in SYS_STAT (W1C,
        only those bits). OV, UV, OCD and SCD are cleared at once. DEVICE_XREADY and
        OVRD_ALERT are cleared once they have been reported for their hold-off (3 s / 10 s),
        and again after every hold-off while the chip keeps reporting them; after XREADY the
        commanded CB bits are written again (the chip cleared them). Returns the bits
        written. The FETs come back through set_fets() (the SYS_STAT gate)."""
        bits = 0
        if trips & TRIP_OV:
            bits |= _ST_OV
        if trips & TRIP_UV:
            bits |= _ST_UV
        if trips & TRIP_OCD:
            bits |= _ST_OCD
        if trips & TRIP_SCD:
            bits |= _ST_SCD
        if trips & TRIP_DEVICE:
            self._hold_ack |= _ST_XREADY
        if trips & TRIP_OVRD:
            self._hold_ack |= _ST_OVRD
        h = self._hold_ack & self._last_stat
        if h & _ST_XREADY and now_ms - self._xr_since >= _XREADY_HOLD_MS:
            bits |= _ST_XREADY
            self._xr_since = now_ms
        if h & _ST_OVRD and now_ms - self._ov_since >= _OVRD_HOLD_MS:
            bits |= _ST_OVRD
            self._ov_since = now_ms
        if bits:
            self._write(_SYS_STAT, bits)
            if bits & _ST_XREADY and self._bal_cmd:
                self._write_balance(self._bal_cmd)
        return bits

    def set_fets(self, chg, dsg):
        """Command the CHG/DSG FET drivers: SYS_CTRL2 = CC_EN | CHG_ON | DSG_ON.

        A FET stays off while SYS_STAT still reports a trip that opened it (OV, XREADY,
        OVRD_ALERT for CHG; UV, OCD, SCD, XREADY, OVRD_ALERT for DSG), and both stay off
        while the chip's configuration is not verified (after a reset or upset, until init()
        and configure_protection() succeeded). Opening both FETs needs no read first: it must
        work even when reads fail (a noisy bus that corrupts read CRCs may still carry a
        write). DELAY_DIS and CC_ONESHOT are always written 0."""
        self._chg_cmd = bool(chg)
        self._dsg_cmd = bool(dsg)
        if not self._cfg_ok:
            chg = dsg = False
        v = 0
        if chg or dsg:
            # A trip the chip reports (its SYS_STAT bit still set) keeps its FET off: protection
            # acknowledges it when handled, before it asks for the FET again. Read here, just
            # before the write (with the control and protection registers, checked as in
            # read()), a trip or a reset after this cycle's measurement never gets a FET back.
            try:
                self._read(_SYS_STAT, self._mv_ctrl)
            except AfeError:
                self._fets_off()  # opening must not depend on a read
                raise
            mb = self._mbuf
            bad = self._check(mb, self._s)
            if bad:
                self._cfg_ok = False
                self._inited = False
                self._cfg_err = bad
            else:
                stat = mb[0]
                if chg and not stat & _ST_CHG_OFF:
                    v |= _CHG_ON
                if dsg and not stat & _ST_DSG_OFF:
                    v |= _DSG_ON
        self._fet_bits |= v  # until the write is confirmed either state is expected
        self._write(_SYS_CTRL2, v | _CC_EN)
        self._fet_bits = v

    def _fets_off(self):
        try:
            self._write(_SYS_CTRL2, _CC_EN)
            self._fet_bits = 0
        except AfeError:
            pass

    def _write_balance(self, mask):
        chans = self.channels
        d = self._bdat
        d[0] = d[1] = d[2] = 0
        for i in range(self.cells):
            if mask & (1 << i):
                c = chans[i] - 1
                d[c // 5] |= 1 << (c % 5)
        cb = self._cb
        for g in range(3):
            cb[g] |= d[g]  # until the write is confirmed either state is expected
        self._write_block(_CELLBAL1, self.groups, self._bal_view)
        for g in range(3):
            cb[g] = d[g]

    def check_balance(self, mask):
        """ValueError unless mask (bit i = cell i+1) is valid: within the cell count and no
        two adjacent cells of the same 5-input group (conservative: adjacent in cell order,
        also when a shorted input lies between their channels)."""
        if mask < 0 or mask >> self.cells:
            raise ValueError("balance mask has bits beyond the cell count")
        g = self.cell_groups
        for i in range(self.cells - 1):
            if (mask >> i) & 3 == 3 and g[i] == g[i + 1]:
                raise ValueError("adjacent cells in one group cannot balance together")

    def set_balance(self, mask):
        """Balance the cells in mask (bit 0 = cell 1): CELLBAL1..3 in one block write.

        The applied mask shows up in snap.bal_mask at the next read (read back from the chip)."""
        self.check_balance(mask)
        self._bal_cmd = mask
        self._write_balance(mask)

    def restore(self):
        """Rewrite the CB bits and the FET commands (after XREADY or a trip); the FETs go
        through set_fets(), the SYS_STAT gate."""
        self._write_balance(self._bal_cmd)
        self.set_fets(self._chg_cmd, self._dsg_cmd)

    def ship(self):
        """Enter SHIP mode: SYS_CTRL1 SHUT_A:SHUT_B = 00, 01, 10 (DS 8.4.2), keeping ADC_EN
        and TEMP_SEL. The part turns off; it needs a TS1 boot pulse and init() afterwards."""
        c = self._ctrl1
        self._write(_SYS_CTRL1, c)
        self._write(_SYS_CTRL1, c | 0x01)
        self._write(_SYS_CTRL1, c | 0x02)

    # ---------------------------------------------------------------- protection

    def ov_trip_mv(self, reg):
        """OV trip register -> threshold mV: GAIN x (0x2008 | reg << 4) / 1000 + OFFSET."""
        return self.adc_to_mv(0x2008 | (reg << 4))

    def uv_trip_mv(self, reg):
        """UV trip register -> threshold mV: GAIN x (0x1000 | reg << 4) / 1000 + OFFSET."""
        return self.adc_to_mv(0x1000 | (reg << 4))

    def ov_trip_reg(self, ov_mv):
        """Highest OV_TRIP whose threshold (as ov_trip_mv reports it) is <= ov_mv.

        Never looser: the chip trips at or below the requested value, compared at the
        driver's 1 mV resolution (the same rounding as a cell reading; e.g. 4300 mV at
        GAIN 382 -> 0xBF = 4299.8 mV). Above the top code -> 0xFF (tighter). ValueError if
        even code 0 is above ov_mv."""
        for reg in range(255, -1, -1):
            if self.ov_trip_mv(reg) <= ov_mv:
                return reg
        raise ValueError("ov_mv below the smallest OV threshold")

    def uv_trip_reg(self, uv_mv):
        """Lowest UV_TRIP whose threshold (as uv_trip_mv reports it) is >= uv_mv.

        Never looser, at 1 mV resolution (2500 mV at GAIN 382 -> 0x99 = 2499.8 mV). Below
        code 0 -> 0x00 (tighter). ValueError if even code 0xFF is below uv_mv."""
        for reg in range(256):
            if self.uv_trip_mv(reg) >= uv_mv:
                return reg
        raise ValueError("uv_mv above the largest UV threshold")

    def current_floor_ma(self):
        """Smallest OCD and SCD thresholds this shunt allows, in mA: (ocd_ma, scd_ma)."""
        return (self._thr_ma(_OCD_MV[0][0]), self._thr_ma(_SCD_MV[0][0]))

    def _thr_ma(self, mv):
        # Threshold in mA for a sense voltage in mV, nearest mA.
        return (mv * 1000000 + self.shunt_uohm // 2) // self.shunt_uohm

    @staticmethod
    def _delay_code(table, want, name):
        # Longest delay not longer than requested (shorter = trips sooner = not looser).
        code = -1
        for i in range(len(table)):
            if table[i] <= want:
                code = i
        if code < 0:
            raise ValueError(name + " below the shortest delay")
        return code

    def _thr_code(self, table, ma):
        # Highest threshold whose current (exact) is <= ma, or -1.
        code = -1
        for i in range(len(table)):
            if table[i] * 1000000 <= ma * self.shunt_uohm:
                code = i
        return code

    def protection_codes(
        self, ov_mv, ov_delay_ms, uv_mv, uv_delay_ms, ocd_ma, ocd_delay_ms, scd_ma, scd_delay_us
    ):
        """Register values (PROTECT1, PROTECT2, PROTECT3, OV_TRIP, UV_TRIP) for a request.

        Rounding, never looser than asked:
        * OV threshold down, UV threshold up (see ov_trip_reg / uv_trip_reg).
        * OCD / SCD threshold down to the next table step (exact comparison of
          step_mV / shunt against the request). RSNS is chosen for both together: the
          setting where both fit and the sum of their relative shortfalls is smallest
          (RSNS = 0 on a tie).
        * Every delay down to the nearest available delay.
        ValueError when a request cannot be met without being looser (below the smallest
        OV / OCD / SCD step or the shortest delay, above the largest UV step), or uv >= ov.
        """
        req = (ov_mv, ov_delay_ms, uv_mv, uv_delay_ms, ocd_ma, ocd_delay_ms, scd_ma, scd_delay_us)
        for v in req:
            if not isinstance(v, int) or v <= 0:
                raise ValueError("protection values must be positive ints")
        if uv_mv >= ov_mv:
            raise ValueError("uv_mv must be below ov_mv")
        ov = self.ov_trip_reg(ov_mv)
        uv = self.uv_trip_reg(uv_mv)
        best = None
        for rsns in (0, 1):
            oc = self._thr_code(_OCD_MV[rsns], ocd_ma)
            sc = self._thr_code(_SCD_MV[rsns], scd_ma)
            if oc < 0 or sc < 0:
                continue
            short = (ocd_ma * self.shunt_uohm - _OCD_MV[rsns][oc] * 1000000) / (
                ocd_ma * self.shunt_uohm
            ) + (scd_ma * self.shunt_uohm - _SCD_MV[rsns][sc] * 1000000) / (
                scd_ma * self.shunt_uohm
            )
            if best is None or short < best[0]:
                best = (short, rsns, oc, sc)
        if best is None:
            raise ValueError("ocd_ma/scd_ma below the smallest threshold for this shunt")
        _, rsns, oc, sc = best
        scd_d = self._delay_code(_SCD_DELAY_US, scd_delay_us, "scd_delay_us")
        ocd_d = self._delay_code(_OCD_DELAY_MS, ocd_delay_ms, "ocd_delay_ms")
        ov_d = self._delay_code(_OV_DELAY_MS, ov_delay_ms, "ov_delay_ms")
        uv_d = self._delay_code(_UV_DELAY_MS, uv_delay_ms, "uv_delay_ms")
        p1 = (_RSNS if rsns else 0) | (scd_d << 3) | sc
        p2 = (ocd_d << 4) | oc
        p3 = (uv_d << 6) | (ov_d << 4)
        return (p1, p2, p3, ov, uv)

    def protection_applied(
        self, ov_mv, ov_delay_ms, uv_mv, uv_delay_ms, ocd_ma, ocd_delay_ms, scd_ma, scd_delay_us
    ):
        """The values configure_protection() would apply (no I/O); ValueError as there."""
        return self.decode_protection(*self.protection_codes(
            ov_mv, ov_delay_ms, uv_mv, uv_delay_ms, ocd_ma, ocd_delay_ms, scd_ma, scd_delay_us))

    def decode_protection(self, p1, p2, p3, ov, uv):
        """Engineering values of register contents (read-only and reserved bits ignored)."""
        rsns = 1 if p1 & _RSNS else 0
        return {
            "ov_mv": self.ov_trip_mv(ov),
            "ov_delay_ms": _OV_DELAY_MS[(p3 >> 4) & 3],
            "uv_mv": self.uv_trip_mv(uv),
            "uv_delay_ms": _UV_DELAY_MS[(p3 >> 6) & 3],
            "ocd_ma": self._thr_ma(_OCD_MV[rsns][p2 & 0x0F]),
            "ocd_delay_ms": _OCD_DELAY_MS[(p2 >> 4) & 7],
            "scd_ma": self._thr_ma(_SCD_MV[rsns][p1 & 0x07]),
            "scd_delay_us": _SCD_DELAY_US[(p1 >> 3) & 3],
            "rsns": rsns,
        }

    def configure_protection(
        self, ov_mv, ov_delay_ms, uv_mv, uv_delay_ms, ocd_ma, ocd_delay_ms, scd_ma, scd_delay_us
    ):
        """Program PROTECT1..3, OV_TRIP, UV_TRIP (one block write), read them back and return
        the applied values as a dict in the request's units (+ "rsns"). Rounding: see
        protection_codes(). Reported mV/mA are the applied thresholds to the nearest unit.
        AfeError if the readback differs from what was written."""
        regs = self.protection_codes(
            ov_mv, ov_delay_ms, uv_mv, uv_delay_ms, ocd_ma, ocd_delay_ms, scd_ma, scd_delay_us
        )
        d = self._bdat
        for i in range(5):
            d[i] = regs[i]
        self._cfg_ok = False  # read() refuses readings until the chip is seen to hold it
        self._write_block(_PROTECT1, 5, memoryview(self._bbuf)[: 5 * self._s])
        s = self._read_regs(_PROTECT1, 5)
        rb = self._rbuf
        got = (rb[0] & 0x9F, rb[s] & 0x7F, rb[2 * s] & 0xF0, rb[3 * s], rb[4 * s])
        if got != regs:
            raise AfeError("protection readback mismatch")
        self._prot = regs
        # Verified only together with a completed init() since the chip last lost its
        # configuration: protection registers alone on a reset chip are not enough.
        self._cfg_ok = self._inited
        if self._inited:
            self._cfg_err = 0
        return self.decode_protection(*got)

    def read_protection(self):
        """Decode the protection registers as they are in the chip now."""
        s = self._read_regs(_PROTECT1, 5)
        rb = self._rbuf
        return self.decode_protection(rb[0], rb[s], rb[2 * s], rb[3 * s], rb[4 * s])
