"""The design space: SubConfig, DesignSpace, HAT-YAML io and numeric features.

This module knows nothing of torch modules, so the latency, search and CLI code
can reason about architectures without building any network.
"""
from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from hat.errors import ConfigError
from hat.shipped import available, read_yaml, resolve

LAYER_FIELDS_ENC = ("encoder_ffn_embed_dim", "encoder_self_attention_heads")
LAYER_FIELDS_DEC = (
    "decoder_ffn_embed_dim",
    "decoder_self_attention_heads",
    "decoder_ende_attention_heads",
    "decoder_arbitrary_ende_attn",
)
SCALAR_FIELDS = ("encoder_embed_dim", "decoder_embed_dim", "encoder_layer_num", "decoder_layer_num")
ALL_FIELDS = SCALAR_FIELDS + LAYER_FIELDS_ENC + LAYER_FIELDS_DEC

# HAT's per-layer YAML keys: field -> HAT key
_HAT_KEYS = {
    "encoder_embed_dim": "encoder-embed-dim-subtransformer",
    "decoder_embed_dim": "decoder-embed-dim-subtransformer",
    "encoder_layer_num": "encoder-layer-num-subtransformer",
    "decoder_layer_num": "decoder-layer-num-subtransformer",
    "encoder_ffn_embed_dim": "encoder-ffn-embed-dim-all-subtransformer",
    "encoder_self_attention_heads": "encoder-self-attention-heads-all-subtransformer",
    "decoder_ffn_embed_dim": "decoder-ffn-embed-dim-all-subtransformer",
    "decoder_self_attention_heads": "decoder-self-attention-heads-all-subtransformer",
    "decoder_ende_attention_heads": "decoder-ende-attention-heads-all-subtransformer",
    "decoder_arbitrary_ende_attn": "decoder-arbitrary-ende-attn-all-subtransformer",
}
_FROM_HAT = {v: k for k, v in _HAT_KEYS.items()}

# HAT's latency-predictor feature normalisation (DESIGN.md §4)
HAT_FEATURE_NAMES = (
    "encoder_embed_dim",
    "encoder_layer_num",
    "encoder_ffn_embed_dim_avg",
    "encoder_self_attention_heads_avg",
    "decoder_embed_dim",
    "decoder_layer_num",
    "decoder_ffn_embed_dim_avg",
    "decoder_self_attention_heads_avg",
    "decoder_ende_attention_heads_avg",
    "decoder_arbitrary_ende_attn_avg",
)
HAT_FEATURE_NORM = (640, 6, 2048, 6, 640, 6, 2048, 6, 6, 2)


