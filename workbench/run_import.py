"""`ner-workbench import`: a run directory made by another store (another machine) becomes
a run of this one, so `export`, `compile`, `bench`, `eval` and the TUI work on it.

A run directory is one with ``config.yaml`` and ``model/``. It is copied into the store
under a new id (the store owns the copy: `delete` removes it, the source is never
written), or, with ``in_place`` or when it already lies in the runs directory,
registered where it is (stages then write their artifacts there, and `delete` forgets
it without removing a directory outside the store). Its record is ``done``, with a
stage ``done`` for each artifact it holds (its metrics from its ``metrics.json``).

The same run is never recorded twice: not the same directory, and not the same model
(``model_fingerprint``: config, weights, labels), which ``imported.json`` keeps.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
import time

from pipelines.files import read_json, write_json
from pipelines.layout import (
    BENCH_FILE, CONFIG_FILE, EVAL_DIR, EXPORT_DIR, EXPORT_META, IMPORT_FILE, METRICS_FILE, MODEL_DIR,
)

from .store import RunRecord, RunStore


class NotARunDir(ValueError):
    """The directory is not a run: one line naming what it lacks."""


def missing_parts(path: str) -> list[str]:
    """What the directory ``path`` lacks to be a run directory (empty: it is one)."""
    parts = ((CONFIG_FILE, os.path.isfile), (MODEL_DIR + "/", os.path.isdir))
    return [name for name, exists in parts if not exists(os.path.join(path, name.rstrip("/")))]


def _evidence(run_dir: str) -> dict[str, str]:
    """Stage -> the file that shows it finished, in stage order, for each one the run did."""
    from pipelines.runtime.engines import compiled_artifacts

    found = {
        "train": os.path.join(run_dir, MODEL_DIR),
        "export": os.path.join(run_dir, EXPORT_DIR, EXPORT_META),
        "eval": next(iter(sorted(glob.glob(os.path.join(run_dir, EVAL_DIR, "*.json")))), ""),  # SPLIT-ENGINE.json scores
        "compile": next(iter(compiled_artifacts(run_dir, "tvm-*")), ""),
        "bench": os.path.join(run_dir, BENCH_FILE),
    }
    return {stage: path for stage, path in found.items() if path and os.path.exists(path)}


def finished_stages(run_dir: str) -> dict[str, tuple[float, dict]]:
    """{stage: (when its artifact was written, its metrics)} for the artifacts the run holds."""
    metrics = read_json(os.path.join(run_dir, METRICS_FILE), {}) or {}
    return {stage: (os.path.getmtime(path), metrics.get(stage) or {}) for stage, path in _evidence(run_dir).items()}


def _same_dir(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None


def _holder(runs: list[RunRecord], source: str, fingerprint: str, config_text: str, deep: bool) -> tuple[RunRecord, str] | None:
    """(the run that already holds ``source``, how it is known) or None. ``deep``: also
    fingerprint this store's own runs whose config is the same text (runs made here keep no
    fingerprint, and hashing every run's weights would cost seconds per big model)."""
    from pipelines.modeling.models import model_fingerprint

    for run in runs:
        if _same_dir(run.dir, source):
            return run, "the same directory"
    for run in runs:
        if (read_json(os.path.join(run.dir, IMPORT_FILE), {}) or {}).get("fingerprint") == fingerprint:
            return run, "the same model"
    if deep:
        for run in runs:
            model = os.path.join(run.dir, MODEL_DIR)
            if _text(os.path.join(run.dir, CONFIG_FILE)) == config_text and os.path.isdir(model) and model_fingerprint(model) == fingerprint:
                return run, "the same model"
    return None


def import_run(store: RunStore, source: str, in_place: bool = False) -> tuple[RunRecord, bool, str]:
    """Make the run directory ``source`` a run of ``store``: (the run, whether it is new,
    how: "copied" or "registered in place", or for a run already there how it was known:
    "the same directory", "the same model"). Raises NotARunDir, or ConfigError for a
    config this version cannot read."""
    from pipelines.config import load_config
    from pipelines.modeling.models import model_fingerprint

    source = os.path.abspath(source)
    if not os.path.isdir(source):
        raise NotARunDir(f"{source}: no such directory")
    missing = missing_parts(source)
    if missing:
        raise NotARunDir(f"{source}: not a run directory (missing {' and '.join(missing)})")
    cfg = load_config(os.path.join(source, CONFIG_FILE))
    config_text = _text(os.path.join(source, CONFIG_FILE)) or ""
    fingerprint = model_fingerprint(os.path.join(source, MODEL_DIR))
    found = _holder(store.list_runs(), source, fingerprint, config_text, deep=True)
    if found:
        return found[0], False, found[1]
    in_place = in_place or _same_dir(os.path.dirname(source), store.runs_dir)
    staged = None
    if not in_place:  # copied beside the runs, renamed into place once recorded
        staged = tempfile.mkdtemp(prefix=".importing-", dir=store.runs_dir)
        shutil.copytree(source, staged, dirs_exist_ok=True)  # links followed: the copy stands alone
    origin = {"source": source, "fingerprint": fingerprint, "copied": not in_place, "imported": time.time()}
    stages = finished_stages(staged or source)

    def place(run_id: str) -> str:
        target = source if in_place else os.path.join(store.runs_dir, run_id)
        if staged:
            os.rename(staged, target)
        write_json(os.path.join(target, IMPORT_FILE), origin)
        return target

    try:
        record, new = store.register_run(cfg, stages, place, lambda runs: (_holder(runs, source, fingerprint, config_text, deep=False) or (None,))[0])
    finally:
        if staged and os.path.isdir(staged):  # not recorded (imported meanwhile, or failed)
            shutil.rmtree(staged, ignore_errors=True)
    if not new:
        return record, False, "imported meanwhile"
    return record, True, "registered in place" if in_place else "copied"
