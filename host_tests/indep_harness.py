# indep_harness: the true world, the fault injector and the judges that run the real
# firmware (bms.app.Bms through its public API) against indep_bq76940's chip model and judge
# its safety promises in wall-clock time from the TRUE event. Helper module (no test_ prefix),
# runs under CPython and the MicroPython unix port.
#
# Written from ../shared/reference/bq769x0.md and README.md only (see indep_bq76940.py).
#
# One step = 250 ms of simulated time, in this order:
#   1. the world moves (true cells, temperatures, requested current); the true current is the
#      request gated by the FETs as the chip held them at the end of the previous step
#      (charge needs CHG_ON, discharge needs DSG_ON; the other FET's body diode conducts);
#   2. fault injections of this step, then the chip's 250 ms tick (conversions see the true
#      values of this step: the best phase for the firmware, so the one-cycle margin of the
#      time bounds below is entirely the firmware's own);
#   3. judge "start of cycle": configuration registers vs. what the configuration demands;
#   4. bms.fast_cycle(now); every 4th step bms.slow_cycle(now);
#   5. judge "end of cycle": the FET bits in the chip model against the true values.
#
# Invariants (margins: VOLT_MARGIN_MV, TEMP_MARGIN_C, current_margin_ma; D = the fault's
# configured delay, one cycle = 250 ms):
#   I1  CHG_ON at the end of a step => no true cell above cell_ov_mv for >= cell_ov_delay_ms +
#       250 ms, no true temperature outside chg_temp_min..max for >= temp_delay_ms + 250 ms,
#       unless the pack is discharging (body-diode case: true current < -body_diode_ma/2).
#   I2  DSG_ON likewise with cell_uv_mv / cell_uv_delay_ms, dsg_temp_min..max, body diode while
#       charging (true current > body_diode_ma/2).
#   I3  any FET on => no true cell below cell_deep_uv_mv for >= cell_deep_uv_delay_ms + 250 ms.
#   I4  a FET bit set from 0 by the host in a cycle (also one cleared again in the same cycle)
#       => in that cycle every cell pair, BAT and CC were read cleanly, from this period's
#       conversion (the firmware can tell by CC_READY: the model's stall freezes both
#       converters), sound (no tap fault, not the zeros right after a wake-up); every
#       configured thermistor's last read was clean, a thermistor-mode conversion of a healthy
#       sensor, at most TS_FRESH_MS old; after a wrong control bit, the results that bit
#       affects (ADC_EN: cells, BAT, TS; TEMP_SEL: TS; CC_EN: CC) come from conversions after
#       the configuration was whole again; the control bits right and every
#       protection/configuration register consistent with the configuration (an upset of a
#       protection register younger than CONFIG_CHECK_MS excepted, unless a control bit was
#       wrong too: then the re-initialisation must be complete); and no I1/I2/I3 condition of
#       that direction past its bound.
#   I5  a wrong control bit (ADC_EN, TEMP_SEL, CC_EN; a reset clears CC_EN and TEMP_SEL) at the
#       start of a cycle => both FET bits off at the end of that cycle; a wrong protection or
#       configuration register (PROTECT1-3, OV_TRIP, UV_TRIP, CC_CFG, DELAY_DIS) => both off at
#       the end of the first cycle >= CONFIG_CHECK_MS after it appeared.
#   I6  no fault clears (faults | latched) while its condition held on the true values for the
#       whole release window: cell_ov (true max cell >= cell_ov_release_mv), cell_uv, the four
#       temperature faults (window + 2 s thermistor conversion period) -- judged only when no
#       tap fault (cells) / thermistor fault (temperatures) was present within the window, so
#       the quantity was observable --; cell_implausible and temp_sensor (a faulted reading
#       was delivered less than release_delay_ms - 250 ms ago).
#   I7  nothing raises out of fast_cycle / slow_cycle.
#   I8  the host never breaks a datasheet rule on the bus (reserved bits written 1, adjacent
#       CB bits of one group, CB on an unused input, a CRC frame without its CRC, a write to a
#       read-only register, ship mode entered).
#   I9  the host never writes CHG_ON=1 while SYS_STAT reports OV, XREADY or OVRD_ALERT, nor
#       DSG_ON=1 while it reports UV, OCD, SCD, XREADY or OVRD_ALERT, when its last read of
#       SYS_STAT showed that bit and it has not cleared it since (REF 5.5: clear the bit first,
#       then write the FET). The chip's comparators decide at a random point of the host's
#       cycle (after 0-7 bus transactions), so a trip can land between a read and a write; a
#       trip the host has not read yet is a race, not judged.
# Steps in which the bus was dead for the whole cycle or the last write to SYS_CTRL2 was
# NACKed are not judged for I1-I3/I5 (the firmware could not reach the FETs); I5 then carries
# over to the next cycle.
import gc
import os
import sys

import indep_bq76940 as afe

IS_MPY = sys.implementation.name == "micropython"

VOLT_MARGIN_MV = 2  # ADC LSB ~0.38 mV (GAIN known exactly) + the firmware's integer rounding
TEMP_MARGIN_C = 0.5  # TS LSB <= 0.02 degC here + 0.1 degC resolution + thermistor curve fit
CONFIG_CHECK_MS = 5000  # "at least every few seconds every protection register is read back"
TS_FRESH_MS = 2500  # thermistors convert every 2 s (+3.5 %) [REF 7.1]; README's 2.5 s budget
STEP_MS = 250


class McuReset(BaseException):
    """hw.reset() or the watchdog: the MCU reboots (the chip keeps running)."""


