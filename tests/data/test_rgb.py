"""The embedded RGB data for colour tasks."""
import pytest
import torch

from sdeflow.data import get_data


def test_color_digits_are_painted_digits_with_visible_contrast():
    d = get_data("color_digits")
    grey = get_data("digits")
    assert d.shape == (3, 8, 8) and len(d) == len(grey) and torch.equal(d.y, grey.y)
    assert d.x.min() >= -1 and d.x.max() <= 1
    # each image is bg + ink·(fg − bg): its pixel colours are affine in the grey digit's ink
    ink = (grey.x[:5] + 1) / 2
    for i in range(5):
        A = torch.cat([torch.ones(64, 1), ink[i].reshape(64, 1)], 1)
        coef = torch.linalg.lstsq(A, d.x[i].reshape(3, 64).T).solution
        torch.testing.assert_close(A @ coef, d.x[i].reshape(3, 64).T, atol=1e-5, rtol=0)
        fg, bg = (coef[0] + coef[1] + 1) / 2, (coef[0] + 1) / 2
        assert (fg.mean() - bg.mean()).abs() >= 0.3 - 1e-5
    # many-to-one: the same digit painted twice gets different colours
    two = get_data("color_digits", copies=2)
    assert len(two) == 2 * len(d) and not torch.allclose(two.x[:len(d)], two.x[len(d):])
    assert not torch.allclose(get_data("color_digits", split="test").x[:10],
                              get_data("color_digits", split="test", seed=1).x[:10])


def test_photo_patches_from_sklearn_sample_images():
    pytest.importorskip("sklearn")
    tr = get_data("photos", n=64, size=16)
    te = get_data("photos", split="test", n=64, size=16)
    assert tr.shape == te.shape == (3, 16, 16) and tr.y is None
    assert tr.x.min() >= -1 and tr.x.max() <= 1 and tr.x.std() > 0.1
    assert torch.equal(tr.x, get_data("photos", n=64, size=16).x)  # deterministic
    with pytest.raises(ValueError, match="split"):
        get_data("photos", split="val")
