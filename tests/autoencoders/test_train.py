"""`sdeflow train-autoencoder`: a checkpoint that resumes exactly and loads as an autoencoder
(also rebuilt from its config alone, as a latent-diffusion run does), flags defined once in the
config dataclass, and a short run that measurably reduces the reconstruction error."""
import argparse
import dataclasses
import json

import pytest
import torch

import sdeflow
from sdeflow.checkpoint import CheckpointError
from sdeflow.cli import build_parser, main
from sdeflow.cli.autoencoder import autoencoder_config
from sdeflow.cli.config_flags import NOT_FLAGS
from sdeflow.data import get_data
from sdeflow.training import train
from sdeflow.training.autoencoder import (AutoencoderConfig, build_from_config,
                                          reconstruction_metrics)

from ..conftest import train_interrupted

TINY = {"channels": 8}


def tiny_cfg(**kw):
    base = dict(data="color_digits", data_kwargs={"resolution": 16}, autoencoder="kl",
                autoencoder_kwargs=TINY, downsample=4, latent_channels=4, steps=6, batch_size=8,
                ckpt_every=3, log_every=1, tensorboard=False)
    return AutoencoderConfig(**{**base, **kw})


def test_cli_run_writes_a_checkpoint_that_loads_as_an_autoencoder(tmp_path, capsys):
    out = tmp_path / "ae"
    rc = main(["train-autoencoder", "--data", "color_digits", "--data-kwargs",
               '{"resolution": 16}', "--autoencoder", "kl", "--downsample", "4",
               "--latent-channels", "4", "--autoencoder-kwargs", json.dumps(TINY), "--steps", "20",
               "--batch-size", "8", "--sample-every", "20", "--sample-num", "6",
               "--no-tensorboard", "--out", str(out)])
    assert rc == 0 and "trained 20 steps" in capsys.readouterr().out
    assert (out / "samples" / "step-00000020.png").is_file()
    assert (out / "heldout.csv").read_text().splitlines()[0] == "step,psnr,ssim,l1"
    ae, cfg = sdeflow.load(out, kind="autoencoder")
    assert not ae.training and cfg.KIND == "autoencoder"
    x = get_data("color_digits", resolution=16).x[:3]
    assert ae.encode(x).shape == (3, 4, 4, 4) and ae.decode(ae.encode(x)).shape == x.shape
    # rebuilt from the saved config alone (untrained weights), the checkpoint's weights fit
    saved = json.loads((sorted(out.glob("ckpt-*"))[-1] / "config.json").read_text())
    net = build_from_config(saved)
    net.load_state_dict(ae.state_dict())
    assert torch.equal(net.eval().encode(x), ae.encode(x))
    with pytest.raises(CheckpointError, match="not a denoiser checkpoint .*autoencoder"):
        sdeflow.load(out, kind="denoiser")


def test_resume_is_exact(tmp_path):
    full, resumed = train_interrupted(tiny_cfg, tmp_path, 3)
    for a, b in zip(full.nets["model"].state_dict().values(),
                    resumed.nets["model"].state_dict().values()):
        assert torch.equal(a, b)
    assert all(torch.equal(a, b) for a, b in zip(full.ema_model.parameters(),
                                                 resumed.ema_model.parameters()))
    rows = (tmp_path / "a" / "loss.csv").read_text().splitlines()
    assert rows[0] == "step,loss,lr,img_per_s,recon,kl,psnr" and len(rows) == 7
    assert [r.split(",")[1] for r in rows[1:]] == \
        [r.split(",")[1] for r in (tmp_path / "b" / "loss.csv").read_text().splitlines()[1:]]


def test_training_reduces_the_reconstruction_error(tmp_path):
    """A plain autoencoder (f = 2) on the 8×8 digits: 150 steps lower the held-out L1 error
    by more than a third and raise the PSNR by 3 dB (measured: L1 0.79 → 0.15, PSNR
    7.3 → 18.5 dB)."""
    from sdeflow.training.autoencoder import train_autoencoder
    cfg = AutoencoderConfig(data="digits", autoencoder="ae", autoencoder_kwargs=TINY,
                            downsample=2, latent_channels=4, steps=150, batch_size=32,
                            warmup=10, ema_decay=0.0, log_every=50, tensorboard=False)
    x = get_data("digits", split="test").x[:64]
    torch.manual_seed(cfg.seed)
    before = reconstruction_metrics(build_from_config(
        dataclasses.replace(cfg, shape=[1, 8, 8], num_classes=10).to_dict()), x)
    after = reconstruction_metrics(train_autoencoder(cfg, tmp_path / "r", progress=False), x)
    assert after["l1"] < 0.66 * before["l1"] and after["psnr"] > before["psnr"] + 3, (before, after)


def test_linear_vae_trains_on_vector_data_and_conv_ones_refuse_it(tmp_path):
    cfg = AutoencoderConfig(data="mixture", data_kwargs={"dim": 4}, autoencoder="linear",
                            latent_channels=2, steps=5, batch_size=16, tensorboard=False)
    train(cfg, tmp_path / "lin", progress=False)
    ae, _ = sdeflow.load(tmp_path / "lin", kind="autoencoder")
    assert ae.encode(torch.zeros(3, 4)).shape == (3, 2)
    with pytest.raises(ValueError, match="'moons' is vector data: the convolutional"):
        AutoencoderConfig(data="moons").validate()
    with pytest.raises(ValueError, match="set \\['downsample'\\] with the config's fields"):
        AutoencoderConfig(autoencoder_kwargs={"downsample": 2}).validate()


def _subparser():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train-autoencoder"]


def test_every_config_field_has_a_flag_and_defaults_are_the_dataclass_defaults():
    dests = {a.dest for a in _subparser()._actions}
    unused = {"model", "model_kwargs"}  # the network is --autoencoder
    missing = [f.name for f in dataclasses.fields(AutoencoderConfig)
               if f.name not in dests | set(NOT_FLAGS) | unused]
    assert not missing
    cfg = autoencoder_config(build_parser().parse_args(["train-autoencoder"]))
    assert dataclasses.asdict(cfg) == dataclasses.asdict(AutoencoderConfig())
    cfg = autoencoder_config(build_parser().parse_args(
        ["train-autoencoder", "--autoencoder", "vae", "--downsample", "2", "--latent-channels",
         "8", "--autoencoder-kwargs", '{"beta": 0.5}']))
    assert (cfg.autoencoder, cfg.downsample, cfg.latent_channels, cfg.autoencoder_kwargs) == \
        ("vae", 2, 8, {"beta": 0.5})


def test_cli_errors_are_one_line(capsys):
    assert main(["train-autoencoder", "--data", "moons", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sdeflow train-autoencoder: error: invalid autoencoder config") \
        and "vector data" in err
