"""The weight-sharing SuperTransformer: one set of maximal weights, any SubConfig at run time."""
from __future__ import annotations

import torch

from hat.model.transformer import Decoder, Encoder, EncoderDecoder, ModelArgs, make_embeddings
from hat.nn import SinusoidalPositions, ende_layers
from hat.space import DesignSpace, SubConfig


class SuperTransformer(EncoderDecoder):
    def __init__(self, space: DesignSpace, args: ModelArgs) -> None:
        super().__init__()
        self.space, self.args = space, args
        de, dd = space.super_encoder_embed_dim, space.super_decoder_embed_dim
        enc_emb, dec_emb = make_embeddings(args, de, dd)
        enc_pos = SinusoidalPositions(de, args.padding_idx, args.max_positions)
        dec_pos = enc_pos if dd == de else SinusoidalPositions(dd, args.padding_idx, args.max_positions)
        self.encoder = Encoder(
            enc_emb, de, [(space.super_encoder_ffn_embed_dim, space.super_encoder_attention_heads)] * space.max_encoder_layers,
            space.qkv_dim, args, enc_pos, elastic=True,
        )
        dec_layers = [(space.super_decoder_ffn_embed_dim, space.super_decoder_attention_heads, space.super_decoder_attention_heads, 1)]
        self.decoder = Decoder(
            dec_emb, dd, de, dec_layers * space.max_decoder_layers, space.qkv_dim, args, dec_pos, elastic=True
        )
        self.config: SubConfig | None = None
        self.configure(space.largest())

    def _dropout(self, p: float, dim: int, super_dim: int) -> float:
        return p * dim / super_dim if self.args.scale_dropout_with_embed else p

    def configure(self, cfg: SubConfig) -> "SuperTransformer":
        """Activate `cfg`: every elastic op slices its weights to it until the next call."""
        if cfg == self.config:
            return self
        self.space.validate(cfg)
        a, s = self.args, self.space
        de, dd = cfg.encoder_embed_dim, cfg.decoder_embed_dim
        enc_drop = self._dropout(a.dropout, de, s.super_encoder_embed_dim)
        enc_att = self._dropout(a.attention_dropout, de, s.super_encoder_embed_dim)
        dec_drop = self._dropout(a.dropout, dd, s.super_decoder_embed_dim)
        dec_att = self._dropout(a.attention_dropout, dd, s.super_decoder_embed_dim)
        enc, dec = self.encoder, self.decoder
        enc.embed_dim, enc.num_layers, enc.dropout = de, cfg.encoder_layer_num, enc_drop
        for i in range(cfg.encoder_layer_num):
            enc.layers[i].configure(de, cfg.encoder_ffn_embed_dim[i], cfg.encoder_self_attention_heads[i], enc_drop, enc_att)
        if enc.layer_norm is not None:
            enc.layer_norm.configure(de)
        dec.embed_dim, dec.num_layers, dec.dropout = dd, cfg.decoder_layer_num, dec_drop
        for i in range(cfg.decoder_layer_num):
            n_mem = ende_layers(cfg.decoder_arbitrary_ende_attn[i], cfg.encoder_layer_num)
            dec.layers[i].configure(
                dd, de, cfg.decoder_ffn_embed_dim[i], cfg.decoder_self_attention_heads[i],
                cfg.decoder_ende_attention_heads[i], n_mem, dec_drop, dec_att,
            )
        if dec.layer_norm is not None:
            dec.layer_norm.configure(dd)
        if dec.output_projection is not None:
            dec.output_projection.configure(in_features=dd)
        self.config = cfg
        return self

    def forward(  # type: ignore[override]
        self,
        src_tokens: torch.Tensor,
        src_lengths: torch.Tensor | None,
        prev_output_tokens: torch.Tensor,
        config: SubConfig | None = None,
    ) -> torch.Tensor:
        """Logits of the SubTransformer `config` (default: the last configured one)."""
        if config is not None:
            self.configure(config)
        return super().forward(src_tokens, src_lengths, prev_output_tokens)
