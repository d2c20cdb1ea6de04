"""Where a compiled model spends its time: milliseconds per kernel of a TVM artifact.

Times every call the Relax VM makes (TIR kernels and VM builtins) with the VM's
instrument hook, over a number of runs on one input, and prints the kernels by
total time per model call.

    python scripts/profile_kernels.py runs/<id>-quickstart/compiled/tvm-fp32-1x256 [--runs 20] [--top 25] [--shape 64x40]
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipelines.runtime.engines import TVMEngine  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", help="a compiled artifact directory (compiled/tvm-<precision>-<B>x<S>)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--shape", help="BxS to run at (a symbolic-length build: any length it takes); default: the build's shape")
    args = parser.parse_args()
    engine = TVMEngine(args.artifact)
    shape = tuple(int(v) for v in args.shape.split("x")) if args.shape else engine.fixed_shape
    ids = np.full(shape, 100, dtype=np.int64)  # any in-vocabulary id: speed does not depend on it
    mask = np.ones_like(ids)
    for _ in range(5):
        engine.run(ids, mask)
    t0 = time.perf_counter()
    for _ in range(args.runs):
        engine.run(ids, mask)
    wall_ms = (time.perf_counter() - t0) / args.runs * 1e3

    total, calls, started = collections.defaultdict(float), collections.Counter(), {}

    def instrument(_func, name, before, _ret, *_args):
        if before:
            started[name] = time.perf_counter()
        else:
            total[name] += time.perf_counter() - started[name]
            calls[name] += 1
        return 0  # VMInstrumentReturnKind.NO_OP: run the call as usual

    engine.vm.set_instrument(instrument)
    for _ in range(args.runs):
        engine.run(ids, mask)
    print(f"{engine.meta['engine']} at {shape}: {wall_ms:.3f} ms per call uninstrumented")
    print("| ms per call | calls | kernel |\n|---|---|---|")
    for name, seconds in sorted(total.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"| {seconds / args.runs * 1e3:.3f} | {calls[name] // args.runs} | {name} |")
    print(f"(instrumented total {sum(total.values()) / args.runs * 1e3:.3f} ms per call)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
