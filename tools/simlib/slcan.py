# simlib.slcan: the virtual CAN bus seen through an SLCAN (Lawicel ASCII) adapter on a tty.
#
# tools/sim.py --can-bridge TTY attaches this node to the simulator's bus; a host tool opens
# the other end of the PTY pair (tools/ptypair.py) with python-can's "slcan" interface
# (or SavvyCAN / slcand) and sees every frame live, and can send frames onto the bus.
# Commands handled: O (open), C (close), Sn / sxxyy (bit rate: accepted), V / v / N (ids),
# F (status), tIIILDD.. / TIIIIIIIILDD.. (transmit), Z (time stamps: accepted).
from simlib.mcp2515_emu import PyNode
from simlib.tty_uart import TtyUart

_OK = b"\r"
_ERR = b"\x07"


class SlcanBridge(PyNode):
    def __init__(self, bus, path):
        PyNode.__init__(self, bus, ack=False)  # a listener: it never ACKs on its own
        self.tty = TtyUart(path)
        self.open = False
        self._line = bytearray()
        self.sent = 0
        self.forwarded = 0

    def hears(self):
        return self.open

    def on_frame(self, can_id, data):
        if can_id > 0x7FF:
            head = "T%08X%d" % (can_id, len(data))
        else:
            head = "t%03X%d" % (can_id, len(data))
        self.tty.write((head + "".join("%02X" % b for b in data) + "\r").encode())
        self.forwarded += 1

    def poll(self):
        """Handle what the host tool wrote (call often)."""
        data = self.tty.read()
        for b in data:
            if b == 13:
                self._command(bytes(self._line))
                self._line = bytearray()
            elif b != 10:
                self._line.append(b)

    def _command(self, cmd):
        if not cmd:
            return
        c = cmd[:1]
        if c == b"O":
            self.open = True
            self.tty.write(_OK)
        elif c == b"C":
            self.open = False
            self.tty.write(_OK)
        elif c in (b"S", b"s", b"Z", b"M", b"m"):
            self.tty.write(_OK)
        elif c == b"V":
            self.tty.write(b"V1013\r")
        elif c == b"v":
            self.tty.write(b"vSTM32\r")
        elif c == b"N":
            self.tty.write(b"NSIM1\r")
        elif c == b"F":
            self.tty.write(b"F00\r")
        elif c in (b"t", b"T") and self.open:
            try:
                n = 3 if c == b"t" else 8
                can_id = int(cmd[1:1 + n], 16)
                dlc = int(cmd[1 + n:2 + n], 16)
                hexdata = cmd[2 + n:2 + n + 2 * dlc]
                payload = bytes(int(hexdata[2 * i:2 * i + 2], 16) for i in range(dlc))
                if dlc > 8 or len(payload) != dlc:
                    raise ValueError("dlc")
            except (ValueError, IndexError):
                self.tty.write(_ERR)
                return
            ok = self.bus.transmit(self, can_id, c == b"T", payload, dlc)
            self.sent += 1 if ok else 0
            self.tty.write(b"z\r" if c == b"t" else b"Z\r")
        else:
            self.tty.write(_ERR)
