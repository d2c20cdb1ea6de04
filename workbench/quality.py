"""The model-quality table: what each run's training cost and what it scored on test.

One row per run, from its ``metrics.json``: preset, parameters, CPU minutes per
training stage (pretrain, distill, train) and the precision it ran in, epochs and why training stopped, and the
test split's entity F1, per-type F1 and token accuracy, and the held-out news F1. The README's "Model quality
offline" table is printed by ``scripts/quality_table.py`` from these rows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from pipelines.files import read_json

from .compare import ENTITY_TYPES

# Training stages and their time keys, best first: a resumed pretrain or distill
# reports this invocation's seconds and the total across invocations.
TRAINING_STAGES = (("pretrain", ("total_seconds", "seconds")), ("distill", ("total_seconds", "seconds")), ("train", ("train_seconds",)))


@dataclass
class QualityRow:
    run: str
    preset: str | None
    parameters: int | None
    minutes: dict[str, float] = field(default_factory=dict)  # training stage -> wall minutes
    precisions: dict[str, str] = field(default_factory=dict)  # training stage -> fp32 / bf16, where recorded
    epochs: float | None = None
    stop_reason: str | None = None
    f1: float | None = None
    per_type_f1: dict[str, float] = field(default_factory=dict)
    accuracy: float | None = None
    decode: str | None = None
    news_f1: float | None = None  # the held-out People's Daily news (pipelines/data/news.py)


def _seconds(result: dict | None, keys: tuple[str, ...]) -> float | None:
    return next((result[k] for k in keys if (result or {}).get(k) is not None), None)


def quality_row(run_dir: str) -> QualityRow:
    metrics = read_json(os.path.join(run_dir, "metrics.json"), {}) or {}
    meta = read_json(os.path.join(run_dir, "model", "workbench.json"), {}) or {}
    train = metrics.get("train") or {}
    scores = metrics.get("eval") or {}
    if scores.get("split") not in (None, "test"):
        scores = {}  # only test scores go in this table
    return QualityRow(
        run=os.path.basename(os.path.normpath(run_dir)),
        preset=meta.get("preset") or _config_preset(run_dir),
        parameters=train.get("parameters"),
        minutes={stage: round(seconds / 60, 1) for stage, keys in TRAINING_STAGES if (seconds := _seconds(metrics.get(stage), keys)) is not None},
        precisions={stage: metrics[stage]["precision"] for stage, _ in TRAINING_STAGES if (metrics.get(stage) or {}).get("precision")},
        epochs=train.get("epochs"),
        stop_reason=train.get("stop_reason"),
        f1=scores.get("f1"),
        per_type_f1={t: s["f1"] for t, s in (scores.get("per_type") or {}).items()},
        accuracy=scores.get("accuracy"),
        decode=scores.get("decode"),
        news_f1=(scores.get("news") or {}).get("f1"),
    )


def _config_preset(run_dir: str) -> str | None:
    """The run's ``model.preset``: a model fine-tuned from pretrained or distilled weights
    records those weights as its source, not the preset they were built from."""
    import yaml

    try:
        with open(os.path.join(run_dir, "config.yaml"), encoding="utf-8") as f:
            return ((yaml.safe_load(f) or {}).get("model") or {}).get("preset")
    except OSError:
        return None


def _cell(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def to_markdown(rows: list[QualityRow]) -> str:
    lines = [
        "| run | preset | parameters | CPU training time | epochs | test entity F1 | " + " | ".join(ENTITY_TYPES) + " | token acc | held-out news F1 |",
        "|---|---|---|---|---|---|" + "---|" * len(ENTITY_TYPES) + "---|---|",
    ]
    for row in rows:
        time = " + ".join(
            f"{m:g} min {stage}" + (f" ({row.precisions[stage]})" if stage in row.precisions else "") for stage, m in row.minutes.items()
        ) or "—"
        params = f"{row.parameters / 1e6:.1f} M" if row.parameters else "—"
        epochs = _cell(row.epochs, 2) + (f" ({row.stop_reason})" if row.stop_reason else "")
        per_type = " | ".join(_cell(row.per_type_f1.get(t)) for t in ENTITY_TYPES)
        lines.append(f"| {row.run} | {row.preset or '—'} | {params} | {time} | {epochs} | {_cell(row.f1)} | {per_type} | {_cell(row.accuracy)} | {_cell(row.news_f1)} |")
    return "\n".join(lines)
