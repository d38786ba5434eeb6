"""Standalone SubTransformer files: one `model.pt` that needs no data directory.

The file is a dict of plain values and tensors only (it loads with
`torch.load(weights_only=True)`, so opening it never runs pickled code):

    format "hat-standalone", version 1
    init_kwargs   SubTransformer.init_kwargs() (SubConfig, ModelArgs, qkv_dim, positional widths)
    model         the SubTransformer state dict
    spm_model     the joint SentencePiece model (bytes)
    src_lang, tgt_lang, src_dict, tgt_dict   dictionaries as [symbol, count] lists (fairseq order)
    meta          provenance: source checkpoint, update, design space, data directory
    quantization  absent (float32) or "int8": `model` then holds the int8 form of
                  `hat.export.quantize` (int8 weights + per-row scales of every Linear layer)

`hat.load(path)` returns a `Translator` (model in eval mode + tokenizers + `translate`);
`hat export --quantize int8` writes the int8 file, which `hat.load` runs as such (CPU only).
"""
from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

from hat.data.dictionary import Dictionary
from hat.data.tokenizer import Tokenizer
from hat.errors import CheckpointError, DataError, HatError, first_line
from hat.files import check_fields, check_tag, load_torch, save_torch
from hat.model.checkpoint import FORMAT as SUPER_FORMAT
from hat.model.generate import Decoding

log = logging.getLogger(__name__)

FORMAT = "hat-standalone"
FORMAT_VERSION = 1
WHAT = "standalone model"
REQUIRED_KEYS = {"init_kwargs": dict, "model": dict, "spm_model": bytes, "src_lang": str, "tgt_lang": str,
                 "src_dict": list, "tgt_dict": list}


# ------------------------------------------------------------------------------------------
def dict_to_list(d: Dictionary) -> list[list]:
    return [[s, int(c)] for s, c in zip(d.symbols[d.nspecial:], d.count[d.nspecial:])]


def dict_from_list(items: Iterable[Sequence], source: str) -> Dictionary:
    try:
        return Dictionary.from_counts((str(s), int(c)) for s, c in items)
    except (TypeError, ValueError, DataError) as e:
        raise CheckpointError(f"{source}: corrupt dictionary ({e})") from None


def _spm_from_bytes(data: bytes, source: str):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor()
    try:
        sp.LoadFromSerializedProto(data)
    except (RuntimeError, OSError, TypeError):
        raise CheckpointError(f"{source}: corrupt SentencePiece model inside the file") from None
    return sp


