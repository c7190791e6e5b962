# bms: battery management firmware for TI BQ769x0 packs (MicroPython).
__version__ = "0.1.0"
