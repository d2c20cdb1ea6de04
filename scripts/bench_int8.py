"""int8 benchmark: TVM int8 (the target ISA's kernel) against fp32 and ONNX Runtime dynamic / static int8.

For a trained run (default: the quickstart model, copied, never modified) and a
random-weight preset: compiles tvm-fp32 and tvm-int8 at 1 x SEQ, scores entity F1 on
the MSRA test split with every engine (trained model only: random weights score 0),
and times batch-1 latency of every engine in one interleaved run (pipelines.evaluate.bench).

    python scripts/bench_int8.py --model runs/<id>-quickstart --presets mini --out bench-int8.json
    python scripts/bench_int8.py --workdir W --skip-latency   # F1 only; then --skip-f1 --skip-compile for timings
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipelines.evaluate.bench import benchmark  # noqa: E402
from pipelines.config import load_config, parse_config  # noqa: E402
from pipelines.events import Reporter  # noqa: E402
from pipelines.files import read_json  # noqa: E402
from pipelines.data.loaders import data_for  # noqa: E402
from pipelines.evaluate.scoring import evaluate  # noqa: E402
from pipelines.stages import stage_compile  # noqa: E402

ENGINES = "torch,tvm-fp32,tvm-int8,ort,ort-int8,ort-int8-static"


def copy_run(src: str, dst: str) -> str:
    """The parts of a run the benchmark reads; compiled/, onnx/ and eval/ are rebuilt here."""
    os.makedirs(dst, exist_ok=True)
    for name in ("model", "export"):
        if os.path.isdir(os.path.join(src, name)) and not os.path.isdir(os.path.join(dst, name)):
            shutil.copytree(os.path.join(src, name), os.path.join(dst, name))
    shutil.copy(os.path.join(src, "config.yaml"), dst)
    return dst


def random_run(root: str, preset: str) -> str:
    from pipelines.data.loaders import HUB_LABELS
    from pipelines.modeling.models import build_model, save_model

    run_dir = os.path.join(root, preset)
    if not os.path.isdir(os.path.join(run_dir, "model")):
        model, tokenizer, meta = build_model(parse_config({"model": {"preset": preset}}).model, HUB_LABELS)
        save_model(model, tokenizer, meta, os.path.join(run_dir, "model"))
        with open(os.path.join(run_dir, "config.yaml"), "w", encoding="utf-8") as f:
            f.write(parse_config({"model": {"preset": preset}}).to_yaml())
    return run_dir


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a trained run directory (copied)")
    parser.add_argument("--presets", default="mini", help="random-weight presets to time too ('' for none)")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--engines", default=ENGINES)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--workdir", default=None, help="keep builds here (default: a temporary directory)")
    parser.add_argument("--set", action="append", default=[], help="config override, e.g. compile.quantize.calibrate_mode=max")
    parser.add_argument("--skip-compile", action="store_true")
    parser.add_argument("--skip-f1", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--out", default="bench-int8.json")
    args = parser.parse_args()
    engines = args.engines.split(",")
    log = Reporter(lambda e: e.kind == "log" and print(f"  {e.message}", file=sys.stderr, flush=True), stage="bench")
    overrides = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.set)}  # as `run --set`
    root = args.workdir or tempfile.mkdtemp(prefix="bench-int8-")
    runs = {"trained": copy_run(args.model, os.path.join(root, "trained"))} if args.model else {}
    runs.update({p: random_run(root, p) for p in args.presets.split(",") if p})
    report = read_json(args.out, {}) if os.path.isfile(args.out) else {}
    for label, run_dir in runs.items():
        cfg = load_config(os.path.join(run_dir, "config.yaml"), {**overrides, "compile.precisions": ["fp32", "int8"], "compile.shapes": [[1, args.seq]]})
        entry = report.setdefault(label, {})
        if not args.skip_compile:
            compiled = stage_compile(cfg, run_dir, log)
            entry["compile"] = compiled
            quant = read_json(os.path.join(run_dir, "compiled", f"tvm-int8-1x{args.seq}", "artifact.json"))["quantization"]
            entry["quantization"] = {k: quant.get(k) for k in ("budget", "keep_fp32", "int8_layers", "kernel", "weight_bits", "vpdpbusd", "vpmaddubsw", "settings")}
        if label == "trained" and not args.skip_f1:
            test = data_for(cfg).splits["test"]
            entry.setdefault("f1", {})
            for engine in engines:
                scores = evaluate(run_dir, test, "test", log, engine_name=engine, strict=cfg.eval.strict, batch_size=64)
                entry["f1"][engine] = {k: scores.get(k) for k in ("f1", "precision", "recall", "agreement_with_torch")}
                print(f"{label} {engine}: test F1 {scores['f1']:.4f}", file=sys.stderr, flush=True)
        if not args.skip_latency:
            bench = benchmark(run_dir, engines, [1], [args.seq], warmup=10, iterations=args.iterations, max_seconds=20, reporter=log)
            entry.setdefault("latency", {}).update({r["engine"]: r["latency_ms"] for r in bench["results"]})
            entry["machine"] = bench["machine"]
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    print(f"| model | engine | test F1 | ΔF1 vs torch (points) | p50 ms @1x{args.seq} | vs tvm-int8 |")
    print("|---|---|---|---|---|---|")
    for label, entry in report.items():
        f1, lat = entry.get("f1", {}), entry.get("latency", {})
        ref, mine = (f1.get("torch") or {}).get("f1"), (lat.get("tvm-int8") or {}).get("p50")
        for engine in dict.fromkeys([*engines, *f1, *lat]):
            score, p50 = (f1.get(engine) or {}).get("f1"), (lat.get(engine) or {}).get("p50")
            cells = [
                f"{score:.4f}" if score is not None else "—",
                f"{(score - ref) * 100:+.2f}" if score is not None and ref is not None else "—",
                f"{p50:.3f}" if p50 else "—",
                f"{p50 / mine:.2f}x" if p50 and mine else "—",
            ]
            print(f"| {label} | {engine} | " + " | ".join(cells) + " |")
    print(f"\n(full report: {args.out}; builds in {root})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
