"""The default CPU schedules: a linear layer's weight is repacked once, at compile time."""

import pytest
import numpy as np
import torch

from pipelines.compile.compiler import cpu_pipeline, host_target


def _linear_module(in_features=64, out_features=96):
    import tvm
    from tvm.relax.frontend.torch import from_exported_program

    torch.manual_seed(0)
    layer = torch.nn.Linear(in_features, out_features).eval()
    x = torch.randn(1, 16, in_features)
    program = torch.export.export(layer, (x,))
    return layer, x, from_exported_program(program, keep_params_as_input=False), tvm


def test_linear_weight_is_packed_into_panels_and_still_correct():
    layer, x, mod, tvm = _linear_module()
    target = tvm.target.Target(host_target())
    lowered = cpu_pipeline(target)(mod)
    kernels = [gv.name_hint for gv, f in lowered.functions.items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert any(name.endswith("_prepacked") for name in kernels), kernels
    # The repacking ran at compile time: main holds the weight as [N / C, K, C] panels, C
    # the tile's columns (32 with AVX-512; with AVX2 32 or 16, by the rows and K).
    from pipelines.compile.schedules import gemm_tile

    cols = gemm_tile(target, x.shape[1], 96, None, 64)[1]  # the GEMM's rows and reduction: 16, 64
    shapes = set()
    tvm.relax.analysis.post_order_visit(
        lowered["main"], lambda e: isinstance(e, tvm.ir.Constant) and hasattr(e.value, "numpy") and shapes.add(e.value.numpy().shape)
    )
    assert (96 // cols, 64, cols) in shapes and (64, 96) not in shapes
    executable = tvm.compile(mod, target=target, relax_pipeline=cpu_pipeline(target))
    vm = tvm.relax.VirtualMachine(executable, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x.numpy()))
    out = out[0] if not hasattr(out, "numpy") else out
    np.testing.assert_allclose(out.numpy(), layer(x).detach().numpy(), rtol=1e-5, atol=1e-5)


class _FeedForward(torch.nn.Module):
    """gelu(linear(x)) + x on [1, S, H]: the torch frontend wraps the linear in reshapes."""

    def __init__(self, hidden=64) -> None:
        super().__init__()
        self.up = torch.nn.Linear(hidden, hidden)

    def forward(self, x):
        return torch.nn.functional.gelu(self.up(x)) + x


@pytest.mark.parametrize("mcpu", [None, "haswell"])
@pytest.mark.parametrize("batch,length", [(1, 16), (4, 16), (6, 5), (4, 25), (4, 12), (2, 30)])
def test_bias_gelu_and_residual_fuse_into_the_gemm_across_reshapes(batch, length, mcpu):
    """At batch 1 the reshapes around the 2-D matmul add or drop a unit dimension; at
    batch 4 they merge [4, 16] into 64 rows. Either way one kernel does it all. At 6 x 5
    and 4 x 25 a row tile of 2 or 4 would cross from one sentence into the next, whose
    rows it would write from a tile not computed yet: the tile divides the length. For
    ``haswell`` (AVX2 code, runs on any x86 host here) the tile takes 5 or 6 rows at
    lengths they divide (6 x 5, 4 x 25, 4 x 12, 2 x 30)."""
    import tvm
    from tvm.relax.frontend.torch import from_exported_program

    from pipelines.compile.compiler import fuse

    torch.manual_seed(0)
    block = _FeedForward().eval()
    x = torch.randn(batch, length, 64)
    mod = from_exported_program(torch.export.export(block, (x,)), keep_params_as_input=False)
    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu, "num-cores": 2} if mcpu else host_target())
    kernels = [gv.name_hint for gv, f in fuse(mod, target).functions.items() if isinstance(f, tvm.tirx.PrimFunc)]
    [gemm] = [name for name in kernels if "matmul" in name]
    assert "gelu" in gemm and gemm.count("add") == 2, kernels  # bias and residual, one kernel
    executable = tvm.compile(mod, target=target, relax_pipeline=cpu_pipeline(target))
    vm = tvm.relax.VirtualMachine(executable, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x.numpy()))
    out = out[0] if not hasattr(out, "numpy") else out
    np.testing.assert_allclose(out.numpy(), block(x).detach().numpy(), rtol=1e-5, atol=1e-5)


