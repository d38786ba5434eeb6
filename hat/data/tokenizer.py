"""Joint SentencePiece BPE: training and text <-> Dictionary-index conversion."""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Iterable

import sentencepiece as spm

from hat.data.dictionary import Dictionary
from hat.errors import DataError, first_line


def train_spm(
    texts: Iterable[str],
    model_prefix: str | Path,
    vocab_size: int = 8000,
    *,
    seed: int = 1,
    input_sentence_size: int = 1_000_000,
    num_threads: int = 2,
) -> Path:
    """Train a BPE model on `texts` (both languages: one joint vocabulary to share embeddings).

    The vocab size is a soft limit so tiny corpora still train; the sampling RNG is
    seeded so the same input gives the same model. No normalization rule ("identity"):
    decode(encode(text)) gives back the text exactly (up to whitespace), so detokenized
    hypotheses compare fairly with raw references; builders normalize text themselves.
    Returns the `.model` path.
    """
    model_prefix = Path(model_prefix)
    model_prefix.parent.mkdir(parents=True, exist_ok=True)
    spm.set_random_generator_seed(seed)
    # fixed name: the model records its input path, and the same input must give the same bytes
    tmp = model_prefix.parent / f".{model_prefix.name}.train.txt"  # removed however training ends
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            n = 0
            for line in texts:
                f.write(line.replace("\n", " ") + "\n")
                n += 1
        if n == 0:
            raise DataError(f"{model_prefix}: no training text for the SentencePiece model")
        spm.SentencePieceTrainer.train(
            input=str(tmp), model_prefix=str(model_prefix), vocab_size=vocab_size,
            model_type="bpe", character_coverage=1.0, normalization_rule_name="identity", input_sentence_size=input_sentence_size,
            shuffle_input_sentence=True, hard_vocab_limit=False, num_threads=num_threads,
            unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2,
        )
    except RuntimeError as e:
        msg = first_line(e)
        m = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", msg)
        if m:
            msg = f"vocab size {m.group(1)} is below the {m.group(2)} distinct characters of the training text"
        raise DataError(f"{model_prefix}.model: SentencePiece training failed: {msg}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return model_prefix.with_suffix(".model")


def load_spm(path: str | Path) -> spm.SentencePieceProcessor:
    """Load a SentencePiece model, turning failures into DataError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: SentencePiece model not found")
    sp = spm.SentencePieceProcessor()
    try:
        sp.load(str(path))
    except (OSError, RuntimeError):
        raise DataError(f"{path}: not a valid SentencePiece model") from None
    return sp


def dictionary_from_spm(sp: spm.SentencePieceProcessor, texts: Iterable[str]) -> Dictionary:
    """Dictionary of every non-control SPM piece in SPM id order, counted over `texts`.

    Keeping all pieces (even unseen ones, count 0) means any SPM output maps to a real
    index; counts are kept for fairseq-style inspection.
    """
    counts: Counter[str] = Counter()
    for t in texts:
        counts.update(sp.encode(t, out_type=str))
    items = []
    for i in range(sp.get_piece_size()):
        if sp.is_control(i) or sp.is_unknown(i):
            continue
        p = sp.id_to_piece(i)
        items.append((p, counts.get(p, 0)))
    return Dictionary.from_counts(items)


class Tokenizer:
    """Text <-> Dictionary indices through a SentencePiece model."""

    def __init__(self, spm_model: str | Path | spm.SentencePieceProcessor, dictionary: Dictionary) -> None:
        """`spm_model`: a model file, or a loaded processor (e.g. read from bytes in an export)."""
        self.sp = spm_model if isinstance(spm_model, spm.SentencePieceProcessor) else load_spm(spm_model)
        self.dictionary = dictionary

    def pieces(self, text: str) -> list[str]:
        return self.sp.encode(text, out_type=str)

    def encode(self, text: str) -> list[int]:
        """Indices of `text`'s pieces, EOS appended."""
        return self.dictionary.encode_pieces(self.pieces(text))

    def decode(self, ids: Iterable[int]) -> str:
        """Detokenized text (stops at EOS, drops pad/bos)."""
        s = self.dictionary.string(ids)
        return self.sp.decode_pieces(s.split()) if s else ""
