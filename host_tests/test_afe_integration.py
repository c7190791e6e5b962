# The firmware's BQ769x0 driver against the simulator's register-level emulator (written
# independently from the datasheet): the paths that matter when the bus goes bad, the chip
# resets or a register is upset, and the chip's own trips.
from bms.afe import CFG_ERR, TRIP_DEVICE, TRIP_OV, AfeConfigError
from bms.bq769x0 import AfeCrcError, AfeError, BQ769x0
from bms.snapshot import FLAG_CELLS_VALID, FLAG_PACK_VALID, FLAG_TEMPS_VALID, Snapshot
from simlib import Simulator
from testlib import raises

PROT = (3650, 1000, 2500, 1000, 60000, 320, 120000, 200)  # at a 1 mOhm shunt


def _start(afe):
    afe.init()
    return afe.configure_protection(*PROT)


def _rig(cells=4, **kw):
    sim = Simulator(cells=cells, capacity_mah=10000, seed=3, **kw)
    afe = BQ769x0(sim.i2c, cells, shunt_uohm=1000, n_temps=1)
    _start(afe)
    snap = Snapshot(cells, 1)
    afe.read(snap, sim.clock.now_ms())
    sim.advance(2500)  # first temperature conversion
    afe.read(snap, sim.clock.now_ms())
    return sim, afe, snap


def _cycle(sim, afe, snap, ms=250):
    sim.advance(ms)
    afe.read(snap, sim.clock.now_ms())


