"""`hat search --select halving` and `--include`: the final choice by short fine-tunes from inherited
weights, resumable, and a looser search's pool that contains another search's pick."""
from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

import hat.cli
from hat.cli import main
from hat.commands.search_select import FineTuneSignal, SelectSettings, finalists, successive_halving
from hat.errors import HatError
from hat.search import Evaluated
from hat.space import describe, load_space, load_subconfig, load_subconfig_metadata, macs, save_subconfig
from test_train import SPACE as MICRO

WORDS = {"haus": "house", "katze": "cat", "hund": "dog", "rot": "red", "das": "the", "ist": "is", "baum": "tree"}


def _corpus(path: Path, n: int, seed: int) -> str:
    rng, keys = random.Random(seed), sorted(WORDS)
    ws = [[rng.choice(keys) for _ in range(rng.randint(3, 7))] for _ in range(n)]
    path.with_suffix(".de").write_text("\n".join(" ".join(w) for w in ws) + "\n", encoding="utf-8")
    path.with_suffix(".en").write_text("\n".join(" ".join(WORDS[x] for x in w) for w in ws) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> SimpleNamespace:
    """Prepared data and a micro SuperTransformer trained by `hat train` (its checkpoint has a recipe)."""
    d = tmp_path_factory.mktemp("select")
    train, valid = _corpus(d / "train", 120, 0), _corpus(d / "valid", 16, 1)
    assert main(["prepare", "text", "--src", "de", "--tgt", "en", "--trainpref", train, "--validpref", valid,
                 "--out", str(d / "data"), "--vocab-size", "60"]) == 0
    (d / "space.yaml").write_text(yaml.safe_dump(MICRO))
    cfg = {"space": str(d / "space.yaml"), "data": str(d / "data"), "max_tokens": 256, "lr": 3e-3,
           "warmup_updates": 1, "num_threads": 1, "tensorboard": False, "progress": False, "max_positions": 64}
    (d / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(d / "cfg.yaml"), f"save_dir={d / 'run'}", "max_updates=4"]) == 0
    return SimpleNamespace(dir=d, data=d / "data", ckpt=d / "run" / "checkpoint_last.pt",
                           space=load_space(d / "space.yaml"))


def _ev(space, n: int = 40, seed: int = 0) -> list[Evaluated]:
    rng = random.Random(seed)
    cfgs = list(dict.fromkeys(space.sample(rng) for _ in range(n)))
    return [Evaluated(c, macs(c, space) / 1e6, float(i)) for i, c in enumerate(cfgs)]


# ---- the pure parts ------------------------------------------------------------------------------
def test_successive_halving_keeps_the_better_half_by_the_measured_signal():
    space = load_space("tiny")
    cands = [e.cfg for e in _ev(space, 5)]
    loss = {c: [9, 3, 5, 1, 7][i] for i, c in enumerate(cands)}  # rung 0
    later = {cands[1]: 0.5, cands[3]: 2.0, cands[2]: 1.0}  # rung 1 reverses 1 and 3
    calls = []

    def signal(c, rung):
        calls.append((cands.index(c), rung))
        return loss[c] if rung == 0 else later[c] if rung == 1 else {cands[1]: 4.0, cands[2]: 3.0}[c]

    ranked, rows = successive_halving(cands, signal, log=lambda s: None)
    # rung 0: 5 -> the best 3 (1, 2, 3 by loss 3, 5, 1); rung 1: 3 -> 2 (1: 0.5, 2: 1.0); rung 2: 2 -> 1
    assert [c for c, r in calls if r == 0] == [0, 1, 2, 3, 4]
    assert sorted(c for c, r in calls if r == 1) == [1, 2, 3] and sorted(c for c, r in calls if r == 2) == [1, 2]
    assert ranked[0] == cands[2]  # the last rung decides: 3.0 < 4.0
    assert [cands.index(c) for c in ranked] == [2, 1, 3, 4, 0]  # then each rung's losers, last rung first
    assert [r["kept"] for r in rows if r["rung"] == 0] == [False, True, True, True, False]
    assert successive_halving(cands[:1], signal)[0] == cands[:1]  # nothing to choose: no training
    calls.clear()  # one rung only: the best of it wins, then its losers by loss
    ranked, rows = successive_halving(cands, signal, log=lambda s: None, max_rungs=1)
    assert [cands.index(c) for c in ranked] == [3, 1, 2, 4, 0] and {r for _, r in calls} == {0}
    assert [r["kept"] for r in rows] == [False, False, False, True, False]


