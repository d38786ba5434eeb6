"""The bundled sample corpus: a few thousand real German-English pairs shipped inside the package.

`hat prepare sample --out DIR` builds a training-ready directory from it with no download and no
apt, which is what `hat demo --quick` runs on. The pairs are LibreOffice help paragraphs
(`libreoffice-help-de` vs `libreoffice-help-en-us`, Debian 12, MPL-2.0; the licence and the
provenance are in `sample-de-en/LICENSE` and `sample-de-en/README.md`).

The files were made by `make_sample` from the LibreOffice pairs that `hat prepare debian` caches,
and can be rebuilt (byte-identical with the same cache) by

    hat prepare debian --pair de-en --out data/debian.de-en      # fills data/cache/pairs/
    python -m hat.data.sample data/cache/pairs/libreoffice.de-en.tsv
"""
from __future__ import annotations

import random
import sys
from pathlib import Path

from hat.data.text import Split, filter_pairs, read_parallel, split_by_source, write_lines
from hat.errors import DataError

SAMPLE_DIR = Path(__file__).resolve().parent / "sample-de-en"
SRC, TGT = "de", "en"
ORIGIN = "libreoffice"
SIZES = {"train": 3000, "valid": 300, "test": 300}


def sample_splits(directory: str | Path = SAMPLE_DIR) -> dict[str, Split]:
    """The sample's train/valid/test splits, every pair tagged with its origin."""
    return {name: read_parallel(Path(directory) / name, SRC, TGT, default_origin=ORIGIN) for name in SIZES}


def select_pairs(pairs: list[tuple[str, str]], sizes: dict[str, int] = SIZES, *, seed: int = 1,
                 max_chars: int = 150, min_words: int = 4) -> dict[str, Split]:
    """Sentence-like pairs (at least `min_words` source words, sides at most `max_chars`),
    filtered and de-duplicated as `hat prepare` does, a seeded random selection of them, split
    so that no valid/test source sentence is also a training source."""
    triples = [(s, t, ORIGIN) for s, t in pairs if len(s.split()) >= min_words]
    kept, _ = filter_pairs(triples, max_chars=max_chars)
    total = sum(sizes.values())
    if len(kept) < total:
        raise DataError(f"only {len(kept)} usable pairs, the sample needs {total}")
    rng = random.Random(seed)
    chosen = rng.sample(kept, total)
    splits = split_by_source(chosen, sizes["valid"], sizes["test"], seed)
    return splits


def make_sample(tsv: str | Path, dest: str | Path = SAMPLE_DIR, sizes: dict[str, int] = SIZES,
                seed: int = 1) -> dict[str, int]:
    """Write `dest/{train,valid,test}.{de,en}` from a `de<TAB>en` pairs file; returns the sizes."""
    tsv = Path(tsv)
    try:
        lines = tsv.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{tsv}: file not found (run `hat prepare debian --pair de-en` first)") from None
    pairs = [tuple(line.split("\t", 1)) for line in lines if "\t" in line]
    splits = select_pairs(pairs, sizes, seed=seed)
    for name, split in splits.items():
        write_lines(Path(dest) / f"{name}.{SRC}", split.src)
        write_lines(Path(dest) / f"{name}.{TGT}", split.tgt)
    return {name: len(split) for name, split in splits.items()}


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m hat.data.sample LIBREOFFICE_PAIRS.tsv [DEST_DIR]")
    print(make_sample(*sys.argv[1:]))
