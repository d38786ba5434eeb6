"""How much of a MAPE ratio default / hat-mlp on HAT's datasets is noise in the comparison itself,
and how low any predictor of the 10 features can go on a dataset.

Comparison noise (`--splits`, `--inits`): the default and hat-mlp on HAT's seeded 80/10/10 splits
(the same fits as bench_predictor.py: hat-mlp's init seed is the split seed), with a 90 % paired
bootstrap of the 200 test rows for each ratio; at the `--init-splits`, hat-mlp refit with the
`--inits` init seeds on the same split (its MAPE spread from initialisation alone). hat-mlp test
predictions are cached per (file, split, init) in `--cache` (fits take 1-2 min each on one core).

Noise floor (`--floor`): 5-fold out-of-fold MAPE of flexible models on all rows (the cost LP,
gradient-boosted trees and a random forest on log latency, the cost model times a boosted or
nearest-neighbour residual); rows with identical features; residual differences of nearest-neighbour
rows in feature space (the noise level if the model fits locally: mean |r1 - r2| / 2 is a lower
bound of a feature-only predictor's mean absolute log error, / sqrt 2 the value for Gaussian noise);
and how much a correction from the neighbouring rows in file (= measurement) order removes, which no
predictor of the architecture can use.

    python benchmarks/bench_predictor_noise.py --hat-csvs DIR --datasets xeon,wmt14enfr_gpu --splits 0-9 \\
        --init-splits 0,1 --inits 101,102,103,104 --cache CACHE_DIR --floor [--json OUT.json]
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
from bench_predictor import hat_context, hat_lat_norm, label

from hat.latency.dataset import LatencyData, read_latency_csv
from hat.latency.predictors import fit, metrics, model_class, split_indices
from hat.latency.predictors.base import Rows
from hat.latency.predictors.cost import analytic_terms, cost_basis, l1_relative_fit

VOCAB = 32768  # as bench_predictor.py's default


def seeds(text: str) -> list[int]:
    """'0-4' or '0,1,5' -> list of ints."""
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(s) for s in text.split(",") if s]


def mape(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(np.abs(p - y) / y) * 100)


def hat_mlp_test(f: Path, data: LatencyData, split: int, init: int, steps: int, cache: Path | None) -> np.ndarray:
    """hat-mlp's test-row predictions (the point model bench_predictor fits: all training rows)."""
    out = cache / f"{f.stem}_{split}_{init}_{steps}.npy" if cache else None
    if out is not None and out.exists():
        return np.load(out)
    tr, _va, te = split_indices(len(data), split)
    m = model_class("hat-mlp")("hat10", hat_context(f.name, VOCAB), hat_lat_norm(f.name), label(f.name),
                               options={"steps": steps})
    m._fit(Rows(data.hat_features[tr]), data.latency_ms[tr], init)  # the point fit only: no interval needed here
    p = m._predict(Rows(data.hat_features[te]))
    if out is not None:
        tmp = out.with_name(out.name + ".tmp.npy")
        np.save(tmp, p)
        os.replace(tmp, out)
    return p


def default_test(f: Path, data: LatencyData, split: int) -> np.ndarray:
    tr, _va, te = split_indices(len(data), split)
    pred = fit(data.subset(tr), "default", None, hat_context(f.name, VOCAB), hat_lat_norm(f.name), label(f.name), split)
    return pred.predict_data(data.subset(te))


def paired_bootstrap(y: np.ndarray, p: np.ndarray, h: np.ndarray, seed: int, n: int = 2000) -> tuple[float, float]:
    """90 % interval of MAPE(p) / MAPE(h) over resamples of the test rows."""
    ep, eh = np.abs(p - y) / y, np.abs(h - y) / y
    rng = np.random.default_rng(seed)
    r = [ep[i].mean() / eh[i].mean() for i in (rng.integers(0, len(y), len(y)) for _ in range(n))]
    return float(np.quantile(r, 0.05)), float(np.quantile(r, 0.95))


