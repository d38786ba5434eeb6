"""LibreOffice help: pages of `libreoffice-help-xx` vs `-en-us`, paired by paragraph id."""
from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

from tqdm import tqdm

from hat.data.sources.align import Pair, align_units
from hat.data.sources.apt import Apt, extract_deb
from hat.errors import DataError

ORIGIN = "libreoffice"


_HELP_ID = re.compile(r"^(par|hd)_id\w+$")


class _HelpParser(HTMLParser):
    """Collect the text of elements whose id looks like `par_id…`/`hd_id…`."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.texts: dict[str, str] = {}
        self._id: str | None = None
        self._tag = ""
        self._depth = 0
        self._buf: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if self._id is not None:
            if tag == self._tag:
                self._depth += 1
            return
        ident = dict(attrs).get("id") or ""
        if _HELP_ID.match(ident):
            self._id, self._tag, self._depth, self._buf = ident, tag, 1, []

    def handle_endtag(self, tag: str) -> None:
        if self._id is not None and tag == self._tag:
            self._depth -= 1
            if self._depth == 0:
                text = " ".join("".join(self._buf).split())
                if text and self._id not in self.texts:
                    self.texts[self._id] = text
                self._id = None

    def handle_data(self, data: str) -> None:
        if self._id is not None:
            self._buf.append(data)


def parse_help_html(html: str) -> dict[str, str]:
    """`paragraph id -> text` of one LibreOffice help page."""
    p = _HelpParser()
    p.feed(html)
    p.close()
    return p.texts


def pair_help_dirs(en_dir: Path, xx_dir: Path) -> list[Pair]:
    """`(xx, en)` pairs from same-named pages in two help trees, matched by paragraph id."""
    out: list[Pair] = []
    pages = sorted(p.relative_to(en_dir) for p in en_dir.rglob("*.html"))
    for rel in tqdm(pages, desc="libreoffice pages", unit="page", disable=None, leave=False):
        xp = xx_dir / rel
        if not xp.is_file():
            continue
        en = parse_help_html((en_dir / rel).read_text(encoding="utf-8", errors="replace"))
        xx = parse_help_html(xp.read_text(encoding="utf-8", errors="replace"))
        for k, e in en.items():
            if k in xx:
                out.extend(align_units([xx[k]], [e]))
    return out


def gather(apt: Apt, lang: str, work: Path) -> list[Pair]:
    pkgs = ["libreoffice-help-en-us", f"libreoffice-help-{lang}"]
    debs = apt.download(pkgs)
    if len(debs) < 2:
        raise DataError(f"needs {' and '.join(pkgs)}; got {sorted(debs) or 'none'}")
    dirs = {}
    for p, code in zip(pkgs, ("en-US", lang)):
        root = extract_deb(debs[p], work / p, lambda n, c=code: f"/help/{c}/" in n and n.endswith(".html"))
        dirs[code] = root / "usr/share/libreoffice/help" / code
    return pair_help_dirs(dirs["en-US"], dirs[lang])
