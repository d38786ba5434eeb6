"""Weight-sharing overhead and decoding speed, measured in one run.

(a) SuperTransformer configured to its largest SubConfig, (b) the extracted SubTransformer of
the same config, (c) `torch.nn.Transformer` of the same shape (naive re-decode loop, and a loop
that caches each layer's inputs so only the newest position is recomputed).

    python benchmarks/bench_model.py [--space tiny] [--vocab 8000] [--threads 2]
"""
from __future__ import annotations

import argparse
import math
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from hat.model import ModelArgs, SuperTransformer, extract
from hat.nn.blocks import sinusoidal_table
from hat.space import load_space

PAD, EOS = 1, 2


class TorchTransformer(nn.Module):
    """The baseline: nn.Transformer with the same embeddings, positions and tied output."""

    def __init__(self, vocab: int, d: int, heads: int, ffn: int, enc_layers: int, dec_layers: int, dropout: float):
        super().__init__()
        self.d = d
        self.embed = nn.Embedding(vocab, d, padding_idx=PAD)
        nn.init.normal_(self.embed.weight, std=d**-0.5)
        self.register_buffer("pos", sinusoidal_table(1100, d, PAD), persistent=False)
        self.tf = nn.Transformer(d, heads, enc_layers, dec_layers, ffn, dropout, batch_first=True)

    def _emb(self, tokens: torch.Tensor, start: int = 0) -> torch.Tensor:
        pos = torch.arange(start, start + tokens.size(1)) + PAD + 1
        return self.embed(tokens) * math.sqrt(self.d) + self.pos[pos]

    def encode(self, src: torch.Tensor) -> torch.Tensor:
        return self.tf.encoder(self._emb(src), src_key_padding_mask=src.eq(PAD))

    def forward(self, src: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        mem = self.encode(src)
        mask = nn.Transformer.generate_square_subsequent_mask(prev.size(1))
        h = self.tf.decoder(self._emb(prev), mem, tgt_mask=mask, tgt_is_causal=True, memory_key_padding_mask=src.eq(PAD))
        return F.linear(h, self.embed.weight)

    def step_naive(self, prev: torch.Tensor, mem: torch.Tensor) -> torch.Tensor:
        mask = nn.Transformer.generate_square_subsequent_mask(prev.size(1))
        h = self.tf.decoder(self._emb(prev), mem, tgt_mask=mask, tgt_is_causal=True)
        return F.linear(h[:, -1], self.embed.weight)

    def step_cached(self, tok: torch.Tensor, step: int, mem: torch.Tensor, cache: list) -> torch.Tensor:
        """Each layer keeps the inputs of earlier positions; only the newest query is computed."""
        x = self._emb(tok, start=step)
        for i, layer in enumerate(self.tf.decoder.layers):
            cache[i] = x if cache[i] is None else torch.cat([cache[i], x], dim=1)
            kv = cache[i]
            x = layer.norm1(x + layer.self_attn(x, kv, kv, need_weights=False)[0])
            x = layer.norm2(x + layer.multihead_attn(x, mem, mem, need_weights=False)[0])
            x = layer.norm3(x + layer.linear2(F.relu(layer.linear1(x))))
        x = self.tf.decoder.norm(x)
        return F.linear(x[:, -1], self.embed.weight)


def timeit(fn, warmup: int, reps: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def make_batch(bsz: int, slen: int, tlen: int, vocab: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, vocab, (bsz, slen), generator=g)
    src[:, -1] = EOS
    tgt = torch.randint(4, vocab, (bsz, tlen), generator=g)
    tgt[:, -1] = EOS
    prev = torch.cat([torch.full((bsz, 1), EOS), tgt[:, :-1]], dim=1)
    return src, prev, tgt


def train_throughput(forward, params, batch, reps: int) -> float:
    src, prev, tgt = batch
    opt = torch.optim.Adam(params, lr=1e-4, betas=(0.9, 0.98))

    def step():
        opt.zero_grad(set_to_none=True)
        logits = forward(src, prev)
        F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt.reshape(-1)).backward()
        opt.step()

    return tgt.numel() / timeit(step, 2, reps)


@torch.no_grad()
def decode_ours(model, src: torch.Tensor, steps: int) -> None:
    enc = model.encode(src)
    prev = torch.full((1, 1), EOS)
    cache: list = []
    for _ in range(steps):
        nxt = model.decode_step(prev, enc, cache).argmax(-1, keepdim=True)
        prev = torch.cat([prev, nxt], dim=1)


@torch.no_grad()
def decode_torch(model: TorchTransformer, src: torch.Tensor, steps: int, cached: bool) -> None:
    mem = model.encode(src)
    prev = torch.full((1, 1), EOS)
    cache: list = [None] * len(model.tf.decoder.layers)
    for t in range(steps):
        logits = model.step_cached(prev[:, -1:], t, mem, cache) if cached else model.step_naive(prev, mem)
        prev = torch.cat([prev, logits.argmax(-1, keepdim=True)], dim=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="tiny")
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--batch", type=int, default=32, help="sentences per training batch")
    ap.add_argument("--len", type=int, default=30, help="source and target length")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--decode-reps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    space = load_space(args.space)
    cfg = space.largest()
    if not (space.super_encoder_embed_dim == space.super_decoder_embed_dim == space.qkv_dim):
        raise SystemExit(f"{args.space}: nn.Transformer needs embed dim == qkv dim for the same shape")
    margs = ModelArgs(args.vocab, args.vocab, dropout=0.1, attention_dropout=0.1, scale_dropout_with_embed=False)
    sup = SuperTransformer(space, margs).configure(cfg)
    sub = extract(sup, cfg)
    ref = TorchTransformer(args.vocab, cfg.encoder_embed_dim, cfg.encoder_self_attention_heads[0],
                           cfg.encoder_ffn_embed_dim[0], cfg.encoder_layer_num, cfg.decoder_layer_num, 0.1)
    batch = make_batch(args.batch, args.len, args.len, args.vocab)

    print(f"machine: {platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}")
    print(f"shape: {args.space} largest, vocab {args.vocab}, train batch {args.batch}x{args.len}, decode {args.len} steps")
    rows = {}
    sup.train(), sub.train(), ref.train()
    rows["train (a) SuperTransformer"] = train_throughput(lambda s, p: sup(s, None, p, cfg), sup.parameters(), batch, args.reps)
    rows["train (b) SubTransformer"] = train_throughput(lambda s, p: sub(s, None, p), sub.parameters(), batch, args.reps)
    rows["train (c) nn.Transformer"] = train_throughput(ref, ref.parameters(), batch, args.reps)
    sup.eval(), sub.eval(), ref.eval()
    src1 = batch[0][:1]
    dec = {
        "decode (a) SuperTransformer, KV cache": lambda: decode_ours(sup, src1, args.len),
        "decode (b) SubTransformer, KV cache": lambda: decode_ours(sub, src1, args.len),
        "decode (c) nn.Transformer, naive re-decode": lambda: decode_torch(ref, src1, args.len, cached=False),
        "decode (c) nn.Transformer, layer-input cache": lambda: decode_torch(ref, src1, args.len, cached=True),
    }
    for name, fn in dec.items():
        rows[name] = timeit(fn, 3, args.decode_reps) * 1000

    print(f"\n| measurement | value |\n|---|---|")
    for name, v in rows.items():
        unit = "tokens/s" if name.startswith("train") else "ms/sentence"
        print(f"| {name} | {v:,.0f} {unit} |" if unit == "tokens/s" else f"| {name} | {v:.1f} {unit} |")
    a, b, c = (rows[f"train ({k}) " + n] for k, n in (("a", "SuperTransformer"), ("b", "SubTransformer"), ("c", "nn.Transformer")))
    best_c = min(rows["decode (c) nn.Transformer, naive re-decode"], rows["decode (c) nn.Transformer, layer-input cache"])
    print("\nratios:")
    print(f"  weight-sharing training overhead (b/a - 1): {100 * (b / a - 1):+.1f}%  (target <= 10%)")
    print(f"  SubTransformer vs nn.Transformer training (b/c): {b / c:.2f}x")
    print(f"  SubTransformer decoding speed-up vs best nn.Transformer loop: "
          f"{best_c / rows['decode (b) SubTransformer, KV cache']:.2f}x  (target >= 1.0x)")


if __name__ == "__main__":
    main()
