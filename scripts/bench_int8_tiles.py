"""GOP/s of the int8 GEMM kernel at several register tiles (BERT-mini linear shapes, M = 128).

Each (rows x column blocks) tile of the target's int8 kernel (``pipelines.compile.int8``)
is compiled alone and timed with TVM's time evaluator.

    python scripts/bench_int8_tiles.py [MCPU [KERNEL]]   # e.g. haswell: the AVX2 kernel on any x86 host;
                                                      # KERNEL (vnni, avx512bw, avx2, int32) forces one the target runs
"""

from __future__ import annotations

import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from pipelines.runtime.tvm_threads import configure_tvm_threads  # noqa: E402

configure_tvm_threads()

import tvm  # noqa: E402

from pipelines.compile.compiler import host_target  # noqa: E402
from pipelines.compile.int8 import int8_kernel, int8_linear_func, pack_weight  # noqa: E402
from pipelines.compile.quantize import activation_params, quantize_weight, weight_scales  # noqa: E402

SHAPES = [(128, 256, 1024), (128, 1024, 256), (128, 256, 256)]
TILES = [(4, 2), (2, 4), (6, 2), (8, 1), (3, 4), (4, 4), (8, 2)]


def main() -> int:
    target = host_target() if len(sys.argv) < 2 or sys.argv[1] == "host" else {"kind": "llvm", "mcpu": sys.argv[1], "num-cores": os.cpu_count() or 1}
    # the compile's own choice (a named kernel too gets the tile int8_kernel gives it on this target)
    base = int8_kernel(target, sys.argv[2] if len(sys.argv) > 2 else "auto")
    print(f"{target['mcpu']}: {base.name} kernel ({base.note}); default tile {base.rows}x{base.col_blocks}")
    rng = np.random.default_rng(0)
    dev = tvm.cpu()
    for m, k, n in SHAPES:
        x = rng.normal(size=(m, k)).astype(np.float32)
        w = (rng.normal(size=(n, k)) * 0.1).astype(np.float32)
        scale, zero = activation_params(-3.0, 3.0)
        wq = quantize_weight(w, weight_scales(w, qmax=base.weight_qmax), qmax=base.weight_qmax)
        cells = []
        for rows, blocks in TILES:
            if (n // base.lanes) % blocks:
                continue
            kernel = dataclasses.replace(base, rows=rows, col_blocks=blocks)
            lib = tvm.compile(tvm.IRModule({"main": int8_linear_func(m, k, n, scale, zero, kernel)}), target=tvm.target.Target(target))
            args = [tvm.runtime.tensor(a, dev) for a in (x, pack_weight(wq, base.lanes), np.ones(n, np.float32), np.zeros(n, np.float32))]
            args.append(tvm.runtime.tensor(np.zeros((m, n), np.float32), dev))
            seconds = min(lib.mod.time_evaluator("main", dev, number=50, repeat=5)(*args).results)
            cells.append(f"{rows}x{blocks} {seconds * 1e6:.0f} µs {2 * m * k * n / seconds / 1e9:.0f}")
        print(f"M{m} K{k} N{n} (µs, GOP/s): " + " · ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