def comparison(f: Path, data: LatencyData, splits: list[int], init_splits: list[int], inits: list[int], steps: int,
               cache: Path | None) -> dict:
    print(f"\n{label(f.name)}: default / hat-mlp per split (hat-mlp init = split seed)")
    rows, yy, pp, hh = [], [], [], []
    for s in splits:
        te = split_indices(len(data), s)[2]
        y, p, h = data.latency_ms[te], default_test(f, data, s), hat_mlp_test(f, data, s, s, steps, cache)
        lo, hi = paired_bootstrap(y, p, h, s)
        mp, mh = metrics(y, p), metrics(y, h)
        r = {"split": s, "default_mape": mp["mape_pct"], "hat_mlp_mape": mh["mape_pct"], "ratio": mp["mape_pct"] / mh["mape_pct"],
             "ratio_boot90": [lo, hi], "dtau": mp["kendall_tau"] - mh["kendall_tau"]}
        if s in init_splits and inits:
            v = [mh["mape_pct"]] + [mape(y, hat_mlp_test(f, data, s, i, steps, cache)) for i in inits]
            r["hat_mlp_mape_by_init"] = dict(zip([s, *inits], v))
        rows.append(r)
        yy.append(y), pp.append(p), hh.append(h)
        extra = ""
        if "hat_mlp_mape_by_init" in r:
            v = np.array(list(r["hat_mlp_mape_by_init"].values()))
            extra = (f"; hat-mlp over {len(v)} inits {v.mean():.3f} (sd {v.std(ddof=1):.3f}, {v.min():.3f}-{v.max():.3f}),"
                     f" ratio {mp['mape_pct'] / v.max():.3f}-{mp['mape_pct'] / v.min():.3f}, vs their mean {mp['mape_pct'] / v.mean():.3f}")
        print(f"  split {s}: default {mp['mape_pct']:.3f} hat-mlp {mh['mape_pct']:.3f} ratio {r['ratio']:.3f} "
              f"(test-row bootstrap 90 %: {lo:.3f}-{hi:.3f}) tau {r['dtau']:+.4f}{extra}", flush=True)
    ratios = np.array([r["ratio"] for r in rows])
    y, p, h = (np.concatenate(a) for a in (yy, pp, hh))
    summary = {"ratio_mean": float(ratios.mean()), "ratio_sd": float(ratios.std(ddof=1)) if len(ratios) > 1 else 0.0,
               "ratio_min": float(ratios.min()), "ratio_max": float(ratios.max()), "met": int((ratios <= 0.9).sum()),
               "pooled_ratio": mape(y, p) / mape(y, h), "dtau_min": float(min(r["dtau"] for r in rows))}
    print(f"  {len(rows)} splits: ratio mean {summary['ratio_mean']:.3f} (sd {summary['ratio_sd']:.3f}, "
          f"{summary['ratio_min']:.3f}-{summary['ratio_max']:.3f}), <= 0.9 at {summary['met']}/{len(rows)}; "
          f"all test rows pooled {summary['pooled_ratio']:.3f}; lowest tau difference {summary['dtau_min']:+.4f}")
    return {"dataset": label(f.name), "splits": rows, "summary": summary}


