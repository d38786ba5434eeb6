"""MLP predictors: HAT's recipe (`hat-mlp`) and the cost model with a learned residual (`cost-mlp`)."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from hat.latency.predictors.base import Predictor, Rows, register
from hat.latency.predictors.cost import CostModel, analytic_terms, l1_relative_fit
from hat.space import HAT_FEATURE_NORM


def _mlp(n_in: int, hidden: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(n_in, h), nn.ReLU()]
        n_in = h
    layers.append(nn.Linear(n_in, 1))
    return nn.Sequential(*layers)


def train_mlp(x: np.ndarray, y: np.ndarray, hidden: Sequence[int], lr: float, steps: int, batch: int, seed: int,
              val: tuple[np.ndarray, np.ndarray] | None = None, weight_decay: float = 0.0, eval_every: int = 50,
              patience: int = 20, init: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Adam on MSE from `init` (or a seeded init); with `val`, keep the weights of the best
    validation loss (early stopping). Returns the state dict."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = _mlp(x.shape[1], hidden)
    if init is not None:
        net.load_state_dict(init)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32).view(-1, 1)
    if val is not None:
        xv, yv = torch.tensor(val[0], dtype=torch.float32), torch.tensor(val[1], dtype=torch.float32).view(-1, 1)
    best, best_state, bad = math.inf, None, 0
    for step in range(steps):
        idx = rng.choice(len(xt), size=batch, replace=False) if batch < len(xt) else slice(None)
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
    return best_state if best_state is not None else net.state_dict()


def mlp_apply(state: dict[str, torch.Tensor], hidden: Sequence[int], x: np.ndarray) -> np.ndarray:
    """The `_mlp` network's forward straight from its state dict (the same ops as the module; building
    one per call would spend most of a search re-initialising weights that are then overwritten)."""
    h = torch.tensor(x, dtype=torch.float32)
    with torch.no_grad():
        for i in range(len(hidden) + 1):
            h = nn.functional.linear(h, state[f"{2 * i}.weight"], state[f"{2 * i}.bias"])
            if i < len(hidden):
                h = torch.relu(h)
    return h.view(-1).double().numpy()


@register("hat-mlp")
class HatMLP(Predictor):
    """HAT's recipe, exactly: the 10 averages / [640,6,2048,6,640,6,2048,6,6,2], target
    ms / lat-norm, MLP 10-400-400-400-400-1 ReLU, Adam 1e-5, batch 128, 5000 steps. Transfer
    rescales lat-norm by the median ratio target/source and fine-tunes `transfer_steps`. A predictor
    imported from HAT's fork (`hat_import`) keeps its own feature-norm in `state`."""

    OPTIONS: dict[str, Any] = {"steps": 5000, "lr": 1e-5, "batch": 128, "hidden": [400, 400, 400, 400],
                               "transfer_steps": 1000}
    CALIBRATION_FOLDS = 1

    def _x(self, rows: Rows) -> np.ndarray:
        return rows.raw10 / np.array(self.state.get("feature_norm", HAT_FEATURE_NORM))

    def _predict(self, rows: Rows) -> np.ndarray:
        return mlp_apply(self.state["net"], self.state["hidden"], self._x(rows)) * self.lat_norm

    def _train(self, rows: Rows, y: np.ndarray, seed: int, steps: int, init: dict | None = None) -> None:
        o = self.options
        net = train_mlp(self._x(rows), y / self.lat_norm, o["hidden"], o["lr"], steps, o["batch"], seed, init=init)
        keep = {k: self.state[k] for k in ("feature_norm",) if k in self.state}
        self.state = {"net": net, "hidden": list(o["hidden"]), **keep}

    def _fit(self, rows: Rows, y: np.ndarray, seed: int) -> None:
        self._train(rows, y, seed, self.options["steps"])

    def _transfer(self, source: Predictor, rows: Rows, y: np.ndarray, seed: int) -> None:
        self.lat_norm = source.lat_norm * float(np.median(y / np.maximum(source._predict(rows), 1e-9)))
        if "feature_norm" in source.state:  # an imported source reads its own feature scale
            self.state = {"feature_norm": source.state["feature_norm"]}
        self._train(rows, y, seed, self.options["transfer_steps"], init=source.state["net"])


@register("cost-mlp")
class CostMLP(CostModel):
    """The cost model times exp(residual) from a small early-stopped MLP ensemble on standardized
    features (per-layer ones when the data has configs) with a log-latency target. The ensemble
    is kept only when it lowers relative error on a held-out 20 % of the rows. Transfer adapts
    the cost part and keeps the source's residual."""

    OPTIONS: dict[str, Any] = {"ensemble": 3, "hidden": [64, 64], "min_gain": 0.002}
    USES_FULL = True
    CALIBRATION_FOLDS = 1

    def _x(self, rows: Rows) -> np.ndarray:
        parts = [rows.raw10 / np.array(HAT_FEATURE_NORM), np.log1p(analytic_terms(rows.raw10, self.context))]
        return np.concatenate(parts + ([rows.full] if self.feature_set == "full" else []), 1)

    def _predict(self, rows: Rows) -> np.ndarray:
        s = self.state
        if not s.get("nets"):
            return self._cost(rows)
        x = (self._x(rows) - s["mu"].numpy()) / s["sd"].numpy()
        return self._cost(rows) * np.exp(np.mean([mlp_apply(n, s["hidden"], x) for n in s["nets"]], 0))

    def _fit(self, rows: Rows, y: np.ndarray, seed: int) -> None:
        super()._fit(rows, y, seed)
        x, b, o = self._x(rows), self._basis(rows), self.options
        mu, sd = x.mean(0), x.std(0)
        sd[sd < 1e-9] = 1.0
        self.state.update(mu=torch.tensor(mu), sd=torch.tensor(sd), hidden=list(o["hidden"]), nets=[])
        if len(y) < 40 or o["ensemble"] <= 0:
            return
        xs, nets, gains = (x - mu) / sd, [], []
        for m in range(o["ensemble"]):
            perm = np.random.default_rng(seed * 1000 + m).permutation(len(y))
            va, tr = perm[: max(4, len(y) // 5)], perm[max(4, len(y) // 5):]
            # the cost part refit without the validation rows, so the gate below is honest
            r = np.log(y) - np.log(np.maximum(b @ l1_relative_fit(b[tr], y[tr]), 1e-6))
            net = train_mlp(xs[tr], r[tr], o["hidden"], 1e-3, 3000, 64, seed * 1000 + m, val=(xs[va], r[va]),
                            weight_decay=1e-4, eval_every=25, patience=20)
            gains.append(float(np.mean(np.abs(r[va])) - np.mean(np.abs(r[va] - mlp_apply(net, o["hidden"], xs[va])))))
            nets.append(net)
        self.state["residual_val_gain"] = float(np.mean(gains))
        if np.mean(gains) > o["min_gain"]:
            self.state["nets"] = nets

    def _transfer(self, source: Predictor, rows: Rows, y: np.ndarray, seed: int) -> None:
        super()._transfer(source, rows, y, seed)
        self.state.update({k: source.state[k] for k in ("mu", "sd", "hidden", "nets")})
