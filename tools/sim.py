# tools/sim.py: run the firmware on the virtual board, faster than real time.
#
#   MICROPYPATH=firmware:tools:.:.frozen micropython tools/sim.py [options]   (make sim)
#
# The firmware (bms.app.Bms) runs unchanged against boards/sim/board.py, whose buses are
# register-level emulators (tools/simlib). Simulated time is explicit: every 250 ms the
# pack and the AFE advance, then the firmware's measure+protect cycle runs; every second
# the control cycle; comms every 250 ms (50 ms with --rs485) of simulated time.
# Nothing reads the wall clock except the speed figure and the progress notes.
#
# Options: see USAGE below (stable interface, documented in the README). A mistake on the
# command line (an unknown option, a value out of range, an unknown scenario or board, a file
# that cannot be written) is one line on stderr and exit status 2; 0 = the run finished;
# 1 = with --strict, the run finished but an expectation of the scenario failed; 3 = the VM
# ran out of heap (-X heapsize).
# The log is CSV, one row per simulated second (--log-every), first line "# config: {json}",
# then the header (COLUMNS, the cell columns, then EXTRA_COLUMNS). The summary JSON holds the
# run's figures, for scenarios with a watched limit the reaction and recovery times measured
# at 250 ms resolution, and the scenario's expectations checked (simlib.scenarios: expect).
import json
import sys
import time

sys.path.append("boards/sim")

from simlib import Simulator  # noqa: E402
from simlib import scenarios  # noqa: E402

COLUMNS = (
    "t_s",
    "state",
    "soc_pct",
    "true_soc_pct",
    "pack_mv",
    "current_ma",
    "cell_min_mv",
    "cell_max_mv",
    "t_min_c",
    "t_max_c",
    "chg_fet",
    "dsg_fet",
    "faults",
    "bal_mask",
    "cvl_mv",
    "ccl_ma",
    "dcl_ma",
    "warnings",
    "soc_err_pct",
    "soh_pct",
    "capacity_ah",
    "heater",
    "fan",
    "true_current_ma",
    "true_cell_min_mv",
    "true_cell_max_mv",
    "true_temp_c",
    "inverter",
)
# After the cell columns: the charge mode (bulk/absorption/float), the SOC cap in force (%),
# 1 while a full charge is requested (the cap is lifted: SOC uncertain or full_charge_days
# due), and the events logged since the previous row ("kind" or "kind:detail", |-separated).
EXTRA_COLUMNS = ("charge_mode", "soc_cap_pct", "full_charge_req", "events")

USAGE = """usage: micropython tools/sim.py [options]      (make sim runs it)

Runs the firmware on the virtual board in simulated time and prints a status table,
a summary and the scenario's expectations (PASS/FAIL).

The pack:
  --chemistry lfp|nmc|lto   cell chemistry (default lfp)
  --cells N                 cells in series, 3..15 (default 4)
  --capacity-ah AH          nominal capacity, 1..2000 Ah (default 100)
  --board NAME              take the pack (AFE variant, address, CRC, cells, chemistry,
                            capacity, shunt, thermistors) from boards/NAME/board.py
  --soc PCT                 initial true SOC, 0..100 (default 75)
The run:
  --scenario NAME           what happens (default normal); --list-scenarios shows them
  --hours H                 simulated hours, > 0 (default: the scenario's own length)
  --seed N                  random seed (default 1)
  --speed max|FACTOR        as fast as possible, or FACTOR simulated seconds per second
  --set name=value[,...]    configuration overrides, validated like every other change
Output:
  --out DIR                 the run's folder: DIR/sim.csv, DIR/summary.json, DIR/flash/
  --log FILE.csv            the log (one row per simulated second)
  --log-every S             one log row every S simulated seconds (default 1)
  --summary FILE.json       the summary as JSON
  --candump FILE            every CAN frame (candump -L format, simulated time)
  --flash DIR               the virtual board's flash (default: next to the log)
  --status-every MIN        a status row every MIN simulated minutes (default: ~24 rows)
  --quiet                   no status table; a progress note on stderr every 30 s
  --strict                  exit status 1 when an expectation of the scenario fails
Attach host tools:
  --rs485 TTY               the firmware's Modbus RTU server on a tty (tools/ptypair.py)
  --can-bridge TTY          the CAN bus as an SLCAN adapter on a tty
  --can-shadow P,Q          with --candump: also encode profiles P, Q from the same state
                            (channel = profile), FET commands into CANDUMP.fet
  --mqtt HOST:PORT          the firmware's MQTT link to that broker over the host network
                            (sets mqtt_enable=1, mqtt_host, mqtt_port; more with --set)
Other:
  --list-scenarios          list the scenarios with their length
  -h, --help                this text

Exit status: 0 the run finished; 1 with --strict, an expectation failed; 2 a mistake in
the command line (one line on stderr says which); 3 out of memory (-X heapsize)."""

# option -> (kind, default); kind: flag | str | int | float
OPTIONS = {
    "chemistry": ("str", "lfp"),
    "cells": ("int", None),
    "capacity-ah": ("float", None),
    "board": ("str", ""),
    "soc": ("float", None),
    "scenario": ("str", "normal"),
    "hours": ("float", None),
    "seed": ("int", 1),
    "speed": ("str", "max"),
    "set": ("str", ""),
    "out": ("str", ""),
    "log": ("str", ""),
    "log-every": ("int", 1),
    "summary": ("str", ""),
    "candump": ("str", ""),
    "flash": ("str", ""),
    "status-every": ("float", None),
    "quiet": ("flag", False),
    "strict": ("flag", False),
    "rs485": ("str", ""),
    "can-bridge": ("str", ""),
    "mqtt": ("str", ""),
    "can-shadow": ("str", ""),
    "list-scenarios": ("flag", False),
    "help": ("flag", False),
}


