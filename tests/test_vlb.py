"""DDPM's variational bound (`sdeflow.vlb`) held to closed forms on Gaussian data N(μ, s²I).

For such data every quantity is Gaussian: the exact ε-model is ε̂(x, t) = σ(x − s(t)μ)/V(t) with
V = s(t)²s² + σ(t)², the forward chain's joint law is Gaussian, and each term of the bound is a
KL between Gaussians. The reference here builds the posterior q(x_{i−1}|x_i, x_0) and the exact
model's mean E[x_{i−1}|x_i] by conditioning joint Gaussians (not by the β-formulas of the
module) and takes the KLs from torch.distributions. The bound sits above the data's entropy by
a gap computed in closed form; with the true reverse variance Var[x_{i−1}|x_i] the gap is exactly
KL(q(x_N) ‖ N(0, I)). Improved DDPM's learned variance, trained briefly, approaches that optimum
and beats both fixed choices. Float64 throughout the maths.
"""
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

import sdeflow
from sdeflow.cli import main
from sdeflow.data import get_data
from sdeflow.samplers.ddim import ddim_step
from sdeflow.samplers.registry import Context
from sdeflow.training import Trainer, TrainConfig
from sdeflow.training.score import ScoreMatching
from sdeflow.vlb import ddpm_bound, ddpm_chain, hybrid_loss

MU = torch.tensor([0.5, -0.3], dtype=torch.float64)
SD = 0.1                      # the data's std: v* then spans (0, 1) over the first steps
D = MU.numel()
N = 100                       # DDPM's T for the tests (the default 1000 is checked separately)
ENTROPY = D / 2 * math.log(2 * math.pi * math.e * SD**2)
OLD = Path(__file__).parent / "fixtures" / "v0_1"


def gen(seed):
    return torch.Generator().manual_seed(seed)


def data(n, seed=0):
    return MU + SD * torch.randn(n, D, generator=gen(seed), dtype=torch.float64)


def exact_eps(sde, scale=1.0):
    """E[ε | x_t] for N(μ, s²I) data, optionally scaled (a model with a 10 % error)."""
    def net(x, t):
        s, sig = sde.s(t)[:, None], sde.sigma(t)[:, None]
        return scale * sig * (x - s * MU.to(x)) / (s**2 * SD**2 + sig**2)
    return net


def moments(sde, n=N):
    """Per step i = 1…n (index i−1): s_{i−1}, s_i, σ_{i−1}, σ_i and a = s_i/s_{i−1}, from the SDE
    at t_i = i·T/n."""
    t = torch.arange(n + 1, dtype=torch.float64) * sde.T / n
    s, sig = sde.s(t), sde.sigma(t)
    return s[:-1], s[1:], sig[:-1], sig[1:], s[1:] / s[:-1]


def reverse_moments(sde, n=N):
    """Per step: the posterior variance Var[x_{i−1}|x_i, x_0] (β̃), the forward step's variance
    β (x_i = a x_{i−1} + √β z) and the true reverse variance Var[x_{i−1}|x_i] of the data."""
    sp, s, gp, g, a = moments(sde, n)
    post = gp**2 - (a * gp**2) ** 2 / g**2          # conditioning (x_{i−1}, x_i) on x_0
    beta = g**2 - a**2 * gp**2
    vp, v = sp**2 * SD**2 + gp**2, s**2 * SD**2 + g**2
    true = vp - (a * vp) ** 2 / v                    # conditioning (x_{i−1}, x_i) on nothing
    return post, beta, true


def model_variance(sde, variance, n=N, scale=1.0):
    """Σ_i of p_θ per step: β, β̃ or the true reverse variance — with β̃_2 at i = 1 for both
    fixed ones (β̃_1 = 0; for β, Ho et al.'s fixedlarge)."""
    post, beta, true = reverse_moments(sde, n)
    post, beta = (torch.cat([post[1:2], v[1:]]) for v in (post, beta))
    return scale * {"beta": beta, "beta_tilde": post, "true": true}[variance]


