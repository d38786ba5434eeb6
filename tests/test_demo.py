"""The demo's own logic: baselines, budget ledger, summary table and plot (the stages are the tested CLIs)."""
import json

import pytest

from hat.commands import demo
from hat.commands.demo import Budget, Ledger
from hat.commands.demo_classes import LatencyClass
from hat.commands.demo_evaluate import measured_fields, pool_references
from hat.commands.demo_classes import HAND_BAND, hand_design, latency_classes, latency_constraints, uniform_configs
from hat.commands.demo_report import QUICK_WARNING, compare, write_summary
from hat.latency.compare import Spread, measure_interleaved
from hat.space import load_space, num_params


def test_uniform_baselines_are_valid_and_uniform():
    space = load_space("tiny")
    cands = uniform_configs(space)
    big = space.largest()
    assert any(c.encoder_ffn_embed_dim == big.encoder_ffn_embed_dim and c.decoder_layer_num == big.decoder_layer_num
               and c.encoder_embed_dim == big.encoder_embed_dim for c in cands)
    assert len(cands) == len(set(cands)) > 10
    for cfg in cands:
        space.validate(cfg)
        assert len(set(cfg.encoder_ffn_embed_dim + cfg.decoder_ffn_embed_dim)) == 1
        assert cfg.encoder_embed_dim == cfg.decoder_embed_dim


class ParamsPredictor:
    """A stand-in predictor: latency proportional to decoder depth x width."""

    def predict(self, cfgs):
        return [10.0 * c.decoder_layer_num * c.decoder_embed_dim / 256 + c.encoder_layer_num for c in cfgs]


def test_hand_design_spends_the_class_and_trains_fastest_and_the_earlier_rule_takes_the_most_params():
    space = load_space("tiny")
    pred = ParamsPredictor()
    lat = {c: pred.predict([c])[0] for c in uniform_configs(space)}
    # latencies: dec 1x192 9.5/10.5 (enc 2/3), dec 1x256 12/13, dec 2x192 17/18, dec 2x256 22/23: at 13 the
    # band 12.35-13 holds dec 1x256 enc 3; at 16 the band 15.2-16 is empty (the slowest under it, 13, is taken)
    for limit in (13.0, 16.0, 23.0):
        pick, most = hand_design(space, pred, limit), hand_design(space, pred, limit, rule="most")
        band = [c for c, p in lat.items() if HAND_BAND * limit <= p <= limit]
        under = [c for c, p in lat.items() if p <= limit]
        assert lat[pick] <= limit and lat[most] <= limit
        if band:  # the fewest parameters of the band, never one below it
            assert pick in band and num_params(pick, space) == min(num_params(c, space) for c in band)
        else:
            assert lat[pick] == max(lat[c] for c in under)
        assert num_params(most, space) == max(num_params(c, space) for c in under)
    # at 23 the band (dec 2x256) has ffn-512 designs far lighter than the most-params one, so the rules differ
    assert hand_design(space, pred, 23.0) != hand_design(space, pred, 23.0, rule="most")
    fastest = hand_design(space, pred, 0.5)  # nothing meets it: the fastest uniform config
    assert pred.predict([fastest])[0] == min(pred.predict(uniform_configs(space)))
    with pytest.raises(ValueError):
        hand_design(space, pred, 16.0, rule="median")


def test_constraints_are_shares_of_the_largest_unless_one_falls_below_the_smallest():
    cs, rule = latency_constraints((0.45, 0.55, 0.67), 200.0, 60.0)
    assert cs == [90.0, 110.0, 134.0] and "of the largest subnet's predicted 200.0 ms" in rule
    # a noisy predictor: half the largest (88.5) is below the smallest (93.9), which no search can meet
    cs, rule = latency_constraints((0.5, 0.7), 177.0, 93.9)
    assert cs == [135.4, 152.1] and "from the smallest subnet's predicted 93.9 ms" in rule
    assert all(c > 93.9 for c in cs) and cs == sorted(set(cs))
    # the smallest at 0.42x the largest: the tightest is raised to leave room below a hand design
    cs, rule = latency_constraints((0.45, 0.52), 82.4, 34.2, room=1.12)
    assert cs == [38.3, 42.8] and "the tightest raised to 1.12x the smallest subnet's predicted 34.2 ms" in rule
    assert latency_constraints((0.45, 0.52), 82.4, 30.0, room=1.12)[0] == [37.1, 42.8]  # room enough already


