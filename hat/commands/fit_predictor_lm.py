"""`hat fit-predictor --data LM.csv --out P.pt`: the `lm-cost` predictor of decoder-only LM rows.

Chosen by `hat fit-predictor` when --data is an LM latency CSV (`hat measure` with an LM space).
Latency is fit with a split-conformal interval, memory on the same rows (hat.latency.predictors.lm);
test metrics of both go to stdout and P.metrics.json, the latency scatter to P.scatter.png.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from hat.errors import ConfigError, DataError
from hat.files import atomic_write_text
from hat.latency.lm_dataset import check_lm_rows_in_space, read_lm_latency_csv
from hat.latency.predictors import fit_lm, metrics, split_indices
from hat.space import LMSpace, load_any_space


def _space(args: argparse.Namespace, meta: dict) -> LMSpace:
    if args.space:
        space = load_any_space(args.space)
        if not isinstance(space, LMSpace):
            raise ConfigError(f"--space {args.space}: a translation space, but {args.data} holds decoder-only LM rows")
        return space
    if isinstance(meta.get("space_def"), dict):
        return LMSpace.from_dict(meta["space_def"], source=f"{args.data} metadata")
    raise ConfigError(f"{args.data}: no metadata naming its LM space; pass --space")


def run_lm_fit(args: argparse.Namespace) -> int:
    from hat.commands.fit_predictor import scatter_png  # noqa: PLC0415

    for flag, value in (("--transfer-from", args.transfer_from), ("--drift-correct", args.drift_correct),
                        ("--train-rows", args.train_rows)):
        if value:
            raise ConfigError(f"{flag} is not supported for decoder-only LM rows ({args.data})")
    if args.model not in (None, "default", "lm-cost"):
        raise ConfigError(f"--model {args.model}: {args.data} holds decoder-only LM rows; their model is lm-cost")
    data = read_lm_latency_csv(args.data)
    test = read_lm_latency_csv(args.test) if args.test else None
    space = _space(args, data.meta)
    for d in (data, test):
        if d is not None:
            check_lm_rows_in_space(d, space)
    if test is not None and (test.prompt_len, test.gen_len) != (data.prompt_len, data.gen_len):
        raise DataError(f"{args.test}: measured with prompt {test.prompt_len} + {test.gen_len} tokens, {args.data} "
                        f"with {data.prompt_len} + {data.gen_len}")
    if test is None:
        tr, _va, te = split_indices(len(data), args.seed)
        train, test = data.subset(tr), data.subset(te)
    else:
        train = data
    if len(test) < 2:
        raise DataError(f"{args.test or args.data}: fewer than 2 test rows")
    device = args.device or data.meta.get("device", "")
    pred = fit_lm(train, space, device, args.seed, args.lat_norm or 100.0)
    out = Path(args.out)
    pred.save(out)
    pred.source = str(out)
    p, lo, hi = pred.predict_interval(test.configs, args.level)
    m = metrics(test.latency_ms, p, lo, hi)
    mem = metrics(test.memory_bytes, pred.predict_memory(test.configs))
    m.update({"model": pred.name, "level": args.level, "train_rows": len(train), "data": args.data,
              "test": args.test or f"{args.data} (80/10/10 split, seed {args.seed})", "protocol": pred.protocol,
              "memory_mape_pct": mem["mape_pct"], "memory_kendall_tau": mem["kendall_tau"]})
    stem = out.with_suffix("") if out.suffix else out
    scatter_png(Path(f"{stem}.scatter.png"), test.latency_ms, p,
                f"{pred.name}: MAPE {m['mape_pct']:.2f}%, tau {m['kendall_tau']:.3f}")
    atomic_write_text(f"{stem}.metrics.json", json.dumps(m, indent=1))
    print(f"{pred.name} (decoder-only LM, prompt {data.prompt_len} + {data.gen_len} tokens, {len(train)} training rows) "
          f"-> {out}")
    print(f"test ({len(test)} rows): latency MAPE {m['mape_pct']:.2f}%  Kendall tau {m['kendall_tau']:.3f}  "
          f"within 10% {m['within10_pct']:.1f}%; memory MAPE {mem['mape_pct']:.2f}%  tau {mem['kendall_tau']:.3f}")
    print(f"{args.level:.0%} latency interval: coverage {m['coverage_pct']:.1f}% of test rows, mean width "
          f"{m['interval_width_pct']:.1f}% of the prediction")
    return 0
