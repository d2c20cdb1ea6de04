"""Interleaved batch-1 latency of engines from several run directories: two builds of
one model (another int8 kernel, another target, before / after a change) timed in the
same run, so the host's drift hits them alike. Prints p5 / p10 / p25 / p50 / p75 / p90 ms.

    python scripts/bench_artifacts.py fp32=RUN_A:tvm-fp32 int8=RUN_A:tvm-int8 pairs=RUN_B:tvm-int8 --seq 128
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from pipelines.runtime.tvm_threads import configure_tvm_threads  # noqa: E402

configure_tvm_threads()

from pipelines.evaluate.bench import time_interleaved  # noqa: E402
from pipelines.runtime.engines import open_engine  # noqa: E402

PERCENTILES = (5, 10, 25, 50, 75, 90)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("engines", nargs="+", metavar="LABEL=RUN_DIR:ENGINE")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=400, help="calls an engine")
    parser.add_argument("--max-seconds", type=float, default=30, help="per engine")
    args = parser.parse_args()
    engines = {}
    for spec in args.engines:
        label, _, rest = spec.partition("=")
        run_dir, _, engine = rest.rpartition(":")
        if not (label and run_dir and engine):
            parser.error(f"{spec!r}: expected LABEL=RUN_DIR:ENGINE")
        engines[label] = open_engine(engine, run_dir, shape=(1, args.seq))
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 5000, size=(1, args.seq)).astype(np.int64)
    ids[:, 0] = 101  # [CLS]
    times, _ = time_interleaved(engines, ids, np.ones_like(ids), args.iterations, args.max_seconds)
    print(f"1x{args.seq}, ms: " + " · ".join(f"p{q}" for q in PERCENTILES))
    for label, calls in times.items():
        print(f"{label}: " + " · ".join(f"{np.percentile(calls, q):.3f}" for q in PERCENTILES) + f" ({len(calls)} calls)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
