# bms.mqtt: Home Assistant and alerts over MQTT, on boards with Wi-Fi (and the virtual
# board with tools/sim.py --mqtt HOST:PORT).
#
#   link = MqttLink(cfg, status, events, wifi, board="esp32_devkit", data_dir="/data")
#   link.poll(now_ms)      from the comms task (every 20 ms on a board, 250 ms in the
#                          simulator); never blocks, never raises
#
# It reads only the status view (bms.status), the event log (alerts) and the configuration
# (settings; commands change it through Config.update like the REPL and Modbus do). Nothing
# here writes anything protection reads: with the broker or the Wi-Fi gone, protection runs
# exactly as without MQTT.
#
# Per poll, in this order: settings changed? -> new alert-worthy events into the queue ->
# Wi-Fi up (else (re)join, every 20 s) -> broker connection (else connect, back-off 1 s
# doubling to 60 s; DNS once per host, then cached) -> on a new connection: availability
# "online" (retained), subscriptions, the discovery configs one by one (retained) -> alerts
# (QoS 1, kept until PUBACK, sent again after a reconnect) -> state at once on a change of
# state/faults/warnings/latched/FETs, else every mqtt_period_ms -> discovery progress.
import time

from micropython import const

from bms import events as ev
from bms import ha
from bms import mqttc
from bms.config import CHOICES, ConfigError, field_index

R_WIFI = const(8)  # Wi-Fi lost (EV_MQTT b; R_1..7 are bms.mqttc's)
R_DNS = const(9)  # the broker's name did not resolve
R_SETTINGS = const(10)  # settings changed, or MQTT disabled
R_INTERNAL = const(11)  # an unexpected error inside the link (logged, link restarted)

_IF_MQTT = const(3)
_BACKOFF_MIN_MS = const(1000)
_BACKOFF_MAX_MS = const(60000)
_STABLE_MS = const(60000)  # a connection that lasted this long resets the back-off
_WIFI_RETRY_MS = const(20000)
_PIN_HOLDOFF_MS = const(10000)
_LOG_GAP_MS = const(1000)
_ALERT_QUEUE = const(8)
_ALERTS_PER_POLL = const(2)
_POLL_MS = const(100)
_KEEPALIVE_S = const(30)
_FW = "1.0"

LINK_NAMES = ("off", "no wifi", "waiting", "connecting", "up")
LINK_OFF = const(0)
LINK_NO_WIFI = const(1)
LINK_WAIT = const(2)
LINK_CONNECTING = const(3)
LINK_UP = const(4)


def _ticks_us():
    f = getattr(time, "ticks_us", None)
    return f() if f is not None else int(time.perf_counter() * 1000000)  # type: ignore


def _ticks_diff(a, b):
    f = getattr(time, "ticks_diff", None)
    return f(a, b) if f is not None else a - b


def writable_fields():
    """The configuration fields MQTT commands may write: those the Modbus map lets an
    unlocked client write (the same PIN-protected writes as Modbus), except the Wi-Fi and
    MQTT settings themselves (a command must not cut the link it came over)."""
    from bms import regmap

    out = set()
    R = regmap.REGS
    for o in range(0, len(R), regmap.REC_SIZE):
        tak = R[o + 2]
        if tak >> 4 in (regmap.K_CFG, regmap.K_TEXT) and (tak >> 2) & regmap.A_WRITE:
            name = str(regmap.PATHS[(R[o + 3] << 8) | R[o + 4]])
            if not name.startswith("mqtt_") and not name.startswith("wifi_"):
                out.add(name)
    return out