class _HeadSplit(torch.nn.Module):
    """A projection split into attention heads: linear -> [B, S, H, D] -> [B, H, S, D]."""

    def __init__(self, heads: int, width: int) -> None:
        super().__init__()
        self.heads, self.width = heads, width
        self.proj = torch.nn.Linear(64, heads * width)

    def forward(self, x):
        b, s, _ = x.shape
        return self.proj(x).reshape(b, s, self.heads, self.width).transpose(1, 2)


@pytest.mark.parametrize("mcpu", [None, "haswell"])
@pytest.mark.parametrize("batch, width, fused", [(1, 64, True), (2, 64, True), (1, 48, False)])
def test_the_attention_heads_split_is_written_by_the_projection_s_tile(batch, width, fused, mcpu):
    """With D a multiple of the widest GEMM tile (4 vectors: AVX-512 64, AVX2 32) no tile
    straddles two heads, so the reshape and the transpose that keeps D innermost run in
    the GEMM's epilogue (mini at 1 x 128: 3.8-3.9 ms against 4.0-4.1); D = 48 keeps its
    own kernel."""
    import tvm
    from tvm.relax.frontend.torch import from_exported_program

    from pipelines.compile.compiler import fuse

    torch.manual_seed(0)
    block = _HeadSplit(4, width).eval()
    x = torch.randn(batch, 16, 64)
    mod = from_exported_program(torch.export.export(block, (x,)), keep_params_as_input=False)
    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu, "num-cores": 2} if mcpu else host_target())
    kernels = [gv.name_hint for gv, f in fuse(mod, target).functions.items() if isinstance(f, tvm.tirx.PrimFunc)]
    [gemm] = [name for name in kernels if "matmul" in name]
    copies = [name for name in kernels if "transpose" in name and name != gemm]
    assert ("transpose" in gemm) == fused and (not copies) == fused, kernels
    executable = tvm.compile(mod, target=target, relax_pipeline=cpu_pipeline(target))
    vm = tvm.relax.VirtualMachine(executable, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x.numpy()))
    out = out[0] if not hasattr(out, "numpy") else out
    np.testing.assert_allclose(out.numpy(), block(x).detach().numpy(), rtol=1e-5, atol=1e-5)


def test_only_a_transpose_that_keeps_the_innermost_axis_counts_as_moving_rows():
    import tvm
    from tvm.relax.frontend.torch import from_exported_program

    from pipelines.compile.compiler import _keeps_innermost_axis

    class Transposes(torch.nn.Module):
        def forward(self, x):
            heads = x.reshape(1, 8, 4, 64)
            return heads.transpose(1, 2), heads.transpose(2, 3), x.transpose(1, 2)

    mod = from_exported_program(torch.export.export(Transposes(), (torch.randn(1, 8, 256),)), keep_params_as_input=False)
    mod = tvm.relax.transform.LegalizeOps()(mod)
    kept = {gv.name_hint: _keeps_innermost_axis(f) for gv, f in mod.functions_items() if gv.name_hint.startswith("transpose")}
    assert sorted(kept.values()) == [False, False, True], kept


class _NormThenLinear(torch.nn.Module):
    """linear(layer_norm(x)) on [B, S, H]: the norm's output is reshaped to [B*S, H]."""

    def __init__(self, hidden=64) -> None:
        super().__init__()
        self.norm = torch.nn.LayerNorm(hidden)
        self.proj = torch.nn.Linear(hidden, hidden)

    def forward(self, x):
        return self.proj(self.norm(x))


