"""`hat train --config NAME|FILE [key=value ...]`: train a SuperTransformer (or retrain a subnet);
with an LM recipe (`task: lm`) or `--task lm`, one fixed decoder-only LM from scratch.

The translation trainer also runs under `torchrun --nproc_per_node N` for data-parallel training.
"""
from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from omegaconf import DictConfig

EXAMPLES = """examples:
  hat train --config tiny-cpu data=data/debian.de-en
  hat train --config tiny-cpu budget_minutes=20 sampling.policy=sandwich save_dir=checkpoints/sw
  # retrain a searched SubTransformer from inherited weights
  hat train --config tiny-cpu sampling.policy=fixed sampling.subnet=subnet.yml \\
      init_from=checkpoints/tiny-debian/checkpoint_best.pt save_dir=checkpoints/subnet
  torchrun --nproc_per_node 8 train.py --config wmt14.en-de   # data-parallel
  # a decoder-only LM (a `task: lm` config of the lm-tiny space) on the Debian corpus's target side
  hat train --task lm subnet=lm.yml data=data/debian.de-en save_dir=checkpoints/lm budget_minutes=10
  hat train --task lm space=lm-tiny subnet=lm.yml data=data/mine.lm max_updates=500   # hat prepare mono
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a SuperTransformer (uniform/sandwich sampling) or a fixed SubTransformer",
        description="Train with a shipped recipe (tiny-cpu, wmt14.en-de, iwslt14.de-en) or a YAML file; "
                    "override any key with key=value (omegaconf dotlist, e.g. max_updates=1000 "
                    "sampling.policy=sandwich). Resumes automatically from SAVE_DIR/checkpoint_last.pt.",
        epilog=EXAMPLES,
    )
    p.add_argument("--config", help="shipped recipe name or a YAML file (default: tiny-cpu; with --task lm: lm-tiny)")
    p.add_argument("--task", choices=["translation", "lm"],
                   help="translation (a SuperTransformer) or lm (one fixed decoder-only LM); default: the recipe's")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from hat.train.distributed import shutdown
    from hat.train.trainer import Trainer

    task, cfg = load_config(args)
    if task == "lm":
        return _run_lm(cfg, args.print_config)
    if args.print_config:
        print(OmegaConf.to_yaml(cfg), end="")
        return 0
    trainer = Trainer(cfg)
    try:
        result = trainer.train()
    finally:
        shutdown(trainer.env)
    if trainer.env.is_master and result.get("valid"):
        v = {k: round(x["loss"], 4) for k, x in result["valid"].items() if isinstance(x, dict)}
        print(f"hat train: done at update {result['update']}; valid loss {v}; checkpoints in {cfg.save_dir}")
    return 0


def load_config(args: argparse.Namespace) -> tuple[str, DictConfig]:
    """The task (`--task`, else the recipe's) and its resolved config (`--config`, else the task's
    default recipe, with the overrides)."""
    from hat.train.config import load_train_config, recipe_task
    from hat.train.lm_config import load_lm_train_config

    task = args.task or (recipe_task(args.config) if args.config else "translation")
    if task == "lm":
        return task, load_lm_train_config(args.config or "lm-tiny", args.overrides)
    return task, load_train_config(args.config or "tiny-cpu", args.overrides)


def _run_lm(cfg: DictConfig, print_config: bool) -> int:
    from omegaconf import OmegaConf

    from hat.train.lm import LMTrainer

    if print_config:
        print(OmegaConf.to_yaml(cfg), end="")
        return 0
    result = LMTrainer(cfg).train()
    v = result.get("valid") or {}
    print(f"hat train: done at update {result['update']} ({result['tokens_seen']} tokens); valid loss "
          f"{v.get('loss', math.nan):.4f} ppl {v.get('ppl', math.nan):.2f}; checkpoints in {cfg.save_dir}")
    return 0
