"""Generate the ground-truth traces in tools/traces/ with PyBaMM (offline, run once).

Not part of the firmware and not run by `make`: it needs PyBaMM, which is not in the
project's .venv. Procedure (README, "State estimation"):

    python3 -m venv /tmp/pybamm
    /tmp/pybamm/bin/pip install pybamm==26.10.1.1
    PYBAMM_DISABLE_TELEMETRY=true /tmp/pybamm/bin/python tools/gen_traces.py

Cells and model: SPMe with a lumped thermal model, IDAKLU solver.
  NMC = PyBaMM "Chen2020" (LG M50, 2.5-4.2 V).
  LFP = PyBaMM "Prada2013" (A123 26650, 2.0-3.6 V) with the thermal keys copied from
        Chen2020 and a one-state hysteresis on the positive electrode (OCP +/- 10 mV).
True SOC = (x - x0) / (x100 - x0) of the average negative-particle stoichiometry, with
x0/x100 from PyBaMM's min/max stoichiometry helper. Current sign in the CSVs: + = charge.

Traces (CSV columns t_s,current_A,voltage_V,ocv_V,soc_true,temp_C):
  <chem>_days.csv    4 days of a seeded home-storage profile (house load - PV), full
                     charge (CC then CV to a C/30 tail) on days 1 and 3, partial days 2, 4.
  <chem>_cycles.csv  two full CC-CV charge / 0.3 C discharge cycles with 1 h rests.
"""
import math
import os
import random
import sys

os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")

import numpy as np  # noqa: E402
import pybamm  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "traces")
STEP_S = 20  # output resolution of the committed files

CHEMS = {
    "nmc": {"set": "Chen2020", "vmax": 4.2, "vmin": 2.5, "vdsg": 2.6},
    "lfp": {"set": "Prada2013", "vmax": 3.6, "vmin": 2.0, "vdsg": 2.1},
}


def params(chem):
    c = CHEMS[chem]
    pv = pybamm.ParameterValues(c["set"])
    options = {"thermal": "lumped"}
    if chem == "lfp":
        chen = pybamm.ParameterValues("Chen2020")
        missing = {k: chen[k] for k in chen.keys() if k not in pv.keys()}
        pv.update(missing, check_already_exists=False)
        u = pv["Positive electrode OCP [V]"]
        h = 0.010

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
    return pv, options


def home_day(rng, cap_c, pv_peak, t0_h, t1_h, dt=10):
    """Net battery current (A, PyBaMM sign: + = discharge) over [t0_h, t1_h) of a day."""
    spikes = []
    for _ in range(14):
        start = rng.uniform(6, 23)
        spikes.append((start, start + rng.uniform(2, 30) / 60, rng.uniform(0.03, 0.18)))
    clouds = []
    for _ in range(6):
        start = rng.uniform(9, 16)
        clouds.append((start, start + rng.uniform(5, 40) / 60, rng.uniform(0.2, 0.6)))
    rows = []
    n = int((t1_h - t0_h) * 3600 / dt)
    for k in range(n + 1):
        h = t0_h + k * dt / 3600
        load = 0.012 + 0.021 * math.exp(-0.5 * ((h - 19.5) / 1.5) ** 2)
        load += 0.012 * math.exp(-0.5 * ((h - 7.5) / 0.7) ** 2)
        for a, b, amp in spikes:
            if a <= h < b:
                load += amp
        pv = 0.0
        if 7 <= h <= 19:
            pv = pv_peak * math.sin(math.pi * (h - 7) / 12) ** 2
            for a, b, f in clouds:
                if a <= h < b:
                    pv *= f
        i = max(-0.5, min(0.5, load - pv))
        rows.append((k * dt, i * cap_c))
    return np.array(rows)


def run(chem, steps, soc0):
    pv, options = params(chem)
    model = pybamm.lithium_ion.SPMe(options)
    exp = pybamm.Experiment(steps, period="%d seconds" % STEP_S)
    sim = pybamm.Simulation(model, parameter_values=pv, experiment=exp,
                            solver=pybamm.IDAKLUSolver())
    sol = sim.solve(initial_soc=soc0)
    x0, x100, _, _ = pybamm.lithium_ion.get_min_max_stoichiometries(pv)
    t = sol["Time [s]"].entries
    i = -sol["Current [A]"].entries
    v = sol["Voltage [V]"].entries
    ocv = sol["Bulk open-circuit voltage [V]"].entries
    x = sol["Average negative particle stoichiometry"].entries
    temp = sol["Volume-averaged cell temperature [C]"].entries
    soc = (x - x0) / (x100 - x0)
    return t, i, v, ocv, soc, temp


def write(name, cols):
    t, i, v, ocv, soc, temp = cols
    path = os.path.join(OUT, name)
    last = -1.0
    n = 0
    with open(path, "w") as f:
        f.write("t_s,current_A,voltage_V,ocv_V,soc_true,temp_C\n")
        for k in range(len(t)):
            if t[k] < last + STEP_S - 0.5 and k != len(t) - 1:
                continue  # keep roughly STEP_S spacing (experiment steps add extra points)
            last = t[k]
            f.write("%.1f,%.5f,%.5f,%.5f,%.5f,%.2f\n"
                    % (t[k], i[k], v[k], ocv[k], soc[k], temp[k]))
            n += 1
    print("wrote", path, n, "rows, soc %.3f..%.3f" % (float(np.min(soc)), float(np.max(soc))))


def days(chem):
    c = CHEMS[chem]
    pv, _ = params(chem)
    cap = pv["Nominal cell capacity [A.h]"]
    rng = random.Random(1)
    steps = []
    for day in range(4):
        full = day in (0, 2)
        morning = home_day(rng, cap, 0.17, 0, 7)
        steps.append(pybamm.step.current(morning, termination="< %.2f V" % c["vmin"]))
        pv_peak = 0.40 if full else 0.17
        midday = home_day(rng, cap, pv_peak, 7, 17)
        steps.append(pybamm.step.current(midday, termination="> %.2f V" % c["vmax"]))
        if full:
            steps.append("Charge at C/5 until %.2f V" % c["vmax"])
            steps.append("Hold at %.2f V until C/30" % c["vmax"])
            steps.append("Rest for 30 minutes")
        evening = home_day(rng, cap, 0.17, 17, 24)
        if full:
            evening[:, 1] = np.maximum(evening[:, 1], 0.0)  # full: the inverter stops charging
        steps.append(pybamm.step.current(evening, termination="< %.2f V" % c["vmin"]))
    write(chem + "_days.csv", run(chem, steps, 0.5))


def cycles(chem):
    c = CHEMS[chem]
    steps = []
    for _ in range(2):
        steps += [
            "Charge at 0.3C until %.2f V" % c["vmax"],
            "Hold at %.2f V until C/30" % c["vmax"],
            "Rest for 1 hour",
            "Discharge at 0.3C until %.2f V" % c["vdsg"],
            "Rest for 1 hour",
        ]
    steps += ["Charge at 0.3C until %.2f V" % c["vmax"], "Hold at %.2f V until C/30" % c["vmax"],
              "Rest for 1 hour"]
    write(chem + "_cycles.csv", run(chem, steps, 0.5))


def main():
    os.makedirs(OUT, exist_ok=True)
    which = sys.argv[1:] or ["nmc", "lfp"]
    for chem in which:
        days(chem)
        cycles(chem)


if __name__ == "__main__":
    main()
