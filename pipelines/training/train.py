"""Fine-tuning: length-bucketed batches, AdamW with warmup, best-on-dev checkpoint."""

from __future__ import annotations

import math
import os
import random
import shutil
from dataclasses import dataclass

import numpy as np

from pipelines.config import RunConfig
from pipelines.data.encoding import IGNORE, CharEncoder, pad_batch, window_spans
from pipelines.data.extra import extra_training, swapped_mentions
from pipelines.data.loaders import NerData, column
from pipelines.evaluate.metrics import ner_metrics
from pipelines.events import Reporter
from pipelines.files import replace_dir
from pipelines.layout import MODEL_DIR
from pipelines.modeling.crf import crf_scores, tagging_loss
from pipelines.modeling.models import build_model, parameter_count, save_model
from pipelines.runtime.engines import TorchEngine
from pipelines.runtime.predict import decode, predict_logits
from pipelines.training.loop import BatchStream, Stage, StepLoop, StepResult
from pipelines.training.optim import StageClock, autocast, make_optimizer, resolve_precision

CHECKPOINT_DIR = "train-checkpoint"


@dataclass
class Example:
    ids: list[int]
    labels: list[int]


def make_examples(tokens, tags, encoder: CharEncoder, max_length: int, stride: int | None) -> list[Example]:
    """Training windows: long sentences become several overlapping examples."""
    examples = []
    for ids, label_ids in zip(encoder.ids_many(tokens), tags):
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
    crf = crf_scores(model)
    return ner_metrics(gold_tags, [decode(lg, labels, decoder, crf) for lg in logits], strict=strict)


def batch_loss(model, examples: list[Example], batch: list[int], pad_id: int):
    """(the training loss of a batch of labeled windows, its attention mask): token
    cross-entropy, or a CRF's likelihood for a model with one."""
    import torch

    ids, mask = pad_batch([examples[i].ids for i in batch], pad_id)
    label_rows = np.full(ids.shape, IGNORE, dtype=np.int64)
    for row, i in enumerate(batch):
        label_rows[row, : len(examples[i].labels)] = examples[i].labels
    ids, mask = torch.from_numpy(ids), torch.from_numpy(mask)
    logits = model(input_ids=ids, attention_mask=mask).logits.float()
    return tagging_loss(model, logits, torch.from_numpy(label_rows), mask), mask.numpy()


