"""The one adapter between the TUI and everything else (run store, configs, jobs,
the tagger, metrics files). Screens call this class and nothing below it, so a test
can hand the app another backend.

torch, transformers and datasets are imported inside methods (by the pipelines),
never at app start. Methods that touch files or models are meant to be called
from worker threads; each opens its own SQLite connection (one per thread).
"""

from __future__ import annotations

import glob
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from pipelines.files import write_text

from . import compare
from .commands import COMMANDS, command_line, command_names, display_path, job_argv  # noqa: F401 (display_path: for the screens)
from .config_files import REPO_CONFIGS, TEMPLATES, Template, check_config_text, config_name_ok, from_template
from .jobs import Job, list_jobs, start_job

NOT_BUILT = "not available yet"
RPC_ENV = "NER_WORKBENCH_RPC"  # the Devices screen's tracker, HOST:PORT
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class Action:
    """A CLI stage the jobs screen can launch; ``needs`` says what it takes."""

    name: str
    title: str
    needs: str | None  # config | run | None
    available: bool = True
    note: str = ""


# What the jobs screen can launch: the CLI commands that take a config or a run.
ACTIONS = tuple(Action(c.name, c.title, c.target) for c in COMMANDS if c.title)


@dataclass(frozen=True)
class EngineChoice:
    name: str
    available: bool
    note: str = ""


EXPECTED_ENGINES = ("torch", "torchscript", "ort", "ort-int8", "tvm-fp32", "tvm-fp16", "tvm-int8")


def engine_choices(engine_names: tuple[str, ...]) -> tuple[EngineChoice, ...]:
    """Every engine the pipelines offer, plus the expected ones not built yet (disabled)."""
    notes = {"torchscript": "needs the export stage", "ort": "exports ONNX on first use", "ort-int8": "exports ONNX on first use"}
    built = [EngineChoice(n, True, notes.get(n, "needs the compile stage" if n.startswith("tvm-") else "")) for n in engine_names]
    missing = [EngineChoice(n, False, NOT_BUILT) for n in EXPECTED_ENGINES if n not in engine_names]
    return (*built, *missing)


@dataclass
class RunSummary:
    id: str
    name: str
    dir: str
    status: str
    model: str
    dataset: str
    stages: list[tuple[str, str]]
    best_f1: float | None
    f1_split: str  # which split best_f1 is on: test (eval) or dev (train)
    latency_ms: dict[str, float | None] = field(default_factory=dict)  # per precision, from the bench stage
    has_model: bool = False


@dataclass
class StageRow:
    stage: str
    status: str
    seconds: float | None
    metrics: str
    error: str | None


@dataclass
class RunDetail:
    summary: RunSummary
    config_text: str
    stages: list[StageRow]
    artifacts: list[tuple[str, int]]
    error_tail: str


