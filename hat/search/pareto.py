"""Pareto utilities: the latency-vs-score front of every evaluated candidate, as CSV and PNG.

Both axes are minimised (latency in ms, score lower-is-better), so a user can pick a
different trade-off than the one the constraint imposed without searching again.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Sequence

from hat.files import atomic_open, save_figure
from hat.space import SubConfig, describe


def non_dominated(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point dominates (both coordinates minimised).

    Sort by (x, y) and sweep: a point is on the front iff its y is strictly below every y
    seen so far; exact duplicates keep only their first occurrence. O(n log n).
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1], i))
    front, best_y = [], float("inf")
    for i in order:
        if points[i][1] < best_y:
            front.append(i)
            best_y = points[i][1]
    return front


def non_dominated_nd(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the points no other point dominates, in any number of minimised objectives
    (exact duplicates keep their first occurrence). Sorted lexicographically, a point can only
    be dominated by one before it, and then by a kept one (dominance is transitive)."""
    order = sorted(range(len(points)), key=lambda i: (tuple(points[i]), i))
    front: list[int] = []
    for i in order:
        p = points[i]
        if not any(all(a <= b for a, b in zip(points[j], p)) for j in front):
            front.append(i)
    return front


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[0] and a[1] <= b[1] and (a[0] < b[0] or a[1] < b[1])


def write_front_csv(path: str | Path, cfgs: Sequence[SubConfig], latencies: Sequence[float],
                    scores: Sequence[float], front: Sequence[int],
                    intervals: Sequence[tuple[float, float | None, float | None]] | None = None) -> None:
    """One row per front member, sorted by latency, with the config as JSON (re-loadable).
    `latency_ms` is what the constraint was held against; `intervals` adds each member's point
    prediction and interval (`predicted_ms`, `lower_ms`, `upper_ms`; empty without an interval)."""
    def ms(v: float | None) -> str:
        return "" if v is None else f"{v:.6g}"

    with atomic_open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["latency_ms", "predicted_ms", "lower_ms", "upper_ms", "score", "summary", "config_json"])
        for i in sorted(front, key=lambda i: latencies[i]):
            p, lo, hi = intervals[i] if intervals is not None else (latencies[i], None, None)
            w.writerow([ms(latencies[i]), ms(p), ms(lo), ms(hi), f"{scores[i]:.6g}", describe(cfgs[i]),
                        json.dumps(cfgs[i].to_dict(), separators=(",", ":"))])


def plot_front(path: str | Path, latencies: Sequence[float], scores: Sequence[float], front: Sequence[int],
               constraint: float | None = None, best: int | None = None, score_name: str = "score",
               title: str = "") -> None:
    """Scatter of all evaluated candidates, the front as a step line, the chosen one starred."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=120)
    ax.scatter(latencies, scores, s=6, c="0.7", label=f"evaluated ({len(latencies)})")
    fr = sorted(front, key=lambda i: latencies[i])
    ax.step([latencies[i] for i in fr], [scores[i] for i in fr], where="post", c="C3", lw=1.2)
    ax.scatter([latencies[i] for i in fr], [scores[i] for i in fr], s=14, c="C3", label=f"Pareto front ({len(fr)})")
    if constraint is not None and constraint != float("inf"):
        ax.axvline(constraint, c="C0", ls="--", lw=1, label=f"constraint {constraint:g} ms")
    if best is not None:
        ax.scatter([latencies[best]], [scores[best]], marker="*", s=140, c="C2", zorder=5, label="selected")
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel(f"{score_name} (lower is better)")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
