"""Seeded load/PV current profiles for the simulator (host only).

``HomeDay(capacity_mah, seed)`` follows shared/reference/estimation.md section 7.3:

* house load: base 0.012 C, morning Gaussian peak at 07:30 (sigma 0.7 h, 0.012 C),
  evening peak at 19:30 (sigma 1.5 h, 0.021 C), 14 random appliance spikes of 2-30 min
  and 0.03-0.18 C between 06:00 and 23:00;
* PV: sin^2 bell from 07:00 to 19:00, peak 0.17 C (day 0; later days are scaled by a
  random day factor 0.5-1.15), 6 cloud passages between 09:00 and 16:00 of 5-40 min that
  multiply the output by 0.2-0.6;
* battery current = PV - load (+ = charging), clipped to +-0.5 C.

Each day is precomputed at one-minute resolution (1441 ints, built when the day is first
needed) and interpolated linearly, so ``current_ma(t_ms)`` is a few integer operations.
Day d uses its own random stream derived from (seed, d): multi-day runs get a different
day every day, and the same seed always gives the same days.

``Rng`` is the simulator's own deterministic generator (Park-Miller minimal standard):
it gives the same numbers under CPython and MicroPython, unlike ``random``.
"""

import math
from array import array

_M = 2147483647
_DAY_MS = 86400000


class Rng:
    """Deterministic PRNG, small-int arithmetic only (x * 48271 mod 2**31-1)."""

    def __init__(self, seed):
        s = (int(seed) * 7919 + 12345) % _M
        self.x = s if s else 1
        for _ in range(3):
            self.next()

    def next(self):
        self.x = (self.x * 48271) % _M
        return self.x

    def uniform(self, a=0.0, b=1.0):
        return a + (b - a) * (self.next() / _M)

    def randint(self, a, b):
        """Integer in [a, b]."""
        return a + self.next() % (b - a + 1)

    def gauss(self):
        """Approximately standard normal (Irwin-Hall, 6 uniforms; |x| <= 4.2)."""
        s = 0
        for _ in range(6):
            s += self.next()
        return (s / _M - 3.0) * 1.4142135623730951


class HomeDay:
    """24 h home-storage battery current (+ = charging), repeating with a new day daily."""

    def __init__(self, capacity_mah, seed=1, pv_scale=1.0, load_scale=1.0,
                 clip_c=0.5, start_day=0, keep_parts=False):
        self.capacity_mah = capacity_mah
        self.seed = seed
        self.pv_scale = pv_scale
        self.load_scale = load_scale
        self.clip_c = clip_c
        self.start_day = start_day
        self._day = -1
        self._tab = None
        self.keep_parts = keep_parts
        self.pv_ma = None  # keep_parts: PV of the cached day (array('f'), mA per minute)
        self.load_ma = None  # keep_parts: load of the cached day (array('f'), mA per minute)

    def _build(self, day):
        # arrays of unboxed floats/ints: ~17 KB transient, 5.8 KB kept (fits a small heap)
        self._tab = None
        rng = Rng(self.seed * 1000003 + day * 7777 + 1)
        cap = self.capacity_mah
        n = 1441
        load = array("f", bytes(4 * n))
        pv = array("f", bytes(4 * n))
        for m in range(n):
            h = m / 60.0
            dm = (h - 7.5) / 0.7
            de = (h - 19.5) / 1.5
            load[m] = 0.012 + 0.012 * math.exp(-0.5 * dm * dm) \
                + 0.021 * math.exp(-0.5 * de * de)
        for _ in range(14):
            start = rng.randint(6 * 60, 23 * 60)
            dur = rng.randint(2, 30)
            amp = rng.uniform(0.03, 0.18)
            for m in range(start, min(n, start + dur)):
                load[m] += amp
        peak = 0.17 * self.pv_scale
        if day > 0:
            peak *= rng.uniform(0.5, 1.15)
        for m in range(7 * 60, 19 * 60 + 1):
            s = math.sin(math.pi * (m - 420) / 720.0)
            pv[m] = peak * s * s
        for _ in range(6):
            start = rng.randint(9 * 60, 16 * 60)
            dur = rng.randint(5, 40)
            f = rng.uniform(0.2, 0.6)
            for m in range(start, min(n, start + dur)):
                pv[m] *= f
        lim = self.clip_c
        tab = array("i", bytes(4 * n))
        ls = self.load_scale
        for m in range(n):
            c = pv[m] - load[m] * ls
            if c > lim:
                c = lim
            elif c < -lim:
                c = -lim
            tab[m] = int(c * cap)
        if self.keep_parts:
            for m in range(n):
                pv[m] *= cap
                load[m] *= ls * cap
            self.pv_ma = pv
            self.load_ma = load
        self._tab = tab
        self._day = day

    def current_ma(self, t_ms):
        """Battery current in mA at t_ms (ms since the start of day 0, 00:00)."""
        day = t_ms // _DAY_MS + self.start_day
        if day != self._day:
            self._build(day)
        r = t_ms % _DAY_MS
        m = r // 60000
        f = r - m * 60000
        tab = self._tab
        a = tab[m]
        if f == 0:
            return a
        return a + (tab[m + 1] - a) * f // 60000

    __call__ = current_ma
