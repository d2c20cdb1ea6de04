"""The stages of a run, as plain functions over a run directory.

Layout of a run directory (the run store in ``workbench`` indexes these):
``config.yaml`` resolved config · ``events.jsonl`` every event · ``metrics.json``
per-stage metrics · ``model/`` fine-tuned model · ``export/`` TorchScript and
torch.export programs · ``eval/`` scores and predictions per split and engine.
"""

from __future__ import annotations

import json
import os
import time
from functools import lru_cache
from typing import Callable

from .config import RunConfig
from .data import NerData, load_data, load_split
from .encoding import CharEncoder
from .engines import COMPILED_DIR, EXPORT_DIR, MODEL_DIR, open_engine
from .events import Reporter
from .export import export_model
from .files import read_json, write_json
from .metrics import ner_metrics
from .models import ModelError, ModelMeta, load_tokenizer
from .predict import decode, predict_logits

EVAL_DIR = "eval"
METRICS_FILE = "metrics.json"


@lru_cache(maxsize=2)
def _cached_data(data_json: str, seed: int) -> NerData:
    from .config import DataConfig

    return load_data(DataConfig.model_validate_json(data_json), seed)


def data_for(cfg: RunConfig) -> NerData:
    """The run's corpus, loaded once per process however many stages need it."""
    return _cached_data(cfg.data.model_dump_json(), cfg.seed)


def transfer_text(sources, cfg: RunConfig, reporter: Reporter):
    """Unlabeled sentences from ``sources``, less any that share text with the test split."""
    from .corpus import drop_leaks, load_corpus

    sentences = load_corpus(sources)
    test = data_for(cfg).splits.get("test")
    if test is not None:
        sentences, dropped = drop_leaks(sentences, ("".join(t) for t in test["tokens"]))
        reporter.log(f"dropped {dropped} sentences sharing text with the test split")
    return sentences


def with_run_weights(cfg: RunConfig, run_dir: str, reporter: Reporter, upstream: tuple[str, ...]) -> RunConfig:
    """``cfg`` starting from this run's own weights of the first of ``upstream`` stages
    it lists that left them: distill's student, else pretrain's MLM checkpoint. The
    user's ``model.pretrained`` beats pretrain's weights but not distill's, since
    distill itself started from it."""
    from .distill import DISTILLED_DIR
    from .pretrain import PRETRAINED_DIR

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
    from .pretrain import pretrain

    return pretrain(cfg, transfer_text(cfg.pretrain.sources, cfg, reporter), run_dir, reporter)


def stage_distill(cfg: RunConfig, run_dir: str, reporter: Reporter) -> dict:
    from .config import ConfigError
    from .distill import distill

    if not cfg.distill.teacher:
        raise ConfigError("distill.teacher is not set (a fine-tuned run or model directory)")
    teacher = resolve_model_dir(cfg.distill.teacher)
    cfg = with_run_weights(cfg, run_dir, reporter, ("pretrain",))
    return distill(cfg, teacher, transfer_text(cfg.distill.sources, cfg, reporter), data_for(cfg), run_dir, reporter)


def stage_train(cfg: RunConfig, run_dir: str, reporter: Reporter) -> dict:
    from .train import train

    cfg = with_run_weights(cfg, run_dir, reporter, ("distill", "pretrain"))
    data = data_for(cfg)
    sizes = ", ".join(f"{name} {len(ds)}" for name, ds in data.splits.items())
    reporter.log(f"data: {cfg.data.source} ({sizes} sentences); labels {' '.join(data.labels)}")
    return train(cfg, data, os.path.join(run_dir, MODEL_DIR), reporter)


def stage_export(cfg: RunConfig, run_dir: str, reporter: Reporter) -> dict:
    model_dir = resolve_model_dir(run_dir)
    data = data_for(cfg)
    split = data.splits["dev" if "dev" in data.splits else "test"]
    return export_model(model_dir, os.path.join(run_dir, EXPORT_DIR), cfg.export, split["tokens"], reporter)


def stage_eval(cfg: RunConfig, run_dir: str, reporter: Reporter) -> dict:
    dataset = data_for(cfg).splits[cfg.eval.split]
    ec = cfg.eval
    return evaluate(run_dir, dataset, ec.split, reporter, strict=ec.strict, batch_size=ec.batch_size, decoder=ec.decode)


