"""The ELBO and IWAE of the linear-Gaussian VAE against its closed forms (float64): p(x) =
N(b, WWᵀ + σ_x²I), E_q log p(x|z) analytic, the exact posterior N(M⁻¹Wᵀ(x−b)/σ_x², M⁻¹).
Monte-Carlo comparisons use 4 standard errors (a false alarm about once in 16 000 runs), and
each check is shown to reject a subtly wrong case."""
import math

import pytest
import torch

from sdeflow.autoencoders import build_autoencoder, elbo, iwae
from sdeflow.autoencoders.elbo import log_importance_weights

D, d = 6, 3


def gen(seed):
    return torch.Generator().manual_seed(seed)


def linear_vae(orthogonal: bool, seed: int = 0):
    """A float64 linear VAE with a random encoder; W's columns orthogonal or not."""
    torch.manual_seed(seed)
    ae = build_autoencoder("linear", shape=[D], latent_dim=d, sigma_x=0.5).double()
    with torch.no_grad():
        w = torch.randn(D, d, dtype=torch.float64)
        if orthogonal:
            q, _ = torch.linalg.qr(w)
            w = q * torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)
        ae.W.copy_(w)
        ae.b.copy_(torch.randn(D, dtype=torch.float64) * 0.3)
        ae.A.copy_(torch.randn(d, D, dtype=torch.float64) * 0.3)
        ae.c.copy_(torch.randn(d, dtype=torch.float64) * 0.1)
        ae.logvar.copy_(torch.randn(d, dtype=torch.float64) * 0.3 - 1)
    return ae


def mc_elbo(ae, x, samples, seed):
    """(MC ELBO with ``samples`` draws, its standard error from 200 single-draw estimates)."""
    single = torch.stack([elbo(ae, x, 1, gen(10_000 + seed + i)) for i in range(200)])
    return elbo(ae, x, samples, gen(seed)), single.std(0) / math.sqrt(samples)


def data(ae, n=64, seed=1):
    """x ~ p(x) of the model."""
    g = gen(seed)
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    return ae.decode(z) + ae.sigma_x * torch.randn(n, D, generator=g, dtype=torch.float64)


def closed_form_elbo(ae, x, sigma_scale=1.0):
    """−½[D log 2πσ_x² + (‖x − Wμ − b‖² + tr(W diag σ² Wᵀ))/σ_x²] − ½Σ(μ² + σ² − 1 − log σ²),
    written out independently of the package (σ optionally scaled)."""
    W, b, s2 = ae.W, ae.b, ae.sigma_x ** 2
    mu = x @ ae.A.T + ae.c
    var = ae.logvar.exp() * sigma_scale ** 2
    resid = ((x - mu @ W.T - b) ** 2).sum(1)
    trace = (W @ torch.diag(var) @ W.T).trace()
    expected = -0.5 * (D * math.log(2 * math.pi * s2) + (resid + trace) / s2)
    kl = 0.5 * (mu ** 2 + var - 1 - var.log()).sum(1)
    return expected - kl


def closed_form_log_px(ae, x):
    cov = ae.W @ ae.W.T + ae.sigma_x ** 2 * torch.eye(D, dtype=torch.float64)
    diff = x - ae.b
    maha = (diff @ torch.linalg.inv(cov) * diff).sum(1)
    return -0.5 * (D * math.log(2 * math.pi) + torch.logdet(cov) + maha)


@torch.no_grad()
def test_monte_carlo_elbo_matches_the_closed_form():
    ae = linear_vae(orthogonal=False)
    x = data(ae)
    truth = closed_form_elbo(ae, x)
    assert torch.allclose(ae.analytic_elbo(x), truth, atol=1e-10)
    assert torch.allclose(ae.exact_log_prob(x), closed_form_log_px(ae, x), atol=1e-10)
    est, se = mc_elbo(ae, x, 4000, 7)
    assert ((est - truth).abs() < 4 * se).all(), ((est - truth) / se).abs().max()
    # averaged over the examples (standard error of the mean), the same check passes and
    # rejects the closed form of a 10 % wider posterior
    se_mean = se.square().sum().sqrt() / len(x)
    assert abs(float((est - truth).mean())) < 4 * se_mean
    wrong = closed_form_elbo(ae, x, sigma_scale=1.1)
    assert abs(float((est - wrong).mean())) > 4 * se_mean


@torch.no_grad()
def test_elbo_is_below_log_likelihood():
    ae = linear_vae(orthogonal=False)
    x = data(ae)
    assert (ae.analytic_elbo(x) < ae.exact_log_prob(x)).all()


