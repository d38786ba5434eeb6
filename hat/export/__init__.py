"""Exports of a SubTransformer: standalone file, fairseq checkpoint + plugin, ONNX graphs.

Every exporter starts from a `Translator` (model + vocabulary), obtained with
`load_any(checkpoint, config, data)` from a SuperTransformer checkpoint + SubConfig or from a
standalone file. Formats register in FORMATS as `(translator, out_dir, **options) -> {"files": [...], ...}`;
heavy optional dependencies (fairseq, onnx) are imported only when their format is used.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from hat.export.standalone import Translator, from_super_checkpoint, load, load_any
from hat.registry import Registry

__all__ = ["FORMATS", "Translator", "export", "from_super_checkpoint", "load", "load_any"]

FORMATS: Registry[Callable[..., dict[str, Any]]] = Registry("export format")


@FORMATS.register("standalone")
def _standalone(translator: Translator, out_dir: Path) -> dict[str, Any]:
    path = translator.save(out_dir / "model.pt")
    return {"format": "standalone", "files": [str(path)], "model": str(path)}


@FORMATS.register("fairseq")
def _fairseq(translator: Translator, out_dir: Path, **kw: Any) -> dict[str, Any]:
    from hat.export.fairseq_export import export_fairseq  # noqa: PLC0415

    return export_fairseq(translator, out_dir, **kw)


@FORMATS.register("onnx")
def _onnx(translator: Translator, out_dir: Path, **kw: Any) -> dict[str, Any]:
    from hat.export.onnx_export import export_onnx  # noqa: PLC0415

    return export_onnx(translator, out_dir, **kw)


def export(translator: Translator, fmt: str, out_dir: str | Path, **kw: Any) -> dict[str, Any]:
    """Write `translator` in `fmt` under `out_dir`; returns {"files": [...], ...}."""
    writer = FORMATS.get(fmt)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return writer(translator, out_dir, **kw)
