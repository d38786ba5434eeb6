"""fairseq `--user-dir` plugin: HAT SubTransformers with heterogeneous layers.

Registers the model and architecture `hat_subtransformer`. A fairseq adapter around the
layers of `hat.model`: `hat export --format fairseq` copies `hat/nn/blocks.py` next to this
file, so the plugin needs torch + fairseq only (no `hat` import) and runs the same code as
`hat.model`. An export directory works on any machine with fairseq:

    fairseq-generate DATA --path EXPORT/checkpoint.pt --user-dir EXPORT/hat_fairseq_plugin \\
        --beam 4 --lenpen 0.6 --required-batch-size-multiple 1 ...

(fairseq's length limit uses the padded batch length: hypotheses equal `hat evaluate`'s at
--batch-size 1 or --max-len-a 0, otherwise up to sentences that reach hat's per-sentence limit.)

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

from .blocks import (
    DecoderLayer,
    EncoderLayer,
    SinusoidalPositions,
    TokenEmbedding,
    ende_layers,
    encoder_states,
    memory,
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


def _layer_options(o: Dict[str, Any]) -> Dict[str, Any]:
    return {k: o[k] for k in ("dropout", "attention_dropout", "activation_dropout", "normalize_before")}


# ------------------------------------------------------------------------------------------ encoder/decoder
class HatEncoder(FairseqEncoder):
    def __init__(self, o: Dict[str, Any], dictionary, embed_tokens: TokenEmbedding) -> None:
        super().__init__(dictionary)
        d = o["encoder_embed_dim"]
        self.embed_dim, self.padding_idx = d, dictionary.pad()
        self.embed_tokens = embed_tokens
        self.embed_positions = SinusoidalPositions(o["encoder_pos_dim"] or d, self.padding_idx,
                                                   o["max_source_positions"])
        self.layers = nn.ModuleList(
            EncoderLayer(d, f, h, o["qkv_dim"], **_layer_options(o))
            for f, h in zip(o["encoder_ffn_embed_dim_all"], o["encoder_self_attention_heads_all"])
        )
        self.layer_norm = nn.LayerNorm(d) if o["normalize_before"] else None
        self.dropout = o["dropout"]
        self.max_source_positions = o["max_source_positions"]

    def forward(self, src_tokens: Tensor, src_lengths: Optional[Tensor] = None, **kwargs) -> Dict[str, List[Tensor]]:
        d = self.embed_dim
        pad = src_tokens.eq(self.padding_idx)
        x = self.embed_tokens(src_tokens, d) * (d**0.5) + self.embed_positions(src_tokens, d)
        x = F.dropout(x, self.dropout, self.training).masked_fill(pad.unsqueeze(-1), 0.0)
        states = encoder_states(self.layers, self.layer_norm, x, pad)
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
    """Incremental decoding keeps, per layer i, `i.self_k`/`i.self_v` (the growing self-attention
    cache) and `i.cross_k`/`i.cross_v`/`i.mask` (encoder-decoder K/V, computed at the first step)."""

    def __init__(self, o: Dict[str, Any], dictionary, embed_tokens: TokenEmbedding) -> None:
        super().__init__(dictionary)
        d, de = o["decoder_embed_dim"], o["encoder_embed_dim"]
        self.embed_dim, self.padding_idx = d, dictionary.pad()
        self.embed_tokens = embed_tokens
        self.embed_positions = SinusoidalPositions(o["decoder_pos_dim"] or d, self.padding_idx,
                                                   o["max_target_positions"])
        n_enc = len(o["encoder_ffn_embed_dim_all"])
        self.layers = nn.ModuleList(
            DecoderLayer(d, de, f, hs, he, o["qkv_dim"], ende_layers(a, n_enc), **_layer_options(o))
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
        cache: Dict[str, Optional[Tensor]] = {}
        if incremental_state is not None:
            cache = self.get_incremental_state(incremental_state, "cache") or {}
            tokens = prev_output_tokens[:, -1:]
            step = torch.tensor([prev_output_tokens.size(1) - 1], device=tokens.device)
            pos = self.embed_positions.at(step, d)
        else:
            tokens = prev_output_tokens
            pos = self.embed_positions(tokens, d)
        x = F.dropout(self.embed_tokens(tokens, d) * (d**0.5) + pos, self.dropout, self.training)
        states, pad = encoder_out["encoder_states"], encoder_out["encoder_padding_mask"][0]
        for i, layer in enumerate(self.layers):
            p = f"{i}."
            if p + "cross_k" not in cache:
                mem, cache[p + "mask"] = memory(states, pad, layer.ende_layers)
                cache[p + "cross_k"], cache[p + "cross_v"] = layer.encoder_attn.project_kv(mem)
            x, k, v = layer.step(x, cache.get(p + "self_k"), cache.get(p + "self_v"), cache[p + "cross_k"],
                                 cache[p + "cross_v"], cache[p + "mask"])
            if incremental_state is not None:
                cache[p + "self_k"], cache[p + "self_v"] = k, v
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        if incremental_state is not None:
            self.set_incremental_state(incremental_state, "cache", cache)
        return x

    def output_layer(self, features: Tensor, **kwargs) -> Tensor:
        if self.output_projection is None:
            return self.embed_tokens.project(features)
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
            enc_emb = TokenEmbedding(len(src_dict), max(de, dd), padding_idx=src_dict.pad())
            dec_emb = enc_emb
        else:
            enc_emb = TokenEmbedding(len(src_dict), de, padding_idx=src_dict.pad())
            dec_emb = TokenEmbedding(len(tgt_dict), dd, padding_idx=tgt_dict.pad())
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
