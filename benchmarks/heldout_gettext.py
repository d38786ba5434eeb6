"""Held-out text from a domain outside the training corpus: software messages of this machine.

The Debian corpus (`hat prepare debian`) has package descriptions, a dictionary, LibreOffice
help and a game. The German message catalogues of the installed command-line software
(`/usr/share/locale/de/LC_MESSAGES/*.mo`: apt, coreutils, git, bash, ...) are another domain:
short imperative and error messages. This script writes their de-en pairs as raw parallel text
for `hat evaluate --src --ref --origin`, leaving out every pair whose German or English side is
in the corpus's training split, format-string-heavy messages and very short or long ones; each
line's origin is its catalogue.

    python benchmarks/heldout_gettext.py --exclude data/debian.de-en --out heldout/gettext --n 1000
    hat evaluate --model runs/demo/export/X/model.pt --src heldout/gettext.de \\
        --ref heldout/gettext.en --origin heldout/gettext.origin --beam 4
    # every model of a demo run at once (the demo's decoding: beam 4, lenpen 0.6), a markdown table
    # with paired-bootstrap p-values against the models named by --against
    python benchmarks/heldout_gettext.py --exclude data/debian.de-en --out heldout/gettext \\
        --models runs/demo/export/*/model.pt --against dedicated,hand
"""
from __future__ import annotations

import argparse
import gettext
import random
import re
import sys
from pathlib import Path

FORMAT = re.compile(r"%[-+ #0-9.*]*[a-zA-Z]|\{[^}]*\}|\$\{|<[^>]+>|\\[nt]|&[a-z]+;")


def catalogue_pairs(mo: Path) -> list[tuple[str, str]]:
    """(German, English) message pairs of one compiled catalogue; plural forms and the header skipped."""
    with mo.open("rb") as f:
        cat = gettext.GNUTranslations(f)._catalog  # noqa: SLF001 (the parsed msgid -> msgstr table)
    out = []
    for en, de in cat.items():
        if not isinstance(en, str) or not en or "\x00" in en or not isinstance(de, str) or not de:
            continue
        en = en.split("\x04")[-1]  # drop a msgctxt
        out.append((" ".join(de.split()), " ".join(en.split())))
    return out


def keep(de: str, en: str, min_words: int, max_words: int) -> bool:
    """Plain sentences: no format directives or markup, a sane length, actually translated."""
    if FORMAT.search(de) or FORMAT.search(en) or de == en:
        return False
    n = len(en.split())
    return min_words <= n <= max_words and sum(c.isalpha() for c in en) >= 0.6 * len(en.replace(" ", ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--locale-dir", default="/usr/share/locale/de/LC_MESSAGES")
    ap.add_argument("--exclude", required=True, help="a `hat prepare` directory whose raw/train.* pairs are left out")
    ap.add_argument("--out", required=True, help="output prefix: PREFIX.de, PREFIX.en, PREFIX.origin")
    ap.add_argument("--n", type=int, default=1000, help="sentences to keep (a seeded sample)")
    ap.add_argument("--min-words", type=int, default=4)
    ap.add_argument("--max-words", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--models", nargs="*", default=[], help="standalone model.pt files to score on the text written "
                    "(named by their directory)")
    ap.add_argument("--against", default="", help="comma-separated model names: paired-bootstrap p of every model "
                    "against each")
    args = ap.parse_args(argv)
    raw = Path(args.exclude, "raw")
    if not (raw / "train.de").is_file() or not (raw / "train.en").is_file():
        print(f"{args.exclude}: no raw/train.de and raw/train.en (a `hat prepare` directory)", file=sys.stderr)
        return 2
    seen_de = set(raw.joinpath("train.de").read_text(encoding="utf-8").splitlines())
    seen_en = set(raw.joinpath("train.en").read_text(encoding="utf-8").splitlines())
    mos = sorted(Path(args.locale_dir).glob("*.mo"))
    if not mos:
        print(f"{args.locale_dir}: no .mo catalogues", file=sys.stderr)
        return 2
    pairs, taken, dropped = {}, 0, {"format/length": 0, "in training data": 0}
    for mo in mos:
        try:
            found = catalogue_pairs(mo)
        except (OSError, UnicodeDecodeError) as e:
            print(f"skipping {mo}: {e}", file=sys.stderr)
            continue
        for de, en in found:
            if not keep(de, en, args.min_words, args.max_words):
                dropped["format/length"] += 1
            elif de in seen_de or en in seen_en:
                dropped["in training data"] += 1
            elif de not in pairs:
                pairs[de] = (en, mo.stem)
                taken += 1
    items = sorted(pairs.items())
    random.Random(args.seed).shuffle(items)
    items = items[:args.n]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for suffix, col in (("de", lambda kv: kv[0]), ("en", lambda kv: kv[1][0]), ("origin", lambda kv: kv[1][1])):
        Path(f"{out}.{suffix}").write_text("".join(col(kv) + "\n" for kv in items), encoding="utf-8")
    origins = sorted({kv[1][1] for kv in items})
    print(f"{len(mos)} catalogues: {taken} usable pairs ({dropped['format/length']} dropped for format or length, "
          f"{dropped['in training data']} found in {raw}/train); wrote {len(items)} from {len(origins)} catalogues "
          f"to {out}.de/.en/.origin")
    if args.models:
        score_models([Path(m) for m in args.models], out, [a for a in args.against.split(",") if a])
    return 0


def score_models(models: list[Path], prefix: Path, against: list[str]) -> None:
    """BLEU/chrF of each model on PREFIX.de -> PREFIX.en (beam 4, lenpen 0.6), a markdown table."""
    import hat  # noqa: PLC0415
    from hat.evaluate import evaluate_text, paired_bleu_pvalue  # noqa: PLC0415

    res, hyps = {}, {}
    for m in models:
        name = m.parent.name
        res[name], hyps[name] = evaluate_text(hat.load(m), f"{prefix}.de", f"{prefix}.en", f"{prefix}.origin",
                                              beam=4, lenpen=0.6, progress=False)
    refs = Path(f"{prefix}.en").read_text(encoding="utf-8").splitlines()
    missing = [a for a in against if a not in res]
    if missing:
        print(f"--against {','.join(missing)}: not among the models ({', '.join(res)})", file=sys.stderr)
        against = [a for a in against if a in res]
    print("\n| model | BLEU | chrF | " + " | ".join(f"p vs {a}" for a in against) + " |")
    print("|---|---:|---:|" + "---:|" * len(against))
    for name, r in sorted(res.items(), key=lambda kv: -kv[1]["bleu"]):
        ps = [("-" if a == name else f"{paired_bleu_pvalue(hyps[a], hyps[name], refs):.3f}") for a in against]
        print(f"| {name} | {r['bleu']:.2f} | {r['chrf']:.1f} | " + " | ".join(ps) + " |")


if __name__ == "__main__":
    sys.exit(main())
