"""The demo's own logic: baselines, summary table and plot (the stages are the tested CLIs)."""
import json

from hat.commands.demo import QUICK, uniform_configs, write_summary
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
