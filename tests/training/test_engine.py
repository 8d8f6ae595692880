"""The training engine: one loop for every program. A program is one small Objective class
(here a two-network toy distillation, registered in this file); the engine saves and restores
all of its networks exactly, and checkpoints written before the engine existed still load,
give the same outputs and resume."""
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

import sdeflow
from sdeflow.models import build_model
from sdeflow.train import TrainConfig
from sdeflow.training import (ClassifierConfig, EngineConfig, Objective, Trainer,
                              get_objective, register_objective, train)

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
    full = train(_toy(), tmp_path / "a", progress=False)
    cfg = _toy()
    cfg.steps = 3
    train(cfg, tmp_path / "b", progress=False)
    resumed = train(_toy(), tmp_path / "b", resume=True, progress=False)
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
    with torch.no_grad():
        assert torch.equal(model.x0(ref["x"], torch.full((4,), 0.5)), ref["x0"])
    clf, ccfg = sdeflow.load(OLD / "classifier", kind="classifier")
    with torch.no_grad():
        assert torch.equal(clf(ref["xi"], torch.full((4,), 0.5)), ref["logits"])


@pytest.mark.parametrize("kind", ["score", "classifier"])
def test_a_run_written_before_the_engine_resumes(tmp_path, kind):
    run = tmp_path / kind
    shutil.copytree(OLD / kind, run)
    _, cfg = sdeflow.load(run)
    cfg.steps = 4
    st = train(cfg, run, resume=True, progress=False)
    assert st.step == 4 and (run / "ckpt-00000004" / "config.json").is_file()
