#!/usr/bin/env python3
"""Turn a simulator or board CSV log into a PNG chart.

    python tools/plot.py build/sim/sim.csv -o build/sim/sim.png

Panels along one time axis: cell voltages (min/max band and every cell), SOC against true
SOC, current with the charge/discharge limits, temperatures, and FET states with the active
faults. Columns a log does not have (a board log has no true_* columns) are left out.
"""

import argparse
import csv
import json
import sys


def read_log(path):
    config = {}
    rows = []
    with open(path, newline="") as f:
        first = f.readline()
        if first.startswith("# config: "):
            config = json.loads(first[len("# config: "):])
        else:
            f.seek(0)
        for row in csv.DictReader(f):
            rows.append(row)
    return config, rows


def column(rows, name, scale=1.0):
    out = []
    for r in rows:
        v = r.get(name, "")
        try:
            out.append(float(v) * scale)
        except ValueError:
            out.append(float("nan"))
    return out


def plot(path, out, title=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config, rows = read_log(path)
    if not rows:
        raise SystemExit("no rows in " + path)
    hours = column(rows, "t_s", 1 / 3600)
    cells = sorted(
        [k for k in rows[0] if k.startswith("cell") and k.endswith("_mv") and k[4:-3].isdigit()],
        key=lambda k: int(k[4:-3]),
    )
    fig, ax = plt.subplots(5, 1, figsize=(12, 14), sharex=True)
    # 1. cells
    for k in cells:
        ax[0].plot(hours, column(rows, k, 1e-3), lw=0.6)
    if "cell_ov_mv" in config:
        ax[0].axhline(config["cell_ov_mv"] / 1000, color="r", ls="--", lw=0.8, label="OV limit")
        ax[0].axhline(config["cell_uv_mv"] / 1000, color="m", ls="--", lw=0.8, label="UV limit")
        ax[0].legend(loc="upper right", fontsize=8)
    ax[0].set_ylabel("cell V")
    # 2. SOC
    ax[1].plot(hours, column(rows, "soc_pct"), label="SOC (BMS)")
    if "true_soc_pct" in rows[0]:
        ax[1].plot(hours, column(rows, "true_soc_pct"), label="true SOC", ls="--")
    ax[1].set_ylabel("SOC %")
    ax[1].legend(loc="upper right", fontsize=8)
    # 3. current and limits
    ax[2].plot(hours, column(rows, "current_ma", 1e-3), label="current", lw=0.7)
    if "ccl_ma" in rows[0]:
        ax[2].plot(hours, column(rows, "ccl_ma", 1e-3), label="CCL", lw=0.8)
        ax[2].plot(hours, column(rows, "dcl_ma", -1e-3), label="-DCL", lw=0.8)
    ax[2].set_ylabel("A (+ = charge)")
    ax[2].legend(loc="upper right", fontsize=8)
    # 4. temperatures
    ax[3].plot(hours, column(rows, "t_max_c"), label="max")
    ax[3].plot(hours, column(rows, "t_min_c"), label="min")
    if "true_temp_c" in rows[0]:
        ax[3].plot(hours, column(rows, "true_temp_c"), label="true", ls=":")
    ax[3].set_ylabel("degC")
    ax[3].legend(loc="upper right", fontsize=8)
    # 5. FETs and faults
    ax[4].step(hours, [v + 2.2 for v in column(rows, "chg_fet")], label="CHG FET", where="post")
    ax[4].step(hours, column(rows, "dsg_fet"), label="DSG FET", where="post")
    names = sorted({n for r in rows for n in r.get("faults", "").split("|") if n})
    for i, name in enumerate(names):
        ys = [(-1.2 - 0.6 * i) if name in r.get("faults", "").split("|") else float("nan")
              for r in rows]
        ax[4].plot(hours, ys, lw=4, label=name)
    ax[4].set_yticks([])
    ax[4].set_ylabel("FETs / faults")
    ax[4].legend(loc="upper right", fontsize=7, ncol=3)
    ax[4].set_xlabel("hours")
    fig.suptitle(title or path)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("log")
    p.add_argument("-o", "--out", default=None)
    p.add_argument("--title", default=None)
    a = p.parse_args(argv)
    out = a.out or a.log.rsplit(".", 1)[0] + ".png"
    plot(a.log, out, a.title)
    print("chart:   " + out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
