"""The predictor interface, its registry, split-conformal intervals, fitting, transfer and file io.

A model is a `Predictor` subclass registered under a name (`@register("cost")`); it implements
`_fit(rows, y, seed)`, `_predict(rows) -> ms` and `_transfer(source, rows, y, seed)` (adapt a
predictor of another device with few rows). `fit` and `transfer` wrap these with split-conformal
calibration: copies of the model are fit with some rows held out (K folds, or one split for models
slow to fit), and the held-out ratios measured/predicted give the interval (DESIGN.md 6c): every
fitted predictor has `predict_interval(cfgs, level)` (one imported from HAT has none unless calibrated).
A saved predictor is a plain dict of tensors/numbers/strings (`torch.load(weights_only=True)`, no
pickled classes): model name, feature set, protocol context, lat-norm, device, design space, fitted
state, calibration ratios and the measurement protocol of the training rows (`hat.latency.provenance`;
files written before it was recorded load with it unknown).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch

from hat.errors import CheckpointError, ConfigError, DataError
from hat.files import check_fields, load_torch, save_torch
from hat.latency.dataset import LatencyData
from hat.latency.provenance import training_protocol
from hat.registry import Registry
from hat.space import DesignSpace, SubConfig, features_full, hat_raw_features

FORMAT = "hat-latency-predictor/2"
DEFAULT_MODEL = "cost"
DEFAULT_LEVEL = 0.9


# ---- what a model sees -------------------------------------------------------------------------
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


@dataclass
class Rows:
    """Model inputs: HAT's 10 raw averages, plus per-layer features for the `full` feature set."""

    raw10: np.ndarray
    full: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.raw10)

    def subset(self, idx: np.ndarray) -> "Rows":
        return Rows(self.raw10[idx], None if self.full is None else self.full[idx])


def raw10_of(cfgs: Sequence[SubConfig]) -> np.ndarray:
    return np.array([list(hat_raw_features(c).values()) for c in cfgs], dtype=np.float64)


def full_of(cfgs: Sequence[SubConfig], space: DesignSpace) -> np.ndarray:
    return np.array([features_full(c, space) for c in cfgs], dtype=np.float64)


# ---- evaluation ----------------------------------------------------------------------------------
def metrics(measured: np.ndarray, predicted: np.ndarray, lower: np.ndarray | None = None,
            upper: np.ndarray | None = None) -> dict[str, float]:
    """RMSE (ms), MAPE (%), Kendall tau and the share within +-10 % (users asked HAT for relative
    error and ranking); with `lower`/`upper`, the interval's empirical coverage and mean width (%)."""
    from scipy.stats import kendalltau  # noqa: PLC0415

    y, p = np.asarray(measured, float), np.asarray(predicted, float)
    rel = np.abs(p - y) / y
    tau = kendalltau(y, p).statistic if len(y) > 1 else float("nan")
    m = {"rmse_ms": float(np.sqrt(np.mean((y - p) ** 2))), "mape_pct": float(np.mean(rel) * 100),
         "kendall_tau": float(tau), "within10_pct": float(np.mean(rel <= 0.10) * 100), "n": int(len(y))}
    if lower is not None and upper is not None:
        m["coverage_pct"] = float(np.mean((y >= lower) & (y <= upper)) * 100)
        m["interval_width_pct"] = float(np.mean((np.asarray(upper) - np.asarray(lower)) / p) * 100)
    return m


