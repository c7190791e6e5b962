# pytest configuration: put the firmware, boards, tools and the CPython shims on the path.
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for p in ("tools/compat", "host_tests/fakes", "firmware", "tools", "host_tests", ""):
    path = os.path.join(ROOT, p)
    if path not in sys.path:
        sys.path.insert(0, path)

# test_mpy_*.py files run only under MicroPython (host_tests/run_mpy.py).
collect_ignore_glob = ["test_mpy_*.py"]


def pytest_collection_modifyitems(session, config, items):
    """Tests that read a long simulator run (host_tests/longruns.py) go last; their runs start
    now in the background, on the core the other tests leave idle."""
    import longruns

    mods = longruns.modules()
    late = [it for it in items if getattr(it.module, "__name__", "") in mods]
    if not late:
        return
    items[:] = [it for it in items if it not in late] + late
    longruns.start(set(it.module.__name__ for it in late))
