"""Debian archive access without touching the system's apt: a private apt-get and .deb extraction."""
from __future__ import annotations

import gzip
import logging
import lzma
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Callable

from hat.errors import DataError
from hat.files import atomic_write_text

log = logging.getLogger(__name__)


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
        atomic_write_text(
            self.conf,
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
        atomic_write_text(marker, "ok\n")

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
    atomic_write_text(marker, "ok\n")
    return dest
