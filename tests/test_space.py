"""Design space: validation, sampling/evolution operators, YAML io (ours and HAT's), sizes."""
import random
from pathlib import Path

import pytest
import yaml

from hat.cli import main
from hat.errors import ConfigError
from hat.space import (
    HAT_FEATURE_NORM,
    SubConfig,
    available_spaces,
    features_full,
    features_hat,
    load_space,
    load_subconfig,
    macs,
    num_params,
    save_subconfig,
)

PI_YAML = Path(__file__).resolve().parents[1] / "hat" / "configs" / "subnets" / "hat_raspberrypi_3.5s.yml"


def test_shipped_spaces_load_and_have_hat_numbers():
    names = available_spaces()
    for required in ("wmt14.en-de", "wmt14.en-fr", "wmt19.en-de", "iwslt14.de-en", "wmt-latency", "tiny"):
        assert required in names
    wmt = load_space("wmt14.en-de")
    assert (wmt.super_encoder_embed_dim, wmt.super_encoder_ffn_embed_dim, wmt.qkv_dim) == (640, 3072, 512)
    assert wmt.choices["encoder_ffn_embed_dim"] == (3072, 2048, 1024)
    assert wmt.choices["decoder_layer_num"] == (1, 2, 3, 4, 5, 6)
    iw = load_space("iwslt14.de-en")
    assert iw.choices["encoder_self_attention_heads"] == (4, 2)
    lat = load_space("wmt-latency")
    assert lat.choices["encoder_ffn_embed_dim"] == (3072, 2048, 1024, 512)
    assert lat.choices["encoder_self_attention_heads"] == (8, 4, 2)


def test_hat_pi_model_has_25_22M_params():
    cfg = load_subconfig(PI_YAML)
    space = load_space("wmt14.en-de")
    space.validate(cfg)
    assert cfg.decoder_layer_num == 1 and len(cfg.decoder_ffn_embed_dim) == 1  # HAT lists truncated to depth
    assert round(num_params(cfg, space) / 1e6, 2) == 25.22


def test_params_match_torch_module_count():
    """num_params agrees with the parameters a built SubTransformer really has (minus embeddings)."""
    from hat.model import ModelArgs, SuperTransformer, extract

    space = load_space("tiny")
    model = SuperTransformer(space, ModelArgs(50, 50))
    r = random.Random(0)
    for _ in range(5):
        cfg = space.sample(r)
        sub = extract(model, cfg)
        n = sum(p.numel() for name, p in sub.named_parameters() if "embed_tokens" not in name)
        assert n == num_params(cfg, space)


@pytest.mark.parametrize("name", ["wmt14.en-de", "iwslt14.de-en", "tiny", "wmt-latency"])
def test_sample_mutate_crossover_stay_valid(name):
    space = load_space(name)
    r = random.Random(7)
    pop = [space.sample(r) for _ in range(30)]
    for cfg in pop:
        space.validate(cfg)
    for _ in range(200):
        a, b = r.sample(pop, 2)
        space.validate(space.mutate(a, 0.3, r))
        space.validate(space.crossover(a, b, r))
    space.validate(space.largest())
    space.validate(space.smallest())
    assert num_params(space.largest(), space) > num_params(space.smallest(), space)


def test_mutation_probability_controls_change(rng):
    space = load_space("wmt14.en-de")
    cfg = space.sample(rng)
    assert space.mutate(cfg, 0.0, rng) == cfg
    changed = sum(space.mutate(cfg, 1.0, rng) != cfg for _ in range(20))
    assert changed >= 18


def test_crossover_takes_genes_from_parents(rng):
    space = load_space("wmt14.en-de")
    a, b = space.largest(), space.smallest()
    for _ in range(50):
        c = space.crossover(a, b, rng)
        assert c.encoder_embed_dim in (640, 512)
        assert set(c.encoder_ffn_embed_dim) <= {3072, 1024}


