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


def read_yaml(path: Path) -> Any:
    """Parsed YAML; a malformed or non-UTF-8 file is one ConfigError naming it."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: malformed YAML ({first_line(e)})") from None


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
