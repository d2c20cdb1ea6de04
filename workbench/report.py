"""``ner-workbench report RUN [RUN…]``: what runs cost, scored and measured, in one report.

The report is built once, as Markdown sections: the quality and engines tables are the
Markdown that ``workbench/quality.py`` and ``workbench/compare.py`` already print, and
the figures come from ``workbench/series.py`` (drawn in ``report_plots.py``). It is
then written twice: ``report.md`` beside its PNGs (``figures/``), and ``report.html``,
the same Markdown rendered to HTML with the PNGs embedded (``report_format.py``), one
file that can be mailed or attached.

A run that lacks a part (no training, eval or bench) gets a line saying so and the
command that would make it, never a failure.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field

from pipelines.evaluate.errors import ERROR_KINDS
from pipelines.events import read_events
from pipelines.files import replace_dir, write_text
from pipelines.layout import CONFIG_FILE, EVAL_DIR, METRICS_FILE, MODEL_DIR

from . import compare, quality, report_plots
from .commands import runs_dir_option
from .report_env import environment, read_dict
from .report_format import markdown_table, to_html
from .series import curves_of, f1_by_type, first_shape, latency_samples, p50_series

REPORT_DIR = "report"  # inside the first run, unless --out says otherwise
FIGURES_DIR = "figures"
TRAINING_STAGES = tuple(stage for stage, _ in quality.TRAINING_STAGES)


@dataclass
class Run:
    id: str
    name: str
    dir: str
    metrics: dict

    @staticmethod
    def at(run_dir: str) -> Run:
        import yaml

        run_dir = os.path.abspath(run_dir)
        try:
            with open(os.path.join(run_dir, CONFIG_FILE), encoding="utf-8") as f:
                name = (yaml.safe_load(f) or {}).get("name")
        except (OSError, yaml.YAMLError, AttributeError):
            name = None
        run_id = os.path.basename(run_dir)
        return Run(run_id, name or run_id, run_dir, read_dict(os.path.join(run_dir, METRICS_FILE)))

    def command(self, words: str) -> str:
        """A CLI command on this run, e.g. ``bench --model`` → `ner-workbench bench --model ID`."""
        return f"`ner-workbench {words} {self.id}{runs_dir_option(os.path.dirname(self.dir))}`"

    def model_command(self, verb: str) -> str:
        """`eval` / `bench` on this run, and that it needs a model first when it has none."""
        untrained = "" if os.path.isdir(os.path.join(self.dir, MODEL_DIR)) else " (once it has a model: see Training curves)"
        return self.command(f"{verb} --model") + untrained

    @property
    def config(self) -> str:
        return os.path.join(self.dir, CONFIG_FILE)


@dataclass
class Report:
    title: str
    sections: list[tuple[str, str]] = field(default_factory=list)  # (heading, Markdown body)
    figures: dict[str, bytes] = field(default_factory=dict)  # file name under figures/ -> PNG

    def figure(self, name: str, png: bytes, alt: str) -> str:
        self.figures[name] = png
        return f"![{alt}]({FIGURES_DIR}/{name})"

    def markdown(self) -> str:
        parts = [f"# {self.title}"] + [f"## {heading}\n\n{body.strip()}" for heading, body in self.sections]
        return "\n\n".join(parts) + "\n"


def write_report(run_dirs: list[str], out_dir: str | None = None) -> list[str]:
    """Write report.md, report.html and figures/*.png; returns their paths."""
    report = build_report([Run.at(d) for d in dict.fromkeys(os.path.abspath(d) for d in run_dirs)])  # each run once
    out_dir = os.path.abspath(out_dir or os.path.join(run_dirs[0], REPORT_DIR))

    def write_figures(tmp: str) -> None:
        for name, png in report.figures.items():
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(png)

    # The figures directory is the report's own: replacing it whole drops a previous
    # report's figures that this one no longer draws.
    replace_dir(os.path.join(out_dir, FIGURES_DIR), write_figures)
    text = report.markdown()
    md_path, html_path = os.path.join(out_dir, "report.md"), os.path.join(out_dir, "report.html")
    write_text(md_path, text)
    write_text(html_path, to_html(text, report.figures, report.title))
    return [md_path, html_path, *(os.path.join(out_dir, FIGURES_DIR, name) for name in report.figures)]


def build_report(runs: list[Run]) -> Report:
    report = Report(f"Report: {', '.join(r.name for r in runs)}")
    made = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    rows = [[r.id, r.name, ", ".join(r.metrics) or "none", r.dir] for r in runs]
    report.sections.append(("Runs", f"Made {made}.\n\n" + markdown_table(["run", "name", "stages with results", "directory"], rows)))
    report.sections.append(("Environment", markdown_table(["", "this machine, and where each bench ran"], environment(runs))))
    order = {r.id: i for i, r in enumerate(runs)}
    compare_rows = sorted(  # runs as given, torch (the reference) first in each
        compare.collect_rows((r.id, r.name, r.dir) for r in runs), key=lambda c: (order[c.run_id], c.split, report_plots.engine_order(c.engine))
    )
    report.sections.append(("Model quality", _quality(runs)))
    report.sections.append(("Engines", _engines(runs, compare_rows)))
    errors = _errors(runs, compare_rows)
    if errors:
        report.sections.append(("Errors by kind", errors))
    report.sections.append(("Training curves", _training(report, runs)))
    report.sections.append(("F1 per entity type", _f1_by_type(report, compare_rows)))
    report.sections.append(("Latency", _latency(report, runs)))
    return report


def _quality(runs: list[Run]) -> str:
    rows = []
    for run in runs:
        try:
            rows.append(quality.quality_row(run.dir))
        except ValueError:  # a torn metrics.json: the run has no row, and the note below says why
            pass
    text = quality.to_markdown(rows) + "\n"
    # The table reads metrics.json, which the eval stage writes (the `eval` command does not).
    missing = [f"- {r.id}: no test scores in metrics.json: {r.command(f'run {r.config} --stages eval --resume')}" for r in runs if "eval" not in r.metrics]
    return text + ("\n" + "\n".join(missing) if missing else "")


def _engines(runs: list[Run], rows: list[compare.CompareRow]) -> str:
    hidden = compare.empty_columns(rows, compare.REPORT_COLUMNS) | {"eval_sentences_per_s"}  # an eval's speed is not a benchmark
    if len(runs) == 1:
        hidden.add("run_name")
    columns = [c for c in compare.REPORT_COLUMNS if c.key not in hidden]
    text = compare.to_markdown(rows, columns).strip() if rows else ""
    evaluated = {r.run_id for r in rows if r.f1 is not None}
    notes = [f"- {r.id}: no evaluation: {r.model_command('eval')}" for r in runs if r.id not in evaluated]
    notes += [f"- {r.id}: no benchmark: {r.model_command('bench')}" for r in runs if not compare.bench_by_engine(r.dir)]
    legend = "ΔF1 is against the same run's fp32 torch engine; latency and throughput are at the shape shown (batch × sequence length)."
    if "corpus_sentences_per_s" not in hidden:
        legend += " split sent/s: the whole eval split in one process, batched by length as eval does."
    return "\n\n".join(p for p in (text, "\n".join(notes), legend if rows else "") if p)


def _eval_scores(run: Run, row: compare.CompareRow) -> dict:
    # The scores file under the run's own decoding: eval/SPLIT-ENGINE.json (scoring.eval_stem).
    return read_dict(os.path.join(run.dir, EVAL_DIR, f"{row.split}-{row.engine}.json"))


def _errors(runs: list[Run], rows: list[compare.CompareRow]) -> str:
    """The eval files' error counts, where the eval wrote them (nothing otherwise)."""
    by_id = {r.id: r for r in runs}
    totals, by_type = [], []
    for row in (r for r in rows if r.f1 is not None):
        errors = _eval_scores(by_id[row.run_id], row).get("errors")
        if not isinstance(errors, dict) or not isinstance(errors.get("counts"), dict):
            continue
        counts = [errors["counts"].get(kind, 0) for kind in ERROR_KINDS]
        label = [row.run_name, row.split, row.engine]
        totals.append([*label, *counts, sum(counts)])
        for entity_type, found in sorted((errors.get("by_type") or {}).items()):
            by_type.append([*label, entity_type, *(found.get(kind, 0) for kind in ERROR_KINDS)])
    if not totals:
        return ""
    kinds = [k.replace("_", " ") for k in ERROR_KINDS]
    text = markdown_table(["run", "split", "engine", *kinds, "total"], totals)
    return text + ("\n\nBy entity type:\n\n" + markdown_table(["run", "split", "engine", "type", *kinds], by_type) if by_type else "")


def _training(report: Report, runs: list[Run]) -> str:
    by_stage: dict[str, dict[str, list]] = {}
    notes = []
    for run in runs:
        curves = curves_of(read_events(os.path.join(run.dir, "events.jsonl")))
        stages = [s for s in curves.stages() if s in TRAINING_STAGES]
        for stage in stages:
            by_stage.setdefault(stage, {})[run.name if len(runs) == 1 else f"{run.name} ({run.id})"] = curves.series(stage)
        if not stages:
            trained = [s for s in TRAINING_STAGES if s in run.metrics]
            why = f"no {', '.join(trained)} progress in events.jsonl" if trained else "no training stage in this run"
            notes.append(f"- {run.id}: {why}: {run.command(f'train {run.config} --resume')}")
    figures = [
        report.figure(f"training-{stage}.png", report_plots.training_curves(stage, found), f"{stage}: loss and quality against the step")
        for stage, found in by_stage.items()
    ]
    return "\n\n".join([*figures, "\n".join(notes)])


def _f1_by_type(report: Report, rows: list[compare.CompareRow]) -> str:
    groups, bars = f1_by_type(rows)
    if not bars:
        return "No evaluation to plot (see Engines)."
    title = f"{' / '.join(sorted({r.split for r in rows if r.f1 is not None}))} F1 per entity type and engine"
    return report.figure("f1-by-type.png", report_plots.f1_by_type(groups, bars, title), "F1 per entity type and engine")


def _latency(report: Report, runs: list[Run]) -> str:
    parts = []
    for run in runs:
        bench = read_dict(os.path.join(run.dir, "bench.json"))
        results = bench.get("results")
        if not results:
            parts.append(f"- {run.id}: no benchmark: {run.model_command('bench')}")
            continue
        samples = dict(sorted(latency_samples(bench).items(), key=lambda item: report_plots.engine_order(item[0])))
        shape = "batch {} × seq {}".format(*first_shape(bench))
        if samples:
            parts.append(report.figure(f"latency-{run.id}.png", report_plots.latency_distribution(samples, shape), f"{run.id}: latency per call at {shape}"))
        else:
            parts.append(f"- {run.id}: bench.json keeps no per-call latencies (benchmarked before they were kept): {run.command('bench --model')}")
        sweeps = p50_series(bench)
        if sweeps:
            parts.append(report.figure(f"p50-{run.id}.png", report_plots.p50_sweeps(sweeps), f"{run.id}: p50 against sequence length and batch"))
    return "\n\n".join(parts)