class Rng:
    """xorshift32: the same sequence under CPython and MicroPython (seeds reproduce)."""

    def __init__(self, seed):
        s = (seed * 2654435761 + 0x9E3779B9) & 0xFFFFFFFF
        self.s = s or 1
        for _ in range(4):
            self.next()

    def next(self):
        x = self.s
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.s = x
        return x

    def below(self, n):
        return self.next() % n

    def range(self, lo, hi):  # inclusive
        return lo + self.next() % (hi - lo + 1)

    def chance(self, one_in):
        return one_in > 0 and self.next() % one_in == 0

    def uniform(self, lo, hi):
        return lo + (hi - lo) * (self.next() / 4294967296.0)


class Board:
    """A board module look-alike: the constants of boards/rp2_pico/board.py."""

    NAME = "indep"
    MPY_ARCH = "armv6m"
    CHEMISTRY = "lfp"
    CAPACITY_MAH = 100000
    AFE_VARIANT = "bq76940"
    AFE_ADDRESS = 0x08
    AFE_CRC = True
    CELLS = 15
    SHUNT_UOHM = 500
    N_TEMPS = 3
    THERMISTOR_BETA = 3435
    WDT_TIMEOUT_MS = 5000
    DATA_DIR = "/data"
    CAN_CRYSTAL_HZ = 8000000
    CAN_BITRATE = 500000
    MODBUS_BAUD = 9600
    HEATER_PIN = None
    FAN_PIN = None
    LED_PIN = None

    def __init__(self, **kw):
        for k in kw:
            setattr(self, k, kw[k])


class Clock:
    def __init__(self):
        self.t = 0

    def now_ms(self):
        return self.t


class Wdt:
    def __init__(self, clock, timeout_ms):
        self.clock = clock
        self.timeout_ms = timeout_ms
        self.last = clock.t

    def feed(self):
        self.last = self.clock.t


_dir_counter = [0]


def make_data_dir(tag):
    """An empty directory for the firmware's persistent files."""
    if not IS_MPY:
        import tempfile

        return tempfile.mkdtemp(prefix="indep_%s_" % tag)
    _dir_counter[0] += 1
    for d in ("build", "build/indep"):
        try:
            os.mkdir(d)
        except OSError:
            pass
    path = "build/indep/%s_%d_%d" % (tag, _dir_counter[0], os.getpid() if hasattr(
        os, "getpid") else 0)
    remove_tree(path)
    os.mkdir(path)
    return path


def remove_tree(path):
    try:
        names = os.listdir(path)
    except OSError:
        return
    for n in names:
        p = path + "/" + n
        try:
            os.remove(p)
        except OSError:
            remove_tree(p)
    try:
        os.rmdir(path)
    except OSError:
        pass


# ------------------------------------------------------------------------------------
# expected register contents (REF 2.5, 4, 5) for a configuration


def _near(applied, target, step, lo_val, hi_val, code, lo_code, hi_code):
    """applied threshold within one step of target, or clamped at the end of the range."""
    if abs(applied - target) <= step + 0.5:
        return True
    if target < lo_val and code == lo_code:
        return True
    if target > hi_val and code == hi_code:
        return True
    return False


def config_mismatch(model, cfg, n_temps, shunt_uohm):
    """(fast, slow): lists of what is wrong in the chip against what cfg demands.
    fast = the control bits every reading depends on; slow = protection/config registers."""
    r = model.regs
    fast = []
    slow = []
    if model.shipped:
        fast.append("in SHIP")
        return fast, slow
    c1, c2 = r[afe.SYS_CTRL1], r[afe.SYS_CTRL2]
    if not c1 & afe.C1_ADC_EN:
        fast.append("ADC_EN=0")
    if n_temps and not c1 & afe.C1_TEMP_SEL:
        fast.append("TEMP_SEL=0")
    if not c2 & afe.C2_CC_EN:
        fast.append("CC_EN=0")
    if c2 & afe.C2_DELAY_DIS:
        slow.append("DELAY_DIS=1")
    if r[afe.CC_CFG] != 0x19:
        slow.append("CC_CFG=%02X" % r[afe.CC_CFG])
    g, off = model.gain_uv, model.offset_mv
    step = 16 * g / 1000.0
    ov = r[afe.OV_TRIP]
    if not _near(afe.ov_trip_mv(ov, g, off), cfg.hw_cell_ov_mv, step + 1,
                 afe.ov_trip_mv(0, g, off), afe.ov_trip_mv(255, g, off), ov, 0, 255):
        slow.append("OV_TRIP=%02X (%d mV, want %d)" % (ov, afe.ov_trip_mv(ov, g, off),
                                                        cfg.hw_cell_ov_mv))
    uv = r[afe.UV_TRIP]
    if not _near(afe.uv_trip_mv(uv, g, off), cfg.hw_cell_uv_mv, step + 1,
                 afe.uv_trip_mv(0, g, off), afe.uv_trip_mv(255, g, off), uv, 0, 255):
        slow.append("UV_TRIP=%02X (%d mV, want %d)" % (uv, afe.uv_trip_mv(uv, g, off),
                                                        cfg.hw_cell_uv_mv))
    p1, p2, p3 = r[afe.PROTECT1], r[afe.PROTECT2], r[afe.PROTECT3]
    if cfg.hw_cell_ov_delay_ms in afe.OV_DELAY_MS and \
            afe.OV_DELAY_MS[(p3 >> 4) & 3] != cfg.hw_cell_ov_delay_ms:
        slow.append("PROTECT3 OV delay %d ms" % afe.OV_DELAY_MS[(p3 >> 4) & 3])
    if cfg.hw_cell_uv_delay_ms in afe.UV_DELAY_MS and \
            afe.UV_DELAY_MS[(p3 >> 6) & 3] != cfg.hw_cell_uv_delay_ms:
        slow.append("PROTECT3 UV delay %d ms" % afe.UV_DELAY_MS[(p3 >> 6) & 3])
    if p3 & 0x0F:
        slow.append("PROTECT3 debug bits")
    rs = (p1 >> 7) & 1
    ocd_t = cfg.hw_ocd_ma * shunt_uohm / 1e6  # mV across the shunt
    tab = afe.OCD_MV[rs]
    if not _near(tab[p2 & 15], ocd_t, 5.56 if rs else 2.78, tab[0], tab[15], p2 & 15, 0, 15):
        slow.append("PROTECT2 OCD %d mV (want %.1f)" % (tab[p2 & 15], ocd_t))
    if cfg.hw_ocd_delay_ms in afe.OCD_DELAY_MS and \
            afe.OCD_DELAY_MS[(p2 >> 4) & 7] != cfg.hw_ocd_delay_ms:
        slow.append("PROTECT2 OCD delay %d ms" % afe.OCD_DELAY_MS[(p2 >> 4) & 7])
    scd_t = cfg.hw_scd_ma * shunt_uohm / 1e6
    tab = afe.SCD_MV[rs]
    if not _near(tab[p1 & 7], scd_t, 22.2 if rs else 11.1, tab[0], tab[7], p1 & 7, 0, 7):
        slow.append("PROTECT1 SCD %d mV (want %.1f)" % (tab[p1 & 7], scd_t))
    if cfg.hw_scd_delay_us in afe.SCD_DELAY_US and \
            afe.SCD_DELAY_US[(p1 >> 3) & 3] != cfg.hw_scd_delay_us:
        slow.append("PROTECT1 SCD delay %d us" % afe.SCD_DELAY_US[(p1 >> 3) & 3])
    return fast, slow


