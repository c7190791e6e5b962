#!/usr/bin/env python3
"""bridge: the emulated Pico's world (CPython): pack, BQ769x0, MCP2515, inverter, scenario.

The runner (tools/rp2emu/run.mjs) spawns this process and talks to it over stdin/stdout, one
request line, one reply line, in the order the emulated chip did things. Time is the chip's:
every request carries it in microseconds since the first power-up, and the bridge advances
the simulator (tools/simlib, the same models as tools/sim.py) to it before it answers.

Requests (t = chip time in us; hex = bytes as hex, "-" = none):
    T  t hex             time; hex = bytes the Pico sent on UART0 while RS485 DE was high
    IP t addr            I2C address phase of a write: is anybody there?      -> A | N
    IW t addr hex        I2C write transaction (ended by STOP)                -> A | N
    IR t addr hex n      I2C [write hex, repeated START,] read n bytes        -> hex | N
    SC t level           MCP2515 chip select (GP17) changed                   (no reply)
    S  t hex             SPI bytes out (MOSI) in one CS-low frame, in order    -> hex (MISO)
    G  t pin level       a watched GPIO output changed (RS485 DE, heater, fan, ALERT, BOOT)
                                                                              (no reply)
    P  t text            a line the probe printed on the console (@@rp2emu ...) (no reply)
    W  t cause           the MCU restarted (wdt = watchdog expiry, reset = forced reset)
                                                                              (no reply)
    E  t json            end of the run: the runner's own figures; the bridge writes the summary
Reply (to the others): "<payload> <alert> <int> <rx> <stop>": alert = the AFE's ALERT
output, int = the MCP2515's /INT, rx = bytes to send to the Pico's UART0 RX (Modbus
requests), stop = 1 once the run's simulated time is over.

The bridge is also the Modbus RTU master that fills the log: once per simulated second it
reads the firmware's registers (tools/regmap.csv) over UART0 and writes the row of
tools/sim.py's CSV, with the true_* columns from the pack model at that second. Scenario
watches (reaction: true crossing -> FET open) step every 250 ms like tools/sim.py's; the
opening is also checked after every I2C write (the chip writes CHG_ON/DSG_ON at any moment).
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for _p in (os.path.join(ROOT, "tools", "compat"), os.path.join(ROOT, "firmware"),
           os.path.join(ROOT, "tools")):
    if _p not in sys.path:
        sys.path.insert(0, _p)


def _load_board():
    # boards/rp2_pico/board.py under a name of its own: another "board" module (the virtual
    # board, a test fake) may already be imported in this interpreter
    import importlib.util

    path = os.path.join(ROOT, "boards", "rp2_pico", "board.py")
    spec = importlib.util.spec_from_file_location("rp2_pico_board", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


pico = _load_board()  # the pack and pins the board declares
import sim as simtool  # noqa: E402  tools/sim.py: COLUMNS, Watch, formatting
from simlib import Simulator, scenarios  # noqa: E402

CS_PIN = pico.CAN_CS
DE_PIN = pico.RS485_DE
HEATER_PIN = pico.HEATER_PIN
FAN_PIN = pico.FAN_PIN
ALERT_PIN = pico.ALERT_PIN
BOOT_PIN = pico.BOOT_PIN

# Register blocks polled once a second (contiguous runs of tools/regmap.csv).
POLL_BLOCKS = ((10, 20), (40, 9), (60, 7), (80, 8), (100, 0), (120, 0), (140, 1))
_POLL_TIMEOUT_MS = 900
_NO_REPLY = ("SC", "G", "P", "W")


def crc16(data):
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def read_request(unit, start, count):
    pdu = bytes((unit, 3, start >> 8, start & 0xFF, count >> 8, count & 0xFF))
    c = crc16(pdu)
    return pdu + bytes((c & 0xFF, c >> 8))


def parse_response(unit, buf, count):
    """Words of a FC 3 response in buf, None while incomplete, raises ValueError when bad."""
    if len(buf) < 5:
        return None
    if buf[0] != unit:
        raise ValueError("unit %d" % buf[0])
    if buf[1] & 0x80:
        if crc16(buf[:5]) != 0:
            raise ValueError("bad CRC")
        raise ValueError("exception %d" % buf[2])
    n = 5 + 2 * count
    if len(buf) < n:
        return None
    if buf[1] != 3 or buf[2] != 2 * count or crc16(buf[:n]) != 0:
        raise ValueError("bad response")
    return [(buf[3 + 2 * i] << 8) | buf[4 + 2 * i] for i in range(count)]


def _s16(w):
    return w - 0x10000 if w & 0x8000 else w


def _u32(ws, i):
    return (ws[i] << 16) | ws[i + 1]


def _s32(ws, i):
    v = _u32(ws, i)
    return v - (1 << 32) if v & 0x80000000 else v


class Poller:
    """Modbus RTU master on the Pico's UART0: one block after the other, once a second."""

    def __init__(self, cells, temps, unit=1):
        self.unit = unit
        self.blocks = [(a, {100: cells, 120: temps}.get(a, n)) for a, n in POLL_BLOCKS]
        self.regs = {}
        self.idx = -1
        self.rx = bytearray()
        self.sent_ms = 0
        self.t_row = -1
        self.errors = 0
        self.error_kinds = {}  # reason -> count (timeout, bad CRC, exception n, ...)
        self.boot_polls = 0  # unanswered polls before the first answer (firmware booting)
        self.answered = False
        self.rows_done = []  # (t_row_ms, regs) of complete polls, taken by the bridge

    def start(self, t_ms):
        """Begin a poll of every block; returns the first request (or None while busy)."""
        if self.idx >= 0:
            return None
        self.t_row = t_ms
        self.regs = {}
        self.idx = 0
        return self._request(t_ms)

    def _request(self, t_ms):
        a, n = self.blocks[self.idx]
        self.rx = bytearray()
        self.sent_ms = t_ms
        return read_request(self.unit, a, n)

    def feed(self, data, t_ms):
        """Bytes from the Pico; returns the next request to send, or None."""
        if self.idx < 0:
            return None
        self.rx.extend(data)
        a, n = self.blocks[self.idx]
        try:
            words = parse_response(self.unit, self.rx, n)
        except ValueError as e:
            self._error(str(e))
            return None
        if words is None:
            return None
        for i, w in enumerate(words):
            self.regs[a + i] = w
        self.answered = True
        self.idx += 1
        if self.idx >= len(self.blocks):
            self.idx = -1
            self.rows_done.append((self.t_row, self.regs))
            return None
        return self._request(t_ms)

    def check_timeout(self, t_ms):
        if self.idx >= 0 and t_ms - self.sent_ms > _POLL_TIMEOUT_MS:
            if not self.answered and not self.errors and self.idx == 0 and not self.rx:
                # the firmware is still booting (its Modbus server is not up yet): not an
                # error of the link
                self.boot_polls += 1
                self.idx = -1
                return
            self._error("timeout (block %d, %d bytes)" % (self.idx, len(self.rx)))

    def _error(self, why):
        self.errors += 1
        self.error_kinds[why] = self.error_kinds.get(why, 0) + 1
        self.idx = -1


