# bms.app: the runtime. Boots into a safe state, then runs the parts at fixed periods.
#
# Boot:  FETs off (the AFE powers up with them off; we write it anyway) -> load persisted
#        state and configuration -> AFE self-check (init, read back, program the hardware
#        protection as the outer layer) -> tasks.
# Tasks (asyncio on a board; tools/sim.py calls the same *_cycle methods in simulated time):
#   measure+protect  250 ms  AFE read, protection state machine, FET commands, WDT feed
#   control          1 s     SOC/SOH estimation, balancing, charge/discharge limits, heater/fan
#   comms            20 ms   CAN (frames once a second, RX drained), Modbus RTU polling
#   persist          10 s    state/events/config to flash (rate-limited inside the store)
# A task that raises is logged (EV_TASK_ERROR), the pack goes to the safe state for that
# cause (measure+protect: both FETs off; control: limits to zero), and the task restarts
# after one period. More than _MAX_TASK_ERRORS failures within _TASK_ERROR_WINDOW_MS lead
# to a documented reset: state is saved, then the board is reset (machine.reset()).
# The watchdog is fed only at the end of a measure+protect cycle that completed and read
# the AFE (or lost it for less than _AFE_LOST_WDT_CYCLES cycles: a hung I2C peripheral is
# then recovered by the watchdog reset).
import gc

from micropython import const

from bms import events as ev
from bms.balancing import Balancer
from bms.afe import AfeConfigError, AfeError
from bms.bq769x0 import SAMPLE_MS, TEMP_SAMPLE_MS, BQ769x0
from bms.clock import MonotonicClock
from bms.config import Config, ConfigError
from bms.estimator import Estimator
from bms.events import EventLog
from bms.limits import Limits
from bms import protection
from bms.protection import Protection
from bms.snapshot import FLAG_CELLS_VALID, Snapshot
from bms.status import Status
from bms.store import KINDS, ST_CORRUPT, ST_FOREIGN, Store
from bms.thermal import Thermal

FAST_MS = const(250)
SLOW_MS = const(1000)
COMMS_MS = const(20)
PERSIST_MS = const(10000)
_AFE_RETRY_MS = const(1000)
_AFE_LOST_WDT_CYCLES = const(20)
_MAX_TASK_ERRORS = const(5)
_PLATEAU_GUESS_ERR_PCT = 30.0
_TASK_ERROR_WINDOW_MS = const(60000)

_KIND_STATE = KINDS.index("state") + 1  # EV_STORE a values, as bms.store numbers them
_KIND_EVENTS = KINDS.index("events") + 1
_KIND_CONFIG = KINDS.index("config") + 1

TASK_NAMES = ("measure", "control", "comms", "persist")
TASK_MEASURE = const(0)
TASK_CONTROL = const(1)
TASK_COMMS = const(2)
TASK_PERSIST = const(3)


