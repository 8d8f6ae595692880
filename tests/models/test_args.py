"""Network arguments are checked before any tensor is built: a bad value, a broken relation
between arguments or an unknown keyword is one ValueError naming the argument."""
import pytest
import torch
from torch import nn

from sdeflow.models import build_model
from sdeflow.models.args import POSITIVE_INT, checked_args
from sdeflow.models.classifier import build_classifier

IMAGE = dict(in_channels=1, resolution=8)

# (network label, builder, name, good kwargs, bad kwargs, the argument the message names)
CASES = [
    # U-Net
    ("unet", build_model, "unet", IMAGE, dict(channels=-4), "channels"),
    ("unet", build_model, "unet", IMAGE, dict(channels=0), "channels"),
    ("unet", build_model, "unet", IMAGE, dict(channels="32"), "channels"),
    ("unet", build_model, "unet", IMAGE, dict(channels=5), "channels"),
    ("unet", build_model, "unet", IMAGE, dict(in_channels=0), "in_channels"),
    ("unet", build_model, "unet", IMAGE, dict(out_channels=-1), "out_channels"),
    ("unet", build_model, "unet", IMAGE, dict(resolution=8.0), "resolution"),
    ("unet", build_model, "unet", IMAGE, dict(resolution=6, channel_mult=[1, 2, 2]), "resolution"),
    ("unet", build_model, "unet", IMAGE, dict(channel_mult=[]), "channel_mult"),
    ("unet", build_model, "unet", IMAGE, dict(channel_mult=[1, 0]), "channel_mult"),
    ("unet", build_model, "unet", IMAGE, dict(channel_mult="12"), "channel_mult"),
    ("unet", build_model, "unet", IMAGE, dict(num_res_blocks=-1), "num_res_blocks"),
    ("unet", build_model, "unet", IMAGE, dict(attn_resolutions=["16"]), "attn_resolutions"),
    ("unet", build_model, "unet", IMAGE, dict(attn_resolutions=4), "attn_resolutions"),
    ("unet", build_model, "unet", IMAGE, dict(channels=200, channel_mult=[1]), "head_dim"),
    ("unet", build_model, "unet", IMAGE, dict(head_dim=0), "head_dim"),
    ("unet", build_model, "unet", IMAGE, dict(dropout=1.5), "dropout"),
    ("unet", build_model, "unet", IMAGE, dict(embedding="gaussian"), "embedding"),
    ("unet", build_model, "unet", IMAGE, dict(embedding_scale=-1.0), "embedding_scale"),
    ("unet", build_model, "unet", IMAGE, dict(num_classes=-1), "num_classes"),
    ("unet", build_model, "unet", IMAGE, dict(cond_channels=True), "cond_channels"),
    # DiT
    ("dit", build_model, "dit", IMAGE, dict(resolution=9), "resolution"),
    ("dit", build_model, "dit", IMAGE, dict(patch_size=0), "patch_size"),
    ("dit", build_model, "dit", IMAGE, dict(hidden=-8), "hidden"),
    ("dit", build_model, "dit", IMAGE, dict(hidden=190), "hidden"),
    ("dit", build_model, "dit", IMAGE, dict(hidden=64, heads=3), "hidden"),
    ("dit", build_model, "dit", IMAGE, dict(heads=0), "heads"),
    ("dit", build_model, "dit", IMAGE, dict(depth=-1), "depth"),
    ("dit", build_model, "dit", IMAGE, dict(mlp_ratio=0), "mlp_ratio"),
    ("dit", build_model, "dit", IMAGE, dict(num_classes=-2), "num_classes"),
    # MLP
    ("mlp", build_model, "mlp", dict(dim=2), dict(dim=0), "dim"),
    ("mlp", build_model, "mlp", dict(dim=2), dict(hidden=-128), "hidden"),
    ("mlp", build_model, "mlp", dict(dim=2), dict(depth=2.5), "depth"),
    ("mlp", build_model, "mlp", dict(dim=2), dict(emb_dim=63), "emb_dim"),
    ("mlp", build_model, "mlp", dict(dim=2), dict(embedding=None), "embedding"),
    # classifiers
    ("encoder classifier", build_classifier, "encoder", dict(num_classes=10, **IMAGE),
     dict(num_classes=1), "num_classes"),
    ("encoder classifier", build_classifier, "encoder", dict(num_classes=10, **IMAGE),
     dict(channels=-32), "channels"),
    ("encoder classifier", build_classifier, "encoder", dict(num_classes=10, **IMAGE),
     dict(resolution=6, channel_mult=[1, 2, 2]), "resolution"),
    ("encoder classifier", build_classifier, "encoder", dict(num_classes=10, **IMAGE),
     dict(channels=200, channel_mult=[1], attn_resolutions=[8]), "channels"),
    ("mlp classifier", build_classifier, "mlp", dict(num_classes=3), dict(num_classes=0),
     "num_classes"),
    ("mlp classifier", build_classifier, "mlp", dict(num_classes=3), dict(hidden="wide"),
     "hidden"),
]


