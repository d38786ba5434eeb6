"""Cost-term models: latency as a non-negative sum of analytic costs (the default), and a
zero-measurement analytic prior calibrated with a handful of rows.

Batch-1 inference time is, to first order, the sum of what each kernel costs: multiply-accumulates
at the device's throughput, weights streamed from memory per decoder step, and a fixed launch /
dispatch overhead per op that dominates small models on GPUs. `cost` fits one non-negative price per
term (ms per MAC, per byte, per op, ...) so predictions are monotone in every width, head count and
depth, and it minimises the mean *relative* error with an L1 loss: timing noise is multiplicative and
heavy-tailed (drift, a regime of throttled clocks), and the median is not dragged by it.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from hat.latency.predictors.base import Context, FitOne, Predictor, Rows, register

ANALYTIC_TERMS = (
    "enc_macs", "dec_macs", "out_macs", "dec_weight_bytes", "enc_ops", "dec_ops", "dec_mem_ops", "heads_ops",
)


def analytic_terms(raw10: np.ndarray, ctx: Context) -> np.ndarray:
    """Cost terms from HAT's 10 averages (so HAT CSVs work too): MACs of encoder, decoder and the
    output projection, decoder weight bytes read per step, and op counts that model the fixed
    per-layer/per-step cost that dominates small batch-1 models. Sums are exact from averages since
    every term is linear in per-layer values."""
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


def cost_basis(raw10: np.ndarray, ctx: Context) -> np.ndarray:
    """The analytic terms and a constant (fixed per-translation overhead)."""
    t = analytic_terms(raw10, ctx)
    return np.concatenate([t, np.ones((len(t), 1))], 1)


def l1_relative_fit(basis: np.ndarray, y: np.ndarray, prior: np.ndarray | None = None, strength: float = 0.0) -> np.ndarray:
    """Non-negative c minimising sum_i |basis_i c / y_i - 1| (a linear program, exact), plus with a
    `prior` strength * sum_k w_k |c_k - s prior_k| over a free scale s >= 0, w_k being term k's mean
    share of the latency per unit coefficient: the source device's relative prices, rescaled as a
    whole, with deviations costing as much as `strength` rows of 100 % error per unit share."""
    from scipy import sparse  # noqa: PLC0415
    from scipy.optimize import linprog  # noqa: PLC0415

    a = basis / y[:, None]
    scale = np.maximum(np.abs(a).max(0), 1e-300)
    a = a / scale
    n, k = a.shape
    # variables: c (k), [s (1)], u, v (n each: the positive and negative parts of the relative errors), [p, q (k each)]
    fit_rows = [sparse.csr_matrix(a), -sparse.eye(n), sparse.eye(n)]
    if prior is None or strength <= 0:
        a_eq, rhs = sparse.hstack(fit_rows), np.ones(n)
        cost = np.concatenate([np.zeros(k), np.ones(2 * n)])
    else:
        w, p0 = a.mean(0), np.asarray(prior, dtype=np.float64) * scale
        z = sparse.csr_matrix
        a_eq = sparse.vstack([
            sparse.hstack([fit_rows[0], z((n, 1)), *fit_rows[1:], z((n, 2 * k))]),
            sparse.hstack([sparse.diags(w), z((-w * p0).reshape(-1, 1)), z((k, 2 * n)), -sparse.eye(k), sparse.eye(k)]),
        ])
        rhs = np.concatenate([np.ones(n), np.zeros(k)])
        cost = np.concatenate([np.zeros(k + 1), np.ones(2 * n), np.full(2 * k, strength)])
    res = linprog(cost, A_eq=a_eq.tocsc(), b_eq=rhs, bounds=(0, None), method="highs")
    if res.status != 0:  # never seen; the plain fit is always feasible
        raise RuntimeError(f"cost-model fit failed: {res.message}")
    return res.x[:k] / scale


STRENGTHS = (0.0, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1e4)


def choose_strength(basis: np.ndarray, y: np.ndarray, prior: np.ndarray, seed: int) -> float:
    """The prior strength with the lowest cross-validated MAPE (ties: the stronger prior)."""
    n = len(y)
    if n < 4:
        return STRENGTHS[-1]
    folds = np.array_split(np.random.default_rng(seed).permutation(n), min(n, 5))
    best, best_err = STRENGTHS[-1], math.inf
    for s in reversed(STRENGTHS):
        err = 0.0
        for i, va in enumerate(folds):
            tr = np.concatenate([f for j, f in enumerate(folds) if j != i])
            c = l1_relative_fit(basis[tr], y[tr], prior, s)
            err += float(np.sum(np.abs(basis[va] @ c / y[va] - 1)))
        if err < best_err - 1e-9 * n:
            best, best_err = s, err
    return best


@register("cost")
class CostModel(Predictor):
    """ms = sum_k c_k term_k + c_0, c >= 0, fit for the least mean absolute relative error."""

    def _basis(self, rows: Rows) -> np.ndarray:
        return cost_basis(rows.raw10, self.context)

    def _cost(self, rows: Rows) -> np.ndarray:
        return np.maximum(self._basis(rows) @ self.state["coef"].numpy(), 1e-6)

    def _predict(self, rows: Rows) -> np.ndarray:
        return self._cost(rows)

    def _fit(self, rows: Rows, y: np.ndarray, seed: int) -> None:
        self.state = {"coef": torch.tensor(l1_relative_fit(self._basis(rows), y)), "terms": [*ANALYTIC_TERMS, "const"]}

    def _transfer(self, source: Predictor, rows: Rows, y: np.ndarray, seed: int) -> None:
        """The source device's prices as a prior; how far the target may move from them (as a
        whole, and term by term) is chosen by cross-validation on the target rows."""
        b, prior = self._basis(rows), source.state["coef"].numpy()
        strength = choose_strength(b, y, prior, seed)
        self.state = {"coef": torch.tensor(l1_relative_fit(b, y, prior, strength)), "terms": [*ANALYTIC_TERMS, "const"],
                      "prior_strength": float(strength)}


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
    s, _ = nnls(np.concatenate([b, np.diag(w)], 0), np.concatenate([y, w]))
    return s


@register("analytic")
class Analytic(Predictor):
    """MACs / 20 GMAC/s + bytes / 10 GB/s + ops x 5 us + 1 ms, each scale refit on `calib_rows` rows
    (all when None) with a pull towards the prior; transfer uses the source's prices as the prior."""

    OPTIONS = {"calib_rows": None}

    def _predict(self, rows: Rows) -> np.ndarray:
        return _analytic_basis(analytic_terms(rows.raw10, self.context)) @ self.state["coef"].numpy()

    def _calibrate_from(self, prior: np.ndarray, rows: Rows, y: np.ndarray, seed: int) -> None:
        a = _analytic_basis(analytic_terms(rows.raw10, self.context))
        n = self.options["calib_rows"]
        self.used = np.random.default_rng(seed).permutation(len(y))[: len(y) if n is None else n]
        coef = prior * _calibrate(a[self.used] * prior, y[self.used])
        self.state = {"coef": torch.tensor(coef, dtype=torch.float64), "calib_rows": int(len(self.used))}

    def _calibrate(self, rows: Rows, y: np.ndarray, seed: int, fit_one: FitOne) -> None:
        """Fit on `calib_rows` rows: the rows it leaves out calibrate this very fit (plain split
        conformal), rather than refits on other few rows, whose errors differ from this one's."""
        n = self.options["calib_rows"]
        if n is None or len(y) - n < 10:
            return super()._calibrate(rows, y, seed, fit_one)
        fit_one(self, rows, y)
        rest = np.setdiff1d(np.arange(len(y)), self.used)
        ratios = y[rest] / np.maximum(self._predict(rows.subset(rest)), 1e-9)
        self.interval = {"ratios": torch.tensor(np.sort(ratios)), "method": f"held-out rows (fit on {n})",
                         "rows": int(len(y))}

    def _fit(self, rows: Rows, y: np.ndarray, seed: int) -> None:
        self._calibrate_from(ANALYTIC_PRIOR, rows, y, seed)

    def _transfer(self, source: Predictor, rows: Rows, y: np.ndarray, seed: int) -> None:
        self._calibrate_from(source.state["coef"].numpy(), rows, y, seed)
