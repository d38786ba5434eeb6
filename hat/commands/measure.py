"""`hat measure --device NAME --space SPACE --samples N --out FILE.csv`: build a latency dataset.

HAT's protocol by default (see hat.latency.measure); every knob is a flag. Flags override a
`--config` latency settings file (`hat/configs/latency/`), which overrides the device YAML's
`protocol:`. Rows are appended and flushed as they are measured; rerunning the same
command resumes, skipping configs already in the file (configs come from a seeded RNG).
Every `--reference-every K` rows a fixed reference config (the space's smallest) is timed again;
each row records the latest reference time (`reference_ms`), so `hat fit-predictor
--drift-correct` can divide out the machine's drift, and its run-to-run spread (`latency_std_ms`).
Before measuring it prints an ETA (one config of middle size is timed first, with two runs).
`--shard K/N` measures board K's share of the seeded list (see hat.latency.shards); `hat
merge-latency` joins the boards' CSVs. When the device's predictor was fit on latencies timed
otherwise (another clock, lengths, beam), a warning says so: its ms and these rows differ.
A decoder-only LM space (`task: lm`) is measured by `hat.commands.measure_lm` instead (a prompt's
prefill + cached generation: latency and peak memory).
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys

from hat.commands.settings import Option, add_option, apply_settings, dataclass_options
from hat.errors import ConfigError, HatError
from hat.files import atomic_write_text, read_json
from hat.latency.dataset import LatencyWriter, meta_path
from hat.latency.devices import DeviceSpec, resolve_device
from hat.latency.measure import BACKENDS, TIMERS, Measurer, Protocol, environment
from hat.latency.provenance import predictor_warning
from hat.latency.shards import estimate_seconds, eta_line, parse_shard, shard_name, shard_of
from hat.space import DesignSpace, LMSpace, SubConfig, hat_raw_features, load_any_space, macs, num_params

# option -> (type, default): the sampling knobs, then every Protocol field (None: the device's)
OPTIONS = {"device": Option(str), "space": Option(str), "samples": Option(int), "seed": Option(int, 0),
           "reference_every": Option(int, 20), **dataclass_options(Protocol, defaults=False)}
# Protocol fields with the defaults their help states (the vocabulary's depends on the space)
PROTOCOL_SHOWN = {**dataclass_options(Protocol), "vocab_size": Option(int)}
PROTOCOL_HELP = {
    "src_len": "source tokens (HAT: WMT 30, IWSLT 23)", "tgt_len": "incremental decoder steps",
    "beam": "beam copies in the decoder batch", "batch": "sentences per batch", "warmup": "untimed warm-up runs",
    "runs": "timed runs per config", "drop_frac": "fraction of fastest and of slowest runs dropped",
    "vocab_size": "joint vocabulary for embeddings/output projection (default: 8000 for tiny spaces, 32768 otherwise)",
    "threads": "torch intra-op threads (default: torch's)",
    "backend": "timer/runtime",
    "quantize": "int8: time the int8 model (as `hat export --quantize int8` writes it) on the torch or onnxruntime "
                "backend; use a separate --out and device name for its dataset (default: float32)",
    "timer": "wall (HAT's) or cpu: the measuring thread's CPU time, which ignores time "
                                         "stolen by other processes on a shared machine (needs --threads 1)",
}

EXAMPLES = """examples:
  hat measure --device cpu-2core --space tiny-latency --samples 1000 --out lat.csv
  hat measure --config cpu-2core.tiny-latency --out lat.csv   # the shipped dataset's settings
  hat measure --device raspberrypi --space wmt-latency --samples 2000 --shard 1/3 --out pi1.csv  # board 1 of 3
  hat merge-latency pi1.csv pi2.csv pi3.csv --out lat_pi.csv   # then fit-predictor on the merge
