"""Encoder-decoder Transformer written once for both the SuperTransformer and SubTransformers.

Each layer (`hat.nn.blocks`) is built either elastic (maximal weights, sliced to the active
config) or plain (exact sizes). Module names are the same either way, so a SubTransformer's
state dict is a front slice of the SuperTransformer's. Tensors are batch-first: (B, T, C).

Decoding has one exportable step, `Decoder.step`, over an explicit per-layer cache
(`LayerState`): the eager cached decoder, the ONNX decoder graph and the latency harness all
run it, and the full-sequence forward runs the same `DecoderLayer.step` without a past.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from hat.nn import (
    DecoderLayer,
    ElasticLayerNorm,
    ElasticLinear,
    EncoderLayer,
    SinusoidalPositions,
    TokenEmbedding,
    encoder_states,
    memory,
)


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


def _classes(elastic: bool) -> dict:
    """Elastic modules (maximal weights, sliced to the active config) or plain ones."""
    return dict(linear=ElasticLinear, norm=ElasticLayerNorm) if elastic else dict(linear=nn.Linear, norm=nn.LayerNorm)


def _layer_options(args: ModelArgs, elastic: bool) -> dict:
    return dict(dropout=args.dropout, attention_dropout=args.attention_dropout,
                activation_dropout=args.activation_dropout, normalize_before=args.normalize_before, **_classes(elastic))


class LayerState(NamedTuple):
    """The explicit cache of one decoder layer between steps: its self-attention K/V so far
    (None before the first step), and the encoder-decoder K/V with their padding mask, computed
    once per source. `DecoderLayer.step(x, *state)` takes exactly these."""

    self_k: torch.Tensor | None
    self_v: torch.Tensor | None
    cross_k: torch.Tensor
    cross_v: torch.Tensor
    mask: torch.Tensor

    def reorder(self, order: torch.Tensor) -> "LayerState":
        return LayerState(*(None if t is None else t.index_select(0, order) for t in self))


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
        """The memory of a decoder layer attending the last `n` encoder layers (`hat.nn.memory`)."""
        if n not in self._memo:
            self._memo[n] = memory(self.states, self.padding_mask, n)
        return self._memo[n]

    def reorder(self, order: torch.Tensor) -> "EncoderOut":
        return EncoderOut([s.index_select(0, order) for s in self.states], self.padding_mask.index_select(0, order))


class Encoder(nn.Module):
    def __init__(
        self,
        embed_tokens: TokenEmbedding,
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
        opts = _layer_options(args, elastic)
        self.layers = nn.ModuleList(EncoderLayer(dim, f, h, qkv_dim, **opts) for f, h in layers)
        self.num_layers = len(layers)
        self.layer_norm = opts["norm"](dim) if args.normalize_before else None
        self.padding_idx = args.padding_idx
        self.dropout = args.dropout

    def embed(self, src_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled token + position embeddings (B, S, C), zero at pads, and the padding mask."""
        d = self.embed_dim
        pad = src_tokens.eq(self.padding_idx)
        x = self.embed_tokens(src_tokens, d) * (d**0.5) + self.embed_positions(src_tokens, d)
        x = F.dropout(x, self.dropout, self.training)
        return x.masked_fill(pad.unsqueeze(-1), 0.0), pad

    def forward(self, src_tokens: torch.Tensor, src_lengths: torch.Tensor | None = None) -> EncoderOut:
        x, pad = self.embed(src_tokens)
        return EncoderOut(encoder_states(self.layers[: self.num_layers], self.layer_norm, x, pad), pad)