@dataclass(frozen=True)
class SubConfig:
    """One architecture. Per-layer tuples have exactly `*_layer_num` entries.

    `decoder_arbitrary_ende_attn[i]` is -1 (last encoder layer), 1 (last two) or 2 (last three).
    """

    encoder_embed_dim: int
    decoder_embed_dim: int
    encoder_layer_num: int
    decoder_layer_num: int
    encoder_ffn_embed_dim: tuple[int, ...]
    encoder_self_attention_heads: tuple[int, ...]
    decoder_ffn_embed_dim: tuple[int, ...]
    decoder_self_attention_heads: tuple[int, ...]
    decoder_ende_attention_heads: tuple[int, ...]
    decoder_arbitrary_ende_attn: tuple[int, ...]

    def __post_init__(self) -> None:
        for name in LAYER_FIELDS_ENC + LAYER_FIELDS_DEC:
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        for name in SCALAR_FIELDS:
            object.__setattr__(self, name, int(getattr(self, name)))
        for name in LAYER_FIELDS_ENC:
            if len(getattr(self, name)) != self.encoder_layer_num:
                raise ConfigError(f"{name} has {len(getattr(self, name))} entries, encoder_layer_num is {self.encoder_layer_num}")
        for name in LAYER_FIELDS_DEC:
            if len(getattr(self, name)) != self.decoder_layer_num:
                raise ConfigError(f"{name} has {len(getattr(self, name))} entries, decoder_layer_num is {self.decoder_layer_num}")

    # ---- conversion -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> "SubConfig":
        """Build from our keys or HAT's keys; per-layer lists longer than the depth are truncated."""
        d = dict(d)
        if any(k in _FROM_HAT for k in d):
            d = {_FROM_HAT.get(k, k): v for k, v in d.items()}
        unknown = sorted(set(d) - set(ALL_FIELDS))
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}")
        missing = [k for k in ALL_FIELDS if k not in d]
        if missing:
            raise ConfigError(f"{source}: missing key(s) {', '.join(missing)}")
        for k in SCALAR_FIELDS:
            if not isinstance(d[k], int) or isinstance(d[k], bool):
                raise ConfigError(f"{source}: {k} must be an integer, got {d[k]!r}")
        out: dict[str, Any] = {k: d[k] for k in SCALAR_FIELDS}
        for names, depth_key in ((LAYER_FIELDS_ENC, "encoder_layer_num"), (LAYER_FIELDS_DEC, "decoder_layer_num")):
            depth = d[depth_key]
            for k in names:
                v = d[k]
                if isinstance(v, int) and not isinstance(v, bool):
                    v = [v] * depth  # a scalar means "every layer"
                if not isinstance(v, (list, tuple)) or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
                    raise ConfigError(f"{source}: {k} must be a list of integers, got {v!r}")
                if len(v) < depth:
                    raise ConfigError(f"{source}: {k} has {len(v)} entries but {depth_key} is {depth}")
                out[k] = tuple(v[:depth])
        return cls(**out)

    def to_hat_dict(self, space: "DesignSpace | None" = None) -> dict[str, Any]:
        """HAT's SubTransformer YAML keys. Lists are padded to the super depth as HAT writes them."""
        d = {}
        for k in ALL_FIELDS:
            v = getattr(self, k)
            if isinstance(v, tuple):
                v = list(v)
                if space is not None:
                    depth = space.max_encoder_layers if k in LAYER_FIELDS_ENC else space.max_decoder_layers
                    v = v + [v[-1]] * (depth - len(v))
            d[_HAT_KEYS[k]] = v
        return d

    def key(self) -> tuple:
        """A hashable identity (the dataclass is hashable too; this is for sorting/caching)."""
        return tuple(getattr(self, k) for k in ALL_FIELDS)


