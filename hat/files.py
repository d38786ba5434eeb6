"""Files every stage writes the same way: atomic writes and tagged, weights-only torch files.

Atomic: the bytes go to a temp file in the target's directory, are fsynced, then renamed over
the target, so a crash or kill leaves either the old file or the new one, never a partial one.
Tagged: a torch file is a dict of plain values and tensors with a `format` (and `version`) tag,
read with `torch.load(weights_only=True)` (opening a file never runs pickled code); every
loader checks the tag here, so a wrong, corrupt or truncated file is one CheckpointError.
torch is imported only when a torch file is read or written.
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Sequence

from hat.errors import CheckpointError, first_line


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """A file that replaces `path` only when the block completes (temp file in the same
    directory, fsync, rename; parents created); if the block raises, the temp file is removed
    and `path` is untouched. For output written as it is produced (e.g. `hat translate`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` via a temp file + fsync + rename (parents created)."""
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """`atomic_write_bytes` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def save_torch(state: dict[str, Any], paths: str | Path | Iterable[str | Path]) -> None:
    """Serialise `state` (plain values and tensors: hat's own files carry a `format` tag, the
    fairseq export uses fairseq's layout) once and write it atomically to every path (e.g.
    checkpoint_last.pt and checkpoint_best.pt)."""
    import torch  # noqa: PLC0415

    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        atomic_write_bytes(path, data)


def load_torch(path: str | Path, what: str, map_location: Any = "cpu") -> Any:
    """`torch.load(weights_only=True)`; a missing, corrupt or truncated file is a CheckpointError."""
    import torch  # noqa: PLC0415

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such {what}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001  (truncated zip, garbage, refused unpickling: many types)
        raise CheckpointError(f"{path}: corrupt or truncated {what} ({type(e).__name__}: {first_line(e, 160)})") from None


def check_tag(obj: Any, path: str | Path, fmt: str, what: str, *, version: int | None = None,
              required: Sequence[str] = (), hint: str = "") -> dict[str, Any]:
    """`obj` as a dict tagged `format: fmt` (and `version`) holding `required` keys, else a
    CheckpointError naming `path`; `hint` follows the "not a ..." message (how to make one)."""
    if not isinstance(obj, dict) or obj.get("format") != fmt:
        raise CheckpointError(f"{path}: not a hat {what}{hint}")
    if version is not None and obj.get("version") != version:
        raise CheckpointError(f"{path}: {what} format version {obj.get('version')} (this hat reads {version})")
    missing = [k for k in required if k not in obj]
    if missing:
        raise CheckpointError(f"{path}: {what} lacks {', '.join(missing)}")
    return obj


def load_tagged(path: str | Path, fmt: str, what: str, *, version: int | None = None, required: Sequence[str] = (),
                hint: str = "", map_location: Any = "cpu") -> dict[str, Any]:
    """Read a tagged torch file and check its tag (see `check_tag`)."""
    obj = load_torch(path, what, map_location)
    return check_tag(obj, path, fmt, what, version=version, required=required, hint=hint)
