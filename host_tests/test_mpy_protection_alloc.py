# MicroPython only: Protection.update() allocates nothing, including every kind of fault
# transition (set, release, retry, latch, warnings, state changes, events, SYS_STAT clears).
import micropython

from bms.config import Config
from bms.events import EventLog
from bms.protection import (
    STAT_OV,
    STAT_SCD,
    STAT_XREADY,
    STATE_LATCHED,
    STATE_NORMAL,
    Protection,
)
from bms.snapshot import TEMP_INVALID_DC, Snapshot

ALL = 0x0F

# One scenario row per phase: (cycles, cell0_mv, temp0_dc, current_ma, stat_bits, read_ok)
PHASES = (
    (4, 3300, 250, 0, 0, True),
    (12, 3700, 250, -3000, 0, True),  # cell_ov + body diode during discharge
    (12, 3300, 250, 0, 0, True),  # release
    (12, 2600, 250, 3000, 0, True),  # cell_uv + body diode during charge
    (12, 3300, -50, 0, 0, True),  # chg_ut
    (12, 3300, TEMP_INVALID_DC, 0, 0, True),  # temp_sensor
    (12, 3300, 250, 0, STAT_XREADY, True),  # xready, cleared after 3 s
    (20, 3300, 250, 0, 0, True),
    (3, 3300, 250, 0, 0, False),  # AFE lost
    (12, 3300, 250, 0, STAT_OV, True),  # hw_ov
    (12, 3300, 250, 60000, 0, True),  # chg_oc
    (6, 3300, 250, 0, STAT_SCD, True),  # scd, retries every 1 s, latches
    (6, 3300, 250, 0, STAT_SCD, True),
    (6, 3300, 250, 0, STAT_SCD, True),
    (12, 3300, 250, 0, 0, True),
)


def _run(p, snap, now, latch_seen):
    for cycles, mv, t, cur, stat, ok in PHASES:
        for _ in range(cycles):
            now += 250
            snap.cell_mv[0] = mv
            snap.pack_mv = mv + 9900
            snap.temp_dc[0] = t
            snap.current_ma = cur
            snap.sys_stat |= stat
            if ok:
                snap.errors = 0
                snap.seq += 1
                snap.t_ms = now
            else:
                snap.errors += 1
            p.update(snap, now)
            snap.sys_stat &= ~p.clear_stat
            if p.state == STATE_LATCHED:
                latch_seen[0] += 1
                p.reset_latched(now)
    return now


def test_update_allocates_nothing():
    cfg = Config("lfp", 4, 100000, oc_retry_ms=1000, oc_retry_max=1)
    ev = EventLog(64)
    snap = Snapshot(4, 1)
    for i in range(4):
        snap.cell_mv[i] = 3300
    snap.temp_dc[0] = 250
    snap.flags = ALL
    p = Protection(cfg, ev)
    latch_seen = [0]
    now = _run(p, snap, 0, latch_seen)  # warm-up: first-call setup, every code path once
    total0 = ev.total
    latch_seen[0] = 0
    micropython.heap_lock()
    try:
        for _ in range(5):
            now = _run(p, snap, now, latch_seen)
    finally:
        micropython.heap_unlock()
    assert ev.total - total0 > 100  # faults, releases, states, latches were logged
    assert latch_seen[0] >= 5
    assert p.state == STATE_NORMAL
