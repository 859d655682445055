#!/usr/bin/env python
"""Plot a run's metrics.jsonl to PNGs, or overlay one metric across runs.

    python scripts/plot_metrics.py logs/ttrv/exp1/metrics.jsonl --out plots/exp1
    python scripts/plot_metrics.py --compare base=logs/a/metrics.jsonl adapted=logs/b/metrics.jsonl \
        --key val-core/digits/acc/mean@1 --out plots/compare.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("jsonl", nargs="?", help="metrics.jsonl of one run")
    parser.add_argument("--out", required=True, help="output folder (single run) or PNG path (--compare)")
    parser.add_argument("--compare", nargs="+", metavar="LABEL=PATH", help="runs to overlay")
    parser.add_argument("--key", help="metric to overlay with --compare")
    args = parser.parse_args(argv)

    from verl.logging.plots import plot_compare, plot_run

    if args.compare:
        if not args.key:
            parser.error("--compare needs --key")
        runs = {}
        for item in args.compare:
            label, sep, path = item.partition("=")
            if not sep or not label or not path:
                parser.error(f"--compare entries must be LABEL=PATH, got {item!r}")
            runs[label] = path
        print(plot_compare(runs, args.key, args.out))
        return 0
    if not args.jsonl:
        parser.error("give a metrics.jsonl or --compare")
    paths = plot_run(args.jsonl, args.out)
    for p in paths:
        print(p)
    if not paths:
        print(f"no plottable metrics in {Path(args.jsonl)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
