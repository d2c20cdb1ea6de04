"""Latency and throughput of every engine on the same inputs, in one process, and
whole-test-set throughput (``corpus_throughput``), also of N processes at once.

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
from pipelines.runtime.remote import RemoteDevice, RemoteError, device_label, remote_name, runs_remotely, split_remote

ROUNDS = 5
PAUSE_S = 0.05


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _artifact_info(run_dir: str, engine: str, shape) -> tuple[float | None, float | None]:
    """(artifact size in MB, compile/export seconds) for an engine (on any device)."""
    engine = split_remote(engine)[0]
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
    instead of stealing the cores from the next one. An engine on an RPC device
    (``device_times``) is timed there, a block in one round trip, on the device's clock."""
    times = {name: [] for name in engines}
    peak = {name: 0.0 for name in engines}
    rounds = max(1, min(ROUNDS, iterations))
    block = max(1, iterations // rounds)
    start = time.monotonic()
    for r in range(rounds):
        for name, engine in engines.items():
            time.sleep(PAUSE_S)
            if hasattr(engine, "device_times"):
                times[name].extend(engine.device_times(ids, mask, block))
                continue  # no memory to take: it is the device's
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
    rpc=None,
) -> dict:
    """``{"results": [...], "skipped": [...], "machine": {...}}`` (see docs/compiler.md, "Benchmark", for the fields).
    With ``rpc`` (an ``RpcConfig``) the TVM engines run on one device of its key, the others here;
    each row's ``device`` says where (``local``, ``rpc:KEY``)."""
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
    device = RemoteDevice(rpc) if rpc is not None and any(runs_remotely(e) for e in engines) else None
    try:
        for done, (batch, seq) in enumerate(shapes):
            ids = rng.integers(672, 7992, size=(batch, seq), dtype=np.int64)  # CJK range of the vocab
            mask = np.ones_like(ids)
            opened, roundtrip = {}, {}
            for name in engines:
                key = (name, batch, seq) if name.startswith("tvm-") else name
                shown = remote_name(name, device.rpc.key) if device is not None and runs_remotely(name) else name
                try:
                    if key not in loaded:
                        loaded[key] = (
                            device.open(name, run_dir, (batch, seq)) if shown != name
                            else open_engine(name, run_dir, threads=threads, shape=(batch, seq))
                        )
                    engine = loaded[key]
                except (EngineError, ImportError) as err:
                    if isinstance(err, RemoteError):
                        raise  # an unreachable tracker or no free device fails the bench, never a skip
                    skipped.append({"engine": shown, "batch": batch, "seq": seq, "reason": str(err)})
                    reporter.log(f"{shown} at {batch}x{seq}: skipped ({err})", level="warning")
                    continue
                if isinstance(engine, FixedShapeEngine) and not engine.serves(batch, seq):
                    lengths = f"{engine.lengths[0]}-{engine.lengths[1]}" if engine.lengths else engine.fixed_shape[1]
                    reason = f"built for {engine.fixed_shape[0]}x{lengths}"
                    skipped.append({"engine": shown, "batch": batch, "seq": seq, "reason": reason})
                    continue
                calls = []  # wall clock: for a remote engine, a call's round trip with the transfers
                for _ in range(warmup):
                    t0 = time.perf_counter()
                    engine.logits(ids, mask)
                    calls.append((time.perf_counter() - t0) * 1000)
                opened[shown] = engine
                if hasattr(engine, "device_times"):
                    roundtrip[shown] = round(float(np.median(calls)), 3) if calls else None
            times, peak = time_interleaved(
                opened, ids, mask, iterations, max_seconds,
                on_round=lambda r, rounds: reporter.progress(done * rounds + r + 1, len(shapes) * rounds, "rounds"),
            )
            for name, ms in times.items():
                size, compile_s = _artifact_info(run_dir, name, (batch, seq))
                p50 = float(np.percentile(ms, 50))
                row = {
                    "engine": name,
                    "device": device_label(name),
                    "batch": batch,
                    "seq": seq,
                    "iterations": len(ms),
                    "latency_ms": _percentiles(ms),  # remote: on the device's clock
                    "samples_ms": [round(x, 3) for x in ms],  # every call, for the distribution plots
                    "throughput": {
                        "sentences_per_s": round(batch * 1000 / p50, 2),
                        "tokens_per_s": round(batch * seq * 1000 / p50, 1),
                    },
                    "peak_memory_mb": None if name in roundtrip else round(peak[name], 1),  # this process's
                    "artifact_mb": round(size, 2) if size is not None else None,
                    "compile_s": compile_s,
                }
                if name in roundtrip:
                    row["roundtrip_ms"] = roundtrip[name]  # p50 of a call from here, transfers included
                results.append(row)
                reporter.metric(f"{name}_{batch}x{seq}_p50_ms", round(p50, 3))
    finally:
        loaded.clear()
        if device is not None:
            device.close()
    return {"results": results, "skipped": skipped, "machine": machine_info()}




