"""One way to open any export for translation: `open_model(path)` -> a `Translator`.

    FILE or DIR/model.pt      standalone export, float32 or int8 (`hat.export.standalone`)
    DIR with onnx.json        ONNX graphs, float32 or int8, run in onnxruntime (`OnnxTranslator`)
    DIR with hat-ctranslate2.json   CTranslate2 export (`hat.export.ctranslate2_export`)

Every kind answers `translate(sentences)` and `generate(source ids)` and carries its tokenizers,
so `hat translate` and `hat evaluate` take any of them. The ONNX runtime reuses hat's own
search (`hat.model.generate`): `OrtModel` offers the `encode` / `decode_step` / `reorder_cache`
that greedy and beam search call, each step one run of the exported decoder-step graph.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from hat.data.dictionary import Dictionary
from hat.errors import CheckpointError, HatError, first_line, install_hint
from hat.export.standalone import Translator, load

ONNX_META, CT2_META = "onnx.json", "hat-ctranslate2.json"


def read_export_meta(path: Path) -> dict:
    """An export directory's JSON description, checked for the keys hat reads."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (not a complete hat export)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt ({first_line(e, 120)})") from None
    missing = [k for k in ("config", "src_lang", "tgt_lang") if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise CheckpointError(f"{path}: lacks {', '.join(missing)}")
    return meta


def read_export_vocab(directory: Path, meta: dict) -> tuple[bytes, Dictionary, Dictionary]:
    """spm.model and dict.SRC.txt / dict.TGT.txt written next to an ONNX or CTranslate2 export."""
    spm = directory / "spm.model"
    if not spm.is_file():
        raise CheckpointError(f"{spm}: missing (the export's SentencePiece model)")
    return (spm.read_bytes(), Dictionary.load(directory / f"dict.{meta['src_lang']}.txt"),
            Dictionary.load(directory / f"dict.{meta['tgt_lang']}.txt"))


# ------------------------------------------------------------------------------------------ ONNX
class _OrtEncoderOut:
    """The encoder graph's outputs (padding mask, every layer's encoder-decoder K/V)."""

    def __init__(self, arrays: list[np.ndarray]) -> None:
        self.arrays = arrays

    def reorder(self, order: torch.Tensor) -> "_OrtEncoderOut":
        idx = order.cpu().numpy()
        return _OrtEncoderOut([a[idx] for a in self.arrays])


class OrtModel:
    """The two ONNX graphs behind the interface `hat.model.generate` decodes with. The cache is
    a list of arrays: the encoder outputs, then every layer's self-attention K/V so far."""

    def __init__(self, directory: Path, meta: dict, threads: int | None = None, device: str = "cpu") -> None:
        from hat.export.onnx_export import DECODER, ENCODER, OrtStepper  # noqa: PLC0415
        from hat.space import SubConfig  # noqa: PLC0415

        for name in (ENCODER, DECODER):
            if not (directory / name).is_file():
                raise CheckpointError(f"{directory / name}: missing (an ONNX export has {ENCODER}, {DECODER} and "
                                      f"{ONNX_META})")
        providers = ("CUDAExecutionProvider",) if torch.device(device).type == "cuda" else ("CPUExecutionProvider",)
        try:
            self.stepper = OrtStepper(directory, threads, providers)
        except Exception as e:  # noqa: BLE001  (onnxruntime raises its own exception types)
            raise CheckpointError(f"{directory}: onnxruntime cannot load the graphs ({first_line(e, 160)})") from None
        self.config = SubConfig.from_dict(meta["config"])
        self.args = SimpleNamespace(max_positions=int(meta.get("max_positions", 1024)), padding_idx=int(meta["pad"]))
        self.device = torch.device("cpu")  # tensors handed to and from the search live on the host
        self.num_encoder_outputs = 1 + 2 * self.stepper.num_layers

    def eval(self) -> "OrtModel":
        return self

    def encode(self, src_tokens: torch.Tensor, src_lengths: torch.Tensor | None = None) -> _OrtEncoderOut:
        if src_tokens.size(1) > self.args.max_positions:
            raise ValueError(f"sequence longer than max_positions ({self.args.max_positions})")
        return _OrtEncoderOut(self.stepper.encode(src_tokens.cpu().numpy()))

    def decode_step(self, prev_output_tokens: torch.Tensor, encoder_out: _OrtEncoderOut, cache: list) -> torch.Tensor:
        """Log-probabilities (B, V) of the next token; `cache` (empty at the first step) is extended."""
        if not cache:
            cache.extend(encoder_out.arrays + self.stepper.empty_cache(prev_output_tokens.size(0)))
        n = self.num_encoder_outputs
        tokens = prev_output_tokens[:, -1:].cpu().numpy()
        lprobs, cache[n:] = self.stepper.step(tokens, prev_output_tokens.size(1) - 1, cache[:n], cache[n:])
        return torch.from_numpy(lprobs)

    def reorder_cache(self, cache: list, order: torch.Tensor, cross: bool = True) -> None:
        """As `EncoderDecoder.reorder_cache`: the encoder outputs move only when `cross`."""
        idx = order.cpu().numpy()
        keep = 0 if cross else self.num_encoder_outputs
        cache[keep:] = [a[idx] for a in cache[keep:]]


class ExportTranslator(Translator):
    """A Translator over an export directory: its JSON description (`META`), SentencePiece model
    and dictionaries, and the runtime's model (`build`)."""

    META = ""
    KIND = ""

    def __init__(self, directory: str | Path, device: str = "cpu", threads: int | None = None) -> None:
        directory = Path(directory)
        meta = read_export_meta(directory / self.META)
        spm_bytes, src_dict, tgt_dict = read_export_vocab(directory, meta)
        super().__init__(self.build(directory, meta, device, threads), spm_bytes, src_dict, tgt_dict,
                         meta["src_lang"], meta["tgt_lang"], meta, source=str(directory),
                         quantization=meta.get("quantization"))

    def build(self, directory: Path, meta: dict, device: str, threads: int | None) -> Any:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return self.model.device

    def save(self, path: str | Path) -> Path:
        raise HatError(f"{self.source}: an {self.KIND} export cannot be re-exported; export from the standalone model")


class OnnxTranslator(ExportTranslator):
    """hat's Translator over an ONNX export (`hat export --format onnx [--quantize int8]`)."""

    META, KIND = ONNX_META, "ONNX"

    def build(self, directory: Path, meta: dict, device: str, threads: int | None) -> OrtModel:
        return OrtModel(directory, meta, threads, device)


# ------------------------------------------------------------------------------------------ any
def open_model(path: str | Path, map_location: str | torch.device = "cpu", threads: int | None = None) -> Translator:
    """The export at `path` (see the module docstring), ready to translate on `map_location`."""
    p = Path(path)
    if p.is_dir():
        if (p / ONNX_META).is_file() or (p / "encoder.onnx").is_file() or (p / "decoder_step.onnx").is_file():
            return _optional(lambda: OnnxTranslator(p, str(map_location), threads), p, "onnx", "onnxruntime")
        if (p / CT2_META).is_file():
            from hat.export.ctranslate2_export import Ct2Translator  # noqa: PLC0415

            return _optional(lambda: Ct2Translator(p, str(map_location), threads), p, "ctranslate2", "ctranslate2")
        if (p / "model.pt").is_file():
            p = p / "model.pt"
        else:
            raise CheckpointError(f"{p}: not a hat export (no model.pt, {ONNX_META} or {CT2_META} in it)")
    return load(p).to(map_location)  # read on the CPU: an int8 model then refuses another device


def _optional(build: Any, path: Path, extra: str, package: str) -> Translator:
    try:
        return build()
    except ImportError:
        raise HatError(f"{path}: running this export needs {package} ({install_hint(extra)})") from None
