"""`hat fit-predictor --data TRAIN.csv [--test TEST.csv] --out P.pt`: fit a latency predictor.

Reads our CSV or HAT's as-is. Without --test the data is split 80/10/10 as HAT does (seeded) and
the 10% test split is reported; with --test the model is fit on all of --data. Test metrics
(RMSE ms, MAPE %, Kendall tau, share within +-10 %, the prediction interval's empirical coverage)
go to stdout and P.metrics.json, a predicted-vs-measured scatter to P.scatter.png, and per-row
predictions with the interval (test-row order) to --predictions-out. `--transfer-from SRC.pt`
adapts a predictor fit on another device to the rows of --data (a few dozen are enough).
`--drift-correct` rescales each row by the drift reference `hat measure` recorded with it.
The predictor file records how the training latencies were timed (the CSV's .meta.json protocol:
timer, backend, threads, lengths, beam, runs), so tools that measure can say when they time
something else (`hat.latency.provenance`). An LM latency CSV (decoder-only) is fit by
`hat.commands.fit_predictor_lm`.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from hat.errors import ConfigError, DataError
from hat.files import atomic_open, atomic_write_text, save_figure
from hat.latency.dataset import LatencyData, check_rows_in_space, correct_drift, read_latency_csv
from hat.latency.devices import resolve_device
from hat.latency.estimate import context_for
from hat.latency.lm_dataset import is_lm_latency_csv
from hat.latency.provenance import describe as describe_protocol
from hat.latency.predictors import (DEFAULT_LEVEL, MODELS, Context, Predictor, check_transfer_source, fit, load_predictor,
                                    metrics, model_class, split_indices, transfer)
from hat.space import DesignSpace, load_space

EXAMPLES = """examples:
  hat fit-predictor --data lat.csv --out lat.pt
  hat fit-predictor --data HAT_latency.csv --model hat-mlp --space wmt-latency --out hat.pt
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit-predictor", help="fit a latency predictor on a latency CSV (ours or HAT's)",
                       epilog=EXAMPLES)
    p.add_argument("--data", required=True, help="training latency CSV (ours or HAT's 14-column format)")
    p.add_argument("--test", help="held-out latency CSV (default: HAT's 80/10/10 split of --data)")
    p.add_argument("--out", required=True, help="predictor file to write (.pt)")
    p.add_argument("--predictions-out", help="CSV of measured_ms,predicted_ms,lower_ms,upper_ms for the test rows, in order")
    p.add_argument("--model", choices=MODELS,
                   help="default = cost (non-negative prices of analytic cost terms, least relative L1 error), "
                        "hat-mlp (HAT's recipe), analytic (MACs/bytes/ops prior, ~10 rows), cost-mlp (cost x MLP residual)")
    p.add_argument("--transfer-from", metavar="SRC.pt",
                   help="adapt this predictor (fit on another device) to --data instead of fitting from scratch")
    p.add_argument("--drift-correct", action="store_true",
                   help="divide out machine drift: scale each row by median(reference_ms) / its reference_ms "
                        "(needs a CSV from `hat measure --reference-every K`)")
    p.add_argument("--level", type=float, default=DEFAULT_LEVEL, help="prediction-interval level (default 0.9)")
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


def _fit_or_transfer(args: argparse.Namespace, source: Predictor | None, train: LatencyData,
                     space: DesignSpace | None, ctx: Context, lat_norm: float | None, device: str) -> Predictor:
    if source is not None:
        return transfer(source, train, ctx, lat_norm, device, args.seed, space)
    model = args.model or "default"
    options = {"calib_rows": args.calib_rows} if model_class(model).name == "analytic" else {}
    return fit(train, model, space, ctx, lat_norm or 100.0, device, args.seed, **options)


def _transfer_source(args: argparse.Namespace) -> Predictor | None:
    if not args.transfer_from:
        return None
    source = load_predictor(args.transfer_from)
    if args.model and model_class(args.model) is not type(source):
        raise ConfigError(f"--model {args.model}: {args.transfer_from} is a {source.name} predictor and "
                          "--transfer-from keeps its model (drop --model)")
    return source


