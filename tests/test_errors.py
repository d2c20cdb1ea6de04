"""Entity error analysis: the MUC / SemEval categories on hand-made tag pairs, the corpus
counts of a hand-checked predictions file, the diff of two files, the eval JSON and the CLI."""

import json
import os

import pytest

from pipelines.evaluate.errors import (
    ERROR_KINDS,
    classify,
    diff_predictions,
    error_counts,
    file_report,
    read_predictions,
    spans,
)
from pipelines.evaluate.metrics import ner_metrics
from pipelines.modeling.models import ModelError
from workbench.cli import main


def outcomes(gold: str, pred: str) -> list[tuple]:
    """(kind, gold span, predicted span) for space-separated tags; spans as (type, start, end)."""
    g, p = spans("", gold.split()), spans("", pred.split())
    return [(o.kind, _span(o.gold), _span(o.pred)) for o in classify(g, p)]


def _span(s):
    return None if s is None else (s.type, s.start, s.end)


# -- one sentence ------------------------------------------------------------------


def test_each_category():
    assert outcomes("B-PER I-PER O", "B-PER I-PER O") == [("correct", ("PER", 0, 2), ("PER", 0, 2))]
    assert outcomes("B-PER I-PER O", "B-LOC I-LOC O") == [("wrong_type", ("PER", 0, 2), ("LOC", 0, 2))]
    assert outcomes("B-ORG I-ORG I-ORG O", "B-ORG I-ORG I-ORG I-ORG") == [("wrong_boundary", ("ORG", 0, 3), ("ORG", 0, 4))]
    assert outcomes("O B-ORG I-ORG I-ORG", "B-LOC I-LOC O O") == [("wrong_type_and_boundary", ("ORG", 1, 4), ("LOC", 0, 2))]
    assert outcomes("B-PER I-PER O O", "O O O O") == [("missed", ("PER", 0, 2), None)]
    assert outcomes("O O O", "O B-LOC I-LOC") == [("spurious", None, ("LOC", 1, 3))]


def test_outcomes_come_in_text_order_and_every_entity_counts_once():
    found = outcomes("B-PER I-PER O B-LOC I-LOC O O", "O O O B-LOC I-LOC O B-ORG")
    assert found == [("missed", ("PER", 0, 2), None), ("correct", ("LOC", 3, 5), ("LOC", 3, 5)), ("spurious", None, ("ORG", 6, 7))]


def test_one_gold_against_two_predictions_pairs_the_larger_overlap():
    # 中国致公党 (ORG) read as 中国 (LOC) + 致公党 (ORG): 致公党 overlaps more, 中国 is left over.
    assert outcomes("B-ORG I-ORG I-ORG I-ORG I-ORG", "B-LOC I-LOC B-ORG I-ORG I-ORG") == [
        ("wrong_boundary", ("ORG", 0, 5), ("ORG", 2, 5)),
        ("spurious", None, ("LOC", 0, 2)),
    ]


def test_an_equal_overlap_goes_to_the_same_type_then_to_the_leftmost():
    assert outcomes("B-ORG I-ORG I-ORG I-ORG", "B-LOC I-LOC B-ORG I-ORG") == [
        ("wrong_boundary", ("ORG", 0, 4), ("ORG", 2, 4)),
        ("spurious", None, ("LOC", 0, 2)),
    ]
    # One prediction over two gold entities: the left one is its pair, the right one is missed.
    assert outcomes("B-PER I-PER B-PER I-PER", "B-PER I-PER I-PER I-PER") == [
        ("wrong_boundary", ("PER", 0, 2), ("PER", 0, 4)),
        ("missed", ("PER", 2, 4), None),
    ]


def test_empty_sentences_and_sentences_without_entities():
    assert outcomes("", "") == []
    assert outcomes("O O", "O O") == []
    report = file_report_of([("", [], []), ("好", ["O"], ["O"])])
    assert report.counts == dict.fromkeys(report.counts, 0) and report.with_errors == [] and report.by_type == {}


def test_an_i_tag_without_its_b_opens_an_entity_as_conlleval_reads_it():
    assert outcomes("O I-PER I-PER O", "O B-PER I-PER O") == [("correct", ("PER", 1, 3), ("PER", 1, 3))]
    # An I- of another type after B- starts a second entity: one right, one of the wrong type.
    assert outcomes("B-PER I-PER O", "B-PER I-LOC O") == [("wrong_boundary", ("PER", 0, 2), ("PER", 0, 1)), ("spurious", None, ("LOC", 1, 2))]


# -- a predictions file --------------------------------------------------------------

