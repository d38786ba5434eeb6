"""Building blocks: the plain Transformer parts (`blocks`) and the elastic ops that front-slice
shared weights (`elastic`)."""
from hat.nn.blocks import (
    CausalLayer,
    DecoderLayer,
    EncoderLayer,
    FeedForward,
    MultiheadAttention,
    SinusoidalPositions,
    TokenEmbedding,
    attention,
    dropout,
    ende_layers,
    encoder_states,
    memory,
    memory_mask,
)
from hat.nn.elastic import ElasticLayerNorm, ElasticLinear, front_slice

__all__ = [
    "CausalLayer",
    "DecoderLayer",
    "ElasticLayerNorm",
    "ElasticLinear",
    "EncoderLayer",
    "FeedForward",
    "MultiheadAttention",
    "SinusoidalPositions",
    "TokenEmbedding",
    "attention",
    "dropout",
    "ende_layers",
    "encoder_states",
    "front_slice",
    "memory",
    "memory_mask",
]
