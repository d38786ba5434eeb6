"""Weight-sharing by front-slicing, as in HAT and Once-for-All's dynamic layers.

An elastic module owns the weight of its largest shape; `configure()` picks the active
sub-shape and `forward` uses `W[:out, :in]`, `b[:out]`. Subclassing the torch module keeps
`state_dict` names identical to the plain module, which makes extraction a pure slice.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def front_slice(t: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """The leading `shape` block of `t` (the shared-weight rule for every elastic op)."""
    if tuple(t.shape) == tuple(shape):
        return t
    if len(shape) != t.dim() or any(s > m for s, m in zip(shape, t.shape)):
        raise ValueError(f"cannot slice a tensor of shape {tuple(t.shape)} to {tuple(shape)}")
    return t[tuple(slice(0, s) for s in shape)]


class ElasticLinear(nn.Linear):
    """`nn.Linear` at its maximal size; runs as `active_out x active_in`."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias)
        self.active_in, self.active_out = in_features, out_features

    def configure(self, in_features: int | None = None, out_features: int | None = None) -> None:
        if in_features is not None:
            if not 0 < in_features <= self.in_features:
                raise ValueError(f"active in_features {in_features} outside (0, {self.in_features}]")
            self.active_in = in_features
        if out_features is not None:
            if not 0 < out_features <= self.out_features:
                raise ValueError(f"active out_features {out_features} outside (0, {self.out_features}]")
            self.active_out = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = front_slice(self.weight, (self.active_out, self.active_in))
        b = None if self.bias is None else self.bias[: self.active_out]
        return F.linear(x, w, b)


class ElasticLayerNorm(nn.LayerNorm):
    """`nn.LayerNorm` over the first `active_dim` features, with the first `active_dim` affine params."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__(dim, eps=eps)
        self.active_dim = dim

    def configure(self, dim: int) -> None:
        if not 0 < dim <= self.normalized_shape[0]:
            raise ValueError(f"active dim {dim} outside (0, {self.normalized_shape[0]}]")
        self.active_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.active_dim
        return F.layer_norm(x, (d,), self.weight[:d], self.bias[:d], self.eps)
