"""The Gaussian-mixture oracle itself is right: score = ∇log p_t by autograd, Tweedie's formula,
sampling moments."""
import torch

from sdeflow.oracle import GaussianMixture

from .conftest import gen


def test_score_is_gradient_of_log_density():
    gm = GaussianMixture.random(6, k=4, seed=3)
    x = torch.randn(16, 6, generator=gen(0), dtype=torch.float64, requires_grad=True)
    for s, sigma in [(1.0, 0.0), (0.8, 0.3), (0.05, 0.99)]:
        (grad,) = torch.autograd.grad(gm.log_prob(x, s, sigma).sum(), x)
        torch.testing.assert_close(gm.score(x.detach(), s, sigma), grad, rtol=1e-9, atol=1e-11)


def test_tweedie_links_denoiser_and_score():
    """E[x0|x] = (x + σ² ∇log p_t(x)) / s."""
    gm = GaussianMixture.random(5, k=3, seed=4)
    x = torch.randn(32, 5, generator=gen(1), dtype=torch.float64)
    s, sigma = torch.full((32,), 0.6, dtype=torch.float64), torch.full((32,), 0.7, dtype=torch.float64)
    expected = (x + 0.49 * gm.score(x, s, sigma)) / 0.6
    torch.testing.assert_close(gm.x0(x, s, sigma), expected, rtol=1e-10, atol=1e-12)


def test_log_prob_of_single_gaussian_matches_torch():
    cov = torch.tensor([[0.5, 0.2], [0.2, 0.3]], dtype=torch.float64)
    gm = GaussianMixture([1.0], [[1.0, -1.0]], covs=cov[None])
    x = torch.randn(10, 2, generator=gen(2), dtype=torch.float64)
    ref = torch.distributions.MultivariateNormal(torch.tensor([0.5, -0.5], dtype=torch.float64),
                                                 0.25 * cov + 0.16 * torch.eye(2, dtype=torch.float64))
    torch.testing.assert_close(gm.log_prob(x, 0.5, 0.4), ref.log_prob(x))


def test_samples_have_the_mixture_moments():
    gm = GaussianMixture.random(3, k=2, seed=5)
    x = gm.sample(200_000, generator=gen(3))
    mean = (gm.weights[:, None] * gm.means).sum(0)
    second = (gm.weights[:, None, None] * (gm.covs + gm.means[:, :, None] * gm.means[:, None, :])).sum(0)
    cov = second - mean[:, None] * mean[None]
    torch.testing.assert_close(x.mean(0), mean, atol=0.01, rtol=0)  # se ≈ 0.002
    torch.testing.assert_close(torch.cov(x.T), cov, atol=0.02, rtol=0)
