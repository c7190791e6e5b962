# CRC-8/0x07 (init 0) against the vectors of reference bq769x0.md 1.5.
from bms.crc import TABLE, crc8


def _c(data):
    b = bytes(data)
    return crc8(b, len(b))


def test_write_vectors():
    assert _c((0x10, 0x05, 0x40)) == 0x24  # write SYS_CTRL2=0x40 @0x08 (E2E 752518)
    assert _c((0x10, 0x06, 0x8F)) == 0x78  # write PROTECT1=0x8F @0x08 (E2E 1100450)
    assert _c((0x08, 0x06, 0x8F)) == 0x8B  # the 7-bit-address mistake
    assert _c((0x10, 0x0B, 0x19)) == 0x7A
    assert _c((0x30, 0x0B, 0x19)) == 0x39
    assert _c((0x10, 0x00, 0xFF)) == 0x51
    assert _c((0x30, 0x00, 0xFF)) == 0x12
    assert _c((0x10, 0x04, 0x18)) == 0xBE
    assert _c((0x30, 0x04, 0x18)) == 0xFD
    assert _c((0x30, 0x05, 0x40)) == 0x67


def test_read_vectors():
    assert _c((0x11, 0x40)) == 0x85  # read SYS_CTRL2 -> 0x40 @0x08
    assert _c((0x11, 0x19)) == 0x0D
    assert _c((0x31, 0x19)) == 0xA3
    assert _c((0x31, 0x40)) == 0x2B


def test_ship_sequence_vectors():
    assert _c((0x10, 0x04, 0x00)) == 0xF6
    assert _c((0x10, 0x04, 0x01)) == 0xF1
    assert _c((0x10, 0x04, 0x02)) == 0xF8


def test_block_later_bytes():
    assert _c((0x00,)) == 0x00
    assert _c((0x19,)) == 0x4F


def test_check_value():
    assert crc8(b"123456789", 9) == 0xF4


def test_range_and_continuation():
    buf = bytearray(b"xx123456789yy")
    assert crc8(buf, 9, 2) == 0xF4
    assert crc8(memoryview(buf), 9, 2) == 0xF4
    assert crc8(buf, 0, 5) == 0
    # a frame in two pieces: addr byte, then register and data
    assert crc8(bytes((0x05, 0x40)), 2, 0, crc8(bytes((0x10,)), 1)) == 0x24


def test_table_is_single_byte_crc():
    assert len(TABLE) == 256
    assert TABLE[0] == 0
    assert TABLE[1] == 0x07
    assert TABLE[0x80] == 0x89
    for i in range(256):
        # bit-serial reference
        c = i
        for _ in range(8):
            c = ((c << 1) ^ 0x07) & 0xFF if c & 0x80 else (c << 1) & 0xFF
        assert TABLE[i] == c
