"""The distillation commands and `train --objective ict` get a flag for every field of their
configs (defined once, in the dataclasses); flags of another objective are refused by name."""
import argparse
import dataclasses

import pytest

from sdeflow.cli import build_parser, main
from sdeflow.cli.config_flags import NOT_FLAGS
from sdeflow.training.consistency import ConsistencyDistillationConfig, ConsistencyTrainingConfig
from sdeflow.training.progressive import ProgressiveConfig

# set otherwise: the positional TEACHER, the teacher's config (read from its run), the engine's
# steps of a progressive run (rounds × steps per round)
SET_OTHERWISE = {*NOT_FLAGS, "teacher_config"}


def _parser(*path):
    p = build_parser()
    for name in path:
        sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
        p = sub.choices[name]
    return p


@pytest.mark.parametrize("path,cls,extra", [
    (("distill", "progressive"), ProgressiveConfig, {"steps"}),
    (("distill", "consistency"), ConsistencyDistillationConfig, set()),
    (("train",), ConsistencyTrainingConfig, set())])
def test_every_field_has_a_flag(path, cls, extra):
    dests = {a.dest for a in _parser(*path)._actions}
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in dests | SET_OTHERWISE | extra]
    assert not missing, missing


def test_progressive_steps_is_the_students_step_count():
    a = build_parser().parse_args(["distill", "progressive", "exact", "--steps", "2",
                                   "--start-steps", "8", "--steps-per-round", "5"])
    from sdeflow.cli.config_flags import config_from_args
    cfg = config_from_args(ProgressiveConfig, a, steps=lambda c: c.round_ends()[-1])
    assert (cfg.final_steps, cfg.steps, cfg.teacher) == (2, 10, "exact")


def test_flags_of_another_objective_are_refused(tmp_path, capsys):
    assert main(["train", "--objective", "ict", "--class-cond", "--out", str(tmp_path)]) == 2
    assert "--objective ict does not take --class-cond" in capsys.readouterr().err
    assert main(["train", "--p-mean", "-1.0", "--out", str(tmp_path)]) == 2
    assert "does not take --p-mean" in capsys.readouterr().err
