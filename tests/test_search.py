"""Search tests: HAT's evolution, baselines, scorers, resume, CLI. Small settings, < 60 s total."""
from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
import torch

from hat.cli import main
from hat.latency.estimate import Latency, MacsPredictor
from hat.model import ModelArgs, SuperTransformer
from hat.search import (EvolutionSettings, FunctionScorer, LossScorer, NoFeasibleConfigError, ParamsScorer,
                        decoder_params, dominates, evolution_search, kendall_tau, non_dominated, random_search)
from hat.search.nsga2 import GeneCodec, nsga2_search
from hat.search.state import LOG_COLUMNS
from hat.space import features_full, load_space, load_subconfig, macs, num_params

SPACE = load_space("tiny")
SMALL = dict(population=20, parents=5, mutations=8, crossovers=7, iterations=6)
# MacsPredictor(tiny, 100 ms/GMAC): smallest 4.29 ms, largest 19.5 ms
CONSTRAINT = 9.0
try:
    import pymoo  # noqa: F401
    HAVE_PYMOO = True
except ImportError:
    HAVE_PYMOO = False
needs_pymoo = pytest.mark.skipif(not HAVE_PYMOO, reason="nsga2 needs pymoo (pip install pymoo==0.6.2)")


def _lat() -> Latency:
    return Latency(MacsPredictor(SPACE, 100.0))


class _Stop(Exception):
    pass


def _strip(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]


# ---------------------------------------------------------------------------- scorers
def test_params_scorer_is_negated_decoder_params():
    rng = random.Random(0)
    for _ in range(20):
        c = SPACE.sample(rng)
        # decoder params = all non-embedding params minus the encoder's (post-norm: 2 LNs per layer)
        q, de = SPACE.qkv_dim, c.encoder_embed_dim
        enc = sum((de * q + q) * 3 + (q * de + de) + (de * f + f + f * de + de) + 4 * de
                  for f in c.encoder_ffn_embed_dim)
        assert decoder_params(c, SPACE) == num_params(c, SPACE) - enc
    s = ParamsScorer(SPACE)
    small, large = s.score([SPACE.smallest(), SPACE.largest()])
    assert large < small < 0  # more decoder params = better = lower
    assert s.calls == 2 and s.score([SPACE.largest()]) == [large] and s.calls == 2


def test_kendall_tau():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


# ---------------------------------------------------------------------------- evolution
def test_evolution_respects_constraint_and_budget():
    s = EvolutionSettings(**SMALL)
    r = evolution_search(SPACE, ParamsScorer(SPACE), _lat(), CONSTRAINT, s)
    lat = _lat()
    assert r.evaluations == s.budget() == 20 + 6 * 15
    assert r.evaluated and all(lat(e.cfg) <= CONSTRAINT for e in r.evaluated)
    assert lat(r.best) <= CONSTRAINT and r.best_latency == pytest.approx(lat(r.best))
    assert all(SPACE.contains(e.cfg) for e in r.evaluated)
    assert len(r.rows) == s.iterations + 1 and list(r.rows[0]) == list(LOG_COLUMNS)
    best = [row["best_score"] for row in r.rows]
    assert best == sorted(best, reverse=True)  # elitist: never gets worse
    assert r.best_score == min(e.score for e in r.evaluated)  # final children scored too (HAT skips them)
    # the constraint binds: the unconstrained optimum (largest decoder) is slower than it
    assert lat(SPACE.largest()) > CONSTRAINT


def _toy(seed: int):
    target = features_full(SPACE.sample(random.Random(100 + seed)), SPACE)
    return lambda c: sum((a - b) ** 2 for a, b in zip(features_full(c, SPACE), target))


def test_evolution_beats_random_at_equal_budget():
    s = EvolutionSettings(population=20, parents=5, mutations=8, crossovers=7, iterations=10)
    evo, rnd = [], []
    for seed in range(5):
        s.seed = seed
        e = evolution_search(SPACE, FunctionScorer(_toy(seed)), _lat(), None, s)
        r = random_search(SPACE, FunctionScorer(_toy(seed)), _lat(), None, s)
        assert e.evaluations == r.evaluations == s.budget()
        evo.append(e.best_score)
        rnd.append(r.best_score)
    assert all(a < b for a, b in zip(evo, rnd)), (evo, rnd)
    assert sum(evo) < 0.5 * sum(rnd)