class UsageError(Exception):
    pass


class Args:
    pass


def parse_args(argv):
    """Args with one attribute per option (dashes as underscores); UsageError on a mistake."""
    vals = {}
    for k in OPTIONS:
        vals[k] = OPTIONS[k][1]
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "-h":
            a = "--help"
        if not a.startswith("--"):
            raise UsageError("unexpected argument %r (options start with --; --help lists them)"
                             % a)
        key = a[2:]
        val = None
        if "=" in key:
            key, val = key.split("=", 1)
        if key not in OPTIONS:
            raise UsageError("unknown option --%s (--help lists the options)" % key)
        kind = OPTIONS[key][0]
        if kind == "flag":
            if val is not None:
                raise UsageError("--%s takes no value" % key)
            vals[key] = True
            i += 1
            continue
        if val is None:
            if i + 1 >= len(argv):
                raise UsageError("--%s needs a value" % key)
            val = argv[i + 1]
            i += 1
        i += 1
        if kind == "int":
            try:
                vals[key] = int(val)
            except ValueError:
                raise UsageError("--%s wants a whole number, got %r" % (key, val)) from None
        elif kind == "float":
            try:
                v = float(val)
            except ValueError:
                raise UsageError("--%s wants a number, got %r" % (key, val)) from None
            if v != v or v in (float("inf"), float("-inf")):
                raise UsageError("--%s wants a finite number, got %r" % (key, val))
            vals[key] = v
        else:
            vals[key] = val
    args = Args()
    for k in vals:
        setattr(args, k.replace("-", "_"), vals[k])
    return args


def check_args(args):
    """Range checks that need no files. UsageError on a mistake."""
    if args.chemistry not in ("lfp", "nmc", "lto"):
        raise UsageError("--chemistry %r: one of lfp, nmc, lto" % args.chemistry)
    if args.cells is not None and not 3 <= args.cells <= 15:
        raise UsageError("--cells %d: the BQ769x0 handles 3 to 15 cells in series" % args.cells)
    if args.capacity_ah is not None and not 1 <= args.capacity_ah <= 2000:
        raise UsageError("--capacity-ah %g: 1 .. 2000 Ah" % args.capacity_ah)
    if args.soc is not None and not 0 <= args.soc <= 100:
        raise UsageError("--soc %g: a percentage, 0 .. 100" % args.soc)
    if args.hours is not None and not 0 < args.hours <= 8760:
        raise UsageError("--hours %g: more than 0, at most 8760 (a year)" % args.hours)
    if args.log_every < 1:
        raise UsageError("--log-every %d: at least 1 s" % args.log_every)
    if args.status_every is not None and args.status_every <= 0:
        raise UsageError("--status-every %g: more than 0 minutes" % args.status_every)
    if args.speed != "max":
        try:
            sp = float(args.speed)
        except ValueError:
            raise UsageError("--speed %r: 'max' or a factor (simulated s per wall s), e.g. 10"
                             % args.speed) from None
        if not sp > 0 or sp == float("inf"):
            raise UsageError("--speed %r: a factor above 0, or 'max'" % args.speed)
    if args.board and args.board != "sim" and (
            args.cells is not None or args.capacity_ah is not None or args.chemistry != "lfp"):
        raise UsageError("--board %s sets cells, capacity and chemistry; change them in "
                         "boards/%s/board.py instead" % (args.board, args.board))


def load_board(name):
    """Pack constants of boards/NAME/board.py (UsageError when missing or out of range)."""
    import os

    import boardfile

    if not name or "/" in name or name.startswith("."):
        raise UsageError("--board %r: the name of a folder in boards/" % name)
    path = "boards/%s/board.py" % name
    try:
        os.stat(path)
    except OSError:
        boards = ", ".join(sorted(b for b in os.listdir("boards") if b != "sim"))
        raise UsageError("--board %s: no %s (the boards are: %s)" % (name, path,
                                                                    boards)) from None
    c = boardfile.read_constants(path)
    if name == "sim":
        return None
    bad = boardfile.check_pack(c)
    if bad:
        raise UsageError("%s: %s" % (path, bad[0]))
    return c


def _mkdirs(path):
    """Create the parent folders of path (absolute or relative)."""
    import os

    parts = path.split("/")[:-1]
    cur = "/" if path.startswith("/") else ""
    for part in parts:
        if not part:
            continue
        cur = cur + part if cur in ("", "/") else cur + "/" + part
        try:
            os.mkdir(cur)
        except OSError:
            pass


def _isint(s):
    try:
        int(s)
        return True
    except ValueError:
        return False


def _fresh_flash(path):
    """The virtual board's flash starts empty on every run (a new pack)."""
    import os

    _mkdirs(path + "/x")
    for fn in os.listdir(path):
        try:
            os.remove(path + "/" + fn)
        except OSError:
            pass


def _open_out(path, what):
    _mkdirs(path)
    try:
        return open(path, "w")
    except OSError as e:
        raise UsageError("cannot write the %s %s (%s)" % (what, path, _oserr(e))) from None


