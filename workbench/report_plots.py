"""The report's figures, each as PNG bytes (written to a file and embedded in the HTML).

matplotlib's object API on the Agg canvas, never pyplot: no global figure state, so
a report can be drawn from a worker thread. matplotlib is imported inside the
functions: the TUI imports this package's modules and must not pay for it at start.
The series come from ``workbench/series.py``, the same ones the TUI plots.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from .compare import PRECISION
from .series import Series

DPI = 110
# How many bars or lines a legend takes in one row before it wraps.
LEGEND_COLUMNS = 4
# Every engine keeps one colour in every figure (matplotlib's default cycle, by engine).
PALETTE = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray")


def engine_order(engine: str) -> int:
    """Where an engine sorts: torch (the reference) first, then as compare.py lists them."""
    engines = list(PRECISION)
    return engines.index(engine) if engine in engines else len(engines)


def colours(labels: Sequence[str]) -> dict[str, str]:
    """A colour per label: its engine's own when each label names one engine ("ort-int8",
    "torch fp32"), else by position (one run's engines next to another's)."""
    engines = {label: label.split(" ")[0] for label in labels}
    if all(engine in PRECISION for engine in engines.values()) and len(set(engines.values())) == len(labels):
        return {label: PALETTE[engine_order(engine) % len(PALETTE)] for label, engine in engines.items()}
    return {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(labels)}


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()


def training_curves(stage: str, by_run: dict[str, list[Series]]) -> bytes:
    """One training stage: its loss (left) and the quality it measured as it went (right),
    against the step, one line per run."""
    loss = {run: s for run, found in by_run.items() for s in found if s.y_label == "loss"}
    quality = {run: s for run, found in by_run.items() for s in found if s.y_label != "loss"}
    panels = [p for p in (loss, quality) if p]
    fig = _figure(5.2 * len(panels), 3.6)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, series in zip(axes, panels):
        for run, s in series.items():
            ax.plot(s.x, s.y, label=run, marker="o" if len(s.x) < 30 else None, markersize=3, linewidth=1.2)
        first = next(iter(series.values()))
        ax.set(xlabel=first.x_label, ylabel=first.y_label, title=f"{stage}: {first.y_label}")
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize="small")
    return _png(fig)


def f1_by_type(groups: Sequence[str], bars: dict[str, dict[str, float]], title: str) -> bytes:
    """Grouped bars (``series.f1_by_type``): one group per entity type and "all", one bar
    per engine, each labelled with its F1 (engines often differ in the third decimal, which
    a bar's height hides)."""
    fig = _figure(min(10.0, max(6.0, 0.35 * len(groups) * len(bars) + 2)), 4.2)  # wider with more bars, up to a page
    ax = fig.subplots()
    width = 0.8 / max(len(bars), 1)
    colour = colours(list(bars))
    for i, (label, scores) in enumerate(bars.items()):
        xs = [g + (i - (len(bars) - 1) / 2) * width for g in range(len(groups))]
        ys = [scores.get(group, 0.0) for group in groups]
        drawn = ax.bar(xs, ys, width * 0.92, label=label, color=colour[label])
        ax.bar_label(drawn, labels=[f"{scores[g]:.3f}" if g in scores else "" for g in groups], fontsize=7, rotation=90, padding=2)
    ax.set_xticks(range(len(groups)), groups)
    ax.set(ylabel="entity F1", ylim=(0, 1.12), title=title)
    ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="outside lower center", ncols=min(LEGEND_COLUMNS, len(bars)), fontsize="small")
    return _png(fig)


def latency_distribution(samples: dict[str, list[float]], shape: str) -> bytes:
    """Each engine's per-call latencies at one shape: a box (quartiles, p50 line) over the
    calls themselves, on a log axis when a few slow calls would squash the rest."""
    engines = list(samples)
    fig = _figure(7.0, 0.6 * len(engines) + 1.8)
    ax = fig.subplots()
    ax.boxplot([samples[e] for e in engines], orientation="horizontal", tick_labels=engines, showfliers=False, widths=0.5,
               medianprops={"color": "black", "linewidth": 2})
    ax.invert_yaxis()  # the first engine on top, as in the tables
    colour = colours(engines)
    for row, engine in enumerate(engines, start=1):
        values = samples[engine]
        # A fixed spread, not random jitter: the same report twice draws the same figure.
        ys = [row + 0.18 * ((i % 7) / 3 - 1) for i in range(len(values))]
        ax.scatter(values, ys, s=8, alpha=0.55, color=colour[engine], linewidths=0)
    everything = [v for values in samples.values() for v in values if v > 0]
    if everything and max(everything) / min(everything) > 20:
        from matplotlib.ticker import FuncFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 0.1, 1, 10: not 10⁻¹
    calls = sorted({len(v) for v in samples.values()})
    count = f"{calls[0]}" if len(calls) == 1 else f"{calls[0]}–{calls[-1]}"
    ax.set(xlabel="latency per call (ms): box from p25 to p75, the bar at p50, whiskers 1.5 × the box", title=f"latency at {shape} ({count} calls per engine)")
    ax.grid(axis="x", alpha=0.3, which="both")
    return _png(fig)


def p50_sweeps(sweeps: dict[str, list[Series]]) -> bytes:
    """p50 per engine against each swept dimension (``series.p50_series``), one panel each."""
    fig = _figure(5.0 * len(sweeps), 3.8)
    axes = fig.subplots(1, len(sweeps), squeeze=False)[0]
    for ax, lines in zip(axes, sweeps.values()):
        colour = colours([s.name for s in lines])
        for s in lines:
            ax.plot(s.x, s.y, marker="o", label=s.name, color=colour[s.name])
        ticks = sorted({x for s in lines for x in s.x})
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.set(xlabel=lines[0].x_label, ylabel=lines[0].y_label, title=f"p50 against {lines[0].x_label}")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return _png(fig)
