"""Truth model of a series battery pack for the virtual board (host only).

    p = Pack("lfp", cells=4, capacity_mah=100000, seed=1, soc=0.5)
    p.step(dt_ms, current_ma_requested, chg_fet, dsg_fet, bal_mask)

Per cell (index 0 = bottom cell): own capacity, SOC, self-discharge, OCV curve
(ocv_data) plus a one-state hysteresis (LFP, +-hyst_mv) that moves toward the charge or
discharge branch with charge throughput, series resistance R0 and one RC pair (R1, tau),
both rising in the cold (Arrhenius factor, 1.0 at 25 C), and a balancing bleed
(V / bleed_ohm with bleed_duty while its bit is set in bal_mask).

Terminal voltage V = OCV + h * hyst_mv + I * R0 + V_rc (+ = charging raises V).

Pack: one lumped thermal mass (heat from I^2 R, the bleed resistors and heater_w; loss
g_w_per_k * (T - ambient) * (fan_factor if fan_on)), ambient constant (``ambient_c``,
settable at any time), a daily cosine (ambient_swing_c, warmest at 15:00) or any function
``ambient_fn(t_ms) -> C``.

FETs (back-to-back pair): charging (+) needs CHG on (it may pass the DSG body diode),
discharging (-) needs DSG on. A blocked direction gives an actual current of 0.

Results after step(): current_ma (actual, int), cell_mv(i) (int terminal mV), v_uv
(list of terminal voltages in uV, read by the AFE emulator), true_soc(i), true_soc()
(usable pack SOC: min-limited), temp_c, ambient_c, t_ms, ah_in/ah_out (throughput),
bleed_mah (per cell, balancing).

Fault injection (plain attributes scenarios may set at any time):
    cell_offset_mv[i]   added to cell i's terminal voltage (measured and OV/UV)
    cell_force_mv[i]    None or a forced terminal voltage for cell i
    cell_leak_ma[i]     extra internal discharge (soft short) of cell i
    ts_fault[j]         None, "open" or "short" for thermistor j (read by the AFE emulator)
    ts_offset_c[j]      thermistor j reads temp_c + this
    thermistor_open / thermistor_short   every thermistor open / shorted
    load_present        what LOAD_PRESENT would see with CHG off
Aged pack: capacity_factor (x capacity), resistance_factor (x R0 and R1); age(...).
Helpers: set_soc(soc, cell=None), set_cell_soc(i, soc), set_temperature(c),
spread(capacity=, soc=, r0=, seed=), capacity(i), ocv_mv(i), pack_mv().
Deterministic for a seed (simlib.profile.Rng).
"""

import math

from simlib import ocv_data
from simlib.profile import Rng

# chemistry: (R0 mOhm*Ah, R1/R0, tau s, hysteresis mV, self-discharge %/month, vmin, vmax)
CHEMISTRY = {
    "lfp": (60.0, 0.6, 30.0, 10.0, 3.0, 2500, 3650),
    "nmc": (100.0, 0.5, 25.0, 0.0, 2.0, 3000, 4200),
    "lto": (40.0, 0.5, 20.0, 0.0, 2.0, 1700, 2800),
}

_T25_INV = 1.0 / 298.15


