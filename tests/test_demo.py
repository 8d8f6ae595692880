"""The digits part of `make demo` (slow; `make test-all` runs it; timing in docs/model_notes.md)."""
import json

import pytest

from sdeflow.cli import main


@pytest.mark.slow
def test_digits_demo_draws_recognisable_digits(tmp_path):
    """3000 steps of the default U-Net, then SDE, PC and ODE samplers, 1437 samples each.
    Bar: the digits metric (FDD) within 2× its train-vs-test noise floor (a moment-matched
    Gaussian scores ≈ 5× it), the classifier's mean confidence ≥ 0.85 (data: 0.99) and
    predicted classes near-uniform (KL to uniform < 0.05 nats)."""
    assert main(["demo", "--part", "digits", "--out", str(tmp_path / "out"),
                 "--digits-run", str(tmp_path / "run")]) == 0
    metrics = json.loads((tmp_path / "out" / "digits_metrics.json").read_text())
    assert (tmp_path / "out" / "digits_samples.png").stat().st_size > 10_000
    for label, m in metrics.items():
        assert m["fdd"] < 2 * m["fdd_floor_train_vs_test"], label
        assert m["confidence"] >= 0.85 and m["class_kl"] < 0.05, label


@pytest.mark.slow
def test_the_cld_digits_demo_writes_its_own_files(tmp_path):
    """`--digits-sde cld` trains a CLD U-Net (a few steps here) and samples it with SSCS,
    Euler–Maruyama and RK4 on the (x, v) PF-ODE, beside (not over) the EDM demo's files."""
    out = tmp_path / "out"
    assert main(["demo", "--part", "digits", "--digits-sde", "cld", "--digits-steps", "3",
                 "--digits-num", "64", "--out", str(out),
                 "--digits-run", str(tmp_path / "run")]) == 0
    metrics = json.loads((out / "digits_cld_metrics.json").read_text())
    assert [m["solver"] for m in metrics.values()] == ["sscs", "euler_maruyama", "rk4"]
    assert [m["nfe"] for m in metrics.values()] == [50, 100, 100]
    assert (out / "digits_cld_samples.png").is_file() and not (out / "digits_metrics.json").exists()


@pytest.mark.slow
def test_cld_digits_demo_draws_recognisable_digits(tmp_path):
    """The CLD variant at the demo's 3000 steps, held to the EDM demo's bar."""
    assert main(["demo", "--part", "digits", "--digits-sde", "cld", "--out", str(tmp_path / "out"),
                 "--digits-run", str(tmp_path / "run")]) == 0
    metrics = json.loads((tmp_path / "out" / "digits_cld_metrics.json").read_text())
    for label, m in metrics.items():
        assert m["fdd"] < 2 * m["fdd_floor_train_vs_test"], label
        assert m["confidence"] >= 0.85 and m["class_kl"] < 0.05, label
