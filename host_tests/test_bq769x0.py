# BQ769x0 driver against datasheet values (reference bq769x0.md), with the minimal fake in
# host_tests/fakes/fake_bq.py. Runs under CPython (pytest) and MicroPython (run_mpy.py).
import math

from fake_bq import FakeBQ, crc_bits
from testlib import approx, raises

from bms import bq769x0 as bq
from bms.bq769x0 import (
    ATTEMPTS,
    AfeBusError,
    AfeCrcError,
    AfeError,
    BQ769x0,
)
from bms.snapshot import (
    FLAG_CC_NEW,
    FLAG_CELLS_VALID,
    FLAG_CURRENT_VALID,
    FLAG_PACK_VALID,
    FLAG_TEMPS_VALID,
    STAT_CC_READY,
    STAT_OCD,
    STAT_OV,
    STAT_OVRD,
    STAT_SCD,
    STAT_UV,
    STAT_XREADY,
    Snapshot,
    TEMP_INVALID_DC,
)

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


def make(cells=5, address=0x08, crc=True, gain=382, offset=0, log=True, **kw):
    fake = FakeBQ(address=address, crc=crc, gain_uv=gain, offset_mv=offset)
    drv = BQ769x0(fake, cells, address=address, crc=crc, **kw)
    drv.init()
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
    assert w[0] == (0x0B, b"\x19")
    assert fake.regs[0x0B] == 0x19 and fake.regs[4] == 0x18 and fake.regs[5] == 0x40
    assert fake.regs[0] == 0
    assert fake.bad_crc_writes == 0 and fake.reserved_violations == 0
    assert drv.gain_uv == 382 and drv.offset_mv == 0


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
        n_t = 1
        fake, drv, snap = make(cells, variant=variant, n_temps=n_t, log=False)
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


