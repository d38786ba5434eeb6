"""DDTP: Debian package descriptions and their translations (`Translation-xx` indexes),
paired by Description-md5."""
from __future__ import annotations

import re
from pathlib import Path

from hat.data.sources.align import Pair, align_units
from hat.data.sources.apt import Apt

ORIGIN = "ddtp"


def parse_translation_index(text: str) -> dict[str, str]:
    """`Description-md5 -> description` (first line = short description, rest long text)
    from a `Translation-xx` index."""
    out: dict[str, str] = {}
    for stanza in text.split("\n\n"):
        md5, desc, lines = None, None, []
        for line in stanza.split("\n"):
            if line.startswith("Description-md5:"):
                md5 = line.split(":", 1)[1].strip()
            elif line.startswith("Description-"):
                desc = line.split(":", 1)[1].strip()
            elif line.startswith(" ") and desc is not None:
                lines.append(line)
        if md5 and desc is not None:
            out[md5] = "\n".join([desc, *lines])
    return out


_BULLET = re.compile(r"^\s*([*+\-o•]|\d+[.)])\s+")


def description_units(desc: str) -> list[str]:
    """Short description, then one unit per paragraph (or per list item / verbatim line)."""
    first, *rest = desc.split("\n")
    units = [first.strip()]
    para: list[str] = []
    paras: list[list[str]] = []
    for line in rest:
        if line.strip() == ".":
            paras.append(para)
            para = []
        else:
            para.append(line[1:] if line.startswith(" ") else line)
    paras.append(para)
    for p in paras:
        if not p:
            continue
        if any(_BULLET.match(l) or l.startswith(" ") for l in p):
            items: list[str] = []
            for l in p:
                if _BULLET.match(l) or not items or (l.startswith(" ") and not l.startswith("   ")):
                    items.append(_BULLET.sub("", l).strip())
                else:
                    items[-1] += " " + l.strip()
            units.extend(items)
        else:
            units.append(" ".join(l.strip() for l in p))
    return [u for u in units if u]


def pair_ddtp(english: dict[str, str], foreign: dict[str, str]) -> list[Pair]:
    """`(xx, en)` pairs from descriptions sharing an md5: short descriptions, then
    paragraphs when paragraph counts agree, then sentences when sentence counts agree."""
    out: list[Pair] = []
    for md5, fdesc in foreign.items():
        edesc = english.get(md5)
        if edesc is None:
            continue
        fu, eu = description_units(fdesc), description_units(edesc)
        if len(fu) != len(eu):
            fu, eu = fu[:1], eu[:1]  # at least the short description
        out.extend(align_units(fu, eu))
    return out


def gather(apt: Apt, lang: str, work: Path) -> list[Pair]:
    en = parse_translation_index(apt.translation_text("en"))
    xx = parse_translation_index(apt.translation_text(lang))
    return pair_ddtp(en, xx)
