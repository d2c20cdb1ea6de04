"""Entity F1 of models and of every ensemble of them (the mean of their logits, as
``distill.Teachers`` teaches), on dev, the MSRA test and the held-out news: which
teachers to distil from, chosen on dev.

    python scripts/score_ensemble.py RUN_OR_MODEL_DIR ... [--config RUN/config.yaml]

The data (and its dev split) are those of the first run's config, or ``--config``
for a bare model directory (a run's ``distilled/``). Valid-BIO decoding; a model with a
CRF decodes alone with its scores and joins an ensemble with its log-marginals.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipelines.config import load_config  # noqa: E402
from pipelines.data.loaders import data_for  # noqa: E402
from pipelines.data.news import news_dataset  # noqa: E402
from pipelines.evaluate.metrics import ner_metrics  # noqa: E402
from pipelines.modeling.models import load_model, resolve_model_dir  # noqa: E402
from pipelines.runtime.engines import TorchEngine  # noqa: E402
from pipelines.runtime.predict import crf_marginals, decode, predict_logits  # noqa: E402
from pipelines.training.distill import label_order  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="run or model directories")
    parser.add_argument("--config", help="the config whose data to score on (default: the first run's)")
    args = parser.parse_args()
    cfg = load_config(args.config or os.path.join(args.models[0], "config.yaml"))
    data = data_for(cfg)
    labels = data.labels
    splits = {name: data.splits[name] for name in ("dev", "test") if name in data.splits}
    if cfg.data.source == "msra":  # the held-out news speaks MSRA's conventions
        splits["news"] = news_dataset(labels)
    logits, alone = {}, {}  # per model and split: what an ensemble averages, the model's own tags
    for path in args.models:
        model, encoder, meta = load_model(resolve_model_dir(path))
        order, engine = label_order(meta.labels, labels), TorchEngine(model)
        for name, split in splits.items():
            outs = predict_logits(engine, split["tokens"], encoder, meta.max_length)
            alone[path, name] = [decode(out, meta.labels, "bio", meta.crf) for out in outs]
            if meta.crf:
                outs = [np.log(np.maximum(crf_marginals(out, meta.labels, meta.crf), 1e-12)) for out in outs]
            logits[path, name] = [out[:, order] for out in outs]
    print("| models | " + " | ".join(f"{name} F1" for name in splits) + " |")
    print("|---|" + "---|" * len(splits))
    for k in range(1, len(args.models) + 1):
        for combo in itertools.combinations(args.models, k):
            cells = []
            for name, split in splits.items():
                gold = [[labels[t] for t in tags] for tags in split["ner_tags"]]
                if k == 1:
                    pred = alone[combo[0], name]
                else:
                    mean = [sum(outs) / k for outs in zip(*(logits[path, name] for path in combo))]
                    pred = [decode(out, labels, "bio") for out in mean]
                cells.append(f"{ner_metrics(gold, pred)['f1']:.4f}")
            print(f"| {' + '.join(os.path.basename(os.path.normpath(p)) for p in combo)} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
