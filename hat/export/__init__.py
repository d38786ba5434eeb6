"""Exports of a SubTransformer: standalone file, fairseq checkpoint + plugin, ONNX graphs.

Every exporter starts from a `Translator` (model + vocabulary), obtained with
`load_any(checkpoint, config, data)` from a SuperTransformer checkpoint + SubConfig or from a
standalone file. Heavy optional dependencies (fairseq, onnx) are imported only when used.
"""
from hat.export.standalone import Translator, from_super_checkpoint, load, load_any

__all__ = ["Translator", "from_super_checkpoint", "load", "load_any", "export"]

FORMATS = ("standalone", "fairseq", "onnx")


def export(translator: Translator, fmt: str, out_dir, **kw) -> dict:
    """Write `translator` in `fmt` under `out_dir`; returns {"files": [...], ...}."""
    from pathlib import Path

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if fmt == "standalone":
        path = translator.save(out_dir / "model.pt")
        return {"format": fmt, "files": [str(path)], "model": str(path)}
    if fmt == "fairseq":
        from hat.export.fairseq_export import export_fairseq

        return export_fairseq(translator, out_dir, **kw)
    if fmt == "onnx":
        from hat.export.onnx_export import export_onnx

        return export_onnx(translator, out_dir, **kw)
    raise ValueError(f"unknown export format {fmt!r} (choose from {', '.join(FORMATS)})")
