"""The mixture check (sdeflow.metrics.mixture) where standard errors vanish: a 1-component
mixture has r ≡ 1, so its weight's estimate has no spread and equals the target exactly."""
import math

import pytest
import torch

from sdeflow.metrics.mixture import MixtureMoments
from sdeflow.oracle import GaussianMixture

from ..conftest import gen
from ..mixture_stats import assert_samples_mixture, mixture_moments, rejects


def test_one_component_mixture_passes_its_own_samples_and_rejects_wider_ones():
    gm = GaussianMixture([1.0], [[0.5, -1.0]], stds=0.7)
    x = gm.sample(5000, generator=gen(0))
    m = assert_samples_mixture(gm, x, what="own samples")
    assert m.weight_z.tolist() == [0.0]                    # 0/0: no spread, on target
    wide = gm.means[0] + 3 * (gm.sample(5000, generator=gen(1)) - gm.means[0])
    assert rejects(gm, wide)
    assert mixture_moments(gm, wide).width == pytest.approx(3.0, rel=0.05)


def test_a_nan_z_score_fails_the_check():
    nan = torch.tensor([math.nan], dtype=torch.float64)
    zero = torch.zeros(1, 2, dtype=torch.float64)
    m = MixtureMoments(nan, zero, zero, zero + 1, 1.0, 0.0)
    assert m.max_z() == math.inf and not m.max_z() < m.threshold()

