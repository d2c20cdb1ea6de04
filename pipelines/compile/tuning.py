"""MetaSchedule tuning for the compile stage, made affordable on a small CPU.

What made a 40-trial run take 940 s here, and what this module does instead:

- MetaSchedule's ``LocalBuilder`` starts a fresh process pool for every batch of
  builds, and each worker re-imports TVM's tensor intrinsics (~20 s of Python on 2
  cores). ``PooledBuilder`` keeps one pool for the whole run.
- The evolutionary search's defaults (population 512, 4 genetic rounds, 50 random
  unmeasured candidates) cost many seconds of Python per round; a smaller search
  costs about one.
- Layout-only kernels (reshape, transpose, take, cast) are not worth a trial.
- Each kernel's default schedule (``compile.schedules``) is measured first and stored
  in the database as a candidate like any other, so the build takes whichever is
  faster: tuning can only help, and kernels the budget never reached keep the
  default schedule.

Tuning records live in a JSON database that later compiles of the same kernels
(same shapes, same target) reuse: a second compile costs no trials for them.
"""

from __future__ import annotations

import importlib
import inspect
import linecache
import os
import re
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass

from pipelines.events import Reporter, time_left

# Kernels made only of ops that move data: tuning them spends trials for nothing.
# A fused kernel is named after its ops (``fused_reshape3_transpose1_broadcast_to4``);
# one with any other op in it (``fused_matmul_add2_reshape1_add1``) is tuned.
LAYOUT_OPS = ("reshape", "transpose", "take", "index_tensor", "cast", "squeeze", "expand_dims", "concatenate", "strided_slice", "broadcast_to")
LAYOUT_ONLY_KERNEL = re.compile(r"^(?:fused_)?(?:(?:%s)\d*(?:_|$))+$" % "|".join(LAYOUT_OPS))
# Kernels that look rows up by the ids (embedding lookups, fused with their sum since
# ``compiler._lookups_as_injective``): MetaSchedule measures a kernel on random inputs,
# which index outside the table, and TVM's lookups do not check (the measuring
# process dies). They keep their default schedule.
LOOKUP_KERNEL = re.compile(r"(?:^|_)(?:take|gather)\d*(?:_|$)")


BUDGET_STOP = "tuning time budget reached"


class TimeBudgetReached(Exception):
    pass


