"""Generate the ground-truth traces in tools/traces/ with PyBaMM (offline, run by hand).

Not part of the firmware and never run by `make`: it needs PyBaMM, which is not in the
project's .venv. Procedure (README, "Accuracy"):

    python3 -m venv /tmp/pybamm
    /tmp/pybamm/bin/pip install pybamm==26.10.1.1
    PYBAMM_DISABLE_TELEMETRY=true /tmp/pybamm/bin/python tools/gen_traces.py [NAME ...]

Model: SPMe with a lumped thermal model, IDAKLU solver. Cells (PyBaMM parameter sets):
  Prada2013   LFP (A123 26650 model, 2.0-3.6 V), thermal keys copied from Chen2020, one-state
              hysteresis on the positive electrode (OCP -/+ H mV for lithiation/delithiation)
  Chen2020    NMC811 / graphite-SiOx (LG M50, 2.5-4.2 V)
  Mohtat2020  NMC532 / graphite (2.8-4.2 V)
  Ecker2015   NMC / graphite (Kokam, 2.5-4.2 V)
Aged cells: the active-material volume fraction of both electrodes scaled down (loss of
active material), which lowers the capacity to the stated fraction of the fresh cell.

True SOC = (x - x0) / (x100 - x0) of the average negative-particle stoichiometry, x0/x100 from
PyBaMM's min/max stoichiometry helper for that (possibly aged) cell: 0 % and 100 % are the
equilibrium cut-off voltages. Current sign in the CSVs: + = charge.

Columns: t_s, current_A, voltage_V, soc_true (0..1), temp_C. The solution is taken every
2 s and thinned: a row is kept every 30 s, and at least every 2 s while the current or the
voltage moves fast (charge ends, CV phases, steps), so the chargers' short phases survive.

Besides the traces, ocv_<set>.csv holds each model cell's equilibrium OCV (41 points): the
"own table" a user who measured the cell would install (bench-soc's "own" rows).
"""
import math
import os
import random
import sys

os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")

import numpy as np  # noqa: E402
import pybamm  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "traces")
PERIOD_S = 2
KEEP_S = 30

CELLS = {
    "Prada2013": {"vmax": 3.6, "vmin": 2.0},
    "Chen2020": {"vmax": 4.2, "vmin": 2.5},
    "Mohtat2020": {"vmax": 4.2, "vmin": 2.8},
    "Ecker2015": {"vmax": 4.2, "vmin": 2.5},
}


def params(cell, hyst_mv=10.0, aged=1.0):
    pv = pybamm.ParameterValues(cell)
    options = {"thermal": "lumped"}
    chen = pybamm.ParameterValues("Chen2020")
    missing = {k: chen[k] for k in chen.keys() if k not in pv.keys()}
    pv.update(missing, check_already_exists=False)
    if cell == "Prada2013":
        u = pv["Positive electrode OCP [V]"]
        h = hyst_mv / 1000.0

        def lith(sto):
            return u(sto) - h

        def delith(sto):
            return u(sto) + h

        pv.update(
            {
                "Positive electrode lithiation OCP [V]": lith,
                "Positive electrode delithiation OCP [V]": delith,
                "Positive particle hysteresis decay rate": 10.0,
                "Positive particle lithiation hysteresis decay rate": 10.0,
                "Positive particle delithiation hysteresis decay rate": 10.0,
                "Positive particle hysteresis switching factor": 1.0,
                "Initial hysteresis state in positive electrode": 0.0,
            },
            check_already_exists=False,
        )
        options["open-circuit potential"] = ("single", "one-state hysteresis")
    if aged != 1.0:
        for k in ("Positive electrode active material volume fraction",
                  "Negative electrode active material volume fraction"):
            pv[k] = pv[k] * aged
    return pv, options