# ------------------------------------------------------------------------------------
# the true world


class World:
    """True cell voltages (mV), thermistor temperatures (degC) and the current the outside
    world asks for (mA, + = charge). Values move at bounded rates; excursions beyond the
    protection limits are held for random durations."""

    def __init__(self, rng, cfg, cells, n_ts, script=None):
        self.rng = rng
        self.cells = cells
        self.n_ts = n_ts
        self.cfg = cfg
        self.level = (cfg.cell_uv_release_mv + cfg.cell_ov_release_mv) // 2
        self.level_goal = self.level
        self.level_end = 0
        self.dev = [rng.range(-15, 15) for _ in range(cells)]
        self.mv = [self.level + d for d in self.dev]
        self.amb = rng.uniform(10.0, 30.0)
        self.amb_goal = self.amb
        self.amb_end = 0
        self.temps = [self.amb] * n_ts
        self.tdev = [rng.uniform(-1.0, 1.0) for _ in range(n_ts)]
        self.die = 35.0
        self.i_req = 0
        self.v_exc = None  # (cells, target_mv, rate_mv, end_ms)
        self.t_exc = None  # (sensors, target_c, rate_c, end_ms)
        self.i_end = 0
        self.script = script  # callable(world, t) replacing the random walk, or None

    def step(self, t):
        if self.script is not None:
            self.script(self, t)
            return
        rng = self.rng
        cfg = self.cfg
        # common level: drifts (<= 2 mV per step) towards a goal inside the normal band; the
        # goal is often near the top, where the balancer works
        lo, hi = cfg.cell_uv_release_mv + 60, cfg.cell_ov_release_mv - 20
        if t >= self.level_end:
            self.level_goal = rng.range(hi - 60, hi) if rng.below(2) else rng.range(lo, hi)
            self.level_end = t + rng.range(40, 800) * STEP_MS
        g = self.level_goal
        self.level += rng.range(0, 2) * (1 if g > self.level else -1 if g < self.level else 0)
        self.level = max(lo, min(hi, self.level))
        if self.v_exc is not None and t >= self.v_exc[3]:
            self.v_exc = None
        if self.v_exc is None and rng.chance(90):
            k = rng.below(10)
            if k < 4:
                target = cfg.cell_ov_mv + rng.range(-12, 160)
            elif k < 8:
                target = cfg.cell_uv_mv + rng.range(-220, 12)
            else:
                target = cfg.cell_deep_uv_mv - rng.range(5, 250)
            n = 1 + rng.below(3) if rng.below(3) == 0 else 1
            first = rng.below(self.cells)
            cells = [(first + j * 4) % self.cells for j in range(n)]
            hold = rng.range(1, 64) * STEP_MS if k < 8 else rng.range(4, 72) * STEP_MS
            self.v_exc = (cells, target, rng.range(10, 150), t + hold + 2000)
        for i in range(self.cells):
            goal = self.level + self.dev[i]
            rate = 6
            if self.v_exc is not None and i in self.v_exc[0]:
                goal = self.v_exc[1]
                rate = self.v_exc[2]
            v = self.mv[i]
            if v < goal:
                v = min(goal, v + rate)
            elif v > goal:
                v = max(goal, v - rate)
            self.mv[i] = max(1500, min(4300, v))
        # temperatures: the ambient wanders (<= 0.03 degC per step) inside the charge window,
        # often close to one of its edges; excursions leave the windows at <= 0.4 degC/step
        if t >= self.amb_end:
            lo, hi = cfg.chg_temp_min_dc / 10 + 2.0, cfg.chg_temp_max_dc / 10 - 2.0
            k = rng.below(3)
            self.amb_goal = (rng.uniform(lo, lo + 4.0) if k == 0 else
                             rng.uniform(hi - 4.0, hi) if k == 1 else rng.uniform(lo, hi))
            self.amb_end = t + rng.range(200, 2000) * STEP_MS
        d = self.amb_goal - self.amb
        self.amb += max(-0.03, min(0.03, d))
        if self.t_exc is not None and t >= self.t_exc[3]:
            self.t_exc = None
        if self.t_exc is None and rng.chance(200):
            k = rng.below(8)
            if k < 3:
                target = cfg.chg_temp_min_dc / 10 - rng.uniform(-1.0, 8.0)
            elif k < 5:
                target = cfg.chg_temp_max_dc / 10 + rng.uniform(-1.0, 8.0)
            elif k < 6:
                target = cfg.dsg_temp_min_dc / 10 - rng.uniform(-1.0, 4.0)
            else:
                target = cfg.dsg_temp_max_dc / 10 + rng.uniform(-1.0, 6.0)
            sensors = [rng.below(self.n_ts)] if rng.below(2) else list(range(self.n_ts))
            rate = rng.uniform(0.1, 0.4)
            hold = abs(target - self.amb) / rate * STEP_MS + rng.range(4, 100) * STEP_MS
            self.t_exc = (sensors, target, rate, t + int(hold))
        for i in range(self.n_ts):
            goal = self.amb + self.tdev[i]
            rate = 0.4
            if self.t_exc is not None and i in self.t_exc[0]:
                goal = self.t_exc[1]
                rate = self.t_exc[2]
            v = self.temps[i]
            if v < goal:
                v = min(goal, v + rate)
            elif v > goal:
                v = max(goal, v - rate)
            self.temps[i] = v
        self.die = max(25.0, min(50.0, self.die + rng.uniform(-0.05, 0.05)))
        # requested current
        if t >= self.i_end:
            k = rng.below(20)
            if k < 7:
                self.i_req = rng.range(-300, 300)
            elif k < 14:
                self.i_req = rng.range(1000, 45000)
            else:
                self.i_req = -rng.range(1000, 90000)
            self.i_end = t + rng.range(4, 120) * STEP_MS


