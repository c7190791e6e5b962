"""simlib: the virtual board (host only; MicroPython unix port and CPython).

    from simlib import Simulator
    sim = Simulator(chemistry="lfp", cells=4, capacity_mah=100000, seed=1)
    hw = board.open(sim)            # boards/sim/board.py: i2c, clock, pins, wdt_factory
    sim.request_ma = -20000         # requested pack current, + = charging
    sim.advance(250)                # steps pack + AFE in <= 250 ms steps on a 250 ms grid

Simulator(chemistry="lfp", cells=4, capacity_mah=100000, seed=1, variant=None,
          address=0x08, crc=True, shunt_uohm=1000, n_temps=None, gain_uv=380,
          offset_mv=30, cc_sign=1, adc_noise_mv=0.0, heater_w=50.0, profile=None,
          pack_kwargs=None, emu_kwargs=None, **pack_options)

    pack_options go to Pack (soc, capacity_spread, soc_spread, r0_mohm, ambient_c,
    ambient_swing_c, capacity_factor, resistance_factor, ...); profile="home" builds a
    profile.HomeDay(capacity_mah, seed) and sets ``load_fn`` to it.

Attributes: chemistry, cells, capacity_mah, seed, clock (SimClock), pack (Pack), emu
(BQ769x0Emu), i2c (I2C with the AFE at its address), profile (HomeDay for this
capacity/seed, always built), canbus/inverter (None until their emulators exist),
heater_pin, fan_pin (Pin; heater on -> pack.heater_w = heater_w, fan on -> pack.fan_on),
request_ma (int), load_fn (None or f(t_ms) -> mA; when set it overrides request_ma every
step), wdt (the last WDT made by wdt_factory, or None), wdt_resets
(count of expiries seen by advance), reset_cause (str), t_ms (property).

Methods: true_cell_min_mv(), true_cell_max_mv() (truth, terminal), inverter_request(want_ma,
bms, obey_limits, t_ms) (clip to bms.limits ccl/dcl), wdt_factory(timeout, id=0).

advance(ms): per step dt = time to the next 250 ms boundary (<= 250): pack.step(dt,
current, CHG_ON, DSG_ON from the AFE registers, CB bits mapped to cells), then
emu.tick(dt), then clock.advance(dt). A shipped AFE leaves both FETs off.
"""

from simlib.afe_emu import BQ769x0Emu, default_variant
from simlib.machine_api import I2C, WDT, Pin, SimClock
from simlib.pack import Pack
from simlib.profile import HomeDay

__all__ = ["Simulator", "Pack", "BQ769x0Emu", "HomeDay", "I2C", "Pin", "WDT", "SimClock"]


