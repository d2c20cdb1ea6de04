"""The LSTM lowering for TVM (pipelines.compile.lstm): one GEMM for every step's input
projection, one hand-written kernel for the recurrence; same outputs as torch's LSTM."""

import numpy as np
import pytest


def compile_and_run(module, *inputs):
    """(TVM's output, torch's output, the Relax module) for ``module`` on ``inputs``."""
    import torch
    import tvm
    from tvm import relax

    from pipelines.compile.compiler import cpu_pipeline, resolve_target
    from pipelines.compile.lstm import import_program

    module.eval()
    with torch.inference_mode():
        expected = module(*inputs).numpy()
    mod = import_program(torch.export.export(module, inputs))
    target = tvm.target.Target(resolve_target("x86-avx2"))
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


@pytest.mark.parametrize("batch", [1, 6, 8, 16])  # rows blocked by 1, 3 (2 groups), 2 (4 groups of 2), 4
def test_the_recurrence_kernel_matches_torch(batch):
    import torch

    x = torch.randn(batch, 5, 8, generator=torch.Generator().manual_seed(1))
    got, expected, mod = compile_and_run(lstm_module(32), x)
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
        recurrence_kernel(1, 4, 20)
