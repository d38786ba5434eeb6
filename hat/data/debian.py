"""Build a real parallel corpus (de-en or fr-en) from Debian's archive, offline of any hub.

Sources (DESIGN.md §6), each tagged by origin:
  ding        `trans-de-en` dictionary: example sentences inside `de :: en` entries (de only)
  ddtp        package description translations (`Translation-xx` indexes, by Description-md5)
  libreoffice help pages of `libreoffice-help-xx` vs `-en-us`, paired by paragraph id
  wesnoth     gettext catalogs of the Wesnoth campaign/data packages (msgid en -> msgstr xx)
Downloads go to a cache dir; each source's pairs are cached as TSV so reruns are cheap.
"""
from __future__ import annotations

import gzip
import logging
import lzma
import os
import re
import shutil
import struct
import subprocess
import tarfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable, Iterable, Iterator

from tqdm import tqdm

from hat.errors import DataError

log = logging.getLogger(__name__)
Pair = tuple[str, str]  # (foreign, english)
ORIGINS = ("ding", "ddtp", "libreoffice", "wesnoth")
LANGS = ("de", "fr")

# ----------------------------------------------------------------------------- text utils
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


# ----------------------------------------------------------------------------- Ding
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


# ----------------------------------------------------------------------------- DDTP
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


# ----------------------------------------------------------------------------- LibreOffice help
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


# ----------------------------------------------------------------------------- gettext .mo
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


