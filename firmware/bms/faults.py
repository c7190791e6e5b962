# bms.faults: the fault list as one table (one row per fault; warnings share the rows).
#
# Columns of FAULTS (index = fault bit: bit = 1 << index, used by protection, the event log,
# Modbus, CAN and MQTT; names are an interface: keep them and their order stable):
#   name       fault/warning name
#   dir        FET(s) the fault opens: DIR_CHG, DIR_DSG, DIR_BOTH, or DIR_NONE (warning only)
#   flags      T_* behaviour bits below
#   cat        what an inverter is told (CAT_* below)
#   q          the measured quantity a threshold row judges (Q_*; Q_NONE: judged by code)
#   limit      config field of the trip level (threshold rows) or None
#   delay      config field of the set delay, or None (at once)
#   release    config field of the release level (T_HYST: the hysteresis to the limit), or None
#   margin     config field of the warning margin inside the limit, or None (no warning)
# Everything else protection needs (masks per direction, body-diode sets, retry and latch
# sets) is derived from the table at import, never written by hand.
from micropython import const

DIR_NONE = const(0)
DIR_CHG = const(1)
DIR_DSG = const(2)
DIR_BOTH = const(3)

T_BD = const(0x01)  # the body-diode exception may close its FET while current flows its way
T_RETRY = const(0x02)  # clears oc_retry_ms after it set; the trip beyond oc_retry_max latches
T_LATCH = const(0x04)  # latches at once (both FETs until reset_latched())
T_STICKY = const(0x08)  # a quality fault: its timer forgives bad readings only after
#                         release_delay_ms of good ones (an intermittent fault still trips)
T_TEMP = const(0x10)  # the delay counts from the true crossing (includes the AFE's sample time)
T_HYST = const(0x20)  # `release` is a hysteresis to the limit, not a level
T_BELOW = const(0x40)  # trips below the limit (else above)
T_WPACK = const(0x80)  # the warning margin is per cell (times the cell count)
T_WPCT = const(0x100)  # the warning margin is a percentage of the limit
T_WARN_ONLY = const(0x200)  # never a fault, only a warning (its limit is the warning level)

Q_NONE = const(0)
Q_CELL_MAX = const(1)
Q_CELL_MIN = const(2)
Q_PACK = const(3)
Q_CHG_I = const(4)  # charge current (mA, > 0 while charging)
Q_DSG_I = const(5)  # discharge current (mA, > 0 while discharging)
Q_TEMP_MAX = const(6)
Q_TEMP_MIN = const(7)
Q_FET_T = const(8)  # hottest of the AFE die and an optional board FET sensor
Q_SPREAD = const(9)  # max - min cell
N_Q = const(10)

# Inverter categories (bms.canbus maps them to frame bits)
CAT_NONE = const(0)
CAT_HIGH_V = const(1)
CAT_LOW_V = const(2)
CAT_HIGH_T = const(3)
CAT_LOW_T = const(4)
CAT_CHG_HIGH_T = const(5)
CAT_CHG_LOW_T = const(6)
CAT_DSG_OC = const(7)
CAT_CHG_OC = const(8)
CAT_SHORT = const(9)
CAT_INTERNAL = const(10)
CAT_IMBALANCE = const(11)
N_CAT = const(12)  # the CAT_* count

