# Tests of the BQ769x0 register-level emulator (tools/simlib/afe_emu.py) and the
# machine-API fakes; facts from shared/reference/bq769x0.md.
import errno

from testlib import raises

from simlib import Simulator
from simlib.afe_emu import BQ769x0Emu, crc8
from simlib.machine_api import I2C, WDT, Pin, SimClock
from simlib.pack import Pack

A = 0x08


def _crc(data):
    # independent bitwise CRC-8/0x07/init 0 for the tests
    c = 0
    for b in data:
        c ^= b
        for _ in range(8):
            c = ((c << 1) ^ 0x07) & 0xFF if c & 0x80 else (c << 1) & 0xFF
    return c


def _wr(i2c, reg, values, addr=A, crc=True):
    if not crc:
        i2c.writeto_mem(addr, reg, bytes(values))
        return
    out = bytearray()
    for k, v in enumerate(values):
        out.append(v)
        out.append(_crc(bytes((addr << 1, reg, v))) if k == 0 else _crc(bytes((v,))))
    i2c.writeto_mem(addr, reg, out)


def _rd(i2c, reg, n, addr=A, crc=True):
    if not crc:
        return bytes(i2c.readfrom_mem(addr, reg, n))
    buf = bytearray(2 * n)
    i2c.readfrom_mem_into(addr, reg, buf)
    for k in range(n):
        exp = _crc(bytes(((addr << 1) | 1, buf[0]))) if k == 0 else _crc(bytes((buf[2 * k],)))
        assert buf[2 * k + 1] == exp, (k, buf)
    return bytes([buf[2 * k] for k in range(n)])


def _rig(cells=4, chemistry="lfp", crc=True, address=A, variant=None, soc=0.5, **kw):
    sim = Simulator(chemistry=chemistry, cells=cells, capacity_mah=10000, seed=3, crc=crc,
                    address=address, variant=variant, soc=soc, **kw)
    return sim, sim.emu, sim.i2c


def _code14(i2c, reg):
    b = _rd(i2c, reg, 2)
    return ((b[0] & 0x3F) << 8) | b[1]


def test_crc_vectors():
    vectors = (
        ((0x10, 0x05, 0x40), 0x24), ((0x11, 0x40), 0x85), ((0x10, 0x06, 0x8F), 0x78),
        ((0x08, 0x06, 0x8F), 0x8B), ((0x10, 0x0B, 0x19), 0x7A), ((0x30, 0x0B, 0x19), 0x39),
        ((0x11, 0x19), 0x0D), ((0x31, 0x19), 0xA3), ((0x10, 0x00, 0xFF), 0x51),
        ((0x10, 0x04, 0x18), 0xBE), ((0x30, 0x05, 0x40), 0x67), ((0x31, 0x40), 0x2B),
        ((0x10, 0x04, 0x00), 0xF6), ((0x10, 0x04, 0x01), 0xF1), ((0x10, 0x04, 0x02), 0xF8),
        ((0x00,), 0x00), ((0x19,), 0x4F), (b"123456789", 0xF4),
    )
    for frame, c in vectors:
        assert crc8(bytes(frame)) == c, frame
        assert _crc(bytes(frame)) == c, frame


def test_reset_values_and_gain_offset_encoding():
    pack = Pack("lfp", 4, 10000, 1)
    emu = BQ769x0Emu(pack, gain_uv=380, offset_mv=-1)
    i2c = I2C([emu])
    r = _rd(i2c, 0x00, 12)
    assert r == bytes((0, 0, 0, 0, 0, 0, 0, 0, 0, 0xAC, 0x97, 0))
    assert _rd(i2c, 0x50, 2) == bytes((0x04, 0xFF))
    assert _rd(i2c, 0x59, 1) == bytes((0xE0,))


def test_read_crc_and_write_crc_ok():
    sim, emu, i2c = _rig()
    _wr(i2c, 0x0B, [0x19])
    buf = bytearray(2)
    i2c.readfrom_mem_into(A, 0x0B, buf)
    assert bytes(buf) == bytes((0x19, 0x0D))
    sim2, emu2, i2c2 = _rig(address=0x18)
    _wr(i2c2, 0x0B, [0x19], addr=0x18)
    i2c2.readfrom_mem_into(0x18, 0x0B, buf)
    assert bytes(buf) == bytes((0x19, 0xA3))
    # block write with per-byte CRC, block read with a CRC after every byte
    _wr(i2c, 0x06, [0x87, 0x71, 0x50, 0x53, 0x99])
    assert _rd(i2c, 0x06, 5) == bytes((0x87, 0x71, 0x50, 0x53, 0x99))


