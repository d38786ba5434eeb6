"""fairseq `--user-dir` plugin: HAT SubTransformers with heterogeneous layers.

Registers the model and architecture `hat_subtransformer`. Self-contained (torch + fairseq
only, no `hat` import), so an export directory works on any machine with fairseq:

    fairseq-generate DATA --path EXPORT/checkpoint.pt --user-dir EXPORT/hat_fairseq_plugin \\
        --beam 4 --lenpen 0.6 --required-batch-size-multiple 1 ...

Semantics (HAT's, and those of `hat.model`):
- per-layer FFN widths and head counts (`*_all` lists in the checkpoint's `cfg.model`);
- Q/K/V width fixed at `qkv_dim`: heads change `head_dim = qkv_dim / heads`;
- arbitrary encoder-decoder attention: decoder layer i attends the last
  `decoder_arbitrary_ende_attn_all[i] + 1` encoder layers (-1: last only) concatenated along time;
- sinusoidal positions from a table of width `encoder_pos_dim` / `decoder_pos_dim` (the
  SuperTransformer's) sliced to the first `d` dims, NOT recomputed at `d` as fairseq would;
- a shared embedding table of width max(enc, dec) read at each side's width; tokens scaled by
  sqrt(d); with shared input/output embeddings the output projection is the (sliced) table.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fairseq.models import (
    FairseqEncoder,
    FairseqEncoderDecoderModel,
    FairseqIncrementalDecoder,
    register_model,
    register_model_architecture,
)

ARCH = "hat_subtransformer"

# option -> default (the per-layer lists have no default: the checkpoint must carry them)
DEFAULTS: Dict[str, Any] = {
    "encoder_embed_dim": 512,
    "decoder_embed_dim": 512,
    "encoder_layers": 6,
    "decoder_layers": 6,
    "qkv_dim": 512,
    "encoder_pos_dim": None,  # None: the model's own width
    "decoder_pos_dim": None,
    "share_all_embeddings": True,
    "share_decoder_input_output_embed": True,
    "normalize_before": False,
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.0,
    "max_source_positions": 1024,
    "max_target_positions": 1024,
}
LISTS = (
    "encoder_ffn_embed_dim_all",
    "encoder_self_attention_heads_all",
    "decoder_ffn_embed_dim_all",
    "decoder_self_attention_heads_all",
    "decoder_ende_attention_heads_all",
    "decoder_arbitrary_ende_attn_all",
)


def _options(args) -> Dict[str, Any]:
    """Plain dict of the model options from a DictConfig or an argparse.Namespace."""
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(args, DictConfig):
            d = OmegaConf.to_container(args, resolve=True)
        else:
            d = dict(vars(args))
    except ImportError:  # pragma: no cover
        d = dict(vars(args))
    out = {k: (d.get(k) if d.get(k) is not None else v) for k, v in DEFAULTS.items()}
    for k in LISTS:
        v = d.get(k)
        if isinstance(v, str):
            v = [int(x) for x in v.replace("[", "").replace("]", "").split(",") if x.strip()]
        if v is None:
            raise ValueError(f"{ARCH}: option {k} (a per-layer list) is missing from the checkpoint's cfg.model")
        out[k] = [int(x) for x in v]
    return out


# ------------------------------------------------------------------------------------------ pieces
def sinusoidal_table(num: int, dim: int, padding_idx: int) -> Tensor:
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float) * -(math.log(10000.0) / (half - 1)))
    ang = torch.arange(num, dtype=torch.float).unsqueeze(1) * freq.unsqueeze(0)
    table = torch.cat([torch.sin(ang), torch.cos(ang)], dim=1)
    if dim % 2 == 1:
        table = torch.cat([table, torch.zeros(num, 1)], dim=1)
    table[padding_idx, :] = 0
    return table


class SlicedSinusoidalPositions(nn.Module):
    """Positions from a `table_dim`-wide sinusoidal table, read at the first `dim` columns."""

    def __init__(self, table_dim: int, dim: int, padding_idx: int, max_positions: int) -> None:
        super().__init__()
        self.padding_idx, self.dim = padding_idx, dim
        self.register_buffer("table", sinusoidal_table(max_positions + padding_idx + 1, table_dim, padding_idx),
                             persistent=False)

    def forward(self, tokens: Tensor, start: int = 0) -> Tensor:
        if start:
            pos = torch.full_like(tokens, self.padding_idx + 1 + start)
            pos = pos + torch.arange(tokens.size(1), device=tokens.device)
        else:
            mask = tokens.ne(self.padding_idx).long()
            pos = torch.cumsum(mask, dim=1) * mask + self.padding_idx
        return self.table[pos, : self.dim]


def _attention(q: Tensor, k: Tensor, v: Tensor, heads: int, key_padding_mask: Optional[Tensor], causal: bool) -> Tensor:
    B, T, C = q.shape
    S = k.size(1)
    hd = C // heads
    q = q.view(B, T, heads, hd).transpose(1, 2)
    k = k.view(B, S, heads, hd).transpose(1, 2)
    v = v.view(B, S, heads, hd).transpose(1, 2)
    mask = None
    if key_padding_mask is not None:
        mask = ~key_padding_mask[:, None, None, :]
        if causal:
            mask = mask & torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
            causal = False
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and T > 1)
    return out.transpose(1, 2).reshape(B, T, C)


class Attention(nn.Module):
    """Multi-head attention with Q/K/V width `qkv_dim` whatever the head count."""

    def __init__(self, dim: int, kv_dim: int, qkv_dim: int, heads: int) -> None:
        super().__init__()
        self.q_proj = nn.Linear(dim, qkv_dim)
        self.k_proj = nn.Linear(kv_dim, qkv_dim)
        self.v_proj = nn.Linear(kv_dim, qkv_dim)
        self.out_proj = nn.Linear(qkv_dim, dim)
        self.num_heads = heads

    def forward(self, q_in: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor], causal: bool = False) -> Tensor:
        return self.out_proj(_attention(self.q_proj(q_in), k, v, self.num_heads, mask, causal))


class FeedForward(nn.Module):
    def __init__(self, dim: int, ffn: int, activation_dropout: float) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, ffn), nn.Linear(ffn, dim)
        self.activation_dropout = activation_dropout

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.dropout(F.relu(self.fc1(x)), self.activation_dropout, self.training))


class _Block(nn.Module):
    normalize_before: bool
    dropout: float

    def _residual(self, x: Tensor, norm: nn.Module, fn) -> Tensor:
        if self.normalize_before:
            return x + F.dropout(fn(norm(x)), self.dropout, self.training)
        return norm(x + F.dropout(fn(x), self.dropout, self.training))


class EncoderLayer(_Block):
    def __init__(self, dim: int, ffn: int, heads: int, o: Dict[str, Any]) -> None:
        super().__init__()
        self.self_attn = Attention(dim, dim, o["qkv_dim"], heads)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn, o["activation_dropout"])
        self.final_layer_norm = nn.LayerNorm(dim)
        self.normalize_before, self.dropout = o["normalize_before"], o["dropout"]

    def forward(self, x: Tensor, pad: Tensor) -> Tensor:
        def sa(h: Tensor) -> Tensor:
            return self.self_attn(h, self.self_attn.k_proj(h), self.self_attn.v_proj(h), pad)

        x = self._residual(x, self.self_attn_layer_norm, sa)
        return self._residual(x, self.final_layer_norm, self.ffn)


class DecoderLayer(_Block):
    def __init__(self, dim: int, enc_dim: int, ffn: int, self_heads: int, ende_heads: int, n_enc: int,
                 o: Dict[str, Any]) -> None:
        super().__init__()
        self.self_attn = Attention(dim, dim, o["qkv_dim"], self_heads)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.encoder_attn = Attention(dim, enc_dim, o["qkv_dim"], ende_heads)
        self.encoder_attn_layer_norm = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn, o["activation_dropout"])
        self.final_layer_norm = nn.LayerNorm(dim)
        self.normalize_before, self.dropout = o["normalize_before"], o["dropout"]
        self.ende_layers = n_enc

    def forward(self, x: Tensor, memory: Tensor, memory_mask: Tensor, cache: Optional[Dict[str, Optional[Tensor]]],
                prefix: str) -> Tensor:
        def sa(h: Tensor) -> Tensor:
            k, v = self.self_attn.k_proj(h), self.self_attn.v_proj(h)
            if cache is not None:
                pk, pv = cache.get(prefix + "self_k"), cache.get(prefix + "self_v")
                if pk is not None and pv is not None:
                    k, v = torch.cat([pk, k], dim=1), torch.cat([pv, v], dim=1)
                cache[prefix + "self_k"], cache[prefix + "self_v"] = k, v
                return self.self_attn(h, k, v, None, causal=False)
            return self.self_attn(h, k, v, None, causal=True)

        def ca(h: Tensor) -> Tensor:
            k = v = None
            if cache is not None:
                k, v = cache.get(prefix + "ende_k"), cache.get(prefix + "ende_v")
            if k is None or v is None:
                k, v = self.encoder_attn.k_proj(memory), self.encoder_attn.v_proj(memory)
                if cache is not None:
                    cache[prefix + "ende_k"], cache[prefix + "ende_v"] = k, v
            return self.encoder_attn(h, k, v, memory_mask)

        x = self._residual(x, self.self_attn_layer_norm, sa)
        x = self._residual(x, self.encoder_attn_layer_norm, ca)
        return self._residual(x, self.final_layer_norm, self.ffn)


# ------------------------------------------------------------------------------------------ encoder/decoder
class HatEncoder(FairseqEncoder):
    def __init__(self, o: Dict[str, Any], dictionary, embed_tokens: nn.Embedding) -> None:
        super().__init__(dictionary)
        d = o["encoder_embed_dim"]
        self.embed_dim, self.padding_idx = d, dictionary.pad()
        self.embed_tokens = embed_tokens
        self.embed_positions = SlicedSinusoidalPositions(o["encoder_pos_dim"] or d, d, self.padding_idx,
                                                         o["max_source_positions"])
        self.layers = nn.ModuleList(
            EncoderLayer(d, f, h, o) for f, h in zip(o["encoder_ffn_embed_dim_all"], o["encoder_self_attention_heads_all"])
        )
        self.layer_norm = nn.LayerNorm(d) if o["normalize_before"] else None
        self.dropout = o["dropout"]
        self.max_source_positions = o["max_source_positions"]

    def forward(self, src_tokens: Tensor, src_lengths: Optional[Tensor] = None, **kwargs) -> Dict[str, List[Tensor]]:
        d = self.embed_dim
        pad = src_tokens.eq(self.padding_idx)
        x = F.embedding(src_tokens, self.embed_tokens.weight[:, :d], self.padding_idx) * (d**0.5)
        x = x + self.embed_positions(src_tokens)
        x = F.dropout(x, self.dropout, self.training)
        x = x.masked_fill(pad.unsqueeze(-1), 0.0)
        states = []
        for layer in self.layers:
            x = layer(x, pad)
            states.append(x)
        if self.layer_norm is not None:
            states = [self.layer_norm(s) for s in states]
        return {
            "encoder_out": [states[-1]],  # batch-first (B, S, C), unlike fairseq's transformer
            "encoder_padding_mask": [pad],
            "encoder_states": states,
            "src_lengths": [] if src_lengths is None else [src_lengths],
        }

    def reorder_encoder_out(self, encoder_out: Dict[str, List[Tensor]], new_order: Tensor) -> Dict[str, List[Tensor]]:
        return {k: [t.index_select(0, new_order) for t in v] for k, v in encoder_out.items()}

    def max_positions(self) -> int:
        return self.max_source_positions


class HatDecoder(FairseqIncrementalDecoder):
    def __init__(self, o: Dict[str, Any], dictionary, embed_tokens: nn.Embedding) -> None:
        super().__init__(dictionary)
        d, de = o["decoder_embed_dim"], o["encoder_embed_dim"]
        self.embed_dim, self.padding_idx = d, dictionary.pad()
        self.embed_tokens = embed_tokens
        self.embed_positions = SlicedSinusoidalPositions(o["decoder_pos_dim"] or d, d, self.padding_idx,
                                                         o["max_target_positions"])
        n_enc = len(o["encoder_ffn_embed_dim_all"])
        self.layers = nn.ModuleList(
            DecoderLayer(d, de, f, hs, he, min(1 if a == -1 else a + 1, n_enc), o)
            for f, hs, he, a in zip(o["decoder_ffn_embed_dim_all"], o["decoder_self_attention_heads_all"],
                                    o["decoder_ende_attention_heads_all"], o["decoder_arbitrary_ende_attn_all"])
        )
        self.layer_norm = nn.LayerNorm(d) if o["normalize_before"] else None
        self.dropout = o["dropout"]
        self.max_target_positions = o["max_target_positions"]
        if o["share_decoder_input_output_embed"]:
            self.output_projection = None
        else:
            self.output_projection = nn.Linear(d, len(dictionary), bias=False)

    def _memory(self, encoder_out: Dict[str, List[Tensor]], n: int):
        states, pad = encoder_out["encoder_states"], encoder_out["encoder_padding_mask"][0]
        n = min(n, len(states))
        if n == 1:
            return states[-1], pad
        return torch.cat(states[::-1][:n], dim=1), pad.repeat(1, n)

    def forward(self, prev_output_tokens: Tensor, encoder_out: Optional[Dict[str, List[Tensor]]] = None,
                incremental_state: Optional[Dict[str, Dict[str, Optional[Tensor]]]] = None,
                features_only: bool = False, **kwargs):
        x = self.extract_features(prev_output_tokens, encoder_out, incremental_state)
        if not features_only:
            x = self.output_layer(x)
        return x, {"attn": [None], "inner_states": None}

    def extract_features(self, prev_output_tokens: Tensor, encoder_out, incremental_state=None, **kwargs) -> Tensor:
        assert encoder_out is not None, "hat_subtransformer is an encoder-decoder model"
        d = self.embed_dim
        cache: Optional[Dict[str, Optional[Tensor]]] = None
        if incremental_state is not None:
            cache = self.get_incremental_state(incremental_state, "cache")
            if cache is None:
                cache = {}
            step = prev_output_tokens.size(1) - 1
            tokens = prev_output_tokens[:, -1:]
            pos = self.embed_positions(tokens, start=step) if step else self.embed_positions(tokens)
        else:
            tokens = prev_output_tokens
            pos = self.embed_positions(tokens)
        x = F.embedding(tokens, self.embed_tokens.weight[:, :d], self.padding_idx) * (d**0.5) + pos
        x = F.dropout(x, self.dropout, self.training)
        memo: Dict[int, Any] = {}
        for i, layer in enumerate(self.layers):
            if layer.ende_layers not in memo:
                memo[layer.ende_layers] = self._memory(encoder_out, layer.ende_layers)
            memory, mask = memo[layer.ende_layers]
            x = layer(x, memory, mask, cache, f"{i}.")
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        if incremental_state is not None and cache is not None:
            self.set_incremental_state(incremental_state, "cache", cache)
        return x

    def output_layer(self, features: Tensor, **kwargs) -> Tensor:
        if self.output_projection is None:
            return F.linear(features, self.embed_tokens.weight[:, : features.size(-1)])
        return self.output_projection(features)

    def reorder_incremental_state(self, incremental_state: Dict[str, Dict[str, Optional[Tensor]]], new_order: Tensor):
        cache = self.get_incremental_state(incremental_state, "cache")
        if cache is None:
            return
        for k, v in list(cache.items()):
            if v is not None:
                cache[k] = v.index_select(0, new_order)
        self.set_incremental_state(incremental_state, "cache", cache)

    def max_positions(self) -> int:
        return self.max_target_positions


# ------------------------------------------------------------------------------------------ model
@register_model(ARCH)
class HatSubTransformerModel(FairseqEncoderDecoderModel):
    """A HAT SubTransformer as a fairseq model (weights: `hat export --format fairseq`)."""

    @staticmethod
    def add_args(parser):
        for k, v in DEFAULTS.items():
            if isinstance(v, bool):
                parser.add_argument("--" + k.replace("_", "-"), type=lambda s: s.lower() in ("1", "true", "yes"))
            elif k not in ("encoder_embed_dim", "decoder_embed_dim", "dropout", "attention_dropout",
                           "activation_dropout", "encoder_layers", "decoder_layers",
                           "max_source_positions", "max_target_positions"):
                parser.add_argument("--" + k.replace("_", "-"), type=type(v) if v is not None else int)
        for k in LISTS:
            parser.add_argument("--" + k.replace("_", "-"), type=str, help="comma-separated per-layer values")

    @classmethod
    def build_model(cls, args, task):
        o = _options(args)
        src_dict, tgt_dict = task.source_dictionary, task.target_dictionary
        de, dd = o["encoder_embed_dim"], o["decoder_embed_dim"]
        if o["share_all_embeddings"]:
            if len(src_dict) != len(tgt_dict):
                raise ValueError(f"{ARCH}: share_all_embeddings needs a joint dictionary")
            enc_emb = nn.Embedding(len(src_dict), max(de, dd), padding_idx=src_dict.pad())
            dec_emb = enc_emb
        else:
            enc_emb = nn.Embedding(len(src_dict), de, padding_idx=src_dict.pad())
            dec_emb = nn.Embedding(len(tgt_dict), dd, padding_idx=tgt_dict.pad())
        return cls(HatEncoder(o, src_dict, enc_emb), HatDecoder(o, tgt_dict, dec_emb))


@register_model_architecture(ARCH, ARCH)
def hat_subtransformer(args):
    for k, v in DEFAULTS.items():
        try:
            missing = getattr(args, k, None) is None
        except Exception:  # noqa: BLE001 - struct DictConfig without the key
            missing = True
        if missing and v is not None:
            setattr(args, k, v)