_TMP = T_BD | T_TEMP | T_HYST
FAULTS = (
    # name, dir, flags, cat, q, limit, delay, release, margin
    ("cell_ov", DIR_CHG, T_BD, CAT_HIGH_V, Q_CELL_MAX,
     "cell_ov_mv", "cell_ov_delay_ms", "cell_ov_release_mv", "warn_margin_mv"),
    ("cell_uv", DIR_DSG, T_BD | T_BELOW, CAT_LOW_V, Q_CELL_MIN,
     "cell_uv_mv", "cell_uv_delay_ms", "cell_uv_release_mv", "warn_margin_mv"),
    ("pack_ov", DIR_CHG, T_BD | T_HYST | T_WPACK, CAT_HIGH_V, Q_PACK,
     "pack_ov_mv", "pack_v_delay_ms", "pack_v_release_mv", "warn_margin_mv"),
    ("pack_uv", DIR_DSG, T_BD | T_HYST | T_WPACK | T_BELOW, CAT_LOW_V, Q_PACK,
     "pack_uv_mv", "pack_v_delay_ms", "pack_v_release_mv", "warn_margin_mv"),
    ("chg_oc", DIR_CHG, T_RETRY | T_WPCT, CAT_CHG_OC, Q_CHG_I,
     "chg_oc_ma", "chg_oc_delay_ms", None, "warn_margin_pct"),
    ("dsg_oc", DIR_DSG, T_RETRY | T_WPCT, CAT_DSG_OC, Q_DSG_I,
     "dsg_oc_ma", "dsg_oc_delay_ms", None, "warn_margin_pct"),
    ("hw_ocd", DIR_DSG, T_RETRY, CAT_DSG_OC, Q_NONE, None, None, None, None),
    ("scd", DIR_BOTH, T_RETRY, CAT_SHORT, Q_NONE, None, None, None, None),
    ("chg_ot", DIR_CHG, _TMP, CAT_CHG_HIGH_T, Q_TEMP_MAX,
     "chg_temp_max_dc", "temp_delay_ms", "temp_release_dc", "warn_margin_dc"),
    ("chg_ut", DIR_CHG, _TMP | T_BELOW, CAT_CHG_LOW_T, Q_TEMP_MIN,
     "chg_temp_min_dc", "temp_delay_ms", "temp_release_dc", "warn_margin_dc"),
    ("dsg_ot", DIR_DSG, _TMP, CAT_HIGH_T, Q_TEMP_MAX,
     "dsg_temp_max_dc", "temp_delay_ms", "temp_release_dc", "warn_margin_dc"),
    ("dsg_ut", DIR_DSG, _TMP | T_BELOW, CAT_LOW_T, Q_TEMP_MIN,
     "dsg_temp_min_dc", "temp_delay_ms", "temp_release_dc", "warn_margin_dc"),
    ("fet_ot", DIR_BOTH, T_TEMP | T_HYST, CAT_HIGH_T, Q_FET_T,
     "fet_temp_max_dc", "temp_delay_ms", "temp_release_dc", "warn_margin_dc"),
    ("imbalance", DIR_NONE, T_WARN_ONLY, CAT_IMBALANCE, Q_SPREAD,
     "imbalance_warn_mv", "release_delay_ms", None, None),
    ("temp_sensor", DIR_BOTH, T_STICKY | T_TEMP, CAT_INTERNAL, Q_NONE,
     None, "temp_delay_ms", None, None),
    ("cell_implausible", DIR_BOTH, T_STICKY, CAT_INTERNAL, Q_NONE,
     None, "plaus_delay_ms", None, None),
    ("sum_mismatch", DIR_BOTH, T_STICKY, CAT_INTERNAL, Q_NONE,
     "sum_tol_mv", "plaus_delay_ms", None, None),
    ("afe_lost", DIR_BOTH, 0, CAT_INTERNAL, Q_NONE, None, None, None, None),
    ("afe_stale", DIR_BOTH, T_STICKY, CAT_INTERNAL, Q_NONE, None, "stale_ms", None, None),
    ("xready", DIR_BOTH, 0, CAT_INTERNAL, Q_NONE, None, None, None, None),
    ("ovrd", DIR_BOTH, 0, CAT_INTERNAL, Q_NONE, None, None, None, None),
    ("hw_ov", DIR_CHG, T_BD, CAT_HIGH_V, Q_NONE, None, None, "cell_ov_release_mv", None),
    ("hw_uv", DIR_DSG, T_BD, CAT_LOW_V, Q_NONE, None, None, "cell_uv_release_mv", None),
    ("deep_uv", DIR_BOTH, T_LATCH | T_BELOW, CAT_LOW_V, Q_CELL_MIN,
     "cell_deep_uv_mv", "cell_deep_uv_delay_ms", None, None),
    ("afe_config", DIR_BOTH, 0, CAT_INTERNAL, Q_NONE, None, None, None, None),
)
N_FAULTS = len(FAULTS)