def test_finalists_spread_over_latency_and_include_the_other_picks():
    space = load_space("tiny")
    cfgs = [e.cfg for e in _ev(space, 200)][:41]
    # the 10 best-scored (a quarter of the 40 feasible) sit at these latencies, scored in this order
    good = {0: 2.0, 1: 1.5, 2: 1.2, 10: 1.1, 11: 1.0, 20: 1.9, 30: 1.4, 31: 1.3, 32: 1.8, 33: 1.7}
    ev = [Evaluated(c, float(i), good.get(i, 10.0 + i)) for i, c in enumerate(cfgs[:40])]
    ev.append(Evaluated(cfgs[40], 50.0, 0.1))  # the best score, over the constraint
    got = finalists(ev, 40.0, 4, include=[cfgs[39], cfgs[2]], top=0.25)
    # strata of width 33/4 over 0-33: {0,1,2} -> 2, {10,11} -> 11, {20} -> 20, {30..33} -> 31; then the pick
    # not already there (cfgs[2] is a finalist)
    assert got == [cfgs[2], cfgs[11], cfgs[20], cfgs[31], cfgs[39]]
    # an empty stratum is filled by the next best-scored
    ev2 = [e for e in ev if e.latency != 20.0]
    got2 = finalists(ev2, 40.0, 4, top=0.25)
    assert got2[:3] == [cfgs[2], cfgs[11], cfgs[31]] and got2[3] == cfgs[10] and len(got2) == 4
    assert finalists([], 40.0, 4, include=[cfgs[5]]) == [cfgs[5]]
    # by default every feasible candidate: strata of width 39/4 over 0-39, each its best-scored
    assert finalists(ev, 40.0, 4) == [cfgs[2], cfgs[11], cfgs[20], cfgs[31]]
    lows = [cfgs[i] for i in (5, 6)]  # a stratum of poorly scored fast ones still gives one
    ev3 = [Evaluated(c, float(i), 10.0 + i) for i, c in enumerate(lows)] + \
        [Evaluated(c, 30.0 + i, float(i)) for i, c in enumerate(cfgs[10:14])]
    assert finalists(ev3, 40.0, 2) == [lows[0], cfgs[10]]


@pytest.mark.parametrize("settings, needle", [
    (SelectSettings(candidates=1), "at least 2"),
    (SelectSettings(minutes=0), "--select-minutes"),
    (SelectSettings(train=["lr"]), "expected key=value"),
    (SelectSettings(train=["data=x"]), "sets data itself"),
    (SelectSettings(valid_sentences=-1), ">= 0"),
    (SelectSettings(rungs=-1), "--select-rungs"),
])
def test_bad_selection_settings_are_refused(settings, needle):
    with pytest.raises(HatError, match=needle):
        settings.check()


# ---- with training ---------------------------------------------------------------------------------
def test_a_resumed_selection_does_not_retrain_finished_candidates(env, tmp_path, monkeypatch):
    s = SelectSettings(candidates=2, minutes=0.01, train=["max_updates=2", "warmup_updates=1"])
    sig = FineTuneSignal(env.ckpt, env.data, tmp_path / "sel", s, log=lambda m: None)
    a, b = env.space.smallest(), env.space.largest()
    first = sig(a, 0)
    res = json.loads((sig.path(a, 0) / "result.json").read_text())
    assert res["loss"] == first and res["updates"] == 2 and res["subnet"] == describe(a)
    assert not (sig.path(a, 0) / "run").exists()  # a rung's weights are not kept
    assert sig.path(a, 0) != sig.path(a, 1) != sig.path(b, 0)  # by subnet and by budget
    monkeypatch.setattr(hat.cli, "main", lambda argv: pytest.fail(f"retrained: {argv}"))
    again = FineTuneSignal(env.ckpt, env.data, tmp_path / "sel", s, log=lambda m: None)
    assert again(a, 0) == first  # from the cache, no training
    other = FineTuneSignal(env.ckpt, env.data, tmp_path / "sel", SelectSettings(candidates=2, minutes=0.01,
                           train=["max_updates=2", "warmup_updates=1", "lr=1e-4"]), log=lambda m: None)
    assert other.path(a, 0) != sig.path(a, 0)  # another recipe is another result


def test_search_select_halving_end_to_end_with_an_included_pick(env, tmp_path, capsys):
    inc = tmp_path / "tight.yml"
    save_subconfig(env.space.smallest(), inc)
    out = tmp_path / "s" / "subnet.yml"
    argv = ["search", "--checkpoint", str(env.ckpt), "--predictor", "macs", "--latency-constraint", "1000",
            "--data", str(env.data), "--out", str(out), "--population", "8", "--parents", "2", "--mutations", "3",
            "--crossovers", "3", "--iterations", "1", "--valid-sentences", "8", "--no-progress",
            "--select", "halving", "--select-candidates", "3", "--select-minutes", "0.01",
            "--select-train", "max_updates=2 warmup_updates=1", "--include", str(inc)]
    assert main(argv) == 0, capsys.readouterr().err
    rows = list(csv.DictReader(open(out.with_suffix(".select.csv"))))
    r0 = [r for r in rows if r["rung"] == "0"]
    assert len(r0) == 4 and describe(env.space.smallest()) in {r["subnet"] for r in r0}  # 3 finalists + the pick
    last = max(int(r["rung"]) for r in rows)
    final = [r for r in rows if int(r["rung"]) == last]
    assert len(final) == 2 and describe(load_subconfig(out)) == min(final, key=lambda r: float(r["loss"]))["subnet"]
    meta = load_subconfig_metadata(out)["selection"]
    assert meta["finalists"] == 4 and meta["included"] == [str(inc)]
    assert meta["from_include"] == (str(inc) if load_subconfig(out) == env.space.smallest() else None)
    n_results = len(list(out.with_suffix(".select").glob("*/result.json")))
    assert n_results == len(rows)
    # run again: the search resumes and the selection reads every rung from its cache
    capsys.readouterr()
    assert main(argv) == 0
    assert "$ hat train" not in capsys.readouterr().out
    assert len(list(out.with_suffix(".select").glob("*/result.json"))) == n_results


