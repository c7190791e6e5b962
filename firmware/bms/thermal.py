# bms.thermal: heater and fan outputs (both optional board outputs).
#
# Thermal.update(snap, now_ms, charge_wanted=True) -> .heater, .fan (bools the app writes to
# the board's pins; an absent output always reads False).
#
# Heater: on when the coldest cell is below heater_on_dc and charging is wanted (pass
# Limits.charge_wanted), off at heater_off_dc or above (hysteresis), and off when the
# temperatures or cells are not valid, the hottest cell reaches heater_off_dc (a sensor near
# the heater), the lowest cell is below cell_uv_release_mv (never heat an empty pack), or the
# fan is on. The heater is powered from the pack: the inverter is never asked for heater
# current (bms.limits keeps CCL 0 while the cells are below chg_temp_min_dc, README "Heater
# and fan"), so no charge reaches a cold cell.
#
# Fan: on when the hottest cell reaches fan_on_dc, off below fan_off_dc (hysteresis); on
# as a fail-safe when no cell temperature is valid.
from bms.snapshot import FLAG_CELLS_VALID, TEMP_INVALID_DC


class Thermal:
    def __init__(self, cfg, have_heater=None, have_fan=None):
        self.cfg = cfg
        self._have_heater = have_heater
        self._have_fan = have_fan
        self.heater = False
        self.fan = False
        self.heater_on_ms = 0  # total heater on time (for diagnostics)
        self._t_last = None

    def has_heater(self):
        h = self._have_heater
        return bool(self.cfg.have_heater if h is None else h)

    def has_fan(self):
        f = self._have_fan
        return bool(self.cfg.have_fan if f is None else f)

    def update(self, snap, now_ms, charge_wanted=True):
        cfg = self.cfg
        tmin = snap.temp_min_dc
        tmax = snap.temp_max_dc
        valid = tmin != TEMP_INVALID_DC and tmax != TEMP_INVALID_DC
        # fan
        fan = False
        if self.has_fan():
            if not valid:
                fan = True
            elif self.fan:
                fan = tmax >= cfg.fan_off_dc
            else:
                fan = tmax >= cfg.fan_on_dc
        self.fan = fan
        # heater
        heat = False
        if (
            self.has_heater()
            and valid
            and not fan
            and charge_wanted
            and snap.flags & FLAG_CELLS_VALID
            and snap.age_ms(now_ms) <= cfg.stale_ms
            and snap.cell_min_mv >= cfg.cell_uv_release_mv
            and tmax < cfg.heater_off_dc
        ):
            heat = tmin < (cfg.heater_off_dc if self.heater else cfg.heater_on_dc)
        if self.heater and self._t_last is not None:
            self.heater_on_ms += now_ms - self._t_last
        self._t_last = now_ms
        self.heater = heat
        return heat
