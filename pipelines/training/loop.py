"""The step loop of every training stage (fine-tuning, pretraining, distillation):
optimisation steps under a step count and a time budget, progress events, and
resumable checkpoints, so a killed stage continues where its last checkpoint left it.

A stage supplies what differs: the loss of its next batch, what to do at a
checkpoint (score on dev, keep the best model) and the state of its own batch order
and random generators. A resumed stage then takes exactly the steps, on exactly the
batches, that an uninterrupted one would have: the checkpoint holds the weights, the
optimiser, the schedule, torch's random state (dropout) and the stage's state.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from pipelines.events import Reporter, time_left
from pipelines.faults import fail_point
from pipelines.files import replace_dir
from pipelines.training.optim import StageClock, optimizer_step

STATE_FILE = "state.pt"


class BatchStream:
    """Batches epoch after epoch, resumable: ``make_epoch()`` draws one epoch's batches
    (from a generator the stage owns and checkpoints); the stream's state is what is
    left of the current epoch."""

    def __init__(self, make_epoch: Callable[[], list[list[int]]]):
        self.make_epoch = make_epoch
        self.pending: list[list[int]] = []
        self.epochs = 0

    def next(self) -> list[int]:
        while not self.pending:
            self.pending = list(self.make_epoch())
            self.epochs += 1
        return self.pending.pop(0)

    def state(self) -> dict:
        return {"pending": self.pending, "epochs": self.epochs}

    def restore(self, state: dict) -> None:
        self.pending, self.epochs = [list(b) for b in state["pending"]], state["epochs"]


@dataclass
class StepResult:
    loss: Any  # a scalar torch tensor, before backward
    tokens: int  # real (non-padding) positions the step trained on


@dataclass
class Stage:
    """What one training stage plugs into :class:`StepLoop`."""

    step: Callable[[], StepResult]  # forward pass of the next batch (the loop does backward and the update)
    checkpoint_due: Callable[[int], bool]  # at this step count, score and checkpoint?
    on_checkpoint: Callable[[int], None] = lambda step: None  # score on held-out data, keep the best model
    state: Callable[[], dict] = dict  # the stage's own resumable state (batch order, generators, best score)
    restore: Callable[[dict], None] = lambda state: None
    progress: Callable[[int], dict] = lambda step: {}  # extra fields of a progress event


@dataclass
class StepLoop:
    model: Any
    optimizer: Any
    schedule: Any
    clock: StageClock
    total_steps: int
    checkpoint_dir: str
    reporter: Reporter
    grad_clip: float = 1.0
    step: int = 0
    tokens: int = 0  # across resumes
    resumed_from: int | None = None  # the step the last checkpoint held
    earlier_s: float = 0.0  # seconds trained by earlier invocations
    seconds: float = field(default=0.0, init=False)  # of this invocation's steps
    run_tokens: int = field(default=0, init=False)  # of this invocation's steps

    def resume(self, stage: Stage) -> bool:
        """Load the last checkpoint, if there is one, into the model, the optimiser,
        the schedule, torch's random state and ``stage``; False when there is none."""
        import torch

        path = os.path.join(self.checkpoint_dir, STATE_FILE)
        if not os.path.isfile(path):
            return False
        state = torch.load(path, weights_only=False)
        if "stage" not in state:  # written before the shared loop: it cannot place the batch order
            self.reporter.log(f"{path}: a checkpoint of an older version, which cannot be resumed exactly; starting over", level="warning")
            return False
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["torch_rng"])
        self.step, self.tokens, self.earlier_s = state["step"], state["tokens"], state["seconds"]
        stage.restore(state["stage"])
        self.resumed_from = self.step
        self.reporter.log(f"resuming from the checkpoint at step {self.step} ({state['seconds']:.0f} s trained before)")
        return True

    def save(self, stage: Stage) -> None:
        """A resumable checkpoint, written atomically: a kill mid-write leaves the previous one."""
        import torch

        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "step": self.step,
            "tokens": self.tokens,
            "seconds": self.clock.total_s(),
            "stage": stage.state(),
        }
        replace_dir(self.checkpoint_dir, lambda tmp: torch.save(state, os.path.join(tmp, STATE_FILE)))
        fail_point("training.checkpoint_saved", self.checkpoint_dir)

    def run(self, stage: Stage) -> str:
        """Take steps until ``total_steps`` or the time budget; returns why it stopped
        ("completed" or the budget's message). A checkpoint is scored and saved every
        ``checkpoint_due`` step, at the last step and when time runs out."""
        self.clock.resume({"seconds": self.earlier_s})  # count from here, not from the stage's setup
        start = time.monotonic()
        tokens_before, loss_sum, loss_n = self.tokens, 0.0, 0
        out_of_time = self.clock.out_of_time()  # a resumed run whose budget is spent takes no step
        self.model.train()
        while self.step < self.total_steps and not out_of_time:
            result = stage.step()
            loss_sum += optimizer_step(result.loss, self.model, self.optimizer, self.schedule, self.grad_clip)
            self.step += 1
            self.tokens += result.tokens
            loss_n += 1
            if self.step % 10 == 0 or self.step == self.total_steps:
                elapsed = time.monotonic() - start
                self.reporter.progress(
                    self.step, self.total_steps, "steps", **stage.progress(self.step),
                    loss=round(loss_sum / loss_n, 4), lr=self.schedule.get_last_lr()[0],
                    tokens_per_s=round((self.tokens - tokens_before) / max(elapsed, 1e-9)),
                    **time_left(self.clock.deadline()),
                )
                loss_sum, loss_n = 0.0, 0
            out_of_time = self.clock.out_of_time()
            if stage.checkpoint_due(self.step) or self.step == self.total_steps or out_of_time:
                stage.on_checkpoint(self.step)
                self.save(stage)
        self.seconds, self.run_tokens = time.monotonic() - start, self.tokens - tokens_before
        if self.step < self.total_steps:
            reason = self.clock.stop_message(self.step)
            self.reporter.log(reason)
            return reason
        return "completed"

    def tokens_per_s(self) -> int:
        """Of this invocation's steps."""
        return round(self.run_tokens / max(self.seconds, 1e-9))
