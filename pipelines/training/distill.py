"""Pre-trained distillation (Well-Read Students, step 2): a fine-tuned teacher tags
unlabeled transfer text with soft labels and a compact student learns them; the
train stage then fine-tunes the student on the labeled data.

Loss per step: ``(1 - alpha) * T^2 * KL(teacher_T || student_T)`` averaged over the
real characters of a transfer batch, plus ``alpha *`` the cross-entropy of a labeled
batch of the data's train split when ``alpha > 0``. The ``T^2`` keeps the soft-label
gradients on the scale of the hard-label ones whatever the temperature (Hinton et al.).

Soft labels are computed per batch by a teacher forward pass, not cached: a cache of
``[characters x labels]`` floats for the whole transfer set would be gigabytes, while
the per-batch cost is one teacher forward per step (no backward). The result's
``teacher_share`` says what fraction of the time that took: small for a teacher of the
student's size, most of the step for a bert-base teacher on CPU.
"""

from __future__ import annotations

import os
import random
import time
from typing import Sequence

from pipelines.config import RunConfig
from pipelines.data.encoding import LEXICON_STRIDE, make_windows, pad_batch
from pipelines.data.loaders import NerData
from pipelines.events import Reporter
from pipelines.files import replace_dir, write_json
from pipelines.modeling.crf import tag_log_probs
from pipelines.modeling.models import ModelError, build_model, load_model, parameter_count, save_model
from pipelines.training.loop import BatchStream, Stage, StepLoop, StepResult
from pipelines.training.optim import StageClock, autocast, make_optimizer, resolve_precision
from pipelines.training.train import batch_loss, bucketed_batches, make_examples

DISTILLED_DIR, CHECKPOINT_DIR = "distilled", "distill-checkpoint"


def kd_loss(student_logits, teacher_logits, temperature: float):
    """``T^2`` times the mean over rows of KL(softmax(teacher / T) || softmax(student / T));
    rows are characters, ``[N, labels]``. Exactly 0 when the logits are equal."""
    import torch.nn.functional as F

    log_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    return F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean") * temperature**2


def label_order(teacher_labels: Sequence[str], labels: Sequence[str]) -> list[int]:
    """Indices that reorder the teacher's logits into the student's label order."""
    if set(teacher_labels) != set(labels):
        raise ModelError(f"the teacher's labels ({', '.join(teacher_labels)}) differ from the data's ({', '.join(labels)})")
    return [list(teacher_labels).index(label) for label in labels]


def check_same_vocab(teacher_tokenizer, student_tokenizer, teacher: str) -> None:
    """Teacher and student read the same ids at the same positions, so their vocabularies must match."""
    a, b = teacher_tokenizer.get_vocab(), student_tokenizer.get_vocab()
    if a != b:
        raise ModelError(
            f"the teacher ({teacher}, {len(a)} tokens) and the student ({len(b)} tokens) have different vocabularies: "
            "distillation needs one tokenizer (set model.tokenizer to the teacher's)"
        )


def check_same_lexicon(teacher_encoder, student_encoder, teacher: str) -> None:
    """A teacher that reads lexicon codes needs the student's ids to carry the same
    ones; a teacher without reads the student's ids with the codes taken off."""
    lexicon = teacher_encoder.lexicon
    if lexicon is not None and (student_encoder.lexicon is None or student_encoder.lexicon.words != lexicon.words):
        raise ModelError(
            f"the teacher ({teacher}) reads codes of its word lexicon ({lexicon.source or 'saved with it'}): "
            "the student needs the same one (set model.lexicon to it, or start the student from the teacher)"
        )


class Teachers:
    """One teacher or an ensemble: the mean of their logits, each in the student's
    label order and read from the student's ids (codes taken off for a teacher
    without a lexicon). Averaging logits, not probabilities, keeps one temperature
    meaningful for all; a BiLSTM and a BERT teacher err differently, which is the point.
    A CRF teacher's are its log-marginals (``tag_log_probs``), a per-character
    log-distribution like a softmax tagger's logits, where its emissions are none."""

    def __init__(self, dirs: Sequence[str], encoder, labels: Sequence[str]) -> None:
        import torch

        self.dirs, self.models, self.orders, self.plain, self.sources = list(dirs), [], [], [], []
        for directory in self.dirs:
            model, teacher_encoder, meta = load_model(directory)
            check_same_vocab(teacher_encoder.tokenizer, encoder.tokenizer, directory)
            check_same_lexicon(teacher_encoder, encoder, directory)
            self.models.append(model)
            self.orders.append(torch.tensor(label_order(meta.labels, labels)))
            self.plain.append(teacher_encoder.lexicon is None)
            self.sources.append(meta.source or directory)

    def parameters(self) -> int:
        return sum(parameter_count(m) for m in self.models)

    def logits(self, ids, mask):
        import torch

        # no_grad, not inference_mode: the targets are saved for the student's backward pass
        with torch.no_grad():
            total = None
            for model, order, plain in zip(self.models, self.orders, self.plain):
                logits = model(input_ids=torch.remainder(ids, LEXICON_STRIDE) if plain else ids, attention_mask=mask).logits
                logits = tag_log_probs(model, logits, mask)[..., order]
                total = logits if total is None else total + logits
            return total / len(self.models)


