# bms.crc: CRC-8, polynomial 0x07 (x^8 + x^2 + x + 1), MSB first, no reflection,
# init 0x00, no final XOR (the "CRC-8/SMBUS" parameters), as used by the BQ769x0.
# Check value: crc8(b"123456789", 9) == 0xF4.
#
# Table driven: TABLE[i] is the CRC of the single byte i, so one step is
# crc = TABLE[crc ^ byte]. The table is built once at import (the builder is then deleted);
# crc8() allocates nothing.
from micropython import const

_POLY = const(0x07)


def _make_table():
    t = bytearray(256)
    for i in range(256):
        c = i
        for _ in range(8):
            if c & 0x80:
                c = ((c << 1) ^ _POLY) & 0xFF
            else:
                c = (c << 1) & 0xFF
        t[i] = c
    return bytes(t)


TABLE = _make_table()
del _make_table  # built once: the builder does not stay in RAM


def crc8(buf, n, start=0, crc=0):
    """CRC of the n bytes buf[start:start + n] (no slice is made, nothing is allocated).

    `crc` continues a previous CRC (0 starts a new one), so a frame made of several pieces is
    crc8(b, n2, 0, crc8(a, n1)).
    """
    t = TABLE
    for i in range(start, start + n):
        crc = t[crc ^ buf[i]]
    return crc
