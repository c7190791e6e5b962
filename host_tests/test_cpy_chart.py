# The chart of tools/plot.py, read as a person reads it, on the `cell-ov` run and a part of
# the `normal` day (tools/sim.py under micropython): the title names the scenario and the
# pack; the FETs are on/off bands (cell-ov: the charge FET's "off" band lies within the
# cell_ov fault's band, the discharge FET stays on; normal: both FETs on throughout); the
# events are marked and labelled (fault_set:cell_ov); the current axis is scaled to the
# current, not to the 80 A discharge limit; the temperature axis spans at least 10 degC; the
# PNG and the single-file HTML report are written. CPython only (subprocess, matplotlib).
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
MPY = os.path.join(ROOT, ".venv", "bin", "micropython")
RUNS = {"cell-ov": ["--scenario", "cell-ov"], "normal": ["--scenario", "normal", "--hours", "3"]}
_R = {}


def _run(name):
    out = os.path.join(tempfile.mkdtemp(), name)
    env = dict(os.environ, MICROPYPATH="firmware:tools:.:.frozen")
    p = subprocess.run([MPY, "-X", "heapsize=2M", "tools/sim.py", "--quiet", "--out", out]
                       + RUNS[name], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=900)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return name, out


def _figure(name):
    if not _R:
        with ThreadPoolExecutor(max_workers=2) as ex:
            for n, out in ex.map(_run, RUNS):
                _R[n] = out
    import plot

    out = _R[name]
    log = os.path.join(out, "sim.csv")
    config, rows = plot.read_log(log)
    summary = plot.find_summary(log)
    title = plot.title_of(config, summary, rows, log)
    fig = plot.build_figure(config, rows, title, plot.expect_line(summary), summary)
    return out, fig, rows


def _bars(fig, gid):
    """[(x0, x1)] of the bars of one lane (x in the chart's time unit)."""
    for ax in fig.axes:
        for c in ax.collections:
            if c.get_gid() == gid:
                out = []
                for path in c.get_paths():
                    xs = [v[0] for v in path.vertices]
                    out.append((min(xs), max(xs)))
                return sorted(out)
    return []


def _status_axis(fig):
    for ax in fig.axes:
        labels = [t.get_text() for t in ax.get_yticklabels()]
        if "CHG FET" in labels:
            return ax, labels
    raise AssertionError("no status lanes")


def _after_boot(bars, rows, per_s):
    """Bars that do not end within the boot (FETs off until the first complete reading;
    thermistors 2.5 s after the AFE's init). per_s: chart units per second."""
    booted = min(float(r["t_s"]) for r in rows if r["state"] != "boot") * per_s
    return [(a, b) for a, b in bars if b > booted + per_s]


def _covered(bars):
    return sum(b - a for a, b in bars)


def test_cell_ov_chart_shows_the_fet_opening_inside_the_fault():
    out, fig, rows = _figure("cell-ov")
    assert "cell-ov" in fig._suptitle.get_text() and "4 x LFP 100 Ah" in fig._suptitle.get_text()
    ax, labels = _status_axis(fig)
    for lane in ("CHG FET", "DSG FET", "balancing", "charge mode", "fault cell_ov"):
        assert lane in labels, labels
    off = _bars(fig, "lane:CHG FET:off")
    fault = _bars(fig, "lane:fault cell_ov:on")
    assert off and fault, (off, fault)
    # the charge FET is off only while cell_ov is active (1 s log resolution), after the
    # boot (FETs stay off until the first complete reading: thermistors 2.5 s after init)
    step = 1 / 60.0  # one row in minutes
    booted = min(float(r["t_s"]) for r in rows if r["state"] != "boot") / 60
    for a, b in off:
        if b <= booted + step:
            continue
        assert any(fa - step <= a and b <= fb + step for fa, fb in fault), (off, fault)
    assert _bars(fig, "lane:CHG FET:on")  # and on again afterwards
    assert not _after_boot(_bars(fig, "lane:DSG FET:off"), rows, 1 / 60.0)
    span = float(rows[-1]["t_s"]) / 60
    assert _covered(_bars(fig, "lane:DSG FET:on")) >= 0.99 * span
    # events: marked and labelled
    texts = [t.get_text() for a in fig.axes for t in a.texts]
    assert any("fault_set:cell_ov" in t for t in texts), texts
    marks = [ln for a in fig.axes for ln in a.lines if ln.get_gid() == "events"]
    assert marks and len(marks[0].get_xdata()) >= 5
    # the current axis is scaled to the current (+20 / -30 A), not to the 80 A DCL
    cur_ax = [a for a in fig.axes if a.get_ylabel().startswith("A (")][0]
    lo, hi = cur_ax.get_ylim()
    assert -45 < lo < -30 and 20 < hi < 35, (lo, hi)
    t_ax = [a for a in fig.axes if a.get_ylabel() == "degC"][0]
    assert t_ax.get_ylim()[1] - t_ax.get_ylim()[0] >= 10
    # the files a person opens
    p = subprocess.run([sys.executable, "tools/plot.py", os.path.join(out, "sim.csv"),
                        "--html", os.path.join(out, "report.html")], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert os.path.getsize(os.path.join(out, "sim.png")) > 50000
    with open(os.path.join(out, "report.html")) as f:
        html = f.read()
    assert "PASS" in html and "data:image/png;base64," in html and "fault_set:cell_ov" in html


def test_normal_day_chart_shows_both_fets_on_and_the_events():
    out, fig, rows = _figure("normal")
    assert "scenario normal" in fig._suptitle.get_text()
    ax, labels = _status_axis(fig)
    assert not [lab for lab in labels if lab.startswith("fault ")], labels
    span = float(rows[-1]["t_s"]) / 3600
    for lane in ("CHG FET", "DSG FET"):
        assert not _after_boot(_bars(fig, "lane:%s:off" % lane), rows, 1 / 60.0), lane
        assert _covered(_bars(fig, "lane:%s:on" % lane)) >= 0.99 * span, lane
    assert _bars(fig, "lane:charge mode:bulk")
    texts = [t.get_text() for a in fig.axes for t in a.texts]
    assert any("inverter:present" in t for t in texts), texts
    assert any("state:normal" in t for t in texts), texts
