# simlib.scenarios: named situations for tools/sim.py --scenario.
#
# A scenario shapes the pack (setup), drives the load and injects faults over time (step),
# and names what it tests (watch): a predicate on the TRUE pack state, the FET that must
# open, and the configuration delay allowed for the reaction. tools/sim.py measures, at
# 250 ms resolution, the time from the true value crossing the limit to the FET opening
# and whether the FET closed again afterwards (recovery), and writes both to the summary.
#
# Load convention: + = charging. `sim.load_ma` is what the house/PV wants from the battery;
# the simulated inverter clips it to the BMS limits unless the scenario sets
# `obey_limits = False` (a charger or load that ignores the BMS, so protection must act).
#
# Expectations (`expect`): what a run of the scenario must show. tools/sim.py checks them
# against the run's summary (its JSON keys) at the end and prints one PASS/FAIL line each,
# in words; `--strict` makes a failed one exit status 1. `expect` is a tuple of checks, each
# a tuple whose first item names the kind:
#   ("fault", "a|b")         one of the named faults or warnings was active at some time
#   ("no_fault", "a|b")      none of them was ever active; "*" = no protection fault at all
#                            (warnings do not count for "*")
#   ("reaction",)            the watched FET (`watch`) opened within its delay + 250 ms
#   ("recovered",)           ... and closed again once the cause was gone
#   ("end_normal",)          the run ended in state normal with no active fault
#   ("event", "kind")        an event of this kind was logged (bms.events.NAMES), or with
#                            its detail as in the log's events column: "inverter:lost"
#   ("max", "key", value)    the summary figure `key` is at most value; a value that is a
#                            name is the configuration field of that name (e.g. "cell_ov_mv")
#   ("min", "key", value)    the summary figure `key` is at least value
# A check may end with one more item, the words to print (the default says the numbers).
# `expect` is not inherited: a scenario without its own has none (the summary says so).
# Summary figures useful here: soc_rmse_pct, soc_max_err_pct, soh_pct, bal_s, heater_s,
# fan_s, chg_off_s, dsg_off_s, cold_charge_ma (most charge current while the pack was below
# chg_temp_min_dc), cold_s, true_cell_max_mv, true_cell_min_mv, end_spread_mv,
# end_cell_max_mv, afe_errors, hw_violations (emulator rule breaks, e.g. adjacent bleeding),
# and the truth checks made every 250 ms: chg_below_min_ms (charge current into a pack below
# chg_temp_min_dc), cell_above_hw_ov_ms, fet_on_unconfigured_ms (a FET on while the AFE did
# not hold its configuration).
# ALL_OK (below) holds for every scenario that ends in normal operation.


class Scenario:
    name = "normal"
    doc = "a home day: PV charge by day, house loads with spikes at night"
    hours = 24.0
    expect = (("no_fault", "*"), ("end_normal",),
              ("max", "soc_max_err_pct", 5, "the SOC estimate stayed within 5 % of the truth"))
    obey_limits = True
    watch = None  # (label, predicate(sim, cfg) -> bool, "chg"|"dsg", delay_field or None)
    expect_recovery = True

    def setup(self, sim, opts):
        """Shape the pack before boot. Returns configuration overrides (dict)."""
        if type(self) is Scenario:  # the plain home day: cells as they come from a real lot
            sim.pack.spread(capacity=0.02, soc=0.01, seed=sim.seed)
        return {}

    def load_ma(self, sim, t_ms):
        """Battery current the house/charger asks for at t_ms (None: the home-day profile)."""
        return None

    def step(self, sim, t_ms):
        """Inject faults at their times."""


def _c(sim, frac):
    return int(sim.capacity_mah * frac)


class CellOv(Scenario):
    name = "cell-ov"
    doc = "a weak, high cell while a charger ignores the limits: charge FET opens, then recovers"
    hours = 2.0
    expect = (("fault", "cell_ov|hw_ov"), ("reaction",), ("recovered",), ("end_normal",))
    obey_limits = False
    watch = ("cell_ov", lambda sim, cfg: sim.true_cell_max_mv() > cfg.cell_ov_mv, "chg",
             "cell_ov_delay_ms")

    def setup(self, sim, opts):
        sim.pack.set_cell_soc(sim.cells - 1, 0.985)
        for i in range(sim.cells - 1):
            sim.pack.set_cell_soc(i, 0.93)
        return {}

    def load_ma(self, sim, t_ms):
        return _c(sim, 0.2) if t_ms < 1800000 else -_c(sim, 0.3)


