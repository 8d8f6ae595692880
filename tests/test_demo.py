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
