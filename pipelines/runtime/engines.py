"""Engines that turn padded token ids into logits: the one runner interface.

Each engine takes int64 ``input_ids`` / ``attention_mask`` arrays and returns
float32 ``[batch, seq, labels]`` logits; decoding is shared (``runtime.predict``). Names are
the same everywhere (configs, ``eval --engine``, ``tag --engine``, ``bench --engines``).
"""

from __future__ import annotations

import functools
import glob
import os

import numpy as np

from pipelines.config import ANY_LENGTH
from pipelines.layout import COMPILED_DIR, EXPORT_DIR, ONNX_DIR, read_export_meta
from pipelines.runtime.tvm_threads import configure_tvm_threads

ENGINE_NAMES = ("torch", "torchscript", "ort", "ort-int8", "ort-int8-static", "tvm-fp32", "tvm-fp16", "tvm-int8")


class EngineError(ValueError):
    pass


class TorchEngine:
    """PyTorch eager on a Hugging Face ``BertForTokenClassification``."""

    name = "torch"
    fixed_shape = None

    def __init__(self, model) -> None:
        self.model = model.eval()

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.model(input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask))
        return out.logits.float().numpy()


class FixedShapeEngine:
    """An engine built for one [batch, seq]: inputs are padded to it, batch by batch.
    With ``lengths`` (shortest, longest), its length is symbolic: a batch runs at its
    own length (at least the shortest), padded in rows only; ``fixed_shape`` then holds
    the longest."""

    name = "fixed"

    def __init__(self, shape, lengths=None) -> None:
        self.fixed_shape = tuple(shape)
        self.lengths = tuple(lengths) if lengths else None
        self.max_length = self.fixed_shape[1]  # longer sentences are windowed to it (runtime.predict)

    def serves(self, batch: int, seq: int) -> bool:
        """Whether a call at exactly ``batch`` x ``seq`` runs as it is, unpadded."""
        if self.lengths:
            return batch == self.fixed_shape[0] and self.lengths[0] <= seq <= self.lengths[1]
        return (batch, seq) == self.fixed_shape

    def run_length(self, length: int) -> int:
        """The length a batch of ``length`` positions is computed at."""
        return max(length, self.lengths[0]) if self.lengths else self.fixed_shape[1]

    def run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        batch = self.fixed_shape[0]
        if input_ids.shape[1] > self.max_length:
            raise EngineError(f"{self.name} was built for length {self.max_length}, got {input_ids.shape[1]}")
        seq = self.run_length(input_ids.shape[1])
        rows = []
        for i in range(0, len(input_ids), batch):
            n = min(batch, len(input_ids) - i)
            ids = np.zeros((batch, seq), dtype=np.int64)
            mask = np.zeros((batch, seq), dtype=np.int64)
            ids[:n, : input_ids.shape[1]] = input_ids[i : i + n]
            mask[:n, : input_ids.shape[1]] = attention_mask[i : i + n]
            rows.append(self.run(ids, mask)[:n, : input_ids.shape[1]])
        return np.concatenate(rows)


class TorchScriptEngine(FixedShapeEngine):
    name = "torchscript"

    def __init__(self, path: str, shape) -> None:
        import torch

        super().__init__(shape)
        self.module = torch.jit.load(path).eval()

    def run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.module(torch.from_numpy(ids), torch.from_numpy(mask)).float().numpy()


def runs_here(requires: dict, machine: str | None = None, flags: set[str] | None = None) -> str:
    """Why an artifact with the manifest's ``requires`` cannot run on this machine ("" if
    it can): another architecture, or CPU flags its code uses that this CPU lacks (it
    would die of an illegal instruction, not fail)."""
    import platform

    from pipelines.cpu import cpu_flags

    arch = requires.get("arch")
    machine = machine or platform.machine()
    if arch and arch != machine:
        return f"its code is {arch}, this machine is {machine}"
    have = cpu_flags() if flags is None else flags
    if not have:
        return ""  # no /proc/cpuinfo to tell: let it try
    lacking = sorted(set(requires.get("cpu_flags") or ()) - have)
    return f"it uses {', '.join(lacking)}, which this CPU lacks (compile for it: --target host or x86-avx2)" if lacking else ""


