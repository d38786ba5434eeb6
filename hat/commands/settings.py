"""Settings files for commands: `--config NAME|FILE` under the flags, over the dataclass defaults.

A command lists its options as `Option(type, default)`, with defaults read from the settings
dataclasses (`EvolutionSettings`, `Protocol`, ...), so a number lives in one place. Its flags
default to None; `apply_settings` then fills every option not given on the command line from
the settings YAML (keys are the flags' names with `_`), else from the default. Precedence:
defaults < `--config` file < flags.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hat.errors import ConfigError
from hat.shipped import load_settings

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Option:
    type: type
    default: Any = None


def dataclass_options(cls: type, skip: tuple[str, ...] = (), defaults: bool = True) -> dict[str, Option]:
    """An Option per field of a settings dataclass (`defaults=False`: None, i.e. "not given")."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        t = hints[f.name]
        args = [a for a in typing.get_args(t) if a is not type(None)]
        out[f.name] = Option(args[0] if args else t, f.default if defaults else None)
    return out


def default_help(text: str, options: dict[str, Option], name: str) -> str:
    """`text (default D)`: help that states the dataclass default instead of repeating it."""
    return f"{text} (default {options[name].default})" if text else f"default {options[name].default}"


def add_option(parser: argparse._ActionsContainer, options: dict[str, Option], name: str, text: str = "",
               **kwargs: Any) -> None:
    """`--name-with-dashes` of the option's type, default None (filled by `apply_settings`); the
    help states the option's default unless it has none."""
    opt = options[name]
    if opt.default is not None:
        text = default_help(text, options, name)
    parser.add_argument(f"--{name.replace('_', '-')}", type=opt.type, help=text, **kwargs)


def _coerce(value: Any, opt: Option, key: str, source: str) -> Any:
    if value is None:
        return None
    if opt.type is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, opt.type) and not (opt.type is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{source}: {key} must be {opt.type.__name__}, got {value!r}")


def apply_settings(args: argparse.Namespace, options: dict[str, Option], kind: str, what: str) -> None:
    """Fill each option that is None in `args` from `args.config` (a shipped `kind` name or a
    YAML file), else from its default; unknown keys and values of the wrong type are refused."""
    values: dict[str, Any] = {}
    source = ""
    if getattr(args, "config", None):
        path, values = load_settings(args.config, kind, what)
        source = str(path)
        unknown = sorted(set(values) - set(options))
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)} (known: {', '.join(options)})")
    for key, opt in options.items():
        if getattr(args, key, None) is None:
            value = _coerce(values[key], opt, key, source) if key in values else opt.default
            setattr(args, key, value)


def compute_device(name: str, flag: str = "--compute") -> "torch.device":
    """The torch device a `--compute` value names, checked before anything is loaded onto it:
    auto (this rank's GPU under torchrun, else the first GPU, else the CPU), cpu, cuda[:N]."""
    import os  # noqa: PLC0415

    import torch  # noqa: PLC0415

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"{flag} {name}: not a device (auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        have = torch.cuda.device_count() if torch.cuda.is_available() else 0
        raise ConfigError(f"{flag} {name}: no such CUDA device ({have} available)" if have else
                          f"{flag} {name}: no CUDA device is available")
    backend = getattr(torch, dev.type, None)
    if dev.type not in ("cpu", "cuda") and not (hasattr(backend, "is_available") and backend.is_available()):
        raise ConfigError(f"{flag} {name}: device type {dev.type} is not available here")
    return dev
