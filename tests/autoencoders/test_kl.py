"""The closed-form KL (eq. 2.6), the reparameterised gradient and the discretized decoder, each
against an independent ground truth and shown to reject a subtly wrong case."""
import math

import torch

from sdeflow.autoencoders import build_autoencoder, gaussian_kl
from sdeflow.autoencoders.elbo import (diagonal_gaussian_log_prob, discretized_gaussian_log_prob,
                                       elbo_estimate, standard_normal_log_prob)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def posterior(b=4, d=8, seed=0):
    g = gen(seed)
    mu = torch.randn(b, d, generator=g, dtype=torch.float64)
    logvar = torch.randn(b, d, generator=g, dtype=torch.float64) * 0.5 - 0.5
    return mu, logvar


def test_kl_is_eq_2_6_and_its_monte_carlo_estimate():
    mu, logvar = posterior()
    kl = gaussian_kl(mu, logvar)
    eq_2_6 = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(1)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    assert torch.allclose(kl, eq_2_6, atol=1e-12)
    assert torch.allclose(kl, torch.distributions.kl_divergence(q, p).sum(1), atol=1e-12)
    # E_q[log q(z) − log p(z)] by Monte Carlo, with its standard error
    n = 200_000
    z = mu + (0.5 * logvar).exp() * torch.randn(n, *mu.shape, generator=gen(1), dtype=torch.float64)
    log_ratio = (diagonal_gaussian_log_prob(z.flatten(0, 1), mu.repeat(n, 1), logvar.repeat(n, 1))
                 - standard_normal_log_prob(z.flatten(0, 1))).view(n, -1)
    mc, se = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(n)
    assert ((kl - mc).abs() < 4 * se).all(), ((kl - mc) / se)
    # rejects: the KL of a posterior whose σ is 10 % off is many SEs from the MC estimate
    wrong = gaussian_kl(mu, logvar + 2 * math.log(1.1))
    assert ((wrong - mc).abs() > 4 * se).all(), ((wrong - mc) / se)


def _decoder():
    ae = build_autoencoder("linear", shape=[5], latent_dim=8, sigma_x=0.7).double()
    return ae.decoder_log_prob


def _finite_difference(f, v: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    grad = torch.zeros_like(v)
    for i in range(v.numel()):
        e = torch.zeros_like(v).view(-1)
        e[i] = h
        e = e.view_as(v)
        grad.view(-1)[i] = (f(v + e) - f(v - e)) / (2 * h)
    return grad


def test_reparameterised_gradient_matches_finite_differences():
    torch.manual_seed(0)
    mu, logvar = posterior(b=2)
    x = torch.randn(2, 5, generator=gen(2), dtype=torch.float64)
    eps = torch.randn(16, *mu.shape, generator=gen(3), dtype=torch.float64)  # fixed noise
    log_px = _decoder()
    f = lambda m, lv: elbo_estimate(x, m, lv, eps, log_px).sum()  # noqa: E731
    m, lv = mu.clone().requires_grad_(), logvar.clone().requires_grad_()
    g_mu, g_lv = torch.autograd.grad(f(m, lv), (m, lv))
    with torch.no_grad():
        fd_mu = _finite_difference(lambda v: f(v, logvar), mu)
        fd_lv = _finite_difference(lambda v: f(mu, v), logvar)
    assert torch.allclose(g_mu, fd_mu, atol=1e-6) and torch.allclose(g_lv, fd_lv, atol=1e-6)
    # rejects: z = μ + sg(σ) ε (no path derivative through σ) gives the wrong d/d log σ²
    lv2 = logvar.clone().requires_grad_()
    z = mu + (0.5 * lv2).exp().detach() * eps
    s = eps.shape[0]
    wrong = (log_px(x.repeat(s, 1), z.flatten(0, 1)).view(s, -1).mean(0)
             - gaussian_kl(mu, lv2)).sum()
    (g_wrong,) = torch.autograd.grad(wrong, lv2)
    assert (g_wrong - fd_lv).abs().max() > 1e-3


def test_discretized_decoder_is_a_distribution_over_the_levels():
    bits = 5
    levels = torch.linspace(-1, 1, 2 ** bits, dtype=torch.float64)[:, None]
    for mean, sigma in ((0.0, 0.01), (0.3, 0.2), (-0.97, 1.5), (4.0, 0.3)):
        m = torch.full_like(levels, mean)
        s = torch.tensor(math.log(sigma), dtype=torch.float64)
        total = discretized_gaussian_log_prob(levels, m, s, bits).exp().sum()
        assert abs(float(total) - 1) < 1e-9, (mean, sigma, total)
        # rejects: a grid of other levels (4 bits) does not carry the whole mass
        other = torch.linspace(-1, 1, 2 ** (bits - 1), dtype=torch.float64)[:, None]
        partial = discretized_gaussian_log_prob(other, m[:len(other)], s, bits).exp().sum()
        assert float(partial) < 0.9 or mean == 4.0
