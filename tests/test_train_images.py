"""Image training: the CLI end to end on the digits (grids, TensorBoard, sample, evaluate), a
run killed with SIGKILL resumes to the same losses, two DDP ranks take exactly the step one
process takes on the same global batch — for both programs of the engine, score matching and
the noise-conditional classifier — and bad configs are refused."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from sdeflow.cli import main
from sdeflow.distributed import DistInfo
from sdeflow.train import TrainConfig, TrainState, load_denoiser
from sdeflow.training import ClassifierConfig, get_objective

from .conftest import TINY_DIT, TINY_UNET
from .test_train import _losses

TINY = json.dumps(TINY_UNET)
TINY_ENCODER = dict(channels=8, channel_mult=[1, 2], num_res_blocks=1)
# the CLI command and network of each training program of the engine
PROGRAMS = {"score": ("train", TINY_UNET), "classifier": ("train-classifier", TINY_ENCODER)}


def _train_args(out, *extra, program="score"):
    command, net = PROGRAMS[program]
    return [command, "--data", "digits", "--model-kwargs", json.dumps(net), "--batch-size", "16",
            "--out", str(out), *extra]


def _weights(run, program):
    import sdeflow
    return sdeflow.load(run, kind=program)[0].state_dict()


def test_digits_training_cli_end_to_end(tmp_path):
    run = tmp_path / "run"
    assert main(_train_args(run, "--steps", "20", "--sample-every", "10", "--sample-steps", "3",
                            "--log-every", "5")) == 0
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step-00000010.png",
                                                                  "step-00000020.png"]
    rows = _losses(run)
    assert rows[0] == ["step", "loss", "lr"] and [r[0] for r in rows[1:]] == ["5", "10", "15", "20"]
    if (run / "tensorboard").exists():  # tensorboard is optional
        assert any((run / "tensorboard").iterdir())
    model, cfg = load_denoiser(run)
    assert cfg.shape == [1, 8, 8] and cfg.model_kwargs["in_channels"] == 1
    out = tmp_path / "s"
    assert main(["sample", str(run), "-n", "12", "--solver", "dpmpp_2m", "--steps", "4",
                 "--out", str(out)]) == 0
    assert out.with_suffix(".png").stat().st_size > 0
    ev = tmp_path / "eval"
    assert main(["evaluate", str(run), "-n", "40", "--solver", "euler", "--steps", "3",
                 "--out", str(ev)]) == 0
    rep = json.loads((ev / "metrics.json").read_text())
    assert rep["nfe"] == 4 and rep["n"] == 40
    assert {"fdd", "fdd_floor_train_vs_test", "confidence", "class_kl"} <= set(rep)
    # an untrained-for-long model is far from the digits: the metric says so
    assert rep["fdd"] > 3 * rep["fdd_floor_train_vs_test"]


# the classifier's run uses the same engine: slow, so the default run stays under 10 min
@pytest.mark.parametrize("program", ["score", pytest.param("classifier", marks=pytest.mark.slow)])
def test_sigkill_then_resume_gives_the_losses_of_an_uninterrupted_run(tmp_path, program):
    """Kill -9 a `sdeflow train` (or `train-classifier`) process after its first checkpoint
    (and after it has logged steps past it), resume with --resume: the loss log is
    step-for-step identical to a run that was never interrupted, and so are the weights."""
    args = ["--steps", "60", "--ckpt-every", "10", "--log-every", "1", "--no-tensorboard"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "sdeflow.cli",
                             *_train_args(killed, *args, program=program)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        rows = _losses(killed) if (killed / "loss.csv").exists() else []
        if (killed / "latest").exists() and len(rows) > 14:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    ckpt_step = int((killed / "latest").read_text().split("-")[1])
    assert ckpt_step < 60 and len(_losses(killed)) - 1 > ckpt_step
    assert main(_train_args(killed, *args, "--resume", program=program)) == 0
    full = tmp_path / "full"
    assert main(_train_args(full, *args, program=program)) == 0
    assert _losses(killed) == _losses(full) and len(_losses(full)) == 61
    a, b = _weights(killed, program), _weights(full, program)
    assert all(torch.equal(a[k], b[k]) for k in a)


def _ddp_worker(rank, world, init_file, out_dir, cfg_dict):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    torch.set_num_threads(1)
    cfg = get_objective(cfg_dict["kind"]).Config.from_dict(cfg_dict)
    st = TrainState(cfg, DistInfo(rank, world, rank), device="cpu")
    losses = [st.train_step().item() for _ in range(3)]
    torch.save(dict(params=[p.detach().clone() for p in st.model.parameters()],
                    grads=[p.grad.detach().clone() for p in st.model.parameters()],
                    losses=losses), os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


DDP_CONFIGS = {
    "score": lambda: TrainConfig(data="digits", model="unet", model_kwargs=dict(TINY_UNET),
                                 batch_size=16, sigma_data=0.5, lr=1e-3, warmup=1,
                                 tensorboard=False),
    "classifier": lambda: ClassifierConfig(model_kwargs=dict(TINY_ENCODER), batch_size=16,
                                           lr=1e-3, warmup=1, tensorboard=False)}


def _group_worker(rank, world, init_file, out_dir, cfg_dict):
    """Train twice: inside a group the caller made (train must leave it alive), then from the
    torchrun-style environment alone (train joins a group and must leave it destroyed)."""
    import torch.distributed as dist
    from sdeflow.training import train
    torch.set_num_threads(1)
    cfg = get_objective(cfg_dict["kind"]).Config.from_dict(cfg_dict)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    train(cfg, os.path.join(out_dir, "caller"), progress=False)
    kept = dist.is_initialized()
    dist.destroy_process_group()
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    st = train(cfg, os.path.join(out_dir, "own"), progress=False)
    torch.save(dict(kept=kept, left=not dist.is_initialized(), step=st.step),
               os.path.join(out_dir, f"group{rank}.pt"))


def test_train_leaves_the_process_group_it_joined_and_keeps_the_callers(tmp_path, monkeypatch):
    """A rank that exits with its gloo group alive can abort (SIGABRT) while its peer closes
    the connection: train() destroys a group it joined itself, after all ranks meet, and
    leaves alone one its caller set up."""
    import socket
    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    cfg = DDP_CONFIGS["score"]()
    cfg.steps = 1
    mp.spawn(_group_worker, args=(2, str(tmp_path / "pg"), str(tmp_path), cfg.to_dict()),
             nprocs=2)
    for r in (0, 1):
        got = torch.load(tmp_path / f"group{r}.pt", weights_only=True)
        assert got == dict(kept=True, left=True, step=1)


@pytest.mark.parametrize("program", ["score", pytest.param("classifier", marks=pytest.mark.slow)])
def test_ddp_ranks_stay_identical_and_equal_one_process(tmp_path, program):
    """2 CPU ranks (gloo), 3 steps on a global batch of 16: both ranks hold bit-identical
    parameters and gradients, equal (to float32 round-off of the all-reduce) to one process
    training on the same global batch; the ranks' losses average to the single-process loss."""
    import torch.multiprocessing as mp
    cfg = DDP_CONFIGS[program]()
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "pg"), str(tmp_path), cfg.to_dict()), nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for key in ("params", "grads"):
        assert all(torch.equal(a, b) for a, b in zip(r0[key], r1[key]))
    single = TrainState(cfg, device="cpu")
    losses = [single.train_step().item() for _ in range(3)]
    for a, b in zip(r0["params"], single.model.parameters()):
        torch.testing.assert_close(a, b.detach(), rtol=1e-4, atol=1e-6)
    for a, b in zip(r0["grads"], single.model.parameters()):
        torch.testing.assert_close(a, b.grad, rtol=1e-3, atol=1e-6)
    for l0, l1, l in zip(r0["losses"], r1["losses"], losses):
        assert (l0 + l1) / 2 == pytest.approx(l, rel=1e-5)


