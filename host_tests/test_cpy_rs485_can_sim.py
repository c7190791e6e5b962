# The firmware runs under the micropython command on the virtual board with its Modbus RTU
# server on a pseudo-terminal (tools/sim.py --rs485) and the CAN bus exposed as an SLCAN
# adapter on another (--can-bridge). pymodbus talks to it as a real EMS would: reads every
# register in tools/regmap.csv, is refused a configuration write before unlocking (exception
# 01, lock_state 0), the pack identity (02) and an out-of-range value after (03), and changes
# a value after unlocking. python-can (slcan interface) sees the inverter frames live and
# cantools decodes them with the profile's DBC. For every profile, on the cold/empty pack
# (15 cells, -5 degC, 4 % SOC): the registers read around a frame set bracket what the set
# says (limits, permissions, flags, SOC, voltage, current, temperature): the inverter and the
# EMS are told the same numbers. CPython only (subprocess, PTYs).
import math
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import gen_regmap  # noqa: E402
from ptypair import PtyPair  # noqa: E402

MPY = os.path.join(ROOT, ".venv", "bin", "micropython")
PIN = 4321


class Sim:
    def __init__(self, extra=(), setting=""):
        self.modbus = PtyPair()
        self.can = PtyPair()
        env = dict(os.environ, MICROPYPATH="firmware:tools:.:.frozen")
        self.p = subprocess.Popen(
            [MPY, "-X", "heapsize=2M", "tools/sim.py", "--speed", "4", "--hours", "1",
             "--quiet", "--rs485", self.modbus.path1, "--can-bridge", self.can.path1,
             "--set", "modbus_pin=%d" % PIN + setting,
             "--flash", tempfile.mkdtemp()] + list(extra),
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        lines = [self.p.stdout.readline(), self.p.stdout.readline()]
        assert any("RS485" in ln for ln in lines), lines
        assert any("SLCAN" in ln for ln in lines), lines

    def close(self):
        self.p.kill()
        self.p.wait()
        self.modbus.close()
        self.can.close()


def _client(path):
    from pymodbus.client import ModbusSerialClient

    c = ModbusSerialClient(path, baudrate=9600, timeout=2, retries=2)
    assert c.connect()
    return c


def test_modbus_and_can_on_ptys():
    sim = Sim()
    try:
        _modbus(sim)
        _can(sim)
    finally:
        sim.close()


def _modbus(sim):
    rows = gen_regmap.load()
    c = _client(sim.modbus.path2)
    try:
        # Every register of the map, in contiguous blocks (FC 3), and a block with FC 4.
        values = {}
        i = 0
        while i < len(rows):
            j = i
            end = rows[i]["address"] + rows[i]["words"]
            while (j + 1 < len(rows) and rows[j + 1]["address"] == end
                   and end + rows[j + 1]["words"] - rows[i]["address"] <= 100):
                j += 1
                end = rows[j]["address"] + rows[j]["words"]
            rr = c.read_holding_registers(rows[i]["address"], count=end - rows[i]["address"],
                                          device_id=1)
            assert not rr.isError(), (rows[i]["name"], rr)
            for r in rows[i:j + 1]:
                o = r["address"] - rows[i]["address"]
                values[r["name"]] = rr.registers[o:o + r["words"]]
            i = j + 1
        assert len(values) == len(rows)
        byname = {r["name"]: r for r in rows}
        assert values["map_version"] == [2]
        ir = c.read_input_registers(0, count=4, device_id=1)
        assert not ir.isError() and ir.registers == [values[n][0] for n in
                                                      ("map_version", "fw_version",
                                                       "cells", "temps")]
        cells = values["cells"][0]
        assert cells == 4
        # live values agree with each other: the pack is the sum of the cells (+-50 mV)
        w = values["pack_mv"]
        pack = (w[0] << 16) | w[1] if byname["pack_mv"]["words"] == 2 else w[0]
        csum = sum(values["cell%d_mv" % (i + 1)][0] for i in range(cells))
        assert 4 * 2500 < pack < 4 * 3650 and abs(pack - csum) <= 50, (pack, csum)
        assert values["cell5_mv"] == [0]  # cells the pack does not have read 0

        target = byname["cfg_imbalance_warn_mv"]
        # Locked (lock_state 0): refused with exception 01 (wrong state), nothing changes.
        assert values["lock_state"] == [0]
        w = c.write_register(target["address"], 80, device_id=1)
        assert w.isError() and w.exception_code == 1
        # Wrong PIN: refused (03).
        w = c.write_register(byname["unlock"]["address"], PIN + 1, device_id=1)
        assert w.isError() and w.exception_code == 3
        # A wrong PIN starts a 10 s hold-off in which even the right PIN is refused (the
        # simulator runs at 4x: 2.5 s of wall time).
        w = c.write_register(byname["unlock"]["address"], PIN, device_id=1)
        assert w.isError() and w.exception_code in (1, 3)
        time.sleep(3.5)
        # Unlock, then an out-of-range value is refused by the configuration's own check (03).
        w = c.write_register(byname["unlock"]["address"], PIN, device_id=1)
        assert not w.isError(), w
        rr = c.read_holding_registers(byname["lock_state"]["address"], count=1, device_id=1)
        assert rr.registers == [1]
        w = c.write_register(byname["cfg_cell_ov_mv"]["address"], 9999, device_id=1)
        assert w.isError() and w.exception_code == 3
        w = c.write_register(byname["cfg_chemistry"]["address"], 1, device_id=1)
        assert w.isError() and w.exception_code == 2  # the pack identity is read-only
        w = c.write_register(target["address"], 80, device_id=1)
        assert not w.isError(), w
        rr = c.read_holding_registers(target["address"], count=1, device_id=1)
        assert rr.registers == [80]
        rr = c.read_holding_registers(byname["cfg_cell_ov_mv"]["address"], count=1,
                                      device_id=1)
        assert rr.registers == values["cfg_cell_ov_mv"]  # the refused write left no trace
        # An unknown function code gets exception 01.
        from pymodbus.pdu import ExceptionResponse  # noqa: F401

        rr = c.read_coils(0, count=1, device_id=1)
        assert rr.isError() and rr.exception_code == 1
    finally:
        c.close()


def _can(sim):
    import can
    import cantools

    db = cantools.database.load_file(os.path.join(ROOT, "tools", "dbc", "pylon.dbc"))
    bus = can.Bus(interface="slcan", channel=sim.can.path2, bitrate=500000,
                  sleep_after_open=0.2)
    try:
        seen = {}
        t_end = time.time() + 15
        while time.time() < t_end and not {0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E} <= set(seen):
            msg = bus.recv(1.0)
            if msg is not None:
                seen[msg.arbitration_id] = msg
        assert {0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E} <= set(seen), sorted(seen)
        lim = db.decode_message(0x351, seen[0x351].data)
        assert lim["ChargeVoltageLimit"] > 0  # never 0
        meas = db.decode_message(0x356, seen[0x356].data)
        assert 10.0 < meas["BatteryVoltage"] < 15.0  # 4 LFP cells
        soc = db.decode_message(0x355, seen[0x355].data)
        assert 0 <= soc["SOC"] <= 100
    finally:
        bus.shutdown()


# --- every profile: Modbus and CAN tell the same numbers -------------------------------------
PROFILES = ("pylon", "deye", "solark", "victron", "sma")
COLD_EMPTY = ["--scenario", "cold-empty", "--cells", "15", "--capacity-ah", "20", "--soc", "4"]


def _regs(c, byname):
    """The registers a frame set is compared with, as a dict of values."""
    out = {}
    for a, n in ((10, 27), (60, 7), (80, 17), (41, 6)):
        rr = c.read_holding_registers(a, count=n, device_id=1)
        assert not rr.isError(), (a, rr)
        for name, r in byname.items():
            if a <= r["address"] < a + n:
                w = rr.registers[r["address"] - a:r["address"] - a + r["words"]]
                v = w[0] << 16 | w[1] if r["words"] == 2 else w[0]
                if r["type"].startswith("s") and v >= 1 << (16 * r["words"] - 1):
                    v -= 1 << (16 * r["words"])
                out[name] = v
    return out


def _frame_set(bus, db, ids, t_end):
    seen = {}
    while time.time() < t_end and not ids <= set(seen):
        msg = bus.recv(0.5)
        if msg is not None and msg.arbitration_id in ids:
            seen[msg.arbitration_id] = db.decode_message(msg.arbitration_id, msg.data)
    assert ids <= set(seen), sorted(seen)
    return seen


def _between(x, a, b, tol):
    return min(a, b) - tol - 1e-9 <= x <= max(a, b) + tol + 1e-9


def _same_numbers(prof, r1, r2, f):
    lim = f[0x351]
    cvl = [math.floor(r["cvl_mv"] / 100) / 10 for r in (r1, r2)]
    assert _between(lim["ChargeVoltageLimit"], *cvl, 0), (prof, lim, cvl)
    ccl = [min(math.floor(r["ccl_ma"] / 100) / 10, 120 if prof == "sma" else 1e9)
           for r in (r1, r2)]
    assert _between(lim["ChargeCurrentLimit"], *ccl, 0), (prof, lim, ccl)
    dcl = [min(math.floor(r["dcl_ma"] / 100) / 10, 120 if prof == "sma" else 1e9)
           for r in (r1, r2)]
    assert _between(lim["DischargeCurrentLimit"], *dcl, 0), (prof, lim, dcl)
    soc = f[0x355]["SOC"]
    assert _between(soc, r1["soc"] / 100, r2["soc"] / 100, 0.5), (prof, soc, r1["soc"])
    m = f[0x356]
    vtol = 0.05 if prof == "solark" else 0.005
    assert _between(m["BatteryVoltage"], r1["pack_mv"] / 1000, r2["pack_mv"] / 1000, vtol)
    assert _between(m["BatteryCurrent"], r1["current_ma"] / 1000, r2["current_ma"] / 1000,
                    0.05), (prof, m, r1["current_ma"], r2["current_ma"])
    assert _between(m["BatteryTemperature"], r1["temp_report_dc"] / 10,
                    r2["temp_report_dc"] / 10, 0), (prof, m, r1["temp_report_dc"])
    if 0x35C in f:
        q = f[0x35C]
        assert q["ChargeEnable"] in (r1["chg_enable"], r2["chg_enable"]), (prof, q, r1)
        assert q["DischargeEnable"] in (r1["dsg_enable"], r2["dsg_enable"]), (prof, q, r1)
        assert q["FullChargeRequest"] in (r1["full_charge_req"], r2["full_charge_req"])
        force = q.get("ForceCharge2", q.get("ForcedChargeRequest1"))
        assert force in (r1["force_charge"], r2["force_charge"]), (prof, q, r1)
    else:  # victron, sma: charge and discharge are enabled by the limits themselves
        assert (lim["ChargeCurrentLimit"] > 0) in (bool(r1["chg_enable"]),
                                                   bool(r2["chg_enable"]))
    # charge never requested while protection commands the charge FET off (both readings)
    if not r1["chg_fet_cmd"] and not r2["chg_fet_cmd"]:
        assert lim["ChargeCurrentLimit"] == 0 and f.get(0x35C, {}).get("ChargeEnable", 0) == 0


def _profile_live(prof):
    import can
    import cantools

    rows = gen_regmap.load()
    byname = {r["name"]: r for r in rows}
    db = cantools.database.load_file(os.path.join(ROOT, "tools", "dbc", prof + ".dbc"))
    ids = set(m.frame_id for m in db.messages if m.senders == ["BMS"])
    sim = Sim(COLD_EMPTY, ",can_profile=" + prof)
    rounds = 0
    try:
        c = _client(sim.modbus.path2)
        bus = can.Bus(interface="slcan", channel=sim.can.path2, bitrate=500000,
                      sleep_after_open=0.2)
        try:
            t_end = time.time() + 60
            t_warm = time.time() + 2.0
            while time.time() < t_warm:  # the backlog since the adapter opened
                bus.recv(0.1)
            while rounds < 4 and time.time() < t_end:
                r1 = _regs(c, byname)
                if r1["status_seq"] < 20:  # booting: the first control cycles
                    time.sleep(0.5)
                    continue
                # frames still in transit (PTY copy, SLCAN parsing) were sent before r1
                time.sleep(0.4)
                while bus.recv(0.0) is not None:
                    pass
                f = _frame_set(bus, db, ids, t_end)
                r2 = _regs(c, byname)
                assert r2["cvl_mv"] > 0 and r2["cvl_mv"] <= r2["cvl_max_mv"]
                _same_numbers(prof, r1, r2, f)
                rounds += 1
        finally:
            bus.shutdown()
            c.close()
    finally:
        sim.close()
    assert rounds >= 3, (prof, rounds)
    return prof


def test_every_profile_tells_the_inverter_what_modbus_reads():
    with ThreadPoolExecutor(max_workers=2) as ex:
        done = list(ex.map(_profile_live, PROFILES))
    assert done == list(PROFILES)
