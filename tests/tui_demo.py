"""A fixed workspace (runs, jobs, configs) and a fake tagger, for deterministic snapshots:
fixed ids, times and sizes, so nothing on screen depends on when or where tests run."""

from __future__ import annotations

import json
import os
import sqlite3

from pipelines.runtime.predict import Entity
from workbench.backend import Backend
from workbench.highlight import SentenceTagger
from workbench.store import RunStore

CONFIG = """\
# A demo config for the snapshots.
name: quickstart
stages: [train, export, eval]
data:
  source: msra
model:
  preset: tiny
  max_length: 128
train:
  epochs: 6
  batch_size: 32
"""

RUNS = [
    # id, name, created, model, dataset, status, stages [(stage, status, started, finished, metrics, error)]
    (
        "20260101-090000-quickstart", "quickstart", 1000.0, "tiny", "msra", "done",
        [
            ("train", "done", 1000.0, 1460.0, {"best_dev_f1": 0.8012, "epochs": 6, "tokens_per_s": 5400}, None),
            ("export", "done", 1460.0, 1475.5, {"torchscript_max_abs_diff": 1.2e-6}, None),
            ("eval", "done", 1475.5, 1490.0, {"f1": 0.7911, "precision": 0.8, "recall": 0.78, "accuracy": 0.9812}, None),
        ],
    ),
    (
        "20260102-100000-broken", "broken", 2000.0, "mini", "conll", "failed",
        [("train", "failed", 2000.0, 2003.0, {}, "data: no such file toy.txt")],
    ),
]


def _scores(f1: float, acc: float, engine: str) -> dict:
    per_type = {t: {"precision": f1, "recall": f1, "f1": round(f1 + d, 4), "support": 100} for t, d in (("LOC", 0.03), ("ORG", -0.08), ("PER", 0.02))}
    return {"precision": f1, "recall": f1, "f1": f1, "accuracy": acc, "per_type": per_type, "sentences": 4631,
            "tokens": 170000, "mode": "default", "engine": engine, "split": "test", "seconds": 9.3}


def make_workspace(root: str) -> tuple[str, str]:
    """Creates ``root/runs`` and ``root/configs``; returns their paths."""
    runs_dir, configs_dir = os.path.join(root, "runs"), os.path.join(root, "configs")
    os.makedirs(configs_dir)
    with open(os.path.join(configs_dir, "quickstart.yaml"), "w", encoding="utf-8") as f:
        f.write(CONFIG)
    RunStore(runs_dir).close()  # the schema
    db = sqlite3.connect(os.path.join(runs_dir, "registry.sqlite"), isolation_level=None)
    for run_id, name, created, model, dataset, status, stages in RUNS:
        run_dir = os.path.join(runs_dir, run_id)
        os.makedirs(run_dir)
        with open(os.path.join(run_dir, "config.yaml"), "w", encoding="utf-8") as f:
            f.write(CONFIG.replace("name: quickstart", f"name: {name}"))
        db.execute("INSERT INTO runs (id, name, dir, created, config_path, model, dataset, status) VALUES (?,?,?,?,?,?,?,?)", (run_id, name, run_dir, created, None, model, dataset, status))
        for stage, st, started, finished, metrics, error in stages:
            db.execute("INSERT INTO stages (run_id, stage, status, pid, started, finished, metrics, error) VALUES (?,?,?,?,?,?,?,?)", (run_id, stage, st, None, started, finished, json.dumps(metrics), error))
    good = os.path.join(runs_dir, RUNS[0][0])
    for sub, files in (("model", {"config.json": 700, "model.safetensors": 12_800_000, "workbench.json": 120}), ("export", {"model.ts": 13_100_000})):
        os.makedirs(os.path.join(good, sub))
        for name, size in files.items():
            with open(os.path.join(good, sub, name), "wb") as f:
                f.truncate(size)  # sparse: the size is what the screens show
    os.makedirs(os.path.join(good, "eval"))
    for engine, f1, acc in (("torch", 0.7911, 0.9812), ("torchscript", 0.7909, 0.9813)):
        with open(os.path.join(good, "eval", f"test-{engine}.json"), "w") as f:
            json.dump(_scores(f1, acc, engine), f)
    bench = [
        {"engine": e, "batch": 1, "seq": 128, "latency_ms": {"p50": p50, "p99": round(p50 * 1.3, 3)},
         "throughput": {"sentences_per_s": round(1000 / p50, 2)}, "artifact_mb": mb, "compile_s": cs}
        for e, p50, mb, cs in (("torch", 6.2, 12.2, None), ("torchscript", 5.1, 12.5, None), ("ort", 2.4, 12.3, None),
                               ("tvm-fp32", 1.9, 13.0, 41.5), ("tvm-fp16", 1.6, 6.6, 44.0))
    ]
    with open(os.path.join(good, "bench.json"), "w") as f:
        json.dump({"results": bench}, f)
    with open(os.path.join(runs_dir, RUNS[1][0], "error.log"), "w") as f:
        f.write("Traceback (most recent call last):\n  ...\nDataError: data: no such file toy.txt\n")
    _make_job(runs_dir, "20260101-090000-000001", ["run", "configs/quickstart.yaml"], "run quickstart.yaml", 0)
    _make_job(runs_dir, "20260102-100000-000002", ["train", "configs/broken.yaml"], "train broken.yaml", 1)
    return runs_dir, configs_dir


