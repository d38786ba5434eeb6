"""SuperTransformer / SubTransformer equivalence, incremental decoding and search."""
import random

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hat.model import ModelArgs, SuperTransformer, beam_search, extract, greedy_search
from hat.nn import ElasticLayerNorm, ElasticLinear, MultiheadAttention
from hat.space import DesignSpace, load_space

V = 40
PAD, EOS = 1, 2


def odd_space() -> DesignSpace:
    """Encoder and decoder of different super widths, to catch enc/dec dim mix-ups."""
    return DesignSpace.from_dict(
        {
            "name": "odd",
            "super": dict(encoder_embed_dim=48, decoder_embed_dim=40, encoder_ffn_embed_dim=64, decoder_ffn_embed_dim=56,
                          encoder_layer_num=4, decoder_layer_num=3, encoder_attention_heads=4, decoder_attention_heads=4, qkv_dim=32),
            "choices": dict(encoder_embed_dim=[48, 32], decoder_embed_dim=[40, 24], encoder_layer_num=[1, 2, 4],
                            decoder_layer_num=[1, 2, 3], encoder_ffn_embed_dim=[64, 16], decoder_ffn_embed_dim=[56, 8],
                            encoder_self_attention_heads=[4, 2, 1], decoder_self_attention_heads=[4, 2],
                            decoder_ende_attention_heads=[4, 1], decoder_arbitrary_ende_attn=[-1, 1, 2]),
        }
    )


MODELS = {
    "tiny-postnorm-shared": (lambda: load_space("tiny"), dict(share_all_embeddings=True)),
    "odd-prenorm-separate": (
        odd_space,
        dict(share_all_embeddings=False, share_decoder_input_output_embed=False, normalize_before=True),
    ),
    "odd-postnorm-tied-decoder": (odd_space, dict(share_all_embeddings=False, share_decoder_input_output_embed=True)),
}
_cache: dict = {}


def get_model(key: str) -> SuperTransformer:
    if key not in _cache:
        space_fn, kw = MODELS[key]
        torch.manual_seed(0)
        _cache[key] = SuperTransformer(space_fn(), ModelArgs(V, V, dropout=0.0, attention_dropout=0.0, **kw)).eval()
    return _cache[key]


def batch(seed: int, bsz: int = 3, slen: int = 7, tlen: int = 6):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, V, (bsz, slen), generator=g)
    src[:, -1] = EOS
    for i in range(1, bsz):  # fairseq left-pads sources
        src[i, : min(i, slen - 2)] = PAD
    prev = torch.randint(4, V, (bsz, tlen), generator=g)
    prev[:, 0] = EOS
    return src, prev


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(sorted(MODELS)), seed=st.integers(0, 10_000))
def test_extracted_subtransformer_matches_super(key, seed):
    model = get_model(key)
    cfg = model.space.sample(random.Random(seed))
    src, prev = batch(seed)
    with torch.no_grad():
        a = model(src, None, prev, cfg)
        sub = extract(model, cfg).eval()
        b = sub(src, None, prev)
    assert a.shape == b.shape == (3, prev.size(1), V)
    assert (a - b).abs().max().item() <= 1e-5
    # the SubTransformer is plain: no elastic module left in it
    assert not any(isinstance(m, (ElasticLinear, ElasticLayerNorm)) for m in sub.modules())


@settings(max_examples=25, deadline=None)
@given(key=st.sampled_from(sorted(MODELS)), seed=st.integers(0, 10_000), use_sub=st.booleans())
def test_incremental_decoding_matches_full_forward(key, seed, use_sub):
    model = get_model(key)
    cfg = model.space.sample(random.Random(seed))
    model.configure(cfg)
    net = extract(model, cfg).eval() if use_sub else model
    src, prev = batch(seed)
    with torch.no_grad():
        full = F.log_softmax(net(src, None, prev), dim=-1)
        enc = net.encode(src)
        cache: list = []
        steps = [net.decode_step(prev[:, : t + 1], enc, cache) for t in range(prev.size(1))]
    # log-probabilities reach -10 and below: float32 rounding grows with their size (1.05e-5 was seen),
    # so the bound is relative as well; a caching bug is off by 1e-2 or more
    torch.testing.assert_close(torch.stack(steps, dim=1), full, rtol=2e-6, atol=1e-5)


def test_left_padding_does_not_change_outputs():
    model = get_model("tiny-postnorm-shared")
    cfg = model.space.sample(random.Random(3))
    src, prev = batch(5, bsz=1)
    padded = torch.cat([torch.full((1, 4), PAD), src], dim=1)
    with torch.no_grad():
        a = model(src, None, prev, cfg)
        b = model(padded, None, prev, cfg)
    assert torch.allclose(a, b, atol=1e-5)


