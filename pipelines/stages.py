"""The stages of a run, as plain functions over a run directory: the one orchestrator.

Each stage takes the resolved config, the run directory (see ``pipelines.layout``)
and a ``Reporter``, calls into the concerns below it and returns its metrics.
"""

from __future__ import annotations

import os
from typing import Callable

from pipelines.compile.export import export_model
from pipelines.config import ANY_LENGTH, ConfigError, RunConfig
from pipelines.data.loaders import column, data_for
from pipelines.evaluate.scoring import evaluate
from pipelines.events import Reporter
from pipelines.files import read_json, write_json
from pipelines.layout import COMPILED_DIR, EXPORT_DIR, METRICS_FILE, read_export_meta
from pipelines.modeling.models import ModelMeta, resolve_model_dir, saved_bilstm


def transfer_text(sources, cfg: RunConfig, reporter: Reporter):
    """Unlabeled sentences from ``sources``, less any that share text with the test split."""
    from pipelines.data.corpus import drop_leaks, load_corpus

    sentences = load_corpus(sources)
    data = data_for(cfg)
    if "test" in data.splits:
        sentences, dropped = drop_leaks(sentences, data.texts("test"))
        reporter.log(f"dropped {dropped} sentences sharing text with the test split")
    return sentences


def with_run_weights(cfg: RunConfig, run_dir: str, reporter: Reporter, upstream: tuple[str, ...]) -> RunConfig:
    """``cfg`` starting from this run's own weights of the first of ``upstream`` stages
    it lists that left them: distill's student, else pretrain's MLM checkpoint. The
    user's ``model.pretrained`` beats pretrain's weights but not distill's, since
    distill itself started from it."""
    from pipelines.training.distill import DISTILLED_DIR
    from pipelines.training.pretrain import PRETRAINED_DIR

    for stage, name in (("distill", DISTILLED_DIR), ("pretrain", PRETRAINED_DIR)):
        path = os.path.join(run_dir, name)
        if stage not in upstream or stage not in cfg.stages or not os.path.isdir(path):
            continue
        if stage == "pretrain" and cfg.model.pretrained:
            continue
        cfg = cfg.model_copy(deep=True)
        cfg.model.pretrained = path
        reporter.log(f"starting from this run's {stage} weights ({path})")
        break
    return cfg


def stage_pretrain(cfg: RunConfig, run_dir: str, reporter: Reporter) -> dict:
    from pipelines.training.pretrain import pretrain

    return pretrain(cfg, transfer_text(cfg.pretrain.sources, cfg, reporter), run_dir, reporter)


def stage_distill(cfg: RunConfig, run_dir: str, reporter: Reporter) -> dict:
    from pipelines.training.distill import distill

    if not cfg.distill.teacher:
        raise ConfigError("distill.teacher is not set (a fine-tuned run or model directory)")
    teacher = cfg.distill.teacher
    teacher = [resolve_model_dir(t) for t in teacher] if isinstance(teacher, list) else resolve_model_dir(teacher)
    cfg = with_run_weights(cfg, run_dir, reporter, ("pretrain",))
    return distill(cfg, teacher, transfer_text(cfg.distill.sources, cfg, reporter), data_for(cfg), run_dir, reporter)


def stage_train(cfg: RunConfig, run_dir: str, reporter: Reporter) -> dict:
    from pipelines.training.train import train

    cfg = with_run_weights(cfg, run_dir, reporter, ("distill", "pretrain"))
    data = data_for(cfg)
    sizes = ", ".join(f"{name} {len(ds)}" for name, ds in data.splits.items())
    reporter.log(f"data: {cfg.data.source} ({sizes} sentences); labels {' '.join(data.labels)}")
    return train(cfg, data, run_dir, reporter)


def stage_export(cfg: RunConfig, run_dir: str, reporter: Reporter) -> dict:
    model_dir = resolve_model_dir(run_dir)
    data = data_for(cfg)
    split = data.splits["dev" if "dev" in data.splits else "test"]
    return export_model(model_dir, os.path.join(run_dir, EXPORT_DIR), cfg.export, split["tokens"], reporter)


def stage_eval(cfg: RunConfig, run_dir: str, reporter: Reporter) -> dict:
    dataset = data_for(cfg).splits[cfg.eval.split]
    ec = cfg.eval
    scores = evaluate(run_dir, dataset, ec.split, reporter, strict=ec.strict, batch_size=ec.batch_size, decoder=ec.decode)
    if ec.news and cfg.data.source == "msra":
        from pipelines.data.news import NEWS_SPLIT, held_out_news, news_dataset

        reporter.log(f"scoring the held-out news too ({len(held_out_news().sentences):,} sentences)")
        news = evaluate(run_dir, news_dataset(data_for(cfg).labels), NEWS_SPLIT, reporter, strict=ec.strict,
                        batch_size=ec.batch_size, decoder=ec.decode)
        scores[NEWS_SPLIT] = {k: news[k] for k in ("f1", "precision", "recall", "accuracy", "per_type", "sentences") if k in news}
    return scores


