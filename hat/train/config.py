"""Training configuration: the defaults, shipped recipes and `key=value` overrides.

A recipe (`hat/configs/train/NAME.yaml` or any YAML file) overrides DEFAULTS and the command
line overrides the recipe; unknown keys are refused, so a typo is an error, not a silent no-op.
"""
from __future__ import annotations

import math
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hat.errors import ConfigError, first_line
from hat.model import ModelArgs
from hat.shipped import read_yaml, resolve
from hat.train.optim import SCHEDULES

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
    "decay_fraction": 0.2,  # wsd: the share of the run (updates or budget) spent decaying the LR
    "warmup_updates": 100,
    # warm up over this share of budget_minutes as well (0: by updates only): the same share of every
    # model's budget, where a count of updates is a different share of each model's run
    "warmup_share": 0.0,
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
    # also save checkpoint_last.pt every M minutes of training (null: by updates only), so a killed
    # run resumes from minutes ago; a budget-bounded run may stop before any save_interval
    "save_interval_minutes": None,
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


def read_recipe(name_or_path: str) -> tuple[Path, dict[str, Any]]:
    """A recipe's path and its mapping (bounded YAML; not a mapping: one ConfigError)."""
    p = resolve(name_or_path, "train", "training config")
    data = read_yaml(p)  # bounded: an alias bomb or a deep file is refused before OmegaConf copies it
    if not isinstance(data, (dict, type(None))):
        raise ConfigError(f"{p}: not a training config (expected a mapping of keys, got a {type(data).__name__})")
    return p, data or {}


def recipe_task(name_or_path: str) -> str:
    """The task a recipe trains: `lm` when it says `task: lm`, else `translation`."""
    return "lm" if read_recipe(name_or_path)[1].get("task") == "lm" else "translation"


def merge_config(defaults: dict[str, Any], p: Path, data: dict[str, Any], overrides: list[str] | None,
                 renamed: dict[str, str] | None = None) -> DictConfig:
    """`defaults` <- the recipe `data` (read from `p`) <- `key=value` overrides; unknown keys refused."""
    renamed = renamed or {}
    base = OmegaConf.create(defaults)
    OmegaConf.set_struct(base, True)
    try:
        recipe = OmegaConf.create(data)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{p}: {first_line(e)}") from None
    for old, new in renamed.items():
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
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([f"{renamed.get(key, key)}={value}"]))
        except OmegaConfBaseException as e:
            raise ConfigError(f"override {item!r}: {first_line(e)}") from None
    return cfg


def load_train_config(name_or_path: str, overrides: list[str] | None = None) -> DictConfig:
    """Defaults <- recipe (shipped name or YAML file) <- `key=value` overrides; unknown keys refused."""
    p, data = read_recipe(name_or_path)
    if data.get("task") == "lm":
        raise ConfigError(f"{p}: a decoder-only LM training config (task: lm), not a translation one "
                          "(train it with `hat train --task lm`)")
    cfg = merge_config(DEFAULTS, p, data, overrides, RENAMED)
    _check_config(cfg, str(p))
    return cfg


# ---- checks: every key's type and range, before anything reaches torch -----------------------
Check = Callable[[Any], "str | None"]  # value -> what is wrong with it (None: fine)


def _number(lo: float = -math.inf, hi: float = math.inf, *, integer: bool = False, open_lo: bool = False,
            open_hi: bool = False, optional: bool = False) -> Check:
    kind = "an integer" if integer else "a number"
    bounds = ([f"{'>' if open_lo else '>='} {lo:g}"] if lo > -math.inf else []) + \
             ([f"{'<' if open_hi else '<='} {hi:g}"] if hi < math.inf else [])
    want = f"{kind} {' and '.join(bounds)}".strip() + (" (or null)" if optional else "")

    def check(v: Any) -> str | None:
        if v is None and optional:
            return None
        types = (int,) if integer else (int, float)
        if isinstance(v, bool) or not isinstance(v, types) or not math.isfinite(v):
            return f"must be {want}"
        if v < lo or v > hi or (open_lo and v == lo) or (open_hi and v == hi):
            return f"must be {want}"
        return None
    return check


def _of(t: type, optional: bool = False) -> Check:
    """A value of type `t` (a path: str; OmegaConf reads `save_dir=2024` as an int, see PATHS)."""
    def check(v: Any) -> str | None:
        if (v is None and optional) or (isinstance(v, t) and (t is bool or not isinstance(v, bool))):
            return None
        return f"must be {'true or false' if t is bool else 'a ' + t.__name__}{' (or null)' if optional else ''}"
    return check


def _choice(*values: str) -> Check:
    return lambda v: None if v in values else f"expected one of {', '.join(values)}"


def _betas(v: Any) -> str | None:
    ok = isinstance(v, (list, tuple)) and len(v) == 2 and all(_number(0, 1, open_hi=True)(b) is None for b in v)
    return None if ok else "must be two numbers in [0, 1), e.g. [0.9, 0.98]"


