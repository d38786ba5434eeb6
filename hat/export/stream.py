"""`hat translate`'s loop: lines in, translations out, in input order, batched under the hood.

Lines are read as they arrive (like fairseq-interactive): a batch is whatever has arrived, up to
`buffer_size` lines, so a file or a pipe is translated in large length-sorted batches while a
person typing gets each line back at once. Empty lines stay empty; a line that is not UTF-8
stops the run with a DataError naming it; a line longer than the model's positions is cut (and
reported through `warn`).
"""
from __future__ import annotations

import os
import select
from typing import IO, Any, Callable, Iterator

from hat.data.text import decode_line
from hat.errors import DataError


def _ready(fd: int | None) -> bool:
    """Whether reading `fd` would return at once (always true for files; pipes and terminals
    only when data is waiting). Where select cannot tell, assume it would."""
    if fd is None:
        return True
    try:
        return bool(select.select([fd], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def line_batches(stream: IO[bytes], buffer_size: int) -> Iterator[list[bytes]]:
    """Complete lines (without the newline) of a binary stream, in batches of at most
    `buffer_size`: a batch is cut when it is full or when no more input is waiting."""
    try:
        fd: int | None = stream.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None
    read: Callable[[], bytes] = (lambda: os.read(fd, 1 << 16)) if fd is not None else (lambda: stream.read1(1 << 16))
    buf, lines, eof = b"", [], False
    while True:
        while not eof and (not lines or (len(lines) < buffer_size and _ready(fd))):
            chunk = read()
            if not chunk:
                eof = True
                break
            *done, buf = (buf + chunk).split(b"\n")
            lines.extend(done)
        if eof and buf:
            lines.append(buf)
            buf = b""
        if not lines:
            return
        yield lines[:buffer_size]
        lines = lines[buffer_size:]


def translate_stream(translator, stream: IO[bytes], out: IO[str], name: str, *, buffer_size: int = 256,
                     warn: Callable[[str], None] | None = None, **options: Any) -> int:
    """Translate every line of `stream` into `out` (flushed after each batch); `options` are
    `Translator.translate`'s. Returns the number of lines; no line at all is a DataError."""
    n = 0
    for raw in line_batches(stream, buffer_size):
        lines = [decode_line(b, name, n + i + 1) for i, b in enumerate(raw)]
        if n == 0 and lines[0].startswith("\ufeff"):
            lines[0] = lines[0][1:]
        first = n + 1

        def cut(i: int, tokens: int, first: int = first) -> None:
            if warn:
                warn(f"{name}:{first + i}: {tokens} tokens, cut to the model's {translator.model.args.max_positions}")

        out.write("".join(h + "\n" for h in translator.translate(lines, on_truncate=cut, **options)))
        out.flush()
        n += len(lines)
    if n == 0:
        raise DataError(f"{name}: empty input (no lines to translate)")
    return n
