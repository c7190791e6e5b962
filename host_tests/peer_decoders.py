# peer_decoders: the BMS's CAN frames read the way real peers read them (host tests only).
#
# Each decoder is written from the peer's own source or document (repository, commit, file
# and lines in /work/notes/peers-can.md and README "Inverter brands"), NOT from bms.can_*:
# a test that decodes with the encoder's own assumptions proves nothing. Every decoder takes
# frames one by one, feed(can_id, data) with data of the frame's DLC, and keeps what the
# peer would keep (a dict, .v), plus what the peer would *do* where that is known.
#
#   OpenDtu      OpenDTU-OnBattery src/battery/pylontech/Provider.cpp (1bfc0cc6): no DLC
#                check, CCL/DCL/V/I/T signed, SOC cast to uint8, 0x359 b1.3 = BMS internal,
#                b1.7 not read, 0x35C b5 "charge immediately" (drives a grid charger at full
#                power, ignoring b7 and CCL: PowerLimiter, gridcharger/huawei Provider.cpp)
#   MikaDeye     mikaabra/pylontech-bms-mqtt deye-bms-can.yaml + set_include.h (f05cd4b): a
#                frame with DLC < 8 is dropped; 0x351 all unsigned, ignored unless 30 <= CVL,
#                DVL <= 65 V and 0 <= CCL, DCL <= 500 A; 0x355 ignored above 100; 0x359 b1.7
#                = system error, b3.7 = comms fail; 0x35C b7, b6, b5
#   AiRepublic   ai-republic bms-to-inverter PylonBmsCANProcessor.java (59ac882): CCL/DCL
#                signed; 0x359 b1.3 read as "cell temperature high" ALARM, b3.7 as "charge
#                current high" warning, b3.3 internal communication failure, byte 4 = cells
#   BitSeven     the bit-7 convention of Battery-Emulator PYLON-LV-CAN.cpp and ArminJo
#                Pylontech_CAN.h: 0x359 b1.7 = system error (what such a reader shows)
#   UnsignedRec  natecostello/rec_bms_status recq/canbus.py (ab555ed): 0x351 unsigned,
#                0x356 voltage unsigned, current signed, temperature UNSIGNED (0x8000 would be
#                +3276.8 degC)
#   DeyeInverter Deye (DEYE V1.2 = PYLON V1.2) with the field facts: the 0x35E name must start
#                with "PYLON" (ArminJo Pylontech_CAN.h), a 0.1 V / 0.1 A stop sentinel gives
#                W31 (diyBMSv4ESP32 #216), 0x356 voltage 0.01 V (x10 error: W31, ArminJo #5)
#   SolArk       Sol-Ark CAN protocol rev 1.3: 8-byte frames only, 0x356 voltage 0.1 V, b4 =
#                Forced Charge Request 1, b5 = Request 2, b1.3 system error, unused bytes 0
#   VictronGx    Victron GX (dbus-systemcalc-py delegates/dvcc.py, 9730db0): CVL/CCL/DCL from
#                0x351, CVL passed through (0 would be obeyed); the Pylontech quirk (product
#                id 0xB009: CVL replaced and CCL raised to >= C/4 when 20 < CVL <= 55 V) if the
#                battery looks like a Pylontech -- what triggers it is not public; taken here
#                as a "PYLON" name or a Pylon 0x359 with 'P' 'N' (inference)
#   SunnyIsland  SMA FSS-ConnectingBat-TI-en-10 5.1-5.3, 7.1: only SMA ids; out-of-range
#                values silently ignored (the last accepted stays); 0x8000 / 0xFFFF = invalid
#                (temperature -> 25.0 degC); 0x35A pairs, lower bit raised


def u16(d, o):
    return d[o] | (d[o + 1] << 8)


def s16(d, o):
    v = u16(d, o)
    return v - 0x10000 if v & 0x8000 else v


def bit(d, byte, b):
    return bool(d[byte] >> b & 1) if byte < len(d) else False


