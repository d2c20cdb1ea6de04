"""Training stages resume exactly: a stage stopped right after a checkpoint and run
again ends with the same steps and the same weights as one that was never stopped.

The stop is a crash raised at the fail point that follows a checkpoint write (the
SIGKILL version, through the CLI, is in test_faults.py); weights are compared tensor
by tensor, so a resume that redid a step, skipped a batch or lost the optimiser or
the random state of dropout fails here.
"""

from __future__ import annotations

import os

import pytest

from conftest import write_toy_corpus
from pipelines.config import parse_config
from pipelines.data.corpus import load_corpus
from pipelines.events import Reporter


class Crash(Exception):
    pass


def crash_after_checkpoints(monkeypatch, n: int) -> None:
    """The next run of a stage raises Crash right after its ``n``-th checkpoint write."""
    import pipelines.training.loop as loop

    seen = []

    def fail_point(point: str, detail: str = "") -> None:
        if point == "training.checkpoint_saved":
            seen.append(detail)
            if len(seen) == n:
                monkeypatch.setattr(loop, "fail_point", lambda *a, **k: None)  # the rerun goes through
                raise Crash(detail)

    monkeypatch.setattr(loop, "fail_point", fail_point)


def weights(model_dir: str) -> dict:
    import torch
    from safetensors.torch import load_file

    path = os.path.join(model_dir, "model.safetensors")
    return load_file(path) if os.path.isfile(path) else torch.load(os.path.join(model_dir, "pytorch_model.bin"))


def assert_same_weights(a: str, b: str) -> None:
    import torch

    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def run_twice(tmp_path, monkeypatch, stage, crash_at: int):
    """(uninterrupted result, run dir; interrupted-then-resumed result, run dir, its logs)."""
    whole = str(tmp_path / "whole")
    clean = stage(whole, Reporter())
    broken = str(tmp_path / "broken")
    crash_after_checkpoints(monkeypatch, crash_at)
    with pytest.raises(Crash):
        stage(broken, Reporter())
    logs = []
    resumed = stage(broken, Reporter(lambda e: logs.append(e.message) if e.kind == "log" else None))
    return clean, whole, resumed, broken, logs


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    corpus = str(tmp_path_factory.mktemp("resume") / "toy.txt")
    write_toy_corpus(corpus, copies=4)
    return corpus


def test_train_resumes_to_the_same_steps_and_weights(tmp_path, monkeypatch, toy_data):
    from pipelines.data.loaders import load_data
    from pipelines.training.train import CHECKPOINT_DIR, train

    cfg = parse_config({
        "data": {"source": "conll", "train": toy_data, "dev": toy_data, "test": toy_data},
        "model": {"preset": "tiny", "max_length": 16, "dropout": 0.1},  # dropout: the random state must resume too
        "train": {"epochs": 6, "batch_size": 4, "eval_every": 5, "learning_rate": 3e-3, "threads": 2},
    })
    data = load_data(cfg.data)
    clean, whole, resumed, broken, logs = run_twice(tmp_path, monkeypatch, lambda d, r: train(cfg, data, d, r), crash_at=2)
    assert clean["steps"] == resumed["steps"] == 24  # 16 windows / batch 4 x 6 epochs
    assert resumed["resumed_from"] == 10 and clean["resumed_from"] is None
    assert any("resuming from the checkpoint at step 10" in m for m in logs)
    assert (resumed["best_dev_f1"], resumed["best_step"]) == (clean["best_dev_f1"], clean["best_step"])
    assert_same_weights(os.path.join(whole, "model"), os.path.join(broken, "model"))
    # Every step taken: nothing is left to resume, and the checkpoint (three models' worth) is gone.
    assert not os.path.exists(os.path.join(broken, CHECKPOINT_DIR))


def test_pretrain_resumes_to_the_same_weights(tmp_path, monkeypatch):
    from pipelines.training.pretrain import PRETRAINED_DIR, pretrain

    corpus = tmp_path / "text.txt"
    corpus.write_text("\n".join(["新华社北京一月一日电", "国务院总理在人民大会堂作报告", "张三在北京工作"] * 6), encoding="utf-8")
    cfg = parse_config({
        "model": {"preset": "tiny"},
        "pretrain": {"sources": [f"file:{corpus}"], "steps": 9, "batch_size": 4, "max_length": 16,
                     "checkpoint_every": 3, "holdout": 2, "threads": 2},
    })
    sentences = load_corpus([f"file:{corpus}"])
    clean, whole, resumed, broken, logs = run_twice(tmp_path, monkeypatch, lambda d, r: pretrain(cfg, sentences, d, r), crash_at=2)
    assert clean["steps"] == resumed["steps"] == 9
    assert any("resuming from the checkpoint at step 6" in m for m in logs)
    assert_same_weights(os.path.join(whole, PRETRAINED_DIR), os.path.join(broken, PRETRAINED_DIR))


def test_distill_resumes_to_the_same_weights(tmp_path, monkeypatch, toy_run):
    from pipelines.data.loaders import load_data
    from pipelines.training.distill import DISTILLED_DIR, distill

    teacher, corpus = toy_run[0].dir, toy_run[3]
    text = tmp_path / "transfer.txt"
    text.write_text("\n".join(["张三在北京工作", "李四去了广州", "新华社报道了上海的消息"] * 4), encoding="utf-8")
    cfg = parse_config({
        "data": {"source": "conll", "train": corpus.train, "dev": corpus.dev, "test": corpus.test},
        "model": {"preset": "tiny", "max_length": 16},
        "distill": {"teacher": teacher, "sources": [f"file:{text}"], "steps": 10, "batch_size": 4, "max_length": 16,
                    "alpha": 0.5, "checkpoint_every": 4, "holdout": 2, "threads": 2},  # alpha: both batch streams resume
    })
    data, sentences = load_data(cfg.data), load_corpus([f"file:{text}"])
    from pipelines.modeling.models import resolve_model_dir

    stage = lambda d, r: distill(cfg, resolve_model_dir(teacher), sentences, data, d, r)  # noqa: E731
    clean, whole, resumed, broken, logs = run_twice(tmp_path, monkeypatch, stage, crash_at=1)
    assert clean["steps"] == resumed["steps"] == 10
    assert any("resuming from the checkpoint at step 4" in m for m in logs)
    assert_same_weights(os.path.join(whole, DISTILLED_DIR), os.path.join(broken, DISTILLED_DIR))
