"""Device registry: `hat/configs/device/NAME.yaml` (or any YAML path) -> DeviceSpec.

A device YAML holds `name`, `description`, `predictor` (optional path), `protocol`
(src_len, tgt_len, beam, threads, backend, lat_norm ...), optionally `hat_predictors` (HAT's trained
predictors of this device, by file name, with the space and lat-norm to import them with: HAT's
devices ship none of ours) and optionally `hardware`: a piece of the
CPU model, board model or GPU name that identifies the device (`Raspberry Pi`, `TITAN Xp`), so a
search on another machine knows it cannot measure the device (`hat search --verify`). A relative predictor path is looked up
next to the YAML first (the shipped predictors sit beside their device files inside the
package, so a plain `pip install` finds them), then in the current directory.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hat.errors import ConfigError
from hat.shipped import read_yaml, resolve


@dataclass(frozen=True)
class DeviceSpec:
    name: str
    description: str = ""
    predictor: str | None = None  # as written in the YAML
    protocol: dict[str, Any] = field(default_factory=dict, hash=False)
    source: str = ""
    hardware: str | None = None  # None: any machine that runs the backend is this device
    hat_predictors: tuple[dict[str, Any], ...] = field(default=(), hash=False)  # {file, space, lat_norm, task}

    @property
    def lat_norm(self) -> float:
        """HAT divides the latency target by this (Pi 5000, Xeon 300, GPU 200 ms)."""
        return float(self.protocol.get("lat_norm", 100.0))

    def import_commands(self) -> list[str]:
        """`hat import-predictor` lines that make this device's predictor from HAT's files."""
        return [f"hat import-predictor {h['file']} --device {self.name} --space {h.get('space', 'wmt-latency')} "
                f"--out {self.predictor or self.name + '.pt'}" for h in self.hat_predictors]

    def predictor_path(self) -> Path:
        """The predictor file, or a ConfigError saying how to make one."""
        how = (
            f"measure this device with `python measure_latency.py --device {self.name} --space SPACE --samples 1000 "
            f"--out {self.name}.csv` and fit `python train_predictor.py --data {self.name}.csv --out {self.name}.pt`, "
            f"or fit an existing HAT latency CSV: `python train_predictor.py --data HAT.csv --space SPACE --out P.pt`, "
            f"then set `predictor:` in {self.source or 'the device YAML'} or pass --predictor"
        )
        if self.hat_predictors:
            how = f"with HAT's trained predictor: `{self.import_commands()[0]}` in the working directory; or {how}"
        if not self.predictor:
            raise ConfigError(f"device {self.name}: no latency predictor yet; {how}")
        here = Path(self.source).parent if self.source else None
        found = find_file(self.predictor, here)
        if found is None:
            where = f"{here}, the current directory" if here else "the current directory"
            raise ConfigError(f"device {self.name}: predictor {self.predictor} not found ({where}); {how}")
        return found


def find_file(path: str | Path, yaml_dir: Path | None = None) -> Path | None:
    """Resolve a relative path against the device YAML's directory, then the current directory."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p if p.is_file() else None
    for base in (yaml_dir, Path.cwd()):
        if base is not None and (base / p).is_file():
            return (base / p).resolve()
    return None


def resolve_device(name: str | Path) -> DeviceSpec:
    """A shipped device by name (`raspberrypi`, `xeon`, `titanxp`, `cpu-2core`) or a YAML path."""
    p = resolve(name, "device", "device")
    data = read_yaml(p)
    if not isinstance(data, dict) or "name" not in data:
        raise ConfigError(f"{p}: not a device file (needs at least `name:`)")
    proto = data.get("protocol") or {}
    if not isinstance(proto, dict):
        raise ConfigError(f"{p}: `protocol` must be a mapping")
    pred, hw, hat = data.get("predictor"), data.get("hardware"), data.get("hat_predictors") or []
    if not isinstance(hat, list) or not all(isinstance(h, dict) and isinstance(h.get("file"), str) for h in hat):
        raise ConfigError(f"{p}: `hat_predictors` must be a list of mappings with a `file:`")
    return DeviceSpec(str(data["name"]), str(data.get("description", "")), str(pred) if pred else None, dict(proto), str(p),
                      str(hw) if hw else None, tuple(dict(h) for h in hat))
