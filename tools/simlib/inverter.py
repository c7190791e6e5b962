# simlib.inverter: a simulated inverter on the VirtualBus (host VM and CPython).
#
#   inv = Inverter(bus, profile="pylon")   sends 0x305 every second while on; ACKs frames
#   inv.set_profile(name)           the BMS's can_profile: how to read its frames, what to send
#                                   (victron: + 0x307 "VIC"; sma: 0x305 with its V/I/T/SOC,
#                                   0x306, 0x307; solark: 0x356 voltage in 0.1 V; victron/sma
#                                   have no 0x35C: charging is enabled by CCL > 0)
#   inv.on = False                  switched off: silent and no ACK (-> "inverter lost" on the BMS)
#   inv.requested_ma(wanted_ma, pack_mv) -> battery current the inverter actually asks for
#   inv.request(want_ma, bms, obey_limits, t_ms)   the simlib.Simulator.inverter_request() hook
#
# It decodes 0x351 (CVL/CCL/DCL/DVL), 0x35C (enable flags), 0x355 and 0x356 and obeys them the
# way a Pylon-compatible inverter does: no charging above CVL, CCL/DCL clip the current,
# nothing while the limits are older than stale_ms (Victron stops after ~3 s without 0x351).
# cvl_changes counts direction changes of the CVL it received (a CVL that follows the pack
# voltage makes a real inverter toggle).
from simlib.mcp2515_emu import PyNode


def _u16(d, o):
    return d[o] | (d[o + 1] << 8)


def _s16(d, o):
    v = _u16(d, o)
    return v - 0x10000 if v & 0x8000 else v


class Inverter(PyNode):
    def __init__(self, bus, period_ms=1000, stale_ms=3000, victron=False, profile="pylon"):
        PyNode.__init__(self, bus, ack=True)
        self.period_ms = period_ms
        self.stale_ms = stale_ms
        self.set_profile("victron" if victron else profile)
        self._next_ms = 0
        self.cvl_mv = 0
        self.ccl_ma = 0
        self.dcl_ma = 0
        self.dvl_mv = 0
        self.chg_enable = False
        self.dsg_enable = False
        self.force_charge = False
        self.soc_pct = -1
        self.soh_pct = -1
        self.pack_mv = 0
        self.current_ma = 0
        self.temp_dc = 0
        self.flags359 = bytes(8)
        self.alarms35a = bytes(8)
        self.limits_ms = -1  # time of the last 0x351
        self.sent = 0
        self.cvl_changes = 0
        self._cvl_dir = 0

    def set_profile(self, name):
        self.profile = name
        self.victron = name == "victron"  # also send 0x307 with "VIC"
        self.sma = name == "sma"
        self.flags_35c = name in ("pylon", "deye", "solark")
        self.v_scale = 100 if name == "solark" else 10  # mV per count of 0x356 voltage

    def on_frame(self, can_id, d):
        if len(d) < 8:
            d = bytes(d) + bytes(8 - len(d))
        now = self.bus.now_ms
        if can_id == 0x351:
            cvl = _u16(d, 0) * 100
            if self.limits_ms >= 0 and cvl != self.cvl_mv:
                k = 1 if cvl > self.cvl_mv else -1
                if self._cvl_dir and k != self._cvl_dir:
                    self.cvl_changes += 1
                self._cvl_dir = k
            self.cvl_mv = cvl
            self.ccl_ma = _s16(d, 2) * 100
            self.dcl_ma = _s16(d, 4) * 100
            self.dvl_mv = _u16(d, 6) * 100
            self.limits_ms = now
            if not self.flags_35c:  # no request frame: the limits are the permission
                self.chg_enable = self.ccl_ma > 0
                self.dsg_enable = self.dcl_ma > 0
        elif can_id == 0x35C:
            self.chg_enable = bool(d[0] & 0x80)
            self.dsg_enable = bool(d[0] & 0x40)
            self.force_charge = bool(d[0] & 0x30)
        elif can_id == 0x355:
            self.soc_pct = _u16(d, 0)
            self.soh_pct = _u16(d, 2)
        elif can_id == 0x356:
            self.pack_mv = _s16(d, 0) * self.v_scale
            self.current_ma = _s16(d, 2) * 100
            self.temp_dc = _s16(d, 4)
        elif can_id == 0x359:
            self.flags359 = bytes(d)
        elif can_id == 0x35A:
            self.alarms35a = bytes(d)

    def tick(self, now_ms, ms):
        if not self.on:
            return
        if now_ms >= self._next_ms:
            self._next_ms = now_ms + self.period_ms
            if self.sma:
                # Sunny Island: its own V (0.1 V), I (0.1 A, - = charging), T, SOC (0.1 %)
                v = self.pack_mv // 100
                i = (-self.current_ma // 100) & 0xFFFF
                soc = max(0, self.soc_pct) * 10
                d = bytes((v & 0xFF, v >> 8, i & 0xFF, i >> 8, 250 & 0xFF, 0, soc & 0xFF,
                           soc >> 8))
                if self.send(0x305, d):
                    self.sent += 1
                self.send(0x306, bytes(8))
                self.send(0x307, bytes(8))
                return
            if self.send(0x305, bytes(8)):
                self.sent += 1
            if self.victron:
                self.send(0x307, b"\x12\x34\x00\x00VIC")

    def limits_valid(self, now_ms=None):
        if now_ms is None:
            now_ms = self.bus.now_ms
        return self.on and self.limits_ms >= 0 and now_ms - self.limits_ms <= self.stale_ms

    def requested_ma(self, wanted_ma, pack_mv):
        # Clip the battery current the inverter wants (+ = charge) to what the BMS allows.
        if not self.limits_valid():
            return 0
        if wanted_ma > 0:
            if not self.chg_enable or self.ccl_ma <= 0 or pack_mv >= self.cvl_mv:
                return 0
            # constant-voltage phase: the current falls as the pack approaches CVL
            # (about 1 A per 50 mV of headroom, like a charger's CV loop; a stiffer loop rings)
            return min(wanted_ma, self.ccl_ma, (self.cvl_mv - pack_mv) * 20)
        if wanted_ma < 0:
            if not self.dsg_enable or self.dcl_ma <= 0:
                return 0
            if self.dvl_mv > 0 and pack_mv <= self.dvl_mv:
                return 0
            return max(wanted_ma, -self.dcl_ma)
        return 0

    def request(self, want_ma, bms=None, obey_limits=True, t_ms=None):
        # simlib.Simulator.inverter_request() hook: obey_limits=False models an inverter that
        # ignores the BMS (the BMS must protect itself); the pack voltage is the BMS's own
        # measurement when available, else the last 0x356 the inverter decoded.
        if t_ms is not None:
            self.bus.set_time(t_ms)
        if not obey_limits:
            return want_ma if self.on else 0
        pack = self.pack_mv
        if bms is not None and getattr(bms, "snap", None) is not None and bms.snap.pack_mv:
            pack = bms.snap.pack_mv
        return self.requested_ma(want_ma, pack)
