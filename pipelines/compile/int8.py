"""Int8 linear layers for TVM on x86: a Relax rewrite plus an int8 GEMM kernel per ISA.

Each ``matmul(x, W^T) (+ bias)`` with a constant weight whose layer was calibrated
becomes one scheduled TIR kernel:

    quantise x -> uint8 (per-tensor scale, zero point)       [M, K]
    int8 GEMM, int32 accumulation                            [M, N]
    out = acc * (s_x * s_w[n]) + (bias[n] - z * s_x * s_w[n] * colsum(W_q)[n])

The GEMM's inner step is one dot product of 4 activation bytes with 4 weight bytes
per output channel, for a vector of channels (``Int8Kernel``):

- ``vnni``: AVX-512 VNNI ``vpdpbusd``, 16 channels, 8-bit weights;
- ``avx-vnni``: AVX-VNNI's ``vpdpbusd`` on 256-bit vectors (Intel since Alder Lake and
  Sapphire Rapids, AMD Zen 5: CPUs with it and no AVX-512 VNNI are most recent
  laptops), 8 channels, 8-bit weights;
- ``avx512bw`` / ``avx2``: ``vpmaddubsw`` (u8 x s8 pairs -> int16) then ``vpmaddwd``
  by ones (-> int32), 16 / 8 channels; 7-bit weights, so the int16 pair sums cannot
  saturate (``quantize.QMAX_W_PMADD``);
- ``avx2-pairs`` (by name only): two k quads a step, their ``vpmaddubsw`` sums added
  in int16 before one ``vpmaddwd``; 6-bit weights;
- ``int32``: plain int32 vector arithmetic (other CPUs).

The elementwise op after a kernel (GELU, or the residual add) runs inside it as an
epilogue, on each output tile while it is in cache.

The weight is quantised and packed ahead of time into the layout the instruction
reads, ``[N/L, K/4, L, 4]`` (L channels x 4 consecutive k in one vector):
MetaSchedule's auto-tensorize failed on a plain [K, N] constant. Layers not
calibrated, kept in fp32 by the accuracy budget, or with shapes the kernel cannot
tile (N % 16, K % 4, e.g. the 7-label classifier) stay fp32 matmuls.

Attention's ``softmax(S) @ V`` becomes int8 on request (``attention=True``): the
softmax writes u8 codes with a scale per row, V is quantised per column as it comes,
and the same GEMM tile multiplies them. ``Q K^T`` stays fp32.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import numpy as np

from pipelines.compile.quantize import QMAX_W, QMAX_W_PMADD, QMAX_W_PMADD2, activation_params, quantize_weight, weight_scales

VNNI_INTRIN = "workbench_vnni_{lanes}x4_local"
PMADD_INTRIN = "workbench_pmadd_{lanes}x4_local"
PMADD_PAIRS_INTRIN = "workbench_pmadd_pairs_{lanes}x8_local"
CHANNEL_MULTIPLE = 16  # every kernel tiles N in blocks of 16 (calibration picks layers before the target is known)


@dataclass(frozen=True)
class Int8Kernel:
    name: str
    lanes: int  # int32 accumulator lanes: output channels per packed weight block
    weight_qmax: int
    rows: int  # the register tile: rows x col_blocks accumulators of `lanes` channels
    col_blocks: int
    note: str
    instruction: str | None  # the dot-product instruction the built code must hold
    # k quads a dot-product step takes: 2 sums two vpmaddubsw results in int16 before
    # one vpmaddwd (3 multiplies per 8 k instead of 4), which needs 6-bit weights.
    quads: int = 1

    @property
    def dot_product(self) -> bool:
        return self.instruction is not None

    @property
    def vnni(self) -> bool:
        """One ``vpdpbusd`` a step (AVX-512 VNNI or AVX-VNNI), no int16 pairs."""
        return self.instruction == "vpdpbusd"

    @property
    def weight_bits(self) -> int:
        return int(self.weight_qmax).bit_length() + 1


KERNELS = {
    # 8 x 2 x 16 int32 lanes = 16 zmm accumulators (measured best of 4x4, 8x4, 4x8, 16x2).
    "vnni": Int8Kernel("vnni", 16, QMAX_W, 8, 2, "vpdpbusd (AVX-512 VNNI)", "vpdpbusd"),
    # AVX-VNNI: 4 x 2 x 8 lanes, as avx2 (Intel Xeon, alderlake build: 395-536 GOP/s
    # against 394-490 for 8 x 2 on mini's three GEMM shapes).
    "avx-vnni": Int8Kernel("avx-vnni", 8, QMAX_W, 4, 2, "vpdpbusd on 256 bits (AVX-VNNI, no AVX-512)", "vpdpbusd"),
    "avx512bw": Int8Kernel("avx512bw", 16, QMAX_W_PMADD, 8, 2, "vpmaddubsw + vpmaddwd (AVX-512BW, no VNNI; 7-bit weights)", "vpmaddubsw"),
    # 4 x 2 x 8 lanes: 8 of the 16 ymm registers as accumulators, the rest for the
    # weights, the broadcast input and the int16 pairs. On an Intel Xeon (haswell
    # build) 280-334 GOP/s against 211-236 for 8 x 2, which spills 6 accumulators;
    # on AMD Zen, whose stack spills are nearly free, 8 x 2 was the fastest of the seven
    # tiles (znver3, scripts/bench_int8_tiles.py): ``int8_kernel`` picks it there.
    "avx2": Int8Kernel("avx2", 8, QMAX_W_PMADD, 4, 2, "vpmaddubsw + vpmaddwd (AVX2; 7-bit weights)", "vpmaddubsw"),
    # 8 x 2: on the Xeon 238-336 GOP/s against 203-332 for 4 x 2.
    "avx2-pairs": Int8Kernel("avx2-pairs", 8, QMAX_W_PMADD2, 8, 2,
                             "2 vpmaddubsw + vpaddw + vpmaddwd (AVX2; 6-bit weights)", "vpmaddubsw", quads=2),
    "int32": Int8Kernel("int32", 16, QMAX_W, 8, 2, "int32 vectors (no AVX2 on this target)", None),
}


# The CPU feature each kernel's instructions need (LLVM's names).
KERNEL_FEATURES = {"vnni": "avx512vnni", "avx-vnni": "avxvnni", "avx512bw": "avx512bw", "avx2": "avx2", "avx2-pairs": "avx2",
                   "int32": None}
# Fastest first: a vpdpbusd does on 256 bits what vpmaddubsw + vpmaddwd do on 512.
AUTO_ORDER = ("vnni", "avx-vnni", "avx512bw", "avx2", "int32")


def int8_kernel(target, choice: str = "auto") -> Int8Kernel:
    """The kernel ``choice`` names, or (``auto``) the fastest one a target's CPU runs.
    LLVM aborts the whole process on an instruction the CPU lacks (e.g. vpdpbusd for
    znver3), so this reads the target, and a named kernel it cannot run is an error."""
    import tvm
    from tvm.target import codegen

    target = tvm.target.Target(target) if not isinstance(target, tvm.target.Target) else target

    def runs(name: str) -> bool:
        feature = KERNEL_FEATURES[name]
        return feature is None or (target.kind.name == "llvm" and bool(codegen.target_has_features(feature, target)))

    if choice == "auto":
        return _tile_for(KERNELS[next(name for name in AUTO_ORDER if runs(name))], target)
    if choice not in KERNELS:
        raise ValueError(f"unknown int8 kernel {choice!r} (auto, {', '.join(KERNELS)})")
    if not runs(choice):
        mcpu = target.attrs.get("mcpu", "") or target.kind.name
        usable = ", ".join(name for name in KERNELS if runs(name))
        raise ValueError(f"int8 kernel {choice!r} needs {KERNEL_FEATURES[choice]}, which the target ({mcpu}) lacks (it runs: {usable})")
    return _tile_for(KERNELS[choice], target)


def _tile_for(kernel: Int8Kernel, target) -> Int8Kernel:
    """The AVX2 kernel's register tile for AMD Zen: 8 x 2 (see KERNELS)."""
    if kernel.name == "avx2" and str(target.attrs.get("mcpu", "") or "").startswith("znver"):
        return dataclasses.replace(kernel, rows=8)
    return kernel


