"""The likelihood and interpolate commands on a small trained checkpoint."""
import json

import numpy as np
import pytest

from sdeflow.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("run")
    assert main(["train", "--steps", "300", "--hidden", "64", "--depth", "2", "--out", str(path)]) == 0
    return path


def test_likelihood_command_reports_nats_and_truth(run, tmp_path):
    out = tmp_path / "ll.json"
    assert main(["likelihood", str(run), "-n", "64", "--out", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["dims"] == 2 and rep["nfe"] > 0 and rep["offset_bits"] == 0.0
    assert rep["bits_per_dim"] == pytest.approx(-rep["nats"] / (2 * np.log(2)))
    # a model can't beat the true density on average by more than sampling noise
    assert rep["nats"] < rep["true_log_density_nats"] + 4 * rep["nats_se"]


def test_likelihood_command_on_discrete_data_applies_the_offset(run, tmp_path):
    data = tmp_path / "x.npy"
    np.save(data, np.array([[100, 140], [128, 128], [60, 200]], dtype=np.int64))
    out = tmp_path / "bpd.json"
    assert main(["likelihood", str(run), "--data-file", str(data), "--num-bins", "256",
                 "--data-range", "-3", "3", "--out", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["offset_bits"] == pytest.approx(np.log2(256 / 6))
    assert "bits/dim" in rep["summary"]


def test_interpolate_command_writes_a_picture(run, tmp_path):
    out = tmp_path / "interp.png"
    assert main(["interpolate", str(run), "--n", "5", "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000
