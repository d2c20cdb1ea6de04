"""Default CPU schedules for TVM (dlight style), so an untuned build is usable.

TVM 0.27's CPU pipeline schedules nothing: every kernel is a naive scalar loop nest
(~90x slower than PyTorch on BERT). dlight ships CPU rules only for GEMV and
reductions; these add the two that matter for a transformer:

- ``Matmul``: register-blocked GEMM (an 8 x 32 fp32 accumulator tile kept in
  vector registers, the weight panel reused across row tiles), epilogues (bias,
  GELU, residual add) fused into the tile's write-back, outer tiles in parallel.
- ``Injective``: elementwise / layout kernels, producers inlined, outer loops in
  parallel, inner loop vectorised.
- ``RowReduction``: LayerNorm / softmax with vectorised (rfactored) row reductions,
  before dlight's scalar ``Reduction``.

Where a rule does less than it tries (a block it cannot inline, a rule that raises),
it says so: ``fell_back`` records the function, the rule and the error with the
``Fallbacks`` collecting the build (the compile child's: details in its log, a one-line
summary as a warning event), or, with none collecting, with this module's logger.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.base import get_extent
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule
from tvm.target import Target
from tvm.target.codegen import llvm_get_cpu_features


# -- fallbacks: where a schedule did less than it tries, and why -------------------

_log = logging.getLogger(__name__)


@dataclass
class _Site:
    expected: bool
    error: str  # the first one
    funcs: list[str] = field(default_factory=list)  # each function once, in order


class Fallbacks:
    """The fallbacks of a compile, per (rule, site): the functions and the first error.

    A function scheduled twice (the tuned and the default build) counts once. Expected
    fallbacks (the design tries something that often fails, e.g. inlining) are only
    counted, at debug level; the others are what the warning summary names."""

    def __init__(self) -> None:
        self.sites: dict[tuple[str, str], _Site] = {}
        self.details: list[str] = []  # one line per unexpected (rule, site, function), with its own error

    def note(self, rule: str, site: str, func: str, error: str, expected: bool) -> None:
        entry = self.sites.setdefault((rule, site), _Site(expected, error))
        if func not in entry.funcs:
            entry.funcs.append(func)
            if not expected:
                self.details.append(f"warning: schedules: {rule} on {func} ({site}): {error}")

    def summary(self, most: int = 3) -> str | None:
        """``schedules: N fallbacks (rule X on funcs a, b (what it did): first error; ...)``
        for the unexpected ones, the first ``most`` sites."""
        parts = [(rule, site, e) for (rule, site), e in self.sites.items() if not e.expected]
        if not parts:
            return None
        n = sum(len(e.funcs) for _, _, e in parts)
        said = "; ".join(f"{rule} on {_names(e.funcs)} ({site}): {e.error}" for rule, site, e in parts[:most])
        more = f"; {len(parts) - most} more in the compile log" if len(parts) > most else ""
        return f"schedules: {n} fallback{'s' if n != 1 else ''} ({said}{more})"

    def counts(self) -> list[str]:
        """One line per expected site: how many functions took it, and the first."""
        return [f"debug: schedules: {rule} on {len(e.funcs)} function{'s' if len(e.funcs) != 1 else ''} ({site}), first {e.funcs[0]}: {e.error}"
                for (rule, site), e in self.sites.items() if e.expected]

    def report(self, reporter, log: Callable[[str], None]) -> None:
        """Every detail and the expected counts to ``log`` (the compile log); the summary of
        the unexpected ones to ``reporter`` as one warning."""
        for line in self.details + self.counts():
            log(line)
        summary = self.summary()
        if summary:
            reporter.log(summary, level="warning")


def _names(funcs: list[str], most: int = 4) -> str:
    return ", ".join(funcs[:most]) + (f" and {len(funcs) - most} more" if len(funcs) > most else "")


_collectors: list[Fallbacks] = []  # the builds under way
_where = {"func": "?", "rule": "?"}  # what is being scheduled now


@contextmanager
def collecting(fallbacks: Fallbacks) -> Iterator[Fallbacks]:
    """Record the fallbacks of the builds inside with ``fallbacks``."""
    _collectors.append(fallbacks)
    try:
        yield fallbacks
    finally:
        _collectors.remove(fallbacks)


@contextmanager
def scheduling(**where: str) -> Iterator[None]:
    """Name the function (``func``) or rule (``rule``) that the fallbacks noted inside are about."""
    before = dict(_where)
    _where.update(where)
    try:
        yield
    finally:
        _where.update(before)


def fell_back(site: str, err: BaseException | str, expected: bool) -> None:
    """Record that the rule now scheduling a function fell back at ``site``, and why."""
    error = f"{type(err).__name__}: {_one_line(str(err))}" if isinstance(err, BaseException) else str(err)
    for fallbacks in _collectors:
        fallbacks.note(_where["rule"], site, _where["func"], error, expected)
    if not _collectors:
        _log.log(logging.DEBUG if expected else logging.WARNING, "schedules: %s on %s (%s): %s", _where["rule"], _where["func"], site, error)


def _one_line(text: str) -> str:
    """The reason in one of TVM's many-line errors (a schedule error prints the whole TIR
    with its diagnostic): its ``Error message:`` line, else its first line."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    reason = next((line for line in lines if line.startswith("Error message:")), lines[0] if lines else "")
    return reason.removeprefix("Error message:").strip()[:200]


