"""The run store: one directory per run, indexed by an SQLite registry (WAL).

The registry records runs and their stages with the process that ran them (its pid
and its start time, so a pid reused by another process is not taken for the run's).
A process killed mid-stage (even with SIGKILL) leaves its stage ``running``; a
process killed between its last stage and closing the run leaves the run
``running``. The next writer that opens the store records the truth (``interrupted``,
or ``done`` when every planned stage finished); a read-only store (the TUI's
pollers) shows the same truth without writing it. Every multi-statement change is
one transaction.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

from pipelines.config import RunConfig
from pipelines.files import read_json, repair_leftovers, write_text
from pipelines.layout import CONFIG_FILE

REGISTRY = "registry.sqlite"
UNFINISHED = ("failed", "interrupted")  # what `delete --unfinished` clears
DEFAULT_RUNS_DIR = "runs"
BUSY_TIMEOUT_S = 30  # how long a writer waits for another one

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    dir TEXT NOT NULL,
    created REAL NOT NULL,
    config_path TEXT,
    model TEXT,
    dataset TEXT,
    status TEXT NOT NULL,
    pid INTEGER,
    pid_start INTEGER,
    planned TEXT
);
CREATE TABLE IF NOT EXISTS stages (
    run_id TEXT NOT NULL REFERENCES runs(id),
    stage TEXT NOT NULL,
    status TEXT NOT NULL,
    pid INTEGER,
    pid_start INTEGER,
    started REAL,
    finished REAL,
    metrics TEXT,
    error TEXT,
    PRIMARY KEY (run_id, stage)
);
"""
# Columns added after the first release: a registry made before gets them on open.
_ADDED_COLUMNS = {"runs": ("pid INTEGER", "pid_start INTEGER", "planned TEXT"), "stages": ("pid_start INTEGER",)}
_RUN_COLUMNS = "id, name, dir, created, config_path, model, dataset, status, pid, pid_start, planned"
_DIED = "the process running this stage died (killed or crashed)"


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
    pid: int | None = None
    pid_start: int | None = None
    planned: list[str] | None = None  # the stages the process running it meant to run
    stages: list[StageRecord] = field(default_factory=list)

    def stage(self, name: str) -> StageRecord | None:
        return next((s for s in self.stages if s.stage == name), None)

    def test_f1(self) -> float | None:
        """Entity F1 of the configured eval split, if the run got that far."""
        ev = self.stage("eval")
        return ev.metrics.get("f1") if ev and ev.metrics else None


def _owner(path: str, runs: list[RunRecord], skip: set[str]) -> RunRecord | None:
    """The run whose directory holds ``path`` (a model or checkpoint directory): by its
    directory, or by its id as a folder of the path, since a copied or moved store's
    records keep the paths where their runs were made."""
    path = os.path.abspath(path) if path else ""
    folders = path.split(os.sep)[:-1]
    return next((r for r in runs if r.id not in skip and (path.startswith(r.dir + os.sep) or r.id in folders)), None)


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
    taught = (distill.metrics or {}).get("teacher", "") if distill else ""
    teachers = [_owner(path, runs, {record.id}) for path in (taught if isinstance(taught, list) else [taught])]
    names = [t.name for t in teachers if t and t.name != source]
    return f"{label} taught by {' + '.join(names)}" if names else label


def default_runs_dir() -> str:
    return os.environ.get("NER_WORKBENCH_RUNS", DEFAULT_RUNS_DIR)


def process_start(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), None if no such process. With the
    pid it names one process: a pid the kernel reused belongs to another start time."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else int(fields[19])  # a zombie is not alive for our purposes


def this_process() -> tuple[int, int | None]:
    return os.getpid(), process_start(os.getpid())


def pid_alive(pid: int | None, started: int | None = None) -> bool:
    """Whether process ``pid`` (the one that started at ``started``, if given) still runs."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    now = process_start(pid)
    if now is None:
        return not os.path.isdir("/proc/self")  # no /proc (not Linux): trust kill(0)
    return started is None or now == started


def _enable_wal(db: sqlite3.Connection) -> None:
    """Switch a registry to WAL. Two processes opening a new registry at once race for
    the switch, and SQLite answers the loser "database is locked" at once, without its
    busy timeout (seen: 1 open in 20 failed when two jobs started together): retry."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class RunBusy(ValueError):
    """The run's process is still working on it."""


