"""int8 models: torch dynamic quantization of a SubTransformer, and its plain-tensor file form.

`quantize_int8(model)` gives every `nn.Linear` (the output projection included: a tied one is
first copied into its own `nn.Linear`) int8 weights, per output channel (symmetric, torch's
`per_channel_dynamic_qconfig`); activations are quantized per call (dynamic quantization), so no
calibration data is needed. Embeddings, LayerNorms and attention stay in float32. CPU only
(torch's quantized kernels: fbgemm on x86, qnnpack on ARM).

In a file the quantized layers are plain tensors, so the file still loads weights-only:
`NAME.weight` int8, `NAME.weight_scale` float32 and `NAME.weight_zero_point` int64 (one per
output row), `NAME.bias` float32. `int8_state` writes that form and `load_int8_state` rebuilds
the quantized modules from it bit for bit.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Iterator

import torch
from torch import nn

INT8 = "int8"
QUANTIZATIONS = (INT8,)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch warns that quantized tensors are deprecated on every quantized weight."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _dynamic_linear() -> type:
    from torch.ao.nn.quantized.dynamic import Linear  # noqa: PLC0415

    return Linear


def untie_output(model: nn.Module) -> nn.Module:
    """Give the decoder its own output `nn.Linear` (a copy of the tied embedding columns) so that
    quantization reaches the largest matrix of a small model; outputs are unchanged."""
    dec = model.decoder
    if dec.output_projection is None:
        w = dec.embed_tokens.weight[:, : dec.embed_dim].detach().clone()
        proj = nn.Linear(w.size(1), w.size(0), bias=False)
        with torch.no_grad():
            proj.weight.copy_(w)
        dec.output_projection = proj
    return model


def quantize_int8(model: nn.Module) -> nn.Module:
    """`model` (float32, CPU) with int8 dynamically quantized Linear layers, in eval mode."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic  # noqa: PLC0415

    model = untie_output(model.cpu().eval())
    with _quiet():
        return quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True)


def quantized_layers(model: nn.Module) -> dict[str, nn.Module]:
    cls = _dynamic_linear()
    return {name: m for name, m in model.named_modules() if isinstance(m, cls)}


def int8_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The quantized model as plain tensors (see the module docstring)."""
    layers = quantized_layers(model)
    owner = {f"{name}.": name for name in layers}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
             if not any(k.startswith(prefix) for prefix in owner)}
    with _quiet():
        for name, m in layers.items():
            w, b = m._weight_bias()
            state[f"{name}.weight"] = w.int_repr().contiguous()
            state[f"{name}.weight_scale"] = w.q_per_channel_scales().float()
            state[f"{name}.weight_zero_point"] = w.q_per_channel_zero_points().long()
            if b is not None:
                state[f"{name}.bias"] = b.detach().float()
    return state


def dequantized(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The float32 state dict that an `int8_state` stands for (to build and check the architecture)."""
    out = {}
    for k, v in state.items():
        if k.endswith((".weight_scale", ".weight_zero_point")):
            continue
        base = k[: -len(".weight")]
        if k.endswith(".weight") and f"{base}.weight_scale" in state:
            zp = state[f"{base}.weight_zero_point"].unsqueeze(1)
            v = (v.to(torch.float32) - zp) * state[f"{base}.weight_scale"].unsqueeze(1)
        out[k] = v
    return out


def load_int8_state(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Load an `int8_state` into float32 `model` of the same architecture: returns the quantized
    model holding exactly the stored int8 weights. A mismatch raises (RuntimeError, KeyError)."""
    untie_output(model)
    fp32 = dequantized(state)
    model.load_state_dict(fp32)
    q = quantize_int8(model)
    with _quiet():
        for name, m in quantized_layers(q).items():
            w = torch.quantize_per_channel(fp32[f"{name}.weight"], state[f"{name}.weight_scale"].double(),
                                           state[f"{name}.weight_zero_point"].long(), 0, torch.qint8)
            m.set_weight_bias(w, state.get(f"{name}.bias"))
    return q
