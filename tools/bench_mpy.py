# tools/bench_mpy.py: firmware figures measured inside the MicroPython VM (run by bench.py).
#
#   MICROPYPATH=firmware:tools:.:.frozen micropython -X heapsize=256K tools/bench_mpy.py
#
# Prints one JSON object:
#   alloc_bytes_per_cycle  heap bytes allocated per steady 250 ms measure+protect cycle
#                          (micropython.mem_total() delta around Bms.fast_cycle only: the
#                          simulator's own work between cycles is not counted)
#   alloc_bytes_per_afe_read  the same for the AFE driver's read() alone
#   firmware_heap_kb       live heap held by the firmware after boot (simulator excluded)
#   cycle_ms_host          mean time of one measure+protect cycle on this host VM
#   slow_cycle_ms_host     mean time of one control cycle (estimation, balancing, limits)
import gc
import json
import sys
import time

import micropython

sys.path.append("boards/sim")


def main():
    from simlib import Simulator

    sim = Simulator(chemistry="lfp", cells=15, capacity_mah=100000, seed=1)
    gc.collect()
    base = gc.mem_alloc()
    import board

    from bms.app import Bms

    board.configure(chemistry="lfp", cells=15, capacity_mah=100000)
    hw = board.open(sim)
    bms = Bms(hw)
    bms.boot()
    gc.collect()
    firmware_heap = gc.mem_alloc() - base
    # Reach steady state: protection in NORMAL, both FETs on, estimator running.
    t = 0
    for _ in range(200):
        sim.request_ma = -5000
        sim.advance(250)
        t = sim.clock.now_ms()
        bms.fast_cycle(t)
        if t % 1000 == 0:
            bms.slow_cycle(t)
    n = 400
    alloc = 0
    alloc_read = 0
    us = 0
    for _ in range(n):
        sim.advance(250)
        t = sim.clock.now_ms()
        gc.collect()
        m0 = micropython.mem_total()
        t0 = time.ticks_us()
        bms.fast_cycle(t)
        us += time.ticks_diff(time.ticks_us(), t0)
        alloc += micropython.mem_total() - m0
    for _ in range(n):
        sim.advance(250)
        t = sim.clock.now_ms()
        m0 = micropython.mem_total()
        try:
            bms.afe.read(bms.snap, t)
        except Exception:
            pass
        alloc_read += micropython.mem_total() - m0
    slow_us = 0
    m = 50
    for _ in range(m):
        sim.advance(1000)
        t = sim.clock.now_ms()
        t0 = time.ticks_us()
        bms.slow_cycle(t)
        slow_us += time.ticks_diff(time.ticks_us(), t0)
    print(
        json.dumps(
            {
                "alloc_bytes_per_cycle": alloc // n,
                "alloc_bytes_per_afe_read": alloc_read // n,
                "firmware_heap_kb": round(firmware_heap / 1024, 1),
                "cycle_ms_host": round(us / n / 1000, 3),
                "slow_cycle_ms_host": round(slow_us / m / 1000, 3),
            }
        )
    )


main()