# LLVM's u8 x s8 -> int32 dot product per vector width: the 256-bit one is AVX-VNNI's
# VEX-encoded vpdpbusd on a CPU without AVX-512 (LLVM picks the encoding).
VPDPBUSD = {256: "llvm.x86.avx512.vpdpbusd.256", 512: "llvm.x86.avx512.vpdpbusd.512"}
# LLVM's u8 x s8 -> int16 pairs and int16 pairs -> int32 intrinsics, per vector width.
PMADD = {
    256: ("llvm.x86.avx2.pmadd.ub.sw", "llvm.x86.avx2.pmadd.wd"),
    512: ("llvm.x86.avx512.pmaddubs.w.512", "llvm.x86.avx512.pmaddw.d.512"),
}


def _dot_desc(lanes: int, quads: int = 1):
    """What every kernel's inner step computes: ``lanes`` int32 accumulators (local
    scope, so they can be tensorized into a register tile) += 4 u8 . 4 s8 each, for
    ``quads`` consecutive k quads (weights packed [quad, lane, 4])."""
    from tvm.script import tirx as T

    if quads == 1:

        @T.prim_func(s_tir=True)
        def desc(
            A: T.Buffer((4,), "uint8", offset_factor=1),
            B: T.Buffer((lanes, 4), "int8", offset_factor=1),
            C: T.Buffer((lanes,), "int32", offset_factor=1, scope="local"),
        ) -> None:
            with T.sblock("root"):
                T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
                T.writes(C[0:lanes])
                for i in T.serial(0, lanes):
                    for k in T.serial(0, 4):
                        with T.sblock("update"):
                            vi, vk = T.axis.remap("SR", [i, k])
                            C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

        return desc

    @T.prim_func(s_tir=True)
    def desc_quads(
        A: T.Buffer((quads * 4,), "uint8", offset_factor=1),
        B: T.Buffer((quads, lanes, 4), "int8", offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0 : quads * 4], B[0:quads, 0:lanes, 0:4])
            T.writes(C[0:lanes])
            for q in T.serial(0, quads):
                for i in T.serial(0, lanes):
                    for k in T.serial(0, 4):
                        with T.sblock("update"):
                            vi = T.axis.spatial(lanes, i)
                            vk = T.axis.reduce(quads * 4, q * 4 + k)
                            C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vk // 4, vi, vk % 4], "int32")

    return desc_quads


def broadcast4(quad, lanes: int):
    """4 u8 bytes (a ``uint8x4`` expression) repeated for ``lanes`` int32 lanes, as the
    ``int8x(4 lanes)`` operand the dot-product instructions take."""
    from tvm.script import tirx as T

    return T.reinterpret(T.broadcast(T.reinterpret(quad, dtype="int32"), lanes), dtype=f"int8x{lanes * 4}")


def dot4(acc, a, w, lanes: int, vnni: bool = False):
    """``acc`` (``lanes`` int32) + for each lane the dot product of 4 u8 of ``a`` with that
    lane's 4 s8 of ``w`` (``int8x(4 lanes)`` each): ``vpdpbusd`` (AVX-512 VNNI or AVX-VNNI), or
    ``vpmaddubsw`` (pairs -> int16, so 7-bit weights) then ``vpmaddwd`` by ones."""
    from tvm.script import tirx as T

    i32 = f"int32x{lanes}"
    if vnni:
        return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(VPDPBUSD[lanes * 32]), acc, a, w, dtype=i32)
    to_pairs, to_int32 = PMADD[lanes * 32]
    pairs = T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(to_pairs), a, w, dtype=f"int16x{lanes * 2}")
    return acc + T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(to_int32), pairs, T.broadcast(T.int16(1), lanes * 2), dtype=i32)