class CommandGate:
    """PIN, hold-off, validation and logging of MQTT commands (no I/O)."""

    def __init__(self, cfg, events):
        self.cfg = cfg
        self.events = events
        self._writable = None
        self._block_until = 0
        self._last_log = -_LOG_GAP_MS
        self.accepted = 0
        self.refused = 0

    def _log(self, now, code, a, b):
        if now - self._last_log >= _LOG_GAP_MS:  # a flood must not wash faults out
            self._last_log = now
            self.events.add(now, code, a, b)

    def handle(self, payload, now):
        """Apply one command payload. Returns (ok, code, field, applied changes)."""
        cfg = self.cfg
        try:
            if cfg.mqtt_pin == 0:
                raise ha.CommandError(ha.CMD_DISABLED)
            pin, changes = ha.parse_command(payload)
            if now < self._block_until:
                self._log(now, ev.EV_UNLOCK, 0, _IF_MQTT)
                raise ha.CommandError(ha.CMD_HOLDOFF)
            if pin != cfg.mqtt_pin:
                self._block_until = now + _PIN_HOLDOFF_MS
                self._log(now, ev.EV_UNLOCK, 0, _IF_MQTT)
                raise ha.CommandError(ha.CMD_BAD_PIN)
            if self._writable is None:
                self._writable = writable_fields()
            ok = {}
            for name in changes:
                v = changes[name]
                if name not in self._writable:
                    self._log(now, ev.EV_CONFIG_REJECT, field_index(name), _int(v))
                    raise ha.CommandError(ha.CMD_NOT_WRITABLE, name)
                ch = CHOICES.get(name)
                if ch is not None and isinstance(v, int):  # enum by index, as over Modbus
                    if not 0 <= v < len(ch):
                        self._log(now, ev.EV_CONFIG_REJECT, field_index(name), v)
                        raise ha.CommandError(ha.CMD_INVALID, name)
                    v = ch[v]
                ok[name] = v
            try:
                cfg.update(ok)
            except ConfigError as e:
                self._log(now, ev.EV_CONFIG_REJECT, field_index(e.field),
                          _int(ok.get(e.field, 0)))
                raise ha.CommandError(ha.CMD_INVALID, e.field) from None
            for name in ok:
                self.events.add(now, ev.EV_CONFIG, field_index(name), _int_or_index(name,
                                                                                ok[name]))
            self.accepted += 1
            return True, 0, None, ok
        except ha.CommandError as e:
            self.refused += 1
            if e.code not in (ha.CMD_BAD_PIN, ha.CMD_HOLDOFF, ha.CMD_NOT_WRITABLE,
                              ha.CMD_INVALID):
                self._log(now, ev.EV_MQTT, 2, e.code)
            return False, e.code, e.field, None


def _int(v):
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _int_or_index(name, v):
    if isinstance(v, str):
        ch = CHOICES.get(name)
        return ch.index(v) if ch is not None and v in ch else 0
    return _int(v)


