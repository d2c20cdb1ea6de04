"""The run store: one directory per run, indexed by an SQLite registry (WAL).

The registry records runs and their stages with the pid that ran them. A process
killed mid-stage (even with SIGKILL) leaves its stage ``running`` with a dead pid;
the next time the store is opened that stage becomes ``interrupted``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import time
from dataclasses import dataclass, field

from pipelines.config import RunConfig
from pipelines.files import read_json

REGISTRY = "registry.sqlite"
UNFINISHED = ("failed", "interrupted")  # what `delete --unfinished` clears
DEFAULT_RUNS_DIR = "runs"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    dir TEXT NOT NULL,
    created REAL NOT NULL,
    config_path TEXT,
    model TEXT,
    dataset TEXT,
    status TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS stages (
    run_id TEXT NOT NULL REFERENCES runs(id),
    stage TEXT NOT NULL,
    status TEXT NOT NULL,
    pid INTEGER,
    started REAL,
    finished REAL,
    metrics TEXT,
    error TEXT,
    PRIMARY KEY (run_id, stage)
);
"""


@dataclass
class StageRecord:
    stage: str
    status: str
    started: float | None
    finished: float | None
    metrics: dict = field(default_factory=dict)
    error: str | None = None


@dataclass
class RunRecord:
    id: str
    name: str
    dir: str
    created: float
    config_path: str | None
    model: str | None
    dataset: str | None
    status: str
    stages: list[StageRecord] = field(default_factory=list)

    def stage(self, name: str) -> StageRecord | None:
        return next((s for s in self.stages if s.stage == name), None)

    def test_f1(self) -> float | None:
        """Entity F1 of the configured eval split, if the run got that far."""
        ev = self.stage("eval")
        return ev.metrics.get("f1") if ev and ev.metrics else None


def _owner(path: str, runs: list[RunRecord], skip: set[str]) -> RunRecord | None:
    """The run whose directory holds ``path`` (a model or checkpoint directory)."""
    path = os.path.abspath(path) if path else ""
    return next((r for r in runs if r.id not in skip and path.startswith(r.dir + os.sep)), None)


def model_label(record: RunRecord, runs: list[RunRecord]) -> str:
    """What a run started from, for people: its preset or hub id as configured, or for
    another run's weights "<the preset at the root of that chain> from <that run's
    name>" (e.g. "mini from mini-long") instead of a long path; plus "taught by <run>"
    when a distillation teacher came from another run."""
    model, source, seen = record.model or "", None, {record.id}
    while (owner := _owner(model, runs, seen)) is not None:
        seen.add(owner.id)
        source = source or owner.name
        model = owner.model or ""
    label = f"{model} from {source}" if source else model
    distill = record.stage("distill")
    teacher = _owner((distill.metrics or {}).get("teacher", ""), runs, {record.id}) if distill else None
    return f"{label} taught by {teacher.name}" if teacher and teacher.name != source else label


def default_runs_dir() -> str:
    return os.environ.get("NER_WORKBENCH_RUNS", DEFAULT_RUNS_DIR)


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed, not yet reaped by its parent) is not alive for our purposes.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


class RunBusy(ValueError):
    """The run's process is still working on it."""


