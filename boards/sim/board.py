# Virtual board: the firmware runs on the host (MicroPython unix port) against
# tools/simlib emulators. Like every board it exposes constants and open(); unlike the
# real ones it never imports `machine` (the simulator provides the machine-API objects).
# The values below are plain ints (not const) so that configure() can change them.
NAME = "sim"
MPY_ARCH = "armv6m"  # compiled in the build check like the real boards
AFE_VARIANT = "bq76920"
AFE_ADDRESS = 0x08
AFE_CRC = True
CELLS = 4
SHUNT_UOHM = 500
N_TEMPS = 1
THERMISTOR_BETA = 3435
CHEMISTRY = "lfp"
CAPACITY_MAH = 100000


def configure(chemistry=None, cells=None, capacity_mah=None):
    """Set the pack the virtual board pretends to carry (before open())."""
    global CHEMISTRY, CELLS, CAPACITY_MAH, AFE_VARIANT, N_TEMPS
    if chemistry is not None:
        CHEMISTRY = chemistry
    if capacity_mah is not None:
        CAPACITY_MAH = capacity_mah
    if cells is not None:
        CELLS = cells
        if cells <= 5:
            AFE_VARIANT, N_TEMPS = "bq76920", 1
        elif cells <= 10:
            AFE_VARIANT, N_TEMPS = "bq76930", 2
        else:
            AFE_VARIANT, N_TEMPS = "bq76940", 3


WDT_TIMEOUT_MS = 5000
DATA_DIR = "build/sim/flash"
CAN_CRYSTAL_HZ = 8000000
CAN_BITRATE = 500000
MODBUS_BAUD = 9600


def open(sim=None):
    """Hardware for a tools/simlib Simulator (a default one is built when sim is None)."""
    import sys

    from bms.hardware import Hardware

    this = sys.modules[__name__]

    realtime = sim is None
    if realtime:
        # firmware/main.py on the virtual board: the pack follows the home-day profile and
        # simulated time runs with the wall clock (SPEED x), driven by a background task.
        from simlib import Simulator

        sim = Simulator(chemistry=CHEMISTRY, cells=CELLS, capacity_mah=CAPACITY_MAH,
                        variant=AFE_VARIANT, address=AFE_ADDRESS, crc=AFE_CRC,
                        shunt_uohm=SHUNT_UOHM, n_temps=N_TEMPS, can=True, profile="home")
    hw = Hardware(this)
    if realtime:
        hw.background = _stepper(sim)
    hw.sim = sim
    hw.i2c = sim.i2c
    hw.clock = sim.clock
    hw.heater = sim.heater_pin
    hw.fan = sim.fan_pin
    hw.wdt_factory = sim.wdt_factory
    hw.reset_cause = sim.reset_cause
    hw.data_dir = DATA_DIR
    if realtime:
        import os

        try:
            os.mkdir("build")
        except OSError:
            pass
        for d in ("build/sim", DATA_DIR):
            try:
                os.mkdir(d)
            except OSError:
                pass
        hw.reset = _no_reset
    emu = sim.emu

    def alert_override(on):
        # The GPIO on ALERT: held high while the chip drives it low -> OVRD_ALERT, FETs off.
        if on:
            emu.inject_ovrd_alert()

    hw.alert_override = alert_override
    hw.afe_wake = emu.boot  # the TS1 pulse: SHIP -> NORMAL (registers at their defaults)
    # CAN (MCP2515 on SPI) and RS485 (UART + DE pin) when the simulator provides them.
    hw.spi = getattr(sim, "spi", None)
    hw.can_cs = getattr(sim, "can_cs", None)
    hw.uart = getattr(sim, "uart", None)
    hw.rs485_de = getattr(sim, "rs485_de", None)
    return hw


SPEED = 1  # simulated ms per wall ms when firmware/main.py runs on the virtual board


def _stepper(sim):
    async def run():
        import asyncio
        import time

        last = time.ticks_ms()
        while True:
            await asyncio.sleep_ms(10)
            now = time.ticks_ms()
            dt = time.ticks_diff(now, last) * SPEED
            last = now
            if dt > 0:
                sim.advance(dt)

    return run


def _no_reset():
    raise SystemExit("reset requested (virtual board)")