def home(rng, cap, t0_h, t1_h, pv_peak, load=1.0, dt=10):
    """Net battery current (A, PyBaMM sign: + = discharge) over [t0_h, t1_h) of a day:
    house load (base, morning and evening peaks, appliance spikes) minus PV (sin^2 bell with
    cloud passages), clipped to +/- 0.5 C."""
    spikes = []
    for _ in range(14):
        s = rng.uniform(6, 23)
        spikes.append((s, s + rng.uniform(2, 30) / 60, rng.uniform(0.03, 0.18)))
    clouds = []
    for _ in range(6):
        s = rng.uniform(9, 16)
        clouds.append((s, s + rng.uniform(5, 40) / 60, rng.uniform(0.2, 0.6)))
    rows = []
    n = int((t1_h - t0_h) * 3600 / dt)
    for k in range(n + 1):
        h = t0_h + k * dt / 3600
        ld = 0.012 + 0.021 * math.exp(-0.5 * ((h - 19.5) / 1.5) ** 2)
        ld += 0.012 * math.exp(-0.5 * ((h - 7.5) / 0.7) ** 2)
        for a, b, amp in spikes:
            if a <= h < b:
                ld += amp
        ld *= load
        p = 0.0
        if 7 <= h <= 19:
            p = pv_peak * math.sin(math.pi * (h - 7) / 12) ** 2
            for a, b, f in clouds:
                if a <= h < b:
                    p *= f
        rows.append((k * dt, max(-0.5, min(0.5, ld - p)) * cap))
    return np.array(rows)


def charger(shape, vc, cap):
    """Experiment steps of one charger, from wherever the PV left the cell."""
    c = cap
    if shape == "cccv":  # CC at C/2, short CV to a C/30 tail
        return ["Charge at %.4f A until %.3f V" % (c / 2, vc),
                "Hold at %.3f V until %.4f A" % (vc, c / 30)]
    if shape == "cccv_c20":  # CC at C/2, CV to a C/20 tail
        return ["Charge at %.4f A until %.3f V" % (c / 2, vc),
                "Hold at %.3f V until %.4f A" % (vc, c / 20)]
    if shape == "cccv_long":  # CC at C/5, long CV to a C/50 tail
        return ["Charge at %.4f A until %.3f V" % (c / 5, vc),
                "Hold at %.3f V until %.4f A" % (vc, c / 50)]
    if shape == "cvl_stop":  # an inverter that stops at CVL and resumes after a pause
        steps = []
        for _ in range(3):
            steps += ["Charge at %.4f A until %.3f V" % (c / 3, vc), "Rest for 15 minutes"]
        return steps
    if shape == "float":  # CC, 30 min absorption, then float for 3 h
        vf = {3.55: 3.375, 3.5: 3.375, 4.1: 4.0, 4.19: 4.05}.get(round(vc, 2), vc - 0.1)
        return ["Charge at %.4f A until %.3f V" % (c / 4, vc),
                "Hold at %.3f V for 30 minutes" % vc,
                "Hold at %.3f V for 3 hours" % vf]
    raise ValueError(shape)


def days(cell, plan, vc, hyst_mv=10.0, aged=1.0, soc0=0.5, seed=1, vcut=None):
    """plan: one entry per day: (pv_peak, charger shape or None, load factor)."""
    c = CELLS[cell]
    pv, _ = params(cell, hyst_mv, aged)
    cap = pv["Nominal cell capacity [A.h]"] * aged
    rng = random.Random(seed)
    vcut = vcut or c["vmin"] + 0.1
    steps = []
    for pv_peak, shape, load in plan:
        morning = home(rng, cap, 0, 7, 0.17, load)
        steps.append(pybamm.step.current(morning, termination="< %.3f V" % vcut))
        midday = home(rng, cap, 7, 17, pv_peak, load)
        if shape:
            steps.append(pybamm.step.current(midday, termination="> %.3f V" % (vc - 0.005)))
            steps += charger(shape, vc, cap)
        else:
            steps.append(pybamm.step.current(midday, termination=[
                "> %.3f V" % (vc - 0.005), "< %.3f V" % vcut]))
        evening = home(rng, cap, 17, 24, 0.17, load)
        if shape:
            evening[:, 1] = np.maximum(evening[:, 1], 0.0)  # full: PV covers, no charge
        steps.append(pybamm.step.current(evening, termination=[
            "< %.3f V" % vcut, "> %.3f V" % (vc - 0.005)]))
    return run(cell, steps, soc0, hyst_mv, aged), cap


