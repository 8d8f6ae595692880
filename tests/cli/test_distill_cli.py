"""`sdeflow distill progressive|consistency` and `sdeflow train --objective ict` end to end on
the 2-D ring (a few steps each: the methods' accuracy is proven in tests/training/): each run
writes a checkpoint that `sdeflow sample` samples at the student's step count, resumes, and
refuses what the student was not made for with one line."""
import json

import pytest

from sdeflow.cli import main

FAST = ["--data", "gmm", "--batch-size", "64", "--no-tensorboard", "--log-every", "1"]


def _sample(run, out, *extra):
    rc = main(["sample", str(run), "-n", "32", "--out", str(out), *extra])
    return rc, (json.loads(out.with_suffix(".json").read_text()) if rc == 0 else None)


def test_progressive_distillation_cli(tmp_path, capsys):
    run = tmp_path / "pd"
    args = ["distill", "progressive", "exact", *FAST, "--start-steps", "4", "--steps", "1",
            "--steps-per-round", "3", "--ckpt-every", "3", "--out", str(run)]
    assert main(args) == 0 and (run / "ckpt-00000006").is_dir()
    rc, st = _sample(run, tmp_path / "s")
    assert rc == 0 and st["nfe"] == 1 and st["solver"] == "ddim"
    capsys.readouterr()
    assert _sample(run, tmp_path / "s3", "--steps", "3")[0] == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "distilled for 1" in err[0] and "force" in err[0]
    assert _sample(run, tmp_path / "s3", "--steps", "3", "--force")[0] == 0
    assert main(args[:-2] + ["--out", str(run), "--resume"]) == 0  # nothing left to do


def test_consistency_distillation_cli(tmp_path):
    run = tmp_path / "cd"
    assert main(["distill", "consistency", "exact", *FAST, "--steps", "4", "--N", "6",
                 "--out", str(run)]) == 0
    for steps in (1, 2):
        rc, st = _sample(run, tmp_path / f"s{steps}", "--solver", "consistency",
                         "--steps", str(steps))  # no final denoising call: NFE = steps
        assert rc == 0 and st["nfe"] == steps


def test_consistency_training_from_scratch_cli(tmp_path, capsys):
    run = tmp_path / "ict"
    args = ["train", "--objective", "ict", *FAST, "--steps", "4", "--ckpt-every", "2"]
    assert main([*args, "--out", str(run)]) == 0
    cfg = json.loads((run / "ckpt-00000004" / "config.json").read_text())
    assert cfg["kind"] == "consistency_training" and cfg["loss"] == "pseudo_huber"
    rc, st = _sample(run, tmp_path / "s", "--solver", "consistency", "--steps", "1")
    assert rc == 0 and st["nfe"] == 1
    args[args.index("4")] = "6"
    assert main([*args, "--out", str(run), "--resume"]) == 0
    assert (run / "ckpt-00000006").is_dir()


@pytest.mark.parametrize("argv,match", [
    (["distill", "progressive", "exact", "--data", "moons"], "closed form"),
    (["distill", "progressive", "exact", "--start-steps", "6", "--steps", "4"], "power of two"),
    (["distill", "consistency", "nowhere"], "nowhere"),
])
def test_bad_distillation_requests_are_one_line(tmp_path, capsys, argv, match):
    assert main([*argv, "--out", str(tmp_path / "x")]) == 2
    err = [r for r in capsys.readouterr().err.strip().splitlines() if "training" not in r]
    assert len(err) == 1 and match in err[0], err


def test_a_run_teacher_brings_its_data_and_sigma_data(tmp_path):
    """Without --data (and --sigma-data) a distillation takes the teacher run's data set, data
    arguments and σ_data: distilling the digits model needs no repeated flags."""
    teacher = tmp_path / "teacher"
    assert main(["train", "--data", "mixture", "--data-kwargs", '{"dim": 3}', "--sigma-data",
                 "0.7", "--steps", "2", "--batch-size", "16", "--no-tensorboard",
                 "--out", str(teacher)]) == 0
    for method, extra in (("consistency", ["--N", "4"]),
                          ("progressive", ["--start-steps", "2", "--steps-per-round", "2"])):
        run = tmp_path / method
        assert main(["distill", method, str(teacher), "--steps", "1" if method == "progressive"
                     else "2", "--batch-size", "16", "--no-tensorboard", *extra,
                     "--out", str(run)]) == 0
        cfg = json.loads((run / "ckpt-00000002" / "config.json").read_text())
        assert (cfg["data"], cfg["data_kwargs"], cfg["shape"]) == ("mixture", {"dim": 3}, [3])
        assert cfg["sigma_data"] == 0.7
