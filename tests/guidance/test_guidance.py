"""Classifier and classifier-free guidance against the Gaussian-mixture ground truth.

The 8-Gaussian ring with four classes of two neighbouring components each: the exact class
posterior p_t(y | x) and the exact class-conditional denoiser are closed-form, so guided
sampling with w = 1 must reproduce p_0(x | y). Threshold: 2 × the largest |MMD²| between
independent true samples (the noise floor, ≈1.5e-3 at n = 2000)."""
import pytest
import torch

import sdeflow
from sdeflow.denoiser import Denoiser
from sdeflow.guidance import ClassifierFreeGuidance, ClassifierGuidance
from sdeflow.metrics.distances import mmd2

from ..conftest import gen

CLASSES = [[0, 1], [2, 3], [4, 5], [6, 7]]
N = 2000


def exact_classifier(ring, sde):
    return lambda x, t: ring.class_log_likelihoods(x, CLASSES, sde.s(t), sde.sigma(t))


def conditional_net(ring, sde, prediction="x0"):
    """net(x, t, class_labels): the exact class-conditional model; label 4 (null) = unconditional."""
    parts = [ring.subset(c) for c in CLASSES] + [ring]
    convert = {"x0": lambda gm, x, t: gm.x0(x, sde.s(t), sde.sigma(t)),
               "score": lambda gm, x, t: gm.score(x, sde.s(t), sde.sigma(t))}[prediction]

    def net(x, t, class_labels=None):
        labels = torch.full((x.shape[0],), 4) if class_labels is None else class_labels
        out = torch.empty_like(x)
        for k in labels.unique().tolist():
            rows = labels == k
            out[rows] = convert(parts[k], x[rows], t[rows])
        return out
    return Denoiser(net, sde, prediction=prediction)


def floor_and_ref(target):
    ref = target.sample(N, generator=gen(5))
    floor = max(abs(mmd2(target.sample(N, generator=gen(100 + i)), ref)) for i in range(6))
    return ref, floor


@pytest.mark.parametrize("sde_name,solver,steps", [
    ("edm", "heun", 50), ("vp", "heun", 50), ("edm", "euler_maruyama", 500),
    ("vp", "pc", 300), ("edm", "dpmpp_2m", 40), ("vp", "unipc", 80)])
def test_classifier_guidance_with_exact_classifier_samples_the_class(ring, sde_name, solver, steps):
    """Measured |MMD²| / floor ≤ 0.6 for these (dpmpp_2m at 20 steps under VP: 12 — the
    guidance term is stiff near t_min, so fast solvers need ~40 steps)."""
    sde = sdeflow.get_sde(sde_name)
    guided = ClassifierGuidance(ring.denoiser(sde), exact_classifier(ring, sde), scale=1.0)
    y = 1
    ref, floor = floor_and_ref(ring.subset(CLASSES[y]))
    x, stats = sdeflow.sample(guided, shape=(N, 2), solver=solver, steps=steps, seed=0,
                              dtype=torch.float64, cond={"class_labels": torch.full((N,), y)},
                              return_stats=True)
    assert mmd2(x, ref) < 2 * floor
    assert stats["nfe"] == guided.nfe and guided.classifier_evals == guided.nfe


def test_classifier_guidance_scale_sharpens_towards_the_class(ring):
    """w = 0 is the unconditional model; as w grows, more samples land in the requested class."""
    sde = sdeflow.EDMSDE()
    fracs = []
    for w in (0.0, 0.5, 1.0, 3.0):
        guided = ClassifierGuidance(ring.denoiser(sde), exact_classifier(ring, sde), scale=w)
        x = sdeflow.sample(guided, shape=(1000, 2), solver="heun", steps=30, seed=1,
                           dtype=torch.float64, cond={"class_labels": torch.zeros(1000, dtype=torch.long)})
        fracs.append(ring.class_log_likelihoods(x, CLASSES).argmax(1).eq(0).double().mean().item())
    assert abs(fracs[0] - 0.25) < 0.05
    assert fracs[2] > 0.97 and fracs == sorted(fracs)


def test_cfg_with_w0_is_the_conditional_model_and_matches_classifier_guidance(ring):
    """CFG(w) = (1+w)·cond − w·uncond equals classifier guidance with scale 1 + w on the
    unconditional model when both use exact scores (∇log p(y|x) = ∇log p(x|y) − ∇log p(x));
    w = 0 is the conditional model itself. To 1e-10 in float64, for every prediction type."""
    sde = sdeflow.VPSDE()
    x = ring.sample(64, generator=gen(0)) * 1.3
    y = torch.arange(64) % 4
    t = torch.linspace(0.05, 0.9, 64, dtype=torch.float64)
    for prediction in ("x0", "score"):
        cond_model = conditional_net(ring, sde, prediction)
        for uncond in (None, {"class_labels": 4}):
            cfg0 = ClassifierFreeGuidance(cond_model, 0.0, uncond=uncond)
            assert torch.equal(cfg0.x0(x, t, class_labels=y), cond_model.x0(x, t, class_labels=y))
            for w in (0.5, 2.0):
                cfg = ClassifierFreeGuidance(cond_model, w, uncond=uncond)
                cg = ClassifierGuidance(ring.denoiser(sde), exact_classifier(ring, sde), 1 + w)
                a, b = cfg.predict(x, t, class_labels=y), cg.predict(x, t, class_labels=y)
                for fa, fb in zip(a, b):
                    torch.testing.assert_close(fa, fb, rtol=1e-10, atol=1e-10)


