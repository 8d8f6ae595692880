"""A tiny random class-conditional DiT (DiTTransformer2DModel with learned sigma) saved as a
pipeline folder loads as a Denoiser on the VP SDE: the first half of its output channels at
every trained timestep, class labels as cond, CFG with the null label, and a latent model when
the folder has a VAE."""
import copy

import pytest
import torch

import sdeflow

diffusers = pytest.importorskip("diffusers")
from sdeflow.guidance import ClassifierFreeGuidance  # noqa: E402
from sdeflow.interop import discrete_times, from_dit, load_diffusers  # noqa: E402
from sdeflow.latent import LatentDenoiser  # noqa: E402

from ..conftest import gen  # noqa: E402
from . import tiny  # noqa: E402

CLASSES = 10


@pytest.fixture(scope="module")
def dit_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("dit")
    tiny.dit(classes=CLASSES).save_pretrained(d / "transformer")
    diffusers.DDIMScheduler().save_pretrained(d / "scheduler")
    return d


def test_is_the_mean_half_of_the_network_at_trained_timesteps(dit_dir):
    model = from_dit(dit_dir, dtype=torch.float64)
    net = copy.deepcopy(model.net.fn.module)
    assert model.prediction == "eps" and not isinstance(model, LatentDenoiser)
    x = torch.randn(3, 4, 8, 8, generator=gen(0), dtype=torch.float64)
    y = torch.tensor([0, 4, 9])
    with torch.no_grad():
        for n in (0, 250, 999):
            t = discrete_times(model, torch.tensor([n] * 3))
            out = net(x, torch.full((3,), float(n), dtype=torch.float64), class_labels=y).sample
            assert out.shape[1] == 8  # ε̂ and the variance interpolation
            torch.testing.assert_close(model.eps(x, t, class_labels=y), out[:, :4],
                                       rtol=1e-10, atol=1e-10)


def test_cfg_with_the_null_label_and_sampling(dit_dir):
    """for_labels(model, g − 1, num_classes) is DiT's ε_u + g(ε_c − ε_u), ε_u at the null
    label num_classes (DiT's label dropout index)."""
    model = load_diffusers(dit_dir)
    guided = ClassifierFreeGuidance.for_labels(model, 3.0, CLASSES)
    x, y = torch.randn(2, 4, 8, 8, generator=gen(1)), torch.tensor([1, 2])
    t = discrete_times(model, torch.tensor([600, 600]))
    with torch.no_grad():
        ec, eu = model.eps(x, t, class_labels=y), model.eps(x, t, class_labels=torch.full((2,), CLASSES))
        torch.testing.assert_close(guided.eps(x, t, class_labels=y), eu + 4.0 * (ec - eu))
        z = sdeflow.sample(guided, shape=(2, 4, 8, 8), solver="dpmpp_2m", steps=4, seed=0,
                           cond={"class_labels": y})
    assert torch.isfinite(z).all()


def test_pipeline_with_a_vae_is_a_latent_model(tmp_path):
    tiny.dit(classes=CLASSES).save_pretrained(tmp_path / "transformer")
    tiny.vae().save_pretrained(tmp_path / "vae")
    model = from_dit(tmp_path)
    assert isinstance(model, LatentDenoiser) and model.image_shape == (3, 16, 16)
    with torch.no_grad():
        img = sdeflow.sample(model, shape=(2, 3, 16, 16), solver="ddim", steps=3, seed=0,
                             cond={"class_labels": torch.tensor([0, 1])})
    assert img.shape == (2, 3, 16, 16)


def test_refusals_name_the_problem():
    torch.manual_seed(0)
    odd = diffusers.DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=4, in_channels=4, out_channels=6, num_layers=1,
        sample_size=8, patch_size=2, num_embeds_ada_norm=CLASSES, norm_num_groups=4)
    with pytest.raises(ValueError, match="out_channels=6 for in_channels=4"):
        from_dit(odd)
    with pytest.raises(ValueError, match="unsupported prediction_type 'flow_prediction'"):
        from_dit(tiny.dit(), dict(prediction_type="flow_prediction"))
    model = from_dit(tiny.dit())
    with pytest.raises(ValueError, match=r"\(B, 4, 8, 8\)"):
        model.eps(torch.zeros(1, 4, 16, 16), 0.5, class_labels=torch.tensor([0]))
