import pytest

from pipelines.evaluate.metrics import ner_metrics
from pipelines.runtime.predict import entity_spans, extract_entities

import numpy as np


def test_hand_checked_example():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "O", "O"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "I-ORG", "O", "B-LOC"]]
    m = ner_metrics(gold, pred)
    # 3 gold entities, 3 predicted, 2 right (PER, ORG); the LOCs sit in different places.
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["per_type"]["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert m["per_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["per_type"]["ORG"]["f1"] == 1.0


def test_strict_mode_rejects_an_entity_without_its_b():
    gold = [["B-PER", "I-PER", "O"]]
    pred = [["I-PER", "I-PER", "O"]]
    assert ner_metrics(gold, pred)["f1"] == 1.0  # conlleval-style: I- opens the entity
    assert ner_metrics(gold, pred, strict=True)["f1"] == 0.0


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="sentence 0: 2 gold tags but 1 predicted"):
        ner_metrics([["O", "O"]], [["O"]])


def test_entity_spans():
    tags = ["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-ORG", "B-ORG", "I-PER"]
    assert list(entity_spans(tags)) == [("PER", 0, 2), ("LOC", 3, 5), ("ORG", 5, 6), ("ORG", 6, 7), ("PER", 7, 8)]


def test_extract_entities_gives_text_offsets_and_confidence():
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    text = "张三去北京"
    tags = [1, 2, 0, 3, 4]
    logits = np.full((5, 5), -5.0)
    logits[np.arange(5), tags] = 5.0
    ents = extract_entities(text, logits, labels)
    assert [(e.type, e.start, e.end, e.text) for e in ents] == [("PER", 0, 2, "张三"), ("LOC", 3, 5, "北京")]
    assert all(0.99 < e.confidence <= 1.0 for e in ents)
