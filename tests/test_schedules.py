"""The default CPU schedules: a linear layer's weight is repacked once, at compile time."""

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
    # The repacking ran at compile time: main holds the weight as [N / 32, K, 32] panels.
    shapes = set()
    tvm.relax.analysis.post_order_visit(
        lowered["main"], lambda e: isinstance(e, tvm.ir.Constant) and hasattr(e.value, "numpy") and shapes.add(e.value.numpy().shape)
    )
    assert (96 // 32, 64, 32) in shapes and (64, 96) not in shapes
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


def test_bias_gelu_and_residual_fuse_into_the_gemm_across_unit_reshapes():
    import tvm
    from tvm.relax.frontend.torch import from_exported_program

    from pipelines.compile.compiler import fuse

    torch.manual_seed(0)
    block = _FeedForward().eval()
    x = torch.randn(1, 16, 64)
    mod = from_exported_program(torch.export.export(block, (x,)), keep_params_as_input=False)
    target = tvm.target.Target(host_target())
    kernels = [gv.name_hint for gv, f in fuse(mod, target).functions.items() if isinstance(f, tvm.tirx.PrimFunc)]
    [gemm] = [name for name in kernels if "matmul" in name]
    assert "gelu" in gemm and gemm.count("add") == 2, kernels  # bias and residual, one kernel
    executable = tvm.compile(mod, target=target, relax_pipeline=cpu_pipeline(target))
    vm = tvm.relax.VirtualMachine(executable, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x.numpy()))
    out = out[0] if not hasattr(out, "numpy") else out
    np.testing.assert_allclose(out.numpy(), block(x).detach().numpy(), rtol=1e-5, atol=1e-5)


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
