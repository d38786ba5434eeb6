"""Encoder-decoder Transformer written once for both the SuperTransformer and SubTransformers.

Each layer is built either elastic (maximal weights, sliced to the active config) or plain
(exact sizes). Module names are the same either way, so a SubTransformer's state dict is a
front slice of the SuperTransformer's. Tensors are batch-first: (B, T, C).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hat.nn import ElasticEmbedding, ElasticLayerNorm, ElasticLinear, MultiheadAttention, SinusoidalPositions


@dataclass
class ModelArgs:
    """Everything a Transformer needs beyond the architecture (vocab, dropout, norm placement)."""

    src_vocab_size: int
    tgt_vocab_size: int
    padding_idx: int = 1
    share_all_embeddings: bool = True
    share_decoder_input_output_embed: bool = True
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    normalize_before: bool = False
    max_positions: int = 1024
    # HAT scales dropout by sampled_embed / super_embed
    scale_dropout_with_embed: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def _linear_cls(elastic: bool):
    return ElasticLinear if elastic else nn.Linear


def _norm_cls(elastic: bool):
    return ElasticLayerNorm if elastic else nn.LayerNorm


def _init_linear(lin: nn.Linear) -> nn.Linear:
    nn.init.xavier_uniform_(lin.weight)
    nn.init.zeros_(lin.bias)
    return lin


class FeedForward(nn.Module):
    def __init__(self, dim: int, ffn_dim: int, activation_dropout: float, elastic: bool) -> None:
        super().__init__()
        Linear = _linear_cls(elastic)
        self.fc1 = _init_linear(Linear(dim, ffn_dim))
        self.fc2 = _init_linear(Linear(ffn_dim, dim))
        self.activation_dropout = activation_dropout

    def configure(self, dim: int, ffn_dim: int) -> None:
        self.fc1.configure(in_features=dim, out_features=ffn_dim)
        self.fc2.configure(in_features=ffn_dim, out_features=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.dropout(F.relu(self.fc1(x)), self.activation_dropout, self.training)
        return self.fc2(h)


class _Block(nn.Module):
    """Residual + dropout + LayerNorm around a sublayer, post-norm (HAT) or pre-norm."""

    normalize_before: bool
    dropout: float

    def _residual(self, x: torch.Tensor, norm: nn.Module, fn) -> torch.Tensor:
        if self.normalize_before:
            return x + F.dropout(fn(norm(x)), self.dropout, self.training)
        return norm(x + F.dropout(fn(x), self.dropout, self.training))


class EncoderLayer(_Block):
    def __init__(self, dim: int, ffn_dim: int, heads: int, qkv_dim: int, args: ModelArgs, elastic: bool = False) -> None:
        super().__init__()
        Norm = _norm_cls(elastic)
        self.self_attn = MultiheadAttention(dim, dim, qkv_dim, heads, args.attention_dropout, elastic)
        self.self_attn_layer_norm = Norm(dim)
        self.ffn = FeedForward(dim, ffn_dim, args.activation_dropout, elastic)
        self.final_layer_norm = Norm(dim)
        self.normalize_before = args.normalize_before
        self.dropout = args.dropout

    def configure(self, dim: int, ffn_dim: int, heads: int, dropout: float, attention_dropout: float) -> None:
        self.self_attn.configure(dim, dim, heads, attention_dropout)
        self.self_attn_layer_norm.configure(dim)
        self.ffn.configure(dim, ffn_dim)
        self.final_layer_norm.configure(dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
        x = self._residual(x, self.self_attn_layer_norm, lambda h: self.self_attn(h, key_padding_mask=padding_mask))
        return self._residual(x, self.final_layer_norm, self.ffn)


class DecoderLayer(_Block):
    def __init__(
        self,
        dim: int,
        encoder_dim: int,
        ffn_dim: int,
        self_heads: int,
        ende_heads: int,
        qkv_dim: int,
        args: ModelArgs,
        elastic: bool = False,
        ende_layers: int = 1,
    ) -> None:
        super().__init__()
        Norm = _norm_cls(elastic)
        self.self_attn = MultiheadAttention(dim, dim, qkv_dim, self_heads, args.attention_dropout, elastic)
        self.self_attn_layer_norm = Norm(dim)
        self.encoder_attn = MultiheadAttention(dim, encoder_dim, qkv_dim, ende_heads, args.attention_dropout, elastic)
        self.encoder_attn_layer_norm = Norm(dim)
        self.ffn = FeedForward(dim, ffn_dim, args.activation_dropout, elastic)
        self.final_layer_norm = Norm(dim)
        self.normalize_before = args.normalize_before
        self.dropout = args.dropout
        self.ende_layers = ende_layers  # how many of the last encoder layers this layer attends

    def configure(
        self, dim: int, encoder_dim: int, ffn_dim: int, self_heads: int, ende_heads: int, ende_layers: int,
        dropout: float, attention_dropout: float,
    ) -> None:
        self.self_attn.configure(dim, dim, self_heads, attention_dropout)
        self.self_attn_layer_norm.configure(dim)
        self.encoder_attn.configure(dim, encoder_dim, ende_heads, attention_dropout)
        self.encoder_attn_layer_norm.configure(dim)
        self.ffn.configure(dim, ffn_dim)
        self.final_layer_norm.configure(dim)
        self.ende_layers = ende_layers
        self.dropout = dropout

    def forward(self, x: torch.Tensor, encoder_out: "EncoderOut", cache: dict | None = None) -> torch.Tensor:
        memory, memory_mask = encoder_out.memory(self.ende_layers)
        self_cache = None if cache is None else cache.setdefault("self", {})
        ende_cache = None if cache is None else cache.setdefault("ende", {})
        x = self._residual(x, self.self_attn_layer_norm, lambda h: self.self_attn(h, causal=True, cache=self_cache))
        x = self._residual(
            x,
            self.encoder_attn_layer_norm,
            lambda h: self.encoder_attn(h, memory, memory_mask, cache=ende_cache, static_kv=True),
        )
        return self._residual(x, self.final_layer_norm, self.ffn)


class EncoderOut:
    """All encoder layer outputs (for arbitrary encoder-decoder attention) and the padding mask."""

    def __init__(self, states: list[torch.Tensor], padding_mask: torch.Tensor) -> None:
        self.states = states
        self.padding_mask = padding_mask
        self._memo: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def last(self) -> torch.Tensor:
        return self.states[-1]

    def memory(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The last `n` layers' outputs concatenated along time (last first), and the mask likewise."""
        n = min(n, len(self.states))
        if n not in self._memo:
            if n == 1:
                self._memo[n] = (self.states[-1], self.padding_mask)
            else:
                chosen = self.states[::-1][:n]
                self._memo[n] = (torch.cat(chosen, dim=1), self.padding_mask.repeat(1, n))
        return self._memo[n]

    def reorder(self, order: torch.Tensor) -> "EncoderOut":
        return EncoderOut([s.index_select(0, order) for s in self.states], self.padding_mask.index_select(0, order))


