"""Data with a closed form: the `mixture` source (a random anisotropic Gaussian mixture in any
dimension) and the `gmm` ring expose their GaussianMixture, whose draws they are."""
import pytest
import torch

from sdeflow.data import get_data, list_data, list_vector_data
from sdeflow.oracle import GaussianMixture


def test_mixture_data_draws_from_its_exposed_mixture():
    d = get_data("mixture", dim=16, k=3, seed=2)
    assert d.shape == (16,) and d.num_classes == 0 and d.mixture.dim == 16
    x, y = d.draw(20000, torch.Generator().manual_seed(0))
    assert y is None and x.dtype == torch.float32 and x.shape == (20000, 16)
    # the sample mean matches the mixture's to 5 standard errors in every coordinate
    m = d.mixture
    mean = (m.weights[:, None] * m.means).sum(0)
    second = (m.weights[:, None, None] * (m.covs + m.means[:, :, None] * m.means[:, None])).sum(0)
    se = (second.diagonal() - mean**2).sqrt() / 20000**0.5
    assert ((x.double().mean(0) - mean).abs() < 5 * se).all()
    # a different seed is a different mixture
    assert not torch.equal(get_data("mixture", dim=16, k=3, seed=3).mixture.means, m.means)


def test_which_sources_have_a_closed_form():
    assert isinstance(get_data("gmm").mixture, GaussianMixture)
    assert get_data("moons").mixture is None
    assert "mixture" in list_data() and "mixture" in list_vector_data()
    assert "digits" not in list_vector_data()
    with pytest.raises(ValueError, match="dim and k must be positive"):
        get_data("mixture", dim=0)
