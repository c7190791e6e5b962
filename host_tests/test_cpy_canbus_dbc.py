# Frames of every profile decoded two ways and compared with the status view that produced
# them (CPython only): with cantools and the profile's DBC (tools/dbc/<profile>.dbc, every
# signal checked against an expectation written here, not by the encoders), and the way the
# peers decode them (host_tests/peer_decoders.py: OpenDTU-OnBattery, mikaabra's Deye-site
# decoder, ai-republic, bit-7 readers, an unsigned REC logger, a Deye inverter, Sol-Ark,
# a Victron GX, an SMA Sunny Island). Random states (hypothesis) include every fault, every
# permission combination and invalid temperatures.
import math
import os

import cantools
import peer_decoders as P
from fake_bms import FakeBms
from hypothesis import given, settings
from hypothesis import strategies as st

from bms import faults
from bms.canbus import CanProtocol
from bms.snapshot import TEMP_INVALID_DC

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROFILES = ("pylon", "deye", "solark", "victron", "sma")
DBS = {p: cantools.database.load_file(os.path.join(ROOT, "tools", "dbc", p + ".dbc"))
       for p in PROFILES}

# What each fault means to an inverter, written out here (independent of bms.faults' column):
# name -> (0x359 signal suffix or None, 0x35A item)
MEANING = {
    "cell_ov": ("HighVoltage", "HighVoltage"), "cell_uv": ("LowVoltage", "LowVoltage"),
    "pack_ov": ("HighVoltage", "HighVoltage"), "pack_uv": ("LowVoltage", "LowVoltage"),
    "chg_oc": ("ChargeOvercurrent", "ChargeOvercurrent"),
    "dsg_oc": ("DischargeOvercurrent", "DischargeOvercurrent"),
    "hw_ocd": ("DischargeOvercurrent", "DischargeOvercurrent"),
    "scd": ("DischargeOvercurrent", "ShortCircuit"),
    "chg_ot": ("HighTemp", "HighTempCharge"), "chg_ut": ("LowTemp", "LowTempCharge"),
    "dsg_ot": ("HighTemp", "HighTemp"), "dsg_ut": ("LowTemp", "LowTemp"),
    "fet_ot": ("HighTemp", "HighTemp"), "imbalance": (None, "CellImbalance"),
    "temp_sensor": ("SystemError", "BmsInternal"),
    "cell_implausible": ("SystemError", "BmsInternal"),
    "sum_mismatch": ("SystemError", "BmsInternal"), "afe_lost": ("SystemError", "BmsInternal"),
    "afe_stale": ("SystemError", "BmsInternal"), "xready": ("SystemError", "BmsInternal"),
    "ovrd": ("SystemError", "BmsInternal"), "hw_ov": ("HighVoltage", "HighVoltage"),
    "hw_uv": ("LowVoltage", "LowVoltage"), "deep_uv": ("LowVoltage", "LowVoltage"),
    "afe_config": ("SystemError", "BmsInternal"),
}
ITEMS = ("General", "HighVoltage", "LowVoltage", "HighTemp", "LowTemp", "HighTempCharge",
         "LowTempCharge", "DischargeOvercurrent", "ChargeOvercurrent", "Contactor",
         "ShortCircuit", "BmsInternal", "CellImbalance", "Reserved13", "Reserved14",
         "Reserved15")
FLAGS = ("HighVoltage", "LowVoltage", "HighTemp", "LowTemp", "DischargeOvercurrent",
         "ChargeOvercurrent", "SystemError")


def test_meaning_covers_the_fault_table():
    assert set(MEANING) == set(faults.NAMES)


def _names(mask):
    return [faults.NAMES[i] for i in range(faults.N_FAULTS) if mask >> i & 1]


