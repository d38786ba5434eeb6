"""Training throughput: SuperTransformer (uniform sampling / largest subnet fixed) vs a plain
`torch.nn.Transformer` of the largest shape, on the same pre-collated batches.

    .venv/bin/python benchmarks/bench_train.py --data data/debian.de-en --steps 20 --amp fp32

Prints target tokens/s per variant and the ratio to the plain Transformer. The step is the
same everywhere: forward, label-smoothed CE, backward, AdamW step (data loading excluded).
"""
from __future__ import annotations

import argparse
import math
import time

import torch
from torch import nn

from hat.data.batching import batch_by_tokens, collate
from hat.data.dataset import ParallelDataset
from hat.model import ModelArgs, SuperTransformer
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


def run(name: str, model: nn.Module, step_fn, batches: list[dict], warmup: int, amp: torch.dtype | None) -> dict:
    opt = build_optimizer(model.parameters(), 5e-4, (0.9, 0.98), 1e-8, 0.0)
    model.train()
    tok, t0 = 0, 0.0
    for i, b in enumerate(batches):
        if i == warmup:
            t0, tok = time.perf_counter(), 0
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
            logits = step_fn(model, b, i)
        loss, _ = label_smoothed_nll_loss(logits, b["target"], 0.1, 1)
        (loss / b["ntokens"]).backward()
        opt.step()
        tok += b["ntokens"]
    dt = time.perf_counter() - t0
    return {"name": name, "tok_s": tok / dt, "s_per_step": dt / (len(batches) - warmup), "loss": loss.item() / b["ntokens"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/debian.de-en")
    ap.add_argument("--space", default="tiny")
    ap.add_argument("--max-tokens", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per variant")
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
    big = space.largest()
    sampler = Sampler(space, "uniform", seed=1)

    def super_step(cfg_of):
        return lambda m, b, i: m(b["src_tokens"], b["src_lengths"], b["prev_output_tokens"], cfg_of(i))

    results = []
    torch.manual_seed(1)
    results.append(run("plain nn.Transformer (largest shape)",
                       PlainTransformer(len(ds.src_dict), big.encoder_embed_dim, space.super_encoder_ffn_embed_dim,
                                        space.super_encoder_attention_heads, big.encoder_layer_num, big.decoder_layer_num,
                                        1, 0.1),
                       lambda m, b, i: m(b["src_tokens"], b["prev_output_tokens"]), batches, args.warmup, amp))
    torch.manual_seed(1)
    results.append(run("SuperTransformer, largest fixed", SuperTransformer(space, margs),
                       super_step(lambda i: big), batches, args.warmup, amp))
    torch.manual_seed(1)
    results.append(run("SuperTransformer, uniform sampling", SuperTransformer(space, margs),
                       super_step(lambda i: sampler.configs(i + 1)[0]), batches, args.warmup, amp))
    base = results[0]["tok_s"]
    ntok = sum(b["ntokens"] for b in batches[args.warmup:]) / args.steps
    print(f"space {space.name}, {args.steps} timed steps (+{args.warmup} warm-up), max_tokens {args.max_tokens} "
          f"(~{ntok:.0f} target tokens/step), amp {args.amp}, threads {torch.get_num_threads()}")
    print(f"| variant | target tokens/s | s/step | vs plain |\n|---|---:|---:|---:|")
    for r in results:
        print(f"| {r['name']} | {r['tok_s']:,.0f} | {r['s_per_step']:.3f} | {r['tok_s'] / base:.2f} |")
    assert all(math.isfinite(r["loss"]) for r in results)


if __name__ == "__main__":
    main()
