"""The parts a HAT Transformer is made of, in plain torch (this file imports nothing from `hat`).

`hat.model` builds the SuperTransformer and SubTransformers from these blocks, and
`hat export --format fairseq` copies this file next to the fairseq plugin, so an exported model
runs the same code. Blocks take the `linear` / `norm` classes to build with: the
SuperTransformer passes front-slicing (elastic) ones and picks their active sizes with
`configure()`; SubTransformers and the plugin use `nn.Linear` / `nn.LayerNorm` and never
call `configure()`.

HAT's conventions, which a SubTransformer keeps so that inherited weights give the same outputs:
- the Q/K/V width is fixed at `qkv_dim`; the head count changes `head_dim = qkv_dim / heads`;
- sinusoidal positions come from a table at the SuperTransformer's width, read at the first
  `dim` columns, numbered as in fairseq (first token at `padding_idx + 1`, pads get a zero row);
- one token table may serve encoder and decoder at different widths (first `dim` columns);
- arbitrary encoder-decoder attention: a decoder layer attends the last `n` encoder layers'
  outputs concatenated along time (`ende_layers`, `memory`).

Decoder-only LMs (`hat.model.lm`) stack `CausalLayer`s: an encoder layer's modules run causally
over a KV cache, with the Q/K/V width following the model width (`configure(..., qkv_dim=)`).

Tensors are batch-first (B, T, C); padding masks are True at pads.
"""
from __future__ import annotations

import math
from typing import Iterable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """`F.dropout`, skipped outright where it is the identity (eval mode, p = 0): a decoding step
    would otherwise pay dozens of no-op calls."""
    return F.dropout(x, p, training) if training and p > 0 else x


# ------------------------------------------------------------------------------------------ embeddings
def sinusoidal_table(num: int, dim: int, padding_idx: int) -> Tensor:
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float) * -(math.log(10000.0) / (half - 1)))
    ang = torch.arange(num, dtype=torch.float).unsqueeze(1) * freq.unsqueeze(0)
    table = torch.cat([torch.sin(ang), torch.cos(ang)], dim=1)
    if dim % 2 == 1:
        table = torch.cat([table, torch.zeros(num, 1)], dim=1)
    table[padding_idx, :] = 0
    return table


class SinusoidalPositions(nn.Module):
    """Position embeddings from a `table_dim`-wide table, read at the first `dim` columns.

    No length check here (it would depend on the data and stop ONNX export): `hat.model`
    checks lengths at its eager entry points; an index past the table fails in indexing.
    """

    def __init__(self, table_dim: int, padding_idx: int, max_positions: int = 1024) -> None:
        super().__init__()
        self.padding_idx, self.table_dim, self.max_positions = padding_idx, table_dim, max_positions
        table = sinusoidal_table(max_positions + padding_idx + 1, table_dim, padding_idx)
        self.register_buffer("table", table, persistent=False)

    def forward(self, tokens: Tensor, dim: int) -> Tensor:
        """(B, T, dim) for `tokens` (B, T), left or right padded."""
        mask = tokens.ne(self.padding_idx).long()
        return self.table[torch.cumsum(mask, dim=1) * mask + self.padding_idx, :dim]

    def at(self, step: Tensor, dim: int) -> Tensor:
        """(1, 1, dim): the position of decoding step `step` (a (1,) tensor; step 0 is the first token)."""
        return self.table.index_select(0, step + (self.padding_idx + 1))[:, :dim].unsqueeze(0)


class TokenEmbedding(nn.Embedding):
    """A token table read at its first `dim` columns.

    The width is an argument, not state, because one shared table is read at two widths in
    the same forward pass (encoder and decoder with shared embeddings)."""

    def forward(self, tokens: Tensor, dim: Optional[int] = None) -> Tensor:  # type: ignore[override]
        w = self.weight if dim is None else self.weight[:, :dim]
        return F.embedding(tokens, w, self.padding_idx)

    def project(self, x: Tensor) -> Tensor:
        """Output projection tied to this table: logits = x @ W[:, :d]^T."""
        return F.linear(x, self.weight[:, : x.size(-1)])


