# ESP32 DevKitC + BQ76940 (15 cells) + MCP2515 CAN module + RS485 transceiver.
# The wiring table is in the README ("Boards"). A new board is one new folder like this one.
from bms.hardware import Hardware

NAME = "esp32_devkit"
MPY_ARCH = "xtensawin"

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
I2C_SDA = 21
I2C_SCL = 22
I2C_FREQ = 100000
ALERT_PIN = 33  # bidirectional: the firmware drives it high to force the FETs off
BOOT_PIN = 32

# MCP2515 on SPI2 (VSPI)
CAN_SPI_ID = 2
CAN_SCK = 18
CAN_MOSI = 23
CAN_MISO = 19
CAN_CS = 5
CAN_INT = 4
CAN_CRYSTAL_HZ = 8000000
CAN_BITRATE = 500000
SPI_BAUD = 8000000

# RS485 on UART2 with a driver-enable pin
UART_ID = 2
UART_TX = 17
UART_RX = 16
RS485_DE = 25
MODBUS_BAUD = 9600

# Optional outputs (None when not fitted)
HEATER_PIN = 26
FAN_PIN = 27
LED_PIN = 2

# Wi-Fi (station) for MQTT / Home Assistant: settings in the configuration (bms.mqtt()).
WIFI = True

WDT_TIMEOUT_MS = 5000
DATA_DIR = "/data"


def open():
    import machine
    import time

    def afe_wake():
        # TS1 high for 5 ms boots the AFE from SHIP (also after a power-on reset of the chip);
        # then released so it does not skew the thermistor, and 10 ms for the boot.
        boot = machine.Pin(BOOT_PIN, machine.Pin.OUT, value=1)
        time.sleep_ms(5)
        boot.init(machine.Pin.IN)
        time.sleep_ms(10)

    afe_wake()
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
            wifi.config(pm=wifi.PM_NONE)  # no modem sleep: alerts leave at once
        except (AttributeError, ValueError, OSError):
            pass
    return Hardware(
        __import__("board"),
        i2c=machine.I2C(
            I2C_ID, sda=machine.Pin(I2C_SDA), scl=machine.Pin(I2C_SCL), freq=I2C_FREQ
        ),
        alert=alert,
        alert_override=alert_override,
        afe_wake=afe_wake,
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
