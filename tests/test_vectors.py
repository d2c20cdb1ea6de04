"""Word2vec character and bigram vectors as a fresh BiLSTM's starting tables (model.vectors)."""

import numpy as np
import pytest

from pipelines.config import ConfigError, parse_config


@pytest.fixture(scope="module")
def small_bilstm():
    from pipelines.data.encoding import CharEncoder, load_tokenizer
    from pipelines.modeling.bilstm import bilstm_classes

    tokenizer = load_tokenizer()
    config_class, model_class = bilstm_classes()
    config = config_class(vocab_size=len(tokenizer), embedding_size=8, hidden_size=8, bigram_buckets=97, num_labels=3)
    return model_class, config, CharEncoder(tokenizer)


def test_vectors_fill_the_rows_the_model_looks_up_and_never_learn_held_out_text(small_bilstm, tmp_path):
    import torch

    model_class, config, encoder = small_bilstm
    text = tmp_path / "text.txt"
    held_out = "上海浦东新区开发建设"
    lines = ["北京是中国的首都", "中国人民银行在北京", "我在北京工作", "首都北京欢迎你"] * 5 + [held_out + "很快"] * 4
    text.write_text("\n".join(lines) + "\n", encoding="utf-8")
    torch.manual_seed(0)
    model = model_class(config)
    before_chars, before_bigrams = model.chars.weight.detach().clone(), model.bigrams.weight.detach().clone()

    from pipelines.modeling.vectors import INIT_STD, bigram_bucket, initialise_bilstm

    stats = initialise_bilstm(model, encoder, [f"file:{text}"], [held_out], seed=1)
    assert stats["sentences"] == 20 and stats["dropped_held_out"] == 4
    ids = {c: encoder.char_id(c) for c in "北京中国浦"}
    chars, bigrams = model.chars.weight.detach(), model.bigrams.weight.detach()
    changed = (chars != before_chars).any(dim=1)
    assert changed[ids["北"]] and changed[ids["京"]] and changed[ids["中"]]
    assert not changed[ids["浦"]]  # only in text that shares held-out text: never read
    assert stats["char_rows"] == int(changed.sum())
    learnt = chars[changed]
    assert abs(float(learnt.std()) - INIT_STD) < 1e-3  # scaled to the random rows' spread
    # The bigram row the model reads for 北京 is a learnt one: the hash agrees with embed's.
    row = bigram_bucket(ids["北"], ids["京"], config.vocab_size, config.bigram_buckets)
    assert (bigrams[row] != before_bigrams[row]).any()
    model.eval()
    with torch.no_grad():
        x = model.embed(torch.tensor([[ids["北"], ids["京"]]]))
    np.testing.assert_allclose(x[0, 0].numpy(), (chars[ids["北"]] + bigrams[row]).numpy(), rtol=1e-6)


def test_vectors_need_a_fresh_bilstm():
    with pytest.raises(ConfigError, match="model.vectors starts a fresh BiLSTM's tables: it needs preset: bilstm and no model.pretrained"):
        parse_config({"name": "x", "model": {"preset": "mini", "vectors": ["msra_train"]}})
    cfg = parse_config({"name": "x", "model": {"preset": "bilstm", "vectors": ["peoples_daily_1998", "msra_train"]}})
    assert cfg.model.vectors == ["peoples_daily_1998", "msra_train"]


@pytest.mark.slow
def test_a_run_starts_its_bilstm_from_the_vectors_and_counts_what_it_left_out(tmp_path):
    """The train stage with model.vectors: a text file that includes a test sentence;
    that line is left out and counted, the model still learns the toy corpus."""
    from conftest import TOY_TRAIN, ToyCorpus
    from workbench.runner import execute
    from workbench.store import RunStore

    corpus = ToyCorpus.write(tmp_path)
    text = tmp_path / "text.txt"
    lines = ["".join(chars) for chars, _ in TOY_TRAIN] * 3 + ["昨天新华社报道了广州的消息"] * 2  # a test sentence inside
    text.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = parse_config({
        "name": "vectors", "stages": ["train", "eval"], "data": corpus.data(),
        "model": {"preset": "bilstm", "max_length": 16, "dropout": 0.1, "vectors": [f"file:{text}"]},
        "train": {"epochs": 15, "batch_size": 8, "learning_rate": 1e-2, "threads": 1, "eval_every": 10},
    })
    store = RunStore(str(tmp_path / "runs"))
    run = store.create_run(cfg)
    results = execute(cfg, store, run, cfg.stages, [lambda event: None])
    vectors = results["train"]["extra_train"]["vectors"]
    assert vectors["dropped_held_out"] == 2 and vectors["sentences"] == 3 * len(TOY_TRAIN)
    assert vectors["char_rows"] > 20 and vectors["bigram_rows"] > 20
    assert results["eval"]["f1"] > 0.5


