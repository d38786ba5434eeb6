"""Ding (`trans-de-en`): example sentences inside `de :: en` dictionary entries (German only)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

from hat.data.sources.align import Pair
from hat.data.sources.apt import Apt, extract_deb
from hat.errors import DataError

ORIGIN = "ding"


_DING_ANNOT = re.compile(r"\{[^}]*\}|\[[^\]]*\]|<[^>]*>")
_SENTENCE = re.compile(r"^[\"'„“«(]?[A-ZÀ-ÖØ-Þ].*[.!?][\"'“”»)]?$")


def _ding_clean(s: str) -> str:
    return " ".join(_DING_ANNOT.sub("", s).split())


def _is_sentence(s: str, min_words: int = 3) -> bool:
    return bool(_SENTENCE.match(s)) and len(s.split()) >= min_words


def parse_ding(lines: Iterable[str]) -> list[Pair]:
    """Full-sentence `(de, en)` pairs from Ding lines `de | de2 :: en | en2`.

    `|` sub-entries are aligned one to one; within one, `;` separates alternatives,
    paired only when both sides have the same number. Annotations ({f}, [geol.], <...>)
    are removed; only sentence-like pieces (capitalized, final punctuation, >= 3 words) kept.
    """
    out: list[Pair] = []
    for line in lines:
        if line.startswith("#") or " :: " not in line:
            continue
        de, en = line.rstrip("\n").split(" :: ", 1)
        des, ens = de.split(" | "), en.split(" | ")
        if len(des) != len(ens):
            continue
        for d, e in zip(des, ens):
            dl, el = d.split("; "), e.split("; ")
            if len(dl) != len(el):
                continue
            for x, y in zip(dl, el):
                x, y = _ding_clean(x), _ding_clean(y)
                if _is_sentence(x) and _is_sentence(y):
                    out.append((x, y))
    return out


def gather(apt: Apt, lang: str, work: Path) -> list[Pair]:
    if lang != "de":
        return []
    debs = apt.download(["trans-de-en"])
    if not debs:
        raise DataError("package trans-de-en unavailable")
    root = extract_deb(debs["trans-de-en"], work / "trans-de-en", lambda n: "/usr/share/trans/" in n)
    files = [p for p in (root / "usr/share/trans").glob("*") if p.is_file()]
    if not files:
        raise DataError(f"{root}: no dictionary file in trans-de-en")
    return parse_ding(files[0].read_text(encoding="utf-8", errors="replace").splitlines())