# ----------------------------------------------------------------------------- apt access
class Apt:
    """apt-get with a PRIVATE config + lists dir under the cache (languages enabled,
    indexes uncompressed), so the system's apt settings are neither needed nor changed."""

    def __init__(self, cache: Path) -> None:
        if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
            raise DataError("apt-get/dpkg-deb not found: this builder needs a Debian system; "
                            "build from your own parallel files with `hat prepare text`")
        self.root = (cache / "apt").resolve()
        self.debs = (cache / "debs").resolve()
        self.conf = self.root / "apt.conf"
        self.lists = self.root / "lists"

    def _write_conf(self) -> None:
        (self.lists / "partial").mkdir(parents=True, exist_ok=True)
        (self.root / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        sandbox = 'APT::Sandbox::User "root";\n' if os.geteuid() == 0 else ""
        self.conf.write_text(
            "#clear Acquire::Languages;\n"
            'Acquire::Languages { "en"; "de"; "fr"; };\n'
            'Acquire::GzipIndexes "false";\n'
            f'Dir::State::Lists "{self.lists}/";\n'
            f'Dir::Cache "{self.root}/cache/";\n' + sandbox)

    def run(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["apt-get", "-c", str(self.conf), "-q", *args], cwd=cwd,
                              capture_output=True, text=True)

    def update(self) -> None:
        """`apt-get update` into the private lists dir, once (marker file)."""
        marker = self.root / "updated"
        if marker.is_file() and any(self.lists.glob("*_i18n_Translation-en*")):
            return
        self._write_conf()
        log.info("apt-get update (private lists in %s)", self.lists)
        r = self.run("update")
        if r.returncode != 0:
            raise DataError(f"apt-get update failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
        marker.write_text("ok\n")

    def translation_text(self, lang: str) -> str:
        """Concatenated `Translation-<lang>` indexes of all suites (decompressed)."""
        texts = []
        for p in sorted(self.lists.glob(f"*_i18n_Translation-{lang}*")):
            raw = p.read_bytes()
            if p.suffix == ".gz":
                raw = gzip.decompress(raw)
            elif p.suffix == ".xz":
                raw = lzma.decompress(raw)
            elif p.suffix in (".lz4", ".zst", ".bz2"):
                continue
            texts.append(raw.decode("utf-8", "replace"))
        if not texts:
            raise DataError(f"{self.lists}: no Translation-{lang} index after apt-get update")
        return "\n\n".join(texts)

    def cached_deb(self, package: str) -> Path | None:
        found = sorted(self.debs.glob(f"{package}_*.deb"))
        return found[-1] if found else None

    def download(self, packages: list[str]) -> dict[str, Path]:
        """Download missing .debs into the cache; return what is available (warn on failures)."""
        self.debs.mkdir(parents=True, exist_ok=True)
        missing = [p for p in packages if self.cached_deb(p) is None]
        if missing:
            self._write_conf()
            log.info("apt-get download %s", " ".join(missing))
            if self.run("download", *missing, cwd=self.debs).returncode != 0:
                for p in missing:  # retry one by one to keep what works
                    if self.cached_deb(p) is None:
                        r = self.run("download", p, cwd=self.debs)
                        if r.returncode != 0:
                            log.warning("could not download %s: %s", p, (r.stderr or "").strip()[-200:])
        return {p: d for p in packages if (d := self.cached_deb(p)) is not None}

    def package_names(self, pattern: str) -> list[str]:
        r = subprocess.run(["apt-cache", "-c", str(self.conf), "pkgnames"], capture_output=True, text=True)
        return sorted(n for n in r.stdout.split() if re.fullmatch(pattern, n))


def extract_deb(deb: Path, dest: Path, keep: Callable[[str], bool]) -> Path:
    """Extract the members of `deb` for which `keep(path)` holds (streamed from
    `dpkg-deb --fsys-tarfile`), once: a `.done` marker makes reruns free."""
    marker = dest / ".done"
    if marker.is_file():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for m in tar:
                if m.isfile() and keep(m.name):
                    tar.extract(m, dest, filter="data")
    except tarfile.TarError as e:
        raise DataError(f"{deb}: cannot extract ({e})") from None
    finally:
        proc.stdout.close()
        proc.wait()
    if proc.returncode != 0:
        raise DataError(f"{deb}: dpkg-deb failed with status {proc.returncode}")
    marker.write_text("ok\n")
    return dest


# ----------------------------------------------------------------------------- per-source builders
def gather_ding(apt: Apt, lang: str, work: Path) -> list[Pair]:
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


def gather_ddtp(apt: Apt, lang: str, work: Path) -> list[Pair]:
    en = parse_translation_index(apt.translation_text("en"))
    xx = parse_translation_index(apt.translation_text(lang))
    return pair_ddtp(en, xx)


def gather_libreoffice(apt: Apt, lang: str, work: Path) -> list[Pair]:
    pkgs = ["libreoffice-help-en-us", f"libreoffice-help-{lang}"]
    debs = apt.download(pkgs)
    if len(debs) < 2:
        raise DataError(f"needs {' and '.join(pkgs)}; got {sorted(debs) or 'none'}")
    dirs = {}
    for p, code in zip(pkgs, ("en-US", lang)):
        root = extract_deb(debs[p], work / p, lambda n, c=code: f"/help/{c}/" in n and n.endswith(".html"))
        dirs[code] = root / "usr/share/libreoffice/help" / code
    return pair_help_dirs(dirs["en-US"], dirs[lang])


def gather_wesnoth(apt: Apt, lang: str, work: Path) -> list[Pair]:
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


GATHERERS: dict[str, Callable[[Apt, str, Path], list[Pair]]] = {
    "ding": gather_ding, "ddtp": gather_ddtp, "libreoffice": gather_libreoffice, "wesnoth": gather_wesnoth,
}


def _save_tsv(path: Path, pairs: list[Pair]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for a, b in pairs:
            f.write(f"{' '.join(a.split())}\t{' '.join(b.split())}\n")
    tmp.replace(path)


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
            pairs = GATHERERS[origin](apt, lang, work)
        except Exception as e:  # one broken source must not sink the others
            log.warning("source %s skipped: %s%s", origin, "" if isinstance(e, DataError) else f"{type(e).__name__}: ", e)
            continue
        _save_tsv(tsv, pairs)
        result[origin] = pairs
        print(f"{origin}: {len(pairs)} raw pairs", flush=True)
    if not any(result.values()):
        raise DataError(f"no pairs gathered from Debian for {lang}-en (see warnings above; cache {cache})")
    return result
