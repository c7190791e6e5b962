#!/usr/bin/env python3
"""Two linked pseudo-terminals, like a null-modem cable (CPython, Linux).

    python tools/ptypair.py
    /dev/pts/5 <-> /dev/pts/6

Give one end to the simulator (`tools/sim.py --rs485 /dev/pts/5` or `--can-bridge ...`) and
the other to a host tool (`tools/bmsctl.py --port /dev/pts/6`, python-can's slcan interface).
Bytes are copied both ways until Ctrl-C. Also importable: `PtyPair()` for tests.
"""

import os
import select
import sys
import threading
import tty


class PtyPair:
    def __init__(self):
        self.m1, s1 = os.openpty()
        self.m2, s2 = os.openpty()
        for fd in (s1, s2):
            tty.setraw(fd)
        self.path1 = os.ttyname(s1)
        self.path2 = os.ttyname(s2)
        self._slaves = (s1, s2)  # keep them open so the masters never see a hang-up
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        peer = {self.m1: self.m2, self.m2: self.m1}
        while not self._stop:
            r, _, _ = select.select([self.m1, self.m2], [], [], 0.1)
            for fd in r:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                if data:
                    os.write(peer[fd], data)

    def close(self):
        self._stop = True
        self.thread.join(1.0)
        for fd in (self.m1, self.m2) + self._slaves:
            try:
                os.close(fd)
            except OSError:
                pass


def main():
    p = PtyPair()
    print("%s <-> %s" % (p.path1, p.path2), flush=True)
    try:
        p.thread.join()
    except KeyboardInterrupt:
        p.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