# ------------------------------------------------------------------------------------------ attention
def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    num_heads: int,
    key_padding_mask: Optional[Tensor] = None,
    causal: bool = False,
    dropout_p: float = 0.0,
) -> Tensor:
    """q (B, T, C), k/v (B, S, C) already projected; returns (B, T, C).

    `causal`: query t is the last of the S - T + t + 1 first keys (the queries are the newest
    positions), so a step over cached keys and a full causal pass are the same call."""
    B, T, C = q.shape
    S = k.size(1)
    hd = C // num_heads
    q = q.view(B, T, num_heads, hd).transpose(1, 2)
    k = k.view(B, S, num_heads, hd).transpose(1, 2)
    v = v.view(B, S, num_heads, hd).transpose(1, 2)
    mask = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]
    if causal and T > 1 and (mask is not None or S != T):
        tri = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
        mask = tri if mask is None else mask & tri
        causal = False
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=causal and T > 1)
    return out.transpose(1, 2).reshape(B, T, C)


class MultiheadAttention(nn.Module):
    """Self- or cross-attention with Q/K/V width `qkv_dim` whatever the head count."""

    def __init__(
        self, embed_dim: int, kv_dim: int, qkv_dim: int, num_heads: int, dropout: float = 0.0,
        linear: type[nn.Linear] = nn.Linear,
    ) -> None:
        super().__init__()
        if qkv_dim % num_heads:
            raise ValueError(f"{num_heads} heads do not divide qkv_dim {qkv_dim}")
        self.q_proj = linear(embed_dim, qkv_dim)
        self.k_proj = linear(kv_dim, qkv_dim)
        self.v_proj = linear(kv_dim, qkv_dim)
        self.out_proj = linear(qkv_dim, embed_dim)
        self.num_heads = num_heads
        self.dropout = dropout
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # fairseq's init: scaled xavier for q/k/v, xavier for the output
        for lin in (self.q_proj, self.k_proj, self.v_proj):
            nn.init.xavier_uniform_(lin.weight, gain=2**-0.5)
        nn.init.xavier_uniform_(self.out_proj.weight)
        for lin in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.zeros_(lin.bias)

    def configure(self, embed_dim: int, kv_dim: int, num_heads: int, dropout: float, qkv_dim: Optional[int] = None) -> None:
        """`qkv_dim`: the active Q/K/V width, for spaces where it follows the model width (GPT-style
        LMs); None keeps it (HAT: fixed at the constructor's `qkv_dim`)."""
        self.q_proj.configure(in_features=embed_dim, out_features=qkv_dim)
        self.k_proj.configure(in_features=kv_dim, out_features=qkv_dim)
        self.v_proj.configure(in_features=kv_dim, out_features=qkv_dim)
        self.out_proj.configure(in_features=qkv_dim, out_features=embed_dim)
        self.num_heads = num_heads
        self.dropout = dropout

    def project_kv(self, kv: Tensor) -> tuple[Tensor, Tensor]:
        return self.k_proj(kv), self.v_proj(kv)

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Optional[Tensor] = None, causal: bool = False
    ) -> Tensor:
        """Attention of projected queries over projected keys and values (e.g. a KV cache)."""
        drop = self.dropout if self.training else 0.0
        return self.out_proj(attention(q, k, v, self.num_heads, key_padding_mask, causal, drop))

    def forward(
        self, query: Tensor, kv: Optional[Tensor] = None, key_padding_mask: Optional[Tensor] = None,
        causal: bool = False,
    ) -> Tensor:
        """`kv=None` means self-attention."""
        q = self.q_proj(query)
        k, v = self.project_kv(query if kv is None else kv)
        return self.attend(q, k, v, key_padding_mask, causal)


