"""OCV-SOC curves for the simulator's truth model (host only, never deployed).

Each table holds 41 cell open-circuit voltages in mV at SOC = 0, 0.025, ... 1.0.

* ``LFP``: Lithium Werks APR18650M1B (LiFePO4/graphite), mean of the C/32 charge and
  discharge pseudo-OCV curves (it lies between the hysteresis branches).
* ``NMC``: LG INR21700-M50T (NMC/graphite), mean pseudo-OCV curve.

  Both: Sunil, Pattipati, Balasingam, IEEE Transactions on Instrumentation and
  Measurement (2025); data from the GitHub repository soorajsunil/Piecewise-Battery-OCV,
  MIT licence. Resampled from the 81-point CSVs in shared/reference/data by taking every
  second point (SOC step 0.025), rounded to 1 mV.

* ``LTO``: SYNTHETIC curve constructed for this project (no measured source): a 1.5 V
  empty knee, a gently sloping 2.3-2.5 V plateau and a rise to 2.8 V at full.
"""

SOC_STEP = 0.025
POINTS = 41

LFP = (
    2010, 2915, 3072, 3164, 3203, 3210, 3216, 3228, 3241, 3252,
    3262, 3271, 3278, 3283, 3288, 3292, 3295, 3296, 3297, 3298,
    3299, 3300, 3301, 3302, 3303, 3305, 3307, 3311, 3316, 3325,
    3333, 3336, 3337, 3338, 3339, 3340, 3341, 3342, 3343, 3346,
    3598,
)

NMC = (
    2520, 3013, 3162, 3240, 3304, 3360, 3401, 3445, 3475, 3498,
    3521, 3549, 3576, 3596, 3614, 3630, 3644, 3659, 3676, 3695,
    3717, 3740, 3765, 3790, 3817, 3848, 3875, 3899, 3920, 3942,
    3965, 3991, 4018, 4045, 4067, 4082, 4092, 4102, 4116, 4141,
    4194,
)

LTO = (
    1500, 1904, 2104, 2205, 2257, 2286, 2302, 2313, 2321, 2328,
    2334, 2340, 2346, 2351, 2357, 2362, 2368, 2373, 2379, 2384,
    2390, 2395, 2401, 2407, 2412, 2418, 2423, 2429, 2434, 2440,
    2445, 2451, 2456, 2462, 2469, 2477, 2489, 2508, 2546, 2625,
    2800,
)

CURVES = {"lfp": LFP, "nmc": NMC, "lto": LTO}


def curve(chemistry):
    """The table for "lfp", "nmc" or "lto" (ValueError otherwise)."""
    try:
        return CURVES[chemistry.lower()]
    except KeyError:
        raise ValueError("unknown chemistry %r" % chemistry) from None


def ocv_mv(table, soc):
    """Piecewise-linear OCV (float mV) at soc; the end segments extrapolate linearly."""
    x = soc * 40.0
    j = int(x)
    if j < 0:
        j = 0
    elif j > 39:
        j = 39
    a = table[j]
    return a + (table[j + 1] - a) * (x - j)


def soc_from_ocv(table, mv):
    """Inverse of ocv_mv on the (monotonic) table, clamped to 0..1."""
    if mv <= table[0]:
        return 0.0
    if mv >= table[40]:
        return 1.0
    j = 0
    while table[j + 1] < mv:
        j += 1
    a = table[j]
    b = table[j + 1]
    f = (mv - a) / (b - a) if b != a else 0.0
    return (j + f) * SOC_STEP