class Bms:
    """Everything the firmware runs, wired together. One instance per board."""

    def __init__(self, hw, cfg=None):
        b = hw.board
        self.hw = hw
        self.clock = hw.clock if hw.clock is not None else MonotonicClock()
        self.events = EventLog(64)
        self.store = Store(hw.data_dir, self.events)
        if cfg is None:
            cfg = self._load_config(b)
        cfg.identity_locked = True  # chemistry, cells, capacity: the board file's
        self.cfg = cfg
        self.snap = Snapshot(b.CELLS, b.N_TEMPS)
        self.status = Status(b.CELLS, b.N_TEMPS)  # what the outside world is told
        self.afe = BQ769x0(
            hw.i2c,
            b.CELLS,
            address=b.AFE_ADDRESS,
            crc=b.AFE_CRC,
            shunt_uohm=b.SHUNT_UOHM,
            n_temps=b.N_TEMPS,
            thermistor_beta=b.THERMISTOR_BETA,
            variant=b.AFE_VARIANT,
        )
        self.prot = Protection(cfg, self.events, temp_sample_ms=TEMP_SAMPLE_MS,
                               sample_ms=SAMPLE_MS)
        # the cell's own OCV table when the board file declares one (OCV_TABLE)
        self.est = Estimator(cfg, self.events, getattr(b, "OCV_TABLE", None))
        self.bal = Balancer(cfg, self.afe.cell_groups)  # the chip's groups, from its driver
        # A board without the output pin has no heater/fan; with it, cfg.have_* decides.
        self.thermal = Thermal(
            cfg,
            have_heater=None if hw.heater is not None else False,
            have_fan=None if hw.fan is not None else False,
        )
        self.limits = Limits(
            cfg,
            thermal=self.thermal,
            cold_fault_mask=1 << protection.F_CHG_UT,
            chg_warn_mask=protection.MASK_CHG,
            dsg_warn_mask=protection.MASK_DSG,
        )
        self.can = None
        self.modbus = None
        self._open_comms(hw, cfg)
        self.wdt = None
        self.afe_ok = False  # the AFE is initialised and holds its configuration
        self.afe_inits = 0  # re-initialisations after a lost configuration or a lost bus
        self.afe_refusals = 0  # reads refused because the chip lost its configuration
        self.alert_forced = False  # ALERT held high to force the FETs off (AFE unreachable)
        self.afe_applied = None  # hardware protection values the AFE accepted
        self._afe_retry_ms = 0
        self.bal_mask = 0
        self.bal_override = -1  # bms.balance_test(): forced mask until the given time
        self.bal_override_until = 0
        self.task_errors = [0, 0, 0, 0]
        self.task_error_times = []
        self.last_error = None
        self.drill = -1  # bms.drill(): index of a task that raises once at its next cycle

    # --- construction helpers ---------------------------------------------------------
    def _load_config(self, b):
        base = Config(chemistry=b.CHEMISTRY, cells=b.CELLS, capacity_mah=b.CAPACITY_MAH)
        saved = self.store.load("config")
        if saved:
            ident = self.identity()
            sid = saved.get("identity")
            if not isinstance(sid, dict):  # saved before identities were recorded
                sid = {k: saved.get(k) for k in ("chemistry", "cells", "capacity_mah")}
            for k in _IDENTITY_KEYS:
                if k in sid and sid[k] != ident[k]:
                    # Made for another pack (the board file changed): the board's identity
                    # wins, its defaults apply, and status/REPL/Modbus say so.
                    self.config_foreign = "%s: saved %s, board %s" % (k, sid[k], ident.get(k))
                    self.events.add(0, ev.EV_STORE, _KIND_CONFIG, ST_FOREIGN)
                    saved = None
                    break
        if saved:
            try:
                base.update({k: saved[k] for k in saved if k != "identity"})
            except (ConfigError, TypeError, ValueError):
                # A stored configuration that no longer validates (e.g. after an update
                # narrowed a range): keep the board defaults, and say so in the log.
                self.events.add(0, ev.EV_STORE, _KIND_CONFIG, ST_CORRUPT)
        base.identity_locked = True
        return base

    def identity(self):
        """The pack as the board file declares it: a stored configuration applies only to it."""
        b = self.hw.board
        return {
            "chemistry": b.CHEMISTRY,
            "cells": b.CELLS,
            "capacity_mah": b.CAPACITY_MAH,
            "shunt_uohm": b.SHUNT_UOHM,
            "afe_variant": str(b.AFE_VARIANT),
            "n_temps": b.N_TEMPS,
            "thermistor_beta": b.THERMISTOR_BETA,
        }

    config_foreign = None  # why a stored configuration was not applied (None: it was)

    def _open_comms(self, hw, cfg):
        if hw.spi is not None:
            from bms.canbus import CanProtocol
            from bms.mcp2515 import MCP2515

            b = hw.board
            mcp = MCP2515(hw.spi, hw.can_cs, crystal_hz=b.CAN_CRYSTAL_HZ, bitrate=b.CAN_BITRATE)
            self.can = CanProtocol(mcp, cfg, self.events)
        if hw.uart is not None:
            from bms.modbus import ModbusServer

            self.modbus = ModbusServer(hw.uart, hw.rs485_de, cfg, self.events)
            self.modbus.on_factory_reset = self.factory_reset  # type: ignore
        self.mqtt = None  # Home Assistant / alerts over Wi-Fi (bms.mqtt), when enabled
        if cfg.mqtt_enable:
            self.open_mqtt()

    def open_mqtt(self):
        """Start the MQTT link on a board with Wi-Fi (at boot with mqtt_enable = 1, or once
        it is enabled later); its modules take RAM only from then on."""
        hw = self.hw
        if self.mqtt is None and getattr(hw, "wifi", None) is not None:
            from bms.mqtt import MqttLink

            self.mqtt = MqttLink(self.cfg, self.status, self.events, hw.wifi, hw.name,
                                 hw.data_dir)
        return self.mqtt

    # --- boot ---------------------------------------------------------------------------
    def boot(self):
        now = self.clock.now_ms()
        store = self.store
        state = store.load("state", now)
        boots = 0
        self._soc_pending = True  # no SOC yet: guess it from the first valid cell voltages
        if state:
            try:
                boots = int(state.get("boots", 0)) + 1
                self.est.load_state(state.get("est", {}))
                self._soc_pending = "est" not in state
                self.limits_restore(state.get("limits", {}))
            except (ValueError, TypeError, KeyError, AttributeError):
                self.events.add(now, ev.EV_STORE, _KIND_STATE, ST_CORRUPT)
        self.boots = boots
        saved_events = store.load("events", now)
        if saved_events:
            try:
                self.events.load_list(saved_events.get("log", []))
            except (ValueError, TypeError):
                self.events.add(now, ev.EV_STORE, _KIND_EVENTS, ST_CORRUPT)
        self.events.add(now, ev.EV_BOOT, self.hw.reset_cause, boots)
        self._afe_start(now)
        self.cfg.hooks.append(self._hw_limits)
        if self.can is not None:
            try:
                self.can.can.init()
            except OSError:
                pass
        self.events.listener = self._on_event
        gc.collect()

    def _afe_start(self, now):
        """Initialise the AFE: FETs off, hardware protection as the outer layer, verified."""
        cfg = self.cfg
        try:
            self.afe.init()
            self.afe.set_fets(False, False)
            args = self._hw_args(cfg.as_dict())
            self.afe_applied = self.afe.configure_protection(*args)
            self._afe_args = args
            self.afe_ok = True
            self.bal_mask = 0  # init() stopped balancing: the balancer's mask is written again
            if self._afe_started:
                self.afe_inits += 1
                self.events.add(now, ev.EV_AFE_INIT, 1, self.afe_inits)
            else:
                self._check_outer_layer(now, self.afe_applied)
            self._afe_started = True
        except (AfeError, OSError):
            self.afe_ok = False
            self.events.add(now, ev.EV_AFE_ERROR, self.snap.errors, 1)
            if self.hw.afe_wake is not None:
                # A chip that reset into its power-on state (SHIP) answers only after a wake.
                self.hw.afe_wake()
        except ValueError:
            # A delay or threshold the chip cannot honour at all: FETs stay off, and the log
            # says it is the configuration (kind 4), not the bus.
            self.afe_ok = False
            self.events.add(now, ev.EV_AFE_ERROR, self.snap.errors, 4)
        self._afe_retry_ms = now + _AFE_RETRY_MS

    _afe_started = False

    def _hw_args(self, v):
        """configure_protection() arguments for the configuration values v. Limits the chip
        cannot reach are set to its tightest setting (still the outer layer; logged at boot
        by _check_outer_layer): a small pack on a large shunt (OCD/SCD floors), LTO's 2.8 V
        (below the lowest OV trip, ~3.1 V)."""
        afe = self.afe
        ocd_ma = v["hw_ocd_ma"]
        scd_ma = v["hw_scd_ma"]
        floor_ocd, floor_scd = afe.current_floor_ma()
        if ocd_ma < floor_ocd or scd_ma < floor_scd:
            ocd_ma = max(ocd_ma, floor_ocd)
            scd_ma = max(scd_ma, floor_scd, ocd_ma + 1)
        return (max(v["hw_cell_ov_mv"], afe.ov_trip_mv(0)), v["hw_cell_ov_delay_ms"],
                min(v["hw_cell_uv_mv"], afe.uv_trip_mv(0xFF)), v["hw_cell_uv_delay_ms"],
                ocd_ma, v["hw_ocd_delay_ms"], scd_ma, v["hw_scd_delay_us"])

    def _check_outer_layer(self, now, a):
        """The AFE quantises (and, with its shunt, bounds) the hardware limits. Where what it
        applied is not outside the software limit (the hardware then acts first), or is
        looser than configured (a small pack on a large shunt), the event log says so:
        config_reject with the field and the applied value."""
        from bms.config import field_index

        cfg = self.cfg
        bad = [f for f, _rule in _outer_violations(a, cfg.as_dict())]
        for name in ("hw_cell_ov_mv", "hw_ocd_ma", "hw_scd_ma"):
            if a[_APPLIED[name]] > cfg.get(name):
                bad.append(name)  # looser than configured: the chip's tightest setting
        if a["uv_mv"] < cfg.hw_cell_uv_mv:
            bad.append("hw_cell_uv_mv")
        for name in _HW_ARGS:
            if name in bad:
                self.events.add(now, ev.EV_CONFIG_REJECT, field_index(name), a[_APPLIED[name]])

    def _hw_limits(self, cfg, new):
        """Config hook: a change of the hardware limits (or of the software limits they must
        stay outside) is programmed into the AFE and read back before it is applied. A value
        the chip cannot place outside its software limit is refused with the reason, and the
        old one stays (in the chip too)."""
        changed = None
        for k in _HW_FIELDS:
            if new[k] != cfg.get(k):
                changed = k
                break
        if changed is None:
            return
        if not self.afe_ok:
            raise ConfigError(changed, "the AFE is not reachable now; nothing was changed")
        args = self._hw_args(new)
        try:
            a = self.afe.protection_applied(*args)
        except ValueError as e:
            raise ConfigError(changed, "the AFE cannot place it: %s" % e) from None
        bad = _outer_violations(a, new)
        if bad:
            raise ConfigError(bad[0][0], bad[0][1])
        try:
            self.afe_applied = self.afe.configure_protection(*args)
            self._afe_args = args
        except AfeError as e:
            old = self._afe_args
            try:
                if old is None:
                    raise ValueError
                self.afe_applied = self.afe.configure_protection(*old)
            except (AfeError, ValueError):
                self.afe_ok = False  # re-initialised at the next measure cycle
                self._afe_reinit = True
            why = ("did not hold it (read-back differed)" if type(e) is AfeError
                   else "did not answer")
            raise ConfigError(changed, "the AFE %s; nothing was changed" % why) from None

    def factory_reset(self, now, interface):
        """Configuration back to the board's defaults (hardware limits programmed first);
        logged and saved. Returns None, or the ConfigError that refused it."""
        try:
            self.cfg.factory_reset()
        except ConfigError as e:
            return e
        self.config_foreign = None
        self.events.add(now, ev.EV_CONFIG_RESET, interface, 0)
        self.save_config(now)
        return None

    _afe_args = None

    def _on_event(self, code):
        # Faults and latches force the next persistence cycle to write at once.
        if code in (ev.EV_FAULT_SET, ev.EV_LATCH, ev.EV_SHIP, ev.EV_CONFIG):
            self._force_save = True

    _force_save = False
    _cfg_saved = 0
    _soc_pending = True

    # --- the periodic parts ---------------------------------------------------------------
    def _drill(self, idx):
        if self.drill == idx:
            self.drill = -1
            raise RuntimeError("fire drill")

    def fast_cycle(self, now):
        """Measure and protect. Returns True when the cycle is healthy (WDT may be fed)."""
        self._drill(TASK_MEASURE)
        snap = self.snap
        afe = self.afe
        if not self.afe_ok and (now >= self._afe_retry_ms or self._afe_reinit):
            self._afe_reinit = False
            self._afe_start(now)
        if self.afe_ok:
            try:
                afe.read(snap, now)
            except AfeConfigError:
                # The chip lost what was programmed (a reset, an upset): this reading is not
                # used, protection opens both FETs in this cycle, and the AFE is initialised
                # and verified again at the next cycle before any FET may close.
                self.afe_ok = False
                self._afe_reinit = True
                self.afe_refusals += 1
                self.events.add(now, ev.EV_AFE_CONFIG, snap.cfg_err & 0xFF, self.afe_refusals)
            except AfeError:
                pass  # the driver counted it in snap.errors; protection reacts below
        elif not self._afe_reinit:
            snap.errors += 1
            snap.error_total += 1
            snap.flags = 0
        prot = self.prot
        prot.update(snap, now)
        ok = snap.errors == 0
        try:
            if ok and snap.cfg_err == 0:
                afe.ack_trips(prot.ack, now)
            # Always written, also after a failed read: after a failed read protection
            # commands both FETs off, which the driver writes without reading first.
            afe.set_fets(prot.chg_fet, prot.dsg_fet)
        except AfeError:
            ok = False
        # Without a confirmed read and write over I2C the FETs cannot be trusted to follow
        # protection: hold ALERT high so the AFE opens both by itself (OVRD_ALERT).
        override = self.hw.alert_override
        if override is not None:
            if not ok and not self.alert_forced:
                override(True)
                self.alert_forced = True
            elif ok and self.alert_forced:
                override(False)
                self.alert_forced = False
        self.status.fill_fast(self, now)
        return snap.errors < _AFE_LOST_WDT_CYCLES

    _afe_reinit = False
    _bal_refused = -1

    def slow_cycle(self, now):
        """Estimation, balancing, limits, heater and fan."""
        self._drill(TASK_CONTROL)
        snap = self.snap
        prot = self.prot
        est = self.est
        if self._soc_pending and snap.flags & FLAG_CELLS_VALID and snap.errors == 0:
            # First boot (nothing persisted): an OCV guess. Where the curve is too flat to
            # trust (the LFP plateau) it is still the best guess there is, but reported with a
            # wide uncertainty, so the limits ask for a full charge to synchronise.
            if not est.init_from_ocv(snap, now):
                mv = snap.cell_sum_mv // snap.n_cells
                est.set_soc(est.table.soc(mv) * 100.0, now, _PLATEAU_GUESS_ERR_PCT)
            self._soc_pending = False
        est.update(snap, now)
        mask = self.bal.update(snap, prot, est, now)
        if self.bal_override >= 0:
            if now < self.bal_override_until and prot.faults == 0:
                mask = self.bal_override
            else:
                self.bal_override = -1
        if mask != self.bal_mask and self.afe_ok:
            try:
                self.afe.set_balance(mask)
                self.bal_mask = mask
            except AfeError:
                self.bal_mask = -1  # unknown: rewrite next time
            except ValueError:
                # The driver refused the mask (it gives the balancer its groups, so this is
                # a bug): no bleeding, and the log says so once per refused mask.
                if mask != self._bal_refused:
                    self._bal_refused = mask
                    self.events.add(now, ev.EV_AFE_ERROR, mask, 5)
                self.bal_mask = -1
        self.thermal.update(snap, now, self.limits.charge_wanted)
        self.limits.bal_active = self.bal.active and self.bal_mask > 0
        self.limits.update(snap, prot, est, now)
        hw = self.hw
        if hw.heater is not None:
            hw.heater.value(1 if self.thermal.heater else 0)
        if hw.fan is not None:
            hw.fan.value(1 if self.thermal.fan else 0)
        self.status.fill_slow(self, now)

    def comms_cycle(self, now):
        self._drill(TASK_COMMS)
        # No frames before the first complete reading: an inverter must never see a 0 V
        # pack or an invalid temperature. (Without the BMS's frames it stops by itself.)
        if self.can is not None and self.snap.seq > 0:
            self.can.poll(self, now)
        if self.modbus is not None:
            self.modbus.poll(self, now)
        if self.mqtt is not None:  # never blocks, never raises (idle while mqtt_enable = 0)
            self.mqtt.poll(now)
        elif self.cfg.mqtt_enable:  # enabled since boot (REPL, Modbus): start it now
            self.open_mqtt()

    def persist_cycle(self, now, force=False):
        self._drill(TASK_PERSIST)
        force = force or self._force_save
        self._force_save = False
        self.store.maybe_save("state", self.state_record(), now, force)
        self.store.maybe_save("events", {"log": self.events.to_list()}, now, force)
        if self.cfg.generation != self._cfg_saved:
            # Changed through the REPL or Modbus: keep it across reboots.
            self.save_config(now)
            self._cfg_saved = self.cfg.generation

    def state_record(self):
        return {
            "boots": self.boots,
            "est": self.est.state_dict(),
            "limits": {"since_full_s": self.limits.since_full_s},
        }

    def limits_restore(self, d):
        if "since_full_s" in d:
            self.limits.since_full_s = int(d["since_full_s"])

    def save_config(self, now):
        d = self.cfg.as_dict()
        d["identity"] = self.identity()  # a later board file with another pack ignores it
        self.store.maybe_save("config", d, now, True)

    # --- failures -----------------------------------------------------------------------
    def task_failed(self, idx, exc, now):
        """A task raised: log it, make that cause safe, decide whether to reset."""
        self.task_errors[idx] += 1
        self.last_error = (idx, repr(exc))
        self.events.add(now, ev.EV_TASK_ERROR, idx, self.task_errors[idx])
        if idx == TASK_MEASURE:
            try:
                self.afe.set_fets(False, False)
            except Exception:
                pass
        elif idx == TASK_CONTROL:
            self.limits.ccl_ma = 0
            self.limits.dcl_ma = 0
        times = self.task_error_times
        times.append(now)
        while times and now - times[0] > _TASK_ERROR_WINDOW_MS:
            times.pop(0)
        if len(times) > _MAX_TASK_ERRORS:
            self.events.add(now, ev.EV_RESET_REQ, 1, 0)
            return True
        return False

    def reset_now(self):
        try:
            self.afe.set_fets(False, False)
        except Exception:
            pass
        try:
            self.persist_cycle(self.clock.now_ms(), True)
        except Exception:
            pass
        if self.hw.reset is not None:
            self.hw.reset()

    def ship(self):
        """Enter ship mode: save everything, FETs off, AFE to SHIP (wake needs the TS1 pulse)."""
        now = self.clock.now_ms()
        self.prot.request_ship(now)
        self.events.add(now, ev.EV_SHIP, 0, 0)
        self.persist_cycle(now, True)
        self.afe.set_fets(False, False)
        self.afe.ship()