def test_select_keep_delivers_the_chosen_fine_tune(env, tmp_path, capsys):
    """--select-keep: the chosen subnet's fine-tuned checkpoint is written, from the cached rung, and
    is the rung's model itself (same weights, same updates); a rerun trains nothing."""
    from hat.model.checkpoint import load_checkpoint

    out, kept = tmp_path / "s" / "subnet.yml", tmp_path / "kept"
    argv = ["search", "--checkpoint", str(env.ckpt), "--predictor", "macs", "--latency-constraint", "1000",
            "--data", str(env.data), "--out", str(out), "--population", "6", "--parents", "2", "--mutations", "2",
            "--crossovers", "2", "--iterations", "1", "--valid-sentences", "8", "--no-progress",
            "--select", "halving", "--select-candidates", "2", "--select-minutes", "0.01", "--select-rungs", "1",
            "--select-train", "max_updates=2 warmup_updates=1", "--select-keep", str(kept)]
    assert main(argv) == 0, capsys.readouterr().err
    meta = load_subconfig_metadata(out)["selection"]
    assert meta["kept"]["dir"] == str(kept) and meta["kept"]["rung"] == 0 and meta["kept"]["loss"] == meta["loss"]
    assert load_subconfig(kept / "subnet.yml") == load_subconfig(out)
    ck = load_checkpoint(kept / "checkpoint_last.pt")
    assert ck["update"] == 2 and ck["config"]["sampling"]["subnet"].endswith("subnet.yml")
    runs = sorted(out.with_suffix(".select").glob("*/run"))
    assert len(runs) == 2 and all(sorted(p.name for p in r.iterdir()) == ["checkpoint_last.pt"] for r in runs)
    src = [r / "checkpoint_last.pt" for r in runs if (r.parent / "subnet.yml").read_text() ==
           (kept / "subnet.yml").read_text()]
    assert len(src) == 1 and src[0].read_bytes() == (kept / "checkpoint_last.pt").read_bytes()
    (kept / "checkpoint_last.pt").unlink()
    capsys.readouterr()
    assert main(argv) == 0
    assert "$ hat train" not in capsys.readouterr().out and (kept / "checkpoint_last.pt").is_file()


@pytest.mark.parametrize("extra, needle", [
    (["--select", "halving", "--scorer", "params", "--space", "tiny"], "needs --checkpoint and --data"),
    (["--select", "best"], "invalid choice"),
    (["--include", "missing.yml", "--scorer", "params", "--space", "tiny"], "--include missing.yml: no such"),
    (["--select", "halving", "--select-train", "save_dir=x", "--scorer", "params", "--space", "tiny"], "sets save_dir"),
    (["--select-keep", "kept", "--scorer", "params", "--space", "tiny"], "add --select halving"),
])
def test_bad_selection_input_is_one_line(extra, needle, tmp_path, capsys):
    rc = main(["search", "--device", "cpu-2core", "--latency-constraint", "60", "--out", str(tmp_path / "o.yml"),
               *extra])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and len(err.strip().splitlines()) <= 3, err
    assert not (tmp_path / "o.yml").exists()


def test_one_finalist_is_chosen_without_training(env, tmp_path, capsys, monkeypatch):
    """A constraint only the smallest subnet meets leaves one finalist: nothing to fine-tune."""
    monkeypatch.setattr(hat.cli, "main", lambda argv: pytest.fail(f"trained: {argv}"))
    import hat.commands.search_select as sel
    from hat.search import SearchResult

    small = env.space.smallest()
    res = SearchResult("evolution", small, 1.0, 1.0, [Evaluated(small, 1.0, 1.0)], [], [], 1, 0.0, 1.0)
    args = SimpleNamespace(select_candidates=2, select_minutes=0.01, select_train=None, select_valid_sentences=0,
                           select_rungs=0, threads=0, compute="auto", checkpoint=env.ckpt, data=env.data)

    class Scorer:
        def score(self, cfgs):
            return [1.0 for _ in cfgs]

    out, ranked, meta, _ = sel.select_final(args, res, Scorer(), lambda c: 1.0, {}, tmp_path / "sel",
                                            tmp_path / "sel.csv")
    assert out.best == small and ranked == [small] and meta["loss"] is None and meta["rungs"] == 0
    assert "the only finalist" in capsys.readouterr().out
