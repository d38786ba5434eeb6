"""What an architecture costs, computed from its numbers alone: parameters, MACs and the
latency-predictor features (HAT's 10 averages and our per-layer encoding); for decoder-only LMs
the parameters, LiteTransformerSearch's proxy (the decoder's) and the MACs of generation.
"""
from __future__ import annotations

from hat.errors import ConfigError
from hat.space.config import SubConfig, encoder_layers_attended, ende_attn_count
from hat.space.design import DesignSpace
from hat.space.lm import LMConfig, LMSpace

# HAT's latency-predictor features: 10 per-config averages, each divided by its norm as HAT's
# predictor does (embed dims by 640, depths and heads by 6, FFN widths by 2048, attended encoder
# layers by 2)
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
        sum(ende_attn_count(a) for a in cfg.decoder_arbitrary_ende_attn) / cfg.decoder_layer_num,
    ]
    return [r / n for r, n in zip(raw, HAT_FEATURE_NORM)]


def hat_raw_features(cfg: SubConfig) -> dict[str, float]:
    """The 10 un-normalised averages, as HAT's latency CSV columns hold them."""
    return {name: f * n for name, f, n in zip(HAT_FEATURE_NAMES, features_hat(cfg), HAT_FEATURE_NORM)}


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
        out.append(ende_attn_count(cfg.decoder_arbitrary_ende_attn[i]) / 3 if present else 0.0)
    return out


# ---------------------------------------------------------------------------------- decoder-only LMs
def lm_decoder_params(cfg: LMConfig) -> int:
    """Non-embedding parameters: the layers and the final LayerNorm (pre-norm), no token table.
    LiteTransformerSearch's training-free proxy: across heterogeneous decoder-only models it
    ranks perplexity well, without training any of them."""
    d = cfg.embed_dim
    return sum(_attn_params(d, d, d, d) + _ffn_params(d, f) + 2 * 2 * d for f in cfg.ffn_embed_dim) + 2 * d


def lm_params(cfg: LMConfig, space: LMSpace) -> int:
    """All parameters: the decoder's plus the token table (the output projection is tied to it,
    positions are sinusoidal)."""
    return space.vocab_size * cfg.embed_dim + lm_decoder_params(cfg)


def lm_macs(cfg: LMConfig, space: LMSpace, prompt_len: int, gen_len: int) -> int:
    """Multiply-accumulates of a prefill of `prompt_len` tokens (next-token logits at its last
    position only) then `gen_len` single-token steps over a KV cache, each with logits.

    Query t (1-based) scores and mixes t keys (2 * d * t), whether it runs in the prefill or
    as a cached step, so the attention term depends on the total length only."""
    if prompt_len < 1 or gen_len < 0 or prompt_len + gen_len > space.max_positions:
        raise ConfigError(f"prompt {prompt_len} + {gen_len} generated tokens: need a prompt of at least 1 token, "
                          f"at most {space.max_positions} (the context of space {space.name}) in all")
    d, n = cfg.embed_dim, prompt_len + gen_len
    m = sum(n * (4 * d * d + 2 * d * f) + d * n * (n + 1) for f in cfg.ffn_embed_dim)
    return m + (1 + gen_len) * d * space.vocab_size
