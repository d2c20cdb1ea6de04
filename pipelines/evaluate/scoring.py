"""Scoring a model on a split with any engine: predictions, entity scores, agreement.

``infer`` runs one engine over a split and saves its predictions (JSON lines: text,
gold, pred); ``evaluate`` scores them and, in a run, writes ``eval/SPLIT-ENGINE.json``;
``score_predictions`` scores a saved file without a model. Both add the entity error
counts (``errors``: see ``errors.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import time

from pipelines.data.loaders import column, load_split
from pipelines.data.news import NEWS_SPLIT, news_dataset
from pipelines.evaluate.errors import error_counts, read_predictions
from pipelines.evaluate.metrics import ner_metrics
from pipelines.events import Reporter
from pipelines.files import atomic_path, write_json
from pipelines.layout import EVAL_DIR, run_decoder
from pipelines.modeling.models import ModelError, ModelMeta, model_encoder, resolve_model_dir
from pipelines.runtime.engines import ENGINE_NAMES, EngineError
from pipelines.runtime.predict import decode, predict_logits
from pipelines.runtime.remote import RemoteDevice, open_engine_on, remote_name, runs_remotely, split_remote

PREDICTIONS_SUFFIX = ".predictions.jsonl"


def infer(
    run_or_model_dir: str,
    dataset,
    split_name: str,
    reporter: Reporter,
    engine_name: str = "torch",
    batch_size: int = 64,
    out_path: str | None = None,
    decoder: str | None = None,
    rpc=None,
) -> tuple[list, list, list, float]:
    """Run one engine over a split: (sentences, gold tags, predicted tags, seconds).

    Predictions are saved as JSON lines (text, gold, pred) to ``out_path``, or into
    the run's ``eval/`` when given a run, so ``eval --predictions`` can score them.
    With ``rpc`` (an ``RpcConfig``), a TVM engine runs on a device of its key and is
    named for it (``tvm-fp32+rpc-KEY``): its files sit beside the local engine's."""
    model_dir = resolve_model_dir(run_or_model_dir)
    meta = ModelMeta.load(model_dir)
    if rpc is not None and not runs_remotely(engine_name):
        raise EngineError(f"{engine_name} runs here only: an RPC device takes the compiled TVM engines (tvm-fp32, tvm-fp16, tvm-int8)")
    with RemoteDevice(rpc) if rpc is not None else contextlib.nullcontext() as device:  # its session ends with the run
        engine = open_engine_on(engine_name, run_or_model_dir, device)
        engine_name = engine.name if device is not None else engine_name
        encoder = model_encoder(model_dir)
        sentences = column(dataset, "tokens")
        names = dataset.features["ner_tags"].feature.names
        gold = [[names[t] for t in tags] for tags in column(dataset, "ner_tags")]
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
        del engine
    decoder = decoder or run_decoder(run_or_model_dir)
    pred = [decode(lg, meta.labels, decoder, meta.crf) for lg in logits]
    if out_path is None and model_dir != run_or_model_dir:
        out_path = predictions_path(run_or_model_dir, split_name, engine_name, decoder)
    if out_path:
        _write_predictions(out_path, sentences, gold, pred)
        reporter.artifact("predictions", out_path)
    return sentences, gold, pred, seconds


def eval_stem(run_dir: str, split_name: str, engine_name: str, decoder: str | None = None) -> str:
    """Name of a run's scores / predictions for one split, engine and decoding:
    ``test-torch`` with the run's own ``eval.decode``, ``test-torch@argmax`` with another,
    so scoring another decoding never overwrites the run's own scores."""
    stem = f"{split_name}-{engine_name}"
    if decoder and decoder != run_decoder(run_dir):
        stem += f"@{decoder}"
    return stem


def predictions_path(run_dir: str, split_name: str, engine_name: str, decoder: str | None = None) -> str:
    return os.path.join(run_dir, EVAL_DIR, eval_stem(run_dir, split_name, engine_name, decoder) + PREDICTIONS_SUFFIX)


def parse_stem(stem: str) -> tuple[str, str]:
    """(split, engine) of an ``eval_stem`` (SPLIT-ENGINE[+rpc-KEY][@DECODER]); both may hold
    dashes, so the engine is the longest known engine name the stem ends with ("" if none),
    with its RPC device key if it ran on one (``test-tvm-fp32+rpc-pi``: test, tvm-fp32+rpc-pi)."""
    base, key = split_remote(stem.split("@")[0])
    engine = next((e for e in sorted(ENGINE_NAMES, key=len, reverse=True) if base.endswith("-" + e)), "")
    if not engine:
        return stem.split("@")[0], ""
    return base[: -len(engine) - 1], remote_name(engine, key) if key else engine


def evaluate(
    run_or_model_dir: str,
    dataset,
    split_name: str,
    reporter: Reporter,
    engine_name: str = "torch",
    strict: bool = False,
    batch_size: int = 64,
    decoder: str | None = None,
    rpc=None,
) -> dict:
    """Score a model on a split with one engine; saves scores and predictions when in a run.
    ``decoder`` None: the run's ``eval.decode``. ``rpc``: on a tracker's device (``infer``)."""
    decoder = decoder or run_decoder(run_or_model_dir)
    _, gold, pred, seconds = infer(run_or_model_dir, dataset, split_name, reporter, engine_name, batch_size, decoder=decoder, rpc=rpc)
    if rpc is not None:
        engine_name = remote_name(engine_name, rpc.key)
    scores = ner_metrics(gold, pred, strict=strict)
    scores.update(engine=engine_name, split=split_name, seconds=round(seconds, 2), decode=decoder, errors=error_counts(gold, pred))
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
    """Scores and error counts of a saved predictions file (from ``infer`` or ``eval``)."""
    rows = read_predictions(path)
    gold, pred = [r.gold for r in rows], [r.pred for r in rows]
    return {**ner_metrics(gold, pred, strict=strict), "errors": error_counts(gold, pred)}


def _agreement(reference_path: str, pred: list[list[str]]) -> float | None:
    with open(reference_path, encoding="utf-8") as f:
        reference = [json.loads(line)["pred"] for line in f]
    if [len(r) for r in reference] != [len(p) for p in pred]:
        return None  # predictions of another split or data version
    total = sum(len(p) for p in pred)
    same = sum(a == b for r, p in zip(reference, pred) for a, b in zip(r, p))
    return same / total if total else None


def _write_predictions(path: str, sentences, gold, pred) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for chars, g, p in zip(sentences, gold, pred):
            f.write(json.dumps({"text": "".join(chars), "gold": g, "pred": p}, ensure_ascii=False) + "\n")


def split_from_spec(run_or_model_dir: str, spec: str):
    """(dataset, split name) for a CLI data spec (``conll:PATH``, ``msra:test``, ``hub:ID:test``, ``news``)."""
    meta = ModelMeta.load(resolve_model_dir(run_or_model_dir))
    if spec == NEWS_SPLIT:
        return news_dataset(meta.labels), NEWS_SPLIT
    dataset = load_split(spec, meta.labels)
    if spec.startswith("conll:"):
        return dataset, "conll-" + os.path.splitext(os.path.basename(spec[len("conll:") :]))[0]
    return dataset, spec.replace(":", "-")
