# Independent deterministic scenarios for issue #11, judged on the chip model's FET bits and
# the TRUE values (host_tests/indep_harness.py, indep_bq76940.py; written from the datasheet
# reference and the README only). Every scenario also runs the harness's judges I1-I9.
# Runs under CPython (pytest) and MicroPython (host_tests/run_mpy.py indep_afe_scenarios).
#
#   cold_lfp_*                 -10 degC LFP, 20 A charger ignoring CAN, AFE power-on reset at
#                              30 s (ADC off + results frozen / ADC on): the charge FET is
#                              never on; the discharge FET (allowed at -10 degC) back <= 30 s
#   tap_*/other_tap_*          a cell above cell_ov_mv while its own (or another) tap reads
#                              5.2 V / 0.3 V on 4 of 5 conversions: CHG off within
#                              cell_ov_delay_ms + 250 ms of the true crossing
#   deep_uv_*                  a cell falling to 1.8 V with a flickering tap: DSG off within
#                              cell_uv_delay_ms + 250, both off within cell_deep_uv_delay_ms + 250
#   register_upsets_* / afe_reset_*  single-bit upsets and resets in a quiet world: both FETs
#                              off at once (control bits) or within CONFIG_CHECK_MS (protection
#                              registers), the AFE re-initialised, FETs back within 30 s
#   runtime_hw_limit_change    hw_cell_ov_mv / hw_cell_uv_mv set on the REPL path (Diag.set)
#                              reach OV_TRIP/UV_TRIP within CONFIG_CHECK_MS
#   xready_restore_*           XREADY released while a hardware OV/UV trip stands and the
#                              body-diode case asks for the FET: no FET written on (I9)
#   bq76940_10_cells_*         9 and 10 cells on a BQ76940 at the top of charge: balancing
#                              stays on the DS input map (I8)
import gc

import indep_bq76940 as afe
import indep_harness as h

GAIN_UV = 380
OFFSET_MV = 5


def _rig(script, on_step=None, board_kw=None, seed=1):
    board = h.Board(**board_kw) if board_kw else None
    return h.Rig(seed, board=board, gain_uv=GAIN_UV, offset_mv=OFFSET_MV, rates={},
                 nack_prob=0, corrupt_prob=0, script=script, on_step=on_step,
                 adc_on_at_boot=False, max_violations=4, tag="scn")


class Problems:
    """The first few problems of a scenario (and how many there were): keeps the heap small."""

    def __init__(self, keep=6):
        self.keep = keep
        self.first = []
        self.count = 0

    def append(self, text):
        self.count += 1
        if len(self.first) < self.keep:
            self.first.append(text)

    def lines(self):
        more = self.count - len(self.first)
        return self.first + (["... %d more" % more] if more > 0 else [])


def _finish(rig, problems):
    found = rig.all_violations()[:4]
    summary = rig.summary()
    rig.close()
    gc.collect()
    if isinstance(problems, list):
        p = Problems()
        for x in problems:
            p.append(x)
        problems = p
    assert problems.count == 0 and not found, "\n".join([summary] + problems.lines() + found)


def _steady(w, t, cell_mv=3300, temp_c=25.0, i_req=0):
    for i in range(w.cells):
        w.mv[i] = cell_mv + (i % 3)
    for i in range(w.n_ts):
        w.temps[i] = temp_c
    w.die = 35.0
    w.i_req = i_req


# --------------------------------------------------------------------------------------
# -10 degC LFP pack on a 20 A charger that ignores CAN; AFE power-on reset while the MCU runs


def _cold_reset(adc_on, keep_results):
    reset_t = 30000

    def script(w, t):
        _steady(w, t, 3300, -10.0, 20000)

    def on_step(rig, t):
        if t == reset_t:
            rig.model.power_on(adc_on=adc_on, keep_results=keep_results)

    rig = _rig(script, on_step)
    problems = Problems()
    dsg_back = None
    for _ in range(600):  # 150 s
        rig.step()
        chg, dsg = rig.model.fets()
        if chg:
            problems.append("t=%d: charge FET on with the pack at -10 degC (%s)"
                            % (rig.t, rig.model.reg_dump()))
        if dsg and rig.t > reset_t and dsg_back is None:
            dsg_back = rig.t
    if rig.stats["chg_closes"]:
        problems.append("charge FET closed %d times at -10 degC" % rig.stats["chg_closes"])
    if dsg_back is None or dsg_back - reset_t > 30000:
        problems.append("liveness: the discharge FET (allowed at -10 degC) was not back "
                        "within 30 s of the AFE reset (back at %s)" % (dsg_back,))
    _finish(rig, problems)


