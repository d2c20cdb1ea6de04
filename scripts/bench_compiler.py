"""Compiler benchmark: TVM (default schedules, or tuned) against PyTorch and ONNX Runtime.

Builds random-weight models of the given presets (speed does not depend on the
weights), compiles them at each sequence length, and times every engine in one
interleaved run. Prints a Markdown table and writes the full JSON report.

    python scripts/bench_compiler.py --presets mini,base --seq 128,256 --tuning-db '' --out bench-compiler.json
    python scripts/bench_compiler.py --presets mini --seq 128 --tune-trials 2000 --tune-minutes 7
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipelines.evaluate.bench import benchmark  # noqa: E402
from pipelines.config import ModelConfig, parse_config  # noqa: E402
from pipelines.data.loaders import HUB_LABELS  # noqa: E402
from pipelines.events import Reporter  # noqa: E402
from pipelines.modeling.models import build_model, save_model  # noqa: E402
from pipelines.stages import stage_compile  # noqa: E402


def make_run(root: str, preset: str) -> str:
    run_dir = os.path.join(root, preset)
    model, tokenizer, meta = build_model(ModelConfig(preset=preset, max_length=512), HUB_LABELS)
    save_model(model, tokenizer, meta, os.path.join(run_dir, "model"))
    return run_dir


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="mini,base")
    parser.add_argument("--seq", default="128,256")
    parser.add_argument("--precisions", default="fp32,fp16")
    parser.add_argument("--engines", default="torch,ort,ort-int8,tvm-fp32,tvm-fp16")
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--tune-trials", type=int, default=0, help="MetaSchedule trials per compile (0: default schedules)")
    parser.add_argument("--tune-minutes", type=float, default=None, help="time budget per tuned compile")
    parser.add_argument("--tuning-db", default="runs/tuning-db", help="tuning database, kept: a later run with --tune-trials 0 reuses it; '' = none (default schedules only)")
    parser.add_argument("--out", default="bench-compiler.json")
    args = parser.parse_args()
    seqs = [int(s) for s in args.seq.split(",")]
    log = Reporter(lambda e: e.kind == "log" and print(f"  {e.message}", file=sys.stderr), stage="bench")
    reports = {}
    with tempfile.TemporaryDirectory() as root:
        for preset in args.presets.split(","):
            run_dir = make_run(root, preset)
            tuning = {"trials": args.tune_trials, "max_minutes": args.tune_minutes, "database": os.path.abspath(args.tuning_db) if args.tuning_db else None}
            cfg = parse_config({"compile": {"precisions": args.precisions.split(","), "shapes": [[1, s] for s in seqs], "tuning": tuning}})
            compiled = stage_compile(cfg, run_dir, log)
            times = ", ".join(f"{name} in {info['compile_s']} s" for name, info in compiled.items())
            print(f"{preset}: compiled {times}", file=sys.stderr)
            reports[preset] = benchmark(run_dir, args.engines.split(","), [1], seqs, iterations=args.iterations, max_seconds=30, reporter=log)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(reports, f, indent=2)
    print("| model | seq | " + " | ".join(args.engines.split(",")) + " | TVM fp32 / ORT fp32 |")
    print("|---|---|" + "---|" * (len(args.engines.split(",")) + 1))
    for preset, report in reports.items():
        for seq in seqs:
            p50 = {r["engine"]: r["latency_ms"]["p50"] for r in report["results"] if r["seq"] == seq}
            cells = [f"{p50[e]:.2f}" if e in p50 else "—" for e in args.engines.split(",")]
            ratio = f"{p50['tvm-fp32'] / p50['ort']:.2f}x" if "tvm-fp32" in p50 and "ort" in p50 else "—"
            print(f"| {preset} | {seq} | " + " | ".join(cells) + f" | {ratio} |")
    print(f"\n(p50 latency in ms, batch 1; {report['machine'].get('cpu')}, {report['machine'].get('cores')} cores; full report: {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
