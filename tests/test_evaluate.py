"""`hat evaluate`: sacrebleu BLEU/chrF (+ signatures), per-origin BLEU, hypotheses file in
corpus order, JSON, tokenized BLEU with compound splitting, one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hat.cli import main
from hat.evaluate import compound_split, paired_bleu_pvalue, pvalue_text, score
from hat.model.generate import length_sorted_batches
from test_export import shared_setup


@pytest.fixture
def setup(tmp_path_factory) -> dict:
    return shared_setup(tmp_path_factory)


def test_score_helper_perfect_and_partial():
    refs = ["The house is red.", "A well-known state-of-the-art cat.", "Dogs."]
    r = score(refs, refs, ["a", "b", "a"], tokenized=True)
    assert r["bleu"] == 100.0 and r["chrf"] == 100.0 and r["tok_bleu"] == 100.0
    assert set(r["per_origin"]) == {"a", "b"} and r["per_origin"]["a"]["n"] == 2
    assert "tok:13a" in r["bleu_signature"] and "version:" in r["chrf_signature"]
    worse = score(["The house is blue.", "A cat.", "Dogs."], refs)
    assert 0 < worse["bleu"] < 100


def test_paired_bootstrap_calls_identical_outputs_chance_and_a_clear_win_significant():
    refs = [f"the cat number {i} sat on the mat" for i in range(60)]
    bad = [f"a dog {i} stood" for i in range(60)]
    good = [r if i % 3 else f"the cat {i} sat" for i, r in enumerate(refs)]
    assert paired_bleu_pvalue(bad, bad, refs) == 1.0  # no difference is never "significant"
    p = paired_bleu_pvalue(bad, good, refs)
    assert p < 0.05 and pvalue_text(p) == "p<0.001"
    mixed = [g if i % 2 else b for i, (g, b) in enumerate(zip(good, bad))]
    assert paired_bleu_pvalue(bad, mixed, refs) < 1.0


def test_compound_split_matches_hat_script():
    # perl -ple 's{(\S)-(\S)}{$1 ##AT##-##AT## $2}g'
    assert compound_split("state-of-the-art a - b x-y-z") == \
        "state ##AT##-##AT## of ##AT##-##AT## the ##AT##-##AT## art a - b x ##AT##-##AT## y-z"


def test_length_sorted_batches_cover_everything():
    lengths = [5, 1, 9, 3, 3, 7, 2]
    b = length_sorted_batches(lengths, max_tokens=12, max_sentences=2)
    assert sorted(i for x in b for i in x) == list(range(7))
    assert all(len(x) <= 2 and len(x) * max(lengths[i] for i in x) <= 12 or len(x) == 1 for x in b)


def test_decoding_options_have_one_definition():
    from dataclasses import asdict

    from hat.cli import build_parser
    from hat.commands.translate import decoding_options
    from hat.evaluate import _decode_and_score
    from hat.model.generate import Decoding

    defaults = asdict(Decoding())
    parser = build_parser()
    for argv in (["translate", "--model", "m"], ["evaluate", "--model", "m", "--data", "d"]):
        assert decoding_options(parser.parse_args(argv)) == defaults
    args = parser.parse_args(["evaluate", "--model", "m", "--beam", "2", "--batch-size", "3", "--max-len-b", "5"])
    assert decoding_options(args) == {**defaults, "beam": 2, "max_sentences": 3, "max_len_b": 5}
    seen: dict = {}

    def decode(**kw):
        seen.update(kw)
        return ["a b"], 0

    res, _ = _decode_and_score(decode, ["a b"], None, None, "one line", beam=2)
    assert seen == {**defaults, "beam": 2} and (res["beam"], res["lenpen"]) == (2, Decoding.lenpen)
    with pytest.raises(TypeError, match="beem"):
        _decode_and_score(decode, ["a b"], None, None, "one line", beem=2)


def test_evaluate_standalone_json_hyps_and_origins(setup, tmp_path, capsys):
    hyps = tmp_path / "hyps.txt"
    rc = main(["evaluate", "--model", str(setup["model"]), "--data", str(setup["data"]), "--subset", "test",
               "--beam", "4", "--lenpen", "0.6", "--max-sentences", "7", "--out", str(hyps), "--json",
               "--tokenized-bleu"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    lines = hyps.read_text(encoding="utf-8").splitlines()
    assert len(lines) == res["n"] == 40
    assert 0 <= res["bleu"] <= 100 and res["chrf"] > 0 and "tok_bleu" in res
    assert set(res["per_origin"]) == {"ding", "wesnoth"}
    assert res["per_origin"]["ding"]["n"] == 30
    # the same model from the SuperTransformer checkpoint + SubConfig gives the same hypotheses
    hyps2 = tmp_path / "hyps2.txt"
    rc = main(["evaluate", "--checkpoint", str(setup["ckpt"]), "--config", str(setup["cfg"]),
               "--data", str(setup["data"]), "--out", str(hyps2), "--json"])
    assert rc == 0 and hyps2.read_text(encoding="utf-8").splitlines() == lines
    capsys.readouterr()
    # scoring the references as hypotheses gives 100
    ref_file = setup["data"] / "raw" / "test.en"
    assert main(["evaluate", "--model", str(setup["model"]), "--data", str(setup["data"]), "--hyps", str(ref_file),
                 "--json"]) == 0
    perfect = json.loads(capsys.readouterr().out)
    assert perfect["bleu"] == 100.0 and all(v["bleu"] == 100.0 for v in perfect["per_origin"].values())


def test_evaluate_text_report_and_script(setup, tmp_path):
    out = subprocess.run(
        [sys.executable, "evaluate.py", "--model", str(setup["model"]), "--data", str(setup["data"]),
         "--beam", "1", "--limit", "10", "--out", str(tmp_path / "h.txt")],
        cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "BLEU" in out.stdout and "nrefs:1" in out.stdout and "ding" in out.stdout
    assert len((tmp_path / "h.txt").read_text().splitlines()) == 10


def test_evaluate_bad_inputs_one_line(setup, tmp_path, capsys):
    from hat.data import Dictionary

    m, d = str(setup["model"]), setup["data"]
    cases = [
        (["--model", m, "--data", str(tmp_path / "nope")], "nope"),
        (["--model", m, "--data", str(d), "--subset", "dev"], "dev"),
        (["--checkpoint", str(setup["ckpt"]), "--data", str(d)], "--config"),
    ]
    # a data dir whose dictionaries differ from the model's
    import shutil

    other = tmp_path / "other"
    shutil.copytree(d, other)
    dd = Dictionary.load(other / "dict.en.txt")
    dd.symbols[5], dd.symbols[6] = dd.symbols[6], dd.symbols[5]
    dd.save(other / "dict.en.txt")
    cases.append((["--model", m, "--data", str(other)], "dictionary"))
    for argv, needle in cases:
        rc = main(["evaluate", *argv])
        err = capsys.readouterr().err.strip()
        assert rc == 2, argv
        assert len(err.splitlines()) == 1 and needle in err, err


def test_evaluate_does_not_clobber_hypotheses_next_to_the_model(setup, tmp_path, capsys):
    import shutil

    model = tmp_path / "export" / "model.pt"
    model.parent.mkdir()
    shutil.copy(setup["model"], model)
    earlier = model.parent / "test.hyp.en"
    earlier.write_text("hypotheses another result refers to\n", encoding="utf-8")
    argv = ["evaluate", "--model", str(model), "--data", str(setup["data"]), "--beam", "1", "--limit", "3"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "test.hyp.en: exists" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert earlier.read_text(encoding="utf-8") == "hypotheses another result refers to\n"
    assert main(argv + ["--out", str(tmp_path / "mine.txt")]) == 0
    assert earlier.read_text(encoding="utf-8") == "hypotheses another result refers to\n"
    assert main(argv + ["--force"]) == 0
    assert len(earlier.read_text(encoding="utf-8").splitlines()) == 3


def test_own_test_set_in_a_models_vocabulary(setup, tmp_path, capsys):
    """`hat prepare text --spm-model model.pt` then `hat evaluate` that model on it."""
    raw = setup["data"] / "raw"
    for lang in ("de", "en"):
        lines = (raw / f"test.{lang}").read_text(encoding="utf-8").splitlines()[:5]
        (tmp_path / f"mine.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = tmp_path / "mine-data"
    assert main(["prepare", "text", "--src", "de", "--tgt", "en", "--testpref", str(tmp_path / "mine"),
                 "--spm-model", str(setup["model"]), "--out", str(data)]) == 0
    assert main(["evaluate", "--model", str(setup["model"]), "--data", str(data), "--beam", "1",
                 "--out", str(tmp_path / "h.txt"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["n"] == 5
