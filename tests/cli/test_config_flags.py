"""Each field of the training configs is defined once, in its dataclass: every field has a flag
(or is set otherwise, see ``NOT_FLAGS``), and a command line that gives no flag yields exactly
the dataclass defaults."""
import argparse
import dataclasses

import pytest

from sdeflow.cli import build_parser
from sdeflow.cli.config_flags import NOT_FLAGS
from sdeflow.cli.train import classifier_config, score_config
from sdeflow.guidance import ClassifierConfig
from sdeflow.train import TrainConfig

CASES = {"train": (TrainConfig, score_config),
         "train-classifier": (ClassifierConfig, classifier_config)}


def subparser(command: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


@pytest.mark.parametrize("command", CASES)
def test_every_config_field_has_a_flag(command):
    cls, _ = CASES[command]
    dests = {a.dest for a in subparser(command)._actions}
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in dests | set(NOT_FLAGS)]
    assert not missing, f"{cls.__name__} fields without a `sdeflow {command}` flag: {missing}"


@pytest.mark.parametrize("command", CASES)
def test_parsed_defaults_are_the_dataclass_defaults(command):
    cls, make = CASES[command]
    cfg = make(build_parser().parse_args([command]))
    assert dataclasses.asdict(cfg) == dataclasses.asdict(cls())


def test_flags_reach_the_config():
    a = build_parser().parse_args(
        ["train", "--data", "digits", "--lr", "1e-4", "--no-tensorboard", "--precondition", "none",
         "--prediction", "eps", "--class-cond", "--task", "sr", "--sr-factor", "4",
         "--model-kwargs", '{"channels": 16}', "--sample-num", "9"])
    cfg = score_config(a)
    assert (cfg.data, cfg.lr, cfg.tensorboard, cfg.precondition, cfg.prediction) == \
        ("digits", 1e-4, False, None, "eps")
    assert (cfg.class_cond, cfg.task_kwargs, cfg.model_kwargs, cfg.sample_num) == \
        (True, {"factor": 4}, {"channels": 16}, 9)
    # defaults that depend on the data: a U-Net and σ_data = 0.5 for images
    assert (cfg.model, cfg.sigma_data) == ("unet", 0.5)
    clf = classifier_config(build_parser().parse_args(["train-classifier", "--data", "moons",
                                                       "--ema-decay", "0.9"]))
    assert (clf.model, clf.ema_decay, clf.sigma_data) == ("mlp", 0.9, ClassifierConfig().sigma_data)


def test_mlp_options_are_refused_for_other_networks():
    with pytest.raises(ValueError, match="--hidden is an MLP option"):
        score_config(build_parser().parse_args(["train", "--data", "digits", "--hidden", "8"]))
