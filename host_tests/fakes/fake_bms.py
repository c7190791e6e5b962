# fake_bms: a duck-typed stand-in for bms.app's BMS object, for protocol tests.
#
#   bms = FakeBms(cells=15)       .snap .prot .est .limits .thermal .cfg .events .status
#                                 (+ .can / .modbus = None)
#   bms.set_cells([3300] * 15)    fills cell_mv and derived stats, pack_mv = sum
#   bms.fill(now_ms=0)            runs the real bms.status.Status fills from the fake parts,
#                                 as the app does at the end of its cycles
# Field names and units follow CONTRIBUTING.md's module contracts. Works under both interpreters.
# Fault bits are the real table's (bms.faults): bit("cell_ov") = 1 << faults.NAMES.index(...).
from bms import faults
from bms.config import Config
from bms.events import EventLog
from bms.snapshot import FLAG_CELLS_VALID, FLAG_PACK_VALID, FLAG_TEMPS_VALID, Snapshot
from bms.status import Status

FAULT_NAMES = faults.NAMES


def bit(name):
    return 1 << faults.NAMES.index(name)


class FakeProt:
    def __init__(self):
        self.state = 2
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
        self.chg_wh_total = 0.0
        self.dsg_wh_total = 0.0


class FakeLimits:
    def __init__(self):
        self.cvl_mv = 51750
        self.ccl_ma = 50000
        self.dcl_ma = 100000
        self.dvl_mv = 43500
        self.chg_enable = True
        self.dsg_enable = True
        self.force_charge = 0
        self.full_charge_req = False
        self.mode = 0


class FakeThermal:
    def __init__(self):
        self.heater = False
        self.fan = False


class FakeAfe:
    shunt_uohm = 1000


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
        self.thermal = FakeThermal()
        self.afe = FakeAfe()
        self.status = Status(cells, n_temps)
        self.bal_mask = 0
        self.config_foreign = None
        self.afe_refusals = 0
        self.afe_inits = 0
        self.can = None
        self.modbus = None
        self.set_cells([3300] * cells)
        for i in range(n_temps):
            self.snap.temp_dc[i] = 250 + 10 * i
        self.snap.current_ma = 0
        self.snap.seq = 1
        self.snap.flags = FLAG_CELLS_VALID | FLAG_PACK_VALID | FLAG_TEMPS_VALID
        self.snap.update_stats()
        self.fill()

    def set_cells(self, mv):
        s = self.snap
        for i in range(s.n_cells):
            s.cell_mv[i] = mv[i]
        s.update_stats()
        s.pack_mv = s.cell_sum_mv

    def fill(self, now_ms=0):
        """The app's fills: the status view from the (fake) parts."""
        self.status.fill_fast(self, now_ms)
        self.status.fill_slow(self, now_ms)
        return self.status