def run(args: argparse.Namespace) -> int:
    if not 0 < args.level < 1:
        raise ConfigError(f"--level {args.level:g}: must be between 0 and 1 (e.g. 0.9)")
    if is_lm_latency_csv(args.data):  # decoder-only LM rows: hat.commands.fit_predictor_lm
        from hat.commands.fit_predictor_lm import run_lm_fit  # noqa: PLC0415

        return run_lm_fit(args)
    source = _transfer_source(args)
    data = read_latency_csv(args.data)
    test = read_latency_csv(args.test) if args.test else None
    if args.drift_correct:
        data, test = correct_drift(data), None if test is None else correct_drift(test)
    space = _space_for(args, data)
    for d in (data, test):
        if d is not None and space is not None:
            check_rows_in_space(d, space)
        if d is not None and source is not None:
            check_transfer_source(source, d)
    dev_name = args.device or data.meta.get("device") or ""
    device = None
    if dev_name:
        try:
            device = resolve_device(dev_name)
        except ConfigError:
            if args.device:
                raise
    lat_norm = args.lat_norm or (device.lat_norm if device else None)
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
    pred = _fit_or_transfer(args, source, train, space, ctx, lat_norm, device.name if device else dev_name)
    out = Path(args.out)
    pred.save(out)
    pred.source = str(out)
    p, lo, hi = predict_rows(pred, test, args.level)
    m = metrics(test.latency_ms, p, lo, hi)
    used = f"{pred.state['calib_rows']} calibration rows" if pred.name == "analytic" else f"{len(train)} training rows"
    m.update({"model": pred.name, "feature_set": pred.feature_set, "level": args.level,
              "train_rows": pred.state["calib_rows"] if pred.name == "analytic" else len(train), "data": args.data,
              "test": args.test or f"{args.data} (80/10/10 split, seed {args.seed})",
              "transfer_from": args.transfer_from, "drift_corrected": args.drift_correct, "protocol": pred.protocol,
              "interval_calibration": f"{pred.interval['method']}, "
              f"{len(pred.interval['ratios'])} out-of-sample ratios"})
    stem = out.with_suffix("") if out.suffix else out
    scatter_png(Path(f"{stem}.scatter.png"), test.latency_ms, p,
                f"{pred.name}: RMSE {m['rmse_ms']:.2f} ms, MAPE {m['mape_pct']:.2f}%, tau {m['kendall_tau']:.3f}")
    if args.predictions_out:
        write_predictions(Path(args.predictions_out), test.latency_ms, p, lo, hi)
    atomic_write_text(f"{stem}.metrics.json", json.dumps(m, indent=1))
    how = f"adapted from {args.transfer_from}, " if args.transfer_from else ""
    print(f"{pred.name} ({how}{pred.feature_set} features, {used}) -> {out}")
    print(f"training latencies timed with: {describe_protocol(pred.protocol)}")
    print(f"test ({len(test)} rows): RMSE {m['rmse_ms']:.3f} ms  MAPE {m['mape_pct']:.2f}%  Kendall tau "
          f"{m['kendall_tau']:.3f}  within 10% {m['within10_pct']:.1f}%")
    print(f"{args.level:.0%} interval ({m['interval_calibration']}): coverage {m['coverage_pct']:.1f}% of test rows, "
          f"mean width {m['interval_width_pct']:.1f}% of the prediction")
    return 0


def write_predictions(path: Path, measured: np.ndarray, *columns: np.ndarray) -> None:
    """`row,measured_ms,predicted_ms,lower_ms,upper_ms`, one line per test row in order."""
    with atomic_open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "measured_ms", "predicted_ms", "lower_ms", "upper_ms"])
        for i, row in enumerate(zip(measured, *columns)):
            w.writerow([i, *(f"{v:.4f}" for v in row)])


def predict_rows(pred: Predictor, data: LatencyData, level: float = DEFAULT_LEVEL) -> tuple[np.ndarray, ...]:
    """(point, lower, upper) for CSV rows; HAT's averages when the test CSV has no configs."""
    if pred.feature_set == "full" and data.configs is None:
        raise DataError(f"{data.path}: has no config column, but the predictor uses per-layer features")
    return pred.predict_data_interval(data, level)
