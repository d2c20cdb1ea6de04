"""The model-quality table the README quotes, from a run's metrics.json."""

import json

from workbench.quality import quality_row, to_markdown


def _run(tmp_path, metrics, preset="tiny"):
    """A distilled run: its model records the distilled weights as its source, no preset."""
    run = tmp_path / "20261125-171010-distill"
    (run / "model").mkdir(parents=True)
    (run / "model" / "workbench.json").write_text(json.dumps({"preset": None, "source": "distilled", "labels": ["O"]}))
    (run / "config.yaml").write_text(f"name: distill\nmodel:\n  preset: {preset}\n")
    (run / "metrics.json").write_text(json.dumps(metrics))
    return str(run)


def test_row_sums_up_each_training_stage_and_the_test_and_news_scores(tmp_path):
    per_type = {"PER": {"f1": 0.7747}, "LOC": {"f1": 0.8119}, "ORG": {"f1": 0.6637}}
    run = _run(
        tmp_path,
        {
            "pretrain": {"seconds": 600.0, "total_seconds": 1800.0},  # resumed: 20 of its 30 min came before
            "distill": {"seconds": 222.0, "precision": "bf16"},
            "train": {"train_seconds": 438.0, "epochs": 6.0, "parameters": 3167879, "precision": "fp32"},
            "eval": {"split": "test", "f1": 0.76751, "accuracy": 0.97662, "per_type": per_type, "decode": "bio",
                     "news": {"f1": 0.70123, "sentences": 2495}},
        },
    )
    table = to_markdown([quality_row(run)])
    assert table.splitlines()[-1] == (
        "| 20261125-171010-distill | tiny | 3.2 M | 30 min pretrain + 3.7 min distill (bf16) + 7.3 min train (fp32) | 6.00 "
        "| 0.7675 | 0.7747 | 0.8119 | 0.6637 | 0.9766 | 0.7012 |"
    )


def test_a_run_without_test_scores_shows_dashes_and_why_training_stopped(tmp_path):
    run = _run(
        tmp_path,
        {"train": {"train_seconds": 3000.0, "epochs": 3.9, "parameters": 8700000, "stop_reason": "time budget of 50.0 min reached"},
         "eval": {"split": "dev", "f1": 0.8}},
        preset="mini",
    )
    row = quality_row(run)
    assert row.f1 is None  # a dev score is not a test score
    assert to_markdown([row]).splitlines()[-1] == (
        "| 20261125-171010-distill | mini | 8.7 M | 50 min train | 3.90 (time budget of 50.0 min reached) | — | — | — | — | — | — |"
    )