def register_vnni_intrin(lanes: int = 16) -> str:
    """``dot_16x4_vnni`` (or its 8-lane AVX-VNNI form) with its accumulator in local
    scope and ``vpdpbusd``'s LLVM >= 20 signature (<64 x i8> operands; TVM's own
    intrinsic passes <16 x i32> and fails LLVM verification)."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    name = VNNI_INTRIN.format(lanes=lanes)

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((4,), "uint8", offset_factor=1),
        B: T.Buffer((lanes, 4), "int8", offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            C[T.ramp(T.int32(0), 1, lanes)] = dot4(C.vload([0], dtype=f"int32x{lanes}"), broadcast4(A.vload([0], "uint8x4"), lanes),
                                                   B.vload([0, 0], dtype=f"int8x{4 * lanes}"), lanes, vnni=True)

    TensorIntrin.register(name, _dot_desc(lanes), impl, override=True)
    return name


def register_pmadd_intrin(lanes: int) -> str:
    """``vpmaddubsw`` (pairs -> int16) then ``vpmaddwd`` with ones (-> int32): TVM's
    ``dot_16x4_avx512`` with its accumulator in local scope, for 256 or 512 bits."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    i8, i32 = f"int8x{lanes * 4}", f"int32x{lanes}"
    name = PMADD_INTRIN.format(lanes=lanes)

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((4,), "uint8", offset_factor=1),
        B: T.Buffer((lanes, 4), "int8", offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            C[T.ramp(T.int32(0), 1, lanes)] = dot4(C.vload([0], dtype=i32), broadcast4(A.vload([0], "uint8x4"), lanes),
                                                   B.vload([0, 0], dtype=i8), lanes)

    TensorIntrin.register(name, _dot_desc(lanes), impl, override=True)
    return name


def register_pmadd_pairs_intrin(lanes: int) -> str:
    """Two k quads a step: ``vpmaddubsw`` on each, their int16 sums added (6-bit
    weights: 2 * 2 * 255 * 31 = 31,620 fits int16), one ``vpmaddwd`` by ones."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    to_pairs, to_int32 = PMADD[lanes * 32]
    i8, i16, i32 = f"int8x{lanes * 4}", f"int16x{lanes * 2}", f"int32x{lanes}"
    name = PMADD_PAIRS_INTRIN.format(lanes=lanes)

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((8,), "uint8", offset_factor=1),
        B: T.Buffer((2, lanes, 4), "int8", offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:8], B[0:2, 0:lanes, 0:4])
            T.writes(C[0:lanes])
            a0 = T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"), lanes), dtype=i8)
            a1 = T.reinterpret(T.broadcast(T.reinterpret(A.vload([4], "uint8x4"), dtype="int32"), lanes), dtype=i8)
            p0 = T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(to_pairs), a0, B.vload([0, 0, 0], dtype=i8), dtype=i16)
            p1 = T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(to_pairs), a1, B.vload([1, 0, 0], dtype=i8), dtype=i16)
            C[T.ramp(T.int32(0), 1, lanes)] = C.vload([0], dtype=i32) + T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(to_int32), p0 + p1, T.broadcast(T.int16(1), lanes * 2), dtype=i32
            )

    TensorIntrin.register(name, _dot_desc(lanes, 2), impl, override=True)
    return name


def pack_weight(wq: np.ndarray, lanes: int = 16) -> np.ndarray:
    """[N, K] int8 -> [N/lanes, K/4, lanes, 4]: one dot-product operand per (n block, k quad)."""
    n, k = wq.shape
    return np.ascontiguousarray(wq.reshape(n // lanes, lanes, k // 4, 4).transpose(0, 2, 1, 3))


def supports(m: int, k: int, n: int) -> bool:
    return n % CHANNEL_MULTIPLE == 0 and k % 4 == 0 and (not isinstance(m, int) or m >= 1)  # m: rows, maybe symbolic


def has_vnni(target) -> bool:
    """Whether an LLVM target's CPU has ``vpdpbusd`` (AVX-512 VNNI or AVX-VNNI)."""
    return int8_kernel(target).vnni


def fast_gelu(x):
    """GELU with ``fast_erf`` on a TE tensor: the compiler's fp32 GELU
    (``compiler._fast_gelu``) and the int8 kernel's GELU epilogue, the same numbers."""
    from tvm import tirx, topi

    half = tirx.const(0.5, x.dtype)
    return x * (half + topi.fast_erf(x * tirx.const(0.5**0.5, x.dtype)) * half)


EPILOGUES = (None, "gelu", "residual")


def int8_linear_func(m: int, k: int, n: int, scale: float, zero: int, kernel: Int8Kernel = KERNELS["vnni"],
                     epilogue: str | None = None, layout: tuple = ()):
    """The scheduled kernel ``(x[m, k] f32, w[n/L, k/4, L, 4] i8, mul[n], off[n]) -> y[m, n] f32``
    with L = ``kernel.lanes``; the ``int32`` kernel: the same tiling with plain int32
    vector arithmetic. ``epilogue``: ``gelu`` applies GELU to y, ``residual`` takes a
    fifth input ``r[m, n]`` and adds it; each tile does it while y is in cache (an
    opaque kernel cannot be fused with the ops after it: they would each be one more
    pass over memory). ``layout``: steps ``("reshape", shape)`` / ``("transpose", axes)``
    the output is written through (attention's split into heads, ``layout_steps``)."""
    from tvm import s_tir, te, tirx

    if epilogue not in EPILOGUES:
        raise ValueError(f"unknown int8 epilogue {epilogue!r}")
    f32 = "float32"
    lanes = kernel.lanes
    x = te.placeholder((m, k), f32, name="x")
    w = te.placeholder((n // lanes, k // 4, lanes, 4), "int8", name="w")
    mul = te.placeholder((n,), f32, name="mul")
    off = te.placeholder((n,), f32, name="off")
    inv, zp = tirx.const(1.0 / scale, f32), tirx.const(float(zero), f32)
    q = te.compute(
        (m, k),
        lambda i, j: tirx.Cast("uint8", tirx.max(tirx.min(tirx.round(x[i, j] * inv) + zp, tirx.const(255.0, f32)), tirx.const(0.0, f32))),
        name="quantize",
    )
    r = te.reduce_axis((0, k), name="r")
    acc = te.compute(
        (m, n),
        lambda i, j: te.sum(q[i, r].astype("int32") * w[j // lanes, r // 4, j % lanes, r % 4].astype("int32"), axis=r),
        name="gemm",
    )
    y = te.compute((m, n), lambda i, j: acc[i, j].astype(f32) * mul[j] + off[j], name="rescale")
    inputs = [x, w, mul, off]
    if epilogue == "residual":
        r = te.placeholder((m, n), f32, name="r")
        inputs.append(r)
        out = te.compute((m, n), lambda i, j: y[i, j] + r[i, j], name="epilogue")
    elif epilogue == "gelu":
        gelu = fast_gelu(y)
        out = te.compute((m, n), lambda i, j: gelu[i, j], name="epilogue")
    else:
        out = y
    if layout:
        from tvm import topi

        for kind, arg in layout:
            out = topi.reshape(out, arg) if kind == "reshape" else topi.transpose(out, arg)
        moved = out
        out = te.compute(moved.shape, lambda *i: moved(*i), name="epilogue")
    sch = s_tir.Schedule(te.create_prim_func([*inputs, *row_vars(m), out]))
    if epilogue or layout:
        # The rescale and every elementwise stage of the epilogue fold into one block.
        for block in sch.get_child_blocks(sch.get_sblock("root")):
            if sch.get(block).name_hint not in ("quantize", "gemm", "epilogue"):
                sch.compute_inline(block)
    quant, gemm = sch.get_sblock("quantize"), sch.get_sblock("gemm")
    rescale = sch.get_sblock("epilogue" if epilogue or layout else "rescale")

    _schedule_gemm(sch, gemm, rescale, m, k, n, kernel)
    q_rows, q_cols = sch.get_loops(quant)
    sch.parallel(q_rows)
    if k % 16 == 0:
        sch.vectorize(sch.split(q_cols, [None, 16])[1])
    # Scheduled here: dlight's default rules must skip it; opaque: FuseOps must not merge it.
    return sch.mod["main"].with_attr("tirx.is_scheduled", True).with_attr("op_pattern", 8)


def _schedule_gemm(sch, gemm, rescale, m: int, k: int, n: int, kernel: Int8Kernel) -> None:
    """Tile the int8 GEMM block (``[batch,] m, n`` spatial, ``k`` reduced; weights
    packed ``[n/L, k/4, L, 4]``) into the kernel's register tile, tensorize its inner
    step, and compute ``rescale`` (the block writing the fp32 output) per row tile."""
    from tvm.s_tir.dlight.base import get_extent

    rows = gemm_rows(kernel, m)  # m symbolic (64 * s): what provably divides it
    lanes = kernel.lanes
    blocks = gemm_columns(kernel, n) // lanes
    *batch, i, j, kk = sch.get_loops(gemm)
    i_o, i_i = sch.split(i, [None, rows])
    j_o, j_b, j_i = sch.split(j, [None, blocks, lanes])
    quads = kernel.quads if k % (4 * kernel.quads) == 0 else 1
    k_o, k_q, k_i = sch.split(kk, [None, quads, 4])
    # Per k quad: `rows` broadcasts of 4 activation bytes, `blocks` weight vector
    # loads, rows x blocks dot products into accumulators that stay in registers.
    sch.reorder(*batch, j_o, i_o, k_o, i_i, j_b, *((k_q, j_i, k_i) if kernel.dot_product else (k_q, k_i, j_i)))
    sch.set_scope(gemm, 0, "local")
    sch.reverse_compute_at(rescale, i_o, preserve_unit_loops=True)
    # j outer, i inner: the weight panel of `blocks` x 16 channels stays in cache across row tiles.
    # Over a symbolic number of rows, the panels alone run in parallel: fused with the
    # rows, the loop's index arithmetic divides by the length and tensorize refuses it.
    sch.parallel(sch.fuse(*batch, j_o, i_o) if isinstance(m, int) else sch.fuse(*batch, j_o) if batch else j_o)
    init = sch.decompose_reduction(gemm, k_o)
    if kernel.vnni:
        sch.tensorize(j_i, register_vnni_intrin(lanes))
    elif kernel.dot_product and quads == 2:
        sch.tensorize(k_q, register_pmadd_pairs_intrin(lanes))
    elif kernel.dot_product:
        sch.tensorize(j_i, register_pmadd_intrin(lanes))
    else:
        # TIR refuses to vectorize a reduction update; 16 contiguous int32 lanes innermost
        # are left to LLVM's loop vectorizer.
        sch.unroll(k_i)
        sch.unroll(k_q)
    sch.unroll(i_i)
    sch.unroll(j_b)
    sch.vectorize(sch.get_loops(init)[-1])
    innermost = sch.get_loops(rescale)[-1]
    if rows < 16 and get_extent(sch, innermost) == rows:  # written transposed (Kᵀ): a tile's rows are contiguous
        sch.vectorize(innermost)
    else:
        _, out_lanes = sch.split(innermost, [None, 16 if n % 16 == 0 else lanes])
        sch.vectorize(out_lanes)


def gemm_rows(kernel: Int8Kernel, m) -> int:
    """The rows of the int8 GEMM's register tile: the kernel's, or what divides ``m``
    (``m`` symbolic, such as 64 * s: what provably divides it)."""
    from pipelines.compile.schedules import divides

    return next(r for r in (kernel.rows, 4, 2, 1) if divides(r, m))


def gemm_columns(kernel: Int8Kernel, n: int) -> int:
    """The output channels of the int8 GEMM's register tile."""
    return kernel.lanes * (kernel.col_blocks if (n // kernel.lanes) % kernel.col_blocks == 0 else 1)


def layout_steps(m, n: int, kernel: Int8Kernel, reshapes: list, axes) -> tuple | None:
    """``reshapes`` then a transpose by ``axes`` as steps the int8 kernel writes its
    ``[m, n]`` output through, or None where a register tile would not land in one box
    of the output: the last reshape must split the rows into [B, S] and the columns into
    [H, D] (attention's heads), the tile's rows within one S and its columns within one
    head or over whole heads."""
    if not isinstance(m, int) or not reshapes or len(reshapes[-1]) != 4:
        return None
    b, s, h, d = reshapes[-1]
    rows, cols = gemm_rows(kernel, m), gemm_columns(kernel, n)
    if b * s != m or h * d != n or s % rows or (d % cols and cols % d):
        return None
    return tuple(("reshape", tuple(shape)) for shape in reshapes) + (("transpose", tuple(axes)),)


def row_vars(m) -> list:
    """The variables of a symbolic row count that its buffers cannot bind, passed to the
    kernel as scalar inputs after the tensors (as ``call_te`` does): ``64 * s``'s ``s``
    (a plain ``s`` binds itself as the buffers' first dimension)."""
    from tvm import tirx

    if isinstance(m, (int, tirx.IntImm, tirx.Var)):
        return []
    return list(tirx.analysis.undefined_vars(m))


def static_dim(dim):
    """A shape dimension as an int where it is a number, else the expression."""
    from tvm import tirx

    return int(dim) if isinstance(dim, tirx.IntImm) else dim


def supports_attention(m: int, k: int, n: int, kernel: Int8Kernel) -> bool:
    """Whether the int8 ``P V`` kernels tile ``P[m, k] V[k, n]`` (k: the keys, n: the head size)."""
    return n % kernel.lanes == 0 and k % 4 == 0 and m >= 1


def int8_softmax_func(batch: int, m: int, k: int):
    """Softmax over the last axis of ``x[batch, m, k]``, written as u8 probabilities and
    a scale per row, for the int8 ``P V``: ``p = q * scale``. A row's largest
    probability is ``1 / sum``, and ``exp(x - max)`` is in (0, 1], so
    ``q = rint(255 exp(x - max))`` and ``scale = 1 / (255 sum)`` use all 256 levels
    on [0, row max] with no zero point, in the pass softmax makes anyway (and a
    quarter of its output bytes)."""
    from tvm import s_tir, te, tirx, topi

    from pipelines.compile.schedules import largest_divisor

    f32 = "float32"
    x = te.placeholder((batch, m, k), f32, name="x")
    vec = largest_divisor(k, (8, 4, 2))
    # Row max and sum in two steps, so the long pass runs on vectors: `vec` partials
    # per row (a spatial axis), then those `vec` reduced.
    ko = te.reduce_axis((0, k // vec), name="ko")
    part_max = te.compute((batch, m, vec), lambda t, i, v: te.max(x[t, i, ko * vec + v], axis=ko), name="part_max")
    kv = te.reduce_axis((0, vec), name="kv")
    row_max = te.compute((batch, m), lambda t, i: te.max(part_max[t, i, kv], axis=kv), name="row_max")
    e = topi.fast_exp(te.compute((batch, m, k), lambda t, i, r: x[t, i, r] - row_max[t, i], name="shifted"))
    ko2 = te.reduce_axis((0, k // vec), name="ko2")
    part_sum = te.compute((batch, m, vec), lambda t, i, v: te.sum(e[t, i, ko2 * vec + v], axis=ko2), name="part_sum")
    kv2 = te.reduce_axis((0, vec), name="kv2")
    row_sum = te.compute((batch, m), lambda t, i: te.sum(part_sum[t, i, kv2], axis=kv2), name="row_sum")
    top = tirx.const(255.0, f32)
    q = te.compute((batch, m, k), lambda t, i, r: tirx.Cast("uint8", tirx.nearbyint(e[t, i, r] * top)), name="p_q")
    scale = te.compute((batch, m), lambda t, i: tirx.const(1.0, f32) / (row_sum[t, i] * top), name="p_scale")
    sch = s_tir.Schedule(te.create_prim_func([x, q, scale]))
    blocks = {sch.get(b).name_hint: b for b in sch.get_child_blocks(sch.get_sblock("root"))}
    sch.compute_inline(blocks["shifted"])

    def rows(block):
        row = sch.fuse(*sch.get_loops(block)[:2])
        sch.parallel(row)
        return row

    def vector_partials(name):  # the spatial `vec` axis innermost, as one vector
        v, red = sch.get_loops(blocks[name])[-2:]
        sch.reorder(red, v)
        sch.vectorize(v)

    # Four row-parallel passes: max; exp; sum and scale; codes. exp feeds two per-row
    # consumers (the scale and the codes), and TIR computes a block under a row loop
    # only if all its consumers are there, so exp gets a pass of its own.
    sch.compute_at(blocks["part_max"], rows(blocks["row_max"]))
    vector_partials("part_max")
    exp_block = next(block for name, block in blocks.items() if name.startswith("T_fast_exp"))
    for block in (exp_block, blocks["p_q"]):
        sch.vectorize(sch.split(sch.get_loops(block)[-1], [None, vec])[1])
        rows(block)
    row = rows(blocks["p_scale"])
    for name in ("row_sum", "part_sum"):
        sch.compute_at(blocks[name], row)
    vector_partials("part_sum")
    return sch.mod["main"].with_attr("tirx.is_scheduled", True).with_attr("op_pattern", 8)


def int8_columns_func(batch: int, k: int, n: int, kernel: Int8Kernel = KERNELS["vnni"]):
    """``v[batch, k, n]`` f32 quantised per column (symmetric, the kernel's weight range)
    and packed as the kernel reads weights: ``(v_q [batch, n/L, k/4, L, 4], v_scale [batch, n])``."""
    from tvm import s_tir, te, tirx

    f32, lanes, qmax = "float32", kernel.lanes, tirx.const(float(kernel.weight_qmax), "float32")
    v = te.placeholder((batch, k, n), f32, name="v")
    r = te.reduce_axis((0, k), name="r")
    amax = te.compute((batch, n), lambda t, j: te.max(tirx.abs(v[t, r, j]), axis=r), name="col_amax")
    zero, one = tirx.const(0.0, f32), tirx.const(1.0, f32)
    scale = te.compute((batch, n), lambda t, j: tirx.Select(amax[t, j] > zero, amax[t, j] / qmax, one), name="v_scale")
    inv = te.compute((batch, n), lambda t, j: one / scale[t, j], name="v_inv")  # one division a column, not one a value
    packed = te.compute(
        (batch, n // lanes, k // 4, lanes, 4),
        lambda t, nb, kq, l, i: tirx.Cast("int8", tirx.max(tirx.min(tirx.nearbyint(v[t, kq * 4 + i, nb * lanes + l] * inv[t, nb * lanes + l]), qmax), -qmax)),
        name="v_q",
    )
    sch = s_tir.Schedule(te.create_prim_func([v, packed, scale]))
    t, j, red = sch.get_loops(sch.get_sblock("col_amax"))
    sch.reorder(t, red, j)  # down the rows: each row of v is contiguous, its columns a vector
    sch.parallel(t)
    sch.vectorize(j)
    t, nb, kq, l, i = sch.get_loops(sch.get_sblock("v_q"))
    sch.reorder(t, nb, kq, i, l)  # lanes innermost: one vector load from a row of v
    sch.parallel(sch.fuse(t, nb))
    sch.vectorize(l)
    return sch.mod["main"].with_attr("tirx.is_scheduled", True).with_attr("op_pattern", 8)


def int8_attention_gemm_func(batch: int, m: int, k: int, n: int, kernel: Int8Kernel = KERNELS["vnni"]):
    """``(p_q, p_scale, v_q, v_scale) -> [batch, m, n] f32``: the int8 GEMM of
    ``int8_softmax_func``'s and ``int8_columns_func``'s outputs, rescaled per row and
    column, ``out[i, j] = sum_r p_q[i, r] v_q[r, j] * p_scale[i] * v_scale[j]``."""
    from tvm import s_tir, te

    f32, lanes = "float32", kernel.lanes
    qa = te.placeholder((batch, m, k), "uint8", name="p_q")
    sa = te.placeholder((batch, m), f32, name="p_scale")
    qb = te.placeholder((batch, n // lanes, k // 4, lanes, 4), "int8", name="v_q")
    sb = te.placeholder((batch, n), f32, name="v_scale")
    r = te.reduce_axis((0, k), name="r")
    acc = te.compute(
        (batch, m, n),
        lambda t, i, j: te.sum(qa[t, i, r].astype("int32") * qb[t, j // lanes, r // 4, j % lanes, r % 4].astype("int32"), axis=r),
        name="gemm",
    )
    out = te.compute((batch, m, n), lambda t, i, j: acc[t, i, j].astype(f32) * (sa[t, i] * sb[t, j]), name="rescale")
    sch = s_tir.Schedule(te.create_prim_func([qa, sa, qb, sb, out]))
    _schedule_gemm(sch, sch.get_sblock("gemm"), sch.get_sblock("rescale"), m, k, n, kernel)
    return sch.mod["main"].with_attr("tirx.is_scheduled", True).with_attr("op_pattern", 8)

def weight_key(w_nk: np.ndarray) -> str:
    """Identifies a layer's weight by content: how calibrated torch layers are found among Relax constants."""
    return hashlib.sha1(np.ascontiguousarray(w_nk, dtype=np.float32).tobytes()).hexdigest()


def constant_value(expr, lookup) -> np.ndarray | None:
    """The value of a Relax constant, or of a variable bound to one; else None.
    ``lookup``: a mutator's ``lookup_binding``."""
    import tvm
    from tvm import relax

    if isinstance(expr, relax.Var):
        expr = lookup(expr)
    return expr.value.numpy() if isinstance(expr, tvm.ir.Constant) else None


def constant_weight_nk(arg, lookup) -> np.ndarray | None:
    """The [N, K] weight of ``matmul(x, arg)`` when ``arg`` is a constant [K, N] or
    ``permute_dims`` of a constant [N, K] (how the torch frontend writes ``linear``),
    else None."""
    import tvm
    from tvm import relax

    value = lookup(arg) if isinstance(arg, relax.Var) else arg
    if isinstance(value, relax.Call) and value.op.same_as(tvm.ir.Op.get("relax.permute_dims")):
        axes = [int(a) for a in value.attrs.axes] if value.attrs.axes is not None else [1, 0]
        w = constant_value(value.args[0], lookup)
        return w if w is not None and w.ndim == 2 and axes == [1, 0] else None
    w = constant_value(arg, lookup)
    return np.ascontiguousarray(w.T) if w is not None and w.ndim == 2 else None


def quantize_linears(mod, layers: dict[str, dict], per_channel: bool = True, keep_fp32=(), kernel: Int8Kernel = KERNELS["vnni"],
                     attention: bool = False):
    """Rewrite the calibrated linear layers of ``main`` into int8 kernels.

    ``layers``: name -> {"key": weight_key(W), "range": [lo, hi]}. ``attention``: also
    ``softmax(S) @ V`` as int8 (``int8_softmax_func``, ``int8_columns_func``,
    ``int8_attention_gemm_func``). Returns (module, per-layer report: name -> {"int8",
    "K", "N", "scale", "zero", "weight_rel_err"}, int8 attention products rewritten).
    """
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    by_key = {spec["key"]: name for name, spec in layers.items()}
    keep = set(keep_fp32)
    report: dict[str, dict] = {}
    matmul_op, add_op, call_tir_op, reshape_op, gelu_op, softmax_op, broadcast_op, permute_op = (
        tvm.ir.Op.get(f"relax.{o}") for o in ("matmul", "add", "call_tir", "reshape", "nn.gelu", "nn.softmax", "broadcast_to", "permute_dims")
    )
    attention_products = []

    def dims(expr) -> list[int] | None:
        shape = getattr(expr.ty, "shape", None)
        try:
            return [int(d) for d in shape] if shape is not None else None
        except TypeError:  # a symbolic dimension
            return None

    @mutator
    class Rewriter(PyExprMutator):
        def __init__(self, mod):
            super().__init__(mod)
            # Plain int8 kernel name -> (its layer, its int8_linear_func arguments for an
            # epilogue variant, its per-channel offset for folding a bias into it).
            self.kernels: dict[str, tuple[str, tuple, np.ndarray]] = {}
            self.variants = {}  # (kernel name, epilogue) -> its global var
            self.layouts = {}  # a layout variant's name -> (its kernel's name, its args, its steps)
            self.attention_funcs = {}  # (kind, shape) -> global var of an int8 attention kernel

        def visit_call_(self, call):
            call = super().visit_call_(call)
            if call.op.same_as(matmul_op):
                return self.rewrite_matmul(call)
            if call.op.same_as(add_op):
                folded = self.fold_bias(call)
                return folded if folded is not call else self.fuse_residual(call)
            if call.op.same_as(gelu_op):
                return self.fuse_gelu(call)
            if call.op.same_as(permute_op) or call.op.same_as(reshape_op) or call.op.same_as(broadcast_op):
                return self.fuse_layout(call)
            return call

        def plain_kernel_call(self, var):
            """The call of a plain int8 kernel (no epilogue yet) that ``var`` is bound to, or None."""
            value = self.lookup_binding(var) if isinstance(var, relax.Var) else None
            is_kernel = isinstance(value, relax.Call) and value.op.same_as(call_tir_op) and value.args[0].name_hint in self.kernels
            return value if is_kernel else None

        def kernel_behind(self, var):
            """(global var, args, [m, n]) of the plain int8 kernel call that ``var`` is,
            seen through a reshape ([B * S, N] -> [B, S, N]: elementwise ops commute with it)."""
            value = self.lookup_binding(var) if isinstance(var, relax.Var) else None
            if isinstance(value, relax.Call) and value.op.same_as(reshape_op):
                if dims(value.args[0]) is None or dims(value) is None:
                    return None
                var = value.args[0]
            value = self.plain_kernel_call(var)
            return None if value is None else (value.args[0], list(value.args[1].fields), dims(value))

        def with_epilogue(self, call, source, epilogue: str, extra=()):
            """``call`` (an elementwise op on the kernel's output) as the kernel with that epilogue."""
            gvar, args, (m, n) = source
            layer, spec, _ = self.kernels[gvar.name_hint]
            report[layer]["epilogue"] = epilogue
            key = (gvar.name_hint, epilogue)
            if key not in self.variants:
                fname = f"{gvar.name_hint}_{epilogue}"
                func = int8_linear_func(*spec, kernel, epilogue).with_attr("global_symbol", fname)
                self.variants[key] = self.builder_.add_func(func, fname)
            fused = self.builder_.emit(relax.call_tir(self.variants[key], [*args, *extra], relax.TensorType((m, n), "float32")))
            return fused if dims(call) == [m, n] else relax.op.reshape(fused, call.ty.shape)

        def fuse_gelu(self, call):
            source = self.kernel_behind(call.args[0])
            return call if source is None else self.with_epilogue(call, source, "gelu")

        def fuse_residual(self, call):
            for var, other in (call.args, call.args[::-1]):
                source = self.kernel_behind(var)
                if source is None or dims(other) != dims(call) or other.ty.dtype != "float32":
                    continue
                (m, n) = source[2]
                residual = other if dims(other) == [m, n] else self.builder_.emit(relax.op.reshape(other, (m, n)))
                return self.with_epilogue(call, source, "residual", [residual])
            return call

        def fuse_layout(self, call):
            """A transpose of a plain kernel's output split into heads (through reshapes),
            and the reshapes, transposes and same-shape broadcasts after it, as the kernel
            writing its output in that layout: in fp32 those are GEMM epilogues
            (compiler._row_moves_as_elementwise); after an opaque int8 kernel they were
            copies of their own (0.31 of mini/256's 9.6 ms on AVX2)."""
            value = self.lookup_binding(call.args[0]) if isinstance(call.args[0], relax.Var) else None
            if isinstance(value, relax.Call) and value.op.same_as(call_tir_op) and value.args[0].name_hint in self.layouts:
                if call.op.same_as(broadcast_op):  # to its own shape: nothing to do
                    return call.args[0] if dims(call) == dims(value) else call
                base, args, steps = self.layouts[value.args[0].name_hint]
                step = self.layout_step(call, dims(value))
                steps = steps + (step,) if step else None
            elif call.op.same_as(permute_op):
                base, args, steps = self.heads_split(call)
            else:
                return call
            if steps is None:
                return call
            layer, spec, _ = self.kernels[base]
            report[layer]["epilogue"] = "heads"
            key = (base, steps)
            if key not in self.variants:
                fname = f"{base}_heads{len(self.layouts)}"
                func = int8_linear_func(*spec, kernel, None, layout=steps).with_attr("global_symbol", fname)
                self.variants[key] = self.builder_.add_func(func, fname)
                self.layouts[fname] = (base, args, steps)
            return relax.call_tir(self.variants[key], args, relax.TensorType(dims(call), "float32"))

        @staticmethod
        def layout_step(call, before):
            """``call`` (after a layout variant) as one more step, or None: a transpose, or a
            reshape that only adds or drops unit dimensions (a tile stays one box)."""
            if call.op.same_as(permute_op):
                return ("transpose", tuple(int(a) for a in call.attrs.axes))
            after = dims(call)
            if after is None or [d for d in after if d != 1] != [d for d in before if d != 1]:
                return None
            return ("reshape", tuple(after))

        def heads_split(self, call):
            """(kernel name, its args, layout steps) for a transpose of a plain kernel's
            output behind reshapes that split it into heads (``layout_steps``), else
            (None, None, None)."""
            reshapes, source = [], call.args[0]
            while True:
                bound = self.lookup_binding(source) if isinstance(source, relax.Var) else None
                if not (isinstance(bound, relax.Call) and bound.op.same_as(reshape_op)) or dims(bound) is None:
                    break
                reshapes.insert(0, dims(bound))
                source = bound.args[0]
            plain = self.plain_kernel_call(source)
            if plain is None:
                return None, None, None
            m, n = dims(plain) or (None, None)
            steps = layout_steps(m, n, kernel, reshapes, [int(a) for a in call.attrs.axes])
            return plain.args[0].name_hint, list(plain.args[1].fields), steps

        def softmax_behind(self, var):
            """The input of the last-axis softmax that ``var`` is, seen through reshapes and
            same-shape broadcasts (the torch frontend's way to a 3-D batched matmul)."""
            value = self.lookup_binding(var) if isinstance(var, relax.Var) else None
            while isinstance(value, relax.Call) and (value.op.same_as(reshape_op) or value.op.same_as(broadcast_op)):
                if value.op.same_as(broadcast_op) and dims(value) != dims(value.args[0]):
                    return None
                value = self.lookup_binding(value.args[0]) if isinstance(value.args[0], relax.Var) else None
            if not (isinstance(value, relax.Call) and value.op.same_as(softmax_op)):
                return None
            rank = len(value.args[0].ty.shape)
            return value.args[0] if int(value.attrs.axis) in (-1, rank - 1) else None

        def attention_func(self, kind: str, make, *shape):
            key = (kind, shape)
            if key not in self.attention_funcs:
                fname = f"int8_attention_{kind}_{len(self.attention_funcs)}"
                self.attention_funcs[key] = self.builder_.add_func(make(*shape).with_attr("global_symbol", fname), fname)
            return self.attention_funcs[key]

        def rewrite_attention(self, call):
            """``softmax(S) @ V`` -> u8 probabilities and V quantised per column -> int8 GEMM."""
            p, v = call.args
            scores = self.softmax_behind(p)
            if scores is None:
                return call
            pd, vd, sd = dims(p), dims(v), dims(scores)
            if None in (pd, vd, sd) or len(pd) != 3 or len(vd) != 3 or v.ty.dtype != "float32":
                return call
            (bt, m, k), n = pd, vd[2]
            if vd[:2] != [bt, k] or sd[-1] != k or int(np.prod(sd)) != bt * m * k or not supports_attention(m, k, n, kernel):
                return call
            if sd != [bt, m, k]:
                scores = self.builder_.emit(relax.op.reshape(scores, (bt, m, k)))
            f32 = "float32"
            probs = self.builder_.emit(relax.call_tir(self.attention_func("softmax", int8_softmax_func, bt, m, k), [scores],
                                                      [relax.TensorType((bt, m, k), "uint8"), relax.TensorType((bt, m), f32)]))
            lanes = kernel.lanes
            columns = self.builder_.emit(relax.call_tir(
                self.attention_func("columns", lambda *s: int8_columns_func(*s, kernel), bt, k, n), [v],
                [relax.TensorType((bt, n // lanes, k // 4, lanes, 4), "int8"), relax.TensorType((bt, n), f32)]))
            gemm = self.attention_func("gemm", lambda *s: int8_attention_gemm_func(*s, kernel), bt, m, k, n)
            operands = [self.builder_.emit(relax.TupleGetItem(t, i)) for t in (probs, columns) for i in (0, 1)]
            attention_products.append([bt, m, k, n])
            return relax.call_tir(gemm, operands, relax.TensorType((bt, m, n), f32))

        def rewrite_matmul(self, call):
            x, w_arg = call.args
            w = constant_weight_nk(w_arg, self.lookup_binding)
            if w is None and attention:
                return self.rewrite_attention(call)
            if w is None or len(x.ty.shape) != 2 or x.ty.dtype != "float32":
                return call
            name = by_key.get(weight_key(w))
            if name is None:
                return call
            # rows: a number, or symbolic (B * S of a symbolic-length build)
            m, k, n = static_dim(x.ty.shape[0]), int(x.ty.shape[1]), w.shape[0]
            entry = report.setdefault(name, {"K": k, "N": n, "int8": False})
            if name in keep or not supports(m, k, n):
                entry["reason"] = "kept in fp32 (accuracy budget or config)" if name in keep else "shape not tileable by the int8 kernel"
                return call
            scale, zero = activation_params(*layers[name]["range"])
            sw = weight_scales(w, per_channel, qmax=kernel.weight_qmax)
            wq = quantize_weight(w, sw, qmax=kernel.weight_qmax)
            mul = (scale * sw * np.ones(n)).astype(np.float32)
            offset = (-zero * wq.astype(np.int64).sum(axis=1) * mul).astype(np.float32)
            rel = float(np.abs(wq * (sw[:, None] if sw.size > 1 else sw) - w).max() / max(np.abs(w).max(), 1e-12))
            entry.update(int8=True, scale=scale, zero=zero, per_channel=per_channel, weight_bits=kernel.weight_bits,
                         weight_rel_err=round(rel, 5))
            fname = f"int8_linear_{len(self.kernels)}"
            gvar = self.builder_.add_func(int8_linear_func(m, k, n, scale, zero, kernel).with_attr("global_symbol", fname), fname)
            self.kernels[fname] = (name, (m, k, n, scale, zero), offset)
            return self.kernel_call(gvar, [x, relax.const(pack_weight(wq, kernel.lanes)), relax.const(mul)], offset, (m, n))

        @staticmethod
        def kernel_call(gvar, args, offset, shape):
            scalars = [relax.prim_value(v) for v in row_vars(static_dim(shape[0]))]
            return relax.call_tir(gvar, [*args, relax.const(offset), *scalars], relax.TensorType(shape, "float32"))

        def fold_bias(self, call):
            a, b = call.args
            for var, other in ((a, b), (b, a)):
                value = self.plain_kernel_call(var)
                if value is None:
                    continue
                gvar, args = value.args[0], list(value.args[1].fields)
                offset = self.kernels[gvar.name_hint][2]
                bias = constant_value(other, self.lookup_binding)
                if bias is not None and bias.shape == offset.shape and bias.dtype == np.float32:
                    # The bias joins the kernel's per-channel offset; the bias-less call becomes dead code.
                    return self.kernel_call(gvar, args[:3], offset + bias, value.ty.shape)
            return call

    rewriter = Rewriter(mod)
    main = rewriter.visit_expr(mod["main"])
    new_mod = rewriter.builder_.get()
    new_mod["main"] = main
    new_mod = relax.transform.DeadCodeElimination(["main"])(new_mod)
    return new_mod, report, attention_products


def count_instructions(executable, mnemonic: str) -> int:
    """How often ``mnemonic`` occurs in the built code's assembly (0 for a dot-product
    instruction means the int8 path fell back to slower code)."""
    mod = getattr(executable, "mod", executable)
    total = 0
    for lib in [mod, *mod._collect_from_import_tree(lambda m: True)] if hasattr(mod, "_collect_from_import_tree") else [mod]:
        try:
            total += lib.inspect_source("asm").count(mnemonic)
        except Exception:  # noqa: BLE001 - modules without asm (the VM bytecode) have none to count
            continue
    return total


def read_request(quantize_path: str) -> dict:
    """The compile request's quantisation file (``calibrate.prepare_int8``)."""
    import json

    with open(quantize_path, encoding="utf-8") as f:
        return json.load(f)


def request_kernel(payload: dict, target) -> Int8Kernel:
    """The int8 kernel a quantisation request's settings choose for ``target``."""
    return int8_kernel(target, payload["settings"].get("kernel", "auto"))


def rewrite_from_request(mod, payload: dict, kernel: Int8Kernel, in_recurrences=()):
    """The compile child's int8 step: (rewritten module, the artifact's ``quantization``
    record), from the request's quantisation file (``read_request``). ``in_recurrences``:
    the calibrated layers (LSTM inputs) an int8 recurrence already computes itself
    (``lstm.lstm_converter``'s ``fused_inputs``), reported as int8 like the rest."""
    settings = payload["settings"]
    mod, report, products = quantize_linears(mod, payload["layers"], payload["per_channel"], payload["keep_fp32"], kernel,
                                             attention=settings.get("attention", False))
    for layer in in_recurrences:
        report[layer["name"]] = {"K": layer["K"], "N": layer["N"], "int8": True, "scale": layer["scale"], "zero": layer["zero"],
                                 "per_channel": True, "weight_bits": kernel.weight_bits, "in_recurrence": True}
    missing = sorted(set(payload["layers"]) - set(report))
    if missing:  # a calibrated layer the rewrite never met: its weight differs from the model's
        raise ValueError(f"int8: calibrated layers not found in the program: {', '.join(missing[:3])}")
    for name, entry in report.items():
        entry["sensitivity"] = payload["sensitivity"].get(name)
    record = {k: payload[k] for k in ("settings", "calibration", "budget", "keep_fp32")}
    record["layers"] = report
    record["int8_layers"] = sum(e["int8"] for e in report.values())
    record["fused_epilogues"] = sum(bool(e.get("epilogue")) for e in report.values())
    record["int8_attention"] = len(products)  # softmax(S) @ V products, [batch * heads, m, k, n] each
    record["kernel"] = kernel.name
    record["kernel_note"] = kernel.note
    record["weight_bits"] = kernel.weight_bits
    return mod, record
