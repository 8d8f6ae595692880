"""The training engine: one loop for every program. A program is one small Objective class
(here a two-network toy distillation, registered in this file); the engine saves and restores
all of its networks exactly, and checkpoints written before the engine existed still load,
give the same outputs and resume."""
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

import sdeflow
from sdeflow.checkpoint import CheckpointError
from sdeflow.models import build_model
from sdeflow.train import TrainConfig
from sdeflow.training import (ClassifierConfig, EngineConfig, Objective, Trainer,
                              get_objective, register_objective, train)

from ..conftest import train_interrupted

OLD = Path(__file__).parent.parent / "fixtures" / "v0_1"


@dataclass
class ToyDistillConfig(EngineConfig):
    KIND = "test-distill"
    hidden: int = 8


@register_objective
class ToyDistill(Objective):
    """A student MLP regresses a frozen random teacher: two networks, one trained."""

    Config = ToyDistillConfig
    trainable = ("student",)
    metrics = ("teacher_norm",)

    @classmethod
    def build(cls, cfg):
        make = lambda: build_model("mlp", dim=2, hidden=cfg.hidden, depth=1)  # noqa: E731
        return {"teacher": make().requires_grad_(False), "student": make()}

    def batch(self, n, generator):
        x, _ = self.data.draw(n, generator)
        return dict(x=x, t=torch.rand(n, generator=generator))

    def loss(self, nets, batch, generator):
        target = nets["teacher"](batch["x"], batch["t"])
        out = nets["student"](batch["x"], batch["t"])
        return F.mse_loss(out, target), dict(teacher_norm=target.norm(dim=1).mean())

    @classmethod
    def export(cls, nets, cfg):
        return nets["student"]


def _toy(**kw):
    return ToyDistillConfig(steps=6, batch_size=32, ckpt_every=3, log_every=1,
                            tensorboard=False, **kw)


def test_a_new_program_is_one_objective_and_resumes_every_network_exactly(tmp_path):
    full, resumed = train_interrupted(_toy, tmp_path, 3)
    for name in ("teacher", "student"):
        for a, b in zip(full.nets[name].state_dict().values(),
                        resumed.nets[name].state_dict().values()):
            assert torch.equal(a, b), name
    assert all(torch.equal(a, b) for a, b in zip(full.ema["student"].parameters(),
                                                 resumed.ema["student"].parameters()))
    ck = sorted((tmp_path / "b").glob("ckpt-*"))[-1]
    assert {p.name for p in ck.iterdir()} == {"config.json", "state.pt", "teacher.safetensors",
                                              "student.safetensors", "student_ema.safetensors"}
    # the frozen teacher is not optimised, the student is and its loss falls
    first = Trainer(_toy())
    assert all(torch.equal(a, b) for a, b in zip(first.nets["teacher"].parameters(),
                                                 full.nets["teacher"].parameters()))
    rows = [r.split(",") for r in (tmp_path / "a" / "loss.csv").read_text().splitlines()]
    assert rows[0] == ["step", "loss", "lr", "img_per_s", "teacher_norm"] and len(rows) == 7
    rows_b = [r.split(",") for r in (tmp_path / "b" / "loss.csv").read_text().splitlines()]
    assert [r[:3] + r[4:] for r in rows] == [r[:3] + r[4:] for r in rows_b]
    # sdeflow.load exports the program's model (the student's EMA weights)
    student, cfg = sdeflow.load(tmp_path / "a")
    assert cfg.KIND == "test-distill"
    assert all(torch.equal(a, b) for a, b in zip(student.parameters(),
                                                 full.ema["student"].parameters()))