class TVMEngine(FixedShapeEngine):
    """A compiled TVM artifact (needs TVM and numpy; no torch)."""

    def __init__(self, artifact_dir: str, threads: int | None = None) -> None:
        import json

        configure_tvm_threads(threads)
        import tvm

        with open(os.path.join(artifact_dir, "artifact.json"), encoding="utf-8") as f:
            self.meta = json.load(f)
        missing = runs_here(self.meta.get("requires") or {})
        if missing:
            raise EngineError(f"{artifact_dir}: built for another machine: {missing}")
        device = tvm.cuda() if self.meta["target"].startswith("cuda") else tvm.cpu()
        library = tvm.runtime.load_module(os.path.join(artifact_dir, self.meta["library"]))
        self._start(library, device, self.meta["inputs"][0]["shape"], self.meta["engine"], self.meta.get("lengths"))

    @classmethod
    def from_executable(cls, executable, shape, name: str) -> "TVMEngine":
        """An engine over a build not saved yet (the compiler times its candidates with it)."""
        import tvm

        engine = cls.__new__(cls)
        engine.meta = {}
        engine._start(executable, tvm.cpu(), shape, name)
        return engine

    def _start(self, executable, device, shape, name: str, lengths=None) -> None:
        import tvm
        from tvm import relax

        super().__init__(shape, lengths)
        self.name = name
        self.device = device
        self.vm = relax.VirtualMachine(executable, device)
        self._tensor = tvm.runtime.tensor

    def run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        out = self.vm["main"](self._tensor(ids, self.device), self._tensor(mask, self.device))
        out = out[0] if not hasattr(out, "numpy") else out
        return out.numpy().astype(np.float32, copy=False)


# A call's cost in padded rows, beyond its rows: what makes one call of 8 cheaper than
# eight calls of 1 (dispatch, thread wake-ups, small GEMMs).
CALL_COST_ROWS = 2


def plan_batches(rows: int, sizes) -> list[int]:
    """The batch sizes (from ``sizes``, built ones) to run ``rows`` rows with: the plan
    of least padded rows plus ``CALL_COST_ROWS`` a call. 37 rows over {1, 8, 32}:
    [32, 8] (3 padded rows), not [32, 1, 1, 1, 1, 1] (five calls)."""
    return list(_plan(rows, tuple(sorted(set(sizes)))))


@functools.lru_cache(maxsize=1024)
def _plan(rows: int, sizes: tuple[int, ...]) -> tuple[int, ...]:
    """``plan_batches`` for sorted sizes, once per (rows, sizes): it runs for every batch,
    and ``ShapeProfile.bucket`` asks it for every length that fits (0.14 ms each at 64 rows)."""
    best: list[tuple[float, list[int]]] = [(0.0, [])]
    for n in range(1, rows + 1):
        best.append(min(((best[max(0, n - b)][0] + b + CALL_COST_ROWS, [b, *best[max(0, n - b)][1]]) for b in sizes),
                        key=lambda c: (c[0], len(c[1]))))
    return tuple(sorted(best[rows][1], reverse=True))


class ShapeProfile:
    """Artifacts of one engine built at several shapes, used as one engine that takes
    any batch and length: a batch goes to a sequence length built that fits it (or to
    the builds whose length is symbolic, at its own length), split over the batch sizes
    built there (``bucket``, ``plan_batches``); longer sentences are windowed to the
    longest length built."""

    fixed_shape = None

    def __init__(self, engines: list[FixedShapeEngine]) -> None:
        self.name = engines[0].name
        self.by_seq: dict[int, dict[int, FixedShapeEngine]] = {}
        self.any_length: dict[int, FixedShapeEngine] = {}  # by batch: builds of a symbolic length
        for engine in engines:
            batch, seq = engine.fixed_shape
            table = self.any_length if engine.lengths else self.by_seq.setdefault(seq, {})
            table[batch] = engine
        self.max_length = max(engine.max_length for engine in engines)

    @property
    def shapes(self) -> list[tuple[int, int]]:
        return sorted((b, s) for s, by_batch in self.by_seq.items() for b in by_batch)

    def bucket(self, rows: int, length: int) -> tuple[int, list[int]]:
        """(the sequence length computed, the batch sizes) a batch of ``rows`` x ``length``
        runs at: of the lengths that fit it, the one whose plan computes the fewest
        positions (``plan_batches``' cost in rows, times the length), the shortest on a
        tie. With batch 64 built at every 8 positions and batch 1 only at some, one
        sentence of 20 runs at 1 x 32, not padded to 64 rows at 24."""
        seq, plan, _ = self._choose(rows, length)
        return seq, plan

    def _choose(self, rows: int, length: int) -> tuple[int, list[int], dict[int, FixedShapeEngine]]:
        options = [(s, self.by_seq[s]) for s in sorted(self.by_seq) if s >= length]
        fitting = {b: e for b, e in self.any_length.items() if e.max_length >= length}
        if fitting:
            options.append((max(e.run_length(length) for e in fitting.values()), fitting))
        if not options:
            raise EngineError(f"{self.name} was built for lengths up to {self.max_length}, got {length}")
        plans = [(seq, plan_batches(rows, table), table) for seq, table in options]
        return min(plans, key=lambda p: ((sum(p[1]) + CALL_COST_ROWS * len(p[1])) * p[0], p[0]))

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        _, plan, table = self._choose(len(input_ids), input_ids.shape[1])
        rows, start = [], 0
        for batch in plan:
            end = min(start + batch, len(input_ids))
            rows.append(table[batch].logits(input_ids[start:end], attention_mask[start:end]))
            start = end
        return np.concatenate(rows)


