"""Fine-tuning: length-bucketed batches, AdamW with warmup, best-on-dev checkpoint."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

import numpy as np

from pipelines.config import RunConfig
from pipelines.data.encoding import CharEncoder, pad_batch, window_spans
from pipelines.data.loaders import NerData
from pipelines.evaluate.metrics import ner_metrics
from pipelines.events import Reporter, time_left
from pipelines.files import replace_dir
from pipelines.modeling.models import build_model, parameter_count, save_model
from pipelines.runtime.engines import TorchEngine
from pipelines.runtime.predict import decode, predict_logits
from pipelines.training.optim import autocast, make_optimizer, optimizer_step, resolve_precision

IGNORE = -100  # label for [CLS], [SEP] and padding: no loss there


@dataclass
class Example:
    ids: list[int]
    labels: list[int]


def make_examples(tokens, tags, encoder: CharEncoder, max_length: int, stride: int | None) -> list[Example]:
    """Training windows: long sentences become several overlapping examples."""
    examples = []
    for chars, label_ids in zip(tokens, tags):
        ids = encoder.ids(chars)
        for start, end in window_spans(len(ids), max_length - 2, stride):
            examples.append(
                Example(
                    [encoder.cls_id, *ids[start:end], encoder.sep_id],
                    [IGNORE, *label_ids[start:end], IGNORE],
                )
            )
    return examples


def bucketed_batches(examples: list[Example], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar-length examples: little padding, still random order."""
    order = list(range(len(examples)))
    rng.shuffle(order)
    pool = batch_size * 50
    batches = []
    for i in range(0, len(order), pool):
        chunk = sorted(order[i : i + pool], key=lambda j: len(examples[j].ids))
        batches += [chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def evaluate_model(model, encoder, sentences, gold_tags, labels, max_length, stride, strict=False, decoder="argmax") -> dict:
    was_training = model.training
    model.eval()
    logits = predict_logits(TorchEngine(model), sentences, encoder, max_length, stride)
    model.train(was_training)
    return ner_metrics(gold_tags, [decode(lg, labels, decoder) for lg in logits], strict=strict)


def batch_loss(model, examples: list[Example], batch: list[int], pad_id: int):
    """(token cross-entropy of a batch of labeled windows, its attention mask)."""
    import torch

    ids, mask = pad_batch([examples[i].ids for i in batch], pad_id)
    label_rows = np.full(ids.shape, IGNORE, dtype=np.int64)
    for row, i in enumerate(batch):
        label_rows[row, : len(examples[i].labels)] = examples[i].labels
    logits = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.float()
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), torch.from_numpy(label_rows).reshape(-1), ignore_index=IGNORE
    )
    return loss, mask


def train(cfg: RunConfig, data: NerData, model_dir: str, reporter: Reporter) -> dict:
    """Fine-tune the configured model; the best dev checkpoint is saved to ``model_dir``."""
    import torch

    tc, mc = cfg.train, cfg.model
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if tc.threads:
        torch.set_num_threads(tc.threads)

    labels = data.labels
    model, tokenizer, meta = build_model(mc, labels)
    encoder = CharEncoder(tokenizer)
    train_split, dev_split = data.splits["train"], data.splits["dev"]
    examples = make_examples(train_split["tokens"], train_split["ner_tags"], encoder, mc.max_length, mc.window_stride)
    dev_sentences = dev_split["tokens"]
    dev_gold = [[labels[t] for t in tags] for tags in dev_split["ner_tags"]]

    rng = random.Random(cfg.seed)
    steps_per_epoch = math.ceil(len(examples) / tc.batch_size)
    total_steps = max(1, math.ceil(tc.epochs * steps_per_epoch))
    warmup = max(tc.warmup_steps, int(tc.warmup_ratio * total_steps))
    budget_s = tc.max_minutes * 60 if tc.max_minutes and tc.decay_to_budget else None
    optimizer, schedule = make_optimizer(model, tc.learning_rate, tc.weight_decay, total_steps, warmup, budget_s)
    eval_every = tc.eval_every or steps_per_epoch

    params = parameter_count(model)
    precision, why = resolve_precision(tc.precision)
    reporter.log(
        f"{meta.source}: {params / 1e6:.1f}M parameters; {len(examples)} training windows, "
        f"{len(dev_sentences)} dev sentences; {total_steps} steps of batch {tc.batch_size}; {precision} ({why})"
    )
    reporter.metric("parameters", params)

    best = {"f1": -1.0, "step": 0}
    step, tokens_seen, loss_sum, loss_n = 0, 0, 0.0, 0
    start = time.monotonic()
    deadline = start + tc.max_minutes * 60 if tc.max_minutes else None
    stop_reason = "completed"
    model.train()

    def checkpoint() -> None:
        scores = evaluate_model(model, encoder, dev_sentences, dev_gold, labels, mc.max_length, mc.window_stride, decoder=cfg.eval.decode)
        reporter.metric("dev_f1", scores["f1"])
        reporter.log(f"step {step}: dev F1 {scores['f1']:.4f}, accuracy {scores['accuracy']:.4f}")
        if scores["f1"] > best["f1"]:
            best.update(f1=scores["f1"], step=step, accuracy=scores["accuracy"])
            replace_dir(model_dir, lambda tmp: save_model(model, tokenizer, meta, tmp))

    while step < total_steps:
        for batch in bucketed_batches(examples, tc.batch_size, rng):
            with autocast(precision):
                loss, mask = batch_loss(model, examples, batch, encoder.pad_id)
            loss_sum += optimizer_step(loss, model, optimizer, schedule, tc.grad_clip)
            step += 1
            tokens_seen += int(mask.sum())
            loss_n += 1
            if step % 10 == 0 or step == total_steps:
                elapsed = time.monotonic() - start
                reporter.progress(
                    step,
                    total_steps,
                    "steps",
                    epoch=round(step / steps_per_epoch, 2),
                    loss=round(loss_sum / loss_n, 4),
                    lr=schedule.get_last_lr()[0],
                    tokens_per_s=round(tokens_seen / max(elapsed, 1e-9)),
                    **time_left(deadline),
                )
                loss_sum, loss_n = 0.0, 0
            out_of_time = deadline is not None and time.monotonic() > deadline
            if step % eval_every == 0 or step == total_steps or out_of_time:
                checkpoint()
            if out_of_time:
                stop_reason = f"time budget of {tc.max_minutes} min reached"
                break
            if step >= total_steps:
                break
        if stop_reason != "completed":
            break

    elapsed = time.monotonic() - start
    reporter.log(f"training stopped at step {step}/{total_steps} ({stop_reason}); best dev F1 {best['f1']:.4f} at step {best['step']}")
    return {
        "best_dev_f1": best["f1"],
        "best_dev_accuracy": best.get("accuracy"),
        "best_step": best["step"],
        "steps": step,
        "epochs": round(step / steps_per_epoch, 3),
        "train_seconds": round(elapsed, 1),
        "tokens_per_s": round(tokens_seen / max(elapsed, 1e-9)),
        "parameters": params,
        "precision": precision,
        "stop_reason": stop_reason,
    }
