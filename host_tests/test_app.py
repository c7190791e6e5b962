# bms.app on the virtual board: what the runtime does with persisted state at boot (a stored
# configuration made for another pack identity is not applied, and says so in the log, the
# status view, the REPL and Modbus), the factory reset (REPL and Modbus), and runtime changes
# of the hardware limits (programmed into the emulated AFE and read back before they apply).
import gc
import sys

sys.path.append("boards/sim")

import board  # noqa: E402
from simlib import Simulator  # noqa: E402
from simlib.afe_emu import OV_TRIP, PROTECT2  # noqa: E402
from test_modbus import FakePin, FakeUart, crc16, read_req, write1  # noqa: E402

from bms import events as ev  # noqa: E402
from bms.app import Bms  # noqa: E402
from bms.config import defaults  # noqa: E402
from bms.diag import Diag  # noqa: E402
from bms.store import ST_FOREIGN, Store  # noqa: E402

PIN = 4321


def _fresh(path):
    import os

    for d in ("build", "build/sim", path):
        try:
            os.mkdir(d)
        except OSError:
            pass
    for fn in os.listdir(path):
        os.remove(path + "/" + fn)


def _hw(path, chemistry="lfp", cells=4, capacity_mah=100000, modbus=False):
    board.configure(chemistry=chemistry, cells=cells, capacity_mah=capacity_mah)
    sim = Simulator(chemistry=chemistry, cells=cells, capacity_mah=capacity_mah,
                    shunt_uohm=board.SHUNT_UOHM)
    if modbus:
        sim.rs485_de = FakePin()
        sim.uart = FakeUart(sim.rs485_de)
    hw = board.open(sim)
    hw.data_dir = path
    return hw


def _booted(path, cycles=12, **kw):
    """A Bms on the virtual board, booted and run for `cycles` measure cycles."""
    hw = _hw(path, **kw)
    b = Bms(hw)
    b.boot()
    _run(b, cycles)
    return b


def _run(b, cycles):
    sim = b.hw.sim
    for _ in range(cycles):
        sim.advance(250)
        now = sim.clock.now_ms()
        b.fast_cycle(now)
        if now % 1000 == 0:
            b.slow_cycle(now)


def _repl(b):
    out = []
    return Diag(b, out=out.append), out


def _store_events(b, status):
    return [e for e in b.events.to_list() if e[1] == ev.EV_STORE and e[3] == status]


# --- a stored configuration and the board's identity -------------------------------------------


def test_saved_config_is_used_and_one_for_another_pack_is_not():
    path = "build/sim/flash-test-app"
    _fresh(path)
    b = Bms(_hw(path))
    b.cfg.set("imbalance_warn_mv", 80)
    b.save_config(0)
    b1 = Bms(_hw(path))
    assert b1.cfg.imbalance_warn_mv == 80  # kept across a reboot
    assert b1.config_foreign is None and not _store_events(b1, ST_FOREIGN)
    other = b.cfg.as_dict()
    other["cells"] = 5  # saved by a 5-cell build of the board file (before identities)
    Store(path).save("config", other)
    b2 = Bms(_hw(path))
    assert b2.cfg.cells == 4 and b2.cfg.imbalance_warn_mv != 80  # board defaults instead
    assert _store_events(b2, ST_FOREIGN)
    assert "cells" in b2.config_foreign


def test_config_for_another_chemistry_and_capacity_is_not_applied():
    path = "build/sim/flash-test-app"
    _fresh(path)
    # saved by an NMC 50 Ah build of the board file
    b = Bms(_hw(path, chemistry="nmc", capacity_mah=50000))
    b.cfg.set("imbalance_warn_mv", 80)
    b.save_config(0)
    saved = Store(path).load("config")
    assert saved["identity"]["chemistry"] == "nmc"
    assert saved["identity"]["capacity_mah"] == 50000
    # the board file now says LFP 100 Ah
    b2 = _booted(path, cycles=8)
    c = b2.cfg
    assert (c.chemistry, c.cells, c.capacity_mah) == ("lfp", 4, 100000)  # the board wins
    assert c.as_dict() == defaults("lfp", 4, 100000)  # nothing of the NMC config applies
    e = _store_events(b2, ST_FOREIGN)
    assert e and e[0][2] == 3  # EV_STORE a = config (as bms.store numbers its kinds)
    # it names a differing part of the identity, saved and board value
    f = b2.config_foreign
    assert f and ("nmc" in f and "lfp" in f or "50000" in f and "100000" in f), f
    # the status view (Modbus register 49) and the REPL say so
    assert b2.status.config_foreign == 1
    d, out = _repl(b2)
    d.status()
    row = [ln for ln in out if ln.startswith("configuration")]
    assert row and "another pack" in row[0] and f in row[0], out
    # the identity is the board's: not changeable at run time
    assert d.set("chemistry", "nmc") is None and "board file" in out[-1]
    assert d.set("capacity_mah", 50000) is None and b2.cfg.capacity_mah == 100000