def test_a_row_reduction_with_a_reshape_after_it_keeps_its_vector_schedule():
    import tvm
    from tvm.relax.frontend.torch import from_exported_program

    from pipelines.compile import schedules

    torch.manual_seed(0)
    block = _NormThenLinear().eval()
    x = torch.randn(4, 16, 64)
    mod = from_exported_program(torch.export.export(block, (x,)), keep_params_as_input=False)
    target = tvm.target.Target(host_target())
    with schedules.collecting(schedules.Fallbacks()) as fallbacks:
        executable = tvm.compile(mod, target=target, relax_pipeline=cpu_pipeline(target))
    assert fallbacks.summary() is None  # RowReduction took the norm with its reshape (else: a warning)
    vm = tvm.relax.VirtualMachine(executable, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x.numpy()))
    out = out[0] if not hasattr(out, "numpy") else out
    np.testing.assert_allclose(out.numpy(), block(x).detach().numpy(), rtol=1e-4, atol=1e-4)


class _SymbolicAttention(torch.nn.Module):
    """softmax(q q^T) q over a length given as [B, t, 16 * 16] (16 * t positions of 16
    features): a batched matmul with symbolic rows and columns, a softmax over a
    symbolic row, and a matmul with a symbolic reduction. 16 positions a step: the
    column tile is a vector (8 lanes with AVX2, 16 with AVX-512) and must divide them."""

    def forward(self, x):
        q = x.reshape(x.shape[0], -1, 16)
        return torch.softmax(q @ q.transpose(1, 2), dim=-1) @ q


def test_symbolic_lengths_that_the_tiles_divide_are_scheduled():
    import tvm
    from tvm.relax.frontend.torch import from_exported_program

    from pipelines.compile import schedules
    from pipelines.compile.compiler import default_rules, fuse

    t = torch.export.Dim("t", min=1, max=16)
    example = torch.randn(2, 4, 16 * 16)  # [B, t, 16 positions x 16 features]
    program = torch.export.export(_SymbolicAttention().eval(), (example,), dynamic_shapes=({1: t},))
    mod = from_exported_program(program, keep_params_as_input=False)
    target = tvm.target.Target(host_target())
    with target:
        scheduled = schedules.apply_default_schedules(default_rules())(fuse(mod, target))
    kernels = {gv.name_hint: f for gv, f in scheduled.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}
    heavy = [name for name in kernels if "matmul" in name or "softmax" in name]
    assert len(heavy) >= 3, list(kernels)
    for name in heavy:  # tiled and vectorised, not the naive loop nest
        assert "T.vectorized" in kernels[name].script(), name
    with schedules.collecting(schedules.Fallbacks()) as fallbacks:
        executable = tvm.compile(mod, target=target, relax_pipeline=cpu_pipeline(target))
    assert fallbacks.summary() is None
    vm = tvm.relax.VirtualMachine(executable, tvm.cpu())
    for length in (3, 5):  # one executable, any length
        x = torch.randn(2, length, 16 * 16)
        out = vm["main"](tvm.runtime.tensor(x.numpy()))
        out = out[0] if not hasattr(out, "numpy") else out
        np.testing.assert_allclose(out.numpy(), _SymbolicAttention()(x).numpy(), rtol=1e-4, atol=1e-4)


class _Softmax(torch.nn.Module):
    def forward(self, x):
        return torch.softmax(x, dim=-1)


