"""Multi-head attention with a fixed Q/K/V width and a variable number of heads.

As in HAT, the head count changes `head_dim = qkv_dim / heads`, not the parameter count;
only the input columns of the Q/K/V projections (and output rows of `out_proj`) are elastic.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hat.nn.elastic import ElasticLinear


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    num_heads: int,
    key_padding_mask: torch.Tensor | None = None,
    causal: bool = False,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """q (B,T,C), k/v (B,S,C) already projected; returns (B,T,C). `key_padding_mask` is True at pads."""
    B, T, C = q.shape
    S = k.size(1)
    hd = C // num_heads
    q = q.view(B, T, num_heads, hd).transpose(1, 2)
    k = k.view(B, S, num_heads, hd).transpose(1, 2)
    v = v.view(B, S, num_heads, hd).transpose(1, 2)
    mask = None
    if key_padding_mask is not None:
        mask = ~key_padding_mask[:, None, None, :]
        if causal:
            mask = mask & torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
            causal = False
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=causal and T > 1)
    return out.transpose(1, 2).reshape(B, T, C)


class MultiheadAttention(nn.Module):
    """Self- or cross-attention. `elastic=True` builds it at maximal size with elastic projections."""

    def __init__(
        self,
        embed_dim: int,
        kv_dim: int,
        qkv_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        elastic: bool = False,
    ) -> None:
        super().__init__()
        if qkv_dim % num_heads:
            raise ValueError(f"{num_heads} heads do not divide qkv_dim {qkv_dim}")
        Linear = ElasticLinear if elastic else nn.Linear
        self.q_proj = Linear(embed_dim, qkv_dim)
        self.k_proj = Linear(kv_dim, qkv_dim)
        self.v_proj = Linear(kv_dim, qkv_dim)
        self.out_proj = Linear(qkv_dim, embed_dim)
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

    def configure(self, embed_dim: int, kv_dim: int, num_heads: int, dropout: float) -> None:
        self.q_proj.configure(in_features=embed_dim)
        self.k_proj.configure(in_features=kv_dim)
        self.v_proj.configure(in_features=kv_dim)
        self.out_proj.configure(out_features=embed_dim)
        self.num_heads = num_heads
        self.dropout = dropout

    def project_kv(self, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.k_proj(kv), self.v_proj(kv)

    def forward(
        self,
        query: torch.Tensor,
        kv: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        causal: bool = False,
        cache: dict | None = None,
        static_kv: bool = False,
    ) -> torch.Tensor:
        """`kv=None` means self-attention. With `cache`, self-attention appends this step's K/V
        and cross-attention (`static_kv`) computes the encoder K/V once."""
        q = self.q_proj(query)
        if cache is not None and static_kv and "k" in cache:
            k, v = cache["k"], cache["v"]
        else:
            k, v = self.project_kv(query if kv is None else kv)
            if cache is not None:
                if not static_kv and "k" in cache:
                    k = torch.cat([cache["k"], k], dim=1)
                    v = torch.cat([cache["v"], v], dim=1)
                cache["k"], cache["v"] = k, v
        drop = self.dropout if self.training else 0.0
        out = attention(q, k, v, self.num_heads, key_padding_mask, causal and cache is None, drop)
        return self.out_proj(out)