def test_implausible_cell_clears_cells_valid():
    fake, drv, snap = make(5, log=False)
    fill_cells(fake, drv)
    drv.read(snap, 0)
    assert snap.flags & FLAG_CELLS_VALID
    fake.set_cell_mv(3, 450)  # below 500 mV on a used input
    drv.read(snap, 250)
    assert not snap.flags & FLAG_CELLS_VALID
    assert snap.flags & FLAG_PACK_VALID
    fill_cells(fake, drv)
    fake.set_cell_mv(5, 5010)  # above 5000 mV
    drv.read(snap, 500)
    assert not snap.flags & FLAG_CELLS_VALID
    fill_cells(fake, drv)
    drv.read(snap, 750)
    assert snap.flags & FLAG_CELLS_VALID


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
    fake.regs[0] = STAT_OV | STAT_XREADY
    fake.set_cc(100)
    drv.read(snap, 0)
    assert snap.sys_stat == STAT_CC_READY | STAT_OV | STAT_XREADY
    assert fake.writes(0x00) == [bytes((STAT_CC_READY,))]
    assert fake.regs[0] == STAT_OV | STAT_XREADY  # the rest stays latched
    assert snap.cc_seq == 1 and snap.cc_samples == 1 and snap.cc_sum_ma == snap.current_ma
    # no CC_READY: CC not read, nothing written, current still valid (previous cycle)
    fake.log = []
    drv.read(snap, 250)
    assert fake.writes() == []
    assert all(reg != 0x32 and not (reg <= 0x32 < reg + n // 2) for reg, n in fake.reads())
    assert not snap.flags & FLAG_CC_NEW
    assert snap.flags & FLAG_CURRENT_VALID
    drv.read(snap, 500)
    assert not snap.flags & FLAG_CURRENT_VALID  # two cycles without a CC sample
    assert snap.cc_seq == 1


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


def test_thermistor_beta():
    fake, drv, snap = make(15, n_temps=3, log=False)
    fill_cells(fake, drv)
    for temps in ((25, -20, 60), (0, 45, 100), (-35, 10, 120)):
        for i in range(3):
            fake.set_ts(i + 1, _ts_adc(temps[i]))
        drv.read(snap, 0)
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
    fake.set_ts(1, 8639)  # open: ~3.3 V
    fake.set_ts(2, 0)  # shorted
    drv.read(snap, 0)
    assert snap.temp_dc[0] == TEMP_INVALID_DC and snap.temp_dc[1] == TEMP_INVALID_DC
    assert snap.temp_min_dc == TEMP_INVALID_DC
    fake.set_ts(1, 0x3FFF)
    fake.set_ts(2, 30)
    drv.read(snap, 250)
    assert snap.temp_dc[0] == TEMP_INVALID_DC and snap.temp_dc[1] == TEMP_INVALID_DC
    fake.set_ts(2, _ts_adc(30))
    drv.read(snap, 500)
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
    fake.set_ts(1, int(1.200 / 382e-6 + 0.5))  # V25 = 1.200 V
    drv.read(snap, 0)
    assert approx(snap.die_temp_dc, 250, 1)
    assert snap.temp_dc[0] == TEMP_INVALID_DC
    assert not snap.flags & FLAG_TEMPS_VALID
    v = 1.200 - 0.0042 * (60 - 25)
    fake.set_ts(1, int(v / 382e-6 + 0.5))
    drv.read(snap, 250)
    assert approx(snap.die_temp_dc, 600, 2)
    fake.set_ts(1, 0)
    drv.read(snap, 500)
    assert snap.die_temp_dc == TEMP_INVALID_DC


# ------------------------------------------------------------------ transactions, errors


def test_read_transactions():
    fake, drv, snap = make(5)
    fill_cells(fake, drv)
    fake.set_cc(5)
    drv.read(snap, 0)
    # status 0x00..0x05, cells 0x0C..0x15, BAT..CC 0x2A..0x33; all with CRC bytes
    assert fake.reads() == [(0x00, 12), (0x0C, 20), (0x2A, 20)]
    fake.log = []
    drv.read(snap, 250)
    assert fake.reads() == [(0x00, 12), (0x0C, 20), (0x2A, 8)]  # BAT + TS1 only
    # BQ76940: cells, BAT, TS (and CC) are contiguous -> one block
    fake, drv, snap = make(15, n_temps=3)
    fill_cells(fake, drv)
    fake.set_cc(5)
    drv.read(snap, 0)
    assert fake.reads() == [(0x00, 12), (0x0C, 2 * (0x34 - 0x0C))]
    fake.log = []
    drv.read(snap, 250)
    assert fake.reads() == [(0x00, 12), (0x0C, 2 * (0x32 - 0x0C))]
    # no CRC: one byte per register
    fake, drv, snap = make(10, crc=False, n_temps=2)
    fill_cells(fake, drv)
    drv.read(snap, 0)
    assert fake.reads() == [(0x00, 6), (0x0C, 20), (0x2A, 6)]


def test_bad_crc_retried_then_crc_error():
    fake, drv, snap = make(5)
    fill_cells(fake, drv)
    drv.read(snap, 0)
    assert snap.seq == 1
    fake.log = []
    fake.corrupt_reads = 1  # first attempt bad, retry good
    drv.read(snap, 250)
    assert fake.reads()[:2] == [(0x00, 12), (0x00, 12)]  # register address sent again
    assert snap.errors == 0 and snap.seq == 2
    fake.log = []
    fake.corrupt_reads = 100
    e = raises(AfeCrcError, drv.read, snap, 500)
    assert isinstance(e, AfeError)
    assert fake.reads() == [(0x00, 12)] * ATTEMPTS
    assert snap.errors == 1 and snap.error_total == 1 and snap.flags == 0
    assert snap.seq == 2 and snap.t_ms == 250
    fake.corrupt_reads = 0
    drv.read(snap, 750)
    assert snap.errors == 0 and snap.error_total == 1


def test_bad_crc_in_a_later_byte():
    fake, drv, snap = make(5)
    fill_cells(fake, drv)
    fake.log = []
    orig = fake.readfrom_mem_into

    def flip(addr, reg, buf):  # corrupt a data byte in the middle of the cell block
        orig(addr, reg, buf)
        if reg == 0x0C:
            buf[6] ^= 0x01

    fake.readfrom_mem_into = flip
    raises(AfeCrcError, drv.read, snap, 0)
    assert [r for r in fake.reads() if r[0] == 0x0C] == [(0x0C, 20)] * ATTEMPTS


def test_nack_retried_then_bus_error():
    fake, drv, snap = make(5)
    fill_cells(fake, drv)
    fake.nack_reads = 2  # two NACKs, third attempt works
    drv.read(snap, 0)
    assert snap.errors == 0
    assert fake.reads()[:3] == [(0x00, 12)] * 3
    fake.log = []
    fake.nack_reads = 100
    e = raises(AfeBusError, drv.read, snap, 250)
    assert isinstance(e, AfeError)
    assert fake.reads() == [(0x00, 12)] * ATTEMPTS
    assert snap.errors == 1 and snap.flags == 0
    raises(AfeBusError, drv.read, snap, 500)
    assert snap.errors == 2 and snap.error_total == 2
    fake.nack_reads = 0
    fake.nack_writes = 100
    raises(AfeBusError, drv.set_fets, True, True)
    fake.nack_writes = 1
    drv.set_fets(True, True)
    assert fake.regs[5] == 0x43


# ------------------------------------------------------------------ status, FETs, balancing


def test_clear_status_writes_only_handled_bits():
    fake, drv, snap = make(5)
    fill_cells(fake, drv)
    fake.regs[0] = STAT_OV | STAT_UV | STAT_SCD | STAT_OCD | STAT_OVRD | STAT_XREADY
    drv.read(snap, 0)
    drv.clear_status(STAT_OV)
    assert fake.writes(0x00) == [bytes((STAT_OV,))]
    assert fake.regs[0] == STAT_UV | STAT_SCD | STAT_OCD | STAT_OVRD | STAT_XREADY
    drv.clear_status(STAT_SCD | STAT_OCD)
    assert fake.regs[0] == STAT_UV | STAT_OVRD | STAT_XREADY
    fake.log = []
    drv.clear_status(0)
    assert fake.writes() == []
    drv.clear_status(0xFF)  # reserved b6 is never written
    assert fake.writes(0x00) == [b"\xbf"]
    assert fake.reserved_violations == 0


def test_set_fets_read_modify_write():
    fake, drv, snap = make(5)
    fill_cells(fake, drv)
    drv.set_fets(True, False)
    assert fake.regs[5] == 0x41
    drv.set_fets(False, True)
    assert fake.regs[5] == 0x42
    drv.set_fets(True, True)
    assert fake.regs[5] == 0x43
    drv.read(snap, 0)
    assert snap.chg_fet is True and snap.dsg_fet is True
    fake.regs[5] = 0x41  # the chip dropped DSG (e.g. after SCD)
    drv.read(snap, 250)
    assert snap.chg_fet is True and snap.dsg_fet is False
    fake.regs[5] = 0x03  # CC_EN lost somehow: RMW turns it back on
    drv.set_fets(False, False)
    assert fake.regs[5] == 0x40
    assert fake.reserved_violations == 0


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
    # 15 cells on a '40 with 9 cells: cells 3, 6, 9 -> channels 5, 10, 15
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


def test_xready_recovery_and_restore():
    fake, drv, snap = make(10)
    fill_cells(fake, drv)
    drv.set_fets(True, True)
    drv.set_balance(0b0100000001)
    # the chip raises XREADY and drops FETs and CB bits
    fake.regs[0] |= STAT_XREADY | STAT_OV
    fake.regs[5] &= ~0x03
    fake.regs[1] = fake.regs[2] = 0
    drv.read(snap, 0)
    assert snap.sys_stat & STAT_XREADY and not snap.chg_fet and snap.bal_mask == 0
    fake.log = []
    drv.clear_xready()
    assert fake.writes(0x00) == [bytes((STAT_XREADY,))]
    assert fake.regs[0] & STAT_OV
    drv.restore()
    assert fake.regs[5] == 0x43 and fake.regs[1] == 0x01 and fake.regs[2] == 0x08
    drv.read(snap, 250)
    assert snap.chg_fet and snap.dsg_fet and snap.bal_mask == 0b0100000001


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
    fake = FakeBQ(address=0x18, crc=True)
    seen = []
    orig = fake.writeto_mem
    fake.writeto_mem = spy
    BQ769x0(fake, 5, address=0x18).init()
    assert (0x05, b"\x40\x67") in seen and (0x0B, b"\x19\x39") in seen


# ------------------------------------------------------------------ protection


def test_ov_uv_trip_worked_examples():
    fake, drv, snap = make(5, gain=382, offset=0, log=False)
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
    fake, drv, snap = make(5, shunt_uohm=1000)
    orig = fake._store

    def stuck(reg, v):  # OV_TRIP ignores writes
        if reg != 0x09:
            orig(reg, v)

    fake._store = stuck
    raises(AfeError, drv.configure_protection, 4200, 1000, 2800, 1000, 30000, 8, 60000, 70)


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


def test_set_fets_keeps_a_fet_off_while_its_trip_is_reported():
    """A trip that lands after this cycle's read is not switched back on by the next write:
    set_fets() reads SYS_STAT right before it writes."""
    fake, drv, snap = make(5)
    fill_cells(fake, drv)
    fake.regs[0] = 0x04  # OV: the chip has opened CHG
    drv.set_fets(True, True)
    assert fake.regs[5] == 0x42  # DSG on, CHG kept off
    fake.regs[0] = 0x02  # SCD: DSG off, CHG allowed
    drv.set_fets(True, True)
    assert fake.regs[5] == 0x41
    fake.regs[0] = 0x20  # XREADY: both stay off
    drv.set_fets(True, True)
    assert fake.regs[5] == 0x40
    fake.regs[0] = 0x80  # CC_READY is no trip
    drv.set_fets(True, True)
    assert fake.regs[5] == 0x43
    fake.regs[0] = 0x00  # protection cleared the bits: both on
    drv.set_fets(True, True)
    assert fake.regs[5] == 0x43
