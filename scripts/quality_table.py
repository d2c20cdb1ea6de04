"""The model-quality table (docs/results.md, "Model quality offline") from finished runs.

    python scripts/quality_table.py runs/<id>-quickstart runs/<id>-mini-scratch ...

Each row: preset, parameters, CPU minutes per training stage, epochs (and why
training stopped), MSRA test entity F1, per-type F1 and token accuracy, all read
from the run's metrics.json as its stages recorded them.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from workbench.quality import quality_row, to_markdown  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories")
    args = parser.parse_args()
    print(to_markdown([quality_row(run) for run in args.runs]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
