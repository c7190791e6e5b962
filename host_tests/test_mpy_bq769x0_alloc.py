# MicroPython only: the 250 ms AFE path (read, FET write, status clear, balancing) allocates
# nothing. Any heap allocation while micropython.heap_lock() is active raises MemoryError.
import gc

import micropython
from fake_bq import FakeBQ

from bms.bq769x0 import BQ769x0
from bms.snapshot import STAT_OV
from bms.snapshot import FLAG_CC_NEW, FLAG_CELLS_VALID, Snapshot

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
    for i, ch in enumerate(drv.channels):
        fake.set_cell_mv(ch, 3300 + 37 * i)
    for i in range(n_temps):
        fake.set_ts(i + 1, 4000 + 500 * i)
    fake.set_bat(11000)
    return fake, drv, Snapshot(cells, n_temps)


def test_read_cycle_does_not_allocate():
    for cfg in CONFIGS:
        fake, drv, snap = _setup(*cfg)
        gc.collect()
        t = 0
        for cycle in range(200):
            # vary the data outside the lock (the fake's setters may allocate)
            fake.set_cc((cycle * 977) % 65536 - 32768 if cycle % 7 else -1, cycle % 5 != 3)
            fake.set_ts(1, 0 if cycle % 11 == 0 else 4100 + cycle)
            if cycle % 13 == 0:
                fake.regs[0] |= STAT_OV
            mask = 1 << (cycle % drv.cells)
            chg = cycle % 3 != 0
            dt = 750 if cycle % 17 == 0 else 250
            t += dt
            micropython.heap_lock()
            try:
                drv.read(snap, t)
                drv.set_fets(chg, True)
                drv.clear_status(snap.sys_stat & STAT_OV)
                drv.set_balance(mask)
                if cycle % 50 == 0:
                    drv.restore()
            finally:
                micropython.heap_unlock()
            assert snap.seq == cycle + 1
            assert snap.flags & FLAG_CELLS_VALID
        assert snap.cc_seq > 100 and snap.cc_missed > 0
        assert fake.regs[0] & STAT_OV == 0


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
            drv.read(snap, 250 * (cycle + 1))
            assert snap.flags & FLAG_CC_NEW
        after = gc.mem_free()
    finally:
        gc.enable()
    assert after == before, (before, after)
