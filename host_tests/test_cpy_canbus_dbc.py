# Frames produced by bms.canbus, decoded with cantools and tools/bms.dbc, compared signal by
# signal with the state that produced them (CPython only).
import os

import cantools
from fake_bms import FAULT_NAMES, FakeBms
from hypothesis import given, settings
from hypothesis import strategies as st

from bms.canbus import CanProtocol
from bms.snapshot import TEMP_INVALID_DC

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DB = cantools.database.load_file(os.path.join(ROOT, "tools", "bms.dbc"))

# Independent expectation of what each fake fault name means to an inverter (not classify()).
PYLON = {  # name -> (0x359 signal suffix, 0x35A item)
    "cell_ov": ("HighVoltage", "HighVoltage"),
    "cell_uv": ("LowVoltage", "LowVoltage"),
    "cell_deep_uv": ("LowVoltage", "LowVoltage"),
    "pack_ov": ("HighVoltage", "HighVoltage"),
    "pack_uv": ("LowVoltage", "LowVoltage"),
    "chg_oc": ("ChargeOvercurrent", "ChargeOvercurrent"),
    "dsg_oc": ("DischargeOvercurrent", "DischargeOvercurrent"),
    "scd": ("DischargeOvercurrent", "ShortCircuit"),
    "chg_ot": ("HighTemp", "HighTempCharge"),
    "chg_ut": ("LowTemp", "LowTempCharge"),
    "dsg_ot": ("HighTemp", "HighTemp"),
    "dsg_ut": ("LowTemp", "LowTemp"),
    "fet_ot": ("HighTemp", "HighTemp"),
    "afe": ("SystemError", "BmsInternal"),
    "imbalance": (None, "CellImbalance"),
    "stale": ("SystemError", "BmsInternal"),
}
ITEMS = ("General", "HighVoltage", "LowVoltage", "HighTemp", "LowTemp", "HighTempCharge",
         "LowTempCharge", "DischargeOvercurrent", "ChargeOvercurrent", "Contactor",
         "ShortCircuit", "BmsInternal", "CellImbalance")
FLAGS = ("HighVoltage", "LowVoltage", "HighTemp", "LowTemp", "DischargeOvercurrent",
         "ChargeOvercurrent", "SystemError")


def _names(mask):
    return [FAULT_NAMES[i] for i in range(len(FAULT_NAMES)) if mask >> i & 1]


