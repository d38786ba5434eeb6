"""ONNX export: the model's encoder and its decoding step, as two graphs with an explicit KV cache.

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

The graphs are `hat.model` itself: the encoder graph is `Encoder.forward` + `Decoder.init_state`,
the decoder graph `Decoder.step`; the wrappers here only name and flatten the tensors.
Exported with `torch.onnx.export(dynamo=True)` (needs onnx, onnxruntime for the check, and
onnxscript) with dynamic B, S and T. `OrtStepper` runs the two graphs in onnxruntime (greedy
decoding, the check, and the latency harness's onnxruntime backend); `export_onnx(...,
verify=True)` decodes a few batches in it and records the largest difference from `hat.model`.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hat.errors import ConfigError
from hat.files import atomic_write_bytes, atomic_write_text
from hat.model.transformer import EncoderDecoder, LayerState
from hat.nn import memory_mask

ENCODER, DECODER = "encoder.onnx", "decoder_step.onnx"


class EncoderGraph(nn.Module):
    def __init__(self, model: EncoderDecoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, src_tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        enc = self.model.encoder(src_tokens)
        state = self.model.decoder.init_state(enc)
        return (enc.padding_mask, *_flat(state, "cross_k", "cross_v"))


class DecoderStepGraph(nn.Module):
    def __init__(self, model: EncoderDecoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, step: torch.Tensor, src_pad_mask: torch.Tensor,
                *caches: torch.Tensor) -> tuple[torch.Tensor, ...]:
        dec = self.model.decoder
        L = dec.num_layers
        cross, past = caches[: 2 * L], caches[2 * L:]
        state = [LayerState(past[2 * i], past[2 * i + 1], cross[2 * i], cross[2 * i + 1],
                            memory_mask(src_pad_mask, layer.ende_layers))
                 for i, layer in enumerate(dec.layers[:L])]
        logits, state = dec.step(tokens, step, state)
        return (F.log_softmax(logits[:, -1, :].float(), dim=-1), *_flat(state, "self_k", "self_v"))


def _names(L: int) -> tuple[list[str], list[str], list[str]]:
    enc_out = ["src_pad_mask"] + [n for i in range(L) for n in (f"cross_k_{i}", f"cross_v_{i}")]
    dec_in = (["tokens", "step", "src_pad_mask"] + enc_out[1:]
              + [n for i in range(L) for n in (f"self_k_{i}", f"self_v_{i}")])
    dec_out = ["lprobs"] + [n for i in range(L) for n in (f"new_self_k_{i}", f"new_self_v_{i}")]
    return enc_out, dec_in, dec_out


def sample_tokens(model: EncoderDecoder, B: int, S: int, T: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random sources (B, S), left-padded by various amounts, and target prefixes (B, T) from EOS."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, model.args.src_vocab_size, (B, S), generator=g)
    src[:, -1] = 2
    for r in range(1, B):
        src[r, : min(r, S - 2)] = model.args.padding_idx
    prefix = torch.randint(4, model.args.tgt_vocab_size, (B, T), generator=g)
    prefix[:, 0] = 2
    return src, prefix


def _flat(state: list[LayerState], *fields: str) -> list[torch.Tensor]:
    return [getattr(s, f) for s in state for f in fields]


@torch.no_grad()
def _step_inputs(model: EncoderDecoder, src: torch.Tensor, prefix: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The decoder graph's inputs for the last token of `prefix` (length >= 2), the cache from torch."""
    enc = model.encode(src)
    state = model.decoder.init_state(enc)
    T = prefix.size(1) - 1
    for t in range(T):
        _, state = model.decoder.step(prefix[:, t : t + 1], torch.tensor([t]), state)
    cross, past = _flat(state, "cross_k", "cross_v"), _flat(state, "self_k", "self_v")
    return (prefix[:, T:], torch.tensor([T]), enc.padding_mask, *cross, *past)


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
    for name in ("torch", "onnxscript"):  # progress, and version-conversion attempts with tracebacks
        lg = logging.getLogger(name)
        stack.callback(lg.setLevel, lg.level)
        lg.setLevel(logging.ERROR)
    return stack