class CellUv(Scenario):
    name = "cell-uv"
    doc = "a weak, low cell while a load ignores the limits: discharge FET opens, then recovers"
    hours = 2.0
    expect = (("fault", "cell_uv|hw_uv"), ("reaction",), ("recovered",), ("end_normal",))
    obey_limits = False
    watch = ("cell_uv", lambda sim, cfg: sim.true_cell_min_mv() < cfg.cell_uv_mv, "dsg",
             "cell_uv_delay_ms")

    def setup(self, sim, opts):
        sim.pack.set_cell_soc(0, 0.02)
        for i in range(1, sim.cells):
            sim.pack.set_cell_soc(i, 0.08)
        return {}

    def load_ma(self, sim, t_ms):
        return -_c(sim, 0.3) if t_ms < 1800000 else _c(sim, 0.2)


class OverCurrentCharge(Scenario):
    name = "over-current-charge"
    doc = "a charger pushes 0.8 C (limit 0.5 C) for 20 s: charge FET opens, retries, recovers"
    hours = 0.5
    expect = (("fault", "chg_oc"), ("reaction",), ("recovered",), ("end_normal",))
    obey_limits = False
    watch = ("chg_oc", lambda sim, cfg: sim.pack.current_ma > cfg.chg_oc_ma, "chg",
             "chg_oc_delay_ms")

    def load_ma(self, sim, t_ms):
        if 60000 <= t_ms < 80000:
            return _c(sim, 0.8)
        return _c(sim, 0.1)


class OverCurrentDischarge(Scenario):
    name = "over-current-discharge"
    doc = "a load draws 1.2 C (limit 1 C, hardware 1.5 C) for 20 s: discharge FET opens"
    hours = 0.5
    expect = (("fault", "dsg_oc|hw_ocd"), ("reaction",), ("recovered",), ("end_normal",))
    obey_limits = False
    watch = ("dsg_oc", lambda sim, cfg: -sim.pack.current_ma > cfg.dsg_oc_ma, "dsg",
             "dsg_oc_delay_ms")

    def load_ma(self, sim, t_ms):
        if 60000 <= t_ms < 80000:
            return -_c(sim, 1.2)
        return -_c(sim, 0.1)


class ShortCircuit(Scenario):
    name = "short-circuit"
    doc = "a 6 C short for 2 s: the AFE opens the discharge FET at once; retry after hold-off"
    hours = 0.5
    expect = (("fault", "scd"), ("reaction",), ("recovered",), ("end_normal",))
    obey_limits = False
    # The short is there while the load asks for it (the current itself stops at the trip).
    watch = ("scd", lambda sim, cfg: -sim.request_ma > cfg.hw_scd_ma, "dsg", None)

    def load_ma(self, sim, t_ms):
        if 60000 <= t_ms < 62000:
            return -_c(sim, 6.0)
        return -_c(sim, 0.05)


class ChargeCold(Scenario):
    name = "charge-cold"
    doc = "a cold draught at 3 degC while PV charges: no charging below 0 degC, resumes when warm"
    hours = 3.0
    expect = (("fault", "chg_ut"), ("reaction",), ("recovered",), ("end_normal",))
    obey_limits = False
    watch = ("chg_ut", lambda sim, cfg: sim.pack.temp_c * 10 < cfg.chg_temp_min_dc, "chg",
             "temp_delay_ms")

    def setup(self, sim, opts):
        sim.pack.set_temperature(3.0)
        sim.pack.ambient_c = 3.0
        return {}

    def load_ma(self, sim, t_ms):
        return _c(sim, 0.05)

    def step(self, sim, t_ms):
        # From 60 s the pack is chilled at 0.5 degC/s down to -5 degC and held there until
        # 10 min; then the room warms to 15 degC and the pack follows it.
        if 60000 <= t_ms < 600000:
            sim.pack.set_temperature(max(-5.0, 3.0 - 0.5 * (t_ms - 60000) / 1000))
            sim.pack.ambient_c = -5.0
        elif t_ms >= 600000:
            sim.pack.ambient_c = 15.0