def train(cfg: RunConfig, data: NerData, run_dir: str, reporter: Reporter) -> dict:
    """Fine-tune the configured model; the best dev checkpoint is saved to the run's
    ``model/``. A resumable checkpoint is written at every dev evaluation, and a run
    that has one (killed, or stopped by its budget) resumes from it; it is removed
    once every step is taken."""
    import torch

    tc, mc = cfg.train, cfg.model
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if tc.threads:
        torch.set_num_threads(tc.threads)

    labels = data.labels
    held_out = data.held_out_texts()  # what the lexicon and the vectors may not read
    model, encoder, meta = build_model(mc, labels, held_out)
    extra_counts = {}
    if mc.vectors and not os.path.isdir(os.path.join(run_dir, CHECKPOINT_DIR)):  # a resumed run loads its own weights
        from pipelines.modeling.vectors import initialise_bilstm

        reporter.log(f"vectors: character and bigram tables from {', '.join(mc.vectors)}")
        vectors = initialise_bilstm(model, encoder, mc.vectors, held_out, cfg.seed)
        reporter.log(f"vectors: {vectors['char_rows']} character rows{' (LAC)' if vectors.get('char_source') else ''}, "
                     f"{vectors.get('bigram_rows', 0)} bigram rows from {vectors['sentences']} sentences "
                     f"({vectors['dropped_held_out']} sharing dev/test text left out), {vectors['seconds']} s")
        extra_counts["vectors"] = vectors
    train_split, dev_split = data.splits["train"], data.splits["dev"]
    examples = make_examples(train_split["tokens"], train_split["ner_tags"], encoder, mc.max_length, mc.window_stride)
    if mc.lexicon and encoder.lexicon is not None:
        lexicon = encoder.lexicon
        reporter.log(f"word lexicon {lexicon.source}: {len(lexicon)} words"
                     + (f" ({lexicon.held_out_dropped} corpus sentences left out sharing text with dev / test)" if lexicon.held_out_dropped else ""))
        extra_counts["lexicon"] = {"words": len(lexicon), "dropped_held_out": lexicon.held_out_dropped}
    if cfg.data.extra_train:
        extra = extra_training(cfg.data.extra_train, data)
        reporter.log(f"extra training text: {extra.summary()}")
        examples += make_examples(extra.tokens, extra.label_ids, encoder, mc.max_length, mc.window_stride)
        extra_counts.update(extra.counts)
    if cfg.data.augment:
        swapped, sizes, dropped = swapped_mentions(cfg.data.augment, data, cfg.seed)
        reporter.log(f"mention swapping: {len(swapped.tokens)} sentences, lexicon {cfg.data.augment.lexicon} "
                     + ", ".join(f"{n} {etype}" for etype, n in sizes.items())
                     + (f" ({dropped} corpus sentences sharing dev/test text left out)" if dropped else ""))
        examples += make_examples(swapped.tokens, swapped.label_ids, encoder, mc.max_length, mc.window_stride)
        extra_counts["mention_swap"] = {"sentences": len(swapped.tokens), **sizes, "held_out_dropped": dropped}
    dev_sentences = column(dev_split, "tokens")
    dev_gold = [[labels[t] for t in tags] for tags in column(dev_split, "ner_tags")]

    rng = random.Random(cfg.seed)
    steps_per_epoch = math.ceil(len(examples) / tc.batch_size)
    total_steps = max(1, math.ceil(tc.epochs * steps_per_epoch))
    warmup = max(tc.warmup_steps, int(tc.warmup_ratio * total_steps))
    clock = StageClock(tc.max_minutes, across_resumes=tc.decay_to_budget)
    optimizer, schedule = make_optimizer(model, tc.learning_rate, tc.weight_decay, total_steps, warmup,
                                         clock.budget_s if tc.decay_to_budget else None, clock.spent_s)
    eval_every = tc.eval_every or steps_per_epoch
    model_dir = os.path.join(run_dir, MODEL_DIR)

    params = parameter_count(model)
    precision, why = resolve_precision(tc.precision)
    reporter.log(
        f"{meta.source}: {params / 1e6:.1f}M parameters; {len(examples)} training windows, "
        f"{len(dev_sentences)} dev sentences; {total_steps} steps of batch {tc.batch_size}; {precision} ({why})"
    )
    reporter.metric("parameters", params)

    best = {"f1": -1.0, "step": 0}
    batches = BatchStream(lambda: bucketed_batches(examples, tc.batch_size, rng))

    def step() -> StepResult:
        with autocast(precision):
            loss, mask = batch_loss(model, examples, batches.next(), encoder.pad_id)
        return StepResult(loss, int(mask.sum()))

    def on_checkpoint(at: int) -> None:
        scores = evaluate_model(model, encoder, dev_sentences, dev_gold, labels, mc.max_length, mc.window_stride, decoder=cfg.eval.decode)
        reporter.metric("dev_f1", scores["f1"])
        reporter.log(f"step {at}: dev F1 {scores['f1']:.4f}, accuracy {scores['accuracy']:.4f}")
        if scores["f1"] > best["f1"]:
            best.update(f1=scores["f1"], step=at, accuracy=scores["accuracy"])
            replace_dir(model_dir, lambda tmp: save_model(model, encoder, meta, tmp))

    def restore(state: dict) -> None:
        rng.setstate(state["rng"])
        batches.restore(state["batches"])
        best.update(state["best"])

    stage = Stage(
        step=step,
        checkpoint_due=lambda at: at % eval_every == 0,
        on_checkpoint=on_checkpoint,
        state=lambda: {"rng": rng.getstate(), "batches": batches.state(), "best": dict(best)},
        restore=restore,
        progress=lambda at: {"epoch": round(at / steps_per_epoch, 2)},
    )
    checkpoint = os.path.join(run_dir, CHECKPOINT_DIR)
    loop = StepLoop(model, optimizer, schedule, clock, total_steps, checkpoint, reporter, grad_clip=tc.grad_clip)
    loop.resume(stage)
    stop_reason = loop.run(stage)
    if loop.step >= total_steps:
        shutil.rmtree(checkpoint, ignore_errors=True)  # nothing left to resume; it weighs three models

    reporter.log(f"training stopped at step {loop.step}/{total_steps} ({stop_reason}); best dev F1 {best['f1']:.4f} at step {best['step']}")
    return {
        "best_dev_f1": best["f1"],
        "best_dev_accuracy": best.get("accuracy"),
        "best_step": best["step"],
        "steps": loop.step,
        "epochs": round(loop.step / steps_per_epoch, 3),
        "train_seconds": round(loop.seconds, 1),
        "total_seconds": round(clock.total_s(), 1),  # across resumes
        "resumed_from": loop.resumed_from,
        "tokens_per_s": loop.tokens_per_s(),
        "parameters": params,
        "precision": precision,
        "stop_reason": stop_reason,
        "extra_train": extra_counts,
    }
