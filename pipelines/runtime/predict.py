"""Batched prediction over any engine, decoding, and entity spans.

An engine is anything with ``logits(input_ids, attention_mask) -> np.ndarray``
(``[batch, seq, labels]``, int64 inputs). Windowing, batching and decoding live
here once, so every engine gives the same tags for the same logits.
"""

from __future__ import annotations

import contextlib
import gc
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np

from pipelines.data.encoding import CharEncoder, length_batches, make_windows, pad_batch, stitch
from pipelines.data.loaders import entity_spans


class Engine(Protocol):
    name: str

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...


def predict_logits(
    engine: Engine,
    sentences: Sequence[Sequence[str]],
    encoder: CharEncoder,
    max_length: int,
    stride: int | None = None,
    batch_size: int = 64,
    on_batch: Callable[[int, int], None] | None = None,
) -> list[np.ndarray]:
    """Per-sentence ``[chars, labels]`` logits (stitched across windows). Engines
    compiled at a static shape pad each batch to it themselves (``FixedShapeEngine``);
    sentences longer than an engine takes (its ``max_length``) are windowed to it."""
    engine_limit = getattr(engine, "max_length", None)
    if engine_limit and engine_limit < max_length:
        max_length, stride = engine_limit, None  # the default overlap for that length
    with collector_paused():
        return _predict_logits(engine, sentences, encoder, max_length, stride, batch_size, on_batch)


@contextlib.contextmanager
def collector_paused():
    """Python's cycle collector off for a block that makes many lists and no cycles: a
    collection it triggers walks every object of the process (a corpus, a tokenizer,
    torch), 0.1-0.15 s on some passes over the MSRA test (0.26 s outside the engine)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _predict_logits(engine, sentences, encoder, max_length, stride, batch_size, on_batch) -> list[np.ndarray]:
    windows = make_windows(sentences, encoder, max_length, stride)
    pieces: list[np.ndarray | None] = [None] * len(windows)
    batches = length_batches([len(w.ids) for w in windows], batch_size)
    for done, batch in enumerate(batches, 1):
        ids, mask = pad_batch([windows[i].ids for i in batch], encoder.pad_id)
        out = engine.logits(ids, mask)
        for row, i in enumerate(batch):
            w = windows[i]
            pieces[i] = out[row, 1 : 1 + w.end - w.start]
        if on_batch:
            on_batch(done, len(batches))
    by_sentence: dict[int, list[int]] = {}
    for i, w in enumerate(windows):
        by_sentence.setdefault(w.sentence, []).append(i)
    results = []
    for s, chars in enumerate(sentences):
        idx = by_sentence[s]  # an empty sentence still has one (empty) window
        results.append(stitch(len(chars), [(windows[i].start, windows[i].end) for i in idx], [pieces[i] for i in idx]))
    return results


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


DECODERS = ("argmax", "bio")


def decode(logits: np.ndarray, labels: Sequence[str], method: str = "argmax", crf: dict | None = None) -> list[str]:
    """Tags from ``[chars, labels]`` logits: per-character argmax, or ``bio``: the most
    probable tag sequence that is valid BIO (constrained Viterbi). For a model with a
    CRF (``crf``: its ``ModelMeta.crf`` scores) ``bio`` decodes with its transitions."""
    if method == "bio":
        return [labels[i] for i in viterbi_bio(logits, labels, crf)]
    if method != "argmax":
        raise ValueError(f"unknown decoder {method!r} (use {' or '.join(DECODERS)})")
    return [labels[i] for i in logits.argmax(axis=-1)]


def bio_transitions(labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(allowed first tags ``[L]``, allowed ``[previous, next]`` pairs ``[L, L]``):
    I-X only after B-X or I-X, so never first and never after O or another type."""
    inside = [label[2:] if label.startswith("I-") else None for label in labels]
    entity = [label[2:] if label[:2] in ("B-", "I-") else None for label in labels]
    start = np.array([t is None for t in inside])
    allowed = np.array([[inside[j] is None or inside[j] == entity[i] for j in range(len(labels))] for i in range(len(labels))])
    return start, allowed


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def chain_scores(logits: np.ndarray, labels: Sequence[str], crf: dict | None = None):
    """(per-step scores ``[n, L]``, first-tag ``[L]``, transition ``[L, L]`` and last-tag
    ``[L]`` scores) of the sequences decoding chooses among: valid BIO ones, scored by
    the per-character log-softmax, or by a CRF's emissions and learned scores."""
    start, allowed = bio_transitions(labels)
    forbid = np.where(allowed, 0.0, -np.inf)
    first = np.where(start, 0.0, -np.inf)
    if crf is None:
        return log_softmax(logits), first, forbid, np.zeros(len(labels))
    return (
        np.asarray(logits, dtype=np.float64),
        first + np.asarray(crf["start"]),
        forbid + np.asarray(crf["transitions"]),
        np.asarray(crf["end"], dtype=np.float64),
    )