def test_cold_lfp_charger_afe_reset_adc_off_results_frozen():
    _cold_reset(adc_on=False, keep_results=True)


def test_cold_lfp_charger_afe_reset_adc_on():
    _cold_reset(adc_on=True, keep_results=False)


# --------------------------------------------------------------------------------------
# a cell above OV while its tap reads 5.2 V (or 0.3 V) on 4 of 5 conversions


def _ov_flicker(tap_mv, tap_cell):
    ramp_t = 20000
    cell = 2

    def script(w, t):
        _steady(w, t, 3300, 25.0, 10000)
        if t >= ramp_t:
            w.mv[cell] = min(3700, 3300 + (t - ramp_t) // 250 * 50)

    def on_step(rig, t):
        if t == ramp_t:
            m = rig.model
            m.tap_cell, m.tap_mv, m.tap_pattern, m.tap_phase = tap_cell, tap_mv, 4, 0

    rig = _rig(script, on_step)
    bound = rig.cfg.cell_ov_delay_ms + h.STEP_MS
    cross = None
    problems = Problems()
    for _ in range(240):  # 60 s
        rig.step()
        if cross is None and rig.world.mv[cell] > rig.cfg.cell_ov_mv + h.VOLT_MARGIN_MV:
            cross = rig.t
        if cross is not None and rig.t - cross >= bound and rig.model.fets()[0]:
            problems.append("t=%d: charge FET on %d ms after the true crossing of cell_ov_mv "
                            "(bound %d ms)" % (rig.t, rig.t - cross, bound))
    _finish(rig, problems)


def test_tap_reads_5v2_four_of_five_cell_above_ov():
    _ov_flicker(5200, 2)  # the tap of the cell that is above OV


def test_tap_reads_0v3_four_of_five_cell_above_ov():
    _ov_flicker(300, 2)


def test_other_tap_reads_5v2_four_of_five_cell_above_ov():
    _ov_flicker(5200, 9)  # another cell's tap flickers while cell 3 is above OV


def test_other_tap_reads_0v3_four_of_five_cell_above_ov():
    _ov_flicker(300, 9)


# --------------------------------------------------------------------------------------
# deep discharge of one cell while its tap flickers


def _deep_uv_flicker(tap_mv, tap_cell):
    ramp_t = 20000
    cell = 6

    def script(w, t):
        _steady(w, t, 3200, 25.0, -30000)
        if t >= ramp_t:
            w.mv[cell] = max(1800, 3200 - (t - ramp_t) // 250 * 100)

    def on_step(rig, t):
        if t == ramp_t:
            m = rig.model
            m.tap_cell, m.tap_mv, m.tap_pattern, m.tap_phase = tap_cell, tap_mv, 4, 0

    rig = _rig(script, on_step)
    c = rig.cfg
    uv_bound = c.cell_uv_delay_ms + h.STEP_MS
    deep_bound = c.cell_deep_uv_delay_ms + h.STEP_MS
    uv_cross = deep_cross = None
    problems = Problems()
    for _ in range(320):  # 80 s
        rig.step()
        v = rig.world.mv[cell]
        if uv_cross is None and v < c.cell_uv_mv - h.VOLT_MARGIN_MV:
            uv_cross = rig.t
        if deep_cross is None and v < c.cell_deep_uv_mv - h.VOLT_MARGIN_MV:
            deep_cross = rig.t
        chg, dsg = rig.model.fets()
        if uv_cross is not None and rig.t - uv_cross >= uv_bound and dsg:
            problems.append("t=%d: discharge FET on %d ms after the true crossing of "
                            "cell_uv_mv (bound %d ms)" % (rig.t, rig.t - uv_cross, uv_bound))
        if deep_cross is not None and rig.t - deep_cross >= deep_bound and (chg or dsg):
            problems.append("t=%d: FET on (chg=%d dsg=%d) %d ms after the true crossing of "
                            "cell_deep_uv_mv (bound %d ms)" % (rig.t, chg, dsg,
                                                              rig.t - deep_cross, deep_bound))
    _finish(rig, problems)


def test_deep_uv_tap_reads_0v3_four_of_five():
    _deep_uv_flicker(300, 6)  # the tap of the deeply discharged cell


def test_deep_uv_tap_reads_5v2_four_of_five():
    _deep_uv_flicker(5200, 6)


def test_deep_uv_other_tap_reads_0v3_four_of_five():
    _deep_uv_flicker(300, 12)


# --------------------------------------------------------------------------------------
# register upsets and resets in a quiet world: FETs off in time, the AFE re-initialised,
# FETs back afterwards


UPSETS = (
    (afe.SYS_CTRL1, 4, "ADC_EN"),
    (afe.SYS_CTRL1, 3, "TEMP_SEL"),
    (afe.SYS_CTRL2, 6, "CC_EN"),
    (afe.SYS_CTRL2, 7, "DELAY_DIS"),
    (afe.PROTECT1, 7, "RSNS"),
    (afe.PROTECT2, 3, "OCD_T3"),
    (afe.PROTECT3, 5, "OV_D1"),
    (afe.OV_TRIP, 7, "OV_T7"),
    (afe.UV_TRIP, 6, "UV_T6"),
    (afe.CC_CFG, 0, "CC_CFG0"),
)


def _upset_case(action, label, fast):
    at = 20000

    def script(w, t):
        _steady(w, t, 3300, 25.0, 3000)

    def on_step(rig, t):
        if t == at:
            action(rig.model)

    rig = _rig(script, on_step)
    problems = Problems()
    fixed = None
    back = None
    on_first = None
    on_steps = 0
    off_by = at if fast else at + h.CONFIG_CHECK_MS
    for _ in range(240):  # 60 s
        rig.step()
        t = rig.t
        chg, dsg = rig.model.fets()
        if t >= off_by and fixed is None and (chg or dsg):
            on_steps += 1
            if on_first is None:
                on_first = (t, chg, dsg)
        fast_l, slow_l = h.config_mismatch(rig.model, rig.cfg, rig.board.N_TEMPS,
                                           rig.board.SHUNT_UOHM)
        if t >= at and fixed is None and not fast_l and not slow_l:
            fixed = t
        if fixed is not None and back is None and chg and dsg:
            back = t
    if on_first is not None:
        problems.append("%s at t=%d: FETs chg=%d dsg=%d at t=%d (%d ms after it; bound %d ms), "
                        "on in %d steps before the AFE was whole again"
                        % (label, at, on_first[1], on_first[2], on_first[0],
                           on_first[0] - at, off_by - at, on_steps))
    if fixed is None or fixed - at > h.CONFIG_CHECK_MS + 1000:
        problems.append("%s: the AFE was not re-initialised within %d ms (at %s); %s"
                        % (label, h.CONFIG_CHECK_MS + 1000, fixed, rig.model.reg_dump()))
    elif back is None or back - at > 30000:
        problems.append("%s: liveness: FETs not back within 30 s of it (at %s)" % (label, back))
    _finish(rig, problems)


def test_register_upsets_each_detected_and_repaired():
    failures = []
    for reg, bit, name in UPSETS:
        fast = name in ("ADC_EN", "TEMP_SEL", "CC_EN")
        try:
            _upset_case(lambda m, reg=reg, bit=bit: m.upset(reg, bit),
                        "upset %s (reg %02X bit %d)" % (name, reg, bit), fast)
        except AssertionError as e:
            failures.append(str(e)[:700])
    assert not failures, "\n".join(failures)


def test_afe_reset_quiet_pack_both_variants():
    failures = []
    for adc_on in (False, True):
        for keep in (False, True):
            try:
                _upset_case(lambda m, a=adc_on, k=keep: m.power_on(adc_on=a, keep_results=k),
                            "reset adc_%s results_%s" % ("on" if adc_on else "off",
                                                         "kept" if keep else "zeroed"), True)
            except AssertionError as e:
                failures.append(str(e)[:700])
    assert not failures, "\n".join(failures)


# --------------------------------------------------------------------------------------
# hardware limits changed at runtime (the REPL path) reach the AFE


def test_runtime_hw_limit_change_reaches_afe():
    from bms.diag import Diag

    at = 20000
    rig = _rig(lambda w, t: _steady(w, t, 3300, 25.0, 0))
    problems = Problems()
    diag = Diag(rig.bms, out=lambda *a: None)
    applied = None
    for _ in range(160):  # 40 s
        rig.step()
        t = rig.t
        if t == at:
            diag.set("hw_cell_ov_mv", 3700)
            diag.set("hw_cell_uv_mv", 2600)
        if t > at and applied is None:
            _, slow = h.config_mismatch(rig.model, rig.cfg, rig.board.N_TEMPS,
                                        rig.board.SHUNT_UOHM)
            if not [s for s in slow if s.startswith("OV_TRIP") or s.startswith("UV_TRIP")]:
                applied = t
    if rig.cfg.hw_cell_ov_mv != 3700:
        problems.append("the REPL change was not accepted")
    if applied is None or applied - at > h.CONFIG_CHECK_MS:
        g, o = rig.model.gain_uv, rig.model.offset_mv
        problems.append("hw_cell_ov_mv 3700 / hw_cell_uv_mv 2600 set at t=%d did not reach the "
                        "AFE within %d ms: OV_TRIP=%02X (%.0f mV) UV_TRIP=%02X (%.0f mV)" % (
                            at, h.CONFIG_CHECK_MS, rig.model.regs[afe.OV_TRIP],
                            afe.ov_trip_mv(rig.model.regs[afe.OV_TRIP], g, o),
                            rig.model.regs[afe.UV_TRIP],
                            afe.uv_trip_mv(rig.model.regs[afe.UV_TRIP], g, o)))
    _finish(rig, problems)


# --------------------------------------------------------------------------------------
# restoring the FETs after XREADY must not re-close a FET while the hardware trip that opened
# it is still reported (I9): the body-diode case asks for the FET while the trip stands


def _restore_gate(chg_side):
    def script(w, t):
        _steady(w, t, 3300, 25.0, 0)
        if t >= 10000:
            if chg_side:  # a cell above the hardware OV limit; the pack discharges at 5 A
                w.mv[1] = min(3800, 3300 + (t - 10000) // 250 * 50)
            else:  # a cell below the hardware UV limit; the pack is charged at 5 A
                w.mv[1] = max(2400, 3300 - (t - 10000) // 250 * 50)
        if t >= 16000:
            w.i_req = -5000 if chg_side else 5000

    def on_step(rig, t):
        if t == 24000:
            rig.model.xready(t, 500)

    rig = _rig(script, on_step)
    rig.run(240)  # 60 s: hardware trip from ~12-16 s on, XREADY at 24 s, released >= 27 s
    st = rig.model.regs[afe.SYS_STAT]
    problems = Problems()
    if not st & (afe.ST_OV if chg_side else afe.ST_UV):
        problems.append("setup: the hardware %s trip is not standing (SYS_STAT=%02X)"
                        % ("OV" if chg_side else "UV", st))
    _finish(rig, problems)


def test_xready_restore_keeps_charge_fet_off_during_hw_ov():
    _restore_gate(True)


def test_xready_restore_keeps_discharge_fet_off_during_hw_uv():
    _restore_gate(False)


# --------------------------------------------------------------------------------------
# a BQ76940 carrying 10 cells at the top of charge: the balancer stays on the DS input map


def test_bq76940_10_cells_balancing_at_top():
    def script(w, t):
        _steady(w, t, 3300, 25.0, 2000)
        for i in range(w.cells):
            w.mv[i] = 3400 + (i * 7) % 40

    for cells in (9, 10):
        rig = _rig(script, board_kw={"CELLS": cells})
        rig.run(480)  # 120 s
        _finish(rig, [])
