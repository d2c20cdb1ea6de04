"""One symbolic-length build against static builds at the same shapes (issue #19's (a)).

The product builds a shape profile of static buckets (``compile --profile``). This
script measures the alternative: one Relax module whose length is symbolic. The length
is exported as ``8 * t`` (input ``[B, t, 8]``, reshaped inside), so the schedules can
still tile rows by 4 and columns by 8 (``schedules.divides``); a free length would leave
every tile with a bounds check. Prints, per length, the median ms of the static build
at that shape and of the symbolic build, timed interleaved, and their outputs' largest
difference from torch.

    python scripts/bench_symbolic.py RUN_OR_MODEL_DIR [--batch 64] [--seq 32,48,128]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipelines.runtime.tvm_threads import configure_tvm_threads  # noqa: E402

configure_tvm_threads()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import tvm  # noqa: E402
from tvm import relax  # noqa: E402
from tvm.relax.frontend.torch import from_exported_program  # noqa: E402

from pipelines.compile.compiler import cpu_pipeline, host_target  # noqa: E402
from pipelines.modeling.models import example_inputs, load_model, logits_module, resolve_model_dir  # noqa: E402

STEP = 8  # the length is a multiple of this


class ByEights(torch.nn.Module):
    """logits from ``[B, t, 8]`` ids and mask; positions and token types passed in
    explicitly (BERT's own slice of its position buffer gives TVM a length of
    ``min(max(8 * t, 0), 512)``, which it cannot match to the input's)."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids, mask):
        ids, mask = ids.reshape(ids.shape[0], -1), mask.reshape(mask.shape[0], -1)
        positions = torch.arange(ids.shape[1], dtype=torch.long).unsqueeze(0).expand(ids.shape)
        return self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                          token_type_ids=torch.zeros_like(ids)).logits


def build(program, target):
    mod = from_exported_program(program, keep_params_as_input=False)
    t0 = time.monotonic()
    vm = relax.VirtualMachine(tvm.compile(mod, target=target, relax_pipeline=cpu_pipeline(target)), tvm.cpu())
    return vm, time.monotonic() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a run or model directory")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq", default="32,48,128", help="lengths to time, multiples of 8")
    parser.add_argument("--seconds", type=float, default=5.0, help="timing per length")
    args = parser.parse_args()
    model, _, meta = load_model(resolve_model_dir(args.model), attn="eager")
    target = tvm.target.Target(host_target())
    lengths = [int(s) for s in args.seq.split(",")]
    t = torch.export.Dim("t", min=1, max=meta.max_length // STEP)
    by_eights = ByEights(model).eval()
    example = tuple(a.reshape(args.batch, -1, STEP) for a in example_inputs((args.batch, 4 * STEP)))
    symbolic, seconds = build(torch.export.export(by_eights, example, dynamic_shapes=({1: t}, {1: t})), target)
    print(f"target {target}; batch {args.batch}; symbolic build {seconds:.1f} s")
    print("| length | static ms | symbolic ms | symbolic / static | max |diff| vs torch |\n|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for seq in lengths:
        static, _ = build(torch.export.export(logits_module(model), example_inputs((args.batch, seq))), target)
        ids = rng.integers(100, 5000, size=(args.batch, seq)).astype(np.int64)
        mask = np.ones_like(ids)
        flat = (tvm.runtime.tensor(ids), tvm.runtime.tensor(mask))
        eights = (tvm.runtime.tensor(ids.reshape(args.batch, -1, STEP)), tvm.runtime.tensor(mask.reshape(args.batch, -1, STEP)))
        runs = {"static": lambda: static["main"](*flat), "symbolic": lambda: symbolic["main"](*eights)}
        times: dict[str, list[float]] = {name: [] for name in runs}
        for run in runs.values():
            run()
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:  # interleaved: the host's drift hits both alike
            for name, run in runs.items():
                t0 = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t0)
        with torch.inference_mode():
            reference = logits_module(model)(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        got = runs["symbolic"]()
        got = (got[0] if not hasattr(got, "numpy") else got).numpy()
        ms = {name: float(np.median(v)) * 1e3 for name, v in times.items()}
        print(f"| {seq} | {ms['static']:.2f} | {ms['symbolic']:.2f} | {ms['symbolic'] / ms['static']:.2f} | "
              f"{float(np.abs(got - reference).max()):.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