def stage_compile(cfg: RunConfig, run_dir: str, reporter: Reporter) -> dict:
    """One TVM artifact per shape and precision, each built in a child process."""
    from .export import export_program, read_export_meta
    from .isolate import run_isolated

    model_dir = resolve_model_dir(run_dir)
    for notice in cfg.compile.notices:
        reporter.log(notice, level="warning")
    export_meta = read_export_meta(os.path.join(run_dir, EXPORT_DIR)) or {}
    results = {}
    tuning = cfg.compile.tuning
    default_db = os.path.join(os.path.dirname(os.path.abspath(run_dir)), "tuning-db")
    quantize = None
    if "int8" in cfg.compile.precisions:  # calibrated once, for every shape
        from .calibrate import QUANT_FILE, prepare_int8

        quant_path = os.path.join(run_dir, COMPILED_DIR, QUANT_FILE)
        quantize = prepare_int8(cfg.compile.quantize, data_for(cfg), model_dir, quant_path, cfg.seed, reporter, cfg.eval.decode)
    for shape in cfg.compile.shapes or [cfg.export.shape]:
        tag = f"{shape[0]}x{shape[1]}"
        program = os.path.join(run_dir, EXPORT_DIR, "model.pt2")
        if export_meta.get("shape") != list(shape) or not os.path.isfile(program):
            program = os.path.join(run_dir, COMPILED_DIR, f"program-{tag}.pt2")
            if not os.path.isfile(program):
                reporter.log(f"exporting a torch.export program at {tag}")
                os.makedirs(os.path.dirname(program), exist_ok=True)
                export_program(model_dir, shape, program)
        for precision in cfg.compile.precisions:
            name = f"tvm-{precision}-{tag}"
            request = {
                "program": program,
                "out_dir": os.path.join(run_dir, COMPILED_DIR, name),
                "precision": precision,
                "target": cfg.compile.target,
                "model_dir": model_dir,
                "shape": list(shape),
                "config_hash": cfg.digest(),
                "tuning": {**tuning.model_dump(), "database": tuning.database or default_db},
                "quantize": quantize,
            }
            log = os.path.join(run_dir, COMPILED_DIR, f"{name}.log")
            results[name] = run_isolated("pipelines.compiler", request, reporter, log)
    return results


def stage_bench(cfg: RunConfig, run_dir: str, reporter: Reporter) -> dict:
    from .bench import benchmark

    bc = cfg.bench
    report = benchmark(run_dir, bc.engines, bc.batch, bc.seq, bc.warmup, bc.iterations, bc.max_seconds, bc.threads, reporter)
    write_json(os.path.join(run_dir, "bench.json"), report)
    reporter.artifact("bench", os.path.join(run_dir, "bench.json"))
    return {"results": len(report["results"])}


STAGES: dict[str, Callable[[RunConfig, str, Reporter], dict]] = {
    "pretrain": stage_pretrain,
    "distill": stage_distill,
    "train": stage_train,
    "export": stage_export,
    "eval": stage_eval,
    "compile": stage_compile,
    "bench": stage_bench,
}


def resolve_model_dir(path: str) -> str:
    """A run directory (its ``model/``) or a model directory itself."""
    inner = os.path.join(path, MODEL_DIR)
    if os.path.isdir(inner):
        return inner
    if os.path.isfile(os.path.join(path, "config.json")):
        return path
    if os.path.isdir(path):
        raise ModelError(f"{path}: holds no trained model (run the train stage first)")
    raise ModelError(f"{path}: no such run or model directory")


def infer(
    run_or_model_dir: str,
    dataset,
    split_name: str,
    reporter: Reporter,
    engine_name: str = "torch",
    batch_size: int = 64,
    out_path: str | None = None,
    decoder: str | None = None,
) -> tuple[list, list, list, float]:
    """Run one engine over a split: (sentences, gold tags, predicted tags, seconds).

    Predictions are saved as JSON lines (text, gold, pred) to ``out_path``, or into
    the run's ``eval/`` when given a run, so ``eval --predictions`` can score them."""
    model_dir = resolve_model_dir(run_or_model_dir)
    meta = ModelMeta.load(model_dir)
    engine = open_engine(engine_name, run_or_model_dir)
    encoder = CharEncoder(load_tokenizer(model_dir))
    sentences = dataset["tokens"]
    names = dataset.features["ner_tags"].feature.names
    gold = [[names[t] for t in tags] for tags in dataset["ner_tags"]]
    if set(names) != set(meta.labels):
        raise ModelError(f"the data's labels ({', '.join(names)}) differ from the model's ({', '.join(meta.labels)})")

    reporter.log(f"running {engine_name} on {split_name}: {len(sentences)} sentences")
    t0 = time.monotonic()
    logits = predict_logits(
        engine,
        sentences,
        encoder,
        meta.max_length,
        meta.window_stride,
        batch_size=batch_size,
        on_batch=lambda n, total: reporter.progress(n, total, "batches"),
    )
    seconds = time.monotonic() - t0
    decoder = decoder or run_decoder(run_or_model_dir)
    pred = [decode(lg, meta.labels, decoder) for lg in logits]
    if out_path is None and model_dir != run_or_model_dir:
        out_path = predictions_path(run_or_model_dir, split_name, engine_name, decoder)
    if out_path:
        _write_predictions(out_path, sentences, gold, pred)
        reporter.artifact("predictions", out_path)
    return sentences, gold, pred, seconds