def noise_floor(f: Path, data: LatencyData) -> dict:
    from scipy.spatial import cKDTree  # noqa: PLC0415
    from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor  # noqa: PLC0415
    from sklearn.neighbors import KNeighborsRegressor  # noqa: PLC0415

    x, y, n = data.hat_features, data.latency_ms, len(data)
    ctx = hat_context(f.name, VOCAB)
    b = cost_basis(x, ctx)
    feats = np.concatenate([x, np.log1p(analytic_terms(x, ctx))], 1)
    z = (feats - feats.mean(0)) / (feats.std(0) + 1e-9)
    folds = np.array_split(np.random.default_rng(0).permutation(n), 5)

    def gbr(depth=None, iters=400, lr=0.05):
        return HistGradientBoostingRegressor(loss="absolute_error", max_iter=iters, learning_rate=lr, max_depth=depth,
                                             random_state=0)

    def cost_times(model, inputs):
        def run(tr, va):
            c = l1_relative_fit(b[tr], y[tr])
            m = model().fit(inputs[tr], np.log(y[tr] / (b[tr] @ c)))
            return b[va] @ c * np.exp(m.predict(inputs[va]))
        return run

    models = {
        "cost LP (the default)": lambda tr, va: b[va] @ l1_relative_fit(b[tr], y[tr]),
        "boosted trees, log latency": lambda tr, va: np.exp(gbr().fit(feats[tr], np.log(y[tr])).predict(feats[va])),
        "random forest, log latency": lambda tr, va: np.exp(RandomForestRegressor(300, min_samples_leaf=3, random_state=0)
                                                            .fit(feats[tr], np.log(y[tr])).predict(feats[va])),
        "cost x boosted-tree residual": cost_times(lambda: gbr(3, 200, 0.03), feats),
        "cost x 15-nearest-neighbour residual": cost_times(lambda: KNeighborsRegressor(15), z),
    }
    out: dict = {"dataset": label(f.name), "oof_mape": {}}
    print(f"\n{label(f.name)}: noise floor ({n} rows, 5-fold out-of-fold)")
    oof = {}
    for name, run in models.items():
        p = np.zeros(n)
        for k, va in enumerate(folds):
            p[va] = run(np.concatenate([g for j, g in enumerate(folds) if j != k]), va)
        oof[name] = p
        out["oof_mape"][name] = mape(y, p)
        print(f"  {name}: {out['oof_mape'][name]:.3f} %", flush=True)
    groups: dict[tuple, list[int]] = {}
    for i, key in enumerate(map(tuple, np.round(x, 6))):
        groups.setdefault(key, []).append(i)
    dups = [g for g in groups.values() if len(g) > 1]
    out["duplicates_rel_diff_pct"] = [float(100 * abs(y[g[0]] - y[g[1]]) / np.mean(y[g[:2]])) for g in dups]
    print(f"  rows with identical features: {len(dups)} groups, |y1 - y2| / mean "
          f"{', '.join(f'{d:.1f}' for d in out['duplicates_rel_diff_pct']) or '-'} %")
    r = np.log(y / oof["cost LP (the default)"])
    dist, idx = cKDTree(z[:, :10]).query(z[:, :10], 2)
    close = dist[:, 1] <= np.quantile(dist[:, 1], 0.25)
    d = np.abs(r[close] - r[idx[close, 1]]).mean()
    out["nn_pairs"] = {"mean_abs_diff_pct": 100 * d, "lower_bound_pct": 50 * d, "gaussian_pct": 100 * d / np.sqrt(2)}
    print(f"  nearest-neighbour rows (closest 25 % of pairs): mean |r1 - r2| {100 * d:.2f} % -> floor >= {50 * d:.2f} %, "
          f"{100 * d / np.sqrt(2):.2f} % if the noise were Gaussian")
    out["autocorr_file_order"] = [float(np.corrcoef(r[:-k], r[k:])[0, 1]) for k in (1, 5, 20)]
    w = 5
    drift = np.array([np.median(np.r_[r[max(0, i - w):i], r[i + 1:i + 1 + w]]) for i in range(n)])
    out["drift_corrected_mape"] = mape(y, oof["cost LP (the default)"] * np.exp(drift))
    print(f"  residual autocorrelation in file order, lag 1/5/20: {', '.join(f'{a:.2f}' for a in out['autocorr_file_order'])};"
          f" cost LP corrected by the median residual of the {w} rows either side in file order: "
          f"{out['drift_corrected_mape']:.3f} %")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hat-csvs", required=True, help="folder of HAT's latency CSVs")
    ap.add_argument("--datasets", default="", help="comma-separated substrings of file names (default: all)")
    ap.add_argument("--splits", default="0-4", help="split seeds, e.g. 0-9 or 0,1,2")
    ap.add_argument("--init-splits", default="0", help="splits at which hat-mlp is refit with --inits")
    ap.add_argument("--inits", default="101,102,103,104", help="extra hat-mlp init seeds ('' for none)")
    ap.add_argument("--hat-steps", type=int, default=5000)
    ap.add_argument("--cache", help="folder for hat-mlp test predictions (reused across runs)")
    ap.add_argument("--floor", action="store_true", help="also the noise-floor analysis")
    ap.add_argument("--json", help="write the results as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    files = sorted(Path(args.hat_csvs).glob("*.csv"))
    if args.datasets:
        files = [f for f in files if any(s in f.name for s in args.datasets.split(","))]
    if not files:
        ap.error(f"--hat-csvs {args.hat_csvs}: no CSV files (matching --datasets {args.datasets!r})")
    cache = Path(args.cache) if args.cache else None
    if cache:
        cache.mkdir(parents=True, exist_ok=True)
    out: dict[str, list] = {"comparison": [], "floor": []}
    for f in files:
        data = read_latency_csv(f)
        out["comparison"].append(comparison(f, data, seeds(args.splits), seeds(args.init_splits), seeds(args.inits),
                                            args.hat_steps, cache))
        if args.floor:
            out["floor"].append(noise_floor(f, data))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