# ------------------------------------------------------------------------------------
# fault injection


class Injector:
    """Random faults per step. rates: dict of 'one in N steps' (0 = never)."""

    UPSET_BITS = (
        (afe.SYS_CTRL1, (4, 3)),
        (afe.SYS_CTRL2, (7, 6)),
        (afe.PROTECT1, (7, 4, 3, 2, 1, 0)),
        (afe.PROTECT2, (6, 5, 4, 3, 2, 1, 0)),
        (afe.PROTECT3, (7, 6, 5, 4)),
        (afe.OV_TRIP, (7, 6, 5, 4, 3, 2, 1, 0)),
        (afe.UV_TRIP, (7, 6, 5, 4, 3, 2, 1, 0)),
        (afe.CC_CFG, (5, 4, 3, 2, 1, 0)),
    )
    DEFAULT_RATES = {
        "dead": 900, "reset": 1600, "upset": 700, "tap": 500, "ts": 1100, "stall": 1800,
        "xready": 3000,
    }

    def __init__(self, rng, model, rates=None, nack_prob=200, corrupt_prob=300):
        self.rng = rng
        self.m = model
        self.rates = rates if rates is not None else self.DEFAULT_RATES
        model.rng = rng
        model.nack_prob = nack_prob
        model.corrupt_prob = corrupt_prob
        self.dead_until = -1
        self.tap_until = -1
        self.ts_until = -1
        self.stall_until = -1
        self.log = []  # recent injections, for the reports
        self.world = None
        self.counts = {}

    def _note(self, t, what):
        self.counts[what.split(" ")[0]] = self.counts.get(what.split(" ")[0], 0) + 1
        self.log.append((t, what))
        if len(self.log) > 8:
            self.log.pop(0)

    def step(self, t):
        """Returns (reset_happened, upset_reg) for this step."""
        rng, m, rt = self.rng, self.m, self.rates
        reset = False
        upset = None
        # faults end when their time is up (only those this injector started)
        if self.dead_until >= 0 and t >= self.dead_until:
            m.dead = False
            self.dead_until = -1
        if rng.chance(rt.get("dead", 0)):
            self.dead_until = t + rng.range(1, 8) * STEP_MS
            m.dead = True
            self._note(t, "dead bus until %d" % self.dead_until)
        if self.tap_until >= 0 and t >= self.tap_until:
            m.tap_cell = -1
            self.tap_until = -1
        if m.tap_cell < 0 and rng.chance(rt.get("tap", 0)):
            m.tap_cell = rng.below(m.cells)
            exc = self.world.v_exc if self.world is not None else None
            if exc is not None and rng.below(3):
                m.tap_cell = exc[0][0]  # most often on the cell that is beyond a limit
            m.tap_mv = 5200 if rng.below(2) else 300
            m.tap_pattern = rng.range(1, 5)
            m.tap_phase = rng.below(5)
            self.tap_until = t + rng.range(4, 80) * STEP_MS
            self._note(t, "tap cell%d reads %d mV on %d of 5 until %d" % (
                m.tap_cell + 1, m.tap_mv, m.tap_pattern, self.tap_until))
        if self.ts_until >= 0 and t >= self.ts_until:
            for i in range(3):
                m.ts_fault[i] = 0
            self.ts_until = -1
        if rng.chance(rt.get("ts", 0)):
            i = rng.below(m.n_ts)
            m.ts_fault[i] = 1 + rng.below(2)
            self.ts_until = t + rng.range(4, 60) * STEP_MS
            self._note(t, "thermistor%d %s until %d" % (
                i + 1, "open" if m.ts_fault[i] == 1 else "short", self.ts_until))
        if self.stall_until >= 0 and t >= self.stall_until:
            m.stalled = False
            self.stall_until = -1
        if rng.chance(rt.get("stall", 0)):
            m.stalled = True
            self.stall_until = t + rng.range(2, 24) * STEP_MS
            self._note(t, "stall until %d" % self.stall_until)
        if rng.chance(rt.get("reset", 0)):
            adc_on = rng.below(2) == 1
            keep = rng.below(2) == 1
            m.power_on(adc_on=adc_on, keep_results=keep)
            reset = True
            if rng.below(3) == 0:
                self.dead_until = t + rng.range(1, 3) * STEP_MS
                m.dead = True
            self._note(t, "reset adc_%s results_%s" % ("on" if adc_on else "off",
                                                       "kept" if keep else "zeroed"))
        if rng.chance(rt.get("upset", 0)):
            reg, bits = self.UPSET_BITS[rng.below(len(self.UPSET_BITS))]
            bit = bits[rng.below(len(bits))]
            m.upset(reg, bit)
            upset = reg
            self._note(t, "upset reg %02X bit %d" % (reg, bit))
        if rng.chance(rt.get("xready", 0)):
            m.xready(t, rng.range(1, 20) * STEP_MS)
            self._note(t, "xready")
        return reset, upset