def test_bad_write_crc_nacks_and_is_ignored():
    sim, emu, i2c = _rig()
    # 7-bit address used in the CRC (pitfall): 0x8B instead of 0x78
    e = raises(OSError, i2c.writeto_mem, A, 0x06, bytes((0x8F, 0x8B)))
    assert e.args[0] == errno.EIO
    assert emu.regs[0x06] == 0
    # block write with a bad second CRC: nothing applied
    e = raises(OSError, i2c.writeto_mem, A, 0x09, bytes((0x50, _crc(bytes((0x10, 0x09, 0x50))),
                                                          0x90, 0x00)))
    assert emu.regs[0x09] == 0xAC and emu.regs[0x0A] == 0x97
    # a non-CRC write to a CRC part (no CRC byte) is silently ignored
    i2c.writeto_mem(A, 0x0B, bytes((0x19,)))
    assert emu.regs[0x0B] == 0
    _wr(i2c, 0x06, [0x8F])
    assert emu.regs[0x06] == 0x8F


def test_no_crc_variant_and_absent_address():
    sim, emu, i2c = _rig(crc=False)
    _wr(i2c, 0x0B, [0x19], crc=False)
    assert _rd(i2c, 0x0B, 2, crc=False) == bytes((0x19, 0x00))
    assert i2c.scan() == [A]
    e = raises(OSError, i2c.readfrom_mem, 0x18, 0x00, 1)
    assert e.args[0] == errno.ENODEV
    # raw writeto + readfrom_into from the register pointer
    i2c.writeto(A, bytes((0x09,)))
    buf = bytearray(2)
    i2c.readfrom_into(A, buf)
    assert bytes(buf) == bytes((0xAC, 0x97))


def test_sys_stat_w1c_latching_and_cc_ready_cadence():
    sim, emu, i2c = _rig()
    _wr(i2c, 0x05, [0x40])  # CC_EN
    sim.advance(249)
    assert _rd(i2c, 0x00, 1)[0] & 0x80 == 0
    sim.advance(1)
    assert _rd(i2c, 0x00, 1)[0] & 0x80
    assert emu.alert
    _wr(i2c, 0x00, [0x00])  # writing 0 leaves it
    assert emu.regs[0] & 0x80
    _wr(i2c, 0x00, [0x80])
    assert emu.regs[0] == 0 and not emu.alert
    _wr(i2c, 0x00, [0xFF])  # the host cannot set bits
    assert emu.regs[0] == 0
    n = 0
    for _ in range(8):
        sim.advance(250)
        if emu.regs[0] & 0x80:
            n += 1
            _wr(i2c, 0x00, [0x80])
    assert n == 8
    # latched: stays set when not cleared
    sim.advance(1000)
    assert emu.regs[0] & 0x80


def test_cc_value_and_sign():
    sim, emu, i2c = _rig()
    _wr(i2c, 0x05, [0x43])
    sim.request_ma = -10000  # 10 A discharge through 1 mOhm = -10 mV = -1184.8 LSB
    sim.advance(250)
    b = _rd(i2c, 0x32, 2)
    v = (b[0] << 8) | b[1]
    if v >= 0x8000:
        v -= 0x10000
    assert v == -1185
    sim.request_ma = 300000  # saturates at +32000 (a charge: + with cc_sign 1)
    sim.advance(250)
    b = _rd(i2c, 0x32, 2)
    assert (b[0] << 8) | b[1] == 32000


def test_cc_oneshot_self_clears():
    sim, emu, i2c = _rig()
    _wr(i2c, 0x05, [0x23])  # CC_ONESHOT, FETs on, CC_EN off
    assert emu.regs[5] & 0x20
    sim.request_ma = 5000
    sim.advance(250)
    assert emu.regs[5] & 0x20 == 0
    assert emu.regs[0] & 0x80
    b = _rd(i2c, 0x32, 2)
    assert (b[0] << 8) | b[1] == 592  # 5 mV / 8.44 uV
    sim.advance(1000)
    assert emu.trip_count.get("OCD", 0) == 0


