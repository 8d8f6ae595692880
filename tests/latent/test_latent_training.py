"""`sdeflow train --latent AE_RUN`: the data are encoded once (cached next to the autoencoder's
run) and rescaled to unit std, the run resumes exactly, its checkpoint carries the autoencoder
(it loads without the autoencoder's run) and loads as a LatentDenoiser whose samples are
images — for `sdeflow sample`, `inpaint`, `likelihood` (of the latents) and text conditioning."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import sdeflow
from sdeflow.cli import main
from sdeflow.data import get_data
from sdeflow.latent import LatentDenoiser
from sdeflow.training import train
from sdeflow.training.autoencoder import AutoencoderConfig
from sdeflow.training.score import TrainConfig

from ..conftest import TINY_UNET, train_interrupted

DATA = {"resolution": 16}


@pytest.fixture(scope="module")
def ae_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("ae") / "ae"
    train(AutoencoderConfig(data="color_digits", data_kwargs=DATA, autoencoder="kl",
                            autoencoder_kwargs={"channels": 8}, downsample=2, latent_channels=3,
                            steps=10, batch_size=8, ckpt_every=10, tensorboard=False),
          run, progress=False)
    return run


def latent_cfg(ae_run, **kw):
    base = dict(data="color_digits", data_kwargs=DATA, latent=str(ae_run), model="unet",
                model_kwargs=dict(TINY_UNET), steps=4, batch_size=8, ckpt_every=2, log_every=1,
                tensorboard=False, sigma_data=1.0)
    return TrainConfig(**{**base, **kw})


def test_latent_run_trains_on_unit_std_latents_and_exports_a_decoding_model(ae_run, tmp_path):
    st = train(latent_cfg(ae_run), tmp_path / "lat", progress=False)
    ae, _ = sdeflow.load(ae_run, kind="autoencoder")
    z = ae.encode(get_data("color_digits", **DATA).x)
    assert st.cfg.shape == [3, 8, 8] and st.cfg.latent_config["kind"] == "autoencoder"
    assert st.cfg.latent_scale == pytest.approx(1 / z.std().item(), rel=1e-5)
    assert (st.data.x.std() - 1).abs() < 1e-5
    assert len(list((ae_run / "latent-cache").glob("latents-*.safetensors"))) == 1
    # the checkpoint carries the autoencoder: it loads with the autoencoder's run gone
    moved = tmp_path / "ae_moved"
    shutil.copytree(ae_run, moved)
    try:
        shutil.rmtree(ae_run)
        model, cfg = sdeflow.load(tmp_path / "lat", kind="denoiser")
    finally:
        shutil.copytree(moved, ae_run)
    assert isinstance(model, LatentDenoiser) and model.image_shape == (3, 16, 16)
    x = model.decode(model.encode(get_data("color_digits", **DATA).x[:4]))
    torch.testing.assert_close(x, ae.decode(z[:4]))
    assert sdeflow.sample(model, shape=(2, 3, 16, 16), steps=2, seed=0).shape == (2, 3, 16, 16)


def test_latent_run_resumes_exactly(ae_run, tmp_path):
    full, resumed = train_interrupted(lambda: latent_cfg(ae_run), tmp_path, 2)
    for a, b in zip(full.nets["model"].state_dict().values(),
                    resumed.nets["model"].state_dict().values()):
        assert torch.equal(a, b)
    assert full.cfg.latent_scale == resumed.cfg.latent_scale


def test_latent_cli_sample_inpaint_and_likelihood(ae_run, tmp_path):
    run = tmp_path / "lat"
    assert main(["train", "--data", "color_digits", "--data-kwargs", json.dumps(DATA),
                 "--latent", str(ae_run), "--model", "unet", "--model-kwargs",
                 json.dumps(TINY_UNET), "--steps", "2", "--batch-size", "8",
                 "--no-tensorboard", "--out", str(run)]) == 0
    out = tmp_path / "s"
    assert main(["sample", str(run), "-n", "3", "--steps", "2", "--out", str(out)]) == 0
    assert np.load(out.with_suffix(".npy")).shape == (3, 3, 16, 16)
    assert main(["inpaint", str(run), "-n", "2", "--steps", "2", "--solver", "euler",
                 "--out", str(tmp_path / "inp")]) == 0
    rep = json.loads((tmp_path / "inp" / "report.json").read_text())
    assert rep["known_max_abs_error"] == 0.0
    np.save(tmp_path / "x.npy", get_data("color_digits", **DATA).x[:2].numpy())
    assert main(["likelihood", str(run), "--data-file", str(tmp_path / "x.npy"), "--solver",
                 "euler", "--steps", "2", "--out", str(tmp_path / "ll.json")]) == 0
    rep = json.loads((tmp_path / "ll.json").read_text())
    assert rep["space"] == "latent" and rep["dims"] == 3 * 8 * 8


def test_text_conditioned_latent_model(ae_run, tmp_path):
    st = train(latent_cfg(ae_run, data="captioned_digits", text_cond=True, p_uncond=0.1,
                          model_kwargs=dict(TINY_UNET, text_dim=16, text_layers=1)),
               tmp_path / "txt", progress=False)
    assert st.cfg.model_kwargs["text_vocab"] > 0
    out = tmp_path / "t"
    assert main(["sample", str(tmp_path / "txt"), "-n", "2", "--steps", "2", "--prompt",
                 "a red seven on a blue background", "--guidance", "1", "--out", str(out)]) == 0
    assert np.load(out.with_suffix(".npy")).shape == (2, 3, 16, 16)


def test_latent_refusals_name_what_to_fix(ae_run, tmp_path):
    score = tmp_path / "score"
    train(TrainConfig(data="digits", model="unet", model_kwargs=dict(TINY_UNET), steps=1,
                      batch_size=4, tensorboard=False), score, progress=False)
    with pytest.raises(ValueError, match="not the run of an autoencoder"):
        latent_cfg(score).validate()
    with pytest.raises(ValueError, match="hflip flips images, not latents"):
        latent_cfg(ae_run, hflip=True).validate()
    with pytest.raises(ValueError, match=r"takes images of shape \[3, 16, 16\]"):
        train(latent_cfg(ae_run, data_kwargs={"resolution": 32}), tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="latent_scale is set but latent is not"):
        TrainConfig(latent_scale=2.0).validate()


def test_a_retrained_autoencoder_is_never_confused_with_the_old_one(tmp_path):
    """Codes are cached under the digest of the autoencoder's weights: retrained in place (same
    folder, same step), a new run encodes afresh and an old run refuses to resume."""
    def ae(seed):
        shutil.rmtree(tmp_path / "ae", ignore_errors=True)
        train(AutoencoderConfig(data="color_digits", data_kwargs=DATA, autoencoder="kl",
                                autoencoder_kwargs={"channels": 8}, downsample=2,
                                latent_channels=3, steps=2, batch_size=4, seed=seed,
                                tensorboard=False), tmp_path / "ae", progress=False)
    ae(0)
    old = train(latent_cfg(tmp_path / "ae", steps=2), tmp_path / "old", progress=False)
    ae(1)
    new = train(latent_cfg(tmp_path / "ae", steps=2), tmp_path / "new", progress=False)
    fresh, _ = sdeflow.load(tmp_path / "ae", kind="autoencoder")
    torch.testing.assert_close(new.data.z, fresh.encode(get_data("color_digits", **DATA).x))
    assert not torch.allclose(new.data.z, old.data.z)
    with pytest.raises(Exception, match="other weights than when this run started"):
        train(latent_cfg(tmp_path / "ae", steps=4), tmp_path / "old", resume=True, progress=False)