def _pad(d):
    # a receiver without a DLC check reads whatever its buffer held: model it as zeros
    return bytes(d) + bytes(8 - len(d)) if len(d) < 8 else bytes(d)


class OpenDtu:
    def __init__(self):
        self.v = {}
        self.charge_immediately = False  # latched: no age check on this flag

    def feed(self, cid, data):
        d = _pad(data)
        v = self.v
        if cid == 0x351:
            v["cvl_v"] = u16(d, 0) * 0.1
            v["ccl_a"] = s16(d, 2) * 0.1
            v["dcl_a"] = s16(d, 4) * 0.1
            v["dvl_v"] = u16(d, 6) * 0.1
        elif cid == 0x355:
            v["soc"] = u16(d, 0) & 0xFF
            v["soh"] = u16(d, 2)
        elif cid == 0x356:
            v["voltage_v"] = s16(d, 0) * 0.01
            v["current_a"] = s16(d, 2) * 0.1
            v["temp_c"] = s16(d, 4) * 0.1
        elif cid == 0x359:
            v["alarm_dsg_oc"] = bit(d, 0, 7)
            v["alarm_under_t"] = bit(d, 0, 4)
            v["alarm_over_t"] = bit(d, 0, 3)
            v["alarm_under_v"] = bit(d, 0, 2)
            v["alarm_over_v"] = bit(d, 0, 1)
            v["alarm_bms_internal"] = bit(d, 1, 3)
            v["alarm_chg_oc"] = bit(d, 1, 0)
            v["warn_bms_internal"] = bit(d, 3, 3)
            v["warn_chg_oc"] = bit(d, 3, 0)
            v["modules"] = d[4]
        elif cid == 0x35C:
            v["charge_enabled"] = bit(d, 0, 7)
            v["discharge_enabled"] = bit(d, 0, 6)
            self.charge_immediately = bit(d, 0, 5)
            v["charge_immediately"] = self.charge_immediately
        elif cid == 0x35E:
            v["manufacturer"] = bytes(data).decode("latin-1")
        else:
            return False
        return True


class MikaDeye:
    def __init__(self):
        self.v = {}
        self.errors = 0
        self.ignored = 0

    def feed(self, cid, data):
        if cid not in (0x351, 0x355, 0x359, 0x370, 0x35C):
            return False
        if len(data) < 8:
            self.errors += 1
            return False
        d = bytes(data)
        v = self.v
        if cid == 0x351:
            cvl, ccl, dcl, dvl = u16(d, 0) / 10, u16(d, 2) / 10, u16(d, 4) / 10, u16(d, 6) / 10
            if not (30 <= cvl <= 65 and 30 <= dvl <= 65 and 0 <= ccl <= 500 and 0 <= dcl <= 500):
                self.ignored += 1
                return False
            v.update(cvl_v=cvl, ccl_a=ccl, dcl_a=dcl, dvl_v=dvl)
        elif cid == 0x355:
            soc, soh = u16(d, 0), u16(d, 2)
            if soc > 100 or soh > 100:
                self.ignored += 1
                return False
            v.update(soc=soc, soh=soh)
        elif cid == 0x359:
            v["system_error"] = bit(d, 1, 7)
            v["comms_fail"] = bit(d, 3, 7)
            v["chg_oc"] = bit(d, 1, 0)
            v["over_v"] = bit(d, 0, 1)
            v["under_v"] = bit(d, 0, 2)
            v["modules"] = d[4]
        elif cid == 0x35C:
            v["charge_enable"] = bit(d, 0, 7)
            v["discharge_enable"] = bit(d, 0, 6)
            v["force_charge_1"] = bit(d, 0, 5)
        return True