# Whole-test-set throughput: the run's eval split through ``predict_logits``, the
# dynamic length-sorted batching eval uses, engine after engine pass by pass (order
# rotated each round), the median pass kept. With ``instances`` N > 1, N processes per
# engine each run the whole split at once (the cores split between them), as the
# reference recipe's benchmark tool sums N instances each on its own inputs:
# aggregate sentences/s = N x sentences / the wall time of the slowest.

CORPUS_PASSES = 3
READY_TIMEOUT_S = 900.0  # a child's imports, engine load and warm-up
PASS_TIMEOUT_S = 3600.0


def _corpus_inputs(run_dir: str):
    """(encoder, model meta) of a run's model, as eval reads them."""
    from pipelines.modeling.models import ModelMeta, model_encoder

    model_dir = resolve_model_dir(run_dir)
    return model_encoder(model_dir), ModelMeta.load(model_dir)


class _CachedEncoder:
    """A ``CharEncoder``'s ids for each of ``sentences``, computed once (lexicon codes
    included) and read by every corpus pass: in this process, and in instances, which
    get it without the tokenizer (no transformers to import)."""

    def __init__(self, encoder, sentences) -> None:
        self.cls_id, self.sep_id, self.pad_id, self.unk_id = encoder.cls_id, encoder.sep_id, encoder.pad_id, encoder.unk_id
        self.known = {tuple(s): ids for s, ids in zip(sentences, encoder.ids_many(sentences))}

    def ids_many(self, sentences) -> list[list[int]]:
        return [self.known[tuple(chars)] for chars in sentences]


def _open_for_corpus(name: str, run_dir: str, threads: int | None, device: RemoteDevice | None = None):
    if threads and name in ("torch", "torchscript"):
        import torch

        torch.set_num_threads(threads)
    if device is not None and runs_remotely(name):
        return device.open(name, run_dir)
    return open_engine(name, run_dir, threads=threads)


def corpus_pass(engine, sentences, encoder, meta, batch_size: int) -> None:
    from pipelines.runtime.predict import predict_logits

    predict_logits(engine, sentences, encoder, meta.max_length, meta.window_stride, batch_size=batch_size)


def _warmup_slice(sentences, batch_size: int):
    return sentences[: 2 * batch_size]


