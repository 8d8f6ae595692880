"""`sdeflow train --sde cld` end to end on the 2-D ring and on the digits (a few steps each: the
method's accuracy is proven in tests/cld/): the run loads as a CLDModel, `sdeflow sample` uses
SSCS by default (NFE = steps), `sdeflow likelihood` gives the CLD bound (near the true density
after a short training), the run resumes, and what does not apply to CLD is refused with one
line naming it."""
import json

import pytest
import torch

import sdeflow
from sdeflow.cld import CLDModel
from sdeflow.cli import main

FAST = ["--data", "gmm", "--batch-size", "256", "--no-tensorboard", "--log-every", "10"]


@pytest.fixture(scope="module")
def cld_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("cld") / "run"
    assert main(["train", "--sde", "cld", *FAST, "--steps", "400", "--ckpt-every", "200",
                 "--out", str(run)]) == 0
    return run


def test_a_cld_run_loads_samples_and_resumes(cld_run, tmp_path):
    model, cfg = sdeflow.load(cld_run)
    assert isinstance(model, CLDModel) and cfg.KIND == "cld" and cfg.loss == "hsm"
    assert cfg.precondition == "mixed" and model.sde.gamma == 0.04
    out = tmp_path / "s"
    assert main(["sample", str(cld_run), "-n", "2000", "--steps", "40", "--out", str(out)]) == 0
    st = json.loads(out.with_suffix(".json").read_text())
    assert st["solver"] == "sscs" and st["nfe"] == 40 and st["schedule"] == "quadratic"
    x = torch.from_numpy(__import__("numpy").load(out.with_suffix(".npy")))
    assert x.shape == (2000, 2)  # x only, not the (x, v) state
    assert st["sliced_wasserstein_to_data"] < 0.3  # 400 steps of training: the ring, roughly
    for solver in ("euler_maruyama", "rk4"):
        assert main(["sample", str(cld_run), "-n", "64", "--solver", solver, "--steps", "10",
                     "--out", str(tmp_path / solver)]) == 0
    assert main(["train", "--sde", "cld", *FAST, "--steps", "600", "--ckpt-every", "200",
                 "--out", str(cld_run), "--resume"]) == 0
    assert (cld_run / "ckpt-00000600").is_dir()


def test_likelihood_of_a_cld_run_is_the_velocity_bound(cld_run, tmp_path):
    out = tmp_path / "lik.json"
    assert main(["likelihood", str(cld_run), "-n", "200", "--out", str(out)]) == 0
    rep = json.loads(out.read_text())
    # a lower bound on log p after 400 steps: below the truth, but not far (the ring's
    # log-density is ≈ −2.19 nats; a model that had learnt nothing sits near −5)
    assert rep["true_log_density_nats"] - 1.5 < rep["nats"] < rep["true_log_density_nats"] + 0.1


@pytest.mark.parametrize("argv,match", [
    (["train", "--sde", "cld", "--prediction", "eps"], "--prediction"),
    (["train", "--sde", "cld", "--loss", "edm"], "hsm"),
    (["train", "--sde", "cld", "--precondition", "edm"], "mixed"),
    (["train", "--sde", "cld", "--objective", "ict"], "ict"),
    (["train", "--sde", "cld", "--sde-kwargs", '{"M": -1}'], "M"),
    (["train", "--sde", "cld", "--sde-kwargs", '{"mass": 1}'], "mass"),
    (["train", "--weighting", "eps"], "--sde cld"),
    (["train", "--sample-solver", "sscs"], "sample_solver"),
    (["train", "--sde", "cld", "--model-kwargs", '{"out_dim": 3}'], "remove out_dim"),
    (["train", "--sde", "cld", "--p-uncond", "0.1"], "guidance of CLD models is not implemented"),
])
def test_what_does_not_apply_to_cld_is_refused(argv, match, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err


def test_samplers_and_bounds_of_other_models_are_refused_for_cld(cld_run, tmp_path, capsys):
    assert main(["sample", str(cld_run), "--solver", "dpmpp_2m", "--out", str(tmp_path / "a")]) == 2
    assert "sscs" in capsys.readouterr().err  # the message lists the CLD solvers
    assert main(["sample", str(cld_run), "--schedule", "karras", "--out", str(tmp_path / "b")]) == 2
    assert "quadratic" in capsys.readouterr().err
    assert main(["likelihood", str(cld_run), "--bound", "vlb", "--out", str(tmp_path / "c")]) == 2
    assert "VP" in capsys.readouterr().err
    assert main(["tune-steps", str(cld_run), "--out", str(tmp_path / "d.json")]) == 2
    assert "cld" in capsys.readouterr().err


def test_sample_solver_auto_spends_the_budget(cld_run, tmp_path):
    """`--solver auto` is accepted; --steps is then the NFE budget (SSCS for a CLD model)."""
    out = tmp_path / "auto"
    assert main(["sample", str(cld_run), "-n", "16", "--solver", "auto", "--steps", "6",
                 "--out", str(out)]) == 0
    st = json.loads(out.with_suffix(".json").read_text())
    assert st["solver"] == "sscs" and st["nfe"] == 6


def test_cld_digits_demo_defaults_to_its_own_run_dir(monkeypatch, tmp_path):
    import sdeflow.demo
    runs = []

    def fake(out, run, *args, sde="edm"):
        runs.append(str(run))
        stem = "digits_cld" if sde == "cld" else "digits"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{stem}_metrics.md").write_text("ok")
    monkeypatch.setattr(sdeflow.demo, "digits_demo", fake)
    for sde in ("cld", "edm"):
        assert main(["demo", "--part", "digits", "--digits-sde", sde, "--out",
                     str(tmp_path)]) == 0
    assert runs == ["runs/digits_cld", "runs/digits"]
