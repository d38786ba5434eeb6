"""ONNX export of a decoder-only LM: one graph with an explicit KV cache, verified against torch.

lm.onnx  (`LanguageModel.extend` itself; the wrapper only names and flattens the tensors)
    in   tokens (B, T) int64: the next T tokens after the P cached ones
         past_k_i, past_v_i (B, P, embed_dim) float32 for every layer i: the cache so far
    out  logits (B, T, V) float32: next-token logits at each of the T positions
         present_k_i, present_v_i (B, P + T, embed_dim): the cache extended by the T tokens

Prefill and generation share this one graph: a prefill passes the prompt with an empty cache
(P = 0), a generation step one token with the cache the previous call returned; B, T and P are
dynamic. The graph does not check the context: a caller keeps P + T <= `max_positions` (as
`OrtLM` does; the sinusoidal table has no rows past it).

lm_onnx.json records the names, the cache width, the vocabulary size, `max_positions`, the
LMConfig and `max_abs_diff`, the largest |onnxruntime - torch| over the check's logits and
caches; spm.model and dict.LANG.txt (the checkpoint's vocabulary) sit next to it. The export is
refused, and nothing is left in place, when that difference exceeds the tolerance.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hat.data.dictionary import Dictionary
from hat.errors import ConfigError, HatError
from hat.export.onnx_export import _max_diff, _quiet, graph_opset
from hat.files import atomic_write_bytes, atomic_write_text
from hat.model.lm import LanguageModel

GRAPH, META = "lm.onnx", "lm_onnx.json"
TOLERANCE = 1e-3  # float32 graphs differ from torch by ~1e-5 on logits; more is a wrong graph


class ExtendGraph(nn.Module):
    """`extend` with the cache as flat tensors: (tokens, k_0, v_0, ...) -> (logits, k_0', v_0', ...)."""

    def __init__(self, model: LanguageModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cache = [(past[2 * i], past[2 * i + 1]) for i in range(len(past) // 2)]
        logits, new = self.model.extend(tokens, cache)
        return (logits.float(), *[t for kv in new for t in kv])


def names(layers: int) -> tuple[list[str], list[str]]:
    """The graph's input and output names."""
    cache = [f"{kv}_{i}" for i in range(layers) for kv in ("k", "v")]
    return ["tokens"] + [f"past_{c}" for c in cache], ["logits"] + [f"present_{c}" for c in cache]


def _cache(model: LanguageModel, batch: int, length: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, length, model.embed_dim, generator=g) for _ in range(2 * model.num_layers)]


@torch.no_grad()
def export_graph(model: LanguageModel, path: Path, opset: int = 18) -> None:
    """Write `model`'s extend graph to `path` (dynamic B, T, P) in `opset`."""
    import onnx

    if not 1 <= opset <= onnx.defs.onnx_opset_version():
        raise ConfigError(f"--opset {opset}: not an ONNX opset this onnx knows (1 to {onnx.defs.onnx_opset_version()})")
    model = model.cpu().eval()
    top = model.max_positions
    B, T, P = (torch.export.Dim("batch", min=1, max=1024), torch.export.Dim("new_len", min=1, max=top),
               torch.export.Dim("past_len", min=0, max=top))
    tokens = torch.randint(4, model.embed_tokens.num_embeddings, (2, 3), generator=torch.Generator().manual_seed(0))
    past = _cache(model, 2, 4, seed=1)
    ins, outs = names(model.num_layers)
    with _quiet():
        torch.onnx.export(ExtendGraph(model), (tokens, *past), str(path), dynamo=True, input_names=ins,
                          output_names=outs, dynamic_shapes=({0: B, 1: T}, tuple({0: B, 1: P} for _ in past)),
                          opset_version=opset, external_data=False, verbose=False)
    got = graph_opset(path)
    if got != opset:
        raise ConfigError(f"--opset {opset}: the exporter wrote opset {got} (it converts down to {opset} only where "
                          f"it can); use --opset {got} or higher")


