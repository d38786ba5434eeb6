"""ONNX export: an encoder graph and a decoder-step graph with an explicit KV cache.

encoder.onnx
    in   src_tokens (B, S) int64, left- or right-padded with pad=1, EOS-terminated
    out  src_pad_mask (B, S) bool, and for every decoder layer i
         cross_k_i, cross_v_i (B, n_i*S, qkv): the encoder-decoder K/V of layer i, computed once
         (n_i = encoder layers it attends: arbitrary encoder-decoder attention)
decoder_step.onnx
    in   tokens (B, 1) int64 (the previous output token; EOS at step 0), step (1,) int64 (= T),
         src_pad_mask, cross_k_i, cross_v_i, and self_k_i, self_v_i (B, T, qkv) the cache so far
         (T = 0 at the first step)
    out  lprobs (B, V) float32 log-probabilities of the next token,
         new_self_k_i, new_self_v_i (B, T+1, qkv)

Exported with `torch.onnx.export(dynamo=True)` (needs onnx, onnxruntime for the check, and
onnxscript) with dynamic B, S and T. `export_onnx(..., verify=True)` runs both graphs in
onnxruntime for a few shapes and records the largest difference from torch.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hat.model.transformer import EncoderOut
from hat.nn.attention import attention


class EncoderGraph(nn.Module):
    def __init__(self, sub) -> None:
        super().__init__()
        self.sub = sub

    def forward(self, src_tokens: torch.Tensor):
        # hat.model.Encoder.forward without its data-dependent length check (not exportable)
        e = self.sub.encoder
        d = e.embed_dim
        pad = src_tokens.eq(e.padding_idx)
        mask = (~pad).long()
        pos = torch.cumsum(mask, dim=1) * mask + e.padding_idx
        x = e.embed_tokens(src_tokens, d) * (d**0.5) + e.embed_positions.table[pos][..., :d]
        x = x.masked_fill(pad.unsqueeze(-1), 0.0)
        states = []
        for layer in e.layers[: e.num_layers]:
            x = layer(x, pad)
            states.append(x)
        if e.layer_norm is not None:
            states = [e.layer_norm(s) for s in states]
        enc = EncoderOut(states, pad)
        outs = [pad]
        for layer in self.sub.decoder.layers[: self.sub.decoder.num_layers]:
            memory, _ = enc.memory(layer.ende_layers)
            outs += [layer.encoder_attn.k_proj(memory), layer.encoder_attn.v_proj(memory)]
        return tuple(outs)


class DecoderStepGraph(nn.Module):
    def __init__(self, sub) -> None:
        super().__init__()
        self.sub = sub

    def forward(self, tokens, step, src_pad_mask, *caches):
        dec = self.sub.decoder
        L = dec.num_layers
        cross, past = caches[: 2 * L], caches[2 * L:]
        d = dec.embed_dim
        pos = dec.embed_positions.table.index_select(0, step + (dec.padding_idx + 1))[:, :d]  # (1, d)
        x = dec.embed_tokens(tokens, d) * (d**0.5) + pos.unsqueeze(0)
        new_cache = []
        for i, layer in enumerate(dec.layers[:L]):
            sa, ca = layer.self_attn, layer.encoder_attn
            k = torch.cat([past[2 * i], sa.k_proj(x if not layer.normalize_before else layer.self_attn_layer_norm(x))], 1)
            v = torch.cat([past[2 * i + 1], sa.v_proj(x if not layer.normalize_before else layer.self_attn_layer_norm(x))], 1)
            new_cache += [k, v]
            x = layer._residual(x, layer.self_attn_layer_norm,
                                lambda h, sa=sa, k=k, v=v: sa.out_proj(attention(sa.q_proj(h), k, v, sa.num_heads)))
            mask = src_pad_mask.repeat(1, layer.ende_layers) if layer.ende_layers > 1 else src_pad_mask
            ck, cv = cross[2 * i], cross[2 * i + 1]
            x = layer._residual(x, layer.encoder_attn_layer_norm,
                                lambda h, ca=ca, ck=ck, cv=cv, mask=mask: ca.out_proj(attention(ca.q_proj(h), ck, cv, ca.num_heads, mask)))
            x = layer._residual(x, layer.final_layer_norm, layer.ffn)
        if dec.layer_norm is not None:
            x = dec.layer_norm(x)
        logits = dec.embed_tokens.project(x) if dec.output_projection is None else dec.output_projection(x)
        return (F.log_softmax(logits[:, -1, :].float(), dim=-1), *new_cache)


def _names(L: int):
    enc_out = ["src_pad_mask"] + [n for i in range(L) for n in (f"cross_k_{i}", f"cross_v_{i}")]
    dec_in = (["tokens", "step", "src_pad_mask"] + enc_out[1:]
              + [n for i in range(L) for n in (f"self_k_{i}", f"self_v_{i}")])
    dec_out = ["lprobs"] + [n for i in range(L) for n in (f"new_self_k_{i}", f"new_self_v_{i}")]
    return enc_out, dec_in, dec_out


def example_inputs(sub, B: int, S: int, T: int, seed: int = 0):
    """Random (src_tokens, decoder-step inputs) of the given shapes, computed through torch."""
    g = torch.Generator().manual_seed(seed)
    V = sub.args.src_vocab_size
    src = torch.randint(4, V, (B, S), generator=g)
    src[:, -1] = 2
    for r in range(1, B):  # left padding of various lengths
        src[r, : min(r, S - 2)] = sub.args.padding_idx
    enc_outs = EncoderGraph(sub)(src)
    L, qkv = sub.decoder.num_layers, sub.qkv_dim
    past = [torch.randn(B, T, qkv, generator=g) * 0.5 for _ in range(2 * L)]
    tokens = torch.randint(4, sub.args.tgt_vocab_size, (B, 1), generator=g)
    step = torch.tensor([T], dtype=torch.long)
    return src, (tokens, step, *enc_outs, *past)


def _quiet():
    """torch.onnx prints progress to stdout: keep stdout clean (for --json) and warnings off."""
    import contextlib
    import io
    import logging
    import warnings

    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    lg = logging.getLogger("torch")
    level = lg.level
    lg.setLevel(logging.ERROR)
    stack.callback(lg.setLevel, level)
    return stack


@torch.no_grad()
def export_graphs(sub, out_dir: str | Path, opset: int = 18) -> tuple[Path, Path]:
    """Write `encoder.onnx` and `decoder_step.onnx` of SubTransformer `sub` (dynamic B, S, T)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sub = sub.cpu().eval()
    L = sub.decoder.num_layers
    enc_names, dec_in, dec_out = _names(L)
    B, S, T = torch.export.Dim("batch", min=1, max=1024), torch.export.Dim("src_len", min=1, max=4096), \
        torch.export.Dim("past_len", min=0, max=4096)
    src, dec_args = example_inputs(sub, 2, 7, 3)
    enc_path, dec_path = out_dir / "encoder.onnx", out_dir / "decoder_step.onnx"
    enc_dyn = {"src_tokens": {0: B, 1: S}}
    with _quiet():
        torch.onnx.export(EncoderGraph(sub), (src,), str(enc_path), dynamo=True, input_names=["src_tokens"],
                          output_names=enc_names, dynamic_shapes=enc_dyn, opset_version=opset,
                          external_data=False, verbose=False)
        cross_shapes = []
        for layer in sub.decoder.layers[:L]:
            n = torch.export.Dim(f"mem_len_{len(cross_shapes) // 2}", min=1, max=4096 * 3)
            cross_shapes += [{0: B, 1: n}, {0: B, 1: n}]
        dec_dyn = ({0: B}, None, {0: B, 1: S}, (*cross_shapes, *([{0: B, 1: T}] * (2 * L))))  # *caches is one arg
        torch.onnx.export(DecoderStepGraph(sub), dec_args, str(dec_path), dynamo=True, input_names=dec_in,
                          output_names=dec_out, dynamic_shapes=dec_dyn, opset_version=opset,
                          external_data=False, verbose=False)
    return enc_path, dec_path