def test_config_for_another_shunt_or_afe_is_not_applied():
    for key, value in (("shunt_uohm", 1000), ("afe_variant", "bq76930"), ("n_temps", 2),
                       ("thermistor_beta", 3950)):
        path = "build/sim/flash-test-app"
        _fresh(path)
        gc.collect()  # four boards in a row: the previous ones are garbage (512 KB VM heap)
        b = Bms(_hw(path))
        b.cfg.set("imbalance_warn_mv", 80)
        b.save_config(0)
        st = Store(path)
        saved = st.load("config")
        saved["identity"][key] = value
        st.save("config", saved)
        b2 = Bms(_hw(path))
        assert b2.cfg.imbalance_warn_mv != 80, key
        assert _store_events(b2, ST_FOREIGN), key
        assert key in b2.config_foreign, (key, b2.config_foreign)


def test_config_of_this_pack_is_applied_and_status_says_so():
    path = "build/sim/flash-test-app"
    _fresh(path)
    b = Bms(_hw(path))
    b.cfg.set("imbalance_warn_mv", 80)
    b.save_config(0)
    b2 = _booted(path, cycles=8)
    assert b2.cfg.imbalance_warn_mv == 80 and b2.config_foreign is None
    assert b2.status.config_foreign == 0
    d, out = _repl(b2)
    d.status()
    row = [ln for ln in out if ln.startswith("configuration")]
    assert row and "in force" in row[0]


# --- factory reset ---------------------------------------------------------------------------


def test_repl_factory_reset_restores_defaults_logged_and_saved():
    path = "build/sim/flash-test-app"
    _fresh(path)
    b = _booted(path)
    d, out = _repl(b)
    assert d.set("imbalance_warn_mv", 80) == 80
    assert d.set("hw_cell_ov_mv", 3800) == 3800
    ov_changed = b.hw.sim.emu.regs[OV_TRIP]
    assert d.factory_reset() is True
    assert "defaults" in out[-1]
    assert b.cfg.as_dict() == defaults("lfp", 4, 100000)
    e = [x for x in b.events.to_list() if x[1] == ev.EV_CONFIG_RESET]
    assert e and e[-1][2] == 2  # a = interface: the REPL
    saved = Store(path).load("config")
    assert saved["imbalance_warn_mv"] == defaults("lfp", 4, 100000)["imbalance_warn_mv"]
    assert saved["identity"]["chemistry"] == "lfp"
    # the hardware limits were programmed again (the chip holds the default OV trip)
    assert b.hw.sim.emu.regs[OV_TRIP] != ov_changed
    assert abs(b.hw.sim.emu.ov_threshold_mv() - b.afe_applied["ov_mv"]) < 1
    assert b.afe_applied["ov_mv"] <= 3750
    _run(b, 8)
    assert b.prot.faults == 0 and b.prot.chg_fet and b.prot.dsg_fet


def test_factory_reset_clears_the_foreign_note():
    path = "build/sim/flash-test-app"
    _fresh(path)
    b = Bms(_hw(path, chemistry="nmc"))
    b.save_config(0)
    b2 = _booted(path, cycles=8)
    assert b2.config_foreign
    d, out = _repl(b2)
    assert d.factory_reset() is True
    assert b2.config_foreign is None
    _run(b2, 4)
    assert b2.status.config_foreign == 0
    assert Bms(_hw(path)).config_foreign is None  # saved with this board's identity


class _Modbus:
    """The app's own Modbus server on a fake UART, driven through comms_cycle()."""

    def __init__(self, b):
        self.b = b
        self.uart = b.hw.uart
        self.unit = b.cfg.modbus_unit

    def xfer(self, req):
        b = self.b
        sim = b.hw.sim
        self.uart.out = []
        self.uart.rx += req
        for _ in range(6):
            sim.clock.advance(5)
            b.comms_cycle(sim.clock.now_ms())
        assert len(self.uart.out) == 1, self.uart.out
        r = self.uart.out[0]
        assert crc16(r, len(r) - 2) == r[-2] | (r[-1] << 8)
        return r

    def write(self, addr, value):
        """None on success, else the exception code."""
        r = self.xfer(write1(self.unit, addr, value))
        if r[1] & 0x80:
            return r[2]
        assert r == write1(self.unit, addr, value), r  # FC 6 echoes the request
        return None

    def read(self, addr):
        r = self.xfer(read_req(self.unit, 3, addr, 1))
        assert r[1] == 3, r
        return (r[3] << 8) | r[4]


