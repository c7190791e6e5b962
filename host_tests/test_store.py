# Tests of bms.store (A/B slot records with CRC). CPython and MicroPython, on a temp dir.
import os

from bms.events import EV_STORE, EventLog
from bms.store import (
    ST_CORRUPT,
    ST_FALLBACK,
    ST_MISSING,
    ST_OK,
    ST_SAVED,
    Store,
    crc32,
)

_N = [0]


def _tmpdir():
    _N[0] += 1
    base = "/tmp/bms_store_test_%d_%d" % (os.getpid() if hasattr(os, "getpid") else 0, _N[0])
    _rmtree(base)
    os.mkdir(base)
    return base


def _rmtree(path):
    try:
        names = os.listdir(path)
    except OSError:
        return
    for n in names:
        os.remove(path + "/" + n)
    os.rmdir(path)


def _store(root):
    ev = EventLog(16)
    return Store(root + "/data", ev), ev


def _store_events(ev):
    return [(a, b) for t, code, a, b in ev.to_list() if code == EV_STORE]


def _flip_byte(path, pos=-3):
    f = open(path, "rb")
    data = bytearray(f.read())
    f.close()
    data[pos] ^= 0x55
    f = open(path, "wb")
    f.write(data)
    f.close()


def test_crc32_known_value():
    assert crc32(b"123456789") == 0xCBF43926
    assert crc32(b"") == 0


def test_roundtrip_alternates_slots():
    root = _tmpdir()
    try:
        st, ev = _store(root)
        assert st.load("state") is None and st.status["state"] == ST_MISSING
        for k in range(5):
            assert st.save("state", {"soc": 50.0 + k, "n": k})
        st2, ev2 = _store(root)
        d = st2.load("state")
        assert d == {"soc": 54.0, "n": 4}
        assert st2.status["state"] == ST_OK
        assert _store_events(ev2) == []
        names = sorted(os.listdir(root + "/data"))
        assert names == ["state.a", "state.b"], names
    finally:
        _rmtree(root + "/data")
        _rmtree(root)


def test_corrupt_newest_falls_back_and_reports():
    root = _tmpdir()
    try:
        st, _ = _store(root)
        st.save("state", {"n": 1})  # slot a
        st.save("state", {"n": 2})  # slot b: newest
        _flip_byte(root + "/data/state.b")
        st2, ev = _store(root)
        assert st2.load("state") == {"n": 1}
        assert st2.status["state"] == ST_FALLBACK
        assert _store_events(ev) == [(1, ST_FALLBACK)]
        # the next save goes to the corrupt slot, never over the good one
        assert st2.save("state", {"n": 3})
        st3, _ = _store(root)
        assert st3.load("state") == {"n": 3} and st3.status["state"] == ST_OK
    finally:
        _rmtree(root + "/data")
        _rmtree(root)


def test_truncated_and_garbage_records():
    root = _tmpdir()
    try:
        st, _ = _store(root)
        st.save("config", {"cells": 4})
        st.save("config", {"cells": 8})
        f = open(root + "/data/config.a", "wb")  # an interrupted write: header only
        f.write(b"BMS1 config 3 40 1234")
        f.close()
        st2, _ = _store(root)
        assert st2.load("config") == {"cells": 8}
        assert st2.status["config"] == ST_FALLBACK
        for garbage in (b"", b"\xff" * 64, b"BMS1 config 9 2 00000000\n{}", b"xx\n{}"):
            for slot in ("a", "b"):
                f = open(root + "/data/config." + slot, "wb")
                f.write(garbage)
                f.close()
            st3, ev = _store(root)
            assert st3.load("config") is None
            assert st3.status["config"] == ST_CORRUPT
            assert _store_events(ev) == [(3, ST_CORRUPT)]
    finally:
        _rmtree(root + "/data")
        _rmtree(root)


def test_wrong_kind_or_version_rejected():
    root = _tmpdir()
    try:
        st, _ = _store(root)
        st.save("events", {"e": [1, 2]})
        os.rename(root + "/data/events.a", root + "/data/state.a")
        st2, _ = _store(root)
        assert st2.load("state") is None and st2.status["state"] == ST_CORRUPT
    finally:
        _rmtree(root + "/data")
        _rmtree(root)


def test_maybe_save_interval_change_and_force():
    root = _tmpdir()
    try:
        st, ev = _store(root)
        assert st.maybe_save("state", {"soc": 1}, 0)
        assert not st.maybe_save("state", {"soc": 2}, 60000)  # within 5 min
        assert not st.maybe_save("state", {"soc": 1}, 400000)  # unchanged
        assert st.maybe_save("state", {"soc": 2}, 400001 + 300000)
        assert st.maybe_save("state", {"soc": 3}, 700002, force=True)  # shutdown / fault
        assert st.status["state"] == ST_SAVED
        assert _store_events(ev) == [(1, ST_SAVED)]
        assert st.writes == 3
        st2, _ = _store(root)
        assert st2.load("state") == {"soc": 3}
    finally:
        _rmtree(root + "/data")
        _rmtree(root)


def test_unwritable_root_reports_not_raises():
    st = Store("/nonexistent_dir_for_bms/x/y", EventLog(8))
    assert st.load("state") is None
    assert st.save("state", {"a": 1}) is False
    assert st.status["state"] == ST_CORRUPT