def test_classes_are_shares_of_a_reference_and_the_tightest_is_hand_when_there_is_room():
    ks = latency_classes([38.3, 42.8, 48.6], 82.4, hand_ms=40.0, low=34.2, faster_by=0.05)
    assert [(k.reference, k.share) for k in ks] == [("hand", 0.95), ("largest", 0.5194), ("largest", 0.5898)]
    assert [k.slug for k in ks] == ["search-faster-than-hand", "search-0.52x-largest", "search-0.59x-largest"]
    assert ks[1].label == "0.52 x largest"
    # 0.95 x hand (34.2 ms) is not above the fastest subnet: every class is a share of the largest
    ks = latency_classes([38.3, 42.8], 82.4, hand_ms=36.0, low=34.2, faster_by=0.05)
    assert [k.reference for k in ks] == ["largest", "largest"] and ks[0].share == round(38.3 / 82.4, 4)


def test_classes_search_inside_their_share_and_the_margin_can_leave_no_room_for_hand():
    ks = latency_classes([38.3, 42.8], 82.4, hand_ms=40.0, low=34.2, faster_by=0.05, margin=0.03)
    assert [k.share for k in ks] == [0.95, 0.5194] and [k.search_share for k in ks] == [0.9215, 0.5038]
    assert ks[1].label == "0.52 x largest"  # the class is its share; the margin is the search's
    # 0.95 x 37.5 = 35.6 ms clears 1.02 x 34.2 = 34.9 ms, 0.9215 x 37.5 = 34.6 ms does not
    assert latency_classes([38.3, 42.8], 82.4, hand_ms=37.5, low=34.2, faster_by=0.05)[0].reference == "hand"
    assert latency_classes([38.3, 42.8], 82.4, hand_ms=37.5, low=34.2, faster_by=0.05,
                           margin=0.03)[0].reference == "largest"


def test_references_are_pooled_over_every_row_of_their_architecture():
    space = load_space("tiny")
    big, small = space.largest(), space.smallest()
    lat = {"largest": {"median": 93.5, "low": 93.5, "high": 93.6, "rounds": [93.5, 93.6, 93.5]},
           "dedicated": {"median": 93.5, "low": 93.0, "high": 94.7, "rounds": [93.0, 94.7, 93.5]},
           "searched": {"median": 48.0, "low": 47.1, "high": 48.6, "rounds": [47.1, 48.6, 48.0]},
           "reference: largest": {"median": 91.9, "low": 91.5, "high": 93.9, "rounds": [91.5, 91.9, 93.9]}}
    configs = {"largest": big, "dedicated": big, "searched": small, "reference: largest": big}
    pooled = pool_references(lat, configs)
    assert pooled["reference: largest"]["rounds"] == [93.5, 93.6, 93.5, 93.0, 94.7, 93.5, 91.5, 91.9, 93.9]
    assert pooled["reference: largest"]["median"] == 93.5 and pooled["reference: largest"]["low"] == 91.5
    assert pooled["searched"] == lat["searched"] and pooled["dedicated"] == lat["dedicated"]


