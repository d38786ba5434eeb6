"""Sentence pairs from two translations of the same units (paragraphs, entries, messages)."""
from __future__ import annotations

import re

Pair = tuple[str, str]  # (foreign, english)

_SENT_END = re.compile(r"(?<=[.!?])[\"'»”)]*\s+(?=[\"'«„“(]?[A-ZÀ-ÖØ-Þ0-9])")


def split_sentences(text: str) -> list[str]:
    """Split on sentence-final punctuation followed by a capitalized word (good enough to
    align translations whose sentence counts agree)."""
    text = " ".join(text.split())
    parts = [p.strip() for p in _SENT_END.split(text)]
    return [p for p in parts if p]


def align_units(a: list[str], b: list[str]) -> list[Pair]:
    """Pair units one to one when counts agree; refine each pair to sentences likewise."""
    if len(a) != len(b):
        return []
    out: list[Pair] = []
    for x, y in zip(a, b):
        sx, sy = split_sentences(x), split_sentences(y)
        if len(sx) == len(sy) and len(sx) > 1:
            out.extend(zip(sx, sy))
        elif x.strip() and y.strip():
            out.append((" ".join(x.split()), " ".join(y.split())))
    return out