def _paddle_tensor(dims, values, dtype=5) -> bytes:
    """A tensor as PaddlePaddle 1.x saves one: version, LoD level 0, version, TensorDesc, data."""
    desc = bytes([0x08, dtype]) + b"".join(bytes([0x10, d]) for d in dims)  # dims < 128: one-byte varints
    header = (0).to_bytes(4, "little") + (0).to_bytes(8, "little") + (0).to_bytes(4, "little") + len(desc).to_bytes(4, "little")
    return header + desc + np.asarray(values, dtype="<f4").tobytes()


def test_paddle_tensors_read_without_paddle(tmp_path):
    from pipelines.data.loaders import DataError
    from pipelines.modeling.vectors import read_paddle_tensor

    good = tmp_path / "w"
    good.write_bytes(_paddle_tensor([2, 3], [1.5, 2, 3, 4, 5, -6]))
    np.testing.assert_array_equal(read_paddle_tensor(str(good)), [[1.5, 2, 3], [4, 5, -6]])
    short = tmp_path / "short"
    short.write_bytes(_paddle_tensor([2, 3], [1, 2, 3, 4, 5]))
    with pytest.raises(DataError, match=r"short: not a PaddlePaddle float32 tensor: 5 values for dimensions \[2, 3\]"):
        read_paddle_tensor(str(short))
    doubles = tmp_path / "doubles"
    doubles.write_bytes(_paddle_tensor([1], [0, 0], dtype=6))
    with pytest.raises(DataError, match=r"doubles: not a PaddlePaddle float32 tensor: data type 6, not float32"):
        read_paddle_tensor(str(doubles))


def test_lac_vectors_start_the_character_table_from_jiebas_lac(small_bilstm):
    """model.vectors: [lac]: each character's row is LAC-small's row for it (scaled to
    the random rows' spread); no text is read, so the bigram table stays random."""
    import importlib.util
    import os

    import torch

    from pipelines.data.loaders import DataError
    from pipelines.modeling.vectors import INIT_STD, initialise_bilstm, read_paddle_tensor

    model_class, config, encoder = small_bilstm
    lac = os.path.join(os.path.dirname(importlib.util.find_spec("jieba").origin), "lac_small")
    table = read_paddle_tensor(os.path.join(lac, "model_baseline", "word_emb"))
    rows = dict(line.rstrip("\n").split("\t")[::-1] for line in open(os.path.join(lac, "word.dic"), encoding="utf-8"))
    assert table.shape == (20941, 128)
    with pytest.raises(DataError, match="model.vectors 'lac': its character vectors are 128 wide, this model's 8"):
        initialise_bilstm(model_class(config), encoder, ["lac"], [], seed=1)

    torch.manual_seed(0)
    model = model_class(config.__class__(**{**config.to_dict(), "embedding_size": 128}))
    bigrams_before = model.bigrams.weight.detach().clone()
    stats = initialise_bilstm(model, encoder, ["lac"], [], seed=1)
    assert stats["char_source"] == "lac" and stats["sentences"] == 0 and stats["char_rows"] > 5000
    chars = model.chars.weight.detach().numpy()
    # one scale for the whole table: every row is LAC's row times the same factor
    scale = np.linalg.norm(chars[encoder.char_id("中")]) / np.linalg.norm(table[int(rows["中"])])
    for c in "国北京人":
        np.testing.assert_allclose(chars[encoder.char_id(c)], scale * table[int(rows[c])], rtol=1e-4, atol=1e-6)
    learnt = np.stack([chars[encoder.char_id(c)] for c in rows if len(c) == 1 and "\u4e00" <= c <= "\u9fff"])
    assert abs(float(learnt.std()) - INIT_STD) < 0.01
    assert torch.equal(model.bigrams.weight.detach(), bigrams_before)