def test_a_row_is_within_its_limit_only_when_its_median_is_at_most_share_x_the_pooled_reference():
    small, big = load_space("tiny").smallest(), load_space("tiny").largest()
    lat = {"a": {"median": 45.0, "low": 44.0, "high": 46.0, "rounds": [44.0, 45.0, 46.0]},
           "b": {"median": 45.5, "low": 44.0, "high": 46.0, "rounds": [44.0, 45.5, 46.0]},
           "largest": {"median": 91.0, "low": 90.0, "high": 91.0, "rounds": [90.0, 91.0, 91.0]},
           "reference: largest": {"median": 89.0, "low": 88.0, "high": 90.0, "rounds": [88.0, 89.0, 90.0]}}
    lat = pool_references(lat, {"a": small, "b": small, "largest": big, "reference: largest": big})
    k = LatencyClass("largest", 0.5, margin=0.03)  # pooled median 90.0: the limit is 45.0 ms
    a, b = measured_fields(lat, "a", k), measured_fields(lat, "b", k)
    assert a["limit_ms"] == b["limit_ms"] == pytest.approx(45.0)  # not 0.5 x 89.0, the reference's own median
    assert a["within_limit"] and not b["within_limit"]  # 45.0 is within, 45.5 is not
    assert a["ratio_to_reference"] == pytest.approx(0.5) and a["search_share"] == pytest.approx(0.485)
    assert a["measured_ms"] == 45.0 and a["measured_rounds"] == [44.0, 45.0, 46.0]
    assert "limit_ms" not in measured_fields(lat, "a")  # a baseline has no limit


def test_summary_checks_each_searched_row_against_its_share_of_the_reference(tmp_path):
    rows = [_row("searched, 0.45 x largest", "searched", 41.0, 40.0, 42.0, 12.0, constraint_ms=37.0,
                 constraint="0.45 x largest", limit_ms=40.5, within_limit=False, ratio_to_reference=41.0 / 90.0),
            _row("searched, 0.95 x hand", "searched", 33.0, 32.0, 34.0, 11.0, constraint_ms=36.0,
                 constraint="0.95 x hand", limit_ms=34.2, within_limit=True, ratio_to_reference=33.0 / 36.0,
                 share=0.95, search_share=0.9215)]
    meta = {"budget": {"super_s": 1.0, "search_s": 1.0, "finetune_s": 1.0, "n_constraints": 2, "per_model_s": 1.5},
            "constraints": [36.0, 37.0], "rounds": 3, "test_sentences": 10, "beam": 1, "timings": {}, "wall_s": 3.0,
            "references": {"largest": {"median": 90.0, "low": 88.0, "high": 91.0, "rounds": [88.0, 90.0, 91.0]},
                           "hand": {"median": 36.0, "low": 35.5, "high": 36.5, "rounds": [35.5, 36.0, 36.5]}}}
    text = write_summary(tmp_path, rows, meta).read_text()
    assert "1 of 2 searched subnets measured within their share of the reference" in text
    assert "reference largest 90.0 ms [88.0-91.0]" in text
    assert "- searched, 0.45 x largest: 41.0 ms = 0.456 x the reference, limit 40.5 ms -> MISSED\n" in text
    assert "limit 34.2 ms -> met (searched at 0.9215)" in text
    assert "| 0.95 x hand = 34.2 ms, met |" in text and "| 0.45 x largest = 40.5 ms, **missed** |" in text


def test_spread_round_trips_through_its_dict():
    s = Spread.of([12.0, 10.0, 11.0])
    assert Spread.from_dict(json.loads(json.dumps(s.to_dict()))) == s


def test_interleaved_rounds_alternate_models_and_spreads_decide_wins():
    calls = []
    ms = {"a": iter([10, 12, 11]), "b": iter([20, 19, 30])}

    def measure(cfg):
        calls.append(cfg)
        return {"latency_mean_encoder": 0.0, "latency_mean_decoder": next(ms[cfg])}

    s = measure_interleaved(measure, {"a": "a", "b": "b"}, rounds=3)
    assert calls == ["a", "b"] * 3  # A B, A B, A B: never all of A first
    assert s["a"] == Spread(11, 10, 12, (10, 12, 11)) and s["b"].median == 20
    assert s["a"].faster_than(s["b"]) and not s["b"].faster_than(s["a"])
    overlapping = Spread(11.5, 9, 25, (9, 11.5, 25))
    assert not overlapping.faster_than(s["b"]) and not s["b"].faster_than(overlapping)
    with pytest.raises(ValueError):
        measure_interleaved(measure, {"a": "a"}, rounds=0)


def _row(name, kind, ms, low, high, bleu, **kw):
    return {"name": name, "kind": kind, "config": f"cfg {name} | x", "params_M": 2.0, "measured_ms": ms,
            "measured_low_ms": low, "measured_high_ms": high, "bleu": bleu, "chrf": 40.0, "training": "t", **kw}


