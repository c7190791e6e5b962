# fake_bms: a duck-typed stand-in for bms.app's BMS object, for protocol tests.
#
#   bms = FakeBms(cells=15)       .snap .prot .est .limits .cfg .events .status
#                                 (+ .can / .modbus = None)
#   bms.set_cells([3300] * 15)    fills cell_mv and derived stats, pack_mv = sum
# Field names and units follow CONTRIBUTING.md's module contracts. Works under both interpreters.
from bms.config import Config
from bms.events import EventLog
from bms.snapshot import Snapshot
from bms.status import Status

# Names of the fault/warning bits of this fake (bit i = FAULT_NAMES[i]). Tests pass them to
# CanProtocol(fault_names=...) so they do not depend on bms.protection's real list.
FAULT_NAMES = (
    "cell_ov",  # 0
    "cell_uv",  # 1
    "cell_deep_uv",  # 2
    "pack_ov",  # 3
    "pack_uv",  # 4
    "chg_oc",  # 5
    "dsg_oc",  # 6
    "scd",  # 7
    "chg_ot",  # 8
    "chg_ut",  # 9
    "dsg_ot",  # 10
    "dsg_ut",  # 11
    "fet_ot",  # 12
    "afe",  # 13
    "imbalance",  # 14
    "stale",  # 15
)


def bit(name):
    return 1 << FAULT_NAMES.index(name)


class FakeProt:
    def __init__(self):
        self.state = 1
        self.faults = 0
        self.warnings = 0
        self.latched = 0
        self.chg_allowed = True
        self.dsg_allowed = True
        self.chg_fet = True
        self.dsg_fet = True


class FakeEst:
    def __init__(self):
        self.soc_pct = 50.0
        self.soc_err_pct = 2.0
        self.soh_pct = 100.0
        self.capacity_mah = 100000
        self.r_mohm = 10
        self.cycles = 0


class FakeLimits:
    def __init__(self):
        self.cvl_mv = 56000
        self.ccl_ma = 50000
        self.dcl_ma = 100000
        self.dvl_mv = 48000
        self.chg_enable = True
        self.dsg_enable = True
        self.force_charge = 0
        self.full_charge_req = False


class FakeBms:
    def __init__(self, cells=15, n_temps=2, cfg=None, events=None, **cfg_overrides):
        if cfg is None:
            cfg = Config(cells=cells, **cfg_overrides)
        self.cfg = cfg
        self.events = events if events is not None else EventLog(64)
        self.snap = Snapshot(cells, n_temps)
        self.status = Status(cells, n_temps)  # the outbound view (filled by the real app)
        self.prot = FakeProt()
        self.est = FakeEst()
        self.limits = FakeLimits()
        self.status = Status(cells, n_temps)  # the app's outbound view (registers 49-51)
        self.can = None
        self.modbus = None
        self.set_cells([3300] * cells)
        for i in range(n_temps):
            self.snap.temp_dc[i] = 250 + 10 * i
        self.snap.current_ma = 0
        self.snap.update_stats()

    def set_cells(self, mv):
        s = self.snap
        for i in range(s.n_cells):
            s.cell_mv[i] = mv[i]
        s.update_stats()
        s.pack_mv = s.cell_sum_mv
