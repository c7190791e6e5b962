# The register map: generated files up to date, every CSV register resolvable (CPython only).
import os
import sys

from fake_bms import FakeBms

from bms import regmap
from bms.canbus import CanProtocol
from bms.config_tables import FIELDS
from bms.modbus import ModbusServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import gen_regmap  # noqa: E402


class NullUart:
    def any(self):
        return 0

    def readinto(self, b):
        return 0

    def write(self, b):
        return len(b)


class NullCan:
    tec = rec = state = aborts = bus_offs = 0

    def send(self, *a):
        return True

    def recv_into(self, b):
        return None


def _bms():
    bms = FakeBms(modbus_pin=1234)
    bms.can = CanProtocol(NullCan(), bms.cfg, bms.events)
    bms.modbus = ModbusServer(NullUart(), None, bms.cfg, bms.events)
    return bms


def test_generated_files_up_to_date():
    for path, text in gen_regmap.outputs().items():
        with open(path) as fh:
            assert fh.read() == text, "%s is stale: run python tools/gen_regmap.py" % path


def test_generated_table_matches_csv():
    rows = gen_regmap.load()
    assert regmap.N_REGS == len(rows) == len(regmap.REGS) // regmap.REC_SIZE
    for i, r in enumerate(rows):
        rec = regmap.REGS[i * 8:i * 8 + 8]
        assert (rec[0] << 8 | rec[1]) == r["address"]
        assert rec[2] & 3 == r["tcode"]
        assert (rec[2] >> 2) & 3 == gen_regmap.ACCESS[r["access"]]
        assert rec[2] >> 4 == r["kind"]
        ref = rec[3] << 8 | rec[4]
        if r["kind"] == regmap.K_CONST:
            assert regmap.CONSTS[ref] == r["index"]
        else:
            assert regmap.PATHS[ref] == r["path"]
        assert regmap.SCALES[rec[6]] == (r["mul"], r["div"])
    assert regmap.UNLOCK_ADDR == [r for r in rows if r["name"] == "unlock"][0]["address"]


def _resolve(obj, path):
    for p in path:
        assert hasattr(obj, p), "%s has no attribute %s" % (type(obj).__name__, p)
        obj = getattr(obj, p)
    return obj


def test_every_register_resolvable_on_the_fake_and_the_real_parts():
    bms = _bms()
    real = {}
    try:  # the real parts, when their modules are importable with this constructor
        from bms.estimator import Estimator
        from bms.limits import Limits
        from bms.protection import Protection
        from bms.status import Status

        real = {"prot": Protection(bms.cfg, bms.events), "est": Estimator(bms.cfg, bms.events),
                "limits": Limits(bms.cfg), "status": Status(15, 2)}
    except (ImportError, TypeError):
        pass
    names = set(f[0] for f in FIELDS)
    for r in gen_regmap.load():
        k = r["kind"]
        if k == gen_regmap.KINDS["cfg"]:
            assert r["path"] in names
            continue
        if k in (gen_regmap.KINDS["attr"], gen_regmap.KINDS["index"]):
            v = _resolve(bms, r["path"])
            if k == gen_regmap.KINDS["index"]:
                assert hasattr(v, "__getitem__")
            else:
                assert isinstance(v, (int, float, bool)), (r["name"], v)
            if r["path"][0] in real:
                _resolve(real[r["path"][0]], r["path"][1:])


def test_every_register_reads_through_the_server():
    bms = _bms()
    srv = bms.modbus
    srv._bms = bms
    for r in gen_regmap.load():
        k = srv._find(r["address"])
        assert k >= 0 and k & 1 == 0
        if r["kind"] == gen_regmap.KINDS["text"]:  # strN: the text, read whole
            assert srv._find(r["address"] + r["words"] - 1) == k + 1
            assert srv._text(k >> 1) == bms.cfg.get(r["path"]).encode()[:2 * r["words"]]
            continue
        v = srv._value(k >> 1)
        lo, hi = {"u16": (0, 65535), "s16": (-32768, 32767), "u32": (0, 2**32 - 1),
                  "s32": (-2**31, 2**31 - 1)}[r["type"]]
        assert lo <= v <= hi
        if r["words"] == 2:
            assert srv._find(r["address"] + 1) == k + 1
        if r["kind"] == gen_regmap.KINDS["cfg"]:
            cur = bms.cfg.get(r["path"])
            f = [f for f in FIELDS if f[0] == r["path"]][0]
            assert v == (f[1].index(cur) if len(f) == 2 else cur)


def test_pin_never_in_the_map():
    for r in gen_regmap.load():
        assert r["path"] != "modbus_pin"


def test_unmapped_config_fields_listed():
    # Not a failure: new configuration fields are added to the CSV by their owners.
    mapped = set(r["path"] for r in gen_regmap.load() if r["kind"] == gen_regmap.KINDS["cfg"])
    missing = [f[0] for f in FIELDS if f[0] not in mapped and f[0] != "modbus_pin"]
    if missing:
        print("config fields not in tools/regmap.csv:", ", ".join(missing))