def distill(cfg: RunConfig, teacher_dir: str | Sequence[str], sentences, data: NerData, run_dir: str, reporter: Reporter) -> dict:
    """Train the configured student on the soft labels of ``teacher_dir`` (a model
    directory, or several: an ensemble) over ``sentences`` (lists of words); the student
    is saved to ``run_dir/distilled`` for the train stage."""
    import torch

    dc, mc = cfg.distill, cfg.model
    if dc.threads:
        torch.set_num_threads(dc.threads)
    torch.manual_seed(cfg.seed)
    student, encoder, meta = build_model(mc, data.labels, data.held_out_texts())
    teachers = Teachers([teacher_dir] if isinstance(teacher_dir, str) else teacher_dir, encoder, data.labels)

    rng = random.Random(cfg.seed)
    windows = make_windows([[c for word in s for c in word] for s in sentences], encoder, dc.max_length)
    rng.shuffle(windows)
    holdout, windows = windows[: dc.holdout], windows[dc.holdout :]
    if not windows:
        raise ValueError("the transfer text is empty after the held-out slice")
    labeled = []
    if dc.alpha > 0 and "train" in data.splits:
        train = data.splits["train"]
        labeled = make_examples(train["tokens"], train["ner_tags"], encoder, dc.max_length, mc.window_stride)

    clock = StageClock(dc.max_minutes, across_resumes=dc.decay_to_budget)
    optimizer, schedule = make_optimizer(student, dc.learning_rate, dc.weight_decay, dc.steps, int(dc.warmup_ratio * dc.steps),
                                         clock.budget_s if dc.decay_to_budget else None, clock.spent_s)
    precision, why = resolve_precision(dc.precision)
    reporter.log(
        f"distilling {' + '.join(teachers.dirs)} ({teachers.parameters() / 1e6:.1f}M parameters) into "
        f"{meta.source} ({parameter_count(student) / 1e6:.1f}M) on {len(windows)} windows of <= {dc.max_length}"
        f"{f' plus {len(labeled)} labeled' if labeled else ''}; {len(holdout)} held out; {dc.steps} steps of batch {dc.batch_size}; {precision} ({why})"
    )

    def tensors(ws):
        ids, mask = pad_batch([w.ids for w in ws], encoder.pad_id)
        ids, mask = torch.from_numpy(ids), torch.from_numpy(mask)
        # the teacher was never trained on [CLS], [SEP] or padding: no targets there
        return ids, mask, mask.bool() & (ids != encoder.cls_id) & (ids != encoder.sep_id)

    def agreement() -> float:
        """Share of held-out characters the student tags as the teacher does (argmax)."""
        student.eval()
        same = total = 0
        with torch.no_grad():
            for i in range(0, len(holdout), 64):
                ids, mask, real = tensors(holdout[i : i + 64])
                ours = tag_log_probs(student, student(input_ids=ids, attention_mask=mask).logits, mask)[real].argmax(-1)
                same += int((ours == teachers.logits(ids, mask)[real].argmax(-1)).sum())
                total += int(real.sum())
        student.train()
        return same / total if total else 0.0

    # Both streams draw their epochs from one generator, so its state and what is left of
    # each stream's epoch place a resumed run exactly where the killed one was.
    transfer = BatchStream(lambda: bucketed_batches(windows, dc.batch_size, rng))
    hard = BatchStream(lambda: bucketed_batches(labeled, dc.batch_size, rng)) if labeled else None
    teacher_s = 0.0

    def step() -> StepResult:
        nonlocal teacher_s
        ids, mask, real = tensors([windows[i] for i in transfer.next()])
        with autocast(precision):
            t0 = time.monotonic()
            targets = teachers.logits(ids, mask)[real].float()
            teacher_s += time.monotonic() - t0
            ours = tag_log_probs(student, student(input_ids=ids, attention_mask=mask).logits, mask)
            loss = kd_loss(ours[real].float(), targets, dc.temperature)
            tokens = int(mask.sum())
            if hard is not None:
                ce, labeled_mask = batch_loss(student, labeled, hard.next(), encoder.pad_id)
                loss = (1 - dc.alpha) * loss + dc.alpha * ce
                tokens += int(labeled_mask.sum())
        return StepResult(loss, tokens)

    def restore(state: dict) -> None:
        rng.setstate(state["rng"])
        transfer.restore(state["transfer"])
        if hard is not None:
            hard.restore(state["hard"])

    stage = Stage(
        step=step,
        checkpoint_due=lambda at: at % dc.checkpoint_every == 0,
        on_checkpoint=lambda at: reporter.metric("teacher_agreement", agreement()),
        state=lambda: {"rng": rng.getstate(), "transfer": transfer.state(), "hard": hard.state() if hard else None},
        restore=restore,
    )
    loop = StepLoop(student, optimizer, schedule, clock, dc.steps, os.path.join(run_dir, CHECKPOINT_DIR), reporter)
    loop.resume(stage)
    first_step = loop.step
    loop.run(stage)

    meta.source = f"distill:{'+'.join(teachers.sources)}->{meta.source}"
    replace_dir(os.path.join(run_dir, DISTILLED_DIR), lambda tmp: save_model(student, encoder, meta, tmp))
    seconds = loop.seconds
    result = {
        "steps": loop.step,
        "teacher_agreement": agreement(),
        "seconds": round(seconds, 1),
        "total_seconds": round(clock.total_s(), 1),  # across resumes
        "tokens_per_s": loop.tokens_per_s(),
        "teacher_share": round(teacher_s / seconds, 3) if loop.step > first_step and seconds > 0 else None,
        "windows": len(windows),
        "teacher": teachers.dirs[0] if isinstance(teacher_dir, str) else teachers.dirs,
        "precision": precision,
    }
    write_json(os.path.join(run_dir, DISTILLED_DIR, "distill.json"), result)
    return result
