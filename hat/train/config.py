"""Training configuration: the defaults, shipped recipes and `key=value` overrides.

A recipe (`hat/configs/train/NAME.yaml` or any YAML file) overrides DEFAULTS and the command
line overrides the recipe; unknown keys are refused, so a typo is an error, not a silent no-op.
"""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hat.errors import ConfigError, first_line
from hat.shipped import resolve

DEFAULTS: dict[str, Any] = {
    "space": "tiny",
    "data": "data/debian.de-en",
    "save_dir": "checkpoints/run",
    "seed": 1,
    # batching: tokens per worker per micro-batch; update_freq micro-batches per update
    "max_tokens": 4096,
    "max_sentences": None,
    "update_freq": 1,
    "max_updates": 1000,
    "max_epochs": None,
    "stop_time_minutes": None,  # wall-clock guard of this process (not bitwise-reproducible)
    # wall-clock training budget across resumes: the LR schedule decays by elapsed time as well as
    # by updates (whichever is further), so a run cut by its budget still ends annealed
    "budget_minutes": None,
    # optimisation
    "lr": 1e-3,
    "lr_scheduler": "cosine",
    "warmup_updates": 100,
    "warmup_init_lr": 1e-7,
    "min_lr": 1e-7,
    "adam_betas": [0.9, 0.98],
    "adam_eps": 1e-8,
    "weight_decay": 0.0,
    "clip_norm": 0.0,
    "label_smoothing": 0.1,
    # model (ModelArgs)
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.0,
    "share_all_embeddings": True,
    "share_decoder_input_output_embed": True,
    "normalize_before": False,
    "max_positions": 1024,
    "scale_dropout_with_embed": True,
    # distill: sandwich = in-place distillation from the largest subnet; fixed = distillation from
    # a frozen copy of the `init_from` SuperTransformer's `teacher` subnet (largest by default)
    "sampling": {"policy": "uniform", "sandwich_k": 2, "distill": False, "distill_alpha": 1.0, "subnet": None,
                 "teacher": None},
    "init_from": None,  # SuperTransformer checkpoint whose weights start a fresh run (retraining)
    "validate_interval": 1000,
    "max_valid_sentences": None,  # validate on the first N valid pairs only (null: all)
    "save_interval": 1000,
    "keep_interval_checkpoints": -1,  # keep only the newest N checkpoint_{N}.pt (-1: all)
    "log_interval": 100,
    "amp": "auto",  # auto | fp32 | bf16 | fp16 ; auto = bf16 on CUDA, fp32 on CPU
    "compute": "auto",  # torch device: auto | cpu | cuda (recipes may still say `device`)
    "num_threads": None,
    "tensorboard": True,
    "progress": True,
}

# keys renamed since a recipe may have been written: old -> new (read as the new one)
RENAMED = {"device": "compute"}


def load_train_config(name_or_path: str, overrides: list[str] | None = None) -> DictConfig:
    """Defaults <- recipe (shipped name or YAML file) <- `key=value` overrides; unknown keys refused."""
    p = resolve(name_or_path, "train", "training config")
    base = OmegaConf.create(DEFAULTS)
    OmegaConf.set_struct(base, True)
    try:
        recipe = OmegaConf.load(p)
    except Exception as e:  # noqa: BLE001  (yaml and omegaconf raise many types)
        raise ConfigError(f"{p}: malformed YAML ({first_line(e)})") from None
    for old, new in RENAMED.items():
        if isinstance(recipe, DictConfig) and old in recipe and new not in recipe:
            recipe[new] = recipe.pop(old)
    try:
        cfg = OmegaConf.merge(base, recipe)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{p}: {first_line(e)}") from None
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        key, value = item.split("=", 1)
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([f"{RENAMED.get(key, key)}={value}"]))
        except OmegaConfBaseException as e:
            raise ConfigError(f"override {item!r}: {first_line(e)}") from None
    _check_config(cfg, str(p))
    return cfg


def _check_config(cfg: DictConfig, source: str) -> None:
    for key in ("max_tokens", "update_freq", "max_updates", "validate_interval", "save_interval", "log_interval"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ConfigError(f"{source}: {key} must be a positive integer, got {cfg[key]!r}")
    if cfg.amp not in ("auto", "fp32", "bf16", "fp16"):
        raise ConfigError(f"{source}: amp={cfg.amp!r}: expected auto, fp32, bf16 or fp16")
    if cfg.compute not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"{source}: compute={cfg.compute!r}: expected auto, cpu or cuda")
    if not 0 <= cfg.label_smoothing < 1:
        raise ConfigError(f"{source}: label_smoothing must be in [0, 1)")
    if cfg.budget_minutes is not None and not (isinstance(cfg.budget_minutes, (int, float)) and cfg.budget_minutes > 0):
        raise ConfigError(f"{source}: budget_minutes must be a positive number of minutes, got {cfg.budget_minutes!r}")
    s = cfg.sampling
    if not (isinstance(s.distill_alpha, (int, float)) and 0 <= s.distill_alpha <= 1):
        raise ConfigError(f"{source}: sampling.distill_alpha must be in [0, 1], got {s.distill_alpha!r}")
    if s.distill and s.policy == "fixed" and not cfg.init_from:
        raise ConfigError(f"{source}: sampling.distill with policy fixed distils from the init_from "
                          "SuperTransformer: set init_from=CHECKPOINT")
