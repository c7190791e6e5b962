# tools/bench_mpy.py: firmware figures measured inside the MicroPython VM (run by bench.py).
#
#   MICROPYPATH=firmware:tools:.:.frozen micropython -X heapsize=256K tools/bench_mpy.py
#
# Prints one JSON object:
#   alloc_bytes_per_cycle  heap bytes left allocated (garbage for the GC) per steady 250 ms
#                          measure+protect cycle: gc.mem_alloc() growth around
#                          Bms.fast_cycle with the collector off. The I2C bus is a ReplayI2C
#                          that serves the emulator's recorded answers from preallocated
#                          buffers, so only the firmware counts.
#   frame_bytes_per_cycle  bytes of call frames MicroPython puts on the heap and frees on
#                          return (functions with more than 11 words of state, ports without
#                          pystack): micropython.mem_total() delta, minus the garbage above.
#                          No garbage, but heap traffic on rp2/esp32.
#   alloc_bytes_per_afe_read  garbage per AFE driver read() alone
#   firmware_heap_kb       live heap held by the firmware after boot (simulator excluded)
#   cycle_ms_host          mean time of one measure+protect cycle on this host VM
#   slow_cycle_ms_host     mean time of one control cycle (estimation, balancing, limits)
import gc
import json
import sys
import time

import micropython

sys.path.append("boards/sim")


class ReplayI2C:
    """Records the emulator's answers per (register, length), then replays them without
    allocating (writes are accepted and dropped), so mem_total() sees the firmware only."""

    def __init__(self, real):
        self.real = real
        self.rec = {}
        self.replay = False

    def readfrom_mem_into(self, addr, reg, buf, *args):
        key = reg * 256 + len(buf)
        if self.replay:
            src = self.rec[key]
            for i in range(len(buf)):
                buf[i] = src[i]
            return
        self.real.readfrom_mem_into(addr, reg, buf, *args)
        self.rec[key] = bytearray(buf)

    def readfrom_mem(self, addr, reg, n, *args):
        b = bytearray(n)
        self.readfrom_mem_into(addr, reg, b)
        return bytes(b)

    def writeto_mem(self, addr, reg, buf, *args):
        if not self.replay:
            self.real.writeto_mem(addr, reg, buf, *args)

    def writeto(self, addr, buf, *args):
        if not self.replay:
            return self.real.writeto(addr, buf, *args)
        return len(buf)


def main():
    import board
    from simlib import Simulator

    sim = Simulator(chemistry="lfp", cells=15, capacity_mah=100000, seed=1,
                    shunt_uohm=board.SHUNT_UOHM)
    gc.collect()
    base = gc.mem_alloc()
    from bms.app import Bms

    board.configure(chemistry="lfp", cells=15, capacity_mah=100000)
    hw = board.open(sim)
    replay = ReplayI2C(hw.i2c)
    hw.i2c = replay
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
    # Record one more cycle of answers, then replay: the AFE data no longer changes, so the
    # protection sees a steady pack; only the firmware runs inside the measured window.
    sim.advance(250)
    bms.fast_cycle(sim.clock.now_ms())
    replay.replay = True
    n = 400
    alloc = 0
    alloc_read = 0
    us = 0
    frames = 0
    for _ in range(n):
        t += 250
        gc.collect()
        gc.disable()
        a0 = gc.mem_alloc()
        m0 = micropython.mem_total()
        t0 = time.ticks_us()
        bms.fast_cycle(t)
        us += time.ticks_diff(time.ticks_us(), t0)
        total = micropython.mem_total() - m0
        left = gc.mem_alloc() - a0
        gc.enable()
        alloc += left
        frames += total - left
    for _ in range(n):
        t += 250
        gc.collect()
        gc.disable()
        a0 = gc.mem_alloc()
        try:
            bms.afe.read(bms.snap, t)
        except Exception:
            pass
        alloc_read += gc.mem_alloc() - a0
        gc.enable()
    replay.replay = False
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
                "frame_bytes_per_cycle": frames // n,
                "alloc_bytes_per_afe_read": alloc_read // n,
                "firmware_heap_kb": round(firmware_heap / 1024, 1),
                "cycle_ms_host": round(us / n / 1000, 3),
                "slow_cycle_ms_host": round(slow_us / m / 1000, 3),
            }
        )
    )


main()
