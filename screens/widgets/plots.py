"""Charts in the terminal (textual-plotext), drawn from plain data so that screens only
pass it: lines from ``workbench.series.Series``, grouped bars, boxes over samples.

A chart keeps what it shows in ``drawn`` (labels and values, not pixels), which the
tests read back, and builds the plotext figure only when it renders, at its size
then: the ticks fit the room there is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from rich.text import Text
from textual.containers import Container, Vertical
from textual.events import Resize
from textual.widgets import Static
from textual_plotext import PlotextPlot

from workbench.series import Series, first_shape, latency_samples, p50_series

# Values spanning more than this factor go on a log axis: a few slow calls or the first
# steps' loss would otherwise flatten everything else against the axis.
LOG_SPREAD = 20
# Lines and bars take these in turn; plotext and Rich both know them by name, so the
# legend (Rich) shows the plot's (plotext) colours.
COLOURS = ("cyan", "magenta", "green", "yellow", "blue", "red")
# A chart narrower than this has too few ticks to read: a row of them stacks instead.
MIN_CHART_WIDTH = 50


@dataclass
class Drawn:
    kind: str  # lines | bars | boxes
    title: str
    labels: list[str]  # the legend (lines, bars) or the boxes' names, in order
    x: list[list] = field(default_factory=list)  # per label: the x values (lines) or the groups (bars)
    y: list[list[float]] = field(default_factory=list)  # per label: the values (lines, bars) or samples (boxes)
    x_label: str = ""
    y_label: str = ""

    @property
    def has_legend(self) -> bool:
        """Boxes are named on their axis, and a lone line by the title."""
        return self.kind == "bars" or (self.kind == "lines" and len(self.labels) > 1)

    @property
    def log(self) -> bool:
        """Whether the value axis is logarithmic, from the values: never for bars, nor for
        values all within 0..1 (F1, accuracy read best on a linear axis)."""
        values = [v for ys in self.y for v in ys]
        if self.kind == "bars" or not values or min(values) <= 0 or max(values) <= 1:
            return False
        return max(values) / min(values) > LOG_SPREAD


class Chart(Vertical):
    """One chart: the plot, and below it the legend (of bars, or of more than one line)."""

    DEFAULT_CSS = """
    Chart { height: 12; }
    Chart > PlotCanvas { height: 1fr; }
    Chart > .legend { height: auto; padding: 0 1; }
    """

    drawn: Drawn | None = None

    def compose(self):
        yield PlotCanvas()
        yield Static("", classes="legend")

    def lines(self, series: Sequence[Series], title: str = "") -> None:
        """One line per series, named in the legend; the axes take the first one's labels."""
        first = series[0]
        self._show(Drawn("lines", title, [s.name for s in series], [list(s.x) for s in series], [list(s.y) for s in series], first.x_label, first.y_label))

    def bars(self, groups: Sequence[str], bars: dict[str, dict[str, float]], y_label: str, title: str = "") -> None:
        """Grouped bars: for each group, one bar per key of ``bars`` (the legend)."""
        labels = list(bars)
        self._show(Drawn("bars", title, labels, [list(groups)] * len(labels), [[bars[k].get(g, 0.0) for g in groups] for k in labels], "", y_label))

    def boxes(self, samples: dict[str, list[float]], x_label: str, title: str = "") -> None:
        """A horizontal box (quartiles, median, whiskers) per key of ``samples``."""
        self._show(Drawn("boxes", title, list(samples), [], [list(v) for v in samples.values()], x_label))

    def _show(self, drawn: Drawn) -> None:
        self.drawn = drawn
        legend = self.query_one(".legend", Static)
        legend.display = drawn.has_legend
        if drawn.has_legend:
            mark = "━━" if drawn.kind == "lines" else "██"
            legend.update(Text("   ").join(Text.assemble((mark, COLOURS[i % len(COLOURS)]), f" {label}") for i, label in enumerate(drawn.labels)))
        canvas = self.query_one(PlotCanvas)
        canvas.drawn = drawn
        canvas.refresh()


class PlotCanvas(PlotextPlot):
    """The plotext figure, built when it renders, at its size then: the ticks fit the room."""

    drawn: Drawn | None = None

    def render(self):
        self.plt.clear_figure()
        if self.drawn is not None and self.size.width > 10 and self.size.height > 5:
            draw(self.plt, self.drawn, self.size.width, self.size.height)
        return super().render()