class RunStore:
    def __init__(self, runs_dir: str | None = None, readonly: bool = False) -> None:
        """``readonly``: for pollers. Opens nothing for writing, runs no schema change or
        recovery, and shows every run in its true state all the same."""
        self.runs_dir = os.path.abspath(runs_dir or default_runs_dir())
        self.readonly = readonly
        path = os.path.join(self.runs_dir, REGISTRY)
        if readonly:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{path}: no run store yet")
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            return
        os.makedirs(self.runs_dir, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        _enable_wal(self.db)
        self.db.execute("PRAGMA synchronous=NORMAL")
        with self._transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self.db.execute(statement)
            for table, columns in _ADDED_COLUMNS.items():
                have = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
                for column in columns:
                    if column.split()[0] not in have:
                        self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
        self.recover()

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One all-or-nothing change; IMMEDIATE takes the write lock up front, so two
        writers queue (busy timeout) instead of failing half way."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- writing -----------------------------------------------------------------
    def _new_id(self, name: str) -> str:
        """``<YYYYmmdd-HHMMSS>-<name>``, numbered when a run or directory of that id exists."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"
        run_id = f"{stamp}-{slug}"
        n = 1
        while os.path.exists(os.path.join(self.runs_dir, run_id)) or self._has(run_id):
            n += 1
            run_id = f"{stamp}-{slug}-{n}"
        return run_id

    def _has(self, run_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM runs WHERE id=?", (run_id,)).fetchone() is not None

    def _insert_run(self, run_id: str, cfg: RunConfig, run_dir: str, config_path: str | None, status: str,
                    pid: int | None = None, pid_start: int | None = None, planned: list[str] | None = None) -> None:
        model = cfg.model.pretrained or cfg.model.preset
        dataset = cfg.data.hub_id if cfg.data.source == "hub" else cfg.data.source
        self.db.execute(
            "INSERT INTO runs (id, name, dir, created, config_path, model, dataset, status, pid, pid_start, planned)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (run_id, cfg.name, run_dir, time.time(), config_path, model, dataset, status, pid, pid_start,
             json.dumps(planned) if planned is not None else None),
        )

    def create_run(self, cfg: RunConfig, config_path: str | None = None) -> RunRecord:
        run_id = self._new_id(cfg.name)
        run_dir = os.path.join(self.runs_dir, run_id)
        os.makedirs(run_dir)
        write_text(os.path.join(run_dir, CONFIG_FILE), cfg.to_yaml())
        self._insert_run(run_id, cfg, run_dir, config_path, "created", *this_process())
        return self.get(run_id)

    def register_run(
        self,
        cfg: RunConfig,
        stages: dict[str, tuple[float, dict]],
        place: Callable[[str], str],
        duplicate: Callable[[list[RunRecord]], RunRecord | None] = lambda runs: None,
    ) -> tuple[RunRecord, bool]:
        """Record a finished run made elsewhere (``ner-workbench import``): done, with
        ``stages`` ({stage: (when it finished, metrics)}) done. In one transaction, so two
        imports of one directory cannot both record it: ``duplicate(runs)`` names a run
        that already holds it (then nothing is recorded and it is returned with False);
        else ``place(run_id)`` puts the directory where the run lives and returns it."""
        with self._transaction():
            existing = duplicate(self.list_runs())
            if existing is not None:
                return existing, False
            run_id = self._new_id(cfg.name)
            run_dir = os.path.abspath(place(run_id))
            self._insert_run(run_id, cfg, run_dir, None, "done", planned=list(stages))
            for stage, (finished, metrics) in stages.items():
                self.db.execute(
                    "INSERT INTO stages (run_id, stage, status, started, finished, metrics) VALUES (?,?,?,?,?,?)",
                    (run_id, stage, "done", finished, finished, json.dumps(metrics)),
                )
        return self.get(run_id), True

    def run_started(self, run_id: str, stages: list[str]) -> None:
        """This process now runs ``stages`` of the run: if it dies before closing the run,
        recovery says ``done`` when all of them finished, else ``interrupted``."""
        pid, pid_start = this_process()
        self.db.execute(
            "UPDATE runs SET status='running', pid=?, pid_start=?, planned=? WHERE id=?",
            (pid, pid_start, json.dumps(list(stages)), run_id),
        )

    def stage_started(self, run_id: str, stage: str) -> None:
        pid, pid_start = this_process()
        with self._transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO stages (run_id, stage, status, pid, pid_start, started) VALUES (?,?,?,?,?,?)",
                (run_id, stage, "running", pid, pid_start, time.time()),
            )
            self._set_status(run_id, "running")

    def stage_finished(self, run_id: str, stage: str, metrics: dict) -> None:
        self.db.execute(
            "UPDATE stages SET status='done', finished=?, metrics=? WHERE run_id=? AND stage=?",
            (time.time(), json.dumps(metrics), run_id, stage),
        )

    def stage_failed(self, run_id: str, stage: str, error: str, status: str = "failed") -> None:
        with self._transaction():
            self._stage_failed(run_id, stage, error, status)

    def _stage_failed(self, run_id: str, stage: str, error: str, status: str) -> None:
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
        """Record the truth about runs whose process died; returns how many changed."""
        with self._transaction():
            changes = self._dead_work()
            for run_id, stage, status in changes:
                if stage is not None:
                    self._stage_failed(run_id, stage, _DIED, status)
                else:
                    self._set_status(run_id, status)
        for run_id, stage, _ in changes:
            if stage is None:
                self.clear_leftovers(run_id)
        return len(changes)

    def clear_leftovers(self, run_id: str) -> list[str]:
        """Undo what killed writers left in a run's directory (a directory moved aside
        goes back, temporaries go: ``pipelines.files.repair_leftovers``), unless a live
        stage still writes there. Returns what it did."""
        running = self.db.execute("SELECT pid, pid_start FROM stages WHERE run_id=? AND status='running'", (run_id,)).fetchall()
        row = self.db.execute("SELECT dir FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None or any(pid_alive(pid, start) for pid, start in running) or not os.path.isdir(row[0]):
            return []
        return repair_leftovers(row[0])

    def _dead_work(self, run_ids: list[str] | None = None) -> list[tuple[str, str | None, str]]:
        """(run, stage or None for the run itself, true status) for work whose process died:
        a stage still ``running`` is ``interrupted``; a run still ``created`` or ``running``
        with no live stage is ``done`` if every stage it planned finished, else ``interrupted``."""
        where = "" if run_ids is None else f" AND id IN ({','.join('?' * len(run_ids))})"
        runs = self.db.execute(
            f"SELECT id, status, pid, pid_start, planned FROM runs WHERE status IN ('created', 'running'){where}",
            run_ids or (),
        ).fetchall()
        changes = []
        for run_id, status, pid, pid_start, planned in runs:
            stages = self.db.execute("SELECT stage, status, pid, pid_start FROM stages WHERE run_id=?", (run_id,)).fetchall()
            running = [(stage, p, s) for stage, st, p, s in stages if st == "running"]
            if any(pid_alive(p, s) for _, p, s in running) or (pid and pid_alive(pid, pid_start)):
                continue
            if pid is None and not running:
                continue  # made before runs recorded their process: nothing to judge it by
            changes += [(run_id, stage, "interrupted") for stage, _, _ in running]
            finished = {stage for stage, st, _, _ in stages if st == "done"}
            all_done = not running and planned is not None and set(json.loads(planned)) <= finished
            changes.append((run_id, None, "done" if all_done else "interrupted"))
        return changes

    def delete_run(self, run_id: str) -> int:
        """Forget a run and remove its directory; returns the bytes freed. A run whose
        process is still alive is refused. The directory is renamed aside before the
        registry forgets the run, so a failure half way never leaves a half-deleted run
        under its own name; a directory outside the store is never removed."""
        self.recover()  # a run whose process died since this store was opened is not busy
        record = self.get(run_id)
        if record.status in ("created", "running") and (
            any(s.status == "running" for s in record.stages) or (record.pid, record.pid_start) != this_process()
        ):
            # (A run this very process made and runs no stage of is not busy: its caller decides.)
            raise RunBusy(f"run {run_id} is still running: cancel it first")
        aside = None
        if os.path.isdir(record.dir) and os.path.dirname(os.path.abspath(record.dir)) == self.runs_dir:
            aside = os.path.join(self.runs_dir, f".deleting-{run_id}")
            os.replace(record.dir, aside)
        with self._transaction():
            self.db.execute("DELETE FROM stages WHERE run_id=?", (run_id,))
            self.db.execute("DELETE FROM runs WHERE id=?", (run_id,))
        if aside is None:
            return 0
        freed = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(aside) for f in files)
        shutil.rmtree(aside, ignore_errors=True)
        return freed

    # -- reading -----------------------------------------------------------------
    def get(self, run_id: str) -> RunRecord:
        row = self.db.execute("SELECT " + _RUN_COLUMNS + " FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise KeyError(run_id)
        return self._record(row)

    def list_runs(self) -> list[RunRecord]:
        rows = self.db.execute("SELECT " + _RUN_COLUMNS + " FROM runs ORDER BY created DESC").fetchall()
        return [self._record(r) for r in rows]

    def find(self, ref: str, prefix: bool = True) -> RunRecord | None:
        """A run by id, directory path or name (the newest such run), or with ``prefix``
        by id prefix too. Deleting takes no prefix unless asked: `delete 2` must not
        remove the newest run whose id happens to start with 2."""
        if not ref:
            return None
        path = os.path.abspath(ref)
        runs = self.list_runs()
        for record in runs:
            if ref == record.id or path == record.dir:
                return record
        matches = [r for r in runs if r.name == ref or (prefix and r.id.startswith(ref))]
        return matches[0] if matches else None

    def _record(self, row: tuple) -> RunRecord:
        run = RunRecord(*row[:8], row[8], row[9], json.loads(row[10]) if row[10] else None)
        here = os.path.join(self.runs_dir, run.id)
        if run.dir != here and os.path.isdir(here):
            # A store copied or moved elsewhere: its runs are the ones beside it (the
            # recorded path is where they were made, and stages would write there).
            run.dir = here
        stages = self.db.execute(
            "SELECT stage, status, started, finished, metrics, error FROM stages WHERE run_id=? ORDER BY started",
            (run.id,),
        ).fetchall()
        run.stages = [StageRecord(s, st, a, b, json.loads(m) if m else {}, e) for s, st, a, b, m, e in stages]
        if self.readonly and run.status in ("created", "running"):
            # What recovery would record, shown without writing it.
            for _, stage, status in self._dead_work([run.id]):
                if stage is None:
                    run.status = status
                else:
                    found = run.stage(stage)
                    found.status, found.error = status, _DIED
        return run

    def metrics(self, run: RunRecord) -> dict:
        return read_json(os.path.join(run.dir, "metrics.json"), {})