def cycles(cell, vc, aged=1.0, hyst_mv=10.0):
    c = CELLS[cell]
    pv, _ = params(cell, hyst_mv, aged)
    cap = pv["Nominal cell capacity [A.h]"] * aged
    vd = c["vmin"] + 0.1
    steps = []
    for _ in range(2):
        steps += ["Charge at %.4f A until %.3f V" % (0.3 * cap, vc),
                  "Hold at %.3f V until %.4f A" % (vc, cap / 30), "Rest for 1 hour",
                  "Discharge at %.4f A until %.3f V" % (0.3 * cap, vd), "Rest for 1 hour"]
    steps += ["Charge at %.4f A until %.3f V" % (0.3 * cap, vc),
              "Hold at %.3f V until %.4f A" % (vc, cap / 30), "Rest for 1 hour"]
    return run(cell, steps, 0.5, hyst_mv, aged), cap


def run(cell, steps, soc0, hyst_mv, aged):
    pv, options = params(cell, hyst_mv, aged)
    model = pybamm.lithium_ion.SPMe(options)
    exp = pybamm.Experiment(steps, period="%d seconds" % PERIOD_S)
    sim = pybamm.Simulation(model, parameter_values=pv, experiment=exp,
                            solver=pybamm.IDAKLUSolver())
    sol = sim.solve(initial_soc=soc0)
    x0, x100, _, _ = pybamm.lithium_ion.get_min_max_stoichiometries(pv)
    t = sol["Time [s]"].entries
    i = -sol["Current [A]"].entries
    v = sol["Voltage [V]"].entries
    x = sol["Average negative particle stoichiometry"].entries
    temp = sol["Volume-averaged cell temperature [C]"].entries
    return t, i, v, (x - x0) / (x100 - x0), temp


def write(name, cols, cap):
    t, i, v, soc, temp = cols
    path = os.path.join(OUT, name)
    n = 0
    last_t = -1e9
    last_i = last_v = 0.0
    with open(path, "w") as f:
        f.write("t_s,current_A,voltage_V,soc_true,temp_C\n")
        for k in range(len(t)):
            if k > 0 and t[k] <= t[k - 1]:
                continue
            fast = abs(i[k] - last_i) > 0.01 * cap or abs(v[k] - last_v) > 0.004
            if t[k] - last_t < KEEP_S and not fast and k != len(t) - 1:
                continue
            last_t, last_i, last_v = t[k], i[k], v[k]
            f.write("%.0f,%.4f,%.4f,%.5f,%.2f\n" % (t[k], i[k], v[k], soc[k], temp[k]))
            n += 1
    print("wrote %s: %d rows, %.1f h, soc %.3f..%.3f, capacity %.4f Ah" % (
        path, n, t[-1] / 3600, float(np.min(soc)), float(np.max(soc)), cap))


def ocv_table(cell):
    pv, _ = params(cell, 0.0)
    x0, x100, y100, y0 = pybamm.lithium_ion.get_min_max_stoichiometries(pv)
    up = pv["Positive electrode OCP [V]"]
    un = pv["Negative electrode OCP [V]"]
    t = pv["Reference temperature [K]"]
    path = os.path.join(OUT, "ocv_%s.csv" % cell)
    with open(path, "w") as f:
        f.write("soc,ocv_V\n")
        for k in range(41):
            s = k / 40
            x = x0 + s * (x100 - x0)
            y = y0 + s * (y100 - y0)
            e = pybamm.Scalar(0)
            v = (up(pybamm.Scalar(y), pybamm.Scalar(t)) if _takes_t(up) else up(pybamm.Scalar(y)))
            w = (un(pybamm.Scalar(x), pybamm.Scalar(t)) if _takes_t(un) else un(pybamm.Scalar(x)))
            val = (v - w + e).evaluate()
            f.write("%.3f,%.5f\n" % (s, float(np.asarray(val).ravel()[0])))
    print("wrote", path)


