"""Entity-level error analysis: what kind of mistake each wrong entity is, and how two
predictions files of the same sentences (two engines, fp32 and int8) differ.

The categories (MUC / SemEval-2013), for the entities of one sentence:

  correct                  same span, same type
  wrong_type               same span, another type
  wrong_boundary           overlapping spans, same type, other boundaries
  wrong_type_and_boundary  overlapping spans, another type and other boundaries
  missed                   a gold entity left without a partner
  spurious                 a predicted entity left without a partner

Pairing is one to one, so every gold and every predicted entity counts exactly once:
gold = correct + wrong_* + missed, predicted = correct + wrong_* + spurious, and
``correct`` is seqeval's true positives. Overlapping (gold, prediction) pairs are taken
greedily, the largest overlap first (ties: the same type first, then leftmost). An entity
whose only overlapping partner was taken by a larger overlap is missed (or spurious): gold
ORG 中国致公党 against predictions LOC 中国 and ORG 致公党 is one wrong_boundary
(致公党) and one spurious (中国).

Entities are read as conlleval and seqeval's default mode read them (``entity_spans``: an
I- that continues nothing opens an entity). Under ``--strict`` the counts can differ from
the scores, but only where the tags are not valid BIO (never with ``bio`` decoding).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

from pipelines.modeling.models import ModelError
from pipelines.data.loaders import entity_spans

ERROR_KINDS = ("missed", "spurious", "wrong_type", "wrong_boundary", "wrong_type_and_boundary")
KINDS = ("correct", *ERROR_KINDS)


@dataclass(frozen=True)
class Span:
    type: str
    start: int  # character offset, inclusive
    end: int  # character offset, exclusive
    text: str

    def overlap(self, other: "Span") -> int:
        return max(0, min(self.end, other.end) - max(self.start, other.start))


def spans(text: str, tags: Sequence[str]) -> list[Span]:
    return [Span(etype, start, end, text[start:end]) for etype, start, end in entity_spans(tags)]


@dataclass(frozen=True)
class Outcome:
    """One gold entity, one prediction, or a pair of them, and what kind of match it is."""

    kind: str
    gold: Span | None  # None when spurious
    pred: Span | None  # None when missed

    @property
    def type(self) -> str:
        """The type it counts under: the gold's, or the prediction's when spurious."""
        return (self.gold or self.pred).type


def classify(gold: Sequence[Span], pred: Sequence[Span]) -> list[Outcome]:
    """Every entity of one sentence, paired and classified (see the module's doc), in the
    order they start (ties: pairs, then missed, then spurious)."""
    pairs = sorted(
        ((g, p) for g in range(len(gold)) for p in range(len(pred)) if gold[g].overlap(pred[p])),
        key=lambda gp: (-gold[gp[0]].overlap(pred[gp[1]]), gold[gp[0]].type != pred[gp[1]].type, gp),
    )
    partner: dict[int, int] = {}  # gold index -> prediction index
    for g, p in pairs:
        if g not in partner and p not in partner.values():
            partner[g] = p
    outcomes = [Outcome(_pair_kind(gold[g], pred[p]), gold[g], pred[p]) for g, p in partner.items()]
    outcomes += [Outcome("missed", s, None) for g, s in enumerate(gold) if g not in partner]
    outcomes += [Outcome("spurious", None, s) for p, s in enumerate(pred) if p not in partner.values()]
    return sorted(outcomes, key=lambda o: min(s.start for s in (o.gold, o.pred) if s is not None))


def _pair_kind(gold: Span, pred: Span) -> str:
    same_type = gold.type == pred.type
    if (gold.start, gold.end) == (pred.start, pred.end):
        return "correct" if same_type else "wrong_type"
    return "wrong_boundary" if same_type else "wrong_type_and_boundary"


@dataclass
class Sentence:
    """One sentence's entities and their outcomes; ``index`` counts from 0 (file line - 1)."""

    index: int
    text: str
    gold: list[Span]
    pred: list[Span]
    outcomes: list[Outcome]

    @property
    def errors(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.kind != "correct"]

    @property
    def kinds(self) -> list[str]:
        """Its error kinds, in ``ERROR_KINDS`` order."""
        found = {o.kind for o in self.outcomes}
        return [k for k in ERROR_KINDS if k in found]

    def has(self, kind: str | None = None, entity_type: str | None = None) -> bool:
        """Whether one of its errors is of this kind and type (None: any)."""
        return any((kind is None or o.kind == kind) and (entity_type is None or o.type == entity_type) for o in self.errors)


def analyse(index: int, text: str, gold_tags: Sequence[str], pred_tags: Sequence[str]) -> Sentence:
    gold, pred = spans(text, gold_tags), spans(text, pred_tags)
    return Sentence(index, text, gold, pred, classify(gold, pred))


@dataclass
class ErrorReport:
    """A corpus's outcomes: counts per kind (``correct`` too) and per type, and the
    sentences that have errors."""

    sentences: int
    counts: dict[str, int]
    by_type: dict[str, dict[str, int]]  # type -> error kind -> count
    with_errors: list[Sentence]

    def as_json(self) -> dict:
        """The eval JSON's ``errors`` field: errors only (``correct`` is not one)."""
        return {"counts": {k: self.counts[k] for k in ERROR_KINDS}, "by_type": self.by_type}

    def filtered(self, kind: str | None = None, entity_type: str | None = None) -> list[Sentence]:
        return [s for s in self.with_errors if s.has(kind, entity_type)]


def error_report(texts: Sequence[str], gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> ErrorReport:
    if not len(texts) == len(gold) == len(pred):
        raise ValueError(f"{len(texts)} sentences, {len(gold)} gold and {len(pred)} predicted tag sequences")
    counts = dict.fromkeys(KINDS, 0)
    types: set[str] = set()
    by_kind_type: dict[tuple[str, str], int] = {}
    with_errors = []
    for i, (text, g, p) in enumerate(zip(texts, gold, pred)):
        sentence = analyse(i, text, g, p)
        types.update(s.type for s in (*sentence.gold, *sentence.pred))
        for o in sentence.outcomes:
            counts[o.kind] += 1
            by_kind_type[o.kind, o.type] = by_kind_type.get((o.kind, o.type), 0) + 1
        if sentence.errors:
            with_errors.append(sentence)
    by_type = {t: {k: by_kind_type.get((k, t), 0) for k in ERROR_KINDS} for t in sorted(types)}
    return ErrorReport(len(gold), counts, by_type, with_errors)


def error_counts(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict:
    """The eval JSON's ``errors`` field for tag sequences (no text needed)."""
    return error_report([""] * len(gold), gold, pred).as_json()


# -- predictions files ---------------------------------------------------------


@dataclass
class PredictionRow:
    text: str
    gold: list[str]
    pred: list[str]


def read_predictions(path: str) -> list[PredictionRow]:
    """A predictions file (JSON lines ``{"text", "gold", "pred"}``, as ``infer`` writes them)."""
    try:
        with open(path, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        raise ModelError(f"{path}: no such predictions file") from None
    except json.JSONDecodeError as err:
        raise ModelError(f"{path}: not a predictions file (line {err.lineno}: {err.msg})") from None
    if not rows or not all(isinstance(r, dict) and {"gold", "pred"} <= set(r) for r in rows):
        raise ModelError(f"{path}: not a predictions file (each line needs gold and pred)")
    return [PredictionRow(r.get("text", ""), r["gold"], r["pred"]) for r in rows]


def file_report(path: str) -> ErrorReport:
    rows = read_predictions(path)
    return error_report([r.text for r in rows], [r.gold for r in rows], [r.pred for r in rows])


# -- two predictions of the same sentences -------------------------------------


@dataclass
class SentenceDiff:
    """A sentence whose predicted entities differ between A and B."""

    index: int
    text: str
    gold: list[Span]
    pred_a: list[Span]
    pred_b: list[Span]
    lost: list[Span]  # gold entities A got right and B does not
    gained: list[Span]  # gold entities B gets right and A did not

    @property
    def mark(self) -> str:
        """lost, gained, both, or changed: other entities, but the same ones right."""
        return " + ".join(name for name, found in (("lost", self.lost), ("gained", self.gained)) if found) or "changed"

    def has(self, change: str | None = None, entity_type: str | None = None) -> bool:
        """Whether it lost (``lost``) or gained (``gained``) an entity of this type, or
        (``change`` None) changed any entity of this type."""
        changed = {"lost": self.lost, "gained": self.gained}.get(change or "", set(self.pred_a) ^ set(self.pred_b))
        return any(entity_type is None or s.type == entity_type for s in changed)


@dataclass
class PredictionsDiff:
    path_a: str
    path_b: str
    sentences: int
    differing: list[SentenceDiff]

    @property
    def lost(self) -> int:
        return sum(len(d.lost) for d in self.differing)

    @property
    def gained(self) -> int:
        return sum(len(d.gained) for d in self.differing)

    def counts(self) -> dict[str, int]:
        return {"sentences": len(self.differing), "lost": self.lost, "gained": self.gained}

    def filtered(self, change: str | None = None, entity_type: str | None = None) -> list[SentenceDiff]:
        return [d for d in self.differing if d.has(change, entity_type)]


def diff_predictions(path_a: str, path_b: str) -> PredictionsDiff:
    """The sentences whose predicted entities differ between two files of the same
    sentences, with the entities B lost and gained against A."""
    rows_a, rows_b = read_predictions(path_a), read_predictions(path_b)
    if len(rows_a) != len(rows_b):
        raise ModelError(f"{path_a} and {path_b} are not predictions of the same sentences ({len(rows_a)} vs {len(rows_b)} lines)")
    differing = []
    for i, (a, b) in enumerate(zip(rows_a, rows_b)):
        if (a.text, a.gold) != (b.text, b.gold):
            raise ModelError(f"{path_a} and {path_b} are not predictions of the same sentences (line {i + 1} differs)")
        gold, pred_a, pred_b = spans(a.text, a.gold), spans(a.text, a.pred), spans(a.text, b.pred)
        if pred_a == pred_b:
            continue
        right_a, right_b = set(gold) & set(pred_a), set(gold) & set(pred_b)
        lost = [s for s in gold if s in right_a - right_b]
        gained = [s for s in gold if s in right_b - right_a]
        differing.append(SentenceDiff(i, a.text, gold, pred_a, pred_b, lost, gained))
    return PredictionsDiff(path_a, path_b, len(rows_a), differing)