def test_configure_changes_only_active_slices_and_validates():
    """A step on the smallest subnet reaches exactly its front slices: gradients are zero outside
    them (absent layers included) and non-zero inside; a config outside the space is refused."""
    torch.manual_seed(0)
    model = SuperTransformer(load_space("tiny"), ModelArgs(V, V, dropout=0.0, attention_dropout=0.0))
    space = model.space
    cfg = space.smallest()
    src, prev = batch(3)
    model.zero_grad()
    model(src, None, prev, cfg).float().pow(2).mean().backward()
    d, f = cfg.encoder_embed_dim, cfg.encoder_ffn_embed_dim[0]
    fc1 = model.encoder.layers[0].ffn.fc1.weight.grad
    assert fc1[:f, :d].abs().sum() > 0
    assert fc1[f:].abs().sum() == 0 and fc1[:, d:].abs().sum() == 0
    for layer in model.encoder.layers[cfg.encoder_layer_num:]:  # depth beyond the config: untouched
        assert all(p.grad is None or p.grad.abs().sum() == 0 for p in layer.parameters())
    for layer in model.decoder.layers[cfg.decoder_layer_num:]:
        assert all(p.grad is None or p.grad.abs().sum() == 0 for p in layer.parameters())
    bad = space.largest().to_dict()
    bad["encoder_embed_dim"] = 100
    from hat.errors import ConfigError
    from hat.space import SubConfig

    with pytest.raises(ConfigError):
        model.configure(SubConfig.from_dict(bad))


def test_elastic_linear_is_front_slice_of_weight():
    lin = ElasticLinear(8, 6)
    x = torch.randn(2, 5)
    lin.configure(in_features=5, out_features=3)
    ref = x @ lin.weight[:3, :5].T + lin.bias[:3]
    assert torch.allclose(lin(x), ref)
    with pytest.raises(ValueError):
        lin.configure(in_features=9)


def test_head_count_changes_head_dim_not_params():
    att = MultiheadAttention(16, 16, 8, 4, linear=ElasticLinear).eval()
    n = sum(p.numel() for p in att.parameters())
    x = torch.randn(1, 5, 16)
    att.configure(16, 16, 4, 0.0)
    y4 = att(x)
    att.configure(16, 16, 2, 0.0)
    y2 = att(x)
    assert sum(p.numel() for p in att.parameters()) == n
    assert not torch.allclose(y4, y2)  # different head split, same weights


def _score_by_forward(model, src, hyp, lenpen):
    tgt = torch.tensor([hyp.tokens + [EOS]])
    prev = torch.tensor([[EOS] + hyp.tokens])
    with torch.no_grad():
        lp = F.log_softmax(model(src, None, prev), dim=-1)[0]
    total = lp.gather(1, tgt[0].unsqueeze(1)).sum().item()
    return total / (len(hyp.tokens) + 1) ** lenpen


@pytest.mark.parametrize("lenpen", [0.6, 1.0])
def test_beam_search_scores_are_true_sequence_scores(lenpen):
    model = extract(get_model("tiny-postnorm-shared"), load_space("tiny").sample(random.Random(11))).eval()
    src, _ = batch(2, bsz=1)
    hyps = beam_search(model, src, beam=4, lenpen=lenpen, max_len_a=0, max_len_b=8, nbest=4)[0]
    assert len(hyps) == 4
    assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
    for h in hyps:
        assert len(h.tokens) <= 8
        assert _score_by_forward(model, src, h, lenpen) == pytest.approx(h.score, abs=1e-4)


def test_beam_one_equals_greedy_and_batching_is_invariant():
    model = extract(get_model("odd-prenorm-separate"), odd_space().sample(random.Random(5))).eval()
    src, _ = batch(9, bsz=3)
    greedy = greedy_search(model, src, max_len_a=0, max_len_b=10)
    beam1 = beam_search(model, src, beam=1, max_len_a=0, max_len_b=10)
    assert [g.tokens for g in greedy] == [b[0].tokens for b in beam1]
    batched = beam_search(model, src, beam=3, max_len_a=0, max_len_b=10)
    for i in range(src.size(0)):
        row = src[i : i + 1]
        row = row[:, row[0].ne(PAD)]
        single = beam_search(model, row, beam=3, max_len_a=0, max_len_b=10)[0]
        assert single[0].tokens == batched[i][0].tokens
        assert single[0].score == pytest.approx(batched[i][0].score, abs=1e-5)


def test_max_length_is_per_sentence():
    model = extract(get_model("tiny-postnorm-shared"), load_space("tiny").smallest()).eval()
    src, _ = batch(4, bsz=3, slen=9)
    out = greedy_search(model, src, max_len_a=0.5, max_len_b=1)
    for i, h in enumerate(out):
        n_src = int(src[i].ne(PAD).sum())
        assert len(h.tokens) <= int(0.5 * n_src + 1)


