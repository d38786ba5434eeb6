"""`hat prepare mono`: a user's own monolingual text as a decoder-only LM data directory.

The layout is a parallel directory's with one language (`LANG`): `raw/{split}.LANG`, a
SentencePiece model trained on the training text, `dict.LANG.txt`, `{split}.LANG.bin/.idx` (EOS
after every line) and `meta.json` saying `task: lm` and `lang`, so `hat.data.lm` reads it and
the translation loaders refuse it. Blank lines are dropped. The splits are contiguous: valid
(and test) are the end of the file, in order, so held-out text is not the training text's next
line (shuffled lines would leak neighbouring sentences into validation). Stages are skipped
on a rerun that asks for the same thing, as in `hat.data.prepare`.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hat.data.dataset import BIN_DTYPE, write_indexed
from hat.data.dictionary import Dictionary
from hat.data.prepare import Vocabulary, log, run_stage, spm_stage
from hat.data.text import read_lines, write_lines
from hat.data.tokenizer import dictionary_from_spm, load_spm
from hat.errors import DataError
from hat.files import atomic_write_text

LM_SPLITS = ("train", "valid", "test")


def split_lines(lines: list[str], valid_share: float, test_share: float, source: str) -> dict[str, list[str]]:
    """Contiguous train / valid / test lines: valid and test are the file's last shares (each at
    least one line when its share is above 0)."""
    if not 0 < valid_share < 1 or not 0 <= test_share < 1 or valid_share + test_share >= 1:
        raise DataError(f"--valid-share {valid_share} and --test-share {test_share}: need 0 < valid, 0 <= test "
                        "and valid + test < 1")
    n = len(lines)
    n_valid = max(1, round(n * valid_share))
    n_test = max(1, round(n * test_share)) if test_share else 0
    n_train = n - n_valid - n_test
    if n_train < 1:
        raise DataError(f"{source}: {n} non-blank lines are too few for train, valid{' and test' * bool(n_test)} "
                        "splits (each needs a line)")
    out = {"train": lines[:n_train], "valid": lines[n_train:n_train + n_valid]}
    if n_test:
        out["test"] = lines[n_train + n_valid:]
    return out


def prepare_mono(out: str | Path, text: str | Path, lang: str = "text", *, valid_share: float = 0.05,
                 test_share: float = 0.0, vocab_size: int = 8000, seed: int = 1, command: str = "",
                 vocab: Vocabulary | None = None) -> dict:
    """Build the LM directory `out` from the UTF-8 text file `text` (one sentence or paragraph
    per line); returns meta."""
    out, text = Path(out), Path(text)
    if not lang or any(c in lang for c in "/\\. ") or lang.startswith("-"):
        raise DataError(f"--lang {lang!r}: a file suffix such as en (no dots, slashes or spaces)")
    lines = [s for s in read_lines(text, allow_empty_lines=True) if s]
    if not lines:
        raise DataError(f"{text}: no text (only blank lines)")
    splits = split_lines(lines, valid_share, test_share, str(text))
    raw = out / "raw"
    raw_params = {"digest": hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16], "lang": lang,
                  "valid_share": valid_share, "test_share": test_share}

    def write_raw() -> None:
        for name in LM_SPLITS:
            if name not in splits:  # a split an earlier run of this directory left
                for p in (raw / f"{name}.{lang}", out / f"{name}.{lang}.bin", out / f"{name}.{lang}.idx"):
                    p.unlink(missing_ok=True)
        for name, part in splits.items():
            write_lines(raw / f"{name}.{lang}", part)
    run_stage(out, "raw", raw_params, [raw / f"{n}.{lang}" for n in splits], write_raw)

    spm_params = spm_stage(out, raw_params, lambda: splits["train"], vocab_size, seed, vocab)
    sp = load_spm(out / "spm.model")
    dict_path = out / f"dict.{lang}.txt"
    run_stage(out, "dict", spm_params, [dict_path], lambda: ((vocab.src_dict if vocab else None) or dictionary_from_spm(
        sp, tqdm(splits["train"], desc="count pieces", unit="line", disable=None, leave=False))).save(dict_path))
    d = Dictionary.load(dict_path)

    def binarize() -> None:
        for name, part in splits.items():
            it = tqdm(part, desc=f"binarize {name}.{lang}", unit="line", disable=None, leave=False)
            write_indexed(out / f"{name}.{lang}", (d.encode_pieces(sp.encode(x, out_type=str)) for x in it))
    run_stage(out, "binarize", spm_params, [out / f"{n}.{lang}.{e}" for n in splits for e in ("bin", "idx")],
              binarize)
    meta = {
        "task": "lm", "lang": lang, "vocab_size": len(d), "spm_vocab_size": sp.get_piece_size(),
        "requested_vocab_size": None if vocab else vocab_size, "seed": seed, "input": str(text),
        "valid_share": valid_share, "test_share": test_share,
        "splits": {n: len(part) for n, part in splits.items()},
        "tokens": {n: int(np.fromfile(out / f"{n}.{lang}.idx", dtype=np.int64)[-1]) for n in splits},
        "command": command, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if vocab:
        meta["vocabulary_from"] = vocab.source
        ids = np.fromfile(out / f"train.{lang}.bin", dtype=BIN_DTYPE)
        meta["unk_share"] = round(float((ids == d.unk).mean()), 6) if ids.size else 0.0
        if meta["unk_share"]:
            log.warning("%.2f %% of the training tokens are <unk> in the reused vocabulary (%s)",
                        100 * meta["unk_share"], vocab.source)
    atomic_write_text(out / "meta.json", json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    return meta


def mono_summary(meta: dict) -> str:
    """Lines and tokens per split, and the vocabulary."""
    rows = [f"{'split':<8} {'lines':>9} {'tokens':>10}"]
    rows += [f"{n:<8} {meta['splits'][n]:>9} {meta['tokens'][n]:>10}" for n in meta["splits"]]
    rows.append(f"vocabulary: {meta['vocab_size']} symbols (dict incl. 4 specials), language {meta['lang']}")
    return "\n".join(rows)