def load_subconfig(path: str | Path) -> SubConfig:
    """Read our YAML or HAT's SubTransformer YAML; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of SubConfig keys, got {type(data).__name__}")
    if "subconfig" in data and isinstance(data["subconfig"], dict):
        data = data["subconfig"]
    return SubConfig.from_dict(data, source=str(path))


def save_subconfig(cfg: SubConfig, path: str | Path, hat_format: bool = False, space: "DesignSpace | None" = None) -> None:
    d = cfg.to_hat_dict(space) if hat_format else cfg.to_dict()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(d, sort_keys=False, default_flow_style=None), encoding="utf-8")


# --------------------------------------------------------------------------------------
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
                super_encoder_embed_dim=int(sup["encoder_embed_dim"]),
                super_decoder_embed_dim=int(sup["decoder_embed_dim"]),
                super_encoder_ffn_embed_dim=int(sup["encoder_ffn_embed_dim"]),
                super_decoder_ffn_embed_dim=int(sup["decoder_ffn_embed_dim"]),
                super_encoder_layer_num=int(sup["encoder_layer_num"]),
                super_decoder_layer_num=int(sup["decoder_layer_num"]),
                super_encoder_attention_heads=int(sup["encoder_attention_heads"]),
                super_decoder_attention_heads=int(sup["decoder_attention_heads"]),
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
            "super": {
                "encoder_embed_dim": self.super_encoder_embed_dim,
                "decoder_embed_dim": self.super_decoder_embed_dim,
                "encoder_ffn_embed_dim": self.super_encoder_ffn_embed_dim,
                "decoder_ffn_embed_dim": self.super_decoder_ffn_embed_dim,
                "encoder_layer_num": self.super_encoder_layer_num,
                "decoder_layer_num": self.super_decoder_layer_num,
                "encoder_attention_heads": self.super_encoder_attention_heads,
                "decoder_attention_heads": self.super_decoder_attention_heads,
                "qkv_dim": self.qkv_dim,
            },
            "choices": {k: list(v) for k, v in self.choices.items()},
        }

    def _check(self, source: str) -> None:
        missing = [k for k in ALL_FIELDS if k not in self.choices]
        if missing:
            raise ConfigError(f"{source}: choices missing for {', '.join(missing)}")
        unknown = sorted(set(self.choices) - set(ALL_FIELDS))
        if unknown:
            raise ConfigError(f"{source}: unknown choice key(s) {', '.join(unknown)}")
        limits = {
            "encoder_embed_dim": self.super_encoder_embed_dim,
            "decoder_embed_dim": self.super_decoder_embed_dim,
            "encoder_ffn_embed_dim": self.super_encoder_ffn_embed_dim,
            "decoder_ffn_embed_dim": self.super_decoder_ffn_embed_dim,
            "encoder_layer_num": self.super_encoder_layer_num,
            "decoder_layer_num": self.super_decoder_layer_num,
        }
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

    # ---- size ------------------------------------------------------------------
    def num_params(self, cfg: SubConfig, normalize_before: bool = False) -> int:
        return num_params(cfg, self, normalize_before)


# --------------------------------------------------------------------------------------
def available_spaces() -> list[str]:
    return available("space")


def load_space(name_or_path: str | Path) -> DesignSpace:
    """A shipped space by name (e.g. `wmt14.en-de`) or a YAML file path."""
    p = resolve(name_or_path, "space", "design space")
    data = read_yaml(p)
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: not a design-space file")
    return DesignSpace.from_dict(data, source=str(p))


# --------------------------------------------------------------------------------------
def _attn_params(q_in: int, kv_in: int, qkv: int, out: int) -> int:
    return (q_in * qkv + qkv) + 2 * (kv_in * qkv + qkv) + (qkv * out + out)


def _ffn_params(d: int, f: int) -> int:
    return d * f + f + f * d + d


def num_params(cfg: SubConfig, space: DesignSpace, normalize_before: bool = False) -> int:
    """Parameters in HAT's semantics: embeddings and the output projection excluded.

    Post-norm (HAT) has no final LayerNorms; pre-norm adds one per stack.
    """
    qkv = space.qkv_dim
    de, dd = cfg.encoder_embed_dim, cfg.decoder_embed_dim
    n = 0
    for f in cfg.encoder_ffn_embed_dim:
        n += _attn_params(de, de, qkv, de) + _ffn_params(de, f) + 2 * 2 * de
    for f in cfg.decoder_ffn_embed_dim:
        n += _attn_params(dd, dd, qkv, dd) + _attn_params(dd, de, qkv, dd) + _ffn_params(dd, f) + 3 * 2 * dd
    if normalize_before:
        n += 2 * de + 2 * dd
    return n


def encoder_layers_attended(cfg: SubConfig, layer: int) -> int:
    """How many of the last encoder layers decoder layer `layer` attends (arbitrary attention)."""
    a = cfg.decoder_arbitrary_ende_attn[layer]
    return min(1 if a == -1 else a + 1, cfg.encoder_layer_num)


def macs(cfg: SubConfig, space: DesignSpace, src_len: int = 30, tgt_len: int = 30, vocab_size: int = 0, beam: int = 1) -> int:
    """Multiply-accumulates of one translation: encoder on `src_len` tokens once, then
    `tgt_len` incremental decoder steps (KV cache) for `beam` hypotheses. With `vocab_size`
    the output projection is included."""
    qkv = space.qkv_dim
    de, dd, L = cfg.encoder_embed_dim, cfg.decoder_embed_dim, src_len
    m = 0
    for f in cfg.encoder_ffn_embed_dim:
        m += L * (4 * de * qkv) + 2 * L * L * qkv + 2 * L * de * f
    for i, f in enumerate(cfg.decoder_ffn_embed_dim):
        n_mem = encoder_layers_attended(cfg, i) * L
        m += beam * 2 * n_mem * de * qkv  # encoder K/V, computed once per hypothesis copy
        for t in range(1, tgt_len + 1):
            step = 4 * dd * qkv + 2 * t * qkv  # self-attn projections + scores over t cached keys
            step += 2 * dd * qkv + 2 * n_mem * qkv  # ende q/out + scores over encoder memory
            step += 2 * dd * f + dd * vocab_size * (i == len(cfg.decoder_ffn_embed_dim) - 1)
            m += beam * step
    return m


def features_hat(cfg: SubConfig) -> list[float]:
    """HAT's 10 latency-predictor features, normalised as HAT does."""
    raw = [
        cfg.encoder_embed_dim,
        cfg.encoder_layer_num,
        sum(cfg.encoder_ffn_embed_dim) / cfg.encoder_layer_num,
        sum(cfg.encoder_self_attention_heads) / cfg.encoder_layer_num,
        cfg.decoder_embed_dim,
        cfg.decoder_layer_num,
        sum(cfg.decoder_ffn_embed_dim) / cfg.decoder_layer_num,
        sum(cfg.decoder_self_attention_heads) / cfg.decoder_layer_num,
        sum(cfg.decoder_ende_attention_heads) / cfg.decoder_layer_num,
        sum(_arbitrary_to_count(a) for a in cfg.decoder_arbitrary_ende_attn) / cfg.decoder_layer_num,
    ]
    return [r / n for r, n in zip(raw, HAT_FEATURE_NORM)]


