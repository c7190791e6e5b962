# Raspberry Pi Pico W (RP2040 + CYW43439 Wi-Fi) + BQ76940 (15 cells) + MCP2515 CAN + RS485.
# The wiring table is in the README ("Boards"). A new board is one new folder like this one.
from bms.hardware import Hardware

NAME = "rp2_picow"
MPY_ARCH = "armv6m"

# Pack
CHEMISTRY = "lfp"
CAPACITY_MAH = 100000

# AFE: BQ7694003 (address 0x08, CRC), 15 cells, 0.5 mOhm shunt, three 10k NTC (beta 3435).
# The shunt sets the hardware current limits: OCD <= 100 mV, SCD <= 200 mV, so a 100 Ah pack
# needs 0.5 mOhm for OCD 150 A / SCD 300 A to sit outside the software limits.
AFE_VARIANT = "bq76940"
AFE_ADDRESS = 0x08
AFE_CRC = True
CELLS = 15
SHUNT_UOHM = 500
N_TEMPS = 3
THERMISTOR_BETA = 3435
I2C_ID = 0
I2C_SDA = 4
I2C_SCL = 5
I2C_FREQ = 100000  # the BQ769x0 is a standard-mode (100 kHz) device
ALERT_PIN = 21
BOOT_PIN = 22  # drives TS1 high for a moment to wake the AFE from SHIP

# MCP2515 on SPI0
CAN_SPI_ID = 0
CAN_SCK = 18
CAN_MOSI = 19
CAN_MISO = 16
CAN_CS = 17
CAN_INT = 20
CAN_CRYSTAL_HZ = 8000000  # most cheap MCP2515 modules carry an 8 MHz crystal
CAN_BITRATE = 500000
SPI_BAUD = 8000000

# RS485 on UART0 with a driver-enable pin (DE and /RE tied together)
UART_ID = 0
UART_TX = 0
UART_RX = 1
RS485_DE = 2
MODBUS_BAUD = 9600

# Optional outputs (None when not fitted)
HEATER_PIN = 14
FAN_PIN = 15
LED_PIN = "LED"  # on the Pico W the LED hangs off the Wi-Fi chip (GP23-25, 29 are taken)

# Wi-Fi (station) for MQTT / Home Assistant: settings in the configuration (bms.mqtt()).
WIFI = True

WDT_TIMEOUT_MS = 5000  # rp2 maximum is 8388 ms
DATA_DIR = "/data"


def open():
    import machine
    import time

    boot = machine.Pin(BOOT_PIN, machine.Pin.OUT, value=1)
    time.sleep_ms(5)
    boot.init(machine.Pin.IN)  # release TS1 so it does not skew the thermistor
    time.sleep_ms(10)
    alert = machine.Pin(ALERT_PIN, machine.Pin.IN)

    def alert_override(on):
        # Wire ALERT to the GPIO through 4.7 kOhm (README wiring table).
        if on:
            alert.init(machine.Pin.OUT, value=1)
        else:
            alert.init(machine.Pin.IN)

    spi = machine.SPI(
        CAN_SPI_ID,
        baudrate=SPI_BAUD,
        polarity=0,
        phase=0,
        sck=machine.Pin(CAN_SCK),
        mosi=machine.Pin(CAN_MOSI),
        miso=machine.Pin(CAN_MISO),
    )
    out = machine.Pin.OUT
    wifi = None
    if WIFI:
        import network

        wifi = network.WLAN(network.STA_IF)
        wifi.active(True)
        try:
            wifi.config(pm=0xA11140)  # CYW43 "performance" power mode: no wake-up delay
        except (AttributeError, ValueError, OSError):
            pass
    return Hardware(
        __import__("board"),
        i2c=machine.I2C(
            I2C_ID, sda=machine.Pin(I2C_SDA), scl=machine.Pin(I2C_SCL), freq=I2C_FREQ
        ),
        alert=alert,
        alert_override=alert_override,
        spi=spi,
        can_cs=machine.Pin(CAN_CS, out, value=1),
        can_int=machine.Pin(CAN_INT, machine.Pin.IN, machine.Pin.PULL_UP),
        uart=machine.UART(
            UART_ID, baudrate=MODBUS_BAUD, tx=machine.Pin(UART_TX), rx=machine.Pin(UART_RX)
        ),
        rs485_de=machine.Pin(RS485_DE, out, value=0),
        heater=machine.Pin(HEATER_PIN, out, value=0) if HEATER_PIN is not None else None,
        fan=machine.Pin(FAN_PIN, out, value=0) if FAN_PIN is not None else None,
        led=machine.Pin(LED_PIN, out, value=0),
        wdt_factory=lambda ms: machine.WDT(timeout=ms),
        reset_cause=machine.reset_cause(),
        reset=machine.reset,
        data_dir=DATA_DIR,
        wifi=wifi,
    )