@pytest.mark.parametrize("label,build,name,good,bad,arg", CASES,
                         ids=[f"{c[2]}-{c[5]}-{i}" for i, c in enumerate(CASES)])
def test_bad_values_are_refused_naming_the_argument(label, build, name, good, bad, arg):
    with pytest.raises(ValueError) as e:
        build(name, **{**good, **bad})
    msg = str(e.value)
    assert msg.startswith(f"{label}: {arg} must be ") and "\n" not in msg, msg
    if arg in bad:
        assert msg.endswith(f"got {bad[arg]!r}"), msg


def test_the_issue_example_is_one_line():
    """`--model-kwargs '{"channels": -4}'` used to end in 'Trying to create tensor with
    negative dimension' from inside torch."""
    with pytest.raises(ValueError) as e:
        build_model("unet", in_channels=1, resolution=8, channels=-4)
    assert str(e.value) == "unet: channels must be a positive integer, got -4"


@pytest.mark.parametrize("build,name,good,accepted", [
    (build_model, "unet", IMAGE, "channels, channel_mult"), (build_model, "dit", IMAGE, "patch_size"),
    (build_model, "mlp", {}, "dim, hidden, depth"),
    (build_classifier, "encoder", dict(num_classes=3), "num_classes, in_channels"),
    (build_classifier, "mlp", dict(num_classes=3), "num_classes, dim")])
def test_unknown_keywords_list_the_accepted_ones(build, name, good, accepted):
    with pytest.raises(ValueError, match="unknown argument chanels; accepted: ") as e:
        build(name, **good, chanels=3)
    assert accepted in str(e.value)


def test_checks_run_before_any_module_is_built(monkeypatch):
    def no_modules(self, *a, **kw):
        raise AssertionError("a module was built before the arguments were checked")
    monkeypatch.setattr(nn.Module, "__init__", no_modules)
    with pytest.raises(ValueError, match="channel_mult"):
        build_model("unet", in_channels=1, resolution=8, channel_mult=[1, -2])


def test_good_values_still_build():
    """The constructor defaults, JSON-style lists and the relations' edge cases."""
    assert build_model("unet", **IMAGE)(torch.zeros(1, 1, 8, 8), torch.rand(1)).shape == (1, 1, 8, 8)
    build_model("unet", **IMAGE, channels=32, channel_mult=[1, 2], num_res_blocks=1,
                attn_resolutions=[4])  # 32-channel attention: one head of 32 (< head_dim)
    build_model("dit", **IMAGE, depth=0, hidden=16, heads=2)
    build_model("mlp", dim=3, depth=0, out_dim=None)
    build_classifier("encoder", num_classes=2, **IMAGE, attn_resolutions=[])


def test_every_parameter_needs_a_rule():
    """The rule table is checked against the signature when a network class is defined."""
    with pytest.raises(TypeError, match="rules for"):
        class Net(nn.Module):
            @checked_args("net", dict(width=POSITIVE_INT))
            def __init__(self, width: int = 8, depth: int = 2):
                super().__init__()
