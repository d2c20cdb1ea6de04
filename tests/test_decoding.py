"""Decoding: argmax, and valid-BIO constrained Viterbi on the per-character log-softmax."""

import itertools
import json
import os

import numpy as np
import pytest

from pipelines.config import parse_config
from pipelines.runtime.predict import bio_transitions, decode, extract_entities, viterbi_bio

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def logits_of(*rows: dict) -> np.ndarray:
    """Logits whose softmax is the given probabilities (the rest share what is left)."""
    out = np.zeros((len(rows), len(LABELS)))
    for i, row in enumerate(rows):
        rest = (1 - sum(row.values())) / (len(LABELS) - len(row))
        out[i] = np.log([row.get(label, rest) for label in LABELS])
    return out


def valid(tags) -> bool:
    return all(
        not t.startswith("I-") or (prev is not None and prev != "O" and prev[2:] == t[2:])
        for prev, t in zip([None, *tags], tags)
    )


def test_a_likely_continuation_turns_o_into_b():
    # argmax: O I-PER; B-PER I-PER (0.4 x 0.8) beats O O (0.5 x 0.1)
    lg = logits_of({"O": 0.5, "B-PER": 0.4}, {"I-PER": 0.8, "O": 0.1})
    assert decode(lg, LABELS) == ["O", "I-PER"]
    assert decode(lg, LABELS, "bio") == ["B-PER", "I-PER"]


def test_an_unlikely_entity_start_drops_the_stray_i():
    # argmax: O I-PER; O O (0.9 x 0.45) beats B-PER I-PER (0.05 x 0.5)
    lg = logits_of({"O": 0.9, "B-PER": 0.05}, {"I-PER": 0.5, "O": 0.45})
    assert decode(lg, LABELS) == ["O", "I-PER"]
    assert decode(lg, LABELS, "bio") == ["O", "O"]


def test_no_i_of_another_type_and_none_first():
    start, allowed = bio_transitions(LABELS)
    assert list(start) == [True, True, False, True, False]
    i_per, i_loc = LABELS.index("I-PER"), LABELS.index("I-LOC")
    assert [LABELS[p] for p in np.flatnonzero(allowed[:, i_per])] == ["B-PER", "I-PER"]
    assert [LABELS[p] for p in np.flatnonzero(allowed[:, i_loc])] == ["B-LOC", "I-LOC"]
    assert allowed[:, [0, 1, 3]].all()  # O and B-X may follow anything


def test_random_logits_never_decode_to_invalid_bio_and_valid_argmax_is_kept():
    rng = np.random.default_rng(0)
    kept = 0
    for n in [0, 1, 2, 3, *rng.integers(4, 60, size=300)]:
        lg = rng.normal(scale=3.0, size=(n, len(LABELS)))
        tags = decode(lg, LABELS, "bio")
        assert len(tags) == n and valid(tags)
        argmax = decode(lg, LABELS)
        if valid(argmax):  # the unconstrained optimum is valid: nothing to change
            assert tags == argmax
            kept += 1
    assert kept > 5


def test_viterbi_is_the_best_valid_sequence_by_brute_force():
    rng = np.random.default_rng(1)
    for n in (1, 2, 3, 4):
        for _ in range(20):
            lg = rng.normal(scale=2.0, size=(n, len(LABELS)))
            scores = lg - np.log(np.exp(lg).sum(-1, keepdims=True))
            best = max(
                (seq for seq in itertools.product(range(len(LABELS)), repeat=n) if valid([LABELS[i] for i in seq])),
                key=lambda seq: scores[np.arange(n), seq].sum(),
            )
            assert tuple(viterbi_bio(lg, LABELS)) == best


def test_entities_and_confidence_follow_the_decoder():
    lg = logits_of({"O": 0.5, "B-PER": 0.4}, {"I-PER": 0.8, "O": 0.1}, {"O": 0.9})
    [ent] = extract_entities("李鹏说", lg, LABELS, "bio")
    assert (ent.type, ent.start, ent.end) == ("PER", 0, 2)
    assert ent.confidence == pytest.approx((0.4 + 0.8) / 2)  # the chosen tags' probabilities


def test_unknown_decoder_is_refused():
    with pytest.raises(ValueError, match="unknown decoder"):
        decode(np.zeros((1, 5)), LABELS, "crf")


def test_eval_decode_config_and_the_run_setting(tmp_path):
    from pipelines.config import ConfigError
    from pipelines.layout import run_decoder

    assert parse_config({}).eval.decode == "bio"
    with pytest.raises(ConfigError, match="eval.decode"):
        parse_config({"eval": {"decode": "greedy"}})
    (tmp_path / "config.yaml").write_text("eval:\n  decode: argmax\n", encoding="utf-8")
    assert run_decoder(str(tmp_path)) == "argmax"
    assert run_decoder(str(tmp_path / "nowhere")) == "bio"  # a bare model directory: the default


def test_scoring_another_decoding_keeps_the_runs_own_scores(toy_run, tmp_path):
    import shutil

    from pipelines.data.loaders import load_split
    from pipelines.events import Reporter
    from pipelines.modeling.models import ModelMeta
    from pipelines.evaluate.scoring import evaluate
    from workbench.compare import collect_rows

    run, _, _, corpus, _ = toy_run
    run_dir = str(tmp_path / "run")
    shutil.copytree(run.dir, run_dir, ignore=shutil.ignore_patterns("compiled"))
    own = os.path.join(run_dir, "eval", "test-torch.json")
    before = open(own, encoding="utf-8").read()
    labels = ModelMeta.load(os.path.join(run_dir, "model")).labels
    scores = evaluate(run_dir, load_split("conll:" + corpus.test, labels), "test", Reporter(), decoder="argmax")

    assert scores["decode"] == "argmax"
    assert open(own, encoding="utf-8").read() == before  # the run's bio scores are untouched
    other = json.loads(open(os.path.join(run_dir, "eval", "test-torch@argmax.json"), encoding="utf-8").read())
    assert other["decode"] == "argmax" and other["f1"] == scores["f1"]
    assert os.path.isfile(os.path.join(run_dir, "eval", "test-torch@argmax.predictions.jsonl"))
    # The compare table stays one row per engine, under the run's own decoding.
    rows = collect_rows([(run.id, run.name, run_dir)])  # other tests may have added engines' scores
    keys = [(r.split, r.engine) for r in rows]
    assert len(keys) == len(set(keys)) and ("test", "torch") in keys
    assert next(r for r in rows if r.engine == "torch").f1 == json.loads(before)["f1"]