class MqttLink:
    def __init__(self, cfg, status, events, wifi=None, board="bms", data_dir="/data"):
        self.cfg = cfg
        self.st = status
        self.events = events
        self.wifi = wifi  # network.WLAN-like (active/connect/isconnected) or None: host net
        self.board = board
        self.data_dir = data_dir
        self.gate = CommandGate(cfg, events)
        c = self.client = mqttc.MqttClient()
        c.on_message = self._on_message
        c.on_puback = self._on_puback
        c.on_drop = self._on_drop
        self.link = LINK_OFF
        self.reason = 0  # last R_* a connection ended with
        self._settings = None
        self._addr = None
        self._addr_key = None
        self._next_try = 0
        self._backoff = _BACKOFF_MIN_MS
        self._up_since = 0
        self._wifi_next = 0
        self._disc = -1  # next discovery message index; -1 = none pending
        self._next_state = 0
        self._sig = None
        self._ev_seen = -1
        self._alerts = []  # [t_ms, code, a, b, pid] (pid 0 = not sent on this connection)
        self._topics = ("", "", "", "", "")
        self._last_log = -_LOG_GAP_MS
        # figures (bms.mqtt() on the REPL, the simulator's summary)
        self.connects = 0
        self.published = 0
        self.alerts_sent = 0
        self.alerts_dropped = 0
        self.dropped_msgs = 0
        self.errors = 0
        self.max_poll_us = 0

    # --- entry point ----------------------------------------------------------------------
    def poll(self, now):
        if 0 <= now - self._last_poll < _POLL_MS:
            return  # the comms task runs every 20 ms; MQTT needs far less
        self._last_poll = now
        t0 = _ticks_us()
        try:
            self._poll(now)
        except Exception:  # noqa: BLE001 - nothing may escape into the comms task
            self.errors += 1
            self._drop(now, R_INTERNAL)
        dt = _ticks_diff(_ticks_us(), t0)
        if dt > self.max_poll_us:
            self.max_poll_us = dt

    def _poll(self, now):
        cfg = self.cfg
        self._now = now
        if cfg.generation != self._gen:
            self._gen = cfg.generation
            self._settings_changed(now)
        if not cfg.mqtt_enable:
            self.link = LINK_OFF
            return
        self._scan_events(now)
        if not self._wifi_up(now):
            return
        c = self.client
        if c.state == mqttc.ST_IDLE:
            if now >= self._next_try:
                self._connect(now)
            else:
                self.link = LINK_WAIT
            return
        r = c.poll(now)
        if r == mqttc.EVT_UP:
            self._on_up(now)
        elif r == mqttc.EVT_DOWN:
            self._on_down(now, c.reason)
            return
        if c.state == mqttc.ST_UP:
            self._work(now)
            if not c.flush():  # what _work queued goes out now
                self._on_down(now, c.reason)

    _gen = -1
    _last_poll = -_POLL_MS

    def _settings_changed(self, now):
        cfg = self.cfg
        s = (cfg.mqtt_enable, cfg.mqtt_host, cfg.mqtt_port, cfg.mqtt_user, cfg.mqtt_password,
             cfg.mqtt_tls, cfg.mqtt_prefix, cfg.wifi_ssid, cfg.wifi_password, cfg.mqtt_pin)
        if s != self._settings:
            if self._settings is not None:
                self._drop(now, R_SETTINGS, polite=True)
                self._next_try = now
                self._backoff = _BACKOFF_MIN_MS
                self._wifi_next = now
            self._settings = s
            p = cfg.mqtt_prefix
            self._topics = (p + "/availability", p + "/state", p + "/alert", p + "/cmd",
                            p + "/cmd/result")

    # --- Wi-Fi and connection -----------------------------------------------------------
    def _wifi_up(self, now):
        w = self.wifi
        if w is None:
            return True
        if w.isconnected():
            return True
        if self.client.state != mqttc.ST_IDLE:
            self._drop(now, R_WIFI)
        self.link = LINK_NO_WIFI
        if now >= self._wifi_next and self.cfg.wifi_ssid:
            self._wifi_next = now + _WIFI_RETRY_MS
            try:
                w.active(True)
                w.connect(self.cfg.wifi_ssid, self.cfg.wifi_password)
            except Exception:  # noqa: BLE001 - "already connecting" etc.; retried
                pass
        return False

    def _connect(self, now):
        cfg = self.cfg
        self.link = LINK_CONNECTING
        key = (cfg.mqtt_host, cfg.mqtt_port)
        if self._addr is None or self._addr_key != key:
            import socket

            try:
                # The one blocking call: DNS (instant for an IP address). Once per host.
                self._addr = socket.getaddrinfo(cfg.mqtt_host, cfg.mqtt_port, 0,
                                                socket.SOCK_STREAM)[0]
                self._addr_key = key
            except Exception:  # noqa: BLE001 - OSError, IndexError
                self._addr = None
                self._on_down(now, R_DNS)
                return
        tls = None
        if cfg.mqtt_tls:
            tls = self._tls_wrapper(cfg)
        will = self._topics[0]
        self.client.start(self._addr, now, "mpy-bms-" + ha.node_id(cfg.mqtt_prefix),
                          cfg.mqtt_user, cfg.mqtt_password, will, b"offline", _KEEPALIVE_S,
                          tls)

    def _tls_wrapper(self, cfg):
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # type: ignore[attr-defined]
        if cfg.mqtt_tls == 2:
            with open(self.data_dir + "/mqtt_ca.pem", "rb") as f:
                ctx.load_verify_locations(cadata=f.read())
            ctx.verify_mode = ssl.CERT_REQUIRED
        else:
            ctx.verify_mode = ssl.CERT_NONE
        host = cfg.mqtt_host

        def wrap(sock):
            return ctx.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)

        return wrap

    def _log(self, now, a, b):
        if now - self._last_log >= _LOG_GAP_MS:
            self._last_log = now
            self.events.add(now, ev.EV_MQTT, a, b)

    def _on_up(self, now):
        self.connects += 1
        self.link = LINK_UP
        self._up_since = now
        self._log(now, 1, 0)
        c = self.client
        c.publish(self._topics[0], "online", True, 1)
        subs = [ha.HA_STATUS_TOPIC]
        if self.cfg.mqtt_pin:
            subs.append(self._topics[3])
        c.subscribe(subs)
        self._disc = 0
        self._next_state = now
        for a in self._alerts:
            a[4] = 0  # unacknowledged alerts go out again on this connection

    def _on_down(self, now, reason):
        was_up = self.link == LINK_UP
        self.reason = reason
        self.link = LINK_WAIT
        if was_up:
            self._log(now, 0, reason)
            if now - self._up_since >= _STABLE_MS:
                self._backoff = _BACKOFF_MIN_MS
        self._next_try = now + self._backoff
        self._backoff = min(self._backoff * 2, _BACKOFF_MAX_MS)
        self._disc = -1

    def _drop(self, now, reason, polite=False):
        c = self.client
        if c.state == mqttc.ST_IDLE:
            return
        if polite and c.state == mqttc.ST_UP:
            c.publish(self._topics[0], "offline", True, 0)
            c.disconnect()
        else:
            c.close()
        self._on_down(now, reason)

    # --- incoming -------------------------------------------------------------------------
    def _on_message(self, topic, payload):
        now = self._now
        if topic == ha.HA_STATUS_TOPIC.encode():
            if payload == b"online":  # Home Assistant restarted: discovery again
                self._disc = 0
                self._next_state = now
            return
        if topic != self._topics[3].encode():
            return
        ok, code, field, applied = self.gate.handle(payload, now)
        self.client.publish(self._topics[4], ha.result_payload(ok, code, field, applied))
        if ok:
            self._next_state = now

    def _on_puback(self, pid):
        q = self._alerts
        for i in range(len(q)):
            if q[i][4] == pid:
                q.pop(i)
                self.alerts_sent += 1
                return

    def _on_drop(self, kind, length):
        self.dropped_msgs += 1
        self._log(self._now, 3, length if length < 0x7FFFFFFF else 0x7FFFFFFF)

    _now = 0

    # --- alerts ---------------------------------------------------------------------------
    def _scan_events(self, now):
        log = self.events
        total = log.total
        if self._ev_seen < 0:
            # First look: what happened since this boot counts (everything after EV_BOOT).
            k = 0
            while k < log.count and log.get(k)[1] != ev.EV_BOOT:
                k += 1
            self._ev_seen = total - k
        new = total - self._ev_seen
        if new <= 0:
            return
        lost = 0
        if new > log.count:
            lost = new - log.count
            new = log.count
        codes = ha.ALERT_CODES
        for k in range(new - 1, -1, -1):
            t, code, a, b = log.get(k)
            if code in codes:
                q = self._alerts
                if len(q) >= _ALERT_QUEUE:
                    q.pop(0)
                    self.alerts_dropped += 1
                q.append([t, code, a, b, 0, lost])
                lost = 0
        self._ev_seen = total

    # --- publishing -----------------------------------------------------------------------
    def _work(self, now):
        self._now = now
        c = self.client
        st = self.st
        tp = self._topics
        n = 0
        for a in self._alerts:
            if a[4] == 0:
                if n == _ALERTS_PER_POLL:
                    return
                n += 1
                pid = c.publish(tp[2], ha.alert_payload(a[0], a[1], a[2], a[3], st, now, a[5]),
                                False, 1)
                if not pid:
                    return
                a[4] = pid
                self.published += 1
        sig = self._sig
        changed = (sig is None or sig[0] != st.state or sig[1] != st.faults
                   or sig[2] != st.warnings or sig[3] != st.latched or sig[4] != st.chg_fet
                   or sig[5] != st.dsg_fet)
        if st.ready and (changed or now >= self._next_state):
            if not c.publish(tp[1], ha.state_payload(st, now)):
                return
            self.published += 1
            self._sig = (st.state, st.faults, st.warnings, st.latched, st.chg_fet,
                         st.dsg_fet)
            if now >= self._next_state:  # a steady cadence; changes go out in between
                self._next_state += self.cfg.mqtt_period_ms
                if self._next_state <= now:
                    self._next_state = now + self.cfg.mqtt_period_ms
        if self._disc >= 0 and c.pending() < 1024:  # one per poll: bounded work
            m = ha.discovery(self._disc, self.cfg.mqtt_prefix, st.n_cells, st.n_temps,
                             self.board, _FW)
            if m is None:
                self._disc = -1
            elif c.publish(m[0], m[1], True, 0):
                self.published += 1
                self._disc += 1

    # --- REPL -----------------------------------------------------------------------------
    def info(self):
        c = self.client
        return {
            "link": LINK_NAMES[self.link],
            "broker": "%s:%d%s" % (self.cfg.mqtt_host, self.cfg.mqtt_port,
                                   " (TLS)" if self.cfg.mqtt_tls else ""),
            "prefix": self.cfg.mqtt_prefix,
            "last_reason": self.reason,
            "connects": self.connects,
            "published": self.published,
            "alerts_sent": self.alerts_sent,
            "alerts_pending": len(self._alerts),
            "alerts_dropped": self.alerts_dropped,
            "commands": "%d ok, %d refused" % (self.gate.accepted, self.gate.refused),
            "dropped_msgs": self.dropped_msgs,
            "errors": self.errors,
            "max_poll_us": self.max_poll_us,
            "tx_pending": c.pending(),
        }
