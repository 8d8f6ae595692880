"""`sdeflow sample` / `evaluate` without --solver run ``solver="auto"`` on the budget --steps
(NFE, default 20) — the configuration `sdeflow.samplers.auto.auto_config` picks — and fall back
to the library's default solver when the user asks for a particular grid."""
import json

import pytest

from sdeflow.cli import main
from sdeflow.samplers.auto import auto_config
from sdeflow.train import TrainConfig, train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(TrainConfig(steps=10, batch_size=32, ckpt_every=10, log_every=5, tensorboard=False,
                      model_kwargs=dict(hidden=16, depth=1)), out)
    return out


def _stats(run, tmp_path, *args):
    out = tmp_path / "s"
    assert main(["sample", str(run), "-n", "16", "--out", str(out), *args]) == 0
    return json.loads(out.with_suffix(".json").read_text())


@pytest.mark.parametrize("budget", [None, 3, 8])
def test_default_is_auto_on_the_budget(run, tmp_path, budget):
    st = _stats(run, tmp_path, *([] if budget is None else ["--steps", str(budget)]))
    want = auto_config(None, budget or 20, 2)
    assert st["nfe"] == (budget or 20)
    assert (st["solver"], st["steps"], st["schedule"]) == (want["solver"], want["steps"],
                                                           want["schedule"])


def test_asking_for_a_grid_keeps_the_library_default(run, tmp_path):
    st = _stats(run, tmp_path, "--steps", "4", "--schedule", "karras")
    assert (st["solver"], st["nfe"]) == ("heun", 4 * 2 + 1)  # Heun, 2 calls per step + x̂0
    st = _stats(run, tmp_path, "--solver", "euler", "--steps", "4")
    assert (st["solver"], st["nfe"]) == ("euler", 5)


def test_default_auto_uses_the_checkpoints_statistics_for_a_noise_predicting_network(tmp_path,
                                                                                   capsys):
    """An ε-predicting image model: `sample` without --solver runs ``auto``'s iPNDM until
    `sdeflow ems` has written the statistics into the checkpoint folder, then DPM-Solver-v3 on
    ``gits_trailing`` at 4–30 NFE (its rule with statistics) — and not with statistics
    estimated for a class."""
    from sdeflow.samplers.ems import ModelStatistics, auto_statistics, statistics_path

    from ..conftest import TINY_UNET
    run = tmp_path / "eps"
    assert main(["train", "--data", "digits", "--steps", "2", "--out", str(run), "--sde", "vp",
                 "--prediction", "eps", "--loss", "eps", "--precondition", "none",
                 "--model-kwargs", json.dumps(TINY_UNET), "--batch-size", "8",
                 "--no-tensorboard"]) == 0
    capsys.readouterr()
    assert _stats(run, tmp_path, "--steps", "8")["solver"] == "ipndm"
    assert f"sdeflow ems {run}" in capsys.readouterr().err  # says how to get them
    assert _stats(run, tmp_path, "--steps", "31")["solver"] == "ipndm"
    assert "sdeflow ems" not in capsys.readouterr().err  # not where the rule has no use
    assert auto_statistics(run) == {}
    assert main(["ems", str(run), "--num", "8", "--points", "5"]) == 0
    assert auto_statistics(run) == {"statistics": str(statistics_path(run).resolve())}
    capsys.readouterr()
    st = _stats(run, tmp_path, "--steps", "8")
    assert (st["solver"], st["schedule"], st["nfe"]) == ("dpm_solver_v3", "gits_trailing", 8)
    assert "sdeflow ems" not in capsys.readouterr().err
    assert st["options"]["statistics"].endswith("ems.safetensors")
    assert _stats(run, tmp_path, "--steps", "31")["solver"] == "ipndm"  # above 30 NFE
    stats = ModelStatistics.load(statistics_path(run))
    stats.condition = "class=3"
    stats.save(statistics_path(run))
    assert auto_statistics(run) == {} and auto_statistics(run, "class=3") != {}
    assert _stats(run, tmp_path, "--steps", "8")["solver"] == "ipndm"
    # a run sampled under that one condition takes them (`sample --class 3` passes it)
    from types import SimpleNamespace

    from sdeflow.cli.common import grid_args, load_run
    model, _ = load_run(run, "denoiser")
    a = SimpleNamespace(checkpoint=str(run), steps=8, solver=None, solver_opts={}, schedule=None,
                        no_denoise=False, force=False, timesteps_file=None)
    assert "statistics" in grid_args(a, model, unconditional=False, condition="class=3")
    assert "statistics" not in grid_args(a, model, unconditional=False)  # several conditions