@pytest.mark.parametrize("length, rfactored", [(36, True), (44, True), (30, True), (7, False)])
def test_a_softmax_over_a_row_no_vector_divides_keeps_vectorised_partial_sums(length, rfactored):
    """Attention's softmax over 36 positions (a bucket length not a multiple of AVX2's 8
    lanes): partial sums of 4 lanes, not dlight's scalar reduction (10.4 ms against 0.18
    for mini's four softmaxes at 16 x 36 and 16 x 32). 30 = 2 x 15 takes 2 lanes; 7 none."""
    import tvm
    from tvm.relax.frontend.torch import from_exported_program

    from pipelines.compile import schedules
    from pipelines.compile.compiler import default_rules, fuse

    x = torch.randn(2, 4, length, length)
    mod = from_exported_program(torch.export.export(_Softmax(), (x,)), keep_params_as_input=False)
    target = tvm.target.Target({"kind": "llvm", "mcpu": "haswell", "num-cores": 2})
    with target:
        scheduled = schedules.apply_default_schedules(default_rules())(fuse(mod, target))
    [kernel] = [f for gv, f in scheduled.functions_items() if "softmax" in gv.name_hint]
    assert ("_rf" in kernel.script()) == rfactored
    executable = tvm.compile(mod, target=target, relax_pipeline=cpu_pipeline(target))
    vm = tvm.relax.VirtualMachine(executable, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x.numpy()))
    out = out[0] if not hasattr(out, "numpy") else out
    np.testing.assert_allclose(out.numpy(), torch.softmax(x, -1).numpy(), rtol=1e-5, atol=1e-6)


def test_host_target_adds_the_extensions_the_cpu_reports_and_llvm_s_guess_lacks(tmp_path):
    import tvm
    from tvm.target.codegen import llvm_get_cpu_features

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_fp16 amx_tile amx_int8\n")
    target = host_target(str(cpuinfo))
    features = set(llvm_get_cpu_features(tvm.target.Target(target)))
    assert {"avx512fp16", "amx-tile", "amx-int8"} <= features
    # only what the named CPU lacks is added, each once, in LLVM's spelling
    assert all(f.startswith("+") and f[1:] in {"avx512fp16", "amx-tile", "amx-int8"} for f in target.get("mattr", []))

    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2\n")
    assert "mattr" not in host_target(str(cpuinfo))
    assert "mattr" not in host_target(str(tmp_path / "missing"))  # not Linux: LLVM's guess alone


# -- fallbacks: every one says where and why -----------------------------------------


def _two_outputs():
    """b = a + 1 and c = b * 2, both outputs: b cannot be inlined into c (an output block)."""
    import tvm
    from tvm import te

    a = te.placeholder((16, 64), name="a")
    b = te.compute((16, 64), lambda i, j: a[i, j] + 1.0, name="b")
    c = te.compute((16, 64), lambda i, j: b[i, j] * 2.0, name="c")
    return tvm, te.create_prim_func([a, b, c])


def _inlines_its_output():
    """A rule that asks TVM for what it refuses: raises a real ScheduleError."""
    from tvm import s_tir
    from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

    class InlinesItsOutput(CPUScheduleRule):
        def apply(self, func, target, _tunable):
            sch = s_tir.Schedule(func)
            sch.compute_inline(sch.get_sblock("c"))
            return sch

    return InlinesItsOutput()


def _schedule(rules, name="add_then_double"):
    """The default-schedule pass over one function, its fallbacks reported: (module, events, log lines)."""
    from pipelines.compile.schedules import Fallbacks, apply_default_schedules, collecting
    from pipelines.events import Reporter

    tvm, func = _two_outputs()
    fallbacks, events, log = Fallbacks(), [], []
    with collecting(fallbacks), tvm.target.Target(host_target()):
        mod = apply_default_schedules(rules)(tvm.IRModule({name: func}))
    fallbacks.report(Reporter(events.append, stage="compile"), log.append)
    return mod, events, log


def test_an_expected_fallback_is_counted_in_the_log_and_not_warned_about():
    from pipelines.compile.compiler import default_rules

    mod, events, log = _schedule(default_rules())
    assert mod["add_then_double"].attrs["tirx.is_scheduled"]  # Injective scheduled it all the same
    assert events == []  # trying to inline is the design: no warning
    [line] = [line for line in log if "Injective" in line]
    assert line.startswith("debug: schedules: Injective on 1 function (producer not inlined), first add_then_double: ")
    assert "ScheduleError" in line and "output block" in line and len(line.splitlines()) == 1


