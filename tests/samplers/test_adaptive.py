"""The adaptive step loop (samplers/adaptive.py) on scripted trial steps whose errors are known,
so every accept/reject and every step size can be predicted by hand."""
import math

import pytest
import torch

import sdeflow
from sdeflow.samplers.adaptive import AdaptiveState, StepController, Trial, adaptive_loop
from sdeflow.samplers.registry import Context

f64 = torch.float64


def _state(B: int, t0: float, t_end: float, h: float) -> AdaptiveState:
    return AdaptiveState(torch.full((B,), t0, dtype=f64), torch.zeros(B, 1, dtype=f64),
                         torch.full((B,), h, dtype=f64), t_end)


def _limited(h_max: torch.Tensor, log: list | None = None):
    """dx/dt = 1 with err = |Δt| / h_max (per row): a step is accepted iff |Δt| ≤ h_max."""
    def step(t, x, dt, rows):
        if log is not None:
            log.append((rows.clone(), dt.clone()))
        return Trial(x + dt[:, None], dt.abs() / h_max[rows])
    return step


def test_last_step_lands_exactly_on_the_end_in_both_directions():
    """0 → 1 and 1 → 0 in steps of 0.3: the fourth step is clipped to 0.1 (not 0.3) and t ends at
    exactly t_end, x at its exact integral."""
    control = StepController(order=1, safety=1.0, min_factor=1.0, max_factor=1.0)
    for t0, t1 in ((0.0, 1.0), (1.0, 0.0)):
        log = []
        st = _state(3, t0, t1, 0.3)
        x = adaptive_loop(_limited(torch.ones(3, dtype=f64), log), st, control, name="test")
        assert (st.t == t1).all()
        torch.testing.assert_close(x, torch.full((3, 1), t1 - t0, dtype=f64))
        steps = [dt[0].item() for _, dt in log]
        sign = 1.0 if t1 > t0 else -1.0
        assert steps[:3] == [sign * 0.3] * 3 and steps[3] == pytest.approx(sign * 0.1, abs=1e-15)


def test_per_sample_counts_follow_each_rows_own_errors():
    """Rows that accept steps up to 0.25 and 0.5 both start at h = 1: one rejection each
    (factor err⁻¹ = 1/4 and 1/2), then 4 and 2 accepted steps; the finished row is no longer
    evaluated; counts go to ctx.stats."""
    log, ctx = [], Context()
    control = StepController(order=1, safety=1.0)
    h_max = torch.tensor([0.25, 0.5], dtype=f64)
    adaptive_loop(_limited(h_max, log), _state(2, 0.0, 1.0, 1.0), control, ctx, name="test")
    assert ctx.stats == dict(accepted_mean=3.0, accepted_max=4, rejected_mean=1.0, rejected_max=1)
    assert [r.tolist() for r, _ in log] == [[0, 1], [0, 1], [0, 1], [0], [0]]


def test_batch_control_moves_all_rows_together():
    """With control="batch" every trial covers every row with one step size (from the RMS error
    over the batch), so the per-row counts are equal; per-sample control gives different ones."""
    h_max = torch.tensor([0.1, 0.3, 1.0], dtype=f64)
    counts = {}
    for mode in ("sample", "batch"):
        log, ctx = [], Context()
        adaptive_loop(_limited(h_max, log), _state(3, 0.0, 1.0, 0.5), StepController(
            order=1, control=mode), ctx, name="test")
        counts[mode] = ctx.stats
        if mode == "batch":
            assert all(len(r) == 3 and (dt == dt[0]).all() for r, dt in log)
    b, s = counts["batch"], counts["sample"]
    assert b["accepted_mean"] == b["accepted_max"] and b["rejected_mean"] == b["rejected_max"]
    assert s["accepted_mean"] < s["accepted_max"]


def test_growth_is_capped_and_held_after_a_rejection():
    """Scripted errors: tiny (growth capped at max_factor = 10), too large (rejected: shrink),
    tiny again (no growth right after the rejection), tiny (growth again)."""
    errs = iter([1e-12, 4.0, 1e-12, 1e-12, 1e-12, 1e-12])
    dts = []

    def step(t, x, dt, rows):
        dts.append(dt.item())
        return Trial(x, torch.full_like(dt, next(errs)))
    control = StepController(order=2, safety=0.9, max_factor=10.0)
    with pytest.raises(RuntimeError, match="did not reach"):
        adaptive_loop(step, _state(1, 0.0, 100.0, 0.01), control, name="test", max_steps=5)
    assert dts[:5] == pytest.approx([0.01, 0.1, 0.1 * 0.9 * 4.0 ** -0.5, 0.045, 0.45])


