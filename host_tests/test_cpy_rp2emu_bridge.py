# tools/rp2emu/bridge.py without a firmware image: the firmware's own BQ769x0 and MCP2515
# drivers (CPython) talk to the bridge process over its line protocol, the way the runner's
# I2C and SPI models relay the emulated Pico's bus traffic; the Modbus master and the log.
import errno
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BRIDGE = os.path.join(ROOT, "tools", "rp2emu", "bridge.py")
sys.path.insert(0, os.path.join(ROOT, "tools", "rp2emu"))

import bridge  # noqa: E402


class Proc:
    """The bridge as the runner sees it: one request line, one reply line."""

    def __init__(self, *args):
        self.p = subprocess.Popen([sys.executable, BRIDGE] + list(args), stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        self.t_us = 0
        self.alert = 0
        self.irq = 1
        self.rx = b""
        self.stop = 0

    def call(self, op, rest=""):
        self.p.stdin.write("%s %d%s\n" % (op, self.t_us, " " + rest if rest else ""))
        self.p.stdin.flush()
        payload, alert, irq, rx, stop = self.p.stdout.readline().split()
        self.alert, self.irq, self.stop = int(alert), int(irq), int(stop)
        if rx != "-":
            self.rx += bytes.fromhex(rx)
        return payload

    def post(self, op, rest=""):
        # pin changes and probe lines: no reply
        self.p.stdin.write("%s %d%s\n" % (op, self.t_us, " " + rest if rest else ""))
        self.p.stdin.flush()

    def advance_ms(self, ms):
        self.t_us += ms * 1000
        return self.call("T", "-")

    def end(self):
        self.call("E", json.dumps({"wdt_resets": 0}))
        self.p.wait(timeout=10)


class BusI2C:
    """machine.I2C over the protocol (what run.mjs does with the RP2040's I2C0 traffic)."""

    def __init__(self, proc):
        self.proc = proc

    def readfrom_mem_into(self, addr, reg, buf, addrsize=8):
        p = self.proc.call("IR", "%d %02x %d" % (addr, reg, len(buf)))
        if p == "N":
            raise OSError(errno.EIO)
        buf[:] = bytes.fromhex(p)

    def writeto_mem(self, addr, reg, buf, addrsize=8):
        if self.proc.call("IP", "%d" % addr) != "A":
            raise OSError(errno.ENODEV)
        if self.proc.call("IW", "%d %s" % (addr, (bytes((reg,)) + bytes(buf)).hex())) != "A":
            raise OSError(errno.EIO)


class BusSPI:
    def __init__(self, proc):
        self.proc = proc

    def write_readinto(self, out, inp):
        for i in range(len(out)):
            inp[i] = int(self.proc.call("S", "%02x" % out[i]), 16)

    def write(self, buf):
        for b in buf:
            self.proc.call("S", "%02x" % b)

    def readinto(self, buf, write=0):
        for i in range(len(buf)):
            buf[i] = int(self.proc.call("S", "%02x" % write), 16)


class BusPin:
    def __init__(self, proc):
        self.proc = proc
        self.v = 1

    def value(self, v=None):
        if v is None:
            return self.v
        self.v = 1 if v else 0
        self.proc.post("SC", str(self.v))

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def init(self, *a, **k):
        pass


def test_the_firmware_driver_reads_the_emulated_afe_through_the_bridge():
    from bms.bq769x0 import BQ769x0
    from bms.snapshot import Snapshot

    pico = bridge.pico
    with tempfile.TemporaryDirectory() as d:
        summ = os.path.join(d, "s.json")
        proc = Proc("--scenario", "normal", "--soc", "60", "--summary", summ)
        afe = BQ769x0(BusI2C(proc), pico.CELLS, address=pico.AFE_ADDRESS, crc=pico.AFE_CRC,
                      shunt_uohm=pico.SHUNT_UOHM, n_temps=pico.N_TEMPS,
                      thermistor_beta=pico.THERMISTOR_BETA, variant=pico.AFE_VARIANT)
        afe.init()
        # LFP hardware limits as the app programs them; the driver refuses readings until
        # the chip is seen to hold its protection configuration
        afe.configure_protection(3750, 2000, 2500, 4000, 40000, 320, 80000, 200)
        snap = Snapshot(pico.CELLS, pico.N_TEMPS)
        for _ in range(12):  # 3 s: cells, pack, current and the first temperature conversion
            proc.advance_ms(250)
            afe.read(snap, proc.t_us // 1000)
        assert snap.errors == 0
        # LFP at 60 %: every cell on the plateau, the pack the sum of its cells
        assert all(3200 < snap.cell_mv[i] < 3400 for i in range(pico.CELLS))
        assert abs(snap.pack_mv - sum(snap.cell_mv[i] for i in range(pico.CELLS))) < 200
        assert 150 < snap.temp_dc[0] < 350
        afe.set_fets(True, True)
        proc.advance_ms(250)
        afe.read(snap, proc.t_us // 1000)
        assert snap.chg_fet and snap.dsg_fet
        proc.end()
        with open(summ) as f:
            s = json.load(f)
        assert s["i2c_reads"] > 10 and s["i2c_writes"] > 3 and s["afe_violations"] == 0


def test_a_lost_afe_does_not_acknowledge():
    proc = Proc("--scenario", "afe-lost")
    proc.advance_ms(300500)  # the scenario cuts the bus from 300 s to 330 s
    assert proc.call("IP", "8") == "N"
    assert proc.call("IR", "8 00 2") == "N"
    proc.advance_ms(31000)
    assert proc.call("IP", "8") == "A"
    proc.end()


def test_can_frames_reach_the_inverter_through_the_mcp2515_model():
    from bms.mcp2515 import MCP2515

    pico = bridge.pico
    with tempfile.TemporaryDirectory() as d:
        summ = os.path.join(d, "s.json")
        dump = os.path.join(d, "can.log")
        proc = Proc("--scenario", "normal", "--summary", summ, "--candump", dump)
        mcp = MCP2515(BusSPI(proc), BusPin(proc), crystal_hz=pico.CAN_CRYSTAL_HZ,
                      bitrate=pico.CAN_BITRATE)
        mcp.init()
        proc.advance_ms(10)
        mcp.send(0x351, bytearray(b"\x28\x02\xe8\x03\xe8\x03\xd0\x01"), 8)
        proc.advance_ms(10)
        proc.end()
        with open(summ) as f:
            assert json.load(f)["can_frames"] >= 1
        with open(dump) as f:
            assert "351#2802E803E803D001" in f.read()


def test_modbus_master_writes_a_log_row_from_the_registers():
    # The bridge asks for the register blocks once a second on UART0 RX; answers come back as
    # the bytes the Pico sent (T requests). Answer them here like the firmware would.
    pico = bridge.pico
    with tempfile.TemporaryDirectory() as d:
        log = os.path.join(d, "log.csv")
        proc = Proc("--scenario", "normal", "--log", log, "--summary", os.path.join(d, "s"))
        proc.advance_ms(1000)
        regs = {40: 2, 60: 7512, 61: 10000, 10: 0, 11: 49500, 14: 3300, 15: 3310, 28: 1, 29: 1,
                100: 3301, 140: 1}
        for _ in range(len(bridge.POLL_BLOCKS)):
            req = proc.rx
            proc.rx = b""
            assert len(req) == 8 and req[1] == 3 and bridge.crc16(req) == 0
            start = (req[2] << 8) | req[3]
            n = (req[4] << 8) | req[5]
            body = bytes((1, 3, 2 * n)) + b"".join(
                regs.get(a, 0).to_bytes(2, "big") for a in range(start, start + n))
            c = bridge.crc16(body)
            proc.t_us += 50000
            proc.call("T", (body + bytes((c & 0xFF, c >> 8))).hex())
        proc.end()
        with open(log) as f:
            lines = f.read().splitlines()
    assert lines[0].startswith("# config: ")
    head = lines[1].split(",")
    row = dict(zip(head, lines[2].split(",")))
    assert len(head) == 28 + pico.CELLS
    assert row["t_s"] == "1" and row["state"] == "normal" and row["soc_pct"] == "75.12"
    assert row["pack_mv"] == "49500" and row["cell1_mv"] == "3301" and row["chg_fet"] == "1"
    assert float(row["true_soc_pct"]) > 70  # the truth comes from the pack model


def test_config_record_is_what_the_firmware_store_loads():
    from bms.store import Store

    name, data = bridge.config_record({"max_soc_pct": 100})
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
        cfg = Store(d).load("config")
    assert cfg["max_soc_pct"] == 100 and cfg["cells"] == bridge.pico.CELLS
    assert bridge.config_record({}) is None
