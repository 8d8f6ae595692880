"""Every bad file or bad value a user can hand the CLI ends in one line on stderr,
``sdeflow <command>: error: <file or argument>: <what is wrong>``, and exit status 2 — never a
traceback. Each case runs the real command line in a subprocess on a damaged copy of a tiny
trained run.

``sdeflow sample`` reads the EMA weights, so the weight-file cases damage ``ema.safetensors``
(a missing or damaged ``model.safetensors`` does not stop sampling)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sdeflow.guidance import ClassifierConfig, train_classifier
from sdeflow.train import TrainConfig, train


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 2-D score model (MLP, 20 steps) and a digits classifier (3 steps)."""
    tmp = tmp_path_factory.mktemp("good")
    score = TrainConfig(data="gmm", steps=20, batch_size=64, ckpt_every=20, log_every=10,
                        model_kwargs={"hidden": 16, "depth": 1}, tensorboard=False).validate()
    train(score, tmp / "score", progress=False)
    clf = ClassifierConfig(data="digits", steps=3, batch_size=8, log_every=1,
                           model_kwargs={"channels": 8}).validate()
    train_classifier(clf, tmp / "classifier", progress=False, device="cpu")
    return tmp


@pytest.fixture
def run(runs, tmp_path):
    """A copy of the score run, free to damage, and its checkpoint folder."""
    copy = tmp_path / "run"
    shutil.copytree(runs / "score", copy)
    return copy, copy / (copy / "latest").read_text().strip()


def cli(*args) -> tuple[int, str]:
    """Exit status and stderr of ``sdeflow ARGS`` (CPU only, to run anywhere)."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    r = subprocess.run([sys.executable, "-m", "sdeflow.cli", *map(str, args)], env=env,
                       capture_output=True, text=True, timeout=300)
    return r.returncode, r.stderr


def one_error_line(command: str, rc: int, err: str) -> str:
    """The message of the single error line, after checking the status and the line's form."""
    assert "Traceback" not in err, err
    lines = [s for s in err.splitlines() if s.strip()]
    assert rc == 2 and len(lines) == 1, f"rc={rc}, stderr:\n{err}"
    prefix = f"sdeflow {command}: error: "
    assert lines[0].startswith(prefix), lines[0]
    return lines[0][len(prefix):]


def sample_error(path, *extra) -> str:
    return one_error_line("sample", *cli("sample", path, "-n", "4", "--steps", "2", *extra))


def edit_config(ck: Path, change) -> Path:
    f = ck / "config.json"
    cfg = json.loads(f.read_text())
    change(cfg)
    f.write_text(json.dumps(cfg))
    return f


def test_a_good_run_samples(run, tmp_path):
    """The baseline the damaged copies are measured against."""
    rc, err = cli("sample", run[0], "-n", "4", "--steps", "2", "--out", tmp_path / "s")
    assert rc == 0, err


def test_missing_weights_name_the_file(run):
    _, ck = run
    (ck / "ema.safetensors").unlink()
    msg = sample_error(ck)
    assert msg.startswith(str(ck / "ema.safetensors")) and "missing" in msg


@pytest.mark.parametrize("damage", ["truncated", "random bytes", "empty"])
def test_damaged_weights_name_the_file(run, damage):
    _, ck = run
    f = ck / "ema.safetensors"
    data = f.read_bytes()
    f.write_bytes({"truncated": data[:len(data) // 2], "empty": b"",
                   "random bytes": os.urandom(len(data))}[damage])
    assert sample_error(run[0]).startswith(str(f))


def test_malformed_config_names_the_file(run):
    _, ck = run
    (ck / "config.json").write_text('{"data": "gmm",\n  "sde": "edm\tx"')
    msg = sample_error(run[0])
    assert msg.startswith(str(ck / "config.json")) and "JSON" in msg


@pytest.mark.parametrize("key", ["shape", "model_kwargs"])
def test_config_missing_a_key_names_the_file(run, key):
    """Without its data shape the network cannot be rebuilt; without its network arguments
    it is rebuilt with the defaults, which the weights do not fit."""
    _, ck = run
    edit_config(ck, lambda c: c.pop(key))
    assert sample_error(ck).startswith(str(ck))


@pytest.mark.parametrize("key,value", [("model", "nonet"), ("sde", "nosde"), ("loss", "noloss")])
def test_unknown_names_in_the_config_name_the_file_and_the_value(run, key, value):
    _, ck = run
    f = edit_config(ck, lambda c: c.update({key: value}))
    msg = sample_error(ck)
    assert msg.startswith(str(f)) and value in msg


def test_weights_that_do_not_fit_the_config_name_the_file(run):
    _, ck = run
    edit_config(ck, lambda c: c["model_kwargs"].update(hidden=32))  # trained with 16
    msg = sample_error(ck)
    assert msg.startswith(str(ck)) and "safetensors" in msg


def test_a_classifier_is_not_a_score_model(runs):
    ck = runs / "classifier"
    msg = sample_error(ck)
    assert msg.startswith(str(ck)) and "classifier" in msg


def test_a_score_model_is_not_a_classifier(run):
    msg = sample_error(run[0], "--class", "1", "--classifier", run[0])
    assert msg.startswith(str(run[0])) and "classifier" in msg


def test_a_missing_run_directory_is_named(tmp_path):
    missing = tmp_path / "no-such-run"
    assert sample_error(missing).startswith(str(missing))


def test_a_file_instead_of_a_run_directory_is_named(run):
    f = run[1] / "config.json"
    assert sample_error(f).startswith(str(f))


def test_bad_network_arguments_are_refused_before_training(tmp_path):
    out = tmp_path / "run"
    rc, err = cli("train", "--data", "digits", "--model-kwargs", '{"channels": -4}',
                  "--steps", "2", "--out", out)
    msg = one_error_line("train", rc, err)
    assert "channels" in msg and "-4" in msg
    assert not (out / "latest").exists()


def test_a_bad_data_file_is_named(run, tmp_path):
    bad = tmp_path / "x.npy"
    bad.write_bytes(b"not an array")
    rc, err = cli("likelihood", run[0], "--data-file", bad, "--out", tmp_path / "ll.json")
    assert str(bad) in one_error_line("likelihood", rc, err)
