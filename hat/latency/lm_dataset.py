"""Latency CSVs of decoder-only LMs: one row per measured `LMConfig`.

Columns: the config (JSON), its summary, depth and width, the decoder's parameters (LTS's proxy),
all parameters, the MACs of the generation timed, the prompt and generation lengths, the median
latency and its interquartile range, each phase's median and the peak memory in bytes
(`hat.latency.lm_measure.MEMORY_DOC` says what it counts). The protocol, space and machine go
to the `NAME.meta.json` sidecar, as for translation CSVs, with `task: lm`.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from hat.errors import ConfigError, DataError
from hat.files import read_json
from hat.latency.dataset import HAT_COLUMNS, LatencyWriter, meta_path
from hat.space import LMConfig, LMSpace, lm_decoder_params, lm_macs, lm_params

LM_COLUMNS = ("config", "summary", "layer_num", "embed_dim", "decoder_params", "params", "macs", "prompt_len",
              "gen_len", "latency_ms", "latency_iqr_ms", "prefill_ms", "decode_ms", "peak_memory_bytes")
TIMES = ("latency_ms", "latency_iqr_ms", "prefill_ms", "decode_ms")


@dataclass
class LMLatencyData:
    """Rows of one LM latency CSV (what `fit` and the predictors read)."""

    path: str
    configs: list[LMConfig]
    latency_ms: np.ndarray  # (N,) median of whole generations
    memory_bytes: np.ndarray  # (N,) peak memory
    prompt_len: int
    gen_len: int
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.configs)

    def subset(self, idx: Iterable[int]) -> "LMLatencyData":
        idx = np.asarray(list(idx), dtype=int)
        return LMLatencyData(self.path, [self.configs[i] for i in idx], self.latency_ms[idx], self.memory_bytes[idx],
                             self.prompt_len, self.gen_len, self.meta)


class LMLatencyWriter(LatencyWriter):
    """`LatencyWriter` for LM rows: same locking, repair and resume, LM columns."""

    COLUMNS = LM_COLUMNS
    KIND = "decoder-only LM config"

    def _key(self, d: Any, where: str) -> LMConfig:
        return LMConfig.from_dict(d, source=where)

    def _foreign(self, first: bytes) -> str | None:
        if first.startswith(HAT_COLUMNS[0].encode()):
            return "a translation latency CSV, not a decoder-only LM one; use another --out"
        return None

    def write_lm(self, cfg: LMConfig, space: LMSpace, prompt_len: int, gen_len: int, lat: dict[str, Any]) -> None:
        row = [json.dumps(cfg.to_dict(), separators=(",", ":")), cfg.describe(), cfg.layer_num, cfg.embed_dim,
               lm_decoder_params(cfg), lm_params(cfg, space), lm_macs(cfg, space, prompt_len, gen_len), prompt_len,
               gen_len, *(f"{lat[c]:.4f}" for c in TIMES), int(lat["peak_memory_bytes"])]
        self._w.writerow(row)
        self._f.flush()
        os.fsync(self._f.fileno())


def _number(where: str, col: str, text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise DataError(f"{where}: column {col} is not a number ({text!r})") from None
    if not np.isfinite(v):
        raise DataError(f"{where}: column {col} is not finite ({text!r})")
    return v


def is_lm_latency_csv(path: str | Path) -> bool:
    """Whether `path` starts with the LM header (the commands dispatch on it)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return next(csv.reader(f), None) == list(LM_COLUMNS)
    except (OSError, UnicodeDecodeError, csv.Error):
        return False


def read_lm_latency_csv(path: str | Path) -> LMLatencyData:
    """Read an LM latency CSV; a translation CSV, malformed rows, latencies <= 0 or rows of mixed
    prompt/generation lengths raise DataError naming the file and the row."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: unreadable ({type(e).__name__})") from None
    if not rows or rows[0] != list(LM_COLUMNS):
        first = rows[0][0] if rows and rows[0] else ""
        what = "a translation latency CSV" if first == HAT_COLUMNS[0] else "not an LM latency CSV"
        raise DataError(f"{path}: {what}, not one `hat measure` wrote for a decoder-only LM space")
    col = {c: i for i, c in enumerate(LM_COLUMNS)}
    cfgs, lat, mem, lengths = [], [], [], set()
    for k, row in enumerate(rows[1:], start=1):
        where = f"{path}: row {k}"
        if len(row) != len(LM_COLUMNS):
            raise DataError(f"{where}: {len(row)} fields, the header has {len(LM_COLUMNS)}")
        try:
            cfgs.append(LMConfig.from_dict(json.loads(row[col["config"]]), source=where))
        except (ValueError, RecursionError):
            raise DataError(f"{where}: column config is not JSON") from None
        except ConfigError as e:
            raise DataError(str(e)) from None
        lat.append(_number(where, "latency_ms", row[col["latency_ms"]]))
        mem.append(_number(where, "peak_memory_bytes", row[col["peak_memory_bytes"]]))
        if lat[-1] <= 0 or mem[-1] <= 0:
            raise DataError(f"{where}: latency_ms and peak_memory_bytes must be positive")
        lengths.add((int(_number(where, "prompt_len", row[col["prompt_len"]])),
                     int(_number(where, "gen_len", row[col["gen_len"]]))))
    if not cfgs:
        raise DataError(f"{path}: no data rows")
    if len(lengths) > 1:
        raise DataError(f"{path}: rows of different prompt/generation lengths {sorted(lengths)}; one file, one protocol")
    mp = meta_path(path)
    meta = read_json(mp, "latency CSV metadata", DataError) if mp.is_file() else {}
    (prompt, gen), = lengths
    return LMLatencyData(str(path), cfgs, np.array(lat), np.array(mem), prompt, gen, meta)


def check_lm_rows_in_space(data: LMLatencyData, space: LMSpace) -> None:
    """Refuse rows of another space, naming the row."""
    for k, c in enumerate(data.configs, start=1):
        try:
            space.validate(c, source=f"{data.path}: row {k}")
        except ConfigError as e:
            raise DataError(f"{e} (a row of another space?)") from None