class _ShapeRecorder:
    """Stands in for an engine in a dry pass: records each call's (rows, length, real
    tokens) and answers zeros, so ``predict_logits`` batches exactly as it would."""

    def __init__(self, engine) -> None:
        self.max_length = getattr(engine, "max_length", None)
        self.calls: list[tuple[int, int, int]] = []

    def logits(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        self.calls.append((ids.shape[0], ids.shape[1], int(mask.sum())))
        return np.zeros((*ids.shape, 1), dtype=np.float32)


def padding_efficiency(engine, sentences, encoder, meta, batch_size: int) -> float | None:
    """Real tokens over the token positions the engine computes for the split: a batch
    is padded to its longest window, a fixed-shape artifact pads it to its shape, a
    shape profile to the shapes it picks."""
    recorder = _ShapeRecorder(engine)
    corpus_pass(recorder, sentences, encoder, meta, batch_size)
    real = computed = 0
    for rows, length, tokens in recorder.calls:
        real += tokens
        if getattr(engine, "fixed_shape", None):
            batch = engine.fixed_shape[0]
            computed += -(-rows // batch) * batch * engine.run_length(length)
        elif hasattr(engine, "bucket"):  # a ShapeProfile
            seq, plan = engine.bucket(rows, length)
            computed += sum(plan) * seq
        else:
            computed += rows * length
    return round(real / computed, 4) if computed else None


class _InProcess:
    """One engine in this process."""

    def __init__(self, engine, sentences, encoder, meta, batch_size: int) -> None:
        self.engine, self.sentences, self.encoder, self.meta, self.batch_size = engine, sentences, encoder, meta, batch_size
        corpus_pass(engine, _warmup_slice(sentences, batch_size), encoder, meta, batch_size)

    def run_pass(self) -> tuple[float, list[float]]:
        t0 = time.perf_counter()
        corpus_pass(self.engine, self.sentences, self.encoder, self.meta, self.batch_size)
        seconds = time.perf_counter() - t0
        return seconds, [seconds]

    def close(self) -> None:
        self.engine = None


def _instance_main(index, run_dir, name, threads, sentences, encoder, meta, batch_size, commands, results, barrier, rpc=None) -> None:
    """A benchmark instance (spawned): opens its engine (with ``rpc``, on a device of its
    own), warms it up, then runs one whole pass per "pass" command, starting with its
    peers at the barrier."""
    try:
        engine = _open_for_corpus(name, run_dir, threads, RemoteDevice(rpc) if rpc is not None and runs_remotely(name) else None)
        corpus_pass(engine, _warmup_slice(sentences, batch_size), encoder, meta, batch_size)
    except BaseException as err:  # noqa: BLE001 (reported to the parent, which skips the engine)
        results.put((index, "error", f"{type(err).__name__}: {err}"))
        return
    results.put((index, "ready", None))
    while commands.get() == "pass":
        try:
            barrier.wait(timeout=READY_TIMEOUT_S)
            t0 = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process
            corpus_pass(engine, sentences, encoder, meta, batch_size)
            results.put((index, "pass", (t0, time.monotonic())))
        except BaseException as err:  # noqa: BLE001
            results.put((index, "error", f"{type(err).__name__}: {err}"))
            return


class InstanceError(RuntimeError):
    pass


class _Instances:
    """N processes of one engine, each running the whole split at once."""

    def __init__(self, ctx, run_dir: str, name: str, count: int, threads: int, sentences, encoder, meta, batch_size: int, rpc=None) -> None:
        self.name, self.count = name, count
        self.barrier = ctx.Barrier(count)
        self.results = ctx.Queue()
        self.commands = [ctx.Queue() for _ in range(count)]
        self.procs = [
            ctx.Process(
                target=_instance_main,
                args=(i, run_dir, name, threads, sentences, encoder, meta, batch_size, self.commands[i], self.results, self.barrier, rpc),
                daemon=True,
                name=f"bench-{name}-{i}",
            )
            for i in range(count)
        ]
        for proc in self.procs:
            proc.start()

    def _collect(self, kind: str, timeout: float) -> list:
        import queue

        got: dict[int, object] = {}
        deadline = time.monotonic() + timeout
        while len(got) < self.count:
            try:
                index, what, payload = self.results.get(timeout=1.0)
            except queue.Empty:
                dead = [p for p in self.procs if p.exitcode is not None]
                if dead:
                    raise InstanceError(f"instance {dead[0].name} exited with code {dead[0].exitcode}") from None
                if time.monotonic() > deadline:
                    raise InstanceError(f"no {kind} from {self.count - len(got)} instance(s) in {timeout:.0f} s") from None
                continue
            if what == "error":
                raise InstanceError(str(payload))
            got[index] = payload
        return [got[i] for i in range(self.count)]

    def ready(self) -> None:
        self._collect("ready", READY_TIMEOUT_S)

    def run_pass(self) -> tuple[float, list[float]]:
        for q in self.commands:
            q.put("pass")
        spans = self._collect("pass", PASS_TIMEOUT_S)
        wall = max(end for _, end in spans) - min(start for start, _ in spans)
        return wall, [end - start for start, end in spans]

    def close(self) -> None:
        self.barrier.abort()  # frees an instance waiting for a peer that failed
        for q in self.commands:
            q.put("stop")
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        self.results.close()
        for q in self.commands:
            q.close()


def _rotated(items: list, r: int) -> list:
    k = r % len(items) if items else 0
    return items[k:] + items[:k]


def corpus_throughput(
    run_dir: str,
    engines: list[str],
    sentences,
    batch_size: int = 64,
    passes: int = CORPUS_PASSES,
    instances: int = 1,
    threads: int | None = None,
    reporter: Reporter | None = None,
    rpc=None,
) -> tuple[list[dict], list[dict]]:
    """(rows, skipped): per engine, the whole of ``sentences`` in one process (and, with
    ``instances`` > 1, in that many at once), timed in interleaved passes. With ``rpc``,
    the TVM engines run on devices of its key (each instance on one of its own), every
    batch a round trip: the split's throughput from here, the network included."""
    import multiprocessing

    from pipelines.runtime.tvm_threads import physical_cores

    reporter = reporter or Reporter()
    sentences = [list(s) for s in sentences]
    characters = sum(len(s) for s in sentences)
    encoder, meta = _corpus_inputs(run_dir)
    if threads:
        import torch

        torch.set_num_threads(threads)
    cores = threads or physical_cores()
    counts = [1] if instances <= 1 else [1, instances]
    if instances > cores:
        reporter.log(f"{instances} instances on {cores} cores: one thread each, the cores oversubscribed", level="warning")
    runners: dict[tuple[str, int], object] = {}
    padding: dict[str, float | None] = {}
    skipped: list[dict] = []
    ctx = multiprocessing.get_context("spawn")
    opened: dict[str, object] = {}
    device = RemoteDevice(rpc) if rpc is not None and any(runs_remotely(e) for e in engines) else None
    shown = {name: remote_name(name, rpc.key) if device is not None and runs_remotely(name) else name for name in engines}
    try:
        for name in engines:
            try:
                opened[name] = _open_for_corpus(name, run_dir, threads, device)
            except (EngineError, ImportError) as err:
                if isinstance(err, RemoteError):
                    raise
                skipped.append({"engine": shown[name], "instances": 1, "reason": str(err)})
                reporter.log(f"{shown[name]} over the corpus: skipped ({err})", level="warning")
        # Every pass reads the same precomputed ids, in this process and in the instances:
        # the figure is the engines' (batching, padding, the model), not the text encoding
        # every engine shares (eval's seconds include it).
        known = _CachedEncoder(encoder, sentences)
        for name, engine in opened.items():
            padding[name] = padding_efficiency(engine, sentences, known, meta, batch_size)
        if instances > 1:  # the instances load while this process warms its engines up
            for name in opened:
                runners[(name, instances)] = _Instances(ctx, run_dir, name, instances, max(1, cores // instances), sentences, known, meta, batch_size, rpc)
        for name, engine in opened.items():
            runners[(name, 1)] = _InProcess(engine, sentences, known, meta, batch_size)
        opened.clear()
        for key in [k for k in runners if k[1] > 1]:
            try:
                runners[key].ready()
            except InstanceError as err:
                runners.pop(key).close()
                skipped.append({"engine": shown[key[0]], "instances": key[1], "reason": str(err)})
                reporter.log(f"{shown[key[0]]} x{key[1]} over the corpus: skipped ({err})", level="warning")
        order = [(name, n) for n in counts for name in engines if (name, n) in runners]
        walls: dict[tuple[str, int], list[float]] = {key: [] for key in order}
        each: dict[tuple[str, int], list[list[float]]] = {key: [] for key in order}
        done = 0
        for r in range(passes):
            for key in _rotated(order, r):
                done += 1
                reporter.progress(done, passes * len(order), "passes")
                if key not in runners:
                    continue
                time.sleep(PAUSE_S)
                try:
                    wall, per_instance = runners[key].run_pass()
                except InstanceError as err:
                    runners.pop(key).close()
                    skipped.append({"engine": shown[key[0]], "instances": key[1], "reason": str(err)})
                    reporter.log(f"{shown[key[0]]} x{key[1]} over the corpus: failed ({err})", level="warning")
                    continue
                walls[key].append(wall)
                each[key].append(per_instance)
    finally:
        for runner in runners.values():
            runner.close()
        opened.clear()
        if device is not None:  # the runners closed let go of its engines
            device.close()
    rows = []
    for key in order:
        if key not in runners or not walls[key]:
            continue
        name, n = key
        seconds = float(np.median(walls[key]))
        row = {
            "engine": shown[name],
            "device": device_label(shown[name]),
            "instances": n,
            "threads": cores if n == 1 else max(1, cores // n),  # per instance
            "batch_size": batch_size,
            "passes": len(walls[key]),
            "sentences": len(sentences),  # per instance: each runs the whole split
            "characters": characters,
            "seconds": round(seconds, 6),  # the median pass (N > 1: from the first start to the last end)
            "sentences_per_s": round(n * len(sentences) / seconds, 2),  # all instances together
            "chars_per_s": round(n * characters / seconds, 1),
            "padding_efficiency": padding.get(name),
            "pass_seconds": [round(w, 6) for w in walls[key]],
        }
        if n > 1:
            row["instance_seconds"] = [round(float(np.median(col)), 6) for col in zip(*each[key])]
        rows.append(row)
        suffix = "" if n == 1 else f"_x{n}"
        reporter.metric(f"{shown[name]}_corpus{suffix}_sentences_per_s", row["sentences_per_s"])
    return rows, skipped