class AiRepublic:
    def __init__(self):
        self.v = {}

    def feed(self, cid, data):
        d = _pad(data)
        v = self.v
        if cid == 0x351:
            v.update(cvl_v=u16(d, 0) / 10, ccl_a=s16(d, 2) / 10, dcl_a=s16(d, 4) / 10,
                     dvl_v=u16(d, 6) / 10)
        elif cid == 0x356:
            v.update(voltage_v=s16(d, 0) / 100, current_a=s16(d, 2) / 10, temp_c=s16(d, 4) / 10)
        elif cid == 0x359:
            v["cell_temp_high_alarm"] = bit(d, 1, 3)  # its reading of the system-error bit
            v["charge_current_high_warning"] = bit(d, 3, 7)
            v["internal_comm_failure"] = bit(d, 3, 3)
            v["cells"] = d[4]
        elif cid == 0x35C:
            v.update(charge=bit(d, 0, 7), discharge=bit(d, 0, 6), force=bit(d, 0, 5) or
                     bit(d, 0, 4))
        else:
            return False
        return True


class BitSeven:
    def __init__(self):
        self.v = {}

    def feed(self, cid, data):
        if cid != 0x359:
            return False
        d = _pad(data)
        self.v["system_error"] = bit(d, 1, 7)
        return True


class UnsignedRec:
    def __init__(self):
        self.v = {}

    def feed(self, cid, data):
        d = _pad(data)
        if cid == 0x351:
            self.v.update(cvl_v=u16(d, 0) / 10, ccl_a=u16(d, 2) / 10, dcl_a=u16(d, 4) / 10)
        elif cid == 0x356:
            self.v.update(voltage_v=u16(d, 0) / 100, current_a=s16(d, 2) / 10,
                          temp_c=u16(d, 4) / 10)
        else:
            return False
        return True


class DeyeInverter:
    def __init__(self):
        self.v = {}
        self.w31 = 0  # battery communication warnings (what the inverter would show)

    def feed(self, cid, data):
        d = _pad(data)
        v = self.v
        if cid == 0x35E:
            v["recognised"] = bytes(data[:5]) == b"PYLON"
        elif cid == 0x351:
            cvl, ccl = u16(d, 0) / 10, s16(d, 2) / 10
            v.update(cvl_v=cvl, ccl_a=ccl, dcl_a=s16(d, 4) / 10, dvl_v=u16(d, 6) / 10)
        elif cid == 0x356:
            v.update(voltage_v=s16(d, 0) / 100, current_a=s16(d, 2) / 10, temp_c=s16(d, 4) / 10)
        elif cid == 0x35C:
            v.update(charge=bit(d, 0, 7), discharge=bit(d, 0, 6),
                     force_charge=bit(d, 0, 4) or bit(d, 0, 5), full_charge=bit(d, 0, 3))
        elif cid == 0x359:
            v.update(system_error=bit(d, 1, 3))
        else:
            return False
        if cid in (0x351, 0x35C) and "cvl_v" in v and "charge" in v:
            cvl, ccl = v["cvl_v"], v["ccl_a"]
            if cvl <= 0.1 or (0 < ccl <= 0.1 and not v["charge"]):
                self.w31 += 1  # the 0.1 V / 0.1 A "stop" sentinel (or CVL 0)
        return True


class SolArk:
    def __init__(self):
        self.v = {}
        self.rejected = 0  # frames the inverter does not take (not 8 bytes)
        self.nonzero_reserved = 0  # bytes the document says must be 0

    def feed(self, cid, data):
        if len(data) != 8:
            self.rejected += 1
            return False
        d = bytes(data)
        v = self.v
        if cid == 0x351:
            v.update(cvl_v=u16(d, 0) / 10, ccl_a=s16(d, 2) / 10, dcl_a=s16(d, 4) / 10,
                     dvl_v=u16(d, 6) / 10)
        elif cid == 0x355:
            v.update(soc=u16(d, 0), soh=u16(d, 2))
            if any(d[4:8]):
                self.nonzero_reserved += 1
        elif cid == 0x356:
            v.update(voltage_v=s16(d, 0) / 10, current_a=s16(d, 2) / 10, temp_c=s16(d, 4) / 10)
        elif cid == 0x359:
            v.update(system_error=bit(d, 1, 3), critical=bit(d, 3, 3))
            if d[1] & 0x80 or d[3] & 0x80 or d[7]:
                self.nonzero_reserved += 1
        elif cid == 0x35C:
            v.update(charge=bit(d, 0, 7), discharge=bit(d, 0, 6),
                     forced_1=bit(d, 0, 4), forced_2=bit(d, 0, 5), full=bit(d, 0, 3))
            if any(d[1:8]):
                self.nonzero_reserved += 1
        elif cid == 0x379:
            v["capacity_ah"] = u16(d, 0)
        else:
            return False
        return True