def reference_terms(sde, x0, eps, variance, decoder="gaussian", var_scale=1.0):
    """(L_N, terms (B, N): column i−1 = L_0 (i = 1) or L_{i−1}) at x_i = s_i x0 + σ_i ε[i−1]."""
    sp, s, gp, g, a = (m[:, None, None] for m in moments(sde))
    xt = s * x0 + g * eps                                          # (N, B, D)
    cov = a * gp**2                                                # Cov(x_{i−1}, x_i | x_0)
    q_var = (gp**2 - cov**2 / g**2).clamp_min(1e-300)               # 0 at i = 1 (unused)
    q = Normal(sp * x0 + cov / g**2 * (xt - s * x0), q_var.sqrt())
    vp, v = sp**2 * SD**2 + gp**2, s**2 * SD**2 + g**2
    p_mean = sp * MU + a * vp / v * (xt - s * MU)                   # E[x_{i−1} | x_i]
    p = Normal(p_mean, model_variance(sde, variance, scale=var_scale)[:, None, None].sqrt())
    kl = kl_divergence(q, p)[1:].sum(-1)
    if decoder == "gaussian":
        dec = -p.log_prob(x0)[0].sum(-1)
    else:  # mass of the bin of width 2/255 around x0, the outer bins open; Φ by the standard
        # library's erfc, exact to a few ulps in the lower tail (the upper one is mirrored there)
        h, m, sd = 1 / 255, p.loc[0], p.scale[0]
        mass = phi((x0 + h - m) / sd) - phi((x0 - h - m) / sd)
        mass = torch.where(x0 < -1 + h, phi((x0 + h - m) / sd), mass)
        mass = torch.where(x0 > 1 - h, phi((m - x0 + h) / sd), mass)
        dec = -mass.log().sum(-1)
    prior = kl_divergence(Normal(s[-1] * x0, g[-1]), Normal(0.0, 1.0)).sum(-1)
    return prior, torch.cat([dec[:, None], kl.T], 1)


def phi(z):
    """The standard normal CDF, elementwise, by math.erfc."""
    cdf = np.vectorize(lambda u: 0.5 * math.erfc(-u / math.sqrt(2)))
    return torch.from_numpy(cdf(z.numpy()))


def expected_bound(sde, variance, n=N):
    """E over x_0 and the chain of L, in nats: E KL_i = ½Σ_d[log(Σ/β̃) + Var[x_{i−1}|x_i]/Σ − 1]
    (as E‖μ̃ − E[x_{i−1}|x_i]‖² = Var[x_{i−1}|x_i] − β̃) and
    E L_0 = ½Σ_d[log 2πΣ_1 + Var[x_0|x_1]/Σ_1]."""
    post, _, true = reverse_moments(sde, n)
    var = model_variance(sde, variance, n)
    kl = 0.5 * D * ((var / post).log() + true / var - 1)[1:].sum()
    dec = 0.5 * D * (math.log(2 * math.pi) + var[0].log() + true[0] / var[0])
    return (expected_prior(sde, n) + kl + dec).item()


def expected_prior(sde, n=N):
    t = torch.tensor(sde.T, dtype=torch.float64)
    s2, g2 = sde.s(t) ** 2, sde.sigma(t) ** 2
    return 0.5 * (g2 + s2 * (MU**2 + SD**2) - 1 - g2.log()).sum().item()


def prior_mismatch(sde):
    """KL(q(x_N) ‖ N(0, I)) of the marginal q(x_N) = N(s(T)μ, (s(T)²s² + σ(T)²) I)."""
    t = torch.tensor(sde.T, dtype=torch.float64)
    s2, var = sde.s(t) ** 2, sde.s(t) ** 2 * SD**2 + sde.sigma(t) ** 2
    return 0.5 * (var + s2 * MU**2 - 1 - var.log()).sum().item()


def full_noise(x0, seed, n=N):
    """Every step 2…n for every sample and one ε per term: the bound with fixed randomness."""
    return torch.arange(2, n + 1).expand(x0.shape[0], n - 1), \
        torch.randn(n, *x0.shape, generator=gen(seed), dtype=torch.float64)