def test_comparisons_claim_a_win_only_beyond_the_spread():
    base = _row("dedicated", "dedicated", 100, 95, 105, 20.0)
    assert "beats it on both axes" in compare(_row("s", "searched", 50, 48, 52, 20.5), base)
    tie = compare(_row("s", "searched", 98, 90, 110, 21.0), base)
    assert "same speed within the spread" in tie and "beats" not in tie
    assert "loses on both axes" in compare(_row("s", "searched", 120, 110, 130, 19.0), base)
    assert "p=0.010 significant" in compare(_row("s", "searched", 50, 48, 52, 21, p_vs={"dedicated": 0.01}), base)
    # the floor of sacrebleu's 1,000-sample bootstrap, 1/1001, is a bound: printed as one
    floor = compare(_row("s", "searched", 50, 48, 52, 21, p_vs={"dedicated": 1 / 1001}), base)
    assert "p<0.001 significant" in floor and "p=0.001" not in floor
    assert "p=0.002" in compare(_row("s", "searched", 50, 48, 52, 21, p_vs={"dedicated": 2 / 1001}), base)


def test_summary_table_json_and_plot(tmp_path):
    rows = [
        _row("searched @ 40 ms", "searched", 41.0, 39.0, 44.0, 12.3, constraint_ms=40.0, p_vs={"dedicated": 0.2},
             bleu_by_origin={"ddtp": 10.0, "ding": 5.5}),
        _row("dedicated", "dedicated", 98.0, 95.0, 101.0, 13.1, chrf=None, bleu_by_origin={"ddtp": 11.0}),
    ]
    meta = {"budget": {"super_s": 600.0, "search_s": 60.0, "finetune_s": 120.0, "n_constraints": 2, "per_model_s": 390.0},
            "stages": [{"name": "super", "updates": 800, "tokens": 1_500_000, "seconds": 600.0, "stopped_by_budget": True}],
            "constraints": [40.0, 60.0], "rounds": 3, "test_sentences": 100, "beam": 4, "timings": {"super": 600.0},
            "wall_s": 900.0, "quick": True}
    path = write_summary(tmp_path, rows, meta)
    text, by_origin = path.read_text().split("BLEU by origin")
    assert "| searched | searched @ 40 ms | 10.00 | 5.50 |" in by_origin and "| dedicated | dedicated | 11.00 | - |" in by_origin
    assert "Quick budget" in text and "**390 s**" in text and "stopped by its wall-clock budget" in text
    table = [ln for ln in text.splitlines() if ln.startswith("| searched")]
    assert table == ["| searched | searched @ 40 ms | 2.00 | 40 ms | 41.0 ms [39.0-44.0] | 12.30 | 40.0 | t | cfg "
                     "searched @ 40 ms \\| x |"]
    # every table row has as many cells as the header (escaped pipes inside cells)
    header = next(ln for ln in text.splitlines() if ln.startswith("| kind"))
    cells = lambda ln: len(ln.replace("\\|", "").split("|"))  # noqa: E731
    assert all(cells(ln) == cells(header) for ln in text.splitlines() if ln.startswith("| searched") or ln.startswith("| dedicated"))
    assert "vs dedicated: 0.42x its latency (faster), BLEU -0.80, p=0.200 not significant" in text
    assert "Stage wall times (s): super 600; total 600 (this invocation 900;" in by_origin  # the last line
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["constraints"] == [40.0, 60.0] and saved["rows"][0]["kind"] == "searched"
    assert (tmp_path / "latency_vs_bleu.png").read_bytes()[:4] == b"\x89PNG"


def test_ledger_survives_a_restart(tmp_path):
    led = Ledger(tmp_path / "ledger.json")
    led.add_time("search", 2.5)
    led.add_time("search", 1.5)
    assert Ledger(tmp_path / "ledger.json").seconds("search") == 4.0


