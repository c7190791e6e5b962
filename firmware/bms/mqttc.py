# bms.mqttc: a small MQTT 3.1.1 client that never waits (non-blocking socket, polled).
#
#   c = MqttClient(rx_size=512, tx_size=2048)
#   c.start(addr, now_ms, client_id, user, password, will_topic, will_payload,
#           keepalive_s=30, tls=None)      open the TCP connection (non-blocking); CONNECT
#                                          is queued as soon as the socket is writable
#   ev = c.poll(now_ms)                    flush what is queued, read what arrived, parse;
#                                          EVT_UP once CONNACK accepted, EVT_DOWN when lost
#   c.publish(topic, payload, retain=False, qos=0) -> pid (QoS 1), 1 (QoS 0), 0 (no room now)
#   c.subscribe(topics)  c.disconnect()  c.close()
#   c.on_message(topic: bytes, payload: bytes)   c.on_puback(pid)   c.on_drop(kind, length)
#
# Why not a library client: micropython-lib's umqtt.simple blocks in connect(), waits for
# PUBACK/SUBACK inside publish()/subscribe() and reads a whole incoming payload into one
# allocation (a 100 kB message on the command topic would take the heap); mqtt_as imports
# machine/network and runs only as coroutines. This one never blocks: the socket is
# non-blocking, writes go through a fixed output buffer (a full buffer refuses the publish,
# the caller retries later), reads go into a fixed input buffer, and a packet larger than
# that buffer is skipped byte by byte without allocating it (on_drop tells the owner).
# The only waits left are the caller's DNS look-up (done once per host and cached by
# bms.mqtt) and the TLS handshake arithmetic of the port's ssl module.
#
# Broker garbage (bad lengths, unknown packet types, a refused CONNACK, EOF, timeouts) ends
# the connection: poll() returns EVT_DOWN with .reason (R_*), never raises.
import errno
import select
import socket

from micropython import const

ST_IDLE = const(0)
ST_TCP = const(1)  # TCP (and TLS) connection in progress
ST_CONNACK = const(2)  # CONNECT sent, waiting for CONNACK
ST_UP = const(3)

EVT_NONE = const(0)
EVT_UP = const(1)
EVT_DOWN = const(2)

# reasons for EVT_DOWN (EV_MQTT b values, README "Home Assistant / MQTT")
R_CONNECT = const(1)  # TCP connection failed or refused
R_TIMEOUT = const(2)  # no CONNACK / no answer to keep-alive in time
R_CLOSED = const(3)  # the broker closed the connection (EOF, reset)
R_PROTOCOL = const(4)  # broker garbage: bad length, unknown or unexpected packet
R_REFUSED = const(5)  # CONNACK with a non-zero return code (bad user/password, ...)
R_IO = const(6)  # another socket error
R_OVERFLOW = const(7)  # the output buffer stayed full (broker not reading)

_CONNECT_TIMEOUT_MS = const(10000)
_OVERFLOW_MS = const(30000)

_AGAIN = (errno.EAGAIN, errno.EINPROGRESS, errno.ETIMEDOUT, 11, 115, 118, 119, -110)


class MqttError(Exception):
    pass


def _err(e):
    return e.args[0] if e.args else -1


def varint(buf, o, x):
    """Write MQTT's variable-length integer x at buf[o]; return the offset after it."""
    while True:
        b = x & 0x7F
        x >>= 7
        if x:
            buf[o] = b | 0x80
            o += 1
        else:
            buf[o] = b
            return o + 1


def _b(s):
    return s.encode() if isinstance(s, str) else s


