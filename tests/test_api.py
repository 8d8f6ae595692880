"""The public API exactly as users (and external tests) call it, and its error messages."""
import pytest
import torch

import sdeflow
from sdeflow.oracle import GaussianMixture


@pytest.fixture
def model():
    gm = GaussianMixture.ring()
    sde = sdeflow.EDMSDE(sigma_min=0.002, sigma_max=80.0)
    return sdeflow.Denoiser(lambda x, t: gm.x0(x, sde.s(t), sde.sigma(t)), sde, prediction="x0")


def test_public_api_shape(model):
    x_T = 80.0 * torch.randn(16, 2, dtype=torch.float64)
    x0 = sdeflow.sample(model, x_T=x_T, solver="heun", steps=10)
    assert torch.is_tensor(x0) and x0.shape == (16, 2) and x0.dtype == torch.float64
    x1 = sdeflow.sample(model, shape=(5, 2), solver="euler_maruyama", steps=20, seed=0)
    assert x1.shape == (5, 2) and x1.dtype == torch.get_default_dtype()
    assert set(sdeflow.list_solvers(kind="ode")) >= {"euler", "heun", "rk4", "rk45", "ddim"}
    assert set(sdeflow.list_solvers(kind="sde")) >= {"euler_maruyama", "reverse_diffusion",
                                                      "ancestral", "pc", "annealed_langevin"}
    assert set(sdeflow.list_solvers()) == set(sdeflow.list_solvers("ode")) | set(sdeflow.list_solvers("sde"))
    assert set(sdeflow.list_schedules()) >= {"uniform", "karras", "logsnr", "quadratic"}


@pytest.mark.parametrize("schedule", sdeflow.list_schedules())
def test_every_schedule_is_usable(model, schedule):
    x = sdeflow.sample(model, shape=(4, 2), solver="euler", steps=5, schedule=schedule, seed=0)
    assert torch.isfinite(x).all()


def test_stats_do_not_change_the_default_return(model):
    x_T = torch.randn(4, 2)
    x, stats = sdeflow.sample(model, x_T, solver="rk45", rtol=1e-4, atol=1e-4, return_stats=True)
    assert torch.equal(x, sdeflow.sample(model, x_T, solver="rk45", rtol=1e-4, atol=1e-4))
    assert stats["nfe"] > 0 and stats["seconds"] >= 0 and stats["solver"] == "rk45"
    assert {"accepted_mean", "rejected_mean"} <= set(stats)


def test_generator_and_seed_reproduce(model):
    a = sdeflow.sample(model, shape=(3, 2), solver="ancestral", steps=10,
                       generator=torch.Generator().manual_seed(1))
    b = sdeflow.sample(model, shape=(3, 2), solver="ancestral", steps=10, seed=1)
    assert torch.equal(a, b)


def test_make_generator_has_one_behaviour():
    """seed → a new generator on the device, generator → itself, neither → None (torch's global
    RNG), both → ValueError; every entry point with seed/generator goes through it."""
    from sdeflow.rng import make_generator
    g = torch.Generator()
    assert make_generator(None, g) is g and make_generator(None, None) is None
    made = make_generator(3, None, "cpu")
    assert made.device == torch.device("cpu")
    assert torch.equal(torch.rand(4, generator=made), torch.rand(4, generator=torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="seed or generator"):
        make_generator(3, g)
    from sdeflow.inpainting import repaint
    gm = GaussianMixture.ring()
    model, x = gm.denoiser(sdeflow.VPSDE()), gm.sample(2)
    both = dict(seed=1, generator=torch.Generator())
    for call in (lambda: sdeflow.log_likelihood(model, x, divergence="hutchinson", **both),
                 lambda: sdeflow.bits_per_dim(model, torch.zeros(2, 2), **both),
                 lambda: repaint(model, x, torch.tensor([1.0, 0.0]), steps=2, **both)):
        with pytest.raises(ValueError, match="seed or generator"):
            call()


def test_callback_sees_every_step(model):
    seen = []
    sdeflow.sample(model, shape=(2, 2), solver="heun", steps=7, callback=lambda t, x: seen.append(float(t)))
    assert len(seen) == 7 and seen[-1] == pytest.approx(0.002)


def test_partial_interval(model):
    """t_start/t_end select a sub-interval (used for img2img-style starts and encoding)."""
    x = sdeflow.sample(model, torch.randn(4, 2), solver="heun", steps=5, t_start=1.0, t_end=0.5,
                       denoise=False)
    assert x.shape == (4, 2)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(solver="nope"), ValueError, "choices"),
    (dict(schedule="nope"), ValueError, "choices"),
    (dict(steps=0), ValueError, "positive integer"),
    (dict(x_T=torch.full((2, 2), float("nan"))), ValueError, "non-finite"),
    (dict(x_T=torch.zeros(2)), ValueError, "batch dimension"),
    (dict(x_T=torch.zeros(2, 2), shape=(3, 2)), ValueError, "disagrees"),
    (dict(t_start=1000.0), ValueError, r"\[t_min, T\]"),
    (dict(solver="rk45", steps=10), ValueError, "adaptive"),
    (dict(solver="rk45", rtol=-1.0), ValueError, "positive"),
    (dict(solver="heun", eta=0.3), TypeError, "eta"),
    (dict(seed=1, generator=torch.Generator()), ValueError, "seed or generator"),
    (dict(), ValueError, "x_T or shape"),
])
def test_bad_input_gets_a_clear_error(model, kwargs, error, match):
    kwargs = {"solver": "heun", **kwargs}
    if "x_T" not in kwargs and "shape" not in kwargs and match != "x_T or shape":
        kwargs["shape"] = (2, 2)
    with pytest.raises(error, match=match):
        sdeflow.sample(model, **kwargs)


def test_model_must_be_a_denoiser():
    with pytest.raises(TypeError, match="Denoiser"):
        sdeflow.sample(lambda x, t: x, shape=(2, 2))


def test_explicit_timesteps_replace_the_schedule():
    """sample(timesteps=ts) integrates on exactly that grid (same as the named schedule that
    produced it) and refuses grids that are not strictly decreasing inside [0, T]."""
    import sdeflow
    from sdeflow.oracle import GaussianMixture
    from sdeflow.schedules import get_timesteps
    sde = sdeflow.EDMSDE()
    gm = GaussianMixture.ring()
    model = sdeflow.Denoiser(lambda x, t: gm.x0(x, sde.s(t), sde.sigma(t)), sde)
    x_T = sde.prior_sample((16, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ts = get_timesteps(sde, 7, "karras")
    a, st = sdeflow.sample(model, x_T, solver="heun", timesteps=ts, return_stats=True)
    b = sdeflow.sample(model, x_T, solver="heun", steps=7, schedule="karras")
    assert torch.equal(a, b) and st["steps"] == 7 and st["schedule"] == "custom"
    for bad in ([1.0], [0.5, 0.7], [float(sde.T) * 2, 1.0], [[1.0, 0.5]]):
        with pytest.raises(ValueError, match="timesteps"):
            sdeflow.sample(model, x_T, solver="heun", timesteps=torch.tensor(bad, dtype=torch.float64))
    with pytest.raises(ValueError, match="replaces"):
        sdeflow.sample(model, x_T, solver="heun", timesteps=ts, steps=3)
