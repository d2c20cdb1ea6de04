"""Masked-LM pretraining of a compact BERT (Well-Read Students, step 1).

Masking as in BERT: 15% of the real positions, of those 80% [MASK], 10% a random
token, 10% unchanged; optionally whole words (all characters of a chosen word).
Checkpoints (weights, optimiser, schedule, step, random state) are written
atomically every ``checkpoint_every`` steps, and a run resumes from its last one.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np

from pipelines.config import RunConfig
from pipelines.data.encoding import IGNORE, CharEncoder, load_tokenizer, pad_batch
from pipelines.events import Reporter
from pipelines.files import replace_dir, write_json
from pipelines.modeling.models import ModelMeta, bert_config, parameter_count, save_model
from pipelines.training.loop import BatchStream, Stage, StepLoop, StepResult
from pipelines.training.optim import StageClock, autocast, make_optimizer, resolve_precision

PRETRAINED_DIR, CHECKPOINT_DIR = "pretrained", "pretrain-checkpoint"


@dataclass
class Sequence_:
    ids: list[int]
    words: list[int]  # word index per position (-1 for [CLS]/[SEP])


def pack_sequences(sentences, encoder: CharEncoder, max_length: int) -> list[Sequence_]:
    """Consecutive sentences packed into sequences of at most ``max_length`` (BERT style)."""
    span = max_length - 2
    out: list[Sequence_] = []
    ids: list[int] = []
    words: list[int] = []
    word_no = 0

    def flush() -> None:
        nonlocal ids, words
        if ids:
            out.append(Sequence_([encoder.cls_id, *ids, encoder.sep_id], [-1, *words, -1]))
        ids, words = [], []

    for sentence in sentences:
        chars = [c for word in sentence for c in word]
        owners = [w for w, word in enumerate(sentence, word_no) for _ in word]
        word_no += len(sentence)
        for start in range(0, len(chars), span):  # a long sentence: consecutive pieces
            piece = chars[start : start + span]
            if len(ids) + len(piece) > span:
                flush()
            ids += encoder.ids(piece)
            words += owners[start : start + span]
    flush()
    return out


def mask_batch(
    ids: np.ndarray,
    words: np.ndarray,
    rng: np.random.Generator,
    mask_id: int,
    vocab_size: int,
    first_token: int,
    prob: float = 0.15,
    whole_word: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(masked inputs, labels): labels hold the original id where a position was chosen."""
    real = words >= 0  # not [CLS] / [SEP] / padding
    if whole_word:
        chosen_words = {w for w in np.unique(words[real]) if rng.random() < prob}
        chosen = real & np.isin(words, list(chosen_words))
    else:
        chosen = real & (rng.random(ids.shape) < prob)
    labels = np.where(chosen, ids, IGNORE)
    action = rng.random(ids.shape)
    inputs = ids.copy()
    inputs[chosen & (action < 0.8)] = mask_id
    random_slot = chosen & (action >= 0.8) & (action < 0.9)
    inputs[random_slot] = rng.integers(first_token, vocab_size, size=int(random_slot.sum()))
    return inputs, labels  # the remaining 10% of chosen positions stay unchanged


def masked_logits(model, inputs: np.ndarray, mask: np.ndarray, labels: np.ndarray):
    """Vocabulary logits at the masked positions only, and their targets. The
    vocabulary projection (H x 21,128) costs more than a compact encoder itself,
    so skipping the 85% of positions that carry no loss is most of the speed."""
    import torch

    hidden = model.bert(input_ids=torch.from_numpy(inputs), attention_mask=torch.from_numpy(mask)).last_hidden_state
    chosen = torch.from_numpy(labels != IGNORE)
    return model.cls(hidden[chosen]), torch.from_numpy(labels)[chosen]


