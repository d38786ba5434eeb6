"""benchmarks/bench_ranking.py's own logic: which subnets it picks and how it scores a signal."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_ranking", ROOT / "benchmarks" / "bench_ranking.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_subnets_are_spread_over_the_latency_range_around_the_ones_kept():
    pool = [f"c{i}" for i in range(100)]
    lat = [float(i) for i in range(100)]
    picked = bench.spread_over_latency(pool, lat, 6, keep=["c50", "c51"])
    assert picked[:2] == ["c50", "c51"] and len(picked) == len(set(picked)) == 6
    got = sorted(lat[pool.index(c)] for c in picked[2:])
    assert got[0] == 0.0 and got[-1] == 99.0  # both ends of the range, not only around the kept ones
    assert bench.spread_over_latency(pool[:3], lat[:3], 6) == pool[:3]  # the pool runs out: fewer
    assert bench.spread_over_latency(pool, lat, 2, keep=["c7", "c8", "c9"]) == ["c7", "c8", "c9"]


def test_agreement_is_perfect_reversed_and_spread_over_repeats():
    truth = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert bench.rank_agreement([10, 20, 30, 40, 50], truth) == {"kendall": pytest.approx(1.0),
                                                                 "spearman": pytest.approx(1.0)}
    assert bench.rank_agreement([5, 4, 3, 2, 1], truth)["kendall"] == pytest.approx(-1.0)
    (row,) = bench.agreement_table({"s": [[1, 2, 3, 4, 5], [2, 1, 3, 4, 5]]}, {"loss": truth})
    med, lo, hi = row["loss_kendall"]
    assert row["repeats"] == 2 and hi == pytest.approx(1.0) and lo == pytest.approx(0.8) and med == pytest.approx(0.9)
    with pytest.raises(ValueError):
        bench.rank_agreement([1, 2], [1, 2])
