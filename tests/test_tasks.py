"""Image-to-image degradations (SR3/Palette conditions) and their use in training."""
import pytest
import torch

from sdeflow.tasks import get_task
from sdeflow.train import TrainConfig, TrainState

from .conftest import TINY_UNET


def test_super_resolution_condition_is_bicubic_of_box_average():
    sr = get_task("sr", factor=2)
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    low = sr.low_res(x)
    assert low.shape == (3, 1, 4, 4)
    torch.testing.assert_close(low[0, 0, 0, 0], x[0, 0, :2, :2].mean())
    c = sr.condition(x)
    assert c.shape == x.shape and c.min() >= -1 and c.max() <= 1
    flat = torch.full((1, 1, 4, 4), 0.3)
    torch.testing.assert_close(sr.upsample(flat), torch.full((1, 1, 8, 8), 0.3))
    with pytest.raises(ValueError):
        get_task("sr", factor=1)
    with pytest.raises(ValueError, match="divisible"):
        get_task("sr", factor=3).low_res(x)


def test_colorization_condition_is_the_grey_level():
    task = get_task("colorize")
    x = torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(task.condition(x), x.mean(1, keepdim=True))
    assert task.cond_channels(3) == 1
    with pytest.raises(ValueError, match="RGB"):
        task.cond_channels(1)
    with pytest.raises(ValueError, match="unknown task"):
        get_task("deblur")


def test_trainer_feeds_the_condition_to_the_network():
    cfg = TrainConfig(data="digits", model="unet", model_kwargs=dict(TINY_UNET), task="sr",
                      task_kwargs={"factor": 2}, batch_size=4, steps=1, tensorboard=False)
    st = TrainState(cfg, device="cpu")
    assert st.cfg.model_kwargs["cond_channels"] == 1
    b = st.global_batch()
    x0, cond = b["x0"], {k: b[k] for k in ("x_cond",) if k in b}
    torch.testing.assert_close(cond["x_cond"], get_task("sr", factor=2).condition(x0))
    assert torch.isfinite(st.train_step())
    with pytest.raises(ValueError, match="image data"):
        TrainConfig(data="gmm", task="sr").validate()
