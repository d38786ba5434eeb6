"""One architecture: SubConfig, its fields, and HAT-compatible YAML io.

A SubConfig lists per-layer values (FFN width, heads, arbitrary encoder-decoder attention) for
exactly its depth; `from_dict` reads our keys or HAT's `*-subtransformer` keys, so HAT's
published SubTransformer YAMLs load as they are.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from hat.errors import ConfigError
from hat.files import atomic_write_text
from hat.shipped import read_yaml

if TYPE_CHECKING:
    from hat.space.design import DesignSpace

LAYER_FIELDS_ENC = ("encoder_ffn_embed_dim", "encoder_self_attention_heads")
LAYER_FIELDS_DEC = (
    "decoder_ffn_embed_dim",
    "decoder_self_attention_heads",
    "decoder_ende_attention_heads",
    "decoder_arbitrary_ende_attn",
)
SCALAR_FIELDS = ("encoder_embed_dim", "decoder_embed_dim", "encoder_layer_num", "decoder_layer_num")
ALL_FIELDS = SCALAR_FIELDS + LAYER_FIELDS_ENC + LAYER_FIELDS_DEC
# sanity bounds of any architecture (HAT's largest: 6+6 layers of width 1024); a space narrows them
MAX_LAYERS, MAX_DIM = 1024, 1 << 20

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


def freeze_genes(cfg: Any, scalars: tuple[str, ...], layers: dict[str, tuple[str, ...]]) -> None:
    """Coerce a frozen config's genes in place: scalars to int, per-layer values to tuples of int
    (hashable), each exactly as long as its depth (`layers`: depth field -> its per-layer fields)."""
    for name in (n for names in layers.values() for n in names):
        object.__setattr__(cfg, name, tuple(int(v) for v in getattr(cfg, name)))
    for name in scalars:
        object.__setattr__(cfg, name, int(getattr(cfg, name)))
    for depth_key, names in layers.items():
        for name in names:
            if len(getattr(cfg, name)) != getattr(cfg, depth_key):
                raise ConfigError(f"{name} has {len(getattr(cfg, name))} entries, {depth_key} is {getattr(cfg, depth_key)}")


def genes_dict(cfg: Any) -> dict[str, Any]:
    """A config dataclass as plain YAML values (per-layer tuples as lists)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}


def check_keys(d: dict[str, Any], fields: tuple[str, ...], source: str, note: str = "") -> None:
    """Refuse a config mapping with keys other than `fields`, or without one of them."""
    unknown = sorted(map(str, set(d) - set(fields)))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}{note}")
    missing = [k for k in fields if k not in d]
    if missing:
        raise ConfigError(f"{source}: missing key(s) {', '.join(missing)}")


def scalar_gene(d: dict[str, Any], k: str, source: str) -> int:
    """`d[k]` as a depth or a dim: an integer within the sanity bounds."""
    if not isinstance(d[k], int) or isinstance(d[k], bool):
        raise ConfigError(f"{source}: {k} must be an integer, got {d[k]!r}")
    top = MAX_LAYERS if k.endswith("layer_num") else MAX_DIM
    if not 1 <= d[k] <= top:  # bounded before a scalar per-layer value is repeated `depth` times
        raise ConfigError(f"{source}: {k}={d[k]} is outside 1..{top}")
    return d[k]


def layer_genes(d: dict[str, Any], k: str, depth_key: str, source: str) -> tuple[int, ...]:
    """`d[k]` as one value per layer of depth `d[depth_key]` (already checked): a scalar means
    every layer, a longer list is truncated to the depth (HAT pads its lists to the super depth)."""
    depth, v = d[depth_key], d[k]
    if isinstance(v, int) and not isinstance(v, bool):
        v = [v] * depth  # a scalar means "every layer"
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        raise ConfigError(f"{source}: {k} must be a list of integers, got {v!r}")
    if len(v) < depth:
        raise ConfigError(f"{source}: {k} has {len(v)} entries but {depth_key} is {depth}")
    return tuple(v[:depth])


