"""Every registered network builds and runs on the data sets' image sizes (8 px digits, 28 px MNIST)."""

from __future__ import annotations

import pytest
import torch

from bench.methods.networks import NETWORKS, build_network


@pytest.mark.parametrize("name", sorted(NETWORKS))
@pytest.mark.parametrize("size", [8, 28])
def test_network_outputs_and_input_gradients(name, size):
    net = build_network(name, 1, 3, mean=[0.5], std=[0.25]).eval()
    x = torch.rand(2, 1, size, size, requires_grad=True)
    out = net(x)
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    out[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # attacks need a gradient to the pixels


def test_strided_cnn_sees_every_quadrant_separately():
    """Unlike a global average pool, strided_cnn keeps the layout: moving a blob to another quadrant of a
    28x28 image changes the features (tiny_cnn's global pool is nearly blind to where a stroke is)."""
    torch.manual_seed(0)
    net = build_network("strided_cnn", 1, 2, mean=[0.0], std=[1.0]).eval()
    blob = torch.zeros(1, 1, 28, 28)
    blob[..., 2:8, 2:8] = 1.0
    moved = torch.zeros(1, 1, 28, 28)
    moved[..., 20:26, 20:26] = 1.0
    with torch.no_grad():
        difference = (net.features(blob) - net.features(moved)).abs().max()
    assert difference > 1e-3