@torch.no_grad()
def export_onnx(translator, out_dir: str | Path, opset: int = 18, verify: bool = True) -> dict:
    out_dir = Path(out_dir)
    sub = translator.model.cpu().eval()
    L = sub.decoder.num_layers
    enc_names, dec_in, dec_out = _names(L)
    enc_path, dec_path = export_graphs(sub, out_dir, opset)
    meta = {
        "format": "hat-onnx", "version": 1, "opset": opset,
        "encoder_inputs": ["src_tokens"], "encoder_outputs": enc_names,
        "decoder_inputs": dec_in, "decoder_outputs": dec_out,
        "num_decoder_layers": L, "qkv_dim": sub.qkv_dim, "pad": sub.args.padding_idx, "eos": 2,
        "src_lang": translator.src_lang, "tgt_lang": translator.tgt_lang,
        "config": sub.config.to_dict(),
    }
    (out_dir / "spm.model").write_bytes(translator.spm_bytes)
    translator.src_dict.save(out_dir / f"dict.{translator.src_lang}.txt")
    translator.tgt_dict.save(out_dir / f"dict.{translator.tgt_lang}.txt")
    res = {"format": "onnx", "files": [str(enc_path), str(dec_path), str(out_dir / "onnx.json"),
                                       str(out_dir / "spm.model"), str(out_dir / f"dict.{translator.src_lang}.txt"),
                                       str(out_dir / f"dict.{translator.tgt_lang}.txt")],
           "encoder": str(enc_path), "decoder_step": str(dec_path)}
    if verify:
        meta["max_abs_diff"] = res["max_abs_diff"] = verify_onnx(sub, out_dir)
    (out_dir / "onnx.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return res


@torch.no_grad()
def verify_onnx(sub, out_dir: str | Path, shapes=((1, 5, 0), (3, 9, 4), (2, 17, 1))) -> float:
    """Largest |onnxruntime - torch| over the outputs of both graphs for `shapes` (B, S, T)."""
    import onnxruntime as ort

    out_dir = Path(out_dir)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    enc = ort.InferenceSession(str(out_dir / "encoder.onnx"), opts, providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(out_dir / "decoder_step.onnx"), opts, providers=["CPUExecutionProvider"])
    L = sub.decoder.num_layers
    enc_names, dec_in, _ = _names(L)
    worst = 0.0
    for i, (B, S, T) in enumerate(shapes):
        src, dargs = example_inputs(sub, B, S, T, seed=100 + i)
        ref_enc = EncoderGraph(sub)(src)
        got_enc = enc.run(None, {"src_tokens": src.numpy()})
        for r, g in zip(ref_enc, got_enc):
            worst = max(worst, float((r.float() - torch.from_numpy(g).float()).abs().max()) if r.numel() else 0.0)
        ref_dec = DecoderStepGraph(sub)(*dargs)
        got_dec = dec.run(None, {n: a.numpy() for n, a in zip(dec_in, dargs)})
        for r, g in zip(ref_dec, got_dec):
            diff = (r - torch.from_numpy(g)).abs()
            worst = max(worst, float(diff[torch.isfinite(diff)].max()) if diff.numel() else 0.0)
    if not math.isfinite(worst):
        raise RuntimeError("onnxruntime produced non-finite outputs")
    return worst


def greedy_onnx(out_dir: str | Path, src_tokens: torch.Tensor, max_len: int) -> list[list[int]]:
    """Greedy decoding run entirely in onnxruntime (a usage example of the two graphs)."""
    import numpy as np
    import onnxruntime as ort

    out_dir = Path(out_dir)
    meta = json.loads((out_dir / "onnx.json").read_text(encoding="utf-8"))
    enc = ort.InferenceSession(str(out_dir / "encoder.onnx"), providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(out_dir / "decoder_step.onnx"), providers=["CPUExecutionProvider"])
    L, qkv, eos, pad = meta["num_decoder_layers"], meta["qkv_dim"], meta["eos"], meta["pad"]
    enc_out = enc.run(None, {"src_tokens": src_tokens.numpy()})
    B = src_tokens.size(0)
    past = [np.zeros((B, 0, qkv), dtype=np.float32) for _ in range(2 * L)]
    tok = np.full((B, 1), eos, dtype=np.int64)
    out = [[] for _ in range(B)]
    done = np.zeros(B, dtype=bool)
    for step in range(max_len + 1):
        feeds = dict(zip(meta["decoder_inputs"], [tok, np.array([step], dtype=np.int64), *enc_out, *past]))
        lp, *past = dec.run(None, feeds)
        lp[:, pad] = -np.inf
        if step == 0:
            lp[:, eos] = -np.inf
        if step == max_len:
            lp[:, :eos] = -np.inf
            lp[:, eos + 1:] = -np.inf
        nxt = lp.argmax(-1)
        for b in range(B):
            if not done[b]:
                if nxt[b] == eos:
                    done[b] = True
                else:
                    out[b].append(int(nxt[b]))
        if done.all():
            break
        tok = nxt.reshape(B, 1).astype(np.int64)
    return out