def test_a_rule_that_raises_is_a_warning_naming_the_rule_the_function_and_the_error():
    from pipelines.compile.schedules import FirstThatWorks, Injective

    mod, events, log = _schedule(FirstThatWorks(_inlines_its_output(), Injective()))
    assert mod["add_then_double"].attrs["tirx.is_scheduled"]  # the next rule took it
    [warning] = [e for e in events if e.kind == "log"]
    assert warning.level == "warning"
    assert warning.message.startswith("schedules: 1 fallback (InlinesItsOutput on add_then_double (raised: next rule tried): ScheduleError: ")
    assert "output block" in warning.message and len(warning.message.splitlines()) == 1
    assert any(line.startswith("warning: schedules: InlinesItsOutput on add_then_double") for line in log)


def test_fallbacks_are_aggregated_per_rule_with_the_first_error():
    from pipelines.compile.schedules import Fallbacks

    fallbacks = Fallbacks()
    for name in ("f1", "f2", "f1", "f3", "f4", "f5"):  # f1 twice: the tuned and the default build
        fallbacks.note("Matmul", "raised: next rule tried", name, f"ScheduleError: {name}", expected=False)
    fallbacks.note("Injective", "producer not inlined", "g", "ScheduleError: output block", expected=True)
    assert fallbacks.summary() == (
        "schedules: 5 fallbacks (Matmul on f1, f2, f3, f4 and 1 more (raised: next rule tried): ScheduleError: f1)"
    )
    assert len(fallbacks.details) == 5 and fallbacks.counts() == [
        "debug: schedules: Injective on 1 function (producer not inlined), first g: ScheduleError: output block"
    ]


def test_tuning_says_why_a_kernel_has_no_default_schedule():
    """A kernel whose default schedule fails, or fails to build, is tuned without it: said, by kernel."""
    from types import SimpleNamespace

    from pipelines.compile.compiler import default_rules
    from pipelines.compile.schedules import Fallbacks, collecting
    from pipelines.compile.tuning import default_schedule, seed_default_schedules
    from pipelines.events import Reporter

    tvm, func = _two_outputs()
    task = SimpleNamespace(task_name="fused_add_multiply", dispatched=[tvm.IRModule({"main": func})], target=tvm.target.Target(host_target()))
    fallbacks = Fallbacks()
    with collecting(fallbacks):
        assert default_schedule(task, _inlines_its_output()) is None
        sch = default_schedule(task, default_rules())

        class Database:
            def commit_workload(self, mod):
                return mod

            def get_top_k(self, workload, k):
                return []

        broken_build = SimpleNamespace(build=lambda inputs: [SimpleNamespace(error_msg="Traceback ...\nLLVM ERROR: Cannot select", artifact_path=None)])
        runner = SimpleNamespace(run=lambda inputs: [])
        assert seed_default_schedules([task], [sch], Database(), broken_build, runner, Reporter()) == 0
    summary = fallbacks.summary()
    assert "InlinesItsOutput on fused_add_multiply (failed: tuned without a default schedule): ScheduleError: " in summary
    assert "default schedule on fused_add_multiply (not built, so not in the tuning database): LLVM ERROR: Cannot select" in summary


