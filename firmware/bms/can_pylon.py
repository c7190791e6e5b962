# bms.can_pylon: the Pylontech LV CAN profile (can_profile = "pylon"), and the encoders the
# Pylon-family profiles (deye, solark) share.
#
# Layout: "PYLON CANBUS Protocol" V1.2 (2018) as a genuine Pylontech sends it and as the
# open decoders read it (OpenDTU-OnBattery src/battery/pylontech/Provider.cpp; mikaabra's
# Deye-site decoder; ai-republic's Pylon reader). 500 kbit/s, little-endian, DLC 8, all
# frames once a second; the inverter's 0x305 marks it present.
#
#   id     bytes  content                                     encoding
#   0x351  0-1    CVL (charge voltage limit)                  u16 0.1 V, rounded down
#          2-3    CCL (charge current limit)                  s16 0.1 A, >= 0, rounded down
#          4-5    DCL (discharge current limit)               s16 0.1 A, >= 0, rounded down
#          6-7    DVL (discharge voltage limit)               u16 0.1 V, rounded up
#   0x355  0-1    SOC; 2-3 SOH; 4-7 0                          u16 1 %
#   0x356  0-1    pack voltage; 2-3 current (+ = charging);    s16 0.01 V, s16 0.1 A,
#          4-5    hottest valid cell temperature; 6-7 0        s16 0.1 degC (never 0x8000)
#   0x359  0-1    protection flags, 2-3 warning flags (below); 4 modules (can_modules);
#          5-6    'P' 'N'; 7 0
#   0x35C  0      b7 charge enable, b6 discharge enable, b4 force charge (II), b3 full-charge
#                 request; b5 (force charge I) never; byte 1.. 0
#   0x35E  0-7    "PYLON   "
#
# 0x359 bits (protection byte 0 / warning byte 2, second byte 1 / 3), from the fault table's
# inverter category: b0.1 high voltage, b0.2 low voltage, b0.3 high temperature, b0.4 low
# temperature, b0.7 discharge over-current (and short circuit), b1.0 charge over-current,
# b1.3 system error (every BMS-internal fault) -- plus b1.7, which bit-7 decoders read as
# "system error" (mikaabra, Battery-Emulator, ArminJo) and every vendor document leaves
# blank. Warnings: the same bits in bytes 2-3; BMS-internal warnings only as b3.3 ("internal
# communication fail" in Pylon V1.2; b3.7 is read as "charge current high" by ai-republic's
# reader, so it is never set). A thermistor without a value sets b3.3 at once.
#
# Request bits: b7/b6 mirror the status view's chg_enable/dsg_enable exactly (CCL/DCL are 0
# whenever they are clear). b4 "force charge II" (Pylon V1.2: charge before the battery
# shuts down; Pylon recommends inverters use it) only with b7; b5 "force charge I" is never
# sent: OpenDTU-OnBattery starts a grid charger at full power on b5 alone, ignoring b7 and
# CCL. b3 only with b7, for the scheduled full charge.
from bms.canbus import clamp, div_round, div_up, put16, text

NAME = "pylon"
RX_IDS = (0x305,)

# category -> 0x359 bit (byte * 8 + bit of the protection/warning pair; 0xFF: none)
# none, high V, low V, high T, low T, chg high T, chg low T, dsg OC, chg OC, short, internal,
# imbalance
P359 = b"\xff\x01\x02\x03\x04\x03\x04\x07\x08\x07\x0b\xff"


def e351(b, st, p):
    put16(b, 0, clamp(st.cvl_mv // 100, 1, 65535))  # never 0, never above the BMS's limit
    put16(b, 2, clamp(st.ccl_ma // 100, 0, 32767))
    put16(b, 4, clamp(st.dcl_ma // 100, 0, 32767))
    put16(b, 6, clamp(div_up(st.dvl_mv, 100), 1, 65535))


def e355(b, st, p):
    put16(b, 0, clamp((st.soc_cpct + 50) // 100, 0, 100))
    put16(b, 2, clamp((st.soh_cpct + 50) // 100, 0, 100))


def e356(b, st, p):
    put16(b, 0, clamp(div_round(st.pack_mv, 10), 0, 32767))
    put16(b, 2, clamp(div_round(st.current_ma, 100), -32767, 32767))
    put16(b, 4, clamp(st.temp_report_dc, -32767, 32767))


def flags359(b, st, p, b17):
    """Bytes 0-3 of 0x359. b17: also set b1.7 with b1.3 (system error)."""
    p.flag_bits(b, 0, st.faults, P359)
    p.flag_bits(b, 2, st.warnings, P359)
    if b17 and b[1] & 0x08:
        b[1] |= 0x80
    if not st.temp_valid:
        b[3] |= 0x08


def e359(b, st, p):
    flags359(b, st, p, True)
    b[4] = clamp(p.cfg.can_modules, 0, 255)
    b[5] = 0x50  # 'P'
    b[6] = 0x4E  # 'N'


def e35c(b, st, p):
    f = 0
    if st.chg_enable:
        f = 0x80
        if st.force_charge:
            f |= 0x10
        if st.full_charge_req:
            f |= 0x08
    if st.dsg_enable:
        f |= 0x40
    b[0] = f


_NAME = b"PYLON   "


def e35e(b, st, p):
    text(b, _NAME)


FRAMES = (
    (0x351, 1000, e351),
    (0x355, 1000, e355),
    (0x356, 1000, e356),
    (0x359, 1000, e359),
    (0x35C, 1000, e35c),
    (0x35E, 1000, e35e),
)