def hat_raw_features(cfg: SubConfig) -> dict[str, float]:
    """The 10 un-normalised averages, as HAT's latency CSV columns hold them."""
    return {name: f * n for name, f, n in zip(HAT_FEATURE_NAMES, features_hat(cfg), HAT_FEATURE_NORM)}


def _arbitrary_to_count(a: int) -> int:
    return 1 if a == -1 else a + 1


def features_full(cfg: SubConfig, space: DesignSpace) -> list[float]:
    """A per-layer encoding: scalars, then every layer slot up to the super depth (0 when the
    layer is absent), each value divided by its maximum so features lie in [0, 1]."""
    out = [
        cfg.encoder_embed_dim / space.super_encoder_embed_dim,
        cfg.decoder_embed_dim / space.super_decoder_embed_dim,
        cfg.encoder_layer_num / space.max_encoder_layers,
        cfg.decoder_layer_num / space.max_decoder_layers,
    ]
    for i in range(space.max_encoder_layers):
        present = i < cfg.encoder_layer_num
        out.append(cfg.encoder_ffn_embed_dim[i] / space.super_encoder_ffn_embed_dim if present else 0.0)
        out.append(cfg.encoder_self_attention_heads[i] / max(space.choices["encoder_self_attention_heads"]) if present else 0.0)
    hmax_s = max(space.choices["decoder_self_attention_heads"])
    hmax_e = max(space.choices["decoder_ende_attention_heads"])
    for i in range(space.max_decoder_layers):
        present = i < cfg.decoder_layer_num
        out.append(cfg.decoder_ffn_embed_dim[i] / space.super_decoder_ffn_embed_dim if present else 0.0)
        out.append(cfg.decoder_self_attention_heads[i] / hmax_s if present else 0.0)
        out.append(cfg.decoder_ende_attention_heads[i] / hmax_e if present else 0.0)
        out.append(_arbitrary_to_count(cfg.decoder_arbitrary_ende_attn[i]) / 3 if present else 0.0)
    return out


def describe(cfg: SubConfig) -> str:
    """A compact one-line summary, for logs and tables."""
    return (
        f"enc {cfg.encoder_layer_num}x{cfg.encoder_embed_dim} ffn{list(cfg.encoder_ffn_embed_dim)} "
        f"h{list(cfg.encoder_self_attention_heads)} | dec {cfg.decoder_layer_num}x{cfg.decoder_embed_dim} "
        f"ffn{list(cfg.decoder_ffn_embed_dim)} h{list(cfg.decoder_self_attention_heads)} "
        f"eh{list(cfg.decoder_ende_attention_heads)} arb{list(cfg.decoder_arbitrary_ende_attn)}"
    )


def geometric_mean(xs: Iterable[float]) -> float:
    xs = list(xs)
    return math.exp(sum(math.log(x) for x in xs) / len(xs))
