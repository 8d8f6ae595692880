import pytest
import torch

import sdeflow
from sdeflow.schedules import get_timesteps, list_schedules


@pytest.mark.parametrize("schedule", ["uniform", "karras", "logsnr", "quadratic"])
def test_schedules_decrease_with_exact_endpoints(sde_case, schedule):
    _, sde, _ = sde_case
    ts = get_timesteps(sde, 17, schedule)
    assert ts.shape == (18,) and ts.dtype == torch.float64
    assert ts[0] == sde.T and ts[-1] == sde.t_min
    assert (ts[1:] < ts[:-1]).all()


def test_schedules_follow_their_definitions():
    sde = sdeflow.VPSDE()
    lam = sde.log_snr(get_timesteps(sde, 10, "logsnr"))
    torch.testing.assert_close(lam.diff(), lam.diff()[:1].expand(10), rtol=1e-9, atol=1e-12)
    edm = sdeflow.EDMSDE()
    ts = get_timesteps(edm, 18, "karras")
    # Karras et al. eq. 5 with σ_max = 80, σ_min = 0.002, ρ = 7
    i = torch.arange(19, dtype=torch.float64)
    ref = (80 ** (1 / 7) + i / 18 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    torch.testing.assert_close(ts, ref)
    q = get_timesteps(edm, 4, "quadratic", t_start=1.0, t_end=0.1)
    torch.testing.assert_close(q, 0.1 + 0.9 * torch.tensor([1, 0.5625, 0.25, 0.0625, 0.0], dtype=torch.float64))


def test_registry_and_errors():
    assert {"uniform", "karras", "edm", "logsnr", "quadratic"} <= set(list_schedules())
    sde = sdeflow.EDMSDE()
    with pytest.raises(ValueError, match="choices"):
        get_timesteps(sde, 10, "cosine-ish")
    with pytest.raises(ValueError, match="positive integer"):
        get_timesteps(sde, 0)
    with pytest.raises(ValueError, match=r"\[t_min, T\]"):
        get_timesteps(sde, 10, t_start=200.0)
    with pytest.raises(ValueError, match="t_start > t_end"):
        get_timesteps(sde, 10, t_start=1.0, t_end=2.0)


def test_free_end_schedules_need_the_final_denoising():
    """vp_trailing ends before t_end: refused unless the caller finishes with x̂0 (sample() with
    denoise=True on a fixed grid); likelihood/encode keep the default and refuse it."""
    from sdeflow.likelihood import encode, log_likelihood
    from sdeflow.oracle import GaussianMixture
    sde = sdeflow.EDMSDE()
    with pytest.raises(ValueError, match="'vp_trailing' ends early.*final denoising"):
        get_timesteps(sde, 4, "vp_trailing")
    assert get_timesteps(sde, 4, "vp_trailing", allow_free_end=True)[-1] > sde.t_min
    model = GaussianMixture.ring().denoiser(sde)
    x = sde.prior_sample((3, 2), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert sdeflow.sample(model, x, solver="ddim", steps=3, schedule="vp_trailing").shape == x.shape
    for call in (lambda: sdeflow.sample(model, x, solver="ddim", steps=3, schedule="vp_trailing",
                                        denoise=False),
                 lambda: encode(model, x, solver="euler", steps=3, schedule="vp_trailing"),
                 lambda: log_likelihood(model, x, solver="euler", steps=3, schedule="vp_trailing")):
        with pytest.raises(ValueError, match="ends early"):
            call()
    with pytest.raises(ValueError, match="adaptive.*schedule"):
        sdeflow.sample(model, x, solver="rk45", schedule="vp_trailing")


@pytest.mark.parametrize("base", ["logsnr", "karras", "ays", "gits"])
def test_trailing_schedules_drop_the_last_time_of_one_more_step(base):
    """``<base>_trailing`` with n steps = ``<base>`` with n + 1 steps, t_end dropped: n + 1 noise
    levels of the base schedule, the last one the final x̂0 call's; free-end (refused without
    the final denoising)."""
    for sde in (sdeflow.EDMSDE(), sdeflow.VPSDE()):
        for n in (1, 4, 9):
            full = get_timesteps(sde, n + 1, base)
            ts = get_timesteps(sde, n, f"{base}_trailing", allow_free_end=True)
            torch.testing.assert_close(ts, full[:-1], rtol=1e-12, atol=0)
            assert ts[-1] > sde.t_min
        with pytest.raises(ValueError, match="ends early"):
            get_timesteps(sde, 4, f"{base}_trailing")



def test_ipndm_counts_the_final_denoising_on_trailing_grids(monkeypatch):
    """On a trailing grid the x̂0 call is the first-order step to σ = 0, so iPNDM (order 4)
    lowers its order one step later: 1, 2, 3, 2 (| x̂0) on 4 steps instead of 1, 2, 2, 1; and
    sample() sets the flag on grids that end above t_min only, named or explicit (DPM-Solver++
    keeps its orders)."""
    from sdeflow.oracle import GaussianMixture
    from sdeflow.samplers import exponential
    from sdeflow.samplers.registry import Context, get_solver
    sde = sdeflow.VPSDE()
    model = GaussianMixture.ring().denoiser(sde)
    x = sde.prior_sample((8, 2), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    seen, step_order = [], exponential.step_order
    monkeypatch.setattr(exponential, "step_order", lambda *a: seen.append(step_order(*a)) or seen[-1])
    ts = get_timesteps(sde, 4, "logsnr_trailing", allow_free_end=True)
    orders = {}
    for final in (False, True):
        seen.clear()
        get_solver("ipndm").fn(model, x, ts, Context(final_denoise=final))
        orders[final] = list(seen)
    assert orders == {False: [1, 2, 2, 1], True: [1, 2, 3, 2]}, orders
    seen.clear()
    sdeflow.sample(model, x, solver="dpmpp_3m", steps=4, schedule="logsnr_trailing")
    assert seen == [1, 2, 2, 1]
    info = get_solver("ipndm")
    for sched, final in (("logsnr_trailing", True), ("vp_trailing", True), ("logsnr", False)):
        ts = get_timesteps(sde, 4, sched, allow_free_end=True)
        want = model.x0(info.fn(model, x, ts, Context(final_denoise=final)), ts[-1])
        other = model.x0(info.fn(model, x, ts, Context(final_denoise=not final)), ts[-1])
        got = sdeflow.sample(model, x, solver="ipndm", steps=4, schedule=sched)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
        assert (got - other).abs().max() > 1e-4, sched  # the flag changes the answer
        # the same grid as explicit times (a tuned or fall-back result), in float32 too, and
        # as tuning evaluates it: the same answer
        explicit = sdeflow.sample(model, x, solver="ipndm", timesteps=ts)
        torch.testing.assert_close(explicit, want, rtol=0, atol=1e-12)
        x32 = sdeflow.sample(model, x.float(), solver="ipndm", timesteps=ts.float())
        torch.testing.assert_close(x32.double(), want, rtol=0, atol=1e-4)
        assert (x32.double() - other).abs().max() > 1e-4, sched
        from sdeflow.tuning import _Objective
        obj = _Objective(model, "ipndm", 4, {}, {}, True, False, 3, 0.2)
        torch.testing.assert_close(obj.answer(ts, "ipndm", {}, x), want, rtol=0, atol=1e-12)
    # a grid that ends at t_min in half precision does not (t_min compared in its dtype)
    from sdeflow.schedules import ends_early
    for dt in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        assert not ends_early(sde, get_timesteps(sde, 4, "logsnr", dtype=dt)), dt
        assert ends_early(sde, get_timesteps(sde, 4, "logsnr_trailing", allow_free_end=True,
                                             dtype=dt)), dt
    # an explicit t_end above t_min is an early end too
    ts = get_timesteps(sde, 4, "logsnr", t_end=0.05)
    got = sdeflow.sample(model, x, solver="ipndm", steps=4, schedule="logsnr", t_end=0.05)
    want = model.x0(info.fn(model, x, ts, Context(final_denoise=True)), ts[-1])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
