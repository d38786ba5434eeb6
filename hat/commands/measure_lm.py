"""`hat measure --space LM_SPACE`: latency and peak memory of decoder-only LMs on this device.

    hat measure --device cpu-2core --space lm-tiny --samples 200 --prompt-len 32 --gen-len 32 --out lm.csv

Each row is one `LMConfig` of the space (the smallest and largest first, then seeded uniform
samples): a prefill of `--prompt-len` tokens and `--gen-len` cached steps, timed as
`hat.latency.lm_measure` says, and its peak memory. Rows are appended and fsynced one by one;
rerunning the same command resumes, re-timing nothing already in the file. The translation-only
flags (source/target lengths, beam, vocabulary, int8, shards) are refused in one line.
"""
from __future__ import annotations

import argparse
import json
import random
import sys

from hat.errors import ConfigError
from hat.files import atomic_write_text, read_json
from hat.latency.dataset import meta_path
from hat.latency.devices import DeviceSpec
from hat.latency.lm_dataset import LMLatencyWriter
from hat.latency.lm_measure import MEMORY_DOC, LMMeasurer, LMProtocol
from hat.latency.measure import environment
from hat.latency.shards import eta_line
from hat.space import LMSpace, lm_params

TRANSLATION_ONLY = ("src_len", "tgt_len", "beam", "vocab_size", "quantize", "drop_frac", "shard")


def lm_protocol(args: argparse.Namespace, device: DeviceSpec, space: LMSpace) -> LMProtocol:
    """The LM protocol of a `hat measure` command line: defaults < the device's < flags."""
    given = [k for k in TRANSLATION_ONLY if getattr(args, k, None) is not None]
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise ConfigError(f"{flag} is for translation spaces; space {space.name} is a decoder-only LM space "
                          "(its lengths are --prompt-len/--gen-len)")
    keys = ("prompt_len", "gen_len", "batch", "warmup", "runs", "threads", "backend", "timer")
    return LMProtocol.from_device(device, space, **{k: getattr(args, k, None) for k in keys})


def run_lm(args: argparse.Namespace, device: DeviceSpec, space: LMSpace) -> int:
    protocol = lm_protocol(args, device, space)
    if not 1 <= args.samples <= space.size():
        raise ConfigError(f"--samples {args.samples}: must be >= 1 and at most {space.size()} (the space's configs)")
    mp = meta_path(args.out)
    meta = {"task": "lm", "device": device.name, "device_description": device.description, "space": space.name,
            "space_def": space.to_dict(), "protocol": protocol.to_dict(), "seed": args.seed,
            "peak_memory_bytes": MEMORY_DOC}
    if mp.is_file():
        old = read_json(mp, "latency CSV metadata", ConfigError, hint=f" (delete it and {args.out} to start over)")
        if old.get("task") != "lm":
            raise ConfigError(f"{args.out}: a translation latency CSV ({mp}), not a decoder-only LM one; use a new --out")
        if old.get("protocol") != protocol.to_dict() or old.get("space_def") != space.to_dict():
            raise ConfigError(f"{args.out}: was measured with another protocol/space ({mp}); use a new --out")
    seq = space.spread(args.samples, random.Random(args.seed))
    meta["environment"] = environment(protocol)
    with LMLatencyWriter(args.out) as writer:  # refuses a file that is not ours, or another writer's
        done = writer.measured()
        todo = [c for c in seq if c not in done]
        atomic_write_text(mp, json.dumps(meta, indent=1))
        measurer = LMMeasurer(space, protocol)
        env = meta["environment"]
        print(f"measure: {len(seq) - len(todo)} of {len(seq)} LM configs already in {args.out}; measuring {len(todo)} "
              f"({env['cpu']}, {env['threads']} thread(s), {protocol.backend}; prompt {protocol.prompt_len} + "
              f"{protocol.gen_len} generated tokens)", file=sys.stderr, flush=True)
        if not todo:
            return 0
        middle = sorted(todo, key=lambda c: lm_params(c, space))[len(todo) // 2]
        print(eta_line(len(todo), measurer.estimate_seconds(middle)), file=sys.stderr, flush=True)
        bar = None
        if not args.no_progress:
            from tqdm import tqdm  # noqa: PLC0415

            bar = tqdm(total=len(todo), unit="cfg", desc="measure lm", file=sys.stderr)
        for cfg in todo:
            lat = measurer.measure(cfg)
            writer.write_lm(cfg, space, protocol.prompt_len, protocol.gen_len, lat)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(ms=f"{lat['latency_ms']:.1f}", MiB=f"{lat['peak_memory_bytes'] / 2**20:.1f}")
        if bar is not None:
            bar.close()
    return 0