def test_training_step_backprop_only_touches_active_slices():
    model = get_model("tiny-postnorm-shared")
    model.train()
    try:
        cfg = model.space.smallest()
        src, prev = batch(1)
        model.zero_grad()
        model(src, None, prev, cfg).sum().backward()
        fc1 = model.encoder.layers[0].ffn.fc1.weight.grad
        assert fc1[: cfg.encoder_ffn_embed_dim[0], : cfg.encoder_embed_dim].abs().sum() > 0
        assert fc1[cfg.encoder_ffn_embed_dim[0] :].abs().sum() == 0
        assert model.encoder.layers[2].ffn.fc1.weight.grad is None  # layer beyond the sampled depth
    finally:
        model.zero_grad()
        model.eval()


def _imported_modules(path) -> list[str]:
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    mods = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mods.append("." * node.level + (node.module or ""))
    return mods


def test_blocks_import_nothing_from_hat():
    """hat/nn/blocks.py is copied into fairseq exports: torch and the standard library only."""
    from pathlib import Path

    from hat.export.fairseq_export import PLUGIN_SRC
    from hat.nn import blocks

    mods = _imported_modules(Path(blocks.__file__))
    assert mods and all(m.split(".")[0] in ("__future__", "math", "typing", "torch") for m in mods), mods
    plugin = _imported_modules(PLUGIN_SRC / "__init__.py")
    assert not [m for m in plugin if m.split(".")[0] == "hat"] and ".blocks" in plugin


def test_arbitrary_attention_rule_matches_the_cost_model():
    """`hat.nn.ende_layers` (what the model runs) and `space.encoder_layers_attended` (what params
    and MACs count) are one rule, written twice only because space.py has no torch."""
    from hat.nn import ende_layers
    from hat.space import encoder_layers_attended

    space = odd_space()
    for seed in range(50):
        cfg = space.sample(random.Random(seed))
        for i, a in enumerate(cfg.decoder_arbitrary_ende_attn):
            assert ende_layers(a, cfg.encoder_layer_num) == encoder_layers_attended(cfg, i)


@pytest.mark.parametrize("key", sorted(MODELS))
def test_decoder_step_is_the_incremental_forward(key):
    """`Decoder.step` over an explicit cache (what ONNX exports) equals the eager decode_step, and
    the full forward runs the same `DecoderLayer.step` with no past."""
    model = get_model(key)
    cfg = model.space.sample(random.Random(7))
    sub = extract(model, cfg).eval()
    src, prev = batch(7)
    with torch.no_grad():
        enc = sub.encode(src)
        state = sub.decoder.init_state(enc)
        cache: list = []
        for t in range(prev.size(1)):
            logits, state = sub.decoder.step(prev[:, t : t + 1], torch.tensor([t]), state)
            ref = sub.decode_step(prev[:, : t + 1], enc, cache)
            assert torch.equal(F.log_softmax(logits[:, -1].float(), dim=-1), ref)
        assert all(s.self_k.shape == (3, prev.size(1), sub.qkv_dim) for s in state)
        for s, c in zip(state, cache):
            assert all(torch.equal(x, y) for x, y in zip(s, c))


def test_length_check_is_at_the_eager_entry_points():
    model = extract(get_model("tiny-postnorm-shared"), load_space("tiny").smallest()).eval()
    n = model.args.max_positions
    long = torch.full((1, n + 1), 5)
    with pytest.raises(ValueError, match="longer than max_positions"):
        model.encode(long)
    with pytest.raises(ValueError, match="longer than max_positions"):
        model.decode_step(long, model.encode(long[:, :5]), [])
    model.encode(torch.cat([torch.full((1, 3), PAD), long[:, :n]], dim=1))  # pads do not count


def test_layer_step_over_a_cached_prefix_equals_one_causal_pass():
    """`DecoderLayer.step` with a past of P positions and T > 1 new ones is causal across both."""
    model = extract(get_model("odd-prenorm-separate"), odd_space().sample(random.Random(2))).eval()
    layer = model.decoder.layers[0]
    src, _ = batch(2)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 7, model.decoder.embed_dim, generator=g)
    with torch.no_grad():
        s = model.decoder.init_state(model.encode(src))[0]
        full, k, v = layer.step(x, None, None, s.cross_k, s.cross_v, s.mask)
        head, k3, v3 = layer.step(x[:, :3], None, None, s.cross_k, s.cross_v, s.mask)
        tail, k7, v7 = layer.step(x[:, 3:], k3, v3, s.cross_k, s.cross_v, s.mask)
    assert torch.allclose(torch.cat([head, tail], dim=1), full, atol=1e-5)
    assert torch.allclose(k7, k) and torch.allclose(v7, v)
