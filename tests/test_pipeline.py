"""End to end on a tiny model: train (to memorise a toy corpus), export, eval, tag."""

import json
import os

import pytest

from pipelines.config import parse_config
from pipelines.tagger import Tagger
from workbench.cli import main
from workbench.runner import execute
from workbench.store import RunStore

TOY = [
    ("张三在北京工作", ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O", "O"]),
    ("新华社报道了上海的消息", ["B-ORG", "I-ORG", "I-ORG", "O", "O", "B-LOC", "I-LOC", "O", "O", "O", "O"]),
    ("李四去了广州", ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC"]),
    ("王五是人民日报的记者", ["B-PER", "I-PER", "O", "B-ORG", "I-ORG", "I-ORG", "I-ORG", "O", "O", "O"]),
]


def write_corpus(path, copies=8):
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(copies):
            for text, tags in TOY:
                f.write("\n".join(f"{c} {t}" for c, t in zip(text, tags)) + "\n\n")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    corpus = str(root / "toy.txt")
    write_corpus(corpus)
    cfg = parse_config(
        {
            "name": "toy",
            "data": {"source": "conll", "train": corpus, "dev": corpus, "test": corpus},
            "model": {"preset": "tiny", "max_length": 16, "dropout": 0.0},
            "train": {"epochs": 40, "batch_size": 8, "learning_rate": 3e-3, "warmup_ratio": 0.1, "threads": 2},
            "export": {"shape": [1, 16], "parity_sentences": 8},
        }
    )
    store = RunStore(str(root / "runs"))
    run = store.create_run(cfg)
    events = []
    results = execute(cfg, store, run, cfg.stages, [events.append])
    return run, results, events, corpus, str(root / "runs")


def test_training_memorises_the_toy_corpus_and_reports_progress(trained_run):
    run, results, events, _, _ = trained_run
    assert results["train"]["best_dev_f1"] == 1.0
    progress = [e for e in events if e.kind == "progress" and e.stage == "train"]
    assert progress and progress[-1].n == progress[-1].total and progress[-1].unit == "steps"
    assert [e.kind for e in events if e.stage == "eval"][0] == "started"
    for name in ("config.json", "workbench.json", "tokenizer.json", "vocab.txt"):
        assert os.path.isfile(os.path.join(run.dir, "model", name))


def test_tag_finds_the_entities(trained_run):
    run = trained_run[0]
    ents = Tagger.open(run.dir).tag("张三在北京工作")
    assert [(e.type, e.start, e.end, e.text) for e in ents] == [("PER", 0, 2, "张三"), ("LOC", 3, 5, "北京")]


def test_export_parity_is_recorded(trained_run):
    run, results, *_ = trained_run
    export = results["export"]
    for kind in ("torchscript", "torch_export"):
        assert export[f"{kind}_argmax_agreement"] == 1.0
        assert export[f"{kind}_max_abs_diff"] < 1e-4
    meta = json.load(open(os.path.join(run.dir, "export", "export.json")))
    assert meta["shape"] == [1, 16] and meta["inputs"] == ["input_ids", "attention_mask"]


def test_torchscript_engine_tags_like_eager(trained_run):
    run = trained_run[0]
    text = "李四去了广州，王五是人民日报的记者"
    eager = [e.as_dict() for e in Tagger.open(run.dir, "torch").tag(text)]
    traced = [e.as_dict() for e in Tagger.open(run.dir, "torchscript").tag(text)]
    assert [(e["type"], e["start"], e["end"]) for e in eager] == [(e["type"], e["start"], e["end"]) for e in traced]
    assert ("PER", 0, 2) in [(e["type"], e["start"], e["end"]) for e in eager]


def test_eval_stage_scores_and_saves_predictions(trained_run):
    run, results, *_ = trained_run
    scores = results["eval"]
    assert scores["f1"] == 1.0 and scores["accuracy"] == 1.0
    assert set(scores["per_type"]) == {"PER", "LOC", "ORG"}
    assert scores["per_type"]["ORG"]["support"] == 16
    lines = open(os.path.join(run.dir, "eval", "test-torch.predictions.jsonl"), encoding="utf-8").read().splitlines()
    assert json.loads(lines[0])["text"] == "张三在北京工作"


def test_cli_eval_json_on_a_local_file(trained_run, tmp_path, capsys):
    run, _, _, corpus, runs_dir = trained_run
    out = tmp_path / "scores.json"
    assert main(["eval", "--model", run.id, "--runs-dir", runs_dir, "--data", f"conll:{corpus}", "--json", str(out), "--quiet"]) == 0
    scores = json.loads(out.read_text())
    assert {"precision", "recall", "f1", "accuracy", "per_type"} <= set(scores)
    assert set(scores["per_type"]["PER"]) == {"precision", "recall", "f1", "support"}
    assert scores["f1"] == 1.0


def test_cli_tag_json(trained_run, capsys):
    run, *_, runs_dir = trained_run
    assert main(["tag", "--model", run.dir, "--json", "李四去了广州"]) == 0
    ents = json.loads(capsys.readouterr().out)["entities"]
    assert [(e["type"], e["text"]) for e in ents] == [("PER", "李四"), ("LOC", "广州")]


def test_cli_runs_lists_the_run(trained_run, capsys):
    run, *_, runs_dir = trained_run
    assert main(["runs", "--runs-dir", runs_dir, "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["id"] == run.id and listed["status"] == "done"