def test_modbus_factory_reset():
    path = "build/sim/flash-test-app"
    _fresh(path)
    b = _booted(path, modbus=True)
    assert b.modbus is not None
    d, out = _repl(b)
    d.set("modbus_pin", PIN)
    d.set("imbalance_warn_mv", 80)
    m = _Modbus(b)
    assert m.write(201, 1) == 1  # locked: exception 01 (wrong state)
    assert b.cfg.imbalance_warn_mv == 80
    assert m.write(200, PIN) is None  # unlock with modbus_pin
    assert m.read(200) == 1 and m.read(201) == 0
    assert m.write(201, 2) == 3  # only 1 resets: exception 03
    assert m.write(201, 0) == 3
    assert b.cfg.imbalance_warn_mv == 80
    assert m.write(201, 1) is None
    want = defaults("lfp", 4, 100000)
    assert b.cfg.as_dict() == want  # also modbus_pin: back to 0 (writes disabled)
    e = [x for x in b.events.to_list() if x[1] == ev.EV_CONFIG_RESET]
    assert len(e) == 1 and e[0][2] == 1  # a = interface: Modbus
    assert Store(path).load("config")["imbalance_warn_mv"] == want["imbalance_warn_mv"]


def test_modbus_status_register_49_says_config_foreign():
    path = "build/sim/flash-test-app"
    _fresh(path)
    b = Bms(_hw(path, chemistry="nmc", capacity_mah=50000))
    b.save_config(0)
    b2 = _booted(path, cycles=8, modbus=True)
    assert _Modbus(b2).read(49) == 1
    _fresh(path)
    b3 = _booted(path, cycles=8, modbus=True)
    assert _Modbus(b3).read(49) == 0


# --- runtime changes of the hardware limits ----------------------------------------------------


def _applied(b, **new):
    """What the chip would apply for the configuration with `new` changed."""
    c = b.cfg
    v = dict(c.as_dict())
    v.update(new)
    return b.afe.protection_applied(v["hw_cell_ov_mv"], v["hw_cell_ov_delay_ms"],
                                    v["hw_cell_uv_mv"], v["hw_cell_uv_delay_ms"], v["hw_ocd_ma"],
                                    v["hw_ocd_delay_ms"], v["hw_scd_ma"], v["hw_scd_delay_us"])


def test_hw_cell_ov_change_is_programmed_into_the_afe_at_once():
    path = "build/sim/flash-test-app"
    _fresh(path)
    b = _booted(path)
    emu = b.hw.sim.emu
    before = emu.regs[OV_TRIP]
    d, out = _repl(b)
    assert d.set("hw_cell_ov_mv", 3800) == 3800
    # in the chip right away (no measure cycle in between), read back by the driver
    assert emu.regs[OV_TRIP] != before
    want = _applied(b)["ov_mv"]
    assert b.afe_applied["ov_mv"] == want and 3790 < want <= 3800
    assert abs(emu.ov_threshold_mv() - want) < 1
    _run(b, 8)  # the chip holds it: readings are not refused
    assert b.prot.faults == 0 and b.afe_refusals == 0 and b.prot.chg_fet


def test_hw_limit_the_chip_places_inside_the_software_limit_is_refused():
    path = "build/sim/flash-test-app"
    _fresh(path)
    b = _booted(path)
    emu = b.hw.sim.emu
    d, out = _repl(b)
    # a software limit just above one of the chip's OV steps, and a hardware limit between
    # it and the next step: the chip would trip at or below cell_ov_mv
    step = _applied(b, hw_cell_ov_mv=3660)["ov_mv"]
    sw = step + 1
    hw = None
    for x in range(sw + 1, sw + 40):
        if _applied(b, hw_cell_ov_mv=x)["ov_mv"] <= sw:
            hw = x
    assert hw is not None
    assert d.set("cell_ov_mv", sw) == sw
    old_reg = emu.regs[OV_TRIP]
    assert d.set("hw_cell_ov_mv", hw) is None
    msg = out[-1]
    assert msg.startswith("rejected: hw_cell_ov_mv:"), msg  # the field ...
    assert "not above cell_ov_mv %d" % sw in msg and "%d mV" % step in msg, msg  # ... the rule
    assert b.cfg.hw_cell_ov_mv == 3750  # the old value stays, in the config ...
    assert emu.regs[OV_TRIP] == old_reg  # ... and in the chip
    e = [x for x in b.events.to_list() if x[1] == ev.EV_CONFIG_REJECT]
    assert e and e[-1][3] == hw
    # a software limit moved up to the hardware one's step is refused likewise
    assert d.set("cell_ov_mv", b.afe_applied["ov_mv"]) is None
    assert "hw_cell_ov_mv" in out[-1] and b.cfg.cell_ov_mv == sw
    # and the discharge over-current: the chip's OCD step must stay above dsg_oc_ma
    ocd = b.afe_applied["ocd_ma"]
    assert ocd < b.cfg.hw_ocd_ma  # (the shunt's step below the configured 150 A)
    assert d.set("dsg_oc_ma", ocd) is None
    assert out[-1].startswith("rejected: hw_ocd_ma:") and "dsg_oc_ma %d" % ocd in out[-1]
    assert b.cfg.dsg_oc_ma == 100000
    # the under-voltage side: the chip's UV step must stay below cell_uv_mv
    uv = b.afe_applied["uv_mv"]
    assert d.set("cell_uv_mv", uv) is None
    assert out[-1].startswith("rejected: hw_cell_uv_mv:") and "cell_uv_mv %d" % uv in out[-1]
    assert b.cfg.cell_uv_mv == 2700


