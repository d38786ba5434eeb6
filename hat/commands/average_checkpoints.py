"""`hat average-checkpoints`: the mean of several SuperTransformer checkpoints' weights.

HAT (like fairseq's `scripts/average_checkpoints.py`) reports BLEU of the average of the last
10 checkpoints of a run. The averaged file is a `hat train` checkpoint without optimiser
state: export, evaluate or search it like any other.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from hat.errors import CheckpointError, HatError

EXAMPLES = """examples:
  # the last 10 interval checkpoints (checkpoint_UPDATE.pt) of a run, as HAT reports BLEU
  hat average-checkpoints --inputs checkpoints/wmt14.en-de/pi@6s --last 10 --out avg.pt
  hat average-checkpoints --inputs run/checkpoint_800.pt run/checkpoint_900.pt run/checkpoint_1000.pt --out avg.pt
  hat export --checkpoint avg.pt --config subnet.yml --out export/avg
"""
NUMBERED = re.compile(r"checkpoint_(\d+)\.pt")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("average-checkpoints", help="average the weights of several checkpoints (HAT: the last 10)",
                       description="Write a checkpoint whose weights are the mean of the inputs' (same space and "
                                   "model only). Keep enough interval checkpoints while training "
                                   "(keep_interval_checkpoints=10).", epilog=EXAMPLES)
    p.add_argument("--inputs", nargs="+", required=True, help="checkpoint files, or a `hat train` save_dir whose "
                                                              "numbered checkpoint_UPDATE.pt files are used")
    p.add_argument("--last", type=int, help="average only the last N of them, by update (default: all)")
    p.add_argument("--out", required=True, help="averaged checkpoint to write")
    p.set_defaults(func=run)


def select(inputs: list[str], last: int | None) -> list[Path]:
    """Files as given; a directory contributes its numbered checkpoints, oldest first; then the
    `last` N of them."""
    if last is not None and last < 1:
        raise HatError(f"--last {last}: must be >= 1")
    paths: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted((int(m.group(1)), q) for q in item.iterdir() if (m := NUMBERED.fullmatch(q.name)))
            if not found:
                raise CheckpointError(f"{item}: no numbered checkpoint_UPDATE.pt files (is it a `hat train` save_dir?)")
            paths += [q for _, q in found]
        elif item.is_file():
            paths.append(item)
        else:
            raise CheckpointError(f"{item}: no such checkpoint file or directory")
    if len(set(paths)) != len(paths):
        raise HatError("the same checkpoint is given twice")
    return paths[-last:] if last else paths


def run(args: argparse.Namespace) -> int:
    from hat.files import save_torch  # noqa: PLC0415
    from hat.model.checkpoint import average_checkpoints  # noqa: PLC0415

    paths = select(args.inputs, args.last)
    if args.last and len(paths) < args.last:
        print(f"average-checkpoints: only {len(paths)} checkpoints found, fewer than --last {args.last}")
    state = average_checkpoints(paths)
    save_torch(state, Path(args.out))
    print(f"averaged {len(paths)} checkpoints ({', '.join(p.name for p in paths)}) -> {args.out}")
    return 0
