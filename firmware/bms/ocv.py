# bms.ocv: open-circuit-voltage curves per chemistry, as const tuples, and look-ups.
#
# Each table is the cell OCV in 0.1 mV at evenly spaced SOC points from 0 to 100 %.
# Look-ups interpolate piecewise-linearly (binary search). All tables strictly increase.
#
# Built-in ("generic") tables: measured curves of OTHER cells than yours (sources below). A
# generic table is worth less than the cell's own: every voltage reading taken through it
# carries the table's uncertainty (GENERIC_SIGMA, derived from how far measured tables of
# different cells of one chemistry lie apart; README "OCV tables and their uncertainty").
# The cell's own table (measured on the pack's cells) is installed from the board file
# (`OCV_TABLE`, passed to the estimator) or with set_table(), and carries OWN_SIGMA.
#
# Sources (facts, resampled):
#   lfp: Lithium Werks APR18650M1B, mean of the C/32 charge and discharge pseudo-OCV curves,
#        81 points (Sunil, Pattipati, Balasingam, IEEE TIM 2025; data
#        soorajsunil/Piecewise-Battery-OCV, MIT). It lies between the hysteresis branches.
#   nmc: LG INR21700-M50T, mean pseudo-OCV, 81 points (same source, MIT).
#   lto: generic LTO/NMC cell, 11 points, approximate (no measured curve in the project):
#        treat it as untrusted, its uncertainty is large.
# The charge/discharge branches are modelled as the mean curve shifted by +/- HYST_MV / 2
# (measured LFP: 5-25 mV apart), weighted by a hysteresis state b in -1..+1 that the
# estimator tracks (one-state model: b follows the sign of the current over a few % SOC).
from micropython import const


LFP = (
    20102, 27561, 29149, 30066, 30721, 31228, 31635, 31928, 32029, 32068,
    32096, 32124, 32156, 32202, 32276, 32350, 32413, 32470, 32522, 32571,
    32618, 32664, 32708, 32747, 32778, 32805, 32834, 32861, 32883, 32904,
    32922, 32937, 32948, 32956, 32963, 32969, 32974, 32978, 32982, 32986,
    32991, 32996, 33001, 33005, 33010, 33015, 33020, 33025, 33032, 33039,
    33047, 33057, 33070, 33086, 33106, 33131, 33163, 33204, 33253, 33299,
    33329, 33346, 33356, 33364, 33370, 33376, 33382, 33388, 33393, 33398,
    33402, 33406, 33411, 33414, 33419, 33422, 33429, 33436, 33457, 33601,
    35982,
)

NMC = (
    25199, 28683, 30127, 31001, 31617, 32052, 32396, 32721, 33041, 33346,
    33605, 33820, 34014, 34223, 34445, 34624, 34754, 34873, 34983, 35088,
    35205, 35350, 35486, 35628, 35763, 35867, 35960, 36052, 36141, 36223,
    36298, 36371, 36443, 36517, 36594, 36675, 36761, 36853, 36951, 37056,
    37167, 37283, 37404, 37527, 37652, 37777, 37904, 38034, 38174, 38331,
    38484, 38618, 38748, 38873, 38988, 39096, 39201, 39306, 39415, 39529,
    39650, 39777, 39910, 40046, 40184, 40318, 40447, 40566, 40672, 40758,
    40824, 40874, 40919, 40964, 41016, 41079, 41158, 41264, 41406, 41606,
    41943,
)

LTO = (19000, 21500, 22200, 22600, 22900, 23200, 23500, 23900, 24400, 25000, 26500)

