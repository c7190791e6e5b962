# bms.modbus: Modbus RTU server on RS485 (UART + driver-enable pin).
#
#   srv = ModbusServer(uart, de_pin, cfg, events, regmap=None)   regmap: bms.regmap by default
#   srv.poll(bms, now_ms)      every comms cycle; reads what the UART has, never waits for bytes
#
# The UART only needs the machine.UART subset any() / readinto(buf) / write(buf) (+ flush() or
# txdone() when present), so a PTY- or socket-backed object works in the simulator.
#
# Framing: a request ends at its expected length (FC 3/4/6: 8 bytes, FC 16: 9 + byte count)
# or, for anything else, after t3.5 of silence measured with now_ms (>= 2 ms; 4 ms at 9600):
# a poll that finds no new byte t3.5 after the last one. New bytes at a later poll continue a
# request of known length that is not complete yet (the comms task polls every 20 ms, longer
# than t3.5, so such a request is often split across polls); otherwise what was held ended.
# A bad CRC, an overrun or bytes seen while we were sending put the receiver into "skip until
# silence", so it re-synchronises on the next gap. Requests for other unit ids are ignored.
# Inter-character t1.5 is not checked (polling cannot see it).
#
# Function codes 3 and 4 read the same map (bms.regmap, generated from tools/regmap.csv);
# 6 and 16 write configuration registers and the specials (unlock, factory_reset).
# Exceptions (MODBUS Application Protocol V1.1b3 section 7; README "Exceptions"):
#   01 ILLEGAL FUNCTION   an unknown function code; a write while configuration writes are
#                         locked (also during the PIN hold-off, or with modbus_pin = 0): "the
#                         server is in the wrong state to process a request of this type"
#   02 ILLEGAL ADDRESS    an address not in the map (read), not writable (write: read-only
#                         registers, e.g. the pack identity), half of a 32-bit register
#   03 ILLEGAL VALUE      bad quantity or byte count; a value outside its field's range or
#                         against a configuration rule; a wrong PIN
#   04 DEVICE FAILURE     only when a valid change could not be carried out by the hardware
#                         (the AFE did not take new hardware limits)
# The lock state is readable (register lock_state: 0 locked, 1 unlocked, 2 PIN hold-off,
# 3 writes disabled). Unlock: write cfg.modbus_pin to the unlock register (0 locks). Unlocked
# until cfg.modbus_unlock_ms pass without an accepted write. A wrong PIN blocks unlocking for
# 10 s.
# Broadcasts (unit 0; MODBUS over Serial Line V1.02 section 2.1): writes (FC 6, 16) are
# executed exactly like addressed ones (same lock, PIN and validation) and never answered,
# not even with an exception; any other function to unit 0 is ignored.
# Events: EV_CONFIG (field index, value) per accepted field; EV_CONFIG_REJECT (field index,
# value) and failed EV_UNLOCK at most once per second (a flood must not wash faults out of the
# ring); EV_UNLOCK (1 unlocked / 0 locked, interface 1 = modbus).
#
# RS485 turnaround (Rs485.send): DE high, write, wait until the last stop bit has left the
# shift register (uart.flush() when the port has it -- rp2/esp32 MicroPython >= 1.20 --, else
# bytes x 10 bits / baud + one character), then DE low. That wait blocks the comms task for the
# length of the response (at 9600 baud: 1.04 ms per byte, a full 125-register read 265 ms).
import time
from array import array

from micropython import const

from bms.config import CHOICES, ConfigError, field_index
from bms.events import EV_CONFIG, EV_CONFIG_REJECT, EV_UNLOCK

_MAX = const(256)
_PIN_HOLDOFF_MS = const(10000)
_LOG_GAP_MS = const(1000)
_IF_MODBUS = const(1)

EX_FUNCTION = const(1)  # also: configuration writes locked (wrong state for this request)
EX_ADDRESS = const(2)
EX_VALUE = const(3)
EX_FAILURE = const(4)  # a valid change the hardware did not take
EX_LOCKED = const(1)

LOCK_LOCKED = const(0)
LOCK_UNLOCKED = const(1)
LOCK_HOLDOFF = const(2)  # a wrong PIN was written less than 10 s ago
LOCK_DISABLED = const(3)  # modbus_pin = 0: no configuration writes over Modbus
_SCRATCH = const(64)  # bytes read from the UART per call
_VIEWS = const(8)  # cached memoryviews of the response buffer (by length)


