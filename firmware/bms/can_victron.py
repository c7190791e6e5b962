# bms.can_victron: Victron GX "CAN-bus BMS" (can_profile = "victron").
#
# Frames as diyBMSv4ESP32's victron_canbus.cpp and esphome-yambms send them to a GX (the
# GX's driver is closed; Victron Community thread 37102 names 0x351/0x355/0x356/0x35A as the
# core set):
#   0x351  CVL, CCL, DCL, DVL (DVL is not used by a GX)   as bms.can_pylon
#   0x355  SOC, SOH (1 %), SOC 0.01 %                      u16 x 3
#   0x356  voltage 0.01 V, current 0.1 A, temperature     as bms.can_pylon
#   0x35A  alarms (bytes 0-3) / warnings (4-7), 2 bits per item (bms.canbus.alarms_35a)
#   0x35E  "MPY-BMS "          0x35F model 0, firmware, capacity Ah, 0
#   0x370/0x371 "MicroPython BMS "   0x373 min/max cell mV, min/max temperature K
# Not sent: 0x359/0x35C (Pylon frames a GX does not need) and a "PYLON" name: a GX that
# takes the battery for a Pylontech (product id 0xB009) replaces CVL and raises CCL to at
# least C/4 when CVL <= 55 V (dbus-systemcalc-py delegates/dvcc.py, Pylontech quirk), so
# charging could not be stopped. What identifies a Pylontech there is not public; this
# profile sends nothing Pylon-specific.
# Stopping charge: CCL 0 with CVL held at the pack voltage (a GX passes CVL 0 through and
# the system then discharges the pack; diyBMSv4ESP32 #175). A low-voltage fault is a 0x35A
# warning, not an alarm. The GX sends 0x305 (keep-alive) and 0x307 ("VIC" in bytes 4-6).
from bms.can_pylon import e351, e356
from bms.canbus import FW_VERSION, clamp, kelvin, put16, text

NAME = "victron"
RX_IDS = (0x305, 0x307)


def on_rx(p, cid, dlc, buf):
    if cid == 0x307 and dlc >= 7 and buf[4] == 0x56 and buf[5] == 0x49 and buf[6] == 0x43:
        p.victron_gx = True


def e355(b, st, p):
    put16(b, 0, clamp((st.soc_cpct + 50) // 100, 0, 100))
    put16(b, 2, clamp((st.soh_cpct + 50) // 100, 0, 100))
    put16(b, 4, clamp(st.soc_cpct, 0, 10000))


def e35a(b, st, p):
    p.alarms_35a(b, st, True)


_NAME = b"MPY-BMS "
_BMS_NAME = b"MicroPython BMS "


def e35e(b, st, p):
    text(b, _NAME)


def e35f(b, st, p):
    put16(b, 2, FW_VERSION)
    put16(b, 4, clamp(st.capacity_mah // 1000, 0, 65535))


def e370(b, st, p):
    text(b, _BMS_NAME, 0)


def e371(b, st, p):
    text(b, _BMS_NAME, 8)


def e373(b, st, p):
    put16(b, 0, clamp(st.cell_min_mv, 0, 65535))
    put16(b, 2, clamp(st.cell_max_mv, 0, 65535))
    put16(b, 4, kelvin(st.temp_report_min_dc))
    put16(b, 6, kelvin(st.temp_report_dc))


FRAMES = (
    (0x351, 1000, e351),
    (0x355, 1000, e355),
    (0x356, 1000, e356),
    (0x35A, 1000, e35a),
    (0x35E, 1000, e35e),
    (0x35F, 1000, e35f),
    (0x370, 1000, e370),
    (0x371, 1000, e371),
    (0x373, 1000, e373),
)
