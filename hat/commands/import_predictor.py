"""`hat import-predictor HAT.pt --lat-norm N --space SPACE --out P.pt`: use HAT's trained predictor.

Turns a latency MLP saved by HAT's fork (`latency_dataset/predictors/*.pt`) into a predictor file
that every command reads (`hat search --predictor`, `hat info`, a device YAML's `predictor:`),
with HAT's forward unchanged and its norms recorded. HAT ships no calibration rows, so the file
has no interval and searches hold its point estimate, as HAT did, unless `--calibrate-on CSV`
gives rows it was not fit on (a CSV you measured on the device, or rows of HAT's dataset outside
its training split). `--device NAME` records the device and takes its lat-norm; with
`--out NAME.pt` in the working directory, the shipped devices find it by name.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from hat.errors import ConfigError
from hat.files import atomic_write_text
from hat.latency.dataset import check_rows_in_space, read_latency_csv
from hat.latency.devices import resolve_device
from hat.latency.predictors import DEFAULT_LEVEL, Context, metrics
from hat.latency.predictors.hat_import import calibrate_on, import_hat
from hat.space import HAT_FEATURE_NORM, load_space

EXAMPLES = """examples:
  # HAT's Raspberry Pi predictor for WMT'14 En-Fr; `--device raspberrypi` then finds raspberrypi.pt here
  hat import-predictor wmt14enfr_cpu_raspberrypi.pt --device raspberrypi --space wmt-latency --out raspberrypi.pt
  # with an interval, calibrated on latencies it was not fit on
  hat import-predictor wmt14enfr_cpu_xeon.pt --lat-norm 300 --space wmt-latency --calibrate-on xeon_test.csv \\
      --out xeon.pt
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import-predictor", help="turn HAT's trained latency predictor (.pt state dict) into a predictor "
                       "file every command reads", epilog=EXAMPLES)
    p.add_argument("hat_file", metavar="HAT.pt", help="HAT's latency MLP state dict (latency_dataset/predictors/*.pt)")
    p.add_argument("--out", required=True, help="predictor file to write (.pt)")
    p.add_argument("--space", required=True, help="design space its latency dataset was sampled from (HAT's five: "
                   "wmt-latency); searches of a sub-space of it may use the predictor")
    p.add_argument("--lat-norm", type=float, help="HAT's lat-norm in ms, the output scale (Pi 5000, Xeon 300, GPU 200; "
                   "default: --device's)")
    p.add_argument("--feature-norm", type=float, nargs="+", metavar="X",
                   help=f"HAT's feature-norm, 10 numbers (default HAT's: {' '.join(map(str, HAT_FEATURE_NORM))})")
    p.add_argument("--device", help="device name or YAML it predicts (recorded; gives the default --lat-norm)")
    p.add_argument("--calibrate-on", metavar="CSV", help="latency CSV (ours or HAT's) of rows the predictor was not "
                   "fit on: calibrates its prediction interval and reports its error there")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    space = load_space(args.space)
    device = resolve_device(args.device) if args.device else None
    lat_norm = args.lat_norm if args.lat_norm is not None else (device.lat_norm if device else None)
    if lat_norm is None:
        raise ConfigError("--lat-norm N is required without --device (HAT's predictor outputs ms / lat-norm: "
                          "Pi 5000, Xeon 300, GPU 200)")
    calib = read_latency_csv(args.calibrate_on) if args.calibrate_on else None
    if calib is not None:
        check_rows_in_space(calib, space)
    ctx = Context(qkv_dim=space.qkv_dim)
    if device is not None:
        pr = device.protocol
        ctx = Context(int(pr.get("src_len", ctx.src_len)), int(pr.get("tgt_len", ctx.tgt_len)),
                      int(pr.get("beam", ctx.beam)), ctx.vocab_size, space.qkv_dim)
    pred = import_hat(args.hat_file, lat_norm, args.feature_norm or HAT_FEATURE_NORM, space,
                      device.name if device else "", ctx)
    if calib is not None:
        calibrate_on(pred, calib)
    out = Path(args.out)
    pred.save(out)
    layers = "-".join(map(str, [len(pred.state["feature_norm"]), *pred.state["hidden"], 1]))
    print(f"imported HAT predictor {args.hat_file} (MLP {layers}, feature-norm {pred.state['feature_norm']}, "
          f"lat-norm {lat_norm:g}) -> {out}")
    if calib is None:
        print("no interval (HAT ships no calibration rows): searches hold its point estimate, as HAT did; "
              "--calibrate-on CSV gives one")
        return 0
    p, lo, hi = pred.predict_data_interval(calib, DEFAULT_LEVEL)
    m = metrics(calib.latency_ms, p, lo, hi)
    stem = out.with_suffix("") if out.suffix else out
    atomic_write_text(f"{stem}.metrics.json", json.dumps({**m, "calibrated_on": args.calibrate_on}, indent=1))
    print(f"on {args.calibrate_on} ({m['n']} rows): MAPE {m['mape_pct']:.2f}%  RMSE {m['rmse_ms']:.3f} ms  Kendall tau "
          f"{m['kendall_tau']:.3f}; 90% interval {pred.bounds()[0]:.3f}-{pred.bounds()[1]:.3f} x the point estimate "
          "(calibrated on these rows, so its coverage here is by construction)")
    return 0
