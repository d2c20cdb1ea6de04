"""End to end on a tiny model: train (to memorise a toy corpus), export, eval, tag."""

import json
import os

from pipelines.runtime.tagger import Tagger
from workbench.cli import main


def test_training_memorises_the_toy_corpus_and_reports_progress(toy_run):
    run, results, events, _, _ = toy_run
    assert results["train"]["best_dev_f1"] == 1.0
    progress = [e for e in events if e.kind == "progress" and e.stage == "train"]
    assert progress and progress[-1].n == progress[-1].total and progress[-1].unit == "steps"
    assert [e.kind for e in events if e.stage == "eval"][0] == "started"
    for name in ("config.json", "workbench.json", "tokenizer.json", "vocab.txt"):
        assert os.path.isfile(os.path.join(run.dir, "model", name))


def test_tag_finds_the_entities(toy_run):
    run = toy_run[0]
    ents = Tagger.open(run.dir).tag("张三在北京工作")
    assert [(e.type, e.start, e.end, e.text) for e in ents] == [("PER", 0, 2, "张三"), ("LOC", 3, 5, "北京")]


def test_export_parity_is_recorded(toy_run):
    run, results, *_ = toy_run
    export = results["export"]
    for kind in ("torchscript", "torch_export"):
        assert export[f"{kind}_argmax_agreement"] == 1.0
        assert export[f"{kind}_max_abs_diff"] < 1e-4
    meta = json.load(open(os.path.join(run.dir, "export", "export.json")))
    assert meta["shape"] == [1, 16] and meta["inputs"] == ["input_ids", "attention_mask"]


def test_torchscript_engine_tags_like_eager(toy_run):
    run = toy_run[0]
    text = "李四去了广州，王五是人民日报的记者"
    eager = [e.as_dict() for e in Tagger.open(run.dir, "torch").tag(text)]
    traced = [e.as_dict() for e in Tagger.open(run.dir, "torchscript").tag(text)]
    assert [(e["type"], e["start"], e["end"]) for e in eager] == [(e["type"], e["start"], e["end"]) for e in traced]
    assert ("PER", 0, 2) in [(e["type"], e["start"], e["end"]) for e in eager]


def test_eval_stage_scores_and_saves_predictions(toy_run):
    run, results, *_ = toy_run
    scores = results["eval"]
    assert scores["f1"] == 1.0 and scores["accuracy"] == 1.0
    assert set(scores["per_type"]) == {"PER", "LOC", "ORG"}
    assert scores["per_type"]["ORG"]["support"] == 16
    lines = open(os.path.join(run.dir, "eval", "test-torch.predictions.jsonl"), encoding="utf-8").read().splitlines()
    assert json.loads(lines[0])["text"] == "张三在北京工作"


def test_cli_eval_json_on_a_local_file(toy_run, tmp_path, capsys):
    run, _, _, corpus, runs_dir = toy_run
    out = tmp_path / "scores.json"
    assert main(["eval", "--model", run.id, "--runs-dir", runs_dir, "--data", f"conll:{corpus}", "--json", str(out), "--quiet"]) == 0
    scores = json.loads(out.read_text())
    assert {"precision", "recall", "f1", "accuracy", "per_type"} <= set(scores)
    assert set(scores["per_type"]["PER"]) == {"precision", "recall", "f1", "support"}
    assert scores["f1"] == 1.0


def test_cli_tag_json(toy_run, capsys):
    run, *_, runs_dir = toy_run
    assert main(["tag", "--model", run.dir, "--json", "李四去了广州"]) == 0
    ents = json.loads(capsys.readouterr().out)["entities"]
    assert [(e["type"], e["text"]) for e in ents] == [("PER", "李四"), ("LOC", "广州")]


def test_cli_runs_lists_the_run(toy_run, capsys):
    run, *_, runs_dir = toy_run
    assert main(["runs", "--runs-dir", runs_dir, "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["id"] == run.id and listed["status"] == "done"


def test_pretrained_local_directory_starts_from_those_weights(toy_run):
    import torch

    from pipelines.config import ModelConfig
    from pipelines.modeling.models import build_model, load_model

    model_dir = os.path.join(toy_run[0].dir, "model")
    trained, _, meta = load_model(model_dir)
    fresh, tokenizer, fresh_meta = build_model(ModelConfig(pretrained=model_dir, max_length=16), meta.labels)
    for (name, a), (_, b) in zip(trained.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), name
    assert fresh_meta.source == model_dir and len(tokenizer) == 21128


def test_cli_infer_then_eval_scores_the_saved_predictions(toy_run, tmp_path, capsys):
    run, _, _, corpus, runs_dir = toy_run
    out = tmp_path / "pred.jsonl"
    assert main(["infer", "--model", run.id, "--runs-dir", runs_dir, "--data", f"conll:{corpus}", "--out", str(out), "--quiet"]) == 0
    first = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    assert first["text"] == "张三在北京工作" and first["pred"][:2] == ["B-PER", "I-PER"]
    capsys.readouterr()
    assert main(["eval", "--predictions", str(out), "--json", "-"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["f1"] == 1.0 and scores["per_type"]["LOC"]["support"] == 24  # 北京, 上海, 广州 x 8 copies


def test_cli_eval_rejects_a_file_that_is_not_predictions(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x"}\n', encoding="utf-8")
    assert main(["eval", "--predictions", str(bad)]) == 2
    assert "not a predictions file (each line needs gold and pred)" in capsys.readouterr().err


def test_a_retrained_model_is_never_served_by_the_onnx_of_the_one_before(toy_run, tmp_path):
    """ONNX Runtime's models are cached by the model's fingerprint, not by file existence:
    after the weights change, `ort` and `ort-int8` rebuild and follow the new weights."""
    import shutil

    import numpy as np
    import torch

    from pipelines.modeling.models import load_model, save_model
    from pipelines.runtime.engines import open_engine

    run, *_ = toy_run
    model_dir = str(tmp_path / "model")
    shutil.copytree(os.path.join(run.dir, "model"), model_dir)
    ids, mask = np.array([[101, 2769, 4638, 102]], dtype=np.int64), np.ones((1, 4), dtype=np.int64)
    before = open_engine("ort", model_dir).logits(ids, mask)
    open_engine("ort-int8", model_dir)

    model, tokenizer, meta = load_model(model_dir)
    with torch.no_grad():
        model.classifier.bias += 3.0 * torch.arange(model.classifier.bias.numel())  # "retrained"
    save_model(model, tokenizer, meta, model_dir)

    eager = open_engine("torch", model_dir).logits(ids, mask)
    after = open_engine("ort", model_dir).logits(ids, mask)
    assert not np.allclose(before, eager, atol=1e-3)  # the change is visible
    assert np.allclose(after, eager, atol=1e-4)
    assert np.argmax(open_engine("ort-int8", model_dir).logits(ids, mask), -1).tolist() == np.argmax(eager, -1).tolist()