def test_pi_factor_is_the_gustafsson_formula():
    """h'/h = clip(safety·err^{−(1−β)/k}·err_prev^{β/k}); β = 0 is the I-controller."""
    err = torch.tensor([0.3, 0.8, 3.0], dtype=f64)
    prev = torch.tensor([0.5, 0.9, 0.1], dtype=f64)
    pi = StepController(order=4, safety=0.8, beta=0.3, min_factor=0.2, max_factor=5.0)
    expect = (0.8 * err ** (-0.7 / 4) * prev ** (0.3 / 4)).clamp(0.2, 5.0)
    torch.testing.assert_close(pi.factor(err, prev), expect)
    i_ctl = StepController(order=4, safety=0.8)
    torch.testing.assert_close(i_ctl.factor(err, prev), (0.8 * err ** -0.25).clamp(0.2, 10.0))
    k = torch.tensor([2.0, 3.0, 4.0], dtype=f64)  # per-row order overrides k
    torch.testing.assert_close(pi.factor(err, prev, k),
                               (0.8 * err ** (-0.7 / k) * prev ** (0.3 / k)).clamp(0.2, 5.0))


def test_accept_hook_gets_the_accepted_rows_and_their_new_times():
    seen = []

    def step(t, x, dt, rows):
        def accept(ok, acc, t_acc):
            seen.append((acc.tolist(), t_acc.tolist()))
        return Trial(x, torch.tensor([0.5, 2.0], dtype=f64)[rows], accept=accept)
    with pytest.raises(RuntimeError):
        adaptive_loop(step, _state(2, 0.0, 1.0, 0.25), StepController(order=1, safety=1.0,
                      min_factor=1.0, max_factor=1.0, hold_after_reject=False),
                      name="test", max_steps=2)
    assert seen == [([0], [0.25]), ([0], [0.5])]


def test_non_finite_error_stops_at_once_naming_the_solver():
    calls = []

    def step(t, x, dt, rows):
        calls.append(1)
        return Trial(x, torch.full_like(dt, math.nan))
    with pytest.raises(FloatingPointError, match="my_solver: non-finite"):
        adaptive_loop(step, _state(2, 0.0, 1.0, 0.1), StepController(order=1), name="my_solver")
    assert len(calls) == 1


def test_max_steps_is_an_error_that_says_what_to_do():
    step = _limited(torch.full((2,), 1e-3, dtype=f64))
    with pytest.raises(RuntimeError, match="my_solver did not reach t=1 in 7 steps; loosen"):
        adaptive_loop(step, _state(2, 0.0, 1.0, 0.5), StepController(order=1), name="my_solver",
                      max_steps=7)


def test_bad_controller_settings_are_refused():
    with pytest.raises(ValueError, match="control"):
        StepController(order=1, control="shared")
    with pytest.raises(ValueError, match="beta"):
        StepController(order=1, beta=1.0)


@pytest.mark.parametrize("solver", ["rk45", "rk45_logsnr", "dpm_adaptive", "abm_adaptive",
                                    "adaptive_sde"])
def test_callback_sees_t_and_x_of_the_sampler(references, solver):
    """Every adaptive solver reports (t, x) in the sampler's variables after accepted steps (the
    log-SNR ones map λ, x̃ back): the last call is at t_min with the returned samples."""
    model, x_T, _, _ = references["edm"]
    seen = []
    x = sdeflow.sample(model, x_T, solver=solver, denoise=False, seed=0,
                       callback=lambda t, x: seen.append((t.clone(), x.clone())))
    t, x_last = seen[-1]
    torch.testing.assert_close(t, torch.full_like(t, model.sde.t_min))
    torch.testing.assert_close(x_last, x)


def test_mixed_start_sides_and_non_positive_steps_are_refused():
    x = torch.zeros(2, 1)
    with pytest.raises(ValueError, match="same side"):
        AdaptiveState(torch.tensor([0.2, 0.8]), x, torch.full((2,), 0.1), 0.5)
    with pytest.raises(ValueError, match="positive"):
        AdaptiveState(torch.tensor([0.2, 0.2]), x, torch.tensor([0.1, 0.0]), 0.5)


def test_step_size_underflow_stops_at_once():
    """An error estimate that is never small enough drives h below the resolution of t; the
    loop says so instead of spinning until max_steps."""
    calls = []

    def step(t, x, dt, rows):
        calls.append(1)
        return Trial(x + dt[:, None], torch.where(dt.abs() < 1e-9, 0.5, 1e3) * torch.ones_like(dt))
    state = AdaptiveState(torch.full((1,), 1.0, dtype=torch.float32), torch.zeros(1, 1),
                          torch.full((1,), 0.5), 0.0)
    with pytest.raises(FloatingPointError, match="step size underflow"):
        adaptive_loop(step, state, StepController(order=2), name="test", max_steps=10_000)
    assert len(calls) < 200
