# bms.hardware: what a board hands to the firmware.
#
# boards/<name>/board.py builds one Hardware object from `machine` (or, for the virtual
# board, from the simulator's objects with the same API). The firmware only ever sees
# these objects, never the `machine` module.


class Hardware:
    def __init__(self, board):
        # Constants of the board module (pins, AFE variant, shunt ...), kept for reference.
        self.board = board
        self.name = board.NAME
        self.i2c = None  # machine.I2C to the BQ769x0
        self.spi = None  # machine.SPI to the MCP2515 (None: no CAN)
        self.can_cs = None  # machine.Pin, chip select of the MCP2515
        self.can_int = None  # machine.Pin, MCP2515 interrupt (optional; polled anyway)
        self.uart = None  # machine.UART to the RS485 transceiver (None: no RS485)
        self.rs485_de = None  # machine.Pin, driver enable of the transceiver
        self.alert = None  # machine.Pin, AFE ALERT (optional; SYS_STAT is polled anyway)
        # callable(bool) or None: drive the AFE's ALERT pin high (True) so the AFE sets
        # OVRD_ALERT and opens both FETs by itself, or release it (False). The firmware's
        # way to open the FETs when I2C to the AFE is lost (BQ769x0 DS 8.3.1.3.4).
        self.alert_override = None
        self.heater = None  # machine.Pin or None
        self.fan = None  # machine.Pin or None
        self.led = None  # machine.Pin or None
        self.wdt_factory = None  # callable(timeout_ms) -> object with feed(); None: no WDT
        self.reset_cause = -1  # machine.reset_cause() at boot
        self.reset = None  # callable() -> machine.reset
        self.data_dir = "/data"  # where persistent state lives on the board's filesystem
        self.clock = None  # object with now_ms(); None: bms.clock.MonotonicClock
