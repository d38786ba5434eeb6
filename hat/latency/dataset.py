"""Latency CSV io: our files and HAT's, read by the same function.

Our rows are HAT's 14 columns first (so HAT's own reader, which takes columns 0-9 as features
and 10-11 as encoder/decoder ms, still works), then `config` (the SubConfig as JSON), `params`,
`macs` and `peak_memory_bytes`. The protocol and machine (threads, backend, torch version, CPU
model) go to a sidecar `NAME.meta.json` rather than `#` lines, which HAT's reader would choke on.
"""
from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from hat.errors import ConfigError, DataError
from hat.files import check_fields, read_json
from hat.space import HAT_FEATURE_NAMES, DesignSpace, SubConfig, ende_attn_count

log = logging.getLogger(__name__)
LATENCY_COLUMNS = ("latency_mean_encoder", "latency_mean_decoder", "latency_std_encoder", "latency_std_decoder")
HAT_COLUMNS = HAT_FEATURE_NAMES + LATENCY_COLUMNS
OLD_COLUMNS = HAT_COLUMNS + ("config", "params", "macs", "peak_memory_bytes")  # before drift references
# latency_std_ms: std of encoder + decoder over the timed runs; reference_ms: the reference config's
# latency, re-timed every K rows (`hat measure --reference-every`), as measured last before this row
DRIFT_COLUMNS = ("latency_std_ms", "reference_ms")
OUR_COLUMNS = OLD_COLUMNS + DRIFT_COLUMNS


def meta_path(csv_path: str | Path) -> Path:
    """`x.csv` -> `x.meta.json` (protocol and environment of the measurement)."""
    p = Path(csv_path)
    return p.with_name(p.stem + ".meta.json") if p.suffix == ".csv" else p.with_name(p.name + ".meta.json")


@dataclass
class LatencyData:
    """Rows of one latency CSV. `configs` is None for HAT files (they carry only averages)."""

    path: str
    hat_features: np.ndarray  # (N, 10) raw HAT averages
    latency_encoder: np.ndarray  # (N,) ms
    latency_decoder: np.ndarray
    configs: list[SubConfig] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    reference_ms: np.ndarray | None = None  # (N,) drift reference per row (NaN: none); None: no such column

    @property
    def latency_ms(self) -> np.ndarray:
        """HAT's target: encoder + decoder mean, ms."""
        return self.latency_encoder + self.latency_decoder

    def __len__(self) -> int:
        return len(self.latency_encoder)

    def subset(self, idx: Iterable[int]) -> "LatencyData":
        idx = np.asarray(list(idx), dtype=int)
        return LatencyData(
            self.path, self.hat_features[idx], self.latency_encoder[idx], self.latency_decoder[idx],
            None if self.configs is None else [self.configs[i] for i in idx], self.meta,
            None if self.reference_ms is None else self.reference_ms[idx],
        )


def _float(where: str, col: str, text: str) -> float:
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise DataError(f"{where}: column {col} is not a number ({text!r})") from None
    if np.isnan(v):
        raise DataError(f"{where}: column {col} is NaN")
    if not np.isfinite(v):
        raise DataError(f"{where}: column {col} is not finite ({text!r})")
    return v


