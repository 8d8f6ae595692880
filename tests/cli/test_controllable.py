"""End-to-end CLI runs of the controllable-generation commands on tiny models (a few training
steps): they exist, write their grids and reports, and keep their exactness promises."""
import json

import pytest

from sdeflow.cli import main
from sdeflow.samplers.auto import auto_config

from ..conftest import TINY_UNET

UNET = ["--model-kwargs", json.dumps(TINY_UNET), "--batch-size", "16", "--log-every", "2",
        "--no-tensorboard"]


def train(tmp_path, name, *args, steps=4):
    run = tmp_path / name
    assert main(["train", "--data", args[0], "--steps", str(steps), "--out", str(run), *UNET,
                 *args[1:]]) == 0
    return str(run)


def run_image_command(runs, command, model, out_name, *args):
    """``sdeflow COMMAND RUN ARGS --out OUT`` on the tiny run ``model``: (OUT, its report)."""
    tmp, r = runs
    out = tmp / out_name
    assert main([command, r[model], *args, "--out", str(out)]) == 0
    return out, json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    return tmp, dict(
        digits=train(tmp, "digits", "digits"),
        cond=train(tmp, "cond", "digits", "--class-cond", "--p-uncond", "0.2"),
        color=train(tmp, "color", "color_digits"),
        sr=train(tmp, "sr", "digits", "--task", "sr", "--sr-factor", "2"),
        palette=train(tmp, "palette", "color_digits", "--task", "colorize"))


def test_inpaint_and_repaint_keep_known_pixels(runs):
    out, rep = run_image_command(runs, "inpaint", "digits", "inp", "-n", "4", "--steps", "3",
                                 "--mask", "left")
    assert rep["known_max_abs_error"] == 0 and rep["nfe"] > 0
    assert 0 <= rep["classifier_agrees_with_original"] <= 1
    assert (out / "grid.png").stat().st_size > 0 and (out / "inpainted.npy").exists()
    _, rep = run_image_command(runs, "inpaint", "digits", "inp", "-n", "2", "--samples", "2",
                               "--method", "repaint", "--steps", "4", "--jump-length", "2",
                               "--resamplings", "2")
    assert rep["known_max_abs_error"] == 0 and rep["steps_down"] == 4 + 2 * 2


def test_colorize_score_sde_keeps_grey_and_palette_runs(runs):
    _, rep = run_image_command(runs, "colorize", "color", "col", "-n", "3", "--samples", "2",
                               "--steps", "3")
    assert rep["grey_max_abs_error"] < 1e-5 and rep["method"] == "score_sde replace"
    assert rep["colour_fd_floor_train_vs_test"] >= 0 and rep["colour_diversity"] >= 0
    _, rep = run_image_command(runs, "colorize", "palette", "col", "-n", "3", "--steps", "3")
    assert rep["method"] == "palette"
    # no --solver: auto on the budget --steps in NFE, as `sample` (Heun for --solver-opts)
    assert (rep["solver"], rep["nfe"]) == (auto_config(None, 3, 3 * 8 * 8)["solver"], 3)


def test_sr_reports_bicubic_and_sr3(runs):
    _, rep = run_image_command(runs, "sr", "sr", "sr", "-n", "4", "--samples", "2", "--steps", "3")
    assert {"psnr_bicubic", "psnr_sr3_sample", "psnr_sr3_mean", "ssim_bicubic", "fdd_sr3",
            "fdd_bicubic", "consistency_psnr"} <= set(rep)
    want = auto_config(None, 20, 64)
    _, rep = run_image_command(runs, "sr", "sr", "sr", "-n", "2")
    assert (rep["solver"], rep["schedule"], rep["nfe"]) == (want["solver"], want["schedule"], 20)
    _, rep = run_image_command(runs, "sr", "sr", "sr", "-n", "2", "--solver", "ddim", "--steps", "3")
    assert (rep["solver"], rep["nfe"]) == ("ddim", 4)


def test_repaint_refuses_auto_by_name(runs, capsys):
    tmp, r = runs
    assert main(["inpaint", r["digits"], "-n", "2", "--method", "repaint", "--solver", "auto",
                 "--out", str(tmp / "rp")]) == 2
    assert "solver='auto' does not apply" in capsys.readouterr().err


def test_guided_sampling_from_the_cli(runs, capsys):
    tmp, r = runs
    out = tmp / "s"
    assert main(["sample", r["cond"], "-n", "4", "--class", "3", "--guidance", "2", "--steps", "3",
                 "--out", str(out)]) == 0
    stats = json.loads((tmp / "s.json").read_text())
    # no --solver: auto on a budget of 3 calls (DDIM, 2 steps + final x̂0), two passes each
    assert (stats["solver"], stats["nfe"]) == ("ddim", 2 * 3)
    clf = tmp / "clf"
    assert main(["train-classifier", "--data", "digits", "--steps", "3", "--batch-size", "8",
                 "--model-kwargs", '{"channels": 8}', "--out", str(clf)]) == 0
    assert json.loads((clf / "accuracy.json").read_text()).keys() >= {"0", "1"}
    assert main(["sample", r["digits"], "-n", "4", "--class", "1", "--classifier", str(clf),
                 "--guidance", "2", "--steps", "3", "--out", str(out)]) == 0
    # errors are one clean line
    assert main(["sample", r["digits"], "--class", "1", "--out", str(out)]) == 2
    assert main(["sample", r["sr"], "--out", str(out)]) == 2
    assert main(["sr", r["digits"], "--out", str(out)]) == 2
    assert "error" in capsys.readouterr().err


def test_inpaint_and_tune_steps_take_the_checkpoint_statistics(runs, tmp_path, capsys):
    """`inpaint --solver dpm_solver_v3` finds the statistics `sdeflow ems` wrote into the
    checkpoint folder (without them it names what is missing); statistics of one class warn
    where the run conditions otherwise — inpainting (each image under its own class, as serve
    says too) and tune-steps (unconditional) —; statistics of an unusable type get the
    solver's own message."""
    tmp, r = runs
    v3 = ["--solver", "dpm_solver_v3", "--steps", "3"]
    assert main(["inpaint", r["digits"], "-n", "2", *v3, "--out", str(tmp_path / "no")]) == 2
    assert main(["ems", r["digits"], "--num", "8", "--points", "5"]) == 0
    _, rep = run_image_command(runs, "inpaint", "digits", "inp_v3", "-n", "2", *v3)
    assert rep["solver"] == "dpm_solver_v3" and rep["known_max_abs_error"] == 0
    assert main(["ems", r["cond"], "--num", "8", "--points", "5", "--class", "3"]) == 0
    # the first two test images are a 0 and a 5, each completed under its own label
    with pytest.warns(UserWarning, match="class=3, this run is each image's own class"):
        run_image_command(runs, "inpaint", "cond", "inp_v3c", "-n", "2", *v3)
    with pytest.warns(UserWarning, match="class=3, this run is class=0"):
        run_image_command(runs, "inpaint", "cond", "inp_v3c", "-n", "1", *v3)
    with pytest.warns(UserWarning, match="class=3, this run is unconditional"):
        assert main(["tune-steps", r["cond"], *v3, "--n-calib", "8", "--pool", "16",
                     "--max-evals", "2", "--out", str(tmp_path / "t.json")]) == 0
    capsys.readouterr()
    assert main(["inpaint", r["digits"], "-n", "1", *v3, "--solver-opts", '{"statistics": 5}',
                 "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "statistics" in err and "PathLike" not in err, err