def refuse_lm_file(data: Any, path: str | Path, what: str) -> None:
    """A decoder-only LM file (`task: lm`, see `hat.space.lm`) where a translation `what` is expected."""
    if isinstance(data, dict) and data.get("task") == "lm":
        raise ConfigError(f"{path}: a decoder-only LM file (task: lm), not a translation {what}")


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
        freeze_genes(self, SCALAR_FIELDS, {"encoder_layer_num": LAYER_FIELDS_ENC, "decoder_layer_num": LAYER_FIELDS_DEC})

    # ---- conversion -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return genes_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> "SubConfig":
        """Build from our keys or HAT's keys; per-layer lists longer than the depth are truncated."""
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a mapping of SubConfig keys, got {type(d).__name__}")
        d = dict(d)
        if any(k in _FROM_HAT for k in d):
            d = {_FROM_HAT.get(k, k): v for k, v in d.items()}
        check_keys(d, ALL_FIELDS, source)
        out: dict[str, Any] = {k: scalar_gene(d, k, source) for k in SCALAR_FIELDS}
        for names, depth_key in ((LAYER_FIELDS_ENC, "encoder_layer_num"), (LAYER_FIELDS_DEC, "decoder_layer_num")):
            for k in names:
                out[k] = layer_genes(d, k, depth_key, source)
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
    refuse_lm_file(data, path, "SubConfig")
    if "subconfig" in data and isinstance(data["subconfig"], dict):
        data = data["subconfig"]
    return SubConfig.from_dict(data, source=str(path))


def load_subconfig_metadata(path: str | Path) -> dict[str, Any]:
    """The `metadata:` mapping that `save_subconfig(..., metadata=...)` wrote ({} when none)."""
    data = read_yaml(Path(path))
    meta = data.get("metadata") if isinstance(data, dict) else None
    if meta is not None and not isinstance(meta, dict):
        raise ConfigError(f"{path}: metadata must be a mapping, got {type(meta).__name__}")
    return meta or {}


def save_subconfig(cfg: SubConfig, path: str | Path, hat_format: bool = False, space: "DesignSpace | None" = None,
                   metadata: dict[str, Any] | None = None) -> None:
    """Our YAML (or HAT's, `hat_format`); with `metadata` (ours only), `{subconfig: ..., metadata: ...}`,
    which `load_subconfig` reads too (e.g. the latency a search predicted and measured)."""
    d = cfg.to_hat_dict(space) if hat_format else cfg.to_dict()
    if metadata is not None and not hat_format:
        d = {"subconfig": d, "metadata": metadata}
    atomic_write_text(path, yaml.safe_dump(d, sort_keys=False, default_flow_style=None))


def ende_attn_count(a: int) -> int:
    """Encoder layers one `decoder_arbitrary_ende_attn` value asks for: -1 -> 1, 1 -> 2, 2 -> 3."""
    return 1 if a == -1 else a + 1


def encoder_layers_attended(cfg: SubConfig, layer: int) -> int:
    """How many of the last encoder layers decoder layer `layer` attends (arbitrary attention)."""
    return min(ende_attn_count(cfg.decoder_arbitrary_ende_attn[layer]), cfg.encoder_layer_num)


def describe(cfg: SubConfig) -> str:
    """A compact one-line summary, for logs and tables."""
    return (
        f"enc {cfg.encoder_layer_num}x{cfg.encoder_embed_dim} ffn{list(cfg.encoder_ffn_embed_dim)} "
        f"h{list(cfg.encoder_self_attention_heads)} | dec {cfg.decoder_layer_num}x{cfg.decoder_embed_dim} "
        f"ffn{list(cfg.decoder_ffn_embed_dim)} h{list(cfg.decoder_self_attention_heads)} "
        f"eh{list(cfg.decoder_ende_attention_heads)} arb{list(cfg.decoder_arbitrary_ende_attn)}"
    )