def learned_oracle(sde, n=N):
    """The exact ε-model with the variance interpolation v* that gives Σ = Var[x_{i−1}|x_i] on
    the n-step chain: the optimum a learned variance aims at."""
    ch = ddpm_chain(sde, n)
    log_b, log_bt = ch.log_variances(torch.arange(1, n + 1))
    v_star = (model_variance(sde, "true", n).log() - log_bt) / (log_b - log_bt)
    eps = exact_eps(sde)

    def net(x, t):
        i = torch.round(t * n / sde.T).long()
        return torch.cat([eps(x, t), (2 * v_star[i - 1] - 1)[:, None].expand_as(x)], 1)
    return sdeflow.Denoiser(net, sde, prediction="eps", learn_sigma=True)


# --- the chain of a VP SDE -----------------------------------------------------------------------

def test_the_chain_has_the_sdes_marginals_and_ddpms_betas():
    sde = sdeflow.VPSDE()
    ch = ddpm_chain(sde, 1000)
    alpha_bar = torch.cumprod(1 - ch.beta[1:], 0)
    assert torch.allclose(alpha_bar, ch.s[1:] ** 2, rtol=1e-12, atol=0)
    ddpm = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)     # Ho et al. 2020
    rel = (ch.beta[1:] / ddpm - 1).abs()
    # β_i = 1 − exp(−∫β): 1.10e-4 … 0.0198; measured 9.9 % off at i = 1, ≤ 1.05 % from i = 100
    assert rel[0] < 0.1 and rel[99:].max() < 0.0105
    _, beta, _ = reverse_moments(sde, 1000)                          # SDE.transition's form
    assert torch.allclose(ch.beta[1:], beta, rtol=1e-9, atol=0)


def test_only_vp_models_have_a_ddpm_bound():
    x = data(4)
    for sde in (sdeflow.VESDE(), sdeflow.SubVPSDE(), sdeflow.EDMSDE()):
        model = sdeflow.Denoiser(lambda x, t: x, sde)
        with pytest.raises(ValueError, match="needs a model on the VP SDE.*PF-ODE likelihood"):
            ddpm_bound(model, x, N, decoder="gaussian")
    model = sdeflow.Denoiser(exact_eps(sdeflow.VPSDE()), sdeflow.VPSDE(), prediction="eps")
    with pytest.raises(ValueError, match="learn_sigma=True"):
        ddpm_bound(model, x, N, variance="learned", decoder="gaussian")
    with pytest.raises(ValueError, match="on the 256 levels"):
        ddpm_bound(model, x, N)                      # continuous data, discrete decoder
    with pytest.raises(ValueError, match="steps .* must be an integer ≥ 2"):
        ddpm_bound(model, x, 1, decoder="gaussian")


# --- (a) the bound equals its closed form -------------------------------------------------------

