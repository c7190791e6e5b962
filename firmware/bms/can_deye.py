# bms.can_deye: Deye / Sunsynk LV (and Sofar, Growatt in Pylon mode) on the Pylon protocol
# (can_profile = "deye").
#
# Deye's own "DEYE CANBUS Protocol" V1.2 is the Pylon V1.2 document with "DEYE" as the
# example name; this profile sends the pylon frames (bms.can_pylon) with the choices peers
# found to work on Deye:
# * 0x35E "PYLON   ": Deye recognises battery names that start with PYLON (ArminJo
#   JK-BMSToPylontechCAN Pylontech_CAN.h: "PYLONDIY" works, "DIYPYLON" does not).
# * Stopping: CCL 0 with b7 clear and CVL held at the pack voltage (bms.limits). Never the
#   0.1 V / 0.1 A "stop" sentinel: Deye shows W31 and keeps charging (diyBMSv4ESP32 #216).
# * DLC 8 everywhere (Deye accepts it; esphome-yambms sends all-8 frames to Deye).
# * 0x355 bytes 4-5 SOC in 0.01 %, 0x356 bytes 6-7 the cycle count (esphome-yambms
#   yambms_canbus.yaml: the layout it sends to Deye; Sofar shows the cycles). A Pylon-only
#   reader ignores both (blank in Pylon/Deye V1.2).
# * b4 force charge: Deye charges from the grid to CVL and shows "Request Force Charge"
#   (esphome-yambms comment); only with b7, like every request bit here.
# The mikaabra decoder (a sniffer on a Deye site) drops frames with DLC < 8 and 0x351 values
# outside 30-65 V / 0-500 A: a 48 V pack stays inside.
from bms.can_pylon import e351, e355, e356, e359, e35c, e35e
from bms.canbus import clamp, put16

NAME = "deye"
RX_IDS = (0x305,)


def e355_deye(b, st, p):
    e355(b, st, p)
    put16(b, 4, clamp(st.soc_cpct, 0, 10000))


def e356_deye(b, st, p):
    e356(b, st, p)
    put16(b, 6, clamp(st.cycles_n, 0, 65535))


FRAMES = (
    (0x351, 1000, e351),
    (0x355, 1000, e355_deye),
    (0x356, 1000, e356_deye),
    (0x359, 1000, e359),
    (0x35C, 1000, e35c),
    (0x35E, 1000, e35e),
)
