"""`hat demo --with-baselines` end to end on the bundled sample (tiny budgets): every baseline trained
alone from scratch gets the same recipe and the same budget B, B counts every stage the pipeline
spends per delivered model, and the summary's comparisons are those of the measured rows."""
import json
from pathlib import Path

import pytest
import yaml

from hat.commands import demo
from hat.commands.demo import Budget
from hat.commands.demo_classes import uniform_configs
from hat.commands.demo_report import BASES, compare
from hat.latency.predictors import load_predictor
from hat.model.checkpoint import load_checkpoint
from hat.space import describe, load_space, load_subconfig, load_subconfig_metadata

TINY = Budget(super_minutes=0.05, finetune_minutes=0.01, max_tokens=512, super_warmup=2, latency_samples=30,
              latency_runs=2, search_population=8, search_parents=2, search_children=3, search_iterations=2,
              valid_sentences=16, constraints=(0.5, 0.7), test_sentences=8, beam=1, rounds=1, max_updates=30,
              faster_by=0.0, select_candidates=2, select_minutes=0.01, select_rungs=1, select_keep=True)  # as QUICK
SCRATCH_KINDS = ("dedicated", "hand", "hand-max", "searched-scratch")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setattr(demo, "QUICK", TINY)
    tmp = tmp_path_factory.mktemp("demo-baselines")
    try:  # the default device's protocol: a shrunk one times models in ~3 ms, too noisy for the searches
        demo.run_demo(tmp / "run", tmp / "data", quick=True, baselines=True)
    finally:
        mp.undo()
    out = tmp / "run"
    return out, json.loads((out / "summary.json").read_text()), (out / "summary.md").read_text()


def test_every_baseline_from_scratch_has_the_same_recipe_and_budget_b(run):
    out, s, _ = run
    kinds = [r["kind"] for r in s["rows"]]
    same_hand = load_subconfig(out / "baselines" / "hand.yml") == load_subconfig(out / "baselines" / "hand-max.yml")
    want = [k for k in SCRATCH_KINDS if not (k == "hand-max" and same_hand)]
    assert sorted(k for k in kinds if k in SCRATCH_KINDS) == sorted(want)
    assert kinds.count("searched") == 2 and {"uniform", "largest"} <= set(kinds)
    cfgs = {k: yaml.safe_load((out / "scratch" / k / "config.yaml").read_text()) for k in want}
    recipe = dict(x.split("=") for x in demo.SCRATCH)
    for k, c in cfgs.items():  # the demo's recipe, as trained
        assert {key: c[key] for key in recipe} == {key: yaml.safe_load(v) for key, v in recipe.items()}, k
        assert c["budget_minutes"] == pytest.approx(s["budget"]["per_model_s"] / 60, abs=1e-4), k
        assert c["sampling"]["subnet"] and c["init_from"] is None
    strip = [{k: v for k, v in c.items() if k not in ("save_dir", "sampling")} for c in cfgs.values()]
    assert all(c == strip[0] for c in strip)  # and nothing else differs but the architecture and the folder
    assert s["recipes"]["from scratch"] == " ".join(demo.SCRATCH)
    rows = {r["kind"]: r for r in s["rows"] if r["kind"] in SCRATCH_KINDS}
    assert all(r["budget_s"] == s["budget"]["per_model_s"] for r in rows.values())


def test_b_counts_every_stage_spent_per_delivered_model(run):
    out, s, text = run
    b, led = s["budget"], json.loads((out / "ledger.json").read_text())
    assert b["latency_s"] == pytest.approx(led["seconds"]["latency"]) and b["latency_s"] > 0
    assert b["search_s"] == pytest.approx(led["seconds"]["search"])
    assert b["super_s"] == pytest.approx(led["runs"]["super"]["seconds"])
    searched = [r for r in s["rows"] if r["kind"] == "searched"]
    once = {r["model_path"]: r for r in searched}.values()  # a class delivering a tighter class's model counts once
    # each searched model is its selection's kept fine-tune: timed with the search, not counted twice
    assert all(r["kept"] for r in searched) and b["finetune_s"] == 0
    assert b["search_s"] > sum(r["train_s"] for r in once)
    assert b["n_constraints"] == len(searched) == 2
    assert b["per_model_s"] == pytest.approx((b["super_s"] + b["latency_s"] + b["search_s"] + b["finetune_s"]) / 2)
    assert f"latency measurement and predictor {b['latency_s']:.0f} s" in text
    assert f"= **{b['per_model_s']:.0f} s**" in text


