# bms.can_solark: Sol-Ark LV inverters (can_profile = "solark"), after Sol-Ark's "CAN Bus
# Protocol for LV Battery-Inverter Communications" rev 1.3 (2023) and Battery-Emulator's
# SOL-ARK-LV-CAN sender. Differences from the pylon profile:
# * 0x356 pack voltage in 0.1 V (not 0.01 V): Sol-Ark's own table. (A x10 scale error made
#   a Deye show W31, ArminJo/JK-BMSToPylontechCAN #5: the scale is per profile.)
# * 0x359: system error b1.3 only (Sol-Ark: "System Error"; b1.7 is "N/A" there, and unused
#   bits must be 0); warnings b3.3 ("Critical System Error" is b3.3 too); byte 7 = 0.
# * 0x35C: b4 = Sol-Ark's "Forced Charge Request 1" (b5 "Request 2" is never sent); bytes
#   1-7 = 0. Only with b7.
# * 0x379: battery capacity, u16 Ah. 0x35E: "MPY-BMS ".
# * Only 8-byte standard frames are accepted (all frames here are DLC 8); the inverter
#   answers each complete set with 0x305.
from bms.can_pylon import e351, e355, e35c, flags359
from bms.canbus import clamp, div_round, put16, text

NAME = "solark"
RX_IDS = (0x305,)


def e356(b, st, p):
    put16(b, 0, clamp(div_round(st.pack_mv, 100), 0, 32767))  # 0.1 V
    put16(b, 2, clamp(div_round(st.current_ma, 100), -32767, 32767))
    put16(b, 4, clamp(st.temp_report_dc, -32767, 32767))


def e359(b, st, p):
    flags359(b, st, p, False)
    b[4] = clamp(p.cfg.can_modules, 0, 255)
    b[5] = 0x50  # 'P'
    b[6] = 0x4E  # 'N'


_NAME = b"MPY-BMS "


def e35e(b, st, p):
    text(b, _NAME)


def e379(b, st, p):
    put16(b, 0, clamp(st.capacity_mah // 1000, 0, 65535))


FRAMES = (
    (0x351, 1000, e351),
    (0x355, 1000, e355),
    (0x356, 1000, e356),
    (0x359, 1000, e359),
    (0x35C, 1000, e35c),
    (0x35E, 1000, e35e),
    (0x379, 1000, e379),
)
