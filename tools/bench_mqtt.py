# MQTT figures inside the MicroPython VM (make bench runs it; a broker must listen on the
# port given, tools/bench.py starts one):
#
#   MICROPYPATH=firmware:tools:.:.frozen micropython -X heapsize=1M tools/bench_mqtt.py PORT
#   ... tools/bench_mqtt.py 0        the same firmware without MQTT (the heap baseline)
#
# 15-cell pack (BQ76940, 3 thermistors) like tools/bench_mpy.py. Prints one JSON line:
#   heap_kb               live heap after boot and 300 simulated seconds (simulator excluded)
#   poll_us_median / poll_us_worst   MqttLink.poll() on the host VM (a gc.collect() before
#                         each poll, so an automatic collection of some other task's garbage is
#                         not counted), over connect, discovery and 5 min of states; the worst
#                         is wall clock on a shared host (OS preemption included)
#   poll_us_heavy         median of 50 forced heaviest polls: a state due, a discovery config
#                         pending and two new alerts
#   state_us, discovery_us, alert_us   building one state / discovery / alert message (median)
#   measure_us            one 250 ms measure+protect cycle on the same VM, for scale
import gc
import json
import sys
import time

sys.path.append("boards/sim")


_N = 1200  # polls / measure cycles: 300 simulated seconds


def main(port):
    import board
    from simlib import Simulator

    sim = Simulator(chemistry="lfp", cells=15, capacity_mah=100000, seed=1,
                    shunt_uohm=board.SHUNT_UOHM)
    from array import array

    polls = array("l", [0] * _N)  # allocated before the baseline: not counted as firmware
    gc.collect()
    base = gc.mem_alloc()
    from bms.app import Bms
    from bms.config import Config

    board.configure(chemistry="lfp", cells=15, capacity_mah=100000)
    over = {}
    if port:
        over = {"mqtt_enable": 1, "mqtt_host": "127.0.0.1", "mqtt_port": port,
                "mqtt_period_ms": 5000}
    cfg = Config(chemistry="lfp", cells=15, capacity_mah=100000, **over)
    hw = board.open(sim)
    hw.data_dir = "build/bench-mqtt-flash"
    if port:
        from simlib.hostnet import HostWifi

        hw.wifi = HostWifi()
    bms = Bms(hw, cfg)
    bms.boot()
    link = bms.mqtt
    gc.collect()
    boot_kb = round((gc.mem_alloc() - base) / 1024, 1)
    meas = 0
    for k in range(_N):  # 300 s
        sim.request_ma = -5000
        sim.advance(250)
        now = sim.clock.now_ms()
        if link is not None:
            gc.collect()
            t0 = time.ticks_us()
            link.poll(now)
            polls[k] = time.ticks_diff(time.ticks_us(), t0)
        gc.collect()
        t0 = time.ticks_us()
        bms.fast_cycle(now)
        meas += time.ticks_diff(time.ticks_us(), t0)
        if now % 1000 == 0:
            bms.slow_cycle(now)
    gc.collect()
    out = {"heap_kb": round((gc.mem_alloc() - base) / 1024, 1), "boot_heap_kb": boot_kb,
           "measure_us": meas // _N}
    if link is not None:
        from bms import events as ev
        from bms import ha

        st = bms.status

        def per_call(fn, n=51):  # median, a collection before each call
            ts = []
            for _ in range(n):
                gc.collect()
                t0 = time.ticks_us()
                fn()
                ts.append(time.ticks_diff(time.ticks_us(), t0))
            ts.sort()
            return ts[n // 2]

        polls = sorted(polls)
        out["poll_us_median"] = polls[_N // 2]
        out["poll_us_worst"] = polls[-1]  # wall clock on a shared host: includes preemption
        # The heaviest path, forced 50 times (median: without the host's scheduling noise):
        # a state due, a discovery message pending and two new alerts in one poll.
        heavy = []
        now = sim.clock.now_ms()
        for _ in range(50):
            now += 250
            link._next_state = 0
            link._disc = 10
            bms.events.add(now, ev.EV_FAULT_SET, 0, 3700)
            bms.events.add(now, ev.EV_FAULT_CLEAR, 0, 3400)
            gc.collect()
            t0 = time.ticks_us()
            link.poll(now)
            heavy.append(time.ticks_diff(time.ticks_us(), t0))
        heavy.sort()
        out["poll_us_heavy"] = heavy[len(heavy) // 2]
        out["state_us"] = per_call(lambda: ha.state_payload(st, 0))
        out["discovery_us"] = per_call(lambda: ha.discovery(20, "bms", 15, 3))
        out["alert_us"] = per_call(lambda: ha.alert_payload(0, ev.EV_FAULT_SET, 0, 3700, st, 0))
        info = link.info()
        out["link"] = info["link"]
        out["published"] = info["published"]
    print(json.dumps(out))


main(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
