# bms.clock: millisecond ticks that work on MicroPython and CPython.
#
# Pure logic never reads a clock: it gets `now_ms` from its caller. Only the app and
# the boards use this module. Times are plain ints in ms since boot (no wrap handling is
# needed for 2**62 ms on MicroPython's big ints; on a board ticks_ms wraps, so the app
# accumulates ticks_diff into a monotonic counter instead of using ticks_ms directly).
import time

try:
    _ticks_ms = time.ticks_ms  # type: ignore[attr-defined]
    _ticks_diff = time.ticks_diff  # type: ignore[attr-defined]
except AttributeError:  # CPython

    _monotonic = getattr(time, "monotonic")  # noqa: B009 - not in the MicroPython stubs

    def _ticks_ms():
        return int(_monotonic() * 1000)

    def _ticks_diff(a, b):
        return a - b


class MonotonicClock:
    """Monotonic ms counter built from wrapping ticks_ms (no allocation after start)."""

    def __init__(self):
        self._last = _ticks_ms()
        self._now = 0

    def now_ms(self):
        t = _ticks_ms()
        self._now += _ticks_diff(t, self._last)
        self._last = t
        return self._now
