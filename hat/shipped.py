"""The YAML files shipped in `hat/configs/<kind>/`: look one up by name or take a path.

Spaces, training recipes, devices and search / latency settings are all addressed the same way
(`tiny`, `tiny-cpu`, `cpu-2core`, or a file of the user's), so one resolver and one YAML reader
serve them all.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hat.errors import ConfigError, first_line

CONFIG_ROOT = Path(__file__).resolve().parent / "configs"


def available(kind: str) -> list[str]:
    """Names of the shipped files of `kind` (`space`, `train`, `device`, `search`, `latency`)."""
    return sorted(p.stem for p in (CONFIG_ROOT / kind).glob("*.yaml"))


def resolve(name_or_path: str | Path, kind: str, what: str) -> Path:
    """An existing file path, else the shipped `kind` of that name; the error lists what ships."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    cand = CONFIG_ROOT / kind / f"{name_or_path}.yaml"
    if not cand.is_file():
        raise ConfigError(f"{name_or_path}: unknown {what} (shipped: {', '.join(available(kind))}) and no such file")
    return cand


# Bounds on what a YAML file may expand to: a config is a few hundred values, a few levels deep.
# Aliases are shared references in the parsed tree, so a 600-byte file of nested anchors
# ("billion laughs") parses instantly but expands exponentially wherever it is copied (OmegaConf,
# JSON): the expanded size is counted before anything copies it.
MAX_YAML_BYTES = 1 << 20
MAX_YAML_DEPTH = 64
MAX_YAML_VALUES = 100_000


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses nesting deeper than MAX_YAML_DEPTH while composing (the composer
    recurses per level: without the bound, a deep file is a RecursionError)."""

    def compose_node(self, parent, index):  # noqa: ANN001, ANN201  (PyYAML's signature)
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.YAMLError(f"nested deeper than {MAX_YAML_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _expanded_size(obj: Any) -> int:
    """Values in `obj` with every alias expanded, stopping past MAX_YAML_VALUES (memoised per
    shared node, so counting a billion-laughs tree takes microseconds)."""
    memo: dict[int, int] = {}

    def size(o: Any) -> int:
        if not isinstance(o, (dict, list)):
            return 1
        if id(o) not in memo:
            memo[id(o)] = 0  # a self-referencing alias counts once instead of looping
            items = list(o.keys()) + list(o.values()) if isinstance(o, dict) else o
            total = 1
            for x in items:
                total += size(x)
                if total > MAX_YAML_VALUES:
                    break
            memo[id(o)] = total
        return memo[id(o)]

    return size(obj)


def read_yaml(path: Path) -> Any:
    """Parsed YAML; a malformed, non-UTF-8, oversized, too deeply nested or alias-bomb file is one
    ConfigError naming it (see the MAX_YAML_* bounds)."""
    path = Path(path)
    if path.stat().st_size > MAX_YAML_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size} bytes, more than a config file ({MAX_YAML_BYTES} at most)")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_BoundedLoader)  # noqa: S506 (a SafeLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: malformed YAML ({first_line(e)})") from None
    if _expanded_size(data) > MAX_YAML_VALUES:
        raise ConfigError(f"{path}: expands to more than {MAX_YAML_VALUES} values (nested YAML aliases); "
                          "write the values out")
    return data


SETTINGS_VERSION = 1


def load_settings(name_or_path: str | Path, kind: str, what: str) -> tuple[Path, dict[str, Any]]:
    """(path, values) of a versioned settings YAML (`hat/configs/search/`, `.../latency/`):
    a mapping with `version: 1`; the version key is not among the values returned."""
    p = resolve(name_or_path, kind, what)
    data = read_yaml(p)
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: not a {what} file (expected a mapping)")
    version = data.pop("version", None)
    if version != SETTINGS_VERSION:
        raise ConfigError(f"{p}: {what} version {version!r}, this hat reads version {SETTINGS_VERSION}")
    return p, data
