"""The design space, without torch: architectures (`config`), the space they are drawn from
(`design`) and what they cost (`cost`: parameters, MACs, latency-predictor features); the
decoder-only LM equivalents of the first two are in `lm`.

Knowing nothing of torch modules, it lets the latency, search and CLI code reason about
architectures without building any network. Everything is importable from `hat.space`.
"""
from hat.space.config import (
    ALL_FIELDS,
    LAYER_FIELDS_DEC,
    LAYER_FIELDS_ENC,
    SCALAR_FIELDS,
    SubConfig,
    describe,
    encoder_layers_attended,
    ende_attn_count,
    load_subconfig,
    load_subconfig_metadata,
    save_subconfig,
)
from hat.space.cost import (
    HAT_FEATURE_NAMES,
    HAT_FEATURE_NORM,
    features_full,
    features_hat,
    hat_raw_features,
    lm_decoder_params,
    lm_macs,
    lm_params,
    macs,
    num_params,
)
from hat.space.design import DesignSpace, available_spaces, load_space
from hat.space.lm import (
    LMConfig,
    LMSpace,
    is_lm_file,
    load_any_space,
    load_lm_config,
    load_lm_space,
    save_lm_config,
    save_lm_space,
)

__all__ = [
    "ALL_FIELDS", "HAT_FEATURE_NAMES", "HAT_FEATURE_NORM", "LAYER_FIELDS_DEC", "LAYER_FIELDS_ENC", "SCALAR_FIELDS",
    "DesignSpace", "LMConfig", "LMSpace", "SubConfig", "available_spaces", "describe", "encoder_layers_attended",
    "ende_attn_count", "features_full", "features_hat", "hat_raw_features", "is_lm_file", "lm_decoder_params",
    "lm_macs", "lm_params", "load_any_space", "load_lm_config", "load_lm_space", "load_space", "load_subconfig",
    "load_subconfig_metadata", "macs", "num_params", "save_lm_config", "save_lm_space", "save_subconfig",
]