_PROB = _number(0, 1, open_hi=True)
_POSITIVE_INT = _number(1, integer=True)
# keys whose default is None, or whose default's type is not the whole rule; the others are held
# to the type of their default (so a key added to DEFAULTS is checked without an entry here)
CHECKS: dict[str, Check] = {
    "seed": _number(0, integer=True),
    "max_tokens": _POSITIVE_INT, "update_freq": _POSITIVE_INT, "max_updates": _POSITIVE_INT,
    "validate_interval": _POSITIVE_INT, "save_interval": _POSITIVE_INT, "log_interval": _POSITIVE_INT,
    "max_positions": _POSITIVE_INT,
    "max_sentences": _number(1, integer=True, optional=True),
    "max_epochs": _number(1, integer=True, optional=True),
    "max_valid_sentences": _number(1, integer=True, optional=True),
    "num_threads": _number(1, integer=True, optional=True),
    "stop_time_minutes": _number(0, open_lo=True, optional=True),
    "budget_minutes": _number(0, open_lo=True, optional=True),
    "save_interval_minutes": _number(0, open_lo=True, optional=True),
    "lr": _number(0, open_lo=True), "adam_eps": _number(0, open_lo=True),
    "warmup_updates": _number(0, integer=True), "warmup_share": _number(0, 1, open_hi=True),
    "warmup_init_lr": _number(0), "min_lr": _number(0),
    "weight_decay": _number(0), "clip_norm": _number(0), "label_smoothing": _PROB, "adam_betas": _betas,
    "dropout": _PROB, "attention_dropout": _PROB, "activation_dropout": _PROB,
    "keep_interval_checkpoints": _number(-1, integer=True),
    "lr_scheduler": _choice(*SCHEDULES), "decay_fraction": _number(0, 1, open_lo=True),
    "amp": _choice("auto", "fp32", "bf16", "fp16"), "compute": _choice("auto", "cpu", "cuda"),
    "sampling.policy": _choice("uniform", "sandwich", "fixed"),
    "sampling.sandwich_k": _number(0, integer=True), "sampling.distill_alpha": _number(0, 1),
    "sampling.subnet": _of(str, optional=True), "sampling.teacher": _of(str, optional=True),
    "init_from": _of(str, optional=True),
}
# a number given for a path is its name
PATHS = ("space", "data", "save_dir", "init_from", "sampling.subnet", "sampling.teacher")


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _default_check(default: Any) -> Check:
    if isinstance(default, bool):
        return _of(bool)
    if isinstance(default, int):
        return _number(integer=True)
    return _number() if isinstance(default, float) else _of(type(default))


def check_values(cfg: DictConfig, defaults: dict[str, Any], checks: dict[str, Check], paths: tuple[str, ...],
                 source: str) -> dict[str, Any]:
    """Every key has the type (and range) its use needs: one ConfigError naming the first that does
    not; returns the flat values. Numbers given for `paths` become their names."""
    try:
        for key in paths:
            v = OmegaConf.select(cfg, key)
            if isinstance(v, int) and not isinstance(v, bool):
                OmegaConf.update(cfg, key, str(v))
        values = _flat(OmegaConf.to_container(cfg, resolve=True))
    except OmegaConfBaseException as e:
        raise ConfigError(f"{source}: {first_line(e)}") from None
    for key, default in _flat(defaults).items():
        problem = checks.get(key, _default_check(default))(values.get(key))
        if problem:
            raise ConfigError(f"{source}: {key}={values.get(key)!r}: {problem}")
    return values


def check_schedule(values: dict[str, Any], source: str) -> None:
    """The warm-up fits the run (by updates and by budget share)."""
    if 0 < values["warmup_updates"] >= values["max_updates"]:
        raise ConfigError(f"{source}: warmup_updates={values['warmup_updates']} is not below max_updates="
                          f"{values['max_updates']}: the whole run would warm up (lower warmup_updates)")
    if values["warmup_share"] and not values["budget_minutes"]:
        raise ConfigError(f"{source}: warmup_share={values['warmup_share']} is a share of budget_minutes, which is "
                          "not set: set budget_minutes or warm up by warmup_updates")


def _check_config(cfg: DictConfig, source: str) -> None:
    values = check_values(cfg, DEFAULTS, CHECKS, PATHS, source)
    check_schedule(values, source)
    s = cfg.sampling
    if s.distill and s.policy == "fixed" and not cfg.init_from:
        raise ConfigError(f"{source}: sampling.distill with policy fixed distils from the init_from "
                          "SuperTransformer: set init_from=CHECKPOINT")
    if s.subnet and s.policy != "fixed":  # else it would be silently ignored
        raise ConfigError(f"{source}: sampling.subnet={s.subnet!r} is the subnet of sampling.policy=fixed "
                          f"(policy is {s.policy}): drop it or set the policy")
    if s.teacher and not (s.distill and s.policy == "fixed"):
        raise ConfigError(f"{source}: sampling.teacher={s.teacher!r} is used only by fixed-policy distillation "
                          "(sampling.policy=fixed sampling.distill=true): drop it or set both")


def model_args(cfg: DictConfig, src_vocab: int, tgt_vocab: int, pad: int) -> ModelArgs:
    """The model's construction arguments a training config implies (the vocabularies come from the data)."""
    return ModelArgs(
        src_vocab_size=src_vocab, tgt_vocab_size=tgt_vocab, padding_idx=pad,
        share_all_embeddings=cfg.share_all_embeddings,
        share_decoder_input_output_embed=cfg.share_decoder_input_output_embed,
        dropout=cfg.dropout, attention_dropout=cfg.attention_dropout, activation_dropout=cfg.activation_dropout,
        normalize_before=cfg.normalize_before, max_positions=cfg.max_positions,
        scale_dropout_with_embed=cfg.scale_dropout_with_embed,
    )