class Translator:
    """A SubTransformer with its vocabulary: `translate(["Ein Satz."]) -> ["A sentence."]`.

    `tokenizer` encodes source text (source dictionary); `tgt_tokenizer` decodes hypotheses.
    """

    def __init__(
        self,
        model,
        spm_bytes: bytes,
        src_dict: Dictionary,
        tgt_dict: Dictionary,
        src_lang: str,
        tgt_lang: str,
        meta: dict | None = None,
        source: str = "model",
        quantization: str | None = None,
    ) -> None:
        self.model = model.eval()
        self.quantization = quantization
        self.spm_bytes = spm_bytes
        sp = _spm_from_bytes(spm_bytes, source)
        self.src_dict, self.tgt_dict = src_dict, tgt_dict
        self.src_lang, self.tgt_lang = src_lang, tgt_lang
        self.tokenizer = Tokenizer(sp, src_dict)
        self.tgt_tokenizer = Tokenizer(sp, tgt_dict)
        self.meta = dict(meta or {})
        self.source = source

    @property
    def config(self):
        return self.model.config

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> "Translator":
        if self.quantization and torch.device(device).type != "cpu":
            raise HatError(f"{self.source}: {self.quantization} models run on the CPU only")
        self.model.to(device)
        return self

    def quantized(self, quantization: str) -> "Translator":
        """This model quantized (`hat.export.quantize`: "int8"), as a new Translator on the CPU."""
        import copy

        from hat.export.quantize import QUANTIZATIONS, quantize_int8

        if quantization not in QUANTIZATIONS:
            raise HatError(f"unknown quantization {quantization!r} (choose {', '.join(QUANTIZATIONS)})")
        if self.quantization:
            raise HatError(f"{self.source}: already quantized ({self.quantization}); start from the float32 model")
        model = quantize_int8(copy.deepcopy(self.model).cpu())
        return Translator(model, self.spm_bytes, self.src_dict, self.tgt_dict, self.src_lang, self.tgt_lang,
                          self.meta, self.source, quantization)

    def check_vocab(self, src_dict: Dictionary, tgt_dict: Dictionary, where: str) -> None:
        """Refuse data whose dictionaries differ from the model's."""
        for side, ours, theirs in (("source", self.src_dict, src_dict), ("target", self.tgt_dict, tgt_dict)):
            if ours.symbols != theirs.symbols:
                raise DataError(
                    f"{where}: {side} dictionary ({len(theirs)} symbols) does not match the model's "
                    f"({len(ours)} symbols) in {self.source}"
                )

    @torch.no_grad()
    def translate(
        self,
        sentences: Sequence[str],
        beam: int = Decoding.beam,
        lenpen: float = Decoding.lenpen,
        *,
        progress: bool = False,
        on_truncate: Callable[[int, int], None] | None = None,
        **options: Any,
    ) -> list[str]:
        """Detokenized translations of `sentences` (batched by length, returned in input order);
        `options`: the other `hat.model.generate.Decoding` fields (max_len_a, max_len_b, max_tokens,
        max_sentences; another name is a TypeError, whichever runtime decodes).
        Empty (or blank) sentences translate to empty strings; a sentence longer than the model's
        positions is cut to fit (`on_truncate(index, tokens)` is told)."""
        decoding = asdict(Decoding(beam, lenpen, **options))
        todo = [i for i, s in enumerate(sentences) if s.strip()]
        src = [self.encode(sentences[i], (lambda n, i=i: on_truncate(i, n)) if on_truncate else None) for i in todo]
        hyps = self.generate(src, progress=progress, **decoding)
        out = [""] * len(sentences)
        for i, h in zip(todo, hyps):
            out[i] = self.tgt_tokenizer.decode(h)
        return out

    def encode(self, sentence: str, on_truncate: Callable[[int], None] | None = None) -> torch.Tensor:
        """Source ids ending in EOS, cut to the model's `max_positions` (`on_truncate(tokens)` is
        told the original length when it cuts)."""
        ids = self.tokenizer.encode(sentence)
        limit = self.model.args.max_positions
        if len(ids) > limit:
            if on_truncate:
                on_truncate(len(ids))
            ids = ids[: limit - 1] + ids[-1:]
        return torch.tensor(ids, dtype=torch.long)

    def generate(self, sources: Sequence[torch.Tensor], **kw: Any) -> list[list[int]]:
        """Best hypothesis (target ids) per source (ids ending in EOS), in input order: the
        keywords of `hat.model.generate.generate`. Other runtimes (ONNX, CTranslate2) override this."""
        from hat.model.generate import generate

        return generate(self.model, sources, **kw)

    def state(self) -> dict[str, Any]:
        """The standalone file's content."""
        if self.quantization:
            from hat.export.quantize import int8_state

            weights = int8_state(self.model)
        else:
            weights = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "init_kwargs": self.model.init_kwargs(),
            "model": weights,
            **({"quantization": self.quantization} if self.quantization else {}),
            "spm_model": self.spm_bytes,
            "src_lang": self.src_lang,
            "tgt_lang": self.tgt_lang,
            "src_dict": dict_to_list(self.src_dict),
            "tgt_dict": dict_to_list(self.tgt_dict),
            "meta": self.meta,
        }

    def save(self, path: str | Path) -> Path:
        """Write the standalone file atomically."""
        path = Path(path)
        save_torch(self.state(), path)
        return path


# ------------------------------------------------------------------------------------------
def from_state(state: Any, path: str | Path, map_location: str | torch.device = "cpu") -> Translator:
    from hat.model import SubTransformer

    check_tag(state, path, FORMAT, WHAT, version=FORMAT_VERSION, required=REQUIRED_KEYS,
              hint=" (export one with `hat export --format standalone`)")
    check_fields(state, {"meta": (dict, type(None))}, f"{path}: {WHAT}", CheckpointError)
    src_dict = dict_from_list(state["src_dict"], str(path))
    tgt_dict = dict_from_list(state["tgt_dict"], str(path))
    quantization = state.get("quantization")
    if quantization not in (None, "int8"):
        raise CheckpointError(f"{path}: unknown quantization {quantization!r} (this hat reads int8)")
    if quantization and torch.device(map_location).type != "cpu":
        raise HatError(f"{path}: {quantization} models run on the CPU only (use --compute cpu)")
    try:
        model = SubTransformer.from_kwargs(state["init_kwargs"])
        if quantization:
            from hat.export.quantize import load_int8_state

            model = load_int8_state(model, state["model"])
        else:
            model.load_state_dict(state["model"])
    except Exception as e:  # noqa: BLE001 - any mismatch is a broken file
        raise CheckpointError(f"{path}: model state does not match its architecture ({first_line(e, 160)})") from None
    if model.args.src_vocab_size != len(src_dict) or model.args.tgt_vocab_size != len(tgt_dict):
        raise CheckpointError(
            f"{path}: model vocabulary ({model.args.src_vocab_size}/{model.args.tgt_vocab_size}) does not match "
            f"its dictionaries ({len(src_dict)}/{len(tgt_dict)})"
        )
    return Translator(
        model.to(map_location), state["spm_model"], src_dict, tgt_dict, state["src_lang"], state["tgt_lang"],
        state.get("meta"), source=str(path), quantization=quantization,
    )