def test_hw_limit_change_refused_while_the_afe_is_unreachable():
    path = "build/sim/flash-test-app"
    _fresh(path)
    b = _booted(path)
    emu = b.hw.sim.emu
    d, out = _repl(b)
    old_reg = emu.regs[OV_TRIP]
    emu.lost = True
    assert d.set("hw_cell_ov_mv", 3700) is None  # refused, with the reason
    assert out[-1].startswith("rejected: hw_cell_ov_mv:"), out[-1]
    assert b.cfg.hw_cell_ov_mv == 3750 and emu.regs[OV_TRIP] == old_reg
    _run(b, 4)  # still lost: the AFE faults open the FETs
    assert not b.prot.chg_fet and not b.prot.dsg_fet
    assert d.set("hw_cell_ov_mv", 3700) is None and b.cfg.hw_cell_ov_mv == 3750
    assert d.set("imbalance_warn_mv", 90) == 90  # other fields do not need the AFE
    emu.lost = False
    _run(b, 24)
    assert b.afe_ok and emu.regs[OV_TRIP] == old_reg  # re-initialised with the old value
    assert b.cfg.hw_cell_ov_mv == 3750
    assert d.set("hw_cell_ov_mv", 3700) == 3700 and emu.regs[OV_TRIP] != old_reg


def test_runtime_changes_on_a_pack_whose_limits_the_afe_clamps():
    """LTO: hw_cell_ov_mv (2.8 V) is below the chip's lowest OV trip (~3.1 V); at boot the app
    programs the chip's tightest setting (still the outer layer). Runtime changes of the
    other limits must be judged the same way, not refused because of that clamp."""
    path = "build/sim/flash-test-app"
    _fresh(path)
    b = _booted(path, chemistry="lto")
    emu = b.hw.sim.emu
    assert b.afe_ok and b.prot.chg_fet
    d, out = _repl(b)
    p2 = emu.regs[PROTECT2]
    assert d.set("hw_ocd_delay_ms", 640) == 640, out[-1]
    assert emu.regs[PROTECT2] != p2
    assert d.set("cell_ov_mv", b.cfg.cell_ov_mv - 10) is not None, out[-1]


def test_factory_reset_on_a_pack_whose_limits_the_afe_clamps():
    """LTO board with a stored configuration whose hardware limits differ from the defaults:
    the factory reset must be possible (the boot path programs the same defaults)."""
    path = "build/sim/flash-test-app"
    _fresh(path)
    b = Bms(_hw(path, chemistry="lto"))
    b.cfg.update({"hw_ocd_delay_ms": 640})  # (no hook before boot: as a config file would)
    b.save_config(0)
    b2 = _booted(path, chemistry="lto")
    assert b2.cfg.hw_ocd_delay_ms == 640 and b2.afe_ok
    d, out = _repl(b2)
    assert d.factory_reset() is True, out[-1]
    assert b2.cfg.as_dict() == defaults("lto", 4, 100000)


def test_runtime_changes_on_a_small_pack_whose_current_limits_the_afe_clamps():
    """LFP 5 Ah on the board's 500 uohm shunt: hw_ocd_ma/hw_scd_ma are below what the chip
    can trip at; at boot the app programs its tightest setting. A runtime change of an
    unrelated limit must not be refused because of that clamp."""
    path = "build/sim/flash-test-app"
    _fresh(path)
    b = _booted(path, capacity_mah=5000)
    assert b.afe_ok and b.prot.dsg_fet
    d, out = _repl(b)
    assert d.set("hw_cell_ov_mv", 3700) == 3700, out[-1]
    assert d.set("cell_uv_mv", b.cfg.cell_uv_mv + 10) is not None, out[-1]
