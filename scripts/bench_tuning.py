"""What tuning buys end to end: default-schedule and tuned builds of one model, timed
interleaved in one process (bench_compiler's runs are separate, so drift between
them would pass for a tuning effect).

Builds a random-weight preset twice at each sequence length: once with default
schedules only, once applying a tuning database (fill one first, e.g. with
``scripts/bench_compiler.py --tune-trials 2000 --tune-minutes 7``).

    python scripts/bench_tuning.py --presets mini,base --seq 128 --tuning-db runs/tuning-db
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipelines.evaluate.bench import time_interleaved  # noqa: E402
from pipelines.config import ModelConfig, parse_config  # noqa: E402
from pipelines.data.loaders import HUB_LABELS  # noqa: E402
from pipelines.runtime.engines import TVMEngine, compiled_artifacts  # noqa: E402
from pipelines.events import Reporter  # noqa: E402
from pipelines.modeling.models import build_model, save_model  # noqa: E402
from pipelines.stages import stage_compile  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="mini,base")
    parser.add_argument("--seq", default="128")
    parser.add_argument("--tuning-db", default="runs/tuning-db")
    parser.add_argument("--iterations", type=int, default=120)
    args = parser.parse_args()
    if not os.path.isdir(args.tuning_db):
        parser.error(f"{args.tuning_db}: no tuning database (tune first, see the docstring)")
    print("| model | seq | default p50 ms | tuned p50 ms | tuned / default |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as root:
        for preset in args.presets.split(","):
            model, tokenizer, meta = build_model(ModelConfig(preset=preset, max_length=512), HUB_LABELS)
            for seq in (int(s) for s in args.seq.split(",")):
                engines = {}
                for build, database in (("default", None), ("tuned", os.path.abspath(args.tuning_db))):
                    run_dir = os.path.join(root, f"{preset}-{seq}-{build}")
                    save_model(model, tokenizer, meta, os.path.join(run_dir, "model"))
                    # database None: the default beside this temporary run, which does not exist
                    cfg = parse_config({"compile": {"shapes": [[1, seq]], "tuning": {"trials": 0, "database": database}}})
                    stage_compile(cfg, run_dir, Reporter())
                    [artifact] = compiled_artifacts(run_dir, "tvm-fp32")
                    engines[build] = TVMEngine(artifact)
                ids = np.random.default_rng(0).integers(672, 7992, size=(1, seq), dtype=np.int64)
                for engine in engines.values():
                    engine.logits(ids, np.ones_like(ids))
                times, _ = time_interleaved(engines, ids, np.ones_like(ids), args.iterations, max_seconds=30)
                p50 = {name: float(np.median(ms)) for name, ms in times.items()}
                print(f"| {preset} | {seq} | {p50['default']:.2f} | {p50['tuned']:.2f} | {p50['tuned'] / p50['default']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
