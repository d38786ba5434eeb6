"""Raw parallel text: strict reading/validation and writing of split files."""
from __future__ import annotations

import random
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from hat.errors import DataError
from hat.files import atomic_open


@dataclass
class Split:
    """Aligned source lines, target lines and per-line origin tags of one split."""

    src: list[str] = field(default_factory=list)
    tgt: list[str] = field(default_factory=list)
    origin: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.src)

    def append(self, s: str, t: str, o: str) -> None:
        self.src.append(s)
        self.tgt.append(t)
        self.origin.append(o)


# characters that end a line for Python's str.splitlines (and many tools) but not for a corpus
# file, where only \n (or \r\n) does: inside a line they would split or shift it downstream
LINE_BREAKS = {"\r": "a carriage return", "\x0b": "a vertical tab", "\x0c": "a form feed",
               "\x1c": "a file separator", "\x1d": "a group separator", "\x1e": "a record separator",
               "\x85": "a next-line character (NEL)", "\u2028": "a line separator", "\u2029": "a paragraph separator"}


def read_lines(path: str | Path, *, allow_empty_lines: bool = False) -> list[str]:
    """Lines of a UTF-8 text file (\n or \r\n endings, a leading BOM dropped); refuse missing or
    empty files, bad bytes, blank lines and other line-break characters inside a line.

    Errors name the file and (1-based) line so the user can fix the input.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a text file") from None
    if not data.strip():
        raise DataError(f"{path}: file is empty")
    raw = data.split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()
    lines = []
    for i, b in enumerate(raw, 1):
        try:
            s = b.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{path}:{i}: not valid UTF-8 (byte {e.start + 1} of the line)") from None
        s = s.removesuffix("\r")
        if i == 1:
            s = s.removeprefix("\ufeff")
        brk = next((c for c in s if c in LINE_BREAKS), None)
        if brk is not None:
            raise DataError(f"{path}:{i}: contains {LINE_BREAKS[brk]} (U+{ord(brk):04X}) at character "
                            f"{s.index(brk) + 1}; lines end with \\n only, so replace it with a space")
        if not allow_empty_lines and not s.strip():
            raise DataError(f"{path}:{i}: empty line")
        lines.append(s.strip())
    return lines


def read_parallel(prefix: str | Path, src: str, tgt: str, *, default_origin: str = "text") -> Split:
    """Read `prefix.src`, `prefix.tgt` and optional `prefix.origin`, checking alignment."""
    prefix = str(prefix)
    s = read_lines(f"{prefix}.{src}")
    t = read_lines(f"{prefix}.{tgt}")
    if len(s) != len(t):
        raise DataError(f"{prefix}.{src} has {len(s)} lines but {prefix}.{tgt} has {len(t)}: files are misaligned")
    opath = Path(f"{prefix}.origin")
    if opath.exists():
        o = read_lines(opath)
        if len(o) != len(s):
            raise DataError(f"{opath} has {len(o)} lines but {prefix}.{src} has {len(s)}: files are misaligned")
        for i, tag in enumerate(o, 1):
            if any(c.isspace() for c in tag):
                raise DataError(f"{opath}:{i}: origin tag {tag!r} contains whitespace")
    else:
        o = [default_origin] * len(s)
    return Split(s, t, o)


def write_lines(path: str | Path, lines: Sequence[str]) -> None:
    """Write one item per line (UTF-8), atomically."""
    with atomic_open(path, "w") as f:
        for line in lines:
            f.write(line.replace("\n", " ") + "\n")


def write_split(raw_dir: str | Path, name: str, split: Split, src: str, tgt: str) -> None:
    """Write `raw_dir/name.{src,tgt,origin}`."""
    raw_dir = Path(raw_dir)
    write_lines(raw_dir / f"{name}.{src}", split.src)
    write_lines(raw_dir / f"{name}.{tgt}", split.tgt)
    write_lines(raw_dir / f"{name}.origin", split.origin)


def normalize(s: str) -> str:
    """NFKC-normalize and collapse whitespace, so corpus lines are single lines and
    equivalent characters (e.g. '…' vs '...', full-width forms) are spelled one way."""
    return " ".join(unicodedata.normalize("NFKC", s).split())


def filter_pairs(
    pairs: list[tuple[str, str, str]],
    *,
    min_chars: int = 1,
    max_chars: int = 250,
    max_ratio: float = 2.5,
) -> tuple[list[tuple[str, str, str]], Counter]:
    """Keep clean `(src, tgt, origin)` pairs; return them and a Counter of drop reasons.

    Drops pairs too short/long (chars), with a length ratio above `max_ratio` (lengths
    smoothed by +5 so short strings are not judged harshly), with source == target
    (untranslated), and exact duplicates (first occurrence kept).
    """
    kept, seen, dropped = [], set(), Counter()
    for s, t, o in pairs:
        s, t = normalize(s), normalize(t)
        ls, lt = len(s), len(t)
        if min(ls, lt) < min_chars or max(ls, lt) > max_chars:
            dropped["length"] += 1
        elif (max(ls, lt) + 5) / (min(ls, lt) + 5) > max_ratio:
            dropped["ratio"] += 1
        elif s == t:
            dropped["identical"] += 1
        elif (s, t) in seen:
            dropped["duplicate"] += 1
        else:
            seen.add((s, t))
            kept.append((s, t, o))
    return kept, dropped


def split_by_source(
    pairs: list[tuple[str, str, str]], valid_size: int, test_size: int, seed: int = 1
) -> dict[str, Split]:
    """Seeded train/valid/test split that keeps all pairs of one source sentence together.

    Grouping by identical source means no valid/test source sentence is also a training
    source (otherwise BLEU would reward memorization). Groups are assigned to test, then
    valid, until each holds at least the requested number of pairs.
    """
    groups: dict[str, list[int]] = {}
    for i, (s, _, _) in enumerate(pairs):
        groups.setdefault(s, []).append(i)
    keys = sorted(groups)
    rng = random.Random(seed)
    rng.shuffle(keys)
    if valid_size + test_size >= len(pairs):
        raise DataError(f"only {len(pairs)} pairs: too few for valid ({valid_size}) + test ({test_size}) + train")
    out = {"train": Split(), "valid": Split(), "test": Split()}
    target = [("test", test_size), ("valid", valid_size)]
    filled = {"test": 0, "valid": 0}
    for k in keys:
        name = next((n for n, size in target if filled[n] < size), "train")
        if name != "train":
            filled[name] += len(groups[k])
        for i in groups[k]:
            out[name].append(*pairs[i])
    for split in out.values():  # keep a stable, origin-mixed order inside each split
        order = list(range(len(split)))
        rng.shuffle(order)
        split.src, split.tgt, split.origin = ([getattr(split, a)[j] for j in order] for a in ("src", "tgt", "origin"))
    return out
