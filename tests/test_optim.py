"""The learning-rate schedule shared by train, pretrain and distill."""

import torch

from pipelines.config import parse_config
from pipelines.training.optim import StageClock, make_optimizer


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
    # A budget that ends inside the warmup still ends at zero.
    clock[0] = 0.0
    optimizer, schedule = make_optimizer(torch.nn.Linear(2, 2), 1e-3, 0.01, total_steps=1000, warmup_steps=500, budget_s=10.0)
    lrs = _lrs(schedule, optimizer, 10, clock, tick=1.0)
    assert lrs[0] == 1e-3 / 500 and lrs[-1] == 0.0
    # Steps that outrun the budget keep the step schedule.
    clock[0] = 0.0
    optimizer, schedule = make_optimizer(torch.nn.Linear(2, 2), 1e-3, 0.01, total_steps=10, warmup_steps=0, budget_s=1e6)
    assert abs(_lrs(schedule, optimizer, 5, clock, tick=1.0)[-1] - 0.5e-3) < 1e-12


def test_a_resumed_stage_continues_its_budget_and_its_decay(monkeypatch):
    now = [0.0]
    monkeypatch.setattr("time.monotonic", lambda: now[0])
    clock = StageClock(max_minutes=1, across_resumes=True)
    optimizer, schedule = make_optimizer(torch.nn.Linear(2, 2), 1e-3, 0.0, total_steps=10**6, warmup_steps=0,
                                         budget_s=clock.budget_s, clock=clock.spent_s)
    clock.resume({"seconds": 30.0})  # an earlier invocation spent half the minute
    now[0] += 15
    optimizer.step()
    schedule.step()
    assert abs(schedule.get_last_lr()[0] - 0.25e-3) < 1e-12  # 45 of 60 s spent
    assert not clock.out_of_time() and clock.deadline() == now[0] + 15
    now[0] += 15
    assert clock.out_of_time() and "raise max_minutes" in clock.stop_message(7)
    # Without across_resumes every invocation gets the whole budget; the total still counts.
    each = StageClock(max_minutes=1, across_resumes=False)
    each.resume({"seconds": 30.0})
    now[0] += 45
    assert not each.out_of_time() and each.total_s() == 75.0 and "run again" in each.stop_message(3)
    assert StageClock(None, across_resumes=True).out_of_time() is False


def test_train_decays_to_its_budget_by_default():
    assert parse_config({"train": {"max_minutes": 5}}).train.decay_to_budget is True
    assert parse_config({}).pretrain.decay_to_budget is parse_config({}).distill.decay_to_budget is True
    assert parse_config({"train": {"decay_to_budget": False}}).train.decay_to_budget is False


def test_auto_precision_is_bf16_only_where_the_cpu_has_amx_bf16():
    from pipelines.training.optim import resolve_precision

    assert resolve_precision("auto", {"avx512f", "amx_tile", "amx_bf16"})[0] == "bf16"
    assert resolve_precision("auto", {"avx512f", "avx512_bf16"})[0] == "fp32"  # unmeasured without AMX
    assert resolve_precision("auto", set())[0] == "fp32"
    assert resolve_precision("fp32", {"amx_bf16"}) == ("fp32", "requested")
    precision, why = resolve_precision("bf16", {"avx2", "fma"})
    assert precision == "bf16" and "emulates" in why
    assert parse_config({"train": {"precision": "bf16"}}).train.precision == "bf16"
    assert parse_config({}).pretrain.precision == parse_config({}).distill.precision == "auto"


def test_a_bf16_step_runs_the_matmuls_in_bf16_and_keeps_fp32_weights():
    from transformers import BertConfig, BertForTokenClassification

    from pipelines.training.optim import autocast, optimizer_step

    torch.manual_seed(0)
    model = BertForTokenClassification(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                  intermediate_size=64, num_labels=3, hidden_dropout_prob=0.0))
    optimizer, schedule = make_optimizer(model, 1e-2, 0.0, total_steps=100, warmup_steps=0)
    ids, labels = torch.randint(5, 50, (4, 8)), torch.randint(0, 3, (4, 8))

    def loss(precision):
        with autocast(precision):
            logits = model(input_ids=ids).logits
        return logits.dtype, torch.nn.functional.cross_entropy(logits.float().reshape(-1, 3), labels.reshape(-1))

    assert loss("fp32")[0] == torch.float32
    dtype, first = loss("bf16")
    assert dtype == torch.bfloat16
    for _ in range(5):
        optimizer_step(loss("bf16")[1], model, optimizer, schedule)
    assert loss("bf16")[1].item() < first.item()
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_a_run_on_its_budgets_pace_decays_by_its_steps_alone(monkeypatch):
    """The seconds must not leak into the schedule of a run that will finish in time, or a
    seeded run would not repeat: right after a warmup that took 5% of the budget, the
    steps say "just started the decay" while the clock says 5% of the budget is gone."""
    clock = [0.0]
    monkeypatch.setattr("time.monotonic", lambda: clock[0])
    runs = []
    for tick in (0.5, 0.8):  # two speeds, both faster than the budget's pace (1 s a step)
        clock[0] = 0.0
        optimizer, schedule = make_optimizer(torch.nn.Linear(2, 2), 1e-3, 0.01, total_steps=100, warmup_steps=10, budget_s=100.0)
        runs.append(_lrs(schedule, optimizer, 100, clock, tick=tick))
    assert runs[0] == runs[1]
    assert abs(runs[0][10] - 1e-3 * (1 - 1 / 90)) < 1e-12  # the step schedule, one step into the decay
    # Behind the pace (2 s a step, 50 steps in the budget), the clock takes over and ends at zero.
    clock[0] = 0.0
    optimizer, schedule = make_optimizer(torch.nn.Linear(2, 2), 1e-3, 0.01, total_steps=100, warmup_steps=10, budget_s=100.0)
    slow = _lrs(schedule, optimizer, 50, clock, tick=2.0)
    assert slow[-1] == 0.0 and slow[20] < runs[0][20]
