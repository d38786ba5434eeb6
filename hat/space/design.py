"""The design space: a SuperTransformer's maximal dims and the choices each gene may take.

Validation (with messages naming the field, value and allowed choices), uniform sampling and
HAT's evolutionary operators (mutation, crossover) live here; shipped spaces are
`hat/configs/space/*.yaml`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hat.errors import ConfigError
from hat.shipped import available, read_yaml, resolve
from hat.space.config import ALL_FIELDS, LAYER_FIELDS_DEC, LAYER_FIELDS_ENC, SCALAR_FIELDS, SubConfig, refuse_lm_file

# the SuperTransformer's maximal dims (`super:` in a space YAML, `super_*` fields), qkv_dim aside
SUPER_KEYS = ("encoder_embed_dim", "decoder_embed_dim", "encoder_ffn_embed_dim", "decoder_ffn_embed_dim",
              "encoder_layer_num", "decoder_layer_num", "encoder_attention_heads", "decoder_attention_heads")


@dataclass(frozen=True)
class DesignSpace:
    """A SuperTransformer's maximal dims plus the choices each gene may take."""

    name: str
    super_encoder_embed_dim: int
    super_decoder_embed_dim: int
    super_encoder_ffn_embed_dim: int
    super_decoder_ffn_embed_dim: int
    super_encoder_layer_num: int
    super_decoder_layer_num: int
    super_encoder_attention_heads: int
    super_decoder_attention_heads: int
    qkv_dim: int
    choices: dict[str, tuple[int, ...]] = field(hash=False)
    description: str = ""

    @property
    def max_encoder_layers(self) -> int:
        return self.super_encoder_layer_num

    @property
    def max_decoder_layers(self) -> int:
        return self.super_decoder_layer_num

    # ---- io ----------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "space") -> "DesignSpace":
        try:
            sup = d["super"]
            choices = {k: tuple(int(x) for x in v) for k, v in d["choices"].items()}
            space = cls(
                name=str(d["name"]),
                **{f"super_{k}": int(sup[k]) for k in SUPER_KEYS},
                qkv_dim=int(sup["qkv_dim"]),
                choices=choices,
                description=str(d.get("description", "")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ConfigError(f"{source}: not a design-space file ({type(e).__name__}: {e})") from None
        space._check(source)
        return space

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "super": {**{k: getattr(self, f"super_{k}") for k in SUPER_KEYS}, "qkv_dim": self.qkv_dim},
            "choices": {k: list(v) for k, v in self.choices.items()},
        }

    def _check(self, source: str) -> None:
        missing = [k for k in ALL_FIELDS if k not in self.choices]
        if missing:
            raise ConfigError(f"{source}: choices missing for {', '.join(missing)}")
        unknown = sorted(set(self.choices) - set(ALL_FIELDS))
        if unknown:
            raise ConfigError(f"{source}: unknown choice key(s) {', '.join(unknown)}")
        empty = [k for k in ALL_FIELDS if not self.choices[k]]
        if empty:
            raise ConfigError(f"{source}: no choices for {', '.join(empty)} (each gene needs at least one)")
        if any(v < 1 for k in SCALAR_FIELDS for v in self.choices[k]):
            raise ConfigError(f"{source}: dims and layer numbers must be >= 1")
        limits = {k: getattr(self, f"super_{k}") for k in SUPER_KEYS if k in ALL_FIELDS}
        for k, lim in limits.items():
            if max(self.choices[k]) > lim:
                raise ConfigError(f"{source}: choice {max(self.choices[k])} for {k} exceeds the super dim {lim}")
        for k in ("encoder_self_attention_heads", "decoder_self_attention_heads", "decoder_ende_attention_heads"):
            for h in self.choices[k]:
                if h <= 0 or self.qkv_dim % h:
                    raise ConfigError(f"{source}: {k} choice {h} does not divide qkv_dim {self.qkv_dim}")
        if not set(self.choices["decoder_arbitrary_ende_attn"]) <= {-1, 1, 2}:
            raise ConfigError(f"{source}: decoder_arbitrary_ende_attn choices must be among -1, 1, 2")

    # ---- validation ----------------------------------------------------------
    def validate(self, cfg: SubConfig, source: str = "config") -> SubConfig:
        """Raise ConfigError naming the field, value and allowed choices; return cfg."""
        for k in SCALAR_FIELDS:
            v = getattr(cfg, k)
            if v not in self.choices[k]:
                raise ConfigError(f"{source}: {k}={v} is not in space {self.name} (choices {list(self.choices[k])})")
        for k in LAYER_FIELDS_ENC + LAYER_FIELDS_DEC:
            for i, v in enumerate(getattr(cfg, k)):
                if v not in self.choices[k]:
                    raise ConfigError(
                        f"{source}: {k}[{i}]={v} is not in space {self.name} (choices {list(self.choices[k])})"
                    )
        return cfg

    def size(self) -> int:
        """How many distinct SubConfigs the space holds (per-layer genes counted up to each depth)."""
        c = {k: len(v) for k, v in self.choices.items()}
        enc = c["encoder_ffn_embed_dim"] * c["encoder_self_attention_heads"]
        dec = c["decoder_ffn_embed_dim"] * c["decoder_self_attention_heads"] * c["decoder_ende_attention_heads"] * \
            c["decoder_arbitrary_ende_attn"]
        return (c["encoder_embed_dim"] * c["decoder_embed_dim"] * sum(enc ** n for n in self.choices["encoder_layer_num"])
                * sum(dec ** n for n in self.choices["decoder_layer_num"]))

    def contains(self, cfg: SubConfig) -> bool:
        try:
            self.validate(cfg)
            return True
        except ConfigError:
            return False

    # ---- sampling / evolution -------------------------------------------------
    def _gene(self, k: str, rng: random.Random) -> int:
        return rng.choice(self.choices[k])

    def sample(self, rng: random.Random) -> SubConfig:
        """Uniform sample: every gene drawn independently from its choices."""
        d: dict[str, Any] = {k: self._gene(k, rng) for k in SCALAR_FIELDS}
        for k in LAYER_FIELDS_ENC:
            d[k] = [self._gene(k, rng) for _ in range(d["encoder_layer_num"])]
        for k in LAYER_FIELDS_DEC:
            d[k] = [self._gene(k, rng) for _ in range(d["decoder_layer_num"])]
        return SubConfig(**d)

    def _extreme(self, pick) -> SubConfig:
        d: dict[str, Any] = {k: pick(self.choices[k]) for k in SCALAR_FIELDS}
        for k in LAYER_FIELDS_ENC:
            d[k] = [pick(self.choices[k])] * d["encoder_layer_num"]
        for k in LAYER_FIELDS_DEC:
            d[k] = [pick(self.choices[k])] * d["decoder_layer_num"]
        if pick is min:
            d["decoder_arbitrary_ende_attn"] = [-1] * d["decoder_layer_num"]
        return SubConfig(**d)

    def largest(self) -> SubConfig:
        return self._extreme(max)

    def smallest(self) -> SubConfig:
        return self._extreme(min)

    def _full_genes(self, cfg: SubConfig, rng: random.Random) -> dict[str, list[int]]:
        """Per-layer genes padded to the super depth (new layers sampled), so depth can change."""
        d = {k: list(getattr(cfg, k)) for k in LAYER_FIELDS_ENC + LAYER_FIELDS_DEC}
        for k in LAYER_FIELDS_ENC:
            d[k] += [self._gene(k, rng) for _ in range(self.max_encoder_layers - len(d[k]))]
        for k in LAYER_FIELDS_DEC:
            d[k] += [self._gene(k, rng) for _ in range(self.max_decoder_layers - len(d[k]))]
        return d

    def _from_full(self, scalars: dict[str, int], genes: dict[str, list[int]]) -> SubConfig:
        d: dict[str, Any] = dict(scalars)
        for k in LAYER_FIELDS_ENC:
            d[k] = genes[k][: scalars["encoder_layer_num"]]
        for k in LAYER_FIELDS_DEC:
            d[k] = genes[k][: scalars["decoder_layer_num"]]
        return SubConfig(**d)

    def mutate(self, cfg: SubConfig, prob: float, rng: random.Random) -> SubConfig:
        """HAT's mutation: every gene (scalar or per-layer) resampled with probability `prob`."""
        scalars = {k: (self._gene(k, rng) if rng.random() < prob else getattr(cfg, k)) for k in SCALAR_FIELDS}
        genes = self._full_genes(cfg, rng)
        for k, vals in genes.items():
            genes[k] = [self._gene(k, rng) if rng.random() < prob else v for v in vals]
        return self._from_full(scalars, genes)

    def crossover(self, a: SubConfig, b: SubConfig, rng: random.Random) -> SubConfig:
        """Uniform crossover: every gene taken from either parent with probability 1/2."""
        scalars = {k: rng.choice((getattr(a, k), getattr(b, k))) for k in SCALAR_FIELDS}
        ga, gb = self._full_genes(a, rng), self._full_genes(b, rng)
        genes = {k: [rng.choice(pair) for pair in zip(ga[k], gb[k])] for k in ga}
        return self._from_full(scalars, genes)


def available_spaces() -> list[str]:
    return available("space")


def load_space(name_or_path: str | Path) -> DesignSpace:
    """A shipped space by name (e.g. `wmt14.en-de`) or a YAML file path."""
    p = resolve(name_or_path, "space", "design space")
    data = read_yaml(p)
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: not a design-space file")
    refuse_lm_file(data, p, "design space")
    return DesignSpace.from_dict(data, source=str(p))
