"""Shape profiles: several static-shape builds used as one engine of any batch and length."""

from __future__ import annotations

import os

import numpy as np
import pytest

from pipelines.runtime.engines import EngineError, FixedShapeEngine, ShapeProfile, plan_batches


class Recorder(FixedShapeEngine):
    """A static-shape engine whose logits are a function of each row's ids (so results
    can be checked row by row) and that records the padded shapes it ran."""

    def __init__(self, shape, calls: list, lengths=None):
        super().__init__(shape, lengths)
        self.name = "tvm-fp32"
        self.calls = calls

    def run(self, ids, mask):
        assert self.serves(*ids.shape), "a build only takes its own shape (its batch at its lengths)"
        self.calls.append(ids.shape)
        out = np.zeros((*ids.shape, 3), dtype=np.float32)
        out[..., 0] = ids * mask
        out[..., 1] = np.cumsum(mask, axis=1)
        return out


@pytest.mark.parametrize(
    "rows, sizes, plan",
    [
        (1, [1, 8, 32], [1]),
        (8, [1, 8, 32], [8]),
        (9, [1, 8, 32], [8, 1]),  # not one call of 32 with 23 rows of padding
        (37, [1, 8, 32], [32, 8]),  # 3 rows of padding beat five calls of 1
        (64, [1, 8, 32], [32, 32]),
        (7, [1, 8, 32], [8]),  # one padded row beats seven calls
        (3, [1, 8, 32], [1, 1, 1]),  # three calls beat five padded rows
        (5, [4], [4, 4]),  # only one size built: padded up
    ],
)
def test_the_plan_covers_the_rows_with_least_padding_and_calls(rows, sizes, plan):
    assert plan_batches(rows, sizes) == plan
    assert sum(plan) >= rows