def test_cell_conversion_and_bat():
    sim, emu, i2c = _rig(cells=4)
    _wr(i2c, 0x04, [0x18])
    sim.pack.cell_force_mv[0] = 2365.0
    sim.pack.cell_force_mv[1] = 3052.0
    sim.advance(500)
    c1 = _code14(i2c, 0x0C)
    assert abs(380 * c1 / 1000 + 30 - 2365) <= 0.2
    assert abs(380 * _code14(i2c, 0x0E) / 1000 + 30 - 3052) <= 0.2
    assert _code14(i2c, 0x12) == 0  # VC4 shorted in a 4S '20 (channels 1, 2, 3, 5)
    c5 = _code14(i2c, 0x14)
    assert abs(380 * c5 / 1000 + 30 - sim.pack.cell_mv(3)) <= 1
    codes = [_code14(i2c, 0x0C + 2 * k) for k in range(5)]
    b = _rd(i2c, 0x2A, 2)
    assert (b[0] << 8) | b[1] == sum(codes) // 4
    # stale: results freeze
    emu.stale = True
    sim.pack.cell_force_mv[0] = 3000.0
    sim.advance(500)
    assert _code14(i2c, 0x0C) == c1
    emu.stale = False
    sim.advance(250)
    assert _code14(i2c, 0x0C) != c1


def test_thermistor_and_die_temperature():
    sim, emu, i2c = _rig()
    _wr(i2c, 0x04, [0x18])
    sim.advance(250)
    assert abs(_code14(i2c, 0x2C) - 4319) <= 2  # 10 k at 25 C: 1.65 V / 382 uV
    sim.pack.thermistor_open = True
    sim.advance(2000)
    assert _code14(i2c, 0x2C) > 8500
    sim.pack.thermistor_open = False
    _wr(i2c, 0x04, [0x10])  # TEMP_SEL = 0: die temperature
    sim.advance(2000)
    v = _code14(i2c, 0x2C) * 382e-6
    t = 25 - (v - 1.2) / 0.0042
    assert abs(t - 25.5) < 0.3


