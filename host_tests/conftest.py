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
