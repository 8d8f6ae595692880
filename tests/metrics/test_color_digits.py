"""The colour-digit scores read back what painting put in: the ink of x = b + a·(f − b), the
colours f and b, and the digit of the embedded test split."""
from __future__ import annotations

import torch

from sdeflow.data.images import digits
from sdeflow.data.rgb import paint
from sdeflow.metrics.color_digits import (color_digits_metrics, ink, measured_colours,
                                          nearest_colours)

PALETTE = torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [1.0, 1.0, 0], [0, 0, 0]])


def _painted(fg_idx, bg_idx, split="test"):
    base = digits(split, 16)
    n = len(fg_idx)
    a = ((base.x[:n] + 1) / 2)
    return paint(a, PALETTE[fg_idx], PALETTE[bg_idx]), base.y[:n], a


def test_ink_and_colours_are_recovered_from_painted_digits():
    g = torch.Generator().manual_seed(0)
    fg = torch.randint(0, 4, (200,), generator=g)
    bg = (fg + 1 + torch.randint(0, 3, (200,), generator=g)) % 4  # never equal to fg
    x, y, a = _painted(fg, bg)
    # ink is a up to the per-image normalisation by its maximum
    want = a / a.flatten(1).amax(1)[:, None, None, None]
    torch.testing.assert_close((ink(x) + 1) / 2, want, atol=1e-5, rtol=0)
    f, b = measured_colours(x)
    assert (nearest_colours(f, PALETTE) == fg).all() and (nearest_colours(b, PALETTE) == bg).all()
    m = color_digits_metrics(x, x, labels=y, colours=(fg, bg), palette=PALETTE)
    assert m["colour_accuracy"] == 1.0 and m["accuracy"] > 0.9 and abs(m["fdd"]) < 1e-3
    # power: the swapped roles (a fg on its bg asked the other way round) score 0
    m = color_digits_metrics(x, x, colours=(bg, fg), palette=PALETTE)
    assert m["colour_accuracy"] == 0.0


def test_fdd_sees_wrong_digits_and_colour_fd_sees_wrong_colours():
    g = torch.Generator().manual_seed(1)
    fg = torch.randint(0, 2, (300,), generator=g)
    x, y, a = _painted(fg, torch.full((300,), 3))  # black background
    ref, _, _ = _painted(torch.randint(0, 2, (300,), generator=g), torch.full((300,), 3))
    same = color_digits_metrics(x, ref)
    blank = paint(torch.zeros_like(a), PALETTE[fg], PALETTE[torch.full((300,), 3)])
    blank[..., 4:12, 7:9] = 1.0  # every "digit" a white bar
    bad = color_digits_metrics(blank, ref)
    assert bad["fdd"] > 5 * same["fdd"]
    recoloured = paint(a, PALETTE[torch.full((300,), 2)], PALETTE[torch.full((300,), 3)])
    assert color_digits_metrics(recoloured, ref)["colour_fd"] > 5 * same["colour_fd"]