class VictronGx:
    def __init__(self, capacity_ah=100):
        self.v = {}
        self.capacity_ah = capacity_ah
        self.pylontech = False  # would the GX apply its Pylontech quirk?

    def feed(self, cid, data):
        d = _pad(data)
        v = self.v
        if cid == 0x351:
            v.update(cvl_v=u16(d, 0) / 10, ccl_a=s16(d, 2) / 10, dcl_a=s16(d, 4) / 10)
        elif cid == 0x355:
            v.update(soc=u16(d, 0), soh=u16(d, 2))
        elif cid == 0x356:
            v.update(voltage_v=s16(d, 0) / 100, current_a=s16(d, 2) / 10, temp_c=s16(d, 4) / 10)
        elif cid == 0x35E:
            if bytes(data[:5]) == b"PYLON":
                self.pylontech = True
        elif cid == 0x359:
            if d[5:7] == b"PN":
                self.pylontech = True
        elif cid == 0x35A:
            v["alarms"] = bytes(d[:4])
            v["warnings"] = bytes(d[4:8])
        else:
            return False
        return True

    def effective(self):
        """(CVL, CCL) the GX applies."""
        cvl, ccl = self.v.get("cvl_v", 0), self.v.get("ccl_a", 0)
        if self.pylontech and 20 < cvl <= 55:
            return min(cvl, 52.8), max(ccl, self.capacity_ah / 4)
        return cvl, ccl


class SunnyIsland:
    IDS = (0x351, 0x355, 0x356, 0x35A, 0x35B, 0x35E, 0x35F, 0x00F)

    def __init__(self):
        self.v = {"cvl_v": 54.0, "ccl_a": 0.0, "dcl_a": 0.0, "dvl_v": 41.0, "soc": 0,
                  "temp_c": 25.0}
        self.out_of_range = 0
        self.foreign_ids = 0
        self.last_ms = {}
        self.too_fast = 0

    def _take(self, key, raw, invalid, scale, lo, hi):
        if raw == invalid:
            return  # invalid marker: the default stays
        x = raw * scale
        if lo <= x <= hi:
            self.v[key] = x
        else:
            self.out_of_range += 1  # ignored without notice; the last accepted stays

    def feed(self, cid, data, t_ms=None):
        if cid not in self.IDS:
            self.foreign_ids += 1
            return False
        if t_ms is not None:
            last = self.last_ms.get(cid)
            if last is not None and t_ms - last < 200:
                self.too_fast += 1
            self.last_ms[cid] = t_ms
        d = _pad(data)
        if cid == 0x351:
            self._take("cvl_v", u16(d, 0), 0xFFFF, 0.1, 41.0, 63.0)
            self._take("ccl_a", s16(d, 2), -0x8000, 0.1, 0.0, 120.0)
            self._take("dcl_a", s16(d, 4), -0x8000, 0.1, 0.0, 120.0)
            self._take("dvl_v", u16(d, 6), 0xFFFF, 0.1, 41.0, 48.0)
        elif cid == 0x355:
            self._take("soc", u16(d, 0), 0xFFFF, 1, 0, 100)
            self._take("soc_hires", u16(d, 4), 0xFFFF, 0.01, 0, 100)
        elif cid == 0x356:
            self._take("voltage_v", s16(d, 0), -0x8000, 0.01, 0, 327)
            self._take("temp_c", s16(d, 4), -0x8000, 0.1, -50, 100)
        elif cid == 0x35A:
            self.v["alarm_raised"] = any((d[k] >> s) & 3 == 1 for k in range(4)
                                         for s in (0, 2, 4, 6))
        return True
