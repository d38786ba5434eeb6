"""Greedy and beam search with a KV cache (encoder K/V computed once per layer).

Beam search follows fairseq's SequenceGenerator so that exported models decode alike:
the decoder starts from EOS, a hypothesis is scored by its summed log-probability over
`(length incl. EOS) ** lenpen`, only EOS among the top `beam` candidates finalizes, and a
sentence stops once `beam` hypotheses are finished. The length limit is per sentence:
`max_len_a * src_len + max_len_b` tokens, `src_len` counting the source EOS, so results do not
depend on how sentences are batched (fairseq computes it from the PADDED batch length; the two
agree at `fairseq-generate --batch-size 1`). `generate` decodes a whole corpus: batches sorted
by source length under a token budget, hypotheses returned in corpus order.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields
from typing import Sequence

import torch

from hat.model.transformer import EncoderDecoder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decoding:
    """The decoding options every translator takes, with HAT's defaults (fairseq's beam search at
    beam 4, lenpen 0.6): `generate`, `Translator.translate`, the exports' `generate`, `hat.evaluate`
    and the `hat translate` / `hat evaluate` flags all take their names and defaults from here."""

    beam: int = 4
    lenpen: float = 0.6  # score / len**lenpen
    max_len_a: float = 1.2  # output length limit: max_len_a * src_len + max_len_b
    max_len_b: int = 10
    max_tokens: int = 4096  # source tokens per batch, padded
    max_sentences: int | None = None  # sentences per batch (None: as many as max_tokens allows)


DECODING = tuple(f.name for f in fields(Decoding))  # the option names, in order


@dataclass
class Hypothesis:
    tokens: list[int]  # without the final EOS
    score: float  # length-normalised log-probability
    positional_scores: list[float]


def max_length(src_len: int, a: float, b: int, max_positions: int) -> int:
    """Most tokens (EOS not counted) a hypothesis of a `src_len`-token source may have."""
    return max(1, min(int(a * src_len + b), max_positions - 1))


def _max_lens(src_tokens: torch.Tensor, pad: int, a: float, b: int, max_positions: int) -> list[int]:
    return [max_length(n, a, b, max_positions) for n in src_tokens.ne(pad).sum(1).tolist()]


def _force_eos(lprobs: torch.Tensor, rows: torch.Tensor, eos: int) -> None:
    """At the length limit only EOS stays possible, keeping its true log-probability (as fairseq)."""
    if bool(rows.any()):
        eos_lp = lprobs[rows, eos].clone()
        lprobs[rows] = -math.inf
        lprobs[rows, eos] = eos_lp


@torch.no_grad()
def greedy_search(
    model: EncoderDecoder,
    src_tokens: torch.Tensor,
    src_lengths: torch.Tensor | None = None,
    *,
    eos: int = 2,
    pad: int = 1,
    max_len_a: float = Decoding.max_len_a,
    max_len_b: int = Decoding.max_len_b,
) -> list[Hypothesis]:
    """Batched greedy decoding; returns one hypothesis per source sentence."""
    model.eval()
    bsz = src_tokens.size(0)
    enc = model.encode(src_tokens, src_lengths)
    max_lens = _max_lens(src_tokens, pad, max_len_a, max_len_b, model.args.max_positions)
    limit = torch.tensor(max_lens, device=src_tokens.device)
    tokens = torch.full((bsz, 1), eos, dtype=torch.long, device=src_tokens.device)
    done = torch.zeros(bsz, dtype=torch.bool, device=src_tokens.device)
    logps: list[torch.Tensor] = []
    cache: list[dict] = []
    for step in range(max(max_lens) + 1):
        lprobs = model.decode_step(tokens, enc, cache)
        lprobs[:, pad] = -math.inf
        if step == 0:
            lprobs[:, eos] = -math.inf  # fairseq's min_len=1: no empty output
        _force_eos(lprobs, limit.le(step), eos)
        lp, nxt = lprobs.max(dim=-1)
        nxt = nxt.masked_fill(done, pad)
        tokens = torch.cat([tokens, nxt.unsqueeze(1)], dim=1)
        logps.append(lp)
        done |= nxt.eq(eos)
        if bool(done.all()):
            break
    out = []
    lp_all = torch.stack(logps, dim=1)
    for i in range(bsz):
        seq = tokens[i, 1:].tolist()
        n = seq.index(eos) if eos in seq else len(seq)
        scores = lp_all[i, : n + 1].tolist()
        out.append(Hypothesis(seq[:n], sum(scores) / max(1, n + 1), scores))
    return out


@torch.no_grad()
def beam_search(
    model: EncoderDecoder,
    src_tokens: torch.Tensor,
    src_lengths: torch.Tensor | None = None,
    *,
    beam: int = 4,
    lenpen: float = 1.0,
    eos: int = 2,
    pad: int = 1,
    max_len_a: float = Decoding.max_len_a,
    max_len_b: int = Decoding.max_len_b,
    nbest: int = 1,
) -> list[list[Hypothesis]]:
    """Batched beam search; returns the `nbest` best hypotheses per source sentence."""
    model.eval()
    device = src_tokens.device
    bsz = src_tokens.size(0)
    max_lens = _max_lens(src_tokens, pad, max_len_a, max_len_b, model.args.max_positions)
    enc = model.encode(src_tokens, src_lengths)
    rows = torch.arange(bsz, device=device).repeat_interleave(beam)
    enc = enc.reorder(rows)
    active = list(range(bsz))  # sentence ids still decoding, in row-block order
    tokens = torch.full((bsz * beam, 1), eos, dtype=torch.long, device=device)
    scores = torch.zeros(bsz * beam, device=device)
    pos_scores = torch.zeros(bsz * beam, 0, device=device)
    finished: list[list[Hypothesis]] = [[] for _ in range(bsz)]
    cache: list[dict] = []
    step = 0
    while active:
        n = len(active)
        lprobs = model.decode_step(tokens, enc, cache)
        V = lprobs.size(-1)
        lprobs[:, pad] = -math.inf
        if step == 0:
            lprobs[:, eos] = -math.inf
        limit = torch.tensor([max_lens[s] for s in active], device=device).repeat_interleave(beam)
        _force_eos(lprobs, limit.le(step), eos)
        cand = scores.unsqueeze(1) + lprobs  # (n*beam, V)
        if step == 0:  # all beams are identical: expand only the first
            cand = cand.view(n, beam, V)
            cand[:, 1:, :] = -math.inf
        cand = cand.view(n, beam * V)
        k = min(2 * beam, cand.size(1))
        top_scores, top_idx = cand.topk(k, dim=1)
        top_beam, top_tok = top_idx // V, top_idx % V
        keep_rows, keep_tok, keep_scores, still = [], [], [], []
        top_scores_l, top_beam_l, top_tok_l = top_scores.tolist(), top_beam.tolist(), top_tok.tolist()
        for j, sent in enumerate(active):
            chosen: list[tuple[int, int, float]] = []
            for r in range(k):
                sc, b, t = top_scores_l[j][r], top_beam_l[j][r], top_tok_l[j][r]
                if sc == -math.inf:
                    continue
                row = j * beam + b
                if t == eos:
                    if r < beam and len(finished[sent]) < beam:
                        ps = pos_scores[row].tolist() + [sc - scores[row].item()]
                        finished[sent].append(Hypothesis(tokens[row, 1:].tolist(), sc / (step + 1) ** lenpen, ps))
                elif len(chosen) < beam:
                    chosen.append((row, t, sc))
            if len(finished[sent]) >= beam or not chosen:
                continue
            while len(chosen) < beam:  # fewer live candidates than beams (tiny vocab): repeat the best
                chosen.append(chosen[0])
            still.append(sent)
            for row, t, sc in chosen:
                keep_rows.append(row)
                keep_tok.append(t)
                keep_scores.append(sc)
        if not still:
            break
        order = torch.tensor(keep_rows, device=device)
        new_tok = torch.tensor(keep_tok, device=device)
        new_scores = torch.tensor(keep_scores, device=device, dtype=scores.dtype)
        step_lp = new_scores - scores.index_select(0, order)
        pos_scores = torch.cat([pos_scores.index_select(0, order), step_lp.unsqueeze(1)], dim=1)
        tokens = torch.cat([tokens.index_select(0, order), new_tok.unsqueeze(1)], dim=1)
        scores = new_scores
        # beams move within their sentence: the encoder-decoder K/V (the same for all beams of a
        # sentence) need gathering only when finished sentences leave the batch
        model.reorder_cache(cache, order, cross=len(still) != n)
        if len(still) != n and not cache:  # after the first step the cache holds all the decoder reads
            enc = enc.reorder(order)
        active = still
        step += 1
    return [sorted(f, key=lambda h: -h.score)[:nbest] for f in finished]


# ---- over a corpus ---------------------------------------------------------------------------
def model_device(model) -> torch.device:
    """Where `model` computes: its `device` attribute (runtimes that duck-type `EncoderDecoder`,
    e.g. ONNX Runtime's), else its parameters' device."""
    device = getattr(model, "device", None)
    return device if isinstance(device, torch.device) else next(model.parameters()).device


def length_sorted_batches(lengths: Sequence[int], max_tokens: int, max_sentences: int | None) -> list[list[int]]:
    """Indices sorted by length (longest first, stable), cut so `n * max_len <= max_tokens`."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    cur_max = 0
    for i in order:
        n = lengths[i]
        new_max = max(cur_max, n)
        if cur and ((len(cur) + 1) * new_max > max_tokens or (max_sentences and len(cur) >= max_sentences)):
            batches.append(cur)
            cur, new_max = [], n
        cur.append(i)
        cur_max = new_max
    if cur:
        batches.append(cur)
    return batches


def left_pad(seqs: Sequence[torch.Tensor], pad: int) -> torch.Tensor:
    """One (B, max_len) batch, sequences right-aligned after `pad` (fairseq's source padding)."""
    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), pad, dtype=torch.long)
    for r, s in enumerate(seqs):
        out[r, width - len(s):] = s
    return out