def _takes_t(fn):
    try:
        return fn.__code__.co_argcount >= 2
    except AttributeError:
        return False


def trace(name):
    if name == "lfp_c2_shortcv":  # the charger: C/2 CC-CV to 3.55 V, short CV to C/30
        plan = [(0.45, "cccv", 1.0), (0.17, None, 1.0), (0.45, "cccv", 1.0)]
        cols, cap = days("Prada2013", plan, 3.55)
    elif name == "lfp_cvl_stop":  # an inverter that stops at CVL 3.50 V (no CV), hyst 15 mV
        plan = [(0.45, "cvl_stop", 1.0), (0.2, None, 1.0), (0.45, "cvl_stop", 1.0)]
        cols, cap = days("Prada2013", plan, 3.50, hyst_mv=15.0, seed=2)
    elif name == "lfp_float":  # absorption 30 min at 3.50 V then float 3.375 V, hyst 5 mV
        plan = [(0.45, "float", 1.0), (0.17, None, 1.2), (0.45, "float", 1.0)]
        cols, cap = days("Prada2013", plan, 3.50, hyst_mv=5.0, seed=3)
    elif name == "lfp_longcv":  # C/5 CC-CV to 3.60 V, long CV to C/50
        plan = [(0.45, "cccv_long", 1.0), (0.17, None, 1.0), (0.45, "cccv_long", 1.0)]
        cols, cap = days("Prada2013", plan, 3.60, seed=4)
    elif name == "nmc_chen_419":  # the NMC: charger at 4.19 V, C/2, tail C/20
        plan = [(0.45, "cccv_c20", 1.0), (0.17, None, 1.0), (0.45, "cccv_c20", 1.0)]
        cols, cap = days("Chen2020", plan, 4.19, seed=5)
    elif name == "nmc_mohtat_410":  # NMC532 charged to 4.10 V only (longevity), long CV
        plan = [(0.45, "cccv_long", 1.0), (0.17, None, 1.0), (0.45, "cccv_long", 1.0)]
        cols, cap = days("Mohtat2020", plan, 4.10, seed=6, vcut=3.0)
    elif name == "nmc_ecker_float":  # Kokam NMC, 4.19 V absorption then float 4.05 V
        plan = [(0.45, "float", 1.0), (0.17, None, 1.0), (0.45, "float", 1.0)]
        cols, cap = days("Ecker2015", plan, 4.19, seed=7)
    elif name == "lfp_aged_cycles":  # 87 % capacity, two full cycles (0.3 C, CC-CV 3.6 V)
        cols, cap = cycles("Prada2013", 3.60, aged=0.87)
    elif name == "nmc_aged_cycles":
        cols, cap = cycles("Chen2020", 4.20, aged=0.87)
    elif name == "lfp_aged_home":  # 88 %: a full charge, then a dull day drained to the cut-off
        plan = [(0.45, "cccv", 1.0), (0.05, None, 2.5), (0.30, None, 1.0)]
        cols, cap = days("Prada2013", plan, 3.55, aged=0.88, seed=8, vcut=2.8)
    elif name == "nmc_aged_home":
        plan = [(0.45, "cccv_c20", 1.0), (0.05, None, 2.5), (0.30, None, 1.0)]
        cols, cap = days("Chen2020", plan, 4.19, aged=0.88, seed=9, vcut=3.1)
    else:
        raise SystemExit("unknown trace " + name)
    write(name + ".csv", cols, cap)


TRACES = ("lfp_c2_shortcv", "lfp_cvl_stop", "lfp_float", "lfp_longcv", "nmc_chen_419",
          "nmc_mohtat_410", "nmc_ecker_float", "lfp_aged_cycles", "nmc_aged_cycles",
          "lfp_aged_home", "nmc_aged_home")


def main():
    os.makedirs(OUT, exist_ok=True)
    which = sys.argv[1:] or list(TRACES) + ["ocv"]
    for name in which:
        if name == "ocv":
            for cell in CELLS:
                ocv_table(cell)
        else:
            trace(name)


if __name__ == "__main__":
    main()
