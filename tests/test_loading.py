"""`sdeflow.load`: the one way from a checkpoint to a model. Every bad file is one
CheckpointError whose message starts with the path of the file at fault and says what is
wrong — never a traceback from inside safetensors, json or torch."""
import json
import shutil
from pathlib import Path

import pytest
import torch

import sdeflow
from sdeflow.checkpoint import CheckpointError, read_checkpoint

OLD = Path(__file__).parent / "fixtures" / "v0_1"


@pytest.fixture
def run(tmp_path):
    out = tmp_path / "run"
    shutil.copytree(OLD / "score", out)
    return out


def _header(h: dict) -> bytes:
    """A safetensors file with header ``h`` and 8 data bytes (a crafted, damaged file)."""
    text = json.dumps(h).encode()
    return len(text).to_bytes(8, "little") + text + bytes(8)


def _ck(run):
    return run / "ckpt-00000002"


def _fails(path, match, file, **kw):
    with pytest.raises(CheckpointError, match=match) as e:
        sdeflow.load(path, **kw)
    assert str(e.value).startswith(str(file)), str(e.value)
    assert e.value.path == Path(file)
    return str(e.value)


def test_a_good_checkpoint_loads_from_the_run_or_its_folder(run):
    a, cfg = sdeflow.load(run)
    b, _ = sdeflow.load(_ck(run), ema=False)
    assert isinstance(a, sdeflow.Denoiser) and not a.training and cfg.shape == [2]
    assert not any(p.requires_grad for p in a.parameters())
    assert sdeflow.load(run, kind="score")[1] == cfg


def test_missing_paths(tmp_path, run):
    _fails(tmp_path / "nope", "no such file or directory", tmp_path / "nope")
    _fails(tmp_path, "no checkpoint here", tmp_path)
    _fails(_ck(run) / "config.json", "not a directory", _ck(run) / "config.json")
    (run / "latest").write_text("ckpt-99999999")
    _fails(run, "not a checkpoint folder", run / "latest")


@pytest.mark.parametrize("damage,match", [
    (lambda f: f.unlink(), "missing"),
    (lambda f: f.write_bytes(f.read_bytes()[:100]), "truncated"),
    (lambda f: f.write_bytes(f.read_bytes()[:-50]), r"truncated \(header says \d+ bytes, file has \d+\)"),
    (lambda f: f.write_bytes(b""), "truncated or empty"),
    (lambda f: f.write_bytes(bytes(range(256)) * 8), "not a safetensors file|corrupted"),
    (lambda f: f.write_bytes(_header({"w": {"dtype": "F32", "shape": [1], "data_offsets": "ab"}})),
     "no valid data offsets"),
    (lambda f: f.write_bytes(_header({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0]}})),
     "no valid data offsets"),
])
def test_damaged_weights(run, damage, match):
    f = _ck(run) / "ema.safetensors"
    damage(f)
    _fails(run, match, f)


@pytest.mark.parametrize("text,match", [
    ('{"data": "gmm\x01"}', r"not valid JSON \(Invalid control character at line 1 column 14\)"),
    ("[1, 2]", "expected a JSON object"),
    ("", "not valid JSON"),
])
def test_malformed_config(run, text, match):
    f = _ck(run) / "config.json"
    f.write_text(text)
    _fails(run, match, f)


@pytest.mark.parametrize("edit,match", [
    (lambda c: c.update(sde="nope"), "sde 'nope' not in"),
    (lambda c: c.update(model="nope"), "model 'nope' not in"),
    (lambda c: c.update(bogus=1), r"unknown config keys \['bogus'\]"),
    (lambda c: c.pop("shape"), "has no data shape"),
    (lambda c: c.update(kind="latent-flow"), "unknown checkpoint kind 'latent-flow'"),
    (lambda c: c["model_kwargs"].update(hidden=-3), "cannot be built.*hidden"),
    (lambda c: c["model_kwargs"].update(hidden=24), r"weights do not match.*shape \(file vs config\)"),
    (lambda c: c["model_kwargs"].update(depth=2), r"weights do not match.*missing"),
])
def test_configs_that_cannot_describe_the_weights(run, edit, match):
    f = _ck(run) / "config.json"
    cfg = json.loads(f.read_text())
    edit(cfg)
    f.write_text(json.dumps(cfg))
    msg = _fails(run, match, f if "weights" not in match else _ck(run) / "ema.safetensors")
    assert "Traceback" not in msg


def test_a_checkpoint_of_another_kind_is_refused_with_a_hint(run):
    msg = _fails(run, "not a classifier checkpoint", _ck(run) / "config.json", kind="classifier")
    assert "sdeflow train-classifier" in msg
    _fails(OLD / "classifier", "not a score checkpoint", OLD / "classifier" / "ckpt-00000002" /
           "config.json", kind="score")


def test_damaged_trainer_state_is_refused_on_resume(run):
    f = _ck(run) / "state.pt"
    f.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="state.pt: corrupted or not a trainer state"):
        read_checkpoint(run)
    # sampling does not need the trainer state
    assert isinstance(sdeflow.load(run)[0], sdeflow.Denoiser)


def test_nothing_in_a_checkpoint_is_executed(run, tmp_path):
    """state.pt is read with weights_only=True: a pickle that would run code is refused."""
    class Evil:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))
    torch.save({"step": 1, "x": Evil()}, _ck(run) / "state.pt")
    with pytest.raises(CheckpointError, match="state.pt"):
        read_checkpoint(run)
    assert not (tmp_path / "pwned").exists()
