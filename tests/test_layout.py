"""The package's shape: imports follow the layers, and no module outgrows one job (400 lines).

Layers, lowest first: base (errors, shipped, files, registry) <- space <- nn <- model <- stages
(data, train, latency, search, export, evaluate) <- top (commands, cli, the `hat` facade). A
module imports its own layer or lower ones; among the stages, data imports no other stage, and
only training itself (and `hat train`) imports the trainer. Function-local imports count too.
"""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "hat"
LAYERS = {
    "base": ("hat.errors", "hat.shipped", "hat.files", "hat.registry"),
    "space": ("hat.space",),
    "nn": ("hat.nn",),
    "model": ("hat.model",),
    "stages": ("hat.data", "hat.train", "hat.latency", "hat.search", "hat.export", "hat.evaluate"),
    "top": ("hat.commands", "hat.cli", "hat.__main__", "hat"),
}
RANK = {name: i for i, name in enumerate(LAYERS)}
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _prefix(module: str, prefixes: tuple[str, ...]) -> str | None:
    """The longest prefix `module` lies under (`hat` alone matches only `hat` itself)."""
    hits = [q for q in prefixes if module == q or (q != "hat" and module.startswith(q + "."))]
    return max(hits, key=len) if hits else None


def _unit(module: str) -> tuple[str, str]:
    """(layer, unit): e.g. `hat.search.scorers` -> ("stages", "hat.search")."""
    for layer, prefixes in LAYERS.items():
        unit = _prefix(module, prefixes)
        if unit is not None:
            return layer, unit
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS in {__file__}")


def _hat_imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found += [(node.lineno, n) for n in names if n == "hat" or n.startswith("hat.")]
    return found


MODULES = _modules()
PLUGIN = "hat.export.fairseq_plugin"  # copied next to exported checkpoints: imports nothing from hat


def _violations(module: str) -> list[str]:
    layer, unit = _unit(module)
    bad = []
    for line, target in _hat_imports(MODULES[module]):
        t_layer, t_unit = _unit(target)
        where = f"{module} (line {line}) imports {target}"
        if RANK[t_layer] > RANK[layer]:
            bad.append(f"{where} (layer {t_layer} is above {layer})")
        elif layer == "stages" and t_layer == "stages" and t_unit != unit:
            if unit == "hat.data":
                bad.append(f"{where} (data is the stages' common input and imports no other stage)")
            if t_unit == "hat.train":
                bad.append(f"{where} (only training imports the trainer; checkpoints are hat.model.checkpoint)")
        elif layer == "top" and t_unit == "hat.train" and module != "hat.commands.train":
            bad.append(f"{where} (only `hat train` imports the trainer)")
    return bad


def test_imports_follow_the_layers():
    bad = [v for m in MODULES if not m.startswith(PLUGIN) for v in _violations(m)]
    assert not bad, "\n".join(bad)


def test_the_layer_check_catches_upward_and_trainer_imports(tmp_path, monkeypatch):
    fake = tmp_path / "fake.py"
    fake.write_text("from hat.cli import main\n\ndef f():\n    from hat.train.trainer import Trainer\n")
    for module in ("hat.model.fake", "hat.search.fake"):
        monkeypatch.setitem(MODULES, module, fake)
    assert len(_violations("hat.model.fake")) == 2 and len(_violations("hat.search.fake")) == 2


def test_no_module_over_400_lines():
    long = {str(p.relative_to(PKG.parent)): n for p in MODULES.values()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"split these modules (one job each, at most {MAX_LINES} lines): {long}"
