"""Latency-predictor learning curve on a measured CSV: default vs HAT's MLP (vs analytic).

A fixed held-out test set (a seeded 20% of the rows) is scored for models fit on the first
50, 100, 200, 500 and all rows of the remaining pool. Prints a markdown table and saves a PNG.

    python benchmarks/bench_predictor.py --data latency_predictors/cpu-2core.tiny.csv --space tiny-latency
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from hat.latency.dataset import read_latency_csv
from hat.latency.estimate import context_for
from hat.latency.predictors import fit, metrics
from hat.space import load_space


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="latency_predictors/cpu-2core.tiny.csv")
    ap.add_argument("--space", default="tiny-latency")
    ap.add_argument("--sizes", default="50,100,200,500,all")
    ap.add_argument("--test-frac", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--hat-steps", type=int, default=5000, help="HAT's recipe: 5000")
    ap.add_argument("--png", default="benchmarks/latency_learning_curve.png")
    ap.add_argument("--json", help="write the rows as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = read_latency_csv(args.data)
    space = load_space(args.space)
    ctx = context_for(data, space)
    perm = np.random.default_rng(args.seed).permutation(len(data))
    n_test = int(round(len(data) * args.test_frac))
    test, pool = data.subset(perm[:n_test]), data.subset(perm[n_test:])
    sizes = sorted({len(pool) if s == "all" else min(int(s), len(pool)) for s in args.sizes.split(",")})
    rows = []

    def score(model: str, n: int, **kw) -> None:
        t0 = time.perf_counter()
        p = fit(pool.subset(range(n)), model, space, ctx, 100.0, "bench", args.seed, **kw)
        m = metrics(test.latency_ms, p.predict(test.configs))
        m.update(model=model if "calib_rows" not in kw else f"analytic ({kw['calib_rows']} calib rows)",
                 train_rows=kw.get("calib_rows", n), fit_s=time.perf_counter() - t0)
        rows.append(m)
        print(f"| {m['model']:<26} | {m['train_rows']:>5} | {m['rmse_ms']:8.3f} | {m['mape_pct']:6.2f} | {m['kendall_tau']:.4f} | {m['fit_s']:6.1f} |",
              flush=True)

    print(f"data {args.data}: {len(data)} rows, test {len(test)} rows (fixed), latency "
          f"{test.latency_ms.min():.1f}-{test.latency_ms.max():.1f} ms")
    print("| model                      | rows  | RMSE ms  | MAPE % | Kendall tau | fit s |")
    print("|----------------------------|------:|---------:|-------:|-------:|-------:|")
    score("analytic", len(pool), calib_rows=0)
    score("analytic", len(pool), calib_rows=10)
    for n in sizes:
        score("default", n)
        score("hat-mlp", n, hat_steps=args.hat_steps)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for ax, key, label in zip(axes, ("mape_pct", "rmse_ms", "kendall_tau"), ("MAPE (%)", "RMSE (ms)", "Kendall tau")):
        for model in ("default", "hat-mlp"):
            r = [x for x in rows if x["model"] == model]
            ax.plot([x["train_rows"] for x in r], [x[key] for x in r], "o-", label=model)
        a10 = [x for x in rows if x["model"].startswith("analytic (10")][0]
        ax.axhline(a10[key], ls="--", c="gray", label="analytic, 10 calib rows")
        ax.set_xscale("log")
        ax.set_xlabel("training rows")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"latency predictors on {args.data} (test {len(test)} rows)", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.png, dpi=110)
    print(f"saved {args.png}")


if __name__ == "__main__":
    main()
