"""Binarized datasets: memory-mapped token ids (`.bin` int32) with offsets (`.idx` int64)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from hat.data.dictionary import Dictionary
from hat.errors import DataError
from hat.files import atomic_open, atomic_write_bytes

BIN_DTYPE = np.int32
IDX_DTYPE = np.int64


def write_indexed(prefix: str | Path, seqs: Iterable[Sequence[int]]) -> int:
    """Write `prefix.bin` (concatenated ids) and `prefix.idx` (n+1 offsets); return n."""
    prefix = Path(prefix)
    offsets = [0]
    with atomic_open(f"{prefix}.bin", "wb") as f:
        for s in seqs:
            a = np.asarray(s, dtype=BIN_DTYPE)
            f.write(a.tobytes())
            offsets.append(offsets[-1] + len(a))
    atomic_write_bytes(f"{prefix}.idx", np.asarray(offsets, dtype=IDX_DTYPE).tobytes())
    return len(offsets) - 1


class IndexedDataset:
    """Random access to the sentences of one binarized file without loading it."""

    def __init__(self, prefix: str | Path) -> None:
        prefix = str(prefix)
        bin_path, idx_path = Path(prefix + ".bin"), Path(prefix + ".idx")
        for p in (bin_path, idx_path):
            if not p.is_file():
                raise DataError(f"{p}: file not found")
        if idx_path.stat().st_size % 8 or idx_path.stat().st_size < 8:
            raise DataError(f"{idx_path}: corrupt index (size {idx_path.stat().st_size} is not n+1 int64 offsets)")
        self.offsets = np.fromfile(idx_path, dtype=IDX_DTYPE)
        nbytes = bin_path.stat().st_size
        if nbytes % 4:
            raise DataError(f"{bin_path}: corrupt data (size {nbytes} is not a multiple of 4)")
        if self.offsets[0] != 0 or np.any(np.diff(self.offsets) < 0) or self.offsets[-1] != nbytes // 4:
            raise DataError(f"{idx_path}: offsets do not match {bin_path.name} ({nbytes // 4} tokens)")
        self.data = np.memmap(bin_path, dtype=BIN_DTYPE, mode="r") if nbytes else np.zeros(0, BIN_DTYPE)
        self.sizes = np.diff(self.offsets).astype(np.int64)
        self.path = prefix

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, i: int) -> torch.Tensor:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i = i % len(self)
        return torch.from_numpy(np.array(self.data[self.offsets[i]:self.offsets[i + 1]], dtype=np.int64))


def read_meta(data_dir: str | Path, keys: tuple[str, ...] = ()) -> dict:
    """`meta.json` of a prepared directory: a JSON object holding `keys`; errors name the file."""
    mpath = Path(data_dir) / "meta.json"
    if not mpath.is_file():
        raise DataError(f"{mpath}: not found (is {data_dir} the output of `hat prepare`?)")
    try:
        meta = json.loads(mpath.read_text(encoding="utf-8"))
        for k in keys:
            meta[k]  # noqa: B018  (a missing key, or not an object: corrupt)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{mpath}: corrupt metadata ({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{mpath}: corrupt metadata (a JSON {type(meta).__name__}, not an object)")
    return meta


def load_data(data_dir: str | Path) -> tuple[dict, Dictionary, Dictionary]:
    """`(meta, src_dict, tgt_dict)` of a prepared translation directory (see `hat prepare`); a
    decoder-only LM directory (`task: lm`, one language) is refused in one line."""
    data_dir = Path(data_dir)
    if read_meta(data_dir).get("task") == "lm":
        raise DataError(f"{data_dir}: a decoder-only LM data directory (monolingual, `hat prepare mono`), "
                        "not a parallel one for translation")
    meta = read_meta(data_dir, ("src", "tgt"))
    src, tgt = meta["src"], meta["tgt"]
    return meta, Dictionary.load(data_dir / f"dict.{src}.txt"), Dictionary.load(data_dir / f"dict.{tgt}.txt")


class ParallelDataset:
    """Source/target pairs of one split, with their dictionaries and origin tags."""

    def __init__(self, data_dir: str | Path, split: str) -> None:
        self.data_dir = Path(data_dir)
        self.meta, self.src_dict, self.tgt_dict = load_data(self.data_dir)
        self.src_lang, self.tgt_lang = self.meta["src"], self.meta["tgt"]
        self.split = split
        self.src = IndexedDataset(self.data_dir / f"{split}.{self.src_lang}")
        self.tgt = IndexedDataset(self.data_dir / f"{split}.{self.tgt_lang}")
        if len(self.src) != len(self.tgt):
            raise DataError(f"{self.src.path}.idx has {len(self.src)} sentences but "
                            f"{self.tgt.path}.idx has {len(self.tgt)}")
        for name, d, ds in (("src", self.src_dict, self.src), ("tgt", self.tgt_dict, self.tgt)):
            if len(ds.data) and int(np.max(ds.data)) >= len(d):
                raise DataError(f"{ds.path}.bin: token id {int(np.max(ds.data))} outside the {name} dictionary ({len(d)})")
        self.origins = self._read_origins()

    def _read_origins(self) -> list[str] | None:
        p = self.data_dir / "raw" / f"{self.split}.origin"
        if not p.is_file():
            return None
        tags = p.read_text(encoding="utf-8").splitlines()
        if len(tags) != len(self.src):
            raise DataError(f"{p} has {len(tags)} lines but the {self.split} split has {len(self.src)} sentences")
        return tags

    @property
    def src_sizes(self) -> np.ndarray:
        return self.src.sizes

    @property
    def tgt_sizes(self) -> np.ndarray:
        return self.tgt.sizes

    def __len__(self) -> int:
        return len(self.src)

    def __getitem__(self, i: int) -> dict:
        return {"id": i, "source": self.src[i], "target": self.tgt[i]}

    def num_tokens(self, i: int) -> int:
        """Cost of example `i` in a token budget: the longer side."""
        return int(max(self.src.sizes[i], self.tgt.sizes[i]))