# (text, gold, pred), checked by hand: see the expected counts below.
SENTENCES = [
    ("张三在北京工作", "B-PER I-PER O B-LOC I-LOC O O", "B-PER I-PER O B-LOC I-LOC O O"),  # 2 correct
    ("李四去了广州", "B-PER I-PER O O B-LOC I-LOC", "B-PER I-PER I-PER O B-ORG I-ORG"),  # PER boundary, LOC type
    ("王五是人民日报的记者", "B-PER I-PER O B-ORG I-ORG I-ORG I-ORG O O O", "O O O B-LOC I-LOC O O O B-PER I-PER"),
    ("新华社报道了上海的消息", "B-ORG I-ORG I-ORG O O O B-LOC I-LOC O O O", "O O O O O O O O O O O"),  # 2 missed
    ("", "", ""),
    ("今天天气很好", "O O O O O O", "B-LOC I-LOC O O O O"),  # spurious LOC
]
COUNTS = {"correct": 2, "missed": 3, "spurious": 2, "wrong_type": 1, "wrong_boundary": 1, "wrong_type_and_boundary": 1}
BY_TYPE = {
    "LOC": {"missed": 1, "spurious": 1, "wrong_type": 1, "wrong_boundary": 0, "wrong_type_and_boundary": 0},
    "ORG": {"missed": 1, "spurious": 0, "wrong_type": 0, "wrong_boundary": 0, "wrong_type_and_boundary": 1},
    "PER": {"missed": 1, "spurious": 1, "wrong_type": 0, "wrong_boundary": 1, "wrong_type_and_boundary": 0},
}


def write_predictions(path, sentences=SENTENCES) -> str:
    with open(path, "w", encoding="utf-8") as f:
        for text, gold, pred in sentences:
            g, p = (gold.split(), pred.split()) if isinstance(gold, str) else (gold, pred)
            f.write(json.dumps({"text": text, "gold": g, "pred": p}, ensure_ascii=False) + "\n")
    return str(path)


def file_report_of(sentences):
    from pipelines.evaluate.errors import error_report

    return error_report([t for t, _, _ in sentences], [g for _, g, _ in sentences], [p for _, _, p in sentences])


def test_counts_of_a_hand_checked_file(tmp_path):
    report = file_report(write_predictions(tmp_path / "p.jsonl"))
    assert report.sentences == 6 and report.counts == COUNTS and report.by_type == BY_TYPE
    assert [s.index for s in report.with_errors] == [1, 2, 3, 5]
    third = report.with_errors[1]
    assert third.kinds == ["missed", "spurious", "wrong_type_and_boundary"]
    assert [(o.kind, o.type, (o.gold or o.pred).text) for o in third.errors] == [
        ("missed", "PER", "王五"), ("wrong_type_and_boundary", "ORG", "人民日报"), ("spurious", "PER", "记者")]
    assert [s.index for s in report.filtered("missed")] == [2, 3]
    assert [s.index for s in report.filtered("spurious", "LOC")] == [5]
    assert [s.index for s in report.filtered(entity_type="ORG")] == [2, 3]


def test_counts_agree_with_the_entity_scores(tmp_path):
    rows = read_predictions(write_predictions(tmp_path / "p.jsonl"))
    gold, pred = [r.gold for r in rows], [r.pred for r in rows]
    c, scores = file_report(str(tmp_path / "p.jsonl")).counts, ner_metrics(gold, pred)
    wrong = c["wrong_type"] + c["wrong_boundary"] + c["wrong_type_and_boundary"]
    assert sum(row["support"] for row in scores["per_type"].values()) == c["correct"] + wrong + c["missed"]
    assert scores["recall"] == pytest.approx(c["correct"] / (c["correct"] + wrong + c["missed"]))
    assert scores["precision"] == pytest.approx(c["correct"] / (c["correct"] + wrong + c["spurious"]))


def test_the_eval_json_field_has_errors_only():
    errors = error_counts([g.split() for _, g, _ in SENTENCES], [p.split() for _, _, p in SENTENCES])
    assert errors == {"counts": {k: COUNTS[k] for k in ERROR_KINDS}, "by_type": BY_TYPE}
    assert list(errors["counts"]) == ["missed", "spurious", "wrong_type", "wrong_boundary", "wrong_type_and_boundary"]


def test_a_file_that_is_not_predictions_is_named(tmp_path):
    with pytest.raises(ModelError, match="no such predictions file"):
        read_predictions(str(tmp_path / "none.jsonl"))
    (tmp_path / "bad.jsonl").write_text("{not json\n", encoding="utf-8")
    with pytest.raises(ModelError, match=r"bad.jsonl: not a predictions file \(line 1"):
        read_predictions(str(tmp_path / "bad.jsonl"))


# -- two files of the same sentences ------------------------------------------------------