def truncate_sources(sources: Sequence[torch.Tensor], max_positions: int, eos: int = 2,
                     what: str = "generate") -> list[torch.Tensor]:
    """Sources cut to the model's `max_positions` (their first tokens, then EOS), with a warning
    that counts them: generation translates every sentence, so where training, validation and
    scoring skip an over-long pair, decoding truncates its source."""
    long = [i for i, s in enumerate(sources) if len(s) > max_positions]
    if not long:
        return list(sources)
    log.warning("%s: truncated %d source(s) longer than max_positions=%d tokens", what, len(long), max_positions)
    out = list(sources)
    for i in long:
        out[i] = torch.cat([out[i][: max_positions - 1], out[i].new_tensor([eos])])
    return out


@torch.no_grad()
def generate(
    model: EncoderDecoder,
    sources: Sequence[torch.Tensor],
    *,
    beam: int = Decoding.beam,
    lenpen: float = Decoding.lenpen,
    max_len_a: float = Decoding.max_len_a,
    max_len_b: int = Decoding.max_len_b,
    max_tokens: int = Decoding.max_tokens,
    max_sentences: int | None = Decoding.max_sentences,
    pad: int = 1,
    eos: int = 2,
    progress: bool = True,
    desc: str = "generate",
) -> list[list[int]]:
    """Best hypothesis (token ids, no EOS) for each source (ids ending in EOS), in input order."""
    from tqdm import tqdm

    model.eval()
    device = model_device(model)
    sources = truncate_sources(sources, model.args.max_positions, eos, desc)
    lengths = [len(s) for s in sources]
    batches = length_sorted_batches(lengths, max_tokens, max_sentences)
    out: list[list[int] | None] = [None] * len(sources)
    bar = tqdm(total=len(sources), desc=desc, unit="sent", disable=None if progress else True, leave=False)
    for idx in batches:
        src = left_pad([sources[i] for i in idx], pad).to(device)
        src_lengths = torch.tensor([lengths[i] for i in idx], device=device)
        kw = dict(eos=eos, pad=pad, max_len_a=max_len_a, max_len_b=max_len_b)
        if beam <= 1:
            hyps = [h.tokens for h in greedy_search(model, src, src_lengths, **kw)]
        else:
            hyps = [h[0].tokens for h in beam_search(model, src, src_lengths, beam=beam, lenpen=lenpen, **kw)]
        for i, h in zip(idx, hyps):
            out[i] = [t for t in h if t != eos]
        bar.update(len(idx))
    bar.close()
    return out  # type: ignore[return-value]
