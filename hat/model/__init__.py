"""SuperTransformer, standalone SubTransformer, generation and the SuperTransformer checkpoint;
decoder-only language models (`lm`)."""
from hat.model.checkpoint import load_super_checkpoint
from hat.model.generate import beam_search, greedy_search
from hat.model.lm import LanguageModel, LMArgs, LMCache, StandaloneLM, SuperLM, extract_lm, perplexity
from hat.model.sub import SubTransformer, extract
from hat.model.super import SuperTransformer
from hat.model.transformer import EncoderDecoder, EncoderOut, LayerState, ModelArgs

__all__ = [
    "EncoderDecoder",
    "EncoderOut",
    "LMArgs",
    "LMCache",
    "LanguageModel",
    "LayerState",
    "ModelArgs",
    "StandaloneLM",
    "SubTransformer",
    "SuperLM",
    "SuperTransformer",
    "beam_search",
    "extract",
    "extract_lm",
    "greedy_search",
    "load_super_checkpoint",
    "perplexity",
]