def test_only_the_quick_summary_warns_and_it_points_at_the_real_demo(tmp_path):
    rows = [_row("searched @ 40 ms", "searched", 41.0, 39.0, 44.0, 0.04, constraint_ms=40.0)]
    meta = {"budget": {"super_s": 45.0, "search_s": 6.0, "finetune_s": 24.0, "n_constraints": 2, "per_model_s": 37.5},
            "constraints": [40.0, 60.0], "rounds": 2, "test_sentences": 100, "beam": 1, "timings": {}, "wall_s": 120.0}
    (tmp_path / "q").mkdir()
    (tmp_path / "f").mkdir()
    quick = write_summary(tmp_path / "q", rows, {**meta, "quick": True, "corpus": demo.CORPORA["sample"]}).read_text()
    assert "not model quality" in QUICK_WARNING and "`make demo`" in QUICK_WARNING
    assert [ln for ln in quick.splitlines() if "not model quality" in ln] == [QUICK_WARNING]
    assert quick.startswith("# hat demo: tiny SuperTransformer on the bundled sample")
    full = write_summary(tmp_path / "f", rows, {**meta, "quick": False}).read_text()
    assert QUICK_WARNING not in full and "Debian de-en" in full.splitlines()[0]


def test_quick_defaults_to_the_bundled_sample_and_the_full_demo_to_debian(monkeypatch):
    from hat.cli import build_parser

    calls = []
    monkeypatch.setattr(demo, "run_demo", lambda out, data, **kw: calls.append((out, data, kw["quick"])))
    for argv in (["demo", "--quick"], ["demo"]):
        args = build_parser().parse_args(argv)
        args.func(args)
    assert calls == [("runs/demo-quick", "data/sample.de-en", True), ("runs/demo", "data/debian.de-en", False)]


def test_quick_demo_runs_from_the_bundled_sample_without_downloads(tmp_path, monkeypatch, capsys):
    """`hat demo --quick` end to end (on budgets smaller still): the corpus comes from the package,
    Debian is never asked, each training stage keeps one checkpoint, and the summary warns."""
    import hat.data.sources as sources

    def no_download(*args, **kwargs):
        raise AssertionError("the quick demo must not download anything")

    monkeypatch.setattr(sources, "gather", no_download)
    # enough latency rows and candidates that `--verify`'s bias correction has candidates left to time
    tiny = Budget(super_minutes=0.05, finetune_minutes=0.01, max_tokens=512, super_warmup=2, latency_samples=30,
                  latency_runs=2, search_population=8, search_parents=2, search_children=3, search_iterations=2,
                  valid_sentences=16, constraints=(0.5, 0.7), test_sentences=8, beam=1, rounds=1, max_updates=30,
                  faster_by=0.0)
    monkeypatch.setattr(demo, "QUICK", tiny)
    summary = demo.run_demo(tmp_path / "run", tmp_path / "data", quick=True)
    text = summary.read_text()
    assert QUICK_WARNING in text and "bundled sample" in text.splitlines()[0]
    rows = json.loads((tmp_path / "run" / "summary.json").read_text())["rows"]
    assert [r["kind"] for r in rows] == ["searched", "searched"]  # `uniform` comes with --with-baselines
    refs = json.loads((tmp_path / "run" / "summary.json").read_text())["references"]
    assert set(refs) == {"largest", "hand"}
    for r in rows:  # each checked against its share of a reference timed in the same rounds
        assert r["constraint"] == f"{r['share']:.2f} x {r['reference']}"
        assert r["limit_ms"] == pytest.approx(r["share"] * refs[r["reference"]]["median"])
        assert r["within_limit"] == (r["measured_ms"] <= r["limit_ms"])
        assert r["search_share"] == r["share"]  # no search margin in a budget that sets none
    assert "searched at" not in text and "searches hold" not in text
    assert all(f"| {r['kind']} | {r['name']} |" in text for r in rows)
    assert json.loads((tmp_path / "data" / "meta.json").read_text())["corpus"] == "sample"
    kept = sorted(p.relative_to(tmp_path / "run").as_posix() for p in (tmp_path / "run").rglob("checkpoint*.pt"))
    assert len(kept) == 3 and all(k.endswith("/checkpoint_last.pt") for k in kept)  # one per training stage