def test_bf16_autocast_and_class_conditional_dit_train(tmp_path):
    cfg = TrainConfig(data="digits", model="dit", model_kwargs=dict(TINY_DIT), batch_size=16,
                      sigma_data=0.5, precision="bf16", class_cond=True, p_uncond=0.2,
                      hflip=True, steps=4, ckpt_every=4, tensorboard=False)
    st = TrainState(cfg, device="cpu")
    assert st.cfg.model_kwargs["num_classes"] == 10
    assert all(torch.isfinite(st.train_step()) for _ in range(4))
    labels = st.global_batch()["class_labels"]
    assert ((labels >= 0) & (labels <= 10)).all()


@pytest.mark.parametrize("kw,match", [
    (dict(data="digits", model="mlp"), "needs an image model"),
    (dict(data="gmm", model="unet"), "needs model 'mlp'"),
    (dict(p_uncond=0.1), "p_uncond needs class_cond"),
    (dict(precision="fp8"), "precision"),
])
def test_inconsistent_configs_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw).validate()


def test_class_cond_needs_labels_and_batch_must_split_over_ranks():
    with pytest.raises(ValueError, match="labelled data"):
        TrainState(TrainConfig(class_cond=True))
    with pytest.raises(ValueError, match="divisible"):
        TrainState(TrainConfig(batch_size=15), DistInfo(0, 2, 0))


def test_torchrun_launch_trains_like_one_process(tmp_path):
    """`torchrun --nproc_per_node=2 -m sdeflow.cli train` (gloo on CPU): one loss log and one
    checkpoint, written by rank 0; its per-step losses equal a single-process run's on the same
    global batch to 1e-4 and so do its weights (see below)."""
    args = _train_args(tmp_path / "ddp", "--steps", "3", "--log-every", "1", "--no-tensorboard",
                       "--warmup", "1")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                        "--standalone", "-m", "sdeflow.cli", *args],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-6000:]  # the rank's own error precedes the summary
    assert r.stdout.count("trained 3 steps") == 1  # only rank 0 reports (and writes)
    assert main(_train_args(tmp_path / "one", "--steps", "3", "--log-every", "1",
                            "--no-tensorboard", "--warmup", "1")) == 0
    a = load_denoiser(tmp_path / "ddp", ema=False)[0].state_dict()
    b = load_denoiser(tmp_path / "one", ema=False)[0].state_dict()
    # Adam divides by √v: round-off in gradients that are ~0 can move a weight by a visible
    # fraction of lr (2e-3), so weights get 1e-4; the gradients themselves are compared
    # exactly in test_ddp_ranks_stay_identical_and_equal_one_process
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-4)
    la, lb = _losses(tmp_path / "ddp"), _losses(tmp_path / "one")
    assert [r[0] for r in la] == [r[0] for r in lb]
    for ra, rb in zip(la[1:], lb[1:]):
        assert float(ra[1]) == pytest.approx(float(rb[1]), rel=1e-4)
