"""`hat measure --device NAME --space SPACE --samples N --out FILE.csv`: build a latency dataset.

HAT's protocol by default (see hat.latency.measure); every knob is a flag, and flags override the
device YAML's `protocol:`. Rows are appended and flushed as they are measured; rerunning the same
command resumes, skipping configs already in the file (configs come from a seeded RNG).
"""
from __future__ import annotations

import argparse
import json
import random
import sys

from hat.errors import ConfigError
from hat.latency.dataset import LatencyWriter, meta_path
from hat.latency.devices import resolve_device
from hat.latency.measure import BACKENDS, TIMERS, Measurer, Protocol, default_vocab_size, environment
from hat.space import DesignSpace, SubConfig, hat_raw_features, load_space, macs, num_params


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("measure", help="measure SubTransformer latency on this device into a CSV (HAT's protocol)")
    p.add_argument("--device", required=True, help="device name (hat/configs/device) or device YAML; sets protocol defaults")
    p.add_argument("--space", required=True, help="design space name or YAML (e.g. tiny-latency)")
    p.add_argument("--samples", type=int, required=True, help="number of distinct configs the file should hold")
    p.add_argument("--out", required=True, help="CSV to append to (resumes if it exists)")
    p.add_argument("--seed", type=int, default=0, help="config-sampling seed (same seed = same config sequence)")
    p.add_argument("--src-len", type=int, help="source tokens (HAT: 30, IWSLT 23)")
    p.add_argument("--tgt-len", type=int, help="incremental decoder steps (HAT: 30)")
    p.add_argument("--beam", type=int, help="beam copies in the decoder batch (HAT: 5)")
    p.add_argument("--batch", type=int, help="sentences per batch (HAT: 1)")
    p.add_argument("--warmup", type=int, help="untimed warm-up runs (HAT: 5)")
    p.add_argument("--runs", type=int, help="timed runs per config (default 20)")
    p.add_argument("--drop-frac", type=float, help="fraction of fastest and of slowest runs dropped (HAT: 0.1)")
    p.add_argument("--vocab-size", type=int, help="joint vocabulary for embeddings/output projection "
                   "(default 8000 for tiny spaces, 32768 otherwise)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: device YAML, else torch's)")
    p.add_argument("--backend", choices=BACKENDS, help="timer/runtime (default: device YAML, else torch)")
    p.add_argument("--timer", choices=TIMERS, help="wall (HAT's, default) or cpu: the measuring thread's CPU time, "
                   "which ignores time stolen by other processes on a shared machine (needs --threads 1)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    p.set_defaults(func=run)


def build_protocol(args: argparse.Namespace, device_proto: dict, space: DesignSpace) -> Protocol:
    """Flags override the device YAML, which overrides HAT's defaults."""
    kw = {k: v for k, v in device_proto.items() if k in Protocol.__dataclass_fields__}
    for k in ("src_len", "tgt_len", "beam", "batch", "warmup", "runs", "drop_frac", "vocab_size", "threads", "backend", "timer"):
        v = getattr(args, k, None)
        if v is not None:
            kw[k] = v
    kw.setdefault("vocab_size", default_vocab_size(space))
    return Protocol(**kw).check()


def config_sequence(space: DesignSpace, n: int, seed: int) -> list[SubConfig]:
    """The smallest and largest configs, then uniform samples: `n` distinct configs, reproducible."""
    rng = random.Random(seed)
    seq, seen = [], set()
    tries = 0
    for cfg in (space.smallest(), space.largest()):
        if cfg.key() not in seen and len(seq) < n:
            seq.append(cfg)
            seen.add(cfg.key())
    while len(seq) < n and tries < 100 * n:
        tries += 1
        cfg = space.sample(rng)
        if cfg.key() not in seen:
            seq.append(cfg)
            seen.add(cfg.key())
    return seq


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    space = load_space(args.space)
    if args.samples < 1:
        raise ConfigError("--samples must be >= 1")
    protocol = build_protocol(args, device.protocol, space)
    mp = meta_path(args.out)
    meta = {"device": device.name, "device_description": device.description, "space": space.name,
            "super": space.to_dict()["super"], "protocol": protocol.to_dict(), "seed": args.seed,
            "peak_memory_bytes": "CPU: peak RSS (VmHWM, reset per config) minus RSS before building the SubTransformer; "
                                 "CUDA: max_memory_allocated minus allocated before"}
    if mp.is_file():
        old = json.loads(mp.read_text(encoding="utf-8"))
        if old.get("protocol") != protocol.to_dict() or old.get("space") != space.name:
            raise ConfigError(f"{args.out}: was measured with another protocol/space ({mp}); use a new --out")
    seq = config_sequence(space, args.samples, args.seed)
    measurer = Measurer(space, protocol)
    meta["environment"] = environment(protocol)
    with LatencyWriter(args.out) as writer:
        done = writer.measured()
        todo = [c for c in seq if c.key() not in done]
        mp.write_text(json.dumps(meta, indent=1), encoding="utf-8")
        print(f"measure: {len(seq) - len(todo)} of {len(seq)} configs already in {args.out}; measuring {len(todo)} "
              f"({meta['environment']['cpu']}, {meta['environment']['threads']} thread(s), {protocol.backend})",
              file=sys.stderr)
        bar = None
        if not args.no_progress:
            from tqdm import tqdm  # noqa: PLC0415

            bar = tqdm(total=len(todo), unit="cfg", desc="measure", file=sys.stderr)
        for cfg in todo:
            lat = measurer.measure(cfg)
            m = macs(cfg, space, protocol.src_len, protocol.tgt_len, protocol.vocab_size, protocol.beam)
            writer.write(cfg, hat_raw_features(cfg), lat, num_params(cfg, space), m, lat["peak_memory_bytes"])
            if bar is not None:
                bar.update(1)
                bar.set_postfix(ms=f"{lat['latency_mean_encoder'] + lat['latency_mean_decoder']:.1f}")
        if bar is not None:
            bar.close()
    return 0