@dataclass
class TuningBudget:
    trials: int  # total measured candidates across all kernels
    max_minutes: float | None = None  # stop early (what was measured so far is kept)

    def trials_per_iter(self, tasks: int) -> int:
        """Small rounds for small budgets, so every kernel gets some trials."""
        return max(4, min(32, self.trials // max(2 * tasks, 1)))


def tunable(task) -> bool:
    """Not a layout-only kernel, not a lookup (``LOOKUP_KERNEL``), and not one scheduled
    by hand (the int8 VNNI GEMMs)."""
    attrs = task.dispatched[0]["main"].attrs
    scheduled = attrs is not None and bool(attrs.get("tirx.is_scheduled", False))
    return not scheduled and not LAYOUT_ONLY_KERNEL.match(task.task_name) and not LOOKUP_KERNEL.search(task.task_name)


def database_dir(root: str, target, rpc: dict | None = None) -> str:
    """One database per target (records do not transfer across CPUs), and per RPC device
    key: times measured there are that device's (``llvm-znver5-2+rpc-KEY``)."""
    key = "-".join(str(target.attrs.get(k, "")) for k in ("mcpu", "num-cores")) or "default"
    name = f"{target.kind.name}-{key}".strip("-")
    return os.path.join(root, name + (f"+rpc-{rpc['key']}" if rpc else ""))


def build_kernel(mod, target, _params):
    """MetaSchedule's default build minus its import of every tensor intrinsic
    (20 s of TVMScript parsing per worker here; fp32 search spaces use none)."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    return tvm_build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)


def _pooled_builder(workers: int):
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import _serialize_params, _worker_func
    from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

    @derived_object
    class PooledBuilder(PyBuilder):
        """LocalBuilder's work with one worker pool for the whole run (recycled every
        ``recycle`` batches: TVM restarts it each batch for a slow memory leak)."""

        recycle = 25

        def __init__(self) -> None:
            super().__init__()
            self.pool, self.batches = None, 0

        def build(self, build_inputs):
            if self.pool is None or self.batches >= self.recycle:
                self.close()
                self.pool = PopenPoolExecutor(max_workers=workers, timeout=120)
            self.batches += 1
            jobs = [(build_kernel, None, b.mod, b.target, _serialize_params(b.params)) for b in build_inputs]
            results = []
            for res in self.pool.map_with_error_catching(lambda x: _worker_func(*x), jobs):
                if res.status == StatusKind.COMPLETE:
                    results.append(BuilderResult(res.value, None))
                else:
                    results.append(BuilderResult(None, f"LocalBuilder: {res.status.name.lower()}: {res.value}"))
            return results

        def close(self) -> None:
            if self.pool is not None:
                self.pool.shutdown()
            self.pool, self.batches = None, 0

    return PooledBuilder()


def stopped_by_budget(err: BaseException, out_of_time: bool) -> bool:
    """Whether ``err`` is our own stop at the time budget (the FFI may re-wrap it, so it is
    told by its message). Any other error past the budget is a real failure: it used
    to read "stopped at its budget" too."""
    return out_of_time and (isinstance(err, TimeBudgetReached) or BUDGET_STOP in str(err))


def _progress_callback(reporter: Reporter, budget: TuningBudget, task_names: list[str], deadline: float | None):
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback
    from tvm.ir.utils import derived_object

    best_us: dict[int, float] = {}
    state = {"trials": 0, "out_of_time": False}

    @derived_object
    class Progress(PyMeasureCallback):
        """One progress event per measured batch: trials, kernels touched, the best
        time of the batch's kernel, the time budget left. Past the deadline it stops every task."""

        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
            state["trials"] += len(measure_candidates)
            times = [sum(float(s) for s in r.run_secs) / len(r.run_secs) for r in runner_results if r.run_secs]
            if times:
                best_us[task_id] = min(best_us.get(task_id, float("inf")), min(times) * 1e6)
            done = min(state["trials"], budget.trials)
            reporter.progress(
                done,
                budget.trials,
                "trials",
                step="tuning",
                task=task_names[task_id],
                tasks_touched=len(best_us),
                tasks=len(task_names),
                best_us=round(best_us.get(task_id, 0.0), 1),
                # the UIs' ETA: trials left at the rate so far, or this if sooner
                **time_left(deadline),
            )
            if deadline is not None and time.monotonic() > deadline:
                # The scheduler itself terminates the task being joined, so stopping
                # tasks from here trips its checks: unwind instead. Every measured
                # record is already in the database (that callback runs first).
                state["out_of_time"] = True
                raise TimeBudgetReached(f"{BUDGET_STOP} after {state['trials']} trials")

    return Progress(), state


def default_schedule(task, rules):
    """The kernel's default schedule (``compile.schedules``), or None where no rule applies.
    A failure leaves the kernel to tuning alone, with no default to measure or to keep:
    never the design, so it is noted as a warning (the rule chain notes a rule that raised)."""
    from pipelines.compile.schedules import fell_back, scheduling

    with scheduling(func=task.task_name, rule=type(rules).__name__):
        try:
            return rules.apply(task.dispatched[0]["main"], task.target, False)
        except Exception as err:  # noqa: BLE001 - a rule that fails leaves the kernel to tuning
            fell_back("failed: tuned without a default schedule", err, expected=False)
            return None


def repacks_weights(sch) -> bool:
    """The schedule stores a weight in another layout (the GEMM's [N/32, K, 32] panels).
    MetaSchedule cannot replay such a trace from its database (``parallel_for_dynamic
    ... initial_indices_orig`` in TVM 0.27), and its tuned GEMMs reached 105-113 GFLOP/s
    here against the panel GEMM's 205-255: these kernels keep the default, untuned."""
    return sch is not None and any(inst.kind.name == "TransformLayout" for inst in sch.trace.insts)


def seed_default_schedules(tasks, defaults, database, builder, runner, reporter: Reporter) -> int:
    """Measure each kernel's default schedule (``defaults``, in task order) and commit
    it as a tuning record. Returns how many were stored (kernels a rule does not
    apply to are skipped)."""
    from tvm.s_tir import meta_schedule as ms

    todo = []
    for task, sch in zip(tasks, defaults):
        workload = database.commit_workload(task.dispatched[0])
        if database.get_top_k(workload, 1):
            continue  # already measured by an earlier compile
        if sch is not None:
            todo.append((task, workload, sch))
    if not todo:
        return 0
    built = builder.build([ms.builder.BuilderInput(sch.mod, task.target) for task, _, sch in todo])
    from pipelines.compile.schedules import fell_back, scheduling

    def not_measured(task, why: str, error: str) -> None:
        # The kernel's default is then no record: tuned candidates compete without it,
        # and the build keeps the default only where tuning found nothing (a warning).
        with scheduling(func=task.task_name, rule="default schedule"):
            fell_back(f"not {why}, so not in the tuning database", error.strip().splitlines()[-1][:200], expected=False)

    inputs, kept = [], []
    for (task, workload, sch), b in zip(todo, built):
        if b.error_msg is not None:
            not_measured(task, "built", b.error_msg)
        else:
            args = ms.arg_info.ArgInfo.from_prim_func(sch.mod["main"])
            inputs.append(ms.runner.RunnerInput(b.artifact_path, "cpu" if task.target.kind.name == "llvm" else task.target.kind.name, args))
            kept.append((task, workload, sch, args))
    stored = 0
    for (task, workload, sch, args), future in zip(kept, runner.run(inputs)):
        res = future.result()
        if res.error_msg is not None:
            not_measured(task, "measured", res.error_msg)
        else:
            database.commit_tuning_record(ms.database.TuningRecord(sch.trace, workload, res.run_secs, task.target, args))
            stored += 1
    reporter.log(f"default schedules measured for {stored} of {len(tasks)} kernels")
    return stored


# Short kernels: 10 runs per measurement is enough; the default 100 ms minimum
# per candidate would dominate a small budget.
EVALUATOR = {"number": 10, "repeat": 1, "min_repeat_ms": 5}
# An RPC measurement: the tracker's answer, the upload, the link on the device, the runs.
RPC_SESSION_TIMEOUT_S = 60


def rpc_runner(rpc: dict, reporter: Reporter):
    """MetaSchedule's RPC runner over the tracker's devices of ``rpc['key']``, one worker per
    device free now (each measurement takes a session on one): candidates spread over them."""
    from tvm.s_tir import meta_schedule as ms

    from pipelines.config import RpcConfig
    from pipelines.runtime.remote import key_devices

    cfg = RpcConfig.model_validate(rpc)
    devices = key_devices(cfg)  # a one-line RemoteError if unreachable or none of the key
    workers = max(1, devices["free"])
    reporter.log(f"measuring on rpc:{cfg.key} at {cfg.tracker}: {workers} workers ({devices['free']} of {devices['total']} devices free)")
    host, port = cfg.address
    return ms.runner.RPCRunner(
        rpc_config=ms.runner.RPCConfig(tracker_host=host, tracker_port=port, tracker_key=cfg.key, session_timeout_sec=RPC_SESSION_TIMEOUT_S),
        evaluator_config=ms.runner.EvaluatorConfig(**EVALUATOR),
        max_workers=workers,
    )


@contextmanager
def cheap_frame_info():
    """``inspect.stack()`` with each frame's source line from ``linecache`` only.

    TVMScript's parser calls ``inspect.stack()`` for every ``@T.prim_func``, and
    ``inspect`` resolves each frame's module by scanning ``sys.modules`` (thousands
    of entries once torch is loaded) for every frame it cannot place, such as
    importlib's. Importing TVM's tensor intrinsics (~500 prim funcs, which the first
    MetaSchedule ``TuneContext`` does) took 58 s of a 106 s tuning compile on 2 cores.
    The parser reads only the frames, their locals and one source line."""
    original = inspect.stack

    def stack(context: int = 1) -> list[inspect.FrameInfo]:
        frames, frame = [], sys._getframe(1)
        while frame is not None:
            code = frame.f_code
            line = linecache.getline(code.co_filename, frame.f_lineno)
            frames.append(inspect.FrameInfo(frame, code.co_filename, frame.f_lineno, code.co_name, [line] if line else None, 0 if line else None))
            frame = frame.f_back
        return frames

    inspect.stack = stack
    try:
        yield
    finally:
        inspect.stack = original


def tune(mod, target, db_dir: str, budget: TuningBudget, rules, reporter: Reporter, rpc: dict | None = None):
    """Tune ``mod`` (fused TIR kernels, not yet scheduled) within ``budget``; returns
    the database to build with (defaults and tuned records, best per kernel). With
    ``rpc`` (an ``RpcConfig`` as a dict), candidates are measured on the tracker's devices."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.relax_integration import extract_tasks

    with cheap_frame_info():
        importlib.import_module("tvm.s_tir.tensor_intrin")  # what the first TuneContext imports, slowly

    os.makedirs(db_dir, exist_ok=True)
    database = ms.database.JSONDatabase(work_dir=db_dir)
    tasks = [t for t in extract_tasks(mod, target) if tunable(t)]
    defaults = [default_schedule(t, rules) for t in tasks]
    keep = [not repacks_weights(sch) for sch in defaults]
    if not all(keep):
        reporter.log(f"{keep.count(False)} GEMM kernels keep their default schedule (weights packed into panels), not tuned")
    tasks = [t for t, k in zip(tasks, keep) if k]
    defaults = [sch for sch, k in zip(defaults, keep) if k]
    cores = int(target.attrs.get("num-cores", os.cpu_count() or 1))
    runner = rpc_runner(rpc, reporter) if rpc else ms.runner.LocalRunner(evaluator_config=ms.runner.EvaluatorConfig(**EVALUATOR))
    builder = _pooled_builder(cores)
    try:
        seed_default_schedules(tasks, defaults, database, builder, runner, reporter)
        if budget.trials > 0 and tasks:
            deadline = time.monotonic() + budget.max_minutes * 60 if budget.max_minutes else None
            progress, state = _progress_callback(reporter, budget, [t.task_name for t in tasks], deadline)
            strategy = ms.search_strategy.EvolutionarySearch(
                population_size=128, init_min_unmeasured=16, genetic_num_iters=2, max_fail_count=3
            )
            contexts = [
                ms.TuneContext(
                    mod=t.dispatched[0],
                    target=t.target,
                    space_generator="post-order-apply",
                    search_strategy=strategy,
                    task_name=t.task_name,
                    num_threads=cores,
                ).clone()
                for t in tasks
            ]
            reporter.log(f"tuning {len(tasks)} kernels, {budget.trials} trials" + (f", at most {budget.max_minutes} min" if deadline else ""))
            try:
                ms.tune_tasks(
                    tasks=contexts,
                    task_weights=[float(t.weight) for t in tasks],
                    work_dir=db_dir,
                    max_trials_global=budget.trials,
                    num_trials_per_iter=budget.trials_per_iter(len(tasks)),
                    builder=builder,
                    runner=runner,
                    database=database,
                    measure_callbacks=[*ms.MeasureCallback.create("default"), progress],
                )
            except Exception as err:  # noqa: BLE001 - the FFI may re-wrap our own exception
                if not stopped_by_budget(err, state["out_of_time"]):
                    raise
                reporter.log(f"tuning stopped at its time budget ({budget.max_minutes} min) after {state['trials']} trials")
    finally:
        builder.close()
    return database
