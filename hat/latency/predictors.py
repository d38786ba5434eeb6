"""Latency predictors: HAT's MLP, our default (linear on analytic terms + MLP residual ensemble)
and a zero-measurement analytic model calibrated with a handful of rows.

A predictor is saved with `torch.save` of a plain dict of tensors/numbers/strings (loadable with
`weights_only=True`, no pickle of classes). It records the model name, feature set, lat-norm,
device, the measurement protocol and the design space it was fit on; `load_predictor(path)`
gives a `Predictor` with `predict(cfgs) -> ms` and `predict_one(cfg)`. Using it with a space of
other super dims, or with choices outside the fitted space, raises a one-line ConfigError.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from hat.errors import CheckpointError, ConfigError, DataError
from hat.files import check_fields, load_torch, save_torch
from hat.latency.dataset import LatencyData
from hat.space import HAT_FEATURE_NORM, DesignSpace, SubConfig, features_full, hat_raw_features

MODELS = ("default", "hat-mlp", "analytic")
FORMAT = "hat-latency-predictor/1"


# ---- features ------------------------------------------------------------------------------
@dataclass
class Context:
    """What turns an architecture into analytic terms: protocol and the space's qkv dim."""

    src_len: int = 30
    tgt_len: int = 30
    beam: int = 5
    vocab_size: int = 8000
    qkv_dim: int = 512

    def to_dict(self) -> dict[str, int]:
        return {k: int(getattr(self, k)) for k in ("src_len", "tgt_len", "beam", "vocab_size", "qkv_dim")}


ANALYTIC_TERMS = (
    "enc_macs", "dec_macs", "out_macs", "dec_weight_bytes", "enc_ops", "dec_ops", "dec_mem_ops", "heads_ops",
)


def analytic_terms(raw10: np.ndarray, ctx: Context) -> np.ndarray:
    """Cost terms from HAT's 10 averages (so HAT CSVs work too): MACs of encoder, decoder and the
    output projection, decoder weight bytes read per step, and op counts that model the fixed
    per-layer/per-step cost that dominates small batch-1 models on CPU. Sums are exact from
    averages since every term is linear in per-layer values."""
    r = np.atleast_2d(np.asarray(raw10, dtype=np.float64))
    de, le, fe, he, dd, ld, fd, hs, hx, arb = (r[:, i] for i in range(10))
    L, T, B, V, q = ctx.src_len, ctx.tgt_len, ctx.beam, ctx.vocab_size, ctx.qkv_dim
    nmem = np.minimum(arb, le) * ld  # sum over decoder layers of attended encoder layers
    enc_macs = le * (4 * L * de * q + 2 * L * L * q) + 2 * L * de * fe * le
    dec_macs = B * (2 * L * de * q * nmem + T * ld * (6 * dd * q) + ld * q * T * (T + 1) + 2 * T * q * L * nmem
                    + 2 * T * dd * fd * ld)
    out_macs = B * T * dd * V
    dec_bytes = 4.0 * T * (ld * (4 * dd * q + 2 * dd * q + 2 * dd * fd) + dd * V)
    return np.stack([enc_macs, dec_macs, out_macs, dec_bytes, le, T * ld, T * nmem, le * he + T * ld * (hs + hx)], 1)


def _full_features(cfgs: Sequence[SubConfig], space: DesignSpace) -> np.ndarray:
    return np.array([features_full(c, space) for c in cfgs], dtype=np.float64)


def _raw10(cfgs: Sequence[SubConfig]) -> np.ndarray:
    return np.array([list(hat_raw_features(c).values()) for c in cfgs], dtype=np.float64)


