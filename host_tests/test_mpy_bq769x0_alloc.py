# MicroPython only: the 250 ms AFE path - read (with its integrity check), ack_trips,
# set_fets (with its SYS_STAT gate), balancing - allocates nothing when nothing fails. Any
# heap allocation while micropython.heap_lock() is active raises MemoryError.
import gc

import micropython
from fake_bq import FakeBQ

from bms.afe import TRIP_OV
from bms.bq769x0 import BQ769x0
from bms.snapshot import FLAG_CC_NEW, FLAG_CELLS_VALID, FLAG_TEMPS_VALID, Snapshot

# SYS_STAT bits (DS Table 8-3)
ST_XREADY = 0x20
ST_OVRD = 0x10
ST_UV = 0x08
ST_OV = 0x04
ST_SCD = 0x02

CONFIGS = (
    # cells, crc, address, n_temps, temp_source, variant, shunt_uohm, cc_sign
    (3, True, 0x08, 1, "ext", None, 1000, 1),
    (5, False, 0x18, 1, "die", None, 333, -1),
    (10, True, 0x18, 2, "ext", None, 5000, 1),
    (9, True, 0x08, 3, "ext", "bq76940", 100, 1),
    (15, False, 0x08, 3, "ext", None, 250, -1),
)


def _setup(cells, crc, address, n_temps, temp_source, variant, shunt, sign):
    fake = FakeBQ(address=address, crc=crc, gain_uv=377, offset_mv=-7)
    drv = BQ769x0(
        fake,
        cells,
        address=address,
        crc=crc,
        shunt_uohm=shunt,
        n_temps=n_temps,
        temp_source=temp_source,
        variant=variant,
        cc_sign=sign,
    )
    drv.init()
    ocd, scd = drv.current_floor_ma()
    drv.configure_protection(
        4200, 1000, 2800, 1000, max(30000, 2 * ocd), 8, max(60000, 3 * scd), 70
    )
    for i, ch in enumerate(drv.channels):
        fake.set_cell_mv(ch, 3300 + 37 * i)
    for i in range(n_temps):
        fake.set_ts(i + 1, 4000 + 500 * i)
    fake.set_bat(11000)
    return fake, drv, Snapshot(cells, n_temps)


def test_measure_cycle_does_not_allocate():
    for cfg in CONFIGS:
        fake, drv, snap = _setup(*cfg)
        gc.collect()
        t = 0
        acked_ov = xr_cleared = ovrd_cleared = gated = 0
        for cycle in range(240):
            # vary the data and let the chip trip, outside the lock (the fake may allocate)
            fake.set_cc((cycle * 977) % 65536 - 32768 if cycle % 7 else -1, cycle % 5 != 3)
            fake.set_ts(1, 0 if cycle % 11 == 0 else 4100 + cycle)
            if cycle % 13 == 0:
                fake.trip(ST_OV)
            if cycle % 29 == 3:
                fake.trip(ST_UV | ST_SCD)
            if cycle == 20 or cycle == 120:
                fake.trip(ST_XREADY)  # cleared after its 3 s hold-off, CB bits rewritten
            if cycle == 60:
                fake.trip(ST_OVRD)  # cleared after 10 s
            stat = fake.regs[0]
            mask = 1 << (cycle % drv.cells)
            chg = cycle % 3 != 0
            dt = 750 if cycle % 17 == 0 else 250
            t += dt
            micropython.heap_lock()
            try:
                drv.read(snap, t)
                drv.ack_trips(snap.trips, t)
                drv.set_fets(chg, True)
                drv.set_balance(mask)
                if cycle % 50 == 0:
                    drv.restore()
            finally:
                micropython.heap_unlock()
            assert snap.seq == cycle + 1 and snap.cfg_err == 0
            assert snap.flags & FLAG_CELLS_VALID
            if stat & ST_OV:
                assert snap.trips & TRIP_OV
                acked_ov += fake.regs[0] & ST_OV == 0
            if stat & ST_XREADY and not fake.regs[0] & ST_XREADY:
                xr_cleared += 1
            if stat & ST_OVRD and not fake.regs[0] & ST_OVRD:
                ovrd_cleared += 1
            if stat & (ST_XREADY | ST_OVRD):
                gated += fake.regs[5] & 0x03 == 0
        assert snap.cc_seq > 100 and snap.cc_missed > 0
        assert acked_ov > 10 and xr_cleared == 2 and ovrd_cleared == 1 and gated > 20
        assert fake.regs[0] & (ST_OV | ST_XREADY | ST_OVRD) == 0
        if cfg[4] == "ext":
            assert snap.flags & FLAG_TEMPS_VALID


def test_mem_free_unchanged_over_many_cycles():
    fake, drv, snap = _setup(*CONFIGS[2])
    fake.set_cc(1234)
    drv.read(snap, 0)
    gc.collect()
    gc.disable()
    try:
        before = gc.mem_free()
        for cycle in range(500):
            fake.regs[0] |= 0x80  # CC_READY every cycle
            t = 250 * (cycle + 1)
            drv.read(snap, t)
            drv.ack_trips(snap.trips, t)
            drv.set_fets(True, True)
            assert snap.flags & FLAG_CC_NEW
        after = gc.mem_free()
    finally:
        gc.enable()
    assert after == before, (before, after)
