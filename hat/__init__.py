"""hat: hardware-aware Transformer architecture search (HAT, Wang et al., ACL 2020).

`hat.load(path)` opens a standalone SubTransformer export (see `hat.export.standalone`);
it is imported lazily so `import hat` stays light.
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__", "load"]


def __getattr__(name: str):
    if name == "load":
        from hat.export.standalone import load

        return load
    raise AttributeError(f"module 'hat' has no attribute {name!r}")
