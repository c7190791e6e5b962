# BQ769x0 driver against datasheet values (reference bq769x0.md), with the minimal fake in
# host_tests/fakes/fake_bq.py. Runs under CPython (pytest) and MicroPython (run_mpy.py).
import math

from fake_bq import FakeBQ, crc_bits
from testlib import approx, raises

from bms import afe
from bms import bq769x0 as bq
from bms.afe import (
    CFG_ERR,
    TRIP_ALL,
    TRIP_DEVICE,
    TRIP_OCD,
    TRIP_OV,
    TRIP_OVRD,
    TRIP_SCD,
    TRIP_UV,
    AfeConfigError,
)
from bms.balancing import Balancer, mask_ok
from bms.bq769x0 import (
    ATTEMPTS,
    AfeBusError,
    AfeCrcError,
    AfeError,
    BQ769x0,
)
from bms.config import Config
from bms.snapshot import (
    FLAG_CC_NEW,
    FLAG_CELLS_VALID,
    FLAG_CURRENT_VALID,
    FLAG_PACK_VALID,
    FLAG_TEMPS_VALID,
    TEMP_INVALID_DC,
    Snapshot,
)

# SYS_STAT bits (DS Table 8-3, reference 2.2); written here, not taken from the driver.
ST_CC_READY = 0x80
ST_RSVD = 0x40
ST_XREADY = 0x20
ST_OVRD = 0x10
ST_UV = 0x08
ST_OV = 0x04
ST_SCD = 0x02
ST_OCD = 0x01
# SYS_CTRL1 / SYS_CTRL2 bits (DS Tables 8-7, 8-8, reference 2.3 / 2.4)
LOAD_PRESENT = 0x80
ADC_EN = 0x10
TEMP_SEL = 0x08
SHUT_A = 0x02
SHUT_B = 0x01
DELAY_DIS = 0x80
CC_EN = 0x40
CC_ONESHOT = 0x20
DSG_ON = 0x02
CHG_ON = 0x01
# Register addresses (DS Table 8-2)
SYS_STAT, CELLBAL1, CELLBAL2, CELLBAL3, SYS_CTRL1, SYS_CTRL2 = 0, 1, 2, 3, 4, 5
PROTECT1, PROTECT2, PROTECT3, OV_TRIP, UV_TRIP, CC_CFG = 6, 7, 8, 9, 10, 11
# Bits of each control register that carry a setting (reference 2.1 .. 2.5): reserved and
# read-only bits left out.
MEANINGFUL = {
    CELLBAL1: 0x1F, CELLBAL2: 0x1F, CELLBAL3: 0x1F, SYS_CTRL1: 0x1F, SYS_CTRL2: 0xE3,
    PROTECT1: 0x9F, PROTECT2: 0x7F, PROTECT3: 0xF0, OV_TRIP: 0xFF, UV_TRIP: 0xFF, CC_CFG: 0x3F,
}

# DS Tables 9-2 .. 9-4 (reference 6), written out independently of the driver's rule.
MAPS = {
    (76920, 3): (1, 2, 5),
    (76920, 4): (1, 2, 3, 5),
    (76920, 5): (1, 2, 3, 4, 5),
    (76930, 6): (1, 2, 5, 6, 7, 10),
    (76930, 7): (1, 2, 3, 5, 6, 7, 10),
    (76930, 8): (1, 2, 3, 5, 6, 7, 8, 10),
    (76930, 9): (1, 2, 3, 4, 5, 6, 7, 8, 10),
    (76930, 10): (1, 2, 3, 4, 5, 6, 7, 8, 9, 10),
    (76940, 9): (1, 2, 5, 6, 7, 10, 11, 12, 15),
    (76940, 10): (1, 2, 3, 5, 6, 7, 10, 11, 12, 15),
    (76940, 11): (1, 2, 3, 5, 6, 7, 8, 10, 11, 12, 15),
    (76940, 12): (1, 2, 3, 5, 6, 7, 8, 10, 11, 12, 13, 15),
    (76940, 13): (1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15),
    (76940, 14): (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15),
    (76940, 15): tuple(range(1, 16)),
}


def protect(drv):
    """configure_protection() with a plausible request this shunt can honour."""
    ocd, scd = drv.current_floor_ma()
    return drv.configure_protection(
        4200, 1000, 2800, 1000, max(30000, 2 * ocd), 8, max(60000, 3 * scd), 70
    )


def make(cells=5, address=0x08, crc=True, gain=382, offset=0, log=True, prot=True, **kw):
    """A fake chip and a driver after init() and (prot) configure_protection()."""
    fake = FakeBQ(address=address, crc=crc, gain_uv=gain, offset_mv=offset)
    drv = BQ769x0(fake, cells, address=address, crc=crc, **kw)
    drv.init()
    if prot:
        protect(drv)
    snap = Snapshot(cells, kw.get("n_temps", 1))
    if log:
        fake.log = []
    return fake, drv, snap


def fill_cells(fake, drv, base_mv=3700):
    """Every used channel base_mv + 10 * cell index; the shorted ones 0."""
    for ch in range(1, 5 * drv.groups + 1):
        fake.set_cell_adc(ch, 0)
    for i, ch in enumerate(drv.channels):
        fake.set_cell_mv(ch, base_mv + 10 * i)


