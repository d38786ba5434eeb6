"""`hat demo [--quick]`: the whole pipeline on the Debian de-en corpus on this CPU."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run (or resume) the end-to-end pipeline on the Debian de-en corpus",
                       description="prepare -> train -> measure -> fit predictor -> search (2 constraints) -> "
                       "fine-tune -> BLEU + measured latency vs two hand-designed baselines. Each stage is "
                       "skipped when its output exists, so a rerun resumes.")
    p.add_argument("--quick", action="store_true", help="tiny budgets: a first look in a few minutes")
    p.add_argument("--out", default=None, help="output directory (default runs/demo or runs/demo-quick)")
    p.add_argument("--data", default="data/debian.de-en", help="corpus directory (built when missing)")
    p.add_argument("--device", default="cpu-2core", help="device for latency measurement (hat/configs/device)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hat.demo import run_demo  # noqa: PLC0415

    out = args.out or ("runs/demo-quick" if args.quick else "runs/demo")
    run_demo(out, args.data, quick=args.quick, device=args.device)
    return 0
