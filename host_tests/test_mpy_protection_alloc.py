# MicroPython only: Protection.update() allocates nothing, including every kind of fault
# transition (set, release, retry, latch, warnings, state changes, events, acknowledged AFE
# trips) and the cycles in which a quantity is unknown (failed read, refused read, missing
# flags, implausible cells and thermistors: timers run, faults set with the value UNKNOWN).
import micropython

from bms.afe import CFG_ERR, TRIP_DEVICE, TRIP_OV, TRIP_OVRD, TRIP_SCD, TRIP_UV
from bms.config import Config
from bms.events import EV_FAULT_SET, EventLog
from bms.protection import (
    F_AFE_CONFIG,
    F_CELL_OV,
    STATE_LATCHED,
    STATE_NORMAL,
    UNKNOWN,
    Protection,
)
from bms.snapshot import TEMP_INVALID_DC, Snapshot

ALL = 0x0F
_OK = 0  # read kinds
_FAIL = 1  # bus failure (errors counted)
_CFG = 2  # refused: the AFE lost its configuration (cfg_err, flags 0)
_NOCELLS = 3  # read, but without the cells flag
_NOTEMPS = 4  # read, but without the thermistor flag (after a re-initialisation)
_FLICKER = 5  # cell 0 reads `mv` on 4 cycles of 5, 3300 on the fifth

# One scenario row per phase: (cycles, cell0_mv, temp0_dc, current_ma, trips, read kind)
PHASES = (
    (4, 3300, 250, 0, 0, _OK),
    (12, 3700, 250, -3000, 0, _OK),  # cell_ov + body diode during discharge
    (12, 3300, 250, 0, 0, _OK),  # release
    (12, 2600, 250, 3000, 0, _OK),  # cell_uv + body diode during charge
    (12, 3300, -50, 0, 0, _OK),  # chg_ut
    (12, 3300, TEMP_INVALID_DC, 0, 0, _OK),  # temp_sensor (window unknown, covered)
    (12, 3300, 1400, 0, 0, _OK),  # implausible thermistor
    (12, 3300, 250, 0, TRIP_DEVICE, _OK),  # xready, acknowledged once
    (20, 3300, 250, 0, 0, _OK),
    (4, 3300, 250, 0, TRIP_OVRD, _OK),  # ovrd
    (20, 3300, 250, 0, 0, _OK),
    (3, 3300, 250, 0, 0, _FAIL),  # AFE lost: every quantity unknown
    (12, 3300, 250, 0, TRIP_OV, _OK),  # hw_ov, acknowledged at the software release
    (12, 3300, 250, 0, TRIP_UV, _OK),  # hw_uv
    (12, 3300, 250, 60000, 0, _OK),  # chg_oc
    (6, 3300, 250, 0, TRIP_SCD, _OK),  # scd, retries every 1 s, latches
    (6, 3300, 250, 0, TRIP_SCD, _OK),
    (6, 3300, 250, 0, TRIP_SCD, _OK),
    (12, 3300, 250, 0, 0, _OK),
    (10, 5200, 250, 0, 0, _OK),  # implausible cell: cell_ov/cell_uv set with UNKNOWN
    (16, 3300, 250, 0, 0, _OK),
    (15, 300, 250, 0, 0, _FLICKER),  # intermittent implausible cell
    (16, 3300, 250, 0, 0, _OK),
    (6, 3300, 250, 0, 0, _NOCELLS),  # incomplete readings: afe_stale
    (16, 3300, 250, 0, 0, _OK),
    (2, 3300, 250, 0, 0, _CFG),  # afe_config, at once
    (8, 3300, 250, 0, 0, _NOTEMPS),  # re-initialised, thermistors not converted yet
    (16, 3300, 250, 0, 0, _OK),  # released by complete readings
)


def _run(p, snap, now, seen):
    for cycles, mv, t, cur, trips, kind in PHASES:
        for k in range(cycles):
            now += 250
            v = mv
            if kind == _FLICKER and k % 5 == 4:
                v = 3300
            snap.cell_mv[0] = v
            snap.pack_mv = 13200 if v < 500 or v > 5000 else v + 9900
            snap.temp_dc[0] = t
            snap.current_ma = cur
            if k == 0:
                snap.trips |= trips  # reported until acknowledged (and cleared)
            if kind == _FAIL:
                snap.errors += 1
                snap.flags = 0
            elif kind == _CFG:
                snap.errors = 0
                snap.cfg_err = CFG_ERR | 0x09
                snap.flags = 0
            else:
                snap.errors = 0
                snap.cfg_err = 0
                snap.seq += 1
                snap.t_ms = now
                if kind == _NOCELLS:
                    snap.flags = ALL & ~0x01
                elif kind == _NOTEMPS:
                    snap.flags = ALL & ~0x08
                else:
                    snap.flags = ALL
            p.update(snap, now)
            if snap.errors == 0 and snap.cfg_err == 0:
                snap.trips &= ~p.ack  # the driver's ack_trips()
            if p.state == STATE_LATCHED:
                seen[0] += 1
                p.reset_latched(now)
            if p.faults & (1 << F_AFE_CONFIG):
                seen[1] += 1
    return now


def test_update_allocates_nothing():
    # plaus_delay_ms > cell_ov_delay_ms: an implausible cell sets cell OV/UV with UNKNOWN
    cfg = Config("lfp", 4, 100000, oc_retry_ms=1000, oc_retry_max=1, plaus_delay_ms=3000)
    ev = EventLog(64)
    snap = Snapshot(4, 1)
    for i in range(4):
        snap.cell_mv[i] = 3300
    snap.temp_dc[0] = 250
    snap.flags = ALL
    p = Protection(cfg, ev)
    seen = [0, 0]
    now = _run(p, snap, 0, seen)  # warm-up: first-call setup, every code path once
    total0 = ev.total
    seen[0] = seen[1] = 0
    unknown_sets = [0]

    def listener(code):
        # (runs inside update(): reads the newest entry without allocating)
        i = (ev.head - 1) % ev.size
        if code == EV_FAULT_SET and ev.b[i] == UNKNOWN and ev.a[i] == F_CELL_OV:
            unknown_sets[0] += 1

    ev.listener = listener
    micropython.heap_lock()
    try:
        for _ in range(5):
            now = _run(p, snap, now, seen)
    finally:
        micropython.heap_unlock()
    assert ev.total - total0 > 100  # faults, releases, states, latches were logged
    assert seen[0] >= 5  # latched (and reset) in every run
    assert seen[1] >= 5  # afe_config stood in every run
    assert unknown_sets[0] >= 5  # a fault set on an unknown value in every run
    assert p.state == STATE_NORMAL