def viterbi_bio(logits: np.ndarray, labels: Sequence[str], crf: dict | None = None) -> np.ndarray:
    """Label indices of the best valid BIO sequence (``chain_scores``). Without a CRF,
    log-softmax, not raw logits: a sequence's score is then its log-probability under
    the per-character model, which argmax also maximises."""
    n = len(logits)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    scores, first, transition, last = chain_scores(logits, labels, crf)
    best = first + scores[0]
    back = np.zeros((n, len(labels)), dtype=np.int64)
    for t in range(1, n):
        candidates = best[:, None] + transition  # [previous, next]
        back[t] = candidates.argmax(axis=0)
        best = candidates[back[t], np.arange(len(labels))] + scores[t]
    path = np.empty(n, dtype=np.int64)
    path[-1] = (best + last).argmax()
    for t in range(n - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    top = np.max(x, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return np.squeeze(top, axis) + np.log(np.exp(x - top).sum(axis=axis))


def crf_marginals(logits: np.ndarray, labels: Sequence[str], crf: dict) -> np.ndarray:
    """``[n, L]`` probability of each tag at each character under the CRF, over the
    valid BIO sequences (forward-backward): what a tag's confidence is for a CRF model,
    whose emissions alone are no probabilities."""
    scores, first, transition, last = chain_scores(logits, labels, crf)
    n = len(scores)
    alpha, beta = np.empty_like(scores), np.empty_like(scores)
    alpha[0] = first + scores[0]
    for t in range(1, n):
        alpha[t] = _logsumexp(alpha[t - 1][:, None] + transition, 0) + scores[t]
    beta[-1] = last
    for t in range(n - 2, -1, -1):
        beta[t] = _logsumexp(transition + (scores[t + 1] + beta[t + 1])[None, :], 1)
    total = _logsumexp(alpha[-1] + last, 0)
    return np.exp(alpha + beta - total)


@dataclass
class Entity:
    type: str
    start: int  # character offset, inclusive
    end: int  # character offset, exclusive
    text: str
    confidence: float

    def as_dict(self) -> dict:
        return {"type": self.type, "start": self.start, "end": self.end, "text": self.text, "confidence": round(self.confidence, 4)}


def extract_entities(
    text: str, logits: np.ndarray, labels: Sequence[str], method: str = "argmax", crf: dict | None = None
) -> list[Entity]:
    chars = list(text)
    if not chars:
        return []
    probs = softmax(logits) if crf is None else crf_marginals(logits, labels, crf)
    tags = decode(logits, labels, method, crf)
    # The probability of the tag chosen (the top one under argmax; not always under bio).
    chosen = probs[np.arange(len(tags)), [labels.index(t) for t in tags]]
    return [
        Entity(etype, start, end, "".join(chars[start:end]), float(chosen[start:end].mean()))
        for etype, start, end in entity_spans(tags)
    ]
