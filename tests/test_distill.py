"""Pre-trained distillation: the loss, one step, and the stage end to end into train."""

import copy
import os

import numpy as np
import pytest

from pipelines.config import ConfigError, parse_config
from pipelines.training.distill import DISTILLED_DIR, check_same_vocab, kd_loss, label_order
from pipelines.modeling.models import ModelError, bert_config

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def tiny_model(seed):
    import torch
    from transformers import BertForTokenClassification

    torch.manual_seed(seed)
    return BertForTokenClassification(bert_config("tiny", 200, LABELS, 32, dropout=0.0))


def batch():
    import torch

    ids = torch.from_numpy(np.random.default_rng(0).integers(5, 200, size=(4, 12)))
    return ids, torch.ones_like(ids)


def test_the_loss_is_zero_when_the_student_is_the_teacher():
    import torch

    teacher = tiny_model(0).eval()
    student = copy.deepcopy(teacher)
    ids, mask = batch()
    with torch.no_grad():
        target = teacher(input_ids=ids, attention_mask=mask).logits.reshape(-1, len(LABELS))
    for t in (1.0, 2.0, 4.0):
        loss = kd_loss(student(input_ids=ids, attention_mask=mask).logits.reshape(-1, len(LABELS)), target, t)
        assert loss.item() == 0.0
    other = tiny_model(1).eval()
    assert kd_loss(other(input_ids=ids, attention_mask=mask).logits.reshape(-1, len(LABELS)), target, 2.0).item() > 0


def test_one_step_lowers_the_distillation_loss():
    import torch

    teacher, student = tiny_model(0).eval(), tiny_model(1)
    ids, mask = batch()
    with torch.no_grad():
        target = teacher(input_ids=ids, attention_mask=mask).logits.reshape(-1, len(LABELS))

    def loss():
        return kd_loss(student(input_ids=ids, attention_mask=mask).logits.reshape(-1, len(LABELS)), target, 2.0)

    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-3)
    before = loss()
    before.backward()
    optimizer.step()
    with torch.no_grad():
        assert loss().item() < before.item()


def test_labels_are_matched_by_name_and_vocabularies_must_agree():
    assert label_order(["O", "B-LOC", "I-LOC", "B-PER", "I-PER"], LABELS) == [0, 3, 4, 1, 2]
    with pytest.raises(ModelError, match="teacher's labels"):
        label_order(["O", "B-ORG", "I-ORG"], LABELS)

    class Tok:
        def __init__(self, vocab):
            self.vocab = vocab

        def get_vocab(self):
            return self.vocab

    check_same_vocab(Tok({"a": 0}), Tok({"a": 0}), "t")
    with pytest.raises(ModelError, match="different vocabularies"):
        check_same_vocab(Tok({"a": 0, "b": 1}), Tok({"a": 0}), "t")


def test_config_needs_a_teacher_and_the_order_pretrain_distill_train():
    with pytest.raises(ConfigError, match="set distill.teacher"):
        parse_config({"stages": ["distill", "train"]})
    with pytest.raises(ConfigError, match="distill must come after pretrain and before train"):
        parse_config({"stages": ["train", "distill"], "distill": {"teacher": "runs/x"}})
    cfg = parse_config({"stages": ["pretrain", "distill", "train"], "distill": {"teacher": "runs/x"}})
    assert cfg.distill.temperature == 2.0 and cfg.distill.alpha == 0.0


