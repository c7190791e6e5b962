#!/usr/bin/env python3
"""plot.py: a chart (PNG) of a BMS log from the simulator or from a board, read at a glance.

    python tools/plot.py build/sim/cell-ov-20250101-120000/sim.csv        -> sim.png next to it
    python tools/plot.py board.csv -o board.png --html board.html         (bmsctl.py log)

Panels along one time axis: cell voltages (with the OV/UV limits and balancing shaded), SOC
(with its uncertainty, the true SOC of a simulation and the SOC cap in force), current (scaled
to the current; the charge/discharge limits are drawn but do not set the scale), temperatures
(at least a 10 degC span), and the status lanes: CHG and DSG FET as on/off bands, balancing,
heater, fan, charge mode, inverter, one lane per fault and warning that occurred, and the
events as marks. The title names the scenario (from the run's summary.json) and the pack
(from the log's configuration). --html also writes a single-file report: the chart, the
summary, the scenario's expectations and the events.

Options: -o/--out FILE.png (default: the log's name with .png), --title TEXT, --summary
FILE.json (default: summary.json next to the log, when it belongs to this log), --html FILE.
Columns a log does not have (a board log has no true_* columns) are left out.
Exit status: 0 chart written; 2 a mistake (a missing file, a file that is not a BMS log, an
output that cannot be written): one line on stderr says which.
"""

import argparse
import csv
import json
import os
import sys

FET_ON = "#2ca02c"
FET_OFF = "#d62728"
MODE_COLORS = {"bulk": "#1f77b4", "absorption": "#ff7f0e", "float": "#9467bd"}
MAX_LABELS = 40


class LogError(Exception):
    pass


def read_log(path):
    """(config dict, rows as dicts). LogError when the file is not a BMS log."""
    if os.path.isdir(path):
        raise LogError("%s is a folder, not a log (give the sim.csv in it)" % path)
    try:
        f = open(path, newline="", encoding="utf-8")
    except OSError as e:
        raise LogError("cannot read %s (%s)" % (path, e.strerror or e)) from None
    config = {}
    try:
        with f:
            first = f.readline()
            if first.startswith("# config: "):
                try:
                    config = json.loads(first[len("# config: "):])
                except ValueError:
                    raise LogError("%s: the '# config:' line is not JSON" % path) from None
            else:
                f.seek(0)
            reader = csv.DictReader(f)
            fields = reader.fieldnames or []
            if "t_s" not in fields or not ("current_ma" in fields or "cell_min_mv" in fields):
                raise LogError("%s is not a BMS log: no t_s/current_ma columns (plot.py reads the "
                               "CSV of tools/sim.py or of bmsctl.py log)" % path)
            rows = [r for r in reader if r.get("t_s") not in (None, "")]
    except UnicodeDecodeError:
        raise LogError("%s is not a BMS log (not text)" % path) from None
    if not rows:
        raise LogError("%s has a header but no rows" % path)
    _decode_masks(rows)
    if not config:
        side = os.path.splitext(path)[0] + ".config.json"
        if os.path.exists(side):
            try:
                with open(side) as fh:
                    config = json.load(fh)
            except (OSError, ValueError):
                config = {}
    return config, rows


def find_summary(path, explicit=None):
    if explicit:
        try:
            with open(explicit) as fh:
                return json.load(fh)
        except OSError as e:
            raise LogError("cannot read %s (%s)" % (explicit, e.strerror or e)) from None
        except ValueError:
            raise LogError("%s is not a summary (not JSON)" % explicit) from None
    cand = os.path.join(os.path.dirname(os.path.abspath(path)), "summary.json")
    if not os.path.exists(cand):
        return {}
    try:
        with open(cand) as fh:
            s = json.load(fh)
    except (OSError, ValueError):
        return {}
    log = s.get("log") or ""
    if log and os.path.abspath(log) != os.path.abspath(path):
        return {}
    return s


