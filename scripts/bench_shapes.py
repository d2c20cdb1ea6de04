"""Per-shape latency of engines on the same random inputs, interleaved, in one process:
where a compiled shape profile wins or loses against ONNX Runtime.

    python scripts/bench_shapes.py RUN_DIR [ENGINES] [SHAPES]
    e.g. python scripts/bench_shapes.py runs/X tvm-fp32,ort 1x64,8x64,32x64,32x128
"""

from __future__ import annotations

import sys
import time

import numpy as np

PAUSE_S = 0.05  # as bench.py: another engine's spinning threads settle before the next call

from pipelines.runtime.engines import open_engine


def main(run_dir: str, engines: str = "tvm-fp32,ort", shapes: str = "1x32,8x32,32x32,1x64,8x64,32x64,1x128,8x128,32x128") -> None:
    names = engines.split(",")
    opened = {n: open_engine(n, run_dir, threads=None) for n in names}
    print(f"{'shape':>8} " + " ".join(f"{n:>12}" for n in names) + "   (p50 ms, interleaved)")
    rng = np.random.default_rng(0)
    for shape in shapes.split(","):
        b, s = (int(x) for x in shape.split("x"))
        ids = rng.integers(1000, 5000, (b, s)).astype(np.int64)
        mask = np.ones((b, s), dtype=np.int64)
        times = {n: [] for n in names}
        for n in names:  # warm-up
            for _ in range(3):
                opened[n].logits(ids, mask)
        deadline = time.monotonic() + 6.0
        while time.monotonic() < deadline:
            for n in names:
                time.sleep(PAUSE_S)
                t0 = time.perf_counter()
                opened[n].logits(ids, mask)
                times[n].append((time.perf_counter() - t0) * 1e3)
        print(f"{shape:>8} " + " ".join(f"{np.median(times[n]):12.3f}" for n in names))


if __name__ == "__main__":
    main(*sys.argv[1:])