def test_comparison_lines_are_those_of_the_measured_rows(run):
    _, s, text = run
    bases = {r["kind"]: r for r in s["rows"] if r["kind"] in BASES}
    assert set(bases) >= {"dedicated", "hand"}
    for r in (r for r in s["rows"] if r["kind"] == "searched"):
        uniform = next(u for u in s["rows"] if u["kind"] == "uniform" and u["constraint"] == r["constraint"])
        # a p-value against every baseline and the class's uniform row
        assert set(r["p_vs"]) == {b["name"] for b in bases.values()} | {uniform["name"]}
        scratch = next(x for x in s["rows"] if x["kind"] == "searched-scratch")
        line = next(ln for ln in text.splitlines() if ln.startswith(f"- {r['name']}: vs "))
        assert line.startswith(f"- {r['name']}: vs {uniform['name']}: {compare(r, uniform)}; vs ")
        for k, base in bases.items():
            assert f"vs {k}: {compare(r, base)}" in line
        if scratch["config"] == r["config"]:
            assert f"vs its own architecture from scratch: BLEU {r['bleu'] - scratch['bleu']:+.2f}" in line
    assert "Recipes (on top of the tiny-cpu training recipe): fine-tuning: `" in text


def test_params_say_what_they_count(run):
    _, s, text = run
    assert "Params: HAT's count (without the embeddings and the output projection) / every parameter" in text
    for r in s["rows"]:  # the shared 8k-symbol embedding alone is over 1.5 M parameters at width 192
        assert r["total_params_M"] > r["params_M"] + 1.5
        assert f"| {r['params_M']:.2f} / {r['total_params_M']:.2f} |" in text


def test_every_class_has_its_uniform_row_through_the_same_pipeline(run):
    out, s, _ = run
    space = load_space("tiny")
    pred = load_predictor(out / "latency.pt", space)
    searched = {r["constraint"]: r for r in s["rows"] if r["kind"] == "searched"}
    uniform = [r for r in s["rows"] if r["kind"] == "uniform"]
    assert sorted(u["constraint"] for u in uniform) == sorted(searched)
    designs = uniform_configs(space)
    preds = [float(p) for p in pred.predict(designs)]
    by_name = {describe(c): p for c, p in zip(designs, preds)}
    for u in uniform:
        assert u["config"] in by_name  # a uniformly scaled design
        assert u["constraint_ms"] == searched[u["constraint"]]["constraint_ms"]
        under = [p for p in preds if p <= u["constraint_ms"]]
        if under:  # the one predicted closest under its class's limit
            assert by_name[u["config"]] == pytest.approx(max(under))
        assert u["training"].startswith("inherited + fine-tuned")


def test_a_looser_search_chooses_among_its_finalists_and_the_tighter_picks(run):
    out, s, text = run
    searched = sorted((r for r in s["rows"] if r["kind"] == "searched"), key=lambda r: r["constraint_ms"])
    subnets = sorted(out.glob("search-*/subnet.yml"))
    metas = {p: load_subconfig_metadata(p)["selection"] for p in subnets}
    tight = next(p for p, m in metas.items() if not m["included"])
    loose = next(p for p, m in metas.items() if m["included"])
    assert metas[loose]["included"] == [str(tight)] and metas[loose]["finalists"] >= 2
    assert metas[tight]["rule"].startswith("successive halving")
    assert loose.with_suffix(".select.csv").is_file() and list((out / "select").glob("r0-*/result.json"))
    twin = load_subconfig(loose) == load_subconfig(tight)
    assert (metas[loose]["from_include"] == str(tight)) == twin
    assert (searched[1].get("same_as") == searched[0]["name"]) == twin
    assert "Fronts (BLEU by latency class, tightest first" in text
    for r, p in zip(searched, sorted(subnets, key=lambda p: load_subconfig_metadata(p)["latency"]["constraint_ms"])):
        kept = metas[p]["kept"]  # the delivered model is the selection's fine-tune of the pick
        assert kept["minutes"] == TINY.select_minutes and load_subconfig(p) == load_subconfig(Path(kept["dir"]) / "subnet.yml")
        if not r.get("same_as"):
            assert r["updates"] == load_checkpoint(Path(kept["dir"]) / "checkpoint_last.pt")["update"]
