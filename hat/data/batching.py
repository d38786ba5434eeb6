"""Token-budget batching and padding into model inputs (fairseq's conventions).

`collate` pads the SOURCE ON THE LEFT (so the last source token sits at the same
position in every row) and the target on the right; `prev_output_tokens` is the target
shifted right with EOS as the first token (teacher forcing): for a target
`[t1, ..., tn, eos]` it is `[eos, t1, ..., tn]`.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch

log = logging.getLogger(__name__)


def batch_by_tokens(
    src_sizes: Sequence[int] | np.ndarray,
    tgt_sizes: Sequence[int] | np.ndarray,
    max_tokens: int,
    *,
    max_sentences: int | None = None,
    seed: int = 1,
    epoch: int = 1,
    shuffle: bool = True,
    required_multiple: int = 1,
    skip_too_long: bool = True,
    max_positions: int | None = None,
    what: str = "",
) -> list[list[int]]:
    """Group indices into batches whose padded size `n * max_len` stays <= `max_tokens`.

    Examples are sorted by length (ties broken by a seeded shuffle) so each batch wastes
    little padding; the batch ORDER is shuffled by an RNG derived from `(seed, epoch)`,
    so the schedule is reproducible per epoch. An example longer than `max_tokens` is
    dropped (`skip_too_long`, with a logged count) or put in a batch of its own.
    An example with a side longer than `max_positions` (the model's position table) is always
    dropped and counted in a warning naming `what`: training, validation and the search's loss
    scorer all filter over-long pairs here (generation truncates the source instead).
    Batch sizes are kept a multiple of `required_multiple` except for the last ones.
    """
    src = np.asarray(src_sizes, dtype=np.int64)
    tgt = np.asarray(tgt_sizes, dtype=np.int64)
    if src.shape != tgt.shape:
        raise ValueError(f"src_sizes ({len(src)}) and tgt_sizes ({len(tgt)}) differ in length")
    if max_tokens < 1:
        raise ValueError("max_tokens must be >= 1")
    size = np.maximum(src, tgt)
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(size)) if shuffle else np.arange(len(size))
    order = order[np.lexsort((src[order], tgt[order]))] if len(order) else order

    batches: list[list[int]] = []
    too_long: list[int] = []
    cur: list[int] = []
    cur_max = 0
    if max_positions is not None:
        fits = size[order] <= max_positions
        if not fits.all():
            log.warning("%sskipped %d pair(s) longer than max_positions=%d tokens", f"{what}: " if what else "",
                        int((~fits).sum()), max_positions)
            order = order[fits]
    for i in order.tolist():
        n = int(size[i])
        if n > max_tokens:
            too_long.append(i)
            continue
        new_max = max(cur_max, n)
        full_tokens = (len(cur) + 1) * new_max > max_tokens
        full_sents = max_sentences is not None and len(cur) + 1 > max_sentences
        if cur and (full_tokens or full_sents):
            # cut at a multiple of required_multiple; the remainder starts the next batch
            keep = len(cur) - (len(cur) % required_multiple) if len(cur) >= required_multiple else len(cur)
            batches.append(cur[:keep])
            cur = cur[keep:]
            cur_max = int(size[cur].max()) if cur else 0
            new_max = max(cur_max, n)
        cur.append(i)
        cur_max = new_max
    if cur:
        batches.append(cur)
    if too_long:
        if skip_too_long:
            log.warning("batch_by_tokens: skipped %d example(s) longer than max_tokens=%d", len(too_long), max_tokens)
        else:
            batches.extend([i] for i in too_long)
    if shuffle:
        perm = rng.permutation(len(batches))
        batches = [batches[j] for j in perm]
    return batches


def _pad(seqs: Sequence[torch.Tensor], pad_idx: int, left: bool) -> torch.Tensor:
    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), pad_idx, dtype=torch.long)
    for r, s in enumerate(seqs):
        if left:
            out[r, width - len(s):] = s
        else:
            out[r, :len(s)] = s
    return out


def collate(samples: Sequence[dict], pad_idx: int, eos_idx: int) -> dict:
    """Pad a list of `{"id", "source", "target"}` into a batch, in the given order.

    Returns `id` (B,), `src_tokens` (B,S) left-padded, `src_lengths` (B,),
    `prev_output_tokens` (B,T) = [eos, t1..t_{n-1}] right-padded, `target` (B,T)
    right-padded, `ntokens` (non-pad target tokens) and `nsentences`.
    """
    if not samples:
        return {}
    src = [torch.as_tensor(s["source"], dtype=torch.long) for s in samples]
    tgt = [torch.as_tensor(s["target"], dtype=torch.long) for s in samples]
    prev = [torch.cat([torch.tensor([eos_idx]), t[:-1]]) if len(t) else t for t in tgt]
    return {
        "id": torch.tensor([int(s["id"]) for s in samples], dtype=torch.long),
        "nsentences": len(samples),
        "ntokens": int(sum(len(t) for t in tgt)),
        "src_tokens": _pad(src, pad_idx, left=True),
        "src_lengths": torch.tensor([len(s) for s in src], dtype=torch.long),
        "prev_output_tokens": _pad(prev, pad_idx, left=False),
        "target": _pad(tgt, pad_idx, left=False),
    }
