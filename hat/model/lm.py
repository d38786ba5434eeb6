"""Decoder-only language models (GPT-style) for LiteTransformerSearch-type searches.

`LanguageModel` is written once, elastic (`SuperLM`: the largest weights, front-sliced to the
configured `LMConfig`, as the SuperTransformer does) or plain (`StandaloneLM`: exact per-layer
sizes). Layers are `hat.nn.CausalLayer`s, pre-norm with a final LayerNorm; the token table is
tied with the output projection; positions are sinusoidal (no parameters, so the decoder's
parameter count, LTS's proxy, is all parameters but the token table). The attention width is the
model width, as in GPT-2. Module names are the same either way, so `extract_lm` is a pure slice.

Decoding runs one exportable call, `LanguageModel.extend`, over an explicit cache: one (K, V)
pair (B, S, embed_dim) per layer. A full forward is `extend` without a past, a prefill is
`extend` of a prompt, a generation step `extend` of one token.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from hat.errors import HatError
from hat.nn import CausalLayer, ElasticLayerNorm, ElasticLinear, SinusoidalPositions, TokenEmbedding, dropout, front_slice
from hat.space.lm import LMConfig, LMSpace

LMCache = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class LMArgs:
    """What a decoder-only model needs beyond its architecture and its space."""

    padding_idx: int = 1
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class LanguageModel(nn.Module):
    def __init__(self, vocab_size: int, dim: int, layers: list[tuple[int, int]], max_positions: int, pos_dim: int,
                 args: LMArgs, elastic: bool = False) -> None:
        super().__init__()
        linear, norm = (ElasticLinear, ElasticLayerNorm) if elastic else (nn.Linear, nn.LayerNorm)
        self.args, self.max_positions = args, max_positions
        self.embed_tokens = TokenEmbedding(vocab_size, dim, padding_idx=args.padding_idx)
        nn.init.normal_(self.embed_tokens.weight, mean=0.0, std=dim**-0.5)
        with torch.no_grad():
            self.embed_tokens.weight[args.padding_idx].zero_()
        self.embed_positions = SinusoidalPositions(pos_dim, args.padding_idx, max_positions)
        self.layers = nn.ModuleList(
            CausalLayer(dim, f, h, dim, dropout=args.dropout, attention_dropout=args.attention_dropout,
                        activation_dropout=args.activation_dropout, normalize_before=True, linear=linear, norm=norm)
            for f, h in layers
        )
        self.layer_norm = norm(dim)
        self.embed_dim, self.num_layers, self.dropout = dim, len(layers), args.dropout

    def extend(self, tokens: torch.Tensor, cache: LMCache | None = None, last: bool = False
               ) -> tuple[torch.Tensor, LMCache]:
        """Logits (B, T, V) of `tokens` (B, T) read after the cached positions, and the cache
        extended by them. `last`: logits of the last position only (B, 1, V), all a generation
        step needs. Exportable: no data-dependent check (`step` and `forward` check lengths)."""
        d = self.embed_dim
        start = cache[0][0].size(1) if cache else 0
        steps = torch.arange(start, start + tokens.size(1), device=tokens.device)
        x = self.embed_tokens(tokens, d) * (d**0.5) + self.embed_positions.at(steps, d)
        x = dropout(x, self.dropout, self.training)
        past = cache if cache else [(None, None)] * self.num_layers
        new = []
        for layer, (k, v) in zip(self.layers, past):  # zip stops at the active depth
            x, k, v = layer.step(x, k, v)
            new.append((k, v))
        if last:
            x = x[:, -1:]
        return self.embed_tokens.project(self.layer_norm(x)), new

    def _check_length(self, n: int) -> None:
        if n > self.max_positions:
            raise HatError(f"{n} tokens do not fit the context of {self.max_positions} positions")

    def step(self, tokens: torch.Tensor, cache: LMCache | None = None, last: bool = False
             ) -> tuple[torch.Tensor, LMCache]:
        """`extend`, refusing a sequence longer than the context in one line."""
        self._check_length((cache[0][0].size(1) if cache else 0) + tokens.size(1))
        return self.extend(tokens, cache, last)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Next-token logits (B, T, V) at every position of `tokens` (B, T)."""
        return self.step(tokens)[0]


