"""Latency and throughput of every engine on the same inputs, in one process.

Engines are timed in interleaved rounds (one call each per round), so machine
drift and thermal noise hit all of them alike.
"""

from __future__ import annotations

import os
import platform
import time

import numpy as np

from pipelines.events import Reporter
from pipelines.files import read_json
from pipelines.layout import EXPORT_DIR, ONNX_DIR, read_export_meta
from pipelines.modeling.models import resolve_model_dir
from pipelines.runtime.engines import EngineError, FixedShapeEngine, compiled_artifacts, open_engine
from pipelines.runtime.ort import DYNAMIC_FILE, FP32_FILE, STATIC_FILE

ROUNDS = 5
PAUSE_S = 0.05


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _artifact_info(run_dir: str, engine: str, shape) -> tuple[float | None, float | None]:
    """(artifact size in MB, compile/export seconds) for an engine."""
    size = lambda p: os.path.getsize(p) / 2**20 if os.path.isfile(p) else None  # noqa: E731
    if engine == "torch":
        return size(os.path.join(resolve_model_dir(run_dir), "model.safetensors")), None
    if engine == "torchscript":
        meta = read_export_meta(os.path.join(run_dir, EXPORT_DIR)) or {}
        return size(os.path.join(run_dir, EXPORT_DIR, "model.ts")), meta.get("torchscript", {}).get("seconds")
    if engine.startswith("ort"):
        name = {"ort-int8": DYNAMIC_FILE, "ort-int8-static": STATIC_FILE}.get(engine, FP32_FILE)
        return size(os.path.join(run_dir, ONNX_DIR, name)), None
    if engine.startswith("tvm-"):
        [art] = compiled_artifacts(run_dir, engine, shape)[:1] or [None]
        if art:
            meta = read_json(os.path.join(art, "artifact.json"), {})
            return size(os.path.join(art, meta.get("library", "model.so"))), meta.get("compile_s")
    return None, None


def _percentiles(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {
        "mean": round(float(a.mean()), 3),
        "p50": round(float(np.percentile(a, 50)), 3),
        "p90": round(float(np.percentile(a, 90)), 3),
        "p95": round(float(np.percentile(a, 95)), 3),
        "p99": round(float(np.percentile(a, 99)), 3),
    }


def machine_info() -> dict:
    info = {"platform": platform.platform(), "processor": platform.processor(), "cores": os.cpu_count()}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            info["cpu"] = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    for module in ("torch", "onnxruntime", "tvm"):
        try:
            info[f"{module}_version"] = __import__(module).__version__
        except ImportError:
            pass
    return info


def time_interleaved(engines: dict, ids, mask, iterations: int, max_seconds: float, on_round=None) -> tuple[dict, dict]:
    """Per engine: the milliseconds of each call and the peak process memory (MB).

    Rounds of short blocks, engine after engine: drift hits all alike, and the pause
    lets the previous engine's spinning thread pool (OpenMP, ORT, TVM) go idle
    instead of stealing the cores from the next one."""
    times = {name: [] for name in engines}
    peak = {name: 0.0 for name in engines}
    rounds = max(1, min(ROUNDS, iterations))
    block = max(1, iterations // rounds)
    start = time.monotonic()
    for r in range(rounds):
        for name, engine in engines.items():
            time.sleep(PAUSE_S)
            for _ in range(block):
                t0 = time.perf_counter()
                engine.logits(ids, mask)
                times[name].append((time.perf_counter() - t0) * 1000)
            peak[name] = max(peak[name], _rss_mb())
        if on_round:
            on_round(r, rounds)
        if time.monotonic() - start > max_seconds * max(len(engines), 1):
            break
    return times, peak


def benchmark(
    run_dir: str,
    engines: list[str],
    batches: list[int],
    seqs: list[int],
    warmup: int = 5,
    iterations: int = 50,
    max_seconds: float = 10.0,
    threads: int | None = None,
    reporter: Reporter | None = None,
) -> dict:
    """``{"results": [...], "skipped": [...], "machine": {...}}`` (see docs/compiler.md, "Benchmark", for the fields)."""
    # Engines share the cores. Each keeps its own thread-pool policy (a passive OpenMP
    # made eager torch 2.5x slower, a non-spinning ONNX Runtime 2x slower: either would
    # misstate the peer); blocks of calls with a pause between engines keep one
    # engine's idle spinning out of the next one's timings (TVM's pool: see runtime.tvm_threads).
    if threads:
        import torch

        torch.set_num_threads(threads)
    reporter = reporter or Reporter()
    rng = np.random.default_rng(0)
    results, skipped = [], []
    shapes = [(b, s) for b in batches for s in seqs]
    loaded: dict = {}  # one load per engine; TVM has an artifact per shape
    for done, (batch, seq) in enumerate(shapes):
        ids = rng.integers(672, 7992, size=(batch, seq), dtype=np.int64)  # CJK range of the vocab
        mask = np.ones_like(ids)
        opened = {}
        for name in engines:
            key = (name, batch, seq) if name.startswith("tvm-") else name
            try:
                if key not in loaded:
                    loaded[key] = open_engine(name, run_dir, threads=threads, shape=(batch, seq))
                engine = loaded[key]
            except (EngineError, ImportError) as err:
                skipped.append({"engine": name, "batch": batch, "seq": seq, "reason": str(err)})
                reporter.log(f"{name} at {batch}x{seq}: skipped ({err})", level="warning")
                continue
            if isinstance(engine, FixedShapeEngine) and engine.fixed_shape != (batch, seq):
                reason = f"built for {engine.fixed_shape[0]}x{engine.fixed_shape[1]}"
                skipped.append({"engine": name, "batch": batch, "seq": seq, "reason": reason})
                continue
            for _ in range(warmup):
                engine.logits(ids, mask)
            opened[name] = engine
        times, peak = time_interleaved(
            opened, ids, mask, iterations, max_seconds,
            on_round=lambda r, rounds: reporter.progress(done * rounds + r + 1, len(shapes) * rounds, "rounds"),
        )
        for name, ms in times.items():
            size, compile_s = _artifact_info(run_dir, name, (batch, seq))
            p50 = float(np.percentile(ms, 50))
            results.append(
                {
                    "engine": name,
                    "batch": batch,
                    "seq": seq,
                    "iterations": len(ms),
                    "latency_ms": _percentiles(ms),
                    "samples_ms": [round(x, 3) for x in ms],  # every call, for the distribution plots
                    "throughput": {
                        "sentences_per_s": round(batch * 1000 / p50, 2),
                        "tokens_per_s": round(batch * seq * 1000 / p50, 1),
                    },
                    "peak_memory_mb": round(peak[name], 1),
                    "artifact_mb": round(size, 2) if size is not None else None,
                    "compile_s": compile_s,
                }
            )
            reporter.metric(f"{name}_{batch}x{seq}_p50_ms", round(p50, 3))
    return {"results": results, "skipped": skipped, "machine": machine_info()}


