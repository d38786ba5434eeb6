"""Errors that the CLI reports as one line (file and problem) with exit code 2."""


class HatError(Exception):
    """A user-facing error: bad input, missing file, config outside the design space."""


class ConfigError(HatError):
    """A SubConfig or design-space file that is malformed or outside the space."""


class DataError(HatError):
    """A corpus, dataset or CSV that is malformed, empty or misaligned."""


class CheckpointError(HatError):
    """A checkpoint that is corrupt, truncated or does not match the model."""
