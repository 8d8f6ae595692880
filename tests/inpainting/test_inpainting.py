"""Inpainting, RePaint and colorization against the exact conditional distributions of Gaussian
mixtures (p_0(x_u | x_k = y) is a mixture of conditioned Gaussians, see
:meth:`GaussianMixture.conditional`). Threshold: 2 × the largest |MMD²| between independent
samples of the exact conditional (its noise floor)."""
import math

import pytest
import torch

import sdeflow
from sdeflow.denoiser import Denoiser
from sdeflow.inpainting import (COLOR_BASIS, Observation, colorize, inpaint, load_mask, make_mask,
                                repaint, repaint_schedule)
from sdeflow.metrics.distances import mmd2
from sdeflow.oracle import GaussianMixture

from ..conftest import gen

N = 2000


def problem(name):
    """(mixture, known mask, observed point): the ring observed at x = 0.5 (a two-mode
    conditional in y) and a correlated 4-D mixture observed in two coordinates."""
    if name == "ring":
        gm = GaussianMixture.ring(8, 2.0, 0.25)
        return gm, torch.tensor([True, False]), torch.tensor([0.5, 0.0], dtype=torch.float64)
    gm = GaussianMixture.random(4, k=3, seed=3, scale=1.5)
    return gm, torch.tensor([True, True, False, False]), gm.sample(1, generator=gen(7))[0]


def reference(cond):
    ref = cond.sample(N, generator=gen(11))
    return ref, max(abs(mmd2(cond.sample(N, generator=gen(20 + i)), ref)) for i in range(6))


@pytest.mark.parametrize("name", ["ring", pytest.param("rand4", marks=pytest.mark.slow)])  # 5 s each
@pytest.mark.parametrize("sde_name", ["vp", "edm"])
def test_pc_inpainting_samples_the_exact_conditional(name, sde_name):
    """score_sde's PC inpainting (reverse-diffusion predictor + Langevin corrector, replacement
    after every step) with snr 0.3 and 500 steps: measured |MMD²|/floor 0.0–0.6. Without the
    corrector (Euler–Maruyama) the same replacement is biased: 5–50 × the floor."""
    gm, known, obs = problem(name)
    ref, floor = reference(gm.conditional(known, obs[known]))
    y = obs.expand(N, gm.dim).clone()
    x = inpaint(gm.denoiser(sdeflow.get_sde(sde_name)), y, known, solver="pc", steps=500, snr=0.3,
                seed=0)
    assert torch.equal(x[:, known], y[:, known])
    assert mmd2(x[:, ~known], ref) < 2 * floor


@pytest.mark.parametrize("solver", ["pc", "euler_maruyama", "ddim", "heun", "dpmpp_2m", "unipc",
                                    "deis", "edm_stochastic", "dpm_solver_2", "dpmpp_2m_sde",
                                    "ancestral", "reverse_diffusion"])
def test_every_fixed_grid_solver_keeps_the_known_values_exactly(solver):
    gm, known, obs = problem("rand4")
    y = obs.expand(64, 4).clone()
    x, stats = inpaint(gm.denoiser(sdeflow.EDMSDE()), y, known, solver=solver, steps=10, seed=0,
                       return_stats=True)
    assert torch.equal(x[:, known], y[:, known]) and torch.isfinite(x).all()
    assert stats["nfe"] > 0


def test_repaint_schedule_walks_down_with_jumps():
    path = repaint_schedule(20, jump_length=5, resamplings=3)
    assert path[0] == 0 and path[-1] == 20
    moves = [b - a for a, b in zip(path, path[1:])]
    assert set(moves) == {1, -1}
    # every multiple of 5 is revisited: 2 jumps of 5 at each of 4 points
    assert moves.count(-1) == 2 * 5 * 4 and moves.count(1) == 20 + 2 * 5 * 4
    assert repaint_schedule(7, 10, 10) == list(range(8))  # jump longer than the walk: no jumps
    with pytest.raises(ValueError):
        repaint_schedule(10, 0, 1)


def test_repaint_resampling_converges_to_the_exact_conditional():
    """RePaint on the ring (VP), Euler–Maruyama steps down, 100 steps, jumps of 5: r = 1 (no
    resampling) is plain replacement and is biased (measured 50 × the floor); with r = 10
    resamplings the unknown part harmonises with the known one: measured −0.1 × the floor
    (EDM: 0.3 ×)."""
    gm, known, obs = problem("ring")
    ref, floor = reference(gm.conditional(known, obs[known]))
    y = obs.expand(N, 2).clone()
    model = gm.denoiser(sdeflow.VPSDE())
    errs = {}
    for r in (1, 10):
        x, stats = repaint(model, y, known, solver="euler_maruyama", steps=100, jump_length=5,
                           resamplings=r, seed=0, return_stats=True)
        assert torch.equal(x[:, known], y[:, known])
        errs[r] = mmd2(x[:, ~known], ref) / floor
        assert stats["steps_down"] == stats["nfe"] - 1 == 100 + (r - 1) * 5 * 20
    assert errs[1] > 10 and errs[10] < 2