def test_cfg_batches_both_halves_into_one_network_call(ring):
    sde = sdeflow.EDMSDE()
    calls = []
    base = conditional_net(ring, sde)
    inner = base.net
    base.net = lambda x, t, **c: calls.append(x.shape[0]) or inner(x, t, **c)
    cfg = ClassifierFreeGuidance.for_labels(base, 2.0, num_classes=4)
    x, stats = sdeflow.sample(cfg, shape=(16, 2), solver="heun", steps=5, seed=0, dtype=torch.float64,
                              cond={"class_labels": torch.zeros(16, dtype=torch.long)},
                              return_stats=True)
    assert set(calls) == {32} and len(calls) == 11  # Heun 5 steps (10) + final denoise
    assert stats["nfe"] == 2 * 11  # two network passes per sample per evaluation


def test_cfg_every_prediction_type_gives_the_same_guided_model():
    """A random network read as x0, eps, v or score: combining in that parameterisation equals
    combining x̂0 (all four are affine in the output with the same coefficients)."""
    sde = sdeflow.EDMSDE()
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 2).double()

    def net(x, t, class_labels=None):
        lab = torch.zeros(x.shape[0]) if class_labels is None else class_labels.double()
        return lin(torch.cat([x, lab[:, None]], 1)) * (1 + t[:, None])

    x = torch.randn(8, 2, dtype=torch.float64)
    t = torch.full((8,), 0.7, dtype=torch.float64)
    y = torch.ones(8, dtype=torch.long)
    for prediction in ("x0", "eps", "v", "score"):
        base = Denoiser(net, sde, prediction=prediction)
        g = ClassifierFreeGuidance(base, 1.5).predict(x, t, class_labels=y)
        c, u = base.predict(x, t, class_labels=y), base.predict(x, t)
        for name in ("x0", "eps", "v", "score"):
            expect = 2.5 * getattr(c, name) - 1.5 * getattr(u, name)
            torch.testing.assert_close(getattr(g, name), expect, rtol=1e-12, atol=1e-12)


def test_guidance_errors_are_clear(ring):
    sde = sdeflow.EDMSDE()
    model = ring.denoiser(sde)
    g = ClassifierGuidance(model, exact_classifier(ring, sde))
    x = torch.zeros(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="class_labels"):
        g.x0(x, 1.0)
    with pytest.raises(ValueError, match="labels must lie"):
        g.x0(x, 1.0, class_labels=torch.full((4,), 9))
    with pytest.raises(TypeError, match="Denoiser"):
        ClassifierFreeGuidance(lambda x, t: x, 1.0)
    with pytest.raises(ValueError, match="needs cond"):
        ClassifierFreeGuidance(model, 1.0, uncond={"class_labels": 4}).x0(x, 1.0)
    with pytest.raises(TypeError, match="raw"):
        g.raw(x, 1.0)


def test_noise_conditional_classifier_trains_and_resumes_exactly(tmp_path):
    """6 steps straight == 3 steps, then resume to 6 (bit-identical weights)."""
    from sdeflow.guidance import ClassifierConfig, load_classifier, train_classifier
    cfg = dict(data="digits", steps=6, batch_size=16, ckpt_every=3, log_every=1,
               model_kwargs=dict(channels=8, channel_mult=[1, 2], num_res_blocks=1))
    train_classifier(ClassifierConfig(**cfg), tmp_path / "a", progress=False, device="cpu")
    train_classifier(ClassifierConfig(**{**cfg, "steps": 3}), tmp_path / "b", progress=False, device="cpu")
    train_classifier(ClassifierConfig(**cfg), tmp_path / "b", resume=True, progress=False, device="cpu")
    a, b = load_classifier(tmp_path / "a"), load_classifier(tmp_path / "b")
    def log(run):  # every column but the throughput (img_per_s), which differs between runs
        rows = [r.split(",") for r in (run / "loss.csv").read_text().splitlines()]
        return [r[:3] + r[4:] for r in rows]
    assert log(tmp_path / "a") == log(tmp_path / "b") and log(tmp_path / "a")[0][-1] == "accuracy"
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    x = torch.zeros(4, 1, 8, 8)
    assert a(x, torch.full((4,), 1.0)).shape == (4, 10) and a.num_classes == 10
    with pytest.raises(ValueError, match="not a classifier"):
        from sdeflow.train import TrainConfig, train
        train(TrainConfig(steps=1, batch_size=8, tensorboard=False), tmp_path / "d", progress=False)
        load_classifier(tmp_path / "d")
