"""Exports of a SubTransformer: standalone file, fairseq checkpoint + plugin, ONNX graphs, CTranslate2.

Every exporter starts from a `Translator` (model + vocabulary), obtained with
`load_any(checkpoint, config, data)` from a SuperTransformer checkpoint + SubConfig or from a
standalone file. Formats register in FORMATS as `(translator, out_dir, **options) -> {"files": [...], ...}`;
heavy optional dependencies (fairseq, onnx, ctranslate2) are imported only when their format is used.
`quantize="int8"` is an option of standalone (torch dynamic quantization), onnx (onnxruntime's)
and ctranslate2 (CTranslate2's own). A decoder-only LM exports with `export_lm` (ONNX with a KV cache). `hat.export.runtimes.open_model` opens any export to translate.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from hat.errors import HatError
from hat.export.standalone import Translator, from_super_checkpoint, load, load_any
from hat.registry import Registry

__all__ = ["FORMATS", "Translator", "export", "export_lm", "from_super_checkpoint", "load", "load_any"]

FORMATS: Registry[Callable[..., dict[str, Any]]] = Registry("export format")


@FORMATS.register("standalone")
def _standalone(translator: Translator, out_dir: Path, quantize: str | None = None) -> dict[str, Any]:
    if quantize:
        translator = translator.quantized(quantize)
    path = translator.save(out_dir / "model.pt")
    return {"format": "standalone", "files": [str(path)], "model": str(path), "quantization": translator.quantization}


@FORMATS.register("fairseq")
def _fairseq(translator: Translator, out_dir: Path, quantize: str | None = None, **kw: Any) -> dict[str, Any]:
    from hat.export.fairseq_export import export_fairseq  # noqa: PLC0415

    if quantize or translator.quantization:
        raise HatError(f"{translator.source}: the fairseq export is float32 only "
                       "(int8: --format standalone, onnx or ctranslate2 with --quantize int8)")
    return export_fairseq(translator, out_dir, **kw)


@FORMATS.register("onnx")
def _onnx(translator: Translator, out_dir: Path, **kw: Any) -> dict[str, Any]:
    from hat.export.onnx_export import export_onnx  # noqa: PLC0415

    return export_onnx(translator, out_dir, **kw)


@FORMATS.register("ctranslate2")
def _ctranslate2(translator: Translator, out_dir: Path, **kw: Any) -> dict[str, Any]:
    from hat.export.ctranslate2_export import export_ctranslate2  # noqa: PLC0415

    return export_ctranslate2(translator, out_dir, **kw)


def export(translator: Translator, fmt: str, out_dir: str | Path, **kw: Any) -> dict[str, Any]:
    """Write `translator` in `fmt` under `out_dir`; returns {"files": [...], ...}."""
    writer = FORMATS.get(fmt)
    return _writing(out_dir, lambda d: writer(translator, d, **kw))


def export_lm(model: Any, ckpt: dict[str, Any], fmt: str, out_dir: str | Path, **kw: Any) -> dict[str, Any]:
    """Write a decoder-only LM (`hat.model.lm_checkpoint.load_lm`'s model and checkpoint) in `fmt`
    under `out_dir`: ONNX with a KV cache (`hat.export.lm_onnx`), the one format it has."""
    if fmt != "onnx":
        raise HatError(f"--format {fmt}: a decoder-only LM exports to --format onnx only")
    from hat.export.lm_onnx import export_lm_onnx  # noqa: PLC0415

    return _writing(out_dir, lambda d: export_lm_onnx(model, ckpt, d, **kw))


def _writing(out_dir: str | Path, write: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return write(out_dir)
    except BaseException:
        if created and not any(out_dir.iterdir()):  # a refused export leaves no empty directory behind
            out_dir.rmdir()
        raise
