"""One default network per data shape, defined once in sdeflow.models.default_model_kwargs."""
import pytest
import torch

from sdeflow.demo import digits_config
from sdeflow.models import MLP, build_model, default_model_kwargs, list_models

# what TrainConfig.resolved fills in from the data; the defaults must leave these to it
DATA_SIZES = {"in_channels", "out_channels", "resolution", "dim", "num_classes", "cond_channels"}
IMAGE_SHAPES = [(1, 8, 8), (3, 8, 8), (1, 16, 16), (1, 28, 28), (3, 30, 30), (3, 32, 32),
                (3, 64, 64), (3, 128, 128), (3, 256, 256), (1, 7, 7)]


def test_8x8_images_get_the_demo_unet():
    """The digits demo trains the 8×8 default (0.76 M parameters), not the constructor's."""
    kw = default_model_kwargs("unet", (1, 8, 8))
    assert kw == dict(channels=32, channel_mult=[1, 2], num_res_blocks=1, attn_resolutions=[4])
    assert digits_config().model_kwargs == kw
    net = build_model("unet", **kw, in_channels=1, resolution=8)
    assert sum(p.numel() for p in net.parameters()) == 755_009


def test_2d_toy_data_get_the_mlp_every_toy_run_has_used():
    """Same architecture as MLP's constructor defaults, so toy results stay comparable."""
    net = build_model("mlp", **default_model_kwargs("mlp", (2,)), dim=2)
    assert [p.shape for p in net.parameters()] == [p.shape for p in MLP(dim=2).parameters()]


@pytest.mark.parametrize("model", ["unet", "dit"])
@pytest.mark.parametrize("shape", IMAGE_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_defaults_merge_with_the_data_sizes_and_build(model, shape):
    """Merged as TrainConfig.resolved merges them (user kwargs override, data sizes added):
    a valid network at every resolution, also class- and image-conditional (built on the
    meta device: shapes only, no memory)."""
    kw = default_model_kwargs(model, shape)
    assert not DATA_SIZES & set(kw)
    kw.update(in_channels=shape[0], resolution=shape[-1], num_classes=10, cond_channels=1)
    with torch.device("meta"):
        build_model(model, **kw)


@pytest.mark.parametrize("shape", [(2,), (10,), (64,), (3, 4)])
def test_vector_defaults_build(shape):
    kw = default_model_kwargs("mlp", shape)
    assert not DATA_SIZES & set(kw)
    build_model("mlp", **kw, dim=int(torch.tensor(shape).prod()))


def test_bigger_images_get_wider_deeper_networks():
    params = []
    for res in (8, 16, 32, 64):
        with torch.device("meta"):
            net = build_model("unet", **default_model_kwargs("unet", (3, res, res)), in_channels=3,
                              resolution=res)
        params.append(sum(p.numel() for p in net.parameters()))
    assert params == sorted(params) and params[-1] > 20 * params[0]


def test_every_model_has_defaults_and_callers_get_a_fresh_dict():
    for model in list_models():
        shape = (2,) if model == "mlp" else (1, 8, 8)
        kw = default_model_kwargs(model, shape)
        kw.clear()
        assert default_model_kwargs(model, shape)
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        default_model_kwargs("resnet", (1, 8, 8))
    with pytest.raises(ValueError, match="unet: needs a square image shape"):
        default_model_kwargs("unet", (2,))