# Hardware limits: the configure_protection() arguments, and the fields whose change needs
# the AFE (the software limits the hardware must stay outside of as well).
_HW_ARGS = ("hw_cell_ov_mv", "hw_cell_ov_delay_ms", "hw_cell_uv_mv", "hw_cell_uv_delay_ms",
            "hw_ocd_ma", "hw_ocd_delay_ms", "hw_scd_ma", "hw_scd_delay_us")
_HW_FIELDS = _HW_ARGS + ("cell_ov_mv", "cell_uv_mv", "dsg_oc_ma")
_IDENTITY_KEYS = ("chemistry", "cells", "capacity_mah", "shunt_uohm", "afe_variant", "n_temps",
                  "thermistor_beta")  # the order in which a foreign configuration is named
_APPLIED = {"hw_cell_ov_mv": "ov_mv", "hw_cell_uv_mv": "uv_mv", "hw_ocd_ma": "ocd_ma",
            "hw_scd_ma": "scd_ma"}


def _outer_violations(a, v):
    """[(field, rule), ...]: applied hardware limits (dict of the driver) that are not outside
    the software limits in v (the hardware must be the outer layer)."""
    out = []
    if a["ov_mv"] <= v["cell_ov_mv"]:
        out.append(("hw_cell_ov_mv", "the AFE trips at %d mV (its nearest step not above it), "
                    "not above cell_ov_mv %d" % (a["ov_mv"], v["cell_ov_mv"])))
    if a["uv_mv"] >= v["cell_uv_mv"]:
        out.append(("hw_cell_uv_mv", "the AFE trips at %d mV (its nearest step not below it), "
                    "not below cell_uv_mv %d" % (a["uv_mv"], v["cell_uv_mv"])))
    if a["ocd_ma"] <= v["dsg_oc_ma"]:
        out.append(("hw_ocd_ma", "the AFE trips at %d mA on this shunt, not above dsg_oc_ma %d"
                    % (a["ocd_ma"], v["dsg_oc_ma"])))
    if a["scd_ma"] <= a["ocd_ma"]:
        out.append(("hw_scd_ma", "the AFE trips at %d mA on this shunt, not above its OCD %d mA"
                    % (a["scd_ma"], a["ocd_ma"])))
    return out


