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


class Scenario:
    name = "normal"
    doc = "a home day: PV charge by day, house loads with spikes at night"
    hours = 24.0
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
    watch = ("temp_sensor", lambda sim, cfg: sim.pack.thermistor_open, "chg", "temp_delay_ms")

    def step(self, sim, t_ms):
        sim.pack.thermistor_open = 600000 <= t_ms < 1200000


class AfeLost(Scenario):
    name = "afe-lost"
    doc = "I2C to the AFE fails for 30 s: FETs commanded off, limits to 0 A, then recovery"
    hours = 0.5
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

    def setup(self, sim, opts):
        sim.pack.set_cell_soc(sim.cells - 1, min(1.0, sim.pack.true_soc() + 0.03))
        return {}


class ColdMorning(Scenario):
    name = "cold-morning"
    doc = "06:00 at -5 degC: the heater warms the pack before PV charging is allowed (from 07:00)"
    hours = 6.0

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
    expect_recovery = True

    def step(self, sim, t_ms):
        if sim.inverter is not None:
            sim.inverter.on = not (600000 <= t_ms < 720000)


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


class AfeUpset(Scenario):
    name = "afe-upset"
    doc = ("at 5 min bit 6 of OV_TRIP flips (the hardware OV limit moves up by ~0.4 V): the read-"
           "back check refuses the reading, both FETs open, the AFE is programmed again")
    hours = 0.25
    watch = ("afe_config", lambda sim, cfg: sim.afe_upset, "dsg", None)

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