def load(path: str | Path, map_location: str | torch.device = "cpu") -> Translator:
    """Load a standalone export: a ready SubTransformer (eval mode) with its tokenizers."""
    path = Path(path)
    return from_state(load_torch(path, WHAT, map_location), path, map_location)


def _data_vocab(data_dir: Path, ckpt_path: Path) -> tuple[bytes, Dictionary, Dictionary, str, str]:
    from hat.data.dataset import load_data

    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: data directory not found (needed for the SentencePiece model and "
                        f"dictionaries of {ckpt_path}; pass --data)")
    meta, src_dict, tgt_dict = load_data(data_dir)
    spm_path = data_dir / "spm.model"
    if not spm_path.is_file():
        raise DataError(f"{spm_path}: SentencePiece model not found")
    return spm_path.read_bytes(), src_dict, tgt_dict, meta["src"], meta["tgt"]


def from_super_checkpoint(
    checkpoint: str | Path,
    config,
    data: str | Path | None = None,
    map_location: str | torch.device = "cpu",
) -> Translator:
    """Extract SubConfig `config` (a SubConfig or a YAML path) from a `hat train` checkpoint.

    The vocabulary comes from `data` (default: the data directory recorded in the checkpoint)."""
    from hat.model import extract, load_super_checkpoint
    from hat.space import SubConfig, load_subconfig

    checkpoint = Path(checkpoint)
    cfg_source = str(config)
    if not isinstance(config, SubConfig):
        config = load_subconfig(config)
    super_model, ckpt = load_super_checkpoint(checkpoint, map_location)
    super_model.space.validate(config, source=cfg_source)
    if data is None:
        data = (ckpt.get("config") or {}).get("data")
        if data is None:
            raise DataError(f"{checkpoint}: records no data directory; pass --data")
    data = Path(data)
    spm_bytes, src_dict, tgt_dict, src_lang, tgt_lang = _data_vocab(data, checkpoint)
    args = super_model.args
    if args.src_vocab_size != len(src_dict) or args.tgt_vocab_size != len(tgt_dict):
        raise DataError(
            f"{data}: dictionaries have {len(src_dict)}/{len(tgt_dict)} symbols but {checkpoint} was trained "
            f"with {args.src_vocab_size}/{args.tgt_vocab_size}"
        )
    sub = extract(super_model, config).eval()
    meta = {
        "checkpoint": str(checkpoint),
        "update": ckpt.get("update"),
        "space": ckpt.get("space"),
        "data": str(data),
        "config": config.to_dict(),
    }
    return Translator(sub, spm_bytes, src_dict, tgt_dict, src_lang, tgt_lang, meta, source=str(checkpoint))


def load_any(
    checkpoint: str | Path,
    config=None,
    data: str | Path | None = None,
    map_location: str | torch.device = "cpu",
) -> Translator:
    """A standalone export, or a SuperTransformer checkpoint + SubConfig (+ data dir)."""
    checkpoint = Path(checkpoint)
    state = load_torch(checkpoint, "model file", map_location)
    fmt = state.get("format") if isinstance(state, dict) else None
    if fmt == FORMAT:
        tr = from_state(state, checkpoint, map_location)
        if config is not None:
            from hat.space import SubConfig, load_subconfig

            cfg = config if isinstance(config, SubConfig) else load_subconfig(config)
            if cfg != tr.config:
                raise CheckpointError(f"{checkpoint}: standalone model is a different architecture than {config}")
        return tr
    if fmt == SUPER_FORMAT:
        del state
        if config is None:
            raise CheckpointError(f"{checkpoint}: a SuperTransformer checkpoint needs --config SUBNET.yml")
        return from_super_checkpoint(checkpoint, config, data, map_location)
    raise CheckpointError(f"{checkpoint}: neither a hat standalone model nor a hat SuperTransformer checkpoint")
