"""Errors that the CLI reports as one line (file and problem) with exit code 2."""
from __future__ import annotations


class HatError(Exception):
    """A user-facing error: bad input, missing file, config outside the design space."""


class ConfigError(HatError):
    """A SubConfig or design-space file that is malformed or outside the space."""


class DataError(HatError):
    """A corpus, dataset or CSV that is malformed, empty or misaligned."""


class CheckpointError(HatError):
    """A checkpoint that is corrupt, truncated or does not match the model."""


def first_line(e: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's message (its type name when empty), for one-line errors.

    Library messages (torch, YAML, OmegaConf) often span many lines; the CLI prints one.
    """
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    return line[:limit] if limit else line