def _oserr(e):
    import errno

    code = e.args[0] if e.args else 0
    names = {}
    for k, text in (("ENOENT", "no such file or folder"), ("EACCES", "permission denied"),
                    ("EISDIR", "it is a folder"), ("ENOTDIR", "a part of the path is a file"),
                    ("EEXIST", "it exists"), ("ENXIO", "no such device")):
        names[getattr(errno, k, -1000 - len(names))] = text
    names.setdefault(20, "a part of the path is a file")  # ENOTDIR on Linux
    return names.get(code, "error %s" % code)


def _fmt(x):
    if isinstance(x, float):
        return "%.2f" % x
    if isinstance(x, bool):
        return "1" if x else "0"
    return str(x)


class Watch:
    """Reaction and recovery of one watched limit, at 250 ms resolution."""

    def __init__(self, spec, cfg):
        self.label, self.pred, self.fet, delay_field = spec
        self.delay_ms = cfg.get(delay_field) if delay_field else 0
        self.t_cross = -1
        self.t_open = -1
        self.t_recover = -1
        self.reactions = []
        self.prev_on = False
        self.first = True

    def step(self, sim, bms, t_ms):
        crossed = self.pred(sim, bms.cfg)
        if self.fet.startswith("cmd_"):  # the protection's command, not the AFE's FET bit
            fet_on = bms.prot.chg_fet if self.fet == "cmd_chg" else bms.prot.dsg_fet
        else:
            fet_on = sim.fet_on(self.fet)
        if crossed and self.first and not fet_on:
            # Beyond the limit from power-up: the FET was never closed (reaction 0).
            self.t_cross = t_ms
        # A hardware trip can open the FET within the same 250 ms step as the crossing.
        elif crossed and self.t_cross < 0 and (fet_on or self.prev_on):
            self.t_cross = t_ms
        self.prev_on = fet_on
        self.first = False
        if self.t_cross >= 0 and self.t_open < 0 and not fet_on:
            self.t_open = t_ms
            self.reactions.append(self.t_open - self.t_cross)
        if self.t_open >= 0 and self.t_recover < 0 and fet_on and not crossed:
            self.t_recover = t_ms

    def result(self):
        return {
            "label": self.label,
            "fet": self.fet,
            "delay_ms": self.delay_ms,
            "t_cross_ms": self.t_cross,
            "t_open_ms": self.t_open,
            "reaction_ms": (self.t_open - self.t_cross) if self.t_open >= 0 else -1,
            "t_recover_ms": self.t_recover,
        }


def _status_every_s(hours, minutes):
    """Seconds between status rows: as asked, or a round step giving about 24 rows."""
    if minutes is not None:
        return max(1, int(minutes * 60))
    want = hours * 60 / 24
    for m in (1, 2, 5, 10, 15, 30, 60, 120, 240, 480, 720, 1440):
        if m >= want:
            return m * 60
    return 1440 * 60


def main(argv):
    try:
        return run(argv)
    except UsageError as e:
        print("sim.py: %s" % e, file=sys.stderr)
        return 2
    except MemoryError:
        print("sim.py: out of memory: give the VM a larger heap (micropython -X heapsize=4M; "
              "make sim SIMHEAP=4M)", file=sys.stderr)
        return 3