def stage_compile(cfg: RunConfig, run_dir: str, reporter: Reporter) -> dict:
    """One TVM artifact per shape and precision, each built in a child process."""
    from pipelines.compile.export import MIN_ANY_LENGTH, export_program
    from pipelines.isolate import run_isolated

    model_dir = resolve_model_dir(run_dir)
    bilstm = saved_bilstm(model_dir)
    if "fp16" in cfg.compile.precisions and bilstm:
        raise ConfigError("compile.precisions: fp16 is not built for a BiLSTM model (its recurrence kernel is fp32 or int8): use fp32 or int8")
    max_length = ModelMeta.load(model_dir).max_length
    shapes = cfg.compile.build_shapes(cfg.export.shape, max_length, bilstm=bilstm)
    if any(seq == ANY_LENGTH for _, seq in shapes) and not bilstm:
        raise ConfigError("compile.profile.seq: `any` (a symbolic length) is built for BiLSTM models; a BERT runs "
                          "in length buckets (symbolic, it measured 1.09-1.38x slower a position: docs/compiler.md)")
    for notice in cfg.compile.notices:
        reporter.log(notice, level="warning")
    export_meta = read_export_meta(os.path.join(run_dir, EXPORT_DIR)) or {}
    results = {}
    tuning = cfg.compile.tuning
    if tuning.rpc is not None:  # an unreachable tracker fails here, in seconds, not in every child
        _log_devices(tuning.rpc, "tuning measures", reporter)
        if not tuning.trials:
            reporter.log(f"compile.tuning.rpc with no trials: only records rpc:{tuning.rpc.key} measured before are used", level="warning")
    default_db = os.path.join(os.path.dirname(os.path.abspath(run_dir)), "tuning-db")
    quantize = None
    if "int8" in cfg.compile.precisions:  # calibrated once, for every shape
        from pipelines.compile.calibrate import QUANT_FILE, prepare_int8
        from pipelines.compile.compiler import resolve_target
        from pipelines.compile.int8 import int8_kernel

        quant_path = os.path.join(run_dir, COMPILED_DIR, QUANT_FILE)
        # The budget simulates the weights the target's kernel will have (7-bit on AVX2, 6 with avx2-pairs).
        weight_qmax = int8_kernel(resolve_target(cfg.compile.target), cfg.compile.quantize.kernel).weight_qmax
        quantize = prepare_int8(cfg.compile.quantize, data_for(cfg), model_dir, quant_path, cfg.seed, reporter, cfg.eval.decode, weight_qmax)
    for shape in shapes:
        tag = f"{shape[0]}x{shape[1]}"
        program = os.path.join(run_dir, EXPORT_DIR, "model.pt2")
        if export_meta.get("shape") != list(shape) or not os.path.isfile(program):
            program = os.path.join(run_dir, COMPILED_DIR, f"program-{tag}.pt2")
            if not os.path.isfile(program):
                reporter.log(f"exporting a torch.export program at {tag}")
                os.makedirs(os.path.dirname(program), exist_ok=True)
                export_program(model_dir, shape, program)
        # a symbolic length: built for lengths MIN_ANY_LENGTH .. max_length
        symbolic = shape[1] == ANY_LENGTH
        built_shape, lengths = ([shape[0], max_length], [MIN_ANY_LENGTH, max_length]) if symbolic else (list(shape), None)
        for precision in cfg.compile.precisions:
            name = f"tvm-{precision}-{tag}"
            request = {
                "program": program,
                "out_dir": os.path.join(run_dir, COMPILED_DIR, name),
                "precision": precision,
                "target": cfg.compile.target,
                "model_dir": model_dir,
                "shape": built_shape,
                "lengths": lengths,
                "config_hash": cfg.digest(),
                "tuning": {**tuning.model_dump(), "database": tuning.database or default_db},
                "quantize": quantize,
            }
            log = os.path.join(run_dir, COMPILED_DIR, f"{name}.log")
            results[name] = run_isolated("pipelines.compile.compiler", request, reporter, log)
    return results


def stage_bench(cfg: RunConfig, run_dir: str, reporter: Reporter) -> dict:
    from pipelines.evaluate.bench import benchmark, corpus_throughput

    bc = cfg.bench
    if bc.rpc is not None:
        _log_devices(bc.rpc, "the TVM engines run", reporter)
        if not any(e.startswith("tvm-") for e in bc.engines):
            reporter.log("bench.rpc: no TVM engine in bench.engines, so everything runs here", level="warning")
    report = benchmark(run_dir, bc.engines, bc.batch, bc.seq, bc.warmup, bc.iterations, bc.max_seconds, bc.threads, reporter, bc.rpc)
    if bc.corpus:  # whole-test-set throughput over the run's eval split
        split = data_for(cfg).splits[cfg.eval.split]
        count = len(split) if bc.corpus_sentences is None else min(bc.corpus_sentences, len(split))
        sentences = column(split.select(range(count)), "tokens")
        reporter.log(f"whole-split throughput: {cfg.eval.split}, {count} sentences, {bc.corpus_passes} passes per engine")
        report["corpus_split"] = cfg.eval.split
        report["corpus"], report["corpus_skipped"] = corpus_throughput(
            run_dir, bc.engines, sentences, bc.corpus_batch, bc.corpus_passes, bc.instances, bc.threads, reporter, bc.rpc
        )
    write_json(os.path.join(run_dir, "bench.json"), report)
    reporter.artifact("bench", os.path.join(run_dir, "bench.json"))
    return {"results": len(report["results"]), "corpus": len(report.get("corpus", []))}


def _log_devices(rpc, what: str, reporter: Reporter) -> None:
    """Check the tracker has devices of the key (a one-line ``RemoteError`` if not) and say where the work goes."""
    from pipelines.runtime.remote import key_devices

    d = key_devices(rpc)
    reporter.log(f"{what} on rpc:{rpc.key} at {rpc.tracker}: {d['total']} devices, {d['free']} free")


STAGES: dict[str, Callable[[RunConfig, str, Reporter], dict]] = {
    "pretrain": stage_pretrain,
    "distill": stage_distill,
    "train": stage_train,
    "export": stage_export,
    "eval": stage_eval,
    "compile": stage_compile,
    "bench": stage_bench,
}


def record_metrics(run_dir: str, stage: str, metrics: dict) -> None:
    path = os.path.join(run_dir, METRICS_FILE)
    all_metrics = read_json(path, {})
    all_metrics[stage] = metrics
    write_json(path, all_metrics)
