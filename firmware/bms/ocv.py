# bms.ocv: open-circuit-voltage curves per chemistry, as const tuples, and look-ups.
#
# Each table is the cell OCV in 0.1 mV at evenly spaced SOC points from 0 to 100 %.
# Look-ups interpolate piecewise-linearly (binary search). All tables strictly increase.
#
# Sources (facts, resampled; see the README, "SOC and SOH estimation"):
#   lfp: Lithium Werks APR18650M1B, mean of the C/32 charge and discharge pseudo-OCV curves,
#        81 points (Sunil, Pattipati, Balasingam, IEEE TIM 2025; data
#        soorajsunil/Piecewise-Battery-OCV, MIT). It lies between the hysteresis branches.
#   nmc: LG INR21700-M50T, mean pseudo-OCV, 81 points (same source, MIT).
#   lto: generic LTO/NMC cell, 11 points, approximate (no measured curve in the project):
#        treat it as untrusted, TABLE_ERR_MV is large.
# No measured branch tables of the same cell are available, so the charge/discharge branches
# are modelled as the mean curve shifted by +/- HYST_MV / 2 (measured LFP: 5-25 mV apart).
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

TABLES = {"lfp": LFP, "nmc": NMC, "lto": LTO}
# Full width between the rested charge and discharge branches (mV).
HYST_MV = {"lfp": 20.0, "nmc": 4.0, "lto": 10.0}
# How far the table may be from the real cell (different lot/cell, temperature), mV.
TABLE_ERR_MV = {"lfp": 10.0, "nmc": 10.0, "lto": 30.0}

BRANCH_MEAN = const(0)
BRANCH_CHG = const(1)  # rested after charging: the cell sits above the mean curve
BRANCH_DSG = const(-1)


def set_table(chem, mv01):
    """Install the OCV table of the actual cell (0.1 mV, evenly spaced 0..100 %)."""
    t = tuple(int(x) for x in mv01)
    if chem not in TABLES or len(t) < 11:
        raise ValueError("OCV table: chemistry or length")
    for k in range(1, len(t)):
        if t[k] <= t[k - 1]:
            raise ValueError("OCV table must increase strictly")
    TABLES[chem] = t


def table(chem):
    t = TABLES.get(chem)
    if t is None:
        raise ValueError("no OCV table for chemistry")
    return t


def mv_from_soc(chem, soc, branch=0):
    """OCV in mV (float) at soc (fraction 0..1, clamped) on a branch (+1 chg, -1 dsg, 0 mean)."""
    t = table(chem)
    n = len(t) - 1
    if soc <= 0.0:
        v = t[0]
    elif soc >= 1.0:
        v = t[n]
    else:
        x = soc * n
        i = int(x)
        if i >= n:
            i = n - 1
        f = x - i
        v = t[i] + (t[i + 1] - t[i]) * f
    return v * 0.1 + branch * HYST_MV[chem] * 0.5


def soc_from_mv(chem, mv, branch=0):
    """SOC (fraction 0..1) whose OCV on the given branch is mv; clamped at the table ends."""
    t = table(chem)
    n = len(t) - 1
    x = (mv - branch * HYST_MV[chem] * 0.5) * 10.0
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


def slope_mv_pct(chem, soc, span=0.025):
    """dOCV/dSOC in mV per 1 % SOC, averaged over soc +/- span (fraction)."""
    a = soc - span
    b = soc + span
    if a < 0.0:
        a = 0.0
        b = 2 * span
    if b > 1.0:
        b = 1.0
        a = 1.0 - 2 * span
    return (mv_from_soc(chem, b) - mv_from_soc(chem, a)) / ((b - a) * 100.0)


def min_slope_mv_pct(chem, soc, span=0.05):
    """The smallest local slope within soc +/- span: a rest point must be steep all around."""
    s = slope_mv_pct(chem, soc)
    k = -span
    while k <= span + 1e-9:
        v = slope_mv_pct(chem, soc + k, 0.0125)
        if v < s:
            s = v
        k += 0.0125
    return s
