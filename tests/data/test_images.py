"""Image data: the embedded digits, an image folder written here, and the loaders that need
optional packages fail clearly."""
import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image

from sdeflow.data import digits, get_data, list_data
from sdeflow.data.images import hf_data, image_folder, torchvision_data

from ..conftest import gen


def test_digits_splits_are_disjoint_labelled_and_in_range():
    train, test, full = digits("train"), digits("test"), digits("all")
    assert len(train) + len(test) == len(full) == 1797 and len(test) == 360
    assert train.shape == (1, 8, 8) and train.num_classes == 10
    assert full.x.min() == -1 and full.x.max() == 1
    # 17 grey levels mapped to [-1, 1]
    assert len(torch.unique(full.x)) == 17
    assert torch.equal(torch.sort(torch.cat([train.y, test.y])).values, torch.sort(full.y).values)
    # no test image occurs in the training split
    tr = {tuple(v.tolist()) for v in train.x.flatten(1)}
    assert sum(tuple(v.tolist()) in tr for v in test.x.flatten(1)) < 5  # the set has a few duplicates
    assert (test.y.bincount() > 25).all()


def test_digits_resample_and_draw_reproducibly():
    d = digits("train", resolution=16)
    assert d.shape == (1, 16, 16) and d.x.min() >= -1 and d.x.max() <= 1
    x1, y1 = d.draw(8, gen(0))
    x2, y2 = d.draw(8, gen(0))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)


def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_image_folder_with_class_subfolders(tmp_path):
    rng = np.random.default_rng(0)
    imgs = {}
    for cls in ("cat", "dog"):
        for i in range(3):
            a = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            _write(tmp_path / cls / f"{i}.png", a)
            imgs[(cls, i)] = a
    d = image_folder(tmp_path, resolution=8, channels=3)
    assert len(d) == 6 and d.shape == (3, 8, 8) and d.class_names == ("cat", "dog")
    assert d.y.tolist() == [0, 0, 0, 1, 1, 1]
    back = ((d.x[4] + 1) * 127.5).round().permute(1, 2, 0).numpy().astype(np.uint8)
    assert np.array_equal(back, imgs[("dog", 1)])


def test_image_folder_resizes_crops_and_greys(tmp_path):
    _write(tmp_path / "a.png", np.full((20, 40, 3), 200, np.uint8))
    _write(tmp_path / "b.jpg", np.zeros((16, 16, 3), np.uint8))
    d = get_data("folder", root=str(tmp_path), resolution=8, channels=1)
    assert d.y is None and d.num_classes == 0 and d.x.shape == (2, 1, 8, 8)
    assert torch.allclose(d.x[0], torch.full((1, 8, 8), 200 / 127.5 - 1), atol=1e-6)


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        image_folder(tmp_path / "nope")
    with pytest.raises(ValueError, match="no images"):
        image_folder(tmp_path)
    _write(tmp_path / "x.png", np.zeros((8, 8, 3), np.uint8))
    _write(tmp_path / "c" / "y.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="mixes"):
        image_folder(tmp_path)


def test_registry_lists_and_rejects():
    assert {"digits", "folder", "torchvision", "hf", "gmm", "moons"} <= set(list_data())
    with pytest.raises(ValueError, match="unknown data set"):
        get_data("mnistt")
    with pytest.raises(ValueError, match="takes no arguments"):
        get_data("moons", resolution=8)
    with pytest.raises(ValueError, match="unknown split"):
        digits("val")


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="torchvision installed")
def test_torchvision_loader_needs_torchvision():
    with pytest.raises(ImportError, match="torchvision"):
        torchvision_data("CIFAR10")


@pytest.mark.skipif(importlib.util.find_spec("datasets") is not None, reason="datasets installed")
def test_hf_loader_needs_datasets():
    with pytest.raises(ImportError, match="datasets"):
        hf_data("cifar10")


def _pil(v):
    return Image.fromarray(np.full((4, 4, 3), v, np.uint8))


def test_torchvision_loader_converts_a_dataset(monkeypatch):
    """The loader's conversion, on a stand-in ``torchvision.datasets`` class (the real package
    and its files are not available offline)."""
    import sys
    import types

    class Toy:
        classes = ["a", "b"]

        def __init__(self, root, train, download):
            self.items = [(_pil(0), 0), (_pil(255), 1), (_pil(51), 1)]

        def __iter__(self):
            return iter(self.items)

    tv, tvd = types.ModuleType("torchvision"), types.ModuleType("torchvision.datasets")
    tvd.Toy = Toy
    tv.datasets = tvd
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", tvd)
    d = get_data("torchvision", name="Toy", resolution=8, channels=1)
    assert d.x.shape == (3, 1, 8, 8) and d.y.tolist() == [0, 1, 1] and d.num_classes == 2
    assert d.x[0].max() == -1 and d.x[1].min() == 1
    with pytest.raises(ValueError, match="no data set"):
        get_data("torchvision", name="Nope")


def test_hf_loader_converts_a_dataset(monkeypatch):
    import sys
    import types

    class Label:
        names = ["x", "y", "z"]

    class DS:
        column_names = ["image", "label"]
        features = {"label": Label()}

        def __init__(self, rows):
            self.rows = rows

        def __len__(self):
            return len(self.rows)

        def __iter__(self):
            return iter(self.rows)

        def __getitem__(self, key):
            return [r[key] for r in self.rows]

        def select(self, idx):
            return DS([self.rows[i] for i in idx])

    hf = types.ModuleType("datasets")
    hf.load_dataset = lambda name, split: DS([dict(image=_pil(10 * i), label=i % 3) for i in range(5)])
    monkeypatch.setitem(sys.modules, "datasets", hf)
    d = get_data("hf", name="toy", resolution=4, limit=4)
    assert d.x.shape == (4, 3, 4, 4) and d.y.tolist() == [0, 1, 2, 0] and d.num_classes == 3
