"""A real parallel corpus (de-en or fr-en) from Debian's archive, offline of any hub.

One module per source, each tagging its pairs with its origin:
  ding        `trans-de-en` dictionary: example sentences inside `de :: en` entries (de only)
  ddtp        package description translations (`Translation-xx` indexes, by Description-md5)
  libreoffice help pages of `libreoffice-help-xx` vs `-en-us`, paired by paragraph id
  wesnoth     gettext catalogs of the Wesnoth campaign/data packages (msgid en -> msgstr xx)
A source module exposes `ORIGIN` and `gather(apt, lang, work) -> [(xx, en)]` and is listed in
SOURCES. Downloads go to a cache dir; each source's pairs are cached as TSV so reruns are cheap.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterable, Iterator

from hat.data.sources import ddtp, ding, libreoffice, wesnoth
from hat.data.sources.align import Pair
from hat.data.sources.apt import Apt
from hat.errors import DataError
from hat.files import atomic_open
from hat.registry import Registry

log = logging.getLogger(__name__)
LANGS = ("de", "fr")

SOURCES: Registry[Callable[[Apt, str, Path], list[Pair]]] = Registry("corpus source")
for _source in (ding, ddtp, libreoffice, wesnoth):
    SOURCES.register(_source.ORIGIN, _source.gather)
ORIGINS = SOURCES.names()


def _save_tsv(path: Path, pairs: list[Pair]) -> None:
    with atomic_open(path, "w") as f:
        for a, b in pairs:
            f.write(f"{' '.join(a.split())}\t{' '.join(b.split())}\n")


def _load_tsv(path: Path) -> Iterator[Pair]:
    for line in path.read_text(encoding="utf-8").splitlines():
        a, _, b = line.partition("\t")
        yield a, b


def gather(lang: str, cache: str | Path, origins: Iterable[str] = ORIGINS) -> dict[str, list[Pair]]:
    """`origin -> [(xx, en)]` for `lang` in {de, fr}; a failing source is warned about and
    skipped, and DataError is raised only when nothing at all was gathered."""
    if lang not in LANGS:
        raise DataError(f"unsupported language {lang!r} for the Debian corpus (choose from {', '.join(LANGS)})")
    cache = Path(cache)
    pairs_dir, work = cache / "pairs", cache / "extract"
    pairs_dir.mkdir(parents=True, exist_ok=True)
    apt = Apt(cache)
    result: dict[str, list[Pair]] = {}
    updated = False
    for origin in origins:
        if origin == "ding" and lang != "de":
            continue
        tsv = pairs_dir / f"{origin}.{lang}-en.tsv"
        if tsv.is_file():
            result[origin] = list(_load_tsv(tsv))
            log.info("%s: %d cached pairs", origin, len(result[origin]))
            continue
        try:
            if not updated:
                apt.update()
                updated = True
            pairs = SOURCES.get(origin)(apt, lang, work)
        except Exception as e:  # one broken source must not sink the others
            log.warning("source %s skipped: %s%s", origin, "" if isinstance(e, DataError) else f"{type(e).__name__}: ", e)
            continue
        _save_tsv(tsv, pairs)
        result[origin] = pairs
        print(f"{origin}: {len(pairs)} raw pairs", flush=True)
    if not any(result.values()):
        raise DataError(f"no pairs gathered from Debian for {lang}-en (see warnings above; cache {cache})")
    return result
