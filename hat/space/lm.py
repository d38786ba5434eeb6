"""Decoder-only language models: their design space (`LMSpace`) and one architecture (`LMConfig`).

The genes are LiteTransformerSearch's for GPT-2: depth, model width, and per layer the FFN width
and the head count. As in GPT-2 the attention width is the model width (`head_dim = embed_dim /
heads`), so every head choice must divide every width choice. A space also fixes the vocabulary
and the context length (`max_positions`): both are part of what a decoder-only model costs.

LM files say `task: lm` (a space also `version: 1`), so an LM file given where a translation
file is expected, or the reverse, is refused in one line naming the file.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hat.errors import ConfigError
from hat.files import atomic_write_text
from hat.shipped import read_yaml, resolve
from hat.space.config import check_keys, freeze_genes, genes_dict, layer_genes, scalar_gene
from hat.space.design import DesignSpace, load_space

TASK = "lm"
VERSION = 1
SCALARS = ("layer_num", "embed_dim")
PER_LAYER = ("ffn_embed_dim", "attention_heads")
GENES = SCALARS + PER_LAYER
SPACE_KEYS = ("version", "task", "name", "description", "vocab_size", "max_positions", "choices")


def _translation_keys(keys: Any) -> list[str]:
    """Keys only an encoder-decoder file has."""
    return sorted(k for k in keys if str(k).startswith(("encoder", "decoder")) or k in ("super", "qkv_dim"))


def _check_task(d: Any, source: str, what: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: not a decoder-only LM {what} (expected a mapping, got {type(d).__name__})")
    task = d.get("task")
    if task != TASK:
        why = f"`task: {TASK}` missing" if task is None else f"task {task!r}, not {TASK}"
        if _translation_keys(d) or "subconfig" in d:
            raise ConfigError(f"{source}: a translation {what}, not a decoder-only LM one ({why})")
        raise ConfigError(f"{source}: not a decoder-only LM {what} ({why})")
    return d


@dataclass(frozen=True)
class LMConfig:
    """One decoder-only architecture; the per-layer tuples have exactly `layer_num` entries."""

    layer_num: int
    embed_dim: int
    ffn_embed_dim: tuple[int, ...]
    attention_heads: tuple[int, ...]

    def __post_init__(self) -> None:
        freeze_genes(self, SCALARS, {"layer_num": PER_LAYER})

    def to_dict(self) -> dict[str, Any]:
        return genes_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> "LMConfig":
        """Our keys (a `task: lm` key may stand among them); per-layer lists longer than the depth
        are truncated, a scalar means every layer."""
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a mapping of LM config keys, got {type(d).__name__}")
        d = {k: v for k, v in d.items() if k != "task"}
        foreign = _translation_keys(d)
        if foreign:
            raise ConfigError(f"{source}: translation key(s) {', '.join(foreign)} in a decoder-only LM config")
        check_keys(d, GENES, source, f" (an LM config has {', '.join(GENES)})")
        out: dict[str, Any] = {k: scalar_gene(d, k, source) for k in SCALARS}
        return cls(**out, **{k: layer_genes(d, k, "layer_num", source) for k in PER_LAYER})

    def describe(self) -> str:
        """A compact one-line summary, for logs and tables."""
        return f"lm {self.layer_num}x{self.embed_dim} ffn{list(self.ffn_embed_dim)} h{list(self.attention_heads)}"


@dataclass(frozen=True)
class LMSpace:
    """The choices of each gene, the vocabulary and the context length. The super model (for
    weight sharing) has the largest of every choice."""

    name: str
    vocab_size: int
    max_positions: int
    choices: dict[str, tuple[int, ...]] = field(hash=False)
    description: str = ""

    def top(self, gene: str) -> int:
        """The largest choice of `gene`: the super model's size for it."""
        return max(self.choices[gene])

    # ---- io ----------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Any, source: str = "space") -> "LMSpace":
        d = _check_task(d, source, "space")
        foreign = _translation_keys(d) + _translation_keys(d.get("choices") or {})
        if any(k.startswith("encoder") for k in foreign):
            raise ConfigError(f"{source}: encoder key(s) {', '.join(foreign)} in a decoder-only LM space")
        if foreign:
            raise ConfigError(f"{source}: translation key(s) {', '.join(foreign)} in a decoder-only LM space "
                              f"(its genes are {', '.join(GENES)})")
        if d.get("version") != VERSION:
            raise ConfigError(f"{source}: LM space version {d.get('version')!r}, this hat reads version {VERSION}")
        unknown = sorted(map(str, set(d) - set(SPACE_KEYS)))
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)} (an LM space has {', '.join(SPACE_KEYS)})")
        try:
            space = cls(name=str(d["name"]), vocab_size=_int(d["vocab_size"]), max_positions=_int(d["max_positions"]),
                        choices={str(k): tuple(_int(x) for x in v) for k, v in d["choices"].items()},
                        description=str(d.get("description", "")))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ConfigError(f"{source}: not a decoder-only LM space ({type(e).__name__}: {e})") from None
        space._check(source)
        return space

    def to_dict(self) -> dict[str, Any]:
        return {"version": VERSION, "task": TASK, "name": self.name, "description": self.description,
                "vocab_size": self.vocab_size, "max_positions": self.max_positions,
                "choices": {k: list(v) for k, v in self.choices.items()}}

    def _check(self, source: str) -> None:
        unknown = sorted(set(self.choices) - set(GENES))
        missing = [k for k in GENES if k not in self.choices]
        if unknown or missing:
            what = f"unknown choice key(s) {', '.join(unknown)}" if unknown else f"choices missing for {', '.join(missing)}"
            raise ConfigError(f"{source}: {what} (an LM space chooses {', '.join(GENES)})")
        empty = [k for k in GENES if not self.choices[k]]
        if empty:
            raise ConfigError(f"{source}: no choices for {', '.join(empty)} (each gene needs at least one)")
        if any(v < 1 for vs in self.choices.values() for v in vs):
            raise ConfigError(f"{source}: dims, depths and head counts must be >= 1")
        for h in self.choices["attention_heads"]:
            for dim in self.choices["embed_dim"]:
                if dim % h:
                    raise ConfigError(f"{source}: attention_heads choice {h} does not divide embed_dim choice {dim}")
        if self.vocab_size < 5:  # the 4 specials and one symbol
            raise ConfigError(f"{source}: vocab_size {self.vocab_size} is below 5")
        if self.max_positions < 2:
            raise ConfigError(f"{source}: max_positions {self.max_positions} is below 2 (no next token to predict)")

    # ---- validation ----------------------------------------------------------
    def validate(self, cfg: LMConfig, source: str = "config") -> LMConfig:
        """Raise ConfigError naming the field, value and allowed choices; return cfg."""
        if not isinstance(cfg, LMConfig):
            raise ConfigError(f"{source}: a {type(cfg).__name__}, not a decoder-only LM config, for LM space {self.name}")
        for k in GENES:
            vals = getattr(cfg, k)
            for i, v in enumerate(vals if isinstance(vals, tuple) else (vals,)):
                if v not in self.choices[k]:
                    where = f"{k}[{i}]" if isinstance(vals, tuple) else k
                    raise ConfigError(f"{source}: {where}={v} is not in space {self.name} (choices {list(self.choices[k])})")
        return cfg

    def contains(self, cfg: LMConfig) -> bool:
        try:
            self.validate(cfg)
            return True
        except ConfigError:
            return False

    def size(self) -> int:
        """How many distinct LMConfigs the space holds."""
        per_layer = len(self.choices["ffn_embed_dim"]) * len(self.choices["attention_heads"])
        return len(self.choices["embed_dim"]) * sum(per_layer ** n for n in self.choices["layer_num"])

    # ---- sampling ----------------------------------------------------------------
    def sample(self, rng: random.Random) -> LMConfig:
        """Uniform sample: every gene drawn independently from its choices."""
        n = rng.choice(self.choices["layer_num"])
        return LMConfig(n, rng.choice(self.choices["embed_dim"]),
                        *([rng.choice(self.choices[k]) for _ in range(n)] for k in PER_LAYER))

    def spread(self, n: int, rng: random.Random) -> list[LMConfig]:
        """`n` distinct configs: the smallest and the largest (the ends of any trade-off), then
        uniform samples (fewer when the space holds fewer)."""
        seen = dict.fromkeys([self.smallest(), self.largest()][:n])
        for _ in range(100 * n):
            if len(seen) >= n:
                break
            seen.setdefault(self.sample(rng))
        return list(seen)

    def _extreme(self, pick: Any) -> LMConfig:
        n = pick(self.choices["layer_num"])
        return LMConfig(n, pick(self.choices["embed_dim"]), *([pick(self.choices[k])] * n for k in PER_LAYER))

    def largest(self) -> LMConfig:
        return self._extreme(max)

    def smallest(self) -> LMConfig:
        return self._extreme(min)

    # ---- gene encoding (for integer-vector optimisers such as pymoo's NSGA-II) --------------
    def gene_slots(self) -> list[tuple[str, int | None]]:
        """(gene, layer index or None) of each position of `encode`'s vector: depth, width, then
        every per-layer gene up to the deepest choice (slots past a config's depth are inert)."""
        deep = self.top("layer_num")
        return [(k, None) for k in SCALARS] + [(k, i) for k in PER_LAYER for i in range(deep)]

    def gene_upper(self) -> list[int]:
        """The largest choice index of each slot (the lower bound is 0)."""
        return [len(self.choices[k]) - 1 for k, _ in self.gene_slots()]

    def encode(self, cfg: LMConfig) -> list[int]:
        """Choice indices of `cfg`; per-layer slots past its depth hold index 0."""
        out = []
        for k, i in self.gene_slots():
            v = getattr(cfg, k) if i is None else getattr(cfg, k)[i] if i < cfg.layer_num else self.choices[k][0]
            out.append(self.choices[k].index(v))
        return out

    def decode(self, genes: Any) -> LMConfig:
        """The LMConfig of a vector of choice indices (floats are rounded and clipped to the choices)."""
        vals: dict[str, Any] = {k: [] for k in PER_LAYER}
        for (k, i), g, top in zip(self.gene_slots(), genes, self.gene_upper()):
            v = self.choices[k][min(max(int(round(float(g))), 0), top)]
            if i is None:
                vals[k] = v
            else:
                vals[k].append(v)
        n = vals["layer_num"]
        return LMConfig(n, vals["embed_dim"], *(vals[k][:n] for k in PER_LAYER))


