import os

import numpy as np
import pytest

from pipelines.config import parse_config
from pipelines.data.corpus import drop_leaks, load_corpus, peoples_daily_1998
from pipelines.events import Reporter
from pipelines.training.pretrain import CHECKPOINT_DIR, IGNORE, PRETRAINED_DIR, mask_batch, pretrain

MASK, VOCAB, FIRST = 103, 21128, 106


def test_masking_statistics_on_a_fixed_seed():
    rng = np.random.default_rng(0)
    ids = rng.integers(FIRST, VOCAB, size=(256, 128))
    words = np.tile(np.arange(128), (256, 1))
    words[:, 0] = words[:, -1] = -1  # [CLS] and [SEP] are never chosen
    inputs, labels = mask_batch(ids, words, np.random.default_rng(42), MASK, VOCAB, FIRST)
    chosen = labels != IGNORE
    assert not chosen[:, 0].any() and not chosen[:, -1].any()
    assert (labels[chosen] == ids[chosen]).all()
    assert chosen.sum() / (256 * 126) == pytest.approx(0.15, abs=0.005)
    masked = inputs[chosen] == MASK
    kept = inputs[chosen] == ids[chosen]
    replaced = ~masked & ~kept
    assert masked.mean() == pytest.approx(0.8, abs=0.02)
    assert kept.mean() == pytest.approx(0.1, abs=0.02)
    assert replaced.mean() == pytest.approx(0.1, abs=0.02)
    assert (inputs[~chosen] == ids[~chosen]).all()


def test_whole_word_masking_takes_every_character_of_a_chosen_word():
    ids = np.random.default_rng(1).integers(FIRST, VOCAB, size=(64, 64))
    words = np.tile(np.repeat(np.arange(32), 2), (64, 1)) + np.arange(64)[:, None] * 100  # two-character words
    _, labels = mask_batch(ids, words, np.random.default_rng(3), MASK, VOCAB, FIRST, whole_word=True)
    chosen = (labels != IGNORE).reshape(64, 32, 2)
    assert (chosen[..., 0] == chosen[..., 1]).all()
    assert chosen.mean() == pytest.approx(0.15, abs=0.02)


def test_one_step_lowers_the_mlm_loss():
    import torch
    from transformers import BertForMaskedLM

    from pipelines.modeling.models import bert_config

    torch.manual_seed(0)
    model = BertForMaskedLM(bert_config("tiny", VOCAB, ["O"], 32))
    ids = np.random.default_rng(0).integers(FIRST, FIRST + 50, size=(8, 32))
    words = np.tile(np.arange(32), (8, 1))
    inputs, labels = mask_batch(ids, words, np.random.default_rng(0), MASK, VOCAB, FIRST, prob=0.3)

    def loss():
        logits = model(input_ids=torch.from_numpy(inputs)).logits
        return torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), torch.from_numpy(labels).reshape(-1), ignore_index=IGNORE)

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = loss()
    before.backward()
    optimizer.step()
    with torch.no_grad():
        assert loss().item() < before.item()


def _tiny_cfg(corpus, steps):
    return parse_config(
        {
            "model": {"preset": "tiny"},
            "pretrain": {"sources": [f"file:{corpus}"], "steps": steps, "batch_size": 4, "max_length": 16,
                         "checkpoint_every": 2, "holdout": 2, "threads": 2},
        }
    )


def test_resume_continues_the_step_count(tmp_path):
    corpus = tmp_path / "text.txt"
    corpus.write_text("\n".join(["新华社北京一月一日电", "国务院总理在人民大会堂作报告", "张三在北京工作"] * 6), encoding="utf-8")
    run_dir = str(tmp_path / "run")
    first = pretrain(_tiny_cfg(corpus, 4), load_corpus([f"file:{corpus}"]), run_dir, Reporter())
    assert first["steps"] == 4 and os.path.isfile(os.path.join(run_dir, CHECKPOINT_DIR, "state.pt"))
    logs = []
    second = pretrain(_tiny_cfg(corpus, 6), load_corpus([f"file:{corpus}"]), run_dir, Reporter(lambda e: logs.append(e)))
    assert second["steps"] == 6
    assert any(e.kind == "log" and "resuming from the checkpoint at step 4" in e.message for e in logs)
    steps = [e.n for e in logs if e.kind == "progress"]
    assert steps and min(steps) > 4  # no step before the checkpoint was redone
    # the result is a model directory the train stage can start from
    from pipelines.config import ModelConfig
    from pipelines.modeling.models import build_model

    model, _, _ = build_model(ModelConfig(pretrained=os.path.join(run_dir, PRETRAINED_DIR)), ["O", "B-PER", "I-PER"])
    assert model.config.num_labels == 3


def test_the_budget_counts_across_resumes_unless_told_otherwise(tmp_path):
    corpus = tmp_path / "text.txt"
    corpus.write_text("\n".join(["新华社北京一月一日电", "张三在北京工作"] * 6), encoding="utf-8")
    run_dir, sentences = str(tmp_path / "run"), load_corpus([f"file:{corpus}"])
    cfg = _tiny_cfg(corpus, 10**6)
    cfg.pretrain.max_minutes = 0.005  # 0.3 s, far short of the steps
    first = pretrain(cfg, sentences, run_dir, Reporter())
    assert 0 < first["steps"] < 10**6
    logs = []
    again = pretrain(cfg, sentences, run_dir, Reporter(lambda e: logs.append(e)))
    assert again["steps"] == first["steps"]  # the budget was spent: nothing more to do
    assert any(e.kind == "log" and "raise max_minutes" in e.message for e in logs)
    cfg.pretrain.decay_to_budget = False  # a fresh budget per invocation
    assert pretrain(cfg, sentences, run_dir, Reporter())["steps"] > first["steps"]


def test_embedded_people_daily_text_keeps_words_and_drops_tags():
    sentences = peoples_daily_1998()
    assert len(sentences) > 15000
    assert sentences[0][:3] == ["迈向", "充满", "希望"]
    text = "".join(w for s in sentences[:50] for w in s)
    assert "/" not in text and "[" not in text and "]" not in text


def test_leaking_sentences_are_dropped():
    sentences = [list("今天天气很好我们去公园散步吧"), list("新华社北京一月一日电国务院总理")]
    kept, dropped = drop_leaks(sentences, ["据新华社北京一月一日电国务院总理李鹏"], n=8)
    assert dropped == 1 and kept == [list("今天天气很好我们去公园散步吧")]
