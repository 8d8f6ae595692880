"""Tuned schedules installed in a checkpoint folder (`tune-steps --install`): the default
sampler of `sample` and `evaluate` uses one exactly at its budget and nowhere else — not at
another budget, not with --solver, not for conditional sampling —, and a damaged or foreign
file is a clear error that names it."""
import argparse
import json
import shutil

import numpy as np
import pytest

from sdeflow.cli import main
from sdeflow.cli.common import grid_args
from sdeflow.loading import load
from sdeflow.schedules import get_timesteps
from sdeflow.tuning import TunedSchedule, install, installed, installed_path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("installed") / "run"
    assert main(["train", "--steps", "50", "--hidden", "16", "--depth", "1", "--out", str(run),
                 "--no-tensorboard"]) == 0
    return run


@pytest.fixture
def run(trained, tmp_path):
    """A copy of the trained run of this test's own (files get installed into it)."""
    return shutil.copytree(trained, tmp_path / "run")


def _logsnr_schedule(sde, steps: int = 4) -> TunedSchedule:
    """A 'tuned' file that is not what `auto` runs: DPM-Solver++(2M) on the log-SNR grid."""
    ts = get_timesteps(sde, steps, "logsnr")
    return TunedSchedule(solver="dpmpp_2m", steps=steps, timesteps=ts.tolist(), sde=sde.config(),
                         calibration_loss=0.0, start_loss=0.0, start_schedule="logsnr")


def _draw(run, tmp_path, *extra):
    out = tmp_path / "s"
    assert main(["sample", str(run), "-n", "64", "--out", str(out), *extra]) == 0
    return np.load(out.with_suffix(".npy")), json.loads(out.with_suffix(".json").read_text())


def test_the_installed_schedule_is_the_default_at_its_budget_only(run, tmp_path, capsys):
    model, _ = load(run)
    x = model.sde.prior_sample((1, 2))
    path, nfe = install(_logsnr_schedule(model.sde), model, run, x)
    assert path == installed_path(run, nfe) and path.parent.name == "tuned"
    assert path.parent.parent.name.startswith("ckpt-")  # beside the weights it belongs to
    assert nfe == 5  # 4 steps of one call, and the final x̂0 call at t_min
    capsys.readouterr()
    x_default, st = _draw(run, tmp_path, "--steps", str(nfe))
    assert "tuned for this checkpoint" in capsys.readouterr().err
    x_file, _ = _draw(run, tmp_path, "--timesteps-file", str(path))
    x_auto, st_auto = _draw(run, tmp_path, "--solver", "auto", "--steps", str(nfe))
    np.testing.assert_array_equal(x_default, x_file)  # the installed file, exactly
    assert st["solver"] == "dpmpp_2m" and st["nfe"] == nfe
    assert st_auto["solver"] != "dpmpp_2m" and not np.array_equal(x_default, x_auto)
    ev = tmp_path / "ev"  # evaluate too, and its report records the grid
    assert main(["evaluate", str(run), "-n", "64", "--steps", str(nfe), "--out", str(ev)]) == 0
    rep = json.loads((ev / "metrics.json").read_text())
    assert rep["solver"] == "dpmpp_2m" and rep["timesteps"] == json.loads(path.read_text())[
        "timesteps"]
    capsys.readouterr()
    # another budget: auto's own rule, with nothing said
    x_other, _ = _draw(run, tmp_path, "--steps", str(nfe + 1))
    assert "tuned for this checkpoint" not in capsys.readouterr().err
    x_auto_other, _ = _draw(run, tmp_path, "--solver", "auto", "--steps", str(nfe + 1))
    np.testing.assert_array_equal(x_other, x_auto_other)
    # conditional sampling never picks it up (tuning is unconditional)
    a = argparse.Namespace(solver=None, steps=nfe, schedule=None, no_denoise=False,
                           solver_opts={}, force=False, timesteps_file=None, checkpoint=str(run))
    assert grid_args(a, model, unconditional=False)["solver"] == "auto"
    assert grid_args(a, model, unconditional=True)["solver"] == "dpmpp_2m"


def test_a_damaged_or_foreign_installed_schedule_is_a_clear_error(run, tmp_path, capsys):
    model, _ = load(run)
    path = installed_path(run, 7)
    path.parent.mkdir(parents=True, exist_ok=True)
    for text, why in [("{not json", "not JSON"), ("[1, 2]", "JSON object"),
                      ('{"solver": "euler"}', "missing")]:
        path.write_text(text)
        assert main(["sample", str(run), "-n", "8", "--steps", "7",
                     "--out", str(tmp_path / "s")]) == 2
        err = capsys.readouterr().err
        assert str(path) in err and why in err
    from sdeflow.sde import VPSDE
    _logsnr_schedule(VPSDE()).save(path)  # tuned for another SDE than the model's
    with pytest.raises(ValueError, match="tuned for SDE") as e:
        installed(run, 7, model.sde)
    assert str(path) in str(e.value)
    path.unlink()
    assert installed(run, 7, model.sde) is None


def test_tune_steps_install_writes_the_file_sample_uses(run, tmp_path):
    out = tmp_path / "tuned.json"
    assert main(["tune-steps", str(run), "--steps", "3", "--n-calib", "16", "--pool", "0",
                 "--max-evals", "3", "--pool-partners", "-1", "--install",
                 "--out", str(out)]) == 0
    files = list(run.glob("ckpt-*/tuned/nfe*.json"))
    rep = json.loads(out.read_text())  # the default base: DPM-Solver-v3, the folder's statistics
    assert rep["base_solver"] == "dpm_solver_v3" and "statistics" in rep["solver_opts"]
    rep["solver_opts"].pop("statistics")  # not named in the installed copy: found in the folder
    assert len(files) == 1 and json.loads(files[0].read_text()) == rep
    nfe = int(files[0].stem[3:])
    x_default, st = _draw(run, tmp_path, "--steps", str(nfe))
    x_file, st_file = _draw(run, tmp_path, "--timesteps-file", str(out))
    np.testing.assert_array_equal(x_default, x_file)
    assert st["nfe"] == st_file["nfe"] == nfe
    moved = shutil.move(str(run), str(tmp_path / "moved"))  # the installed file still works
    x_moved, _ = _draw(moved, tmp_path, "--steps", str(nfe))
    np.testing.assert_array_equal(x_default, x_moved)