class SuperLM(LanguageModel):
    """The weight-sharing decoder-only model of an `LMSpace`: any `LMConfig` at run time."""

    def __init__(self, space: LMSpace, args: LMArgs | None = None) -> None:
        d = space.top("embed_dim")
        layers = [(space.top("ffn_embed_dim"), space.top("attention_heads"))] * space.top("layer_num")
        super().__init__(space.vocab_size, d, layers, space.max_positions, d, args or LMArgs(), elastic=True)
        self.space = space
        self.config: LMConfig | None = None
        self.configure(space.largest())

    def configure(self, cfg: LMConfig) -> "SuperLM":
        """Activate `cfg`: every elastic op slices its weights to it until the next call."""
        if cfg == self.config:
            return self
        self.space.validate(cfg)
        d, a = cfg.embed_dim, self.args
        self.embed_dim, self.num_layers = d, cfg.layer_num
        for layer, f, h in zip(self.layers, cfg.ffn_embed_dim, cfg.attention_heads):
            layer.configure(d, f, h, a.dropout, a.attention_dropout, qkv_dim=d)
        self.layer_norm.configure(d)
        self.config = cfg
        return self


class StandaloneLM(LanguageModel):
    """One decoder-only architecture in plain modules of exact sizes (no slicing at run time).

    `pos_dim` is the width of the positional table: the super model's when the weights are cut
    from it (so they give the same outputs), the model's own otherwise."""

    def __init__(self, config: LMConfig, vocab_size: int, max_positions: int, args: LMArgs | None = None,
                 pos_dim: int | None = None) -> None:
        layers = list(zip(config.ffn_embed_dim, config.attention_heads))
        pos_dim = pos_dim or config.embed_dim
        super().__init__(vocab_size, config.embed_dim, layers, max_positions, pos_dim, args or LMArgs())
        self.config, self.pos_dim = config, pos_dim

    @classmethod
    def from_space(cls, config: LMConfig, space: LMSpace, args: LMArgs | None = None) -> "StandaloneLM":
        """A randomly initialised model of `config` (validated against `space`): LTS trains only
        the models it chooses, from scratch."""
        return cls(space.validate(config), space.vocab_size, space.max_positions, args)

    def init_kwargs(self) -> dict[str, Any]:
        """What `StandaloneLM.from_kwargs` needs to rebuild this model (for saved files)."""
        return {"config": self.config.to_dict(), "vocab_size": self.embed_tokens.num_embeddings,
                "max_positions": self.max_positions, "args": self.args.to_dict(), "pos_dim": self.pos_dim}

    @classmethod
    def from_kwargs(cls, kw: dict[str, Any]) -> "StandaloneLM":
        return cls(LMConfig.from_dict(kw["config"]), kw["vocab_size"], kw["max_positions"], LMArgs(**kw["args"]),
                   kw["pos_dim"])


def extract_lm(super_lm: SuperLM, config: LMConfig) -> StandaloneLM:
    """Cut `config` out of `super_lm`: a StandaloneLM holding copies of the sliced weights."""
    space = super_lm.space
    space.validate(config)
    sub = StandaloneLM(config, space.vocab_size, space.max_positions, super_lm.args, pos_dim=space.top("embed_dim"))
    source = super_lm.state_dict()
    with torch.no_grad():
        state = {name: front_slice(source[name], p.shape).clone() for name, p in sub.state_dict().items()}
    sub.load_state_dict(state)
    return sub.to(next(super_lm.parameters()).device)


@torch.no_grad()
def perplexity(model: Callable[[torch.Tensor], torch.Tensor], batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """exp of the mean next-token negative log-likelihood over every target of `batches`
    ((input, target) pairs of (B, T) ids, as `hat.data.lm` yields them); `model(input)` gives
    logits (B, T, V). A model that knows nothing (uniform logits) scores the vocabulary size."""
    was_training = getattr(model, "training", False)
    if isinstance(model, nn.Module):
        model.eval()
    nll, n = 0.0, 0
    try:
        for x, y in batches:
            logits = model(x)
            nll += float(F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum"))
            n += y.numel()
    finally:
        if isinstance(model, nn.Module):
            model.train(was_training)
    if n == 0:
        raise HatError("perplexity of no tokens: the batches are empty")
    return float(torch.exp(torch.tensor(nll / n, dtype=torch.float64)))
