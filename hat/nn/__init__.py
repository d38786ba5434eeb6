"""Elastic ops: modules whose forward uses a front slice of a shared, maximal weight."""
from hat.nn.attention import MultiheadAttention, attention
from hat.nn.elastic import ElasticEmbedding, ElasticLayerNorm, ElasticLinear, front_slice
from hat.nn.positions import SinusoidalPositions

__all__ = [
    "ElasticEmbedding",
    "ElasticLayerNorm",
    "ElasticLinear",
    "MultiheadAttention",
    "SinusoidalPositions",
    "attention",
    "front_slice",
]