class OverTempDischarge(Scenario):
    name = "over-temp-discharge"
    doc = "the pack heats up while discharging: discharge FET opens above 55 degC, recovers cool"
    hours = 3.0
    expect = (("fault", "dsg_ot"), ("reaction",), ("recovered",), ("end_normal",))
    obey_limits = False
    watch = ("dsg_ot", lambda sim, cfg: sim.pack.temp_c * 10 > cfg.dsg_temp_max_dc, "dsg",
             "temp_delay_ms")

    def setup(self, sim, opts):
        sim.pack.set_temperature(50.0)
        sim.pack.ambient_c = 50.0
        return {}

    def load_ma(self, sim, t_ms):
        return -_c(sim, 0.05)

    def step(self, sim, t_ms):
        # From 60 s a heat source warms the pack at 0.5 degC/s to 62 degC, held to 10 min;
        # then it is gone and the pack cools towards a 25 degC room.
        if 60000 <= t_ms < 600000:
            sim.pack.set_temperature(min(62.0, 50.0 + 0.5 * (t_ms - 60000) / 1000))
            sim.pack.ambient_c = 62.0
        elif t_ms >= 600000:
            sim.pack.ambient_c = 25.0


class ThermistorOpen(Scenario):
    name = "thermistor-open"
    doc = "thermistor 1 opens for 10 minutes: both FETs open (no temperature), then recover"
    hours = 1.0
    expect = (("fault", "temp_sensor"), ("reaction",), ("recovered",), ("end_normal",))
    watch = ("temp_sensor", lambda sim, cfg: sim.pack.thermistor_open, "chg", "temp_delay_ms")

    def step(self, sim, t_ms):
        sim.pack.thermistor_open = 600000 <= t_ms < 1200000


class AfeLost(Scenario):
    name = "afe-lost"
    doc = "I2C to the AFE fails for 30 s: FETs commanded off, limits to 0 A, then recovery"
    hours = 0.5
    expect = (("fault", "afe_lost"), ("reaction",), ("recovered",), ("end_normal",))
    # Without I2C the FET commands cannot reach the AFE (README: "AFE lost"); what the
    # firmware controls is its command and the limits the inverter obeys.
    watch = ("afe_lost", lambda sim, cfg: sim.emu.lost, "cmd_dsg", None)

    def load_ma(self, sim, t_ms):
        return -_c(sim, 0.05)

    def step(self, sim, t_ms):
        sim.emu.lost = 300000 <= t_ms < 330000


class AfeXready(Scenario):
    name = "afe-xready"
    doc = "DEVICE_XREADY at 5 min: the AFE opens both FETs; cleared after 3 s and restored"
    hours = 0.5
    expect = (("fault", "xready"), ("reaction",), ("recovered",), ("end_normal",))
    watch = ("xready", lambda sim, cfg: sim.xready_pending, "dsg", None)

    def load_ma(self, sim, t_ms):
        return -_c(sim, 0.05)

    def step(self, sim, t_ms):
        if t_ms == 300000:
            sim.emu.inject_xready()
        sim.xready_pending = bool(sim.emu.regs[0] & 0x20)


class Imbalance(Scenario):
    name = "imbalance"
    doc = ("5 % capacity and SOC spread between cells, on a charger (0.3 C from the grid, obeying "
           "the limits): charged to the top and held there while the balancer bleeds")
    hours = 24.0
    expect = (("no_fault", "*"),
              ("min", "true_cell_max_mv", "bal_min_cell_mv", "the pack reached the top of charge"),
              ("max", "true_cell_max_mv", "cell_ov_mv", "no cell went above the over-voltage "
               "limit"), ("min", "bal_s", 600, "the balancer bled cells"))

    def setup(self, sim, opts):
        sim.pack.spread(capacity=0.05, soc=0.05, seed=sim.seed)
        # While a pack is being balanced its owner lets it charge to full (with the default
        # 90 % daily cap an LFP pack never reaches the balancing knee).
        return {"max_soc_pct": 100}

    def load_ma(self, sim, t_ms):
        return _c(sim, 0.3)


class ImbalanceHome(Imbalance):
    name = "imbalance-home"
    doc = ("the imbalance pack on a home day: balancing only while the day's PV holds it at the "
           "top (slower; shows the everyday case)")
    hours = 72.0

    def load_ma(self, sim, t_ms):
        return None


