"""A vector data set other than the 2-D toys (`mixture`, 16-D) goes through the CLI like them:
train picks the MLP, sample scores against fresh draws, likelihood reports the true density."""
import json

from sdeflow.cli import main


def test_train_sample_likelihood_on_a_16d_mixture(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--data", "mixture", "--data-kwargs", '{"dim": 16, "k": 3}',
                 "--steps", "20", "--batch-size", "64", "--no-tensorboard", "--out", str(run)]) == 0
    cfg = json.loads((run / "ckpt-00000020" / "config.json").read_text())
    assert cfg["model"] == "mlp" and cfg["shape"] == [16] and cfg["model_kwargs"]["hidden"] == 256
    out = tmp_path / "s"
    assert main(["sample", str(run), "-n", "64", "--solver", "euler", "--steps", "4",
                 "--out", str(out)]) == 0
    assert "sliced_wasserstein_to_data" in json.loads(out.with_suffix(".json").read_text())
    rep = tmp_path / "lik.json"
    assert main(["likelihood", str(run), "-n", "16", "--solver", "heun", "--steps", "8",
                 "--out", str(rep)]) == 0
    r = json.loads(rep.read_text())
    assert r["dims"] == 16 and "true_log_density_nats" in r and r["nats"] < 0