def draw(plt, d: Drawn, width: int, height: int) -> None:
    """``d`` onto a plotext figure ``width`` × ``height`` characters."""
    lone_line = d.kind == "lines" and len(d.labels) == 1
    plt.title(d.title or (d.labels[0] if lone_line else ""))
    scale = _scale(d.log)
    values = [scale(v) for ys in d.y for v in ys]
    colours = [COLOURS[i % len(COLOURS)] for i in range(len(d.labels))]
    if d.kind == "boxes":
        plt.box(d.labels, [[scale(v) for v in ys] for ys in d.y], orientation="horizontal", colors=colours[:1] * 2, width=0.6)
        plt.xticks(*ticks(min(values), max(values), max(2, width // 12), d.log, scaled=True))
        plt.xlabel(d.x_label + (" (log)" if d.log else ""))
        return
    # Scores sit close together: bars start below the lowest, not at 0.
    low = max(0.0, math.floor((min(values) - 0.1) * 10) / 10) if d.kind == "bars" else min(values)
    high = max(values)
    if high <= low:  # one value (a job's first point): plotext divides by the axis' span
        low, high = low - (abs(low) * 0.1 or 1.0), high + (abs(high) * 0.1 or 1.0)
    plt.ylim(low, high)
    plt.yticks(*ticks(low, high, max(2, (height - 5) // 2 + 1), d.log, scaled=True))
    plt.ylabel(d.y_label + (" (log)" if d.log else ""))
    if d.kind == "bars":
        plt.multiple_bar(d.x[0], d.y, color=colours, minimum=low)
        return
    for colour, xs, ys in zip(colours, d.x, d.y):
        # A lone point drawn as a line is one braille dot: mark it.
        plt.plot(xs, [scale(v) for v in ys], color=colour, marker="braille" if len(xs) > 1 else "●")
    xs = sorted({v for values in d.x for v in values})
    if len(xs) == 1:
        plt.xlim(xs[0] - 1, xs[0] + 1)
    if len(xs) <= min(8, width // 8):  # a few shapes (seq 32, 64, 128) or evaluations: tick each one
        plt.xticks(xs, [f"{v:g}" for v in xs])
    else:
        plt.xticks(*ticks(xs[0], xs[-1], max(2, width // 12), log=False))
    plt.xlabel(d.x_label)


def _scale(log: bool):
    return math.log10 if log else (lambda v: v)


def ticks(low: float, high: float, count: int, log: bool, scaled: bool = False) -> tuple[list[float], list[str]]:
    """About ``count`` tick positions (in the plotted scale: log10 of the values on a log
    axis) and their labels, at round values: 1, 2 or 5 times a power of ten apart, or
    1-2-5 per decade. ``scaled``: ``low`` and ``high`` are in the plotted scale already."""
    if log and scaled:
        low, high = 10.0**low, 10.0**high
    if log:
        decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
        for multipliers in ((1, 2, 5), (1, 3), (1,)):  # fewer per decade while they don't fit
            values = [m * 10.0**d for d in decades for m in multipliers if low <= m * 10.0**d <= high]
            if len(values) <= count:
                break
        if len(values) >= 2:
            return [math.log10(v) for v in values], [f"{v:g}" for v in values]
        return [math.log10(low), math.log10(high)], [_round(low), _round(high)]
    if high <= low:
        return [low], [_round(low)]
    power = 10.0 ** math.floor(math.log10(high - low))
    steps = [m * power * 10.0**k for k in (-2, -1, 0) for m in (1, 2, 5)]

    def inside(step: float) -> int:  # how many multiples of step lie in low..high
        return math.floor(high / step + 1e-9) - math.ceil(low / step - 1e-9) + 1

    step = min((s for s in steps if inside(s) >= 2), key=lambda s: abs(inside(s) - count), default=steps[-1])
    decimals = max(0, -math.floor(math.log10(step)))
    first = math.ceil(low / step - 1e-9)
    values = [(first + i) * step for i in range(inside(step))]
    return values, [f"{v:.{decimals}f}" for v in values]


def _round(value: float) -> str:
    return f"{value:.3g}"


class ChartRow(Container):
    """Charts side by side when each gets ``min_width`` columns, else one above the other."""

    DEFAULT_CSS = """
    ChartRow { height: auto; layout: vertical; }
    ChartRow.-side-by-side { layout: horizontal; }
    ChartRow.-side-by-side > Chart { width: 1fr; }
    """

    def __init__(self, *children, id: str | None = None, min_width: int = MIN_CHART_WIDTH) -> None:
        super().__init__(*children, id=id)
        self.min_width = min_width

    def on_resize(self, event: Resize) -> None:
        self.arrange_charts(event.size.width)

    def arrange_charts(self, width: int | None = None) -> None:
        shown = [c for c in self.query_children(Chart) if c.display]
        width = self.size.width if width is None else width
        self.set_class(len(shown) > 1 and width // len(shown) >= self.min_width, "-side-by-side")


class CurveCharts(ChartRow):
    """A stage's curves: the loss in one chart, what the stage measured as it went (dev F1,
    MLM accuracy, the tuned kernels' time) in the other: their scales differ too much to share an axis."""

    def __init__(self, series: Sequence[Series] = (), *, id: str | None = None, min_width: int = MIN_CHART_WIDTH) -> None:
        super().__init__(id=id, min_width=min_width)
        self._first = list(series)  # shown once the charts exist

    def compose(self):
        yield Chart(classes="loss")
        yield Chart(classes="quality")

    def on_mount(self) -> None:
        self.show(self._first)

    def show(self, series: Sequence[Series]) -> None:
        loss = [s for s in series if s.y_label == "loss"]
        quality = [s for s in series if s.y_label != "loss"]
        for chart, part in ((self.query_one(".loss", Chart), loss), (self.query_one(".quality", Chart), quality)):
            chart.display = bool(part)
            if part:
                chart.lines(part)
        self.arrange_charts()

    def charts(self) -> list[Chart]:
        """The charts showing something, loss first."""
        return [c for c in self.query(Chart) if c.display and c.drawn is not None]


class RunPlots(Vertical):
    """A finished run's Curves (one row per stage that has some) and Bench (latency per
    call at one shape, p50 against the shape) sections, with a muted line for what is missing."""

    DEFAULT_CSS = """
    RunPlots { height: auto; }
    RunPlots #stage-curves { height: auto; }
    """

    loaded = False  # show() has run: what a test waits for before it looks

    def compose(self):
        yield Static("Curves", classes="section")
        yield Vertical(id="stage-curves")
        yield Static("", id="curves-note", classes="muted")
        yield Static("Bench", classes="section")
        yield Static("", id="bench-note", classes="muted")
        yield Chart(id="latency")
        with ChartRow(id="sweeps"):
            yield Chart(id="p50-seq")
            yield Chart(id="p50-batch")

    def show(self, curves: dict[str, list[Series]], bench: dict | None, bench_command: str) -> None:
        """``curves``: series by stage; ``bench``: bench.json; ``bench_command``: the command that makes it."""
        holder = self.query_one("#stage-curves", Vertical)
        holder.remove_children()
        holder.mount_all(CurveCharts(series) for series in curves.values())
        self._note("#curves-note", "" if curves else "no curves: events.jsonl has no training or tuning progress (train, pretrain, distill and compile write it)")
        notes = []
        samples = latency_samples(bench) if bench else {}
        latency = self.query_one("#latency", Chart)
        latency.display = bool(samples)
        if samples:
            batch, seq = first_shape(bench)
            latency.styles.height = 6 + 3 * len(samples)  # three rows a box: two would run into each other
            latency.boxes(samples, "latency per call (ms)", f"latency per call at batch {batch} × seq {seq}")
        elif bench:
            notes.append(f"no per-call latencies in bench.json (benched before they were kept): rerun `{bench_command}`")
        sweeps = p50_series(bench) if bench else {}
        for over, name in (("seq", "sequence length"), ("batch", "batch size")):
            chart = self.query_one(f"#p50-{over}", Chart)
            chart.display = over in sweeps
            if over in sweeps:
                chart.lines(sweeps[over], f"p50 against {name}")
        self.query_one("#sweeps", ChartRow).arrange_charts()
        if bench is None:
            notes.append(f"no bench: run `{bench_command}`")
        elif not sweeps:
            notes.append("no p50 curves: one shape benched (bench.seq and bench.batch list the shapes)")
        self._note("#bench-note", "\n".join(notes))
        self.loaded = True

    def _note(self, selector: str, text: str) -> None:
        note = self.query_one(selector, Static)
        note.update(Text(text))  # plain: a path may hold "[", which markup would eat
        note.display = bool(text)