def _pixel_model(gm, sde):
    """The mixture over RGB values of a single pixel, as an image model (B, 3, 1, 1)."""
    inner = gm.denoiser(sde)
    return Denoiser(lambda x, t: inner.x0(x.reshape(-1, 3), t).reshape(x.shape), sde)


def test_colorization_samples_the_exact_conditional_given_the_grey_level():
    """Colorization is inpainting in the decoupled basis: the output's grey level equals the
    input's (to rounding), and its colour coordinates follow the exact conditional of the
    rotated mixture given the first coordinate √3·g (four isotropic colour clusters; measured
    0.1 × the floor — with thin anisotropic clusters replacement is biased, as for inpainting)."""
    gm = GaussianMixture(torch.tensor([1.0, 2.0, 1.0, 1.5]),
                         0.6 * torch.randn(4, 3, generator=gen(5), dtype=torch.float64), stds=0.2)
    B = COLOR_BASIS
    rotated = GaussianMixture(gm.weights, gm.means @ B.T, covs=B @ gm.covs @ B.T)
    g_obs = 0.1
    ref, floor = reference(rotated.conditional(torch.tensor([True, False, False]),
                                               torch.tensor([math.sqrt(3) * g_obs])))
    g = torch.full((N, 1, 1, 1), g_obs, dtype=torch.float64)
    x = colorize(_pixel_model(gm, sdeflow.EDMSDE()), g, solver="pc", steps=500, snr=0.3, seed=0)
    torch.testing.assert_close(x.mean(1, keepdim=True), g, rtol=0, atol=1e-12)
    coords = torch.einsum("dc,bc->bd", B, x.reshape(N, 3))[:, 1:]
    assert mmd2(coords, ref) < 2 * floor


def test_masks_and_observation_errors(tmp_path):
    from PIL import Image
    for kind in ("center", "left", "right", "top", "bottom", "checkerboard"):
        m = make_mask(kind, 8)
        assert m.shape == (1, 1, 8, 8) and set(m.unique().tolist()) == {0.0, 1.0}
    assert make_mask("center", 8)[0, 0, 2:6, 2:6].sum() == 0
    assert abs(make_mask("random", 64, fraction=0.3).mean().item() - 0.7) < 0.03
    a = (make_mask("left", 8)[0, 0].numpy() * 255).astype("uint8")
    Image.fromarray(a).save(tmp_path / "m.png")
    assert torch.equal(load_mask(tmp_path / "m.png"), make_mask("left", 8))
    assert load_mask(tmp_path / "m.png", size=16).shape == (1, 1, 16, 16)
    y = torch.zeros(2, 1, 8, 8)
    with pytest.raises(ValueError, match="broadcast"):
        Observation(y, torch.ones(3, 3))
    with pytest.raises(ValueError, match="0 .* and 1"):
        Observation(y, torch.full((8, 8), 0.5))
    with pytest.raises(ValueError, match="nothing"):
        Observation(y, torch.zeros(8, 8))
    with pytest.raises(ValueError, match="orthogonal"):
        Observation(torch.zeros(2, 3, 4, 4), torch.ones(4, 4), basis=torch.ones(3, 3))
    gm, known, obs = problem("ring")
    with pytest.raises(ValueError, match="adaptive"):
        inpaint(gm.denoiser(sdeflow.EDMSDE()), obs[None], known, solver="rk45")
    with pytest.raises(ValueError, match="unknown mask"):
        make_mask("star", 8)


def test_repaint_steps_none_is_the_papers_250_through_colorize():
    """``steps=None`` (what `sdeflow colorize --method repaint` passes without --steps) is
    RePaint's default grid of 250 intervals, through colorize as through repaint itself."""
    from sdeflow.inpainting.repaint import REPAINT_STEPS
    means = torch.tensor([[0.3, 0.0, -0.3], [-0.3, 0.2, 0.1]], dtype=torch.float64)
    gm = GaussianMixture(torch.tensor([1.0, 1.0]), means, stds=0.2)
    g = torch.full((2, 1, 1, 1), 0.1, dtype=torch.float64)
    x, st = colorize(_pixel_model(gm, sdeflow.EDMSDE()), g, method="repaint", steps=None,
                     jump_length=50, resamplings=1, seed=0, return_stats=True)
    assert REPAINT_STEPS == 250 and st["steps_down"] == 250 and torch.isfinite(x).all()
    torch.testing.assert_close(x.mean(1, keepdim=True), g, rtol=0, atol=1e-12)