class Backend:
    def __init__(self, runs_dir: str | None = None, configs_dir: str | None = None) -> None:
        from .store import default_runs_dir  # store imports pydantic: cheap enough, but only here

        self.runs_dir = os.path.abspath(runs_dir or default_runs_dir())
        self.jobs_dir = os.path.join(self.runs_dir, "jobs")
        self.export_dir = self.runs_dir  # where the comparison table is exported
        # One model load at a time: two threads importing transformers at once can see it half-initialised.
        self._model_lock = threading.Lock()
        self._actions: tuple[Action, ...] | None = None
        self._engines: tuple[EngineChoice, ...] | None = None
        self.configs_dir = os.path.abspath(configs_dir or ("configs" if os.path.isdir("configs") else REPO_CONFIGS))

    # -- runs --------------------------------------------------------------------
    @contextmanager
    def _store(self, readonly: bool = True) -> Iterator["RunStore"]:  # noqa: F821
        """The screens poll every few seconds: they read through a read-only store (no schema
        change, no recovery written; runs still show their true state). Only a brand-new
        runs directory is created by a reader, once."""
        from .store import REGISTRY, RunStore

        readonly = readonly and os.path.isfile(os.path.join(self.runs_dir, REGISTRY))
        store = RunStore(self.runs_dir, readonly=readonly)
        try:
            yield store
        finally:
            store.close()

    def runs(self) -> list[RunSummary]:
        with self._store() as store:
            records = store.list_runs()
        return [self._summary(r, records) for r in records]

    def _summary(self, record, records) -> RunSummary:
        from .store import model_label

        f1, split = record.test_f1(), "test"
        train = record.stage("train")
        if f1 is None and train and train.metrics:
            f1, split = train.metrics.get("best_dev_f1"), "dev"
        return RunSummary(
            id=record.id,
            name=record.name,
            dir=record.dir,
            status=record.status,
            model=model_label(record, records),
            dataset=record.dataset or "",
            stages=[(s.stage, s.status) for s in record.stages],
            best_f1=f1,
            f1_split=split,
            latency_ms={p: compare.latency_by_precision(record.dir).get(p) for p in PRECISIONS},
            has_model=os.path.isfile(os.path.join(record.dir, "model", "config.json")),
        )

    def delete_run(self, run_id: str) -> int:
        """Remove a run and its directory (refused while it runs); returns the bytes freed."""
        with self._store(readonly=False) as store:
            return store.delete_run(run_id)

    def run_detail(self, run_id: str) -> RunDetail:
        with self._store() as store:
            record, records = store.get(run_id), store.list_runs()
        stages = [
            StageRow(
                s.stage,
                s.status,
                (s.finished - s.started) if s.finished and s.started else None,
                _metrics_line(s.metrics),
                s.error,
            )
            for s in record.stages
        ]
        return RunDetail(
            self._summary(record, records),
            _read_text(os.path.join(record.dir, "config.yaml")),
            stages,
            _artifacts(record.dir),
            _tail(os.path.join(record.dir, "error.log"), 12),
        )

    # -- configs -----------------------------------------------------------------
    def config_files(self) -> list[str]:
        found = glob.glob(os.path.join(self.configs_dir, "*.yaml")) + glob.glob(os.path.join(self.configs_dir, "*.yml"))
        return sorted(found)

    def templates(self) -> tuple[Template, ...]:
        return TEMPLATES

    def read_config(self, path: str) -> str:
        return _read_text(path)

    def check_config(self, text: str, source: str):
        return check_config_text(text, source)

    def save_config(self, path: str, text: str):
        """Validate, then write atomically; returns the problem (and writes nothing) if invalid."""
        problem = check_config_text(text, os.path.basename(path))
        if problem is None:
            write_text(path, text)
        return problem

    def new_config(self, template: Template, name: str) -> str:
        """A new config file from a template; returns its path."""
        if not config_name_ok(name):
            raise ValueError(f"{name!r}: use letters, digits, '-', '_' or '.'")
        path = os.path.join(self.configs_dir, name if name.endswith((".yaml", ".yml")) else name + ".yaml")
        if os.path.exists(path):
            raise ValueError(f"{path} exists already")
        write_text(path, from_template(template, os.path.splitext(os.path.basename(path))[0]))
        return path

    # -- jobs --------------------------------------------------------------------
    def actions(self) -> tuple[Action, ...]:
        """The launchable actions; one whose CLI command doesn't exist is marked not available."""
        if self._actions is None:
            commands = self.cli_commands()
            self._actions = tuple(a if a.name in commands else Action(a.name, a.name, a.needs, False, NOT_BUILT) for a in ACTIONS)
        return self._actions

    def job_argv(self, action: str, target: str, engine: str = "torch") -> list[str]:
        """CLI arguments for an action on a config path or a run id."""
        return job_argv(action, target, self.runs_dir, engine)

    def command_line(self, action: str, target: str) -> str:
        """The CLI command a person would type for an action (shown in hints)."""
        return command_line(action, target, self.runs_dir)

    def start_job(self, argv: list[str], title: str | None = None) -> Job:
        return start_job(argv, self.jobs_dir, title)

    def start_quickstart(self) -> Job:
        path = os.path.join(self.configs_dir, "quickstart.yaml")
        if not os.path.isfile(path):
            path = TEMPLATES[0].path
        return self.start_job(self.job_argv("run", path), "run quickstart")

    def jobs(self) -> list[Job]:
        return list_jobs(self.jobs_dir)

    def job(self, job_id: str) -> Job:
        return Job(os.path.join(self.jobs_dir, job_id))

    # -- tagging -----------------------------------------------------------------
    def engines(self) -> tuple[EngineChoice, ...]:
        if self._engines is None:
            self._engines = engine_choices(self.engine_names())
        return self._engines

    def engine_names(self) -> tuple[str, ...]:
        from pipelines.runtime.engines import ENGINE_NAMES

        return tuple(ENGINE_NAMES)

    def cli_commands(self) -> set[str]:
        return command_names()

    def open_tagger(self, run_id_or_dir: str, engine: str = "torch"):
        """A sentence tagger for a run's model (slow: loads torch; call from a worker)."""
        from pipelines.runtime.tagger import Tagger

        from .highlight import SentenceTagger

        path = run_id_or_dir
        if not os.path.isdir(path):
            with self._store() as store:
                record = store.find(run_id_or_dir)
            if record is None:
                raise ValueError(f"no run or directory {run_id_or_dir!r}")
            path = record.dir
        with self._model_lock:
            return SentenceTagger(Tagger.open(path, engine))

    # -- compare -----------------------------------------------------------------
    def compare_rows(self) -> list[compare.CompareRow]:
        return compare.collect_rows((r.id, r.name, r.dir) for r in self.runs())

    def export_table(self, rows: list[compare.CompareRow], fmt: str) -> str:
        """Write the table as Markdown or CSV (into ``export_dir``); returns the path."""
        text = compare.to_markdown(rows) if fmt == "md" else compare.to_csv(rows)
        path = os.path.join(self.export_dir, f"compare.{fmt}")
        write_text(path, text)
        return path

    # -- plots -------------------------------------------------------------------
    def run_curves(self, run_id: str) -> dict[str, list["Series"]]:  # noqa: F821
        """A run's curves by stage (training loss and quality, tuning), from its events.jsonl."""
        from pipelines.events import read_events

        from .series import curves_of

        curves = curves_of(read_events(os.path.join(self._run_dir(run_id), "events.jsonl")))
        return {stage: curves.series(stage) for stage in curves.stages()}

    def run_bench(self, run_id: str) -> dict | None:
        """A run's bench report (bench.json), None until its bench stage has results."""
        from pipelines.files import read_json

        report = read_json(os.path.join(self._run_dir(run_id), "bench.json"))
        return report if isinstance(report, dict) and report.get("results") else None

    def _run_dir(self, run_id: str) -> str:
        with self._store() as store:
            return store.get(run_id).dir

    # -- errors ------------------------------------------------------------------
    def predictions_files(self, run_id: str) -> list["PredictionsFile"]:
        """The run's saved predictions (``eval/*.predictions.jsonl``), the torch ones first."""
        from pipelines.evaluate.scoring import PREDICTIONS_SUFFIX, parse_stem
        from pipelines.layout import EVAL_DIR

        files = []
        for path in glob.glob(os.path.join(self._run_dir(run_id), EVAL_DIR, "*" + PREDICTIONS_SUFFIX)):
            name = os.path.basename(path)[: -len(PREDICTIONS_SUFFIX)]
            files.append(PredictionsFile(path, name, *parse_stem(name)))
        return sorted(files, key=lambda f: (f.split, f.engine != "torch", f.name))

    def error_report(self, path: str):
        """Entity errors of a predictions file (``pipelines.evaluate.errors.ErrorReport``)."""
        from pipelines.evaluate.errors import file_report

        return file_report(path)

    def engine_diff(self, path_a: str, path_b: str):
        """Where B's entities differ from A's (``pipelines.evaluate.errors.PredictionsDiff``);
        raises if the two files are not the same sentences."""
        from pipelines.evaluate.errors import diff_predictions

        return diff_predictions(path_a, path_b)

    # -- RPC devices -------------------------------------------------------------
    def default_tracker(self) -> str:
        """The TVM RPC tracker to list first: ``$NER_WORKBENCH_RPC`` (HOST:PORT), else none."""
        return os.environ.get(RPC_ENV, "").strip()

    def tracker_devices(self, address: str) -> list[dict]:
        """The devices of the TVM RPC tracker at ``address`` (HOST:PORT), per key: ``key``,
        ``total``, ``free``, ``pending`` (as ``ner-workbench devices``). A malformed address
        is a ``ConfigError``, a tracker that cannot be asked a ``RemoteError``, within about
        5 s: each one line naming it. Blocks on the network: call from a worker thread."""
        from pipelines.config import RpcConfig
        from pipelines.runtime.remote import tracker_devices

        return tracker_devices(RpcConfig.of(address, "any", source="RPC"))  # listing needs no key


