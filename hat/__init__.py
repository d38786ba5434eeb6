"""hat: hardware-aware Transformer architecture search (HAT, Wang et al., ACL 2020).

`hat.load(path)` opens an export for translation: a standalone model.pt (float32 or int8), an
ONNX or a CTranslate2 export directory (see `hat.export.runtimes.open_model`); it is imported
lazily so `import hat` stays light.
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__", "load"]


def __getattr__(name: str):
    if name == "load":
        from hat.export.runtimes import open_model

        return open_model
    raise AttributeError(f"module 'hat' has no attribute {name!r}")