def expected(prof, s, cfg):
    """Every signal of every frame, from the status view s (value, tolerance)."""
    sma = prof == "sma"
    e = {}
    cvl = math.floor(s.cvl_mv / 100) / 10
    ccl = min(math.floor(s.ccl_ma / 100) / 10, 3276.7)
    dcl = min(math.floor(s.dcl_ma / 100) / 10, 3276.7)
    dvl = math.ceil(s.dvl_mv / 100) / 10
    if sma:
        cvl, dvl = min(max(cvl, 41.0), 63.0), min(max(dvl, 41.0), 48.0)
        ccl, dcl = min(ccl, 120.0), min(dcl, 120.0)
    e["BMS_Limits"] = {"ChargeVoltageLimit": (cvl, 1e-6), "ChargeCurrentLimit": (ccl, 1e-6),
                       "DischargeCurrentLimit": (dcl, 1e-6),
                       "DischargeVoltageLimit": (dvl, 1e-6)}
    soc = min(100.0, max(0.0, s.soc_pct))
    # 1 % values are rounded from the 0.01 % integers of the view (double rounding: 0.505)
    e["BMS_SOC"] = {"SOC": (soc, 0.505 + 1e-6), "SOH": (min(100.0, s.soh_pct), 0.505 + 1e-6)}
    if prof in ("deye", "victron", "sma"):
        e["BMS_SOC"]["SOCHiRes"] = (soc, 0.005 + 1e-6)
    vtol = 0.05 if prof == "solark" else 0.005
    e["BMS_Measurements"] = {
        "BatteryVoltage": (s.pack_mv / 1000.0, vtol + 1e-6),
        "BatteryCurrent": (max(-3276.7, min(s.current_ma / 1000.0, 3276.7)), 0.05 + 1e-6),
        "BatteryTemperature": (s.temp_report_dc / 10.0, 1e-6)}
    if prof == "deye":
        e["BMS_Measurements"]["CycleCount"] = (int(s.cycles), 0)
    name = b"PYLON   " if prof in ("pylon", "deye") else b"MPY-BMS "
    e["BMS_Manufacturer"] = dict(("ManufacturerChar%d" % i, (name[i], 0)) for i in range(8))
    if prof in ("pylon", "deye", "solark"):
        fl = {}
        for pre, mask in (("Prot", s.faults), ("Warn", s.warnings)):
            on = set(MEANING[n][0] for n in _names(mask))
            if pre == "Warn" and not s.temp_valid:
                on.add("SystemError")
            for f in FLAGS:
                fl[pre + f] = (1 if f in on else 0, 0)
        fl["ProtByte1Bit7"] = (fl["ProtSystemError"][0] if prof != "solark" else 0, 0)
        fl["WarnByte3Bit7"] = (0, 0)  # never (ai-republic reads it as charge current high)
        fl["ModuleCount"] = (cfg.can_modules, 0)
        fl["MarkerP"] = (ord("P"), 0)
        fl["MarkerN"] = (ord("N"), 0)
        fl["Byte7"] = (0, 0)
        e["BMS_Flags"] = fl
        chg = s.chg_enable
        req = {"ChargeEnable": (1 if chg else 0, 0),
               "DischargeEnable": (1 if s.dsg_enable else 0, 0),
               "FullChargeRequest": (1 if chg and s.full_charge_req else 0, 0),
               "Bytes1to7": (0, 0)}
        if prof == "solark":
            req["ForcedChargeRequest1"] = (1 if chg and s.force_charge else 0, 0)
            req["ForcedChargeRequest2"] = (0, 0)
        else:
            req["ForceCharge2"] = (1 if chg and s.force_charge else 0, 0)
            req["ForceCharge1"] = (0, 0)  # never: OpenDTU acts on it alone
        e["BMS_Request"] = req
    if prof == "solark":
        e["BMS_Capacity"] = {"Capacity": (s.capacity_mah // 1000, 0)}
    if prof in ("victron", "sma"):
        alarm, warn = set(), set()
        for n in _names(s.faults):
            item = MEANING[n][1]
            (warn if item == "LowVoltage" else alarm).add(item)
        for n in _names(s.warnings):
            warn.add(MEANING[n][1])
        if not s.temp_valid:
            warn.add("BmsInternal")
        a = {}
        for pre, raised in (("Alarm", alarm), ("Warn", warn)):
            for it in ITEMS:
                if it == "Contactor" or it.startswith("Reserved"):
                    v = 0
                elif it == "General":
                    v = 1 if raised else 2
                else:
                    v = 1 if it in raised else 2
                a[pre + it] = (v, 0)
        e["BMS_Alarms"] = a
        ah = s.capacity_mah // 1000
        e["BMS_Info"] = {"BatteryModel": (0xFFFF if sma else 0, 0),
                         "FirmwareVersion": (0x0100, 0), "OnlineCapacity": (ah, 0),
                         "ManufacturerId": (0xFFFF if sma else 0, 0)}
    if prof == "victron":
        nm = b"MicroPython BMS "
        e["BMS_Name1"] = dict(("Name1Char%d" % i, (nm[i], 0)) for i in range(8))
        e["BMS_Name2"] = dict(("Name2Char%d" % i, (nm[8 + i], 0)) for i in range(8))
        e["BMS_CellExtremes"] = {
            "MinCellVoltage": (s.cell_min_mv / 1000.0, 0.0005),
            "MaxCellVoltage": (s.cell_max_mv / 1000.0, 0.0005),
            "MinCellTemperature": (round(s.temp_report_min_dc / 10.0 + 273.15), 0.51),
            "MaxCellTemperature": (round(s.temp_report_dc / 10.0 + 273.15), 0.51)}
    return e


def frames_of(bms, prof):
    p = CanProtocol(None, bms.cfg, bms.events)
    p.encode(bms.status)
    return [(p._frames[i][0], bytes(p._bufs[i])) for i in range(p._n)]


def check_dbc(bms, prof):
    s = bms.status
    db = DBS[prof]
    exp = expected(prof, s, bms.cfg)
    seen = set()
    for cid, data in frames_of(bms, prof):
        msg = db.get_message_by_frame_id(cid)
        assert len(data) == msg.length == 8
        dec = msg.decode(data, decode_choices=False, scaling=True)
        want = exp[msg.name]
        assert set(want) == set(x.name for x in msg.signals), (prof, msg.name)
        for sig, (v, tol) in want.items():
            assert abs(dec[sig] - v) <= tol, (prof, msg.name, sig, dec[sig], v)
        seen.add(msg.name)
    assert seen == set(exp), (prof, set(exp) - seen)
    assert seen == set(m.name for m in db.messages if m.senders == ["BMS"])


def check_peers(bms, prof):
    """The rules of issue 12 as each peer sees them."""
    s = bms.status
    cfg = bms.cfg
    fr = frames_of(bms, prof)
    cvl_max = cfg.cells * cfg.chg_cell_mv / 1000.0
    blocked = not (s.chg_fet and s.chg_enable)
    internal = any(MEANING[n][0] == "SystemError" for n in _names(s.faults))
    decs = []
    if prof in ("pylon", "deye"):
        decs = [P.OpenDtu(), P.MikaDeye(), P.AiRepublic(), P.BitSeven(), P.UnsignedRec()]
        if prof == "deye":
            decs.append(P.DeyeInverter())
    elif prof == "solark":
        decs = [P.SolArk(), P.AiRepublic()]
    elif prof == "victron":
        decs = [P.VictronGx(cfg.capacity_mah // 1000), P.UnsignedRec()]
    else:
        decs = [P.SunnyIsland(), P.UnsignedRec()]
    for d in decs:
        for cid, data in fr:
            d.feed(cid, data)
        v = d.v
        name = type(d).__name__
        if "cvl_v" in v:
            assert 0 < v["cvl_v"] <= cvl_max + 1e-9, (prof, name, v)
        if "temp_c" in v:
            if name == "UnsignedRec":  # reads it unsigned: a negative value is garbage
                assert round(v["temp_c"], 1) != 3276.8, (prof, v)  # but never "+3276.8"
            else:
                assert -50 < v["temp_c"] < 130, (prof, name, v)  # never the sentinel
        if blocked:  # the charge FET is commanded off or charging is not enabled
            for k in ("ccl_a",):
                if k in v:
                    assert v[k] == 0, (prof, name, v)
            for k in ("charge_enabled", "charge_immediately", "charge_enable", "force_charge_1",
                      "charge", "force", "force_charge", "full_charge", "forced_1",
                      "forced_2", "full"):
                assert not v.get(k, False), (prof, name, k, v)
        if isinstance(d, P.OpenDtu):
            assert not d.charge_immediately  # b5: never (OpenDTU would act on it alone)
            assert v["alarm_bms_internal"] == internal
            assert v["manufacturer"] == "PYLON   "
            assert v["soc"] == min(100, (s.soc_cpct + 50) // 100)
        if isinstance(d, P.MikaDeye):
            assert d.errors == 0 and d.ignored == 0, (prof, d.errors, d.ignored)
            assert v["system_error"] == internal and not v["comms_fail"]
        if isinstance(d, P.BitSeven):
            assert v["system_error"] == internal
        if isinstance(d, P.AiRepublic):
            assert not v["charge_current_high_warning"]
            assert v["cell_temp_high_alarm"] == internal
        if isinstance(d, P.DeyeInverter):
            assert v["recognised"] and d.w31 == 0
            assert abs(v["voltage_v"] - s.pack_mv / 1000) < 0.01
        if isinstance(d, P.SolArk):
            assert d.rejected == 0 and d.nonzero_reserved == 0
            assert abs(v["voltage_v"] - s.pack_mv / 1000) < 0.06
        if isinstance(d, P.VictronGx):
            assert not d.pylontech
            cvl, ccl = d.effective()
            if blocked:
                assert ccl == 0
        if isinstance(d, P.SunnyIsland):
            assert d.out_of_range == 0 and d.foreign_ids == 0, (d.out_of_range, d.foreign_ids)
            if blocked:
                assert d.v["ccl_a"] == 0


def _state(bms, faults_mask, warnings, latched, chg_allowed, dsg_allowed, chg_fet, dsg_fet, cvl,
           ccl, dcl, soc, soh, cur, temps, die, cells, fc, full, cycles):
    bms.set_cells(cells)
    bms.snap.temp_dc[0] = temps[0]
    bms.snap.temp_dc[1] = temps[1]
    bms.snap.die_temp_dc = die
    bms.snap.update_stats()
    bms.snap.current_ma = cur
    p = bms.prot
    p.faults, p.warnings, p.latched = faults_mask | latched, warnings, latched
    p.chg_allowed, p.dsg_allowed, p.chg_fet, p.dsg_fet = chg_allowed, dsg_allowed, chg_fet, dsg_fet
    lim = bms.limits
    lim.cvl_mv, lim.ccl_ma, lim.dcl_ma = cvl, ccl, dcl
    lim.force_charge, lim.full_charge_req = fc, full
    bms.est.soc_pct, bms.est.soh_pct, bms.est.cycles = soc, soh, cycles
    bms.fill()


def test_reference_state_every_profile():
    for prof in PROFILES:
        bms = FakeBms(can_profile=prof, can_modules=10)
        bms.snap.current_ma = -123456
        bms.prot.faults = 1 << faults.F_CELL_OV
        bms.prot.warnings = (1 << faults.F_CHG_OC) | (1 << faults.F_IMBALANCE)
        bms.limits.force_charge = 1
        bms.fill()
        check_dbc(bms, prof)
        check_peers(bms, prof)


def test_every_fault_alone_every_profile():
    for prof in PROFILES:
        for i in range(faults.N_FAULTS):
            bms = FakeBms(can_profile=prof)
            bms.prot.faults = 1 << i
            bms.prot.warnings = 1 << i
            bms.fill()
            check_dbc(bms, prof)
            check_peers(bms, prof)


_MASK = (1 << faults.N_FAULTS) - 1


@settings(max_examples=300, deadline=None)
@given(
    prof=st.sampled_from(PROFILES),
    faults_mask=st.integers(0, _MASK), warnings=st.integers(0, _MASK),
    latched=st.sampled_from((0, 1 << faults.F_DEEP_UV, 1 << faults.F_CHG_OC)),
    chg_allowed=st.booleans(), dsg_allowed=st.booleans(), chg_fet=st.booleans(),
    dsg_fet=st.booleans(),
    cvl=st.integers(0, 70000), ccl=st.integers(0, 400000), dcl=st.integers(0, 400000),
    soc=st.floats(0, 100), soh=st.floats(50, 100), cur=st.integers(-3000000, 3000000),
    temps=st.lists(st.one_of(st.integers(-400, 900), st.just(TEMP_INVALID_DC)), min_size=2,
                   max_size=2),
    die=st.one_of(st.integers(-400, 1200), st.just(TEMP_INVALID_DC)),
    cells=st.lists(st.integers(2500, 3650), min_size=15, max_size=15),
    fc=st.sampled_from((0, 1)), full=st.booleans(), cycles=st.floats(0, 6000),
)
def test_random_states_decode_to_the_status(prof, faults_mask, warnings, latched, chg_allowed,
                                            dsg_allowed, chg_fet, dsg_fet, cvl, ccl, dcl, soc,
                                            soh, cur, temps, die, cells, fc, full, cycles):
    bms = FakeBms(can_profile=prof, can_modules=3)
    _state(bms, faults_mask, warnings, latched, chg_allowed, dsg_allowed, chg_fet, dsg_fet, cvl,
           ccl, dcl, soc, soh, cur, temps, die, cells, fc, full, cycles)
    check_dbc(bms, prof)
    check_peers(bms, prof)


def test_bms_dbc_alias_decodes_pylon_and_victron_frames():
    db = cantools.database.load_file(os.path.join(ROOT, "tools", "bms.dbc"))
    for prof in ("pylon", "victron"):
        bms = FakeBms(can_profile=prof)
        for cid, data in frames_of(bms, prof):
            db.decode_message(cid, data)


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

    db = DBS["sma"]
    hb = db.get_message_by_name("Inverter_Heartbeat").encode(
        {"InverterVoltage": 52.3, "InverterCurrent": -10.5, "InverterTemperature": 21.0,
         "InverterSOC": 55.0})
    bms = FakeBms(can_profile="sma")
    p = CanProtocol(Can([(0x305, hb), (0x306, bytes(8))]), bms.cfg, bms.events)
    p.poll(bms, 5000)
    assert p.present == 1
    d = db.get_message_by_frame_id(0x305).decode(bytes(p.inv_data))
    assert abs(d["InverterCurrent"] + 10.5) < 1e-9
    vid = DBS["victron"].get_message_by_name("Inverter_Id").encode(
        {"InverterIdWord": 0x3412, "InverterIdChar4": ord("V"), "InverterIdChar5": ord("I"),
         "InverterIdChar6": ord("C"), "InverterIdChar7": 0})
    bms = FakeBms(can_profile="victron")
    p = CanProtocol(Can([(0x307, vid)]), bms.cfg, bms.events)
    p.poll(bms, 5000)
    assert p.present == 1 and p.victron_gx


def test_candump_log_from_the_emulator_decodes_with_canmon(tmp_path):
    import canmon

    from bms import mcp2515 as M
    from simlib.inverter import Inverter
    from simlib.mcp2515_emu import MCP2515Emu, VirtualBus

    bus = VirtualBus()
    log = tmp_path / "can.log"
    bus.log_file = open(log, "w")
    emu = MCP2515Emu(bus)
    Inverter(bus, profile="victron")
    bms = FakeBms(can_profile="victron")
    bms.snap.current_ma = -4200
    bms.fill()
    drv = M.MCP2515(emu.spi, emu.cs)
    drv.init()
    p = CanProtocol(drv, bms.cfg, bms.events)
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
    db = canmon.load_db(canmon.dbc_path("victron"))
    d = db.get_message_by_frame_id(0x356).decode(t356[4])
    assert abs(d["BatteryCurrent"] + 4.2) < 1e-9
    out = []

    class W:
        def write(self, s):
            out.append(s)

    assert canmon.run_log(db, str(log), {0x356}, False, W()) == 3
    assert "BatteryCurrent=-4.2 A" in out[0]