class Decoder(nn.Module):
    def __init__(
        self,
        embed_tokens: TokenEmbedding,
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
        opts = _layer_options(args, elastic)
        self.layers = nn.ModuleList(
            DecoderLayer(dim, encoder_dim, f, hs, he, qkv_dim, n, **opts) for f, hs, he, n in layers
        )
        self.num_layers = len(layers)
        self.layer_norm = opts["norm"](dim) if args.normalize_before else None
        self.padding_idx = args.padding_idx
        self.dropout = args.dropout
        if args.share_decoder_input_output_embed:
            self.output_projection = None
        else:
            self.output_projection = opts["linear"](dim, args.tgt_vocab_size, bias=False)
            nn.init.normal_(self.output_projection.weight, std=dim**-0.5)

    def embed(self, tokens: torch.Tensor, step: torch.Tensor | None = None) -> torch.Tensor:
        """Scaled token + position embeddings; with `step` ((1,) tensor), `tokens` (B, 1) is the
        token at that position."""
        d = self.embed_dim
        pos = self.embed_positions(tokens, d) if step is None else self.embed_positions.at(step, d)
        x = self.embed_tokens(tokens, d) * (d**0.5) + pos
        return F.dropout(x, self.dropout, self.training)

    def init_state(self, encoder_out: EncoderOut) -> list[LayerState]:
        """Every layer's state before the first step: no past, the encoder-decoder K/V of its memory."""
        state = []
        for layer in self.layers[: self.num_layers]:
            mem, mask = encoder_out.memory(layer.ende_layers)
            state.append(LayerState(None, None, *layer.encoder_attn.project_kv(mem), mask))
        return state

    def output(self, x: torch.Tensor) -> torch.Tensor:
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        if self.output_projection is None:
            return self.embed_tokens.project(x)
        return self.output_projection(x)

    def step(
        self, tokens: torch.Tensor, step: torch.Tensor, state: list[LayerState]
    ) -> tuple[torch.Tensor, list[LayerState]]:
        """One decoding step, exportable: logits (B, 1, V) for `tokens` (B, 1) at position `step`
        ((1,) int64), and the state extended by this step. The ONNX decoder graph is this call."""
        x = self.embed(tokens, step)
        new = []
        for layer, s in zip(self.layers[: self.num_layers], state):
            x, k, v = layer.step(x, *s)
            new.append(s._replace(self_k=k, self_v=v))
        return self.output(x), new

    def forward(
        self, prev_output_tokens: torch.Tensor, encoder_out: EncoderOut, cache: list[LayerState] | None = None
    ) -> torch.Tensor:
        """Logits (B, T, V). With `cache` (a list, empty at the first step), only the last token
        of `prev_output_tokens` is run, by `step`, and `cache` is updated in place."""
        if cache is None:
            x = self.embed(prev_output_tokens)
            for layer, s in zip(self.layers[: self.num_layers], self.init_state(encoder_out)):
                x, _, _ = layer.step(x, *s)
            return self.output(x)
        if not cache:
            cache.extend(self.init_state(encoder_out))
        step = torch.tensor([prev_output_tokens.size(1) - 1], device=prev_output_tokens.device)
        logits, new = self.step(prev_output_tokens[:, -1:], step, cache)
        cache[:] = new
        return logits


def _check_length(n: int, max_positions: int) -> None:
    if n > max_positions:
        raise ValueError(f"sequence longer than max_positions ({max_positions})")


def _longest(tokens: torch.Tensor, pad: int) -> int:
    return int(tokens.ne(pad).sum(1).max()) if tokens.numel() else 0


class EncoderDecoder(nn.Module):
    """The eager entry points: forward for training, encode/decode_step for generation. They
    check lengths against the position table (a data-dependent check, so not in the exportable
    `Encoder.forward` / `Decoder.step`)."""

    encoder: Encoder
    decoder: Decoder
    args: ModelArgs

    def forward(
        self, src_tokens: torch.Tensor, src_lengths: torch.Tensor | None, prev_output_tokens: torch.Tensor
    ) -> torch.Tensor:
        _check_length(_longest(prev_output_tokens, self.args.padding_idx), self.args.max_positions)
        return self.decoder(prev_output_tokens, self.encode(src_tokens, src_lengths))

    def encode(self, src_tokens: torch.Tensor, src_lengths: torch.Tensor | None = None) -> EncoderOut:
        _check_length(_longest(src_tokens, self.args.padding_idx), self.args.max_positions)
        return self.encoder(src_tokens, src_lengths)

    def decode_step(
        self, prev_output_tokens: torch.Tensor, encoder_out: EncoderOut, cache: list[LayerState]
    ) -> torch.Tensor:
        """Log-probabilities (B, V) of the next token, extending the KV cache by one step."""
        _check_length(prev_output_tokens.size(1), self.args.max_positions)
        logits = self.decoder(prev_output_tokens, encoder_out, cache)[:, -1, :]
        return F.log_softmax(logits.float(), dim=-1)

    @staticmethod
    def reorder_cache(cache: list[LayerState], order: torch.Tensor) -> None:
        """Select beams in place: self-attention caches are gathered; encoder K/V too."""
        cache[:] = [s.reorder(order) for s in cache]


def make_embeddings(args: ModelArgs, enc_dim: int, dec_dim: int) -> tuple[TokenEmbedding, TokenEmbedding]:
    """Token tables; with shared embeddings one table of width max(enc, dec) serves both sides."""
    if args.share_all_embeddings:
        if args.src_vocab_size != args.tgt_vocab_size:
            raise ValueError("share_all_embeddings needs a joint vocabulary (src and tgt sizes differ)")
        emb = TokenEmbedding(args.src_vocab_size, max(enc_dim, dec_dim), padding_idx=args.padding_idx)
        _init_embedding(emb, max(enc_dim, dec_dim), args.padding_idx)
        return emb, emb
    src = TokenEmbedding(args.src_vocab_size, enc_dim, padding_idx=args.padding_idx)
    tgt = TokenEmbedding(args.tgt_vocab_size, dec_dim, padding_idx=args.padding_idx)
    _init_embedding(src, enc_dim, args.padding_idx)
    _init_embedding(tgt, dec_dim, args.padding_idx)
    return src, tgt


def _init_embedding(emb: nn.Embedding, dim: int, padding_idx: int) -> None:
    nn.init.normal_(emb.weight, mean=0.0, std=dim**-0.5)
    with torch.no_grad():
        emb.weight[padding_idx].zero_()