def apply_default_schedules(rules: CPUScheduleRule):
    """dlight's ``ApplyDefaultSchedule`` pass, naming each function to the fallbacks its rules note."""
    from tvm.ir.transform import module_pass
    from tvm.s_tir.dlight.base.transform import _get_target, _is_scheduled  # its own helpers (TVM is pinned)

    @module_pass(opt_level=0, name="ApplyDefaultSchedule")
    def apply(mod, _ctx):
        scheduled = {}
        for gv, func in mod.functions_items():
            if isinstance(func, tirx.PrimFunc) and not _is_scheduled(func):
                with scheduling(func=gv.name_hint):
                    sch = rules.apply(func, _get_target(func), False)
                if sch is not None:
                    scheduled[gv] = sch.mod["main"].with_attr("tirx.is_scheduled", True)
        for gv, func in scheduled.items():
            mod[gv] = func
        return mod

    return apply


def vector_bits(target: Target) -> int:
    """Width of the target's vector registers, from its ISA features: 512 with AVX-512,
    256 with AVX, else 128 (SSE, NEON). TVM's ``llvm_get_vector_width`` says 512 for
    every x86 CPU here (haswell, znver3 included), which made AVX2 builds use 16-lane
    tiles that LLVM split into twice the registers there are."""
    if target.kind.name != "llvm":
        return 128
    features = set(llvm_get_cpu_features(target))
    if "avx512f" in features:
        return 512
    if "avx" in features:
        return 256
    return 128


