"""Data pipeline: corpus builders, SentencePiece tokenizer, binarized datasets, batching.

`hat prepare` (see `hat.data.prepare`) writes a directory with `raw/` text, a joint
`spm.model`, fairseq-format `dict.*.txt`, `{split}.{lang}.bin/.idx` and `meta.json`;
`ParallelDataset` + `batch_by_tokens` + `collate` turn it into model batches; `LMBlocks` turns
one side of it into next-token blocks for decoder-only LMs.
"""
from hat.data.batching import batch_by_tokens, collate
from hat.data.dataset import IndexedDataset, ParallelDataset, load_data, write_indexed
from hat.data.dictionary import Dictionary
from hat.data.lm import LMBlocks, token_stream
from hat.data.tokenizer import Tokenizer, train_spm

__all__ = [
    "Dictionary", "Tokenizer", "train_spm", "IndexedDataset", "ParallelDataset", "load_data",
    "write_indexed", "batch_by_tokens", "collate", "LMBlocks", "token_stream",
]
