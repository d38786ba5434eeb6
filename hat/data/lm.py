"""Next-token data for decoder-only LMs: monolingual text as one token stream cut into blocks.

The text is a monolingual `hat prepare mono` directory (`task: lm`), or one side of a parallel
`hat prepare` directory (the target side by default: English for the Debian corpus and the
bundled sample), already SentencePiece-tokenized and binarized with EOS after every sentence; the sentences are concatenated, EOS kept as the separator, and cut into
non-overlapping blocks of `context` inputs, each paired with the same positions shifted by one
(nanoGPT's layout). The last tokens that do not fill a block are left out.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from hat.data.dataset import IndexedDataset, load_data, read_meta
from hat.data.dictionary import Dictionary
from hat.errors import DataError


def lm_side(data_dir: str | Path, lang: str | None = None) -> tuple[str, Dictionary]:
    """The language an LM reads from a prepared directory (default: an LM directory's language,
    a parallel directory's target side) and its dictionary."""
    data_dir = Path(data_dir)
    if read_meta(data_dir).get("task") == "lm":
        meta = read_meta(data_dir, ("lang",))
        if lang not in (None, meta["lang"]):
            raise DataError(f"{data_dir}: no language {lang!r} (it holds {meta['lang']})")
        return meta["lang"], Dictionary.load(data_dir / f"dict.{meta['lang']}.txt")
    meta, src_dict, tgt_dict = load_data(data_dir)
    lang = lang or meta["tgt"]
    if lang not in (meta["src"], meta["tgt"]):
        raise DataError(f"{data_dir}: no language {lang!r} (it holds {meta['src']} and {meta['tgt']})")
    return lang, tgt_dict if lang == meta["tgt"] else src_dict


def token_stream(data_dir: str | Path, split: str, lang: str | None = None) -> tuple[np.ndarray, Dictionary]:
    """Every sentence of `split` in language `lang` (see `lm_side`) concatenated, and that
    side's dictionary."""
    lang, dictionary = lm_side(data_dir, lang)
    ds = IndexedDataset(Path(data_dir) / f"{split}.{lang}")
    stream = np.asarray(ds.data, dtype=np.int64)
    if len(stream) and int(stream.max()) >= len(dictionary):
        raise DataError(f"{ds.path}.bin: token id {int(stream.max())} outside the dictionary ({len(dictionary)})")
    return stream, dictionary


class LMBlocks:
    """Fixed-length (input, target) blocks over a token stream: block i is
    `stream[i * context : (i + 1) * context]` and the same positions shifted by one."""

    def __init__(self, stream: np.ndarray | torch.Tensor, context: int, vocab_size: int | None = None,
                 source: str = "stream") -> None:
        if context < 1:
            raise DataError(f"{source}: context {context} is below 1")
        self.stream = torch.as_tensor(np.asarray(stream), dtype=torch.long)
        self.context = context
        self.dictionary: Dictionary | None = None  # the stream's, when read from a prepared directory
        if len(self) == 0:
            raise DataError(f"{source}: {len(self.stream)} tokens do not fill one block of {context} + 1")
        if vocab_size is not None and int(self.stream.max()) >= vocab_size:
            raise DataError(f"{source}: token id {int(self.stream.max())} outside the model's vocabulary of "
                            f"{vocab_size} (the space's vocab_size must cover the dictionary)")

    @classmethod
    def from_data(cls, data_dir: str | Path, split: str, context: int, vocab_size: int | None = None,
                  lang: str | None = None) -> "LMBlocks":
        """Blocks of one split of a `hat prepare` directory (`dictionary` set to its side's); with
        `vocab_size` (the model's), a dictionary larger than the model's vocabulary is refused."""
        stream, dictionary = token_stream(data_dir, split, lang)
        if vocab_size is not None and len(dictionary) > vocab_size:
            raise DataError(f"{data_dir}: its dictionary has {len(dictionary)} symbols, more than the model's "
                            f"vocabulary of {vocab_size}")
        blocks = cls(stream, context, vocab_size, source=f"{data_dir} ({split})")
        blocks.dictionary = dictionary
        return blocks

    def __len__(self) -> int:
        return max(0, (len(self.stream) - 1) // self.context)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        chunk = self.stream[i * self.context: (i + 1) * self.context + 1]
        return chunk[:-1], chunk[1:]

    @property
    def num_tokens(self) -> int:
        """Targets over all blocks (what a perplexity averages over)."""
        return len(self) * self.context

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 1, limit: int | None = None
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(input, target) batches (B, context) of the first `limit` blocks (all by default); the
        order is seeded when shuffled, so the same seed gives the same batches."""
        if batch_size < 1:
            raise DataError(f"batch size {batch_size} is below 1")
        order = list(range(len(self) if limit is None else min(limit, len(self))))
        if shuffle:
            random.Random(seed).shuffle(order)
        for i in range(0, len(order), batch_size):
            xs, ys = zip(*(self[j] for j in order[i:i + batch_size]))
            yield torch.stack(xs), torch.stack(ys)