# ---- metrics -----------------------------------------------------------------------------------
def metrics(measured: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """RMSE (ms), MAPE (%) and Kendall tau: users asked HAT for relative error and ranking."""
    from scipy.stats import kendalltau  # noqa: PLC0415

    y, p = np.asarray(measured, float), np.asarray(predicted, float)
    tau = kendalltau(y, p).statistic if len(y) > 1 else float("nan")
    return {"rmse_ms": float(np.sqrt(np.mean((y - p) ** 2))), "mape_pct": float(np.mean(np.abs(p - y) / y) * 100),
            "kendall_tau": float(tau), "n": int(len(y))}


# ---- MLP helpers ---------------------------------------------------------------------------------
def _mlp(n_in: int, hidden: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(n_in, h), nn.ReLU()]
        n_in = h
    layers.append(nn.Linear(n_in, 1))
    return nn.Sequential(*layers)


def _train_mlp(x: np.ndarray, y: np.ndarray, hidden: Sequence[int], lr: float, steps: int, batch: int, seed: int,
               val: tuple[np.ndarray, np.ndarray] | None = None, weight_decay: float = 0.0,
               eval_every: int = 50, patience: int = 20) -> nn.Sequential:
    """Adam on MSE; with `val`, keep the weights of the best validation loss (early stopping)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = _mlp(x.shape[1], hidden)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32).view(-1, 1)
    if val is not None:
        xv, yv = torch.tensor(val[0], dtype=torch.float32), torch.tensor(val[1], dtype=torch.float32).view(-1, 1)
    best, best_state, bad = math.inf, None, 0
    for step in range(steps):
        idx = rng.choice(len(xt), size=min(batch, len(xt)), replace=len(xt) < batch) if batch < len(xt) else slice(None)
        loss = nn.functional.mse_loss(net(xt[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if val is not None and (step + 1) % eval_every == 0:
            with torch.no_grad():
                v = float(nn.functional.mse_loss(net(xv), yv))
            if v < best - 1e-9:
                best, best_state, bad = v, {k: t.clone() for k, t in net.state_dict().items()}, 0
            else:
                bad += 1
                if bad >= patience:
                    break
    if best_state is not None:
        net.load_state_dict(best_state)
    return net.eval()


def _mlp_apply(state: dict[str, torch.Tensor], hidden: Sequence[int], x: np.ndarray) -> np.ndarray:
    net = _mlp(x.shape[1], hidden)
    net.load_state_dict(state)
    with torch.no_grad():
        return net(torch.tensor(x, dtype=torch.float32)).view(-1).double().numpy()


# ---- the predictor ---------------------------------------------------------------------------------
@dataclass
class Predictor:
    """A fitted latency model. `predict` takes SubConfigs; `predict_raw` takes HAT's 10 averages
    (and per-layer features when the feature set is `full`)."""

    model: str
    feature_set: str  # "hat10" (HAT's averages) or "full" (per-layer + analytic)
    context: Context
    lat_norm: float
    device: str
    space: dict[str, Any] | None  # DesignSpace.to_dict() of the fitted space (None: unknown, HAT CSV)
    state: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    # -- space checks --
    def _space_obj(self) -> DesignSpace | None:
        return None if self.space is None else DesignSpace.from_dict(self.space, source=f"predictor {self.source}")

    def check_space(self, space: DesignSpace) -> None:
        """Refuse a space other than the fitted one: same super dims and choices within the fitted ones
        (so a predictor fit on `tiny-latency` serves `tiny`)."""
        if self.space is None:
            return
        mine = DesignSpace.from_dict(self.space)
        where = self.source or "predictor"
        if space.to_dict()["super"] != self.space["super"]:
            raise ConfigError(f"{where}: fit on space {mine.name} whose super dims differ from space {space.name}'s")
        for k, vals in space.choices.items():
            extra = set(vals) - set(mine.choices.get(k, ()))
            if extra:
                raise ConfigError(f"{where}: fit on space {mine.name}; space {space.name} has {k} choices "
                                  f"{sorted(extra)} outside it")

    # -- prediction --
    def predict(self, cfgs: Sequence[SubConfig]) -> np.ndarray:
        """Latency in ms (encoder + decoder, the device's protocol) for each config."""
        cfgs = list(cfgs)
        if not cfgs:
            return np.zeros(0)
        space = self._space_obj()
        if space is not None:
            for c in cfgs:
                if c.encoder_layer_num > space.max_encoder_layers or c.decoder_layer_num > space.max_decoder_layers or \
                        max(c.encoder_embed_dim, c.decoder_embed_dim) > max(space.super_encoder_embed_dim,
                                                                            space.super_decoder_embed_dim):
                    raise ConfigError(f"{self.source or 'predictor'}: config exceeds the super dims of space {space.name}")
        full = _full_features(cfgs, space) if self.feature_set == "full" else None
        return self.predict_raw(_raw10(cfgs), full)

    def predict_one(self, cfg: SubConfig) -> float:
        return float(self.predict([cfg])[0])

    def predict_data(self, data: LatencyData) -> np.ndarray:
        """Predict the rows of a latency CSV (HAT CSVs have no configs: only `hat10` predictors fit them)."""
        if self.feature_set == "full":
            if data.configs is None:
                raise DataError(f"{data.path}: has no config column; this predictor needs per-layer configs")
            return self.predict(data.configs)
        return self.predict_raw(data.hat_features)

    def predict_raw(self, raw10: np.ndarray, full: np.ndarray | None = None) -> np.ndarray:
        s = self.state
        raw10 = np.atleast_2d(raw10)
        if self.model == "hat-mlp":
            x = raw10 / np.array(HAT_FEATURE_NORM)
            return _mlp_apply(s["net"], s["hidden"], x) * self.lat_norm
        terms = analytic_terms(raw10, self.context)
        if self.model == "analytic":
            return _analytic_basis(terms) @ s["coef"].numpy()
        # default
        lin = np.maximum(_lin_basis(terms) @ s["coef"].numpy(), 1e-3)
        x = self._mlp_input(raw10, terms, full)
        res = np.mean([_mlp_apply(st, s["hidden"], x) for st in s["nets"]], 0) if s["nets"] else 0.0
        return lin * np.exp(res)

    def _mlp_input(self, raw10: np.ndarray, terms: np.ndarray, full: np.ndarray | None) -> np.ndarray:
        parts = [raw10 / np.array(HAT_FEATURE_NORM), np.log1p(terms)]
        if self.feature_set == "full":
            parts.append(full)
        x = np.concatenate(parts, 1)
        return (x - self.state["mu"].numpy()) / self.state["sd"].numpy()

    # -- io --
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "model": self.model, "feature_set": self.feature_set, "context": self.context.to_dict(),
                "lat_norm": float(self.lat_norm), "device": self.device, "space": self.space, "state": self.state}

    def save(self, path: str | Path) -> None:
        save_torch(self.to_dict(), path)  # atomic: a failed write keeps the previous predictor


def load_predictor(path: str | Path, space: DesignSpace | None = None) -> Predictor:
    """Load a saved predictor (pickle-free: `torch.load(weights_only=True)`); with `space`, refuse
    it unless it was fit on that space (or on a superset with the same super dims)."""
    path = Path(path)
    d = load_torch(path, "predictor file")
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a latency predictor (format {d.get('format') if isinstance(d, dict) else None!r})")
    check_fields(d, {"model": str, "feature_set": str, "context": dict, "lat_norm": (int, float), "device": str,
                     "space": (dict, type(None)), "state": dict}, f"{path}: latency predictor", CheckpointError)
    try:
        pred = Predictor(d["model"], d["feature_set"], Context(**d["context"]), d["lat_norm"], d["device"], d["space"],
                         d["state"], str(path))
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: incomplete latency predictor ({type(e).__name__}: {e})") from None
    if space is not None:
        pred.check_space(space)
    return pred


def predictor_for_device(device: str | Path, space: DesignSpace | None = None, path: str | Path | None = None) -> Predictor:
    """The device's predictor (or `path`), checked against `space`: what the search calls."""
    from hat.latency.devices import resolve_device  # noqa: PLC0415

    return load_predictor(path if path else resolve_device(device).predictor_path(), space)


# ---- fitting -----------------------------------------------------------------------------------------
def _lin_basis(terms: np.ndarray) -> np.ndarray:
    return np.concatenate([terms, np.ones((len(terms), 1))], 1)


def _analytic_basis(terms: np.ndarray) -> np.ndarray:
    """MACs, bytes moved and op count (each with its own least-squares scale) and a constant."""
    macs = terms[:, 0] + terms[:, 1] + terms[:, 2]
    nbytes = terms[:, 3]
    ops = 30 * terms[:, 4] + 40 * terms[:, 5]  # ~torch ops per encoder layer / per decoder layer-step
    return np.stack([macs, nbytes, ops, np.ones(len(terms))], 1)


# zero-measurement defaults: 20 GMAC/s, 10 GB/s, 5 us per op, 1 ms fixed (ms units)
ANALYTIC_PRIOR = np.array([1 / 20e6, 1 / 10e6, 5e-3, 1.0])


def _calibrate(b: np.ndarray, y: np.ndarray, strength: float = 1e-2) -> np.ndarray:
    """Non-negative least-squares scale factors for the prior's terms (columns of `b`, in ms),
    pulled towards 1 (the uncalibrated prior) so that 5-10 rows cannot blow a term up."""
    from scipy.optimize import nnls  # noqa: PLC0415

    if len(y) == 0:
        return np.ones(b.shape[1])
    w = math.sqrt(strength * len(y)) * np.abs(b).mean(0)  # penalty on each term's typical ms, (s_j - 1)^2
    a = np.concatenate([b, np.diag(w)], 0)
    t = np.concatenate([y, w])
    s, _ = nnls(a, t)
    return s


def _nnls(a: np.ndarray, y: np.ndarray, ridge: float = 0.0) -> np.ndarray:
    from scipy.optimize import nnls  # noqa: PLC0415

    scale = np.maximum(np.abs(a).max(0), 1e-12)
    an = a / scale
    if ridge > 0:
        an = np.concatenate([an, math.sqrt(ridge) * np.eye(a.shape[1])], 0)
        y = np.concatenate([y, np.zeros(a.shape[1])])
    coef, _ = nnls(an, y)
    return coef / scale


def fit(
    data: LatencyData,
    model: str = "default",
    space: DesignSpace | None = None,
    context: Context | None = None,
    lat_norm: float = 100.0,
    device: str = "",
    seed: int = 0,
    ensemble: int = 3,
    calib_rows: int | None = None,
    hat_steps: int = 5000,
) -> Predictor:
    """Fit `model` on all rows of `data`. The feature set follows what the data carries: per-layer
    (`full`) when it has configs and the space is known, HAT's 10 averages otherwise."""
    if model not in MODELS:
        raise ConfigError(f"unknown predictor model {model!r} (choose {', '.join(MODELS)})")
    if len(data) < 2:
        raise DataError(f"{data.path}: {len(data)} row(s), need at least 2 to fit a predictor")
    ctx = context or Context()
    y = data.latency_ms
    raw = data.hat_features
    feature_set = "full" if (data.configs is not None and space is not None and model == "default") else "hat10"
    pred = Predictor(model, feature_set, ctx, lat_norm, device, None if space is None else space.to_dict())
    if model == "hat-mlp":
        # HAT's recipe, exactly: 10-400x4-1 ReLU, Adam 1e-5, batch 128, 5000 steps, target ms/lat_norm
        hidden = [400, 400, 400, 400]
        net = _train_mlp(raw / np.array(HAT_FEATURE_NORM), y / lat_norm, hidden, 1e-5, hat_steps, 128, seed)
        pred.state = {"net": net.state_dict(), "hidden": hidden}
        return pred
    terms = analytic_terms(raw, ctx)
    if model == "analytic":
        a = _analytic_basis(terms)
        rng = np.random.default_rng(seed)
        idx = rng.permutation(len(y))[: len(y) if calib_rows is None else calib_rows]
        coef = ANALYTIC_PRIOR * _calibrate(a[idx] * ANALYTIC_PRIOR, y[idx])
        pred.state = {"coef": torch.tensor(coef, dtype=torch.float64), "calib_rows": int(len(idx))}
        return pred
    # default: non-negative linear model on analytic terms (CPU latency is ~linear in them) times an
    # exp(residual) from a small early-stopped MLP ensemble on standardized features, log target
    coef = _nnls(_lin_basis(terms), y, ridge=1e-8)
    lin = np.maximum(_lin_basis(terms) @ coef, 1e-3)
    pred.state = {"coef": torch.tensor(coef, dtype=torch.float64), "hidden": [64, 64], "nets": []}
    full = _full_features(data.configs, space) if feature_set == "full" else None
    parts = [raw / np.array(HAT_FEATURE_NORM), np.log1p(terms)] + ([full] if full is not None else [])
    x = np.concatenate(parts, 1)
    mu, sd = x.mean(0), x.std(0)
    sd[sd < 1e-9] = 1.0
    pred.state["mu"], pred.state["sd"] = torch.tensor(mu), torch.tensor(sd)
    if len(y) >= 40 and ensemble > 0:
        xs = (x - mu) / sd
        r = np.log(y) - np.log(lin)
        nets, val_gain = [], []
        for m in range(ensemble):
            rng = np.random.default_rng(seed * 1000 + m)
            perm = rng.permutation(len(y))
            nv = max(4, len(y) // 5)
            va, tr = perm[:nv], perm[nv:]
            # the linear part refit without the validation rows, so the gate below is honest
            c_tr = _nnls(_lin_basis(terms[tr]), y[tr], ridge=1e-8)
            r_tr = np.log(y) - np.log(np.maximum(_lin_basis(terms) @ c_tr, 1e-3))
            net = _train_mlp(xs[tr], r_tr[tr], pred.state["hidden"], 1e-3, 3000, 64, seed * 1000 + m,
                             val=(xs[va], r_tr[va]), weight_decay=1e-4, eval_every=25, patience=20)
            res_va = _mlp_apply(net.state_dict(), pred.state["hidden"], xs[va])
            val_gain.append(float(np.mean(np.abs(r_tr[va])) - np.mean(np.abs(r_tr[va] - res_va))))
            nets.append(net.state_dict())
        # keep the residual ensemble only if it lowered held-out relative error: on noisy CPU timings the
        # linear model alone is often the better predictor, and the MLP would just fit noise
        pred.state["residual_val_gain"] = float(np.mean(val_gain))
        if np.mean(val_gain) > 0.002:
            pred.state["nets"] = nets
    return pred


def split_indices(n: int, seed: int, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> tuple[np.ndarray, ...]:
    """HAT's shuffled 80/10/10 train/valid/test split."""
    perm = np.random.default_rng(seed).permutation(n)
    a = int(round(n * fractions[0]))
    b = a + int(round(n * fractions[1]))
    return perm[:a], perm[a:b], perm[b:]


__all__ = ["ANALYTIC_TERMS", "MODELS", "Context", "Predictor", "analytic_terms", "fit", "load_predictor", "metrics", "predictor_for_device",
           "split_indices"]
