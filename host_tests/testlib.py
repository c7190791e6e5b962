# testlib: the few helpers host tests share. Works under CPython (pytest) and MicroPython.
import sys

IS_MPY = sys.implementation.name == "micropython"


def raises(exc_type, fn, *args, **kwargs):
    """Call fn and return the exception it raised; fail if it raised nothing or another type."""
    try:
        fn(*args, **kwargs)
    except exc_type as e:
        return e
    raise AssertionError("%s not raised by %r" % (exc_type.__name__, fn))


def approx(a, b, tol):
    return abs(a - b) <= tol