class HighCell(Scenario):
    name = "high-cell"
    doc = "one cell 3 % higher than the rest: the charge voltage follows it, no over-voltage trip"
    hours = 24.0
    expect = (("no_fault", "*"), ("max", "true_cell_max_mv", "cell_ov_mv",
               "no cell went above the over-voltage limit"))

    def setup(self, sim, opts):
        sim.pack.set_cell_soc(sim.cells - 1, min(1.0, sim.pack.true_soc() + 0.03))
        return {}


class ColdMorning(Scenario):
    name = "cold-morning"
    doc = "06:00 at -5 degC: the heater warms the pack before PV charging is allowed (from 07:00)"
    hours = 6.0
    expect = (("min", "heater_s", 60, "the heater ran"),
              ("max", "cold_charge_ma", 0, "no charge current while the pack was below the "
               "minimum charge temperature"), ("end_normal",))

    def setup(self, sim, opts):
        sim.pack.set_temperature(-5.0)
        sim.pack.ambient_c = -5.0
        return {"have_heater": 1}

    def load_ma(self, sim, t_ms):
        return sim.profile.current_ma(t_ms + 6 * 3600000)  # the day from 06:00

    def step(self, sim, t_ms):
        sim.pack.ambient_c = -5.0 + min(10.0, 10.0 * t_ms / 21600000)


class ColdEmpty(Scenario):
    name = "cold-empty"
    doc = ("a pack near empty (run it with --soc 4; issue 12 used 15 cells) at -5 degC on a cold "
           "morning: charging is blocked, the heater runs from the pack, the inverter wants to "
           "charge; nothing may ask it for charge or force charge until the cells are warm")
    hours = 1.0

    def setup(self, sim, opts):
        sim.pack.set_temperature(-5.0)
        sim.pack.ambient_c = -5.0
        return {"have_heater": 1}

    def load_ma(self, sim, t_ms):
        # grid/PV would charge at 0.2 C all along; the house draws 0.05 C for 5 min at 20 min
        if 1200000 <= t_ms < 1500000:
            return -_c(sim, 0.05)
        return _c(sim, 0.2)


class SocDrift(Scenario):
    name = "soc-drift"
    doc = "four days without a full charge and a +0.5 A current-sensor offset"
    hours = 96.0

    def setup(self, sim, opts):
        sim.emu.cc_offset_ma = 500
        return {}

    def load_ma(self, sim, t_ms):
        ma = sim.profile.current_ma(t_ms)
        # Clouds all week: PV covers only part of the house load, never reaches full.
        if ma > 0:
            ma = ma // 3
        return ma


