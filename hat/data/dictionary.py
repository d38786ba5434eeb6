"""Symbol <-> index mapping in fairseq's `dict.txt` format.

Index 0 `<s>` (bos), 1 `<pad>`, 2 `</s>` (eos), 3 `<unk>`, then the file's symbols in
order, so a file written here loads with the same indices in fairseq's `Dictionary.load`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

from hat.errors import DataError
from hat.files import atomic_write_text

BOS, PAD, EOS, UNK = "<s>", "<pad>", "</s>", "<unk>"
SPECIALS = (BOS, PAD, EOS, UNK)


class Dictionary:
    """A fairseq-compatible vocabulary (specials first, then symbols in file order)."""

    def __init__(self) -> None:
        self.symbols: list[str] = []
        self.count: list[int] = []
        self.indices: dict[str, int] = {}
        for s in SPECIALS:
            self.add_symbol(s, 1)
        self.nspecial = len(SPECIALS)

    # -- building ------------------------------------------------------------
    def add_symbol(self, sym: str, n: int = 1) -> int:
        """Add `sym` (or bump its count) and return its index."""
        if sym in self.indices:
            idx = self.indices[sym]
            self.count[idx] += n
            return idx
        idx = len(self.symbols)
        self.indices[sym] = idx
        self.symbols.append(sym)
        self.count.append(n)
        return idx

    @classmethod
    def from_counts(cls, items: Iterable[tuple[str, int]]) -> "Dictionary":
        """Dictionary whose non-special symbols are `items` in the given order."""
        d = cls()
        for sym, n in items:
            if sym in SPECIALS:
                continue
            if not sym or any(c.isspace() for c in sym):
                raise DataError(f"symbol {sym!r} is empty or contains whitespace")
            d.add_symbol(sym, int(n))
        return d

    # -- io --------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> "Dictionary":
        """Read a fairseq `dict.txt` (`symbol count` per line, specials not listed)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DataError(f"{path}: dictionary file not found") from None
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 ({e.reason})") from None
        d = cls()
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.rstrip("\r")
            if not line.strip():
                continue
            parts = line.rsplit(" ", 1)
            overwrite = False
            if len(parts) == 2 and parts[1] == "#fairseq:overwrite":
                overwrite = True
                parts = parts[0].rsplit(" ", 1)
            if len(parts) != 2:
                raise DataError(f"{path}:{lineno}: expected 'symbol count', got {line!r}")
            sym, cnt = parts
            try:
                n = int(cnt)
            except ValueError:
                raise DataError(f"{path}:{lineno}: count {cnt!r} is not an integer") from None
            if sym in d.indices and not overwrite:
                raise DataError(f"{path}:{lineno}: duplicate symbol {sym!r}")
            if sym in d.indices:
                d.count[d.indices[sym]] = n
            else:
                d.add_symbol(sym, n)
        if len(d) == d.nspecial:
            raise DataError(f"{path}: dictionary is empty")
        return d

    def save(self, path: str | Path) -> None:
        """Write the non-special symbols as `symbol count` lines (fairseq format)."""
        lines = [f"{s} {c}\n" for s, c in zip(self.symbols[self.nspecial:], self.count[self.nspecial:])]
        atomic_write_text(path, "".join(lines))

    # -- lookup ----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.symbols)

    def __getitem__(self, idx: int) -> str:
        return self.symbols[idx] if 0 <= idx < len(self.symbols) else UNK

    def __contains__(self, sym: str) -> bool:
        return sym in self.indices

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Dictionary) and self.symbols == other.symbols

    def index(self, sym: str) -> int:
        """Index of `sym`, or the unk index when absent."""
        return self.indices.get(sym, self.unk)

    def encode_pieces(self, pieces: Sequence[str]) -> list[int]:
        """Map pieces to indices and append EOS (the convention of binarized data)."""
        return [self.indices.get(p, self.unk) for p in pieces] + [self.eos]

    def string(self, ids: Iterable[int]) -> str:
        """Pieces joined by spaces, stopping at EOS and skipping pad/bos."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos:
                break
            if i in (self.pad, self.bos):
                continue
            out.append(self[i])
        return " ".join(out)

    @property
    def bos(self) -> int:
        return 0

    @property
    def pad(self) -> int:
        return 1

    @property
    def eos(self) -> int:
        return 2

    @property
    def unk(self) -> int:
        return 3
