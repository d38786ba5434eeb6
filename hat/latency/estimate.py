"""Latency estimates as the search and the fitting commands use them.

`Latency` caches predicted milliseconds per SubConfig over any object with `predict(cfgs)`;
`MacsPredictor` is a device-free stand-in (milliseconds proportional to MACs);
`select_predictor` turns the `--predictor` / `--device` pair of a command into a predictor;
`ConstraintBound` makes the search hold a quantile of the predictor's interval (not its point
estimate) against the constraint; `context_for` recovers the measurement protocol of a latency CSV.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hat.errors import HatError
from hat.latency.dataset import LatencyData
from hat.latency.measure import Protocol, default_vocab_size
from hat.latency.predictors import DEFAULT_LEVEL, Context, predictor_for_device
from hat.space import DesignSpace, SubConfig, macs


class Latency:
    """Cached predicted latency (ms) of SubConfigs, over any object with `predict(cfgs)`."""

    def __init__(self, predictor: Any, name: str = "predictor") -> None:
        self.predictor, self.name = predictor, name
        self.cache: dict[SubConfig, float] = {}

    def many(self, cfgs: Sequence[SubConfig]) -> list[float]:
        todo = list(dict.fromkeys(c for c in cfgs if c not in self.cache))
        if todo:
            vals = np.asarray(self.predictor.predict(todo), dtype=np.float64).reshape(-1)
            for c, v in zip(todo, vals):
                self.cache[c] = float(v)
        return [self.cache[c] for c in cfgs]

    def __call__(self, cfg: SubConfig) -> float:
        v = self.cache.get(cfg)
        if v is None:
            v = self.many([cfg])[0]
        return v

    def interval(self, cfg: SubConfig) -> tuple[float, float | None, float | None]:
        """(point, lower, upper) ms of `cfg`; lower/upper are None for a predictor without an interval."""
        split = getattr(self.predictor, "split", None)
        return split(self(cfg)) if split else (self(cfg), None, None)


class ConstraintBound:
    """A predictor whose value is the `quantile` of the measured latency (default: the upper bound of
    the `level` interval), so a search that keeps it under the constraint keeps the bound there: a
    point estimate meets a constraint only about half the time on the device."""

    def __init__(self, predictor: Any, quantile: float | None = None, level: float = DEFAULT_LEVEL) -> None:
        self.predictor, self.level = predictor, level
        self.quantile = (1 + level) / 2 if quantile is None else quantile
        self.factor = predictor.quantile_factor(self.quantile)
        self.lower, self.upper = predictor.bounds(level)
        self.source = getattr(predictor, "source", "")

    def predict(self, cfgs: Sequence[SubConfig]) -> np.ndarray:
        return np.asarray(self.predictor.predict(cfgs), dtype=np.float64) * self.factor

    def split(self, bound: float) -> tuple[float, float, float]:
        """(point, lower, upper) ms from the bound this predictor returned."""
        p = bound / self.factor
        return p, p * self.lower, p * self.upper

    def describe(self, name: str = "the predictor") -> str:
        upper = abs(self.quantile - (1 + self.level) / 2) < 1e-12
        what = f"upper bound of the {self.level:.0%} interval" if upper else f"{self.quantile:g} quantile"
        return f"the {what} of {name} ({self.factor:.3f} x its point estimate)"


class MacsPredictor:
    """A device-free stand-in predictor: latency (ms) = `ms_per_gmac` x GMACs of one
    translation (HAT's measurement shape: source 30, 30 decoder steps). Useful for tests
    and for searching before a device has been measured (`--predictor macs[:MS_PER_GMAC]`)."""

    def __init__(self, space: DesignSpace, ms_per_gmac: float = 100.0, src_len: int = Protocol.src_len,
                 tgt_len: int = Protocol.tgt_len) -> None:
        self.space, self.ms_per_gmac, self.src_len, self.tgt_len = space, ms_per_gmac, src_len, tgt_len

    def predict(self, cfgs: Sequence[SubConfig]) -> np.ndarray:
        return np.array([macs(c, self.space, self.src_len, self.tgt_len) / 1e9 * self.ms_per_gmac for c in cfgs])

    def predict_one(self, cfg: SubConfig) -> float:
        return float(self.predict([cfg])[0])


def select_predictor(predictor: str | None, device: str | Path | None, space: DesignSpace) -> tuple[Any, str]:
    """(predictor, display name) from a command's flags: `macs[:MS_PER_GMAC]` (the MACs proxy),
    a predictor file, or the device's registered predictor; checked against `space`."""
    if predictor and predictor.split(":")[0] == "macs":
        parts = predictor.split(":")
        try:
            k = float(parts[1]) if len(parts) > 1 else 100.0
        except ValueError:
            raise HatError(f"--predictor {predictor}: expected macs or macs:MS_PER_GMAC") from None
        return MacsPredictor(space, k), f"macs x {k:g} ms/GMAC"
    if not predictor and not device:
        raise HatError("give --device NAME (its latency predictor) or --predictor FILE")
    return predictor_for_device(device, space, path=predictor), str(predictor or device)


def context_for(data: LatencyData, space: DesignSpace | None) -> Context:
    """The protocol the CSV was measured with (its .meta.json), else HAT's."""
    proto = data.meta.get("protocol", {})
    vocab = proto.get("vocab_size") or (default_vocab_size(space) if space else 32768)
    return Context(int(proto.get("src_len", Protocol.src_len)), int(proto.get("tgt_len", Protocol.tgt_len)),
                   int(proto.get("beam", Protocol.beam)), int(vocab), space.qkv_dim if space else 512)