class AgedPack(Scenario):
    name = "aged-pack"
    doc = "80 % capacity, 1.6x resistance, cycled full/empty at 0.2 C: SOH learns the fade"
    hours = 72.0

    def setup(self, sim, opts):
        sim.pack.age(capacity_factor=0.8, resistance_factor=1.6)
        return {"max_soc_pct": 100}  # a capacity test charges to full

    def load_ma(self, sim, t_ms):
        # A capacity-test habit: 16 h cycles of 0.2 C charge (the BMS limits end it at full),
        # 2 h rest, 0.2 C discharge (the limits end it near empty), 2 h rest.
        h = (t_ms // 60000) % 960 / 60.0
        if h < 6.0:
            return _c(sim, 0.2)
        if 8.0 <= h < 14.0:
            return -_c(sim, 0.2)
        return 0


class InverterLost(Scenario):
    name = "inverter-lost"
    doc = "the inverter goes silent for 2 minutes: the BMS notices, keeps protecting and sending"
    hours = 0.5
    expect = (("event", "inverter:lost", "the BMS noticed the inverter was gone"),
              ("event", "inverter:present", "... and back"), ("no_fault", "*"),
              ("end_normal",))
    expect_recovery = True

    def step(self, sim, t_ms):
        if sim.inverter is not None:
            sim.inverter.on = not (600000 <= t_ms < 720000)


_SAFE_AFE = (
    ("max", "chg_below_min_ms", 0, "no charge current into the pack below the charge minimum"),
    ("max", "cell_above_hw_ov_ms", 0, "no cell above the hardware OV limit at any moment"),
    ("max", "fet_on_unconfigured_ms", 250,
     "no FET on while the AFE did not hold its configuration, beyond the cycle that noticed"),
    ("event", "afe_init", "the AFE was initialised and verified again"),
)


class AfeReset(Scenario):
    name = "afe-reset"
    doc = ("a -10 degC LFP pack on a 20 A charger that ignores the limits; at 5 min the AFE "
           "resets (registers at their defaults, ADC back on): refused, FETs off, re-initialised")
    hours = 0.25
    obey_limits = False
    adc_on = True
    # From the reset until the firmware has programmed the chip again (CC_CFG back to 0x19):
    # the discharge FET must be off within one cycle, and close only after re-initialisation.
    watch = ("afe_config", lambda sim, cfg: sim.afe_unconfigured, "dsg", None)
    expect = (("fault", "afe_config"), ("reaction",), ("recovered",)) + _SAFE_AFE

    def setup(self, sim, opts):
        sim.pack.set_temperature(-10.0)
        sim.pack.ambient_c = -10.0
        sim.afe_unconfigured = False
        return {}

    def load_ma(self, sim, t_ms):
        # A charger that ignores the BMS; from 8 min the house draws 10 A instead, so the
        # discharge FET's recovery after the re-initialisation shows in the log.
        return 20000 if t_ms < 480000 else -10000

    def step(self, sim, t_ms):
        if t_ms == 300000:
            sim.emu.power_on_reset(adc_on=self.adc_on)
        sim.afe_unconfigured = sim.emu.regs[0x0B] & 0x3F != 0x19


class AfeResetAdcOff(AfeReset):
    name = "afe-reset-adc-off"
    doc = ("as afe-reset, but the ADC stays off after the reset (cell values freeze, the chip's "
           "own OV/UV are off): the frozen values are never used as a fresh reading")
    adc_on = False
    expect = AfeReset.expect


class AfeUpset(Scenario):
    name = "afe-upset"
    doc = ("at 5 min bit 6 of OV_TRIP flips (the hardware OV limit moves up by ~0.4 V): the read-"
           "back check refuses the reading, both FETs open, the AFE is programmed again")
    hours = 0.25
    watch = ("afe_config", lambda sim, cfg: sim.afe_upset, "dsg", None)
    expect = (("fault", "afe_config"), ("reaction",), ("recovered",), ("end_normal",)) + _SAFE_AFE

    def setup(self, sim, opts):
        sim.afe_upset = False
        sim.upset_ov_trip = -1
        return {}

    def load_ma(self, sim, t_ms):
        return -_c(sim, 0.05)

    def step(self, sim, t_ms):
        if t_ms == 300000:
            sim.upset_ov_trip = sim.emu.regs[0x09] ^ 0x40
            sim.emu.upset(0x09, 0x40)
        sim.afe_upset = sim.emu.regs[0x09] == sim.upset_ov_trip


class TapOpen(Scenario):
    name = "tap-open"
    doc = ("charging near the top, the tap of cell 2 reads 5.2 V on 4 of 5 conversions from 5 to "
           "8 min (a loose sense wire): cell_implausible opens both FETs, recovery after it holds")
    hours = 0.25
    obey_limits = False
    watch = ("cell_implausible", lambda sim, cfg: sim.emu.tap_fault is not None, "chg",
             "plaus_delay_ms")
    expect = (("fault", "cell_implausible"), ("reaction",), ("recovered",), ("end_normal",),
              ("max", "cell_above_hw_ov_ms", 0, "no cell above the hardware OV limit"))

    def setup(self, sim, opts):
        for i in range(sim.cells):
            sim.pack.set_cell_soc(i, 0.9)
        return {}

    def load_ma(self, sim, t_ms):
        return _c(sim, 0.1)

    def step(self, sim, t_ms):
        sim.emu.tap_fault = (1, 5200, 4, 5) if 300000 <= t_ms < 480000 else None


ALL = (
    Scenario,
    CellOv,
    CellUv,
    OverCurrentCharge,
    OverCurrentDischarge,
    ShortCircuit,
    ChargeCold,
    OverTempDischarge,
    ThermistorOpen,
    AfeLost,
    AfeXready,
    AfeReset,
    AfeResetAdcOff,
    AfeUpset,
    TapOpen,
    Imbalance,
    ImbalanceHome,
    HighCell,
    ColdMorning,
    ColdEmpty,
    SocDrift,
    AgedPack,
    InverterLost,
)


def get(name):
    for cls in ALL:
        if cls.name == name:
            return cls()
    raise KeyError(name)


def check(scen, summary):
    """The scenario's expectations checked against a run's summary: a list of
    {"text": words, "ok": bool}, in the order written. See the top of this file."""
    out = []
    for c in type(scen).__dict__.get("expect", ()):
        ok, text = _check_one(c, summary)
        out.append({"text": text, "ok": ok})
    return out


_FET_WORDS = {"chg": "charge FET", "dsg": "discharge FET", "cmd_chg": "charge FET command",
              "cmd_dsg": "discharge FET command"}


def _names(v):
    return [n for n in v.split("|") if n]


def _check_one(c, s):
    kind = c[0]
    seen = _names(s.get("faults_seen", "")) + _names(s.get("warnings_seen", ""))
    w = s.get("watch") or {}
    fet = _FET_WORDS.get(w.get("fet", ""), "watched FET")
    if kind == "fault":
        want = _names(c[1])
        hit = [n for n in want if n in seen]
        text = (" or ".join(want) + " was reported") if hit else (
            "none of " + ", ".join(want) + " was reported")
        return bool(hit), _words(c, 2, text, bool(hit))
    if kind == "no_fault":
        if c[1] == "*":
            hit = _names(s.get("faults_seen", ""))
            text = "no protection fault" if not hit else "faults: " + ", ".join(hit)
        else:
            hit = [n for n in _names(c[1]) if n in seen]
            text = ("none of %s was reported" % ", ".join(_names(c[1]))) if not hit else (
                "reported: " + ", ".join(hit))
        return not hit, _words(c, 2, text, not hit)
    if kind == "reaction":
        if not w or w.get("t_cross_ms", -1) < 0:
            return False, "the watched limit was never crossed"
        allowed = w["delay_ms"] + 250
        if w.get("reaction_ms", -1) < 0:
            return False, "the %s never opened after the crossing" % fet
        ok = 0 <= w["reaction_ms"] <= allowed
        return ok, _words(c, 1, "the %s opened %.2f s after the true value crossed the limit "
                          "(allowed %.2f s)" % (fet, w["reaction_ms"] / 1000, allowed / 1000),
                          ok)
    if kind == "recovered":
        ok = w.get("t_recover_ms", -1) > w.get("t_open_ms", -1) >= 0
        text = ("the %s closed again at %.1f s, once the cause was gone"
                % (fet, w["t_recover_ms"] / 1000)) if ok else (
            "the %s did not close again after the cause was gone" % fet)
        return ok, _words(c, 1, text, ok)
    if kind == "end_normal":
        ok = s.get("end_state") == "normal" and not s.get("end_faults")
        text = "the run ended in state normal with no active fault" if ok else (
            "the run ended in state %s%s" % (s.get("end_state"), (
                " with " + s["end_faults"].replace("|", ", ") + " active")
                if s.get("end_faults") else ""))
        return ok, _words(c, 1, text, ok)
    if kind == "event":
        n = s.get("events_by_kind", {}).get(c[1], 0)
        ok = n > 0
        text = ("the event log has %s (%d)" % (c[1], n)) if ok else (
            "the event log has no %s" % c[1])
        return ok, _words(c, 2, text, ok)
    if kind in ("max", "min"):
        key, lim = c[1], c[2]
        if isinstance(lim, str):
            lim = s.get("config", {}).get(lim)
            if not isinstance(lim, (int, float)):
                return False, "%s: no such configuration field" % c[2]
        v = s.get(key)
        if not isinstance(v, (int, float)):
            return False, "%s: not in the summary" % key
        ok = v <= lim if kind == "max" else v >= lim
        nums = "%s = %s (%s %s)" % (key, _num(v), "at most" if kind == "max" else "at least",
                                    _num(lim))
        if len(c) > 3:
            return ok, ("%s: %s" % (c[3], nums)) if ok else ("not so: %s: %s" % (c[3], nums))
        return ok, nums
    return False, "unknown check %r" % (kind,)


def _words(c, i, text, ok):
    if len(c) > i:
        return c[i] if ok else "not so: %s (%s)" % (c[i], text)
    return text


def _num(v):
    if isinstance(v, float) and v != int(v):
        return "%.2f" % v
    return "%d" % v