class Pack:
    def __init__(self, chemistry="lfp", cells=4, capacity_mah=100000, seed=1, soc=0.5,
                 capacity_spread=0.0, soc_spread=0.0, r0_mohm=None, r0_spread=0.0,
                 r1_mohm=None, tau_s=None, hyst_mv=None, hyst_rate=20.0,
                 self_discharge_pct_month=None, sd_spread=0.0,
                 capacity_factor=1.0, resistance_factor=1.0,
                 r_activation_k=3500.0, bleed_ohm=None, bleed_duty=0.7,
                 ambient_c=25.0, ambient_swing_c=0.0, ambient_fn=None, temp_c=None,
                 heat_capacity_j_per_k=None, g_w_per_k=None, fan_factor=3.0):
        chem = chemistry.lower()
        if chem not in CHEMISTRY:
            raise ValueError("unknown chemistry %r" % chemistry)
        r0_ah, r1_ratio, tau_def, hyst_def, sd_def, self.vmin_mv, self.vmax_mv = CHEMISTRY[chem]
        self.chemistry = chem
        self.table = ocv_data.curve(chem)
        self.cells = n = int(cells)
        self.capacity_mah = capacity_mah
        self.seed = seed
        rng = Rng(seed)
        cap_ah = capacity_mah / 1000.0
        if r0_mohm is None:
            r0_mohm = r0_ah / cap_ah
        if r1_mohm is None:
            r1_mohm = r0_mohm * r1_ratio
        self.tau_s = tau_def if tau_s is None else tau_s
        self.hyst_mv = hyst_def if hyst_mv is None else hyst_mv
        self.hyst_rate = hyst_rate
        if self_discharge_pct_month is None:
            self_discharge_pct_month = sd_def
        # bleed: BQ76920-class internal balancing ~50 mA at 3.3 V; scale with capacity
        if bleed_ohm is None:
            bleed_ohm = 66.0 if capacity_mah <= 20000 else 33.0
        self.bleed_ohm = bleed_ohm
        self.bleed_duty = bleed_duty
        self.r_activation_k = r_activation_k
        self.capacity_factor = capacity_factor
        self.resistance_factor = resistance_factor

        self.cap_mah = []
        self.soc = []
        self.r0 = []
        self.r1 = []
        self.sd_ma = []
        for _ in range(n):
            c = capacity_mah * (1.0 + rng.uniform(-capacity_spread, capacity_spread))
            self.cap_mah.append(c)
            s = soc + rng.uniform(-soc_spread, soc_spread)
            self.soc.append(min(1.0, max(0.0, s)))
            r = r0_mohm * (1.0 + rng.uniform(-r0_spread, r0_spread))
            self.r0.append(r)
            self.r1.append(r1_mohm * r / r0_mohm)
            sd = self_discharge_pct_month * (1.0 + rng.uniform(-sd_spread, sd_spread))
            self.sd_ma.append(c * sd / 100.0 / 720.0)
        self._k = [0.0] * n
        self._update_k()
        self.hyst = [0.0] * n
        self.v_rc = [0.0] * n
        self.v_uv = [0] * n
        self.ocv = [0.0] * n
        self.bleed_mah = [0.0] * n
        self.bal_mask = 0

        self.cell_offset_mv = [0] * n
        self.cell_force_mv = [None] * n
        self.cell_leak_ma = [0.0] * n
        self.ts_fault = [None, None, None]
        self.ts_offset_c = [0.0, 0.0, 0.0]
        self.thermistor_open = False  # all thermistors open (overrides ts_fault)
        self.thermistor_short = False  # all thermistors shorted
        self.load_present = False

        self.ambient_base_c = ambient_c
        self.ambient_swing_c = ambient_swing_c
        self.ambient_fn = ambient_fn
        self.ambient_c = ambient_c
        self.temp_c = ambient_c if temp_c is None else temp_c
        if heat_capacity_j_per_k is None:
            heat_capacity_j_per_k = n * (5.0 + 20.0 * cap_ah)  # ~20 g/Ah, 1 J/(g K)
        if g_w_per_k is None:
            g_w_per_k = n * (0.02 + 0.003 * cap_ah)
        self.heat_capacity_j_per_k = heat_capacity_j_per_k
        self.g_w_per_k = g_w_per_k
        self.fan_factor = fan_factor
        self.fan_on = False
        self.heater_w = 0.0
        self.power_w = 0.0  # last step's heat (I^2R + bleed + heater)

        self.t_ms = 0
        self.current_ma = 0
        self.requested_ma = 0
        self.ah_in = 0.0
        self.ah_out = 0.0
        self._rfac = 1.0
        self._rfac_t = None
        self._tau_dt = -1
        self._alpha = 0.0
        self._refresh(0)

    # -- configuration helpers -------------------------------------------------
    def _update_k(self):
        cf = self.capacity_factor
        for i in range(self.cells):
            self._k[i] = 1.0 / (self.cap_mah[i] * cf * 3600000.0)

    def set_aging(self, capacity_factor=None, resistance_factor=None):
        """Age the pack in place (SOC of every cell is kept)."""
        if capacity_factor is not None:
            self.capacity_factor = capacity_factor
            self._update_k()
        if resistance_factor is not None:
            self.resistance_factor = resistance_factor
            self._rfac_t = None

    def set_soc(self, soc, cell=None):
        """Set the true SOC of one cell or all; resets hysteresis and RC state."""
        for i in range(self.cells) if cell is None else (cell,):
            self.soc[i] = soc
            self.hyst[i] = 0.0
            self.v_rc[i] = 0.0
        self._refresh(0)

    def set_cell_soc(self, i, soc):
        self.set_soc(soc, i)

    def set_temperature(self, temp_c):
        """Set the pack temperature (the ambient is left alone)."""
        self.temp_c = temp_c
        self._rfac_t = None
        self._refresh(0)

    def age(self, capacity_factor=None, resistance_factor=None):
        self.set_aging(capacity_factor, resistance_factor)

    def spread(self, capacity=0.0, soc=0.0, r0=0.0, seed=None):
        """Apply a uniform +-relative capacity, +-absolute SOC and +-relative R0 spread."""
        rng = Rng(self.seed * 17 + 3 if seed is None else seed * 17 + 3)
        for i in range(self.cells):
            self.cap_mah[i] *= 1.0 + rng.uniform(-capacity, capacity)
            s = self.soc[i] + rng.uniform(-soc, soc)
            self.soc[i] = min(1.0, max(0.0, s))
            f = 1.0 + rng.uniform(-r0, r0)
            self.r0[i] *= f
            self.r1[i] *= f
        self._update_k()
        self._refresh(0)

    def capacity(self, i):
        """Actual capacity of cell i in mAh (aging included)."""
        return self.cap_mah[i] * self.capacity_factor

    # -- results ------------------------------------------------------------------
    def cell_mv(self, i):
        return (self.v_uv[i] + 500) // 1000

    def pack_mv(self):
        return (sum(self.v_uv) + 500) // 1000

    def true_soc(self, i=None):
        """Cell i's SOC, or (no argument) the usable pack SOC, limited by the weakest cell."""
        if i is not None:
            return self.soc[i]
        cf = self.capacity_factor
        dis = None
        chg = None
        for k in range(self.cells):
            c = self.cap_mah[k] * cf
            s = self.soc[k]
            d = c * (s if s > 0.0 else 0.0)
            q = c * (1.0 - s if s < 1.0 else 0.0)
            if dis is None or d < dis:
                dis = d
            if chg is None or q < chg:
                chg = q
        tot = dis + chg
        return dis / tot if tot > 0 else 0.0

    def ocv_mv(self, i):
        return self.ocv[i]

    # -- time step ------------------------------------------------------------------
    def _rfactor(self):
        t = self.temp_c
        if self._rfac_t is None or abs(t - self._rfac_t) > 0.05:
            self._rfac = self.resistance_factor * math.exp(
                self.r_activation_k * (1.0 / (t + 273.15) - _T25_INV))
            self._rfac_t = t
        return self._rfac

    def step(self, dt_ms, current_ma_requested, chg_fet, dsg_fet, bal_mask=0):
        """Advance dt_ms with the requested current (+ = charge) and FET/balance state."""
        i_req = int(current_ma_requested)
        self.requested_ma = i_req
        if (i_req > 0 and not chg_fet) or (i_req < 0 and not dsg_fet):
            i_act = 0
        else:
            i_act = i_req
        self.current_ma = i_act
        self.bal_mask = bal_mask
        self.t_ms += dt_ms
        if i_act > 0:
            self.ah_in += i_act * dt_ms / 3.6e9
        elif i_act < 0:
            self.ah_out -= i_act * dt_ms / 3.6e9
        self._refresh(dt_ms)

    def _refresh(self, dt_ms):
        i_act = self.current_ma
        rf = self._rfactor()
        if dt_ms != self._tau_dt:
            self._tau_dt = dt_ms
            self._alpha = 1.0 - math.exp(-dt_ms / (1000.0 * self.tau_s))
        alpha = self._alpha
        table = self.table
        soc = self.soc
        hyst = self.hyst
        v_rc = self.v_rc
        k_all = self._k
        hmv = self.hyst_mv
        hrate = self.hyst_rate
        bal = self.bal_mask
        duty = self.bleed_duty
        inv_bleed = 1.0 / self.bleed_ohm
        r0 = self.r0
        r1 = self.r1
        heat = 0.0
        ir0 = i_act * rf * 0.001  # mA * mOhm * 0.001 = mV
        ir1 = i_act * rf * 0.001
        for i in range(self.cells):
            ic = i_act - self.sd_ma[i] - self.cell_leak_ma[i]
            v_prev = self.v_uv[i] * 1e-6  # V
            if bal & (1 << i) and v_prev > 0.0:
                ib = v_prev * inv_bleed * duty * 1000.0  # mA
                ic -= ib
                heat += v_prev * ib * 0.001
                self.bleed_mah[i] += ib * dt_ms / 3600000.0
            k = k_all[i]
            s = soc[i] + ic * dt_ms * k
            if s > 1.2:
                s = 1.2
            elif s < -0.2:
                s = -0.2
            soc[i] = s
            x = s * 40.0
            j = int(x)
            if j < 0:
                j = 0
            elif j > 39:
                j = 39
            a = table[j]
            ocv = a + (table[j + 1] - a) * (x - j)
            if hmv:
                if i_act:
                    g = hrate * (i_act if i_act > 0 else -i_act) * dt_ms * k
                    if g > 1.0:
                        g = 1.0
                    h = hyst[i]
                    hyst[i] = h + ((1.0 if i_act > 0 else -1.0) - h) * g
                ocv += hyst[i] * hmv
            self.ocv[i] = ocv
            vr = v_rc[i]
            vr += (ir1 * r1[i] - vr) * alpha
            v_rc[i] = vr
            v = ocv + ir0 * r0[i] + vr + self.cell_offset_mv[i]
            f = self.cell_force_mv[i]
            if f is not None:
                v = f
            if v < 0.0:
                v = 0.0
            self.v_uv[i] = int(v * 1000.0)
            heat += (ir0 * r0[i] + vr) * i_act * 1e-6  # mV * mA -> W
        # thermal
        fn = self.ambient_fn
        if fn is not None:
            amb = fn(self.t_ms)
            self.ambient_c = amb
        elif self.ambient_swing_c:
            amb = self.ambient_base_c + self.ambient_swing_c * math.cos(
                (self.t_ms / 3600000.0 - 15.0) * 0.2617993877991494)
            self.ambient_c = amb
        else:
            amb = self.ambient_c  # constant; scenarios may set pack.ambient_c directly
        if heat < 0.0:
            heat = 0.0
        heat += self.heater_w
        self.power_w = heat
        if dt_ms:
            g = self.g_w_per_k * (self.fan_factor if self.fan_on else 1.0)
            self.temp_c += (heat - g * (self.temp_c - amb)) * dt_ms * 0.001 \
                / self.heat_capacity_j_per_k
