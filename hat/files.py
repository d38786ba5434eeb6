"""Files every stage writes the same way: atomic writes and tagged, weights-only torch files.

Atomic: the bytes go to a temp file in the target's directory (`.NAME.XXXX.tmp`), are fsynced,
then renamed over the target, so a crash, a kill or a full disk leaves either the old file or the
new one, never a partial one; every file hat writes goes through `atomic_write_*` or
`atomic_open`, and `remove_stale_temps` clears what a SIGKILL left mid-write. A failed write is
an OSError naming the target (the CLI prints it as one line).
Tagged: a torch file is a dict of plain values and tensors with a `format` (and `version`) tag,
read with `torch.load(weights_only=True)` (opening a file never runs pickled code); every
loader checks the tag here, so a wrong, corrupt or truncated file is one CheckpointError.
torch is imported only when a torch file is read or written.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Mapping, Sequence

from hat.errors import CheckpointError, HatError, first_line


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """A file object for writing `path` as a whole: it writes a temp file next to it, which
    replaces `path` (fsynced) only when the block ends without an exception; otherwise the temp
    is removed and `path` is untouched. `mode` is "w" or "wb"; text defaults to UTF-8."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode {mode!r} (use 'w' or 'wb')")
    path = Path(path)
    if mode == "w":
        kwargs.setdefault("encoding", "utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _named(e, path) from None
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename in (None, tmp):  # the write or the rename failed
            raise _named(e, path) from None
        raise


def _named(e: OSError, path: Path) -> OSError:
    """The same error about the target `path` (not the temp file), e.g. `x.pt: No space left`."""
    return e if e.errno is None else type(e)(e.errno, e.strerror, str(path))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` via a temp file + fsync + rename (parents created)."""
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """`atomic_write_bytes` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def save_figure(fig: Any, path: str | Path, **savefig: Any) -> Path:
    """A matplotlib figure written atomically (the format from the suffix, png without one)."""
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format=Path(path).suffix.lstrip(".") or "png", **savefig)
    return Path(path)


def remove_stale_temps(directory: str | Path, names: str = "*") -> list[Path]:
    """Delete the temp files that writes of `names` (a glob) left in `directory` when a process
    was killed mid-write; returns what was removed. Call it only where no other process writes."""
    directory = Path(directory)
    gone = []
    for p in directory.glob(f".{names}.*.tmp") if directory.is_dir() else ():
        with contextlib.suppress(OSError):
            p.unlink()
            gone.append(p)
    return gone


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (hex): what a file IS, whatever its path, e.g. to tell a
    checkpoint replaced at the same path from the one a saved state was computed with."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def files_digest(paths: Iterable[str | Path | None]) -> str | None:
    """One digest of several files' contents, in the given order (None when none of them is a
    file): what a set of inputs IS, e.g. a data directory's splits."""
    files = [Path(p) for p in paths if p and Path(p).is_file()]
    return hashlib.sha256("".join(file_digest(p) for p in files).encode()).hexdigest() if files else None


def read_json(path: str | Path, what: str, error: type[HatError] = HatError, expect: type = dict,
              hint: str = "") -> Any:
    """A JSON file whose top level is an `expect` (dict by default), else one `error` naming the
    file: missing, unreadable, not UTF-8, malformed (e.g. half-written) or of the wrong shape."""
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: no such {what}{hint}") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise error(f"{path}: unreadable {what} ({type(e).__name__}: {first_line(e, 120)}){hint}") from None
    if not isinstance(value, expect):
        raise error(f"{path}: not a {what} (a JSON {type(value).__name__}, expected {expect.__name__}){hint}")
    return value


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


Fields = Sequence[str] | Mapping[str, "type | tuple[type, ...]"]


def check_tag(obj: Any, path: str | Path, fmt: str, what: str, *, version: int | None = None,
              required: Fields = (), hint: str = "") -> dict[str, Any]:
    """`obj` as a dict tagged `format: fmt` (and `version`) holding `required` keys, else a
    CheckpointError naming `path`; `hint` follows the "not a ..." message (how to make one).
    `required` may map each key to its type(s): a crafted or damaged file with the right tag but
    a field of another type is refused here, before anything indexes it."""
    if not isinstance(obj, dict) or obj.get("format") != fmt:
        raise CheckpointError(f"{path}: not a hat {what}{hint}")
    if version is not None and obj.get("version") != version:
        raise CheckpointError(f"{path}: {what} format version {obj.get('version')} (this hat reads {version})")
    missing = [k for k in required if k not in obj]
    if missing:
        raise CheckpointError(f"{path}: {what} lacks {', '.join(missing)}")
    check_fields(obj, required if isinstance(required, Mapping) else {}, f"{path}: {what}", CheckpointError)
    return obj


def check_fields(obj: Mapping[str, Any], types: Mapping[str, "type | tuple[type, ...]"], where: str,
                 error: type[HatError] = HatError) -> None:
    """Refuse (one `error` starting with `where`) a present field of `obj` that is not of its type in
    `types` (bool is not an int here)."""
    for key, t in types.items():
        if key not in obj:
            continue
        v, ts = obj[key], t if isinstance(t, tuple) else (t,)
        if not isinstance(v, ts) or (isinstance(v, bool) and bool not in ts):
            names = " or ".join(x.__name__ for x in ts)
            raise error(f"{where}: field {key} is a {type(v).__name__}, expected {names}")


def load_tagged(path: str | Path, fmt: str, what: str, *, version: int | None = None, required: Sequence[str] = (),
                hint: str = "", map_location: Any = "cpu") -> dict[str, Any]:
    """Read a tagged torch file and check its tag (see `check_tag`)."""
    obj = load_torch(path, what, map_location)
    return check_tag(obj, path, fmt, what, version=version, required=required, hint=hint)