@pytest.mark.parametrize("algo", [evolution_search, random_search, pytest.param(nsga2_search, marks=needs_pymoo)])
def test_resume_after_interruption_gives_same_result(tmp_path, algo):
    s = EvolutionSettings(**SMALL)
    ref = algo(SPACE, ParamsScorer(SPACE), _lat(), CONSTRAINT, s)

    def stop_at_3(gen, run):
        if gen == 3:
            raise _Stop

    state = tmp_path / "state.json"
    with pytest.raises(_Stop):
        algo(SPACE, ParamsScorer(SPACE), _lat(), CONSTRAINT, s, state_path=state, on_generation=stop_at_3)
    assert json.loads(state.read_text())["generation"] == 3
    scorer = ParamsScorer(SPACE)
    res = algo(SPACE, scorer, _lat(), CONSTRAINT, s, state_path=state)
    assert res.best == ref.best and res.best_score == ref.best_score
    assert _strip(res.rows) == _strip(ref.rows)
    assert [e.cfg for e in res.evaluated] == [e.cfg for e in ref.evaluated]
    # generations 0..3 came from the state file, not recomputed
    assert scorer.calls < len(ref.evaluated)
    # a different setting refuses the old state with one line
    with pytest.raises(Exception, match="different settings"):
        algo(SPACE, ParamsScorer(SPACE), _lat(), CONSTRAINT + 1, s, state_path=state)


