"""Runs for the server's tests: a tiny class-conditional digits U-Net (trained 5 steps, with a
tuned schedule file inside its folder), a copy of its config that claims no p_uncond (never
loaded: it only feeds the guidance check), and a 2-D toy MLP on the 8-Gaussian ring."""
import json
import shutil
import time

import pytest
import torch

from tests.conftest import TINY_UNET

pytest.importorskip("fastapi")
pytest.importorskip("httpx")


@pytest.fixture(scope="session")
def run_dirs(tmp_path_factory):
    from sdeflow.sde import get_sde
    from sdeflow.training import train
    from sdeflow.train import TrainConfig
    root = tmp_path_factory.mktemp("serve_runs")
    threads = torch.get_num_threads()  # restored: later tests compare runs across processes
    torch.set_num_threads(1)
    try:
        train(TrainConfig(data="digits", model="unet", model_kwargs=TINY_UNET, steps=5,
                          batch_size=8, class_cond=True, p_uncond=0.2, tensorboard=False),
              root / "digits", progress=False)
        train(TrainConfig(data="gmm", steps=20, batch_size=64, tensorboard=False), root / "toy",
              progress=False)
    finally:
        torch.set_num_threads(threads)
    tuned = dict(solver="ddim", steps=3, timesteps=[80.0, 5.0, 0.5, 0.002],
                 sde=get_sde("edm").config(),
                 calibration_loss=0.1, start_loss=0.2, start_schedule="karras")
    (root / "digits" / "tuned.json").write_text(json.dumps(tuned))
    (root / "digits" / "tuned_v3.json").write_text(json.dumps({**tuned, "solver": "dpm_solver_v3"}))
    (root / "digits" / "notes.json").write_text("{\"not\": \"a schedule\"}")
    (root / "outside.json").write_text(json.dumps(tuned))  # beside the runs: never readable
    ck = root / "digits" / (root / "digits" / "latest").read_text().strip()
    noguide = root / "noguide" / ck.name
    shutil.copytree(ck, noguide)
    cfg = json.loads((noguide / "config.json").read_text())
    (noguide / "config.json").write_text(json.dumps({**cfg, "p_uncond": 0.0}))
    (root / "noguide" / "latest").write_text(ck.name)
    from sdeflow.loading import load
    from sdeflow.samplers.ems import estimate_statistics, statistics_path
    model, cfg = load(root / "digits")  # DPM-Solver-v3's statistics, where `sdeflow ems` puts them
    estimate_statistics(model, tuple(cfg.shape), n=8, points=5).save(statistics_path(root / "digits"))
    return root


@pytest.fixture(scope="session")
def app(run_dirs):
    from sdeflow.serve import create_app
    return create_app([run_dirs / "digits", run_dirs / "toy", run_dirs / "noguide"], max_queue=8)


@pytest.fixture(scope="session")
def client(app):
    from fastapi.testclient import TestClient
    with TestClient(app) as c:
        yield c


def wait(client, job: dict, timeout: float = 60.0) -> dict:
    """Poll a job until it has finished."""
    end = time.time() + timeout
    while job["status"] not in ("done", "error", "cancelled"):
        assert time.time() < end, f"job still {job['status']} after {timeout} s"
        time.sleep(0.05)
        job = client.get(f"/api/jobs/{job['id']}").json()
    return job


def run_job(client, endpoint: str, body: dict) -> dict:
    r = client.post(endpoint, json=body)
    assert r.status_code == 202, r.json()
    return wait(client, r.json())
