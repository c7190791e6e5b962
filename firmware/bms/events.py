# bms.events: the one event log. Every part records through EventLog.add().
#
# A fixed ring of preallocated arrays: add() never allocates, so it may be called from
# the 250 ms control path. Each entry: time (ms since boot), a code (EV_*), and two int
# values whose meaning depends on the code (documented next to each code).
from array import array

from micropython import const

# Event codes. Names are in NAMES (index = code). Keep codes stable: they are persisted.
EV_BOOT = const(1)  # a = reset cause (machine.reset_cause() value or -1), b = boot count
EV_STATE = const(2)  # a = old state, b = new state (protection.STATE_*)
EV_FAULT_SET = const(3)  # a = fault bit index, b = value that tripped it
EV_FAULT_CLEAR = const(4)  # a = fault bit index, b = value at release
EV_WARN_SET = const(5)  # a = warning bit index, b = value
EV_WARN_CLEAR = const(6)  # a = warning bit index, b = value
EV_LATCH = const(7)  # a = fault bit index latched, b = value
EV_LATCH_RESET = const(8)  # a = latched mask before the reset, b = 0
EV_AFE_STAT = const(9)  # a = AFE trips seen (bms.afe TRIP_*), b = trips acknowledged
EV_AFE_ERROR = const(10)  # a = consecutive errors, b = kind (1 bus, 2 CRC, 3 stale, 4 config)
EV_CONFIG = const(11)  # a = config field index, b = new value (int part)
EV_CONFIG_REJECT = const(12)  # a = config field index, b = rejected value (int part)
EV_TASK_ERROR = const(13)  # a = task index, b = restart count
EV_SOC_SYNC = const(14)  # a = kind (1 full, 2 empty, 3 rest/OCV, 4 stop at top), b = SOC 0.01 %
EV_STORE = const(15)  # a = record kind, b = 1 saved, 2 fell back, 3 missing, 4 corrupt,
#                       5 made for another pack identity (config, not applied)
EV_SHIP = const(16)  # a = 0, b = 0
EV_INVERTER = const(17)  # a = 1 present, 0 lost, b = seconds since last frame
EV_UNLOCK = const(18)  # a = 1 unlocked, 0 locked/wrong PIN, b = 1 modbus, 2 repl, 3 mqtt
EV_RESET_REQ = const(19)  # a = reason code, b = 0
EV_AFE_CONFIG = const(20)  # AFE refused: a = register that lost its value, b = refusals so far
EV_AFE_INIT = const(21)  # AFE re-initialised: a = 1 done and verified / 0 failed, b = attempts
EV_CONFIG_RESET = const(22)  # factory reset: a = interface (1 modbus, 2 repl), b = 0
EV_MQTT = const(23)  # a = 1 link up, 0 link down, 2 command refused, 3 message dropped;
#                      b = reason (bms.mqtt R_*; for a = 2: bms.ha CMD_*)

NAMES = (
    "?",
    "boot",
    "state",
    "fault_set",
    "fault_clear",
    "warn_set",
    "warn_clear",
    "latch",
    "latch_reset",
    "afe_stat",
    "afe_error",
    "config",
    "config_reject",
    "task_error",
    "soc_sync",
    "store",
    "ship",
    "inverter",
    "unlock",
    "reset_req",
    "afe_config",
    "afe_init",
    "config_reset",
    "mqtt",
)


class EventLog:
    def __init__(self, size=64):
        self.size = size
        self.t_ms = array("q", [0] * size) if _has_q() else array("l", [0] * size)
        self.code = bytearray(size)
        self.a = array("l", [0] * size)
        self.b = array("l", [0] * size)
        self.head = 0  # index of the next slot to write
        self.count = 0  # entries stored (<= size)
        self.total = 0  # entries ever added (also the sequence number of the next one)
        self.listener = _no_listener  # callable(code) told about every add (e.g. to force a save)

    def add(self, t_ms, code, a=0, b=0):
        i = self.head
        self.t_ms[i] = t_ms
        self.code[i] = code
        self.a[i] = a
        self.b[i] = b
        self.head = (i + 1) % self.size
        if self.count < self.size:
            self.count += 1
        self.total += 1
        self.listener(code)

    def get(self, k):
        """k-th newest entry (0 = newest) as (t_ms, code, a, b). Allocates: not hot path."""
        if not 0 <= k < self.count:
            raise IndexError("event index")
        i = (self.head - 1 - k) % self.size
        return (self.t_ms[i], self.code[i], self.a[i], self.b[i])

    def last(self, n):
        """Up to n newest entries, oldest first."""
        n = min(n, self.count)
        return [self.get(k) for k in range(n - 1, -1, -1)]

    def to_list(self):
        return self.last(self.count)

    def load_list(self, entries):
        """Restore persisted entries (oldest first)."""
        for t, c, a, b in entries:
            self.add(t, c, a, b)


def _no_listener(code):
    pass


def name(code):
    return NAMES[code] if 0 <= code < len(NAMES) else "?"


def _has_q():
    try:
        array("q", [0])
        return True
    except ValueError:
        return False
