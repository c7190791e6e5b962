"""Fake ``machine`` objects for the virtual board (host only).

* ``SimClock()``: ``now_ms()``, ``advance(ms)`` - the only clock of a simulation.
* ``I2C(devices=None)``: ``add(device)`` registers an emulator by its ``address``;
  ``readfrom_mem_into(addr, memaddr, buf)``, ``readfrom_mem(addr, memaddr, n)``,
  ``writeto_mem(addr, memaddr, buf)``, ``writeto(addr, buf, stop=True)`` (first byte =
  register; a single byte only sets the register pointer), ``readfrom_into(addr, buf)``
  and ``readfrom(addr, n)`` (from the pointer), ``scan()``. An absent or silent address
  raises OSError(ENODEV). Devices implement ``i2c_write(reg, data)``, ``i2c_read(reg,
  buf)`` and ``i2c_present()``. ``transactions`` counts calls.
* ``Pin(id, mode=None, value=None, pull=None, clock=None)``: ``value([v])``, ``on()``,
  ``off()``, ``toggle()``, ``init(...)``, ``irq(handler=None, trigger=...)`` (stored, never
  fired by itself; ``fire()`` calls it), ``state`` and ``changes`` (list of (t_ms, v),
  capped at 1000) for tests.
* ``WDT(id=0, timeout=5000, clock=None)``: ``feed()`` records ``last_feed_ms``/``feeds``;
  ``expired()`` is True once the clock passed last feed + timeout.
"""

import errno


class SimClock:
    def __init__(self, t0_ms=0):
        self.t_ms = t0_ms

    def now_ms(self):
        return self.t_ms

    def advance(self, ms):
        self.t_ms += ms
        return self.t_ms


class I2C:
    def __init__(self, devices=None, id=0, freq=100000, **kwargs):
        self.id = id
        self.freq = freq
        self.devices = {}
        self.transactions = 0
        for d in devices or ():
            self.add(d)

    def add(self, device, address=None):
        a = device.address if address is None else address
        self.devices[a] = device
        if not hasattr(device, "_ptr"):
            device._ptr = 0
        return device

    def _dev(self, addr):
        self.transactions += 1
        d = self.devices.get(addr)
        if d is None or not d.i2c_present():
            raise OSError(errno.ENODEV)
        return d

    def scan(self):
        return sorted(a for a, d in self.devices.items() if d.i2c_present())

    def readfrom_mem_into(self, addr, memaddr, buf, addrsize=8):
        d = self._dev(addr)
        d.i2c_read(memaddr, buf)

    def readfrom_mem(self, addr, memaddr, nbytes, addrsize=8):
        buf = bytearray(nbytes)
        self.readfrom_mem_into(addr, memaddr, buf)
        return bytes(buf)

    def writeto_mem(self, addr, memaddr, buf, addrsize=8):
        d = self._dev(addr)
        d.i2c_write(memaddr, buf)

    def writeto(self, addr, buf, stop=True):
        d = self._dev(addr)
        if len(buf) == 0:
            return 0
        d._ptr = buf[0]
        if len(buf) > 1:
            d.i2c_write(buf[0], memoryview(buf)[1:])
        return len(buf)

    def readfrom_into(self, addr, buf, stop=True):
        d = self._dev(addr)
        d.i2c_read(d._ptr, buf)

    def readfrom(self, addr, nbytes, stop=True):
        buf = bytearray(nbytes)
        self.readfrom_into(addr, buf)
        return bytes(buf)


class Pin:
    IN = 0
    OUT = 1
    OPEN_DRAIN = 2
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, id, mode=None, value=None, pull=None, clock=None):
        self.id = id
        self.clock = clock
        self.mode = mode
        self.pull = pull
        self.state = 0
        self.changes = []
        self.handler = None
        self.trigger = 0
        if value is not None:
            self.value(value)

    def init(self, mode=None, pull=None, value=None, **kwargs):
        if mode is not None:
            self.mode = mode
        if pull is not None:
            self.pull = pull
        if value is not None:
            self.value(value)

    def value(self, v=None):
        if v is None:
            return self.state
        v = 1 if v else 0
        if v != self.state:
            self.state = v
            if len(self.changes) < 1000:
                t = self.clock.now_ms() if self.clock is not None else None
                self.changes.append((t, v))
        return None

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def toggle(self):
        self.value(0 if self.state else 1)

    def irq(self, handler=None, trigger=3, **kwargs):
        self.handler = handler
        self.trigger = trigger
        return self

    def fire(self):
        """Call the registered irq handler (tests / emulated edges)."""
        if self.handler is not None:
            self.handler(self)


class WDT:
    def __init__(self, id=0, timeout=5000, clock=None):
        self.timeout = timeout
        self.clock = clock
        self.feeds = 0
        self.last_feed_ms = clock.now_ms() if clock is not None else 0
        self.started_ms = self.last_feed_ms

    def feed(self):
        self.feeds += 1
        if self.clock is not None:
            self.last_feed_ms = self.clock.now_ms()

    def expired(self):
        if self.clock is None:
            return False
        return self.clock.now_ms() - self.last_feed_ms > self.timeout
