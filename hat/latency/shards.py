"""Long measurements: an ETA, shards of the seeded config list, and merging the shards' CSVs.

At HAT's protocol a Raspberry Pi takes days (2,000 configs x 25 runs at 3-7 s each), so
`hat measure --shard K/N` lets N boards split one seeded list (board K takes the configs at
indices i with i % N == K - 1; the same --seed and --samples give the same list everywhere) and
`hat merge-latency` joins their CSVs into the one file a single board would have written.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Sequence, TypeVar

from hat.errors import ConfigError, DataError
from hat.files import atomic_write_text, read_json
from hat.latency.dataset import meta_path, read_latency_csv

T = TypeVar("T")
# metadata that must agree for rows of several files to be one dataset
MATCHING = ("space", "super", "device", "protocol", "reference")


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """`K/N` -> (K, N) with 1 <= K <= N; None stays None; anything else is a ConfigError."""
    if text is None:
        return None
    k, _, n = str(text).partition("/")
    try:
        kk, nn = int(k), int(n)
    except ValueError:
        kk = nn = 0
    if not 1 <= kk <= nn:
        raise ConfigError(f"--shard {text!r}: expected K/N with 1 <= K <= N (e.g. 1/3: the first of three boards)")
    return kk, nn


def shard_of(seq: Sequence[T], shard: tuple[int, int] | None) -> list[T]:
    """Board K of N measures the items at indices i with i % N == K - 1."""
    if shard is None:
        return list(seq)
    k, n = shard
    return [c for i, c in enumerate(seq) if i % n == k - 1]


def shard_name(shard: tuple[int, int] | None) -> str | None:
    return None if shard is None else f"{shard[0]}/{shard[1]}"


def duration(seconds: float) -> str:
    """12 s, 7 min, 3.1 h, 2.4 days."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def estimate_seconds(measurer: Any, cfg: Any) -> float:
    """Seconds `measurer.measure(cfg)` will take, from a cheap run: building the SubTransformer
    plus one warm-up and one timed run (wall clock), then the protocol's other runs at the timed
    run's latency."""
    from hat.latency.measure import time_model  # noqa: PLC0415  (torch-heavy imports)
    from hat.model import extract  # noqa: PLC0415

    p = measurer.protocol
    quick = dataclasses.replace(p, warmup=min(p.warmup, 1), runs=1)
    t0 = time.perf_counter()
    lat = time_model(extract(measurer.super, cfg).eval(), quick)
    spent = time.perf_counter() - t0
    one_run_s = (lat["latency_mean_encoder"] + lat["latency_mean_decoder"]) / 1000.0
    return spent + max(0, p.warmup + p.runs - quick.warmup - quick.runs) * one_run_s


def eta_line(to_go: int, per_config_s: float, references: int = 0, per_reference_s: float = 0.0) -> str:
    """The line `hat measure` prints before it starts measuring."""
    total = to_go * per_config_s + references * per_reference_s
    refs = f" and {references} reference re-timing(s)" if references else ""
    return (f"hat measure: {to_go} configs to go{refs}, about {duration(total)} at {per_config_s:.1f} s per config "
            "(estimated from one timed config)")


def merge_latency_csvs(inputs: Sequence[str | Path], out: str | Path) -> tuple[int, dict[str, Any]]:
    """Concatenate latency CSVs of one space/protocol/device (their metadata sidecars must agree)
    into `out` (written atomically, with a merged sidecar). Refuses a file without metadata or
    configs, a mismatch and a config measured twice, naming the file. Returns (rows, meta)."""
    if len(inputs) < 2:
        raise ConfigError("merge-latency: give at least two CSVs to merge")
    out = Path(out)
    if any(Path(p).resolve() == out.resolve() for p in inputs):
        raise ConfigError(f"{out}: --out is one of the inputs; write the merge to a new file")
    if out.exists():
        raise ConfigError(f"{out}: exists; merge into a new --out (nothing was changed)")
    header: str | None = None
    lines: list[str] = []
    seen: dict[tuple, str] = {}
    first_meta: dict[str, Any] | None = None
    sources = []
    for p in inputs:
        data = read_latency_csv(p)  # validates every row
        mp = meta_path(p)
        if not mp.is_file():
            raise DataError(f"{p}: no metadata ({mp}), so it cannot be checked against the others; "
                            "merge only CSVs written by `hat measure`")
        if data.configs is None:
            raise DataError(f"{p}: has no config column (a HAT CSV?), so duplicates cannot be checked")
        meta = read_json(mp, "latency CSV metadata", DataError)
        if first_meta is None:
            first_meta = meta
        else:
            diff = [k for k in MATCHING if meta.get(k) != first_meta.get(k)]
            if meta.get("shard") and first_meta.get("shard") and meta.get("seed") != first_meta.get("seed"):
                diff.append("seed")  # shards of different seeded lists would not add up to one list
            if diff:
                raise DataError(f"{p}: {', '.join(diff)} differ(s) from {inputs[0]}'s metadata "
                                f"(space {meta.get('space')!r}, device {meta.get('device')!r}); cannot merge")
        for k, c in enumerate(data.configs, start=1):
            if c.key() in seen:
                raise DataError(f"{p}: row {k} repeats a config already in {seen[c.key()]}; cannot merge")
            seen[c.key()] = str(p)
        text = [ln for ln in Path(p).read_text(encoding="utf-8").splitlines() if ln.strip()]
        if header is None:
            header = text[0]
        elif text[0] != header:
            raise DataError(f"{p}: its columns differ from {inputs[0]}'s (written by another `hat measure` version)")
        lines += text[1:]
        sources.append({"file": str(p), "shard": meta.get("shard"), "rows": len(data),
                        "environment": meta.get("environment")})
    assert first_meta is not None and header is not None
    meta = {k: v for k, v in first_meta.items() if k not in ("shard", "environment")}
    meta["merged_from"] = sources
    atomic_write_text(out, "\n".join([header, *lines]) + "\n")
    atomic_write_text(meta_path(out), json.dumps(meta, indent=1))
    return len(lines), meta


__all__ = ["duration", "estimate_seconds", "eta_line", "merge_latency_csvs", "parse_shard", "shard_name", "shard_of"]
