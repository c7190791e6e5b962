# Runs the host tests under the MicroPython unix port.
#
#   MICROPYPATH=host_tests:host_tests/fakes:firmware:tools:.:.frozen \
#       micropython host_tests/run_mpy.py [name ...] [-name ...]
#
# Every host_tests/test_*.py runs here except test_cpy_*.py (CPython only: hypothesis,
# cantools, pymodbus...). test_mpy_*.py run only here. Each test_* function is called
# with no arguments. Prints one line per failure with its traceback and ends with
# "N passed, M failed"; the exit status is the number of failures (an int, capped at 100).
# A name selects the test modules containing it; -name leaves them out.
import gc
import os
import sys
import time


def _modules(args):
    selected = [a for a in args if not a.startswith("-")]
    excluded = [a[1:] for a in args if a.startswith("-")]
    names = []
    for fn in sorted(os.listdir("host_tests")):
        if not (fn.startswith("test_") and fn.endswith(".py")):
            continue
        if fn.startswith("test_cpy_"):
            continue
        mod = fn[:-3]
        if selected and not any(s in mod for s in selected):
            continue
        if any(x in mod for x in excluded):
            continue
        names.append(mod)
    return names


def _unload(before):
    """Unload every module imported since `before`, so the next test module starts from an
    unfragmented heap (the board-sized -X heapsize makes fragmentation matter)."""
    for k in list(sys.modules):
        if k not in before:
            del sys.modules[k]
    gc.collect()


def main():
    selected = sys.argv[1:]
    passed = failed = 0
    for modname in _modules(selected):
        t0 = time.ticks_ms()
        before = set(sys.modules)
        try:
            mod = __import__(modname)
        except Exception as e:
            failed += 1
            print("FAIL import", modname)
            sys.print_exception(e)
            e = None
            _unload(before)
            continue
        n = 0
        for name in sorted(dir(mod)):
            if not name.startswith("test_"):
                continue
            fn = getattr(mod, name)
            if not callable(fn):
                continue
            gc.collect()
            try:
                fn()
                passed += 1
                n += 1
            except Exception as e:
                failed += 1
                print("FAIL %s.%s" % (modname, name))
                sys.print_exception(e)
        print("  %-40s %3d ok  %5d ms" % (modname, n, time.ticks_diff(time.ticks_ms(), t0)))
        # The last references to this module's objects go (the next import would otherwise
        # run beside all of them), then everything it pulled in.
        mod = fn = e = None  # noqa: F841 (MicroPython keeps `e` bound after except)
        _unload(before)
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(min(failed, 100))


main()