# --- asyncio runtime (boards) ---------------------------------------------------------------
async def _periodic(bms, idx, period_ms, fn):
    import asyncio

    clock = bms.clock
    while True:
        try:
            nxt = clock.now_ms()
            while True:
                now = clock.now_ms()
                healthy = fn(now)
                if idx == TASK_MEASURE and healthy and bms.wdt is not None:
                    bms.wdt.feed()
                nxt += period_ms
                delay = nxt - clock.now_ms()
                if delay < 0:  # overran: do not try to catch up in a burst
                    nxt = clock.now_ms()
                    delay = 0
                await asyncio.sleep_ms(delay)  # type: ignore[attr-defined]
        except Exception as e:  # noqa: BLE001 - every failure is logged and survived
            if bms.task_failed(idx, e, clock.now_ms()):
                bms.reset_now()
            await asyncio.sleep_ms(period_ms)  # type: ignore[attr-defined]


class _Repl:
    """`bms` on the REPL: bms.diag (the REPL functions and their tables) is imported at the
    first command, so it takes no RAM while nobody types."""

    def __init__(self, app):
        self._app = app
        self._d = None

    def __getattr__(self, name):
        d = self._d
        if d is None:
            from bms.diag import Diag

            d = self._d = Diag(self._app)
        return getattr(d, name)


