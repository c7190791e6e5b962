# bms.afe: the chip-neutral seam between the analog front end and everything above it.
#
# Protection, balancing, the app and the protocols know an AFE only through this module and
# the driver's methods below; chip facts (register bits, trip tables, hold-off times) live in
# the driver alone (today bms.bq769x0). A second AFE family is one more driver with the same
# methods, one more emulator for the virtual board, and one more board constant.
#
# Driver contract (what bms.app calls):
#   init()                       program the chip (FETs off, ADC and coulomb counter on,
#                                balancing off) and verify it; AfeError on failure
#   configure_protection(ov_mv, ov_delay_ms, uv_mv, uv_delay_ms, ocd_ma, ocd_delay_ms,
#                        scd_ma, scd_delay_us) -> dict of the values the chip applied
#                                (programmed, read back, and from then on checked by read())
#   protection_applied(same args) -> the dict the chip WOULD apply (no I/O; ValueError when
#                                it cannot be met without being looser)
#   read(snap, now_ms)           one measurement into the snapshot, with an integrity check
#                                of every control and protection register against what was
#                                programmed: AfeConfigError (and snap.cfg_err != 0, no valid
#                                flag) when the chip does not hold it (reset, upset); other
#                                AfeError subclasses for the bus
#   ack_trips(trips, now_ms)     the TRIP_* flags protection has handled; the driver clears
#                                them in the chip when the chip allows it (hold-off times)
#   set_fets(chg, dsg)           FET commands; a FET stays off while the chip still reports a
#                                trip that opened it (every closing write goes through this)
#   set_balance(mask), check_balance(mask), cell_groups (tuple: group of each cell; two
#                                neighbouring cells of one group never bleed together)
#   current_floor_ma(), ship()
from micropython import const


class AfeError(Exception):
    """The AFE could not be read or written, or does not hold its configuration."""


class AfeBusError(AfeError):
    """The bus failed (NACK, timeout: OSError) on every attempt."""


class AfeCrcError(AfeError):
    """The CRC of the data read was wrong on every attempt."""


class AfeConfigError(AfeError):
    """The chip does not hold what was programmed: a reset, or a register upset."""


# Trips of the AFE's own hardware protection (Snapshot.trips). Each one already opened
# FETs in the chip; the chip keeps reporting it until protection acknowledges it.
TRIP_OV = const(0x01)  # cell over-voltage: charge FET opened
TRIP_UV = const(0x02)  # cell under-voltage: discharge FET opened
TRIP_OCD = const(0x04)  # discharge over-current: discharge FET opened
TRIP_SCD = const(0x08)  # short circuit in discharge: discharge FET opened
TRIP_DEVICE = const(0x10)  # internal device fault: both FETs opened, balancing stopped
TRIP_OVRD = const(0x20)  # external override (secondary protector): both FETs opened
TRIP_ALL = const(0x3F)
TRIPS_CHG_OFF = TRIP_OV | TRIP_DEVICE | TRIP_OVRD  # trips that open the charge FET
TRIPS_DSG_OFF = TRIP_UV | TRIP_OCD | TRIP_SCD | TRIP_DEVICE | TRIP_OVRD
TRIP_NAMES = ("ov", "uv", "ocd", "scd", "device", "ovrd")

# Snapshot.cfg_err: 0 while the chip holds its configuration; after a refused read
# CFG_ERR | the address of the first register that differed (the driver's register map).
CFG_ERR = const(0x100)