class FakeProt:
    chg_fet = False
    dsg_fet = False


class FakeBms:
    """What Watch.step needs of the firmware, from the registers polled over Modbus."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.prot = FakeProt()


class Bridge:
    def __init__(self, scenario="normal", hours=-1.0, seed=1, soc=-1.0, overrides=None,
                 log="", candump="", summary="", until_reaction=False):
        from bms.config import Config
        from bms.protection import FAULT_NAMES, STATE_NAMES

        self.fault_names_t = FAULT_NAMES
        self.state_names = STATE_NAMES
        self.scen = scenarios.get(scenario)
        self.hours = hours if hours > 0 else self.scen.hours
        self.end_ms = int(self.hours * 3600000)
        self.until_reaction = until_reaction  # stop 10 s after the watched FET opened
        self.cells = pico.CELLS
        sim = Simulator(chemistry=pico.CHEMISTRY, cells=pico.CELLS,
                        capacity_mah=pico.CAPACITY_MAH, seed=seed, variant=pico.AFE_VARIANT,
                        address=pico.AFE_ADDRESS, crc=pico.AFE_CRC,
                        shunt_uohm=pico.SHUNT_UOHM, n_temps=pico.N_TEMPS,
                        soc=soc / 100 if soc >= 0 else 0.75, can=True)
        self.sim = sim

        class _Args:
            pass

        args = _Args()
        args.cells = pico.CELLS
        ov = self.scen.setup(sim, args) or {}
        ov.update(overrides or {})
        self.overrides = ov
        self.cfg = Config(chemistry=pico.CHEMISTRY, cells=pico.CELLS,
                          capacity_mah=pico.CAPACITY_MAH, **ov)
        self.watch = simtool.Watch(self.scen.watch, self.cfg) if self.scen.watch else None
        self.fake = FakeBms(self.cfg)
        self.t_ms = 0  # simulated time the world has reached
        self.next_step = 0  # next 250 ms boundary (scenario, inverter, watch)
        self.cs = 1
        self.de = 0
        self.poller = Poller(pico.CELLS, pico.N_TEMPS, self.cfg.modbus_unit)
        self.rx_out = bytearray()
        self.next_poll = 1000
        self.log = None
        self.log_path = log
        if log:
            _mkdirs(log)
            self.log = open(log, "w")
            self.log.write("# config: " + json.dumps(self.cfg.as_dict()) + "\n")
            cols = list(simtool.COLUMNS) + ["cell%d_mv" % (i + 1) for i in range(self.cells)]
            self.log.write(",".join(cols) + "\n")
        self.candump = candump
        if candump:
            _mkdirs(candump)
            sim.canbus.log_file = open(candump, "w")
        self.summary_path = summary
        self.truth = {}  # second -> truth columns sampled at that second
        self.probe = {}
        self.probe_mods = []
        self.probe_stats = []
        self.probe_ram = []
        self.restarts = []
        self.rows = 0
        self.last_regs = None
        self.spi_bytes = 0
        self.i2c_reads = 0
        self.i2c_writes = 0
        self.stats = {"soc_err2": 0.0, "n": 0, "faults_seen": 0, "states": {}}

    # --- time --------------------------------------------------------------------------------
    def advance(self, t_us):
        target = t_us // 1000
        sim = self.sim
        scen = self.scen
        while self.t_ms < target:
            if self.t_ms >= self.next_step:
                t = self.next_step
                if self.watch is not None:
                    self.watch.step(sim, self.fake, t)
                scen.step(sim, t)
                want = scen.load_ma(sim, t)
                if want is None:
                    want = sim.profile.current_ma(t)
                sim.request_ma = sim.inverter_request(want, None, scen.obey_limits, t)
                if t % 1000 == 0:
                    self.truth[t] = self._truth()
                self.next_step = t + 250
            step = min(target, self.next_step) - self.t_ms
            sim.advance(step)
            self.t_ms += step
        self.poller.check_timeout(self.t_ms)
        if self.t_ms >= self.next_poll:
            self.next_poll = (self.t_ms // 1000 + 1) * 1000
            req = self.poller.start(self.t_ms // 1000 * 1000)
            if req is not None:
                self.rx_out.extend(req)
        while self.poller.rows_done:
            self._row(*self.poller.rows_done.pop(0))

    def _truth(self):
        sim = self.sim
        p = sim.pack
        return (p.true_soc() * 100, p.current_ma, sim.true_cell_min_mv(), sim.true_cell_max_mv(),
                p.temp_c, 1 if sim.heater_pin.state else 0, 1 if sim.fan_pin.state else 0)

    # --- the log -----------------------------------------------------------------------------
    def _row(self, t_ms, r):
        truth = self.truth.pop(t_ms, None) or self._truth()
        for k in [k for k in self.truth if k < t_ms]:
            del self.truth[k]
        self.last_regs = r
        state = r[40]
        st = self.state_names[state] if state < len(self.state_names) else str(state)
        faults = _u32(r, 41) | _u32(r, 45)
        warnings = _u32(r, 43)
        soc = r[60] / 100
        self.fake.prot.chg_fet = bool(r[28])
        self.fake.prot.dsg_fet = bool(r[29])
        s = self.stats
        e = soc - truth[0]
        s["soc_err2"] += e * e
        s["n"] += 1
        s["faults_seen"] |= faults
        s["states"][st] = s["states"].get(st, 0) + 1
        self.rows += 1
        if self.log is None:
            return
        tmin = _s16(r[18])
        tmax = _s16(r[19])
        row = [
            t_ms // 1000, st, "%.2f" % soc, "%.2f" % truth[0], _u32(r, 10), _s32(r, 12),
            r[14], r[15],
            "%.1f" % (tmin / 10) if tmin > -32768 else "",
            "%.1f" % (tmax / 10) if tmax > -32768 else "",
            r[28], r[29], self._names(faults), r[27], _u32(r, 80), _u32(r, 82), _u32(r, 84),
            self._names(warnings), "%.2f" % (r[62] / 100), "%.1f" % (r[61] / 100),
            "%.2f" % (_u32(r, 63) / 1000), truth[5], truth[6], truth[1], truth[2], truth[3],
            "%.1f" % truth[4], r[140],
        ]
        row += [r[100 + i] for i in range(self.cells)]
        self.log.write(",".join(str(x) for x in row) + "\n")

    def _names(self, mask):
        names = self.fault_names_t
        return "|".join(names[i] if i < len(names) else "bit%d" % i
                        for i in range(32) if mask >> i & 1)

    # --- requests ----------------------------------------------------------------------------
    def handle(self, line):
        parts = line.split(" ", 3)
        op = parts[0]
        t_us = int(parts[1])
        self.advance(t_us)
        sim = self.sim
        payload = "-"
        if op == "T":
            if len(parts) > 2 and parts[2] != "-":
                req = self.poller.feed(bytes.fromhex(parts[2]), self.t_ms)
                if req is not None:
                    self.rx_out.extend(req)
        elif op == "IP":
            payload = "A" if int(parts[2]) in sim.i2c.devices and \
                sim.i2c.devices[int(parts[2])].i2c_present() else "N"
        elif op == "IW":
            self.i2c_writes += 1
            try:
                sim.i2c.writeto(int(parts[2]), bytes.fromhex(parts[3]))
                payload = "A"
            except OSError:
                payload = "N"
            self._watch_open()
        elif op == "IR":
            self.i2c_reads += 1
            addr = int(parts[2])
            wr, n = parts[3].split(" ")
            buf = bytearray(int(n))
            try:
                if wr != "-":
                    sim.i2c.writeto(addr, bytes.fromhex(wr), False)
                sim.i2c.readfrom_into(addr, buf)
                payload = buf.hex()
            except OSError:
                payload = "N"
        elif op == "SC":
            self.cs = int(parts[2])
            sim.can_cs.value(self.cs)
        elif op == "S":
            out = bytes.fromhex(parts[2])
            self.spi_bytes += len(out)
            x = sim.mcp._xfer
            payload = bytes(x(b) & 0xFF if self.cs == 0 else 0xFF for b in out).hex()
        elif op == "G":
            self._gpio(int(parts[2]), int(parts[3]))
        elif op == "P":
            self._probe(parts[2] + (" " + parts[3] if len(parts) > 3 else ""))
        elif op == "W":
            self.restarts.append((self.t_ms, parts[2]))
        if op in _NO_REPLY:
            return None
        elif op == "E":
            self.finish(json.loads(parts[2] + (" " + parts[3] if len(parts) > 3 else "")))
            return "- 0 0 - 1"
        alert = 1 if sim.emu.alert else 0
        irq = sim.mcp.int_pin.value()
        rx = self.rx_out.hex() if self.rx_out else "-"
        self.rx_out = bytearray()
        stop = 1 if self.t_ms >= self.end_ms else 0
        w = self.watch
        if self.until_reaction and w is not None and 0 <= w.t_open <= self.t_ms - 10000:
            stop = 1
        return "%s %d %d %s %d" % (payload, alert, irq, rx, stop)

    def _watch_open(self):
        # A FET bit changes by the chip's I2C write (or by a trip at a 250 ms step): the
        # opening is timed to the write. The crossing stays on the 250 ms steps of the truth,
        # as in tools/sim.py, so the allowance (delay + 250 ms) means the same.
        w = self.watch
        if w is None or w.t_cross < 0 or w.t_open >= 0 or w.fet.startswith("cmd_"):
            return
        if not self.sim.fet_on(w.fet):
            w.t_open = self.t_ms
            w.reactions.append(w.t_open - w.t_cross)

    def _gpio(self, pin, level):
        sim = self.sim
        if pin == DE_PIN:
            self.de = level
        elif pin == HEATER_PIN:
            sim.heater_pin.value(level)
        elif pin == FAN_PIN:
            sim.fan_pin.value(level)
        elif pin == ALERT_PIN and level:
            # The Pico drives ALERT high (the firmware's override when I2C is lost).
            sim.emu.inject_ovrd_alert()
        elif pin == BOOT_PIN and level and sim.emu.shipped:
            sim.emu.boot()  # TS1 pulled high: the AFE wakes from SHIP

    def _probe(self, text):
        words = text.split(" ")
        if words[0] == "mod":
            self.probe_mods.append((words[1], int(words[2]), int(words[3]), int(words[4])))
        elif words[0] == "ram":
            self.probe_ram.append((words[1], words[2], int(words[3])))
        elif words[0] == "end":
            self.end_ms = self.t_ms  # the probe is done (--ram-map)
        elif words[0] == "stats":
            self.probe_stats.append([int(w) for w in words[1:]])
        else:
            self.probe[words[0]] = [int(w) if w.lstrip("-").isdigit() else w for w in words[1:]]

    # --- the end -----------------------------------------------------------------------------
    def finish(self, runner):
        if self.log is not None:
            self.log.close()
        if self.sim.canbus.log_file is not None:
            self.sim.canbus.log_file.close()
        out = self.figures(runner)
        if self.summary_path:
            _mkdirs(self.summary_path)
            with open(self.summary_path, "w") as f:
                json.dump(out, f)

    def figures(self, runner):
        kb = 1024.0
        out = {"scenario": self.scen.name, "sim_s": self.t_ms / 1000, "rows": self.rows,
               "runner": runner, "overrides": self.overrides}
        p = self.probe
        if "heap" in p:
            total, base = p["heap"][0], p["heap"][1]
            out["rp2_heap_total_kb"] = round(total / kb, 1)
            out["rp2_heap_used_before_kb"] = round(base / kb, 1)
        if self.probe_mods:
            live = 0
            peak = 0
            alloc = 0
            mods = {}
            for name, a, res, before in self.probe_mods:
                peak = max(peak, before + a)
                alloc += a
                live = before + res
                mods[name] = {"alloc_b": a, "resident_b": res}
            out["rp2_import_peak_kb"] = round(peak / kb, 1)
            out["rp2_import_alloc_kb"] = round(alloc / kb, 1)
            out["rp2_import_resident_kb"] = round(live / kb, 1)
            out["rp2_modules"] = mods
        if "boot" in p:
            out["rp2_boot_heap_kb"] = round(p["boot"][0] / kb, 1)
            out["rp2_boot_free_kb"] = round(p["boot"][1] / kb, 1)
        st = self.probe_stats
        if st:
            # columns: see probe.py (_report)
            live = [r[0] for r in st]
            free = [r[1] for r in st]
            n_f = sum(r[2] for r in st)
            n_s = sum(r[6] for r in st)
            out["rp2_firmware_heap_kb"] = round(max(live) / kb, 1)
            out["rp2_heap_free_kb"] = round(min(free) / kb, 1)
            if n_f:
                out["rp2_fast_cycle_ms"] = round(sum(r[3] for r in st) / n_f / 1000, 2)
                out["rp2_fast_cycle_max_ms"] = round(max(r[4] for r in st) / 1000, 2)
                na = sum(r[10] for r in st)
                out["rp2_alloc_bytes_per_cycle"] = round(sum(r[5] for r in st) / na, 1) \
                    if na else None
            if n_s:
                out["rp2_slow_cycle_ms"] = round(sum(r[7] for r in st) / n_s / 1000, 2)
                out["rp2_slow_cycle_max_ms"] = round(max(r[8] for r in st) / 1000, 2)
                na = sum(r[11] for r in st)
                out["rp2_alloc_bytes_per_slow_cycle"] = round(sum(r[9] for r in st) / na, 1) \
                    if na else None
            n_c = sum(r[12] for r in st)
            if n_c:
                out["rp2_comms_cycle_ms"] = round(sum(r[13] for r in st) / n_c / 1000, 3)
        if self.probe_ram:
            out["rp2_ram_map"] = self.probe_ram
        w = self.watch.result() if self.watch is not None else None
        if w is not None:
            out["watch"] = w
            out["rp2_reaction_ms"] = w["reaction_ms"]
            out["rp2_reaction_allowed_ms"] = w["delay_ms"] + 250
        out["rp2_wdt_resets"] = runner.get("wdt_resets", 0)
        n = max(1, self.stats["n"])
        out["soc_rmse_pct"] = round((self.stats["soc_err2"] / n) ** 0.5, 2)
        out["faults_seen"] = self._names(self.stats["faults_seen"])
        out["state_seconds"] = self.stats["states"]
        out["modbus_errors"] = self.poller.errors
        out["modbus_error_kinds"] = self.poller.error_kinds
        out["modbus_boot_polls"] = self.poller.boot_polls
        out["can_frames"] = self.sim.canbus.frames
        out["i2c_reads"] = self.i2c_reads
        out["i2c_writes"] = self.i2c_writes
        out["spi_bytes"] = self.spi_bytes
        out["afe_violations"] = self.sim.emu.violations
        out["restarts"] = self.restarts
        out["log"] = self.log_path
        out["candump"] = self.candump
        return out


def _mkdirs(path):
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)


def config_record(overrides):
    """The firmware's /data/config.a record for these overrides (bms.store's own format), or
    None without overrides. Raises bms.config.ConfigError for a refused value."""
    if not overrides:
        return None
    import tempfile

    from bms.config import Config
    from bms.store import Store

    cfg = Config(chemistry=pico.CHEMISTRY, cells=pico.CELLS, capacity_mah=pico.CAPACITY_MAH,
                 **overrides)
    with tempfile.TemporaryDirectory() as d:
        Store(d).maybe_save("config", cfg.as_dict(), 0, True)
        names = sorted(os.listdir(d))
        with open(os.path.join(d, names[0]), "rb") as f:
            return names[0], f.read()


def scenario_overrides(scenario, seed=1, soc=-1.0):
    """Configuration overrides the scenario's setup() asks for (on a throwaway pack)."""
    scen = scenarios.get(scenario)
    sim = Simulator(chemistry=pico.CHEMISTRY, cells=pico.CELLS, capacity_mah=pico.CAPACITY_MAH,
                    seed=seed, variant=pico.AFE_VARIANT, n_temps=pico.N_TEMPS,
                    shunt_uohm=pico.SHUNT_UOHM, soc=soc / 100 if soc >= 0 else 0.75, can=True)

    class _Args:
        cells = pico.CELLS

    return scen.setup(sim, _Args()) or {}


def main(argv):
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="normal")
    ap.add_argument("--hours", type=float, default=-1.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--soc", type=float, default=-1.0)
    ap.add_argument("--overrides", default="{}")
    ap.add_argument("--log", default="")
    ap.add_argument("--candump", default="")
    ap.add_argument("--summary", default="")
    ap.add_argument("--until-reaction", action="store_true")
    a = ap.parse_args(argv)
    br = Bridge(a.scenario, a.hours, a.seed, a.soc, json.loads(a.overrides), a.log, a.candump,
                a.summary, a.until_reaction)
    rd = sys.stdin.readline
    wr = sys.stdout.write
    fl = sys.stdout.flush
    while True:
        line = rd()
        if not line:
            break
        r = br.handle(line.rstrip("\n"))
        if r is not None:
            wr(r + "\n")
            fl()
        if line.startswith("E "):
            break
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