@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_bound_of_the_exact_eps_model_equals_the_gaussian_kls(variance):
    sde = sdeflow.VPSDE()
    model = sdeflow.Denoiser(exact_eps(sde), sde, prediction="eps")
    x0 = data(32, seed=1)
    noise = full_noise(x0, seed=2)
    res = ddpm_bound(model, x0, N, variance=variance, decoder="gaussian", noise=noise)
    prior, terms = reference_terms(sde, x0, noise[1], variance)
    assert res.nfe == N and res.kl.shape == (32, N - 1)
    torch.testing.assert_close(res.prior, prior, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(res.decoder, terms[:, 0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(res.kl, terms[:, 1:], rtol=1e-8, atol=1e-12)
    ref = prior + terms.sum(1)
    err = (res.nats - ref).abs().max().item()
    assert err < 1e-9                                     # measured 4e-15 (β), 1e-14 (β̃) nats
    # power: a 10 % error in ε̂ moves every sample's bound by ≥ 1.7e-3 nats (mean 0.21 for β,
    # 0.30 for β̃), one in Σ by ≥ 0.015 (mean 0.82, 0.20): far outside the tolerance
    worse = sdeflow.Denoiser(exact_eps(sde, 1.1), sde, prediction="eps")
    res_eps = ddpm_bound(worse, x0, N, variance=variance, decoder="gaussian", noise=noise)
    prior, terms = reference_terms(sde, x0, noise[1], variance, var_scale=1.1)
    assert (res_eps.nats - ref).abs().min() > 1e-3
    assert (prior + terms.sum(1) - ref).abs().min() > 1e-3


def test_discretised_decoder_is_the_gaussians_mass_on_the_bin():
    sde = sdeflow.VPSDE()
    model = sdeflow.Denoiser(exact_eps(sde), sde, prediction="eps")
    x0 = torch.round((data(64, seed=3) + 1) * 127.5) / 127.5 - 1    # 8-bit levels in [−1, 1]
    x0[:4] = torch.tensor([[-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0], [1.0, 1.0]])  # open bins
    noise = full_noise(x0, seed=4)
    res = ddpm_bound(model, x0, N, variance="beta", noise=noise)
    prior, terms = reference_terms(sde, x0, noise[1], "beta", decoder="discrete")
    torch.testing.assert_close(res.decoder, terms[:, 0], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(res.nats, prior + terms.sum(1), rtol=1e-9, atol=1e-9)
    assert (res.nats >= 0).all()                        # −log of a probability, and KLs


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_expected_bound_sits_above_the_entropy_by_the_closed_form_gap(variance):
    sde = sdeflow.VPSDE()
    model = sdeflow.Denoiser(exact_eps(sde), sde, prediction="eps")
    res = ddpm_bound(model, data(4000, seed=5), N, variance=variance, decoder="gaussian",
                     full=True, seed=6)
    expected = expected_bound(sde, variance)
    se = res.nats.std().item() / math.sqrt(4000)
    assert abs(res.nats.mean().item() - expected) < 4 * se
    # E[L] − H: 0.378 nats (β, with β̃_2 at i = 1) and 0.583 nats (β̃) for N = 100, s = 0.1,
    # D = 2 (with β_1 at i = 1 the β gap would be 0.366)
    gap = {"beta": 0.3780, "beta_tilde": 0.5826}[variance]
    assert expected - ENTROPY == pytest.approx(gap, abs=1e-3)


def test_sampled_steps_give_an_unbiased_estimate():
    sde = sdeflow.VPSDE()
    model = sdeflow.Denoiser(exact_eps(sde), sde, prediction="eps")
    res = ddpm_bound(model, data(4000, seed=7), N, variance="beta", decoder="gaussian",
                     t_draws=4, seed=8)
    se = res.nats.std().item() / math.sqrt(4000)
    assert res.nfe == 5 and not res.exact
    assert abs(res.nats.mean().item() - expected_bound(sde, "beta")) < 4 * se   # se ≈ 0.09


def test_with_the_true_reverse_variance_the_gap_is_the_prior_mismatch():
    """Exact reverse kernels make the bound tight up to the prior:
    E[L] = H + KL(q(x_N) ‖ N(0, I))."""
    sde = sdeflow.VPSDE()
    model = learned_oracle(sde)
    x0 = data(32, seed=9)
    noise = full_noise(x0, seed=10)
    res = ddpm_bound(model, x0, N, decoder="gaussian", noise=noise)    # variance: learned
    prior, terms = reference_terms(sde, x0, noise[1], "true")
    assert res.options.variance == "learned"
    torch.testing.assert_close(res.nats, prior + terms.sum(1), rtol=1e-9, atol=1e-9)
    # the closed forms agree: E[L] − H = KL(q(x_N) ‖ N(0, I)) = 7.3e-6 nats (< E[L_N] = 7.8e-6)
    assert expected_bound(sde, "true") - ENTROPY == pytest.approx(prior_mismatch(sde), abs=1e-12)
    big = ddpm_bound(model, data(4000, seed=11), N, decoder="gaussian", full=True, seed=12)
    se = big.nats.std().item() / math.sqrt(4000)
    assert abs(big.nats.mean().item() - (ENTROPY + prior_mismatch(sde))) < 4 * se


def test_ancestral_step_draws_the_learned_variance():
    sde = sdeflow.VPSDE()
    model = learned_oracle(sde)
    ch = ddpm_chain(sde, N)
    i = 3
    x = ch.marginal(MU[None], torch.tensor([i]), torch.ones(1, D, dtype=torch.float64))
    x = x.expand(20000, D)
    t, t_prev = (ch.t[j].expand(20000) for j in (i, i - 1))
    out = ddim_step(model, x, t, t_prev, Context(generator=gen(13)), eta=1.0)
    want = model_variance(sde, "true")[i - 1].item()               # Σ = Var[x_{i−1}|x_i]
    post = model_variance(sde, "beta_tilde")[i - 1].item()         # what η = 1 draws otherwise
    assert out.var(0).mean().item() == pytest.approx(want, rel=0.03)   # 20000 draws: ±1 %
    assert abs(want / post - 1) > 0.15
    mean = ch.posterior_mean(model.x0(x[:1], t[:1]), x[:1], torch.tensor([i]))
    torch.testing.assert_close(out.mean(0), mean[0], atol=4 * math.sqrt(want / 20000), rtol=0)


def test_the_step_to_t_zero_of_a_learned_variance_is_noise_free():
    """A variance output r = 1.2 (v = 1.1: Improved DDPM does not clamp v) on a grid ending at
    t = 0, where β̃ = 0: log β̃ = −∞ must not reach exp(v log β + (1 − v) log β̃) (= +∞ there);
    the last step lands on x̂0, like the posterior it stands for."""
    sde = sdeflow.VPSDE()
    eps = exact_eps(sde)
    model = sdeflow.Denoiser(lambda x, t: torch.cat([eps(x, t), torch.full_like(x, 1.2)], 1), sde,
                             prediction="eps", learn_sigma=True)
    seen = []
    x = sdeflow.sample(model, shape=(64, D), dtype=torch.float64, solver="ancestral",
                       timesteps=[1.0, 0.5, 0.1, 0.0], denoise=False, seed=0,
                       callback=lambda t, x: seen.append(x))
    assert torch.isfinite(x).all()
    torch.testing.assert_close(x, model.x0(seen[-2], 0.1), rtol=1e-12, atol=1e-12)


def test_noise_follows_x0s_dtype():
    """ε given in float64 for float32 data: the bound is computed (and returned) in float32, as
    with ε in float32."""
    sde = sdeflow.VPSDE()
    model = sdeflow.Denoiser(exact_eps(sde), sde, prediction="eps")
    x0 = data(8, seed=22).float()
    steps, eps = full_noise(x0, seed=23)
    res = ddpm_bound(model, x0, N, decoder="gaussian", noise=(steps, eps))
    same = ddpm_bound(model, x0, N, decoder="gaussian", noise=(steps, eps.float()))
    assert res.nats.dtype == torch.float32
    torch.testing.assert_close(res.nats, same.nats, rtol=0, atol=0)


# --- (b) a learned variance learns the optimum --------------------------------------------------

class GaussianData:
    shape, num_classes = (D,), 0

    def draw(self, n, generator=None):
        return (MU + SD * torch.randn(n, D, generator=generator, dtype=torch.float64)).float(), None


@pytest.fixture(scope="module")
def learned():
    """400 steps of L_simple + λ L_vlb on N(μ, s²I), N = 100. λ = 0.01 makes λN = 1, the weight
    L_vlb has in Improved DDPM's own runs (λ = 0.001 with T = 1000 … 4000)."""
    cfg = TrainConfig(data="gmm", sde="vp", prediction="x0", precondition="edm", sigma_data=0.5,
                      loss="eps", learn_sigma=True, vlb_weight=0.01, ddpm_steps=N,
                      model_kwargs=dict(hidden=64, depth=2), steps=400, batch_size=1024,
                      lr=3e-3, warmup=50, ema_decay=0.99, tensorboard=False)
    st = Trainer(cfg, data=GaussianData(), device="cpu")
    for _ in range(cfg.steps):
        st.train_step()
    return st.ema_model


def test_learned_variance_approaches_the_true_reverse_variance(learned):
    sde = learned.sde
    ch = ddpm_chain(sde, N, dtype=torch.float32)
    steps = torch.arange(1, N + 1).repeat_interleave(64)
    x0 = data(steps.numel(), seed=14).float()
    xt = ch.marginal(x0, steps, torch.randn(x0.shape, generator=gen(15)))
    with torch.no_grad():
        _, v = learned.predict_variance(xt, ch.t[steps])
    log_b, log_bt = ch.log_variances(steps)
    sigma = torch.exp(v * log_b[:, None] + (1 - v) * log_bt[:, None]).double()
    ratio = (sigma.reshape(N, -1).mean(1) / model_variance(sde, "true")).sub(1).abs()
    # over the first steps β is 20–37 % too large and β̃ up to 2.3× too small; the learned Σ
    # is within 10 % at every step (measured: max 5.7 % at i = 2, ≤ 3.8 % from i = 6 on)
    assert ratio.max() < 0.10 and ratio[5:].max() < 0.06, ratio[:8]


def test_learned_variance_gives_the_tightest_bound(learned):
    x0 = data(2000, seed=16).float()
    noise = tuple(a.float() if a.is_floating_point() else a for a in full_noise(x0, seed=17))
    bound = {v: ddpm_bound(learned, x0, N, variance=v, decoder="gaussian", noise=noise).nats
             for v in ("beta", "beta_tilde", "learned")}
    for fixed in ("beta", "beta_tilde"):
        diff = (bound["learned"] - bound[fixed]).double()
        # measured: 0.352 ± 0.008 nats below β, 0.603 ± 0.018 below β̃
        assert diff.mean() + 5 * diff.std() / math.sqrt(2000) < -0.2
    # and close to the best any variance can do with an exact mean, H + KL(q(x_N) ‖ N(0, I))
    # ≈ H (measured H + 0.026 ± 0.033)
    nats = bound["learned"].double()
    assert nats.mean().item() - ENTROPY < 0.05 + 4 * nats.std().item() / math.sqrt(2000)


def _objective_and_batch(data, shape, levels=None):
    """ScoreMatching with learn_sigma on ``data``, a fixed ε-model with r = 0.3, and a float64
    batch of 16 (on ``levels`` grey levels in [−1, 1] if given)."""
    image = len(shape) > 1
    cfg = TrainConfig(data=data, model="unet" if image else "mlp", sde="vp", prediction="eps",
                      precondition=None, loss="eps", learn_sigma=True, ddpm_steps=N,
                      **({"vlb_bins": levels} if levels else {}))
    obj = ScoreMatching(cfg, data=None)
    model = sdeflow.Denoiser(lambda x, t: torch.cat([0.5 * x, torch.full_like(x, 0.3)], 1),
                             obj.sde, prediction="eps", learn_sigma=True)
    g = gen(30)
    x0 = torch.rand(16, *shape, generator=g, dtype=torch.float64) * 2 - 1
    if levels:
        x0 = torch.round((x0 + 1) / 2 * (levels - 1)) / (levels - 1) * 2 - 1
    batch = dict(x0=x0, step=torch.randint(1, N + 1, (16,), generator=g),
                 eps=torch.randn(x0.shape, generator=g, dtype=torch.float64))
    return obj, model, batch


def test_hybrid_loss_keeps_float64_data_in_float64():
    """STYLE #8: the chain is float64 and follows the batch (a float32 chain would put its
    rounding, ~1e-8 relative, into a float64 loss)."""
    obj, model, batch = _objective_and_batch("gmm", (D,))
    loss, metrics = obj.loss({"model": model}, batch, gen(0))
    want, vlb = hybrid_loss(model, batch["x0"], (batch["step"], batch["eps"]),
                            ddpm_chain(obj.sde, N), weighting="eps", vlb_weight=0.001)
    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, want, rtol=1e-13, atol=0)
    torch.testing.assert_close(metrics["vlb"], vlb, rtol=1e-13, atol=0)


def test_hybrid_loss_decodes_image_data_on_vlb_bins_levels():
    """The embedded digits have 17 grey levels: with vlb_bins = 17 the decoder's bins are
    theirs (2/16 wide), not 8-bit ones (2/255)."""
    obj, model, batch = _objective_and_batch("digits", (1, 8, 8), levels=17)
    batch["step"][:] = 1                                         # every sample on the decoder
    _, metrics = obj.loss({"model": model}, batch, gen(0))
    chain, noise = ddpm_chain(obj.sde, N), (batch["step"], batch["eps"])
    vlb = {n: hybrid_loss(model, batch["x0"], noise, chain, decoder="discrete", num_bins=n)[1]
           for n in (17, 256)}
    torch.testing.assert_close(metrics["vlb"], vlb[17], rtol=1e-13, atol=0)
    # L_vlb = N·L_0 here; 16× narrower bins cost ≈ log₂(255/16) = 4.0 bits/dim (measured 3.8)
    assert (vlb[256] - vlb[17]) / N > 3
    with pytest.raises(ValueError, match="vlb_bins"):
        TrainConfig(data="digits", model="unet", vlb_bins=1).validate()


# --- (c) the command line -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vp_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("vp_run")
    assert main(["train", "--sde", "vp", "--loss", "eps", "--learn-sigma", "--ddpm-steps", "50",
                 "--steps", "150", "--hidden", "32", "--depth", "1", "--no-tensorboard",
                 "--out", str(path)]) == 0
    return path


def test_likelihood_command_reports_the_bound_and_its_terms(vp_run, tmp_path):
    out = tmp_path / "vlb.json"
    assert main(["likelihood", str(vp_run), "--bound", "vlb", "--full", "-n", "200",
                 "--out", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert (rep["ddpm_steps"], rep["variance"], rep["decoder"], rep["exact"], rep["nfe"]) == \
        (50, "learned", "gaussian", True, 50)
    # the library's bound on the same draws (the run's data, -n 200 at --seed 0) and noise
    model, cfg = sdeflow.load(vp_run, kind="score")
    x = get_data(cfg.data, **cfg.data_kwargs).draw(200, gen(0))[0]
    res = ddpm_bound(model, x.float(), 50, decoder="gaussian", full=True, seed=0)
    assert rep["bits_per_dim"] == pytest.approx(res.mean, rel=1e-6)
    assert rep["terms_bits_per_dim"] == pytest.approx(res.breakdown(), rel=1e-6)
    # a bound on log p_θ, and E log p_θ ≤ E log p_data: the ELBO can't beat the true density
    se = rep["bits_per_dim_se"] * 2 * math.log(2)
    assert rep["elbo_nats"] < rep["true_log_density_nats"] + 4 * se


def test_likelihood_command_bounds_discrete_data(vp_run, tmp_path):
    data_file, out = tmp_path / "x.npy", tmp_path / "vlb.json"
    np.save(data_file, np.array([[100, 140], [128, 128], [0, 255]], dtype=np.int64))
    assert main(["likelihood", str(vp_run), "--bound", "vlb", "--data-file", str(data_file),
                 "--num-bins", "256", "--data-range", "-3", "3", "--variance", "beta",
                 "--t-draws", "8", "--out", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert (rep["decoder"], rep["variance"], rep["exact"], rep["nfe"]) == \
        ("discrete", "beta", False, 9)
    assert rep["bits_per_dim"] > 0                      # −log₂ of a probability, plus KLs


def _fails(argv, capsys, match):
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sdeflow ") and match in err[0], err
    return err[0]


def test_bad_requests_are_one_line_errors(vp_run, tmp_path, capsys):
    edm_run = tmp_path / "edm"
    shutil.copytree(OLD / "score", edm_run)
    _fails(["likelihood", str(edm_run), "--bound", "vlb"], capsys,
           "--bound vlb needs a model on the VP SDE")
    base = ["likelihood", str(vp_run), "--bound", "vlb", "-n", "8", "--out",
            str(tmp_path / "x.json")]
    _fails(base + ["--t-draws", "0"], capsys, "--t-draws must be positive")
    _fails(base + ["--ddpm-steps", "1"], capsys, "must be an integer ≥ 2")
    _fails(base + ["--ddpm-steps", "0"], capsys, "must be an integer ≥ 2")   # not the run's T
    _fails(base + ["--num-bins", "256"], capsys, "must be integers in [0, 255]")
    _fails(["train", "--learn-sigma", "--steps", "1", "--out", str(tmp_path / "r")], capsys,
           "learn_sigma needs sde 'vp'")
