"""The design space, without torch: architectures (`config`), the space they are drawn from
(`design`) and what they cost (`cost`: parameters, MACs, latency-predictor features).

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
    macs,
    num_params,
)
from hat.space.design import DesignSpace, available_spaces, load_space

__all__ = [
    "ALL_FIELDS", "HAT_FEATURE_NAMES", "HAT_FEATURE_NORM", "LAYER_FIELDS_DEC", "LAYER_FIELDS_ENC", "SCALAR_FIELDS",
    "DesignSpace", "SubConfig", "available_spaces", "describe", "encoder_layers_attended", "ende_attn_count",
    "features_full", "features_hat", "hat_raw_features", "load_space", "load_subconfig", "load_subconfig_metadata", "macs", "num_params",
    "save_subconfig",
]
