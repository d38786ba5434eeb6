"""Comparing measured latencies on a shared machine: interleaved rounds, median and spread.

A busy machine drifts by tens of percent within minutes, so timing model A now and model B
later compares the machine with itself. Here every round times every model once (A B C, A B C,
...), a model's latency is the median of its rounds, and one model is faster than another only
when their [min, max] ranges over the rounds do not overlap.
"""
from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping

from hat.space import SubConfig


@dataclass(frozen=True)
class Spread:
    """Median and range (ms) of one model's latency over interleaved rounds."""

    median: float
    low: float
    high: float
    rounds: tuple[float, ...]

    @classmethod
    def of(cls, values: list[float]) -> "Spread":
        return cls(statistics.median(values), min(values), max(values), tuple(values))

    def faster_than(self, other: "Spread") -> bool:
        """Faster beyond the spread: even this model's slowest round beats the other's fastest."""
        return self.high < other.low

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rounds": list(self.rounds)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Spread":
        """The inverse of `to_dict` (e.g. a spread read back from a JSON file)."""
        return cls(d["median"], d["low"], d["high"], tuple(d.get("rounds", ())))

    def __str__(self) -> str:
        return f"{self.median:.1f} ms [{self.low:.1f}-{self.high:.1f}]"


def measure_interleaved(measure: Callable[[SubConfig], Mapping[str, Any]], configs: Mapping[str, SubConfig],
                        rounds: int = 5, log: Callable[[str], None] | None = None) -> dict[str, Spread]:
    """Time every config once per round, in the same order each round (A B C, A B C, ...).

    `measure` is e.g. `Measurer.measure`: it returns HAT's row (encoder + decoder mean ms)."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    values: dict[str, list[float]] = {name: [] for name in configs}
    for r in range(rounds):
        for name, cfg in configs.items():
            row = measure(cfg)
            values[name].append(float(row["latency_mean_encoder"]) + float(row["latency_mean_decoder"]))
        if log:
            log(f"round {r + 1}/{rounds}: " + ", ".join(f"{n} {v[-1]:.1f}" for n, v in values.items()))
    return {name: Spread.of(v) for name, v in values.items()}


__all__ = ["Spread", "measure_interleaved"]
