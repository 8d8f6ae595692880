"""Training end to end: `sdeflow train` on the 2-D mixture learns it (measured against the exact
distribution), checkpoints resume exactly, load safely, and the CLI explains itself."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import sdeflow
from sdeflow.checkpoint import read_checkpoint, resolve_checkpoint
from sdeflow.cli import main
from sdeflow.data import TOY_MIXTURE
from sdeflow.metrics import mmd2
from sdeflow.train import TrainConfig, TrainState, load_denoiser, train

from .conftest import gen, train_interrupted


@pytest.mark.slow  # 48 s: the default run stays near 10 min on 2 cores
def test_trained_model_samples_the_mixture(tmp_path):
    """1500 steps of `sdeflow train` (EDM SDE, EDM loss, MLP; ~20 s on 2 cores), then
    `sdeflow sample` with Heun (35 steps). Metric: MMD² to 3000 exact draws below 2 × the
    true-vs-true noise floor — the same bar the exact-score samplers meet (measured ≈ 0 vs
    floor 1.1e-3; a moment-matched Gaussian scores 0.107) — and every one of the 8 components
    holds 12.5% ± 3% of the samples (binomial se 0.6%)."""
    run = tmp_path / "run"
    assert main(["train", "--steps", "1500", "--out", str(run), "--seed", "0"]) == 0
    out = tmp_path / "s"
    assert main(["sample", str(run), "-n", "3000", "--solver", "heun", "--out", str(out)]) == 0
    x = torch.from_numpy(np.load(out.with_suffix(".npy"))).double()
    assert out.with_suffix(".png").stat().st_size > 0
    stats = json.loads(out.with_suffix(".json").read_text())
    assert stats["nfe"] == 35 * 2 + 1
    ref = TOY_MIXTURE.sample(3000, generator=gen(9))
    g = gen(0)
    floor = max(abs(mmd2(TOY_MIXTURE.sample(3000, generator=g), ref)) for _ in range(6))
    assert mmd2(x, ref) < 2 * floor
    mass = TOY_MIXTURE.responsibilities(x).argmax(1).bincount(minlength=8) / 3000
    assert ((mass - 0.125).abs() < 0.03).all(), mass


def _small(**kw):
    return TrainConfig(steps=40, batch_size=64, ckpt_every=20, log_every=1, tensorboard=False,
                       model_kwargs=dict(hidden=32, depth=1), **kw)


def test_resume_continues_exactly(tmp_path):
    """20 steps + resume to 40 gives bit-identical weights, EMA and losses to 40 straight."""
    full, resumed = train_interrupted(_small, tmp_path, 20)
    assert resumed.step == full.step == 40
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(full.ema_model.state_dict().values(), resumed.ema_model.state_dict().values()):
        assert torch.equal(a, b)
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")


def _losses(run):
    """(step, loss, lr) rows of a run's loss.csv (throughput differs between runs)."""
    return [r.split(",")[:3] for r in (run / "loss.csv").read_text().splitlines()]


def test_resume_refuses_a_different_config(tmp_path):
    train(_small(), tmp_path / "r", progress=False)
    with pytest.raises(ValueError, match="differs"):
        train(_small(lr=1e-4), tmp_path / "r", resume=True, progress=False)


def test_checkpoint_layout_and_safe_loading(tmp_path):
    st = TrainState(_small())
    path = st.save(tmp_path)
    assert resolve_checkpoint(tmp_path) == path
    assert {p.name for p in path.iterdir()} == {"config.json", "model.safetensors",
                                                "ema.safetensors", "state.pt"}
    ck = read_checkpoint(tmp_path)  # torch.load(weights_only=True) inside
    assert ck["config"] == st.cfg.to_dict() and ck["state"]["step"] == 0
    # only the newest checkpoints are kept, and no temporary folders are left behind
    for _ in range(3):
        st.step += 1
        st.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("ckpt")) == \
        ["ckpt-00000002", "ckpt-00000003"]
    assert not list(tmp_path.glob(".tmp-*"))


def test_interrupted_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    st = TrainState(_small())
    first = st.save(tmp_path)
    st.step = 5

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr("sdeflow.checkpoint.save_file", boom)
    with pytest.raises(OSError):
        st.save(tmp_path)
    assert resolve_checkpoint(tmp_path) == first and not list(tmp_path.glob(".tmp-*"))


def test_invalid_config_is_rejected():
    with pytest.raises(ValueError, match="sde 'nope'"):
        TrainConfig(sde="nope").validate()
    with pytest.raises(ValueError, match="precondition"):
        TrainConfig(prediction="eps").validate()
    with pytest.raises(ValueError, match="unknown config keys"):
        TrainConfig.from_dict({"bogus": 1})


@pytest.mark.parametrize("loss,prediction,precondition,sde", [
    ("dsm", "score", "none", "ve"), ("eps", "eps", "none", "vp"), ("v", "v", "none", "subvp"),
    ("likelihood", "x0", "edm", "vp"), ("ssm", "x0", "edm", "edm")])
def test_every_loss_and_prediction_trains(tmp_path, loss, prediction, precondition, sde):
    """Each objective/parameterisation trains through the CLI, logs finite losses and leaves a
    checkpoint that loads and samples."""
    assert main(["train", "--steps", "60", "--batch-size", "256", "--hidden", "64", "--depth", "1",
                 "--loss", loss, "--prediction", prediction, "--precondition", precondition,
                 "--sde", sde, "--out", str(tmp_path)]) == 0
    rows = (tmp_path / "loss.csv").read_text().splitlines()[1:]
    assert rows and all(np.isfinite(float(r.split(",")[1])) for r in rows)
    model, cfg = load_denoiser(tmp_path)
    assert (cfg.loss, model.prediction, model.sde.name) == (loss, prediction, sde)
    with torch.no_grad():
        assert torch.isfinite(sdeflow.sample(model, shape=(8, 2), solver="euler", steps=5)).all()


@pytest.mark.parametrize("command", ["train", "sample", "evaluate", "tune-steps", "demo", "likelihood",
                                     "interpolate", "list"])
def test_cli_help(command):
    r = subprocess.run([sys.executable, "-m", "sdeflow.cli", command, "--help"],
                       capture_output=True, text=True, check=True)
    assert "usage: sdeflow" in r.stdout and len(r.stdout) > 200


def test_cli_reports_bad_input(tmp_path, capsys):
    assert main(["sample", str(tmp_path / "missing")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sample", str(tmp_path), "--solver", "nope"])
