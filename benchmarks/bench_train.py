"""Training throughput: the SuperTransformer (one shape fixed / uniform sampling) and its extracted
SubTransformer vs a plain `torch.nn.Transformer` of the same shape, on the same pre-collated
batches, in interleaved rounds (A B C D, A B C D, ...) so machine drift hits every variant alike.

    .venv/bin/python benchmarks/bench_train.py --data data/debian.de-en --rounds 5 --steps 10 --amp fp32

Prints target tokens/s per variant (median and range over rounds) and the per-round ratio to the
plain Transformer. The step is the same everywhere: forward, label-smoothed CE, backward, AdamW
step (data loading excluded). The shape is the space's largest with encoder-decoder attention on
the last encoder layer only, which is what nn.Transformer computes.
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
from dataclasses import replace

import torch
from torch import nn

from hat.data.batching import batch_by_tokens, collate
from hat.data.dataset import ParallelDataset
from hat.model import ModelArgs, SuperTransformer, extract
from hat.nn.blocks import sinusoidal_table
from hat.space import load_space
from hat.train import Sampler, build_optimizer, label_smoothed_nll_loss


class PlainTransformer(nn.Module):
    """nn.Transformer (post-norm, batch-first) with shared embeddings and sinusoidal positions."""

    def __init__(self, vocab: int, d: int, ffn: int, heads: int, enc: int, dec: int, pad: int, dropout: float) -> None:
        super().__init__()
        self.pad, self.d = pad, d
        self.emb = nn.Embedding(vocab, d, padding_idx=pad)
        nn.init.normal_(self.emb.weight, std=d**-0.5)
        self.register_buffer("pos", sinusoidal_table(1100, d, pad), persistent=False)
        self.tf = nn.Transformer(d, heads, enc, dec, ffn, dropout, batch_first=True)

    def _embed(self, tok: torch.Tensor) -> torch.Tensor:
        mask = tok.ne(self.pad).long()
        pos = torch.cumsum(mask, 1) * mask + self.pad
        return self.emb(tok) * self.d**0.5 + self.pos[pos]

    def forward(self, src: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        causal = nn.Transformer.generate_square_subsequent_mask(prev.size(1), dtype=torch.bool)
        h = self.tf(self._embed(src), self._embed(prev), tgt_mask=causal, src_key_padding_mask=src.eq(self.pad),
                    tgt_key_padding_mask=prev.eq(self.pad), memory_key_padding_mask=src.eq(self.pad), tgt_is_causal=True)
        return h @ self.emb.weight.t()


class Variant:
    """One model + its step, timed a few steps at a time so variants can alternate."""

    def __init__(self, name: str, model: nn.Module, step_fn, amp: torch.dtype | None) -> None:
        self.name, self.model, self.step_fn, self.amp = name, model, step_fn, amp
        self.opt = build_optimizer(model.parameters(), 5e-4, (0.9, 0.98), 1e-8, 0.0)
        self.tok_s: list[float] = []
        self.i = 0

    def steps(self, batches: list[dict], timed: bool = True) -> None:
        self.model.train()
        tok, t0 = 0, time.perf_counter()
        for b in batches:
            self.opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=self.amp, enabled=self.amp is not None):
                logits = self.step_fn(self.model, b, self.i)
            loss, _ = label_smoothed_nll_loss(logits, b["target"], 0.1, 1)
            (loss / b["ntokens"]).backward()
            self.opt.step()
            tok += b["ntokens"]
            self.i += 1
        assert math.isfinite(loss.item())
        if timed:
            self.tok_s.append(tok / (time.perf_counter() - t0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/debian.de-en")
    ap.add_argument("--space", default="tiny")
    ap.add_argument("--max-tokens", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per variant per round")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (A B C D, A B C D, ...)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--amp", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    amp = torch.bfloat16 if args.amp == "bf16" else None
    ds = ParallelDataset(args.data, "train")
    ids = batch_by_tokens(ds.src_sizes, ds.tgt_sizes, args.max_tokens, seed=1, epoch=1)[: args.warmup + args.steps]
    batches = [collate([ds[i] for i in b], ds.tgt_dict.pad, ds.tgt_dict.eos) for b in ids]
    space = load_space(args.space)
    margs = ModelArgs(len(ds.src_dict), len(ds.tgt_dict), dropout=0.1, attention_dropout=0.1)
    # nn.Transformer's shape: the largest widths and depths, encoder-decoder attention on the last layer only
    big = space.largest()
    plain_shape = replace(big, decoder_arbitrary_ende_attn=(-1,) * big.decoder_layer_num)
    sampler = Sampler(space, "uniform", seed=1)

    def super_step(cfg_of):
        return lambda m, b, i: m(b["src_tokens"], b["src_lengths"], b["prev_output_tokens"], cfg_of(i))

    variants = []
    torch.manual_seed(1)
    variants.append(Variant("plain nn.Transformer (largest shape)",
                            PlainTransformer(len(ds.src_dict), big.encoder_embed_dim, space.super_encoder_ffn_embed_dim,
                                             space.super_encoder_attention_heads, big.encoder_layer_num,
                                             big.decoder_layer_num, 1, 0.1),
                            lambda m, b, i: m(b["src_tokens"], b["prev_output_tokens"]), amp))
    torch.manual_seed(1)
    variants.append(Variant("SuperTransformer, that shape fixed", SuperTransformer(space, margs),
                            super_step(lambda i: plain_shape), amp))
    torch.manual_seed(1)
    variants.append(Variant("SubTransformer (extracted), that shape", extract(SuperTransformer(space, margs), plain_shape),
                            lambda m, b, i: m(b["src_tokens"], b["src_lengths"], b["prev_output_tokens"]), amp))
    torch.manual_seed(1)
    variants.append(Variant("SuperTransformer, uniform sampling", SuperTransformer(space, margs),
                            super_step(lambda i: sampler.configs(i + 1)[0]), amp))
    for v in variants:
        v.steps(batches[: args.warmup], timed=False)
    for _ in range(args.rounds):
        for v in variants:
            v.steps(batches[args.warmup:])
    ntok = sum(b["ntokens"] for b in batches[args.warmup:]) / args.steps
    print(f"space {space.name}, {args.rounds} interleaved rounds x {args.steps} steps (+{args.warmup} warm-up), "
          f"max_tokens {args.max_tokens} (~{ntok:.0f} target tokens/step), amp {args.amp}, "
          f"threads {torch.get_num_threads()}")
    print("| variant | target tokens/s, median [min-max] | vs plain, median [min-max] of per-round ratios |")
    print("|---|---:|---:|")
    base = variants[0].tok_s
    for v in variants:
        ratios = [a / b for a, b in zip(v.tok_s, base)]
        print(f"| {v.name} | {statistics.median(v.tok_s):,.0f} [{min(v.tok_s):,.0f}-{max(v.tok_s):,.0f}] | "
              f"{statistics.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}] |")


if __name__ == "__main__":
    main()
