"""Entity-level scores (seqeval) and token accuracy over real characters."""

from __future__ import annotations

from typing import Sequence


def ner_metrics(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], strict: bool = False) -> dict:
    """Micro P/R/F1 over entities, per-type P/R/F1/support, token accuracy.

    ``strict`` uses seqeval's IOB2 mode (an I- without its B- is no entity); the
    default follows conlleval (it opens one). All scores are fractions in [0, 1].
    """
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2

    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted")
    for i, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted")
    gold, pred = [list(s) for s in gold], [list(s) for s in pred]
    kwargs = {"mode": "strict", "scheme": IOB2} if strict else {}
    report = classification_report(gold, pred, output_dict=True, zero_division=0, **kwargs)
    micro = report.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
    per_type = {
        name: {
            "precision": float(row["precision"]),
            "recall": float(row["recall"]),
            "f1": float(row["f1-score"]),
            "support": int(row["support"]),
        }
        for name, row in report.items()
        if not name.endswith(" avg")
    }
    tokens = sum(len(s) for s in gold)
    correct = sum(g == p for gs, ps in zip(gold, pred) for g, p in zip(gs, ps))
    return {
        "precision": float(micro["precision"]),
        "recall": float(micro["recall"]),
        "f1": float(micro["f1-score"]),
        "accuracy": correct / tokens if tokens else 0.0,
        "per_type": dict(sorted(per_type.items())),
        "sentences": len(gold),
        "tokens": tokens,
        "mode": "strict" if strict else "default",
    }
