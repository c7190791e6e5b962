# The firmware on the virtual board (tools/sim.py --mqtt under the micropython VM) against a
# real MQTT broker (amqtt from the pinned .venv) on 127.0.0.1, watched by a host client
# (paho-mqtt) the way Home Assistant would: discovery configs, state values against the
# simulator log, the cell-ov alert against the FET opening, commands (PIN, garbage,
# oversize), a broker restart mid-run, and the last will. CPython only.
import json
import os
import random
import tempfile
import time

from mqttlib import Broker, Recorder, read_log, sim, summary

HA_UNITS = {"voltage": ("V", "mV"), "current": ("A", "mA"), "power": ("W", "kW"),
            "energy": ("Wh", "kWh"), "temperature": ("\u00b0C", "\u00b0F"), "battery": ("%",)}
REQUIRED = ("name", "unique_id", "state_topic", "availability_topic", "value_template",
            "device")


def _num(x):
    return float(x) if x not in ("", None) else None


def test_discovery_state_and_cell_ov_alert():
    broker = Broker()
    rec = Recorder(broker.port)
    out = tempfile.mkdtemp(prefix="mqtt-ov")
    try:
        sim(["--scenario", "cell-ov", "--hours", "0.15", "--seed", "1", "--speed", "40",
             "--set", "mqtt_period_ms=5000"], broker.port, out)
        # the process ended without DISCONNECT: the broker publishes the last will
        assert rec.wait(lambda: rec.of("bms/availability")
                        and rec.of("bms/availability")[-1][2] == b"offline", 10)
        avail = [m[2] for m in rec.of("bms/availability")]
        assert avail[0] == b"online"
        s = summary(out)
        head, rows = read_log(os.path.join(out, "sim.csv"))

        # --- discovery: one device, every entity, HA's keys and units, retained --------------
        disc = [m for m in rec.msgs if m[1].startswith("homeassistant/")]
        cfgs = {}
        for m in disc:
            cfgs[m[1]] = json.loads(m[2])
        n_cells, n_temps = 4, 1
        assert len(cfgs) == 15 + 5 + 6 + n_cells + n_temps, sorted(cfgs)
        for topic, d in cfgs.items():
            for k in REQUIRED:
                assert k in d, (topic, k)
            assert d["device"]["identifiers"] == ["bms"]
            dc = d.get("device_class")
            if dc in HA_UNITS and "/sensor/" in topic:
                assert d["unit_of_measurement"] in HA_UNITS[dc], topic
        for obj in ("pack_voltage", "current", "power", "soc", "soh", "cell_min", "cell_max",
                    "cvl", "ccl", "dcl", "state", "faults", "warnings", "cell1", "cell4",
                    "temperature1"):
            assert "homeassistant/sensor/bms/%s/config" % obj in cfgs, obj
        for obj in ("problem", "charge_fet", "discharge_fet", "balancing"):
            assert "homeassistant/binary_sensor/bms/%s/config" % obj in cfgs, obj
        # retained: a client arriving later (Home Assistant after a restart) gets them
        late = Recorder(broker.port, topics=("homeassistant/#",))
        assert late.wait(lambda: len(late.msgs) >= len(cfgs), 10)
        assert all(m[4] for m in late.msgs)
        late.close()

        # --- state: the simulator log's values, within one period -------------------------
        by_t = {int(r["t_s"]): r for r in rows}
        states = [d for d in rec.json_of("bms/state") if d["valid"]]
        assert len(states) >= 540 // 5 - 5
        exact = 0
        for d in states:
            t = d["t_ms"]
            near = [by_t[k] for k in range(max(1, (t - 5000) // 1000), (t + 5000) // 1000 + 1)
                    if k in by_t]
            assert near
            for key, col, scale in (("v", "pack_mv", 1000), ("i", "current_ma", 1000),
                                    ("cmin", "cell_min_mv", 1000),
                                    ("cmax", "cell_max_mv", 1000), ("soc", "soc_pct", 1)):
                vals = [_num(r[col]) for r in near]
                x = d[key] * scale
                # between two log rows (a state sent at once on a change): within the range
                # of the rows around it, widened by the largest step between two rows
                step = max([abs(a - b) for a, b in zip(vals, vals[1:])] + [0])
                tol = 1e-6 if t % 1000 == 0 else step + 1e-6
                assert min(vals) - tol <= x <= max(vals) + tol, (t, key, x, vals)
            if t % 1000 == 0 and t // 1000 in by_t:  # the log row of that very cycle
                r = by_t[t // 1000]
                assert round(d["v"] * 1000) == int(r["pack_mv"])
                assert round(d["i"] * 1000) == int(r["current_ma"])
                assert [round(c * 1000) for c in d["cells"]] == [
                    int(r["cell%d_mv" % (i + 1)]) for i in range(n_cells)]
                assert abs(d["soc"] - float(r["soc_pct"])) < 0.006
                assert d["state"] == r["state"]
                assert d["faults"] == (r["faults"].replace("|", ",") or "none")
                exact += 1

        # --- the cell-ov alert: QoS 1, within 1 s of the FET opening -------------------------
        w = s["watch"]
        assert w["t_open_ms"] > 0
        alerts = [(m, json.loads(m[2])) for m in rec.of("bms/alert")]
        ov = [(m, a) for m, a in alerts
              if a["fault"] == "cell_ov" and a["event"] == "fault_set"]
        assert ov, [a["message"] for m, a in alerts]
        m, a = ov[0]
        assert m[3] == 1  # delivered at QoS 1
        assert a["tier"] == "protection" and a["unit"] == "mV" and a["value"] > 3650
        assert a["t_ms"] <= w["t_open_ms"] <= a["pub_ms"] <= w["t_open_ms"] + 1000
        assert s["mqtt"]["errors"] == 0
    finally:
        rec.close()
        broker.stop()


def test_commands_broker_restart_and_protection_untouched():
    broker = Broker()
    rec = Recorder(broker.port)
    out = tempfile.mkdtemp(prefix="mqtt-rs")
    ref = tempfile.mkdtemp(prefix="mqtt-ref")
    pin = 2468
    args = ["--scenario", "normal", "--hours", "0.15", "--seed", "3"]
    p = sim(args + ["--speed", "8", "--set", "mqtt_pin=%d" % pin], broker.port, out,
            wait=False)
    try:
        assert rec.wait(lambda: len(rec.of("bms/state")) >= 2, 60)

        def results(n):
            assert rec.wait(lambda: len(rec.of("bms/cmd/result")) >= n, 15), n
            return [json.loads(m[2]) for m in rec.of("bms/cmd/result")]

        # wrong PIN, then the right one inside the 10 s hold-off: both refused
        rec.publish("bms/cmd", json.dumps({"pin": pin + 1, "set": {"can_modules": 7}}))
        rec.publish("bms/cmd", json.dumps({"pin": pin, "set": {"can_modules": 7}}))
        r = results(2)
        assert [x["error"] for x in r[:2]] == ["wrong PIN", "PIN hold-off"]
        # garbage of every kind (random bytes, wrong shapes, bad values, oversize): refused
        rnd = random.Random(5)
        junk = [bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 200)))
                for _ in range(25)]
        junk += [b"", b"{}", b"[]", b"null", b'{"pin": 1}', b'{"pin": "x", "set": {}}',
                 json.dumps({"pin": pin, "set": {"cell_ov_mv": 99999}}).encode(),
                 json.dumps({"pin": pin, "set": {"mqtt_pin": 1}}).encode(),
                 b"{" * 200]
        for j in junk:
            rec.publish("bms/cmd", j)
        r = results(2 + len(junk))
        assert all(not x["ok"] for x in r), r
        rec.publish("bms/cmd", b"x" * 100000)  # oversize: skipped, no answer, still connected
        rec.publish("bms/cmd", b"y" * 600)
        # the right PIN once the hold-off (10 s simulated) has passed: accepted
        n = 2 + len(junk)
        for _ in range(30):
            rec.publish("bms/cmd", json.dumps({"pin": pin, "set": {"can_modules": 5}}))
            n += 1
            r = results(n)
            if r[-1].get("error") != "PIN hold-off":
                break
            time.sleep(1)
        assert r[-1] == {"ok": True, "set": {"can_modules": 5}}, r[-3:]
        assert len(r) == n  # the two oversize messages got no answer

        # broker restart mid-run: availability comes back, states flow again
        n_online = len([m for m in rec.of("bms/availability") if m[2] == b"online"])
        broker.stop()
        time.sleep(3)
        broker.start()
        assert rec.wait(lambda: len([m for m in rec.of("bms/availability")
                                     if m[2] == b"online"]) > n_online, 30)
        t_back = rec.of("bms/availability")[-1][0]
        assert rec.wait(lambda: any(m[0] > t_back for m in rec.of("bms/state")), 30)
        out_text = p.communicate(timeout=120)[0]
        assert p.returncode == 0, out_text[-2000:]
    finally:
        if p.poll() is None:
            p.kill()
        rec.close()
        broker.stop()
    s = summary(out)
    assert s["mqtt"]["connects"] >= 2 and s["mqtt"]["errors"] == 0
    assert s["mqtt"]["dropped_msgs"] >= 2
    # commands changed exactly the one field the valid command wrote
    with open(os.path.join(out, "sim.csv")) as f:
        cfg0 = json.loads(f.readline()[len("# config: "):])
    changed = [k for k in cfg0 if cfg0[k] != s["config"][k]]
    assert changed == ["can_modules"] and s["config"]["can_modules"] == 5

    # protection untouched: the same run without MQTT gives the same log, row for row
    sim(args + ["--speed", "max"], 0, ref)
    h1, rows1 = read_log(os.path.join(out, "sim.csv"))
    h2, rows2 = read_log(os.path.join(ref, "sim.csv"))
    assert h1 == h2 and len(rows1) == len(rows2) > 300
    for a, b in zip(rows1, rows2):
        # the log's events column also lists what MQTT itself caused (link events, the
        # commands' unlock/config/refusals): every other column must be the same
        a = dict(a, events="")
        b = dict(b, events="")
        assert a == b, (a, b)
