"""`hat fit-predictor --data TRAIN.csv [--test TEST.csv] --out P.pt`: fit a latency predictor.

Reads our CSV or HAT's as-is. Without --test the data is split 80/10/10 as HAT does (seeded) and
the 10% test split is reported; with --test the model is fit on all of --data. Test metrics
(RMSE ms, MAPE %, Kendall tau) go to stdout and P.metrics.json, a predicted-vs-measured scatter
to P.scatter.png, and per-row predictions (test-row order) to --predictions-out.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from hat.errors import ConfigError, DataError
from hat.files import atomic_open, atomic_write_text, save_figure
from hat.latency.dataset import LatencyData, read_latency_csv
from hat.latency.devices import resolve_device
from hat.latency.estimate import context_for
from hat.latency.predictors import MODELS, Predictor, fit, metrics, split_indices
from hat.space import DesignSpace, load_space


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit-predictor", help="fit a latency predictor on a latency CSV (ours or HAT's)")
    p.add_argument("--data", required=True, help="training latency CSV (ours or HAT's 14-column format)")
    p.add_argument("--test", help="held-out latency CSV (default: HAT's 80/10/10 split of --data)")
    p.add_argument("--out", required=True, help="predictor file to write (.pt)")
    p.add_argument("--predictions-out", help="CSV of measured_ms,predicted_ms for the test rows, in order")
    p.add_argument("--model", choices=MODELS, default="default",
                   help="default (linear on analytic terms x MLP-ensemble residual), hat-mlp (HAT's recipe), "
                        "analytic (MACs/bytes/ops scaled by least squares)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--space", help="design space of the configs (default: the CSV's .meta.json); needed for "
                   "per-layer features and for the space check at use time")
    p.add_argument("--device", help="device name/YAML for lat-norm and the record (default: the CSV's .meta.json)")
    p.add_argument("--lat-norm", type=float, help="HAT's target divisor in ms (default: the device's, else 100)")
    p.add_argument("--calib-rows", type=int, default=8, help="analytic model: rows used to calibrate (default 8)")
    p.add_argument("--train-rows", type=int, help="use only the first N training rows (learning curves)")
    p.set_defaults(func=run)


def _space_for(args: argparse.Namespace, data: LatencyData) -> DesignSpace | None:
    name = args.space or data.meta.get("space")
    if not name:
        return None
    try:
        space = load_space(name)
    except ConfigError:
        if args.space:
            raise
        return None
    if data.configs is not None:
        for i, c in enumerate(data.configs):
            if c.encoder_layer_num > space.max_encoder_layers or c.decoder_layer_num > space.max_decoder_layers:
                raise DataError(f"{data.path}: row {i + 2} config is deeper than space {space.name}")
    return space


def scatter_png(path: Path, measured: np.ndarray, predicted: np.ndarray, title: str) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(measured, predicted, s=8, alpha=0.6)
    lo, hi = float(min(measured.min(), predicted.min())), float(max(measured.max(), predicted.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    data = read_latency_csv(args.data)
    test = read_latency_csv(args.test) if args.test else None
    space = _space_for(args, data)
    dev_name = args.device or data.meta.get("device") or ""
    device = None
    if dev_name:
        try:
            device = resolve_device(dev_name)
        except ConfigError:
            if args.device:
                raise
    lat_norm = args.lat_norm or (device.lat_norm if device else 100.0)
    ctx = context_for(data, space)
    if test is None:
        tr, _va, te = split_indices(len(data), args.seed)
        train, test = data.subset(tr), data.subset(te)
    else:
        train = data
    if args.train_rows:
        train = train.subset(range(min(args.train_rows, len(train))))
    if len(test) < 2:
        raise DataError(f"{args.test or args.data}: fewer than 2 test rows")
    pred = fit(train, args.model, space, ctx, lat_norm, device.name if device else dev_name, args.seed,
               calib_rows=args.calib_rows)
    out = Path(args.out)
    pred.save(out)
    pred.source = str(out)
    p = predict_rows(pred, test)
    m = metrics(test.latency_ms, p)
    m.update({"model": args.model, "feature_set": pred.feature_set, "train_rows": len(train), "data": args.data,
              "test": args.test or f"{args.data} (80/10/10 split, seed {args.seed})"})
    stem = out.with_suffix("") if out.suffix else out
    scatter_png(Path(f"{stem}.scatter.png"), test.latency_ms, p,
                f"{args.model}: RMSE {m['rmse_ms']:.2f} ms, MAPE {m['mape_pct']:.2f}%, tau {m['kendall_tau']:.3f}")
    if args.predictions_out:
        with atomic_open(args.predictions_out, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["row", "measured_ms", "predicted_ms"])
            for i, (a, b) in enumerate(zip(test.latency_ms, p)):
                w.writerow([i, f"{a:.4f}", f"{b:.4f}"])
    used = f"{pred.state['calib_rows']} calibration rows" if args.model == "analytic" else f"{len(train)} training rows"
    m["train_rows"] = pred.state["calib_rows"] if args.model == "analytic" else len(train)
    atomic_write_text(f"{stem}.metrics.json", json.dumps(m, indent=1))
    print(f"{args.model} ({pred.feature_set} features, {used}) -> {out}")
    print(f"test ({len(test)} rows): RMSE {m['rmse_ms']:.3f} ms  MAPE {m['mape_pct']:.2f}%  Kendall tau {m['kendall_tau']:.3f}")
    return 0


def predict_rows(pred: Predictor, data: LatencyData) -> np.ndarray:
    """Predictions for CSV rows; falls back to HAT's averages when the test CSV has no configs."""
    if pred.feature_set == "full" and data.configs is None:
        raise DataError(f"{data.path}: has no config column, but the predictor uses per-layer features")
    return pred.predict_data(data)