class MqttClient:
    def __init__(self, rx_size=512, tx_size=2048):
        self._rx = bytearray(rx_size)
        self._rxmv = memoryview(self._rx)
        self._rxn = 0
        self._skip = 0  # bytes of an oversize packet still to discard
        self._tx = bytearray(tx_size)
        self._txmv = memoryview(self._tx)
        self._txo = 0  # first byte not yet written to the socket
        self._txn = 0  # end of queued bytes
        self._hdr = bytearray(8)
        self.sock = None
        self._poller = None
        self.state = ST_IDLE
        self.reason = 0
        self._pid = 0
        self._keep_ms = 30000
        self._t_state = 0
        self._last_rx = 0
        self._last_tx = 0
        self._full_since = -1
        self._connect_args = ("", "", "", "", b"", 30)
        self._tls = None
        self.on_message = _no_message
        self.on_puback = _no_puback
        self.on_drop = _no_drop
        # counters
        self.tx_packets = 0
        self.rx_packets = 0
        self.dropped = 0  # incoming packets skipped (oversize)

    # --- connection ---------------------------------------------------------------------
    def start(self, addr, now, client_id, user="", password="", will_topic="",
              will_payload=b"", keepalive_s=30, tls=None):
        """Begin connecting to addr (a getaddrinfo() result entry). tls: None, or a callable
        sock -> wrapped socket (do_handshake_on_connect=False). Raises nothing: a failure
        shows as EVT_DOWN from the next poll()."""
        self.close()
        self._keep_ms = keepalive_s * 1000
        self._connect_args = (client_id, user, password, will_topic, will_payload,
                              keepalive_s)
        self._tls = tls
        self._t_state = now
        self._last_rx = now
        self._last_tx = now
        self._ping_t = now
        self.reason = 0
        self._rxn = 0
        self._skip = 0
        self._txo = self._txn = 0
        self._full_since = -1
        try:
            s = socket.socket(addr[0], addr[1], addr[2])
            self.sock = s
            s.setblocking(False)
            try:
                s.connect(addr[-1])
            except OSError as e:
                if _err(e) not in _AGAIN:
                    raise
            p = select.poll()
            p.register(s, select.POLLOUT | select.POLLIN)
            self._poller = p
            self.state = ST_TCP
        except OSError:
            self._down(R_CONNECT)
            self._pending_down = True  # reported as EVT_DOWN by the next poll()

    _pending_down = False

    def close(self):
        s = self.sock
        self.sock = None
        self._poller = None
        if s is not None:
            try:
                s.close()
            except OSError:
                pass
        self.state = ST_IDLE

    def disconnect(self):
        """Polite end: DISCONNECT (the broker then does not publish the will), close."""
        if self.state == ST_UP:
            self._put2(0xE0, 0)
            try:
                self._flush()
            except OSError:
                pass
        self.close()

    def _down(self, reason):
        self.reason = reason
        self.close()

    @property
    def up(self):
        return self.state == ST_UP

    # --- the poll -------------------------------------------------------------------------
    def poll(self, now):
        self._now = now
        if self._pending_down:
            self._pending_down = False
            return EVT_DOWN
        st = self.state
        if st == ST_IDLE:
            return EVT_NONE
        try:
            if st == ST_TCP:
                if now - self._t_state > _CONNECT_TIMEOUT_MS:
                    raise MqttError(R_TIMEOUT)
                ev = self._poller.poll(0) if self._poller is not None else ()
                if not ev:
                    return EVT_NONE
                flags = ev[0][1]
                if flags & (select.POLLERR | select.POLLHUP):
                    raise MqttError(R_CONNECT)
                if not flags & select.POLLOUT:
                    return EVT_NONE
                if self._tls is not None:
                    self.sock = self._tls(self.sock)
                self._queue_connect()
                self.state = ST_CONNACK
                self._t_state = now
            self._flush()
            r = self._read()
            self._flush()  # PUBACKs for what was read
            if r == EVT_UP:
                return EVT_UP
            if self.state == ST_CONNACK:
                if now - self._t_state > _CONNECT_TIMEOUT_MS:
                    raise MqttError(R_TIMEOUT)
                return EVT_NONE
            # keep-alive: a PINGREQ when we have been quiet; the broker must answer
            half = self._keep_ms // 2
            if ((now - self._last_tx >= half or now - self._last_rx >= half)
                    and now - self._ping_t >= half):
                self._ping_t = now
                self._put2(0xC0, 0)
                self._flush()
            if now - self._last_rx > self._keep_ms + self._keep_ms // 2:
                raise MqttError(R_TIMEOUT)
            if self._txn:
                if self._full_since < 0:
                    self._full_since = now
                elif now - self._full_since > _OVERFLOW_MS:
                    raise MqttError(R_OVERFLOW)
            else:
                self._full_since = -1
            return EVT_NONE
        except MqttError as e:
            self._down(e.args[0])
        except OSError as e:
            self._down(R_CLOSED if _err(e) in (errno.ECONNRESET, 104, 32, 128, 113)
                       else R_IO)
        except (IndexError, ValueError, TypeError):
            self._down(R_PROTOCOL)
        return EVT_DOWN

    def flush(self):
        """Hand what is queued to the socket now. False (connection closed, .reason set) on
        a socket error."""
        try:
            self._flush()
            return True
        except OSError as e:
            self._down(R_CLOSED if _err(e) in (errno.ECONNRESET, 104, 32, 128, 113) else R_IO)
            return False

    # --- output ---------------------------------------------------------------------------
    def _room(self, n):
        """Make n bytes of room at the end of the output buffer; False if impossible."""
        size = len(self._tx)
        if self._txn + n <= size:
            return True
        pend = self._txn - self._txo
        if pend + n > size:
            return False
        if self._txo:
            self._tx[0:pend] = self._tx[self._txo:self._txn]
            self._txo = 0
            self._txn = pend
        return True

    def _put(self, data):
        n = len(data)
        self._tx[self._txn:self._txn + n] = data
        self._txn += n

    def _put2(self, a, b):
        if self._room(2):
            self._tx[self._txn] = a
            self._tx[self._txn + 1] = b
            self._txn += 2
            self.tx_packets += 1

    def _put_str(self, s):
        n = len(s)
        self._tx[self._txn] = n >> 8
        self._tx[self._txn + 1] = n & 0xFF
        self._txn += 2
        self._put(s)

    def _flush(self):
        s = self.sock
        if s is None:
            return
        while self._txo < self._txn:
            try:
                n = s.write(self._txmv[self._txo:self._txn])
            except OSError as e:
                if _err(e) in _AGAIN:
                    return
                raise
            if not n:
                return
            self._txo += n
            self._last_tx = self._now
        self._txo = self._txn = 0

    def _queue_connect(self):
        client_id, user, password, wt, wp, keep = self._connect_args
        client_id = _b(client_id)
        user = _b(user)
        password = _b(password)
        wt = _b(wt)
        wp = _b(wp)
        flags = 0x02  # clean session
        n = 10 + 2 + len(client_id)
        if wt:
            flags |= 0x04 | 0x08 | 0x20  # will, QoS 1, retained
            n += 4 + len(wt) + len(wp)
        if user:
            flags |= 0x80 | 0x40
            n += 4 + len(user) + len(password)
        h = self._hdr
        h[0] = 0x10
        e = varint(h, 1, n)
        if not self._room(e + n):
            raise MqttError(R_OVERFLOW)
        self._put(h[:e])
        self._put(b"\x00\x04MQTT\x04")
        self._put(bytes((flags, keep >> 8, keep & 0xFF)))
        self._put_str(client_id)
        if wt:
            self._put_str(wt)
            self._put_str(wp)
        if user:
            self._put_str(user)
            self._put_str(password)
        self.tx_packets += 1

    def _next_pid(self):
        self._pid = self._pid + 1 if self._pid < 0xFFFF else 1
        return self._pid

    def publish(self, topic, payload, retain=False, qos=0):
        """Queue a PUBLISH. Returns its packet id (QoS 1), 1 (QoS 0) or 0 when it does not
        fit in the output buffer now (or the link is not up): try again later."""
        if self.state != ST_UP:
            return 0
        topic = _b(topic)
        payload = _b(payload)
        n = 2 + len(topic) + len(payload) + (2 if qos else 0)
        h = self._hdr
        h[0] = 0x30 | (qos << 1) | (1 if retain else 0)
        e = varint(h, 1, n)
        if not self._room(e + n):
            return 0
        self._put(h[:e])
        self._put_str(topic)
        pid = 1
        if qos:
            pid = self._next_pid()
            self._put(bytes((pid >> 8, pid & 0xFF)))
        self._put(payload)
        self.tx_packets += 1
        return pid

    def subscribe(self, topics):
        """SUBSCRIBE to a list of topics at QoS 0. False when it does not fit now."""
        if self.state != ST_UP:
            return False
        ts = [_b(t) for t in topics]
        n = 2 + sum([3 + len(t) for t in ts])
        h = self._hdr
        h[0] = 0x82
        e = varint(h, 1, n)
        if not self._room(e + n):
            return False
        self._put(h[:e])
        pid = self._next_pid()
        self._put(bytes((pid >> 8, pid & 0xFF)))
        for t in ts:
            self._put_str(t)
            self._put(b"\x00")
        self.tx_packets += 1
        return True

    def pending(self):
        """Bytes queued but not yet taken by the socket."""
        return self._txn - self._txo

    # --- input ----------------------------------------------------------------------------
    def _read(self):
        s = self.sock
        res = EVT_NONE
        for _ in range(8):  # bounded work per poll
            if s is None:
                return res
            room = len(self._rx) - self._rxn
            if room <= 0:
                raise MqttError(R_PROTOCOL)
            try:
                n = s.readinto(self._rxmv[self._rxn:self._rxn + room])
            except OSError as e:
                if _err(e) in _AGAIN:
                    return res
                raise
            if n is None:
                return res
            if n == 0:
                raise MqttError(R_CLOSED)
            self._last_rx = self._now
            r = self.feed_n(n)
            if r:
                res = r
            s = self.sock
        return res

    def feed(self, data):
        """Hand received bytes to the parser (used by tests; poll() reads the socket)."""
        res = EVT_NONE
        i = 0
        while i < len(data):
            k = min(len(data) - i, len(self._rx) - self._rxn)
            self._rx[self._rxn:self._rxn + k] = data[i:i + k]
            i += k
            r = self.feed_n(k)
            if r:
                res = r
        return res

    def feed_n(self, n):
        """n new bytes were placed at rx[rxn:]: skip, then parse whole packets."""
        rx = self._rx
        start = self._rxn
        end = start + n
        if self._skip:
            k = min(self._skip, n)
            self._skip -= k
            if k < n:
                rx[start:end - k] = rx[start + k:end]
            end -= k
        self._rxn = end
        return self._parse()

    def _parse(self):
        rx = self._rx
        n = self._rxn
        o = 0
        res = EVT_NONE
        while n - o >= 2:
            rl = 0
            sh = 0
            i = o + 1
            complete = False
            while i < n:
                b = rx[i]
                rl |= (b & 0x7F) << sh
                i += 1
                if not b & 0x80:
                    complete = True
                    break
                sh += 7
                if sh > 21:
                    raise MqttError(R_PROTOCOL)
            if not complete:
                if i - o > 4:
                    raise MqttError(R_PROTOCOL)
                break
            total = i - o + rl
            if total > len(rx):
                # Larger than we ever accept: skip it without holding it.
                self.dropped += 1
                self._skip = total - (n - o)
                self.on_drop(rx[o], total)
                self._rxn = 0
                return res
            if n - o < total:
                break
            r = self._packet(rx[o], i, i + rl)
            if r:
                res = r
            o += total
            self.rx_packets += 1
        if o:
            rx[0:n - o] = rx[o:n]
            self._rxn = n - o
        return res

    def _packet(self, h, s, e):
        rx = self._rx
        t = h & 0xF0
        if t == 0x30:
            qos = (h >> 1) & 3
            if qos == 3 or e - s < 2:
                raise MqttError(R_PROTOCOL)
            tl = (rx[s] << 8) | rx[s + 1]
            p = s + 2 + tl
            if qos:
                p += 2
            if p > e or self.state != ST_UP:
                raise MqttError(R_PROTOCOL)
            if qos == 2:
                raise MqttError(R_PROTOCOL)  # never subscribed at QoS 2
            topic = bytes(rx[s + 2:s + 2 + tl])
            payload = bytes(rx[p:e])
            if qos == 1:
                pid = (rx[p - 2] << 8) | rx[p - 1]
                if self._room(4):
                    self._put(bytes((0x40, 2, pid >> 8, pid & 0xFF)))
            self.on_message(topic, payload)
            return EVT_NONE
        if h == 0x20:
            if e - s != 2 or self.state != ST_CONNACK:
                raise MqttError(R_PROTOCOL)
            if rx[s + 1] != 0:
                raise MqttError(R_REFUSED)
            self.state = ST_UP
            self._t_state = self._now
            return EVT_UP
        if h == 0x40:
            if e - s != 2 or self.state != ST_UP:
                raise MqttError(R_PROTOCOL)
            self.on_puback((rx[s] << 8) | rx[s + 1])
            return EVT_NONE
        if h == 0x90 or h == 0xB0:
            if e - s < 2 or self.state != ST_UP:
                raise MqttError(R_PROTOCOL)
            return EVT_NONE
        if h == 0xD0:
            if e != s:
                raise MqttError(R_PROTOCOL)
            return EVT_NONE
        raise MqttError(R_PROTOCOL)

    _now = 0
    _ping_t = 0


def _no_message(topic, payload):
    pass


def _no_puback(pid):
    pass


def _no_drop(kind, length):
    pass
