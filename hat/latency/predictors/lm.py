"""Latency and memory predictors of decoder-only LM generation (`lm-cost`), in the predictor registry.

Features of an `LMConfig` (for a prompt of P tokens and N generated ones): depth and width, and per
layer slot up to the deepest choice the FFN width and head count, each divided by its largest
choice (`LMSpace.top`; 0 past the depth), then the analytic terms the price fit reads:

- prefill MACs (P tokens, last-position logits) and decode MACs (N cached steps, `lm_macs`),
- bytes of weights read by the decode steps (each cached step reads every weight once: small-batch
  decoding is memory-bound),
- layer-steps (depth x (N + 1): the per-op overhead of a small model),

plus a constant. Latency = their non-negative prices fit for the least relative L1 error (the
translation `cost` model's fit, `l1_relative_fit`), with the same split-conformal interval.
Memory is fit the same way, not assumed: on weight bytes, KV-cache bytes, the largest activation
and a constant, against the measured peaks (`predict_memory`).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from hat.errors import ConfigError, DataError
from hat.latency.predictors.base import Predictor, Rows, fit, register
from hat.latency.predictors.cost import l1_relative_fit
from hat.space import LMConfig, LMSpace, lm_decoder_params, lm_macs, lm_params

LM_TERMS = ("prefill_macs", "decode_macs", "decode_weight_bytes", "layer_steps")
MEMORY_TERMS = ("weight_bytes", "kv_cache_bytes", "activation_bytes", "const")
FLOAT_BYTES = 4


def lm_features(cfgs: Sequence[LMConfig], space: LMSpace, prompt_len: int, gen_len: int) -> np.ndarray:
    """(N configs, shape features + LM_TERMS) as the module docstring lists them."""
    deep, out = space.top("layer_num"), []
    for c in cfgs:
        pad = deep - c.layer_num
        shape = [c.layer_num / deep, c.embed_dim / space.top("embed_dim")]
        shape += [f / space.top("ffn_embed_dim") for f in c.ffn_embed_dim] + [0.0] * pad
        shape += [h / space.top("attention_heads") for h in c.attention_heads] + [0.0] * pad
        prefill = lm_macs(c, space, prompt_len, 0)
        decode = lm_macs(c, space, prompt_len, gen_len) - prefill
        weights = FLOAT_BYTES * gen_len * lm_params(c, space)
        out.append(shape + [prefill, decode, weights, c.layer_num * (gen_len + 1)])
    return np.array(out, dtype=np.float64)


def memory_basis(cfgs: Sequence[LMConfig], space: LMSpace, prompt_len: int, gen_len: int, batch: int = 1) -> np.ndarray:
    """MEMORY_TERMS of each config, in bytes (the constant as 1)."""
    rows = []
    for c in cfgs:
        weights = FLOAT_BYTES * (lm_params(c, space) + space.max_positions * c.embed_dim)
        kv = FLOAT_BYTES * 2 * c.layer_num * batch * (prompt_len + gen_len) * c.embed_dim
        act = FLOAT_BYTES * batch * (prompt_len * max(max(c.ffn_embed_dim), c.embed_dim) + space.vocab_size)
        rows.append([weights, kv, act, 1.0])
    return np.array(rows, dtype=np.float64)


@register("lm-cost")
class LMCost(Predictor):
    """Decoder-only LM generation: ms = sum_k c_k LM_TERMS_k + c_0, c >= 0 (least relative L1).
    Options `prompt_len`/`gen_len`/`batch` are the protocol of the rows it was fit on."""

    OPTIONS: dict[str, Any] = {"prompt_len": 32, "gen_len": 32, "batch": 1}

    def _space_obj(self) -> LMSpace | None:  # type: ignore[override]
        return None if self.space is None else LMSpace.from_dict(self.space, source=f"predictor {self.source}")

    def check_space(self, space: Any) -> None:
        """Refuse a translation space, and an LM space other than the fitted one (vocabulary,
        context, or choices outside the fitted ones)."""
        mine = self._space_obj()
        where = self.source or "predictor"
        if not isinstance(space, LMSpace):
            raise ConfigError(f"{where}: a decoder-only LM latency predictor (space {mine.name if mine else '?'}), "
                              f"not one for translation space {getattr(space, 'name', space)}")
        if mine is None:
            return
        if (space.vocab_size, space.max_positions) != (mine.vocab_size, mine.max_positions):
            raise ConfigError(f"{where}: fit on space {mine.name} (vocabulary {mine.vocab_size}, context "
                              f"{mine.max_positions}); space {space.name} differs")
        for k, vals in space.choices.items():
            extra = set(vals) - set(mine.choices.get(k, ()))
            if extra:
                raise ConfigError(f"{where}: fit on space {mine.name}; space {space.name} has {k} choices "
                                  f"{sorted(extra)} outside it")

    def rows_for(self, cfgs: Sequence[Any]) -> Rows:
        space = self._space_obj()
        if space is None:
            raise ConfigError(f"{self.source or 'predictor'}: an LM predictor without its space (refit it)")
        for c in cfgs:
            if not isinstance(c, LMConfig):
                raise ConfigError(f"{self.source or 'predictor'}: a decoder-only LM predictor, given a "
                                  f"{type(c).__name__} (a translation config)")
            space.validate(c, source=f"{self.source or 'predictor'}: config")
        o = self.options
        return Rows(lm_features(cfgs, space, o["prompt_len"], o["gen_len"]))

    def rows_of(self, data: Any) -> Rows:
        if not hasattr(data, "prompt_len"):
            raise DataError(f"{data.path}: translation latency rows; model {self.name} fits decoder-only LM rows")
        return self.rows_for(data.configs)

    def _basis(self, rows: Rows) -> np.ndarray:
        t = rows.raw10[:, -len(LM_TERMS):]
        return np.concatenate([t, np.ones((len(t), 1))], 1)

    def _predict(self, rows: Rows) -> np.ndarray:
        return np.maximum(self._basis(rows) @ self.state["coef"].numpy(), 1e-6)

    def _fit(self, rows: Rows, y: np.ndarray, seed: int) -> None:
        self.state = {**self.state, "coef": torch.tensor(l1_relative_fit(self._basis(rows), y)),
                      "terms": [*LM_TERMS, "const"]}

    def predict_memory(self, cfgs: Sequence[LMConfig]) -> np.ndarray:
        """Peak memory in bytes (the fit on the measured peaks)."""
        cfgs = list(cfgs)
        if "memory_coef" not in self.state:
            raise ConfigError(f"{self.source or 'predictor'}: has no memory fit (refit it with hat fit-predictor)")
        self.rows_for(cfgs)  # the same checks as latency
        o = self.options
        b = memory_basis(cfgs, self._space_obj(), o["prompt_len"], o["gen_len"], o["batch"])
        return np.maximum(b @ self.state["memory_coef"].numpy(), 1.0)


def fit_lm(data: Any, space: LMSpace, device: str = "", seed: int = 0, lat_norm: float = 100.0) -> LMCost:
    """`lm-cost` fit on an `LMLatencyData`: latency with its interval, then memory on the same rows."""
    batch = int(data.meta.get("protocol", {}).get("batch", 1))
    pred = fit(data, "lm-cost", space, None, lat_norm, device, seed, prompt_len=data.prompt_len,
               gen_len=data.gen_len, batch=batch)
    b = memory_basis(data.configs, space, data.prompt_len, data.gen_len, batch)
    pred.state["memory_coef"] = torch.tensor(l1_relative_fit(b, np.asarray(data.memory_bytes, dtype=np.float64)))
    pred.state["memory_terms"] = list(MEMORY_TERMS)
    return pred