def read_latency_csv(path: str | Path) -> LatencyData:
    """Read our CSV or HAT's as-is. Missing columns, short (truncated), non-numeric or NaN rows,
    latencies <= 0 (or a negative std), a repeated header line and empty files raise DataError
    naming the file, the row (1 = first data row) and its line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: unreadable ({type(e).__name__})") from None
    numbered = [(i, ln) for i, ln in enumerate(text.splitlines(), start=1) if not ln.startswith("#")]
    if not numbered or not numbered[0][1].strip():
        raise DataError(f"{path}: empty latency CSV (expected a header with {', '.join(HAT_COLUMNS[:2])}, ...)")
    try:
        rows = list(csv.reader([ln for _, ln in numbered]))
    except csv.Error as e:
        raise DataError(f"{path}: malformed CSV ({e})") from None
    header = [h.strip() for h in rows[0]]
    missing = [c for c in HAT_COLUMNS if c not in header]
    if missing and "prompt_len" in header:
        raise DataError(f"{path}: a decoder-only LM latency CSV, not a translation one (measured with an LM space)")
    if missing:
        raise DataError(f"{path}: not a latency CSV, missing column(s) {', '.join(missing)}")
    twice = sorted({c for c in header if header.count(c) > 1})
    if twice:  # which of the two columns would be read is a guess: refuse instead
        raise DataError(f"{path}: column(s) {', '.join(twice)} appear more than once in the header")
    col = {c: header.index(c) for c in header}
    has_cfg = "config" in col
    feats, enc, dec, cfgs, refs = [], [], [], [], []
    for k, ((lineno, _), row) in enumerate(zip(numbered[1:], rows[1:]), start=1):
        where = f"{path}: row {k} (line {lineno})"
        if not row or all(not x.strip() for x in row):
            continue
        if [x.strip() for x in row] == header:
            raise DataError(f"{where}: repeated header line (concatenated CSVs?)")
        if len(row) < len(header):
            raise DataError(f"{where}: truncated row ({len(row)} of {len(header)} fields)")
        if len(row) > len(header):
            raise DataError(f"{where}: row has {len(row)} fields, header has {len(header)}")
        feats.append([_float(where, c, row[col[c]]) for c in HAT_FEATURE_NAMES])
        lat = {c: _float(where, c, row[col[c]]) for c in LATENCY_COLUMNS}
        for c, v in lat.items():
            if v < 0 or (v == 0 and c.startswith("latency_mean")):
                why = "latencies must be positive" if c.startswith("latency_mean") else "a negative std"
                raise DataError(f"{where}: column {c} is {v:g} ({why})")
        enc.append(lat["latency_mean_encoder"])
        dec.append(lat["latency_mean_decoder"])
        if "reference_ms" in col:  # empty: measured without references
            text = row[col["reference_ms"]].strip()
            refs.append(_float(where, "reference_ms", text) if text else float("nan"))
            if refs[-1] <= 0:
                raise DataError(f"{where}: column reference_ms is {refs[-1]:g} (latencies must be positive)")
        if has_cfg:
            try:
                cfgs.append(SubConfig.from_dict(json.loads(row[col["config"]]), source=where))
            except (ValueError, RecursionError):  # malformed, or nested past the parser's depth
                raise DataError(f"{where}: column config is not JSON") from None
            except ConfigError as e:
                raise DataError(str(e)) from None
    if not enc:
        raise DataError(f"{path}: no data rows")
    dups = len(cfgs) - len({c.key() for c in cfgs})
    if dups:  # e.g. two `hat measure` runs appended to one file before writers were locked out
        log.warning("%s: %d row(s) repeat a config measured earlier in the file; each counts as a sample", path, dups)
    mp = meta_path(path)
    meta = read_json(mp, "latency CSV metadata", DataError) if mp.is_file() else {}
    check_fields(meta, {"space": str, "device": str, "protocol": dict}, str(mp), DataError)
    bad = [k for k, v in meta.get("protocol", {}).items() if k in ("src_len", "tgt_len", "beam", "vocab_size")
           and v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1)]
    if bad:
        raise DataError(f"{mp}: protocol {bad[0]} must be a positive integer")
    return LatencyData(str(path), np.array(feats, dtype=np.float64), np.array(enc), np.array(dec),
                       cfgs if has_cfg else None, meta, np.array(refs) if "reference_ms" in col else None)


def correct_drift(data: LatencyData) -> LatencyData:
    """Rows rescaled to the machine's typical speed: a row measured while the reference config
    took r ms is multiplied by median(r) / r (drift on a shared machine is mostly a common factor:
    other jobs slow every model alike). Needs the reference_ms column of `hat measure`."""
    ref = data.reference_ms
    if ref is None or np.isnan(ref).all():
        raise DataError(f"{data.path}: no drift reference (column reference_ms); measure with "
                        "`hat measure --reference-every K` to correct for drift")
    if np.isnan(ref).any():
        k = int(np.flatnonzero(np.isnan(ref))[0]) + 1
        raise DataError(f"{data.path}: row {k} has no reference_ms (measured with --reference-every 0?)")
    scale = float(np.median(ref)) / ref
    return LatencyData(data.path, data.hat_features, data.latency_encoder * scale, data.latency_decoder * scale,
                       data.configs, {**data.meta, "drift_corrected": True}, ref)


def check_rows_in_space(data: LatencyData, space: DesignSpace) -> None:
    """Refuse rows of another design space: a config outside `space`, or (HAT CSVs, which carry only
    averages) an embed dim / depth not among its choices or an average outside its choices' range."""
    if data.configs is not None:
        for k, c in enumerate(data.configs, start=1):
            try:
                space.validate(c, source=f"{data.path}: row {k}")
            except ConfigError as e:
                raise DataError(f"{e} (a row of another space?)") from None
        return
    ch = space.choices
    ranges = {"encoder_ffn_embed_dim_avg": ch["encoder_ffn_embed_dim"],
              "encoder_self_attention_heads_avg": ch["encoder_self_attention_heads"],
              "decoder_ffn_embed_dim_avg": ch["decoder_ffn_embed_dim"],
              "decoder_self_attention_heads_avg": ch["decoder_self_attention_heads"],
              "decoder_ende_attention_heads_avg": ch["decoder_ende_attention_heads"],
              "decoder_arbitrary_ende_attn_avg": [ende_attn_count(a) for a in ch["decoder_arbitrary_ende_attn"]]}
    for k, f in enumerate(data.hat_features, start=1):
        v = dict(zip(HAT_FEATURE_NAMES, f))
        for name in ("encoder_embed_dim", "decoder_embed_dim", "encoder_layer_num", "decoder_layer_num"):
            if round(v[name]) not in ch[name] or abs(v[name] - round(v[name])) > 1e-6:
                raise DataError(f"{data.path}: row {k}: {name}={v[name]:g} is not in space {space.name} "
                                f"(choices {list(ch[name])}; a row of another space?)")
        for name, vals in ranges.items():
            if not min(vals) - 1e-6 <= v[name] <= max(vals) + 1e-6:
                raise DataError(f"{data.path}: row {k}: {name}={v[name]:g} is outside space {space.name}'s "
                                f"range {min(vals)}-{max(vals)} (a row of another space?)")