def _batch(seqs: list[Sequence_], pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids, mask = pad_batch([s.ids for s in seqs], pad_id)
    words = np.full(ids.shape, -1, dtype=np.int64)
    for i, s in enumerate(seqs):
        words[i, : len(s.words)] = s.words
    return ids, mask, words


def pretrain(cfg: RunConfig, sentences, run_dir: str, reporter: Reporter) -> dict:
    import torch
    from transformers import BertForMaskedLM

    pc = cfg.pretrain
    if pc.threads:
        torch.set_num_threads(pc.threads)
    tokenizer = load_tokenizer(cfg.model.tokenizer)
    encoder = CharEncoder(tokenizer)
    seqs = pack_sequences(sentences, encoder, pc.max_length)
    random.Random(cfg.seed).shuffle(seqs)
    holdout, seqs = seqs[: pc.holdout], seqs[pc.holdout :]
    if not seqs:
        raise ValueError("the pretraining corpus is empty after the held-out slice")
    config = bert_config(cfg.model.preset, len(tokenizer), ["O"], pc.max_length, cfg.model.dropout)
    torch.manual_seed(cfg.seed)
    model = BertForMaskedLM(config)
    clock = StageClock(pc.max_minutes, across_resumes=pc.decay_to_budget)
    optimizer, schedule = make_optimizer(model, pc.learning_rate, pc.weight_decay, pc.steps, int(pc.warmup_ratio * pc.steps),
                                         clock.budget_s if pc.decay_to_budget else None, clock.spent_s)
    rng = np.random.default_rng(cfg.seed)
    vocab = len(tokenizer)
    first_token = max(tokenizer.all_special_ids) + 1
    precision, why = resolve_precision(pc.precision)
    reporter.log(
        f"pretraining {cfg.model.preset} ({parameter_count(model) / 1e6:.1f}M parameters) on {len(seqs)} sequences "
        f"of <= {pc.max_length}; {len(holdout)} held out; {pc.steps} steps of batch {pc.batch_size}; {precision} ({why})"
    )

    def mlm_accuracy() -> float:
        """Accuracy on the held-out slice, masked with a fixed seed so checkpoints compare."""
        model.eval()
        eval_rng = np.random.default_rng(12345)
        right = total = 0
        with torch.inference_mode():
            for i in range(0, len(holdout), 64):
                ids, mask, words = _batch(holdout[i : i + 64], encoder.pad_id)
                inputs, labels = mask_batch(ids, words, eval_rng, encoder.tokenizer.mask_token_id, vocab, first_token, pc.mask_prob)
                logits, targets = masked_logits(model, inputs, mask, labels)
                right += int((logits.argmax(-1) == targets).sum())
                total += len(targets)
        model.train()
        return right / total if total else 0.0

    def epoch() -> list[list[int]]:
        """Every sequence in a fresh order, in full batches: the few left over wait for
        the next epoch's shuffle."""
        order = rng.permutation(len(seqs)).tolist()
        size = min(pc.batch_size, len(order))
        return [order[i : i + size] for i in range(0, len(order) - size + 1, size)]

    batches = BatchStream(epoch)

    def step() -> StepResult:
        ids, mask, words = _batch([seqs[i] for i in batches.next()], encoder.pad_id)
        inputs, labels = mask_batch(ids, words, rng, encoder.tokenizer.mask_token_id, vocab, first_token, pc.mask_prob, pc.whole_word)
        with autocast(precision):
            logits, targets = masked_logits(model, inputs, mask, labels)
        return StepResult(torch.nn.functional.cross_entropy(logits.float(), targets), int(mask.sum()))

    def restore(state: dict) -> None:
        rng.bit_generator.state = state["rng"]
        batches.restore(state["batches"])

    stage = Stage(
        step=step,
        checkpoint_due=lambda at: at % pc.checkpoint_every == 0,
        on_checkpoint=lambda at: reporter.metric("mlm_accuracy", mlm_accuracy()),
        state=lambda: {"rng": rng.bit_generator.state, "batches": batches.state()},
        restore=restore,
    )
    loop = StepLoop(model, optimizer, schedule, clock, pc.steps, os.path.join(run_dir, CHECKPOINT_DIR), reporter)
    loop.resume(stage)
    loop.run(stage)
    accuracy = mlm_accuracy()
    meta = ModelMeta(labels=["O"], max_length=pc.max_length, preset=cfg.model.preset, source=f"mlm:{cfg.model.preset}")
    replace_dir(os.path.join(run_dir, PRETRAINED_DIR), lambda tmp: save_model(model, encoder, meta, tmp))
    result = {"steps": loop.step, "mlm_accuracy": accuracy, "seconds": round(loop.seconds, 1),
              "total_seconds": round(clock.total_s(), 1),
              "tokens_per_s": loop.tokens_per_s(), "sequences": len(seqs), "precision": precision}
    write_json(os.path.join(run_dir, PRETRAINED_DIR, "pretrain.json"), result)
    return result

