# bms.can_sma: SMA Sunny Island with an external BMS (can_profile = "sma"), after SMA's
# "Connecting Batteries with external BMS to SUNNY ISLAND 6.0H-11" (FSS-ConnectingBat-TI-en-10)
# section 5 and 7:
# * Only the ids SMA documents: 0x351, 0x355, 0x356, 0x35A, 0x35E, 0x35F (no 0x359/0x35C).
# * Ranges: CVL 41.0-63.0 V, CCL/DCL 0-120.0 A, DVL 41.0-48.0 V. The SI silently ignores an
#   out-of-range value and keeps the last one, so values are clamped into range, never
#   sent outside it (this profile is for 48 V packs: 13-16 LFP cells). CVL below the
#   measured voltage makes the SI discharge ignoring DCL: CVL is held at the pack voltage
#   rounded up (bms.limits) when charging stops.
# * 0x355 SOC, SOH, HiResSOC 0.01 % (used by the SI instead of SOC when present). 0x35F:
#   defined fields without a value carry the invalid marker 0xFFFF (battery type,
#   manufacturer id). Temperatures are never 0x8000: the status view's value is sent.
# * 0x35A pairs 01 raised / 10 cleared; an alarm puts the SI into standby (within ~10 s),
#   warnings are only logged. A low-voltage fault is a warning (it must still charge).
# * Every frame once a second (the SI's inhibit time is 200 ms; F952 after 60 s without
#   0x355, W952 without 0x351). The SI sends 0x305 (its V/I/T/SOC), 0x306, 0x307 each second.
from bms.can_pylon import e356
from bms.canbus import FW_VERSION, clamp, div_up, put16, text

NAME = "sma"
RX_IDS = (0x305, 0x306, 0x307)


def e351(b, st, p):
    put16(b, 0, clamp(st.cvl_mv // 100, 410, 630))
    put16(b, 2, clamp(st.ccl_ma // 100, 0, 1200))
    put16(b, 4, clamp(st.dcl_ma // 100, 0, 1200))
    put16(b, 6, clamp(div_up(st.dvl_mv, 100), 410, 480))


def e355(b, st, p):
    put16(b, 0, clamp((st.soc_cpct + 50) // 100, 0, 100))
    put16(b, 2, clamp((st.soh_cpct + 50) // 100, 0, 100))
    put16(b, 4, clamp(st.soc_cpct, 0, 10000))


def e35a(b, st, p):
    p.alarms_35a(b, st, True)


_NAME = b"MPY-BMS "


def e35e(b, st, p):
    text(b, _NAME)


def e35f(b, st, p):
    put16(b, 0, 0xFFFF)  # battery type: not defined
    put16(b, 2, FW_VERSION)
    put16(b, 4, clamp(st.capacity_mah // 1000, 0, 65535))
    put16(b, 6, 0xFFFF)  # manufacturer id: none


FRAMES = (
    (0x351, 1000, e351),
    (0x355, 1000, e355),
    (0x356, 1000, e356),
    (0x35A, 1000, e35a),
    (0x35E, 1000, e35e),
    (0x35F, 1000, e35f),
)