def _ov_trip_reg(mv, gain=380, offset=30):
    return (((mv - offset) * 1000 // gain) >> 4) & 0xFF


def test_ov_trip_after_delay_clears_chg_only():
    sim, emu, i2c = _rig()
    _wr(i2c, 0x09, [_ov_trip_reg(3650)])
    _wr(i2c, 0x08, [0x10])  # OV delay 2 s
    _wr(i2c, 0x05, [0x43])
    sim.pack.cell_force_mv[2] = 3700.0
    sim.advance(5000)  # without ADC_EN: no OV protection
    assert emu.regs[0] & 0x04 == 0 and emu.regs[5] & 3 == 3
    _wr(i2c, 0x04, [0x18])
    sim.advance(1750)
    assert emu.regs[0] & 0x04 == 0 and emu.regs[5] & 1
    sim.advance(500)
    assert emu.regs[0] & 0x04
    assert emu.regs[5] & 3 == 2  # CHG_ON cleared, DSG_ON kept
    assert emu.trips[-1][1] == "OV"
    # persisting OV: a rewritten CHG_ON is cleared again at the next conversion
    _wr(i2c, 0x00, [0x04])
    _wr(i2c, 0x05, [0x43])
    sim.advance(250)
    assert emu.regs[5] & 3 == 2 and emu.regs[0] & 0x04
    # the chip never sets FETs; after clearing OV the host rewrites CHG_ON
    sim.pack.cell_force_mv[2] = None
    _wr(i2c, 0x00, [0x04])
    _wr(i2c, 0x05, [0x43])
    sim.advance(5000)
    assert emu.regs[5] & 3 == 3 and emu.regs[0] & 0x04 == 0


def test_uv_trip_and_uvminqual():
    sim, emu, i2c = _rig()
    _wr(i2c, 0x04, [0x18])
    _wr(i2c, 0x05, [0x43])
    sim.pack.cell_force_mv[3] = 300.0  # below UVMINQUAL: ignored
    sim.advance(3000)
    assert emu.regs[0] & 0x08 == 0
    sim.pack.cell_force_mv[3] = 2400.0  # below 0x1970 -> 2504.6 mV
    sim.advance(750)
    assert emu.regs[0] & 0x08 == 0
    sim.advance(500)  # UV delay code 0 = 1 s
    assert emu.regs[0] & 0x08
    assert emu.regs[5] & 3 == 1  # DSG_ON cleared, CHG_ON kept


def test_ocd_with_delay_clears_dsg():
    sim, emu, i2c = _rig()
    _wr(i2c, 0x06, [0x87])  # RSNS=1, SCD 200 mV (200 A at 1 mOhm)
    _wr(i2c, 0x07, [0x71])  # OCD 22 mV (RSNS=1) = 22 A, delay 1280 ms
    _wr(i2c, 0x05, [0x43])
    sim.request_ma = -20000
    sim.advance(5000)
    assert emu.regs[0] & 0x03 == 0
    sim.request_ma = -25000
    sim.advance(1250)
    assert emu.regs[0] & 0x01 == 0
    sim.advance(250)
    assert emu.regs[0] & 0x03 == 0x01
    assert emu.regs[5] & 3 == 1
    sim.advance(250)
    assert sim.pack.current_ma == 0  # discharge blocked now
    # charging is not over-current protected in hardware
    _wr(i2c, 0x00, [0x01])
    sim.request_ma = 60000
    sim.advance(3000)
    assert emu.regs[0] & 0x03 == 0 and sim.pack.current_ma == 60000


def test_scd_trips_within_a_step():
    sim, emu, i2c = _rig()
    _wr(i2c, 0x06, [0x03])  # RSNS=0, SCD 56 mV = 56 A, 70 us
    _wr(i2c, 0x07, [0x7F])  # OCD 50 mV, 1280 ms
    _wr(i2c, 0x05, [0x43])
    sim.request_ma = -55000
    sim.advance(500)
    assert emu.regs[0] & 0x02 == 0
    sim.request_ma = -60000
    sim.advance(250)
    assert emu.regs[0] & 0x03 == 0x02
    assert emu.regs[5] & 3 == 1
    assert emu.trip_count["SCD"] == 1


def test_adjacent_cb_violation_and_bleed_mapping():
    sim, emu, i2c = _rig(cells=4)
    _wr(i2c, 0x01, [0x05])
    assert emu.violations == 0
    assert emu.bal_cells == 0b0101
    _wr(i2c, 0x01, [0x10])  # CB5 = channel 5 = top cell of a 4S '20
    assert emu.bal_cells == 0b1000
    _wr(i2c, 0x01, [0x03])
    assert emu.violations == 1
    emu.inject_xready()
    assert emu.regs[1] == 0 and emu.bal_cells == 0
    assert emu.regs[0] & 0x20
    # bq76930: CB5 + CB6 are in different groups: not a violation
    sim3, emu3, i2c3 = _rig(cells=10)
    _wr(i2c3, 0x01, [0x10, 0x01])
    assert emu3.violations == 0
    _wr(i2c3, 0x02, [0x18])
    assert emu3.violations == 1


def test_ship_sequence_and_boot():
    sim, emu, i2c = _rig()
    _wr(i2c, 0x05, [0x43])
    _wr(i2c, 0x09, [0x50])
    _wr(i2c, 0x04, [0x02])  # wrong order: ignored
    _wr(i2c, 0x04, [0x01])
    assert not emu.shipped
    _wr(i2c, 0x04, [0x00])
    _wr(i2c, 0x04, [0x01])
    _wr(i2c, 0x04, [0x02])
    assert emu.shipped
    e = raises(OSError, _rd, i2c, 0x00, 1)
    assert e.args[0] == errno.ENODEV
    assert i2c.scan() == []
    sim.request_ma = -1000
    sim.advance(1000)
    assert sim.pack.current_ma == 0
    emu.boot()
    assert _rd(i2c, 0x09, 2) == bytes((0xAC, 0x97))
    assert emu.regs[5] == 0


def test_fault_injection_nack_crc_lost_ovrd():
    sim, emu, i2c = _rig()
    emu.inject_nack(2)
    e = raises(OSError, _wr, i2c, 0x0B, [0x19])
    assert e.args[0] == errno.EIO
    raises(OSError, _rd, i2c, 0x0B, 1)
    _wr(i2c, 0x0B, [0x19])
    emu.inject_crc_errors(1)
    raises(AssertionError, _rd, i2c, 0x0B, 1)
    assert _rd(i2c, 0x0B, 1) == bytes((0x19,))
    emu.lost = True
    e = raises(OSError, _rd, i2c, 0x0B, 1)
    assert e.args[0] == errno.ENODEV
    emu.lost = False
    _wr(i2c, 0x05, [0x03])
    assert emu.inject_ovrd_alert()
    assert emu.regs[0] & 0x10 and emu.regs[5] & 3 == 0


def test_machine_api_pin_wdt_clock():
    clock = SimClock()
    p = Pin("heater", Pin.OUT, 0, clock=clock)
    clock.advance(100)
    p.on()
    assert p.value() == 1 and p.changes == [(100, 1)]
    p.off()
    assert p() == 0
    w = WDT(0, 1000, clock=clock)
    clock.advance(900)
    w.feed()
    clock.advance(900)
    assert not w.expired() and w.feeds == 1
    clock.advance(200)
    assert w.expired()


def test_simulator_heater_and_board():
    sim = Simulator(cells=4, capacity_mah=10000, seed=2)
    try:
        from boards.sim import board
    except ImportError:
        import board
    hw = board.open(sim)
    assert hw.i2c is sim.i2c and hw.clock.now_ms() == 0
    assert hw.spi is None and hw.rs485_de is None
    assert board.NAME == "sim" and board.AFE_ADDRESS == 0x08
    t0 = sim.pack.temp_c
    hw.heater.on()
    sim.advance(600000)
    assert sim.pack.temp_c > t0 + 1.0
    w = hw.wdt_factory(5000)
    w.feed()
    sim.advance(6000)
    assert sim.wdt_resets == 1 and sim.reset_cause == 3  # machine.WDT_RESET


def _configure(i2c, cb=0x01):
    _wr(i2c, 0x0B, [0x19])
    _wr(i2c, 0x04, [0x18])
    _wr(i2c, 0x05, [0x43])
    _wr(i2c, 0x06, [0x8B, 0x5A, 0x50, 0xBF, 0x99])
    _wr(i2c, 0x01, [cb])


DEFAULTS = bytes((0, 0, 0, 0, 0, 0, 0, 0, 0, 0xAC, 0x97, 0))  # 0x00..0x0B after a reset


def test_boot_pulse_ignored_unless_shipped():
    sim, emu, i2c = _rig()
    _configure(i2c)
    before = _rd(i2c, 0x00, 12)
    emu.boot()  # a TS1 pulse to a chip in NORMAL: nothing happens
    assert _rd(i2c, 0x00, 12) == before
    assert emu.chg_on and emu.dsg_on and emu.bal_cells == 0b0001
    _wr(i2c, 0x04, [0x18])
    _wr(i2c, 0x04, [0x19])
    _wr(i2c, 0x04, [0x1A])
    assert emu.shipped
    emu.boot()
    assert not emu.shipped and _rd(i2c, 0x00, 12) == DEFAULTS


def test_power_on_reset_adc_off_keeps_frozen_data():
    sim, emu, i2c = _rig(cells=5)
    _configure(i2c, cb=0x05)
    sim.advance(1000)
    data = _rd(i2c, 0x0C, 0x34 - 0x0C)
    trim = _rd(i2c, 0x50, 2) + _rd(i2c, 0x59, 1)
    assert any(data[:10])
    emu.power_on_reset(adc_on=False, keep_data=True)
    assert emu.trip_count["POR"] == 1
    assert _rd(i2c, 0x00, 12) == DEFAULTS
    assert not emu.chg_on and not emu.dsg_on and emu.bal_cells == 0
    assert _rd(i2c, 0x0C, 0x34 - 0x0C) == data  # the last conversion is still there
    assert _rd(i2c, 0x50, 2) + _rd(i2c, 0x59, 1) == trim  # factory trim survives
    sim.pack.cell_force_mv[0] = 3000.0
    sim.advance(2000)  # ADC off: nothing converts, cells and BAT stay frozen
    assert _rd(i2c, 0x0C, 12) == data[:12]
    assert _rd(i2c, 0x2A, 2) == data[0x2A - 0x0C:0x2C - 0x0C]


def test_power_on_reset_adc_on_converts_again():
    sim, emu, i2c = _rig(cells=5)
    _configure(i2c)
    sim.advance(1000)
    c1 = _code14(i2c, 0x0C)
    emu.power_on_reset(adc_on=True, keep_data=True)
    assert _rd(i2c, 0x00, 12) == DEFAULTS[:4] + bytes((0x10,)) + DEFAULTS[5:]
    assert _code14(i2c, 0x0C) == c1
    sim.pack.cell_force_mv[0] = 3000.0
    sim.advance(250)
    assert abs(380 * _code14(i2c, 0x0C) / 1000 + 30 - 3000) <= 0.5
    # OV/UV work again with ADC_EN, at the default trip levels (OV_TRIP 0xAC)
    assert abs(emu.ov_threshold_mv() - (380 * (0x2008 | 0xAC << 4) / 1000 + 30)) < 1e-6


def test_power_on_reset_without_data_and_default_adc():
    sim, emu, i2c = _rig(cells=4)
    _configure(i2c)
    sim.advance(1000)
    emu.power_on_reset(keep_data=False)  # adc_on=None: the emulator's adc_en_on_boot
    assert _rd(i2c, 0x0C, 0x34 - 0x0C) == bytes(0x34 - 0x0C)
    assert emu.regs[0x04] == (0x10 if emu.adc_en_on_boot else 0)
    sim2, emu2, i2c2 = _rig(cells=4, emu_kwargs={"adc_en_on_boot": True})
    _configure(i2c2)
    emu2.power_on_reset()
    assert emu2.regs[0x04] == 0x10
    # a shipped chip has nothing to reset
    _wr(i2c2, 0x04, [0x00])
    _wr(i2c2, 0x04, [0x01])
    _wr(i2c2, 0x04, [0x02])
    assert emu2.shipped
    emu2.power_on_reset()
    assert emu2.shipped and emu2.trip_count["POR"] == 1


def test_upset_flips_bits_and_the_chip_acts_on_them():
    sim, emu, i2c = _rig(cells=4)
    _configure(i2c)
    emu.upset(0x09, 0x01)  # OV_TRIP 0xBF -> 0xBE
    assert _rd(i2c, 0x09, 1) == bytes((0xBE,))
    assert abs(emu.ov_threshold_mv() - (380 * (0x2008 | 0xBE << 4) / 1000 + 30)) < 1e-6
    emu.upset(0x0A, 0x80)  # UV_TRIP 0x99 -> 0x19
    assert abs(emu.uv_threshold_mv() - (380 * (0x1000 | 0x19 << 4) / 1000 + 30)) < 1e-6
    emu.upset(0x06, 0x80)  # RSNS 1 -> 0: SCD 111 mV -> 56 mV (code 3), 1 mOhm
    assert emu.scd_ma == 56000
    emu.upset(0x01, 0x10)  # CB5 = channel 5 = cell 4 of a 4S '20
    assert emu.bal_cells == 0b1001
    emu.upset(0x05, 0x01)  # CHG_ON flipped off
    assert not emu.chg_on and emu.dsg_on
    emu.upset(0x04, 0x10)  # ADC_EN lost: no more conversions
    c = _code14(i2c, 0x0C)
    sim.pack.cell_force_mv[0] = 1600.0  # below the upset UV trip (~1738 mV)
    sim.advance(5000)  # > the 4 s UV delay
    assert _code14(i2c, 0x0C) == c and emu.regs[0] & 0x08 == 0  # no conversion, no UV
    emu.upset(0x04, 0x10)  # ADC_EN back: UV trips after its delay
    sim.advance(5000)
    assert emu.regs[0] & 0x08
    assert emu.trip_count["UPSET"] == 7


def test_tap_fault_on_some_conversions():
    sim, emu, i2c = _rig(cells=4)
    _configure(i2c)
    sim.advance(500)
    good = _code14(i2c, 0x0E)  # cell 2 (channel 2)
    emu.tap_fault = (1, 1200, 1, 3)  # cell index 1 reads 1200 mV on 1 of every 3 conversions
    bad = (1200 * 1000 - 30000 + 190) // 380
    seen = []
    for _ in range(6):
        sim.advance(250)
        codes = [_code14(i2c, 0x0C + 2 * k) for k in range(5)]
        b = _rd(i2c, 0x2A, 2)
        assert (b[0] << 8) | b[1] == sum(codes) // 4  # BAT follows the faulty tap
        seen.append(codes[1])
    assert seen.count(bad) == 2 and all(abs(c - good) <= 3 for c in seen if c != bad)
    emu.tap_fault = None
    sim.advance(250)
    assert abs(_code14(i2c, 0x0E) - good) <= 3