BUILTIN = {"lfp": LFP, "nmc": NMC, "lto": LTO}
TABLES = dict(BUILTIN)  # in force per chemistry (set_table() replaces one)
OWN = {}  # chemistry -> True once set_table() installed the cell's own table
# Full width between the rested charge and discharge branches (mV).
HYST_MV = {"lfp": 20.0, "nmc": 4.0, "lto": 10.0}
# Uncertainty of a table, 1 sigma: (mV along the voltage axis, % along the SOC axis).
# Generic tables, from the spread between measured and model tables of different cells of
# the chemistry (LFP: APR18650M1B vs the CALCE A123 charge branch and the Prada2013 model
# cell, 27-70 mV apart on the plateau, 2-7 % apart in the low tail). NMC: the SOC-axis part
# is the profile below; 30 mV on the voltage axis for lot, temperature and measurement.
GENERIC_SIGMA = {"lfp": (35.0, 3.5), "nmc": (30.0, 0.0), "lto": (40.0, 5.0)}
# SOC-axis uncertainty of a generic table, point by point where the spread of known cells says
# it (0.1 % units at table SOC 0, 5, ..., 100 %; 21 bytes). NMC: at each voltage of the M50T
# table, the RMS of how far the SOC of four other NMC cells at that voltage lies from the
# table's (Samsung 40T, Chen2020, Mohtat2020, Ecker2015): 1.4-3.3 % above 60 %, 7-10 % at
# 15-55 % (the Ecker cell's flat part sits 16-19 % away at 3.72-3.77 V, the Mohtat cell's
# 2.8 V cut-off moves its low end), 0.5 % at the ends where the tables meet at the cut-offs.
GENERIC_SOC_SIG = {
    "nmc": bytes((5, 24, 45, 68, 83, 83, 77, 86, 91, 96, 97, 84, 22, 32, 31, 31, 33, 31, 14,
                  17, 5)),
}
# The cell's own table: measurement and lot-to-lot spread of a careful C/20 or GITT test.
OWN_SIGMA = (4.0, 0.7)

BRANCH_MEAN = const(0)
BRANCH_CHG = const(1)  # rested after charging: the cell sits above the mean curve
BRANCH_DSG = const(-1)


def check_table(mv01):
    """A valid table as a tuple of ints (0.1 mV, evenly spaced 0..100 %); ValueError if not."""
    try:
        t = tuple(int(x) for x in mv01)
    except (TypeError, ValueError):
        raise ValueError("OCV table: numbers in 0.1 mV expected") from None
    if len(t) < 11 or len(t) > 201:
        raise ValueError("OCV table: 11..201 points")
    for k in range(1, len(t)):
        if t[k] <= t[k - 1]:
            raise ValueError("OCV table must increase strictly")
    if t[0] < 10000 or t[-1] > 50000:
        raise ValueError("OCV table: 1.0..5.0 V")
    return t


def set_table(chem, mv01):
    """Install the OCV table of the actual cell (0.1 mV, evenly spaced 0..100 %)."""
    if chem not in BUILTIN:
        raise ValueError("OCV table: chemistry")
    TABLES[chem] = check_table(mv01)
    OWN[chem] = True


def reset_tables():
    """Back to the built-in generic tables (tests, bench)."""
    TABLES.update(BUILTIN)
    OWN.clear()


def table(chem):
    t = TABLES.get(chem)
    if t is None:
        raise ValueError("no OCV table for chemistry")
    return t


