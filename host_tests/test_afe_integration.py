# The firmware's BQ769x0 driver against the simulator's register-level emulator (written
# independently from the datasheet): the paths that matter when the bus goes bad.
from bms.bq769x0 import AfeCrcError, AfeError, BQ769x0
from bms.snapshot import FLAG_CELLS_VALID, Snapshot
from simlib import Simulator
from testlib import raises


def _rig():
    sim = Simulator(cells=4, capacity_mah=10000, seed=3)
    afe = BQ769x0(sim.i2c, 4, shunt_uohm=1000)
    afe.init()
    snap = Snapshot(4, 1)
    sim.advance(2500)  # first temperature conversion
    afe.read(snap, sim.clock.now_ms())
    return sim, afe, snap


def test_read_matches_the_pack_and_fets_follow_commands():
    sim, afe, snap = _rig()
    assert snap.flags & FLAG_CELLS_VALID
    for i in range(4):
        assert abs(snap.cell_mv[i] - (sim.pack.v_uv[i] + 500) // 1000) <= 2
    afe.set_fets(True, True)
    assert sim.fet_on("chg") and sim.fet_on("dsg")
    afe.set_fets(False, True)
    assert not sim.fet_on("chg") and sim.fet_on("dsg")


def test_fets_open_even_while_every_read_fails():
    sim, afe, snap = _rig()
    afe.set_fets(True, True)
    sim.emu.inject_crc_errors(1000)  # every read transaction now has a bad CRC
    raises(AfeCrcError, afe.read, snap, sim.clock.now_ms() + 250)
    assert snap.errors == 1 and snap.flags == 0
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
    afe.read(snap, sim.clock.now_ms() + 500)
    assert snap.errors == 0 and snap.flags & FLAG_CELLS_VALID


def test_nothing_is_valid_before_the_first_conversion():
    # Right after boot the AFE has not converted yet: the driver must not hand zeros (the
    # offset alone) to protection as a pack voltage or shorted thermistors.
    from bms.snapshot import FLAG_PACK_VALID, FLAG_TEMPS_VALID

    sim = Simulator(cells=10, capacity_mah=10000, seed=4)
    afe = BQ769x0(sim.i2c, 10, shunt_uohm=1000, n_temps=2)
    afe.init()
    snap = Snapshot(10, 2)
    afe.read(snap, 0)
    assert not snap.flags & (FLAG_CELLS_VALID | FLAG_PACK_VALID | FLAG_TEMPS_VALID)
    sim.advance(500)
    afe.read(snap, 500)
    assert snap.flags & FLAG_CELLS_VALID and snap.flags & FLAG_PACK_VALID
    sim.advance(2500)
    afe.read(snap, 3000)
    assert snap.flags & FLAG_TEMPS_VALID and snap.temp_dc[0] != -32768
