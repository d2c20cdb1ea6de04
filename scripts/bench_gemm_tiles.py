"""GFLOP/s of the default GEMM schedule at several register tiles, against torch.

Each BERT-like linear layer (M x K times K x N, weights constant as in a real
compile) is compiled with the product's CPU pipeline once per tile, then timed.
Rows and columns that do not divide M and N fall back to what does.

    python scripts/bench_gemm_tiles.py [MCPU]       # MCPU e.g. haswell (AVX2 code on any x86 host)
    python scripts/bench_gemm_tiles.py haswell --shapes 768x1024x256,128x256x256 --tiles 4x16,6x16

Shapes are MxNxK; tiles are rows x columns (floats); the product's own pick is always
the first column.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipelines.runtime.tvm_threads import configure_tvm_threads  # noqa: E402

configure_tvm_threads()

import tvm  # noqa: E402
from tvm import relax  # noqa: E402
from tvm.relax.frontend.torch import from_exported_program  # noqa: E402

import pipelines.compile.schedules as schedules  # noqa: E402
from pipelines.compile.compiler import cpu_pipeline, host_target  # noqa: E402

SHAPES = [(2048, 128, 128), (2048, 512, 128), (32, 128, 128), (256, 512, 128), (4096, 256, 256), (128, 768, 768), (128, 3072, 768)]
TILES = [None, (8, 16), (4, 16), (2, 32), (4, 32), (8, 32)]  # None: what the product picks


def median_s(fn, seconds: float = 1.0) -> float:
    for _ in range(5):
        fn()
    times, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(mcpu: str | None = None, shapes=SHAPES, tiles=TILES) -> None:
    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu, "num-cores": os.cpu_count()} if mcpu else host_target())
    print(f"target {target}; GFLOP/s per tile (rows, columns)")
    for m, n, k in shapes:
        linear = torch.nn.Linear(k, n).eval()
        mod = from_exported_program(torch.export.export(linear, (torch.randn(m, k),)), keep_params_as_input=False)
        x = np.random.randn(m, k).astype("float32")
        cells = []
        for tile in [None, *(t for t in tiles if t)]:
            chosen, padded = schedules.gemm_tile, schedules.padded_rows
            if tile:  # that tile exactly: no padding of the rows to another
                schedules.padded_rows = lambda *_args, **_kw: None
                schedules.gemm_tile = lambda t, mm, nn, period=None, kk=None, r=tile[0], c=tile[1]: (
                    r if mm % r == 0 else schedules.largest_divisor(mm, (4, 2)), c if nn % c == 0 else schedules.largest_divisor(nn, (16, 8)))
            try:
                vm = relax.VirtualMachine(tvm.compile(mod, target=target, relax_pipeline=cpu_pipeline(target)), tvm.cpu())
            finally:
                schedules.gemm_tile, schedules.padded_rows = chosen, padded
            xt = tvm.runtime.tensor(x)
            cells.append(f"{tile or 'default'}: {2 * m * n * k / median_s(lambda: vm['main'](xt)) / 1e9:.0f}")
        with torch.inference_mode():
            xt_ = torch.from_numpy(x)
            torch_gflops = 2 * m * n * k / median_s(lambda: linear(xt_)) / 1e9
        print(f"M{m} N{n} K{k}  torch: {torch_gflops:.0f}  " + "  ".join(cells), flush=True)


def _triples(text: str) -> list[tuple[int, ...]]:
    return [tuple(int(v) for v in item.split("x")) for item in text.split(",")]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mcpu", nargs="?", help="LLVM CPU to build for (default: this host)")
    parser.add_argument("--shapes", type=_triples, default=SHAPES, help="MxNxK,... (default: BERT-like layers)")
    parser.add_argument("--tiles", type=_triples, default=TILES, help="ROWSxCOLUMNS,... register tiles to try")
    args = parser.parse_args()
    main(args.mcpu, args.shapes, args.tiles)