def encoder_states(
    layers: Iterable[nn.Module], layer_norm: Optional[nn.Module], x: Tensor, padding_mask: Tensor
) -> list[Tensor]:
    """Every encoder layer's output, each through the final LayerNorm (pre-norm): arbitrary
    encoder-decoder attention reads any of the last ones, not only the top one."""
    states = []
    for layer in layers:
        x = layer(x, padding_mask)
        states.append(x)
    return states if layer_norm is None else [layer_norm(s) for s in states]


def ende_layers(arbitrary_ende_attn: int, encoder_layers: int) -> int:
    """How many of the last encoder layers a decoder layer attends, from its HAT gene:
    -1 the last one only, k >= 1 the last k + 1 (at most all of them)."""
    return min(1 if arbitrary_ende_attn == -1 else arbitrary_ende_attn + 1, encoder_layers)


def memory_mask(padding_mask: Tensor, n: int) -> Tensor:
    """The source padding mask repeated for a memory of `n` concatenated encoder layers."""
    return padding_mask if n == 1 else padding_mask.repeat(1, n)


def memory(states: list[Tensor], padding_mask: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """What a decoder layer attending `n` encoder layers reads: the last `n` encoder layers'
    outputs concatenated along time (last layer first), and the padding mask to match."""
    n = min(n, len(states))
    if n == 1:
        return states[-1], padding_mask
    return torch.cat(states[::-1][:n], dim=1), memory_mask(padding_mask, n)


# ------------------------------------------------------------------------------------------ layers
class FeedForward(nn.Module):
    def __init__(self, dim: int, ffn_dim: int, activation_dropout: float, linear: type[nn.Linear] = nn.Linear) -> None:
        super().__init__()
        self.fc1 = _init_linear(linear(dim, ffn_dim))
        self.fc2 = _init_linear(linear(ffn_dim, dim))
        self.activation_dropout = activation_dropout

    def configure(self, dim: int, ffn_dim: int) -> None:
        self.fc1.configure(in_features=dim, out_features=ffn_dim)
        self.fc2.configure(in_features=ffn_dim, out_features=dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(dropout(F.relu(self.fc1(x)), self.activation_dropout, self.training))


def _init_linear(lin: nn.Linear) -> nn.Linear:
    nn.init.xavier_uniform_(lin.weight)
    nn.init.zeros_(lin.bias)
    return lin


class _Residual(nn.Module):
    """Dropout + residual + LayerNorm around each sublayer: post-norm (HAT) or pre-norm."""

    normalize_before: bool
    dropout: float

    def _norm_in(self, x: Tensor, norm: nn.Module) -> Tensor:
        return norm(x) if self.normalize_before else x

    def _add(self, x: Tensor, y: Tensor, norm: nn.Module) -> Tensor:
        x = x + dropout(y, self.dropout, self.training)
        return x if self.normalize_before else norm(x)

    def _cached_self_attention(
        self, x: Tensor, past_k: Optional[Tensor], past_v: Optional[Tensor]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Causal self-attention sublayer of the newest positions `x` (B, T, C) after the P cached
        ones (`past_k`/`past_v` (B, P, qkv), None when there are none); returns the output and the
        K/V extended by `x`'s (B, P + T, qkv)."""
        attn: MultiheadAttention = self.self_attn
        h = self._norm_in(x, self.self_attn_layer_norm)
        q = attn.q_proj(h)
        k, v = attn.project_kv(h)
        if past_k is not None and past_v is not None:
            k, v = torch.cat([past_k, k], dim=1), torch.cat([past_v, v], dim=1)
        return self._add(x, attn.attend(q, k, v, causal=True), self.self_attn_layer_norm), k, v

    def _ffn_sublayer(self, x: Tensor) -> Tensor:
        return self._add(x, self.ffn(self._norm_in(x, self.final_layer_norm)), self.final_layer_norm)


class EncoderLayer(_Residual):
    def __init__(
        self, dim: int, ffn_dim: int, heads: int, qkv_dim: int, *, dropout: float, attention_dropout: float,
        activation_dropout: float, normalize_before: bool, linear: type[nn.Linear] = nn.Linear,
        norm: type[nn.LayerNorm] = nn.LayerNorm,
    ) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(dim, dim, qkv_dim, heads, attention_dropout, linear)
        self.self_attn_layer_norm = norm(dim)
        self.ffn = FeedForward(dim, ffn_dim, activation_dropout, linear)
        self.final_layer_norm = norm(dim)
        self.normalize_before, self.dropout = normalize_before, dropout

    def configure(
        self, dim: int, ffn_dim: int, heads: int, dropout: float, attention_dropout: float, qkv_dim: Optional[int] = None
    ) -> None:
        self.self_attn.configure(dim, dim, heads, attention_dropout, qkv_dim)
        self.self_attn_layer_norm.configure(dim)
        self.ffn.configure(dim, ffn_dim)
        self.final_layer_norm.configure(dim)
        self.dropout = dropout

    def forward(self, x: Tensor, padding_mask: Optional[Tensor]) -> Tensor:
        h = self._norm_in(x, self.self_attn_layer_norm)
        x = self._add(x, self.self_attn(h, key_padding_mask=padding_mask), self.self_attn_layer_norm)
        return self._ffn_sublayer(x)


class CausalLayer(EncoderLayer):
    """A decoder-only (GPT) layer: causal self-attention and the FFN, no encoder-decoder attention.

    The encoder layer's modules (same names and shapes), run causally over a KV cache."""

    def step(self, x: Tensor, past_k: Optional[Tensor], past_v: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """The newest positions `x` (B, T, C) after the cached ones; returns the output and the
        K/V extended by `x`'s: the cache for the next step (see `_cached_self_attention`)."""
        x, k, v = self._cached_self_attention(x, past_k, past_v)
        return self._ffn_sublayer(x), k, v

    def forward(self, x: Tensor, padding_mask: Optional[Tensor] = None) -> Tensor:  # type: ignore[override]
        """A whole sequence, causally (padding is not supported: LM blocks have none)."""
        return self.step(x, None, None)[0]


class DecoderLayer(_Residual):
    def __init__(
        self, dim: int, encoder_dim: int, ffn_dim: int, self_heads: int, ende_heads: int, qkv_dim: int,
        ende_layers: int = 1, *, dropout: float, attention_dropout: float, activation_dropout: float,
        normalize_before: bool, linear: type[nn.Linear] = nn.Linear, norm: type[nn.LayerNorm] = nn.LayerNorm,
    ) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(dim, dim, qkv_dim, self_heads, attention_dropout, linear)
        self.self_attn_layer_norm = norm(dim)
        self.encoder_attn = MultiheadAttention(dim, encoder_dim, qkv_dim, ende_heads, attention_dropout, linear)
        self.encoder_attn_layer_norm = norm(dim)
        self.ffn = FeedForward(dim, ffn_dim, activation_dropout, linear)
        self.final_layer_norm = norm(dim)
        self.normalize_before, self.dropout = normalize_before, dropout
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

    def step(
        self, x: Tensor, self_k: Optional[Tensor], self_v: Optional[Tensor], cross_k: Tensor, cross_v: Tensor,
        mask: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Run the newest target positions `x` (B, T, C) after the cached ones.

        `self_k`/`self_v` (B, P, qkv) are the self-attention K/V of the P earlier positions (None:
        there are none, e.g. a whole sequence at once); `cross_k`/`cross_v` the encoder-decoder
        K/V of this layer's memory and `mask` its padding mask. Returns the output and the
        self-attention K/V extended by `x`'s (B, P + T, qkv): the cache for the next step."""
        x, k, v = self._cached_self_attention(x, self_k, self_v)
        h = self._norm_in(x, self.encoder_attn_layer_norm)
        q = self.encoder_attn.q_proj(h)
        x = self._add(x, self.encoder_attn.attend(q, cross_k, cross_v, mask), self.encoder_attn_layer_norm)
        return self._ffn_sublayer(x), k, v
