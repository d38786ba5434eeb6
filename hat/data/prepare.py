"""From raw splits to a training-ready directory: raw text, SPM, dictionaries, binaries, meta.

Each stage records its parameters in `.stages/<stage>.json` and is skipped when a rerun
asks for the same thing and its outputs exist, so `hat prepare` is idempotent.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from hat.data.dataset import write_indexed
from hat.data.dictionary import Dictionary
from hat.data.text import Split, read_lines, read_parallel, write_split
from hat.data.tokenizer import dictionary_from_spm, load_spm, train_spm
from hat.errors import DataError
from hat.files import atomic_write_bytes, atomic_write_text
from hat.model.transformer import ModelArgs

log = logging.getLogger(__name__)
SPLITS = ("train", "valid", "test")
SHRUNK = 0.5  # warn when SentencePiece learns fewer pieces than this fraction of the request


@dataclass(frozen=True)
class Vocabulary:
    """An existing model's vocabulary, reused instead of training one (`hat prepare text
    --spm-model/--srcdict`), so its data binarizes to the indices that model was trained on."""

    spm_bytes: bytes
    src_dict: Dictionary | None  # None: every piece of the SentencePiece model, in its order
    tgt_dict: Dictionary | None  # None: the source dictionary (hat's dictionaries are joint)
    source: str

    def digest(self) -> str:
        dicts = [d.symbols if d else None for d in (self.src_dict, self.tgt_dict)]
        return _digest([hashlib.sha256(self.spm_bytes).hexdigest(), dicts])


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def run_stage(out: Path, name: str, params: dict, outputs: list[Path], fn: Callable[[], None]) -> bool:
    """Run `fn` unless a previous run with the same `params` left all `outputs`; True if run."""
    marker = out / ".stages" / f"{name}.json"
    key = _digest(params)
    if marker.is_file() and all(p.exists() for p in outputs):
        try:
            if json.loads(marker.read_text(encoding="utf-8")).get("key") == key:
                log.info("stage %s: up to date, skipped", name)
                return False
        except (ValueError, AttributeError, RecursionError):  # a damaged marker: run the stage again
            pass
    fn()
    atomic_write_text(marker, json.dumps({"key": key, "params": params, "time": time.time()}, indent=1))
    return True


def _raw_digest(raw: Path, src: str, tgt: str) -> str:
    h = hashlib.sha256()
    for s in SPLITS:
        for ext in (src, tgt, "origin"):
            p = raw / f"{s}.{ext}"
            if p.is_file():
                h.update(p.read_bytes())
    return h.hexdigest()[:16]


def build_from_splits(
    out: str | Path,
    splits: dict[str, Split],
    src: str,
    tgt: str,
    *,
    vocab_size: int = 8000,
    seed: int = 1,
    command: str = "",
    extra_meta: dict | None = None,
    vocab: Vocabulary | None = None,
) -> dict:
    """Write the full `hat prepare` layout in `out` from in-memory splits; return meta.

    With `vocab` the SentencePiece model and dictionaries are reused (no training split needed)."""
    out = Path(out)
    raw = out / "raw"
    if src == tgt:
        raise DataError(f"source and target language are both {src!r}")
    if vocab is None and ("train" not in splits or len(splits["train"]) == 0):
        raise DataError(f"{out}: no training pairs")
    if not splits:
        raise DataError(f"{out}: no splits to prepare")
    raw.mkdir(parents=True, exist_ok=True)
    names = [s for s in SPLITS if s in splits]

    def write_raw() -> None:
        for name in SPLITS:  # drop a split left over from an earlier run of this out dir
            if name not in names:
                for p in [raw / f"{name}.{e}" for e in (src, tgt, "origin")] + \
                         [out / f"{name}.{lang}.{e}" for lang in (src, tgt) for e in ("bin", "idx")]:
                    p.unlink(missing_ok=True)
        for name in names:
            write_split(raw, name, splits[name], src, tgt)
    raw_params = {"digest": _digest([[splits[n].src, splits[n].tgt, splits[n].origin] for n in names])}
    run_stage(out, "raw", raw_params, [raw / f"{n}.{e}" for n in names for e in (src, tgt, "origin")], write_raw)
    return build_from_raw(out, src, tgt, vocab_size=vocab_size, seed=seed, command=command, extra_meta=extra_meta,
                          vocab=vocab)


def spm_stage(out: Path, rd: str | dict, texts: Callable[[], list[str]], vocab_size: int, seed: int,
              vocab: Vocabulary | None) -> dict:
    """Train a SentencePiece model on `texts()` (or copy the reused one) into `out`; returns the
    stage parameters the dictionaries and binaries depend on. Both `hat prepare` layouts use it."""
    spm_prefix, model = out / "spm", out / "spm.model"
    if vocab is None:
        params: dict = {"raw": rd, "vocab_size": vocab_size, "seed": seed}
        run_stage(out, "spm", params, [model, out / "spm.vocab"],
                  lambda: train_spm(texts(), spm_prefix, vocab_size, seed=seed))
        pieces = load_spm(model).get_piece_size()
        if pieces < SHRUNK * vocab_size:
            log.warning("%s: SentencePiece learned only %d pieces of the %d requested (the training text is small); "
                        "pass --vocab-size %d to make this explicit", model, pieces, vocab_size, pieces)
    else:
        params = {"raw": rd, "vocab": vocab.digest()}
        (out / "spm.vocab").unlink(missing_ok=True)
        run_stage(out, "spm", params, [model], lambda: atomic_write_bytes(model, vocab.spm_bytes))
    return params


def build_from_raw(out: str | Path, src: str, tgt: str, *, vocab_size: int = 8000, seed: int = 1,
                   command: str = "", extra_meta: dict | None = None, vocab: Vocabulary | None = None) -> dict:
    """SPM, dictionaries, binaries and meta.json from `out/raw/{split}.{src,tgt,origin}`."""
    out = Path(out)
    raw = out / "raw"
    names = [s for s in SPLITS if (raw / f"{s}.{src}").is_file()]
    data = {n: Split(read_lines(raw / f"{n}.{src}"), read_lines(raw / f"{n}.{tgt}"),
                     read_lines(raw / f"{n}.origin")) for n in names}
    train = data.get("train")
    spm_params = spm_stage(out, _raw_digest(raw, src, tgt), lambda: train.src + train.tgt, vocab_size, seed, vocab)
    sp = load_spm(out / "spm.model")
    dict_paths = {src: out / f"dict.{src}.txt", tgt: out / f"dict.{tgt}.txt"}

    def write_dicts() -> None:
        counted = train or data[names[0]]
        d = dictionary_from_spm(sp, tqdm(counted.src + counted.tgt, desc="count pieces", unit="sent",
                                         disable=None, leave=False))
        src_d = (vocab.src_dict if vocab else None) or d
        tgt_d = (vocab.tgt_dict if vocab else None) or src_d
        src_d.save(dict_paths[src])
        tgt_d.save(dict_paths[tgt])
    run_stage(out, "dict", spm_params, list(dict_paths.values()), write_dicts)
    dicts = {lang: Dictionary.load(p) for lang, p in dict_paths.items()}

    def binarize() -> None:
        for n in names:
            for lang, lines in ((src, data[n].src), (tgt, data[n].tgt)):
                it = tqdm(lines, desc=f"binarize {n}.{lang}", unit="sent", disable=None, leave=False)
                write_indexed(out / f"{n}.{lang}", (dicts[lang].encode_pieces(p) for p in
                                                    (sp.encode(x, out_type=str) for x in it)))
    bins = [out / f"{n}.{lang}.{e}" for n in names for lang in (src, tgt) for e in ("bin", "idx")]
    run_stage(out, "binarize", spm_params, bins, binarize)

    meta = {
        "src": src, "tgt": tgt, "vocab_size": len(dicts[src]), "spm_vocab_size": sp.get_piece_size(),
        "requested_vocab_size": None if vocab else vocab_size, "seed": seed,
        "splits": {n: len(data[n]) for n in names},
        "origins": {n: dict(sorted(Counter(data[n].origin).items())) for n in names},
        "tokens": {n: {lang: int(np.fromfile(out / f"{n}.{lang}.idx", dtype=np.int64)[-1])
                       for lang in (src, tgt)} for n in names},
        "command": command, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if vocab:
        meta["vocabulary_from"] = vocab.source
    long = {n: c for n in names if (c := _over_long(out, n, src, tgt))}
    if long:  # prepare cannot know the model's positions: count against the default and say what happens
        meta["over_max_positions"] = {"max_positions": ModelArgs.max_positions, **long}
        log.warning("%s pair(s) have a side longer than %d tokens (the default max_positions): training, "
                    "validation and the search's scorer skip them, generation truncates their source",
                    ", ".join(f"{n} {c}" for n, c in long.items()), ModelArgs.max_positions)
    if extra_meta:
        meta.update(extra_meta)
    atomic_write_text(out / "meta.json", json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    return meta


def _over_long(out: Path, split: str, src: str, tgt: str) -> int:
    """Pairs of `split` with a side longer than the default max_positions (EOS included)."""
    sizes = [np.diff(np.fromfile(out / f"{split}.{lang}.idx", dtype=np.int64)) for lang in (src, tgt)]
    return int(np.sum(np.maximum(*sizes) > ModelArgs.max_positions))


def warn_overlap(splits: dict[str, Split]) -> dict[str, int]:
    """Warn about valid/test pairs whose source sentence is also a training source (BLEU on
    them rewards memorisation); returns the count per split."""
    train = set(splits["train"].src) if "train" in splits else set()
    found = {}
    for name in ("valid", "test"):
        if name in splits and train:
            n = sum(s in train for s in splits[name].src)
            found[name] = n
            if n:
                log.warning("%d of %d %s pairs (%.1f%%) have a source sentence that is also in train: scores on "
                            "them reward memorisation; remove them from train or %s", n, len(splits[name]), name,
                            100 * n / len(splits[name]), name)
    return found


BPE_MARK = re.compile(r"@@ |@@ ?$")  # fairseq's --remove-bpe: the continuation marker and its space
BPE_LINES = 0.05  # text is BPE'd when at least this fraction of its lines carry the marker


def undo_bpe(split: Split, where: str, remove: bool) -> Split:
    """Detect fairseq/subword-nmt BPE markers (`@@ `, as in `prepare-wmt14en2de.sh` output):
    remove them (`remove`) or refuse with a hint. hat trains SentencePiece on raw text, and
    BPE'd references would make BLEU score pieces instead of words."""
    marked = sum(bool(BPE_MARK.search(x)) for x in split.src + split.tgt)
    if marked < BPE_LINES * 2 * len(split):  # a few `@@ ` (diff hunks, say) are text, not BPE
        return split
    if not remove:
        raise DataError(f"{where}: {marked} of {2 * len(split)} lines carry BPE markers ('@@ '): give the text before "
                        "BPE, or pass --remove-bpe to strip them (as fairseq's --remove-bpe)")
    log.info("%s: removed BPE markers from %d lines", where, marked)
    return Split([BPE_MARK.sub("", x) for x in split.src], [BPE_MARK.sub("", x) for x in split.tgt], split.origin)


def prepare_text(out: str | Path, src: str, tgt: str, trainpref: str | None, validpref: str | None = None,
                 testpref: str | None = None, *, vocab_size: int = 8000, seed: int = 1, command: str = "",
                 vocab: Vocabulary | None = None, remove_bpe: bool = False) -> dict:
    """`hat prepare text`: validate raw parallel files and build the output layout. With
    `vocab` (another model's vocabulary) any of the splits may be given, e.g. only a test set."""
    prefixes = {"train": trainpref, "valid": validpref, "test": testpref}
    if vocab is None and not (trainpref and validpref):
        raise DataError("--trainpref and --validpref are required unless the vocabulary is reused (--spm-model)")
    splits = {name: undo_bpe(read_parallel(p, src, tgt), p, remove_bpe) for name, p in prefixes.items() if p}
    warn_overlap(splits)
    return build_from_splits(out, splits, src, tgt, vocab_size=vocab_size, seed=seed, command=command, vocab=vocab)


def summary(meta: dict) -> str:
    """Human-readable table of pairs per split and origin."""
    origins = sorted({o for c in meta["origins"].values() for o in c})
    names = list(meta["splits"])
    w = max([len(o) for o in origins] + [6])
    lines = [f"{'origin':<{w}} " + " ".join(f"{n:>8}" for n in names)]
    for o in origins:
        lines.append(f"{o:<{w}} " + " ".join(f"{meta['origins'][n].get(o, 0):>8}" for n in names))
    lines.append(f"{'total':<{w}} " + " ".join(f"{meta['splits'][n]:>8}" for n in names))
    lines.append(f"vocabulary: {meta['vocab_size']} symbols (dict incl. 4 specials)")
    return "\n".join(lines)


def prepare_sample(out: str | Path, *, vocab_size: int = 8000, seed: int = 1, command: str = "") -> dict:
    """`hat prepare sample`: the bundled LibreOffice help sample (see `hat.data.sample`), no download."""
    from hat.data.sample import SAMPLE_DIR, SRC, TGT, sample_splits

    extra = {"corpus": "sample", "licence": f"MPL-2.0, see {SAMPLE_DIR / 'LICENSE'}"}
    return build_from_splits(out, sample_splits(), SRC, TGT, vocab_size=vocab_size, seed=seed, command=command,
                             extra_meta=extra)


def prepare_debian(out: str | Path, pair: str = "de-en", *, cache: str | Path = "data/cache",
                   vocab_size: int = 8000, valid_size: int = 2000, test_size: int = 2000,
                   seed: int = 1, max_chars: int = 250, command: str = "") -> dict:
    """`hat prepare debian`: gather Debian sources, filter, split by source, build layout."""
    from hat.data.sources import gather  # apt-only code, imported on demand
    from hat.data.text import filter_pairs, split_by_source

    try:
        src, tgt = pair.split("-")
    except ValueError:
        raise DataError(f"--pair {pair!r}: expected SRC-TGT such as de-en") from None
    if tgt != "en" and src == "en":
        lang, forward = tgt, False
    elif tgt == "en":
        lang, forward = src, True
    else:
        raise DataError(f"--pair {pair!r}: one side must be en (de-en, fr-en, en-de, en-fr)")
    t0 = time.time()
    gathered = gather(lang, cache)
    triples = [((a, b) if forward else (b, a)) + (o,) for o, ps in gathered.items() for a, b in ps]
    kept, dropped = filter_pairs(triples, max_chars=max_chars)
    print(f"filtered: {len(kept)} of {len(triples)} pairs kept; dropped " +
          ", ".join(f"{k} {v}" for k, v in sorted(dropped.items())), flush=True)
    splits = split_by_source(kept, valid_size, test_size, seed)
    extra = {"corpus": "debian", "raw_pairs": {o: len(p) for o, p in gathered.items()},
             "dropped": dict(dropped), "gather_seconds": round(time.time() - t0, 1)}
    return build_from_splits(out, splits, src, tgt, vocab_size=vocab_size, seed=seed,
                             command=command, extra_meta=extra)
