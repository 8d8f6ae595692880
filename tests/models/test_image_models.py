"""The U-Net and DiT: shapes, zero-initialised outputs, conditioning, every parameter trains,
and both work with every SDE and prediction type through the Denoiser."""
import pytest
import torch

import sdeflow
from sdeflow.losses import dsm_loss
from sdeflow.models import DiT, UNet, build_model

from ..conftest import SDES, TINY_DIT, TINY_UNET, gen

MODELS = {"unet": (UNet, TINY_UNET), "dit": (DiT, TINY_DIT)}


def _randomise_zero_layers(net):
    """Fresh networks output exactly 0 (zero-initialised last layers); give those layers
    random weights so tests see a non-trivial function."""
    with torch.no_grad():
        for p in net.parameters():
            if (p == 0).all():
                p.normal_(0, 0.1, generator=gen(1))
    return net


@pytest.mark.parametrize("name", sorted(MODELS))
def test_output_shape_and_zero_init(name):
    cls, kw = MODELS[name]
    net = cls(in_channels=3, resolution=8, **kw)
    x = torch.randn(5, 3, 8, 8, generator=gen(0))
    out = net(x, torch.rand(5, generator=gen(1)))
    assert out.shape == x.shape and (out == 0).all()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_parameter_gets_a_gradient(name):
    cls, kw = MODELS[name]
    net = _randomise_zero_layers(cls(in_channels=1, resolution=8, num_classes=10, **kw))
    x = torch.randn(4, 1, 8, 8, generator=gen(0))
    net(x, torch.rand(4, generator=gen(1)), torch.tensor([0, 3, 9, 10])).pow(2).sum().backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, dead


@pytest.mark.parametrize("name", sorted(MODELS))
def test_class_label_conditions_the_output(name):
    cls, kw = MODELS[name]
    net = _randomise_zero_layers(cls(in_channels=1, resolution=8, num_classes=10, **kw)).eval()
    x, c = torch.randn(2, 1, 8, 8, generator=gen(0)), torch.rand(2, generator=gen(1))
    a, b = net(x, c, torch.tensor([1, 1])), net(x, c, torch.tensor([2, 2]))
    null = net(x, c, torch.tensor([10, 10]))
    assert (a - b).abs().max() > 1e-4
    assert torch.equal(null, net(x, c))  # None = the null label (classifier-free guidance)
    with pytest.raises(ValueError, match="class labels must lie"):
        net(x, c, torch.tensor([11, 0]))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_conditioning_image_is_concatenated(name):
    cls, kw = MODELS[name]
    net = _randomise_zero_layers(cls(in_channels=1, resolution=8, cond_channels=1, **kw))
    x, c = torch.randn(2, 1, 8, 8, generator=gen(0)), torch.rand(2, generator=gen(1))
    y1, y2 = torch.zeros(2, 1, 8, 8), torch.ones(2, 1, 8, 8)
    assert (net(x, c, x_cond=y1) - net(x, c, x_cond=y2)).abs().max() > 1e-4
    with pytest.raises(ValueError, match="x_cond"):
        net(x, c)


def test_bad_configurations_are_rejected():
    with pytest.raises(ValueError, match="divisible"):
        UNet(resolution=6, channel_mult=(1, 2, 2))
    with pytest.raises(ValueError, match="divisible"):
        DiT(resolution=9, patch_size=2)
    with pytest.raises(ValueError, match="expected images"):
        UNet(in_channels=3, **TINY_UNET)(torch.randn(2, 1, 8, 8), torch.rand(2))
    with pytest.raises(ValueError, match="unknown model"):
        build_model("resnet")


def test_dit_unpatchify_puts_each_token_back_in_place():
    """With no transformer blocks every output patch is a function of its own input patch
    only: perturbing input patch (i, j) changes output patch (i, j) and nothing else."""
    net = _randomise_zero_layers(DiT(in_channels=2, resolution=8, patch_size=2, hidden=16,
                                     depth=0, heads=2))
    x, c = torch.randn(1, 2, 8, 8, generator=gen(0)), torch.rand(1)
    base = net(x, c)
    for i, j in [(0, 0), (1, 3), (3, 2)]:
        y = x.clone()
        y[..., 2 * i:2 * i + 2, 2 * j:2 * j + 2] += 1.0
        changed = (net(y, c) - base).abs().sum(1)[0] > 1e-6
        expect = torch.zeros(8, 8, dtype=torch.bool)
        expect[2 * i:2 * i + 2, 2 * j:2 * j + 2] = True
        assert torch.equal(changed, expect)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("sde_name", ["ve", "vp", "subvp", "edm"])
@pytest.mark.parametrize("prediction", ["x0", "eps", "v", "score"])
def test_models_work_with_every_sde_and_prediction(name, sde_name, prediction):
    """A DSM loss step and a few sampler steps, in float64, through the Denoiser."""
    cls, kw = MODELS[name]
    net = _randomise_zero_layers(cls(in_channels=1, resolution=8, **kw)).double()
    model = sdeflow.Denoiser(net, SDES[sde_name][0](), prediction=prediction)
    x0 = torch.rand(4, 1, 8, 8, generator=gen(0), dtype=torch.float64) * 2 - 1
    loss = dsm_loss(model, x0, generator=gen(1))
    loss.backward()
    assert loss.dtype == torch.float64 and torch.isfinite(loss)
    with torch.no_grad():
        x = sdeflow.sample(model, shape=(2, 1, 8, 8), solver="euler", steps=3, seed=0,
                           dtype=torch.float64)
    assert x.shape == (2, 1, 8, 8) and x.dtype == torch.float64 and torch.isfinite(x).all()
