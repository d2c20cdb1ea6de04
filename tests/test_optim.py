"""The learning-rate schedule shared by train, pretrain and distill."""

import torch

from pipelines.config import parse_config
from pipelines.optim import make_optimizer


def _lrs(schedule, optimizer, steps, clock=None, tick=0.0):
    lrs = []
    for _ in range(steps):
        optimizer.step()
        if clock is not None:
            clock[0] += tick
        schedule.step()
        lrs.append(schedule.get_last_lr()[0])
    return lrs


def test_linear_warmup_then_decay_to_zero_at_the_last_step():
    optimizer, schedule = make_optimizer(torch.nn.Linear(2, 2), 1e-3, 0.01, total_steps=20, warmup_steps=4)
    lrs = _lrs(schedule, optimizer, 20)
    assert lrs[0] == 0.25e-3 and lrs[2] == 0.75e-3  # warming up over 4 steps
    assert lrs[3] == 1e-3
    assert abs(lrs[11] - 0.5e-3) < 1e-12  # half way through the 16 decay steps
    assert lrs[-1] == 0.0


def test_a_time_budget_that_ends_first_sets_the_decay(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("time.monotonic", lambda: clock[0])
    optimizer, schedule = make_optimizer(torch.nn.Linear(2, 2), 1e-3, 0.01, total_steps=1000, warmup_steps=0, budget_s=10.0)
    lrs = _lrs(schedule, optimizer, 10, clock, tick=1.0)  # one second a step: the budget ends at step 10 of 1000
    assert abs(lrs[4] - 0.5e-3) < 1e-12
    assert lrs[-1] == 0.0
    # Steps that outrun the budget keep the step schedule.
    clock[0] = 0.0
    optimizer, schedule = make_optimizer(torch.nn.Linear(2, 2), 1e-3, 0.01, total_steps=10, warmup_steps=0, budget_s=1e6)
    assert abs(_lrs(schedule, optimizer, 5, clock, tick=1.0)[-1] - 0.5e-3) < 1e-12


def test_train_decays_to_its_budget_by_default():
    assert parse_config({"train": {"max_minutes": 5}}).train.decay_to_budget is True
    assert parse_config({"train": {"decay_to_budget": False}}).train.decay_to_budget is False
