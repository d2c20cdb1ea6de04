"""How new a dev split's names are to the model, against the test's: the share of each
split's entity mentions whose text also occurs as a mention in train.

    python scripts/split_novelty.py --dev-block 1 500

A dev split that shares far more of its names with train than the test does rewards
recalling seen names, and picks models (and checkpoints) that generalise worse.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipelines.config import parse_config  # noqa: E402
from pipelines.data.loaders import data_for, entity_spans  # noqa: E402


def mentions(split, labels) -> list[str]:
    out = []
    for chars, tags in zip(split["tokens"], split["ner_tags"]):
        out += ["".join(chars[a:b]) for _, a, b in entity_spans([labels[t] for t in tags])]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dev-block", type=int, nargs="+", default=[1, 500])
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    print("| dev_block | split | sentences | mentions | seen in train |\n|---|---|---|---|---|")
    for block in args.dev_block:
        data = data_for(parse_config({"seed": args.seed, "data": {"source": "msra", "dev_block": block}}))
        seen = set(mentions(data.splits["train"], data.labels))
        for name in ("dev", "test"):
            found = mentions(data.splits[name], data.labels)
            share = sum(m in seen for m in found) / len(found)
            print(f"| {block} | {name} | {len(data.splits[name])} | {len(found)} | {share:.1%} |")


if __name__ == "__main__":
    main()
