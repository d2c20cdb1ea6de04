"""Windowed prediction with a context-free fake engine: each token's logits depend on
its id alone, so stitched long-text output must equal the per-character answer."""

import numpy as np

from pipelines.data.encoding import CharEncoder, load_tokenizer
from pipelines.runtime.engines import FixedShapeEngine
from pipelines.runtime.predict import extract_entities, predict_logits

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


class CharRuleEngine:
    name = "fake"

    def __init__(self, encoder):
        vocab = encoder.tokenizer.get_vocab()
        self.rule = {vocab["张"]: 1, vocab["三"]: 2, vocab["北"]: 3, vocab["京"]: 4}
        self.calls = []

    def logits(self, input_ids, attention_mask):
        self.calls.append(input_ids.shape)
        out = np.zeros(input_ids.shape + (len(LABELS),), dtype=np.float32)
        for (b, t), tok in np.ndenumerate(input_ids):
            out[b, t, self.rule.get(int(tok), 0)] = 1.0
        return out


def test_long_text_through_windows_matches_per_character_answer():
    encoder = CharEncoder(load_tokenizer())
    engine = CharRuleEngine(encoder)
    text = "张三在北京工作，" * 40  # 320 characters, windows of 14
    [logits] = predict_logits(engine, [list(text)], encoder, max_length=16)
    assert logits.shape == (320, len(LABELS))
    assert max(shape[1] for shape in engine.calls) <= 16
    ents = extract_entities(text, logits, LABELS)
    assert [e.start for e in ents if e.type == "PER"] == list(range(0, 320, 8))
    assert [e.text for e in ents if e.type == "LOC"] == ["北京"] * 40


class FixedCharRuleEngine(FixedShapeEngine):
    """The rule engine built for one [batch, seq], like a compiled artifact."""

    def __init__(self, encoder, shape):
        super().__init__(shape)
        self.inner = CharRuleEngine(encoder)

    def run(self, ids, mask):
        return self.inner.logits(ids, mask)


def test_a_fixed_shape_engine_gets_its_shape_every_call_and_empty_text_is_fine():
    encoder = CharEncoder(load_tokenizer())
    engine = FixedCharRuleEngine(encoder, (2, 16))
    out = predict_logits(engine, [list("张三"), [], list("北京欢迎你")], encoder, max_length=16)
    assert set(engine.inner.calls) == {(2, 16)}
    assert [o.shape[0] for o in out] == [2, 0, 5]
    assert extract_entities("北京欢迎你", out[2], LABELS)[0].text == "北京"