class Table:
    """One OCV table with its hysteresis width and uncertainty (the estimator owns one)."""

    def __init__(self, chem, mv01=None):
        if chem not in BUILTIN:
            raise ValueError("no OCV table for chemistry")
        if mv01 is not None:
            self.t = check_table(mv01)
            self.own = True
        else:
            self.t = TABLES[chem]
            self.own = bool(OWN.get(chem))
        self.n = len(self.t) - 1
        self.hyst_mv = HYST_MV[chem]
        self.sig_mv, self.sig_pct = OWN_SIGMA if self.own else GENERIC_SIGMA[chem]
        self.prof = None if self.own else GENERIC_SOC_SIG.get(chem)

    def mv(self, soc, b=0.0):
        """OCV in mV at soc (fraction, clamped) with hysteresis state b (-1 dsg .. +1 chg)."""
        return _mv(self.t, self.n, soc) + b * self.hyst_mv * 0.5

    def soc(self, mv, b=0.0):
        """SOC (fraction) whose OCV with hysteresis state b is mv; clamped at the ends."""
        return _soc(self.t, self.n, mv - b * self.hyst_mv * 0.5)

    def slope(self, soc, span=0.025):
        """dOCV/dSOC in mV per 1 % SOC, averaged over soc +/- span."""
        return _slope(self.t, self.n, soc, span)

    def soc_sigma_pct(self, z):
        """The table's own SOC-axis uncertainty at z (smaller near full, where tables of
        different cells meet at the charge voltage)."""
        p = self.prof
        if p is not None:
            x = (0.0 if z < 0.0 else (1.0 if z > 1.0 else z)) * 20.0
            k = int(x)
            if k >= 20:
                return p[20] * 0.1
            return (p[k] + (p[k + 1] - p[k]) * (x - k)) * 0.1
        f = (1.0 - z) / 0.05
        if f < 0.3:
            f = 0.3
        elif f > 1.0:
            f = 1.0
        return self.sig_pct * f

    def reading(self, mv, b, extra_mv):
        """SOC from a rested voltage: (z, sigma %). The voltage uncertainty (the table's,
        plus extra_mv: hysteresis, relaxation, noise, temperature, IR) is mapped through the
        table: z is the middle of the SOC interval of mv +/- 2 sigma_v, sigma its quarter,
        so a flat part of the curve gives a wide interval and a reading worth little. Where
        the interval is cut by the top of the table (a voltage at the top of charge, where the
        tables of all cells meet at the charge voltage), its middle would sit below the top by
        half the cut: there z is the voltage's own SOC and sigma half of the lower side."""
        sv = (self.sig_mv * self.sig_mv + extra_mv * extra_mv) ** 0.5
        lo = self.soc(mv - 2.0 * sv, b)
        hi = self.soc(mv + 2.0 * sv, b)
        if hi >= 1.0:
            z = self.soc(mv, b)
            sz = (z - lo) * 50.0
        else:
            z = (lo + hi) * 0.5
            sz = (hi - lo) * 25.0  # quarter of the interval, in %
        ss = self.soc_sigma_pct(z)
        si = 25.0 / self.n  # linear interpolation between points a quarter step off
        return z, (sz * sz + ss * ss + si * si) ** 0.5


def _mv(t, n, soc):
    if soc <= 0.0:
        v = t[0]
    elif soc >= 1.0:
        v = t[n]
    else:
        x = soc * n
        i = int(x)
        if i >= n:
            i = n - 1
        v = t[i] + (t[i + 1] - t[i]) * (x - i)
    return v * 0.1


def _soc(t, n, mv):
    x = mv * 10.0
    if x <= t[0]:
        return 0.0
    if x >= t[n]:
        return 1.0
    lo = 0
    hi = n
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        if t[mid] <= x:
            lo = mid
        else:
            hi = mid
    return (lo + (x - t[lo]) / (t[hi] - t[lo])) / n


def _slope(t, n, soc, span):
    a = soc - span
    b = soc + span
    if a < 0.0:
        a = 0.0
        b = 2 * span
    if b > 1.0:
        b = 1.0
        a = 1.0 - 2 * span
    return (_mv(t, n, b) - _mv(t, n, a)) / ((b - a) * 100.0)


# Module-level look-ups on the table in force for a chemistry (kept for callers that have no
# Table object: the app's boot guess, the simulator, tests).
def mv_from_soc(chem, soc, branch=0):
    """OCV in mV (float) at soc (fraction 0..1, clamped) on a branch (+1 chg, -1 dsg, 0 mean)."""
    t = table(chem)
    return _mv(t, len(t) - 1, soc) + branch * HYST_MV[chem] * 0.5


def soc_from_mv(chem, mv, branch=0):
    """SOC (fraction 0..1) whose OCV on the given branch is mv; clamped at the table ends."""
    t = table(chem)
    return _soc(t, len(t) - 1, mv - branch * HYST_MV[chem] * 0.5)


def slope_mv_pct(chem, soc, span=0.025):
    """dOCV/dSOC in mV per 1 % SOC, averaged over soc +/- span (fraction)."""
    t = table(chem)
    return _slope(t, len(t) - 1, soc, span)


def min_slope_mv_pct(chem, soc, span=0.05):
    """The smallest local slope within soc +/- span."""
    s = slope_mv_pct(chem, soc)
    k = -span
    while k <= span + 1e-9:
        v = slope_mv_pct(chem, soc + k, 0.0125)
        if v < s:
            s = v
        k += 0.0125
    return s
