"""The same TVM artifact timed here and on a device of an RPC tracker, interleaved.

Builds random-weight models of the given presets (speed does not depend on the
weights), compiles tvm-fp32 at each sequence length (batch 1), and times, round by
round: the local engine as `bench` does (wall clock around each call, this process's
overhead included), the local VM on its own clock (the VM's time_evaluator), and the
artifact on a device of the key, on the device's clock (what `bench --rpc` reports),
plus the remote call's round trip. Prints a Markdown table.

    python -m tvm.exec.rpc_tracker --host 127.0.0.1 --port 9190 &
    TVM_NUM_THREADS=2 python -m tvm.exec.rpc_server --tracker 127.0.0.1:9190 --key local --host 127.0.0.1 &
    python scripts/bench_rpc.py --rpc 127.0.0.1:9190 --rpc-key local --presets mini --seq 128,256
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipelines.config import RpcConfig, parse_config  # noqa: E402
from pipelines.evaluate.bench import time_interleaved  # noqa: E402
from pipelines.events import Reporter  # noqa: E402
from pipelines.runtime.engines import open_engine  # noqa: E402
from pipelines.runtime.remote import RemoteDevice  # noqa: E402
from pipelines.stages import stage_compile  # noqa: E402
from scripts.bench_compiler import make_run  # noqa: E402


class LocalClock:
    """A local TVM engine timed on the VM's own clock, as a remote one is."""

    def __init__(self, engine) -> None:
        import tvm

        self.engine, self.device, self.tensor = engine, tvm.cpu(), tvm.runtime.tensor

    def logits(self, ids, mask):
        return self.engine.logits(ids, mask)

    def device_times(self, ids, mask, count: int) -> list[float]:
        vm = self.engine.vm
        vm.set_input("main", self.tensor(ids, self.device), self.tensor(mask, self.device))
        return [s * 1000 for s in vm.time_evaluator("invoke_stateful", self.device, number=1, repeat=count)("main").results]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rpc", required=True, metavar="HOST:PORT")
    parser.add_argument("--rpc-key", required=True, metavar="KEY")
    parser.add_argument("--presets", default="mini")
    parser.add_argument("--seq", default="128")
    parser.add_argument("--iterations", type=int, default=200)
    args = parser.parse_args()
    rpc = RpcConfig.of(args.rpc, args.rpc_key)
    log = Reporter(lambda e: e.kind == "log" and print(f"  {e.message}", file=sys.stderr), stage="bench")
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for preset in args.presets.split(","):
            run_dir = make_run(root, preset)
            seqs = [int(s) for s in args.seq.split(",")]
            cfg = parse_config({"compile": {"precisions": ["fp32"], "shapes": [[1, s] for s in seqs], "tuning": {"database": None}}})
            stage_compile(cfg, run_dir, log)
            for seq in seqs:
                ids = np.random.default_rng(0).integers(672, 7992, size=(1, seq), dtype=np.int64)
                mask = np.ones_like(ids)
                with RemoteDevice(rpc) as device:
                    local = open_engine("tvm-fp32", run_dir, shape=(1, seq))
                    engines = {"here (wall)": local, "here (VM clock)": LocalClock(local), "device": device.open("tvm-fp32", run_dir, (1, seq))}
                    trip = []
                    for _ in range(10):  # warm-up, and the remote round trip
                        for name, engine in engines.items():
                            t0 = time.perf_counter()
                            engine.logits(ids, mask)
                            if name == "device":
                                trip.append((time.perf_counter() - t0) * 1000)
                    times, _ = time_interleaved(engines, ids, mask, args.iterations, max_seconds=60)
                    engines.clear()
                p50 = {name: float(np.median(ms)) for name, ms in times.items()}
                rows.append((preset, seq, p50, float(np.median(trip))))
    print(f"| model | seq | here, wall (bench) | here, VM clock | rpc:{rpc.key}, device clock (bench --rpc) | device / here (VM clock) | device / here (wall) | round trip |")
    print("|---|---|---|---|---|---|---|---|")
    for preset, seq, p50, trip in rows:
        wall, clock, remote = p50["here (wall)"], p50["here (VM clock)"], p50["device"]
        print(f"| {preset} | {seq} | {wall:.3f} | {clock:.3f} | {remote:.3f} | {remote / clock:.2f}x | {remote / wall:.2f}x | {trip:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