# ------------------------------------------------------------------------------------
# the rig: firmware + chip + world + judges


def fault_bits(names, wanted):
    out = {}
    for w in wanted:
        if w in names:
            out[w] = 1 << names.index(w)
    return out


class Rig:
    def __init__(self, seed, board=None, gain_uv=None, offset_mv=None, rates=None,
                 nack_prob=200, corrupt_prob=300, script=None, adc_on_at_boot=None,
                 max_violations=5, tag="rig", cfg_overrides=None, on_step=None,
                 midcycle=True):
        from bms.app import Bms
        from bms.hardware import Hardware
        from bms.protection import FAULT_NAMES

        self.seed = seed
        rng = Rng(seed)
        self.rng = rng
        self.board = board if board is not None else Board()
        b = self.board
        if gain_uv is None:
            gain_uv = rng.range(365, 396)
        if offset_mv is None:
            offset_mv = rng.range(-12, 12)
        if adc_on_at_boot is None:
            adc_on_at_boot = rng.below(2) == 1
        self.model = afe.Bq769x0Model(
            cells=b.CELLS, variant=b.AFE_VARIANT, address=b.AFE_ADDRESS, crc=b.AFE_CRC,
            gain_uv=gain_uv, offset_mv=offset_mv, shunt_uohm=b.SHUNT_UOHM,
            beta=b.THERMISTOR_BETA, ts_phase=rng.below(8), n_ts=max(b.N_TEMPS, 1),
            adc_on_at_boot=adc_on_at_boot)
        self.clock = Clock()
        self.data_dir = make_data_dir(tag)
        self.wdt = None
        self.resets_requested = 0
        self.mcu_boots = 0
        self.Bms = Bms
        self.Hardware = Hardware
        self.cfg_overrides = cfg_overrides
        self.on_step = on_step  # callable(rig, t) after the world moved, before the chip tick
        self.midcycle = midcycle
        self.injector = Injector(rng, self.model, rates, nack_prob, corrupt_prob)
        self.max_violations = max_violations
        self.violations = []
        self.nviol = 0
        self.step_no = 0
        self.t = 0
        self.names = FAULT_NAMES
        self.fb = fault_bits(FAULT_NAMES, ("cell_ov", "cell_uv", "chg_ot", "chg_ut", "dsg_ot",
                                           "dsg_ut", "cell_implausible", "temp_sensor"))
        self._boot_mcu()
        self.cfg = self.bms.cfg
        self.world = World(rng, self.cfg, b.CELLS, self.model.n_ts, script)
        self.injector.world = self.world
        self._set_inputs(0)
        self._init_judge()

    # -------------------------------------------------------------- firmware side
    def _wdt_factory(self, timeout_ms):
        self.wdt = Wdt(self.clock, timeout_ms)
        return self.wdt

    def _reset(self):
        self.resets_requested += 1
        raise McuReset()

    def _boot_mcu(self):
        hw = self.Hardware(self.board, i2c=afe.ModelI2C(self.model), clock=self.clock,
                           data_dir=self.data_dir, wdt_factory=self._wdt_factory,
                           reset=self._reset, alert_override=self.model.set_alert_override)
        self.bms = None
        gc.collect()
        if self.cfg_overrides:
            from bms.config import Config

            b = self.board
            cfg = Config(b.CHEMISTRY, b.CELLS, b.CAPACITY_MAH, **self.cfg_overrides)
            self.bms = self.Bms(hw, cfg)
        else:
            self.bms = self.Bms(hw)
        self.mcu_boots += 1
        self.wdt = None
        try:
            self.bms.boot()
        except McuReset:
            pass
        if self.mcu_boots > 1:
            self.cfg = self.bms.cfg
            self.world.cfg = self.cfg
            self._prev_faults = None

    def close(self):
        self.bms = None
        remove_tree(self.data_dir)
        gc.collect()

    # -------------------------------------------------------------- judge state
    def _init_judge(self):
        never = None
        self.since = {}  # condition -> first step time of its current continuous run
        for k in ("ov", "uv", "deep", "cut", "cot", "dut", "dot",
                  "ov_rel", "uv_rel", "cut_rel", "cot_rel", "dut_rel", "dot_rel"):
            self.since[k] = never
        self._prev_faults = None
        # after a wrong control bit: which results must come from conversions after the
        # configuration is whole again ("cells" also covers BAT), and whether a close needs
        # every register right (no grace for the protection registers after a reset)
        self.pending = {}
        self.fresh_after = {"cells": 0, "ts": 0, "cc": 0}
        self.reinit_required = False
        self.slow_since = None
        self.off_pending = None  # reason both FETs must be off (carried while not judged)
        self.cycle_seq0 = 0
        self.tick_seq = 0
        self.stats = {"steps": 0, "chg_on": 0, "dsg_on": 0, "chg_closes": 0, "dsg_closes": 0,
                      "unjudged": 0, "exceptions": 0, "mcu_boots": 0, "balancing": 0}
        self.cur_ma = 0
        m = self.model
        self._cell_regs = [afe.VC1_HI + 2 * (ch - 1) for ch in m.channels]
        self._ts_regs = [afe.TS1_HI + 2 * i for i in range(self.board.N_TEMPS)]

    def _set_inputs(self, t):
        w = self.world
        chg, dsg = self.model.fets()
        i = w.i_req
        if (i > 0 and not chg) or (i < 0 and not dsg):
            i = 0
        self.cur_ma = i
        self.model.set_inputs(w.mv, i, w.temps, w.die)

    def _track(self, key, cond, t):
        if cond:
            if self.since[key] is None:
                self.since[key] = t
        else:
            self.since[key] = None

    def _age(self, key, t):
        s = self.since[key]
        return -1 if s is None else t - s

    def violation(self, kind, text):
        self.nviol += 1
        if len(self.violations) >= self.max_violations:
            return
        self.violations.append(self.report(kind, text))

    def report(self, kind, text):
        w, m, t = self.world, self.model, self.t
        mx = max(w.mv)
        mn = min(w.mv)
        try:
            from bms.protection import fault_names

            fl = fault_names(self.bms.prot.faults | self.bms.prot.latched)
            st = self.bms.prot.state
        except Exception:
            fl, st = "?", "?"
        return ("%s seed=%d step=%d t=%d ms: %s\n  true: cells %d..%d mV (max cell%d, min "
                "cell%d), temps %s C, current %d mA (req %d)\n  chip: %s FET chg=%d dsg=%d "
                "GAIN=%d OFFSET=%d\n  firmware: state=%s faults=%s\n  recent injections: %s"
                % (kind, self.seed, self.step_no, t, text, mn, mx, w.mv.index(mx) + 1,
                   w.mv.index(mn) + 1, ",".join(["%.1f" % x for x in w.temps]), self.cur_ma,
                   w.i_req, m.reg_dump(), m.fets()[0], m.fets()[1], m.gain_uv, m.offset_mv,
                   st, fl, "; ".join(["%d:%s" % e for e in self.injector.log[-5:]])))

    # -------------------------------------------------------------- one step
    def step(self):
        self.step_no += 1
        t = self.step_no * STEP_MS
        self.t = t
        self.clock.t = t
        m = self.model
        self.world.step(t)
        self._set_inputs(t)
        reset, upset = self.injector.step(t)
        if self.on_step is not None:
            self.on_step(self, t)
        # where in the coming cycle the chip's comparators decide (0: before it; else after
        # that many bus transactions) -- a trip can land between the host's read and write
        m.protect_after_tx = self.rng.below(8) if self.midcycle else 0
        m.tick(t)
        self.tick_seq = m.seq
        self._judge_truth(t)
        fast, slow = config_mismatch(m, self.cfg, self.board.N_TEMPS, self.board.SHUNT_UOHM)
        for f in fast:
            self.reinit_required = True
            if f.startswith("ADC_EN"):
                self.pending["cells"] = self.pending["ts"] = True
            elif f.startswith("TEMP_SEL"):
                self.pending["ts"] = True
            elif f.startswith("CC_EN"):
                self.pending["cc"] = True
            else:
                self.pending["cells"] = self.pending["ts"] = self.pending["cc"] = True
        if slow:
            if self.slow_since is None:
                self.slow_since = t
        else:
            self.slow_since = None
        if fast:
            self.off_pending = "control bits %s at the start of the cycle%s" % (
                ",".join(fast), " (reset)" if reset else "")
        elif slow and self.slow_since is not None and t - self.slow_since >= CONFIG_CHECK_MS:
            self.off_pending = "registers wrong for %d ms: %s" % (t - self.slow_since,
                                                                   ",".join(slow))
        m.take_rises()
        m.fet_write_failed = False
        tx0, fail0 = m.tx_total, m.tx_failed
        self.cycle_seq0 = m.seq
        self._run_cycles(t)
        m.flush_protect()
        dead_cycle = (m.tx_total - tx0) > 0 and (m.tx_failed - fail0) == (m.tx_total - tx0)
        judged = not dead_cycle and not m.fet_write_failed
        self._judge_end(t, judged)

    def _run_cycles(self, t):
        b = self.bms
        try:
            try:
                b.fast_cycle(t)
            except McuReset:
                raise
            except Exception as e:
                self.stats["exceptions"] += 1
                self.violation("I7 exception", "fast_cycle raised %r" % (e,))
            if self.step_no % 4 == 0:
                try:
                    b.slow_cycle(t)
                except McuReset:
                    raise
                except Exception as e:
                    self.stats["exceptions"] += 1
                    self.violation("I7 exception", "slow_cycle raised %r" % (e,))
            if self.wdt is not None and t - self.wdt.last > self.wdt.timeout_ms:
                raise McuReset()
        except McuReset:
            self.stats["mcu_boots"] += 1
            self._boot_mcu()
        if self.step_no % 480 == 0:
            # the user's "clear latched faults" (refused by the firmware while the cause stands)
            try:
                self.bms.prot.reset_latched(t)
            except Exception as e:
                self.violation("I7 exception", "reset_latched raised %r" % (e,))

    # -------------------------------------------------------------- judges
    def _judge_truth(self, t):
        c = self.cfg
        w = self.world
        mx, mn = max(w.mv), min(w.mv)
        n = self.board.N_TEMPS
        temps = w.temps[:n] if n else []
        tmax = max(temps) if temps else 25.0
        tmin = min(temps) if temps else 25.0
        M, MT = VOLT_MARGIN_MV, TEMP_MARGIN_C
        self._track("ov", mx > c.cell_ov_mv + M, t)
        self._track("uv", mn < c.cell_uv_mv - M, t)
        self._track("deep", mn < c.cell_deep_uv_mv - M, t)
        self._track("cut", tmin < c.chg_temp_min_dc / 10 - MT, t)
        self._track("cot", tmax > c.chg_temp_max_dc / 10 + MT, t)
        self._track("dut", tmin < c.dsg_temp_min_dc / 10 - MT, t)
        self._track("dot", tmax > c.dsg_temp_max_dc / 10 + MT, t)
        rel = c.temp_release_dc / 10
        self._track("ov_rel", mx >= c.cell_ov_release_mv + M, t)
        self._track("uv_rel", mn <= c.cell_uv_release_mv - M, t)
        self._track("cut_rel", tmin <= c.chg_temp_min_dc / 10 + rel - MT, t)
        self._track("cot_rel", tmax >= c.chg_temp_max_dc / 10 - rel + MT, t)
        self._track("dut_rel", tmin <= c.dsg_temp_min_dc / 10 + rel - MT, t)
        self._track("dot_rel", tmax >= c.dsg_temp_max_dc / 10 - rel + MT, t)

    def current_margin_ma(self):
        return max(50, 4 * 8440 // self.board.SHUNT_UOHM + 1)

    def _overdue(self, t, chg):
        """Conditions of one direction past their time bound: list of texts."""
        c = self.cfg
        out = []
        if chg:
            pairs = (("ov", c.cell_ov_delay_ms, "cell > cell_ov_mv %d" % c.cell_ov_mv),
                     ("cut", c.temp_delay_ms, "temp < chg_temp_min %.1f C"
                      % (c.chg_temp_min_dc / 10)),
                     ("cot", c.temp_delay_ms, "temp > chg_temp_max %.1f C"
                      % (c.chg_temp_max_dc / 10)))
        else:
            pairs = (("uv", c.cell_uv_delay_ms, "cell < cell_uv_mv %d" % c.cell_uv_mv),
                     ("dut", c.temp_delay_ms, "temp < dsg_temp_min %.1f C"
                      % (c.dsg_temp_min_dc / 10)),
                     ("dot", c.temp_delay_ms, "temp > dsg_temp_max %.1f C"
                      % (c.dsg_temp_max_dc / 10)))
        bd = c.body_diode_ma // 2 - self.current_margin_ma()
        diode = (self.cur_ma < -bd) if chg else (self.cur_ma > bd)
        for key, delay, text in pairs:
            age = self._age(key, t)
            if age >= delay + STEP_MS and not diode:
                out.append("%s for %d ms (bound %d)" % (text, age, delay + STEP_MS))
        age = self._age("deep", t)
        if age >= c.cell_deep_uv_delay_ms + STEP_MS:
            out.append("cell < cell_deep_uv_mv %d for %d ms (bound %d)" % (
                c.cell_deep_uv_mv, age, c.cell_deep_uv_delay_ms + STEP_MS))
        return out

    def _reading_problems(self, t):
        """Why this cycle's reading is not complete, fresh, clean and sound (I4)."""
        m = self.model
        s0 = self.cycle_seq0
        tick = self.tick_seq
        out = []
        for name, regs in (("cell", self._cell_regs), ("BAT", (afe.BAT_HI,)),
                           ("CC", (afe.CC_HI,))):
            fresh = self.fresh_after["cc" if name == "CC" else "cells"]
            for k, a in enumerate(regs):
                label = "%s%d" % (name, k + 1) if name == "cell" else name
                for x in (a, a + 1):
                    if m.read_seq[x] < s0:
                        out.append("%s not read this cycle" % label)
                    elif not m.read_clean[x]:
                        out.append("%s read failed/corrupted" % label)
                    elif m.read_conv_seq[x] != tick:
                        out.append("%s result from t=%d (not converted this tick)"
                                   % (label, m.read_conv_t[x]))
                    elif m.read_conv_seq[x] <= fresh:
                        out.append("%s converted before the configuration was restored"
                                   % label)
                    elif m.read_bad[x]:
                        out.append("%s unsound (%s)" % (label, ("", "tap fault", "die",
                                                                 "post-wake zeros")[
                                                            m.read_bad[x]]))
                    else:
                        continue
                    break
        fresh = self.fresh_after["ts"]
        for k, a in enumerate(self._ts_regs):
            label = "TS%d" % (k + 1)
            for x in (a, a + 1):
                if m.read_seq[x] == 0:
                    out.append("%s never read" % label)
                elif not m.read_clean[x]:
                    out.append("%s last read failed/corrupted" % label)
                elif t - m.read_conv_t[x] > TS_FRESH_MS or m.read_conv_seq[x] == 0:
                    out.append("%s last read delivered a conversion from t=%d"
                               % (label, m.read_conv_t[x]))
                elif m.read_conv_seq[x] <= fresh:
                    out.append("%s converted before the configuration was restored" % label)
                elif m.read_bad[x]:
                    out.append("%s unsound (%s)" % (label, ("", "thermistor fault",
                                                            "die temperature (TEMP_SEL=0)",
                                                            "?")[m.read_bad[x]]))
                else:
                    continue
                break
        return out

    def _judge_end(self, t, judged):
        m = self.model
        st = self.stats
        st["steps"] += 1
        chg, dsg = m.fets()
        if m.regs[afe.CELLBAL1] | m.regs[afe.CELLBAL1 + 1] | m.regs[afe.CELLBAL1 + 2]:
            st["balancing"] += 1
        if chg:
            st["chg_on"] += 1
        if dsg:
            st["dsg_on"] += 1
        rc, rd = m.take_rises()
        fast, slow = config_mismatch(m, self.cfg, self.board.N_TEMPS, self.board.SHUNT_UOHM)
        if not fast and not slow:
            for k in self.pending:
                self.fresh_after[k] = m.last_cfg_change_seq
            self.pending = {}
            self.reinit_required = False
        # I4: closes
        if rc or rd:
            probs = []
            if fast:
                probs.append("control bits wrong: " + ",".join(fast))
            if slow and (self.reinit_required or self.slow_since is None
                         or t - self.slow_since >= CONFIG_CHECK_MS):
                probs.append("registers wrong%s: %s" % (
                    " (re-initialisation incomplete)" if self.reinit_required else "",
                    ",".join(slow)))
            probs.extend(self._reading_problems(t))
            if rc:
                st["chg_closes"] += 1
                od = self._overdue(t, True)
                if probs or od:
                    self.violation("I4 CHG closed", "; ".join(probs + od))
            if rd:
                st["dsg_closes"] += 1
                od = self._overdue(t, False)
                if probs or od:
                    self.violation("I4 DSG closed", "; ".join(probs + od))
        if not judged:
            st["unjudged"] += 1
        else:
            # I5
            if self.off_pending is not None:
                if chg or dsg:
                    self.violation("I5 AFE reset/misconfigured", "%s, but FETs chg=%d dsg=%d "
                                   "at the end of the cycle" % (self.off_pending, chg, dsg))
                self.off_pending = None
            # I1-I3
            if chg:
                od = self._overdue(t, True)
                if od:
                    self.violation("I1 CHG on", "; ".join(od))
            if dsg:
                od = self._overdue(t, False)
                if od:
                    self.violation("I2 DSG on", "; ".join(od))
        # I6: faults cleared while their condition held
        p = self.bms.prot
        cur = p.faults | p.latched
        prev = self._prev_faults
        self._prev_faults = cur
        if prev is not None:
            cleared = prev & ~cur
            if cleared:
                self._judge_clears(t, cleared)

    def _judge_clears(self, t, cleared):
        c = self.cfg
        rd = c.release_delay_ms
        fb = self.fb
        checks = (("cell_ov", "ov_rel", rd, "true max cell >= cell_ov_release_mv %d"
                   % c.cell_ov_release_mv),
                  ("cell_uv", "uv_rel", rd, "true min cell <= cell_uv_release_mv %d"
                   % c.cell_uv_release_mv),
                  ("chg_ut", "cut_rel", rd + 2000, "true min temp below the chg_ut release"),
                  ("chg_ot", "cot_rel", rd + 2000, "true max temp above the chg_ot release"),
                  ("dsg_ut", "dut_rel", rd + 2000, "true min temp below the dsg_ut release"),
                  ("dsg_ot", "dot_rel", rd + 2000, "true max temp above the dsg_ot release"))
        m = self.model
        for name, key, window, text in checks:
            bit = fb.get(name, 0)
            if cleared & bit:
                # judged only while the quantity was observable: no tap fault (cells) or
                # thermistor fault (temperatures) anywhere within the window
                last = m.last_tap_fault_t if name.startswith("cell") else m.last_ts_fault_t
                if t - last <= window:
                    continue
                age = self._age(key, t)
                if age >= window:
                    self.violation("I6 %s cleared" % name, "%s for %d ms (release window %d)"
                                   % (text, age, window))
        bit = fb.get("cell_implausible", 0)
        if cleared & bit and t - m.last_bad_cell_read_t < rd - STEP_MS:
            self.violation("I6 cell_implausible cleared", "an implausible cell reading was "
                           "delivered %d ms ago" % (t - m.last_bad_cell_read_t))
        bit = fb.get("temp_sensor", 0)
        if cleared & bit and t - m.last_bad_ts_read_t < rd - STEP_MS:
            self.violation("I6 temp_sensor cleared", "a faulted thermistor reading was "
                           "delivered %d ms ago" % (t - m.last_bad_ts_read_t))

    def run(self, steps):
        for _ in range(steps):
            self.step()
        return self

    def all_violations(self):
        """The judges' reports plus I8: the host broke a datasheet rule on the bus."""
        out = list(self.violations)
        for v in self.model.violations:
            kind = "I9 FET gate" if "FET gate" in v else "I8 protocol"
            out.append("%s seed=%d: %s" % (kind, self.seed, v))
        return out

    def summary(self):
        st = self.stats
        n = max(1, st["steps"])
        return ("seed=%d steps=%d chg_on=%d%% dsg_on=%d%% closes=%d/%d balancing=%d%% "
                "unjudged=%d exceptions=%d mcu_boots=%d protocol=%d violations=%d "
                "injections=%s" % (
                    self.seed, st["steps"], 100 * st["chg_on"] // n, 100 * st["dsg_on"] // n,
                    st["chg_closes"], st["dsg_closes"], 100 * st["balancing"] // n,
                    st["unjudged"], st["exceptions"], st["mcu_boots"],
                    len(self.model.violations), self.nviol, self.injector.counts))


def main(argv):
    """Reproduce one property run: indep_harness.py SEED [STEPS [CELLS]] (defaults of the
    property runs in test_indep_afe_props.py: random faults, GAIN/OFFSET from the seed)."""
    if not IS_MPY:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        for p in ("tools/compat", "host_tests/fakes", "firmware", "tools", "host_tests"):
            sys.path.insert(0, os.path.join(root, p))
    seed = int(argv[1])
    steps = int(argv[2]) if len(argv) > 2 else 5000
    cells = int(argv[3]) if len(argv) > 3 else 15
    rig = Rig(seed, board=Board(CELLS=cells), max_violations=20, tag="main")
    try:
        rig.run(steps)
        print(rig.summary())
        for v in rig.all_violations():
            print(v)
    finally:
        rig.close()


if __name__ == "__main__":
    main(sys.argv)