def second_engine() -> list[tuple]:
    """SENTENCES as another engine predicts them: loses 北京, gets 李四 right, drops the spurious 今天."""
    rows = list(SENTENCES)
    rows[0] = (rows[0][0], rows[0][1], "B-PER I-PER O O O O O")
    rows[1] = (rows[1][0], rows[1][1], "B-PER I-PER O O B-ORG I-ORG")
    rows[5] = (rows[5][0], rows[5][1], "O O O O O O")
    return rows


def test_diff_of_two_engines(tmp_path):
    a = write_predictions(tmp_path / "test-torch.predictions.jsonl")
    b = write_predictions(tmp_path / "test-ort-int8.predictions.jsonl", second_engine())
    diff = diff_predictions(a, b)
    assert diff.sentences == 6 and diff.counts() == {"sentences": 3, "lost": 1, "gained": 1}
    assert [(d.index, d.mark) for d in diff.differing] == [(0, "lost"), (1, "gained"), (5, "changed")]
    assert [(s.type, s.text) for s in diff.differing[0].lost] == [("LOC", "北京")]
    assert [(s.type, s.text) for s in diff.differing[1].gained] == [("PER", "李四")]
    assert [d.index for d in diff.filtered("gained")] == [1]
    assert [d.index for d in diff.filtered(entity_type="LOC")] == [0, 5]  # the dropped 今天 is a LOC
    assert [d.index for d in diff.filtered("lost", "PER")] == []
    # Reversed, what one lost the other gained.
    back = diff_predictions(b, a)
    assert back.counts() == {"sentences": 3, "lost": 1, "gained": 1} and [d.mark for d in back.differing] == ["gained", "lost", "changed"]


def test_diff_refuses_files_of_other_sentences_naming_both(tmp_path):
    a = write_predictions(tmp_path / "a.jsonl")
    shorter = write_predictions(tmp_path / "short.jsonl", SENTENCES[:3])
    with pytest.raises(ModelError, match=r"a.jsonl and .*short.jsonl are not predictions of the same sentences \(6 vs 3 lines\)"):
        diff_predictions(a, shorter)
    other = list(SENTENCES)
    other[2] = ("王六是人民日报的记者", *other[2][1:])
    with pytest.raises(ModelError, match=r"\(line 3 differs\)"):
        diff_predictions(a, write_predictions(tmp_path / "other.jsonl", other))


# -- eval: JSON and the CLI ------------------------------------------------------------


def test_cli_eval_predictions_errors_table_and_json(tmp_path, capsys):
    path = write_predictions(tmp_path / "p.jsonl")
    assert main(["eval", "--predictions", path, "--errors"]) == 0
    out = capsys.readouterr().out
    assert "entity errors" in out
    rows = {cells[0]: cells[1:] for cells in (_cells(line) for line in out.splitlines()) if cells}
    assert rows["missed"] == ["3", "1", "1", "1"]  # all, LOC, ORG, PER
    assert rows["wrong_type_and_boundary"] == ["1", "0", "1", "0"]
    assert rows["errors"] == ["8", "3", "2", "3"]
    assert main(["eval", "--predictions", path, "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["errors"]["by_type"] == BY_TYPE


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip("│ ").split("│")] if line.startswith("│") else []


def test_eval_json_of_a_model_carries_the_errors(toy_run, tmp_path):
    """Three of the toy model's train sentences, which it has learnt (memorisation is the
    point here); scored against gold tags changed by hand, every change is one known error."""
    run, *_ = toy_run
    corpus = tmp_path / "changed.txt"
    sentences = [
        ("张三在北京工作", "B-LOC I-LOC O O O O O"),  # 张三 PER read as LOC gold: wrong_type; 北京 spurious
        ("李四去了广州", "B-PER I-PER I-PER O B-LOC I-LOC"),  # 李四 against 李四去: wrong_boundary
        ("王五是人民日报的记者", "B-PER I-PER O B-ORG I-ORG I-ORG I-ORG O B-ORG I-ORG"),  # 记者: missed
    ]
    corpus.write_text("".join("\n".join(f"{c} {t}" for c, t in zip(text, tags.split())) + "\n\n" for text, tags in sentences), encoding="utf-8")
    out = tmp_path / "scores.json"
    model_dir = os.path.join(run.dir, "model")  # a bare model directory: nothing is written into the run
    assert main(["eval", "--model", model_dir, "--data", f"conll:{corpus}", "--json", str(out), "--quiet", "--errors"]) == 0
    errors = json.loads(out.read_text())["errors"]
    assert errors["counts"] == {"missed": 1, "spurious": 1, "wrong_type": 1, "wrong_boundary": 1, "wrong_type_and_boundary": 0}
    assert errors["by_type"]["LOC"]["wrong_type"] == 1 and errors["by_type"]["LOC"]["spurious"] == 1
    assert errors["by_type"]["PER"]["wrong_boundary"] == 1 and errors["by_type"]["ORG"]["missed"] == 1