def test_programs_are_registered_by_kind():
    assert get_objective("score").Config is TrainConfig
    assert get_objective("classifier").Config is ClassifierConfig
    with pytest.raises(ValueError, match="unknown training program 'nope'"):
        get_objective("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_objective(type("Other", (ToyDistill,), {}))


def test_checkpoints_written_before_the_engine_load_and_give_the_same_outputs():
    ref = torch.load(OLD / "reference_outputs.pt", weights_only=True)
    model, cfg = sdeflow.load(OLD / "score")
    assert isinstance(model, sdeflow.Denoiser) and cfg.KIND == "score"
    # float32 round-off only: another CPU's kernels may round differently (6e-8 seen on an
    # AMD EPYC against the reference written elsewhere); a wrong weight is off by far more
    with torch.no_grad():
        torch.testing.assert_close(model.x0(ref["x"], torch.full((4,), 0.5)), ref["x0"],
                                   rtol=1e-5, atol=1e-6)
    clf, ccfg = sdeflow.load(OLD / "classifier", kind="classifier")
    with torch.no_grad():
        torch.testing.assert_close(clf(ref["xi"], torch.full((4,), 0.5)), ref["logits"],
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["score", "classifier"])
def test_a_run_written_before_the_engine_resumes(tmp_path, kind):
    run = tmp_path / kind
    shutil.copytree(OLD / kind, run)
    _, cfg = sdeflow.load(run)
    cfg.steps = 4
    st = train(cfg, run, resume=True, progress=False)
    assert st.step == 4 and (run / "ckpt-00000004" / "config.json").is_file()


def _small_mixture(**kw):
    return TrainConfig(data="mixture", data_kwargs={"dim": 16}, steps=4, batch_size=16,
                       ckpt_every=2, log_every=1, tensorboard=False, **kw)


def test_a_started_run_keeps_its_architecture_when_the_defaults_change(tmp_path):
    """A run whose config names only some network arguments (as every run before the default
    architectures did) resumes with the network it was built with; a new run gets today's
    default for 16-D data (hidden 256), and an argument the user gives must still match."""
    run = tmp_path / "old"
    old = _small_mixture(model_kwargs=dict(hidden=128, depth=3, emb_dim=64))
    old.steps = 2
    train(old, run, progress=False)
    cfg_file = run / "ckpt-00000002" / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["model_kwargs"] = {"dim": 16}  # what an older run saved: the constructor did the rest
    cfg_file.write_text(json.dumps(cfg))
    st = train(_small_mixture(), run, resume=True, progress=False)
    assert st.step == 4 and st.model.net.emb_mlp[0].out_features == 128
    assert st.cfg.model_kwargs == {"dim": 16}
    assert Trainer(_small_mixture()).model.net.emb_mlp[0].out_features == 256
    with pytest.raises(ValueError, match=r"differs from the checkpoint's in \['model_kwargs'\]"):
        train(_small_mixture(model_kwargs=dict(hidden=64)), run, resume=True, progress=False)


@pytest.mark.parametrize("kw,match", [
    (dict(steps=2.5), "steps must be int, got 2.5"),
    (dict(batch_size=16.0), "batch_size must be int"),
    (dict(compile="false"), "compile must be bool"),
    (dict(ema_decay="0.9"), "ema_decay must be float"),
    (dict(model_kwargs=[1]), "model_kwargs must be dict"),
    (dict(shape=[2, 0]), "shape must be a list of positive integers"),
    (dict(shape=[3], model_kwargs={"dim": 2}), r"shape \[3\] disagrees with model_kwargs dim=2"),
    (dict(hflip=True), "hflip needs image data"),
])
def test_config_values_of_the_wrong_type_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw).validate()


def test_resume_names_the_damaged_file(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(OLD / "score", run)
    ck = run / "ckpt-00000002"
    (ck / "state.pt").rename(tmp_path / "state.pt")
    torch.save({"step": 2}, ck / "state.pt")
    with pytest.raises(CheckpointError, match=r"state.pt: does not fit this run \(KeyError"):
        Trainer.load(run)
    (tmp_path / "state.pt").rename(ck / "state.pt")
    (ck / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors: missing"):
        Trainer.load(run)


def test_resuming_an_older_log_keeps_its_columns_apart(tmp_path):
    """A classifier run of sdeflow 0.1 logged step,loss,accuracy; resumed, its rows move
    into the new columns by name (no accuracy under lr)."""
    run = tmp_path / "clf"
    shutil.copytree(OLD / "classifier", run)
    (run / "loss.csv").write_text("step,loss,accuracy\n1,2.3,0.1\n2,2.2,0.2\n3,2.1,0.3\n")
    _, cfg = sdeflow.load(run)
    cfg.steps = 3
    train(cfg, run, resume=True, progress=False)
    rows = [r.split(",") for r in (run / "loss.csv").read_text().splitlines()]
    assert rows[0] == ["step", "loss", "lr", "img_per_s", "accuracy"]
    assert rows[1] == ["1", "2.3", "", "", "0.1"] and rows[2] == ["2", "2.2", "", "", "0.2"]
    assert rows[3][0] == "3" and len(rows) == 4