class LatencyWriter:
    """Appends rows to our CSV, flushed and fsynced per row so an interrupted run loses at most
    the row in flight; `measured()` reports config keys already present for resuming.

    One writer per file: the file stays locked (an advisory `flock`) while open, so a second
    `hat measure` on it is refused instead of measuring every config twice. An existing file is
    checked before anything touches it: ours (our header) is repaired (a partial last line from a
    kill is dropped), anything else (notes, HAT's CSV) is refused and left as it is. A subclass
    writing other rows (decoder-only LMs) sets COLUMNS and `_key`."""

    COLUMNS: tuple[str, ...] = OUR_COLUMNS
    KIND = "SubConfig"

    def _key(self, d: Any, where: str) -> Any:
        """The resume key of a row's config (JSON-decoded)."""
        return SubConfig.from_dict(d, source=where).key()

    def _foreign(self, first: bytes) -> str | None:
        """Why a file whose first line is `first` (not our header) cannot be appended to, when known."""
        if first == ",".join(OLD_COLUMNS).encode():
            return (f"written by an older `hat measure` (no {', '.join(DRIFT_COLUMNS)} columns), so rows cannot be "
                    "appended to it; use another --out")
        if first.startswith(b"config,") and b"prompt_len" in first:
            return "a decoder-only LM latency CSV, not a translation one; use another --out"
        return None

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a+", newline="", encoding="utf-8")  # creates, never truncates
        try:
            _lock(self._f, self.path)
            self._check_and_repair()
        except BaseException:
            self._f.close()
            raise
        self._w = csv.writer(self._f)
        if self.path.stat().st_size == 0:
            self._w.writerow(self.COLUMNS)
            self._f.flush()

    def _check_and_repair(self) -> None:
        data = self.path.read_bytes()
        header = ",".join(self.COLUMNS).encode()
        first = data.split(b"\n", 1)[0].rstrip(b"\r")
        ours = first == header or (b"\n" not in data and header.startswith(data))  # or a header cut short
        foreign = None if ours else self._foreign(first)
        if data and foreign:
            raise DataError(f"{self.path}: {foreign}")
        if data and not ours:
            raise DataError(f"{self.path}: exists and is not a latency CSV written by `hat measure` (its first line "
                            "is not our header), so it is left as it is; use another --out")
        if data and not data.endswith(b"\n"):
            self._f.truncate(data.rfind(b"\n") + 1)  # the row (or header) a kill cut short

    def measured(self) -> set[tuple]:
        if self.path.stat().st_size == 0:
            return set()
        self._f.flush()
        with open(self.path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                return set()
            ci = header.index("config")
            keys = set()
            for i, row in enumerate(reader, start=2):
                if len(row) != len(header):
                    raise DataError(f"{self.path}:{i}: malformed row, cannot resume (fix or remove the file)")
                try:
                    keys.add(self._key(json.loads(row[ci]), f"{self.path}:{i}"))
                except (ValueError, TypeError, RecursionError):
                    raise DataError(f"{self.path}:{i}: column config is not a {self.KIND}, cannot resume "
                                    "(fix or remove the row)") from None
        return keys

    def write(self, cfg: SubConfig, hat_feats: dict[str, float], lat: dict[str, float], params: int, macs: int,
              peak_memory_bytes: int, reference_ms: float | None = None) -> None:
        row = [f"{hat_feats[c]:g}" for c in HAT_FEATURE_NAMES]
        row += [f"{lat[c]:.4f}" for c in LATENCY_COLUMNS]
        row += [json.dumps(cfg.to_dict(), separators=(",", ":")), params, macs, peak_memory_bytes]
        row += ["" if v is None else f"{v:.4f}" for v in (lat.get("latency_std_ms"), reference_ms)]
        self._w.writerow(row)
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()  # releases the lock

    def __enter__(self) -> "LatencyWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _lock(f: Any, path: Path) -> None:
    """Hold an exclusive advisory lock on the open file `f` (released when it is closed or the
    process dies, so a killed run leaves no stale lock); refuse when another process holds it."""
    try:
        import fcntl  # noqa: PLC0415  (POSIX; elsewhere files are not locked)
    except ImportError:
        return
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise DataError(f"{path}: another process is writing to it (`hat measure` holds its lock); wait for "
                        "it to finish or use another --out") from None