def run_decoder(run_or_model_dir: str) -> str:
    """The run's ``eval.decode`` (the default for a bare model directory), so `tag`, the
    highlighter and `eval` decode a run's model the way its eval stage did."""
    import yaml

    from .config import EvalConfig

    try:
        with open(os.path.join(run_or_model_dir, "config.yaml"), encoding="utf-8") as f:
            raw = yaml.safe_load(f)
        return EvalConfig.model_validate((raw or {}).get("eval") or {}).decode
    except (OSError, yaml.YAMLError, ValueError, AttributeError):
        return EvalConfig().decode


def eval_stem(run_dir: str, split_name: str, engine_name: str, decoder: str | None = None) -> str:
    """Name of a run's scores / predictions for one split, engine and decoding:
    ``test-torch`` with the run's own ``eval.decode``, ``test-torch@argmax`` with another,
    so scoring another decoding never overwrites the run's own scores."""
    stem = f"{split_name}-{engine_name}"
    if decoder and decoder != run_decoder(run_dir):
        stem += f"@{decoder}"
    return stem


def predictions_path(run_dir: str, split_name: str, engine_name: str, decoder: str | None = None) -> str:
    return os.path.join(run_dir, EVAL_DIR, eval_stem(run_dir, split_name, engine_name, decoder) + ".predictions.jsonl")


def evaluate(
    run_or_model_dir: str,
    dataset,
    split_name: str,
    reporter: Reporter,
    engine_name: str = "torch",
    strict: bool = False,
    batch_size: int = 64,
    decoder: str | None = None,
) -> dict:
    """Score a model on a split with one engine; saves scores and predictions when in a run.
    ``decoder`` None: the run's ``eval.decode``."""
    decoder = decoder or run_decoder(run_or_model_dir)
    _, gold, pred, seconds = infer(run_or_model_dir, dataset, split_name, reporter, engine_name, batch_size, decoder=decoder)
    scores = ner_metrics(gold, pred, strict=strict)
    scores.update(engine=engine_name, split=split_name, seconds=round(seconds, 2), decode=decoder)
    for key in ("f1", "precision", "recall", "accuracy"):
        reporter.metric(f"{split_name}_{key}", scores[key])
    if resolve_model_dir(run_or_model_dir) != run_or_model_dir:
        reference = predictions_path(run_or_model_dir, split_name, "torch", decoder)
        if engine_name != "torch" and os.path.isfile(reference):
            # How faithful a compiled / quantised engine is to eager PyTorch, tag by tag.
            scores["agreement_with_torch"] = _agreement(reference, pred)
            reporter.metric("agreement_with_torch", scores["agreement_with_torch"])
        out = os.path.join(run_or_model_dir, EVAL_DIR, eval_stem(run_or_model_dir, split_name, engine_name, decoder) + ".json")
        write_json(out, scores)
        reporter.artifact("scores", out)
    return scores


def score_predictions(path: str, strict: bool = False) -> dict:
    """Scores of a saved predictions file (from ``infer`` or ``eval``)."""
    try:
        with open(path, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        raise ModelError(f"{path}: no such predictions file") from None
    except json.JSONDecodeError as err:
        raise ModelError(f"{path}: not a predictions file (line {err.lineno}: {err.msg})") from None
    if not rows or not all({"gold", "pred"} <= set(r) for r in rows):
        raise ModelError(f"{path}: not a predictions file (each line needs gold and pred)")
    return ner_metrics([r["gold"] for r in rows], [r["pred"] for r in rows], strict=strict)


def _agreement(reference_path: str, pred: list[list[str]]) -> float | None:
    with open(reference_path, encoding="utf-8") as f:
        reference = [json.loads(line)["pred"] for line in f]
    if [len(r) for r in reference] != [len(p) for p in pred]:
        return None  # predictions of another split or data version
    total = sum(len(p) for p in pred)
    same = sum(a == b for r, p in zip(reference, pred) for a, b in zip(r, p))
    return same / total if total else None


def _write_predictions(path: str, sentences, gold, pred) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for chars, g, p in zip(sentences, gold, pred):
            f.write(json.dumps({"text": "".join(chars), "gold": g, "pred": p}, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def split_from_spec(run_or_model_dir: str, spec: str):
    """(dataset, split name) for a CLI data spec (``conll:PATH``, ``msra:test``, ``hub:ID:test``)."""
    meta = ModelMeta.load(resolve_model_dir(run_or_model_dir))
    dataset = load_split(spec, meta.labels)
    if spec.startswith("conll:"):
        return dataset, "conll-" + os.path.splitext(os.path.basename(spec[len("conll:") :]))[0]
    return dataset, spec.replace(":", "-")


def record_metrics(run_dir: str, stage: str, metrics: dict) -> None:
    path = os.path.join(run_dir, METRICS_FILE)
    all_metrics = read_json(path, {})
    all_metrics[stage] = metrics
    write_json(path, all_metrics)