F_CELL_OV = const(0)
F_CELL_UV = const(1)
F_PACK_OV = const(2)
F_PACK_UV = const(3)
F_CHG_OC = const(4)
F_DSG_OC = const(5)
F_HW_OCD = const(6)
F_SCD = const(7)
F_CHG_OT = const(8)
F_CHG_UT = const(9)
F_DSG_OT = const(10)
F_DSG_UT = const(11)
F_FET_OT = const(12)
F_IMBALANCE = const(13)
F_TEMP_SENSOR = const(14)
F_CELL_IMPLAUSIBLE = const(15)
F_SUM_MISMATCH = const(16)
F_AFE_LOST = const(17)
F_AFE_STALE = const(18)
F_XREADY = const(19)
F_OVRD = const(20)
F_HW_OV = const(21)
F_HW_UV = const(22)
F_DEEP_UV = const(23)
F_AFE_CONFIG = const(24)

NAMES = tuple(r[0] for r in FAULTS)
DIRS = bytes(r[1] for r in FAULTS)
FLAGS = tuple(r[2] for r in FAULTS)
CATEGORY = bytes(r[3] for r in FAULTS)


def _mask(test):
    m = 0
    for i in range(N_FAULTS):
        if test(FAULTS[i]):
            m |= 1 << i
    return m


MASK_CHG = _mask(lambda r: r[1] & DIR_CHG)  # faults that open the charge FET
MASK_DSG = _mask(lambda r: r[1] & DIR_DSG)  # ... the discharge FET
MASK_BOTH = _mask(lambda r: r[1] == DIR_BOTH)
MASK_RETRY = _mask(lambda r: r[2] & T_RETRY)  # retry, then latch
MASK_LATCHABLE = _mask(lambda r: r[2] & (T_RETRY | T_LATCH))
MASK_BD_CHG = _mask(lambda r: r[2] & T_BD and r[1] == DIR_CHG)  # body diode may close CHG
MASK_BD_DSG = _mask(lambda r: r[2] & T_BD and r[1] == DIR_DSG)
MASK_THRESHOLD = _mask(lambda r: r[4] != Q_NONE)  # judged by the generic threshold code


def names(mask):
    """'a|b|c' for the set bits of mask ('' for 0). Allocates: for logs and the REPL."""
    out = []
    for i in range(N_FAULTS):
        if mask & (1 << i):
            out.append(NAMES[i])
    return "|".join(out)


_Q_UNIT = ("", "mV", "mV", "mV", "mA", "mA", "dC", "dC", "dC", "mV")  # by Q_*


def unit(i):
    """Unit of the value logged with fault i (EV_FAULT_SET/CLEAR b): mV, mA, dC (0.1 degC),
    ms, or '' (AFE trip flags, error counts, registers)."""
    q = FAULTS[i][4]
    if q != Q_NONE:
        return _Q_UNIT[q]
    if i == F_TEMP_SENSOR:
        return "dC"
    if i in (F_CELL_IMPLAUSIBLE, F_SUM_MISMATCH, F_HW_OV, F_HW_UV):
        return "mV"
    if i == F_AFE_STALE:
        return "ms"
    return ""


def tier(i):
    """'warning', 'protection', 'retry' or 'latched' for fault index i."""
    f = FLAGS[i]
    if f & T_WARN_ONLY:
        return "warning"
    if f & T_LATCH:
        return "latched"
    if f & T_RETRY:
        return "retry"
    return "protection"
