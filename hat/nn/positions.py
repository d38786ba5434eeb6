"""Sinusoidal positions computed once at the SuperTransformer's width.

HAT slices the super-size table to the first `d` dims instead of recomputing it at `d`;
a SubTransformer keeps the same convention so its outputs match the super model exactly.
Position numbering follows fairseq (first token at `padding_idx + 1`, pads get a zero row),
so exported checkpoints reproduce fairseq's positions.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal_table(num: int, dim: int, padding_idx: int) -> torch.Tensor:
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float) * -(math.log(10000.0) / (half - 1)))
    ang = torch.arange(num, dtype=torch.float).unsqueeze(1) * freq.unsqueeze(0)
    table = torch.cat([torch.sin(ang), torch.cos(ang)], dim=1)
    if dim % 2 == 1:
        table = torch.cat([table, torch.zeros(num, 1)], dim=1)
    table[padding_idx, :] = 0
    return table


class SinusoidalPositions(nn.Module):
    def __init__(self, table_dim: int, padding_idx: int, max_positions: int = 1024) -> None:
        super().__init__()
        self.padding_idx = padding_idx
        self.table_dim = table_dim
        self.register_buffer("table", sinusoidal_table(max_positions + padding_idx + 1, table_dim, padding_idx), persistent=False)

    def forward(self, tokens: torch.Tensor, dim: int, start: int = 0) -> torch.Tensor:
        """Positions for `tokens` (B, T); with `start` > 0 the tokens are steps start.. of a prefix
        (incremental decoding, no padding)."""
        if start:
            pos = torch.full_like(tokens, self.padding_idx + 1 + start)
            pos = pos + torch.arange(tokens.size(1), device=tokens.device)
        else:
            mask = tokens.ne(self.padding_idx).long()
            pos = torch.cumsum(mask, dim=1) * mask + self.padding_idx
        if pos.max() >= self.table.size(0):
            raise ValueError(f"sequence longer than max_positions ({self.table.size(0) - self.padding_idx - 1})")
        return self.table[pos, :dim]