async def run(bms, repl=True):
    import asyncio

    tasks = [
        asyncio.create_task(_periodic(bms, TASK_MEASURE, FAST_MS, bms.fast_cycle)),
        asyncio.create_task(_periodic(bms, TASK_CONTROL, SLOW_MS, bms.slow_cycle)),
        asyncio.create_task(_periodic(bms, TASK_COMMS, COMMS_MS, bms.comms_cycle)),
        asyncio.create_task(_periodic(bms, TASK_PERSIST, PERSIST_MS, bms.persist_cycle)),
    ]
    if bms.hw.background is not None:  # the virtual board's clock and physics
        tasks.append(asyncio.create_task(bms.hw.background()))
    if repl:
        g = {"bms": _Repl(bms), "hw": bms.hw}
        try:
            import aiorepl  # type: ignore[import-not-found]

            tasks.append(asyncio.create_task(aiorepl.task(g=g)))
        except ImportError:
            # Documented fallback: a line console on the serial input (bms.console).
            from bms.console import console

            tasks.append(asyncio.create_task(console(g)))
    await asyncio.gather(*tasks)


def main(board=None):
    """Entry point used by firmware/main.py."""
    import micropython

    if hasattr(micropython, "alloc_emergency_exception_buf"):  # not on the unix port
        micropython.alloc_emergency_exception_buf(128)
    if board is None:
        import board  # type: ignore[import-not-found]
    hw = board.open()
    bms = Bms(hw)
    bms.boot()  # FETs off until protection has a complete, plausible measurement
    if hw.wdt_factory is not None:
        bms.wdt = hw.wdt_factory(board.WDT_TIMEOUT_MS)
    import asyncio

    try:
        asyncio.run(run(bms))
    finally:
        # Leaving the loop (Ctrl-C at the REPL, an escaped error): pack to the safe state.
        try:
            bms.afe.set_fets(False, False)
        except Exception:
            pass
        bms.persist_cycle(bms.clock.now_ms(), True)