@pytest.mark.parametrize("algorithm", ["evolution", pytest.param("nsga2", marks=needs_pymoo)])
def test_resume_after_kill_in_subprocess(tmp_path, capsys, algorithm):
    """A real kill (SIGKILL mid-search) then `hat search` again reaches the uninterrupted result,
    going on from the generation the state file holds (NSGA-II's algorithm rebuilt from plain data)."""
    import subprocess
    import sys
    import time

    common = ["search", "--algorithm", algorithm, "--scorer", "params", "--space", "tiny", "--predictor", "macs",
              "--latency-constraint",
              str(CONSTRAINT), "--population", "20", "--parents", "5", "--mutations", "8", "--crossovers", "7",
              "--iterations", "60", "--no-progress", "--tensorboard-dir", "none"]
    ref_out = tmp_path / "ref" / "s.yml"
    assert main(common + ["--out", str(ref_out)]) == 0
    out = tmp_path / "k" / "s.yml"
    state = tmp_path / "k" / "s.state.json"
    p = subprocess.Popen([sys.executable, "-m", "hat.cli", *common, "--out", str(out)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while time.time() - t0 < 30:
        if state.is_file() and json.loads(state.read_text())["generation"] >= 3:
            break
        time.sleep(0.05)
    p.kill()
    p.wait()
    gen = json.loads(state.read_text())["generation"]
    assert 0 <= gen < 60 and not out.is_file()
    capsys.readouterr()
    assert main(common + ["--out", str(out)]) == 0
    assert f"resumed {state} after generation {gen} " in capsys.readouterr().err
    assert load_subconfig(out) == load_subconfig(ref_out)
    ref_rows = list(csv.DictReader(open(ref_out.with_suffix(".log.csv"))))
    rows = list(csv.DictReader(open(out.with_suffix(".log.csv"))))
    drop = lambda rs: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rs]  # noqa: E731
    assert drop(rows) == drop(ref_rows)


def test_no_feasible_config_reports_lowest_latency(tmp_path, capsys):
    with pytest.raises(NoFeasibleConfigError, match=r"lowest predicted latency is 4\.29\d* ms"):
        evolution_search(SPACE, ParamsScorer(SPACE), _lat(), 1.0, EvolutionSettings(**SMALL))
    rc = main(["search", "--scorer", "params", "--space", "tiny", "--predictor", "macs", "--latency-constraint", "1",
               "--out", str(tmp_path / "s.yml"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "no configuration" in err and "1 ms" in err and "4.29" in err


@needs_pymoo
def test_nsga2_returns_non_dominated_front():
    r = nsga2_search(SPACE, ParamsScorer(SPACE), _lat(), None, EvolutionSettings(**SMALL))
    pts = [(e.latency, e.score) for e in r.front]
    assert len(pts) >= 3
    assert not any(dominates(a, b) for a in pts for b in pts if a is not b)
    every = [(e.latency, e.score) for e in r.evaluated]
    assert all(not dominates(p, f) for p in every for f in pts)  # nothing evaluated dominates the front
    assert sorted(non_dominated(pts)) == list(range(len(pts)))
    # constrained: every front member meets it
    rc = nsga2_search(SPACE, ParamsScorer(SPACE), _lat(), CONSTRAINT, EvolutionSettings(**SMALL))
    assert rc.front and all(e.latency <= CONSTRAINT for e in rc.front) and rc.best_latency <= CONSTRAINT


def test_gene_codec_roundtrip():
    codec, rng = GeneCodec(SPACE), random.Random(3)
    for _ in range(50):
        c = SPACE.sample(rng)
        assert codec.decode(codec.encode(c)) == c


# ---------------------------------------------------------------------------- loss scorer
WORDS = {"haus": "house", "katze": "cat", "hund": "dog", "groß": "big", "klein": "small", "rot": "red",
         "das": "the", "ist": "is", "sehr": "very", "garten": "garden", "baum": "tree", "grün": "green"}


def _corpus(path: Path, n: int, seed: int) -> str:
    rng, keys = random.Random(seed), sorted(WORDS)
    de, en = [], []
    for _ in range(n):
        ws = [rng.choice(keys) for _ in range(rng.randint(3, 8))]
        de.append(" ".join(ws).capitalize() + ".")
        en.append(" ".join(WORDS[w] for w in ws).capitalize() + ".")
    path.with_suffix(".de").write_text("\n".join(de) + "\n", encoding="utf-8")
    path.with_suffix(".en").write_text("\n".join(en) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    """`hat prepare text` data + a random tiny SuperTransformer saved as a `hat train` checkpoint."""
    from hat.files import save_torch
    from hat.model.checkpoint import FORMAT, FORMAT_VERSION

    tmp = tmp_path_factory.mktemp("search")
    train, valid = _corpus(tmp / "train", 200, 0), _corpus(tmp / "valid", 40, 1)
    data = tmp / "data"
    assert main(["prepare", "text", "--src", "de", "--tgt", "en", "--trainpref", train, "--validpref", valid,
                 "--out", str(data), "--vocab-size", "80"]) == 0
    vocab = json.loads((data / "meta.json").read_text())["vocab_size"]
    torch.manual_seed(0)
    args = ModelArgs(src_vocab_size=vocab, tgt_vocab_size=vocab)
    model = SuperTransformer(SPACE, args)
    ckpt = tmp / "super.pt"
    save_torch({"format": FORMAT, "version": FORMAT_VERSION, "model": model.state_dict(),
                     "space": SPACE.to_dict(), "model_args": args.to_dict(), "update": 0, "config": {}}, [ckpt])
    return data, ckpt, model


def test_loss_scorer_caches_and_is_deterministic(tiny_setup):
    data, _, model = tiny_setup
    model.train()  # the scorer must switch to eval mode itself
    s = LossScorer(model, data, valid_sentences=16, max_tokens=200, seed=1)
    assert len(s.indices) == 16 and len(s.batches) >= 2  # batched
    a, b = SPACE.smallest(), SPACE.largest()
    la, lb, la2 = s.score([a, b, a])
    assert s.calls == 2 and la == la2 and la != lb and la > 0
    assert not model.training
    assert s.score([b, a]) == [lb, la] and s.calls == 2  # cached
    s2 = LossScorer(model, data, valid_sentences=16, max_tokens=10_000, seed=1)  # same subset, other batching
    assert s2.score([a])[0] == pytest.approx(la, rel=1e-5)
    s3 = LossScorer(model, data, valid_sentences=16, seed=2)
    assert s3.indices != s.indices  # the subset is seeded


def test_cli_end_to_end_loss_scorer(tiny_setup, tmp_path, capsys):
    data, ckpt, _ = tiny_setup
    out = tmp_path / "res" / "subnet.yml"
    rc = main(["search", "--checkpoint", str(ckpt), "--predictor", "macs", "--latency-constraint", str(CONSTRAINT),
               "--data", str(data), "--out", str(out), "--population", "8", "--parents", "2", "--mutations", "3",
               "--crossovers", "3", "--iterations", "2", "--valid-sentences", "8", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    cfg = load_subconfig(out)
    assert SPACE.contains(cfg) and macs(cfg, SPACE) / 1e9 * 100 <= CONSTRAINT
    assert load_subconfig(out.with_suffix(".hat.yml")) == cfg
    rows = list(csv.DictReader(open(out.with_suffix(".log.csv"))))
    assert [r["generation"] for r in rows] == ["0", "1", "2"] and list(rows[0]) == list(LOG_COLUMNS)
    front = list(csv.DictReader(open(tmp_path / "res" / "subnet.pareto.csv")))
    assert front and all(float(r["latency_ms"]) <= CONSTRAINT for r in front)
    assert (tmp_path / "res" / "subnet.pareto.png").stat().st_size > 1000
    assert any((tmp_path / "res" / "subnet.tb").iterdir())
    assert (tmp_path / "res" / "subnet.state.json").is_file()
    assert "best (evolution, loss scorer)" in capsys.readouterr().out


# ---------------------------------------------------------------------------- CLI errors
@pytest.mark.parametrize("extra, needle", [
    (["--checkpoint", "/nonexistent/super.pt", "--device", "cpu-2core", "--data", "."], "/nonexistent/super.pt"),
    (["--scorer", "params", "--space", "tiny", "--device", "no-such-device"], "no-such-device"),
    (["--scorer", "params", "--space", "no-such-space", "--predictor", "macs"], "no-such-space"),
    (["--scorer", "params", "--space", "tiny", "--predictor", "/nonexistent/p.pt"], "/nonexistent/p.pt"),
])
def test_cli_bad_input_one_line_exit_2(tmp_path, capsys, extra, needle):
    rc = main(["search", "--latency-constraint", "50", "--out", str(tmp_path / "s.yml"), "--no-progress", *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and needle in err, err


# ---------------------------------------------------------------------------- torchrun-style sharding
def _shard_worker(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    scorer = FunctionScorer(_toy(0))
    scorer.distributed = True
    r = evolution_search(SPACE, scorer, _lat(), CONSTRAINT, EvolutionSettings(**SMALL))
    Path(out, f"{rank}.json").write_text(json.dumps({"best": r.best.to_dict(), "score": r.best_score,
                                                     "calls": scorer.calls, "unique": len(r.evaluated)}))
    dist.destroy_process_group()


def test_scoring_sharded_over_two_gloo_processes(tmp_path):
    import torch.multiprocessing as mp

    ref = evolution_search(SPACE, FunctionScorer(_toy(0)), _lat(), CONSTRAINT, EvolutionSettings(**SMALL))
    mp.spawn(_shard_worker, args=(2, f"file://{tmp_path / 'rdzv'}", str(tmp_path)), nprocs=2, join=True)
    res = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2)]
    for r in res:
        assert r["best"] == ref.best.to_dict() and r["score"] == ref.best_score
    # each rank computed about half of the unique candidates
    assert res[0]["calls"] + res[1]["calls"] == res[0]["unique"] == len(ref.evaluated)
    assert res[0]["calls"] > 0 and res[1]["calls"] > 0


def test_cli_compute_cuda_without_gpu_refused(tiny_setup, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    data, ckpt, _ = tiny_setup
    rc = main(["search", "--checkpoint", str(ckpt), "--predictor", "macs", "--latency-constraint", str(CONSTRAINT),
               "--data", str(data), "--out", str(tmp_path / "s.yml"), "--compute", "cuda", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "no CUDA device" in err, err
