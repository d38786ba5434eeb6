"""`hat merge-latency A.csv B.csv ... --out ALL.csv`: join latency CSVs measured in shards.

Boards that ran `hat measure --shard K/N` (same --seed, --samples, space, device and protocol)
each hold a share of one seeded config list; merged, they are the file one board would have
written, ready for `hat fit-predictor`. Mismatched metadata and configs measured twice are refused.
"""
from __future__ import annotations

import argparse
import sys

from hat.latency.shards import merge_latency_csvs

EXAMPLES = """examples:
  hat merge-latency pi1.csv pi2.csv pi3.csv --out lat_pi.csv   # from `hat measure --shard 1/3` ... `3/3`
  hat fit-predictor --data lat_pi.csv --out lat_pi.pt
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge-latency", help="merge latency CSVs of one space/protocol/device (e.g. `hat measure "
                       "--shard` parts) into one", description=__doc__.split("\n\n", 1)[1], epilog=EXAMPLES)
    p.add_argument("inputs", nargs="+", metavar="CSV", help="latency CSVs written by `hat measure` (with .meta.json)")
    p.add_argument("--out", required=True, help="the merged CSV (a new file; its .meta.json is written next to it)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rows, meta = merge_latency_csvs(args.inputs, args.out)
    shards = ", ".join(str(s["shard"] or "all") for s in meta["merged_from"])
    print(f"merge-latency: {rows} rows from {len(args.inputs)} files (shards {shards}) -> {args.out}", file=sys.stderr)
    return 0