def _make_job(runs_dir: str, job_id: str, argv: list, title: str, rc: int) -> None:
    job_dir = os.path.join(runs_dir, "jobs", job_id)
    os.makedirs(job_dir)
    t = 1000.0
    events = [{"kind": "started", "stage": "train", "time": t, "message": "run demo"}]
    events += [
        {"kind": "progress", "stage": "train", "time": t + i * 10, "n": i * 50, "total": 300, "unit": "steps",
         "data": {"epoch": i, "loss": round(1.0 / (i + 1), 4), "tokens_per_s": 5400}}
        for i in range(1, 7)
    ]
    events.append({"kind": "log", "stage": "train", "time": t + 61, "message": "best dev F1 0.8012 at epoch 6"})
    events.append({"kind": "finished", "stage": "train", "time": t + 62} if rc == 0 else {"kind": "failed", "stage": "train", "time": t + 62, "message": "data: no such file toy.txt"})
    with open(os.path.join(job_dir, "events.jsonl"), "w") as f:
        f.writelines(json.dumps(e) + "\n" for e in (events if rc == 0 else events[:3] + events[-1:]))
    with open(os.path.join(job_dir, "job.json"), "w") as f:
        json.dump({"argv": argv, "title": title, "created": t - 5}, f)
    with open(os.path.join(job_dir, "output.log"), "w") as f:
        f.write("error: data: no such file toy.txt\n" if rc else "results: runs/20260101-090000-quickstart\n")
    with open(os.path.join(job_dir, "exit.json"), "w") as f:
        json.dump({"returncode": rc, "finished": t + 63}, f)


class FakeTagger:
    """Knows three names; deterministic, no torch."""

    NAMES = {"张三": "PER", "北京": "LOC", "新华社": "ORG"}

    def tag(self, text: str) -> list:
        found = []
        for name, etype in self.NAMES.items():
            i = text.find(name)
            if i >= 0:
                found.append(Entity(etype, i, i + len(name), name, 0.9))
        return sorted(found, key=lambda e: e.start)


class StepClock:
    """Each reading 2 ms after the last: latencies are exactly 2.0 ms."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 0.002
        return self.t


class DemoBackend(Backend):
    """Pinned to today's commands and engines, so snapshots don't move when the CLI grows."""

    def cli_commands(self) -> set[str]:
        return {"run", "train", "export", "eval", "infer", "compile", "bench", "report", "pretrain", "validate", "tag", "runs", "tui"}

    def engine_names(self) -> tuple[str, ...]:
        return ("torch", "torchscript", "ort", "ort-int8", "tvm-fp32", "tvm-fp16")

    def open_tagger(self, run_id_or_dir: str, engine: str = "torch"):
        return SentenceTagger(FakeTagger(), clock=StepClock())