class OrtEngine:
    """ONNX Runtime on the CPU (any shape), fp32 or dynamically quantised int8."""

    fixed_shape = None

    def __init__(self, path: str, name: str, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.name = name

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})[0]


def compiled_artifacts(run_dir: str, engine: str, shape=None) -> list[str]:
    """Artifact directories of a TVM engine in a run, longest sequence first (a symbolic
    length, ``<B>xany``, first of all). At ``shape``: the artifact built at it, else the
    one of its batch size whose length is symbolic."""
    def found(pattern: str) -> list[str]:
        dirs = glob.glob(os.path.join(run_dir, COMPILED_DIR, pattern))
        return sorted((d for d in dirs if os.path.isfile(os.path.join(d, "artifact.json"))), key=_shape_key, reverse=True)

    if shape:
        return found(f"{engine}-{shape[0]}x{shape[1]}") or found(f"{engine}-{shape[0]}x{ANY_LENGTH}")
    return found(f"{engine}-*x*")


def _shape_key(path: str) -> tuple[float, int]:
    batch, seq = os.path.basename(path).rsplit("-", 1)[1].split("x")
    return (float("inf") if seq == ANY_LENGTH else int(seq)), -int(batch)


def artifacts_engine(artifacts: list[str], shape, open_one):
    """The engine over a TVM engine's artifacts: the one ``shape`` picked (or the only
    one) opened with ``open_one``, else a ``ShapeProfile`` of them all."""
    if shape is not None or len(artifacts) == 1:
        return open_one(artifacts[0])
    return ShapeProfile([open_one(path) for path in artifacts])


def tvm_artifacts(name: str, run_or_model_dir: str, shape=None) -> list[str]:
    """A TVM engine's artifact directories in a run (``compiled_artifacts``); an
    ``EngineError`` naming the command that builds them when there are none."""
    from pipelines.modeling.models import resolve_model_dir

    in_run = resolve_model_dir(run_or_model_dir) != run_or_model_dir
    artifacts = compiled_artifacts(run_or_model_dir, name, shape) if in_run else []
    if not artifacts:
        precision = name.split("-", 1)[1]
        raise EngineError(f"no {name} artifact for this model: run `ner-workbench compile --model RUN --precision {precision}` first")
    return artifacts


def open_engine(name: str, run_or_model_dir: str, threads: int | None = None, shape=None):
    """An engine by its product-wide name, for a run (or a bare model directory). A TVM
    engine compiled at several shapes opens as one ``ShapeProfile`` of them all, unless
    ``shape`` picks one."""
    from pipelines.modeling.models import load_model, resolve_model_dir

    model_dir = resolve_model_dir(run_or_model_dir)
    in_run = model_dir != run_or_model_dir
    if name == "torch":
        return TorchEngine(load_model(model_dir)[0])
    if name == "torchscript":
        export_dir = os.path.join(run_or_model_dir, EXPORT_DIR)
        meta = read_export_meta(export_dir) if in_run else None
        if not meta or "torchscript" not in meta.get("files", {}):
            raise EngineError("no TorchScript export for this model: run `ner-workbench export --model RUN` first")
        return TorchScriptEngine(os.path.join(export_dir, meta["files"]["torchscript"]), meta["shape"])
    if name in ("ort", "ort-int8", "ort-int8-static"):
        from pipelines.runtime.ort import onnx_model, static_int8_model

        out_dir = os.path.join(run_or_model_dir if in_run else model_dir, ONNX_DIR)
        if name == "ort-int8-static":
            if not in_run:
                raise EngineError("ort-int8-static needs a run: its config names the calibration split")
            path = static_int8_model(run_or_model_dir, model_dir, out_dir, onnx_model(model_dir, out_dir))
            return OrtEngine(path, name, threads)
        return OrtEngine(onnx_model(model_dir, out_dir, int8=name == "ort-int8"), name, threads)
    if name.startswith("tvm-"):
        return artifacts_engine(tvm_artifacts(name, run_or_model_dir, shape), shape, lambda path: TVMEngine(path, threads))
    raise EngineError(f"unknown engine {name!r} (one of: {', '.join(ENGINE_NAMES)})")
