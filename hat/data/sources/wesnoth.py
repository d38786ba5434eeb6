"""Wesnoth: gettext catalogs of the campaign/data packages (msgid en -> msgstr xx)."""
from __future__ import annotations

import re
import struct
from pathlib import Path

from tqdm import tqdm

from hat.data.sources.align import Pair, align_units
from hat.data.sources.apt import Apt, extract_deb
from hat.errors import DataError

ORIGIN = "wesnoth"


def read_mo(path: str | Path) -> dict[str, str]:
    """Singular `msgid -> msgstr` of a compiled gettext catalog (context stripped).

    Parsed directly (the format is a fixed header + two offset tables) to avoid the
    private `gettext.GNUTranslations._catalog`.
    """
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 28:
        raise DataError(f"{path}: not a gettext .mo file (too short)")
    magic = struct.unpack("<I", data[:4])[0]
    if magic == 0x950412DE:
        end = "<"
    elif magic == 0xDE120495:
        end = ">"
    else:
        raise DataError(f"{path}: not a gettext .mo file (bad magic)")
    _, n, orig, trans = struct.unpack(end + "4I", data[4:20])
    out: dict[str, str] = {}
    try:
        for i in range(n):
            ol, oo = struct.unpack(end + "2I", data[orig + 8 * i: orig + 8 * i + 8])
            tl, to = struct.unpack(end + "2I", data[trans + 8 * i: trans + 8 * i + 8])
            mid, mstr = data[oo:oo + ol], data[to:to + tl]
            if not mid or b"\x00" in mid:  # header or plural entry
                continue
            mid = mid.split(b"\x04", 1)[-1]
            out[mid.decode("utf-8", "replace")] = mstr.decode("utf-8", "replace")
    except struct.error:
        raise DataError(f"{path}: truncated gettext .mo file") from None
    return out


_MARKUP = re.compile(r"[$<>{}@~\[\]|&]")
_WESNOTH_PREFIX = re.compile(r"^[\w ]{1,20}\^")


def pair_mo(catalog: dict[str, str]) -> list[Pair]:
    """`(xx, en)` pairs from a catalog: skip untranslated and markup/variable strings,
    strip Wesnoth's `context^` prefixes, align line by line / sentence by sentence."""
    out: list[Pair] = []
    for en, xx in catalog.items():
        en, xx = _WESNOTH_PREFIX.sub("", en), _WESNOTH_PREFIX.sub("", xx)
        if not xx.strip() or _MARKUP.search(en) or _MARKUP.search(xx):
            continue
        el = [l for l in en.split("\n") if l.strip()]
        xl = [l for l in xx.split("\n") if l.strip()]
        out.extend(align_units(xl, el))
    return out


def gather(apt: Apt, lang: str, work: Path) -> list[Pair]:
    names = apt.package_names(r"wesnoth-\d+\.\d+-[a-z]+")
    if not names:
        raise DataError("no wesnoth-X.Y-* packages in the archive")
    series = max({n.split("-")[1] for n in names}, key=lambda v: tuple(int(x) for x in v.split(".")))
    skip = {"core", "music", "server", "tools"}
    pkgs = [n for n in names if n.split("-")[1] == series and n.split("-", 2)[2] not in skip]
    debs = apt.download(pkgs)
    out: list[Pair] = []
    for p, deb in tqdm(sorted(debs.items()), desc="wesnoth packages", unit="pkg", disable=None, leave=False):
        # one extraction dir per language: each holds only that language's catalogs
        root = extract_deb(deb, work / f"{p}.{lang}", lambda n: f"/locale/{lang}/LC_MESSAGES/" in n and n.endswith(".mo"))
        for mo in sorted(root.rglob(f"locale/{lang}/LC_MESSAGES/*.mo")):
            out.extend(pair_mo(read_mo(mo)))
    if not out:
        raise DataError(f"no {lang} catalogs in {len(debs)} wesnoth packages")
    return out