def expected(bms, victron):
    s = bms.snap
    p = bms.prot
    lim = bms.limits
    cfg = bms.cfg
    chg_ok = p.chg_allowed and lim.chg_enable
    dsg_ok = p.dsg_allowed and lim.dsg_enable
    cvl = lim.cvl_mv
    if not chg_ok and s.pack_mv >= 100:
        cvl = min(cvl, s.pack_mv) if cvl >= 100 else s.pack_mv
    if cvl < 100:
        cvl = s.pack_mv if s.pack_mv >= 100 else cfg.pack_uv_mv
    ccl = max(0, lim.ccl_ma) if chg_ok else 0
    dcl = max(0, lim.dcl_ma) if dsg_ok else 0
    dvl = lim.dvl_mv if lim.dvl_mv >= 100 else cfg.pack_uv_mv
    e = {}
    e["BMS_Limits"] = {
        "ChargeVoltageLimit": (cvl / 1000.0, 0.05),
        "ChargeCurrentLimit": (min(ccl / 1000.0, 3276.7), 0.05),
        "DischargeCurrentLimit": (min(dcl / 1000.0, 3276.7), 0.05),
        "DischargeVoltageLimit": (dvl / 1000.0, 0.05),
    }
    soc = min(100.0, max(0.0, bms.est.soc_pct))
    soh = min(100.0, max(0.0, bms.est.soh_pct))
    e["BMS_SOC"] = {"SOC": (soc, 0.5), "SOH": (soh, 0.5), "SOCHiRes": (soc, 0.005)}
    t = s.temp_max_dc
    e["BMS_Measurements"] = {
        "BatteryVoltage": (min(s.pack_mv / 1000.0, 327.67), 0.005),
        "BatteryCurrent": (max(-3276.7, min(s.current_ma / 1000.0, 3276.7)), 0.05),
        "BatteryTemperature": ((t / 10.0) if t != TEMP_INVALID_DC else -3276.8, 0.001),
    }
    faults = p.faults | p.latched
    fl = {}
    for pre, mask in (("Prot", faults), ("Warn", p.warnings)):
        on = set(PYLON[n][0] for n in _names(mask))
        for f in FLAGS:
            fl[pre + f] = (1 if f in on else 0, 0)
    fl["ModuleCount"] = (cfg.can_modules, 0)
    fl["MarkerP"] = (ord("P"), 0)
    fl["MarkerN"] = (ord("N"), 0)
    fl["OnlineAddress"] = (0, 0)
    e["BMS_Flags"] = fl
    fc = lim.force_charge
    e["BMS_Request"] = {
        "ChargeEnable": (1 if chg_ok else 0, 0),
        "DischargeEnable": (1 if dsg_ok else 0, 0),
        "ForceCharge1": (1 if fc == 1 else 0, 0),
        "ForceCharge2": (1 if fc == 2 else 0, 0),
        "FullChargeRequest": (1 if lim.full_charge_req else 0, 0),
    }
    name = b"MPY-BMS " if victron else b"PYLON   "
    e["BMS_Manufacturer"] = dict(("ManufacturerChar%d" % i, (name[i], 0)) for i in range(8))
    if victron:
        alarm = set()
        warn = set()
        for n in _names(faults):
            item = PYLON[n][1]
            (warn if item == "LowVoltage" else alarm).add(item)
        for n in _names(p.warnings):
            warn.add(PYLON[n][1])
        a = {}
        for pre, raised in (("Alarm", alarm), ("Warn", warn)):
            for it in ITEMS:
                if it == "Contactor":
                    v = 0
                elif it == "General":
                    v = 1 if raised else 2
                else:
                    v = 1 if it in raised else 2
                a[pre + it] = (v, 0)
        e["BMS_Alarms"] = a
        e["BMS_Info"] = {
            "BatteryModel": (0, 0),
            "FirmwareVersion": (0x0100, 0),
            "OnlineCapacity": (bms.est.capacity_mah // 1000, 0),
            "ManufacturerId": (0, 0),
        }
        nm = b"MicroPython BMS "
        e["BMS_Name1"] = dict(("Name1Char%d" % i, (nm[i], 0)) for i in range(8))
        e["BMS_Name2"] = dict(("Name2Char%d" % i, (nm[8 + i], 0)) for i in range(8))

        def kelvin(dc):
            return 0 if dc == TEMP_INVALID_DC else round(dc / 10.0 + 273.15)

        e["BMS_CellExtremes"] = {
            "MinCellVoltage": (s.cell_min_mv / 1000.0, 0.0005),
            "MaxCellVoltage": (s.cell_max_mv / 1000.0, 0.0005),
            "MinCellTemperature": (kelvin(s.temp_min_dc), 0.51),
            "MaxCellTemperature": (kelvin(s.temp_max_dc), 0.51),
        }
    return e


def check(bms, victron):
    p = CanProtocol(None, bms.cfg, bms.events, fault_names=FAULT_NAMES)
    p.encode(bms)
    exp = expected(bms, victron)
    ids = set()
    for i in range(p._n):
        cid = p._ids[i]
        ids.add(cid)
        msg = DB.get_message_by_frame_id(cid)
        data = bytes(p._frames[i])
        assert len(data) == msg.length == 8
        dec = msg.decode(data, decode_choices=False, scaling=True)
        want = exp[msg.name]
        assert set(want) == set(s.name for s in msg.signals), msg.name  # every signal checked
        for sig, (v, tol) in want.items():
            assert abs(dec[sig] - v) <= tol + 1e-9, (msg.name, sig, dec[sig], v)
    assert ids == set(m.frame_id for m in DB.messages if m.senders == ["BMS"]) or not victron


def test_reference_state_both_profiles():
    for prof in ("pylon", "victron"):
        bms = FakeBms(can_profile=prof, can_modules=10)
        bms.snap.current_ma = -123456
        bms.prot.faults = 1 << FAULT_NAMES.index("cell_ov")
        bms.prot.warnings = (1 << FAULT_NAMES.index("chg_oc")) | (
            1 << FAULT_NAMES.index("imbalance"))
        bms.limits.force_charge = 1
        check(bms, prof == "victron")


def test_every_dbc_message_is_produced_or_received():
    # BMS-sent messages are the victron set; inverter messages are consumed by the RX path
    names = set(m.name for m in DB.messages)
    assert {"Inverter_Heartbeat", "Inverter_Id"} <= names
    for m in DB.messages:
        assert m.length == 8


def test_inverter_frames_decode_and_count_as_presence():
    class Can:
        def __init__(self, frames):
            self.frames = frames

        def recv_into(self, buf):
            if not self.frames:
                return None
            cid, d = self.frames.pop(0)
            buf[: len(d)] = d
            return [cid, len(d)]

        def send(self, *a):
            return True

    hb = DB.get_message_by_name("Inverter_Heartbeat").encode(
        {"InverterVoltage": 52.3, "InverterCurrent": -10.5, "InverterTemperature": 21.0,
         "InverterSOC": 55.0})
    vid = DB.get_message_by_name("Inverter_Id").encode(
        {"InverterIdWord": 0x3412, "InverterIdChar4": ord("V"), "InverterIdChar5": ord("I"),
         "InverterIdChar6": ord("C"), "InverterIdChar7": 0})
    bms = FakeBms()
    p = CanProtocol(Can([(0x305, hb), (0x307, vid)]), bms.cfg, bms.events,
                    fault_names=FAULT_NAMES)
    p.poll(bms, 5000)
    assert p.present == 1 and p.victron_gx
    d = DB.get_message_by_frame_id(0x305).decode(bytes(p.inv_data))
    assert abs(d["InverterCurrent"] + 10.5) < 1e-9


@settings(max_examples=200, deadline=None)
@given(
    victron=st.booleans(),
    faults=st.integers(0, 0xFFFF),
    warnings=st.integers(0, 0xFFFF),
    latched=st.integers(0, 0xFFFF),
    chg_allowed=st.booleans(),
    dsg_allowed=st.booleans(),
    chg_enable=st.booleans(),
    dsg_enable=st.booleans(),
    cvl=st.integers(0, 65000),
    ccl=st.integers(-10000, 4000000),
    dcl=st.integers(-10000, 4000000),
    dvl=st.integers(0, 65000),
    soc=st.floats(0, 100),
    soh=st.floats(0, 100),
    pack=st.integers(0, 65000),
    cur=st.integers(-3000000, 3000000),
    temps=st.lists(st.one_of(st.integers(-400, 900), st.just(TEMP_INVALID_DC)), min_size=2,
                   max_size=2),
    cells=st.lists(st.integers(1000, 4500), min_size=15, max_size=15),
    fc=st.sampled_from((0, 1, 2)),
    full=st.booleans(),
    modules=st.integers(1, 32),
)
def test_random_states_decode_to_the_state(victron, faults, warnings, latched, chg_allowed,
                                           dsg_allowed, chg_enable, dsg_enable, cvl, ccl, dcl,
                                           dvl, soc, soh, pack, cur, temps, cells, fc, full,
                                           modules):
    bms = FakeBms(can_profile="victron" if victron else "pylon", can_modules=modules)
    bms.set_cells(cells)
    bms.snap.temp_dc[0] = temps[0]
    bms.snap.temp_dc[1] = temps[1]
    bms.snap.update_stats()
    bms.snap.pack_mv = pack
    bms.snap.current_ma = cur
    p = bms.prot
    p.faults, p.warnings, p.latched = faults, warnings, latched
    p.chg_allowed, p.dsg_allowed = chg_allowed, dsg_allowed
    lim = bms.limits
    lim.chg_enable, lim.dsg_enable = chg_enable, dsg_enable
    lim.cvl_mv, lim.ccl_ma, lim.dcl_ma, lim.dvl_mv = cvl, ccl, dcl, dvl
    lim.force_charge, lim.full_charge_req = fc, full
    bms.est.soc_pct, bms.est.soh_pct = soc, soh
    check(bms, victron)


def test_candump_log_from_the_emulator_decodes_with_canmon(tmp_path):
    import canmon

    from bms import mcp2515 as M
    from simlib.inverter import Inverter
    from simlib.mcp2515_emu import MCP2515Emu, VirtualBus

    bus = VirtualBus()
    log = tmp_path / "can.log"
    bus.log_file = open(log, "w")
    emu = MCP2515Emu(bus)
    Inverter(bus)
    bms = FakeBms(can_profile="victron")
    bms.snap.current_ma = -4200
    drv = M.MCP2515(emu.spi, emu.cs)
    drv.init()
    p = CanProtocol(drv, bms.cfg, bms.events, fault_names=FAULT_NAMES)
    t = 0
    for _ in range(25):
        bus.set_time(t)
        p.poll(bms, t)
        t += 100
    bus.log_file.close()
    lines = log.read_text().splitlines()
    frames = [canmon.parse_log_line(x) for x in lines]
    assert all(f is not None for f in frames)
    ids = [f[2] for f in frames]
    assert ids.count(0x351) == 3 and 0x305 in ids
    t356 = [f for f in frames if f[2] == 0x356][0]
    assert t356[0] == 0.0
    d = DB.get_message_by_frame_id(0x356).decode(t356[4])
    assert abs(d["BatteryCurrent"] + 4.2) < 1e-9
    out = []

    class W:
        def write(self, s):
            out.append(s)

    assert canmon.run_log(DB, str(log), {0x356}, False, W()) == 3
    assert "BatteryCurrent=-4.2 A" in out[0]
