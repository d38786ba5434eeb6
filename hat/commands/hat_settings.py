"""HAT's search settings files (`configs/*/evo_search/*.yml` of HAT's fork) read as `hat search --config`.

HAT's keys are its flags with dashes and no `version:`; each maps to one of our options. Its
`ckpt-path` is the latency predictor (HAT's state dict, imported in memory with the file's
`feature-norm` / `lat-norm`, or a predictor file of ours) and `write-config-path` the subnet to
write. `restore-file` is a fairseq SuperTransformer checkpoint of HAT's fork, which this project
cannot score with: the file is refused unless the command line replaces it (`--checkpoint`, or
`--scorer params`, which needs no SuperTransformer).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Mapping

from hat.errors import ConfigError
from hat.shipped import read_yaml

# HAT key -> our option
HAT_SEARCH_KEYS = {"evo-iter": "iterations", "population-size": "population", "parent-size": "parents",
                   "mutation-size": "mutations", "crossover-size": "crossovers", "mutation-prob": "mutate_prob",
                   "latency-constraint": "latency_constraint", "write-config-path": "out"}
HAT_PREDICTOR_KEYS = ("ckpt-path", "feature-norm", "lat-norm", "feature-dim", "hidden-dim", "hidden-layer-num")
HAT_MODEL_KEYS = ("restore-file",)
HAT_KEYS = (*HAT_SEARCH_KEYS, *HAT_PREDICTOR_KEYS, *HAT_MODEL_KEYS)


def read_hat_settings(path: str | Path) -> dict[str, Any] | None:
    """The values of a HAT evo_search file, None when `path` is not one (a settings file of ours
    or a shipped name): no `version:` key and at least one of HAT's keys."""
    p = Path(path)
    if not p.is_file():
        return None
    data = read_yaml(p)
    if not isinstance(data, dict) or "version" in data or not any(k in data for k in HAT_KEYS):
        return None
    unknown = sorted(str(k) for k in data if k not in HAT_KEYS)
    if unknown:
        raise ConfigError(f"{p}: HAT search setting(s) {', '.join(unknown)} mean nothing here (this reads "
                          f"{', '.join(HAT_KEYS)})")
    return data


def _resolve(value: Any, key: str, source: Path) -> Path:
    """A path of HAT's file: as given (HAT's paths are relative to where it runs), else beside the file."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{source}: {key} must be a file path, got {value!r}")
    p = Path(value).expanduser()
    for cand in (p, source.parent / p):
        if cand.is_file():
            return cand
    raise ConfigError(f"{source}: {key} {value}: no such file (looked in the working directory and beside {source.name})")


def apply_hat_settings(args: argparse.Namespace, data: Mapping[str, Any], source: Path) -> None:
    """Fill `args` (flags win) from HAT's values; `args.hat_predictor` gets (HAT file, feature-norm,
    lat-norm) when `ckpt-path` is HAT's state dict and no --predictor is given."""
    if "restore-file" in data and not args.checkpoint and args.scorer != "params":
        raise ConfigError(f"{source}: restore-file {data['restore-file']} is a SuperTransformer checkpoint of HAT's fairseq "
                          "fork, which hat cannot score with; give --checkpoint (from `hat train`) or --scorer params")
    for key, ours in HAT_SEARCH_KEYS.items():
        if key in data and getattr(args, ours, None) is None:
            setattr(args, ours, str(data[key]) if ours == "out" else data[key])
    args.hat_predictor = None
    if "ckpt-path" not in data or args.predictor:
        return
    ckpt = _resolve(data["ckpt-path"], "ckpt-path", source)
    from hat.files import load_torch  # noqa: PLC0415
    from hat.latency.predictors.hat_import import is_hat_state_dict  # noqa: PLC0415

    if not is_hat_state_dict(load_torch(ckpt, "latency predictor (ckpt-path)")):
        args.predictor = str(ckpt)  # a predictor file of ours: its norms are its own
        return
    if "lat-norm" not in data:
        raise ConfigError(f"{source}: ckpt-path {data['ckpt-path']} is HAT's predictor; lat-norm is needed to read it")
    fn = data.get("feature-norm")
    if fn is not None and (not isinstance(fn, list) or not all(isinstance(x, (int, float)) for x in fn)):
        raise ConfigError(f"{source}: feature-norm must be a list of numbers, got {fn!r}")
    ln = data["lat-norm"]
    if isinstance(ln, bool) or not isinstance(ln, (int, float)):
        raise ConfigError(f"{source}: lat-norm must be a number, got {ln!r}")
    args.hat_predictor = (ckpt, fn, float(ln),
                          {k: data[k] for k in ("feature-dim", "hidden-dim", "hidden-layer-num") if k in data})


def check_layout(pred: Any, layout: Mapping[str, Any], source: str) -> None:
    """HAT's optional feature-dim / hidden-dim / hidden-layer-num must describe the file's network."""
    hidden = pred.state["hidden"]
    have = {"feature-dim": len(pred.state["feature_norm"]), "hidden-dim": hidden[0], "hidden-layer-num": len(hidden) - 1}
    for k, v in layout.items():
        if v != have[k] or (k == "hidden-dim" and any(h != v for h in hidden)):
            raise ConfigError(f"{source}: {k} {v} does not match the predictor in ckpt-path ({k} {have[k]})")
