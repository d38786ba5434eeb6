"""Scorers (lower is better) for the architecture search, in the SCORERS registry.

A scorer maps SubConfigs to floats; the search only ever compares them. Every scorer
caches per configuration (evolution re-proposes the same subnets often) and, when
`torch.distributed` is initialised (torchrun), splits the configurations that still need
scoring across ranks and all-gathers the results, so every rank ends with the same cache
and therefore takes the same evolutionary decisions.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from hat.errors import HatError
from hat.registry import Registry
from hat.space import DesignSpace, SubConfig


# --------------------------------------------------------------------------------------
def _dist():
    """The initialised torch.distributed module, or None (single process)."""
    try:
        import torch.distributed as dist
    except Exception:  # pragma: no cover - torch without distributed
        return None
    return dist if dist.is_available() and dist.is_initialized() else None


def rank_and_world() -> tuple[int, int]:
    d = _dist()
    return (d.get_rank(), d.get_world_size()) if d else (0, 1)


@dataclass
class LossSettings:
    """What the loss scorer validates on: a fixed seeded subset of a split (0 sentences: all)."""

    valid_subset: str = "valid"
    valid_sentences: int = 500
    max_tokens: int = 4096
    label_smoothing: float = 0.0


class Scorer:
    """Base class: dedup + per-config cache + optional sharding over torch.distributed ranks.

    Subclasses implement `_score(cfgs)` for configurations not seen before, and `build` (what
    `hat search --scorer NAME` calls) when registered in SCORERS.
    """

    name = "base"
    #: worth spreading over ranks (cheap scorers are computed everywhere instead)
    distributed = False
    #: scores with the trained SuperTransformer (`hat search` then needs --checkpoint and --data)
    needs_model = False

    @classmethod
    def build(cls, space: DesignSpace, model: Any = None, data: str | Path | None = None, seed: int = 1,
              settings: LossSettings | None = None) -> "Scorer":
        """The scorer for a search over `space` (model and data are given when `needs_model`)."""
        raise NotImplementedError(f"scorer {cls.name} cannot be built from search settings")

    def __init__(self) -> None:
        self.cache: dict[SubConfig, float] = {}
        self.calls = 0  # configurations actually computed (cache misses) by this rank
        self.seconds = 0.0

    def score(self, cfgs: Sequence[SubConfig]) -> list[float]:
        """Scores for `cfgs` (lower is better), computing only uncached ones."""
        todo = list(dict.fromkeys(c for c in cfgs if c not in self.cache))
        if todo:
            t0 = time.perf_counter()
            d = _dist() if self.distributed else None
            if d is not None and d.get_world_size() > 1:
                rank, world = d.get_rank(), d.get_world_size()
                mine = todo[rank::world]
                vals = self._score(mine) if mine else []
                self.calls += len(mine)
                gathered: list[Any] = [None] * world
                d.all_gather_object(gathered, [float(v) for v in vals])
                for r in range(world):
                    for c, v in zip(todo[r::world], gathered[r]):
                        self.cache[c] = float(v)
            else:
                vals = self._score(todo)
                self.calls += len(todo)
                for c, v in zip(todo, vals):
                    self.cache[c] = float(v)
            self.seconds += time.perf_counter() - t0
        return [self.cache[c] for c in cfgs]

    def score_one(self, cfg: SubConfig) -> float:
        return self.score([cfg])[0]

    def _score(self, cfgs: list[SubConfig]) -> list[float]:  # pragma: no cover - abstract
        raise NotImplementedError


# --------------------------------------------------------------------------------------
def decoder_params(cfg: SubConfig, space: DesignSpace) -> int:
    """Decoder non-embedding parameters (self-attn, enc-dec attn, FFN, LayerNorms).

    Same semantics as `hat.space.num_params` restricted to the decoder: Q/K/V project to
    `qkv_dim`; enc-dec K/V read the encoder embed dim; no embeddings, no output projection.
    """
    q, dd, de = space.qkv_dim, cfg.decoder_embed_dim, cfg.encoder_embed_dim
    n = 0
    for f in cfg.decoder_ffn_embed_dim:
        self_attn = (dd * q + q) + 2 * (dd * q + q) + (q * dd + dd)
        ende_attn = (dd * q + q) + 2 * (de * q + q) + (q * dd + dd)
        ffn = dd * f + f + f * dd + dd
        n += self_attn + ende_attn + ffn + 3 * 2 * dd
    return n


SCORERS: Registry[type[Scorer]] = Registry("scorer")


@SCORERS.register("params")
class ParamsScorer(Scorer):
    """LiteTransformerSearch's training-free proxy: more decoder non-embedding parameters is
    better, so the score is their negated count. Needs no checkpoint and no data."""

    name = "params"

    def __init__(self, space: DesignSpace) -> None:
        super().__init__()
        self.space = space

    @classmethod
    def build(cls, space: DesignSpace, model: Any = None, data: str | Path | None = None, seed: int = 1,
              settings: LossSettings | None = None) -> "ParamsScorer":
        return cls(space)

    def _score(self, cfgs: list[SubConfig]) -> list[float]:
        return [-float(decoder_params(c, self.space)) for c in cfgs]


class FunctionScorer(Scorer):
    """Wrap any `cfg -> float` (toy objectives in tests and benchmarks)."""

    name = "function"

    def __init__(self, fn: Callable[[SubConfig], float], name: str = "function") -> None:
        super().__init__()
        self.fn, self.name = fn, name

    def _score(self, cfgs: list[SubConfig]) -> list[float]:
        return [float(self.fn(c)) for c in cfgs]


@SCORERS.register("loss")
class LossScorer(Scorer):
    """Validation loss (nats per target token) of the SuperTransformer configured to each
    SubConfig, i.e. with inherited weights: HAT's search objective.

    The validation subset is drawn once with a seeded RNG and collated once, so every
    candidate is scored on exactly the same tokens; eval mode and no_grad throughout.
    """

    name = "loss"
    distributed = True
    needs_model = True

    def __init__(
        self,
        model: Any,
        data_dir: str | Path,
        *,
        split: str = LossSettings.valid_subset,
        valid_sentences: int = LossSettings.valid_sentences,
        max_tokens: int = LossSettings.max_tokens,
        seed: int = 1,
        label_smoothing: float = LossSettings.label_smoothing,
    ) -> None:
        super().__init__()
        import torch

        from hat.data import ParallelDataset, batch_by_tokens, collate

        self.model = model.eval()
        self.label_smoothing = float(label_smoothing)
        ds = ParallelDataset(data_dir, split)
        if len(ds) == 0:
            raise HatError(f"{data_dir}: the {split} split is empty")
        n = len(ds) if valid_sentences <= 0 else min(valid_sentences, len(ds))
        idx = sorted(random.Random(seed).sample(range(len(ds)), n))
        self.indices = idx
        src_sizes, tgt_sizes = ds.src_sizes[idx], ds.tgt_sizes[idx]
        groups = batch_by_tokens(src_sizes, tgt_sizes, max_tokens, shuffle=False, skip_too_long=False,
                                 max_positions=model.args.max_positions, what=f"loss scorer ({split})")
        if not groups:
            raise HatError(f"{data_dir}: no {split} pair fits the model's max_positions ({model.args.max_positions})")
        self.pad = ds.tgt_dict.pad
        device = next(model.parameters()).device  # score where the model lives (CPU or GPU)
        keys = ("src_tokens", "src_lengths", "prev_output_tokens", "target")
        self.batches = []
        for g in groups:
            b = collate([ds[idx[j]] for j in g], ds.tgt_dict.pad, ds.tgt_dict.eos)
            for k in keys:
                b[k] = b[k].to(device)
            self.batches.append(b)
        self.ntokens = sum(b["ntokens"] for b in self.batches)
        self._torch = torch

    @classmethod
    def build(cls, space: DesignSpace, model: Any = None, data: str | Path | None = None, seed: int = 1,
              settings: LossSettings | None = None) -> "LossScorer":
        s = settings or LossSettings()
        return cls(model, data, split=s.valid_subset, valid_sentences=s.valid_sentences, max_tokens=s.max_tokens,
                   seed=seed, label_smoothing=s.label_smoothing)

    def _score(self, cfgs: list[SubConfig]) -> list[float]:
        torch = self._torch
        F = torch.nn.functional
        out = []
        self.model.eval()
        with torch.no_grad():
            for cfg in cfgs:
                self.model.configure(cfg)
                total = 0.0
                for b in self.batches:
                    logits = self.model(b["src_tokens"], b["src_lengths"], b["prev_output_tokens"])
                    total += float(F.cross_entropy(
                        logits.float().reshape(-1, logits.size(-1)), b["target"].reshape(-1),
                        ignore_index=self.pad, reduction="sum", label_smoothing=self.label_smoothing,
                    ))
                out.append(total / max(self.ntokens, 1))
        return out


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall tau-b (ties handled), so benchmarks need no scipy."""
    n = len(a)
    conc = disc = ta = tb = 0
    for i in range(n):
        for j in range(i + 1, n):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ta += 1
            elif db == 0:
                tb += 1
            elif (da > 0) == (db > 0):
                conc += 1
            else:
                disc += 1
    denom = math.sqrt((conc + disc + ta) * (conc + disc + tb))
    return (conc - disc) / denom if denom else float("nan")