def _int(v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise ValueError(f"{v!r} is not an integer")
    return v


def _space_data(name_or_path: str | Path) -> tuple[Path, Any]:
    p = resolve(name_or_path, "space", "design space")
    return p, read_yaml(p)


def load_lm_space(name_or_path: str | Path) -> LMSpace:
    """A shipped LM space by name (e.g. `lm-tiny`) or a YAML file path."""
    p, data = _space_data(name_or_path)
    return LMSpace.from_dict(data, source=str(p))


def load_any_space(name_or_path: str | Path) -> DesignSpace | LMSpace:
    """The space of either task, by its `task` key: for commands that take both."""
    p, data = _space_data(name_or_path)
    if isinstance(data, dict) and data.get("task") == TASK:
        return LMSpace.from_dict(data, source=str(p))
    return load_space(p)


def is_lm_file(path: str | Path) -> bool:
    """Whether `path` is a YAML mapping that says `task: lm` (an LM config or space); False when
    there is no such file (the translation loader then says so)."""
    if not Path(path).is_file():
        return False
    data = read_yaml(Path(path))
    return isinstance(data, dict) and data.get("task") == TASK


def load_lm_config(path: str | Path) -> LMConfig:
    """Read an LM config YAML (`save_lm_config`'s, metadata or not); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    data = _check_task(read_yaml(path), str(path), "config")
    if isinstance(data.get("subconfig"), dict):
        data = data["subconfig"]
    else:
        data = {k: v for k, v in data.items() if k != "metadata"}
    return LMConfig.from_dict(data, source=str(path))


def save_lm_config(cfg: LMConfig, path: str | Path, metadata: dict[str, Any] | None = None) -> None:
    """`{task: lm, <genes>}`, or with `metadata` `{task: lm, subconfig: ..., metadata: ...}` (as
    `save_subconfig` writes a translation SubConfig's); `load_subconfig_metadata` reads it back."""
    d: dict[str, Any] = {"task": TASK, **cfg.to_dict()}
    if metadata is not None:
        d = {"task": TASK, "subconfig": cfg.to_dict(), "metadata": metadata}
    atomic_write_text(path, yaml.safe_dump(d, sort_keys=False, default_flow_style=None))


def save_lm_space(space: LMSpace, path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(space.to_dict(), sort_keys=False, default_flow_style=None))