def test_distill_then_train_starts_from_the_student(toy_run, tmp_path):
    from workbench.runner import execute
    from workbench.store import RunStore

    teacher_run, _, _, corpus, _ = toy_run
    text = tmp_path / "transfer.txt"
    text.write_text("\n".join(["张三在北京工作", "李四去了广州", "新华社报道了上海的消息"] * 4), encoding="utf-8")
    cfg = parse_config(
        {
            "name": "distilled",
            "stages": ["distill", "train"],
            "data": corpus.data(),
            "model": {"preset": "tiny", "max_length": 16},
            "distill": {"teacher": teacher_run.dir, "sources": [f"file:{text}"], "steps": 12, "batch_size": 4,
                        "max_length": 16, "alpha": 0.5, "checkpoint_every": 6, "holdout": 4, "threads": 2},
            "train": {"epochs": 1, "batch_size": 8, "threads": 2},
        }
    )
    store = RunStore(str(tmp_path / "runs"))
    run = store.create_run(cfg)
    events = []
    results = execute(cfg, store, run, cfg.stages, [events.append])
    distilled = results["distill"]
    assert distilled["steps"] == 12 and 0.0 <= distilled["teacher_agreement"] <= 1.0
    assert 0 < distilled["teacher_share"] < 1
    progress = [e for e in events if e.kind == "progress" and e.stage == "distill"]
    assert progress[-1].n == 12 and {"loss", "tokens_per_s"} <= set(progress[-1].data)
    student = os.path.join(run.dir, DISTILLED_DIR)
    assert os.path.isfile(os.path.join(student, "config.json"))
    logs = [e.message for e in events if e.kind == "log" and e.stage == "train"]
    assert any(f"starting from this run's distill weights ({student})" in m for m in logs)
    from pipelines.modeling.models import ModelMeta

    assert ModelMeta.load(os.path.join(run.dir, "model")).source == student


def test_cli_finds_the_teacher_and_the_starting_weights_by_run_name(toy_run, tmp_path):
    import shutil

    import yaml

    from workbench.cli import main
    from workbench.store import RunStore

    corpus = toy_run[3]
    runs = str(tmp_path / "runs")
    teacher = RunStore(runs).create_run(parse_config({"name": "teacher"}))
    shutil.copytree(os.path.join(toy_run[0].dir, "model"), os.path.join(teacher.dir, "model"))
    config = tmp_path / "student.yaml"
    config.write_text(yaml.safe_dump({
        "name": "student",
        "data": corpus.data(),
        "model": {"preset": "tiny", "max_length": 16, "pretrained": "teacher"},  # self-distillation
        "distill": {"teacher": "teacher", "sources": [f"file:{corpus.train}"], "steps": 2, "batch_size": 4,
                    "max_length": 16, "holdout": 2, "threads": 2},
    }), encoding="utf-8")
    assert main(["distill", str(config), "--runs-dir", runs, "--quiet"]) == 0
    student = RunStore(runs).find("student")
    assert [(s.stage, s.status) for s in student.stages] == [("distill", "done")]
    saved = yaml.safe_load(open(os.path.join(student.dir, "config.yaml"), encoding="utf-8"))
    assert saved["distill"]["teacher"] == teacher.dir
    assert saved["model"]["pretrained"] == os.path.join(teacher.dir, "model")


def test_a_config_file_as_teacher_is_run_once_then_reused(toy_run, tmp_path):
    import yaml

    from workbench.cli import main
    from workbench.store import RunStore

    corpus, runs = toy_run[3], str(tmp_path / "runs")
    data = corpus.data()
    teacher = tmp_path / "teacher.yaml"
    teacher.write_text(yaml.safe_dump({
        "name": "teacher", "stages": ["train"], "data": data,
        "model": {"preset": "tiny", "max_length": 16}, "train": {"epochs": 1, "batch_size": 8, "threads": 2},
    }), encoding="utf-8")
    student = tmp_path / "student.yaml"
    student.write_text(yaml.safe_dump({
        "name": "student", "stages": ["distill"], "data": data,
        "model": {"preset": "tiny", "max_length": 16, "pretrained": "teacher.yaml"},  # beside this config
        "distill": {"teacher": str(teacher), "sources": [f"file:{corpus.train}"], "steps": 2, "batch_size": 4,
                    "max_length": 16, "holdout": 2, "threads": 2},
    }), encoding="utf-8")

    for _ in range(2):
        assert main(["run", str(student), "--runs-dir", runs, "--quiet"]) == 0
    store = RunStore(runs)
    teachers = [r for r in store.list_runs() if r.name == "teacher"]
    assert [r.status for r in teachers] == ["done"]  # trained by the first run, reused by the second
    for run in (r for r in store.list_runs() if r.name == "student"):
        saved = yaml.safe_load(open(os.path.join(run.dir, "config.yaml"), encoding="utf-8"))
        assert saved["distill"]["teacher"] == teachers[0].dir
        assert saved["model"]["pretrained"] == os.path.join(teachers[0].dir, "model")

    # an edited teacher config is not the recorded one: it trains anew
    cfg = yaml.safe_load(teacher.read_text(encoding="utf-8"))
    cfg["train"]["learning_rate"] = 1e-3
    teacher.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    assert main(["run", str(student), "--runs-dir", runs, "--quiet"]) == 0
    assert len([r for r in RunStore(runs).list_runs() if r.name == "teacher"]) == 2


