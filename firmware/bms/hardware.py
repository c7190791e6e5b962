# bms.hardware: what a board hands to the firmware.
#
# boards/<name>/board.py builds one Hardware object from `machine` (or, for the virtual
# board, from the simulator's objects with the same API). The firmware only ever sees
# these objects, never the `machine` module.


class Hardware:
    def __init__(
        self,
        board,
        i2c=None,
        spi=None,
        can_cs=None,
        can_int=None,
        uart=None,
        rs485_de=None,
        alert=None,
        alert_override=None,
        afe_wake=None,
        heater=None,
        fan=None,
        led=None,
        wdt_factory=None,
        reset_cause=-1,
        reset=None,
        data_dir="/data",
        clock=None,
        background=None,
        wifi=None,
    ):
        # Constants of the board module (pins, AFE variant, shunt ...), kept for reference.
        self.board = board
        self.name = board.NAME
        self.i2c = i2c  # machine.I2C to the BQ769x0
        self.spi = spi  # machine.SPI to the MCP2515 (None: no CAN)
        self.can_cs = can_cs  # machine.Pin, chip select of the MCP2515
        self.can_int = can_int  # machine.Pin, MCP2515 interrupt (optional; polled anyway)
        self.uart = uart  # machine.UART to the RS485 transceiver (None: no RS485)
        self.rs485_de = rs485_de  # machine.Pin, driver enable of the transceiver
        self.alert = alert  # machine.Pin, AFE ALERT (optional; SYS_STAT is polled anyway)
        # callable(bool) or None: drive the AFE's ALERT pin high (True) so the AFE sets
        # OVRD_ALERT and opens both FETs by itself, or release it (False). The firmware's
        # way to open the FETs when I2C to the AFE is lost (BQ769x0 DS 8.3.1.3.4).
        self.alert_override = alert_override
        # callable() or None: wake the AFE (BQ769x0: a pulse on TS1). A chip that went through
        # a power-on reset sits in SHIP and answers I2C only after this; the firmware calls
        # it when a re-initialisation finds the AFE silent.
        self.afe_wake = afe_wake
        self.heater = heater  # machine.Pin or None
        self.fan = fan  # machine.Pin or None
        self.led = led  # machine.Pin or None
        self.wdt_factory = wdt_factory  # callable(timeout_ms) -> object with feed(); None: no WDT
        self.reset_cause = reset_cause  # machine.reset_cause() at boot
        self.reset = reset  # callable() -> machine.reset
        self.data_dir = data_dir  # where persistent state lives on the board's filesystem
        self.clock = clock  # object with now_ms(); None: bms.clock.MonotonicClock
        # coroutine function or None: one more task the app runs (the virtual board's physics)
        self.background = background
        # network.WLAN(network.STA_IF)-like object (active(), connect(ssid, pw), isconnected())
        # or None: no Wi-Fi, no MQTT (bms.mqtt). The virtual board's is the host's network.
        self.wifi = wifi
