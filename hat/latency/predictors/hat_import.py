"""HAT's trained latency predictors, used as they are.

HAT's fork saves its latency MLP as a plain state dict: `first_layer` (features -> hidden),
`layers.0` .. `layers.{N-1}` (hidden -> hidden), `predict` (hidden -> 1), ReLU after every layer
but the last; its input is the 10 averaged features divided by `feature-norm`, its output times
`lat-norm` is ms (encoder + decoder). That is the network of our `hat-mlp` model, so an import
maps the tensors onto it unchanged (same float32 forward) and records where they came from; the
result is an ordinary predictor file every command reads. HAT ships no calibration rows, so an
imported predictor has no interval unless the user calibrates it on a latency CSV it was not
fit on (`calibrate_on`): ratios measured/predicted of rows held out from fitting are what
split-conformal intervals need.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from hat.errors import CheckpointError, DataError
from hat.files import load_torch
from hat.latency.dataset import LatencyData
from hat.latency.predictors.base import Context, Predictor
from hat.latency.predictors.mlp import HatMLP
from hat.space import HAT_FEATURE_NAMES, HAT_FEATURE_NORM, DesignSpace

_LAYER = re.compile(r"layers\.(\d+)\.(weight|bias)")
HAT_LAYOUT = "first_layer, layers.0 .. layers.N-1, predict (weight and bias each)"


def is_hat_state_dict(obj: Any) -> bool:
    """Whether a loaded torch file looks like HAT's latency MLP (so we can say how to import it)."""
    return isinstance(obj, Mapping) and "first_layer.weight" in obj and "predict.weight" in obj


def hat_mlp_state(sd: Any, n_features: int, where: str) -> tuple[dict[str, torch.Tensor], list[int]]:
    """(state dict of `hat-mlp`'s nn.Sequential, its hidden widths) from HAT's state dict; any other
    layout, a shape that does not chain, or a non-finite weight is a CheckpointError naming `where`."""
    if not isinstance(sd, Mapping) or not sd:
        raise CheckpointError(f"{where}: not a HAT latency predictor (expected a state dict with {HAT_LAYOUT})")
    bad = [k for k, v in sd.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{where}: not a HAT latency predictor (entry {bad[0]!r} is not a named tensor)")
    n_hidden = len({int(m.group(1)) for k in sd if (m := _LAYER.fullmatch(k))})
    names = ["first_layer", *(f"layers.{i}" for i in range(n_hidden)), "predict"]
    expected = {f"{n}.{p}" for n in names for p in ("weight", "bias")}
    missing, extra = sorted(expected - set(sd)), sorted(set(sd) - expected)
    if missing or extra:
        what = f"missing {', '.join(missing)}" if missing else f"unexpected {', '.join(extra)}"
        raise CheckpointError(f"{where}: not HAT's latency-MLP layout ({what}; expected {HAT_LAYOUT})")
    out, hidden, n_in = {}, [], n_features
    for i, name in enumerate(names):
        w, b = sd[f"{name}.weight"], sd[f"{name}.bias"]
        n_out = 1 if name == "predict" else (w.shape[0] if w.dim() == 2 else -1)
        if w.dim() != 2 or tuple(w.shape) != (n_out, n_in) or tuple(b.shape) != (n_out,):
            raise CheckpointError(f"{where}: {name} has weight {tuple(w.shape)} and bias {tuple(b.shape)}; expected "
                                  f"({'1' if name == 'predict' else 'H'}, {n_in}) and its bias"
                                  + (f" ({n_features} inputs: the features HAT's predictor reads)" if i == 0 else ""))
        if not (w.is_floating_point() and b.is_floating_point()):
            raise CheckpointError(f"{where}: {name} holds {w.dtype} weights, not floating point")
        if not (torch.isfinite(w).all() and torch.isfinite(b).all()):
            raise CheckpointError(f"{where}: {name} holds non-finite weights (NaN or inf)")
        out[f"{2 * i}.weight"], out[f"{2 * i}.bias"] = w.detach().float().clone(), b.detach().float().clone()
        if name != "predict":
            hidden.append(int(n_out))
        n_in = n_out
    return out, hidden


def check_norms(feature_norm: Sequence[float], lat_norm: float, where: str) -> list[float]:
    fn = [float(x) for x in feature_norm]
    if len(fn) != len(HAT_FEATURE_NAMES):
        raise CheckpointError(f"{where}: feature-norm has {len(fn)} values; HAT's predictor reads {len(HAT_FEATURE_NAMES)} "
                              f"features ({', '.join(HAT_FEATURE_NAMES)}), e.g. {list(HAT_FEATURE_NORM)}")
    if not all(np.isfinite(x) and x > 0 for x in fn):
        raise CheckpointError(f"{where}: feature-norm {fn}: every value must be a positive number")
    if not (np.isfinite(lat_norm) and lat_norm > 0):
        raise CheckpointError(f"{where}: lat-norm {lat_norm:g} must be a positive number of ms (HAT: Pi 5000, "
                              "Xeon 300, GPU 200)")
    return fn


def import_hat(path: str | Path, lat_norm: float, feature_norm: Sequence[float] = HAT_FEATURE_NORM,
               space: DesignSpace | None = None, device: str = "", context: Context | None = None) -> HatMLP:
    """HAT's predictor file at `path` as a `hat-mlp` predictor with the same forward, recorded as
    imported from HAT with its norms; no interval (see `calibrate_on`)."""
    path = Path(path)
    fn = check_norms(feature_norm, lat_norm, str(path))
    net, hidden = hat_mlp_state(load_torch(path, "HAT latency predictor"), len(fn), str(path))
    state = {"net": net, "hidden": hidden, "feature_norm": fn,
             "imported": {"from": "HAT", "file": path.name, "feature_norm": fn, "lat_norm": float(lat_norm)}}
    return HatMLP("hat10", context, float(lat_norm), device, None if space is None else space.to_dict(), state=state,
                  interval={}, options={"hidden": hidden}, source=str(path))


def calibrate_on(pred: Predictor, data: LatencyData) -> None:
    """Give `pred` a split-conformal interval from rows it was not fit on: the ratios
    measured/predicted of every row of `data`."""
    p = pred.predict_data(data)
    if len(p) < 2:
        raise DataError(f"{data.path}: {len(p)} row(s); calibrating an interval needs at least 2 (ideally 100+)")
    if not np.all(np.isfinite(p) & (p > 0)):
        k = int(np.argmax(~(np.isfinite(p) & (p > 0))))
        raise DataError(f"{data.path}: row {k + 1}: the predictor gives {p[k]:g} ms (not a positive latency); "
                        "are these rows of the predictor's device and space?")
    ratios = np.sort(data.latency_ms / p)
    pred.interval = {"ratios": torch.tensor(ratios), "method": f"held-out CSV {Path(str(data.path)).name}",
                     "rows": int(len(ratios))}


def imported_from(pred: Any) -> dict[str, Any] | None:
    """The import record of a predictor (file, norms), None when it was fit here."""
    inner = getattr(pred, "predictor", pred)
    rec = getattr(inner, "state", {}).get("imported") if isinstance(getattr(inner, "state", None), dict) else None
    return rec if isinstance(rec, dict) else None