def vector_lanes(target: Target, dtype_bits: int = 32) -> int:
    return max(vector_bits(target) // dtype_bits, 1)


def divides(factor: int, extent) -> bool:
    """Whether ``factor`` divides a loop extent: a number, or a symbolic length the
    analyzer can prove a multiple of it (``8 * t`` by 8, not by 16)."""
    if isinstance(extent, int):
        return extent % factor == 0
    from tvm.sym import Analyzer

    return Analyzer().can_prove_equal(tirx.floormod(extent, factor), 0)


def largest_divisor(n, candidates: tuple[int, ...]) -> int:
    return next((c for c in candidates if divides(c, n)), 1)


def _vectorize_inner(sch: s_tir.Schedule, block, lanes: int) -> None:
    loops = sch.get_loops(block)
    if not loops:
        return
    inner = loops[-1]
    extent = get_extent(sch, inner)
    if not isinstance(extent, int):  # a symbolic length: vectorised where lanes divide it
        if divides(lanes, extent):
            sch.vectorize(sch.split(inner, [None, lanes])[1])
        return
    if extent < 2:
        return
    if extent % lanes == 0 and extent > lanes:
        _, inner = sch.split(inner, [None, lanes])
    elif extent > lanes:
        return
    sch.vectorize(inner)


def _row_lanes(target: Target, extent) -> int:
    """Partial sums (vector lanes) a row reduction over ``extent`` splits into: the
    target's vector where it divides the row, else the widest half or quarter vector
    that does (a softmax over 36 positions: 4 lanes), else 0 (the rule does not apply).
    Without it a length of 36 fell to dlight's scalar reduction: 10.4 ms for mini's
    four softmaxes at 16 x 36 against 0.18 ms at 16 x 32."""
    lanes = vector_lanes(target)
    return next((w for w in (lanes, lanes // 2, lanes // 4) if w >= 2 and divides(w, extent)), 0)


def _parallel_outer(sch: s_tir.Schedule, block, keep_inner: int = 1) -> None:
    loops = sch.get_loops(block)
    outer = loops[: max(len(loops) - keep_inner, 1)]
    if len(outer) > 1:
        outer = [sch.fuse(*outer)]
    sch.parallel(outer[0])


def vector_registers(target: Target) -> int:
    """Architectural vector registers: 32 with AVX-512 (zmm0-31) and on AArch64 (v0-31),
    16 on x86 without AVX-512 (ymm0-15 / xmm0-15)."""
    triple = str(target.attrs.get("mtriple", "") or "")
    if triple.startswith(("aarch64", "arm64")) or vector_bits(target) == 512:
        return 32
    return 16


def widest_gemm_columns(target: Target) -> int:
    """The most output columns a GEMM tile of ``gemm_tile`` spans on ``target``: 4
    vectors (AVX2's 2 x 4 tile). An epilogue that splits columns into groups (attention
    heads) keeps each tile within one group when this divides the group."""
    return 4 * vector_lanes(target)


def gemm_tile(target: Target, m: int, n: int, row_period=None, k=None) -> tuple[int, int]:
    """(rows, columns) of the GEMM's register tile for ``target``: two vectors wide, and
    as many rows as divide ``m`` (and ``row_period``, where the output is reshaped into
    runs of that many rows) and keep the accumulators within the vector registers.

    With 32 registers (AVX-512): 8 x 2 vectors, 16 accumulators, 2 weight loads and 8
    broadcasts per 16 FMAs; measured against 4x4, 2x8, 8x4 and 16x2 vectors, best or
    near-best on every BERT GEMM shape (Zen 5: 205-255 GFLOP/s on 2 cores; on the Xeon
    of 2026-12-07 at M = 128, 311-340 against 183-231 for 12 x 2 and 10 x 2, which spill).

    With 16 (AVX2, SSE): 6 x 2 vectors where 6 divides the rows, else 5 x 2, else 4 x 2.
    Two FMA pipes of latency 4 need 8 independent accumulators just to stay busy, so
    4 x 2 (8) stalls on any late load; 6 x 2 keeps 12 (plus 2 weight vectors and a
    broadcast: 15 registers). haswell code on the AVX-512 Xeon, GFLOP/s on 2 cores
    (``scripts/bench_gemm_tiles.py haswell --shapes ...``, 2026-12-07): M 768 x N 1024 x
    K 256 212-213 against 179 for 4 x 2 (torch restricted to AVX2: 187), 768 x 256 x 1024
    191 against 170 (197), 768 x 256 x 256 204 against 174 (203); 5 x 2 at M 640: 207-209
    against 177 and 188-189 against 169-170. Rows that do not divide M are not used: a
    split with a remainder predicates the tile's FMAs (110-121 GFLOP/s at 640 / 6 and
    128 / 5). An 8 x 2 tile spills: 57-65 GFLOP/s against 137-192 for 4 x 2 on a 2-core
    AVX2 AMD EPYC (2026-12-05; there 2 x 4 vectors was as fast, 3 x 4 and 4 x 4 spilled;
    6 x 2 not measured on AMD).

    Where neither 6 nor 5 divides the rows (batch 1 at 128 or 256), a short reduction
    (K <= 256) takes 2 x 4 vectors: 8 accumulators still, but 2 broadcasts and 4 weight
    vectors per 8 FMAs; 194-195 GFLOP/s against 180-182 for 4 x 2 at M = 128 and 256
    (N 1024 and 256, K 256); at K = 1024 the two tie (170-172)."""
    lanes = vector_lanes(target)
    registers = vector_registers(target)
    candidates = (8, 4, 2) if registers >= 32 else (6, 5, 4, 2)

    def fits(r: int) -> bool:
        return divides(r, m) and (row_period is None or divides(r, row_period))

    rows = next((r for r in candidates if fits(r)), 1)
    wide = widest_gemm_columns(target)
    if registers < 32 and rows < 5 and isinstance(k, int) and k <= 256 and fits(2) and divides(wide, n):
        return 2, wide
    return rows, largest_divisor(n, (2 * lanes, lanes))


def padded_rows(target: Target, m, row_period=None) -> int | None:
    """The rows to pad a GEMM's ``m`` to so that 6 x 2 tiles divide them, or None.

    With 16 registers (AVX2) a tile of 6 rows keeps 12 accumulators and 4 rows only 8
    (``gemm_tile``); batch 1 at 128 or 256 positions has rows neither 6 nor 5 divides.
    Computing 258 rows instead of 256 (the two extra read row 255 again and are never
    written) costs 0.8 % and runs the whole GEMM at 6 x 2: haswell code on the Xeon,
    GFLOP/s (``scripts/bench_gemm_tiles.py haswell``, 2026-12-07): 256 x 256 x 1024 178
    against 162-167, 256 x 1024 x 256 199-200 against 191, 256 x 256 x 256 198 against
    191. Only where the padding is at most 1/32 of the rows (128 -> 132, 256 -> 258;
    not 32 -> 36), the rows are one run of the output's reshape (batch 1: padded rows
    past the end, never between two sentences) and static. ``Matmul`` asks only for 2-D
    GEMMs (see there)."""
    if vector_registers(target) >= 32 or not isinstance(m, int) or row_period not in (None, m):
        return None
    if m % 6 == 0 or m % 5 == 0:
        return None
    padded = -(-m // 6) * 6
    return padded if (padded - m) * 32 <= m else None


class Matmul(CPUScheduleRule):
    """(batched) C[.., i, j] = sum_k A[.., i, k] * B[.., k, j] (+ fused epilogues)."""

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool):
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if infos is None:
            return None
        reductions = [i for i, b in enumerate(infos) if not b.is_injective()]
        if len(reductions) != 1:
            return None
        main_index = reductions[0]
        main = infos[main_index]
        kinds = main.dom_kind()
        if not (kinds.endswith("R") and kinds.count("R") == 1 and len(kinds) >= 3) or len(sch.get(main.block_rv).reads) != 2:
            return None
        # Producers (transposes, reshapes) are computed inside the GEMM's loads.
        if not all(_try_inline(sch, producer.block_rv, "producer not inlined: rule skipped") for producer in reversed(infos[:main_index])):
            return None  # not inlinable: this rule does not apply
        block = main.block_rv
        *batch, i, j, k = sch.get_loops(block)
        # A symbolic extent (a length built as ``8 * t``) is tiled only by what divides it.
        m, n, _ = (get_extent(sch, loop) for loop in (i, j, k))
        lanes = vector_lanes(target)
        # Where the epilogue reshapes the rows ([B*S, N] -> [B, S, N]) the tile's rows
        # divide S too: a row tile that crossed from one row of S into the next would be
        # written as the bounding box of both, reading rows no tile had computed yet.
        split = _reshaped_rows(sch, infos[main_index + 1 :]) if not batch else None
        rows, cols = gemm_tile(target, m, n, split, get_extent(sch, k))
        # Not batched GEMMs (attention's, per sentence and head): padded, mini's 16 x 64,
        # 16 x 112 and 16 x 128 builds read memory nothing had written, and the sentence
        # whose rows begin the second core's share came out wrong in some processes
        # (found with MALLOC_PERTURB_; 2026-12-07). Cause inside the padded batched
        # schedule not found; 2-D GEMMs (batch 1) showed no such read.
        padded = padded_rows(target, m, split) if cols >= lanes and not batch else None
        padded_sch = _pad_rows(sch, block, padded) if padded is not None else None
        if padded_sch is not None:
            sch = padded_sch
            *batch, i, j, k = sch.get_loops(block)
            m = padded
            rows, cols = gemm_tile(target, m, n, None, get_extent(sch, k))
        if cols < lanes and not isinstance(n, int):
            return None  # a symbolic width no vector divides
        if cols < lanes:  # a narrow output (e.g. the label projection)
            # k outside j: n independent accumulators per row instead of one dependent
            # FMA chain per output (latency-bound: 175 us for BERT's 128x256x7 classifier).
            sch.reorder(*batch, i, k, j)
            writeback = sch.cache_write(block, 0, "local")
            sch.reverse_compute_at(writeback, i, preserve_unit_loops=True)
            sch.parallel(sch.fuse(*batch, i) if batch else i)
            sch.unroll(j)
            sch.decompose_reduction(block, k)
            self._fuse_epilogues(sch, infos[main_index + 1 :])
            return sch

        weight = _layout_free_weight(sch, func, block)
        if weight is not None:
            _pack_weight_panels(sch, block, weight, cols)
        i_outer, i_inner = sch.split(i, [None, rows])
        j_outer, j_inner = sch.split(j, [None, cols])
        j_vec_outer, j_vec = sch.split(j_inner, [None, lanes])
        # j outer, i inner: the K x cols weight panel stays in cache across row tiles.
        block_rows = _row_block(m, rows, get_extent(sch, k))
        if block_rows:
            # Over a symbolic number of rows (B * S of a symbolic-length build) every
            # weight panel would stream all of A: blocks of rows, A's block in cache
            # across the panels (the BiLSTM's projection at 64 x 48: 8.0 ms against 6.2
            # for the static build, whose batch loop blocks the rows).
            i_block, i_outer = sch.split(i_outer, [None, block_rows // rows])
            sch.reorder(*batch, i_block, j_outer, i_outer, k, i_inner, j_vec_outer, j_vec)
            batch = [*batch, i_block]
        else:
            sch.reorder(*batch, j_outer, i_outer, k, i_inner, j_vec_outer, j_vec)
        # Accumulate the tile in a local buffer (registers once compacted); the
        # epilogues read it there, under the same tile loop, and write the output once.
        writeback = sch.cache_write(block, 0, "local")
        sch.reverse_compute_at(writeback, i_outer, preserve_unit_loops=True)
        last = writeback
        epilogues = [e.block_rv for e in infos[main_index + 1 :]]
        # Intermediate epilogues (a bias add, a unit reshape) fold into the next one:
        # the tile then writes the final value once, and no tile-local step is left
        # that reads a buffer only a reshape defines.
        epilogues = [e for e in epilogues[:-1] if not _try_inline(sch, e, "epilogue not folded")] + epilogues[-1:]
        if epilogues:
            sch.reverse_compute_at(epilogues[0], i_outer, preserve_unit_loops=True)
            sch.compute_inline(writeback)
            last = epilogues[0]
            for epilogue in epilogues[1:]:
                try:
                    sch.reverse_compute_inline(epilogue)
                except Exception as err:  # noqa: BLE001 - e.g. a broadcast: keep it as a step in the tile
                    # Expected by design (a broadcast cannot be inlined into the tile's write),
                    # and the step stays in the tile: counted, not warned about.
                    fell_back("epilogue kept as a step in the tile", err, expected=True)
                    sch.reverse_compute_at(epilogue, i_outer, preserve_unit_loops=True)
                    last = epilogue
        sch.vectorize(j_vec)
        sch.unroll(i_inner)
        sch.unroll(j_vec_outer)
        sch.parallel(sch.fuse(*batch, j_outer) if batch else j_outer)
        # Last: loop kinds can only be set while the reduction is one block; the
        # init block's copies of the loops keep them.
        sch.decompose_reduction(block, k)
        _vectorize_inner(sch, last, lanes)
        return sch

    @staticmethod
    def _fuse_epilogues(sch, epilogues) -> None:
        for epilogue in epilogues:
            try:
                sch.reverse_compute_inline(epilogue.block_rv)
            except Exception as err:  # noqa: BLE001 - leave it as its own (parallel) loop nest
                # Expected as for the tile's epilogues; a narrow GEMM's output is small.
                fell_back("epilogue left as its own loop nest", err, expected=True)
                _parallel_outer(sch, epilogue.block_rv)


# A row block's share of A (rows x K floats) that stays in L2 across the weight panels.
ROW_BLOCK_BYTES = 256 * 1024


def _pad_rows(sch: s_tir.Schedule, block, rows: int) -> s_tir.Schedule | None:
    """A copy of ``sch`` computing the 2-D GEMM ``block`` over ``rows`` rows (padded), the
    padding rows reading the operand's last row again (a clamped index: no copy, no
    branch in the tile) and written nowhere (the write-back's loop stops at the real
    rows). None where TVM cannot pad it (an operand indexed by an expression)."""
    trial = sch.copy()
    try:
        padding = [1] * len(trial.get(block).iter_vars)
        padding[0] = rows
        trial.pad_einsum(block, padding)
        for producer in trial.get_producers(block):  # the padded operand: read in place, clamped
            _clamp_padded_read(trial, producer)
            trial.compute_inline(producer)
        for consumer in trial.get_consumers(block):  # the copy back to the real rows
            trial.compute_inline(consumer)
    except Exception as err:  # noqa: BLE001 - TVM raises many kinds
        fell_back("rows not padded", err, expected=True)
        return None
    return trial


def _clamp_padded_read(sch: s_tir.Schedule, block) -> None:
    """``pad_einsum``'s producer writes ``if i < m then A[i] else 0``; inlined, that is a
    branch on every broadcast of the tile (95-106 GFLOP/s against 178-200). Rewritten as
    ``A[min(i, m - 1)]``: the padding rows repeat the last row's sums, in bounds."""
    from tvm.s_tir import SBlock

    stmt = sch.get(block)
    store = stmt.body
    load = next(arg for arg in store.value.args if hasattr(arg, "source"))  # the if_then_else's A[i]
    indices = [tirx.Min(index, extent - 1) if int(padded) > int(extent) else index
               for index, extent, padded in zip(load.indices, load.source.shape, store.buffer.shape)]
    clamped = tirx.BufferStore(store.buffer, tirx.BufferLoad(load.source, indices), store.indices)
    new = SBlock(stmt.iter_vars, stmt.reads, stmt.writes, stmt.name_hint, clamped, stmt.init,
                 stmt.alloc_buffers, stmt.match_buffers, stmt.annotations)
    sch.state.replace(sch.get_sref(block), new, {stmt: new})


def _row_block(m, rows: int, k) -> int | None:
    """Rows per block for a GEMM over a symbolic number of rows ``m`` (a multiple of a
    constant, such as 64 * s), or None: static row counts keep the plain order."""
    if isinstance(m, int) or not isinstance(k, int):
        return None
    return next((b for b in (256, 128, 64, 32) if b % rows == 0 and b * k * 4 <= ROW_BLOCK_BYTES and divides(b, m)), None)


def _reshaped_rows(sch: s_tir.Schedule, epilogues) -> int | None:
    """The innermost row extent (S of [B, S, N]) of a reshape among a 2-D GEMM's
    epilogues that splits its rows, where it is a constant."""
    for info in epilogues:
        if _is_reshape(sch, info.block_rv):
            shape = sch.get(info.block_rv).writes[0].source.shape
            if len(shape) > 2 and isinstance(shape[-2], tirx.IntImm):
                return int(shape[-2])
    return None


def _is_reshape(sch: s_tir.Schedule, block) -> bool:
    return sch.get(block).name_hint.startswith("T_reshape")


def _try_inline(sch: s_tir.Schedule, block, site: str = "block not inlined") -> bool:
    """``compute_inline`` where TVM allows it; False leaves the block as a step of its own.
    Trying is the design (whether a block inlines is what TVM's check tells), so a
    failure is an expected fallback: counted in the log, not warned about."""
    try:
        sch.compute_inline(block)
    except Exception as err:  # noqa: BLE001 - TVM raises many kinds
        fell_back(site, err, expected=True)
        return False
    return True


# Marks a block whose only job is to repack a constant; relax's SplitLayoutRewritePreproc
# moves it out of the kernel and FoldConstant then runs it once, at compile time.
LAYOUT_REWRITE_PREPROC = "meta_schedule.layout_rewrite_preproc"


def _layout_free_weight(sch: s_tir.Schedule, func: tirx.PrimFunc, block) -> tuple[int, int] | None:
    """``(read index, axis of j)`` of the GEMM operand that is a 2-D constant (a
    weight: relax's AttachAttrLayoutFreeBuffers lists them), else None."""
    free = (func.attrs or {}).get("layout_free_buffers")
    if not free:
        return None
    weights = [func.params[int(p)] for p in free]  # a param *is* its buffer in TVM 0.27
    stmt = sch.get(block)
    *_, j_var, k_var = (iv.var for iv in stmt.iter_vars)
    for index, region in enumerate(stmt.reads):
        if len(region.region) != 2 or not any(region.source.same_as(w) for w in weights):
            continue
        mins = [r.min for r in region.region]
        for j_axis in (0, 1):
            if mins[j_axis].same_as(j_var) and mins[1 - j_axis].same_as(k_var):
                return index, j_axis
    return None


def _pack_weight_panels(sch: s_tir.Schedule, block, weight: tuple[int, int], cols: int) -> None:
    """Store the weight as [N / cols, K, cols] panels: the tile's K x cols slice is
    then contiguous. Read in place from a [K, N] matrix each row of the slice is N
    floats apart; for N = 1024 or 3072 those rows alias in the cache (the FFN GEMMs
    ran at 340-400 GFLOP/s instead of 520 here)."""
    index, j_axis = weight
    cached = sch.cache_read(block, index, "global")
    sch.annotate(cached, LAYOUT_REWRITE_PREPROC, True)
    if j_axis == 1:
        panels = lambda k, j: (j // cols, k, j % cols)  # noqa: E731
    else:
        panels = lambda j, k: (j // cols, k, j % cols)  # noqa: E731
    sch.transform_layout(block, ("read", index), panels)


class Injective(CPUScheduleRule):
    """Elementwise, broadcast, gather and layout kernels."""

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool):
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if infos is None or not all(b.is_injective() for b in infos):
            return None
        for producer in reversed(infos[:-1]):
            _try_inline(sch, producer.block_rv, "producer not inlined")  # one that stays just runs serially
        last = infos[-1].block_rv
        loops = sch.get_loops(last)
        if not loops:
            return sch
        if len(loops) > 1:
            _vectorize_inner(sch, last, vector_lanes(target))
            loops = sch.get_loops(last)
            vectorized = any(sch.get(loop).kind == tirx.ForKind.VECTORIZED for loop in loops)
            outer = loops[:-1] if vectorized else loops
            if vectorized and len(outer) > 2 and _many_rows(sch, outer[:-1]):
                # The vectors of a row in a serial loop: what the row's elements share (a
                # lookup's row index, computed from the ids) is computed once a row, not
                # once a vector (a BiLSTM's six embedding lookups and their sum in one
                # kernel at 64x40: 0.44 ms against 1.17; AVX-512 Xeon)
                outer = outer[:-1]
            sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])
        else:
            sch.parallel(loops[0])
        return sch


def _many_rows(sch: s_tir.Schedule, loops) -> bool:
    """Whether ``loops`` run enough iterations to keep every core busy on their own
    (a symbolic extent is taken to: B * S rows)."""
    total = 1
    for loop in loops:
        extent = get_extent(sch, loop)
        if not isinstance(extent, int):
            return True
        total *= extent
    return total >= 64


class FirstThatWorks(CPUScheduleRule):
    """Tries rules in order; one that raises counts as not applying (the kernel
    then falls to the next rule, or stays unscheduled) instead of failing the build.
    That is never the design (a rule that does not apply returns None): each is a
    warning, with the function, the rule and the error."""

    def __init__(self, *rules) -> None:
        self.rules = rules

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool):
        for rule in self.rules:
            with scheduling(rule=type(rule).__name__):
                try:
                    sch = rule.apply(func, target, tunable)
                except Exception as err:  # noqa: BLE001 - TVM raises many kinds
                    fell_back("raised: next rule tried", err, expected=False)
                    continue
            if sch is not None:
                return sch
        return None


class RowReduction(CPUScheduleRule):
    """Row-wise reductions with an elementwise tail (LayerNorm, softmax), with the
    reductions vectorised.

    dlight's CPU ``Reduction`` keeps one scalar accumulator per row: a dependent add
    chain (a 128x256 LayerNorm took 52 us, 9 of them ~15 % of BERT-mini at int8).
    Here each reduction is split into ``lanes`` partial sums (rfactor) that run as
    one vector, then folded; rows run in parallel and the tail is vectorised."""

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool):
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if infos is None or len(infos) < 2 or not infos[-1].is_injective():
            return None
        if len(infos) > 2 and infos[-2].is_injective() and _is_reshape(sch, infos[-1].block_rv):
            # A reshape fused after the row op ([B, S, H] -> [B*S, H]) writes the output from
            # the step before it, in the row loops the reductions share.
            try:
                sch.reverse_compute_inline(infos[-1].block_rv)
            except Exception as err:  # noqa: BLE001 - TVM raises many kinds
                fell_back("reshape not folded into the step before it", err, expected=False)
            infos = normalize_prim_func(sch)
        # Elementwise steps with one consumer fold into it (softmax's x - max into its
        # exp; its divide, broadcast and reshape into one write): each would otherwise
        # be one more vector pass over the row, through memory.
        for b in infos[:-1]:
            if b.is_injective() and len(sch.get_consumers(b.block_rv)) == 1:
                _try_inline(sch, b.block_rv, "step not folded into its consumer")
        infos = normalize_prim_func(sch)
        reductions = [b for b in infos if not b.is_injective()]
        kinds = [b.dom_kind() for b in infos]
        rows = min(len(k) - len(k.lstrip("S")) for k in kinds)
        if not reductions or rows == 0:
            return None
        lanes = _row_lanes(target, get_extent(sch, sch.get_loops(reductions[0].block_rv)[-1]))
        for b in reductions:
            extent = get_extent(sch, sch.get_loops(b.block_rv)[-1])
            if b.dom_kind() != "S" * rows + "R" or lanes < 2 or not divides(lanes, extent) or (isinstance(extent, int) and extent <= lanes):
                return None
        partials = []
        for b in reductions:  # before compute_at: rfactor needs the block alone in its loop nest
            _, inner = sch.split(sch.get_loops(b.block_rv)[-1], [None, lanes])
            partials.append(sch.rfactor(inner, factor_axis=rows))
        last = infos[-1].block_rv
        loops = sch.get_loops(last)
        spatial = sch.fuse(*loops[:rows]) if rows > 1 else loops[0]
        sch.parallel(spatial)
        _vectorize_inner(sch, last, lanes)
        # Producers (each partial sum just before its fold) under the row loop, consumers first.
        partial_of = dict(zip((id(b) for b in reductions), partials))
        producers = [rv for b in infos[:-1] for rv in ((partial_of[id(b)], b.block_rv) if id(b) in partial_of else (b.block_rv,))]
        for block in reversed(producers):
            sch.compute_at(block, spatial, preserve_unit_loops=True)
        for rf in partials:  # [.., k_outer, lane]: the lanes are independent, so they vectorise
            k_outer, lane = sch.get_loops(rf)[-2:]
            if not isinstance(get_extent(sch, lane), int):
                # A symbolic row (8 * t): compute_at put k_outer (t) inside the lanes.
                k_outer, lane = lane, next(loop for loop in reversed(sch.get_loops(rf)) if get_extent(sch, loop) == lanes)
                sch.reorder(k_outer, lane)
            sch.unroll(lane)  # independent lanes: LLVM turns them into one vector
            sch.decompose_reduction(rf, k_outer)
        for b in infos[:-1]:
            if b.is_injective():
                _vectorize_inner(sch, b.block_rv, lanes)
        return sch