class OrtLM:
    """The graph in onnxruntime: `extend(tokens, cache)` as `LanguageModel.extend`, numpy in and
    out, refusing a sequence longer than the context in one line."""

    def __init__(self, path: str | Path, max_positions: int, threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        inputs = self.session.get_inputs()
        self.input_names = [i.name for i in inputs]
        self.num_layers, self.width = (len(inputs) - 1) // 2, int(inputs[-1].shape[2])
        self.max_positions = max_positions

    def empty_cache(self, batch: int) -> list[np.ndarray]:
        return [np.zeros((batch, 0, self.width), dtype=np.float32) for _ in range(2 * self.num_layers)]

    def extend(self, tokens: np.ndarray, cache: list[np.ndarray] | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        cache = cache if cache is not None else self.empty_cache(tokens.shape[0])
        n = cache[0].shape[1] + tokens.shape[1]
        if n > self.max_positions:
            raise HatError(f"{n} tokens do not fit the context of {self.max_positions} positions")
        logits, *cache = self.session.run(None, dict(zip(self.input_names, [tokens.astype(np.int64), *cache])))
        return logits, cache


@torch.no_grad()
def verify_graph(model: LanguageModel, path: str | Path, schedule: tuple[tuple[int, ...], ...] = ((2, 5, 1, 1, 1),
                 (1, 1, 3, 1), (3, 7, 2, 1))) -> float:
    """Largest |onnxruntime - torch| over logits and caches when both run the same calls: for each
    (B, prefill, chunk, ...) in `schedule`, a prefill from an empty cache, then each chunk of new
    tokens over the cache so far (1: a generation step). Infinite on NaN, inf or a shape mismatch."""
    model = model.cpu().eval()
    ort = OrtLM(path, model.max_positions, threads=1)
    worst = 0.0
    for i, (batch, *chunks) in enumerate(schedule):
        g = torch.Generator().manual_seed(100 + i)
        tokens = torch.randint(4, model.embed_tokens.num_embeddings, (batch, sum(chunks)), generator=g)
        cache, got, start = None, None, 0
        for n in chunks:
            x = tokens[:, start:start + n]
            logits, cache = model.step(x, cache)
            got_logits, got = ort.extend(x.numpy(), got)
            worst = max(worst, _max_diff(logits, got_logits))
            start += n
        for r, o in zip([t for kv in cache for t in kv], got, strict=True):
            worst = max(worst, _max_diff(r, o))
    return worst


@torch.no_grad()
def export_lm_onnx(model: LanguageModel, ckpt: dict[str, Any], out_dir: str | Path, opset: int = 18,
                   verify: bool = True, tolerance: float = TOLERANCE) -> dict[str, Any]:
    """`lm.onnx` + `lm_onnx.json` + the vocabulary of the LM checkpoint `ckpt` under `out_dir`;
    with `verify`, refused (nothing written in place) when onnxruntime differs from torch by
    more than `tolerance`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path, tmp = out_dir / GRAPH, out_dir / f".{GRAPH}.{os.getpid()}.tmp"
    meta: dict[str, Any] = {}
    try:
        export_graph(model, tmp, opset)
        if verify:
            diff = verify_graph(model, tmp)
            if not diff <= tolerance:
                raise HatError(f"{path}: onnxruntime's logits differ from the model's by {diff:.3g} "
                               f"(tolerance {tolerance:g}): not exported")
            meta["max_abs_diff"] = diff
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    vocab = ckpt["vocabulary"]
    lang = vocab["lang"]
    atomic_write_bytes(out_dir / "spm.model", vocab["spm_model"])
    Dictionary.from_counts((s, 0) for s in vocab["symbols"][4:]).save(out_dir / f"dict.{lang}.txt")
    ins, outs = names(model.num_layers)
    meta = {"format": "hat-lm-onnx", "version": 1, "opset": opset, "graph": GRAPH, "inputs": ins, "outputs": outs,
            "num_layers": model.num_layers, "cache_dim": model.embed_dim,
            "vocab_size": model.embed_tokens.num_embeddings, "max_positions": model.max_positions,
            "pad": 1, "eos": 2, "lang": lang, "config": ckpt["lm_config"], "update": ckpt["update"],
            "tolerance": tolerance if verify else None, **meta}
    atomic_write_text(out_dir / META, json.dumps(meta, indent=1))
    files = [path, out_dir / META, out_dir / "spm.model", out_dir / f"dict.{lang}.txt"]
    res = {"format": "onnx", "files": [str(f) for f in files], "graph": str(path)}
    if verify:
        res["max_abs_diff"] = meta["max_abs_diff"]
    return res