"""


MAX_SAMPLES = 1_000_000


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("measure", help="measure SubTransformer latency on this device into a CSV (HAT's protocol)",
                       description="Protocol values: HAT's defaults < the device YAML's `protocol:` < --config "
                                   "< flags.",
                       epilog=EXAMPLES)
    p.add_argument("--config", help="latency settings: a shipped name (hat/configs/latency, e.g. cpu-2core.tiny-latency) "
                                    "or a YAML file with these options as keys")
    p.add_argument("--device", help="device name (hat/configs/device) or device YAML; sets protocol defaults")
    p.add_argument("--space", help="design space name or YAML (e.g. tiny-latency)")
    p.add_argument("--samples", type=int, help="number of distinct configs the file should hold")
    p.add_argument("--out", required=True, help="CSV to append to (resumes if it exists)")
    add_option(p, OPTIONS, "seed", "config-sampling seed (same seed = same configs)")
    add_option(p, OPTIONS, "reference_every", "re-time the reference config (the space's smallest) every K rows, for "
               "drift correction (0: never)")
    choices = {"backend": BACKENDS.names(), "timer": TIMERS, "quantize": ["int8"]}
    for name in PROTOCOL_SHOWN:
        add_option(p, PROTOCOL_SHOWN, name, PROTOCOL_HELP[name], choices=choices.get(name))
    p.add_argument("--prompt-len", type=int, help="decoder-only LM spaces: prompt tokens prefilled (default 32)")
    p.add_argument("--gen-len", type=int, help="decoder-only LM spaces: tokens generated over the KV cache (default 32)")
    p.add_argument("--shard", help="K/N: measure only board K's share of the N-way split of the seeded config list "
                                   "(indices i with i %% N == K-1); merge the N CSVs with `hat merge-latency`")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    p.set_defaults(func=run)


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


def predictor_clash(device: DeviceSpec, protocol: Protocol) -> str | None:
    """The warning line when the device's predictor was fit on latencies timed unlike `protocol`
    (None too when the device has no predictor file: measuring does not need one)."""
    from hat.latency.predictors import load_predictor  # noqa: PLC0415

    if not device.predictor:
        return None
    try:
        pred = load_predictor(device.predictor_path())
    except HatError:
        return None
    return predictor_warning(pred, protocol.to_dict(), "hat measure", device.name)


def run(args: argparse.Namespace) -> int:
    apply_settings(args, OPTIONS, "latency", "latency settings")
    for key in ("device", "space", "samples"):
        if getattr(args, key) is None:
            raise ConfigError(f"--{key} is required (as a flag or in --config)")
    device = resolve_device(args.device)
    space = load_any_space(args.space)
    if isinstance(space, LMSpace):  # decoder-only LMs: hat.commands.measure_lm
        from hat.commands.measure_lm import run_lm  # noqa: PLC0415

        return run_lm(args, device, space)
    if args.prompt_len is not None or args.gen_len is not None:
        raise ConfigError(f"--prompt-len/--gen-len are for decoder-only LM spaces; space {space.name} is a translation "
                          "space (its lengths are --src-len/--tgt-len)")
    if not 1 <= args.samples <= min(MAX_SAMPLES, space.size()):
        why = (f"the space has {space.size()} distinct configs" if space.size() < MAX_SAMPLES else
               f"at most {MAX_SAMPLES} (HAT measured 2000 per device; a million at HAT's protocol is days)")
        raise ConfigError(f"--samples {args.samples}: must be >= 1 and {why}")
    if args.reference_every < 0:
        raise ConfigError(f"--reference-every {args.reference_every}: must be >= 0 (0: no drift reference)")
    shard = parse_shard(args.shard)
    protocol = Protocol.from_device(device, space, **{k: getattr(args, k) for k in Protocol.__dataclass_fields__})
    mp = meta_path(args.out)
    meta = {"device": device.name, "device_description": device.description, "space": space.name,
            "super": space.to_dict()["super"], "protocol": protocol.to_dict(), "seed": args.seed,
            "peak_memory_bytes": "CPU: peak RSS (VmHWM, reset per config) minus RSS before building the SubTransformer; "
                                 "CUDA: max_memory_allocated minus allocated before",
            "reference": {"config": space.smallest().to_dict(), "every_rows": args.reference_every}}
    if shard is not None:
        meta["shard"] = shard_name(shard)
    if mp.is_file():
        old = read_json(mp, "latency CSV metadata", ConfigError, hint=f" (delete it and {args.out} to start over)")
        if old.get("protocol") != protocol.to_dict() or old.get("space") != space.name:
            raise ConfigError(f"{args.out}: was measured with another protocol/space ({mp}); use a new --out")
        if old.get("shard") != meta.get("shard"):
            was, now = old.get("shard") or "all configs", meta.get("shard") or "all configs"
            raise ConfigError(f"{args.out}: holds shard {was}, not {now} ({mp}); resume with the same --shard "
                              "or use a new --out")
    seq = shard_of(config_sequence(space, args.samples, args.seed), shard)
    meta["environment"] = environment(protocol)
    with LatencyWriter(args.out) as writer:  # refuses a file that is not ours, or another writer's
        done = writer.measured()
        todo = [c for c in seq if c.key() not in done]
        atomic_write_text(mp, json.dumps(meta, indent=1))
        measurer = Measurer(space, protocol)
        print(f"measure: {len(seq) - len(todo)} of {len(seq)} configs already in {args.out}; measuring {len(todo)} "
              f"({meta['environment']['cpu']}, {meta['environment']['threads']} thread(s), {protocol.backend})",
              file=sys.stderr)
        clash = predictor_clash(device, protocol)  # once the input is known good: a refusal stays one line
        if clash:
            print(clash, file=sys.stderr, flush=True)
        if not todo:
            return 0
        sizes = sorted(todo, key=lambda c: num_params(c, space))  # the ETA: a config of middle size, timed
        per_cfg = estimate_seconds(measurer, sizes[len(sizes) // 2])
        refs = math.ceil(len(todo) / args.reference_every) if args.reference_every else 0
        ref_s = estimate_seconds(measurer, space.smallest()) if refs else 0.0
        print(eta_line(len(todo), per_cfg, refs, ref_s), file=sys.stderr, flush=True)
        bar = None
        if not args.no_progress:
            from tqdm import tqdm  # noqa: PLC0415

            bar = tqdm(total=len(todo), unit="cfg", desc="measure", file=sys.stderr)
        ref_ms = None
        for i, cfg in enumerate(todo):
            if args.reference_every and i % args.reference_every == 0:
                r = measurer.measure(space.smallest())
                ref_ms = r["latency_mean_encoder"] + r["latency_mean_decoder"]
            lat = measurer.measure(cfg)
            m = macs(cfg, space, protocol.src_len, protocol.tgt_len, protocol.vocab_size, protocol.beam)
            writer.write(cfg, hat_raw_features(cfg), lat, num_params(cfg, space), m, lat["peak_memory_bytes"], ref_ms)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(ms=f"{lat['latency_mean_encoder'] + lat['latency_mean_decoder']:.1f}")
        if bar is not None:
            bar.close()
    return 0
