"""Decoder-only LMs: the space and its configs, the cost model, SuperLM / extraction / cached
decoding, next-token blocks, perplexity and `hat info`."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from hat.cli import main
from hat.data import IndexedDataset, LMBlocks, load_data, token_stream
from hat.errors import ConfigError, DataError, HatError
from hat.model import LMArgs, StandaloneLM, SuperLM, extract_lm, perplexity
from hat.space import (LMConfig, LMSpace, lm_decoder_params, lm_macs, lm_params, load_any_space, load_lm_config,
                       load_lm_space, load_space, load_subconfig, load_subconfig_metadata, save_lm_config,
                       save_lm_space)

ROOT = Path(__file__).resolve().parents[1]
PI_YAML = ROOT / "hat" / "configs" / "subnets" / "hat_raspberrypi_3.5s.yml"
TINY = {"version": 1, "task": "lm", "name": "micro-lm", "vocab_size": 40, "max_positions": 24,
        "choices": {"layer_num": [1, 2, 3], "embed_dim": [16, 24, 32], "ffn_embed_dim": [8, 32, 64],
                    "attention_heads": [1, 2, 4]}}
NO_DROPOUT = LMArgs(dropout=0.0, attention_dropout=0.0)


def micro() -> LMSpace:
    return LMSpace.from_dict(json.loads(json.dumps(TINY)))


def write_yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def super_lm() -> SuperLM:
    torch.manual_seed(0)
    return SuperLM(micro(), NO_DROPOUT).eval()


def tokens(seed: int, b: int = 2, t: int = 20) -> torch.Tensor:
    return torch.randint(4, TINY["vocab_size"], (b, t), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------- space
def test_shipped_space_is_a_cpu_sized_lm_space():
    space = load_lm_space("lm-tiny")
    assert (space.vocab_size, space.max_positions) == (8192, 128)
    assert space.choices == {"layer_num": (2, 3, 4, 5, 6), "embed_dim": (128, 192, 256),
                             "ffn_embed_dim": (256, 512, 768, 1024), "attention_heads": (2, 4)}
    assert [space.top(k) for k in ("layer_num", "embed_dim", "ffn_embed_dim", "attention_heads")] == [6, 256, 1024, 4]
    assert isinstance(load_any_space("lm-tiny"), LMSpace) and not isinstance(load_any_space("tiny"), LMSpace)
    assert space.size() == 3 * sum(8**n for n in range(2, 7))


def test_space_and_config_round_trip(tmp_path):
    space = load_lm_space("lm-tiny")
    save_lm_space(space, tmp_path / "s.yaml")
    assert load_lm_space(tmp_path / "s.yaml") == space
    cfg = space.sample(random.Random(3))
    save_lm_config(cfg, tmp_path / "c.yml")
    assert load_lm_config(tmp_path / "c.yml") == cfg
    save_lm_config(cfg, tmp_path / "m.yml", metadata={"latency_ms": 1.5})
    assert load_lm_config(tmp_path / "m.yml") == cfg
    assert load_subconfig_metadata(tmp_path / "m.yml") == {"latency_ms": 1.5}
    assert yaml.safe_load((tmp_path / "c.yml").read_text())["task"] == "lm"


def test_sampled_configs_validate_and_are_hashable(rng):
    space = load_lm_space("lm-tiny")
    seen = {space.sample(rng) for _ in range(200)}
    assert len(seen) > 150  # distinct, hashable
    for cfg in seen:
        assert space.validate(cfg) is cfg
        assert len(cfg.ffn_embed_dim) == len(cfg.attention_heads) == cfg.layer_num
    assert {c.layer_num for c in seen} == set(space.choices["layer_num"])
    assert space.validate(space.largest()) and space.validate(space.smallest())
    assert lm_params(space.largest(), space) > lm_params(space.smallest(), space)


def test_per_layer_lists_are_truncated_to_the_depth_and_scalars_repeat():
    cfg = LMConfig.from_dict({"task": "lm", "layer_num": 2, "embed_dim": 16, "ffn_embed_dim": [8, 32, 64],
                              "attention_heads": 2})
    assert cfg == LMConfig(2, 16, (8, 32), (2, 2))
    with pytest.raises(ConfigError, match="ffn_embed_dim has 1 entries but layer_num is 2"):
        LMConfig.from_dict({"layer_num": 2, "embed_dim": 16, "ffn_embed_dim": [8], "attention_heads": 2})


def test_config_outside_its_space_names_file_field_and_choices(tmp_path):
    path = tmp_path / "c.yml"
    save_lm_config(LMConfig(2, 16, (8, 48), (2, 2)), path)
    with pytest.raises(ConfigError, match=r"c\.yml: ffn_embed_dim\[1\]=48 is not in space micro-lm \(choices \[8, 32, 64\]\)"):
        micro().validate(load_lm_config(path), source=str(path))
    with pytest.raises(ConfigError, match="embed_dim=20 is not in space"):
        micro().validate(LMConfig(1, 20, (8,), (1,)))
    with pytest.raises(ConfigError, match="not a decoder-only LM config"):
        micro().validate(load_subconfig(PI_YAML))


def _lm_space(**changes) -> dict:
    d = json.loads(json.dumps(TINY))
    for k, v in changes.items():
        if v is None:
            d.pop(k)
        else:
            d[k] = v
    return d


BAD_SPACES = [  # (name, content, needle)
    ("translation-space", yaml.safe_load((ROOT / "hat/configs/space/tiny.yaml").read_text()),
     "a translation space, not a decoder-only LM one"),
    ("no-task", _lm_space(task=None), "not a decoder-only LM space (`task: lm` missing)"),
    ("encoder-keys", _lm_space(encoder_layer_num=[2]), "encoder key(s) encoder_layer_num in a decoder-only LM space"),
    ("encoder-choice", _lm_space(choices={**TINY["choices"], "encoder_embed_dim": [16]}),
     "encoder key(s) encoder_embed_dim"),
    ("decoder-keys", _lm_space(choices={**TINY["choices"], "decoder_ende_attention_heads": [1]}),
     "translation key(s) decoder_ende_attention_heads"),
    ("no-version", _lm_space(version=None), "LM space version None, this hat reads version 1"),
    ("unknown-key", _lm_space(context=3), "unknown key(s) context"),
    ("missing-gene", _lm_space(choices={"layer_num": [1], "embed_dim": [16], "ffn_embed_dim": [8]}),
     "choices missing for attention_heads"),
    ("heads-do-not-divide", _lm_space(choices={**TINY["choices"], "attention_heads": [3]}),
     "attention_heads choice 3 does not divide embed_dim choice 16"),
    ("empty-choice", _lm_space(choices={**TINY["choices"], "layer_num": []}), "no choices for layer_num"),
    ("string-vocab", _lm_space(vocab_size="many"), "not a decoder-only LM space (ValueError"),
    ("tiny-context", _lm_space(max_positions=1), "max_positions 1 is below 2"),
    ("a-list", [1, 2], "not a decoder-only LM space (expected a mapping"),
]


@pytest.mark.parametrize("content, needle", [c[1:] for c in BAD_SPACES], ids=[c[0] for c in BAD_SPACES])
def test_bad_lm_space_files_are_one_line_naming_the_file(tmp_path, content, needle):
    path = write_yaml(tmp_path / "space.yaml", content)
    with pytest.raises(ConfigError) as e:
        load_lm_space(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and needle in msg and "\n" not in msg


def test_lm_files_given_as_translation_files_and_the_reverse(tmp_path):
    lm_space = write_yaml(tmp_path / "lm-space.yaml", TINY)
    with pytest.raises(ConfigError, match=r"lm-space\.yaml: a decoder-only LM file \(task: lm\), not a translation design"):
        load_space(lm_space)
    lm_cfg = tmp_path / "lm.yml"
    save_lm_config(LMConfig(1, 16, (8,), (2,)), lm_cfg)
    with pytest.raises(ConfigError, match=r"lm\.yml: a decoder-only LM file \(task: lm\), not a translation SubConfig"):
        load_subconfig(lm_cfg)
    with pytest.raises(ConfigError, match=r"raspberrypi_3\.5s\.yml: a translation config, not a decoder-only LM one"):
        load_lm_config(PI_YAML)
    mixed = write_yaml(tmp_path / "mixed.yml", {"task": "lm", "layer_num": 1, "embed_dim": 16, "ffn_embed_dim": 8,
                                                "attention_heads": 2, "encoder_embed_dim": 16})
    with pytest.raises(ConfigError, match=r"mixed\.yml: translation key\(s\) encoder_embed_dim in a decoder-only LM"):
        load_lm_config(mixed)


# ---------------------------------------------------------------------------------------- cost
def test_params_equal_the_built_models(super_lm):
    space, r = micro(), random.Random(5)
    for _ in range(6):
        cfg = space.sample(r)
        sub = extract_lm(super_lm, cfg)
        total = sum(p.numel() for p in sub.parameters())
        assert total == lm_params(cfg, space)
        assert total - sub.embed_tokens.weight.numel() == lm_decoder_params(cfg)
    fresh = StandaloneLM.from_space(space.largest(), space)
    assert sum(p.numel() for p in fresh.parameters()) == lm_params(space.largest(), space)
    shipped = load_lm_space("lm-tiny")
    assert lm_params(shipped.smallest(), shipped) - lm_decoder_params(shipped.smallest()) == 8192 * 128


@pytest.mark.parametrize("prompt, gen", [(1, 9), (6, 5), (12, 0)])
def test_macs_equal_the_matmuls_torch_counts_when_generating(prompt, gen):
    """Prefill then cached steps, as lm_macs counts them. Attention runs torch's math kernel (the
    fused CPU kernel is not counted), which scores a causal prefill in full (P x P): the masked part
    it includes is taken off."""
    space, cfg = micro(), LMConfig(3, 24, (8, 64, 32), (1, 2, 4))
    model = StandaloneLM.from_space(cfg, space, NO_DROPOUT).eval()
    x = tokens(0, b=1, t=prompt + gen)
    with FlopCounterMode(display=False) as fc, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        _, cache = model.step(x[:, :prompt], last=True)
        for t in range(prompt, prompt + gen):
            _, cache = model.step(x[:, t:t + 1], cache, last=True)
    masked = 3 * 24 * prompt * (prompt - 1)  # per layer 2 * d * (P^2 - P(P+1)/2): scores and mixing
    assert fc.get_total_flops() // 2 - masked == lm_macs(cfg, space, prompt, gen)


def test_macs_refuse_a_generation_longer_than_the_context():
    space = micro()
    assert lm_macs(space.smallest(), space, 12, 12) > lm_macs(space.smallest(), space, 12, 11)
    with pytest.raises(ConfigError, match="at most 24 .*context of space micro-lm"):
        lm_macs(space.smallest(), space, 12, 13)


# ---------------------------------------------------------------------------------------- model
def test_extraction_gives_the_configured_super_models_logits(super_lm):
    space, r = micro(), random.Random(1)
    x = tokens(1)
    configs = [space.sample(r) for _ in range(5)] + [space.smallest(), space.largest()]
    for cfg in configs:
        sub = extract_lm(super_lm, cfg).eval()
        assert isinstance(sub.layers[0].self_attn.q_proj, torch.nn.Linear) and sub.embed_dim == cfg.embed_dim
        super_lm.configure(cfg)
        torch.testing.assert_close(sub(x), super_lm(x), atol=1e-5, rtol=0)
    super_lm.configure(configs[0])  # the shared weights are untouched by other configs
    torch.testing.assert_close(extract_lm(super_lm, configs[0])(x), super_lm(x), atol=1e-5, rtol=0)


def test_causal_logits_do_not_see_the_future(super_lm):
    x = tokens(2)
    y = x.clone()
    y[:, 12:] = 5
    torch.testing.assert_close(super_lm(x)[:, :12], super_lm(y)[:, :12], atol=1e-6, rtol=0)
    assert not torch.allclose(super_lm(x)[:, 12:], super_lm(y)[:, 12:])


@pytest.mark.parametrize("prefill", [1, 7])
def test_cached_decoding_equals_the_full_forward(super_lm, prefill):
    space, r = micro(), random.Random(9)
    x = tokens(3, t=space.max_positions)
    for _ in range(3):
        sub = extract_lm(super_lm, space.sample(r)).double().eval()
        full = sub(x)
        logits, cache = sub.step(x[:, :prefill])
        out = [logits]
        for t in range(prefill, x.size(1)):
            logits, cache = sub.step(x[:, t:t + 1], cache)
            out.append(logits)
        torch.testing.assert_close(torch.cat(out, 1), full, atol=1e-10, rtol=0)
        assert len(cache) == sub.num_layers and cache[0][0].shape == (2, x.size(1), sub.embed_dim)
        last, _ = sub.step(x[:, :prefill], last=True)
        torch.testing.assert_close(last, full[:, prefill - 1:prefill], atol=1e-10, rtol=0)


def test_over_long_input_is_refused_in_one_line(super_lm):
    with pytest.raises(HatError, match="25 tokens do not fit the context of 24 positions"):
        super_lm(tokens(4, t=25))
    _, cache = super_lm.step(tokens(4, t=24))
    with pytest.raises(HatError, match="25 tokens"):
        super_lm.step(tokens(5, t=1), cache)


def test_standalone_lm_rebuilds_from_its_kwargs():
    space = micro()
    model = StandaloneLM.from_space(space.sample(random.Random(2)), space, NO_DROPOUT).eval()
    again = StandaloneLM.from_kwargs(model.init_kwargs()).eval()
    again.load_state_dict(model.state_dict())
    torch.testing.assert_close(again(tokens(6)), model(tokens(6)), atol=0, rtol=0)
    with pytest.raises(ConfigError, match="not in space"):
        StandaloneLM.from_space(LMConfig(1, 20, (8,), (1,)), space)


# ---------------------------------------------------------------------------------------- data
def test_perplexity_of_a_uniform_model_is_the_vocabulary_size():
    blocks = LMBlocks(np.arange(101) % 37 + 3, context=10)
    uniform = lambda x: torch.zeros(*x.shape, 40)  # noqa: E731
    assert perplexity(uniform, blocks.batches(3)) == pytest.approx(40, rel=1e-6)


def test_perplexity_of_an_oracle_is_one_and_counts_every_target():
    stream = np.arange(200) % 7 + 4  # 4 5 ... 10 4 5 ...: the next token is known from this one
    blocks = LMBlocks(stream, context=16)
    oracle = lambda x: 50.0 * torch.nn.functional.one_hot((x - 4 + 1) % 7 + 4, 12).float()  # noqa: E731
    assert perplexity(oracle, blocks.batches(4)) == pytest.approx(1.0, abs=1e-6)
    late = lambda x: 50.0 * torch.nn.functional.one_hot(x, 12).float()  # predicts the current token  # noqa: E731
    assert perplexity(late, blocks.batches(4)) > 1e10
    with pytest.raises(HatError, match="no tokens"):
        perplexity(oracle, [])


def test_blocks_reconstruct_the_stream_and_batch_deterministically():
    stream = np.random.default_rng(0).integers(4, 40, 103)
    blocks = LMBlocks(stream, context=10, vocab_size=40)
    assert len(blocks) == 10 and blocks.num_tokens == 100
    xs, ys = zip(*(blocks[i] for i in range(len(blocks))))
    assert torch.cat(xs).tolist() == stream[:100].tolist()
    assert torch.cat(ys).tolist() == stream[1:101].tolist()
    batches = list(blocks.batches(4))
    assert [b[0].shape for b in batches] == [(4, 10), (4, 10), (2, 10)]
    a, b = list(blocks.batches(4, shuffle=True, seed=3)), list(blocks.batches(4, shuffle=True, seed=3))
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a, b))
    assert sorted(torch.cat([p[0] for p in a]).flatten().tolist()) == sorted(stream[:100].tolist())
    with pytest.raises(DataError, match="10 tokens do not fill one block of 10"):
        LMBlocks(stream[:10], context=10)
    with pytest.raises(DataError, match="token id 39 outside the model's vocabulary of 39"):
        LMBlocks(np.append(stream, 39), context=10, vocab_size=39)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("lmdata")
    rng = random.Random(0)
    words = "the house cat dog is very big small red garden tree green and fast old".split()
    for split, n in (("train", 200), ("valid", 20)):
        lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) for _ in range(n)]
        (tmp / f"{split}.de").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (tmp / f"{split}.en").write_text("\n".join(reversed(lines)) + "\n", encoding="utf-8")
    out = tmp / "out"
    assert main(["prepare", "text", "--src", "de", "--tgt", "en", "--trainpref", str(tmp / "train"),
                 "--validpref", str(tmp / "valid"), "--out", str(out), "--vocab-size", "60"]) == 0
    return out


def test_lm_blocks_from_a_prepared_directory_are_its_target_side(prepared):
    meta, _, tgt_dict = load_data(prepared)
    sentences = IndexedDataset(prepared / "valid.en")
    stream, d = token_stream(prepared, "valid")
    assert d == tgt_dict and stream.tolist() == torch.cat([sentences[i] for i in range(len(sentences))]).tolist()
    assert int((stream == d.eos).sum()) == len(sentences) == 20  # EOS separates the sentences
    blocks = LMBlocks.from_data(prepared, "valid", context=8, vocab_size=len(d))
    assert torch.cat([blocks[i][0] for i in range(len(blocks))]).tolist() == stream[: len(blocks) * 8].tolist()
    src_stream, _ = token_stream(prepared, "valid", lang="de")
    assert len(src_stream) == len(stream) and src_stream.tolist() != stream.tolist()
    with pytest.raises(DataError, match=f"dictionary has {len(d)} symbols, more than the model's vocabulary of 10"):
        LMBlocks.from_data(prepared, "valid", context=8, vocab_size=10)
    with pytest.raises(DataError, match="no language 'fr'"):
        token_stream(prepared, "valid", lang="fr")


EPOCHS = 3


def test_a_few_steps_of_training_lower_the_perplexity(prepared):
    """End to end on real text: the blocks, the model and the perplexity agree with each other."""
    _, _, d = load_data(prepared)
    space = LMSpace.from_dict({**TINY, "vocab_size": len(d), "max_positions": 16})
    torch.manual_seed(0)
    model = StandaloneLM.from_space(LMConfig(2, 32, (64, 64), (2, 2)), space, NO_DROPOUT)
    train = LMBlocks.from_data(prepared, "train", context=16, vocab_size=len(d))
    before = perplexity(model, train.batches(32))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    steps = [b for epoch in range(EPOCHS) for b in train.batches(16, shuffle=True, seed=epoch)]
    for x, y in steps:
        loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = perplexity(model, train.batches(32))
    assert after < before / 2 and after < len(d) / 2  # better than knowing nothing (uniform)


# ---------------------------------------------------------------------------------------- hat info
def test_hat_info_describes_an_lm_config(tmp_path, capsys):
    space = load_lm_space("lm-tiny")
    cfg = LMConfig(3, 192, (512, 768, 256), (4, 2, 4))
    save_lm_config(cfg, tmp_path / "lm.yml")
    assert main(["info", str(tmp_path / "lm.yml"), "--space", "lm-tiny", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"task": "lm", "space": "lm-tiny", "params": lm_params(cfg, space),
                   "decoder_params": lm_decoder_params(cfg), "macs": lm_macs(cfg, space, 64, 64),
                   "prompt_len": 64, "gen_len": 64, "config": cfg.to_dict()}
    assert main(["info", str(tmp_path / "lm.yml"), "--space", "lm-tiny", "--prompt-len", "8", "--gen-len", "4"]) == 0
    text = capsys.readouterr().out
    assert f"decoder     {lm_decoder_params(cfg) / 1e6:.2f} M" in text and "prompt 8 tokens, 4 generation steps" in text
    assert f"MACs        {lm_macs(cfg, space, 8, 4) / 1e9:.3f} G" in text


@pytest.mark.parametrize("argv, needle", [
    (["LM", "--space", "tiny"], "lm.yml: a decoder-only LM config (task: lm), but space tiny is a translation space"),
    ([str(PI_YAML), "--space", "lm-tiny"], "3.5s.yml: a translation SubConfig, but space lm-tiny is a decoder-only LM"),
    (["LM", "--space", "lm-tiny", "--prompt-len", "100", "--gen-len", "29"], "at most 128 (the context of space lm-tiny)"),
    (["OUTSIDE", "--space", "lm-tiny"], "outside.yml: embed_dim=100 is not in space lm-tiny (choices [128, 192, 256])"),
    (["LM", "--space", "SPACE"], "space.yaml: encoder key(s) encoder_embed_dim in a decoder-only LM space"),
    (["MISSING", "--space", "lm-tiny"], "missing.yml: no such file"),
], ids=["lm-config-translation-space", "translation-config-lm-space", "over-long", "outside", "encoder-keys", "missing"])
def test_hat_info_refuses_mismatches_in_one_line(tmp_path, capsys, argv, needle):
    save_lm_config(LMConfig(2, 128, (256, 256), (2, 2)), tmp_path / "lm.yml")
    save_lm_config(LMConfig(2, 100, (256, 256), (2, 2)), tmp_path / "outside.yml")
    space = load_lm_space("lm-tiny").to_dict()
    space["choices"]["encoder_embed_dim"] = [128]
    write_yaml(tmp_path / "space.yaml", space)
    subs = {"LM": tmp_path / "lm.yml", "OUTSIDE": tmp_path / "outside.yml", "SPACE": tmp_path / "space.yaml",
            "MISSING": tmp_path / "missing.yml"}
    assert main(["info", *(str(subs.get(a, a)) for a in argv)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and needle in err and err.startswith("hat info: error: ")
