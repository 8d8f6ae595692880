"""Text conditioning in the networks: a U-Net, DiT or MLP built with ``text_vocab`` reads token
ids, the empty prompt is finite, the text path is the identity until it has trained and then
matters, networks without text keep their parameters, and bad tokens are refused by name."""
import pytest
import torch

from sdeflow import Denoiser
from sdeflow.guidance import ClassifierFreeGuidance
from sdeflow.models import build_model
from sdeflow.models.text import CrossAttention, TextEncoder
from sdeflow.sde import get_sde

V, L = 50, 8
NETS = {"unet": dict(in_channels=3, resolution=8, channels=16, channel_mult=[1, 2],
                     num_res_blocks=1, attn_resolutions=[4], head_dim=8),
        "dit": dict(in_channels=3, resolution=8, patch_size=2, hidden=32, depth=2, heads=2),
        "mlp": dict(dim=2, hidden=32, depth=2, emb_dim=16)}
TEXT = dict(text_vocab=V, text_dim=32, text_layers=1, text_length=L)


def _x(name, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (n, 2) if name == "mlp" else (n, 3, 8, 8)
    return torch.randn(shape, generator=g), torch.rand(n, generator=g)


def _tokens(n=4, seed=0):
    t = torch.randint(1, V, (n, L), generator=torch.Generator().manual_seed(seed))
    t[:, 5:] = 0  # padded captions
    return t


@pytest.mark.parametrize("name", NETS)
def test_text_networks_read_tokens_and_the_empty_prompt(name):
    net = build_model(name, **NETS[name], **TEXT)
    x, c = _x(name)
    assert net(x, c, tokens=_tokens()).shape == x.shape
    empty = torch.zeros(4, L, dtype=torch.long)
    assert torch.isfinite(net(x, c, tokens=empty)).all()
    assert torch.equal(net(x, c), net(x, c, tokens=empty))  # None is the empty prompt
    assert torch.isfinite(net(x, c, tokens=_tokens()[:, :3])).all()  # shorter captions


@pytest.mark.parametrize("name", NETS)
def test_text_path_is_the_identity_at_initialisation(name):
    """A text-less network with random weights everywhere, and the same weights in a network
    with text: equal outputs for any caption (zero-initialised projections and gates)."""
    plain = build_model(name, **NETS[name])
    with torch.no_grad():
        for p in plain.parameters():
            p.normal_(0, 0.2)
    text = build_model(name, **NETS[name], **TEXT)
    missing, unexpected = text.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(("text", "mid_cross")) or ".cross" in k
                                  or "crosses" in k for k in missing)
    x, c = _x(name)
    torch.testing.assert_close(text(x, c, tokens=_tokens()), plain(x, c), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", NETS)
def test_tokens_change_the_output_after_a_few_steps(name):
    torch.manual_seed(0)
    net = build_model(name, **NETS[name], **TEXT)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, c = _x(name, n=8)
    tokens = _tokens(8)
    target = torch.randn_like(x)
    for _ in range(4):
        opt.zero_grad()
        ((net(x, c, tokens=tokens) - target) ** 2).mean().backward()
        opt.step()
    with torch.no_grad():
        a, b = net(x, c, tokens=tokens), net(x, c, tokens=_tokens(8, seed=1))
    assert (a - b).abs().max() > 1e-4


@pytest.mark.parametrize("name", NETS)
def test_networks_without_text_are_unchanged(name):
    """text_vocab=0 adds no parameter and draws no random number: same names, same values."""
    torch.manual_seed(3)
    a = build_model(name, **NETS[name])
    torch.manual_seed(3)
    b = build_model(name, **NETS[name], text_vocab=0, text_dim=64)
    assert list(a.state_dict()) == list(b.state_dict())
    assert not any("text" in k or "cross" in k for k in a.state_dict())
    assert all(torch.equal(u, v) for u, v in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("name", NETS)
def test_bad_tokens_are_refused_by_name(name):
    x, c = _x(name)
    with pytest.raises(ValueError, match="built without text"):
        build_model(name, **NETS[name])(x, c, tokens=_tokens())
    net = build_model(name, **NETS[name], **TEXT)
    with pytest.raises(TypeError, match="integer token ids"):
        net(x, c, tokens=_tokens().float())
    with pytest.raises(ValueError, match=r"shape \(4, L\) with 1 ≤ L ≤ 8"):
        net(x, c, tokens=torch.ones(4, L + 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 50\)"):
        net(x, c, tokens=torch.full((4, L), V))
    with pytest.raises(ValueError, match="text_dim must be a multiple of"):
        build_model(name, **NETS[name], **{**TEXT, "text_dim": 30})


def test_empty_prompt_attends_only_to_the_null_token():
    """An all-padding caption: no NaN, and the cross-attention output is the null value's
    (the same for every query position)."""
    enc, xa = TextEncoder(V, 16, layers=1, length=L), CrossAttention(8, 16, heads=2)
    torch.nn.init.normal_(xa.proj.weight)
    ctx, mask, pooled = enc(torch.zeros(2, L, dtype=torch.long))
    assert not mask.any() and torch.equal(pooled, torch.zeros(2, 16))
    out = xa.update(torch.randn(2, 5, 8), ctx, mask)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, out[:, :1].expand_as(out))


def test_cfg_for_text_guides_against_the_empty_prompt():
    """for_text: w = 0 is the conditional model (1 NFE); w > 0 combines it with the empty
    prompt's prediction, (1 + w) D(x | c) − w D(x | ∅), in one batched call."""
    torch.manual_seed(0)
    net = build_model("mlp", **NETS["mlp"], **TEXT)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.3)
    model = Denoiser(net, get_sde("edm"), prediction="x0", precondition="edm")
    x, t, tokens = torch.randn(4, 2), torch.full((4,), 1.0), _tokens()
    cond, uncond = model.x0(x, t, tokens=tokens), model.x0(x, t, tokens=torch.zeros_like(tokens))
    torch.testing.assert_close(ClassifierFreeGuidance.for_text(model, 0.0).x0(x, t, tokens=tokens),
                               cond)
    guided = ClassifierFreeGuidance.for_text(model, 2.0)
    torch.testing.assert_close(guided.x0(x, t, tokens=tokens), 3 * cond - 2 * uncond)
    assert guided.nfe == 2


@pytest.mark.parametrize("name", ["unet", "dit"])
def test_padding_is_masked_out_of_cross_attention(name):
    """With every weight random (cross-attention live), trailing padding changes nothing —
    and the same check without the key mask (padding embedded like words) does fail."""
    torch.manual_seed(0)
    net = build_model(name, **NETS[name], **TEXT).double()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x, c = (t.double() for t in _x(name))
    tokens = _tokens()
    tokens[:, 5:] = 0
    full, short = net(x, c, tokens=tokens), net(x, c, tokens=tokens[:, :5])
    torch.testing.assert_close(full, short, rtol=1e-9, atol=1e-9)
    unmasked = tokens.clone()
    unmasked[:, 5:] = 1  # the same length, a word where the padding was
    assert not torch.allclose(net(x, c, tokens=unmasked), full, atol=1e-6)