class Encoder(nn.Module):
    def __init__(
        self,
        embed_tokens: ElasticEmbedding,
        dim: int,
        layers: list[tuple[int, int]],
        qkv_dim: int,
        args: ModelArgs,
        positions: SinusoidalPositions,
        elastic: bool = False,
    ) -> None:
        super().__init__()
        self.embed_tokens = embed_tokens
        self.embed_positions = positions
        self.embed_dim = dim
        self.layers = nn.ModuleList(EncoderLayer(dim, f, h, qkv_dim, args, elastic) for f, h in layers)
        self.num_layers = len(layers)
        self.layer_norm = _norm_cls(elastic)(dim) if args.normalize_before else None
        self.padding_idx = args.padding_idx
        self.dropout = args.dropout

    def forward(self, src_tokens: torch.Tensor, src_lengths: torch.Tensor | None = None) -> EncoderOut:
        d = self.embed_dim
        pad = src_tokens.eq(self.padding_idx)
        x = self.embed_tokens(src_tokens, d) * (d**0.5) + self.embed_positions(src_tokens, d)
        x = F.dropout(x, self.dropout, self.training)
        x = x.masked_fill(pad.unsqueeze(-1), 0.0)
        states = []
        for layer in self.layers[: self.num_layers]:
            x = layer(x, pad)
            states.append(x)
        if self.layer_norm is not None:
            states = [self.layer_norm(s) for s in states]
        return EncoderOut(states, pad)


