# A simulated 24 h home day (tools/sim.py under micropython, as `make sim` runs it) writes
# its CAN traffic as a candump log. Every frame in it must decode with tools/dbc/pylon.dbc
# (the default profile; cantools, read with python-can's log reader), and the decoded values
# must match the simulator's CSV log row of the same simulated second: the frame sent at
# t + 0.25 s carries the state of the control cycle at t. A new pack's SOC is uncertain all
# day: that alone never raises the full-charge request (issue 12), and no force or full
# charge bit goes out without charge enable. CPython only (subprocess, cantools).
import csv
import os

import longruns


def test_can_log_of_a_day_decodes_and_matches_the_log():
    import can
    import cantools

    d, _ = longruns.get("day-can")  # host_tests/longruns.py: --hours 24 --log --candump
    log = os.path.join(d, "log.csv")
    dump = os.path.join(d, "can.log")
    with open(log) as f:
        f.readline()
        rows = {int(r["t_s"]): r for r in csv.DictReader(f)}
    db = cantools.database.load_file(os.path.join(longruns.ROOT, "tools", "dbc", "pylon.dbc"))
    known = {m.frame_id for m in db.messages}
    n = 0
    checked = 0
    ids = set()
    for msg in can.CanutilsLogReader(dump):
        assert msg.arbitration_id in known, hex(msg.arbitration_id)
        sig = db.decode_message(msg.arbitration_id, msg.data)  # raises on a bad frame
        n += 1
        if msg.arbitration_id == 0x35C:
            assert sig["FullChargeRequest"] == 0, (msg.timestamp, sig)  # no schedule due
            assert sig["ForceCharge1"] == 0, (msg.timestamp, sig)  # never
            if sig["ForceCharge2"]:
                assert sig["ChargeEnable"] == 1, (msg.timestamp, sig)
        ids.add(msg.arbitration_id)
        t = int(msg.timestamp)
        if t % 30 or not all(k in rows for k in (t - 1, t, t + 1)):
            continue
        checked += 1
        # A set is encoded once a second from the snapshot of the last 250 ms cycle and leaves
        # over the next polls (three TX buffers): a frame stamped in second t carries a state
        # from between the log rows t - 1 and t + 1 (the log has one row per second).
        _match(msg.arbitration_id, sig, [rows[t - 1], rows[t], rows[t + 1]], t)
    assert n > 24 * 3600 * 6, n  # the whole set every second, the day through
    assert {0x305, 0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E} <= ids
    assert checked > 1000


def _near(value, rows, col, tol):
    vals = [float(r[col]) for r in rows if r[col] != ""]
    return min(vals) - tol <= value <= max(vals) + tol


def _match(msg_id, sig, rows, t):
    if msg_id == 0x356:
        assert _near(sig["BatteryVoltage"] * 1000, rows, "pack_mv", 10), (t, sig)
        assert _near(sig["BatteryCurrent"] * 1000, rows, "current_ma", 100), (t, sig)
        assert _near(sig["BatteryTemperature"], rows, "t_max_c", 0.2), (t, sig)
    elif msg_id == 0x351:
        assert sig["ChargeVoltageLimit"] > 0
        assert _near(sig["ChargeVoltageLimit"] * 1000, rows, "cvl_mv", 100), (t, sig)
        assert _near(sig["ChargeCurrentLimit"] * 1000, rows, "ccl_ma", 100), (t, sig)
        assert _near(sig["DischargeCurrentLimit"] * 1000, rows, "dcl_ma", 100), (t, sig)
    elif msg_id == 0x355:
        assert _near(sig["SOC"], rows, "soc_pct", 1.0), (t, sig)
    elif msg_id == 0x35C and all(int(r["ccl_ma"]) == 0 for r in rows):
        assert sig["ChargeEnable"] == 0, (t, sig)  # no charge request with CCL = 0
