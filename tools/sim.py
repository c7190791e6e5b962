# tools/sim.py: run the firmware on the virtual board, faster than real time.
#
#   MICROPYPATH=firmware:tools:.:.frozen micropython tools/sim.py [options]   (make sim)
#
# The firmware (bms.app.Bms) runs unchanged against boards/sim/board.py, whose buses are
# register-level emulators (tools/simlib). Simulated time is explicit: every 250 ms the
# pack and the AFE advance, then the firmware's measure+protect cycle runs; every second
# the control cycle; comms every 250 ms (50 ms with --rs485) of simulated time.
# Nothing reads the wall clock except the speed figure.
#
# Options (stable interface, documented in the README):
#   --chemistry lfp|nmc|lto  --cells N  --capacity-ah AH  --hours H  --speed max|FACTOR
#   --scenario NAME  --list-scenarios  --seed N  --log FILE.csv  --candump FILE
#   --summary FILE.json  --quiet  --set name=value[,name=value]  --soc PCT
#   --flash DIR      the virtual board's flash (default: next to the log), emptied at start
#   --rs485 TTY      the firmware's Modbus RTU server on that tty (a PTY end: tools/ptypair.py)
#   --can-bridge TTY the CAN bus as an SLCAN adapter on that tty (python-can interface "slcan")
#   --can-shadow P,Q  also encode profiles P, Q from the same state into the candump log
#                    (channel = profile; simlib.can_shadow), FET commands into CANDUMP.fet
# The log is CSV, one row per simulated second, first line "# config: {json}", then the
# header (see COLUMNS). The summary JSON holds the run's figures and, for scenarios with a
# watched limit, the reaction and recovery times measured at 250 ms resolution.
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


def parse_args(argv):
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--chemistry", default="lfp")
    p.add_argument("--cells", type=int, default=4)
    p.add_argument("--capacity-ah", type=float, default=100.0)
    p.add_argument("--hours", type=float, default=-1.0)
    p.add_argument("--speed", default="max")
    p.add_argument("--scenario", default="normal")
    p.add_argument("--list-scenarios", action="store_true")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--log", default="")
    p.add_argument("--candump", default="")
    p.add_argument("--summary", default="")
    p.add_argument("--soc", type=float, default=-1.0)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--rs485", default="")
    p.add_argument("--can-bridge", default="")
    p.add_argument("--set", default="")
    p.add_argument("--flash", default="")
    p.add_argument("--can-shadow", default="")
    return p.parse_args(argv)


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