class Decoder(nn.Module):
    def __init__(
        self,
        embed_tokens: ElasticEmbedding,
        dim: int,
        encoder_dim: int,
        layers: list[tuple[int, int, int, int]],
        qkv_dim: int,
        args: ModelArgs,
        positions: SinusoidalPositions,
        elastic: bool = False,
    ) -> None:
        super().__init__()
        self.embed_tokens = embed_tokens
        self.embed_positions = positions
        self.embed_dim = dim
        self.layers = nn.ModuleList(
            DecoderLayer(dim, encoder_dim, f, hs, he, qkv_dim, args, elastic, ende_layers=n) for f, hs, he, n in layers
        )
        self.num_layers = len(layers)
        self.layer_norm = _norm_cls(elastic)(dim) if args.normalize_before else None
        self.padding_idx = args.padding_idx
        self.dropout = args.dropout
        if args.share_decoder_input_output_embed:
            self.output_projection = None
        else:
            self.output_projection = _linear_cls(elastic)(dim, args.tgt_vocab_size, bias=False)
            nn.init.normal_(self.output_projection.weight, std=dim**-0.5)

    def forward(
        self, prev_output_tokens: torch.Tensor, encoder_out: EncoderOut, cache: list[dict] | None = None
    ) -> torch.Tensor:
        """Logits (B, T, V). With `cache` (a list, one dict per layer), only the last token of
        `prev_output_tokens` is run and the layers' K/V caches are extended."""
        d = self.embed_dim
        if cache is not None:
            step = prev_output_tokens.size(1) - 1
            tokens = prev_output_tokens[:, -1:]
            pos = self.embed_positions(tokens, d, start=step)
            while len(cache) < self.num_layers:
                cache.append({})
        else:
            tokens = prev_output_tokens
            pos = self.embed_positions(tokens, d)
        x = self.embed_tokens(tokens, d) * (d**0.5) + pos
        x = F.dropout(x, self.dropout, self.training)
        for i, layer in enumerate(self.layers[: self.num_layers]):
            x = layer(x, encoder_out, None if cache is None else cache[i])
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        if self.output_projection is None:
            return self.embed_tokens.project(x)
        return self.output_projection(x)


class EncoderDecoder(nn.Module):
    """Shared behaviour: forward for training, encode/decode_step for generation."""

    encoder: Encoder
    decoder: Decoder

    def forward(
        self, src_tokens: torch.Tensor, src_lengths: torch.Tensor | None, prev_output_tokens: torch.Tensor
    ) -> torch.Tensor:
        return self.decoder(prev_output_tokens, self.encoder(src_tokens, src_lengths))

    def encode(self, src_tokens: torch.Tensor, src_lengths: torch.Tensor | None = None) -> EncoderOut:
        return self.encoder(src_tokens, src_lengths)

    def decode_step(self, prev_output_tokens: torch.Tensor, encoder_out: EncoderOut, cache: list[dict]) -> torch.Tensor:
        """Log-probabilities (B, V) of the next token, extending the KV cache by one step."""
        logits = self.decoder(prev_output_tokens, encoder_out, cache)[:, -1, :]
        return F.log_softmax(logits.float(), dim=-1)

    @staticmethod
    def reorder_cache(cache: list[dict], order: torch.Tensor) -> None:
        """Select beams in place: self-attention caches are gathered; encoder K/V too."""
        for layer in cache:
            for sub in layer.values():
                for k in list(sub):
                    sub[k] = sub[k].index_select(0, order)


def make_embeddings(args: ModelArgs, enc_dim: int, dec_dim: int) -> tuple[ElasticEmbedding, ElasticEmbedding]:
    """Token tables; with shared embeddings one table of width max(enc, dec) serves both sides."""
    if args.share_all_embeddings:
        if args.src_vocab_size != args.tgt_vocab_size:
            raise ValueError("share_all_embeddings needs a joint vocabulary (src and tgt sizes differ)")
        emb = ElasticEmbedding(args.src_vocab_size, max(enc_dim, dec_dim), padding_idx=args.padding_idx)
        _init_embedding(emb, max(enc_dim, dec_dim), args.padding_idx)
        return emb, emb
    src = ElasticEmbedding(args.src_vocab_size, enc_dim, padding_idx=args.padding_idx)
    tgt = ElasticEmbedding(args.tgt_vocab_size, dec_dim, padding_idx=args.padding_idx)
    _init_embedding(src, enc_dim, args.padding_idx)
    _init_embedding(tgt, dec_dim, args.padding_idx)
    return src, tgt


def _init_embedding(emb: nn.Embedding, dim: int, padding_idx: int) -> None:
    nn.init.normal_(emb.weight, mean=0.0, std=dim**-0.5)
    with torch.no_grad():
        emb.weight[padding_idx].zero_()
