# The firmware runs under the micropython command on the virtual board with its Modbus RTU
# server on a pseudo-terminal (tools/sim.py --rs485) and the CAN bus exposed as an SLCAN
# adapter on another (--can-bridge). pymodbus talks to it as a real EMS would: reads every
# register in tools/regmap.csv, is refused a configuration write before unlocking (exception
# 04) and an out-of-range value after (exception 03), and changes a value after unlocking.
# python-can (slcan interface) sees the inverter frames live and cantools decodes them with
# tools/bms.dbc. CPython only (subprocess, PTYs).
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import gen_regmap  # noqa: E402
from ptypair import PtyPair  # noqa: E402

MPY = os.path.join(ROOT, ".venv", "bin", "micropython")
PIN = 4321


class Sim:
    def __init__(self):
        self.modbus = PtyPair()
        self.can = PtyPair()
        env = dict(os.environ, MICROPYPATH="firmware:tools:.:.frozen")
        self.p = subprocess.Popen(
            [MPY, "-X", "heapsize=2M", "tools/sim.py", "--speed", "4", "--hours", "1",
             "--quiet", "--rs485", self.modbus.path1, "--can-bridge", self.can.path1,
             "--set", "modbus_pin=%d" % PIN],
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
        assert values["map_version"] == [1]
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
        # Locked: refused with exception 04, nothing changes.
        w = c.write_register(target["address"], 80, device_id=1)
        assert w.isError() and w.exception_code == 4
        # Wrong PIN: refused (03).
        w = c.write_register(byname["unlock"]["address"], PIN + 1, device_id=1)
        assert w.isError() and w.exception_code == 3
        # A wrong PIN starts a 10 s hold-off in which even the right PIN is refused (the
        # simulator runs at 4x: 2.5 s of wall time).
        w = c.write_register(byname["unlock"]["address"], PIN, device_id=1)
        assert w.isError() and w.exception_code in (3, 4)
        time.sleep(3.5)
        # Unlock, then an out-of-range value is refused by the configuration's own check (03).
        w = c.write_register(byname["unlock"]["address"], PIN, device_id=1)
        assert not w.isError(), w
        w = c.write_register(byname["cfg_cell_ov_mv"]["address"], 9999, device_id=1)
        assert w.isError() and w.exception_code == 3
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

    db = cantools.database.load_file(os.path.join(ROOT, "tools", "bms.dbc"))
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