def split_indices(n: int, seed: int, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> tuple[np.ndarray, ...]:
    """HAT's shuffled 80/10/10 train/valid/test split."""
    perm = np.random.default_rng(seed).permutation(n)
    a = int(round(n * fractions[0]))
    b = a + int(round(n * fractions[1]))
    return perm[:a], perm[a:b], perm[b:]


# ---- split-conformal intervals ---------------------------------------------------------------------
SPLIT_MIN_ROWS = 100  # below this, always cross-fitting (a 20 % split would hold too few rows)


def calibration_folds(n: int, seed: int, folds: int = 5, frac: float = 0.2) -> tuple[list, str]:
    """(fit rows, calibration rows) pairs. `folds` > 1: K-fold cross-fitting, every row gives an
    out-of-fold ratio (for models cheap to refit); 1: one split holding out `frac` of the rows."""
    perm = np.random.default_rng(10_007 + seed).permutation(n)
    if folds == 1 and n >= SPLIT_MIN_ROWS:
        k = int(round(n * frac))
        return [(perm[k:], perm[:k])], "split"
    parts = np.array_split(perm, min(n, max(folds, 5)))
    return [(np.concatenate([f for j, f in enumerate(parts) if j != i]), parts[i]) for i in range(len(parts))], \
        f"{len(parts)}-fold cross-fitting"


def conformal_bounds(ratios: np.ndarray, level: float) -> tuple[float, float]:
    """Lower and upper multipliers of a `level` interval from calibration ratios measured/predicted:
    the finite-sample split-conformal ranks floor((n+1)a) and ceil((n+1)(1-a)), a = (1-level)/2,
    clamped to the smallest/largest ratio when there are too few rows for them."""
    if not 0 < level < 1:
        raise ConfigError(f"interval level {level:g}: must be between 0 and 1 (e.g. 0.9)")
    r = np.sort(np.asarray(ratios, dtype=np.float64))
    n = len(r)
    a = (1 - level) / 2
    lo = min(max(math.floor((n + 1) * a + 1e-9), 1), n)
    hi = min(max(math.ceil((n + 1) * (1 - a) - 1e-9), 1), n)
    return float(r[lo - 1]), float(r[hi - 1])


FitOne = Callable[["Predictor", "Rows", np.ndarray], None]  # fits a blank copy on some rows (calibration)


# ---- the registry ----------------------------------------------------------------------------------
PREDICTORS: Registry[type["Predictor"]] = Registry("predictor model")


def register(name: str) -> Callable[[type["Predictor"]], type["Predictor"]]:
    """Class decorator: make a Predictor subclass available as `--model NAME`."""

    def deco(cls: type[Predictor]) -> type[Predictor]:
        if name == "default":
            raise ValueError("latency predictor name 'default' is reserved (it names DEFAULT_MODEL)")
        PREDICTORS.register(name, cls)
        cls.name = name
        return cls

    return deco


def model_names() -> tuple[str, ...]:
    return ("default", *PREDICTORS)


def model_class(name: str) -> type["Predictor"]:
    key = DEFAULT_MODEL if name == "default" else name
    if key not in PREDICTORS:
        raise ConfigError(f"unknown predictor model {name!r} (choose {', '.join(model_names())})")
    return PREDICTORS[key]


# ---- the predictor -----------------------------------------------------------------------------------
class Predictor:
    """A fitted latency model: `predict(cfgs) -> ms`, `predict_interval(cfgs, level) -> (point,
    lower, upper)`; `predict_raw` takes HAT's 10 averages (and per-layer features for `full`)."""

    name: ClassVar[str] = ""
    OPTIONS: ClassVar[dict[str, Any]] = {}  # hyper-parameters and their defaults
    USES_FULL: ClassVar[bool] = False  # reads per-layer features when the data has configs
    CALIBRATION_FOLDS: ClassVar[int] = 5  # 1: one held-out split (for models slow to fit)

    def __init__(self, feature_set: str = "hat10", context: Context | None = None, lat_norm: float = 100.0,
                 device: str = "", space: dict[str, Any] | None = None, state: dict[str, Any] | None = None,
                 interval: dict[str, Any] | None = None, options: dict[str, Any] | None = None, source: str = "",
                 protocol: dict[str, Any] | None = None) -> None:
        unknown = sorted(set(options or {}) - set(self.OPTIONS))
        if unknown:
            raise ConfigError(f"predictor {self.name}: unknown option(s) {', '.join(unknown)} "
                              f"(it takes {', '.join(self.OPTIONS) or 'none'})")
        self.feature_set, self.context, self.lat_norm, self.device = feature_set, context or Context(), float(lat_norm), device
        self.space, self.state, self.interval, self.source = space, state or {}, interval, source
        self.options = {**self.OPTIONS, **(options or {})}
        self.protocol = dict(protocol or {})  # how the training latencies were timed ({}: unknown)

    @property
    def model(self) -> str:
        return self.name

    # -- what subclasses implement --
    def _fit(self, rows: Rows, y: np.ndarray, seed: int) -> None:
        raise NotImplementedError

    def _predict(self, rows: Rows) -> np.ndarray:
        raise NotImplementedError

    def _transfer(self, source: "Predictor", rows: Rows, y: np.ndarray, seed: int) -> None:
        raise ConfigError(f"predictor {self.name} does not support --transfer-from")

    def blank(self) -> "Predictor":
        """An unfitted copy with the same settings (for calibration fits)."""
        return type(self)(self.feature_set, self.context, self.lat_norm, self.device, self.space, options=self.options)

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

    # -- inputs --
    def rows_for(self, cfgs: Sequence[SubConfig]) -> Rows:
        space = self._space_obj()
        if space is not None:
            top = max(space.super_encoder_embed_dim, space.super_decoder_embed_dim)
            for c in cfgs:
                if c.encoder_layer_num > space.max_encoder_layers or c.decoder_layer_num > space.max_decoder_layers or \
                        max(c.encoder_embed_dim, c.decoder_embed_dim) > top:
                    raise ConfigError(f"{self.source or 'predictor'}: config exceeds the super dims of space {space.name}")
        return Rows(raw10_of(cfgs), full_of(cfgs, space) if self.feature_set == "full" else None)

    def rows_of(self, data: LatencyData) -> Rows:
        """Inputs for the rows of a latency CSV (HAT CSVs have no configs: only `hat10` models read them)."""
        if self.feature_set == "full":
            if data.configs is None:
                raise DataError(f"{data.path}: has no config column; predictor {self.source or self.name} needs "
                                "per-layer configs")
            return self.rows_for(data.configs)
        return Rows(np.atleast_2d(data.hat_features))

    # -- prediction --
    def predict(self, cfgs: Sequence[SubConfig]) -> np.ndarray:
        """Latency in ms (encoder + decoder, the device's protocol) for each config."""
        cfgs = list(cfgs)
        return self._predict(self.rows_for(cfgs)) if cfgs else np.zeros(0)

    def predict_one(self, cfg: SubConfig) -> float:
        return float(self.predict([cfg])[0])

    def predict_data(self, data: LatencyData) -> np.ndarray:
        return self._predict(self.rows_of(data))

    def predict_raw(self, raw10: np.ndarray, full: np.ndarray | None = None) -> np.ndarray:
        return self._predict(Rows(np.atleast_2d(raw10), full))

    # -- intervals --
    @property
    def has_interval(self) -> bool:
        return bool(self.interval) and len(self.interval.get("ratios", ())) > 0

    def _no_interval(self) -> str:
        why = "imported from HAT without calibration rows, so it has no interval (re-import with --calibrate-on " \
            "CSV)" if isinstance(self.state.get("imported"), dict) else "has no calibrated interval (refit it)"
        return f"{self.source or 'predictor'}: {why}"

    def bounds(self, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
        """(lower, upper) multipliers of the point prediction for a `level` interval."""
        if not self.has_interval:
            raise ConfigError(self._no_interval())
        return conformal_bounds(self.interval["ratios"].numpy(), level)

    def quantile_factor(self, q: float) -> float:
        """Multiplier of the point prediction for the `q` quantile of the measured latency (one-sided
        split conformal, rank ceil((n+1)q)); q = (1+level)/2 is the `level` interval's upper bound."""
        if not 0 < q < 1:
            raise ConfigError(f"quantile {q:g}: must be between 0 and 1 (e.g. 0.95)")
        if not self.has_interval:
            raise ConfigError(self._no_interval())
        r = np.sort(self.interval["ratios"].numpy())
        k = min(max(math.ceil((len(r) + 1) * q - 1e-9), 1), len(r))
        return float(r[k - 1])

    def predict_interval(self, cfgs: Sequence[SubConfig], level: float = DEFAULT_LEVEL) -> tuple[np.ndarray, ...]:
        """(point, lower, upper) in ms; [lower, upper] covers the measured latency with probability
        `level` when configs come from the distribution the predictor was calibrated on."""
        p = self.predict(cfgs)
        lo, hi = self.bounds(level)
        return p, p * lo, p * hi

    def predict_data_interval(self, data: LatencyData, level: float = DEFAULT_LEVEL) -> tuple[np.ndarray, ...]:
        p = self.predict_data(data)
        lo, hi = self.bounds(level)
        return p, p * lo, p * hi

    def _calibrate(self, rows: Rows, y: np.ndarray, seed: int, fit_one: FitOne) -> None:
        folds, method = calibration_folds(len(y), seed, self.CALIBRATION_FOLDS)
        ratios = []
        for tr, ca in folds:
            m = self.blank()
            fit_one(m, rows.subset(tr), y[tr])
            ratios.append(y[ca] / np.maximum(m._predict(rows.subset(ca)), 1e-9))
        self.interval = {"ratios": torch.tensor(np.sort(np.concatenate(ratios))), "method": method, "rows": int(len(y))}

    # -- io --
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "model": self.name, "feature_set": self.feature_set, "context": self.context.to_dict(),
                "lat_norm": float(self.lat_norm), "device": self.device, "space": self.space, "state": self.state,
                "interval": self.interval, "options": self.options, "protocol": self.protocol}

    def save(self, path: str | Path) -> None:
        save_torch(self.to_dict(), path)  # atomic: a failed write keeps the previous predictor


# ---- fit / transfer ------------------------------------------------------------------------------------
def fit(data: LatencyData, model: str = "default", space: DesignSpace | None = None, context: Context | None = None,
        lat_norm: float = 100.0, device: str = "", seed: int = 0, **options: Any) -> Predictor:
    """Fit `model` on all rows of `data`, with a split-conformal interval. Models that read
    per-layer features do so when the data has configs and the space is known."""
    cls = model_class(model)
    if len(data) < 2:
        raise DataError(f"{data.path}: {len(data)} row(s), need at least 2 to fit a predictor")
    feature_set = "full" if (cls.USES_FULL and data.configs is not None and space is not None) else "hat10"
    pred = cls(feature_set, context, lat_norm, device, None if space is None else space.to_dict(), options=options,
               protocol=training_protocol(data.meta))
    rows, y = pred.rows_of(data), data.latency_ms
    pred._calibrate(rows, y, seed, lambda m, r, t: m._fit(r, t, seed))
    pred._fit(rows, y, seed)
    return pred


def check_transfer_source(source: Predictor, data: LatencyData) -> None:
    """A source reading per-layer features needs target rows with configs of its space."""
    if source.feature_set != "full":
        return
    where = source.source or f"source predictor {source.name}"
    space = source._space_obj()
    if data.configs is None:
        raise ConfigError(f"{where}: uses per-layer features of space {space.name} (feature set full); "
                          f"{data.path} has only HAT's 10 averaged features")
    for i, c in enumerate(data.configs):
        try:
            space.validate(c, source=f"{data.path}: row {i + 1}")
        except ConfigError as e:
            raise ConfigError(f"{e}; source predictor {where} uses per-layer features of that space") from None


def transfer(source: Predictor, data: LatencyData, context: Context | None = None, lat_norm: float | None = None,
             device: str = "", seed: int = 0, space: DesignSpace | None = None) -> Predictor:
    """Adapt `source` (fit on another device) to the device that measured `data` (few rows): the
    same model, fit with the source's parameters as a prior; intervals calibrated on `data`."""
    check_transfer_source(source, data)
    if len(data) < 2:
        raise DataError(f"{data.path}: {len(data)} row(s), need at least 2 to adapt a predictor")
    if space is not None and source.feature_set == "full":
        source.check_space(space)
    sp = source.space if source.feature_set == "full" else (None if space is None else space.to_dict())
    pred = type(source)(source.feature_set, context or source.context, lat_norm or source.lat_norm, device, sp,
                        options=source.options, protocol=training_protocol(data.meta))
    rows, y = pred.rows_of(data), data.latency_ms
    pred._calibrate(rows, y, seed, lambda m, r, t: m._transfer(source, r, t, seed))
    pred._transfer(source, rows, y, seed)
    pred.state["transferred_from"] = {"model": source.name, "device": source.device, "file": str(source.source)}
    return pred


def load_predictor(path: str | Path, space: DesignSpace | None = None) -> Predictor:
    """Load a saved predictor (pickle-free: `torch.load(weights_only=True)`); with `space`, refuse
    it unless it was fit on that space (or on a superset with the same super dims)."""
    path = Path(path)
    d = load_torch(path, "predictor file")
    if isinstance(d, dict) and "first_layer.weight" in d and "format" not in d:  # HAT's state dict
        raise CheckpointError(f"{path}: a HAT latency predictor; import it first: hat import-predictor {path} --lat-norm N "
                              "--space SPACE --out P.pt")
    fmt = d.get("format") if isinstance(d, dict) else None
    if fmt == "hat-latency-predictor/1":
        raise CheckpointError(f"{path}: predictor format {fmt} has no prediction interval; refit it with hat fit-predictor")
    if fmt != FORMAT:
        raise CheckpointError(f"{path}: not a latency predictor (format {fmt!r})")
    check_fields(d, {"model": str, "feature_set": str, "context": dict, "lat_norm": (int, float), "device": str,
                     "space": (dict, type(None)), "state": dict, "interval": dict, "options": dict},
                 f"{path}: latency predictor", CheckpointError)
    protocol = d.get("protocol", {})  # absent: written before the protocol was recorded
    if not isinstance(protocol, dict):
        raise CheckpointError(f"{path}: latency predictor field protocol is not a mapping")
    if d.get("model") not in PREDICTORS:
        raise CheckpointError(f"{path}: unknown predictor model {d.get('model')!r} (known: {', '.join(PREDICTORS)})")
    try:
        pred = PREDICTORS[d["model"]](d["feature_set"], Context(**d["context"]), d["lat_norm"], d["device"], d["space"],
                                      d["state"], d["interval"], d["options"], str(path), protocol)
    except (KeyError, TypeError, ConfigError) as e:
        raise CheckpointError(f"{path}: incomplete latency predictor ({type(e).__name__}: {e})") from None
    if space is not None:
        pred.check_space(space)
    return pred


def predictor_for_device(device: str | Path, space: DesignSpace | None = None, path: str | Path | None = None) -> Predictor:
    """The device's predictor (or `path`), checked against `space`: what the search calls."""
    from hat.latency.devices import resolve_device  # noqa: PLC0415

    return load_predictor(path if path else resolve_device(device).predictor_path(), space)
