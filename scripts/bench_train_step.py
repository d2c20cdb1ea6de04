"""Training-step speed by precision: one AdamW step (forward, backward, update) of a
token-classification BERT preset on a batch of random ids, fp32 against bf16 mixed
precision, alternating rounds so drift hits both alike.

    python scripts/bench_train_step.py --presets mini,small --batch 32 --seq 48

The step is the product's: ``pipelines.training.optim`` (fused AdamW, autocast, clipping).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipelines.cpu import cpu_flags  # noqa: E402
from pipelines.training.optim import autocast, make_optimizer, optimizer_step  # noqa: E402


def step_ms(preset: str, batch: int, seq: int, rounds: int, steps: int) -> dict[str, list[float]]:
    import torch
    from transformers import BertForTokenClassification

    from pipelines.data.loaders import HUB_LABELS
    from pipelines.modeling.models import bert_config

    torch.manual_seed(0)
    model = BertForTokenClassification(bert_config(preset, 21128, HUB_LABELS, 128))
    model.train()
    optimizer, schedule = make_optimizer(model, 1e-4, 0.01, total_steps=10**6, warmup_steps=0)
    ids = torch.randint(1000, 20000, (batch, seq))
    labels = torch.randint(0, len(HUB_LABELS), (batch, seq))

    def one(precision: str) -> None:
        with autocast(precision):
            logits = model(input_ids=ids).logits.float()
        optimizer_step(torch.nn.functional.cross_entropy(logits.reshape(-1, len(HUB_LABELS)), labels.reshape(-1)), model, optimizer, schedule)

    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(rounds):
        for precision in times:
            for _ in range(3):  # warm-up after switching
                one(precision)
            start = time.perf_counter()
            for _ in range(steps):
                one(precision)
            times[precision].append((time.perf_counter() - start) / steps * 1000)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="mini,small")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    flags = cpu_flags()
    print(f"CPU bf16 support: {', '.join(sorted(f for f in flags if 'bf16' in f)) or 'none (bf16 is emulated)'}")
    for preset in args.presets.split(","):
        times = step_ms(preset, args.batch, args.seq, args.rounds, args.steps)
        fp32, bf16 = min(times["fp32"]), min(times["bf16"])
        tokens = args.batch * args.seq
        print(f"{preset} {args.batch}x{args.seq}: fp32 {fp32:.0f} ms/step ({tokens / fp32 * 1000:.0f} tokens/s), "
              f"bf16 {bf16:.0f} ms/step ({tokens / bf16 * 1000:.0f} tokens/s): {fp32 / bf16:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
