"""A standalone SubTransformer: plain modules of exact, per-layer sizes, no slicing at run time."""
from __future__ import annotations

import torch

from hat.model.super import SuperTransformer
from hat.model.transformer import Decoder, Encoder, EncoderDecoder, ModelArgs, make_embeddings
from hat.nn import SinusoidalPositions, ende_layers, front_slice
from hat.space import SubConfig


class SubTransformer(EncoderDecoder):
    """`qkv_dim` and the positional-table widths come from the SuperTransformer it was cut from,
    so that inherited weights give identical outputs."""

    def __init__(
        self, config: SubConfig, args: ModelArgs, qkv_dim: int, encoder_pos_dim: int, decoder_pos_dim: int
    ) -> None:
        super().__init__()
        self.config, self.args, self.qkv_dim = config, args, qkv_dim
        self.pos_dims = (encoder_pos_dim, decoder_pos_dim)
        de, dd = config.encoder_embed_dim, config.decoder_embed_dim
        enc_emb, dec_emb = make_embeddings(args, de, dd)
        enc_pos = SinusoidalPositions(encoder_pos_dim, args.padding_idx, args.max_positions)
        dec_pos = SinusoidalPositions(decoder_pos_dim, args.padding_idx, args.max_positions)
        self.encoder = Encoder(
            enc_emb, de, list(zip(config.encoder_ffn_embed_dim, config.encoder_self_attention_heads)), qkv_dim, args, enc_pos
        )
        dec_layers = [
            (f, hs, he, ende_layers(config.decoder_arbitrary_ende_attn[i], config.encoder_layer_num))
            for i, (f, hs, he) in enumerate(
                zip(config.decoder_ffn_embed_dim, config.decoder_self_attention_heads, config.decoder_ende_attention_heads)
            )
        ]
        self.decoder = Decoder(dec_emb, dd, de, dec_layers, qkv_dim, args, dec_pos)
        # dropout as HAT trains the subnet inside the SuperTransformer (scaled by embed width)
        if args.scale_dropout_with_embed:
            self._scale_dropout(encoder_pos_dim, decoder_pos_dim)

    def _scale_dropout(self, super_enc: int, super_dec: int) -> None:
        for stack, ratio in ((self.encoder, self.config.encoder_embed_dim / super_enc), (self.decoder, self.config.decoder_embed_dim / super_dec)):
            stack.dropout = self.args.dropout * ratio
            for layer in stack.layers:
                layer.dropout = self.args.dropout * ratio
                for m in layer.modules():
                    if hasattr(m, "num_heads"):
                        m.dropout = self.args.attention_dropout * ratio

    def init_kwargs(self) -> dict:
        """What `SubTransformer(**kw)` needs to rebuild this model (saved in exported files)."""
        return {
            "config": self.config.to_dict(),
            "args": self.args.to_dict(),
            "qkv_dim": self.qkv_dim,
            "encoder_pos_dim": self.pos_dims[0],
            "decoder_pos_dim": self.pos_dims[1],
        }

    @classmethod
    def from_kwargs(cls, kw: dict) -> "SubTransformer":
        return cls(
            SubConfig.from_dict(kw["config"]), ModelArgs(**kw["args"]), kw["qkv_dim"], kw["encoder_pos_dim"], kw["decoder_pos_dim"]
        )


def extract(super_model: SuperTransformer, config: SubConfig) -> SubTransformer:
    """Cut `config` out of `super_model`: a SubTransformer holding copies of the sliced weights."""
    super_model.space.validate(config)
    space = super_model.space
    sub = SubTransformer(
        config, super_model.args, space.qkv_dim, space.super_encoder_embed_dim, space.super_decoder_embed_dim
    )
    source = super_model.state_dict()
    with torch.no_grad():
        state = {name: front_slice(source[name], p.shape).clone() for name, p in sub.state_dict().items()}
    sub.load_state_dict(state)
    return sub.to(next(super_model.parameters()).device)