@torch.no_grad()
def export_graphs(sub: EncoderDecoder, out_dir: str | Path, opset: int = 18) -> tuple[Path, Path]:
    """Write `encoder.onnx` and `decoder_step.onnx` of SubTransformer `sub` (dynamic B, S, T) in
    `opset`: a ConfigError, and nothing written, when the exporter cannot produce that opset."""
    import onnx

    if not 1 <= opset <= onnx.defs.onnx_opset_version():
        raise ConfigError(f"--opset {opset}: not an ONNX opset this onnx knows (1 to {onnx.defs.onnx_opset_version()})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sub = sub.cpu().eval()
    L = sub.decoder.num_layers
    enc_names, dec_in, dec_out = _names(L)
    B, S, T = torch.export.Dim("batch", min=1, max=1024), torch.export.Dim("src_len", min=1, max=4096), \
        torch.export.Dim("past_len", min=0, max=4096)
    src, prefix = sample_tokens(sub, 2, 7, 4)
    dec_args = _step_inputs(sub, src, prefix)
    enc_path, dec_path = out_dir / ENCODER, out_dir / DECODER
    # written beside their names and moved in place only once both exist in the opset asked for
    enc_tmp, dec_tmp = (out_dir / f".{p.name}.{os.getpid()}.tmp" for p in (enc_path, dec_path))
    try:
        _export_both(sub, src, dec_args, enc_tmp, dec_tmp, enc_names, dec_in, dec_out, (B, S, T), opset)
        for tmp in (enc_tmp, dec_tmp):
            got = graph_opset(tmp)
            if got != opset:
                raise ConfigError(f"--opset {opset}: the exporter wrote opset {got} (it converts down to "
                                  f"{opset} only where it can); use --opset {got} or higher")
        os.replace(enc_tmp, enc_path)
        os.replace(dec_tmp, dec_path)
    finally:
        for tmp in (enc_tmp, dec_tmp):
            tmp.unlink(missing_ok=True)
    return enc_path, dec_path


def graph_opset(path: str | Path) -> int:
    """The default-domain opset an ONNX file declares."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), -1)


def _export_both(sub: EncoderDecoder, src: torch.Tensor, dec_args: tuple, enc_path: Path, dec_path: Path,
                 enc_names: list[str], dec_in: list[str], dec_out: list[str], dims: tuple, opset: int) -> None:
    B, S, T = dims
    L = sub.decoder.num_layers
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
    atomic_write_bytes(out_dir / "spm.model", translator.spm_bytes)
    translator.src_dict.save(out_dir / f"dict.{translator.src_lang}.txt")
    translator.tgt_dict.save(out_dir / f"dict.{translator.tgt_lang}.txt")
    res = {"format": "onnx", "files": [str(enc_path), str(dec_path), str(out_dir / "onnx.json"),
                                       str(out_dir / "spm.model"), str(out_dir / f"dict.{translator.src_lang}.txt"),
                                       str(out_dir / f"dict.{translator.tgt_lang}.txt")],
           "encoder": str(enc_path), "decoder_step": str(dec_path)}
    if verify:
        meta["max_abs_diff"] = res["max_abs_diff"] = verify_onnx(sub, out_dir)
    atomic_write_text(out_dir / "onnx.json", json.dumps(meta, indent=1))
    return res


class OrtStepper:
    """The two graphs in onnxruntime: `encode` once per batch of sources, then one `step` per
    target token with the KV cache passed explicitly (numpy in, numpy out)."""

    def __init__(self, out_dir: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        cpu = ["CPUExecutionProvider"]
        self.encoder = ort.InferenceSession(str(Path(out_dir) / ENCODER), opts, providers=cpu)
        self.decoder = ort.InferenceSession(str(Path(out_dir) / DECODER), opts, providers=cpu)
        inputs = self.decoder.get_inputs()
        self.input_names = [i.name for i in inputs]
        self.num_layers = (len(inputs) - 3) // 4
        self.qkv_dim = int(inputs[-1].shape[2])

    def encode(self, src_tokens: np.ndarray) -> list[np.ndarray]:
        """[src_pad_mask, cross_k_0, cross_v_0, ...] for `src_tokens` (B, S) int64."""
        return self.encoder.run(None, {"src_tokens": src_tokens})

    def empty_cache(self, batch: int) -> list[np.ndarray]:
        return [np.zeros((batch, 0, self.qkv_dim), dtype=np.float32) for _ in range(2 * self.num_layers)]

    def step(self, tokens: np.ndarray, step: int, encoder_out: list[np.ndarray],
             cache: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Log-probabilities (B, V) after `tokens` (B, 1) at position `step`, and the extended cache."""
        feeds = dict(zip(self.input_names, [tokens, np.array([step], dtype=np.int64), *encoder_out, *cache]))
        lprobs, *cache = self.decoder.run(None, feeds)
        return lprobs, cache


def _max_diff(ref: torch.Tensor, got: np.ndarray) -> float:
    """Largest |ref - got|; infinite where the shapes differ or where either side has a NaN or an
    infinity that the other does not have."""
    g = torch.from_numpy(np.asarray(got))
    if tuple(ref.shape) != tuple(g.shape):
        return math.inf
    if ref.dtype == torch.bool or g.dtype == torch.bool:
        return 0.0 if torch.equal(ref, g) else math.inf
    r, g = ref.float(), g.float()
    if not bool(((r == g) | (torch.isfinite(r) & torch.isfinite(g))).all()):
        return math.inf
    return float(torch.where(r == g, 0.0, (r - g).abs()).max()) if r.numel() else 0.0


@torch.no_grad()
def verify_onnx(sub: EncoderDecoder, out_dir: str | Path, shapes=((1, 5, 0), (3, 9, 4), (2, 17, 1))) -> float:
    """Largest |onnxruntime - hat.model| when both decode the same batch: for each (B, S, T) in
    `shapes`, the encoder outputs, and T + 1 steps of log-probabilities and KV cache compared
    with `sub.encode` / `sub.decode_step`. Raises if any difference is NaN or infinite."""
    ort = OrtStepper(out_dir, threads=1)
    sub = sub.cpu().eval()
    worst = 0.0
    for i, (B, S, T) in enumerate(shapes):
        src, prefix = sample_tokens(sub, B, S, T + 1, seed=100 + i)
        enc = sub.encode(src)
        cache: list[LayerState] = []
        got_enc = ort.encode(src.numpy())
        got_cache = ort.empty_cache(B)
        for t in range(T + 1):
            lprobs = sub.decode_step(prefix[:, : t + 1], enc, cache)
            got_lprobs, got_cache = ort.step(prefix[:, t : t + 1].numpy(), t, got_enc, got_cache)
            worst = max(worst, _max_diff(lprobs, got_lprobs))
        ref = [enc.padding_mask, *_flat(cache, "cross_k", "cross_v"), *_flat(cache, "self_k", "self_v")]
        for r, g in zip(ref, got_enc + got_cache, strict=True):
            worst = max(worst, _max_diff(r, g))
    if not math.isfinite(worst):
        raise RuntimeError(f"{out_dir}: onnxruntime outputs differ from hat.model by NaN/inf (or in shape)")
    return worst


def greedy_onnx(out_dir: str | Path, src_tokens: torch.Tensor, max_len: int) -> list[list[int]]:
    """Greedy decoding run entirely in onnxruntime (a usage example of the two graphs)."""
    meta = json.loads((Path(out_dir) / "onnx.json").read_text(encoding="utf-8"))
    eos, pad = meta["eos"], meta["pad"]
    ort = OrtStepper(out_dir)
    enc_out = ort.encode(src_tokens.numpy())
    B = src_tokens.size(0)
    cache = ort.empty_cache(B)
    tok = np.full((B, 1), eos, dtype=np.int64)
    out: list[list[int]] = [[] for _ in range(B)]
    done = np.zeros(B, dtype=bool)
    for step in range(max_len + 1):
        lp, cache = ort.step(tok, step, enc_out, cache)
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