def main(argv):
    args = parse_args(argv)
    if args.list_scenarios:
        for cls in scenarios.ALL:
            print("%-24s %5.1f h  %s" % (cls.name, cls.hours, cls.doc))
        return 0
    try:
        scen = scenarios.get(args.scenario)
    except KeyError:
        print("unknown scenario %r; --list-scenarios shows them" % args.scenario)
        return 2
    hours = args.hours if args.hours > 0 else scen.hours
    cap_mah = int(args.capacity_ah * 1000)
    import board  # boards/sim/board.py

    sim = Simulator(
        shunt_uohm=board.SHUNT_UOHM,
        chemistry=args.chemistry,
        cells=args.cells,
        capacity_mah=cap_mah,
        seed=args.seed,
        soc=args.soc / 100 if args.soc >= 0 else 0.75,
        can=True,
    )
    overrides = scen.setup(sim, args) or {}
    for item in args.set.split(","):
        if item:
            if "=" not in item:
                print("--set wants name=value[,name=value], got %r" % item)
                return 2
            k, v = item.split("=", 1)
            overrides[k.strip()] = v.strip() if not _isint(v.strip()) else int(v.strip())
    if args.rs485:
        from simlib.machine_api import Pin
        from simlib.tty_uart import TtyUart

        sim.uart = TtyUart(args.rs485)
        sim.rs485_de = Pin("rs485_de", Pin.OUT, 0, clock=sim.clock)
        print("RS485 (Modbus RTU server) on %s" % args.rs485)
    bridge = None
    if args.can_bridge:
        from simlib.slcan import SlcanBridge

        bridge = SlcanBridge(sim.canbus, args.can_bridge)
        print("CAN bus (SLCAN) on %s" % args.can_bridge)
    from bms.app import Bms
    from bms.config import Config, ConfigError

    board.configure(chemistry=args.chemistry, cells=args.cells, capacity_mah=cap_mah)
    try:
        cfg = Config(chemistry=args.chemistry, cells=args.cells, capacity_mah=cap_mah,
                     **overrides)
    except ConfigError as e:  # the same validation as every other configuration path
        print("configuration refused: %s" % e)
        return 2
    hw = board.open(sim)
    # Each run has its own empty flash (a new pack; parallel runs must not share it).
    hw.data_dir = args.flash or (args.log + ".flash" if args.log else
                                 "build/sim/flash-%s-%d" % (scen.name, args.seed))
    _fresh_flash(hw.data_dir)
    if args.candump and sim.canbus is not None:
        _mkdirs(args.candump)
        sim.canbus.log_file = open(args.candump, "w")
    bms = Bms(hw, cfg)
    bms.boot()
    if sim.inverter is not None:
        sim.inverter.set_profile(cfg.can_profile)  # reads the frames of the BMS's profile
    shadow = None
    if args.can_shadow and args.candump:
        from simlib.can_shadow import CanShadow

        shadow = CanShadow(bms, args.can_shadow.split(","), sim.canbus.log_file,
                           args.candump + ".fet")
    bleed = _bleed_bound(sim, cfg, bms.afe.cell_groups)
    watch = Watch(scen.watch, cfg) if scen.watch else None

    log = None
    if args.log:
        _mkdirs(args.log)
        log = open(args.log, "w")
        log.write("# config: " + json.dumps(cfg.as_dict()) + "\n")
        cols = list(COLUMNS) + ["cell%d_mv" % (i + 1) for i in range(args.cells)]
        log.write(",".join(cols) + "\n")

    from bms.protection import STATE_NAMES, fault_names

    # Comms (CAN frames once a second, Modbus polling) run once per 250 ms cycle, or every
    # 50 ms of simulated time while a Modbus client is attached (--rs485).
    substeps = 5 if getattr(args, "rs485", "") else 1
    end_ms = int(hours * 3600000)
    speed = 0.0 if args.speed == "max" else float(args.speed)
    wall0 = time.ticks_ms()
    t = 0
    stats = {"err2": 0.0, "n": 0, "err_max": 0.0, "faults_seen": 0, "states": {}}
    # Safety judged on the simulator's truth at every 250 ms step (summary "truth"):
    # charge current into a pack below the charge minimum, any cell above the hardware OV
    # limit, and a FET on while the AFE does not hold its configuration (scenarios that
    # reset or upset it set sim.afe_unconfigured).
    truth = {"chg_below_min_ms": 0, "cell_above_hw_ov_ms": 0, "fet_on_unconfigured_ms": 0}
    stats["truth"] = truth
    soc0 = None
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
        pk = sim.pack
        if pk.current_ma > 0 and pk.temp_c * 10 < cfg.chg_temp_min_dc:
            truth["chg_below_min_ms"] += 250
        if sim.true_cell_max_mv() > cfg.hw_cell_ov_mv:
            truth["cell_above_hw_ov_ms"] += 250
        if getattr(sim, "afe_unconfigured", False) and (sim.fet_on("chg") or sim.fet_on("dsg")):
            truth["fet_on_unconfigured_ms"] += 250
        if bridge is not None:
            bridge.poll()
        if speed > 0:
            lag = int(t / speed) - time.ticks_diff(time.ticks_ms(), wall0)
            if lag > 0:
                time.sleep_ms(lag)
        if watch is not None:
            watch.step(sim, bms, t)
        if t % 1000 == 0:
            true_soc = sim.pack.true_soc() * 100
            if soc0 is None:
                soc0 = (bms.est.soc_pct, true_soc)
            e = bms.est.soc_pct - true_soc
            stats["err2"] += e * e
            stats["n"] += 1
            if abs(e) > stats["err_max"]:
                stats["err_max"] = abs(e)
            stats["faults_seen"] |= bms.prot.faults | bms.prot.latched
            st = STATE_NAMES[bms.prot.state]
            stats["states"][st] = stats["states"].get(st, 0) + 1
            if log is not None:
                _log_row(log, t, sim, bms, st, fault_names)
            if t % 60000 == 0 and not args.quiet:
                _status(t, sim, bms, st, fault_names)
    wall_ms = max(1, time.ticks_diff(time.ticks_ms(), wall0))
    if log is not None:
        log.close()
    if sim.canbus is not None and sim.canbus.log_file is not None:
        sim.canbus.log_file.close()
    if shadow is not None:
        shadow.close()
    summary = _summary(args, scen, sim, bms, stats, soc0, t, wall_ms, watch, fault_names)
    summary["bleed"] = bleed
    if args.summary:
        _mkdirs(args.summary)
        with open(args.summary, "w") as f:
            f.write(json.dumps(summary))
    _print_summary(summary)
    return 0


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


