"""The LSTM lowering for TVM (pipelines.compile.lstm): one GEMM for every step's input
projection, one hand-written kernel for the recurrence; same outputs as torch's LSTM."""

import numpy as np
import pytest


def compile_and_run(module, *inputs, int8=None, target_name="x86-avx2"):
    """(TVM's output, torch's output, the Relax module) for ``module`` on ``inputs``;
    ``int8``: an int8 kernel name for the recurrences."""
    import torch
    import tvm
    from tvm import relax

    from pipelines.compile.compiler import cpu_pipeline, resolve_target
    from pipelines.compile.lstm import import_program

    module.eval()
    with torch.inference_mode():
        expected = module(*inputs).numpy()
    from pipelines.compile.int8 import KERNELS

    from pipelines.compile.schedules import vector_bits

    target = tvm.target.Target(resolve_target(target_name))
    mod = import_program(torch.export.export(module, inputs), int8_lstm=KERNELS[int8] if int8 else None, vector_bits=vector_bits(target))
    vm = relax.VirtualMachine(tvm.compile(mod, target=target, relax_pipeline=cpu_pipeline(target)), tvm.cpu())
    got = vm["main"](*(tvm.runtime.tensor(x.numpy()) for x in inputs))
    return got[0].numpy(), expected, mod  # the importer returns a tuple of outputs


