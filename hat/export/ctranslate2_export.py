"""CTranslate2 export: a SubTransformer as a CTranslate2 `TransformerSpec`, written directly.

CTranslate2's fairseq converter accepts only fairseq's own architectures, so the spec is filled
from hat's modules here. Its Transformer takes one head count per stack and the standard
encoder-decoder attention; sizes come from the weights. So it expresses exactly the SubConfigs
where
- every encoder layer has the same number of self-attention heads, and
- every decoder layer has one head count for both its self- and its encoder-decoder attention
  (the encoder's and the decoder's counts may differ), and
- every decoder layer attends the last encoder layer only (`decoder_arbitrary_ende_attn` -1,
  or any value when the encoder has one layer);
everything else is free: embedding widths (encoder and decoder may differ), per-layer FFN widths,
layer counts, HAT's fixed Q/K/V width (CTranslate2's `head_dim` = qkv_dim / heads), post- or
pre-norm, shared or separate embeddings. Other SubConfigs are refused with one line saying why.

Writes, under DIR: model.bin, config.json, shared_vocabulary.json (CTranslate2's files),
hat-ctranslate2.json (what hat needs: config, languages, quantization), spm.model and
dict.SRC.txt / dict.TGT.txt. `--quantize int8` stores int8 weights (CTranslate2's own int8).
Decoding: `hat translate --model DIR` or `ctranslate2.Translator(DIR)` with source pieces (the
source EOS is added by CTranslate2, decoding starts from `</s>` as in fairseq).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np
import torch

from hat.errors import CheckpointError, HatError, first_line
from hat.export.runtimes import CT2_META, ExportTranslator
from hat.export.standalone import Translator
from hat.files import atomic_write_bytes, atomic_write_text
from hat.model.generate import Decoding

PAD_TOKEN = "<blank>"  # CTranslate2's name for padding; fairseq's <pad> would be an ordinary token


def unsupported(model) -> list[str]:
    """Why CTranslate2 cannot express `model` (a SubTransformer); empty when it can."""
    c = model.config
    why = []
    if len(set(c.encoder_self_attention_heads)) > 1:
        why.append(f"encoder head counts differ across layers {list(c.encoder_self_attention_heads)}")
    dec = set(c.decoder_self_attention_heads) | set(c.decoder_ende_attention_heads)
    if len(dec) > 1:
        why.append(f"decoder head counts differ (self {list(c.decoder_self_attention_heads)}, "
                   f"encoder-decoder {list(c.decoder_ende_attention_heads)})")
    ende = [layer.ende_layers for layer in model.decoder.layers[: model.decoder.num_layers]]
    if any(n != 1 for n in ende):
        why.append(f"arbitrary encoder-decoder attention (decoder layers attend {ende} encoder layers)")
    return why


def check_expressible(model, source: str) -> None:
    why = unsupported(model)
    if why:
        raise HatError(f"{source}: CTranslate2 cannot express this SubTransformer: {'; '.join(why)} "
                       "(it takes one head count per encoder and per decoder, and each decoder layer "
                       "attending the last encoder layer only)")


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().float().numpy().copy()


def _linear(spec, *mods) -> None:
    """`spec` = the Linear layers `mods` fused along their outputs (Q|K|V, K|V)."""
    spec.weight = np.concatenate([_np(m.weight) for m in mods])
    if mods[0].bias is not None:
        spec.bias = np.concatenate([_np(m.bias) for m in mods])


def _norm(spec, mod) -> None:
    spec.gamma, spec.beta = _np(mod.weight), _np(mod.bias)


def _attention(spec, attn, self_attention: bool) -> None:
    if self_attention:
        _linear(spec.linear[0], attn.q_proj, attn.k_proj, attn.v_proj)
    else:
        _linear(spec.linear[0], attn.q_proj)
        _linear(spec.linear[1], attn.k_proj, attn.v_proj)
    _linear(spec.linear[-1], attn.out_proj)


def _stack(spec, stack, dim: int, pad: int) -> None:
    emb = spec.embeddings[0] if isinstance(spec.embeddings, list) else spec.embeddings
    emb.weight = _np(stack.embed_tokens.weight[:, :dim])
    # HAT's positions: the first `dim` columns of a table at the SuperTransformer's width,
    # position t of a sentence at row pad + 1 + t
    spec.position_encodings.encodings = _np(stack.embed_positions.table[pad + 1:, :dim])
    if stack.layer_norm is not None:
        _norm(spec.layer_norm, stack.layer_norm)
    for ls, layer in zip(spec.layer, stack.layers[: stack.num_layers]):
        _attention(ls.self_attention, layer.self_attn, True)
        _norm(ls.self_attention.layer_norm, layer.self_attn_layer_norm)
        if hasattr(layer, "encoder_attn"):
            _attention(ls.attention, layer.encoder_attn, False)
            _norm(ls.attention.layer_norm, layer.encoder_attn_layer_norm)
        _linear(ls.ffn.linear_0, layer.ffn.fc1)
        _linear(ls.ffn.linear_1, layer.ffn.fc2)
        _norm(ls.ffn.layer_norm, layer.final_layer_norm)


def vocabulary(d) -> list[str]:
    return [PAD_TOKEN if s == "<pad>" else s for s in d.symbols]


def build_spec(translator: Translator):
    """The CTranslate2 TransformerSpec of `translator`'s SubTransformer (refused if inexpressible)."""
    from ctranslate2.specs import transformer_spec  # noqa: PLC0415

    m = translator.model
    check_expressible(m, translator.source)
    c, pre, pad = m.config, m.args.normalize_before, m.args.padding_idx
    he, hd = c.encoder_self_attention_heads[0], c.decoder_self_attention_heads[0]
    enc = transformer_spec.TransformerEncoderSpec(c.encoder_layer_num, he, pre_norm=pre, head_dim=m.qkv_dim // he)
    dec = transformer_spec.TransformerDecoderSpec(c.decoder_layer_num, hd, pre_norm=pre, head_dim=m.qkv_dim // hd)
    _stack(enc, m.encoder, c.encoder_embed_dim, pad)
    _stack(dec, m.decoder, c.decoder_embed_dim, pad)
    out = m.decoder.output_projection
    dec.projection.weight = _np(m.decoder.embed_tokens.weight[:, : c.decoder_embed_dim] if out is None else out.weight)
    spec = transformer_spec.TransformerSpec(enc, dec)
    spec.register_source_vocabulary(vocabulary(translator.src_dict))
    spec.register_target_vocabulary(vocabulary(translator.tgt_dict))
    spec.config.decoder_start_token = "</s>"  # fairseq's decoders start from EOS
    spec.config.add_source_eos = True
    spec.config.layer_norm_epsilon = float(m.encoder.layers[0].final_layer_norm.eps)
    return spec


def export_ctranslate2(translator: Translator, out_dir: str | Path, quantize: str | None = None) -> dict[str, Any]:
    if translator.quantization:
        raise HatError(f"{translator.source}: export CTranslate2 from the float32 model "
                       f"(--format ctranslate2 --quantize {translator.quantization} quantizes it)")
    if quantize not in (None, "int8"):
        raise HatError(f"unknown quantization {quantize!r} (choose int8)")
    out_dir = Path(out_dir)
    spec = build_spec(translator)
    spec.validate()
    spec.optimize(quantization=quantize)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    with tempfile.TemporaryDirectory(prefix=".ct2-", dir=out_dir) as tmp:
        spec.save(tmp)
        for name in sorted(os.listdir(tmp)):  # each file lands whole (rename in one directory)
            os.replace(os.path.join(tmp, name), out_dir / name)
            files.append(str(out_dir / name))
    m = translator.model
    meta = {"format": "hat-ctranslate2", "version": 1, "quantization": quantize, "config": m.config.to_dict(),
            "src_lang": translator.src_lang, "tgt_lang": translator.tgt_lang, "pad": m.args.padding_idx, "eos": 2,
            "max_positions": m.args.max_positions}
    src, tgt = translator.src_lang, translator.tgt_lang
    atomic_write_bytes(out_dir / "spm.model", translator.spm_bytes)
    translator.src_dict.save(out_dir / f"dict.{src}.txt")
    translator.tgt_dict.save(out_dir / f"dict.{tgt}.txt")
    atomic_write_text(out_dir / CT2_META, json.dumps(meta, indent=1))
    files += [str(out_dir / n) for n in ("spm.model", f"dict.{src}.txt", f"dict.{tgt}.txt", CT2_META)]
    return {"format": "ctranslate2", "files": files, "quantization": quantize,
            "usage": f"hat translate --model {out_dir} < SOURCE.txt"}


# ------------------------------------------------------------------------------------------ running
class Ct2Model:
    """A `ctranslate2.Translator` with what hat's Translator asks of a model."""

    def __init__(self, directory: Path, meta: dict, device: str = "cpu", threads: int | None = None) -> None:
        import ctranslate2  # noqa: PLC0415

        from hat.space import SubConfig  # noqa: PLC0415

        kind = torch.device(device).type
        try:
            self.ct2 = ctranslate2.Translator(str(directory), device=kind, intra_threads=threads or 0)
        except (RuntimeError, ValueError, OSError) as e:
            raise CheckpointError(f"{directory}: CTranslate2 cannot load this model ({first_line(e, 160)})") from None
        self.config = SubConfig.from_dict(meta["config"])
        self.args = SimpleNamespace(max_positions=int(meta.get("max_positions", 1024)), padding_idx=int(meta["pad"]))
        self.device = torch.device("cpu")  # inputs and outputs are token lists

    def eval(self) -> "Ct2Model":
        return self


class Ct2Translator(ExportTranslator):
    """hat's Translator over a CTranslate2 export: CTranslate2 runs the search (beam search with
    the same length penalty; its length limit is per batch, like fairseq's)."""

    META, KIND = CT2_META, "CTranslate2"

    def build(self, directory: Path, meta: dict, device: str, threads: int | None) -> Ct2Model:
        return Ct2Model(directory, meta, device, threads)

    def generate(self, sources: Sequence[torch.Tensor], *, beam: int = Decoding.beam,
                 lenpen: float = Decoding.lenpen, max_len_a: float = Decoding.max_len_a,
                 max_len_b: int = Decoding.max_len_b, max_tokens: int = Decoding.max_tokens,
                 max_sentences: int | None = Decoding.max_sentences, eos: int = 2, **_: Any) -> list[list[int]]:
        from hat.model.generate import length_sorted_batches, max_length  # noqa: PLC0415

        lengths = [len(s) for s in sources]
        out: list[list[int]] = [[] for _ in sources]
        src_sym, tgt_index = self.src_dict.symbols, self.tgt_dict.indices
        for idx in length_sorted_batches(lengths, max_tokens, max_sentences):
            tokens = [[src_sym[i] for i in sources[j].tolist() if i != eos] for j in idx]
            limit = max(max_length(lengths[j], max_len_a, max_len_b, self.model.args.max_positions) for j in idx)
            res = self.model.ct2.translate_batch(
                tokens, beam_size=beam, length_penalty=lenpen, max_decoding_length=limit, min_decoding_length=1,
                suppress_sequences=[[PAD_TOKEN]], max_batch_size=0)
            for j, r in zip(idx, res):
                out[j] = [tgt_index.get(t, self.tgt_dict.unk) for t in r.hypotheses[0]]
        return out