@pytest.mark.parametrize(
    "target, lanes, tile",
    [
        ({"kind": "llvm", "mcpu": "znver4"}, 16, (8, 32)),  # AVX-512: 32 zmm, 16 accumulators
        ({"kind": "llvm", "mcpu": "haswell"}, 8, (4, 16)),  # AVX2: 16 ymm, 8 accumulators
        ({"kind": "llvm", "mcpu": "znver3"}, 8, (4, 16)),
        ({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}, 4, (8, 8)),  # NEON: 32 q registers
        ({"kind": "llvm"}, 4, (4, 8)),  # plain x86-64: SSE2
    ],
)
def test_vector_width_and_gemm_tile_follow_the_targets_isa(target, lanes, tile):
    """TVM's own vector width says 512 bits for AVX2 CPUs; an AVX2 build with 16-lane
    tiles spilled its accumulators and ran at a third of the speed."""
    import tvm

    from pipelines.compile.schedules import gemm_tile, vector_lanes

    t = tvm.target.Target(target)
    assert vector_lanes(t) == lanes
    assert gemm_tile(t, 2048, 512) == tile
    # rows that divide M: six with 16 registers (4 x 2 at 2048 rows), two with 32
    assert gemm_tile(t, 6, 24)[0] == (6 if tile[0] == 4 else 2)
    assert gemm_tile(t, 7, 24)[0] == 1


@pytest.mark.parametrize(
    "m, period, rows, avx512_rows",
    [(768, None, 6, 8), (640, None, 5, 8), (2048, None, 4, 8), (768, 40, 4, 8), (960, 40, 5, 8), (960, 24, 6, 8), (26, None, 2, 2), (36, 12, 6, 4)],
)
def test_avx2_gemm_tile_keeps_twelve_accumulators_where_the_rows_allow(m, period, rows, avx512_rows):
    """16 vector registers: 6 x 2 vectors (12 accumulators) where 6 divides the rows and
    the reshaped run of rows, else 5 x 2, else 4 x 2; AVX-512 keeps 8 x 2."""
    import tvm

    from pipelines.compile.schedules import gemm_tile

    assert gemm_tile(tvm.target.Target({"kind": "llvm", "mcpu": "haswell"}), m, 1024, period) == (rows, 16)
    # a short reduction where neither 6 nor 5 divides: 2 x 4 vectors
    short = gemm_tile(tvm.target.Target({"kind": "llvm", "mcpu": "haswell"}), m, 1024, period, 256)
    assert short == ((rows, 16) if rows >= 5 else (2, 32))
    assert gemm_tile(tvm.target.Target({"kind": "llvm", "mcpu": "haswell"}), m, 1024, period, 1024) == (rows, 16)
    assert gemm_tile(tvm.target.Target({"kind": "llvm", "mcpu": "znver4"}), m, 1024, period) == (avx512_rows, 32)


class _LabelHead(torch.nn.Module):
    """A 7-label head plus a residual score: narrower than one vector of outputs. Its
    weight is half of a wider layer's, as the BiLSTM applies its head to each direction;
    ``batched``: as a batched matmul with the weight broadcast over the batch (the form
    the BiLSTM's program takes)."""

    def __init__(self, batched: bool) -> None:
        super().__init__()
        self.head = torch.nn.Linear(128, 7)
        self.batched = batched

    def forward(self, x, scores):
        w = self.head.weight[:, :64]
        if self.batched:
            return torch.bmm(x, w.t().expand(x.shape[0], -1, -1)) + self.head.bias + scores
        return torch.nn.functional.linear(x, w, self.head.bias) + scores