@dataclass(frozen=True)
class PredictionsFile:
    path: str
    name: str  # the file's stem: test-ort-int8, test-torch@argmax
    split: str  # test; files of one split are predictions of the same sentences
    engine: str


def _metrics_line(metrics: dict) -> str:
    """A stage's scalar metrics, and the F1 of the scores it nests (eval's held-out news)
    right after its own F1, where the column still shows it."""
    parts, nested = [], []
    for key, value in metrics.items():
        if isinstance(value, float):
            parts.append(f"{key} {value:.4g}")
        elif isinstance(value, (int, str)):
            parts.append(f"{key} {value}")
        elif isinstance(value, dict) and isinstance(value.get("f1"), float):
            nested.append(f"{key}_f1 {value['f1']:.4g}")
    at = next((i + 1 for i, part in enumerate(parts) if part.startswith("f1 ")), len(parts))
    return "  ".join(parts[:at] + nested + parts[at:])


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _tail(path: str, lines: int) -> str:
    return "\n".join(_read_text(path).strip().splitlines()[-lines:])


def _artifacts(run_dir: str) -> list[tuple[str, int]]:
    """Files of a run, two levels deep, with sizes (temporary files skipped)."""
    found = []
    for root, dirs, files in os.walk(run_dir):
        depth = os.path.relpath(root, run_dir).count(os.sep) + (root != run_dir)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth < 2 else []
        for name in sorted(files):
            if not name.startswith("."):
                path = os.path.join(root, name)
                try:
                    found.append((os.path.relpath(path, run_dir), os.path.getsize(path)))
                except OSError:
                    continue
    return found
