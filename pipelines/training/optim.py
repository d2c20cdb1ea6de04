"""AdamW with BERT's weight-decay groups and a linear warmup/decay schedule, one
optimisation step, and the precision of the forward pass: shared by fine-tuning,
pretraining and distillation."""

from __future__ import annotations

import time

from pipelines.cpu import cpu_flags

NO_DECAY = ("bias", "LayerNorm.weight")  # as in BERT: no decay on biases and norms
# CPU flags of bf16 arithmetic in hardware; elsewhere torch emulates bf16 (16x slower
# a step than fp32, measured on an AVX2-only EPYC).
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def resolve_precision(setting: str, flags: set[str] | None = None) -> tuple[str, str]:
    """(precision, why) for a ``precision`` setting. ``auto`` is bf16 on CPUs with
    AMX-BF16 tiles, where it was measured at 2.0x (small) and 1.7x (mini) the steps
    per second of fp32 (scripts/bench_train_step.py), and fp32 elsewhere: AVX-512-BF16
    alone is unmeasured."""
    flags = cpu_flags() if flags is None else flags
    if setting == "auto":
        if "amx_bf16" in flags:
            return "bf16", "auto: this CPU has AMX-BF16"
        return "fp32", "auto: this CPU has no AMX-BF16"
    if setting == "bf16" and not flags.intersection(BF16_FLAGS):
        return "bf16", "requested; this CPU has no bf16 arithmetic, so torch emulates it (many times slower)"
    return setting, "requested"


def autocast(precision: str):
    """The forward pass in ``precision``: under bf16, matrix products run in bf16 while
    weights, optimiser state and gradients stay fp32 (mixed precision)."""
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


class StageClock:
    """Seconds a resumable stage has trained, counted against its time budget. With
    ``across_resumes`` the budget spans every invocation: a resumed run continues the
    schedule and the budget where the last one stopped (the checkpoint stores the
    seconds); without, each invocation gets the whole budget again."""

    def __init__(self, max_minutes: float | None, across_resumes: bool):
        self.budget_s = max_minutes * 60 if max_minutes else None
        self.across_resumes = across_resumes
        self.earlier_s = 0.0  # seconds of earlier invocations (from the checkpoint)
        self.start = time.monotonic()

    def resume(self, state: dict | None) -> None:
        """Count from now, after the seconds a checkpoint says were spent before."""
        self.earlier_s = float((state or {}).get("seconds", 0.0))
        self.start = time.monotonic()

    def total_s(self) -> float:
        return self.earlier_s + time.monotonic() - self.start

    def spent_s(self) -> float:
        """Seconds counted against the budget."""
        return self.total_s() if self.across_resumes else time.monotonic() - self.start

    def deadline(self) -> float | None:
        """The ``time.monotonic()`` at which the budget runs out (None: no budget)."""
        return None if self.budget_s is None else time.monotonic() + self.budget_s - self.spent_s()

    def out_of_time(self) -> bool:
        return self.budget_s is not None and self.spent_s() >= self.budget_s

    def stop_message(self, step: int) -> str:
        minutes = self.budget_s / 60
        if self.across_resumes:
            return f"time budget of {minutes:g} min reached at step {step} (learning rate decayed to zero); raise max_minutes and resume to go on"
        return f"time budget of {minutes:g} min reached at step {step}; run again to resume"


def make_optimizer(model, learning_rate: float, weight_decay: float, total_steps: int, warmup_steps: int,
                   budget_s: float | None = None, clock=None):
    """AdamW and a linear warmup/decay schedule. With ``budget_s`` the decay follows
    whichever runs out first, the steps or the seconds of ``clock()`` (default: since
    now): a run cut by its time budget still ends at learning rate zero instead of
    mid-schedule."""
    import torch

    groups = [
        {"params": [p for n, p in model.named_parameters() if not n.endswith(NO_DECAY)], "weight_decay": weight_decay},
        {"params": [p for n, p in model.named_parameters() if n.endswith(NO_DECAY)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=learning_rate, fused=True)  # fused update: ~15% faster steps on 2 cores
    warmup = min(warmup_steps, max(total_steps - 1, 0))
    if clock is None:
        start = time.monotonic()
        clock = lambda: time.monotonic() - start  # noqa: E731

    def factor(step: int) -> float:
        ramp = min(1.0, step / max(1, warmup)) if warmup else 1.0
        done = max(0, step - warmup) / max(1, total_steps - warmup)
        if budget_s:  # also during warmup: a budget shorter than the warmup still ends at zero
            spent = clock() / budget_s
            # The clock steers the decay only while the run is behind its budget's pace (it
            # would not finish its steps in time). A run on pace decays by its steps alone,
            # so a seeded run repeats exactly: the seconds no longer leak into its schedule.
            if spent > step / total_steps:
                done = max(done, spent)
        return max(0.0, min(ramp, 1.0 - done))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def optimizer_step(loss, model, optimizer, schedule, grad_clip: float = 1.0) -> float:
    """Backward, clip, step, advance the schedule; returns the loss value."""
    import torch

    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()