def _decode_masks(rows):
    """A board log (bmsctl.py log) carries state_code, fault_mask and warning_mask as numbers:
    add the simulator's named columns state, faults and warnings."""
    if "fault_mask" not in rows[0] and "state_code" not in rows[0]:
        return
    here = os.path.dirname(os.path.abspath(__file__))
    for p in (os.path.join(here, "compat"), os.path.join(os.path.dirname(here), "firmware")):
        if p not in sys.path:
            sys.path.insert(0, p)
    from bms.protection import FAULT_NAMES, STATE_NAMES

    def names(v):
        try:
            m = int(float(v))
        except (TypeError, ValueError):
            return ""
        return "|".join(FAULT_NAMES[i] for i in range(len(FAULT_NAMES)) if m >> i & 1)

    for r in rows:
        if "fault_mask" in r:
            r["faults"] = names(r["fault_mask"])
        if "warning_mask" in r:
            r["warnings"] = names(r["warning_mask"])
        if "state_code" in r:
            try:
                r["state"] = STATE_NAMES[int(float(r["state_code"]))]
            except (TypeError, ValueError, IndexError):
                r["state"] = ""


def column(rows, name, scale=1.0):
    out = []
    for r in rows:
        v = r.get(name, "")
        try:
            out.append(float(v) * scale)
        except (TypeError, ValueError):
            out.append(float("nan"))
    return out


def spans(ts, flags):
    """[(start, width)] of the runs where flags is true; a row lasts until the next one."""
    out = []
    start = None
    n = len(ts)
    for i in range(n):
        if flags[i] and start is None:
            start = ts[i]
        if start is not None and (not flags[i] or i == n - 1):
            end = ts[i] if not flags[i] else ts[i] + (ts[i] - ts[i - 1] if i else 0)
            out.append((start, max(end - start, 1e-9)))
            start = None
    return out


def _names(v):
    return [n for n in (v or "").split("|") if n]