def _log_row(log, t, sim, bms, st, fault_names):
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
    log.write(",".join([_fmt(x) for x in row]) + "\n")


def _status(t, sim, bms, st, fault_names):
    s = bms.snap
    h = t // 3600000
    m = (t // 60000) % 60
    print(
        "%3d:%02d %-8s SOC %5.1f%% (true %5.1f%%) %6.2f V %7.2f A cells %4d..%4d mV "
        "%5.1f C chg=%d dsg=%d bal=%04x CVL %5.2f V CCL %6.1f A DCL %6.1f A %s"
        % (
            h,
            m,
            st,
            bms.est.soc_pct,
            sim.pack.true_soc() * 100,
            s.pack_mv / 1000,
            s.current_ma / 1000,
            s.cell_min_mv,
            s.cell_max_mv,
            s.temp_max_dc / 10 if s.temp_max_dc > -32768 else float("nan"),
            1 if s.chg_fet else 0,
            1 if s.dsg_fet else 0,
            s.bal_mask,
            bms.limits.cvl_mv / 1000,
            bms.limits.ccl_ma / 1000,
            bms.limits.dcl_ma / 1000,
            fault_names(bms.prot.faults | bms.prot.latched) or "-",
        )
    )


def _summary(args, scen, sim, bms, stats, soc0, t, wall_ms, watch, fault_names):
    n = max(1, stats["n"])
    rmse = (stats["err2"] / n) ** 0.5
    s = {
        "scenario": scen.name,
        "chemistry": args.chemistry,
        "cells": args.cells,
        "seed": args.seed,
        "sim_s": t / 1000,
        "wall_s": wall_ms / 1000,
        "sim_speedup": (t / wall_ms) if wall_ms else 0,
        "soc_start_pct": soc0[0] if soc0 else 0,
        "true_soc_start_pct": soc0[1] if soc0 else 0,
        "soc_end_pct": bms.est.soc_pct,
        "true_soc_end_pct": sim.pack.true_soc() * 100,
        "soc_rmse_pct": rmse,
        "soc_max_err_pct": stats["err_max"],
        "soh_pct": bms.est.soh_pct,
        "capacity_ah": bms.est.capacity_mah / 1000,
        "faults_seen": fault_names(stats["faults_seen"]),
        "state_seconds": stats["states"],
        "events": bms.events.total,
        "afe_errors": bms.snap.error_total,
        "hw_violations": sim.emu.violations,
        "truth": stats["truth"],
        "log": args.log,
        "candump": args.candump,
    }
    if watch is not None:
        s["watch"] = watch.result()
    return s


def _print_summary(s):
    print("=" * 72)
    print(
        "scenario %s: %s, %d cells, seed %d, %.1f h simulated in %.1f s (x%d)"
        % (
            s["scenario"],
            s["chemistry"],
            s["cells"],
            s["seed"],
            s["sim_s"] / 3600,
            s["wall_s"],
            int(s["sim_speedup"]),
        )
    )
    print(
        "SOC   start %5.1f %% (true %5.1f %%)  end %5.1f %% (true %5.1f %%)  "
        "RMSE %.2f %%  max %.2f %%"
        % (
            s["soc_start_pct"],
            s["true_soc_start_pct"],
            s["soc_end_pct"],
            s["true_soc_end_pct"],
            s["soc_rmse_pct"],
            s["soc_max_err_pct"],
        )
    )
    print("SOH   %.1f %%  capacity %.1f Ah" % (s["soh_pct"], s["capacity_ah"]))
    print("faults seen: %s" % (s["faults_seen"] or "none"))
    print("time in state: %s" % ", ".join("%s %d s" % kv for kv in s["state_seconds"].items()))
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
    if s["log"]:
        print("log:     " + s["log"])
    if s["candump"]:
        print("CAN log: " + s["candump"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