def run(argv):
    args = parse_args(argv)
    if args.help:
        print(USAGE)
        return 0
    if args.list_scenarios:
        for cls in scenarios.ALL:
            print("%-24s %5.1f h  %s" % (cls.name, cls.hours, cls.doc))
        return 0
    check_args(args)
    try:
        scen = scenarios.get(args.scenario)
    except KeyError:
        raise UsageError("unknown scenario %r; --list-scenarios shows them"
                         % args.scenario) from None
    hours = args.hours if args.hours is not None else scen.hours
    import board  # boards/sim/board.py

    bc = load_board(args.board) if args.board else None
    if bc is not None:
        chemistry = bc["CHEMISTRY"]
        cells = bc["CELLS"]
        cap_mah = bc["CAPACITY_MAH"]
        variant = bc["AFE_VARIANT"]
        board.SHUNT_UOHM = bc["SHUNT_UOHM"]
        board.AFE_ADDRESS = bc["AFE_ADDRESS"]
        board.AFE_CRC = bc["AFE_CRC"]
        board.THERMISTOR_BETA = bc["THERMISTOR_BETA"]
    else:
        chemistry = args.chemistry
        cells = args.cells if args.cells is not None else 4
        cap_mah = int((args.capacity_ah if args.capacity_ah is not None else 100.0) * 1000)
        variant = None
    args.chemistry, args.cells = chemistry, cells  # scenarios read these
    board.configure(chemistry=chemistry, cells=cells, capacity_mah=cap_mah)
    if bc is not None:
        board.AFE_VARIANT = variant
        board.N_TEMPS = bc["N_TEMPS"]

    # Overrides from --set: checked before anything is built.
    overrides = {}
    for item in args.set.split(","):
        if item:
            if "=" not in item:
                raise UsageError("--set wants name=value[,name=value], got %r" % item)
            k, v = item.split("=", 1)
            overrides[k.strip()] = v.strip() if not _isint(v.strip()) else int(v.strip())
    if args.mqtt:
        host, _, port = args.mqtt.rpartition(":")
        if not host or not _isint(port) or not 0 < int(port) < 65536:
            raise UsageError("--mqtt wants HOST:PORT (a broker), got %r" % args.mqtt)
        overrides.setdefault("mqtt_enable", 1)
        overrides.setdefault("mqtt_host", host)
        overrides.setdefault("mqtt_port", int(port))

    sim = Simulator(
        shunt_uohm=board.SHUNT_UOHM,
        chemistry=chemistry,
        cells=cells,
        capacity_mah=cap_mah,
        seed=args.seed,
        soc=args.soc / 100 if args.soc is not None else 0.75,
        can=True,
        variant=board.AFE_VARIANT,
        address=board.AFE_ADDRESS,
        crc=board.AFE_CRC,
        n_temps=board.N_TEMPS,
        emu_kwargs={"thermistor_beta": board.THERMISTOR_BETA},
    )
    scen_over = scen.setup(sim, args) or {}
    for k in scen_over:
        if k not in overrides:
            overrides[k] = scen_over[k]
    from bms.config import Config, ConfigError

    try:
        cfg = Config(chemistry=chemistry, cells=cells, capacity_mah=cap_mah, **overrides)
    except ConfigError as e:  # the same validation as every other configuration path
        raise UsageError("configuration refused: %s" % e) from None
    except TypeError as e:
        raise UsageError("configuration refused: %s" % e) from None

    # Output files: the run folder and explicit paths.
    out = args.out.rstrip("/") if args.out else ""
    if out:
        import os

        _mkdirs(out + "/x")
        try:
            os.stat(out + "/")
        except OSError:
            raise UsageError("--out %s: cannot make that folder" % out) from None
    log_path = args.log or (out + "/sim.csv" if out else "")
    summary_path = args.summary or (out + "/summary.json" if out else "")
    log = _open_out(log_path, "log") if log_path else None
    summary_f = _open_out(summary_path, "summary") if summary_path else None
    can_f = _open_out(args.candump, "CAN log") if args.candump else None

    if args.rs485:
        from simlib.machine_api import Pin
        from simlib.tty_uart import TtyUart

        try:
            sim.uart = TtyUart(args.rs485)
        except OSError as e:
            raise UsageError("--rs485 %s: cannot open it (%s)" % (args.rs485,
                                                                   _oserr(e))) from None
        sim.rs485_de = Pin("rs485_de", Pin.OUT, 0, clock=sim.clock)
        print("RS485 (Modbus RTU server) on %s" % args.rs485)
    bridge = None
    if args.can_bridge:
        from simlib.slcan import SlcanBridge

        try:
            bridge = SlcanBridge(sim.canbus, args.can_bridge)
        except OSError as e:
            raise UsageError("--can-bridge %s: cannot open it (%s)" % (args.can_bridge,
                                                                        _oserr(e))) from None
        print("CAN bus (SLCAN) on %s" % args.can_bridge)
    from bms.app import Bms

    hw = board.open(sim)
    if args.mqtt:
        from simlib.hostnet import HostWifi

        hw.wifi = HostWifi()
        print("MQTT to %s (prefix %s)" % (args.mqtt, cfg.mqtt_prefix))
    if bc is not None:
        if bc.get("HEATER_PIN", 0) is None:
            hw.heater = None
        if bc.get("FAN_PIN", 0) is None:
            hw.fan = None
    # Each run has its own empty flash (a new pack; parallel runs must not share it).
    hw.data_dir = args.flash or (out + "/flash" if out else (
        log_path + ".flash" if log_path else "build/sim/flash-%s-%d" % (scen.name, args.seed)))
    _fresh_flash(hw.data_dir)
    if can_f is not None and sim.canbus is not None:
        sim.canbus.log_file = can_f
    bms = Bms(hw, cfg)
    bms.boot()
    if sim.inverter is not None:
        sim.inverter.set_profile(cfg.can_profile)  # reads the frames of the BMS's profile
    shadow = None
    if args.can_shadow:
        if can_f is None:
            raise UsageError("--can-shadow needs --candump FILE (the frames go there)")
        from simlib.can_shadow import CanShadow

        try:
            shadow = CanShadow(bms, args.can_shadow.split(","), can_f, args.candump + ".fet")
        except (KeyError, ImportError, ValueError) as e:
            raise UsageError("--can-shadow %s: %s" % (args.can_shadow, e)) from None
    bleed = _bleed_bound(sim, cfg, bms.afe.cell_groups)
    watch = Watch(scen.watch, cfg) if scen.watch else None

    if log is not None:
        log.write("# config: " + json.dumps(cfg.public_dict()) + "\n")
        cols = list(COLUMNS) + ["cell%d_mv" % (i + 1) for i in range(cells)]
        log.write(",".join(cols + list(EXTRA_COLUMNS)) + "\n")

    from bms.protection import STATE_NAMES, fault_names

    pack = _pack_text(bc, args.board, chemistry, cells, cap_mah, board)
    every_s = _status_every_s(hours, args.status_every)
    if not args.quiet:
        print("sim: scenario %s, %s, %s simulated" % (scen.name, pack, _dur(hours * 3600)))
        print("     %s" % scen.doc)
        print("     a status row every %s of simulated time, and at each change of state or "
              "faults (*)" % _dur(every_s))
    # Comms (CAN frames once a second, Modbus polling) run once per 250 ms cycle, or every
    # 50 ms of simulated time while a Modbus client is attached (--rs485).
    substeps = 5 if args.rs485 else 1
    end_ms = int(hours * 3600000)
    speed = 0.0 if args.speed == "max" else float(args.speed)
    wall0 = time.ticks_ms()
    next_note = 30000
    t = 0
    st_run = RunStats(cfg)
    table = Table(every_s, end_ms, wall0)
    ev_seen = bms.events.total
    pending_events = []
    while t < end_ms:
        # --- the world: load, inverter, faults ------------------------------------------
        scen.step(sim, t)
        want = scen.load_ma(sim, t)
        if want is None:
            want = sim.profile.current_ma(t)
        sim.request_ma = sim.inverter_request(want, bms, scen.obey_limits, t)
        # --- 250 ms of physics, then the firmware's cycles ------------------------------
        for _ in range(substeps):
            sim.advance(250 // substeps)
            bms.comms_cycle(sim.clock.now_ms())
            if shadow is not None:
                shadow.poll(bms, sim.clock.now_ms())
        now = sim.clock.now_ms()
        bms.fast_cycle(now)
        if now % 1000 == 0:
            bms.slow_cycle(now)
            if now % 10000 == 0:
                bms.persist_cycle(now)
        t = now
        st_run.step(sim)
        if bridge is not None:
            bridge.poll()
        if speed > 0:
            lag = int(t / speed) - time.ticks_diff(time.ticks_ms(), wall0)
            if lag > 0:
                time.sleep_ms(lag)
        if watch is not None:
            watch.step(sim, bms, t)
        if t % 1000 == 0:
            st = STATE_NAMES[bms.prot.state]
            if bms.events.total != ev_seen:
                new = _new_events(bms, ev_seen)
                ev_seen = bms.events.total
                pending_events.extend(new)
                st_run.events(new)
            st_run.second(t, sim, bms, st)
            if log is not None and (t // 1000) % args.log_every == 0:
                _log_row(log, t, sim, bms, st, fault_names, pending_events)
                pending_events = []
            if not args.quiet:
                table.step(t, sim, bms, st, fault_names)
            elif t % 60000 == 0:
                wall = time.ticks_diff(time.ticks_ms(), wall0)
                if wall >= next_note:
                    next_note = wall + 30000
                    print("sim.py: %d %% done (%s of %s simulated, %d s)" % (
                        t * 100 // end_ms, _dur(t // 1000), _dur(end_ms // 1000),
                        wall // 1000), file=sys.stderr)
    wall_ms = max(1, time.ticks_diff(time.ticks_ms(), wall0))
    if log is not None:
        log.close()
    if can_f is not None:
        can_f.close()
        sim.canbus.log_file = None
    if shadow is not None:
        shadow.close()
    summary = _summary(args, scen, sim, bms, st_run, t, wall_ms, watch, fault_names,
                       log_path, hours, cap_mah, pack)
    summary["bleed"] = bleed
    summary["config"] = bms.cfg.public_dict()
    if bms.mqtt is not None:
        summary["mqtt"] = bms.mqtt.info()
    summary["expect"] = scenarios.check(scen, summary)
    summary["expect_ok"] = all(e["ok"] for e in summary["expect"])
    summary["summary"] = summary_path
    summary["run_dir"] = out
    if summary_f is not None:
        summary_f.write(json.dumps(summary))
        summary_f.close()
    _print_summary(summary)
    if args.strict and not summary["expect_ok"]:
        return 1
    return 0


def _dur(s):
    s = int(s)
    if s < 120:
        return "%d s" % s
    if s < 7200:
        return "%d min" % (s // 60) if s % 60 == 0 else "%.1f min" % (s / 60)
    h = s / 3600
    return ("%d h" % int(h)) if s % 3600 == 0 else "%.1f h" % h


def _pack_text(bc, name, chemistry, cells, cap_mah, board):
    txt = "%d x %s %g Ah (%s, %g mOhm shunt, %d thermistor%s)" % (
        cells, chemistry.upper(), cap_mah / 1000, board.AFE_VARIANT.upper(),
        board.SHUNT_UOHM / 1000, board.N_TEMPS, "" if board.N_TEMPS == 1 else "s")
    if bc is not None:
        txt = "board %s: %s" % (name, txt)
    return txt


_SYNC = ("?", "full", "empty", "ocv", "top")


def _new_events(bms, seen):
    """The events logged since the total was `seen`, oldest first, as 'kind[:detail]'."""
    from bms import events as ev
    from bms.config_tables import FIELDS
    from bms.protection import FAULT_NAMES, STATE_NAMES

    log = bms.events
    n = min(log.total - seen, log.count)
    out = []
    for k in range(n - 1, -1, -1):
        _t, code, a, b = log.get(k)
        kind = ev.name(code)
        d = ""
        if code in (ev.EV_FAULT_SET, ev.EV_FAULT_CLEAR, ev.EV_WARN_SET, ev.EV_WARN_CLEAR,
                    ev.EV_LATCH):
            d = FAULT_NAMES[a] if 0 <= a < len(FAULT_NAMES) else str(a)
        elif code == ev.EV_STATE:
            d = STATE_NAMES[b] if 0 <= b < len(STATE_NAMES) else str(b)
        elif code == ev.EV_SOC_SYNC:
            d = _SYNC[a] if 0 <= a < len(_SYNC) else str(a)
        elif code == ev.EV_INVERTER:
            d = "present" if a else "lost"
        elif code in (ev.EV_CONFIG, ev.EV_CONFIG_REJECT):
            d = FIELDS[a][0] if 0 <= a < len(FIELDS) else str(a)
        out.append(kind + (":" + d if d else ""))
    return out


class RunStats:
    """Figures of the whole run, collected once per simulated second."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.err2 = 0.0
        self.n = 0
        self.err_max = 0.0
        self.faults_seen = 0
        self.warnings_seen = 0
        self.states = {}
        self.modes = {}
        self.soc0 = None
        self.bal_s = 0
        self.heater_s = 0
        self.fan_s = 0
        self.chg_off_s = 0
        self.dsg_off_s = 0
        self.cap_lifted_s = 0
        self.soc_uncertain_s = 0
        self.cold_s = 0
        self.cold_charge_ma = 0
        self.true_max_mv = 0
        self.true_min_mv = 99999
        self.kinds = {}
        # Safety judged on the simulator's truth at every 250 ms step (summary "truth"):
        # charge current into a pack below the charge minimum, any cell above the hardware OV
        # limit, and a FET on while the AFE does not hold its configuration (scenarios that
        # reset or upset it set sim.afe_unconfigured).
        self.truth = {"chg_below_min_ms": 0, "cell_above_hw_ov_ms": 0,
                      "fet_on_unconfigured_ms": 0}

    def step(self, sim):
        """Every 250 ms of simulated time: the truth checks."""
        cfg = self.cfg
        tr = self.truth
        pk = sim.pack
        if pk.current_ma > 0 and pk.temp_c * 10 < cfg.chg_temp_min_dc:
            tr["chg_below_min_ms"] += 250
        if sim.true_cell_max_mv() > cfg.hw_cell_ov_mv:
            tr["cell_above_hw_ov_ms"] += 250
        if getattr(sim, "afe_unconfigured", False) and (sim.fet_on("chg") or sim.fet_on("dsg")):
            tr["fet_on_unconfigured_ms"] += 250

    def events(self, new):
        for e in new:
            k = e.split(":", 1)[0]
            self.kinds[k] = self.kinds.get(k, 0) + 1
            if k != e:
                self.kinds[e] = self.kinds.get(e, 0) + 1

    def second(self, t, sim, bms, st):
        cfg = self.cfg
        true_soc = sim.pack.true_soc() * 100
        est = bms.est
        if self.soc0 is None:
            self.soc0 = (est.soc_pct, true_soc)
        e = est.soc_pct - true_soc
        self.err2 += e * e
        self.n += 1
        if abs(e) > self.err_max:
            self.err_max = abs(e)
        self.faults_seen |= bms.prot.faults | bms.prot.latched
        self.warnings_seen |= bms.prot.warnings
        self.states[st] = self.states.get(st, 0) + 1
        lim = bms.limits
        m = lim.mode_name() if hasattr(lim, "mode_name") else str(lim.mode)
        self.modes[m] = self.modes.get(m, 0) + 1
        s = bms.snap
        if s.bal_mask:
            self.bal_s += 1
        if bms.thermal.heater:
            self.heater_s += 1
        if bms.thermal.fan:
            self.fan_s += 1
        if not s.chg_fet:
            self.chg_off_s += 1
        if not s.dsg_fet:
            self.dsg_off_s += 1
        if lim.full_charge_req:
            self.cap_lifted_s += 1
        if not cfg.storage_mode and est.soc_err_pct > cfg.full_err_pct:
            self.soc_uncertain_s += 1
        if sim.pack.temp_c * 10 < cfg.chg_temp_min_dc:
            self.cold_s += 1
            if sim.pack.current_ma > self.cold_charge_ma:
                self.cold_charge_ma = sim.pack.current_ma
        hi = sim.true_cell_max_mv()
        lo = sim.true_cell_min_mv()
        if hi > self.true_max_mv:
            self.true_max_mv = hi
        if lo < self.true_min_mv:
            self.true_min_mv = lo


def _bleed_bound(sim, cfg, bms_groups):
    """Physical lower bounds of top balancing from the pack's initial state.

    Every cell must lose the charge it holds above the cell that is furthest from full
    (charging adds to all cells alike, only bleeding changes the differences), at the AFE's
    bleed current: V / R at the 70 % duty of the BQ769x0, V taken at the charge voltage
    (balancing happens at the top; the highest V gives the shortest, i.e. safe, bound).
    lower_bound_s: all cells at once. lower_bound_adj_s: as the chip allows, no two adjacent
    cells of one group at once; two neighbours must then bleed one after the other, so their
    sum counts (for cells in a row this pairwise bound is also what a schedule can reach)."""
    p = sim.pack
    n = p.cells
    missing = [(1.0 - p.soc[i]) * p.cap_mah[i] for i in range(n)]
    worst = max(missing)
    excess = [worst - m for m in missing]
    groups = bms_groups
    pair = max(excess)
    for i in range(n - 1):
        if groups[i] == groups[i + 1] and excess[i] + excess[i + 1] > pair:
            pair = excess[i] + excess[i + 1]
    v = cfg.chg_cell_mv / 1000.0
    bleed_ma = v / p.bleed_ohm * 1000.0 * p.bleed_duty
    return {
        "max_bleed_mah": round(max(excess), 1),
        "max_pair_bleed_mah": round(pair, 1),
        "bleed_ma": round(bleed_ma, 1),
        "lower_bound_s": int(max(excess) / bleed_ma * 3600) if bleed_ma > 0 else -1,
        "lower_bound_adj_s": int(pair / bleed_ma * 3600) if bleed_ma > 0 else -1,
    }


def _log_row(log, t, sim, bms, st, fault_names, events):
    s = bms.snap
    lim = bms.limits
    est = bms.est
    row = [
        t // 1000,
        st,
        "%.2f" % est.soc_pct,
        "%.2f" % (sim.pack.true_soc() * 100),
        s.pack_mv,
        s.current_ma,
        s.cell_min_mv,
        s.cell_max_mv,
        "%.1f" % (s.temp_min_dc / 10) if s.temp_min_dc > -32768 else "",
        "%.1f" % (s.temp_max_dc / 10) if s.temp_max_dc > -32768 else "",
        1 if s.chg_fet else 0,
        1 if s.dsg_fet else 0,
        fault_names(bms.prot.faults | bms.prot.latched),
        s.bal_mask,
        lim.cvl_mv,
        lim.ccl_ma,
        lim.dcl_ma,
        fault_names(bms.prot.warnings),
        "%.2f" % est.soc_err_pct,
        "%.1f" % est.soh_pct,
        "%.2f" % (est.capacity_mah / 1000),
        1 if bms.thermal.heater else 0,
        1 if bms.thermal.fan else 0,
        sim.pack.current_ma,
        sim.true_cell_min_mv(),
        sim.true_cell_max_mv(),
        "%.1f" % sim.pack.temp_c,
        1 if (bms.can is not None and bms.can.inverter_present(t)) else 0,
    ]
    for i in range(s.n_cells):
        row.append(s.cell_mv[i])
    row.append(lim.mode_name() if hasattr(lim, "mode_name") else lim.mode)
    row.append(lim.soc_cap_pct)
    row.append(1 if lim.full_charge_req else 0)
    row.append("|".join(events))
    log.write(",".join([_fmt(x) for x in row]) + "\n")


class Table:
    """The status table: a header, a row every `every_s` simulated seconds and one at each
    change of state or faults (marked *, at most one per `gap` seconds)."""

    HEAD = ("     time  state     SOC %  (true)  pack V  current A  cells mV    temp C  CHG DSG"
            "  bal  mode        CCL A  DCL A  done  wall  faults (warnings)")

    def __init__(self, every_s, end_ms, wall0):
        self.every_ms = every_s * 1000
        self.end_ms = end_ms
        self.wall0 = wall0
        self.gap_ms = max(10000, self.every_ms // 6)
        self.last_key = None
        self.last_change = -self.gap_ms
        self.rows = 0

    def step(self, t, sim, bms, st, fault_names):
        key = (st, bms.prot.faults | bms.prot.latched)
        mark = " "
        if t % self.every_ms == 0 or t == self.end_ms:
            pass
        elif key != self.last_key and t - self.last_change >= self.gap_ms:
            mark = "*"
            self.last_change = t
        else:
            return
        self.last_key = key
        if self.rows % 40 == 0:
            print(self.HEAD)
        self.rows += 1
        s = bms.snap
        lim = bms.limits
        flt = fault_names(bms.prot.faults | bms.prot.latched)
        wrn = fault_names(bms.prot.warnings)
        text = flt or "-"
        if wrn:
            text += " (warn %s)" % wrn
        wall = time.ticks_diff(time.ticks_ms(), self.wall0) // 1000
        mode = lim.mode_name() if hasattr(lim, "mode_name") else str(lim.mode)
        print("%s%3d:%02d:%02d  %-8s %6.1f  (%5.1f)  %6.2f  %9.2f  %4d..%4d  %6s  %-3s %-3s  %-3s"
              "  %-10s %6.1f %6.1f  %3d%% %4ds  %s" % (
                  mark, t // 3600000, (t // 60000) % 60, (t // 1000) % 60, st, bms.est.soc_pct,
                  sim.pack.true_soc() * 100, s.pack_mv / 1000, s.current_ma / 1000,
                  s.cell_min_mv, s.cell_max_mv,
                  ("%.1f" % (s.temp_max_dc / 10)) if s.temp_max_dc > -32768 else "?",
                  "on" if s.chg_fet else "off", "on" if s.dsg_fet else "off",
                  "yes" if s.bal_mask else "-", mode, lim.ccl_ma / 1000, lim.dcl_ma / 1000,
                  t * 100 // self.end_ms, wall, text))


def _summary(args, scen, sim, bms, rs, t, wall_ms, watch, fault_names, log_path, hours,
             cap_mah, pack):
    from bms.protection import STATE_NAMES

    n = max(1, rs.n)
    rmse = (rs.err2 / n) ** 0.5
    snap = bms.snap
    lim = bms.limits
    s = {
        "scenario": scen.name,
        "board": args.board or "sim",
        "pack": pack,
        "chemistry": args.chemistry,
        "cells": args.cells,
        "capacity_nominal_ah": cap_mah / 1000,
        "seed": args.seed,
        "hours": hours,
        "sim_s": t / 1000,
        "wall_s": wall_ms / 1000,
        "sim_speedup": (t / wall_ms) if wall_ms else 0,
        "soc_start_pct": rs.soc0[0] if rs.soc0 else 0,
        "true_soc_start_pct": rs.soc0[1] if rs.soc0 else 0,
        "soc_end_pct": bms.est.soc_pct,
        "true_soc_end_pct": sim.pack.true_soc() * 100,
        "soc_rmse_pct": rmse,
        "soc_max_err_pct": rs.err_max,
        "soh_pct": bms.est.soh_pct,
        "capacity_ah": bms.est.capacity_mah / 1000,
        "faults_seen": fault_names(rs.faults_seen),
        "warnings_seen": fault_names(rs.warnings_seen),
        "state_seconds": rs.states,
        "mode_seconds": rs.modes,
        "events": bms.events.total,
        "events_by_kind": rs.kinds,
        "afe_errors": snap.error_total,
        "hw_violations": sim.emu.violations,
        "truth": rs.truth,
        "chg_below_min_ms": rs.truth["chg_below_min_ms"],
        "cell_above_hw_ov_ms": rs.truth["cell_above_hw_ov_ms"],
        "fet_on_unconfigured_ms": rs.truth["fet_on_unconfigured_ms"],
        "bal_s": rs.bal_s,
        "heater_s": rs.heater_s,
        "fan_s": rs.fan_s,
        "chg_off_s": rs.chg_off_s,
        "dsg_off_s": rs.dsg_off_s,
        "cap_lifted_s": rs.cap_lifted_s,
        "soc_uncertain_s": rs.soc_uncertain_s,
        "cold_s": rs.cold_s,
        "cold_charge_ma": rs.cold_charge_ma,
        "true_cell_max_mv": rs.true_max_mv,
        "true_cell_min_mv": rs.true_min_mv,
        "end_state": STATE_NAMES[bms.prot.state],
        "end_faults": fault_names(bms.prot.faults | bms.prot.latched),
        "end_spread_mv": snap.cell_max_mv - snap.cell_min_mv,
        "end_cell_max_mv": snap.cell_max_mv,
        "end_soc_cap_pct": lim.soc_cap_pct,
        "log": log_path,
        "candump": args.candump,
        "config": bms.cfg.public_dict(),
    }
    if watch is not None:
        s["watch"] = watch.result()
    return s


def _print_summary(s):
    print("=" * 72)
    print("scenario %s: %s, seed %d, %s simulated in %.1f s (x%d)" % (
        s["scenario"], s["pack"], s["seed"], _dur(s["sim_s"]), s["wall_s"],
        int(s["sim_speedup"])))
    print("SOC   start %5.1f %% (true %5.1f %%)  end %5.1f %% (true %5.1f %%)  "
          "RMSE %.2f %%  max %.2f %%" % (
              s["soc_start_pct"], s["true_soc_start_pct"], s["soc_end_pct"],
              s["true_soc_end_pct"], s["soc_rmse_pct"], s["soc_max_err_pct"]))
    print("SOH   %.1f %%  capacity %.1f Ah" % (s["soh_pct"], s["capacity_ah"]))
    print("faults seen: %s" % (s["faults_seen"] or "none"))
    if s["warnings_seen"]:
        print("warnings seen: %s" % s["warnings_seen"])
    print("time in state: %s" % ", ".join("%s %d s" % kv for kv in s["state_seconds"].items()))
    print("charge mode: %s" % ", ".join("%s %d s" % kv for kv in s["mode_seconds"].items()))
    if s["bal_s"] or s["heater_s"] or s["fan_s"]:
        print("balancing %d s, heater %d s, fan %d s" % (s["bal_s"], s["heater_s"], s["fan_s"]))
    if s["soc_uncertain_s"]:
        print("SOC uncertain (error above full_err_pct) for %d s: the daily SOC cap was lifted "
              "for a full charge" % s["soc_uncertain_s"])
    print("events logged: %d, AFE read errors: %d" % (s["events"], s["afe_errors"]))
    tr = s.get("truth")
    if tr:
        print("truth: charging below the charge minimum %d ms, a cell above the hardware OV "
              "limit %d ms, a FET on while the AFE was unconfigured %d ms"
              % (tr["chg_below_min_ms"], tr["cell_above_hw_ov_ms"],
                 tr["fet_on_unconfigured_ms"]))
    w = s.get("watch")
    if w:
        print(
            "watch %s (%s FET): crossed at %.2f s, FET open at %.2f s -> reaction %d ms "
            "(allowed %d + 250 ms); recovered at %.2f s"
            % (
                w["label"],
                w["fet"],
                w["t_cross_ms"] / 1000,
                w["t_open_ms"] / 1000,
                w["reaction_ms"],
                w["delay_ms"],
                w["t_recover_ms"] / 1000,
            )
        )
    m = s.get("mqtt")
    if m:
        print("mqtt: %s, %d connects, %d published, %d alerts acknowledged, commands %s, "
              "longest poll %d us" % (m["link"], m["connects"], m["published"],
                                      m["alerts_sent"], m["commands"], m["max_poll_us"]))
    if s.get("run_dir"):
        print("run folder: " + s["run_dir"])
    if s["log"]:
        print("log:     " + s["log"])
    if s["candump"]:
        print("CAN log: " + s["candump"])
    if s.get("summary"):
        print("summary: " + s["summary"])
    ex = s.get("expect", [])
    if not ex:
        print("expectations: none written for scenario %s" % s["scenario"])
        return
    print("expectations of scenario %s:" % s["scenario"])
    for e in ex:
        print("  %s  %s" % ("PASS" if e["ok"] else "FAIL", e["text"]))
    bad = len([e for e in ex if not e["ok"]])
    if bad:
        print("result: FAIL (%d of %d expectations not met)" % (bad, len(ex)))
    else:
        print("result: PASS (all %d expectations met)" % len(ex))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
