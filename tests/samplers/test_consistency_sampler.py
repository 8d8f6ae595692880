"""The consistency sampler's mechanics: one NFE per step, Algorithm 1 of Song et al. 2023
step for step, determinism by seed, and the constraint of zero-shot editing on every state the
model sees.

The model here is the exact mixture denoiser: for it f(x_T, T) = E[x0 | x_T] is a point near the
data's mean, not a sample, so nothing is compared with the data in this file; trained consistency
models are, in tests/training/test_consistency.py.
"""
import pytest
import torch

import sdeflow
from sdeflow.inpainting import Observation
from sdeflow.samplers import get_solver

from ..conftest import gen


@pytest.fixture(scope="module")
def model(ring):
    return ring.denoiser(sdeflow.EDMSDE())


def _x_T(model, n=16, seed=0):
    return model.sde.prior_sample((n, 2), generator=gen(seed), dtype=torch.float64)


def test_registered_as_a_one_step_stochastic_sampler():
    info = get_solver("consistency")
    assert (info.kind, info.default_steps) == ("sde", 1)
    assert "consistency" in sdeflow.list_solvers("sde")


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_nfe_is_the_number_of_steps(model, steps):
    """The solver returns x̂0 itself: by default nothing is spent after the last step; an
    explicit denoise=True costs one more call."""
    x, stats = sdeflow.sample(model, shape=(8, 2), solver="consistency", steps=steps, seed=0,
                              dtype=torch.float64, return_stats=True)
    assert stats["nfe"] == steps and stats["steps"] == steps and x.dtype == torch.float64
    _, stats = sdeflow.sample(model, shape=(8, 2), solver="consistency", steps=steps, seed=0,
                              denoise=True, dtype=torch.float64, return_stats=True)
    assert stats["nfe"] == steps + 1


def test_one_step_is_f_at_T(model):
    x_T = _x_T(model)
    x = sdeflow.sample(model, x_T, solver="consistency", denoise=False)
    assert torch.equal(x, model.x0(x_T, model.sde.T))


def test_multistep_denoises_and_renoises_with_fresh_noise(model):
    """x̂0 ← f(x_T, τ0); x ← s(τi)x̂0 + σ(τi)z, x̂0 ← f(x, τi), the noise from the sampler's
    generator in order: the sampler equals this loop written out, to the bit."""
    sde, x_T = model.sde, _x_T(model)
    ts = torch.tensor([80.0, 2.0, 0.3, sde.t_min], dtype=torch.float64)
    x = sdeflow.sample(model, x_T, solver="consistency", timesteps=ts, generator=gen(3),
                       denoise=False)
    g, x0 = gen(3), model.x0(x_T, ts[0])
    for t in ts[1:-1]:
        z = torch.randn(x0.shape, generator=g, dtype=x0.dtype)
        x0 = model.x0(sde.s(t) * x0 + sde.sigma(t) * z, t)
    assert torch.equal(x, x0)


def test_same_seed_same_samples_other_seed_other_samples(model):
    def draw(seed):
        return sdeflow.sample(model, shape=(8, 2), solver="consistency", steps=3, seed=seed,
                              denoise=False, dtype=torch.float64)
    assert torch.equal(draw(1), draw(1))
    assert not torch.allclose(draw(1), draw(2))


def test_the_constraint_reaches_every_state_the_model_sees(ring):
    """A constraint that writes 10·t into coordinate 0: every network input carries it."""
    seen = []
    exact = ring.denoiser(sdeflow.EDMSDE())

    def net(x, t):
        seen.append((x[:, 0].clone(), t.clone()))
        return exact.net(x, t)

    model = sdeflow.Denoiser(net, exact.sde)

    def constraint(t, x, ctx):
        x = x.clone()
        x[:, 0] = 10 * t
        return x

    sdeflow.sample(model, _x_T(model), solver="consistency", steps=3, seed=0, denoise=False,
                   constraint=constraint)
    assert len(seen) == 3
    for x_known, t in seen:
        assert torch.allclose(x_known, 10 * t)


def test_zero_shot_inpainting_keeps_the_known_coordinate(ring):
    """Replacement at each step (Algorithm 4): with a last evaluation at τ = 0.05, where the exact
    f is nearly the identity, the output's known coordinate is y to within a few τ — before
    ``Observation.fill``; without the constraint it lands anywhere on the ring."""
    model = ring.denoiser(sdeflow.EDMSDE())
    y = torch.zeros(64, 2, dtype=torch.float64)
    y[:, 0] = 2.0
    obs = Observation(y, torch.tensor([1.0, 0.0], dtype=torch.float64))
    ts = [80.0, 0.05, model.sde.t_min]
    kw = dict(timesteps=ts, seed=0, denoise=False, solver="consistency")
    x = sdeflow.sample(model, _x_T(model, 64), constraint=obs.constraint(model.sde), **kw)
    free = sdeflow.sample(model, _x_T(model, 64), **kw)
    err = (x[:, 0] - 2.0).abs().max().item()
    assert err < 0.2, err
    assert (free[:, 0] - 2.0).abs().max().item() > 1.0