def lstm_module(hidden: int, bidirectional: bool = False, scale: float = 1.0):
    import torch

    class Tagger(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.lstm = torch.nn.LSTM(8, hidden, batch_first=True, bidirectional=bidirectional)
            with torch.no_grad():
                for p in self.lstm.parameters():
                    p.mul_(scale)

        def forward(self, x):
            return self.lstm(x)[0]

    return Tagger()


def kernels(mod) -> list[str]:
    return [gv.name_hint for gv in mod.get_global_vars() if gv.name_hint != "main"]


def host_lacks(feature: str) -> bool:
    from pipelines.cpu import cpu_flags

    return feature not in cpu_flags()


@pytest.mark.parametrize("batch", [1, 6, 8, 16])  # rows blocked by 1, 3 (2 groups), 2 (4 groups of 2), 4
@pytest.mark.parametrize("target", ["x86-avx2", "x86-avx512"])  # 16-column or 64-column accumulator tiles
def test_the_recurrence_kernel_matches_torch(batch, target):
    import torch

    if target == "x86-avx512" and host_lacks("avx512f"):
        pytest.skip("this CPU has no AVX-512")
    x = torch.randn(batch, 5, 8, generator=torch.Generator().manual_seed(1))
    got, expected, mod = compile_and_run(lstm_module(32), x, target_name=target)
    assert np.abs(got - expected).max() < 1e-5
    assert kernels(mod) == ["lstm_recurrence"]  # not unrolled: one kernel for all steps


def test_saturated_gates_match_too():
    """Weights x 8: gate inputs far past +-9, where the rational tanh is clamped to +-1."""
    import torch

    x = torch.randn(2, 7, 8, generator=torch.Generator().manual_seed(2)) * 3
    got, expected, _ = compile_and_run(lstm_module(16, scale=8.0), x)
    assert np.abs(got - expected).max() < 1e-5


def test_other_lstms_go_to_tvms_own_converter():
    import torch

    x = torch.randn(1, 4, 8, generator=torch.Generator().manual_seed(3))
    got, expected, mod = compile_and_run(lstm_module(16, bidirectional=True), x)
    assert np.abs(got - expected).max() < 1e-5 and "lstm_recurrence" not in kernels(mod)


def test_a_hidden_size_the_tiles_cannot_cover_is_refused():
    from pipelines.compile.lstm import recurrence_kernel

    with pytest.raises(ValueError, match="LSTM hidden size 20 is not a multiple of 16"):
        recurrence_kernel(1, 4, 20, 8)


def test_quantised_weights_and_correction_give_h_times_w():
    """The int8 packing's arithmetic, in numpy: h as u8 codes round(127 h) + 128 times the
    packed weights, times the column scale, plus the bias correction, is h . W_hh^T."""
    from pipelines.compile.lstm import UNITS, pack_recurrent_quads

    rng = np.random.default_rng(0)
    hidden = 32
    w_hh = rng.normal(size=(4 * hidden, hidden)).astype(np.float32)
    h = np.tanh(rng.normal(size=hidden)).astype(np.float32)
    quads, scale, correction = pack_recurrent_quads(w_hh, qmax=127)
    assert quads.shape == (hidden // UNITS, hidden // 4, 4 * UNITS, 4) and quads.dtype == np.int8
    codes = np.round(h * 127).astype(np.int32) + 128
    tiles = []
    for tile in range(hidden // UNITS):
        weights = quads[tile].transpose(0, 2, 1).reshape(hidden, 4 * UNITS).astype(np.int32)  # [k, lane]
        tiles.append((codes @ weights) * scale[tile])  # lane = gate * UNITS + u
    gathered = np.stack(tiles).reshape(hidden // UNITS, 4, UNITS).transpose(1, 0, 2).reshape(4 * hidden)
    got = gathered + correction
    expected = w_hh @ h
    assert np.abs(got - expected).max() < 0.02 * np.abs(expected).max()


@pytest.mark.parametrize("kernel,target", [("avx2", "x86-avx2"), ("avx-vnni", "x86-avx2-vnni"), ("vnni", "x86-avx512")])
@pytest.mark.parametrize("batch", [1, 8])
def test_the_int8_recurrence_follows_torch(kernel, target, batch):
    """h in u8 codes and int8 weights (vpmaddubsw on AVX2, vpdpbusd with either VNNI): the LSTM's
    outputs within int8 rounding of torch's over 24 steps, where errors could build up."""
    import torch

    from pipelines.compile.int8 import int8_kernel
    from pipelines.compile.compiler import resolve_target

    try:
        int8_kernel(resolve_target("host"), kernel)
    except ValueError:
        pytest.skip(f"this CPU has no {kernel}")
    x = torch.randn(batch, 24, 8, generator=torch.Generator().manual_seed(4))
    got, expected, mod = compile_and_run(lstm_module(32), x, int8=kernel, target_name=target)
    assert kernels(mod) == ["lstm_recurrence"]
    error = np.abs(got - expected)
    assert error.max() < 0.03 and error.mean() < 0.005, (error.max(), error.mean())


def lstm_tagger(hidden: int, labels: int = 7):
    import torch

    class Tagger(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.lstm = torch.nn.LSTM(8, hidden, batch_first=True)
            self.head = torch.nn.Linear(hidden, labels)

        def forward(self, x):
            return self.head(self.lstm(x)[0])

    return Tagger()


@pytest.mark.parametrize("int8", [None, "avx2"])
@pytest.mark.parametrize("batch", [1, 8, 16])  # 16: the projection inside the kernel too
def test_a_label_head_is_computed_inside_the_recurrence(int8, batch):
    """A linear layer of few outputs over the LSTM's states (a tagger's label scores) is
    folded into the recurrence kernel (fold_label_heads): no GEMM over the states is
    left, and the scores are torch's."""
    import torch
    import tvm

    from pipelines.compile.compiler import fuse, resolve_target
    from pipelines.compile.lstm import fuses_projection

    x = torch.randn(batch, 6, 8, generator=torch.Generator().manual_seed(5))
    got, expected, mod = compile_and_run(lstm_tagger(32), x, int8=int8)
    assert got.shape == expected.shape == (batch, 6, 7)
    assert np.abs(got - expected).max() < (0.05 if int8 else 1e-5)
    names = kernels(fuse(mod, tvm.target.Target(resolve_target("x86-avx2"))))
    assert [n for n in names if n.startswith("lstm_recurrence")] == ["lstm_recurrence_head1"]
    # the one GEMM left is the input projection, where the kernel does not compute it itself
    assert len([n for n in names if "matmul" in n]) == (0 if fuses_projection(batch, 32) and not int8 else 1)


@pytest.mark.parametrize("kernel,target", [("avx2", "x86-avx2"), ("vnni", "x86-avx512")])
@pytest.mark.parametrize("batch", [1, 8])
def test_an_int8_recurrence_computes_its_calibrated_input_projection_itself(kernel, target, batch):
    """With the LSTM input's calibrated range, the int8 recurrence reads the input as u8
    codes and W_ih in int8 (as it reads h and W_hh): no projection GEMM is left, the
    layer is reported as int8, and the outputs stay within int8 rounding of torch's."""
    import torch
    import tvm
    from tvm import relax

    from pipelines.compile.compiler import cpu_pipeline, fuse, resolve_target
    from pipelines.compile.int8 import int8_kernel, weight_key
    from pipelines.compile.lstm import import_program
    from pipelines.compile.schedules import vector_bits

    try:
        chosen = int8_kernel(resolve_target("host"), kernel)
    except ValueError:
        pytest.skip(f"this CPU has no {kernel}")
    module = lstm_tagger(32).eval()
    x = torch.randn(batch, 24, 8, generator=torch.Generator().manual_seed(6))
    with torch.inference_mode():
        expected = module(x).numpy()
    w_ih = module.lstm.weight_ih_l0.detach().numpy()
    inputs = {weight_key(w_ih): ("lstm.input", float(x.min()), float(x.max()))}
    fused: list[dict] = []
    tvm_target = tvm.target.Target(resolve_target(target))
    mod = import_program(torch.export.export(module, (x,)), int8_lstm=chosen, vector_bits=vector_bits(tvm_target),
                         int8_inputs=inputs, fused_inputs=fused)
    assert [f["name"] for f in fused] == ["lstm.input"] and fused[0]["K"] == 8 and fused[0]["N"] == 128
    assert not [n for n in kernels(fuse(mod, tvm_target)) if "matmul" in n]  # the head folded, the projection inside
    vm = relax.VirtualMachine(tvm.compile(mod, target=tvm_target, relax_pipeline=cpu_pipeline(tvm_target)), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x.numpy()))[0].numpy()
    error = np.abs(got - expected)
    assert error.max() < 0.05 and error.mean() < 0.01, (error.max(), error.mean())


@pytest.mark.parametrize("head", [False, True])
def test_one_sentence_with_weights_past_l2_splits_each_step_s_tiles_over_the_cores(monkeypatch, head):
    """Batch 1 has one row group, so the float kernel ran on one core; past one core's L2
    (a 384-wide direction: 2.4 MB of W_hh) each step's tiles run in parallel instead. The
    threshold lowered here so a small LSTM takes that path: same states and scores as
    torch, and the tile loop is the parallel one (the label-head variant too)."""
    import torch
    import tvm

    from pipelines.compile import lstm
    from pipelines.compile.compiler import fuse, resolve_target

    monkeypatch.setattr(lstm, "SPLIT_TILES_BYTES", 0)
    x = torch.randn(1, 6, 8, generator=torch.Generator().manual_seed(7))
    got, expected, mod = compile_and_run(lstm_tagger(32) if head else lstm_module(32), x)
    assert np.abs(got - expected).max() < 1e-5
    fused = fuse(mod, tvm.target.Target(resolve_target("x86-avx2")))
    recurrences = [f.script() for gv, f in fused.functions_items() if "lstm_recurrence" in gv.name_hint]
    assert recurrences and all("for tile in T.parallel" in script for script in recurrences), [gv.name_hint for gv in fused.get_global_vars()]
    monkeypatch.setattr(lstm, "SPLIT_TILES_BYTES", 1 << 30)  # the default for small weights: row groups, tiles in turn
    _, _, mod = compile_and_run(lstm_module(32), x)
    scripts = [f.script() for gv, f in mod.functions_items() if "lstm_recurrence" in gv.name_hint]
    assert scripts and not any("for tile in T.parallel" in script for script in scripts)
