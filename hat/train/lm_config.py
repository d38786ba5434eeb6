"""Training configuration of a fixed decoder-only LM (`hat train --task lm`).

The keys are the translation recipe's where they mean the same (optimiser, schedule, budget,
intervals), checked by the same rules; what differs is the model (an `LMConfig` in an
`LMSpace`, trained from scratch as LiteTransformerSearch trains the models it chooses) and the
batches (`batch_size` blocks of `context` tokens: every update sees the same number of
tokens, so equal `max_updates` is an equal token budget across architectures).
"""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from hat.errors import ConfigError
from hat.train.config import (CHECKS, _choice, _number, _of, check_schedule, check_values, merge_config,
                              read_recipe)

LM_DEFAULTS: dict[str, Any] = {
    "task": "lm",
    "space": "lm-tiny",
    "subnet": None,  # the LMConfig YAML to train (required)
    "data": "data/debian.de-en",  # `hat prepare mono` directory, or a parallel one (its `lang` side)
    "lang": None,  # which side of a parallel directory (null: its target side)
    "save_dir": "checkpoints/lm",
    "seed": 1,
    "batch_size": 16,  # blocks per update
    "context": None,  # tokens per block (null: the space's max_positions)
    "max_updates": 2000,
    "max_epochs": None,
    "budget_minutes": None,  # wall-clock training budget across resumes (the schedule decays by it too)
    "lr": 1e-3,
    "lr_scheduler": "cosine",
    "decay_fraction": 0.2,
    "warmup_updates": 100,
    "warmup_share": 0.0,
    "warmup_init_lr": 1e-7,
    "min_lr": 1e-5,
    "adam_betas": [0.9, 0.98],
    "adam_eps": 1e-8,
    "weight_decay": 0.01,
    "clip_norm": 1.0,
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.0,
    "validate_interval": 200,
    "max_valid_blocks": None,  # validate on the first N valid blocks only (null: all)
    "save_interval": 200,
    "save_interval_minutes": None,
    "log_interval": 50,
    "compute": "auto",
    "amp": "auto",  # auto | fp32 | bf16 ; auto = bf16 autocast on CUDA, fp32 on CPU
    "num_threads": None,
    "progress": True,
}
LM_CHECKS = {**{k: v for k, v in CHECKS.items() if k in LM_DEFAULTS},
             "task": lambda v: None if v == "lm" else "must be lm (a translation recipe has no task key)",
             "subnet": _of(str, optional=True), "lang": _of(str, optional=True),
             "batch_size": _number(1, integer=True), "context": _number(2, integer=True, optional=True),
             "max_valid_blocks": _number(1, integer=True, optional=True),
             "amp": _choice("auto", "fp32", "bf16")}  # fp16 would need a loss scaler: bf16 does not
LM_PATHS = ("space", "data", "save_dir", "subnet")


def load_lm_train_config(name_or_path: str, overrides: list[str] | None = None) -> DictConfig:
    """LM defaults <- recipe (it must say `task: lm`) <- `key=value` overrides; unknown keys refused."""
    p, data = read_recipe(name_or_path)
    if data.get("task") != "lm":
        raise ConfigError(f"{p}: a translation training config, not a decoder-only LM one (an LM recipe says "
                          "`task: lm`; e.g. --config lm-tiny)")
    cfg = merge_config(LM_DEFAULTS, p, data, overrides)
    values = check_values(cfg, LM_DEFAULTS, LM_CHECKS, LM_PATHS, str(p))
    check_schedule(values, str(p))
    if not values["subnet"]:
        raise ConfigError(f"{p}: subnet is not set: give the decoder-only architecture to train, "
                          "subnet=CONFIG.yml (an LM config, `task: lm`)")
    return cfg
