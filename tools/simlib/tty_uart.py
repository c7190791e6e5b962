# simlib.tty_uart: a serial device (a PTY or a real tty) behind the machine.UART subset that
# bms.modbus uses: any() / readinto(buf) / write(buf) / flush() / init(). Lets the firmware's
# Modbus server and the SLCAN bridge of tools/sim.py talk to host tools through a
# pseudo-terminal (tools/ptypair.py makes a linked pair). MicroPython and CPython.
import select

try:
    import termios
except ImportError:  # pragma: no cover
    termios = None


class TtyUart:
    def __init__(self, path):
        self.path = path
        self.f = open(path, "r+b")
        if termios is not None:
            try:
                termios.setraw(self.f.fileno())
            except (OSError, AttributeError, TypeError):
                pass
        self._poll = select.poll()
        self._poll.register(self.f, select.POLLIN)
        self._buf = bytearray()
        self.rx_bytes = 0
        self.tx_bytes = 0

    def _fill(self):
        n = 0
        while n < 512 and self._poll.poll(0):
            b = self.f.read(1)
            if not b:
                break
            self._buf.extend(b)
            n += 1
        self.rx_bytes += n

    def any(self):
        self._fill()
        return len(self._buf)

    def read(self, n=-1):
        self._fill()
        if n < 0 or n > len(self._buf):
            n = len(self._buf)
        out = bytes(self._buf[:n])
        self._buf = self._buf[n:]
        return out

    def readinto(self, buf, n=None):
        self._fill()
        k = min(len(buf) if n is None else n, len(self._buf))
        for i in range(k):
            buf[i] = self._buf[i]
        self._buf = self._buf[k:]
        return k

    def write(self, data):
        data = bytes(data)
        self.f.write(data)
        try:
            self.f.flush()
        except (AttributeError, OSError):
            pass
        self.tx_bytes += len(data)
        return len(data)

    def flush(self):
        pass

    def init(self, *args, **kwargs):
        pass  # baud rate and framing mean nothing on a PTY

    def close(self):
        self.f.close()