class RunStore:
    def __init__(self, runs_dir: str | None = None) -> None:
        self.runs_dir = os.path.abspath(runs_dir or default_runs_dir())
        os.makedirs(self.runs_dir, exist_ok=True)
        self.db = sqlite3.connect(os.path.join(self.runs_dir, REGISTRY), timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self.recover()

    def close(self) -> None:
        self.db.close()

    # -- writing -----------------------------------------------------------------
    def create_run(self, cfg: RunConfig, config_path: str | None = None) -> RunRecord:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", cfg.name).strip("-") or "run"
        run_id = f"{stamp}-{slug}"
        n = 1
        while os.path.exists(os.path.join(self.runs_dir, run_id)):
            n += 1
            run_id = f"{stamp}-{slug}-{n}"
        run_dir = os.path.join(self.runs_dir, run_id)
        os.makedirs(run_dir)
        tmp = os.path.join(run_dir, ".config.yaml.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(cfg.to_yaml())
        os.replace(tmp, os.path.join(run_dir, "config.yaml"))
        model = cfg.model.pretrained or cfg.model.preset
        dataset = cfg.data.hub_id if cfg.data.source == "hub" else cfg.data.source
        self.db.execute(
            "INSERT INTO runs (id, name, dir, created, config_path, model, dataset, status) VALUES (?,?,?,?,?,?,?,?)",
            (run_id, cfg.name, run_dir, time.time(), config_path, model, dataset, "created"),
        )
        return self.get(run_id)

    def stage_started(self, run_id: str, stage: str) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO stages (run_id, stage, status, pid, started) VALUES (?,?,?,?,?)",
            (run_id, stage, "running", os.getpid(), time.time()),
        )
        self._set_status(run_id, "running")

    def stage_finished(self, run_id: str, stage: str, metrics: dict) -> None:
        self.db.execute(
            "UPDATE stages SET status='done', finished=?, metrics=? WHERE run_id=? AND stage=?",
            (time.time(), json.dumps(metrics), run_id, stage),
        )

    def stage_failed(self, run_id: str, stage: str, error: str, status: str = "failed") -> None:
        self.db.execute(
            "UPDATE stages SET status=?, finished=?, error=? WHERE run_id=? AND stage=?",
            (status, time.time(), error, run_id, stage),
        )
        self._set_status(run_id, status)

    def run_finished(self, run_id: str) -> None:
        self._set_status(run_id, "done")

    def _set_status(self, run_id: str, status: str) -> None:
        self.db.execute("UPDATE runs SET status=? WHERE id=?", (status, run_id))

    def recover(self) -> int:
        """Mark stages whose process died mid-way as interrupted; returns how many."""
        rows = self.db.execute("SELECT run_id, stage, pid FROM stages WHERE status='running'").fetchall()
        dead = [(run_id, stage) for run_id, stage, pid in rows if not pid_alive(pid)]
        for run_id, stage in dead:
            self.stage_failed(run_id, stage, "the process running this stage died (killed or crashed)", "interrupted")
        return len(dead)

    def delete_run(self, run_id: str) -> int:
        """Forget a run and remove its directory; returns the bytes freed. A run whose
        process is still alive is refused. The directory is renamed aside before the
        registry forgets the run, so a failure half way never leaves a half-deleted run
        under its own name; a directory outside the store is never removed."""
        record = self.get(run_id)
        pids = [pid for (pid,) in self.db.execute("SELECT pid FROM stages WHERE run_id=?", (run_id,))]
        if record.status in ("created", "running") and any(pid_alive(pid) for pid in pids):
            raise RunBusy(f"run {run_id} is still running: cancel it first")
        aside = None
        if os.path.isdir(record.dir) and os.path.dirname(os.path.abspath(record.dir)) == self.runs_dir:
            aside = os.path.join(self.runs_dir, f".deleting-{run_id}")
            os.replace(record.dir, aside)
        self.db.execute("DELETE FROM stages WHERE run_id=?", (run_id,))
        self.db.execute("DELETE FROM runs WHERE id=?", (run_id,))
        if aside is None:
            return 0
        freed = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(aside) for f in files)
        shutil.rmtree(aside, ignore_errors=True)
        return freed

    # -- reading -----------------------------------------------------------------
    def get(self, run_id: str) -> RunRecord:
        row = self.db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise KeyError(run_id)
        return self._record(row)

    def list_runs(self) -> list[RunRecord]:
        rows = self.db.execute("SELECT * FROM runs ORDER BY created DESC").fetchall()
        return [self._record(r) for r in rows]

    def find(self, ref: str) -> RunRecord | None:
        """A run by id, directory path, id prefix or name (the newest such run)."""
        path = os.path.abspath(ref)
        for record in self.list_runs():
            if ref == record.id or path == record.dir:
                return record
        matches = [r for r in self.list_runs() if r.id.startswith(ref) or r.name == ref]
        return matches[0] if matches and ref else None

    def _record(self, row: tuple) -> RunRecord:
        run = RunRecord(*row)
        stages = self.db.execute(
            "SELECT stage, status, started, finished, metrics, error FROM stages WHERE run_id=? ORDER BY started",
            (run.id,),
        ).fetchall()
        run.stages = [StageRecord(s, st, a, b, json.loads(m) if m else {}, e) for s, st, a, b, m, e in stages]
        return run

    def metrics(self, run: RunRecord) -> dict:
        return read_json(os.path.join(run.dir, "metrics.json"), {})
