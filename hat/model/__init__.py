"""SuperTransformer, standalone SubTransformer, generation and the SuperTransformer checkpoint."""
from hat.model.checkpoint import load_super_checkpoint
from hat.model.generate import beam_search, greedy_search
from hat.model.sub import SubTransformer, extract
from hat.model.super import SuperTransformer
from hat.model.transformer import EncoderDecoder, EncoderOut, LayerState, ModelArgs

__all__ = [
    "EncoderDecoder",
    "EncoderOut",
    "LayerState",
    "ModelArgs",
    "SubTransformer",
    "SuperTransformer",
    "beam_search",
    "extract",
    "greedy_search",
    "load_super_checkpoint",
]
