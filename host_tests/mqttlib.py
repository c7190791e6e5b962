# Test helpers for the MQTT end-to-end tests (CPython only): a real broker (amqtt from the
# pinned .venv) on 127.0.0.1 and a recording host client (paho-mqtt).
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, ".venv", "bin")
MPY = os.path.join(BIN, "micropython")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Broker:
    """amqtt broker on 127.0.0.1:port (anonymous; no persistence: a restart loses the
    retained messages, like a mosquitto without a persistence file)."""

    def __init__(self, port=None):
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="amqtt")
        self.cfg = os.path.join(self.dir, "broker.yaml")
        with open(self.cfg, "w") as f:
            f.write("listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:%d\n"
                    "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
                    "    allow_anonymous: true\n" % self.port)
        self.p = None
        self.start()

    def start(self):
        exe = os.path.join(BIN, "amqtt")
        self.log = open(os.path.join(self.dir, "broker.log"), "a")
        self.p = subprocess.Popen([exe, "-c", self.cfg], stdout=self.log,
                                  stderr=subprocess.STDOUT)
        t_end = time.time() + 20
        while time.time() < t_end:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("amqtt did not start")

    def stop(self):
        if self.p is not None:
            self.p.kill()
            self.p.wait()
            self.p = None
            self.log.close()


class Recorder:
    """Subscribes (QoS 1) and records (wall time, topic, payload, qos, retain)."""

    def __init__(self, port, topics=("bms/#", "homeassistant/#")):
        import paho.mqtt.client as mqtt

        self.msgs = []
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="recorder")
        self.topics = topics
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.reconnect_delay_set(0.2, 1)
        self.c.connect("127.0.0.1", port, keepalive=10)
        self.c.loop_start()
        self.wait(lambda: self.connected, 10)

    connected = False

    def _on_connect(self, c, u, flags, rc, props=None):
        self.connected = True
        for t in self.topics:
            c.subscribe(t, qos=1)

    def _on_message(self, c, u, m):
        with self.lock:
            self.msgs.append((time.time(), m.topic, bytes(m.payload), m.qos, m.retain))

    def publish(self, topic, payload, qos=1):
        self.c.publish(topic, payload, qos=qos).wait_for_publish(5)

    def of(self, topic):
        with self.lock:
            return [m for m in self.msgs if m[1] == topic]

    def json_of(self, topic):
        return [json.loads(m[2]) for m in self.of(topic)]

    def wait(self, cond, timeout):
        t_end = time.time() + timeout
        while time.time() < t_end:
            if cond():
                return True
            time.sleep(0.05)
        return False

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def sim(args, port, outdir, wait=True, timeout=300):
    env = dict(os.environ, MICROPYPATH="firmware:tools:.:.frozen")
    cmd = [MPY, "-X", "heapsize=2M", "tools/sim.py", "--quiet", "--log",
           os.path.join(outdir, "sim.csv"), "--summary", os.path.join(outdir, "s.json")]
    if port:
        cmd += ["--mqtt", "127.0.0.1:%d" % port]
    p = subprocess.Popen(cmd + list(args), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    if wait:
        out = p.communicate(timeout=timeout)[0]
        assert p.returncode == 0, out[-3000:]
        return out
    return p


def read_log(path):
    with open(path) as f:
        first = f.readline()
        assert first.startswith("# config: ")
        head = f.readline().strip().split(",")
        rows = [dict(zip(head, ln.strip().split(","))) for ln in f if ln.strip()]
    return head, rows


def summary(outdir):
    with open(os.path.join(outdir, "s.json")) as f:
        return json.load(f)


_ = sys
