"""The demo's own logic: baselines, summary table and plot (the stages are the tested CLIs)."""
import json
import re

from hat.commands import demo
from hat.commands.demo import FULL, QUICK, QUICK_WARNING, Budget, md_cell, uniform_configs, write_summary
from hat.space import load_space


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


def test_summary_table_and_plot(tmp_path):
    rows = [
        {"model": "HAT search @ 40 ms", "params_M": 2.0, "predicted_ms": 39.0, "measured_ms": 41.0, "bleu": 12.3,
         "chrf": 35.0, "config": "a"},
        {"model": "largest subnet", "params_M": 5.5, "predicted_ms": 100.0, "measured_ms": 98.0, "bleu": 13.1,
         "chrf": None, "config": "b"},
    ]
    path = write_summary(tmp_path, rows, [40.0, 60.0], QUICK, {"train": 3.0}, 10.0)
    text = path.read_text()
    assert "| HAT search @ 40 ms | 2.00 | 39.0 | 41.0 | 12.30 | 35.0 | a |" in text
    assert "| largest subnet | 5.50 | 100.0 | 98.0 | 13.10 | - | b |" in text
    assert json.loads((tmp_path / "summary.json").read_text())["constraints"] == [40.0, 60.0]
    assert (tmp_path / "latency_vs_bleu.png").read_bytes()[:4] == b"\x89PNG"


def _cells(row: str) -> list[str]:
    """Cells of a Markdown table row (`\\|` is a literal bar inside a cell)."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", row.strip())[1:-1]]


def test_summary_is_valid_markdown_and_the_quick_one_warns(tmp_path):
    rows = [{"model": "HAT search @ 40 ms", "params_M": 2.0, "predicted_ms": 39.0, "measured_ms": 41.0, "bleu": 0.04,
             "chrf": 5.0, "config": "enc 2x192 ffn[768, 512] h[4, 4] | dec 1x256 ffn[768] h[2] eh[2] arb[2]"}]
    (tmp_path / "q").mkdir()
    (tmp_path / "f").mkdir()
    quick = write_summary(tmp_path / "q", rows, [40.0, 60.0], QUICK, {"train": 3.0}, 10.0).read_text()
    table = [line for line in quick.splitlines() if line.startswith("|")]
    assert len(table) == 3 and all(len(_cells(line)) == 7 for line in table)
    assert _cells(table[2])[6] == r"enc 2x192 ffn[768, 512] h[4, 4] \| dec 1x256 ffn[768] h[2] eh[2] arb[2]"
    assert QUICK_WARNING in quick and "make demo" in QUICK_WARNING and "not model quality" in QUICK_WARNING
    full = write_summary(tmp_path / "f", rows, [40.0, 60.0], FULL, {"train": 3.0}, 10.0).read_text()
    assert QUICK_WARNING not in full
    assert md_cell("a|b\nc") == r"a\|b c"


def test_quick_demo_runs_from_the_bundled_sample_without_downloads(tmp_path, monkeypatch):
    """`hat demo --quick` end to end (on budgets smaller still): the corpus comes from the package,
    Debian is never asked, only best/last checkpoints stay, and the summary warns."""
    import hat.data.sources as sources

    def no_download(*args, **kwargs):
        raise AssertionError("the quick demo must not download anything")

    monkeypatch.setattr(sources, "gather", no_download)
    tiny = Budget(train_updates=6, train_minutes=2, max_tokens=512, latency_samples=20, latency_runs=1,
                  search_population=4, search_parents=2, search_children=1, search_iterations=1, valid_sentences=16,
                  finetune_updates=3, test_sentences=8, beam=1)
    monkeypatch.setattr(demo, "QUICK", tiny)
    summary = demo.run_demo(tmp_path / "run", tmp_path / "data", quick=True)
    text = summary.read_text()
    assert QUICK_WARNING in text and "bundled sample" in text
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == 6 and all(len(_cells(line)) == 7 for line in table)
    assert json.loads((tmp_path / "data" / "meta.json").read_text())["corpus"] == "sample"
    kept = sorted(p.name for p in (tmp_path / "run").rglob("checkpoint*.pt"))
    assert kept and set(kept) == {"checkpoint_best.pt"}  # one per training stage, nothing per interval
    assert len(kept) == 5