def test_read_matches_the_pack_and_fets_follow_commands():
    sim, afe, snap = _rig()
    assert snap.flags & FLAG_CELLS_VALID and snap.flags & FLAG_TEMPS_VALID
    assert snap.cfg_err == 0 and snap.trips == 0
    for i in range(4):
        assert abs(snap.cell_mv[i] - (sim.pack.v_uv[i] + 500) // 1000) <= 2
    afe.set_fets(True, True)
    assert sim.fet_on("chg") and sim.fet_on("dsg")
    afe.set_fets(False, True)
    assert not sim.fet_on("chg") and sim.fet_on("dsg")
    # the emulator holds what was programmed: the integrity check passes cycle after cycle
    afe.set_fets(True, True)
    afe.set_balance(0b0101)
    for _ in range(20):
        _cycle(sim, afe, snap)
        assert snap.cfg_err == 0 and snap.flags & FLAG_CELLS_VALID
    assert snap.bal_mask == 0b0101 and sim.emu.bal_cells == 0b0101


def test_applied_protection_is_what_the_emulator_enforces():
    sim, afe, snap = _rig()
    got = afe.configure_protection(*PROT)
    emu = sim.emu
    assert abs(emu.ov_threshold_mv() - got["ov_mv"]) <= 1 and got["ov_mv"] <= PROT[0]
    assert abs(emu.uv_threshold_mv() - got["uv_mv"]) <= 1 and got["uv_mv"] >= PROT[2]
    assert emu.ocd_ma == got["ocd_ma"] and emu.scd_ma == got["scd_ma"]
    assert emu.ov_delay_ms == got["ov_delay_ms"] and emu.uv_delay_ms == got["uv_delay_ms"]
    assert emu.ocd_delay_ms == got["ocd_delay_ms"]
    assert emu.scd_delay_us == got["scd_delay_us"]


def test_fets_open_even_while_every_read_fails():
    sim, afe, snap = _rig()
    afe.set_fets(True, True)
    sim.emu.inject_crc_errors(1000)  # every read transaction now has a bad CRC
    raises(AfeCrcError, afe.read, snap, sim.clock.now_ms() + 250)
    assert snap.errors == 1 and snap.flags == 0 and snap.cfg_err == 0
    afe.set_fets(False, False)  # a write needs no read: it still gets through
    assert not sim.fet_on("chg") and not sim.fet_on("dsg")


def test_lost_bus_is_a_typed_error_not_a_number():
    sim, afe, snap = _rig()
    before = snap.cell_mv[0]
    sim.emu.lost = True
    e = raises(AfeError, afe.read, snap, sim.clock.now_ms() + 250)
    assert e is not None and snap.errors == 1 and snap.flags == 0
    assert snap.cell_mv[0] == before  # the old numbers are flagged invalid, not replaced
    sim.emu.lost = False
    sim.advance(250)  # the chip kept converting meanwhile
    afe.read(snap, sim.clock.now_ms())
    assert snap.errors == 0 and snap.flags & FLAG_CELLS_VALID


def test_nothing_is_valid_before_the_first_conversion():
    # Right after boot the AFE has not converted yet: the driver must not hand zeros (the
    # offset alone) to protection as a pack voltage or shorted thermistors.
    sim = Simulator(cells=10, capacity_mah=10000, seed=4)
    afe = BQ769x0(sim.i2c, 10, shunt_uohm=1000, n_temps=2)
    _start(afe)
    snap = Snapshot(10, 2)
    afe.read(snap, 0)
    assert not snap.flags & (FLAG_CELLS_VALID | FLAG_PACK_VALID | FLAG_TEMPS_VALID)
    sim.advance(500)
    afe.read(snap, 500)
    assert snap.flags & FLAG_CELLS_VALID and snap.flags & FLAG_PACK_VALID
    sim.advance(2500)
    afe.read(snap, 3000)
    assert snap.flags & FLAG_TEMPS_VALID and snap.temp_dc[0] != -32768


def test_power_on_reset_is_refused_until_reinitialised():
    # The emulator's reset while the MCU runs, ADC back on or not, measurement registers
    # kept (frozen with the ADC off): the cells alone still look good.
    for cells in (4, 10, 15):
        for adc_on in (True, False):
            sim = Simulator(cells=cells, capacity_mah=10000, seed=5)
            n_t = 1
            afe = BQ769x0(sim.i2c, cells, shunt_uohm=1000, n_temps=n_t)
            _start(afe)
            snap = Snapshot(cells, n_t)
            sim.advance(1000)
            afe.read(snap, sim.t_ms)
            afe.set_fets(True, True)
            afe.set_balance(1)
            _cycle(sim, afe, snap)
            assert snap.flags & FLAG_CELLS_VALID and sim.fet_on("chg") and sim.fet_on("dsg")
            sim.emu.power_on_reset(adc_on=adc_on, keep_data=True)
            assert not sim.fet_on("chg") and not sim.fet_on("dsg")
            for _ in range(4):
                sim.advance(250)
                raises(AfeConfigError, afe.read, snap, sim.t_ms)
                assert snap.cfg_err & CFG_ERR and snap.flags == 0 and snap.errors == 0
                afe.set_fets(True, True)
                afe.restore()
                assert not sim.fet_on("chg") and not sim.fet_on("dsg"), (cells, adc_on)
            afe.init()
            afe.set_fets(True, True)
            assert not sim.fet_on("chg") and not sim.fet_on("dsg")
            afe.configure_protection(*PROT)
            _cycle(sim, afe, snap)
            assert snap.cfg_err == 0 and snap.flags & FLAG_CELLS_VALID, (cells, adc_on)
            afe.set_fets(True, True)
            assert sim.fet_on("chg") and sim.fet_on("dsg")


def test_upset_register_is_refused():
    for reg, x in ((0x06, 0x01), (0x07, 0x10), (0x08, 0x40), (0x09, 0x80), (0x0A, 0x01),
                   (0x0B, 0x01), (0x04, 0x10), (0x05, 0x80), (0x05, 0x40), (0x01, 0x02)):
        sim, afe, snap = _rig()
        afe.set_fets(False, True)
        afe.set_balance(1)
        _cycle(sim, afe, snap)
        assert snap.cfg_err == 0
        sim.emu.upset(reg, x)
        sim.advance(250)
        raises(AfeConfigError, afe.read, snap, sim.t_ms)
        assert snap.cfg_err == CFG_ERR | reg, (reg, snap.cfg_err)
        afe.set_fets(True, True)
        assert not sim.fet_on("chg") and not sim.fet_on("dsg")
        _start(afe)
        _cycle(sim, afe, snap)
        assert snap.cfg_err == 0


def test_hardware_ov_trip_keeps_chg_off_until_acknowledged():
    sim, afe, snap = _rig()
    afe.set_fets(True, True)
    sim.pack.cell_force_mv[1] = 3700.0  # above the 3650 mV OV trip (1 s delay)
    for _ in range(8):
        _cycle(sim, afe, snap)
        assert snap.cfg_err == 0  # the chip clearing CHG_ON is no upset
        afe.set_fets(True, True)
    assert snap.trips == TRIP_OV and not snap.chg_fet and snap.dsg_fet
    assert not sim.fet_on("chg") and sim.fet_on("dsg")
    sim.pack.cell_force_mv[1] = None
    _cycle(sim, afe, snap)
    afe.set_fets(True, True)  # still reported (latched): CHG stays off
    assert not sim.fet_on("chg")
    afe.ack_trips(snap.trips, sim.t_ms)
    afe.set_fets(True, True)
    assert sim.fet_on("chg") and sim.fet_on("dsg")
    _cycle(sim, afe, snap)
    assert snap.trips == 0 and snap.chg_fet and snap.cfg_err == 0


def test_xready_held_off_then_cleared_and_restored():
    sim, afe, snap = _rig()
    afe.set_fets(True, True)
    afe.set_balance(0b1001)
    _cycle(sim, afe, snap)
    sim.emu.inject_xready()  # FETs and CB bits cleared by the chip
    _cycle(sim, afe, snap)
    t0 = sim.t_ms
    assert snap.trips == TRIP_DEVICE and snap.cfg_err == 0 and snap.bal_mask == 0
    while sim.t_ms < t0 + 3000:
        afe.ack_trips(snap.trips, sim.t_ms)
        afe.restore()
        assert sim.emu.regs[0] & 0x20 and not sim.fet_on("chg") and not sim.fet_on("dsg")
        _cycle(sim, afe, snap)
    afe.ack_trips(snap.trips, sim.t_ms)
    assert sim.emu.regs[0] & 0x20 == 0 and sim.emu.bal_cells == 0b1001
    afe.restore()
    assert sim.fet_on("chg") and sim.fet_on("dsg")
    _cycle(sim, afe, snap)
    assert snap.trips == 0 and snap.bal_mask == 0b1001


def test_intermittent_tap_is_a_reading_for_protection_to_judge():
    sim, afe, snap = _rig()
    sim.emu.tap_fault = (2, 300, 1, 2)  # cell 3 reads 300 mV on every other conversion
    low = 0
    for _ in range(8):
        _cycle(sim, afe, snap)
        assert snap.flags & FLAG_CELLS_VALID and snap.cfg_err == 0
        if abs(snap.cell_mv[2] - 300) <= 2:
            low += 1
    assert low == 4