def _fmt_dur(s):
    if s < 120:
        return "%.0f s" % s
    if s < 7200:
        return "%.0f min" % (s / 60)
    return "%.1f h" % (s / 3600) if s % 3600 else "%d h" % (s // 3600)


def title_of(config, summary, rows, path):
    t_end = float(rows[-1]["t_s"]) - float(rows[0]["t_s"]) + 1
    cells = config.get("cells") or summary.get("cells")
    chem = config.get("chemistry") or summary.get("chemistry") or ""
    cap = config.get("capacity_mah")
    pack = ""
    if cells:
        pack = "%s x %s" % (cells, chem.upper())
        if cap:
            pack += " %g Ah" % (cap / 1000)
    if summary.get("scenario"):
        head = "scenario %s" % summary["scenario"]
        if summary.get("board") and summary["board"] != "sim":
            head += " on board %s" % summary["board"]
        parts = [head, pack, "seed %s" % summary.get("seed", "?"), _fmt_dur(t_end)]
    elif "true_soc_pct" in rows[0]:
        parts = ["simulation " + os.path.basename(path), pack, _fmt_dur(t_end)]
    else:
        parts = ["board log " + os.path.basename(path), pack, _fmt_dur(t_end)]
    return " - ".join(p for p in parts if p)


def expect_line(summary):
    ex = summary.get("expect")
    if not ex:
        return ""
    bad = [e for e in ex if not e.get("ok")]
    if bad:
        return "expectations: FAIL (%d of %d not met): %s" % (len(bad), len(ex), bad[0]["text"])
    return "expectations: PASS (all %d met)" % len(ex)


def _ylim_to(ax, values, min_span, pad=0.12):
    vals = [v for v in values if v == v]
    if not vals:
        return
    lo, hi = min(vals), max(vals)
    span = hi - lo
    if span < min_span:
        mid = (hi + lo) / 2
        lo, hi = mid - min_span / 2, mid + min_span / 2
        span = min_span
    ax.set_ylim(lo - pad * span, hi + pad * span)


def build_figure(config, rows, title, sub="", summary=None):
    """The matplotlib figure. Lanes carry gid "lane:<label>:<on|off|mode>", event marks
    gid "events" (tests and the HTML report read them)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t_s = column(rows, "t_s")
    span_s = t_s[-1] - t_s[0] if len(t_s) > 1 else 1.0
    if span_s < 3 * 3600:
        unit, div = "minutes", 60.0
    else:
        unit, div = "hours", 3600.0
    x = [t / div for t in t_s]
    step = max(1, len(rows) // 20000)  # lines: at most ~20000 points each
    xs = x[::step]

    cells = sorted(
        [k for k in rows[0] if k.startswith("cell") and k.endswith("_mv") and k[4:-3].isdigit()],
        key=lambda k: int(k[4:-3]),
    )
    faults = []
    warns = []
    for r in rows:
        for n in _names(r.get("faults")):
            if n not in faults:
                faults.append(n)
        for n in _names(r.get("warnings")):
            if n not in warns:
                warns.append(n)
    lanes = [("CHG FET", "chg_fet"), ("DSG FET", "dsg_fet")]
    for label, col in (("balancing", "bal_mask"), ("heater", "heater"), ("fan", "fan"),
                       ("charge mode", "charge_mode"), ("inverter", "inverter")):
        if col in rows[0]:
            lanes.append((label, col))
    lanes += [("fault " + n, "f:" + n) for n in faults]
    lanes += [("warn " + n, "w:" + n) for n in warns]
    has_events = "events" in rows[0]
    n_lanes = len(lanes)

    heights = [3, 2, 2, 1.6, max(1.6, 0.28 * n_lanes)] + ([1.6] if has_events else [])
    fig, ax = plt.subplots(len(heights), 1, figsize=(13, 16 + 0.2 * n_lanes), sharex=True,
                           gridspec_kw={"height_ratios": heights})
    fig.suptitle(title + ("\n" + sub if sub else ""), fontsize=12)

    bal = [r.get("bal_mask", "0") not in ("", "0") for r in rows]
    bal_spans = [(a / div, w / div) for a, w in spans(t_s, bal)]

    # 1. cells ---------------------------------------------------------------------------
    a = ax[0]
    allv = []
    for k in cells:
        v = column(rows[::step], k, 1e-3)
        allv += v
        a.plot(xs, v, lw=0.7, label=None)
    if not cells:
        for k in ("cell_min_mv", "cell_max_mv"):
            v = column(rows[::step], k, 1e-3)
            allv += v
            a.plot(xs, v, lw=0.8, label=k)
    _ylim_to(a, allv, 0.05)
    lo, hi = a.get_ylim()
    for key, color, text in (("cell_ov_mv", "r", "OV limit"), ("cell_uv_mv", "m", "UV limit"),
                             ("chg_cell_mv", "g", "charge voltage")):
        if key in config:
            y = config[key] / 1000
            if lo - 0.15 <= y <= hi + 0.15:  # near the data: widen the view to show it
                lo, hi = min(lo, y - 0.01), max(hi, y + 0.01)
                a.axhline(y, color=color, ls="--", lw=0.9, label="%s %.2f V" % (text, y))
    a.set_ylim(lo, hi)
    for s, w in bal_spans:
        a.axvspan(s, s + w, color="#bcbd22", alpha=0.15, lw=0)
    if bal_spans:
        a.plot([], [], color="#bcbd22", alpha=0.4, lw=6, label="balancing")
    a.set_ylabel("cell V")
    a.set_title("cells (%d)" % max(1, len(cells)), loc="left", fontsize=9)
    if a.get_legend_handles_labels()[0]:
        a.legend(loc="upper right", fontsize=8)

    # 2. SOC -----------------------------------------------------------------------------
    a = ax[1]
    soc = column(rows[::step], "soc_pct")
    a.plot(xs, soc, label="SOC (BMS)", color="#1f77b4")
    if "soc_err_pct" in rows[0]:
        err = column(rows[::step], "soc_err_pct")
        a.fill_between(xs, [max(0, s - e) for s, e in zip(soc, err)],
                       [min(100, s + e) for s, e in zip(soc, err)], color="#1f77b4", alpha=0.12,
                       lw=0, label="SOC uncertainty")
    if "true_soc_pct" in rows[0]:
        a.plot(xs, column(rows[::step], "true_soc_pct"), label="true SOC", ls="--",
               color="#ff7f0e")
    if "soc_cap_pct" in rows[0]:
        a.step(xs, column(rows[::step], "soc_cap_pct"), where="post", color="k", lw=0.8,
               ls=":", label="SOC cap in force")
    if "full_charge_req" in rows[0]:
        req = [r.get("full_charge_req") == "1" for r in rows]
        sp = spans(t_s, req)
        for s, w in sp:
            a.axvspan(s / div, (s + w) / div, color="#7f7f7f", alpha=0.12, lw=0)
        if sp:
            a.plot([], [], color="#7f7f7f", alpha=0.4, lw=6,
                   label="cap lifted: full charge requested")
    a.set_ylim(-2, 102)
    a.set_ylabel("SOC %")
    a.legend(loc="lower left", fontsize=8, ncol=3)

    # 3. current -------------------------------------------------------------------------
    a = ax[2]
    cur = column(rows[::step], "current_ma", 1e-3)
    a.plot(xs, cur, label="current", lw=0.8, color="#1f77b4")
    a.axhline(0, color="k", lw=0.5)
    cap_a = (config.get("capacity_mah") or 0) / 1000
    _ylim_to(a, cur + [0.0], max(1.0, 0.02 * cap_a))
    lo, hi = a.get_ylim()
    notes = []
    for col, sign, label, color in (("ccl_ma", 1e-3, "CCL", "#2ca02c"),
                                    ("dcl_ma", -1e-3, "-DCL", "#d62728")):
        if col in rows[0]:
            v = column(rows[::step], col, sign)
            a.plot(xs, v, label=label, lw=0.9, ls="--", color=color)
            out = [y for y in v if y == y and not lo <= y <= hi]
            if out:
                notes.append("%s up to %.0f A (off the scale)" % (label, max(out, key=abs)))
    a.set_ylim(lo, hi)
    if notes:
        a.text(0.01, 0.95, "; ".join(notes), transform=a.transAxes, fontsize=8, va="top")
    a.set_ylabel("A (+ = charge)")
    a.legend(loc="lower right", fontsize=8, ncol=3)

    # 4. temperatures --------------------------------------------------------------------
    a = ax[3]
    temps = []
    for col, label, ls in (("t_max_c", "max", "-"), ("t_min_c", "min", "-"),
                           ("true_temp_c", "true", ":")):
        if col in rows[0]:
            v = column(rows[::step], col)
            temps += v
            a.plot(xs, v, label=label, ls=ls)
    _ylim_to(a, temps, 10.0, pad=0.05)
    lo, hi = a.get_ylim()
    for key, text, color in (("chg_temp_min_dc", "no charge below", "#1f77b4"),
                             ("chg_temp_max_dc", "no charge above", "#d62728"),
                             ("dsg_temp_max_dc", "no discharge above", "#8c564b"),
                             ("dsg_temp_min_dc", "no discharge below", "#17becf")):
        if key in config and lo <= config[key] / 10 <= hi:
            a.axhline(config[key] / 10, color=color, ls="--", lw=0.8,
                      label="%s %g C" % (text, config[key] / 10))
    a.set_ylabel("degC")
    a.legend(loc="upper right", fontsize=8, ncol=3)

    # 5. status lanes --------------------------------------------------------------------
    a = ax[4]
    labels = []
    for i, (label, col) in enumerate(lanes):
        y = n_lanes - 1 - i
        labels.append((y, label))
        if col.startswith("f:") or col.startswith("w:"):
            name = col[2:]
            key = "faults" if col[0] == "f" else "warnings"
            on = [name in _names(r.get(key)) for r in rows]
            color = "#d62728" if col[0] == "f" else "#ff9f1c"
            a.broken_barh([(s / div, w / div) for s, w in spans(t_s, on)], (y - 0.35, 0.7),
                          facecolors=color, gid="lane:%s:on" % label)
        elif col == "charge_mode":
            for mode, color in MODE_COLORS.items():
                on = [r.get(col) == mode for r in rows]
                sp = spans(t_s, on)
                if sp:
                    a.broken_barh([(s / div, w / div) for s, w in sp], (y - 0.35, 0.7),
                                  facecolors=color, gid="lane:%s:%s" % (label, mode),
                                  label=mode)
        else:
            on = [r.get(col, "0") not in ("", "0") for r in rows]
            off = [not v for v in on]
            on_color = FET_ON if "FET" in label or label == "inverter" else "#bcbd22"
            a.broken_barh([(s / div, w / div) for s, w in spans(t_s, on)], (y - 0.35, 0.7),
                          facecolors=on_color, gid="lane:%s:on" % label)
            if "FET" in label or label == "inverter":
                a.broken_barh([(s / div, w / div) for s, w in spans(t_s, off)],
                              (y - 0.35, 0.7), facecolors=FET_OFF, alpha=0.85,
                              gid="lane:%s:off" % label)
    marks = []
    if has_events:
        for r, xv in zip(rows, x):
            for e in _names(r.get("events")):
                marks.append((xv, e))
    a.set_yticks([y for y, _ in labels])
    a.set_yticklabels([lab for _, lab in labels], fontsize=8)
    a.set_ylim(-0.7, len(lanes) - 0.3)
    a.grid(axis="x", alpha=0.3)
    handles = [matplotlib.patches.Patch(color=FET_ON, label="on / present"),
               matplotlib.patches.Patch(color=FET_OFF, label="off / lost")]
    for mode, color in MODE_COLORS.items():
        if any(r.get("charge_mode") == mode for r in rows):
            handles.append(matplotlib.patches.Patch(color=color, label=mode))
    if faults:
        handles.append(matplotlib.patches.Patch(color="#d62728", label="fault active"))
    if warns:
        handles.append(matplotlib.patches.Patch(color="#ff9f1c", label="warning active"))
    a.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    a.set_title("status", loc="left", fontsize=9)
    if has_events:
        _events_panel(ax[5], marks, x, ax[:4])
    ax[-1].set_xlabel(unit)
    for other in ax:
        other.grid(alpha=0.25)
        other.margins(x=0)
    fig.tight_layout()
    return fig


def _events_panel(a, marks, x, others):
    """Marks for every event; labels for the notable ones, events close in time merged."""
    a.plot([m[0] for m in marks], [0] * len(marks), "v", color="k", ms=6, gid="events",
           ls="none")
    for xv, e in marks:
        if e.startswith("fault_set"):
            for other in others:
                other.axvline(xv, color="#d62728", lw=0.6, ls=":", alpha=0.7)
    shown = [m for m in marks if not m[0] != m[0] and not m[1].startswith(
        ("store", "unlock", "config"))]
    width = (x[-1] - x[0]) or 1.0
    groups = []
    for xv, e in shown:
        if groups and xv - groups[-1][0] <= 0.012 * width:
            if e not in groups[-1][1]:
                groups[-1][1].append(e)
        else:
            groups.append((xv, [e]))
    for xv, names in groups[:MAX_LABELS]:
        text = ", ".join(names[:3]) + (" +%d" % (len(names) - 3) if len(names) > 3 else "")
        if len(text) > 32:
            text = text[:31] + "~"
        ann = a.annotate(text, (xv, 0), xytext=(0, 7), textcoords="offset points", rotation=90,
                         fontsize=6.5, va="bottom", ha="center", annotation_clip=True)
        ann.set_in_layout(False)
    if len(groups) > MAX_LABELS:
        a.text(0.99, 0.02, "%d more groups of events not labelled" % (len(groups) - MAX_LABELS),
               transform=a.transAxes, fontsize=7, ha="right")
    a.set_ylim(-0.3, 1.0)
    a.set_yticks([0])
    a.set_yticklabels(["events"], fontsize=8)


def plot(path, out, title=None, summary_path=None):
    """Write the chart; returns (figure, config, rows, summary) for the report."""
    config, rows = read_log(path)
    summary = find_summary(path, summary_path)
    fig = build_figure(config, rows, title or title_of(config, summary, rows, path),
                       expect_line(summary), summary)
    try:
        fig.savefig(out, dpi=80)
    except OSError as e:
        raise LogError("cannot write %s (%s)" % (out, e.strerror or e)) from None
    except ValueError as e:  # an extension matplotlib cannot write
        raise LogError("cannot write %s: %s" % (out, str(e).splitlines()[0])) from None
    return fig, config, rows, summary


def write_html(path, png, config, rows, summary, title):
    """A single-file report: the chart embedded, the summary, expectations and events."""
    import base64
    import html

    with open(png, "rb") as fh:
        img = base64.b64encode(fh.read()).decode("ascii")
    e = html.escape
    out = ["<!doctype html><html><head><meta charset='utf-8'><title>%s</title>" % e(title),
           "<style>body{font-family:sans-serif;max-width:1100px;margin:1em auto}"
           "td,th{padding:2px 8px;text-align:left}.ok{color:#060}.bad{color:#b00;"
           "font-weight:bold}img{max-width:100%}</style></head><body>",
           "<h1>%s</h1>" % e(title)]
    ex = summary.get("expect") or []
    if ex:
        out.append("<h2>Expectations</h2><table>")
        for x in ex:
            out.append("<tr><td class='%s'>%s</td><td>%s</td></tr>" % (
                "ok" if x.get("ok") else "bad", "PASS" if x.get("ok") else "FAIL",
                e(x.get("text", ""))))
        out.append("</table>")
    out.append("<img alt='chart' src='data:image/png;base64,%s'>" % img)
    if summary:
        out.append("<h2>Summary</h2><table>")
        for k in ("pack", "hours", "soc_rmse_pct", "soc_max_err_pct", "soh_pct",
                  "faults_seen", "warnings_seen", "state_seconds", "mode_seconds", "bal_s",
                  "heater_s", "soc_uncertain_s", "events", "afe_errors", "end_state"):
            if k in summary:
                v = summary[k]
                if isinstance(v, float):
                    v = "%.2f" % v
                out.append("<tr><th>%s</th><td>%s</td></tr>" % (e(k), e(str(v))))
        out.append("</table>")
    evs = [(r["t_s"], n) for r in rows for n in _names(r.get("events"))]
    if evs:
        out.append("<h2>Events</h2><table><tr><th>t (s)</th><th>event</th></tr>")
        for t, n in evs[:2000]:
            out.append("<tr><td>%s</td><td>%s</td></tr>" % (e(t), e(n)))
        out.append("</table>")
    out.append("<p>%d log rows, columns: %s</p></body></html>" % (
        len(rows), e(", ".join(rows[0].keys()))))
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write("\n".join(out))
    except OSError as err:
        raise LogError("cannot write %s (%s)" % (path, err.strerror or err)) from None


def main(argv=None):
    p = argparse.ArgumentParser(prog="plot.py", description=__doc__.splitlines()[0])
    p.add_argument("log", help="CSV log of tools/sim.py or of bmsctl.py log")
    p.add_argument("-o", "--out", default=None, help="PNG file (default: LOG with .png)")
    p.add_argument("--title", default=None, help="chart title (default: scenario and pack)")
    p.add_argument("--summary", default=None, help="the run's summary.json (default: next "
                   "to the log)")
    p.add_argument("--html", default=None, help="also write a single-file HTML report")
    a = p.parse_args(argv)
    out = a.out or os.path.splitext(a.log)[0] + ".png"
    try:
        fig, config, rows, summary = plot(a.log, out, a.title, a.summary)
        if a.html:
            write_html(a.html, out, config, rows, summary,
                       a.title or title_of(config, summary, rows, a.log))
    except LogError as e:
        print("plot.py: %s" % e, file=sys.stderr)
        return 2
    print("chart:   " + out)
    if a.html:
        print("report:  " + a.html)
    return 0


if __name__ == "__main__":
    sys.exit(main())