def test_validate_names_field_value_and_choices():
    space = load_space("wmt14.en-de")
    bad = space.largest().to_dict()
    bad["encoder_ffn_embed_dim"][2] = 999
    with pytest.raises(ConfigError, match=r"encoder_ffn_embed_dim\[2\]=999.*3072, 2048, 1024"):
        space.validate(SubConfig.from_dict(bad))


def test_yaml_roundtrip_ours_and_hat(tmp_path, rng):
    space = load_space("wmt14.en-de")
    for _ in range(10):
        cfg = space.sample(rng)
        save_subconfig(cfg, tmp_path / "a.yml")
        assert load_subconfig(tmp_path / "a.yml") == cfg
        save_subconfig(cfg, tmp_path / "b.yml", hat_format=True, space=space)
        raw = yaml.safe_load((tmp_path / "b.yml").read_text())
        assert len(raw["decoder-ffn-embed-dim-all-subtransformer"]) == 6  # padded like HAT writes
        assert load_subconfig(tmp_path / "b.yml") == cfg


def test_hat_yaml_list_shorter_than_depth_refused(tmp_path):
    d = yaml.safe_load(PI_YAML.read_text())
    d["encoder-ffn-embed-dim-all-subtransformer"] = [1024, 2048]
    (tmp_path / "c.yml").write_text(yaml.safe_dump(d))
    with pytest.raises(ConfigError, match="c.yml.*encoder_ffn_embed_dim has 2 entries"):
        load_subconfig(tmp_path / "c.yml")


def test_features_hat_match_hat_normalisation():
    cfg = load_subconfig(PI_YAML)
    f = features_hat(cfg)
    assert len(f) == 10
    raw = [a * n for a, n in zip(f, HAT_FEATURE_NORM)]
    assert raw[0] == 512 and raw[1] == 6 and raw[5] == 1
    assert raw[2] == pytest.approx((1024 + 3072 * 2 + 2048 * 3) / 6)
    assert raw[9] == 1  # arbitrary -1 maps to 1


def test_features_full_fixed_length_and_bounded(rng):
    space = load_space("wmt14.en-de")
    lens = {len(features_full(space.sample(rng), space)) for _ in range(20)}
    assert lens == {4 + 6 * 2 + 6 * 4}
    for _ in range(20):
        assert all(0.0 <= x <= 1.0 for x in features_full(space.sample(rng), space))


def test_macs_grow_with_length_and_size():
    space = load_space("wmt14.en-de")
    big, small = space.largest(), space.smallest()
    assert macs(big, space) > macs(small, space)
    assert macs(big, space, src_len=60, tgt_len=60) > macs(big, space)
    assert macs(big, space, vocab_size=32000) > macs(big, space)


# ---- CLI: hat info ----------------------------------------------------------------
def test_info_json(capsys):
    import json

    assert main(["info", str(PI_YAML), "--space", "wmt14.en-de", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params"] == 25217536 and isinstance(out["macs"], int) and out["macs"] > 0


@pytest.mark.parametrize(
    "content,message",
    [
        ("encoder_embed_dim: [1, 2\n", "malformed YAML"),
        ("- 1\n- 2\n", "expected a mapping"),
        (None, "unknown key"),
        (None, "is not in space"),
    ],
)
def test_info_bad_input_one_line_exit_2(tmp_path, capsys, content, message):
    path = tmp_path / "bad.yml"
    if content is None:
        d = load_space("wmt14.en-de").largest().to_dict()
        if message == "unknown key":
            d["encoder_ffn_size"] = 3
        else:
            d["decoder_embed_dim"] = 333
        content = yaml.safe_dump(d)
    path.write_text(content)
    assert main(["info", str(path), "--space", "wmt14.en-de"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.yml" in err and message in err


def test_info_unknown_space(capsys):
    assert main(["info", str(PI_YAML), "--space", "nope"]) == 2
    assert "unknown design space" in capsys.readouterr().err