def _make_table():
    t = array("H", bytes(512))
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xA001 if c & 1 else c >> 1
        t[i] = c
    return t


_TABLE = _make_table()


def crc16(buf, n, start=0):
    # CRC-16/MODBUS of buf[start:start + n] (reflected 0xA001, init 0xFFFF); no slicing.
    crc = 0xFFFF
    t = _TABLE
    for i in range(start, start + n):
        crc = (crc >> 8) ^ t[(crc ^ buf[i]) & 0xFF]
    return crc


def _sleep_us(us):
    f = getattr(time, "sleep_us", None)
    if f is not None:
        f(us)
    else:
        time.sleep(us / 1000000)


class Rs485:
    # Half-duplex UART with a driver-enable pin (None: auto-direction transceiver).

    def __init__(self, uart, de_pin, baud, bits_per_char=10):
        self.uart = uart
        self.de = de_pin
        self._flush = getattr(uart, "flush", None)  # bound once: no allocation per response
        # uart.write() needs an object of the response's length: memoryviews of the buffer
        # are made once per (buffer, length) and reused, so a client polling the same
        # blocks causes no allocation.
        self._vbuf = [None] * _VIEWS
        self._vlen = [-1] * _VIEWS
        self._views = [None] * _VIEWS
        self._vnext = 0
        self.set_baud(baud, bits_per_char)
        if de_pin is not None:
            de_pin.value(0)

    def set_baud(self, baud, bits_per_char=10):
        self.baud = baud
        self.char_us = (bits_per_char * 1000000 + baud - 1) // baud
        # t3.5 in whole ms (fixed 1.75 ms above 19200 baud), at least 2 ms for a 1 ms clock
        t35 = 1750 if baud > 19200 else 35 * self.char_us // 10
        self.t35_ms = max(2, (t35 + 999) // 1000)

    def _view(self, buf, n):
        for i in range(_VIEWS):
            if self._vlen[i] == n and self._vbuf[i] is buf:
                return self._views[i]
        i = self._vnext
        self._vnext = (i + 1) % _VIEWS
        v = memoryview(buf)[:n]
        self._vbuf[i] = buf
        self._vlen[i] = n
        self._views[i] = v
        return v

    def send(self, buf, n):
        de = self.de
        if de is not None:
            de.value(1)
        try:
            self.uart.write(self._view(buf, n))
            self._wait_sent(n)
        finally:
            if de is not None:
                de.value(0)

    def _wait_sent(self, n):
        f = self._flush
        if f is not None:
            try:
                f()
                return
            except OSError:
                pass  # timeout on some ports: fall back to the computed time
        _sleep_us((n + 1) * self.char_us)


class ModbusServer:
    def __init__(self, uart, de_pin, cfg, events, regmap=None):
        if regmap is None:
            from bms import regmap
        self.cfg = cfg
        self.events = events
        self.regmap = regmap
        self.rs = Rs485(uart, de_pin, cfg.modbus_baud)
        self.uart = uart
        self._baud_applied = 0
        self._after_response()  # cfg.modbus_baud is authoritative: re-init the UART with it
        self._rx = bytearray(_MAX)
        self._scratch = bytearray(_SCRATCH)
        self._tx = bytearray(_MAX)
        self._n = 0
        self._t_last = 0
        self._skip = False
        self._R = regmap.REGS  # 8-byte records sorted by address (see bms.regmap)
        self._nregs = len(regmap.REGS) // 8
        self._paths = regmap.PATHS
        self._consts = regmap.CONSTS
        self._scales = regmap.SCALES
        self._unlocked = False
        self._unlock_until = 0
        # callable(now_ms, interface) -> None or the ConfigError that refused it (bms.app)
        self.on_factory_reset = _no_factory_reset
        self._pin_block_until = 0
        self._last_log_ms = -_LOG_GAP_MS
        self._now = 0
        self._bms = None
        self._changes = {}
        # counters (in the register map as modbus.*)
        self.frames = 0  # requests answered (normal or exception)
        self.crc_errors = 0
        self.exceptions = 0
        self.ignored = 0  # other unit ids, reads to unit 0
        self.broadcasts = 0  # broadcast writes executed (never answered)
        self.malformed = 0  # too short / overrun
        self.config_writes = 0

    # --- lock -------------------------------------------------------------------------------
    @property
    def unlocked(self):
        return self._unlocked

    @property
    def lock_state(self):
        """LOCK_*: what a configuration write would meet now (register lock_state)."""
        if self._unlocked:
            return LOCK_UNLOCKED
        if self.cfg.modbus_pin == 0:
            return LOCK_DISABLED
        if self._now < self._pin_block_until:
            return LOCK_HOLDOFF
        return LOCK_LOCKED

    def lock(self, now_ms):
        if self._unlocked:
            self._unlocked = False
            self.events.add(now_ms, EV_UNLOCK, 0, _IF_MODBUS)

    def _log_limited(self, now_ms, code, a, b):
        if now_ms - self._last_log_ms >= _LOG_GAP_MS:
            self._last_log_ms = now_ms
            self.events.add(now_ms, code, a, b)

    # --- poll ---------------------------------------------------------------------------------
    def poll(self, bms, now_ms):
        self._now = now_ms
        self._bms = bms
        if self._unlocked and now_ms >= self._unlock_until:
            self.lock(now_ms)
        uart = self.uart
        avail = uart.any()
        if avail:
            if ((self._n or self._skip) and now_ms - self._t_last >= self.rs.t35_ms
                    and (self._skip or not self._partial(self._n))):
                # a silence passed between polls: what we hold ended before these bytes. Not
                # for the start of a request of known length: polls come every comms cycle
                # (20 ms), longer than t3.5, so its rest arriving by the next poll says
                # nothing about a silence (at 9600 baud a request takes 8 ms on the wire).
                if self._n and not self._skip:
                    self._handle(self._n)
                self._n = 0
                self._skip = False
                avail = uart.any()
                if not avail:
                    return
            n = self._n
            room = _MAX - n
            if avail > room:
                # more than any frame can hold: drop everything, resync on silence
                self._drop_input()
                self.malformed += 1
                self._skip = True
                self._n = 0
                self._t_last = now_ms
                return
            # through a small scratch buffer (readinto(buf, nbytes) fills from the start):
            # no memoryview slice per poll; at most _MAX bytes per poll
            rx = self._rx
            sc = self._scratch
            while avail > 0:
                k = avail if avail < _SCRATCH else _SCRATCH
                got = uart.readinto(sc, k)
                if not got:
                    break
                for i in range(got):
                    rx[n + i] = sc[i]
                n += got
                avail -= got
            self._n = n
            self._t_last = now_ms
            if not self._skip:
                self._frames_by_length()
            return
        if self._n and now_ms - self._t_last >= self.rs.t35_ms:
            if not self._skip:
                self._handle(self._n)
            self._n = 0
            self._skip = False
        elif not self._n and self._skip and now_ms - self._t_last >= self.rs.t35_ms:
            self._skip = False

    def _drop_input(self):
        uart = self.uart
        sc = self._scratch
        for _ in range(8):
            k = uart.any()
            if not k:
                return
            uart.readinto(sc, k if k < _SCRATCH else _SCRATCH)

    def _partial(self, n):
        """rx[0:n] may be the first bytes of a request of known length, not yet complete."""
        if n < 2:
            return True
        fc = self._rx[1]
        if fc == 3 or fc == 4 or fc == 6:
            return n < 8
        if fc == 16:
            return n < 7 or n < 9 + self._rx[6]
        return False

    def _expected(self, n):
        rx = self._rx
        if n < 2:
            return 0
        fc = rx[1]
        if fc == 3 or fc == 4 or fc == 6:
            return 8
        if fc == 16:
            return 9 + rx[6] if n >= 7 else 0
        return 0  # unknown: wait for silence

    def _frames_by_length(self):
        while self._n:
            exp = self._expected(self._n)
            if not exp or self._n < exp:
                return
            ok = self._handle(exp)
            if not ok:
                self._skip = True  # CRC failed at the expected length: resync on silence
                return
            rest = self._n - exp
            rx = self._rx
            for i in range(rest):
                rx[i] = rx[exp + i]
            self._n = rest
            if self._skip:
                return

    # --- one frame ----------------------------------------------------------------------------
    def _handle(self, n):
        # Process rx[0:n]. False on a CRC error (or too short), True otherwise.
        rx = self._rx
        if n < 4:
            self.malformed += 1
            return False
        if crc16(rx, n - 2) != rx[n - 2] | (rx[n - 1] << 8):
            self.crc_errors += 1
            return False
        unit = rx[0]
        fc = rx[1]
        if unit == 0:
            # Broadcast: writes are executed (same lock, PIN and validation) and never
            # answered, not even with an exception; nothing else is valid to unit 0.
            if fc == 6:
                self._write_single(n, False)
            elif fc == 16:
                self._write_multiple(n, False)
            else:
                self.ignored += 1
                return True
            self.broadcasts += 1
            self._after_response()
            return True
        if unit != self.cfg.modbus_unit:
            self.ignored += 1
            return True
        if fc == 3 or fc == 4:
            ex = self._read(n)
        elif fc == 6:
            ex = self._write_single(n, True)
        elif fc == 16:
            ex = self._write_multiple(n, True)
        else:
            ex = EX_FUNCTION
        if ex:
            tx = self._tx
            tx[0] = unit
            tx[1] = fc | 0x80
            tx[2] = ex
            self.exceptions += 1
            self._send(3)
        self.frames += 1
        self._after_response()
        return True

    def _send(self, n):
        tx = self._tx
        c = crc16(tx, n)
        tx[n] = c & 0xFF
        tx[n + 1] = c >> 8
        self.rs.send(tx, n + 2)
        self._drop_input()  # our own echo on transceivers with RE enabled
        self._t_last = self._now
        self._skip = True  # anything already in the buffer predates our response

    def _after_response(self):
        # a modbus_baud change takes effect after the response that wrote it was sent
        baud = self.cfg.modbus_baud
        if baud != self._baud_applied:
            self._baud_applied = baud
            self.rs.set_baud(baud)
            init = getattr(self.uart, "init", None)
            if init is not None:
                try:
                    init(baudrate=baud)
                except (TypeError, ValueError, OSError):
                    pass

    # --- values -----------------------------------------------------------------------------
    def _find(self, a):
        # Register index * 2 + word offset for word address a, or -1 (binary search).
        R = self._R
        lo = 0
        hi = self._nregs - 1
        while lo <= hi:
            mid = (lo + hi) >> 1
            o = mid * 8
            ra = (R[o] << 8) | R[o + 1]
            if ra == a:
                return mid * 2
            if ra < a:
                lo = mid + 1
            else:
                hi = mid - 1
        if hi >= 0:
            o = hi * 8
            tak = R[o + 2]
            n = R[o + 5] if tak >> 4 == 5 else 2 if tak & 3 >= 2 else 1  # K_TEXT: N words
            if a - ((R[o] << 8) | R[o + 1]) < n:
                return hi * 2 + 1
        return -1

    def _raw(self, ri):
        R = self._R
        o = ri * 8
        kind = R[o + 2] >> 4
        ref = (R[o + 3] << 8) | R[o + 4]
        if kind == 0:  # K_CONST
            v = self._consts[ref]
        elif kind == 4:  # K_SPECIAL: the unlock register reads 1 while unlocked, others 0
            v = 1 if self._unlocked and self._paths[ref] == "unlock" else 0
        elif kind == 5:  # K_TEXT: the numeric view is 0 (_read sends the text)
            return 0
        elif kind == 3:  # K_CFG
            name = self._paths[ref]
            v = getattr(self.cfg, name, 0)
            if isinstance(v, str):
                ch = CHOICES.get(name)
                v = ch.index(v) if ch is not None and v in ch else 0
        else:
            v = self._bms
            for p in self._paths[ref]:
                v = getattr(v, p, None)
                if v is None:
                    return 0
            if kind == 2:  # K_INDEX
                i = R[o + 5]
                try:
                    v = v[i] if i < len(v) else 0  # type: ignore[index,arg-type]
                except TypeError:
                    return 0
        return v

    def _value(self, ri):
        # Register value of register ri: scaled, rounded, clamped to its type.
        v = self._raw(ri)
        if v is None:
            return 0
        if isinstance(v, bool):
            v = 1 if v else 0
        R = self._R
        o = ri * 8
        tak = R[o + 2]
        mul, div = self._scales[R[o + 6]]
        if isinstance(v, float):
            v = int(round(v * mul / div))
        elif mul != 1 or div != 1:
            v = v * mul
            v = v // div if v >= 0 else -((-v) // div)
        t = tak & 3
        if t == 0:
            lo, hi = 0, 0xFFFF
        elif t == 1:
            lo, hi = -0x8000, 0x7FFF
        elif t == 2:
            lo, hi = 0, 0xFFFFFFFF
        else:
            lo, hi = -0x80000000, 0x7FFFFFFF
        return lo if v < lo else hi if v > hi else v

    def _text(self, ri):
        # the UTF-8 bytes of a text field, cut to its registers (last read cached per cycle)
        R = self._R
        o = ri * 8
        v = getattr(self.cfg, self._paths[(R[o + 3] << 8) | R[o + 4]], "")
        b = v.encode() if isinstance(v, str) else b""
        return b[:2 * R[o + 5]]

    # --- FC 3 / 4 ---------------------------------------------------------------------------
    def _read(self, n):
        rx = self._rx
        if n != 8:
            return EX_VALUE
        start = (rx[2] << 8) | rx[3]
        cnt = (rx[4] << 8) | rx[5]
        if not 1 <= cnt <= 125:
            return EX_VALUE
        for a in range(start, start + cnt):
            if self._find(a) < 0:
                return EX_ADDRESS
        tx = self._tx
        tx[0] = rx[0]
        tx[1] = rx[1]
        tx[2] = 2 * cnt
        o = 3
        last = -1
        val = 0
        txt = b""
        R = self._R
        for a in range(start, start + cnt):
            k = self._find(a)
            ri = k >> 1
            if ri != last:
                val = self._value(ri)
                last = ri
                txt = self._text(ri) if R[ri * 8 + 2] >> 4 == 5 else b""
            if R[ri * 8 + 2] >> 4 == 5:  # K_TEXT: word (a - start) of the NUL-padded text
                o2 = 2 * (a - ((R[ri * 8] << 8) | R[ri * 8 + 1]))
                w = ((txt[o2] << 8) if o2 < len(txt) else 0) | (txt[o2 + 1]
                                                                 if o2 + 1 < len(txt) else 0)
            elif R[ri * 8 + 2] & 3 >= 2:
                w = (val >> 16) & 0xFFFF if not k & 1 else val & 0xFFFF
            else:
                w = val & 0xFFFF
            tx[o] = w >> 8
            tx[o + 1] = w & 0xFF
            o += 2
        self._send(o)
        return 0

    # --- FC 6 / 16 --------------------------------------------------------------------------
    def _write_single(self, n, reply):
        rx = self._rx
        if n != 8:
            return EX_VALUE
        ex = self._write(rx, 2, 4, 1)
        if ex:
            return ex
        if reply:
            tx = self._tx
            for i in range(6):
                tx[i] = rx[i]  # echo of the request
            self._send(6)
        return 0

    def _write_multiple(self, n, reply):
        rx = self._rx
        if n < 9:
            return EX_VALUE
        cnt = (rx[4] << 8) | rx[5]
        bc = rx[6]
        if not 1 <= cnt <= 123 or bc != 2 * cnt or n != 9 + bc:
            return EX_VALUE
        ex = self._write(rx, 2, 7, cnt)
        if ex:
            return ex
        if reply:
            tx = self._tx
            for i in range(6):
                tx[i] = rx[i]
            self._send(6)
        return 0

    def _write(self, rx, addr_off, data_off, cnt):
        # Validate and apply cnt words starting at the address in rx[addr_off]. 0 or an
        # exception code. Nothing changes unless every word is acceptable. Order: every
        # address mapped and writable, whole registers only (02), then the lock (01), then
        # the values (03).
        start = (rx[addr_off] << 8) | rx[addr_off + 1]
        R = self._R
        now = self._now
        changes = self._changes
        changes.clear()
        special = -1
        i = 0
        while i < cnt:
            k = self._find(start + i)
            if k < 0:
                return EX_ADDRESS
            ro = (k >> 1) * 8
            tak = R[ro + 2]
            if not (tak >> 2) & 2 or k & 1:
                return EX_ADDRESS
            kind = tak >> 4
            if kind == 5:  # K_TEXT: all of its registers in this write
                n = R[ro + 5]
            else:
                n = 2 if tak & 3 >= 2 else 1
            if i + n > cnt:
                return EX_ADDRESS  # half of a 32-bit register or of a text
            i += n
            if kind == 4:  # a special register (unlock, factory_reset): alone only
                if cnt != 1:
                    return EX_ADDRESS
                special = ro
        if special >= 0:
            w = (rx[data_off] << 8) | rx[data_off + 1]
            if self._paths[(R[special + 3] << 8) | R[special + 4]] == "unlock":
                return self._unlock(w, now)
            return self._factory_reset(w, now)
        i = 0
        while i < cnt:
            ro = (self._find(start + i) >> 1) * 8
            tak = R[ro + 2]
            t = tak & 3
            name = self._paths[(R[ro + 3] << 8) | R[ro + 4]]
            o = data_off + 2 * i
            if not self._unlocked:
                self._log_limited(now, EV_CONFIG_REJECT, field_index(name),
                                  (rx[o] << 8) | rx[o + 1])
                return EX_LOCKED
            if tak >> 4 == 5:  # K_TEXT: UTF-8, NUL-padded
                nw = R[ro + 5]
                end = 2 * nw
                while end and rx[o + end - 1] == 0:
                    end -= 1
                try:
                    changes[name] = bytes(rx[o:o + end]).decode()
                except UnicodeError:
                    self._log_limited(now, EV_CONFIG_REJECT, field_index(name), 0)
                    return EX_VALUE
                i += nw
                continue
            w = (rx[o] << 8) | rx[o + 1]
            if t >= 2:
                w = (w << 16) | (rx[o + 2] << 8) | rx[o + 3]
                if t == 3 and w & 0x80000000:
                    w -= 0x100000000
                i += 2
            else:
                if t == 1 and w & 0x8000:
                    w -= 0x10000
                i += 1
            ch = CHOICES.get(name)
            if ch is not None:  # enum: register = index of the choice
                if not 0 <= w < len(ch):
                    self._log_limited(now, EV_CONFIG_REJECT, field_index(name), w)
                    return EX_VALUE
                changes[name] = ch[w]
            else:
                changes[name] = w
        return self._apply(changes, now)

    def _apply(self, changes, now):
        # The configuration's own rules first (range, cross-field): a refusal is exception 03.
        # A change that passes them but is refused by a hook (the AFE did not take new
        # hardware limits) is a device failure: 04.
        try:
            self.cfg.check(changes)
        except ConfigError as e:
            self._reject(now, e, changes)
            return EX_VALUE
        except (TypeError, ValueError):
            return EX_VALUE
        try:
            self.cfg.update(changes)
        except ConfigError as e:
            self._reject(now, e, changes)
            return EX_FAILURE
        except (TypeError, ValueError):
            return EX_FAILURE
        for name in changes:
            self.events.add(now, EV_CONFIG, field_index(name), _int_or_index(name,
                                                                            changes[name]))
        self.config_writes += 1
        self._unlock_until = now + self.cfg.modbus_unlock_ms
        return 0

    def _reject(self, now, e, changes):
        v = changes.get(e.field, 0)
        self._log_limited(now, EV_CONFIG_REJECT, field_index(e.field), _int_or_index(e.field, v))

    def _factory_reset(self, w, now):
        """Register factory_reset: 1 (while unlocked) resets the configuration to the board's
        defaults, through the same validation and hooks as every change (bms.app)."""
        if not self._unlocked:
            self._log_limited(now, EV_UNLOCK, 0, _IF_MODBUS)
            return EX_LOCKED
        if w != 1:
            return EX_VALUE
        fn = self.on_factory_reset
        if fn is _no_factory_reset:
            return EX_FUNCTION  # this server offers no factory reset
        if fn(now, _IF_MODBUS) is not None:
            return EX_FAILURE  # refused by the device (e.g. the AFE did not take the limits)
        self.config_writes += 1
        self._unlock_until = now + self.cfg.modbus_unlock_ms
        return 0

    def _unlock(self, pin, now):
        if pin == 0:
            self.lock(now)
            return 0
        if self.cfg.modbus_pin == 0 or now < self._pin_block_until:
            self._log_limited(now, EV_UNLOCK, 0, _IF_MODBUS)
            return EX_LOCKED
        if pin != self.cfg.modbus_pin:
            self._pin_block_until = now + _PIN_HOLDOFF_MS
            self._log_limited(now, EV_UNLOCK, 0, _IF_MODBUS)
            return EX_VALUE
        self._unlocked = True
        self._unlock_until = now + self.cfg.modbus_unlock_ms
        self.events.add(now, EV_UNLOCK, 1, _IF_MODBUS)
        return 0


def _no_factory_reset(now, interface):
    """The default factory-reset hook: none (the app installs bms.app.Bms.factory_reset)."""
    if interface < 0:
        return None
    return ConfigError("factory_reset", "not available")


def _int(v):
    return v if isinstance(v, int) else 0


def _int_or_index(name, v):
    if isinstance(v, str):
        ch = CHOICES.get(name)
        return ch.index(v) if ch is not None and v in ch else 0
    return _int(v)
