"""What a run directory holds, by name: the one place that knows the layout.

``config.yaml`` resolved config · ``events.jsonl`` every event · ``metrics.json``
per-stage metrics · ``model/`` fine-tuned model · ``export/`` TorchScript and
torch.export programs · ``onnx/`` ONNX Runtime models · ``compiled/`` TVM artifacts ·
``eval/`` scores and predictions per split and engine · ``bench.json`` the bench report ·
``imported.json`` where a run made on another machine was imported from.

Every layer reads runs, so this stays a plain module at the bottom.
"""

from __future__ import annotations

import os

from pipelines.files import read_json

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
MODEL_DIR, EXPORT_DIR, COMPILED_DIR, ONNX_DIR, EVAL_DIR = "model", "export", "compiled", "onnx", "eval"
EXPORT_META = "export.json"
BENCH_FILE = "bench.json"
IMPORT_FILE = "imported.json"  # where an imported run came from, and its model's fingerprint


def read_export_meta(export_dir: str) -> dict | None:
    """What the export stage wrote (shape, files, parity), or None before it ran."""
    return read_json(os.path.join(export_dir, EXPORT_META))


def run_decoder(run_or_model_dir: str) -> str:
    """The run's ``eval.decode`` (the default for a bare model directory), so `tag`, the
    highlighter and `eval` decode a run's model the way its eval stage did."""
    import yaml

    from pipelines.config import EvalConfig

    try:
        with open(os.path.join(run_or_model_dir, CONFIG_FILE), encoding="utf-8") as f:
            raw = yaml.safe_load(f)
        return EvalConfig.model_validate((raw or {}).get("eval") or {}).decode
    except (OSError, yaml.YAMLError, ValueError, AttributeError):
        return EvalConfig().decode
