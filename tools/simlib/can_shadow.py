# simlib.can_shadow: every other inverter profile encoded from the same firmware state
# (tools/sim.py --can-shadow pylon,victron,...; host only).
#
# The firmware sends its configured profile over the emulated bus. A shadow is one more
# bms.canbus.CanProtocol per listed profile, polled right after the firmware's comms cycle
# with the same Bms object (so it reads the same status view), whose "controller" writes
# every frame it sends into the candump log with the profile as the channel name:
#   (12.250000) victron 351#...
# One simulated run then shows what every profile would have told the inverter, frame by
# frame, in the same situation. It also writes <candump>.fet: "t_ms chg dsg" whenever
# protection's FET commands change (the truth the frames are judged against).
from bms.canbus import CanProtocol


class _Cfg:
    """The firmware's configuration with another can_profile."""

    def __init__(self, cfg, profile):
        self._cfg = cfg
        self.can_profile = profile

    def __getattr__(self, name):
        return getattr(self._cfg, name)


class _LogCan:
    def __init__(self, shadow, name):
        self.shadow = shadow
        self.name = name

    def send(self, can_id, data, dlc):
        self.shadow.write(self.name, can_id, data, dlc)
        return True

    def recv_into(self, buf):
        return None


class CanShadow:
    def __init__(self, bms, profiles, log_file, fet_path):
        self.log = log_file
        self.t_ms = 0
        self.protos = []
        for prof in profiles:
            if prof and prof != bms.cfg.can_profile:
                self.protos.append(CanProtocol(_LogCan(self, prof), _Cfg(bms.cfg, prof),
                                               bms.events))
        self.fet = open(fet_path, "w")
        self._fets = None

    def write(self, name, can_id, data, dlc):
        if self.log is None:
            return
        self.log.write("(%d.%06d) %s %03X#%s\n" % (self.t_ms // 1000, (self.t_ms % 1000) * 1000,
                                                  name, can_id,
                                                  "".join("%02X" % data[i] for i in range(dlc))))

    def poll(self, bms, now_ms):
        self.t_ms = now_ms
        f = (1 if bms.prot.chg_fet else 0, 1 if bms.prot.dsg_fet else 0)
        if f != self._fets:
            self._fets = f
            self.fet.write("%d %d %d\n" % (now_ms, f[0], f[1]))
        for p in self.protos:
            p.poll(bms, now_ms)

    def close(self):
        self.fet.close()