def cb_regs(channels, mask):
    """CELLBAL1..3 for a cell mask, from the datasheet map (CBn bleeds channel n)."""
    r = [0, 0, 0]
    for i in range(len(channels)):
        if mask >> i & 1:
            c = channels[i] - 1
            r[c // 5] |= 1 << (c % 5)
    return r


def masked(fake):
    """The meaningful bits of the control registers 0x01..0x0B."""
    return {a: fake.regs[a] & m for a, m in MEANINGFUL.items()}


# ------------------------------------------------------------------ construction


def test_constructor_validation():
    f = FakeBQ()
    raises(ValueError, BQ769x0, f, 2)
    raises(ValueError, BQ769x0, f, 16)
    raises(ValueError, BQ769x0, f, 5, address=0x10)
    raises(ValueError, BQ769x0, f, 5, shunt_uohm=0)
    raises(ValueError, BQ769x0, f, 5, n_temps=2)  # BQ76920 has one TS input
    raises(ValueError, BQ769x0, f, 10, n_temps=3)
    raises(ValueError, BQ769x0, f, 5, temp_source="board")
    raises(ValueError, BQ769x0, f, 5, cc_sign=0)
    raises(ValueError, BQ769x0, f, 5, thermistor_beta=10)
    raises(ValueError, BQ769x0, f, 5, variant="bq76950")
    raises(ValueError, BQ769x0, f, 6, variant="bq76920")
    raises(ValueError, BQ769x0, f, 8, variant=76940)  # 3 groups need >= 9 cells
    raises(ValueError, BQ769x0, f, 11, variant=76930)
    BQ769x0(f, 15, n_temps=3)
    BQ769x0(f, 9, variant="BQ76940", n_temps=3)


def test_errors_are_the_chip_neutral_ones():
    assert bq.AfeError is afe.AfeError and bq.AfeBusError is afe.AfeBusError
    assert bq.AfeCrcError is afe.AfeCrcError and bq.AfeConfigError is afe.AfeConfigError
    for e in (afe.AfeBusError, afe.AfeCrcError, afe.AfeConfigError):
        assert issubclass(e, afe.AfeError)


def test_input_maps_all_cell_counts():
    for (variant, cells), chans in MAPS.items():
        assert bq.input_map(cells, variant) == chans, (variant, cells)
    # default variant by cell count
    assert bq.variant_for(3) == 76920 and bq.variant_for(5) == 76920
    assert bq.variant_for(6) == 76930 and bq.variant_for(10) == 76930
    assert bq.variant_for(11) == 76940 and bq.variant_for(15) == 76940
    assert bq.input_map(3) == (1, 2, 5)
    assert bq.input_map(5) == (1, 2, 3, 4, 5)
    assert bq.input_map(10) == tuple(range(1, 11))
    assert bq.input_map(15) == tuple(range(1, 16))
    # a BQ76940 board with 9 or 10 cells says so explicitly
    assert bq.input_map(9, "bq76940") == MAPS[(76940, 9)]
    assert bq.input_map(10, 40) == MAPS[(76940, 10)]
    assert bq.input_map(9) == MAPS[(76930, 9)]


def test_cell_groups_follow_the_datasheet_groups():
    # group of a cell = the 5-input group of its channel (VC1-5, VC6-10, VC11-15), DS 9.1.8
    for (variant, cells), chans in MAPS.items():
        drv = BQ769x0(FakeBQ(), cells, variant=variant)
        want = tuple((c - 1) // 5 for c in chans)
        assert tuple(drv.cell_groups) == want, (variant, cells)
        assert drv.channels == chans
        for g in range(drv.groups):  # >= 3 cells in every group of the variant
            assert want.count(g) >= 3, (variant, cells)


# ------------------------------------------------------------------ init


def test_init_sequence_crc_0x08():
    fake = FakeBQ(address=0x08, crc=True)
    fake.log = []
    fake.regs[0] = 0xBF  # everything latched at boot
    drv = BQ769x0(fake, 5)
    drv.init()
    w = [(e[1], e[2]) for e in fake.log if e[0] == "w"]
    assert (0x0B, b"\x19") in w
    assert (0x04, b"\x18") in w  # ADC_EN | TEMP_SEL, SHUT bits 0
    assert (0x05, b"\x40") in w  # CC_EN, FETs off
    assert (0x00, b"\xff") in w  # SYS_STAT cleared once
    assert (0x01, b"\x00") in w  # balancing off
    assert w[0] == (0x0B, b"\x19")
    assert fake.regs[0x0B] == 0x19 and fake.regs[4] == 0x18 and fake.regs[5] == 0x40
    assert fake.regs[0] == 0
    assert fake.bad_crc_writes == 0 and fake.reserved_violations == 0
    assert drv.gain_uv == 382 and drv.offset_mv == 0
    # SYS_CTRL1 and SYS_CTRL2 read back (one block, with CRC bytes) after they were written
    r = fake.reads()
    assert (0x04, 4) in r
    last_ctrl_write = max(i for i, e in enumerate(fake.log) if e[0] == "w" and e[1] in (4, 5))
    assert any(e[0] == "r" and e[1] == 0x04 for e in fake.log[last_ctrl_write:])


def test_init_fails_when_sys_ctrl_does_not_hold():
    for reg in (0x04, 0x05):
        fake = FakeBQ()
        orig = fake._store

        def stuck(r, v, reg=reg, orig=orig):
            if r != reg:
                orig(r, v)

        fake._store = stuck
        drv = BQ769x0(fake, 5)
        raises(AfeError, drv.init)


def test_init_other_address_and_no_crc():
    for address in (0x08, 0x18):
        for crc in (True, False):
            fake, drv, _ = make(5, address=address, crc=crc, gain=380, offset=30)
            assert fake.regs[0x0B] == 0x19
            assert fake.regs[4] == 0x18 and fake.regs[5] == 0x40
            assert drv.gain_uv == 380 and drv.offset_mv == 30
            assert fake.bad_crc_writes == 0


def test_init_die_temperature_selects_temp_sel_0():
    fake, drv, _ = make(5, temp_source="die")
    assert fake.regs[4] == 0x10


def test_init_wrong_crc_setting_fails():
    fake = FakeBQ(crc=True)
    drv = BQ769x0(fake, 5, crc=False)  # CRC part driven as non-CRC: writes are refused
    raises(AfeError, drv.init)


# ------------------------------------------------------------------ gain, offset, cells


def test_gain_offset_encoding():
    for gain in (365, 380, 382, 396):
        for off in (-128, -1, 0, 30, 127):
            fake, drv, _ = make(5, gain=gain, offset=off, log=False)
            assert drv.gain_uv == gain and drv.offset_mv == off


def test_negative_offset_0xff_is_minus_1mv():
    fake = FakeBQ()
    fake.set_gain(382, 0)
    fake.regs[0x51] = 0xFF
    drv = BQ769x0(fake, 5)
    drv.init()
    assert drv.offset_mv == -1
    assert drv.adc_to_mv(10000) == 3820 - 1
    fake.regs[0x51] = 0x80
    drv.init()
    assert drv.offset_mv == -128
    fake.regs[0x51] = 0x7F
    drv.init()
    assert drv.offset_mv == 127


def test_ds_cell_examples_gain380_offset30():
    fake, drv, snap = make(5, gain=380, offset=30)
    assert drv.adc_to_mv(0x1800) == 2365
    assert drv.adc_to_mv(0x1F10) == 3052
    fake.set_cell_adc(1, 0x1800)
    fake.set_cell_adc(2, 0x1F10)
    for ch in (3, 4, 5):
        fake.set_cell_adc(ch, 0x1F10)
    drv.read(snap, 0)
    assert snap.cell_mv[0] == 2365 and snap.cell_mv[1] == 3052
    assert snap.cell_min_mv == 2365 and snap.cell_min_idx == 0


def test_cells_follow_input_map():
    for (variant, cells), chans in MAPS.items():
        fake, drv, snap = make(cells, variant=variant, log=False)
        fill_cells(fake, drv)
        drv.read(snap, 0)
        for i in range(cells):
            assert approx(snap.cell_mv[i], 3700 + 10 * i, 1), (variant, cells, i)
        assert snap.flags & FLAG_CELLS_VALID
        assert drv.channels == chans


def test_negative_offset_cells():
    fake, drv, snap = make(3, offset=-1, log=False)
    fake.set_cell_adc(1, 10000)
    fake.set_cell_adc(2, 10000)
    fake.set_cell_adc(5, 10000)
    drv.read(snap, 0)
    assert list(snap.cell_mv) == [3819, 3819, 3819]


def test_implausible_cells_are_readings_not_invalid():
    # CELLS_VALID = read, CRC-checked, ADC converting; 0.5..5 V is protection's judgement.
    fake, drv, snap = make(5, log=False)
    fill_cells(fake, drv)
    drv.read(snap, 0)
    assert snap.flags & FLAG_CELLS_VALID
    fake.set_cell_mv(3, 450)  # below 500 mV on a used input (an open tap, a dead cell)
    drv.read(snap, 250)
    assert snap.flags & FLAG_CELLS_VALID and snap.flags & FLAG_PACK_VALID
    assert approx(snap.cell_mv[2], 450, 1) and snap.cell_min_idx == 2
    fill_cells(fake, drv)
    fake.set_cell_mv(5, 5010)  # above 5000 mV
    drv.read(snap, 500)
    assert snap.flags & FLAG_CELLS_VALID
    assert approx(snap.cell_mv[4], 5010, 1) and snap.cell_max_idx == 4
    fake.set_cell_adc(5, 0)  # one used input reads 0: still a reading
    drv.read(snap, 750)
    assert snap.flags & FLAG_CELLS_VALID and snap.cell_mv[4] == 0


def test_all_zero_cells_are_not_a_reading():
    # Every used cell code 0: the ADC has not converted (after boot, or a reset with the ADC
    # off and the data cleared) - neither cells nor pack are readings.
    for cells, variant in ((5, None), (10, None), (9, 76940), (15, None)):
        fake, drv, snap = make(cells, variant=variant, log=False)
        for ch in range(1, 16):
            fake.set_cell_adc(ch, 0)
        fake.set_bat(0)
        drv.read(snap, 0)
        assert snap.flags & (FLAG_CELLS_VALID | FLAG_PACK_VALID) == 0, (cells, variant)
        assert snap.flags == 0  # no CC sample, before the temperature hold-off
        assert snap.cfg_err == 0 and snap.errors == 0
        fill_cells(fake, drv)
        drv.read(snap, 250)
        assert snap.flags & FLAG_CELLS_VALID and snap.flags & FLAG_PACK_VALID


def test_shorted_inputs_are_not_checked():
    fake, drv, snap = make(3, log=False)  # channels 3 and 4 shorted, read 0
    fill_cells(fake, drv)
    drv.read(snap, 0)
    assert snap.flags & FLAG_CELLS_VALID


def test_pack_voltage():
    # V_BAT = 4 x GAIN x BAT + cells x OFFSET (cells = configured cells)
    fake, drv, snap = make(5, gain=380, offset=30, log=False)
    fill_cells(fake, drv)
    fake.set_bat(12000)
    drv.read(snap, 0)
    assert snap.pack_mv == 4 * 380 * 12000 // 1000 + 5 * 30
    assert snap.flags & FLAG_PACK_VALID
    fake, drv, snap = make(15, gain=396, offset=-5, n_temps=3, log=False)
    fill_cells(fake, drv)
    fake.set_bat(0xFFFF)  # full 16 bits, no masking
    drv.read(snap, 0)
    assert snap.pack_mv == (4 * 396 * 0xFFFF + 500) // 1000 - 15 * 5


# ------------------------------------------------------------------ coulomb counter


def test_cc_value_table():
    # DS 3.4: raw -> uV; with a 1 mOhm shunt mA = uV.
    table = (
        (0x0001, 8.44),
        (0x2710, 84400.0),
        (0x7D00, 270080.0),
        (0x8300, -270080.0),
        (0xC350, -131123.84),
        (0xFFFF, -8.44),
    )
    for shunt in (1000, 5000, 333):
        fake, drv, snap = make(5, shunt_uohm=shunt, log=False)
        fill_cells(fake, drv)
        t = 0
        for raw, uv in table:
            fake.set_cc(raw)
            drv.read(snap, t)
            t += 250
            want = uv * 1000.0 / shunt
            assert abs(snap.current_ma - want) <= 0.5 + 1e-6, (shunt, raw, snap.current_ma)
            assert snap.flags & FLAG_CC_NEW and snap.flags & FLAG_CURRENT_VALID


def test_cc_sign_convention():
    # + = charging = positive raw CC with cc_sign=+1; cc_sign=-1 for the reverse wiring.
    fake, drv, snap = make(5, shunt_uohm=1000, log=False)
    fill_cells(fake, drv)
    fake.set_cc(0x2710)
    drv.read(snap, 0)
    assert snap.current_ma == 84400
    fake, drv, snap = make(5, shunt_uohm=1000, cc_sign=-1, log=False)
    fill_cells(fake, drv)
    fake.set_cc(0x2710)
    drv.read(snap, 0)
    assert snap.current_ma == -84400
    fake.set_cc(0xFFFF)
    drv.read(snap, 250)
    assert snap.current_ma == 8


def test_cc_ready_consumed_and_cleared_alone():
    fake, drv, snap = make(5)
    fill_cells(fake, drv)
    fake.regs[0] = ST_OV | ST_XREADY
    fake.set_cc(100)
    drv.read(snap, 0)
    assert snap.trips == TRIP_OV | TRIP_DEVICE
    assert fake.writes(0x00) == [bytes((ST_CC_READY,))]  # CC_READY alone (W1C)
    assert fake.regs[0] == ST_OV | ST_XREADY  # the rest stays latched
    assert snap.cc_seq == 1 and snap.cc_samples == 1 and snap.cc_sum_ma == snap.current_ma
    assert snap.current_ma == (100 * 8440 + 500) // 1000
    # no CC_READY: a changed CC register is not a sample, nothing written, current still
    # valid (previous cycle)
    fake.log = []
    fake.set_cc(-5000, ready=False)
    drv.read(snap, 250)
    assert fake.writes() == []
    assert not snap.flags & FLAG_CC_NEW
    assert snap.flags & FLAG_CURRENT_VALID
    assert snap.current_ma == (100 * 8440 + 500) // 1000 and snap.cc_samples == 1
    drv.read(snap, 500)
    assert not snap.flags & FLAG_CURRENT_VALID  # two cycles without a CC sample
    assert snap.cc_seq == 1
    # CC_READY together with every trip bit: still CC_READY alone is written
    fake.log = []
    fake.regs[0] = 0x3F
    fake.set_cc(-5000)
    drv.read(snap, 750)
    assert fake.writes(0x00) == [bytes((ST_CC_READY,))]
    assert fake.regs[0] == 0x3F and snap.trips == TRIP_ALL
    assert snap.flags & FLAG_CC_NEW and snap.current_ma < 0


def test_cc_accumulation_and_missed_samples():
    fake, drv, snap = make(5, shunt_uohm=1000, log=False)
    fill_cells(fake, drv)
    fake.set_cc(1000)  # 8440 mA
    drv.read(snap, 1000)
    fake.set_cc(1000)
    drv.read(snap, 1250)
    assert snap.cc_samples == 2 and snap.cc_sum_ma == 2 * 8440 and snap.cc_missed == 0
    fake.set_cc(2000)  # 16880 mA, 750 ms after the last sample: 2 missed
    drv.read(snap, 2000)
    assert snap.cc_missed == 2
    assert snap.cc_samples == 5
    assert snap.cc_seq == 5
    assert snap.cc_sum_ma == 2 * 8440 + 3 * 16880
    # the estimator drains the accumulator
    snap.cc_sum_ma = 0
    snap.cc_samples = 0
    fake.set_cc(1000)
    drv.read(snap, 2490)  # < 2 x 250 ms: nothing missed
    assert snap.cc_samples == 1 and snap.cc_missed == 2 and snap.cc_sum_ma == 8440


# ------------------------------------------------------------------ temperatures


def _ts_adc(temp_c, beta=3435):
    r = 10000.0 * math.exp(beta * (1.0 / (temp_c + 273.15) - 1.0 / 298.15))
    return int(3.3 * r / (10000.0 + r) / 382e-6 + 0.5)


def _die_adc(temp_c):
    return int((1.200 - 0.0042 * (temp_c - 25)) / 382e-6 + 0.5)


WARM = 2500  # first read + this: the first temperature conversion after init is in


def test_thermistor_beta():
    fake, drv, snap = make(15, n_temps=3, log=False)
    fill_cells(fake, drv)
    drv.read(snap, 0)
    t = WARM
    for temps in ((25, -20, 60), (0, 45, 100), (-35, 10, 120)):
        for i in range(3):
            fake.set_ts(i + 1, _ts_adc(temps[i]))
        drv.read(snap, t)
        t += 250
        for i in range(3):
            assert approx(snap.temp_dc[i], temps[i] * 10, 3), (temps, snap.temp_dc[i])
        assert snap.flags & FLAG_TEMPS_VALID
        assert snap.temp_min_dc == min(snap.temp_dc) and snap.temp_max_dc == max(snap.temp_dc)
    # 10 kOhm -> 1.65 V -> ADC 4319 -> 25.0 degC
    assert approx(drv.ts_to_dc(4319), 250, 1)
    fake2, drv2, snap2 = make(5, thermistor_beta=3950, log=False)
    assert approx(drv2.ts_to_dc(_ts_adc(60, 3950)), 600, 3)


def test_thermistor_open_and_short_are_invalid():
    fake, drv, snap = make(10, n_temps=2, log=False)
    fill_cells(fake, drv)
    drv.read(snap, 0)
    fake.set_ts(1, 8639)  # open: ~3.3 V
    fake.set_ts(2, 0)  # shorted
    drv.read(snap, WARM)
    assert snap.temp_dc[0] == TEMP_INVALID_DC and snap.temp_dc[1] == TEMP_INVALID_DC
    assert snap.temp_min_dc == TEMP_INVALID_DC
    fake.set_ts(1, 0x3FFF)
    fake.set_ts(2, 30)
    drv.read(snap, WARM + 250)
    assert snap.temp_dc[0] == TEMP_INVALID_DC and snap.temp_dc[1] == TEMP_INVALID_DC
    fake.set_ts(2, _ts_adc(30))
    drv.read(snap, WARM + 500)
    assert snap.temp_dc[0] == TEMP_INVALID_DC and approx(snap.temp_dc[1], 300, 3)
    assert snap.temp_min_dc == snap.temp_dc[1] == snap.temp_max_dc


def test_thermistor_table_option():
    # (temp_dc, ohm) of a 10k/3435 NTC; the table drives the conversion instead of beta
    pts = [
        (t * 10, 10000.0 * math.exp(3435 * (1 / (t + 273.15) - 1 / 298.15)))
        for t in range(-40, 130, 5)
    ]
    fake, drv, snap = make(5, thermistor_table=pts, log=False)
    for t in (-30, 0, 25, 47, 90):
        assert approx(drv.ts_to_dc(_ts_adc(t)), t * 10, 4), t
    assert drv.ts_to_dc(8639) == TEMP_INVALID_DC
    raises(ValueError, BQ769x0, FakeBQ(), 5, thermistor_table=[(250, 10000)])


def test_die_temperature():
    fake, drv, snap = make(5, temp_source="die", log=False)
    fill_cells(fake, drv)
    fake.set_ts(1, _die_adc(25))  # V25 = 1.200 V
    drv.read(snap, 0)
    drv.read(snap, WARM)
    assert approx(snap.die_temp_dc, 250, 1)
    assert snap.temp_dc[0] == TEMP_INVALID_DC
    assert not snap.flags & FLAG_TEMPS_VALID  # no thermistors with TEMP_SEL = 0
    fake.set_ts(1, _die_adc(60))
    drv.read(snap, WARM + 250)
    assert approx(snap.die_temp_dc, 600, 2)
    fake.set_ts(1, 0)
    drv.read(snap, WARM + 500)
    assert snap.die_temp_dc == TEMP_INVALID_DC


def test_stalled_conversions_are_not_readings():
    # With CC_EN the coulomb counter delivers every 250 ms (DS 8.3.1.1.3). Two reads in a
    # row without CC_READY: the chip's scheduler stopped, every result register is frozen,
    # so nothing is a reading. When results come back the thermistors wait for a conversion
    # of their own (up to 2 s + tolerance), as after init().
    fake, drv, snap = make(10, n_temps=2, log=False)
    fill_cells(fake, drv)
    fake.set_ts(1, _ts_adc(25))
    fake.set_ts(2, _ts_adc(30))
    t = 1000
    for _ in range(12):  # 3 s of a converting chip
        fake.regs[0] |= 0x80
        drv.read(snap, t)
        t += 250
    assert snap.flags & FLAG_TEMPS_VALID and snap.flags & FLAG_CURRENT_VALID
    drv.read(snap, t)  # one period without a result: jitter, still the last current
    assert snap.flags & FLAG_CELLS_VALID and snap.flags & FLAG_CURRENT_VALID
    t += 250
    drv.read(snap, t)  # two: stalled
    assert snap.flags == 0 and snap.errors == 0 and snap.cfg_err == 0
    t += 250
    drv.read(snap, t)
    assert snap.flags == 0
    t += 250
    fake.regs[0] |= 0x80  # converting again
    drv.read(snap, t)
    assert snap.flags & FLAG_CELLS_VALID and snap.flags & FLAG_CURRENT_VALID
    assert not snap.flags & FLAG_TEMPS_VALID
    t0 = t
    while t < t0 + WARM:
        t += 250
        fake.regs[0] |= 0x80
        drv.read(snap, t)
        assert bool(snap.flags & FLAG_TEMPS_VALID) == (t - t0 >= WARM), t - t0


def test_temperatures_held_off_after_init():
    # TEMP_SEL written at init: the first conversion comes up to 2 s later (DS 8.3.1.1.5,
    # tTEMP, +3.5 % timing); until then a TS register holds 0 or, after a reset with
    # TEMP_SEL = 0, the die temperature. The driver waits 2.5 s from its first read.
    fake, drv, snap = make(10, n_temps=2, log=False)
    fill_cells(fake, drv)
    fake.set_ts(1, _ts_adc(25))
    fake.set_ts(2, _ts_adc(30))
    t0 = 7000
    for dt in (0, 250, 1000, 2000, WARM - 1):
        drv.read(snap, t0 + dt)
        assert not snap.flags & FLAG_TEMPS_VALID, dt
        assert snap.flags & FLAG_CELLS_VALID
    drv.read(snap, t0 + WARM)
    assert snap.flags & FLAG_TEMPS_VALID
    assert approx(snap.temp_dc[0], 250, 3) and approx(snap.temp_dc[1], 300, 3)
    # init() starts the hold-off again (a reset may have left the die temperature there)
    drv.init()
    protect(drv)
    drv.read(snap, 20000)
    assert not snap.flags & FLAG_TEMPS_VALID
    drv.read(snap, 20000 + WARM - 1)
    assert not snap.flags & FLAG_TEMPS_VALID
    drv.read(snap, 20000 + WARM)
    assert snap.flags & FLAG_TEMPS_VALID
    # die temperature likewise: not reported before the hold-off
    fake, drv, snap = make(5, temp_source="die", log=False)
    fill_cells(fake, drv)
    fake.set_ts(1, _die_adc(40))
    drv.read(snap, 100)
    assert snap.die_temp_dc == TEMP_INVALID_DC
    drv.read(snap, 100 + WARM - 1)
    assert snap.die_temp_dc == TEMP_INVALID_DC
    drv.read(snap, 100 + WARM)
    assert approx(snap.die_temp_dc, 400, 2)


# ------------------------------------------------------------------ transactions, errors


def test_read_transactions():
    # One block SYS_STAT .. top cell channel (0x00 .. VC5_LO/VC10_LO/VC15_LO), then BAT ..
    # CC_LO (0x2A .. 0x33); contiguous on the BQ76940, so one block there. CRC parts clock
    # a CRC byte after every data byte. HI/LO pairs always in one transaction (DS 8.3.1.1).
    cases = (
        # cells, variant, crc, n_temps, reads
        (5, None, True, 1, [(0x00, 2 * 0x16), (0x2A, 2 * 10)]),
        (3, None, False, 1, [(0x00, 0x16), (0x2A, 10)]),
        (10, None, True, 2, [(0x00, 2 * 0x20), (0x2A, 2 * 10)]),
        (6, None, False, 2, [(0x00, 0x20), (0x2A, 10)]),
        (15, None, True, 3, [(0x00, 2 * 0x34)]),
        (9, 76940, True, 3, [(0x00, 2 * 0x34)]),
        (12, None, False, 1, [(0x00, 0x34)]),
    )
    for cells, variant, crc, n_t, reads in cases:
        fake, drv, snap = make(cells, crc=crc, variant=variant, n_temps=n_t)
        fill_cells(fake, drv)
        fake.set_cc(5)
        drv.read(snap, 0)
        assert fake.reads() == reads, (cells, crc, fake.reads())
        assert fake.writes() == [bytes((ST_CC_READY,))]  # CC_READY consumed
        fake.log = []
        drv.read(snap, 250)  # no CC_READY: the same reads (CC always read), no write
        assert fake.reads() == reads and fake.writes() == []


def test_bad_crc_retried_then_crc_error():
    fake, drv, snap = make(5)
    fill_cells(fake, drv)
    drv.read(snap, 0)
    assert snap.seq == 1
    fake.log = []
    fake.corrupt_reads = 1  # first attempt bad, retry good
    drv.read(snap, 250)
    assert fake.reads()[:2] == [(0x00, 44), (0x00, 44)]  # register address sent again
    assert snap.errors == 0 and snap.seq == 2
    fake.log = []
    fake.corrupt_reads = 100
    e = raises(AfeCrcError, drv.read, snap, 500)
    assert isinstance(e, AfeError)
    assert fake.reads() == [(0x00, 44)] * ATTEMPTS
    assert snap.errors == 1 and snap.error_total == 1 and snap.flags == 0
    assert snap.seq == 2 and snap.t_ms == 250
    fake.corrupt_reads = 0
    drv.read(snap, 750)
    assert snap.errors == 0 and snap.error_total == 1


def test_bad_crc_in_a_later_byte():
    cases = (
        (0x00, 2 * (0x0C + 3), [(0x00, 44)] * ATTEMPTS),  # a cell byte: first block again
        (0x2A, 2 * 3, [(0x00, 44)] + [(0x2A, 20)] * ATTEMPTS),  # a TS byte: second block
    )
    for reg, idx, reads in cases:
        fake, drv, snap = make(5)
        fill_cells(fake, drv)
        fake.log = []
        orig = fake.readfrom_mem_into

        def flip(addr, r, buf, reg=reg, idx=idx, orig=orig):  # corrupt one data byte
            orig(addr, r, buf)
            if r == reg:
                buf[idx] ^= 0x01

        fake.readfrom_mem_into = flip
        raises(AfeCrcError, drv.read, snap, 0)
        assert fake.reads() == reads
        assert snap.errors == 1 and snap.flags == 0 and snap.seq == 0


def test_nack_retried_then_bus_error():
    fake, drv, snap = make(5)
    fill_cells(fake, drv)
    fake.nack_reads = 2  # two NACKs, third attempt works
    drv.read(snap, 0)
    assert snap.errors == 0
    assert fake.reads()[:3] == [(0x00, 44)] * 3
    fake.log = []
    fake.nack_reads = 100
    e = raises(AfeBusError, drv.read, snap, 250)
    assert isinstance(e, AfeError)
    assert fake.reads() == [(0x00, 44)] * ATTEMPTS
    assert snap.errors == 1 and snap.flags == 0
    raises(AfeBusError, drv.read, snap, 500)
    assert snap.errors == 2 and snap.error_total == 2
    assert snap.cfg_err == 0  # a bus failure is not a configuration error
    fake.nack_reads = 0
    fake.nack_writes = 100
    raises(AfeBusError, drv.set_fets, True, True)
    fake.nack_writes = 1
    drv.set_fets(True, True)
    assert fake.regs[5] == 0x43


# ------------------------------------------------------------------ integrity check


def _refused(drv, snap, t):
    """read() refuses: AfeConfigError, cfg_err set, flags 0, bus counted as working, and the
    snapshot's successful-read fields untouched."""
    seq, t_ms, total = snap.seq, snap.t_ms, snap.error_total
    raises(AfeConfigError, drv.read, snap, t)
    assert snap.cfg_err & CFG_ERR, snap.cfg_err
    assert snap.flags == 0 and snap.errors == 0 and snap.error_total == total
    assert snap.seq == seq and snap.t_ms == t_ms
    return snap.cfg_err & 0xFF


def _no_fet_bit_written(fake, since):
    for e in fake.log[since:]:
        if e[0] == "w" and e[1] <= 0x05 < e[1] + len(e[2]):
            assert e[2][0x05 - e[1]] & (CHG_ON | DSG_ON) == 0, e
    assert fake.regs[5] & (CHG_ON | DSG_ON) == 0


def test_reads_refused_until_protection_configured():
    # after init() alone the protection registers hold the chip's defaults, not the limits:
    # no reading is handed on, and no FET closes (cfg_err = CFG_ERR | 0xFF: not configured)
    for cells, crc in ((5, True), (15, False)):
        fake, drv, snap = make(cells, crc=crc, prot=False, n_temps=1)
        fill_cells(fake, drv)
        assert _refused(drv, snap, 0) == 0xFF
        assert _refused(drv, snap, 250) == 0xFF
        drv.set_fets(True, True)
        drv.restore()
        _no_fet_bit_written(fake, 0)
        protect(drv)
        drv.read(snap, 500)
        assert snap.cfg_err == 0 and snap.flags & FLAG_CELLS_VALID and snap.seq == 1
        drv.set_fets(True, True)
        assert fake.regs[5] == CC_EN | CHG_ON | DSG_ON


def test_reads_refused_after_reinit_until_protection_configured():
    fake, drv, snap = make(5)
    fill_cells(fake, drv)
    drv.read(snap, 0)
    fake.power_on_reset(adc_on=True)
    _refused(drv, snap, 250)
    drv.init()
    # the register that was lost is written again: what is missing now is the protection
    assert _refused(drv, snap, 500) == 0xFF


def test_reset_detected_with_adc_on_and_off():
    # A reset of the chip while the MCU runs (reference 8.1: registers are RAM, defaults
    # come back): OV_TRIP 0xAC, UV_TRIP 0x97, all else 0; ADC_EN back on by itself or not
    # (DS ambiguity, reference 2.3); the measurement registers still hold the last
    # conversion, so the cells alone look perfectly good.
    configs = (
        # cells, crc, address, temp_source, variant, n_temps
        (5, True, 0x08, "ext", None, 1),
        (4, False, 0x18, "die", None, 1),
        (10, True, 0x08, "die", None, 2),
        (9, True, 0x18, "ext", "bq76940", 3),
        (15, False, 0x08, "ext", None, 3),
    )
    for cfg in configs:
        for adc_on in (True, False):
            cells, crc, address, ts, variant, n_t = cfg
            fake, drv, snap = make(cells, crc=crc, address=address, temp_source=ts,
                                   variant=variant, n_temps=n_t)
            fill_cells(fake, drv)
            fake.set_bat(12000)
            fake.set_ts(1, _ts_adc(25))
            drv.set_fets(True, True)
            drv.set_balance(1)
            drv.read(snap, 0)
            assert snap.flags & FLAG_CELLS_VALID and snap.cfg_err == 0
            before = masked(fake)
            fake.power_on_reset(adc_on=adc_on, keep_data=True)
            assert fake.regs[9] == 0xAC and fake.regs[10] == 0x97
            assert fake.regs[4] == (ADC_EN if adc_on else 0) and fake.regs[0x0B] == 0
            after = masked(fake)
            lost = [a for a in before if before[a] != after[a]]
            mark = len(fake.log)
            reg = _refused(drv, snap, 250)
            assert reg in lost, (cfg, adc_on, reg, lost)
            # refused on every later read, and no FET closes, whatever is asked
            for k in range(3):
                assert _refused(drv, snap, 500 + 250 * k) & 0xFF
                drv.set_fets(True, True)
                drv.restore()
                drv.set_fets(True, False)
                drv.set_fets(False, True)
            _no_fet_bit_written(fake, mark)
            # init() alone is not enough
            drv.init()
            _refused(drv, snap, 1500)
            drv.set_fets(True, True)
            drv.restore()
            _no_fet_bit_written(fake, mark)
            # init() and configure_protection(): readings and FETs again
            protect(drv)
            drv.read(snap, 1750)
            assert snap.cfg_err == 0 and snap.flags & FLAG_CELLS_VALID, (cfg, adc_on)
            drv.set_fets(True, True)
            assert fake.regs[5] == CC_EN | CHG_ON | DSG_ON
            drv.read(snap, 2000)
            assert snap.chg_fet and snap.dsg_fet


def test_configure_protection_alone_does_not_unlock_after_a_reset():
    # after a detected reset, "until init() AND configure_protection() succeeded again":
    # programming the protection registers alone leaves CC_CFG, SYS_CTRL1 (ADC_EN off: no
    # OV/UV protection, DS 2.3) at their defaults, so no FET may close.
    for adc_on in (False, True):
        fake, drv, snap = make(5)
        fill_cells(fake, drv)
        drv.set_fets(True, True)
        drv.read(snap, 0)
        fake.power_on_reset(adc_on=adc_on)
        _refused(drv, snap, 250)
        mark = len(fake.log)
        protect(drv)
        drv.set_fets(True, True)
        drv.restore()
        _no_fet_bit_written(fake, mark)
        _refused(drv, snap, 500)


def test_init_forgets_fet_commands():
    # init() writes SYS_CTRL2 = CC_EN: FETs off is the last command. The chip never sets
    # CHG_ON/DSG_ON itself (DS Table 8-1), so a FET bit seen after that is an upset.
    fake, drv, snap = make(5)
    fill_cells(fake, drv)
    drv.set_fets(True, True)
    drv.read(snap, 0)
    drv.init()
    protect(drv)
    drv.read(snap, 250)
    assert not snap.chg_fet and not snap.dsg_fet
    fake.regs[5] |= CHG_ON  # not commanded since init()
    assert _refused(drv, snap, 500) == SYS_CTRL2


def _upset_cases(drv, ts):
    """(register, xor mask) of single upsets of a setting the driver programmed."""
    cases = []
    for b in (0x80, 0x10, 0x08, 0x04, 0x02, 0x01):  # RSNS, SCD_D1:0, SCD_T2:0
        cases.append((PROTECT1, b))
    for k in range(7):  # OCD_D2:0, OCD_T3:0
        cases.append((PROTECT2, 1 << k))
    for k in range(4, 8):  # UV_D1:0, OV_D1:0
        cases.append((PROTECT3, 1 << k))
    for k in range(8):
        cases.append((OV_TRIP, 1 << k))
        cases.append((UV_TRIP, 1 << k))
    for k in range(6):  # CC_CFG5:0 (0x19)
        cases.append((CC_CFG, 1 << k))
    # ADC_EN lost, TEMP_SEL flipped, a SHUT bit set, reserved b2 set
    for b in (ADC_EN, TEMP_SEL, SHUT_A, SHUT_B, 0x04):
        cases.append((SYS_CTRL1, b))
    # CC_EN lost, DELAY_DIS / CC_ONESHOT / a reserved bit set
    for b in (CC_EN, DELAY_DIS, CC_ONESHOT, 0x10, 0x08, 0x04):
        cases.append((SYS_CTRL2, b))
    # a CB bit that was not commanded, in every CELLBAL register of the variant
    for g in range(drv.groups):
        cases.append((CELLBAL1 + g, 0x04))
    return cases


def test_upset_of_each_programmed_register_is_detected():
    configs = (
        # cells, crc, temp_source, n_temps
        (15, True, "ext", 3),
        (5, False, "die", 1),
        (10, True, "ext", 2),
    )
    for cells, crc, ts, n_t in configs:
        fake, drv, snap = make(cells, crc=crc, temp_source=ts, n_temps=n_t, log=False)
        fill_cells(fake, drv)
        t = 0
        for reg, x in _upset_cases(drv, ts):
            # commanded: CHG on, DSG off; cell 1 bleeding (CB1)
            drv.set_fets(True, False)
            drv.set_balance(1)
            drv.read(snap, t)
            assert snap.cfg_err == 0 and snap.flags & FLAG_CELLS_VALID, (reg, x)
            fake.regs[reg] ^= x
            assert _refused(drv, snap, t + 250) == reg, (cells, reg, x, snap.cfg_err)
            assert _refused(drv, snap, t + 500) & 0xFF, (reg, x)  # and it stays refused
            drv.set_fets(True, True)
            assert fake.regs[5] & (CHG_ON | DSG_ON) == 0, (reg, x)
            drv.init()
            protect(drv)
            t += 1000
        # a FET bit set that was not commanded (the chip only ever clears them)
        for cmd, x in (((True, False), DSG_ON), ((False, True), CHG_ON), ((False, False), 3)):
            drv.set_fets(*cmd)
            drv.read(snap, t)
            assert snap.cfg_err == 0
            fake.regs[5] |= x
            assert _refused(drv, snap, t + 250) == SYS_CTRL2, (cmd, x)
            drv.init()
            protect(drv)
            t += 1000


def _read_ok(drv, snap, t, why):
    # a converting chip: a coulomb-counter result for every read (CC_EN, 250 ms)
    drv.i2c.regs[0] |= 0x80
    drv.read(snap, t)
    assert snap.cfg_err == 0, (why, snap.cfg_err)
    assert snap.flags & FLAG_CELLS_VALID and snap.errors == 0, why


def test_no_false_alarm_for_what_the_chip_does_itself():
    for cells, crc, n_t in ((15, True, 3), (5, False, 1), (10, True, 2)):
        fake, drv, snap = make(cells, crc=crc, n_temps=n_t, log=False)
        fill_cells(fake, drv)
        drv.set_fets(True, True)
        drv.set_balance(0b101)
        drv.read(snap, 0)
        assert snap.chg_fet and snap.dsg_fet and snap.bal_mask == 0b101
        t = 0
        t += 250
        fake.trip(ST_OV)  # CHG_ON cleared by the chip
        _read_ok(drv, snap, t, "ov")
        assert snap.trips == TRIP_OV and not snap.chg_fet and snap.dsg_fet
        t += 250
        fake.trip(ST_SCD)  # DSG_ON cleared
        _read_ok(drv, snap, t, "scd")
        assert snap.trips == TRIP_OV | TRIP_SCD and not snap.dsg_fet
        t += 250
        fake.trip(ST_UV | ST_OCD)
        _read_ok(drv, snap, t, "uv ocd")
        assert snap.trips == TRIP_OV | TRIP_SCD | TRIP_UV | TRIP_OCD
        t += 250
        fake.trip(ST_XREADY)  # both FETs and every CB bit cleared
        _read_ok(drv, snap, t, "xready")
        assert snap.trips & TRIP_DEVICE and snap.bal_mask == 0
        t += 250
        fake.trip(ST_OVRD)
        _read_ok(drv, snap, t, "ovrd")
        assert snap.trips == TRIP_ALL
        t += 250
        fake.regs[0] |= ST_CC_READY | ST_RSVD
        fake.regs[4] |= LOAD_PRESENT  # valid with CHG off (DS 2.3)
        _read_ok(drv, snap, t, "cc_ready, load present")
        assert drv.load_present
        t += 250
        fake.regs[6] |= 0x40  # read-only bits of PROTECT1 (b6) and PROTECT2 (b7)
        fake.regs[7] |= 0x80
        _read_ok(drv, snap, t, "read-only bits")
        t += 250
        fake.regs[4] &= ~LOAD_PRESENT & 0xFF  # the load went away
        _read_ok(drv, snap, t, "load gone")
        assert not drv.load_present


# ------------------------------------------------------------------ trips, FETs, balancing


def test_ack_trips_clears_ov_uv_ocd_scd_at_once_and_only_those():
    fake, drv, snap = make(5)
    fill_cells(fake, drv)
    fake.regs[0] = ST_OV | ST_UV | ST_SCD | ST_OCD | ST_OVRD | ST_XREADY
    drv.read(snap, 0)
    assert snap.trips == TRIP_ALL
    fake.log = []
    drv.ack_trips(TRIP_OV, 0)
    assert fake.writes() == [bytes((ST_OV,))]  # W1C, that bit alone
    assert fake.regs[0] == ST_UV | ST_SCD | ST_OCD | ST_OVRD | ST_XREADY
    fake.log = []
    drv.ack_trips(TRIP_SCD | TRIP_OCD, 0)
    assert fake.writes() == [bytes((ST_SCD | ST_OCD,))]
    assert fake.regs[0] == ST_UV | ST_OVRD | ST_XREADY
    fake.log = []
    drv.ack_trips(0, 0)
    assert fake.writes() == []
    # everything acknowledged at once: DEVICE and OVRD wait for their hold-off; CC_READY
    # and the reserved b6 are never written by an acknowledgement
    drv.ack_trips(TRIP_ALL, 250)
    assert fake.writes(0x00) == [bytes((ST_OV | ST_UV | ST_SCD | ST_OCD,))]
    assert fake.regs[0] == ST_OVRD | ST_XREADY
    assert fake.reserved_violations == 0


def test_ack_trips_xready_hold_off():
    # DEVICE_XREADY: clear it "after waiting a few seconds" (DS; LS/ARD retry every 3 s,
    # reference 8.3); the chip cleared CHG_ON, DSG_ON and every CB bit, the host writes the
    # CB bits again (reference 7.2).
    fake, drv, snap = make(10)
    fill_cells(fake, drv)
    drv.set_fets(True, True)
    drv.set_balance(0b0100000001)  # cells 1 and 9: CB1, CB9
    drv.read(snap, 0)
    fake.trip(ST_XREADY)
    assert fake.regs[1] == fake.regs[2] == 0 and fake.regs[5] == CC_EN
    t0 = 1000
    drv.read(snap, t0)
    assert snap.trips == TRIP_DEVICE and snap.bal_mask == 0
    fake.log = []
    drv.ack_trips(TRIP_DEVICE, t0)  # protection handled it at once
    for t in range(t0 + 250, t0 + 3000, 250):
        drv.read(snap, t)
        assert snap.trips == TRIP_DEVICE and snap.cfg_err == 0
        drv.ack_trips(snap.trips, t)
    assert fake.writes(0x00) == [] and fake.regs[0] & ST_XREADY  # not before 3 s
    fake.log = []
    t = t0 + 3000
    drv.read(snap, t)
    drv.ack_trips(snap.trips, t)
    assert fake.writes(0x00) == [bytes((ST_XREADY,))] and fake.regs[0] == 0
    # then the commanded CB bits again, after the clear
    assert fake.writes(0x01) == [bytes((0x01, 0x08))]
    i_clear = [i for i, e in enumerate(fake.log) if e[0] == "w" and e[1] == 0x00][0]
    i_cb = [i for i, e in enumerate(fake.log) if e[0] == "w" and e[1] == 0x01][0]
    assert i_clear < i_cb
    assert fake.regs[1] == 0x01 and fake.regs[2] == 0x08
    # the fault is still there: the chip reports it again at once
    fake.trip(ST_XREADY)
    fake.log = []
    for t in range(t0 + 3250, t0 + 6000, 250):
        drv.read(snap, t)
        assert snap.trips == TRIP_DEVICE
        drv.ack_trips(snap.trips, t)
    assert fake.writes(0x00) == []  # the next try after another hold-off
    t = t0 + 6000
    drv.read(snap, t)
    drv.ack_trips(snap.trips, t)
    assert fake.writes(0x00) == [bytes((ST_XREADY,))] and fake.regs[0] == 0
    # gone: a new XREADY later waits its own 3 s
    t += 250
    drv.read(snap, t)
    assert snap.trips == 0
    drv.ack_trips(0, t)
    fake.trip(ST_XREADY)
    t1 = t + 5000
    fake.log = []
    drv.read(snap, t1)
    drv.ack_trips(snap.trips, t1)
    drv.read(snap, t1 + 2750)
    drv.ack_trips(snap.trips, t1 + 2750)
    assert fake.writes(0x00) == []
    drv.read(snap, t1 + 3000)
    drv.ack_trips(snap.trips, t1 + 3000)
    assert fake.writes(0x00) == [bytes((ST_XREADY,))]


def test_ack_trips_xready_not_cleared_unless_acknowledged():
    fake, drv, snap = make(5)
    fill_cells(fake, drv)
    fake.trip(ST_XREADY)
    for t in range(0, 10000, 250):
        drv.read(snap, t)
        drv.ack_trips(0, t)  # protection has not handled it
    assert fake.regs[0] & ST_XREADY


def test_ack_trips_ovrd_hold_off():
    # OVRD_ALERT: LS/ARD retry every 10 s (reference 8.3)
    fake, drv, snap = make(5)
    fill_cells(fake, drv)
    drv.set_fets(True, True)
    drv.read(snap, 0)
    fake.trip(ST_OVRD)
    assert fake.regs[5] == CC_EN  # both FETs opened (DS Table 8-1)
    fake.log = []
    t0 = 500
    for t in range(t0, t0 + 10000, 250):
        drv.read(snap, t)
        assert snap.trips == TRIP_OVRD
        drv.ack_trips(snap.trips, t)
    assert fake.writes(0x00) == [] and fake.regs[0] & ST_OVRD
    t = t0 + 10000
    drv.read(snap, t)
    drv.ack_trips(snap.trips, t)
    assert fake.writes(0x00) == [bytes((ST_OVRD,))] and fake.regs[0] == 0
    fake.trip(ST_OVRD)  # the secondary protector still holds ALERT
    fake.log = []
    for t in range(t0 + 10250, t0 + 20000, 250):
        drv.read(snap, t)
        drv.ack_trips(snap.trips, t)
    assert fake.writes(0x00) == []
    t = t0 + 20000
    drv.read(snap, t)
    drv.ack_trips(snap.trips, t)
    assert fake.writes(0x00) == [bytes((ST_OVRD,))]


# DS Table 8-1: the FET bits a trip leaves alone (the host may have them on while reported).
FETS_LEFT = (
    (ST_OV, DSG_ON),
    (ST_UV, CHG_ON),
    (ST_OCD, CHG_ON),
    (ST_SCD, CHG_ON),
    (ST_XREADY, 0),
    (ST_OVRD, 0),
)


def test_no_fet_bit_while_its_trip_is_reported():
    for crc in (True, False):
        for bit, left in FETS_LEFT:
            fake, drv, snap = make(5, crc=crc)
            fill_cells(fake, drv)
            drv.set_fets(True, True)
            drv.set_balance(0b101)
            drv.read(snap, 0)
            fake.trip(bit)
            drv.read(snap, 250)
            assert snap.trips and snap.cfg_err == 0
            drv.set_fets(True, False)
            drv.set_fets(False, True)
            drv.set_fets(True, True)
            assert fake.regs[5] == CC_EN | left, (bit, fake.regs[5])
            drv.restore()  # remembers (True, True)
            assert fake.regs[5] == CC_EN | left, (bit, fake.regs[5])
            for w in fake.writes(0x05)[-4:]:
                assert w[0] & (CHG_ON | DSG_ON) & ~left == 0, (bit, w)
            assert all(w[0] & 0xFC == CC_EN for w in fake.writes(0x05))
            # acknowledged and gone from SYS_STAT: restore() brings both back, and the CB
            # bits (XREADY cleared them)
            fake.regs[0] = 0
            drv.restore()
            assert fake.regs[5] == CC_EN | CHG_ON | DSG_ON, bit
            assert fake.regs[1] == 0b00101


def test_set_fets_keeps_a_fet_off_while_its_trip_is_reported():
    """A trip that lands after this cycle's read is not switched back on by the next write:
    set_fets() reads SYS_STAT right before it writes."""
    fake, drv, snap = make(5)
    fill_cells(fake, drv)
    drv.read(snap, 0)
    fake.regs[0] = 0x04  # OV: the chip has opened CHG
    drv.set_fets(True, True)
    assert fake.regs[5] == 0x42  # DSG on, CHG kept off
    fake.regs[0] = 0x02  # SCD: DSG off, CHG allowed
    drv.set_fets(True, True)
    assert fake.regs[5] == 0x41
    fake.regs[0] = 0x20  # XREADY: both stay off
    drv.set_fets(True, True)
    assert fake.regs[5] == 0x40
    fake.regs[0] = 0x10  # OVRD_ALERT: both stay off
    drv.set_fets(True, True)
    assert fake.regs[5] == 0x40
    fake.regs[0] = 0x80  # CC_READY is no trip
    drv.set_fets(True, True)
    assert fake.regs[5] == 0x43
    fake.regs[0] = 0x00  # protection cleared the bits: both on
    drv.set_fets(True, True)
    assert fake.regs[5] == 0x43


def test_set_fets_writes_sys_ctrl2_without_reading_it():
    # The gate before closing a FET reads SYS_STAT..CC_CFG (0x00..0x0B, 12 registers) in one
    # transaction: the trips that opened a FET and the registers a reset or upset changes.
    for crc, stride in ((True, 2), (False, 1)):
        fake, drv, snap = make(5, crc=crc)
        fill_cells(fake, drv)
        fake.log = []
        drv.set_fets(True, False)
        assert fake.reads() == [(0x00, 12 * stride)]
        assert fake.writes() == [bytes((CC_EN | CHG_ON,))] and fake.regs[5] == 0x41
        fake.log = []
        drv.set_fets(False, True)
        assert fake.reads() == [(0x00, 12 * stride)]
        assert fake.writes() == [bytes((CC_EN | DSG_ON,))]
        fake.log = []
        drv.set_fets(False, False)  # opening both needs no read
        assert fake.reads() == [] and fake.writes() == [bytes((CC_EN,))]
        # DELAY_DIS / CC_ONESHOT in SYS_CTRL2 were never written by the host: an upset. The
        # gate sees it, writes only CC_EN (FETs off) and the next read is refused.
        fake.regs[5] = DELAY_DIS | CC_ONESHOT | CHG_ON
        fake.log = []
        drv.set_fets(True, True)
        assert fake.reads() == [(0x00, 12 * stride)]
        assert fake.writes() == [bytes((CC_EN,))]
        assert fake.regs[5] == CC_EN and fake.reserved_violations == 0
        raises(AfeConfigError, drv.read, snap, 10000)


def test_set_fets_readback_shows_what_the_chip_did():
    fake, drv, snap = make(5)
    fill_cells(fake, drv)
    drv.set_fets(True, True)
    drv.read(snap, 0)
    assert snap.chg_fet is True and snap.dsg_fet is True
    fake.trip(ST_SCD)  # the chip dropped DSG
    drv.read(snap, 250)
    assert snap.chg_fet is True and snap.dsg_fet is False
    assert snap.cfg_err == 0


def test_opening_a_fet_works_while_reads_fail():
    # Opening a FET must not depend on a read (the docstring: a noisy bus that corrupts
    # read CRCs may still carry a write). Keeping CHG while opening DSG is such a command.
    for chg, dsg in ((True, False), (False, True)):
        fake, drv, snap = make(5)
        fill_cells(fake, drv)
        drv.set_fets(True, True)
        assert fake.regs[5] == 0x43
        fake.corrupt_reads = 1000
        try:
            drv.set_fets(chg, dsg)
        except AfeError:
            pass
        opened = DSG_ON if chg else CHG_ON
        assert fake.regs[5] & opened == 0, (chg, dsg, fake.regs[5])


def test_balancing_map_and_readback():
    fake, drv, snap = make(10)
    fill_cells(fake, drv)
    drv.set_balance(0b1010010101)  # cells 1, 3, 5, 8, 10
    assert fake.regs[1] == 0b10101 and fake.regs[2] == 0b10100
    assert fake.writes(0x01) == [bytes((0b10101, 0b10100))]  # one block write, CELLBAL1..2
    drv.read(snap, 0)
    assert snap.bal_mask == 0b1010010101
    drv.set_balance(0b0000110000)  # cells 5 and 6: different groups, allowed
    assert fake.regs[1] == 0b10000 and fake.regs[2] == 0b00001
    # a '40 with 9 cells: cells 3, 6, 9 -> channels 5, 10, 15
    fake, drv, snap = make(9, variant="bq76940", n_temps=3)
    fill_cells(fake, drv)
    drv.set_balance(0b100100100)
    assert fake.regs[1] == 0x10 and fake.regs[2] == 0x10 and fake.regs[3] == 0x10
    drv.read(snap, 0)
    assert snap.bal_mask == 0b100100100
    drv.set_balance(0)
    assert fake.regs[1] == fake.regs[2] == fake.regs[3] == 0
    assert fake.reserved_violations == 0


def test_balancing_rejects_adjacent_cells():
    fake, drv, snap = make(15, n_temps=3)
    raises(ValueError, drv.set_balance, 0b11)
    raises(ValueError, drv.set_balance, 0b11 << 12)  # cells 13, 14
    raises(ValueError, drv.set_balance, 1 << 15)  # beyond the cell count
    raises(ValueError, drv.set_balance, -1)
    drv.set_balance(0b11 << 4)  # cells 5 and 6 sit in different groups
    drv.set_balance(0b11 << 9)  # cells 10 and 11 too
    fake, drv, snap = make(3)
    raises(ValueError, drv.set_balance, 0b110)  # cells 2, 3 (channels 2, 5) are adjacent cells
    drv.set_balance(0b101)
    assert fake.regs[1] == 0b10001


class _Prot:
    faults = 0
    latched = 0
    warnings = 0


class _Est:
    soc_pct = 95.0
    soc_err_pct = 2.0


def test_balancer_masks_on_every_input_map_are_accepted():
    # For every cell count on every variant that can hold it (DS Tables 9-2..9-4): the
    # driver's cell_groups drive bms.balancing; every mask it picks from a real reading is
    # accepted by the same driver's set_balance(), lands on the datasheet's CB bits and
    # never sets two adjacent CB bits of one group (DS 8.3.1.3.3, reference 7.2).
    for (variant, cells), chans in MAPS.items():
        patterns = (
            [3500] * (cells - 1) + [3450],  # all high but one: adjacency decides
            [3420 + (37 * i) % 120 for i in range(cells)],  # a high spread
        )
        for p, pattern in enumerate(patterns):
            fake, drv, snap = make(cells, variant=variant, log=False)
            cfg = Config("lfp", cells, 100000)
            bal = Balancer(cfg, drv.cell_groups)
            for i, ch in enumerate(chans):
                fake.set_cell_mv(ch, pattern[i])
            fake.set_ts(1, _ts_adc(25))
            drv.read(snap, 0)
            for k in range(4):
                t = WARM + k * cfg.bal_period_ms
                drv.read(snap, t)
                assert snap.flags & FLAG_CELLS_VALID
                m = bal.update(snap, _Prot(), _Est(), t)
                assert m != 0 and bal.active, (variant, cells, p, k, bal.reason)
                assert mask_ok(m, drv.cell_groups)
                drv.set_balance(m)  # accepted
                want = cb_regs(chans, m)
                for g in range(3):
                    assert fake.regs[1 + g] == (want[g] if g < drv.groups else 0)
                    v = fake.regs[1 + g]
                    assert v & (v >> 1) == 0, (variant, cells, m)  # DS rule per group
                drv.read(snap, t + 250)
                assert snap.bal_mask == m and snap.cfg_err == 0
            assert fake.reserved_violations == 0


def test_xready_recovery_and_restore():
    fake, drv, snap = make(10)
    fill_cells(fake, drv)
    drv.set_fets(True, True)
    drv.set_balance(0b0100000001)
    # the chip raises XREADY (and an OV) and drops FETs and CB bits
    fake.trip(ST_XREADY | ST_OV)
    drv.read(snap, 0)
    assert snap.trips == TRIP_DEVICE | TRIP_OV and not snap.chg_fet and snap.bal_mask == 0
    drv.ack_trips(TRIP_DEVICE | TRIP_OV, 0)
    assert fake.regs[0] == ST_XREADY  # OV cleared at once, XREADY held off
    drv.restore()  # XREADY still reported: CB bits back, but no FET
    assert fake.regs[5] == CC_EN and fake.regs[1] == 0x01 and fake.regs[2] == 0x08
    fake.log = []
    drv.read(snap, 3000)
    drv.ack_trips(snap.trips, 3000)
    assert fake.writes(0x00) == [bytes((ST_XREADY,))]
    drv.restore()
    assert fake.regs[5] == 0x43 and fake.regs[1] == 0x01 and fake.regs[2] == 0x08
    drv.read(snap, 3250)
    assert snap.chg_fet and snap.dsg_fet and snap.bal_mask == 0b0100000001
    assert snap.trips == 0


def test_ship_sequence():
    for ts, base in (("ext", 0x18), ("die", 0x10)):
        fake, drv, snap = make(5, temp_source=ts)
        drv.ship()
        assert fake.writes(0x04) == [bytes((base,)), bytes((base | 1,)), bytes((base | 2,))]
        assert fake.shipped
        assert fake.reserved_violations == 0
        raises(AfeBusError, drv.read, snap, 0)  # it is gone


def test_normal_ctrl1_writes_keep_shut_bits_zero():
    fake, drv, snap = make(5)
    raises(ValueError, drv.write_register, 0x04, 0x19)
    for data in fake.writes(0x04):
        assert data[0] & 0x03 == 0


def test_writes_carry_correct_crc_bytes():
    # the exact bytes on the wire for SYS_CTRL2 = 0x40 at 0x08: 40 24 (E2E 752518)
    fake = FakeBQ(address=0x08, crc=True)
    seen = []
    orig = fake.writeto_mem

    def spy(addr, reg, buf):
        seen.append((reg, bytes(buf)))
        orig(addr, reg, buf)

    fake.writeto_mem = spy
    drv = BQ769x0(fake, 5)
    drv.init()
    assert (0x05, b"\x40\x24") in seen
    assert (0x0B, b"\x19\x7a") in seen
    assert (0x00, b"\xff\x51") in seen
    assert (0x04, b"\x18\xbe") in seen
    # block write: later bytes carry the CRC of the byte alone
    seen.clear()
    drv.set_balance(0)
    assert seen == [(0x01, b"\x00" + bytes((crc_bits(crc_bits(crc_bits(0, 0x10), 1), 0),)))]
    # protection block: PROTECT1 = 0x8F is 8F 78 (E2E 1100450), later bytes their own CRC
    seen.clear()
    drv.configure_protection(4200, 1000, 2800, 1000, 100000, 8, 200000, 100)
    assert seen[0][0] == 0x06 and len(seen[0][1]) == 10
    b = seen[0][1]
    assert b[0] == 0x8F and b[1] == 0x78  # RSNS, SCD 200 mV / 100 us
    for k in range(1, 5):
        assert b[2 * k + 1] == crc_bits(0, b[2 * k])
    fake = FakeBQ(address=0x18, crc=True)
    seen = []
    orig = fake.writeto_mem
    fake.writeto_mem = spy
    BQ769x0(fake, 5, address=0x18).init()
    assert (0x05, b"\x40\x67") in seen and (0x0B, b"\x19\x39") in seen


# ------------------------------------------------------------------ protection


def test_ov_uv_trip_worked_examples():
    fake, drv, snap = make(5, gain=382, offset=0, log=False, prot=False)
    assert drv.ov_trip_reg(4300) == 0xBF
    assert drv.uv_trip_reg(2500) == 0x99
    assert approx(drv.ov_trip_mv(0xBF), 4300, 1) and drv.ov_trip_mv(0xBF) <= 4300
    assert approx(drv.uv_trip_mv(0x99), 2500, 1) and drv.uv_trip_mv(0x99) >= 2500
    # defaults after boot
    assert approx(drv.ov_trip_mv(0xAC), 4180, 5)
    assert approx(drv.uv_trip_mv(0x97), 2490, 5)
    assert drv.read_protection()["ov_mv"] == drv.ov_trip_mv(0xAC)
    assert drv.read_protection()["uv_mv"] == drv.uv_trip_mv(0x97)


def test_ds_design_example_registers():
    # DS 9.2.2.1, 5 mOhm shunt: SCD 111 mV / 100 us, OCD 72 mV / 320 ms, OV 4.30 V / 2 s,
    # UV 2.50 V / 4 s -> PROTECT1 0x8B, PROTECT2 0x5A (DS prints 0x5B: a slip), PROTECT3 0x50.
    fake, drv, snap = make(5, shunt_uohm=5000, gain=382, offset=0)
    got = drv.configure_protection(4300, 2000, 2500, 4000, 14400, 320, 22200, 100)
    assert fake.regs[6] == 0x8B
    assert fake.regs[7] == 0x5A
    assert fake.regs[8] == 0x50
    assert fake.regs[9] == 0xBF and fake.regs[10] == 0x99
    assert got["ocd_ma"] == 14400 and got["scd_ma"] == 22200 and got["rsns"] == 1
    assert got["ocd_delay_ms"] == 320 and got["scd_delay_us"] == 100
    assert got["ov_delay_ms"] == 2000 and got["uv_delay_ms"] == 4000
    assert got["ov_mv"] == 4300 and got["uv_mv"] == 2500
    assert fake.bad_crc_writes == 0 and fake.reserved_violations == 0
    # one block write of the five registers, then one block read back
    assert fake.writes(0x06) == [bytes((0x8B, 0x5A, 0x50, 0xBF, 0x99))]
    assert (0x06, 10) in fake.reads()
    # protection_applied(): the same values, without touching the bus
    fake.log = []
    assert drv.protection_applied(4300, 2000, 2500, 4000, 14400, 320, 22200, 100) == got
    assert fake.log == []
    raises(ValueError, drv.protection_applied, 4300, 2000, 2500, 4000, 14400, 320, 22200, 69)


def test_protection_never_looser():
    for shunt in (500, 1000, 3000, 5000):
        for gain, off in ((365, -20), (382, 0), (396, 25)):
            fake, drv, snap = make(5, shunt_uohm=shunt, gain=gain, offset=off, log=False)
            for k in range(12):
                ov = 3700 + 83 * k
                uv = 2000 + 70 * k
                ocd = (20 + 7 * k) * 1000000 // shunt + 13 * k
                scd = ocd * 2 + 17 * k * 1000000 // shunt
                od = (10, 25, 100, 333, 1000, 1500)[k % 6]
                sd = (70, 99, 150, 399, 400, 1000)[k % 6]
                ovd = (1000, 1999, 2500, 4000, 9000, 7999)[k % 6]
                uvd = (1000, 3999, 4000, 9999, 16000, 30000)[k % 6]
                got = drv.configure_protection(ov, ovd, uv, uvd, ocd, od, scd, sd)
                assert got["ov_mv"] <= ov and got["uv_mv"] >= uv
                assert got["ocd_delay_ms"] <= od and got["scd_delay_us"] <= sd
                assert got["ov_delay_ms"] <= ovd and got["uv_delay_ms"] <= uvd
                p1, p2 = fake.regs[6], fake.regs[7]
                rs = 1 if p1 & 0x80 else 0
                ocd_mv = bq._OCD_MV[rs][p2 & 15]
                scd_mv = bq._SCD_MV[rs][p1 & 7]
                assert ocd_mv * 1000000 <= ocd * shunt  # exact, not just the rounded mA
                assert scd_mv * 1000000 <= scd * shunt
                assert got["ocd_ma"] <= ocd and got["scd_ma"] <= scd
                # closest: one OV/UV step further would be looser
                if fake.regs[9] < 255:
                    assert drv.ov_trip_mv(fake.regs[9] + 1) > ov
                if fake.regs[10] > 0:
                    assert drv.uv_trip_mv(fake.regs[10] - 1) < uv
                # closest: the next threshold step of the chosen range would be too high
                if p2 & 15 < 15:
                    assert bq._OCD_MV[rs][(p2 & 15) + 1] * 1000000 > ocd * shunt
                if p1 & 7 < 7:
                    assert bq._SCD_MV[rs][(p1 & 7) + 1] * 1000000 > scd * shunt
            assert fake.reserved_violations == 0


def test_delay_rounding_down():
    fake, drv, snap = make(5, shunt_uohm=1000, log=False)
    got = drv.configure_protection(4200, 3999, 2800, 15999, 30000, 639, 60000, 199)
    assert got["ov_delay_ms"] == 2000 and got["uv_delay_ms"] == 8000
    assert got["ocd_delay_ms"] == 320 and got["scd_delay_us"] == 100
    got = drv.configure_protection(4200, 100000, 2800, 100000, 30000, 100000, 60000, 100000)
    assert got["ov_delay_ms"] == 8000 and got["uv_delay_ms"] == 16000
    assert got["ocd_delay_ms"] == 1280 and got["scd_delay_us"] == 400


def test_protection_rsns_choice():
    fake, drv, snap = make(5, shunt_uohm=1000, log=False)
    # 30 A at 1 mOhm = 30 mV: RSNS=0 gives 28 mV exactly at or below, RSNS=1 also 28 mV
    got = drv.configure_protection(4200, 1000, 2800, 1000, 30000, 8, 100000, 70)
    assert got["ocd_ma"] == 28000 and got["scd_ma"] == 100000 and got["rsns"] == 0
    # 200 A SCD only fits with RSNS=1
    got = drv.configure_protection(4200, 1000, 2800, 1000, 30000, 8, 200000, 70)
    assert got["scd_ma"] == 200000 and got["rsns"] == 1 and got["ocd_ma"] == 28000


def test_protection_rejects_what_cannot_be_honoured():
    fake, drv, snap = make(5, shunt_uohm=1000, log=False)
    ok = (4200, 1000, 2800, 1000, 30000, 8, 60000, 70)

    def req(i, v):
        a = list(ok)
        a[i] = v
        return a

    raises(ValueError, drv.configure_protection, *req(0, 3000))  # OV below the lowest step
    raises(ValueError, drv.configure_protection, *req(2, 3300))  # UV above the highest step
    raises(ValueError, drv.configure_protection, *req(1, 999))  # OV delay < 1 s
    raises(ValueError, drv.configure_protection, *req(3, 500))
    raises(ValueError, drv.configure_protection, *req(4, 7999))  # < 8 mV at 1 mOhm
    raises(ValueError, drv.configure_protection, *req(5, 7))  # < 8 ms
    raises(ValueError, drv.configure_protection, *req(6, 21999))  # < 22 mV at 1 mOhm
    raises(ValueError, drv.configure_protection, *req(7, 69))  # < 70 us
    raises(ValueError, drv.configure_protection, *req(2, 4300))  # UV above OV
    # tighter than the chip can do is fine: OV clamps down, UV clamps up
    got = drv.configure_protection(*req(0, 5500))
    assert got["ov_mv"] == drv.ov_trip_mv(0xFF)
    got = drv.configure_protection(*req(2, 1000))
    assert got["uv_mv"] == drv.uv_trip_mv(0)


def test_protection_readback_mismatch_is_an_error():
    fake, drv, snap = make(5, shunt_uohm=1000, prot=False)
    orig = fake._store

    def stuck(reg, v):  # OV_TRIP ignores writes
        if reg != 0x09:
            orig(reg, v)

    fake._store = stuck
    raises(AfeError, drv.configure_protection, 4200, 1000, 2800, 1000, 30000, 8, 60000, 70)
    # the chip does not hold the limits: no reading is handed on, no FET closes
    fill_cells(fake, drv)
    _refused(drv, snap, 0)
    drv.set_fets(True, True)
    assert fake.regs[5] & (CHG_ON | DSG_ON) == 0


# ------------------------------------------------------------------ detect


def test_detect():
    for address in (0x08, 0x18):
        for crc in (True, False):
            fake = FakeBQ(address=address, crc=crc, junk=False)
            fake.regs[0x0C] = 0x0D  # VC1_HI = 0x0D: the CRC byte of a 0x19 read at 0x08
            assert bq.detect(fake) == (address, crc)
            fake = FakeBQ(address=address, crc=crc, junk=False)  # all-zero cell data
            assert bq.detect(fake) == (address, crc)
    assert bq.detect(FakeBQ(address=0x30)) is None
    # a CRC part whose CRC probe fails must not be taken for a non-CRC part
    fake = FakeBQ(address=0x08, crc=True)
    fake.regs[0x0B] = 0x19
    fake.nack_reads = 1
    assert bq.detect(fake) is None
    assert bq.detect(fake) == (0x08, True)