def test_a_batch_goes_to_the_shortest_length_that_fits_and_gives_what_one_big_build_gives():
    calls: list = []
    profile = ShapeProfile([Recorder(s, calls) for s in [(1, 16), (8, 16), (1, 64), (8, 64), (8, 128)]])
    assert profile.max_length == 128 and profile.shapes == [(1, 16), (1, 64), (8, 16), (8, 64), (8, 128)]
    rng = np.random.default_rng(0)
    for rows, length in [(1, 5), (9, 16), (3, 17), (8, 64), (10, 100)]:
        ids = rng.integers(1, 100, (rows, length))
        mask = np.ones_like(ids)
        mask[0, length // 2 :] = 0
        calls.clear()
        out = profile.logits(ids, mask)
        reference = Recorder((rows, length), []).run(ids, mask)
        np.testing.assert_array_equal(out, reference)
        seq = min(s for s in (16, 64, 128) if s >= length)
        assert {shape[1] for shape in calls} == {seq}
        assert sum(shape[0] for shape in calls) >= rows
    assert profile.bucket(9, 16) == (16, [8, 1])
    assert profile.bucket(3, 100) == (128, [8])  # only batch 8 was built at 128
    with pytest.raises(EngineError, match="lengths up to 128, got 129"):
        profile.logits(np.ones((1, 129), dtype=np.int64), np.ones((1, 129), dtype=np.int64))


def test_a_sparse_grid_pads_to_a_longer_length_rather_than_to_many_rows():
    # Batch 64 at every 8 positions (the corpus), batch 1 only at 32 and 64 (one sentence).
    shapes = [(64, s) for s in (8, 16, 24, 32, 40, 48, 56, 64)] + [(1, 32), (1, 64)]
    profile = ShapeProfile([Recorder(s, []) for s in shapes])
    assert profile.bucket(1, 20) == (32, [1])  # 1 x 32 positions, not 64 x 24
    assert profile.bucket(60, 20) == (24, [64])
    assert profile.bucket(2, 33) == (64, [1, 1])  # 2 rows at 64 beat 64 rows at 40
    assert profile.bucket(64, 33) == (40, [64])
    assert profile.bucket(1, 8) == (32, [1])


def test_sentences_longer_than_the_profile_are_windowed_not_refused():
    """predict_logits windows to the engine's longest build: a 300-character sentence
    through a profile of length 64 still gets one logit row per character."""
    from pipelines.runtime.predict import predict_logits

    class Encoder:
        cls_id, sep_id, pad_id = 101, 102, 0

        def ids_many(self, sentences):
            return [[1000 + ord(c) % 500 for c in chars] for chars in sentences]

    profile = ShapeProfile([Recorder((4, 64), [])])
    sentences = [list("北京" * 150), list("上海"), []]
    logits = predict_logits(profile, sentences, Encoder(), max_length=128)
    assert [len(x) for x in logits] == [300, 2, 0]
    # Each character's row came from a window in which it was a real position.
    assert (logits[0][:, 1] > 0).all()


def test_a_symbolic_length_build_runs_each_batch_at_its_own_length_unless_a_static_one_computes_less():
    calls = []
    profile = ShapeProfile([Recorder((64, 128), calls, lengths=(3, 128)), Recorder((1, 16), calls), Recorder((1, 32), calls)])
    assert profile.max_length == 128 and profile.shapes == [(1, 16), (1, 32)]
    assert profile.bucket(40, 37) == (37, [64])  # 64 rows at 37, not at a bucket's length
    assert profile.bucket(64, 2) == (3, [64])  # never shorter than the build's shortest
    assert profile.bucket(1, 20) == (32, [1])  # one row at 32 beats 64 rows at 20
    assert profile.bucket(1, 100) == (100, [64])  # past the static lengths: the symbolic build
    rng = np.random.default_rng(1)
    ids = rng.integers(1, 1000, (40, 37))
    mask = (np.arange(37)[None, :] < rng.integers(1, 38, 40)[:, None]).astype(np.int64)
    got = profile.logits(ids * mask, mask)
    expected = Recorder((40, 37), []).logits(ids * mask, mask)
    assert calls == [(64, 37)] and np.array_equal(got, expected)
    with pytest.raises(EngineError, match="up to 128, got 129"):
        profile.bucket(1, 129)


def test_a_profile_config_builds_its_grid_within_the_model_length_and_keeps_old_shapes():
    from pipelines.config import ConfigError, parse_config

    cfg = parse_config({"compile": {"profile": {"batch": [8, 1, 8], "seq": [256, 32, 64]}}})
    assert cfg.compile.build_shapes([1, 256], max_length=128) == [[1, 32], [8, 32], [1, 64], [8, 64]]
    assert cfg.compile.build_shapes([1, 256]) == [[1, 32], [8, 32], [1, 64], [8, 64], [1, 256], [8, 256]]
    both = parse_config({"compile": {"shapes": [[1, 64]], "profile": {"batch": [1], "seq": [64, 128]}}})
    assert both.compile.build_shapes([1, 256], 128) == [[1, 64], [1, 128]]
    # The old single shape keeps working, and no setting at all is the export shape.
    assert parse_config({"compile": {"shapes": [[1, 128]]}}).compile.build_shapes([1, 256], 128) == [[1, 128]]
    assert parse_config({}).compile.build_shapes([1, 256], 128) == [[1, 256]]
    with pytest.raises(ConfigError, match="profile.seq"):
        parse_config({"compile": {"profile": {"seq": [0]}}})
    # `any`: one symbolic-length build a batch size, next to any static shapes
    symbolic = parse_config({"compile": {"shapes": [[1, 128]], "profile": {"batch": [64, 1], "seq": "any"}}})
    assert symbolic.compile.build_shapes([1, 256], 128) == [[1, 128], [1, "any"], [64, "any"]]
    with pytest.raises(ConfigError, match="profile.seq"):
        parse_config({"compile": {"profile": {"seq": "all"}}})
    # nothing set: a BiLSTM gets batch 1 and 64 at a symbolic length, a BERT the export shape
    assert parse_config({}).compile.build_shapes([1, 256], 128, bilstm=True) == [[1, "any"], [64, "any"]]
    assert parse_config({"compile": {"shapes": [[1, 128]]}}).compile.build_shapes([1, 256], 128, bilstm=True) == [[1, 128]]


def test_a_compiled_profile_tags_every_batch_and_length_as_torch_does(toy_run, tmp_path):
    """Four real builds of the toy model (batch 1 and 4, length 8 and 16) as one engine:
    the held-out sentences, batched by length, and one sentence longer than any build
    (windowed) get torch's tags."""
    import shutil

    from conftest import TOY_TEST
    from pipelines.config import parse_config
    from pipelines.data.encoding import CharEncoder, load_tokenizer
    from pipelines.events import Reporter
    from pipelines.modeling.models import ModelMeta, load_model
    from pipelines.runtime.engines import TorchEngine, open_engine
    from pipelines.runtime.predict import decode, predict_logits
    from pipelines.stages import stage_compile

    run_dir = str(tmp_path / "run")
    shutil.copytree(os.path.join(toy_run[0].dir, "model"), os.path.join(run_dir, "model"))
    cfg = parse_config({"compile": {"precisions": ["fp32"], "profile": {"batch": [1, 4], "seq": [8, 16]}}})
    stage_compile(cfg, run_dir, Reporter())
    profile = open_engine("tvm-fp32", run_dir)
    assert isinstance(profile, ShapeProfile) and profile.shapes == [(1, 8), (1, 16), (4, 8), (4, 16)]

    model_dir = os.path.join(run_dir, "model")
    meta, encoder = ModelMeta.load(model_dir), CharEncoder(load_tokenizer(model_dir))
    sentences = [list(text) for text, _ in TOY_TEST] + [list("张三在北京工作，李四去了广州，王五是人民日报的记者")]
    torch_engine = TorchEngine(load_model(model_dir)[0])

    def tags(engine, batch_size):
        logits = predict_logits(engine, sentences, encoder, meta.max_length, meta.window_stride, batch_size=batch_size)
        return [decode(lg, meta.labels) for lg in logits]

    expected = tags(torch_engine, 64)
    for batch_size in (1, 3, 64):  # batches of 1, of 3 (one padded row), of all
        assert tags(profile, batch_size) == expected
