"""Compile a ``torch.export`` program with Apache TVM (Relax) into a self-contained artifact.

An artifact directory holds ``model.so`` (``export_library``: code and weights),
``artifact.json`` (inputs, shape, dtypes, labels, precision, target, timings,
config hash) and the tokenizer files, so loading it needs TVM and numpy, not torch.

TVM can crash its process (segfault), so the compile stage runs this module in a
subprocess: ``python -m pipelines.compile.compiler REQUEST.json`` prints one JSON event a line.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

from pipelines.cpu import CPUINFO, cpu_flags
from pipelines.data.encoding import LEXICON_STRIDE
from pipelines.data.lexicon_features import FILE as LEXICON_FILE
from pipelines.events import Event, Reporter
from pipelines.faults import fail_point
from pipelines.files import replace_dir, write_json
from pipelines.modeling.models import ModelMeta
from pipelines.runtime.tvm_threads import configure_tvm_threads

ARTIFACT_META = "artifact.json"
LIBRARY = "model.so"
# What reading text for the model takes: the tokenizer, the labels and, for a model that
# reads word-lexicon codes in its ids, the lexicon (``data/lexicon_features``).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json", "workbench.json", LEXICON_FILE)


# /proc/cpuinfo flag -> LLVM feature, for the vector extensions the kernels can use.
_CPU_FLAGS = {
    "avx512_vnni": "avx512vnni",
    "avx_vnni": "avxvnni",
    "avx512_bf16": "avx512bf16",
    "avx512_fp16": "avx512fp16",
    "amx_tile": "amx-tile",
    "amx_int8": "amx-int8",
    "amx_bf16": "amx-bf16",
}


def host_target(cpuinfo: str = CPUINFO) -> dict:
    """LLVM for this machine's CPU, using every core. LLVM names the CPU from its
    model number; in a VM it can guess an older one (``rocketlake`` on a Xeon with
    AVX-512-FP16 and AMX), so extensions the host reports and that CPU lacks are
    added as ``mattr``."""
    import tvm
    from tvm.target.codegen import llvm_get_cpu_features, llvm_get_system_cpu

    target = {"kind": "llvm", "mcpu": llvm_get_system_cpu(), "num-cores": os.cpu_count() or 1}
    extra = sorted(set(_CPU_FLAGS[f] for f in cpu_flags(cpuinfo) if f in _CPU_FLAGS)
                   - set(llvm_get_cpu_features(tvm.target.Target(target))))
    if extra:
        target["mattr"] = ["+" + feature for feature in extra]
    return target


def resolve_target(spec) -> dict | str:
    """``host`` (this CPU, detected), a preset (``TARGET_PRESETS``) or a TVM target dict."""
    from pipelines.config import TARGET_PRESETS, parse_target

    spec = parse_target(spec if spec is not None else "host")
    if spec in ("host", "llvm"):
        return host_target()
    return dict(TARGET_PRESETS[spec]) if isinstance(spec, str) else spec


LIBRARY_OBJECTS = "model.tar"
# LLVM feature -> /proc/cpuinfo flag, for what a CPU must have to run an artifact.
_NEEDED_FLAGS = {"avx2": "avx2", "fma": "fma", "avx512f": "avx512f", "avx512bw": "avx512bw", "avx512vnni": "avx512_vnni",
                 "avxvnni": "avx_vnni", "avx512bf16": "avx512_bf16", "avx512fp16": "avx512_fp16", "amx-int8": "amx_int8"}


def requirements(target) -> dict:
    """What a machine needs to run an artifact built for ``target`` (the manifest's
    ``requires``): its architecture, the CPU flags its code uses, and the runtime."""
    import platform

    import tvm
    from tvm.target.codegen import llvm_get_cpu_features

    needs = {"tvm": tvm.__version__, "python": ["numpy"], "device": target.kind.name}
    if target.kind.name != "llvm":
        return needs
    triple = str(target.attrs.get("mtriple", "") or "")
    arch = triple.split("-")[0] if triple else platform.machine()
    features = set(llvm_get_cpu_features(target))
    needs.update(arch=arch, cpu_flags=sorted(flag for feature, flag in _NEEDED_FLAGS.items() if feature in features))
    if arch != platform.machine():
        needs["link"] = (f"{LIBRARY_OBJECTS} holds {arch} object files: tvm.runtime.load_module links them on first load "
                         "with the device's C compiler (cc); built elsewhere, as no cross-linker was found here")
    return needs


def _fast_gelu(bb, call):
    """GELU with ``fast_erf``: the default exact ``erf`` is a scalar libm call per
    element (a quarter of BERT-mini's run time here); same error (~6e-7)."""
    from pipelines.compile.int8 import fast_gelu

    return bb.call_te(fast_gelu, call.args[0], primfunc_name_hint="gelu")


def _fast_softmax(bb, call):
    """Softmax with ``fast_exp``: the default ``exp`` is a scalar libm call per
    attention score (~0.5 ms of BERT-mini's 7 ms at length 128)."""
    from tvm import topi

    return bb.call_te(topi.nn.fast_softmax, call.args[0], call.attrs.axis, primfunc_name_hint="softmax")


def default_rules():
    """Default CPU schedules; a rule that fails on a kernel is skipped, and its fallback
    noted (``schedules.Fallbacks``: the compile reports them)."""
    from tvm.s_tir import dlight as dl

    from pipelines.compile.schedules import FirstThatWorks, Injective, Matmul, RowReduction

    return FirstThatWorks(Matmul(), RowReduction(), dl.cpu.Reduction(), dl.cpu.GEMV(), Injective())


def _row_moves_as_elementwise(mod, tile_columns: int):
    """Mark reshapes, transposes and broadcasts that only move whole rows as elementwise.

    The torch frontend lowers ``linear`` on [B, S, H] to reshape -> 2-D matmul on
    [B*S, H] -> reshape, and FuseOps does not fuse an injective op into a GEMM's
    epilogue: bias, GELU, the residual add and the attention scale and mask each ran as
    a kernel of its own, one more pass over memory (base/256: 5 ms of 120). A reshape
    that only splits or merges the outer dimensions ([B*S, H] <-> [B, S, H], unit
    dimensions added or dropped) keeps every element at its place in memory, so it is
    elementwise in effect (at batch 1 as before, now at every batch). A reshape over a
    symbolic length (8 * t), which TVM's pattern analysis calls opaque, is injective.

    The attention heads' split after the query, key and value projections ([S, H*D] ->
    [S, H, D] -> [H, S, D]) and their merge after ``P V`` are marked so too: the reshape
    splits the innermost dimension into whole GEMM tiles (D a multiple of ``tile_columns``,
    ``schedules.widest_gemm_columns``: no tile straddles two heads), and the transpose keeps the
    innermost axis (``_keeps_innermost_axis``): each moves rows of D floats, which the
    GEMM's tile then writes to their place itself instead of a kernel copying them after
    it (mini at 1 x 128, AVX-512: 3.8-3.9 ms against 4.0-4.1, bit-identical outputs)."""
    from tvm import tirx

    for gv, func in list(mod.functions_items()):
        if not isinstance(func, tirx.PrimFunc) or not gv.name_hint.startswith(("reshape", "transpose", "broadcast_to")):
            continue
        buffers = [p for p in func.params if isinstance(p.ty, tirx.BufferType)]  # not the symbolic lengths
        pattern = int(func.attrs.get("op_pattern", -1))
        if len(buffers) != 2 or pattern not in (1, 2, 8):  # kBroadcast, kInjective, kOpaque
            continue
        src, dst = (list(b.shape) for b in buffers)
        static = bool(src and dst) and all(isinstance(d, tirx.IntImm) for d in src + dst)
        if gv.name_hint.startswith("broadcast_to"):  # to its own shape (torch's expand before a matmul): a copy
            if static and [d.value for d in src] == [d.value for d in dst]:
                mod[gv] = func.with_attr("op_pattern", 0)
            continue
        if pattern == 1:
            continue
        if gv.name_hint.startswith("transpose"):
            if static and _keeps_innermost_axis(func):
                mod[gv] = func.with_attr("op_pattern", 0)
            continue
        # Over a symbolic length the reshape's index arithmetic does not simplify: fused
        # into a GEMM's tile it bounds each step with pages of min/max (and hung LLVM).
        if static and (src[-1].value == dst[-1].value or _splits_into_heads(src, dst, tile_columns)):
            mod[gv] = func.with_attr("op_pattern", 0)  # kElemWise
        elif pattern == 8:
            mod[gv] = func.with_attr("op_pattern", 2)
    return mod


def _splits_into_heads(src, dst, tile_columns: int) -> bool:
    """[.., H*D] -> [.., H, D] or back, D a multiple of ``tile_columns`` (the widest GEMM
    tile), so a tile's columns stay within one head."""
    short, long = (src, dst) if len(src) < len(dst) else (dst, src)
    if len(long) != len(short) + 1 or [d.value for d in short[:-1]] != [d.value for d in long[:-2]]:
        return False
    heads, width = long[-2].value, long[-1].value
    return short[-1].value == heads * width and width % tile_columns == 0


def _keeps_innermost_axis(func) -> bool:
    """Whether a transpose kernel (one block: out[..] = in[..]) indexes the last axis of
    its output and of its input by the same variable: the permutation leaves the
    innermost axis in place."""
    import tvm
    from tvm import s_tir, tirx

    sch = s_tir.Schedule(func)
    blocks = sch.get_output_blocks(sch.get_sblock("root")) if isinstance(func.body, s_tir.stmt.SBlockRealize) else []
    if len(blocks) != 1:
        return False
    store = sch.get(blocks[0]).body
    if not isinstance(store, tirx.BufferStore) or not isinstance(store.value, tvm.ir.TensorLoad):
        return False
    out_last, in_last = store.indices[-1], store.value.indices[-1]
    return isinstance(out_last, tirx.Var) and out_last.same_as(in_last)


def _lookups_as_injective(mod):
    """Mark ``take`` and ``gather`` kernels injective, as TVM's operator table does: their
    reads at data-dependent indices make the pattern analysis call them opaque, and
    FuseOps then runs each on its own. A BiLSTM's six embedding lookups each wrote a
    [B * S, 128] table of rows that one sum read back, and the backward LSTM's input
    was gathered with an index broadcast over all 128 columns ([B, S, 128] int64)."""
    from tvm import tirx

    for gv, func in list(mod.functions_items()):
        if isinstance(func, tirx.PrimFunc) and gv.name_hint.startswith(("take", "gather")) and int(func.attrs.get("op_pattern", -1)) == 8:
            mod[gv] = func.with_attr("op_pattern", 2)  # kInjective
    return mod


def _widen_narrow_heads(mod, lanes: int):
    """``matmul(x, W)`` with a constant W of fewer output columns than a vector (the
    7-label head) -> the same with W zero-padded to ``lanes`` columns, then its first
    columns. The Matmul schedule then gives it vector tiles; narrow, it ran as scalar
    FMA chains (1.2 ms of a 64x48 BiLSTM call, 3,072 rows x 512 x 7)."""
    import numpy as np
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    from pipelines.compile.int8 import constant_value, constant_weight_nk

    matmul_op = tvm.ir.Op.get("relax.matmul")

    @mutator
    class Widen(PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if not call.op.same_as(matmul_op) or call.args[0].ty.dtype != "float32":
                return call
            w = constant_weight_nk(call.args[1], self.lookup_binding)
            if w is None:  # a weight broadcast over the batch ([B, K, N], every slice the same)?
                batched = constant_value(call.args[1], self.lookup_binding)
                if batched is not None and batched.ndim == 3 and (batched == batched[:1]).all():
                    w = np.ascontiguousarray(batched[0].T)
            if w is None or w.shape[0] >= lanes or w.dtype != np.float32:
                return call
            n, k = w.shape
            padded = np.zeros((k, lanes), np.float32)
            padded[:, :n] = w.T
            wide = self.builder_.emit(relax.op.matmul(call.args[0], relax.const(padded)))
            return relax.op.strided_slice(wide, axes=[len(call.ty.shape) - 1], begin=[0], end=[n])

    widen = Widen(mod)
    for gv, func in list(mod.functions_items()):
        if isinstance(func, relax.Function):
            mod[gv] = widen.visit_expr(func)
    return relax.transform.DeadCodeElimination()(mod)


def fuse(mod, target):
    """Relax graph -> fused TIR kernels, not yet scheduled (what tuning works on)."""
    import tvm
    from tvm import relax

    from pipelines.compile.lstm import fold_label_heads
    from pipelines.compile.schedules import vector_lanes, widest_gemm_columns

    lanes = vector_lanes(target)
    passes = [
        relax.transform.FoldConstant(),  # slices and transposes of weights: the heads' weights as constants
        tvm.transform.module_pass(lambda m, _ctx: _widen_narrow_heads(m, lanes), opt_level=0, name="WidenNarrowHeads"),
        tvm.transform.module_pass(lambda m, _ctx: fold_label_heads(m), opt_level=0, name="FoldLabelHeads"),
        relax.backend.DispatchSampling(),
        relax.backend.DispatchSortScan(),
        relax.transform.LegalizeOps({"relax.nn.gelu": _fast_gelu, "relax.nn.softmax": _fast_softmax}),
        relax.transform.AnnotateTIROpPattern(),
        tvm.transform.module_pass(lambda m, _ctx: _row_moves_as_elementwise(m, widest_gemm_columns(target)), opt_level=0, name="RowMovesAsElementwise"),
        tvm.transform.module_pass(lambda m, _ctx: _lookups_as_injective(m), opt_level=0, name="LookupsAsInjective"),
        relax.transform.FoldConstant(),  # weights are constants: transposes fold away
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
        relax.transform.AttachAttrLayoutFreeBuffers(),  # which kernel inputs are weights
    ]
    with target:
        return tvm.transform.Sequential(passes)(mod)


def cpu_pipeline(target, fused: bool = False, tuned: bool = False):
    """The CPU backend's passes: fusion (unless ``fused``), tuned schedules from the
    current MetaSchedule database (if ``tuned``), default schedules for the rest."""
    import tvm
    from tvm import relax

    from pipelines.compile.schedules import apply_default_schedules

    rules = default_rules()

    @tvm.transform.module_pass(opt_level=0)
    def pipeline(mod, _ctx):
        if not fused:
            mod = fuse(mod, target)
        with target:
            passes = [relax.transform.MetaScheduleApplyDatabase()] if tuned else []
            passes += [
                apply_default_schedules(rules),  # dlight's, naming each function to its fallbacks
                # Weights repacked by the schedules: the repacking runs once, here.
                relax.transform.SplitLayoutRewritePreproc(),
                relax.transform.FoldConstant(),
                relax.transform.DeadCodeElimination(),
                relax.transform.RewriteDataflowReshape(),
                relax.transform.ToNonDataflow(),
                relax.transform.RemovePurityChecking(),
                relax.transform.CallTIRRewrite(),
                relax.transform.StaticPlanBlockMemory(),
                relax.transform.LowerAllocTensor(),
                relax.transform.KillAfterLastUse(),
                relax.transform.LowerRuntimeBuiltin(),
                relax.transform.ComputePrimValue(),
                relax.transform.VMShapeLower(),
                relax.transform.AttachGlobalSymbol(),
            ]
            return tvm.transform.Sequential(passes)(mod)

    return pipeline


def faster_build(builds: dict, shape, reporter: Reporter, rpc: dict | None = None) -> tuple[str, dict]:
    """The name of the build with the lowest median latency end to end, and each one's.

    MetaSchedule times each kernel alone, in a process of its own, and keeps the
    fastest candidate per kernel; in the model the picks can lose (a mini/128 build
    with 610 trials ran 1.27x slower than the default schedules here). So the
    tuned build must also win end to end, timed interleaved with the default: with
    ``rpc``, where tuning measured, on one device of the key, on its clock."""
    import numpy as np

    from pipelines.evaluate.bench import time_interleaved
    from pipelines.runtime.engines import TVMEngine

    ids, mask = np.full(shape, 100, dtype=np.int64), np.ones(shape, dtype=np.int64)
    device, where = None, ""
    if rpc:
        from pipelines.config import RpcConfig
        from pipelines.runtime.remote import RemoteDevice

        device = RemoteDevice(RpcConfig.model_validate(rpc))
        where = f" on {device.label}"
    try:
        runners = {
            name: device.open_executable(ex, shape, name) if device else TVMEngine.from_executable(ex, shape, name)
            for name, ex in builds.items()
        }
        for runner in runners.values():
            runner.logits(ids, mask)  # warm-up: first-call allocation
        times, _ = time_interleaved(runners, ids, mask, iterations=40, max_seconds=5)
    finally:
        runners = None
        if device is not None:
            device.close()
    p50 = {name: round(float(np.median(ms)), 3) for name, ms in times.items()}
    best = min(p50, key=p50.get)
    reporter.log(f"end to end{where}: " + ", ".join(f"{name} {ms:.2f} ms" for name, ms in p50.items()) + f"; keeping the {best} build")
    return best, p50


def compile_artifact(request: dict, reporter: Reporter) -> dict:
    """Build one artifact. ``request``: program (a .pt2 path), out_dir, precision,
    target, model_dir (tokenizer + labels), shape, config_hash."""
    import torch
    import tvm
    from tvm import relax

    from pipelines.compile.lstm import import_program, recurrence_weights

    precision = request["precision"]
    target = tvm.target.Target(resolve_target(request.get("target")))
    steps = 4
    at = f"{request['shape'][0]} x lengths {request['lengths'][0]}-{request['lengths'][1]}" if request.get("lengths") else request["shape"]
    reporter.log(f"compiling {precision} for {target.kind.name} ({target.attrs.get('mcpu', '')}) at {at}")
    t0 = time.monotonic()
    from pipelines.modeling.opaque_lstm import register

    register()  # a symbolic-length program calls workbench::lstm
    program = torch.export.load(request["program"])
    cpu = target.kind.name == "llvm"
    int8_payload, int8_kernel = None, None
    if precision == "int8":
        from pipelines.compile.int8 import read_request, request_kernel

        int8_payload = read_request(request["quantize"])
        int8_kernel = request_kernel(int8_payload, target)
    from pipelines.compile.schedules import vector_bits

    cores = int(target.attrs.get("num-cores", 0) or 0) or os.cpu_count() or 1  # a preset names none: this machine's
    # int8: an LSTM's calibrated input is quantised for its recurrence, which computes
    # the input projection itself (those layers' parameters are collected in fused)
    fused: list[dict] = []
    int8_inputs = ({layer["key"]: (name, *layer["range"]) for name, layer in int8_payload["layers"].items() if name not in int8_payload["keep_fp32"]}
                   if int8_payload and cpu and int8_kernel.dot_product else None)
    mod = import_program(program, cpu=cpu, int8_lstm=int8_kernel if cpu else None, vector_bits=vector_bits(target), cores=cores,
                         int8_inputs=int8_inputs, fused_inputs=fused)
    reporter.progress(1, steps, "steps", step="imported")
    if precision == "fp16":
        if recurrence_weights(mod):  # ToMixedPrecision fails on a call_tir of a hand-written kernel
            raise ValueError("fp16 is not built for LSTM models (the recurrence kernel is fp32 or int8): compile fp32 or int8")
        # fp16 weights and matmuls; softmax, LayerNorm and reductions stay in fp32.
        mod = relax.transform.ToMixedPrecision(out_dtype="float32")(mod)
    elif precision == "int8":
        # Calibrated linear layers -> int8 kernels for the target's ISA (pipelines.compile.int8); the rest stays fp32.
        from pipelines.compile.int8 import rewrite_from_request

        mod, quantization = rewrite_from_request(mod, int8_payload, int8_kernel, in_recurrences=fused)
        quantization["int8_recurrences"] = recurrence_weights(mod).count("int8")
        if quantization["int8_recurrences"]:  # a BiLSTM: its int8 linear layers are the LSTMs' input projections
            how = f"in int8 arithmetic ({int8_kernel.instruction})" if int8_kernel.dot_product else "with int8 weights, float32 arithmetic"
            reporter.log(f"int8: {quantization['int8_recurrences']} LSTM recurrences {how}")
        if quantization["layers"] or not quantization["int8_recurrences"]:
            reporter.log(f"int8: {target.attrs.get('mcpu', 'this CPU')}: {quantization['kernel_note']}")
    elif precision != "fp32":
        raise ValueError(f"precision {precision!r} is not supported by the compile stage (fp32, fp16, int8)")
    reporter.progress(2, steps, "steps", step="converted")
    tuning = request.get("tuning") or {}
    if request.get("lengths"):  # MetaSchedule tunes static shapes: default schedules
        if tuning.get("trials"):
            reporter.log("tuning skipped: MetaSchedule tunes static shapes, and this build's length is symbolic "
                         "(default schedules)", level="warning")
        tuning = {}
    tuning_records, kept, end_to_end = 0, None, None
    if target.kind.name != "llvm":
        executable = tvm.compile(mod, target=target, relax_pipeline="default")
    elif tuning.get("database") and (tuning.get("trials") or os.path.isdir(tuning["database"])):
        # Tune within the budget (0 trials: only reuse what earlier compiles measured).
        from pipelines.compile.tuning import TuningBudget, database_dir, tune

        fused = fuse(mod, target)
        budget = TuningBudget(tuning.get("trials") or 0, tuning.get("max_minutes"))
        rpc = tuning.get("rpc")  # measured on a tracker's devices: their own database
        database = tune(fused, target, database_dir(tuning["database"], target, rpc), budget, default_rules(), reporter, rpc)
        tuning_records = len(database)
        with database:
            tuned = tvm.compile(fused, target=target, relax_pipeline=cpu_pipeline(target, fused=True, tuned=True))
        default = tvm.compile(fused, target=target, relax_pipeline=cpu_pipeline(target, fused=True))
        kept, end_to_end = faster_build({"tuned": tuned, "default": default}, request["shape"], reporter, rpc)
        executable = tuned if kept == "tuned" else default
    else:
        executable = tvm.compile(mod, target=target, relax_pipeline=cpu_pipeline(target))
    reporter.progress(3, steps, "steps", step="built")
    fail_point("compile.built", request["out_dir"])
    if precision == "int8":
        from pipelines.compile.int8 import count_instructions

        int8_code = quantization["layers"] or (quantization["int8_recurrences"] and int8_kernel.dot_product)
        mnemonic = int8_kernel.instruction if int8_code else None
        if mnemonic:  # 0 in the code: the int8 GEMMs lost their dot-product instruction
            quantization[mnemonic] = count_instructions(executable, mnemonic)
        found = f", {quantization[mnemonic]} {mnemonic} in the code" if mnemonic else ""
        reporter.log(f"int8: {quantization['int8_layers']} int8 linear layers{found}")
    compile_s = time.monotonic() - t0

    needs = requirements(target)
    # Cross-compiled code cannot be linked into a shared library here (no cross-linker):
    # ship the object files, which the device links when it loads them.
    library = LIBRARY_OBJECTS if "link" in needs else LIBRARY
    if "link" in needs:
        reporter.log(f"cross-compiled for {needs['arch']}: {needs['link']}")

    def write(tmp: str) -> None:
        executable.export_library(os.path.join(tmp, library))
        for name in TOKENIZER_FILES:
            src = os.path.join(request["model_dir"], name)
            if os.path.isfile(src):
                shutil.copy(src, tmp)
        model_meta = ModelMeta.load(request["model_dir"])
        labels = model_meta.labels
        write_json(
            os.path.join(tmp, ARTIFACT_META),
            {
                "engine": f"tvm-{precision}",
                "precision": precision,
                "inputs": [{"name": n, "shape": request["shape"], "dtype": "int64"} for n in ("input_ids", "attention_mask")],
                # [shortest, longest] where the length is symbolic (any length between runs
                # as it is; the shape above has the longest), else null
                "lengths": request.get("lengths"),
                # input_ids = token id + LEXICON_STRIDE * the character's lexicon code
                "lexicon_stride": LEXICON_STRIDE if os.path.isfile(os.path.join(request["model_dir"], LEXICON_FILE)) else None,
                "output": {"name": "logits", "shape": [*request["shape"], len(labels)], "dtype": "float32"},
                "labels": labels,
                # a CRF model's logits are emissions: decode them with these scores
                # (start, end, transitions [previous, next]; runtime.predict.viterbi_bio)
                "crf": model_meta.crf,
                "target": str(target),
                "tvm_version": tvm.__version__,
                "compile_s": round(compile_s, 2),
                "tuning": {
                    "trials": tuning.get("trials") or 0,
                    "max_minutes": tuning.get("max_minutes"),
                    "records": tuning_records,
                    "kept": kept,  # "tuned" or "default": whichever build ran faster end to end
                    "p50_ms": end_to_end,
                    "measured_on": f"rpc:{tuning['rpc']['key']}" if tuning.get("rpc") else "local",
                },
                "config_hash": request.get("config_hash"),
                "library": library,
                "requires": needs,
                "quantization": quantization if precision == "int8" else None,
            },
        )

    replace_dir(request["out_dir"], write)
    size_mb = os.path.getsize(os.path.join(request["out_dir"], library)) / 2**20
    reporter.progress(4, steps, "steps", step="saved")
    reporter.metric("compile_s", round(compile_s, 2))
    reporter.metric("artifact_mb", round(size_mb, 2))
    reporter.artifact(f"tvm-{precision}", request["out_dir"])
    return {"compile_s": round(compile_s, 2), "artifact_mb": round(size_mb, 2)}


def _main(request_path: str) -> int:
    """Subprocess entry: events as JSON lines on stdout, the result last."""
    # Before TVM runs a kernel: FoldConstant and tuning's measurements use the pool,
    # and tuning's runner processes inherit the setting.
    configure_tvm_threads()
    with open(request_path, encoding="utf-8") as f:
        request = json.load(f)

    def emit(event: Event) -> None:
        print(event.to_json(), flush=True)

    from pipelines.compile.schedules import Fallbacks, collecting

    reporter = Reporter(emit, stage="compile")
    fallbacks = Fallbacks()
    try:
        with collecting(fallbacks):
            result = compile_artifact(request, reporter)
    finally:  # failed or not: the details to the compile log (stderr), the summary as a warning
        fallbacks.report(reporter, lambda line: print(line, file=sys.stderr, flush=True))
    emit(Event("finished", "compile", data=result))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1]))