class Simulator:
    def __init__(self, chemistry="lfp", cells=4, capacity_mah=100000, seed=1, variant=None,
                 address=0x08, crc=True, shunt_uohm=1000, n_temps=None, gain_uv=380,
                 offset_mv=30, cc_sign=1, adc_noise_mv=0.0, heater_w=50.0, profile=None,
                 pack_kwargs=None, emu_kwargs=None, can=False, **pack_options):
        self.seed = seed
        self.chemistry = chemistry
        self.cells = cells
        self.capacity_mah = capacity_mah
        self.clock = SimClock()
        kw = dict(pack_options)
        if pack_kwargs:
            kw.update(pack_kwargs)
        self.pack = Pack(chemistry, cells, capacity_mah, seed, **kw)
        if variant is None:
            variant = default_variant(cells)
        ekw = dict(variant=variant, address=address, crc=crc, gain_uv=gain_uv,
                   offset_mv=offset_mv, shunt_uohm=shunt_uohm, n_temps=n_temps,
                   cc_sign=cc_sign, seed=seed, noise_mv=adc_noise_mv)
        if emu_kwargs:
            ekw.update(emu_kwargs)
        self.emu = BQ769x0Emu(self.pack, **ekw)
        self.i2c = I2C()
        self.i2c.add(self.emu)
        self.heater_pin = Pin("heater", Pin.OUT, 0, clock=self.clock)
        self.fan_pin = Pin("fan", Pin.OUT, 0, clock=self.clock)
        self.heater_w = heater_w
        self.request_ma = 0
        self.profile = HomeDay(capacity_mah, seed)
        self.load_fn = None
        if profile == "home":
            self.load_fn = self.profile.current_ma
        elif profile is not None:
            self.load_fn = profile
        self.canbus = None  # CAN bus (mcp2515_emu.VirtualBus) when can=True
        self.inverter = None  # simulated inverter on that bus
        self.spi = None  # machine.SPI-like object of the MCP2515 emulator
        self.can_cs = None
        self.uart = None  # machine.UART-like object for RS485 (tools/sim.py --rs485)
        self.rs485_de = None
        if can:
            from simlib.inverter import Inverter
            from simlib.mcp2515_emu import MCP2515Emu, VirtualBus

            self.canbus = VirtualBus(500000)
            self.mcp = MCP2515Emu(self.canbus)
            self.spi = self.mcp.spi
            self.can_cs = self.mcp.cs
            self.inverter = Inverter(self.canbus)
        self.xready_pending = False  # scenario bookkeeping
        self.fet_history = []  # (t_ms, chg, dsg) at every change of the AFE's FET bits
        self._fets = (0, 0)
        self.wdt = None
        self.wdt_resets = 0
        self.reset_cause = 1  # machine.PWRON_RESET

    @property
    def t_ms(self):
        return self.clock.t_ms

    def true_cell_max_mv(self):
        v = self.pack.v_uv
        return (max(v) + 500) // 1000

    def true_cell_min_mv(self):
        v = self.pack.v_uv
        return (min(v) + 500) // 1000

    def inverter_request(self, want_ma, bms=None, obey_limits=True, t_ms=0):
        """Current the inverter actually asks for: ``inverter.request(...)`` when an
        inverter emulator is attached, else want_ma clipped to bms.limits.ccl_ma/dcl_ma
        when obey_limits (and the bms has limits), else want_ma unchanged."""
        inv = self.inverter
        if inv is not None and hasattr(inv, "request"):
            return inv.request(want_ma, bms, obey_limits, t_ms)
        if not obey_limits or bms is None:
            return want_ma
        lim = getattr(bms, "limits", None)
        if lim is None:
            return want_ma
        if want_ma > 0:
            # A charger in constant-voltage mode: the current falls to zero as the pack
            # voltage reaches the charge voltage limit (about 1 A per 50 mV of headroom).
            cv_ma = (lim.cvl_mv - self.pack.pack_mv()) * 20
            if cv_ma < 0:
                cv_ma = 0
            return min(want_ma, lim.ccl_ma, cv_ma)
        if want_ma < -lim.dcl_ma:
            return -lim.dcl_ma
        return want_ma

    def fet_on(self, which):
        """True when the AFE's CHG_ON ("chg") or DSG_ON ("dsg") bit is set."""
        ctrl2 = self.emu.regs[0x05]
        return bool(ctrl2 & (0x01 if which == "chg" else 0x02))

    def wdt_factory(self, timeout=5000, id=0):
        self.wdt = WDT(id, timeout, clock=self.clock)
        return self.wdt

    def advance(self, ms):
        clock = self.clock
        pack = self.pack
        emu = self.emu
        regs = emu.regs
        end = clock.t_ms + ms
        while clock.t_ms < end:
            t = clock.t_ms
            dt = 250 - t % 250
            if t + dt > end:
                dt = end - t
            fn = self.load_fn
            if fn is not None:
                self.request_ma = fn(t)
            if emu.shipped:
                chg = dsg = 0
            else:
                c2 = regs[5]
                chg = c2 & 1
                dsg = c2 & 2
            pack.heater_w = self.heater_w if self.heater_pin.state else 0.0
            pack.fan_on = bool(self.fan_pin.state)
            if (chg, dsg) != self._fets:
                self._fets = (chg, dsg)
                self.fet_history.append((t, 1 if chg else 0, 1 if dsg else 0))
                if len(self.fet_history) > 200:
                    self.fet_history.pop(0)
            pack.step(dt, self.request_ma, chg, dsg, emu.bal_cells)
            emu.tick(dt)
            clock.t_ms = t + dt
            if self.canbus is not None:
                self.canbus.set_time(clock.t_ms)
        w = self.wdt
        if w is not None and w.expired():
            self.wdt_resets += 1
            self.reset_cause = 3  # machine.WDT_RESET
            w.last_feed_ms = clock.t_ms