@pytest.mark.parametrize("batched", [False, True])
def test_a_narrow_head_is_widened_to_a_vector_and_sliced_back(batched):
    """Its weight is padded with zero columns to the vector width, so the GEMM takes the
    vector tiles (as scalar FMA chains it cost 4.0 ms against 0.26 at 64x48x256, AVX-512);
    the slice and the adds after it stay in the same kernel; the scores are torch's."""
    import tvm
    from tvm.relax.frontend.torch import from_exported_program

    from pipelines.compile.compiler import fuse

    torch.manual_seed(0)
    head = _LabelHead(batched).eval()
    x, scores = torch.randn(6, 5, 64), torch.randn(6, 5, 7)
    mod = from_exported_program(torch.export.export(head, (x, scores)), keep_params_as_input=False)
    target = tvm.target.Target(host_target())
    kernels = [gv.name_hint for gv, f in fuse(mod, target).functions.items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert any("matmul_strided_slice" in name and "add" in name for name in kernels), kernels
    executable = tvm.compile(mod, target=target, relax_pipeline=cpu_pipeline(target))
    vm = tvm.relax.VirtualMachine(executable, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x.numpy()), tvm.runtime.tensor(scores.numpy()))
    out = out[0] if not hasattr(out, "numpy") else out
    assert out.numpy().shape == (6, 5, 7)
    np.testing.assert_allclose(out.numpy(), head(x, scores).detach().numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "m, period, padded",
    [(256, None, 258), (256, 256, 258), (128, None, 132), (64, None, 66), (2048, 256, None), (768, None, None), (640, None, None), (32, None, None)],
)
def test_avx2_rows_neither_6_nor_5_divides_are_padded_where_it_costs_little(m, period, padded):
    """Batch 1 at 256 positions computes 258 rows at 6 x 2 (12 accumulators) rather than
    256 at 4 x 2; not across sentences (a period other than the rows), not where 6 or 5
    divide already, not for 4 rows in 32; AVX-512 (8 x 2 divides) never."""
    import tvm

    from pipelines.compile.schedules import padded_rows

    assert padded_rows(tvm.target.Target({"kind": "llvm", "mcpu": "haswell"}), m, period) == padded
    assert padded_rows(tvm.target.Target({"kind": "llvm", "mcpu": "znver4"}), m, period) is None


class _Scores(torch.nn.Module):
    """Attention scores per head, as BERT computes them: Q Kᵀ / sqrt(D) + mask."""

    def forward(self, q, k, mask):
        return torch.matmul(q, k.transpose(-1, -2)) * 0.125 + mask


@pytest.mark.parametrize("case", ["feed_forward", "scores"])
def test_padded_avx2_gemm_reads_the_last_row_again_and_writes_only_real_rows(case):
    """haswell code (runs on any x86 host here): 128 rows become 132, the padding rows'
    loads clamped to row 127 (no branch in the tile), the write-back stopped at 128, and
    the results are torch's, for a 2-D GEMM with its epilogue. A batched one (attention's
    scores) is not padded: padded, mini's 16 x 64 builds read unwritten memory."""
    import tvm
    from tvm.relax.frontend.torch import from_exported_program

    torch.manual_seed(0)
    if case == "feed_forward":
        module, inputs = _FeedForward().eval(), (torch.randn(1, 128, 64),)
    else:
        mask = torch.where(torch.arange(128) < 100, 0.0, -1e4).expand(1, 1, 128, 128).contiguous()
        module, inputs = _Scores(), (torch.randn(1, 4, 128, 64), torch.randn(1, 4, 128, 64), mask)
    mod = from_exported_program(torch.export.export(module, inputs), keep_params_as_input=False)
    target = tvm.target.Target({"kind": "llvm", "mcpu": "haswell", "num-cores": 2})
    lowered = cpu_pipeline(target)(mod)
    [gemm] = [f.script() for gv, f in lowered.functions_items() if isinstance(f, tvm.tirx.PrimFunc) and "matmul" in gv.name_hint]
    if case == "scores":
        assert "T.int64(132)" not in gemm and "T.min(" not in gemm, gemm[:3000]
    else:
        assert "T.min(v0, T.int64(127))" in gemm, gemm[:3000]
        assert "T.int64(132)" in gemm and "T.unroll(T.int64(6))" in gemm
    executable = tvm.compile(mod, target=target, relax_pipeline=cpu_pipeline(target))
    vm = tvm.relax.VirtualMachine(executable, tvm.cpu())
    out = vm["main"](*(tvm.runtime.tensor(t.numpy()) for t in inputs))
    out = out[0] if not hasattr(out, "numpy") else out
    np.testing.assert_allclose(out.numpy(), module(*inputs).detach().numpy(), rtol=1e-5, atol=1e-4)
