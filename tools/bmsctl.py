#!/usr/bin/env python3
"""bmsctl: talk to the BMS over Modbus RTU (pymodbus, CPython) on a serial port or a PTY.

    bmsctl.py --port /dev/ttyUSB0 status          pack, current, SOC, state, limits
    bmsctl.py --port /dev/pts/5 cells             cell voltages and temperatures
    bmsctl.py --port ... faults                   active / warning / latched fault names
    bmsctl.py --port ... get cell_ov_mv           one register by name (cfg_ prefix optional)
    bmsctl.py --port ... config                   every configuration register
    bmsctl.py --port ... --pin 1234 set cell_ov_mv 3600
    bmsctl.py --port ... dump                     every register of tools/regmap.csv

Options: --baud 9600 --unit 1 --timeout 1. Names and scaling come from tools/regmap.csv, the
same file the firmware's map is generated from. `set` writes the PIN to the unlock register,
writes the value (FC 6, or FC 16 for 32-bit registers) and reads it back; exception 03 means
the configuration refused the value (range or rule), 04 that it is locked (wrong/no PIN).
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import gen_regmap  # noqa: E402

FAULT_NAMES = None


def _fault_names():
    global FAULT_NAMES
    if FAULT_NAMES is None:
        sys.path.insert(0, os.path.join(HERE, "compat"))
        sys.path.insert(0, os.path.join(os.path.dirname(HERE), "firmware"))
        try:
            from bms.protection import FAULT_NAMES as names
        except ImportError:
            names = ()
        FAULT_NAMES = names
    return FAULT_NAMES


class Bms:
    def __init__(self, port, baud=9600, unit=1, timeout=1.0):
        from pymodbus.client import ModbusSerialClient

        self.unit = unit
        self.client = ModbusSerialClient(port, baudrate=baud, bytesize=8, parity="N",
                                         stopbits=1, timeout=timeout, retries=1)
        if not self.client.connect():
            raise SystemExit("cannot open %s" % port)
        self.rows = gen_regmap.load()
        self.by_name = dict((r["name"], r) for r in self.rows)

    def close(self):
        self.client.close()

    def row(self, name):
        r = self.by_name.get(name) or self.by_name.get("cfg_" + name)
        if r is None:
            raise SystemExit("unknown register %r" % name)
        return r

    def _check(self, rr, what):
        if rr.isError():
            code = getattr(rr, "exception_code", None)
            raise SystemExit("%s: Modbus error %s" % (what, code if code is not None else rr))
        return rr

    def read_raw(self, address, count):
        rr = self._check(self.client.read_holding_registers(address, count=count,
                                                            device_id=self.unit),
                         "read %d+%d" % (address, count))
        return rr.registers

    def read(self, name):
        return self.decode(self.row(name), self.read_raw(self.row(name)["address"],
                                                         self.row(name)["words"]))

    @staticmethod
    def decode(r, words):
        if r["type"].startswith("str"):  # text: 2 UTF-8 bytes per register, NUL-padded
            b = bytes(x for w in words for x in (w >> 8, w & 0xFF))
            return b.rstrip(b"\0").decode(errors="replace")
        if r["words"] == 2:
            v = (words[0] << 16) | words[1]
            if r["type"] == "s32" and v & 0x80000000:
                v -= 1 << 32
        else:
            v = words[0]
            if r["type"] == "s16" and v & 0x8000:
                v -= 1 << 16
        if (r["mul"], r["div"]) != (1, 1):
            return v * r["div"] / r["mul"]
        return v

    def read_block(self, rows):
        # contiguous reads of up to 100 registers
        out = {}
        i = 0
        while i < len(rows):
            j = i
            end = rows[i]["address"] + rows[i]["words"]
            while (j + 1 < len(rows) and rows[j + 1]["address"] == end
                   and end + rows[j + 1]["words"] - rows[i]["address"] <= 100):
                j += 1
                end = rows[j]["address"] + rows[j]["words"]
            words = self.read_raw(rows[i]["address"], end - rows[i]["address"])
            for r in rows[i:j + 1]:
                o = r["address"] - rows[i]["address"]
                out[r["name"]] = self.decode(r, words[o:o + r["words"]])
            i = j + 1
        return out

    def unlock(self, pin):
        self._check(self.client.write_register(self.row("unlock")["address"], pin,
                                               device_id=self.unit), "unlock")

    def set(self, name, value):
        r = self.row(name)
        if r["access"] != "rw":
            raise SystemExit("%s is read-only" % r["name"])
        if r["unit"] == "enum":
            choices = [c.split(" = ")[1] for c in r["range"].split(", ")]
            if value in choices:
                value = choices.index(value)
        if r["type"].startswith("str"):  # text: written whole, NUL-padded
            b = str(value).encode()
            if len(b) > 2 * r["words"]:
                raise SystemExit("%s holds at most %d bytes" % (name, 2 * r["words"]))
            b += bytes(2 * r["words"] - len(b))
            self._check(self.client.write_registers(
                r["address"], [(b[i] << 8) | b[i + 1] for i in range(0, len(b), 2)],
                device_id=self.unit), "write " + name)
            return self.read(r["name"])
        v = int(value)
        if r["words"] == 2:
            v &= 0xFFFFFFFF
            self._check(self.client.write_registers(r["address"], [v >> 16, v & 0xFFFF],
                                                    device_id=self.unit), "write " + name)
        else:
            self._check(self.client.write_register(r["address"], v & 0xFFFF,
                                                   device_id=self.unit), "write " + name)
        return self.read(r["name"])


def _fmt_faults(mask):
    names = _fault_names()
    out = [names[i] if i < len(names) else "bit%d" % i for i in range(32) if mask >> i & 1]
    return ", ".join(out) or "-"


def cmd_status(b):
    rows = [r for r in b.rows if r["address"] < 100]
    v = b.read_block(rows)
    print("pack      %8.3f V   current %9.3f A" % (v["pack_mv"] / 1000, v["current_ma"] / 1000))
    print("cells     min %d mV (#%d)  max %d mV (#%d)" % (
        v["cell_min_mv"], v["cell_min_idx"] + 1, v["cell_max_mv"], v["cell_max_idx"] + 1))
    print("SOC %.2f %%  SOH %.2f %%  capacity %d mAh" % (v["soc"], v["soh"], v["capacity_mah"]))
    print("state %d  FETs chg=%d dsg=%d  faults %s" % (v["prot_state"], v["chg_fet"],
                                                       v["dsg_fet"], _fmt_faults(v["faults"])))
    print("limits CVL %.1f V  CCL %.1f A  DCL %.1f A  DVL %.1f V" % (
        v["cvl_mv"] / 1000, v["ccl_ma"] / 1000, v["dcl_ma"] / 1000, v["dvl_mv"] / 1000))


def cmd_cells(b):
    n = b.read("cells")
    cells = b.read_block([r for r in b.rows if 100 <= r["address"] < 100 + n])
    for i in range(n):
        print("cell %2d  %5d mV" % (i + 1, cells["cell%d_mv" % (i + 1)]))
    nt = b.read("temps")
    temps = b.read_block([r for r in b.rows if 120 <= r["address"] < 120 + nt])
    for i in range(nt):
        t = temps["temp%d_dc" % (i + 1)]
        print("temp %d   %s" % (i + 1, "invalid" if t == -32768 else "%.1f degC" % (t / 10)))


def cmd_faults(b):
    v = b.read_block([b.row("faults"), b.row("warnings"), b.row("latched")])
    for k in ("faults", "warnings", "latched"):
        print("%-9s %s" % (k, _fmt_faults(v[k])))


def cmd_config(b):
    rows = [r for r in b.rows if r["access"] == "rw" and r["name"] != "unlock"]
    v = b.read_block(rows)
    for r in rows:
        print("%-28s %10s %s" % (r["name"][4:] if r["name"].startswith("cfg_") else r["name"],
                                 v[r["name"]], r["unit"]))


def cmd_dump(b):
    v = b.read_block(b.rows)
    for r in b.rows:
        print("%5d %-26s %12s %s" % (r["address"], r["name"], v[r["name"]], r["unit"]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", required=True)
    ap.add_argument("--baud", type=int, default=9600)
    ap.add_argument("--unit", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=1.0)
    ap.add_argument("--pin", type=int, default=None)
    ap.add_argument("command", choices=("status", "cells", "faults", "config", "dump", "get",
                                        "set"))
    ap.add_argument("args", nargs="*")
    a = ap.parse_args(argv)
    b = Bms(a.port, a.baud, a.unit, a.timeout)
    try:
        if a.command == "get":
            for n in a.args:
                print(n, b.read(n))
        elif a.command == "set":
            if len(a.args) != 2:
                raise SystemExit("set NAME VALUE")
            if a.pin is not None:
                b.unlock(a.pin)
            print(a.args[0], "=", b.set(a.args[0], a.args[1]))
        else:
            globals()["cmd_" + a.command](b)
    finally:
        b.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