@torch.no_grad()
def test_exact_posterior_attains_log_likelihood():
    ae = linear_vae(orthogonal=True)
    ae.set_optimal_encoder()
    x = data(ae)
    log_px = closed_form_log_px(ae, x)
    # q is the exact posterior: its mean and (diagonal) covariance
    mean, cov = ae.exact_posterior(x)
    mu, logvar = ae.posterior(x)
    assert torch.allclose(mu, mean, atol=1e-12)
    assert torch.allclose(torch.diag(logvar[0].exp()), cov, atol=1e-12)
    assert torch.allclose(ae.analytic_elbo(x), log_px, atol=1e-6)
    # log p(x|z) + log p(z) − log q(z|x) = log p(x) for every z: one draw suffices
    assert torch.allclose(iwae(ae, x, 1, gen(3)), log_px, atol=1e-6)
    assert torch.allclose(elbo(ae, x, 20000, gen(4)), log_px, atol=0.05)
    # rejects: with W's columns not orthogonal the posterior is not diagonal, and the best
    # diagonal q stays below log p(x)
    other = linear_vae(orthogonal=False)
    other.set_optimal_encoder()
    gap = closed_form_log_px(other, x) - other.analytic_elbo(x)
    assert (gap > 1e-3).all()


@torch.no_grad()
def test_a_ten_percent_wider_posterior_is_detected():
    """At the exact posterior the MC ELBO matches log p(x) within 4 SE (averaged over the
    examples); with σ 10 % wider it falls below by KL(q ‖ p(z|x)) = 3·½(1.21 − 1 − log 1.21)
    ≈ 0.029 nats, more than 4 SE."""
    ae = linear_vae(orthogonal=True)
    ae.set_optimal_encoder()
    x = data(ae)
    log_px = closed_form_log_px(ae, x)

    def gap():
        est, se = mc_elbo(ae, x, 4000, 5)
        return float((log_px - est).mean()), float(se.square().sum().sqrt() / len(x))

    exact_gap, se = gap()
    assert abs(exact_gap) < 4 * se
    ae.logvar += 2 * math.log(1.1)
    wide_gap, se = gap()
    expected = 1.5 * (0.21 - math.log(1.21))
    assert wide_gap > 4 * se and wide_gap == pytest.approx(expected, abs=4 * se)


@torch.no_grad()
def test_iwae_increases_with_k_and_converges_to_log_likelihood():
    ae = linear_vae(orthogonal=False)
    ae.set_optimal_encoder()
    ae.logvar += 2 * math.log(1.3)  # a worse posterior: a gap of several nats at K = 1
    ae.c += 0.3
    x = data(ae, n=128)
    log_px = closed_form_log_px(ae, x)
    bounds = {k: iwae(ae, x, k, gen(k)) for k in (1, 10, 100, 1000)}
    means = [float((b - log_px).mean()) for b in bounds.values()]
    assert means == sorted(means) and means[0] < -1, means
    gap = bounds[1000] - log_px
    se = gap.std() / math.sqrt(len(gap))
    assert abs(float(gap.mean())) < 4 * se + 1e-3, (gap.mean(), se)
    # rejects: averaging log w (instead of the log of the average w) is the ELBO at every K
    mean_log_w = log_importance_weights(ae, x, 1000, gen(9)).mean(0) - log_px
    assert float(mean_log_w.mean()) < means[0] / 2


@pytest.mark.parametrize("k", [0, -1])
def test_iwae_refuses_no_samples(k):
    ae = linear_vae(orthogonal=False)
    with pytest.raises(ValueError, match="k ≥ 1"):
        iwae(ae, data(ae, 4), k)


@pytest.mark.parametrize("name,kw", [("vae", dict(likelihood="discretized")),
                                     ("vae", dict(likelihood="gaussian", beta=0.5)),
                                     ("kl", dict(recon="l1"))])
def test_training_loss_is_the_negative_elbo_per_dimension(name, kw):
    """loss(x, noise=ε) = (−ELBO + (β − 1) KL) / D on the same ε: the β-VAE objective, scaled
    per data dimension (a wrong divisor or a dropped β fails)."""
    from sdeflow.autoencoders.elbo import elbo_estimate, gaussian_kl
    torch.manual_seed(0)
    ae = build_autoencoder(name, in_channels=3, channels=8, downsample=2, latent_channels=2, **kw)
    ae = ae.double()
    x = torch.rand(4, 3, 8, 8, dtype=torch.float64) * 2 - 1
    mu, logvar = ae.posterior(x)
    eps = torch.randn(mu.shape, dtype=torch.float64)
    loss, _ = ae.loss(x, noise=eps)
    beta = ae.beta
    want = (-elbo_estimate(x, mu, logvar, eps[None], ae.decoder_log_prob)
            + (beta - 1) * gaussian_kl(mu, logvar)).mean() / x[0].numel()
    torch.testing.assert_close(loss, want, rtol=1e-10, atol=1e-12)
    wrong = (-elbo_estimate(x, mu, logvar, eps[None], ae.decoder_log_prob)).mean() / mu[0].numel()
    assert not torch.allclose(loss, wrong, rtol=1e-3)
