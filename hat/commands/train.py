"""`hat train --config NAME|FILE [key=value ...]`: train a SuperTransformer (or retrain a subnet).

The same command runs under `torchrun --nproc_per_node N` for data-parallel training.
"""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a SuperTransformer (uniform/sandwich sampling) or a fixed SubTransformer",
        description="Train with a shipped recipe (tiny-cpu, wmt14.en-de, iwslt14.de-en) or a YAML file; "
                    "override any key with key=value (omegaconf dotlist, e.g. max_updates=200 "
                    "sampling.policy=sandwich). Resumes automatically from SAVE_DIR/checkpoint_last.pt.",
    )
    p.add_argument("--config", default="tiny-cpu", help="shipped recipe name or a YAML file (default: tiny-cpu)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from hat.train.distributed import shutdown
    from hat.train.config import load_train_config
    from hat.train.trainer import Trainer

    cfg = load_train_config(args.config, args.overrides)
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