def test_configs_that_name_each_other_as_teachers_are_refused(tmp_path, capsys):
    import yaml

    from workbench.cli import main

    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    for this, other in ((a, b), (b, a)):
        this.write_text(yaml.safe_dump({"name": this.stem, "stages": ["distill", "train"],
                                        "distill": {"teacher": str(other)}}), encoding="utf-8")
    assert main(["run", str(a), "--runs-dir", str(tmp_path / "runs"), "--quiet"]) == 2
    assert "the configs refer to each other in a loop" in capsys.readouterr().err


def test_a_run_directory_as_starting_weights_means_its_model(toy_run, tmp_path):
    from workbench.references import resolve_references
    from workbench.store import RunStore

    store = RunStore(str(tmp_path / "runs"))
    run_dir = toy_run[0].dir
    cfg = parse_config({"name": "student", "model": {"pretrained": run_dir}})
    resolve_references(cfg, ["train"], store, run_config=None)
    assert cfg.model.pretrained == os.path.join(run_dir, "model")  # not the run's root, where no tokenizer is
    cfg = parse_config({"name": "student", "model": {"pretrained": "bert-base-chinese"}})
    resolve_references(cfg, ["train"], store, run_config=None)
    assert cfg.model.pretrained == "bert-base-chinese"  # a hub id is left for transformers
    empty = tmp_path / "empty-run"
    empty.mkdir()
    cfg = parse_config({"name": "student", "model": {"pretrained": str(empty)}})
    with pytest.raises(ModelError, match="holds no trained model"):
        resolve_references(cfg, ["train"], store, run_config=None)


def test_teacher_seeds_run_a_teacher_config_once_per_seed_sharing_its_dev(tmp_path):
    """A seed ensemble: the config-file teacher once per seed (named for it), a
    directory teacher as it is; data.split_seed draws one dev whatever the run's seed."""
    import yaml

    from pipelines.data.loaders import data_for
    from workbench.references import resolve_references
    from workbench.store import RunStore

    teacher = tmp_path / "teacher.yaml"
    teacher.write_text(yaml.safe_dump({"name": "teacher", "stages": ["train"], "data": {"split_seed": 42}}), encoding="utf-8")
    started = []

    def run_config(cfg, path):
        started.append((cfg.name, cfg.seed, cfg.data.split_seed, path))
        return str(tmp_path / cfg.name)

    cfg = parse_config({"name": "student", "stages": ["distill", "train"],
                        "distill": {"teacher": ["teacher.yaml", str(tmp_path)], "teacher_seeds": [42, 7]}})
    resolve_references(cfg, cfg.stages, RunStore(str(tmp_path / "runs")), run_config, str(tmp_path))
    # at the config's own seed it is the config's run (which naming it plainly reuses)
    assert started == [("teacher", 42, 42, str(teacher)), ("teacher-s7", 7, 42, str(teacher))]
    assert cfg.distill.teacher == [str(tmp_path / "teacher"), str(tmp_path / "teacher-s7"), str(tmp_path)]

    def dev(seed, split_seed=None):
        data = {"source": "msra", "dev_block": 500, "max_sentences": 20, "split_seed": split_seed}
        return data_for(parse_config({"seed": seed, "data": data})).texts("dev")

    assert dev(7, split_seed=42) == dev(11, split_seed=42) == dev(42)
    assert dev(7) != dev(42)
