"""Every registered network builds and runs on the data sets' image sizes (8 px digits, 28 px MNIST)."""

from __future__ import annotations

import pytest
import torch

from bench.methods.networks import NETWORKS, build_network

FIXED_224 = {"vit_b16"}  # patch embeddings of a 224 x 224 image: tested at that size below


@pytest.mark.parametrize("name", sorted(set(NETWORKS) - FIXED_224))
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


@pytest.mark.parametrize(
    ("name", "shape", "features"),
    [("resnet18", (1, 32, 32), 512), ("resnet18_224", (3, 224, 224), 512), ("vit_b16", (3, 224, 224), 768)],
)
def test_timm_backbones_give_pooled_features_at_their_resolution(name, shape, features):
    from bench.methods.networks import NETWORKS

    body, dim = NETWORKS[name](shape[0])
    assert dim == features
    with torch.no_grad():
        assert body(torch.rand(2, *shape)).shape == (2, features)


def test_the_cifar_stem_keeps_the_resolution_that_the_imagenet_stem_quarters():
    from bench.methods.networks import NETWORKS

    cifar, _ = NETWORKS["resnet18"](3)
    imagenet, _ = NETWORKS["resnet18_224"](3)
    cifar.eval()
    imagenet.eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert cifar.forward_features(x).shape[-1] == 4  # 32 / 8: strides of layers 2-4 only
        assert imagenet.forward_features(x).shape[-1] == 1  # 32 / 32: stem stride 2, max-pool, layers 2-4


def test_densenet_bc100_is_atoms_densenet_with_the_cifar_stem():
    """ATOM App. B.1 / Huang et al. 2017: DenseNet-BC, L = 100, k = 12 (0.8M parameters); three blocks of
    16 bottleneck layers, compression 0.5: 24 + 16 x 12 = 216 -> 108 -> 300 -> 150 -> 342 features; the
    3x3 stride-1 stem keeps 32 px until the two transitions halve it (32 -> 8)."""
    from bench.methods.networks import _DenseBottleneck

    body, dim = NETWORKS["densenet_bc100"](3)
    assert dim == 342
    parameters = sum(p.numel() for p in body.parameters())
    assert 0.7e6 < parameters < 0.85e6, parameters
    stem = body[0]
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1) and stem.out_channels == 24
    layers = [m for m in body if isinstance(m, _DenseBottleneck)]
    assert len(layers) == 48 and all(layer.conv2.out_channels == 12 for layer in layers)
    assert [m.out_channels for m in body if isinstance(m, torch.nn.Conv2d)] == [24, 108, 150]  # 0.5
    body.eval()
    pool = next(i for i, m in enumerate(body) if isinstance(m, torch.nn.AdaptiveAvgPool2d))
    with torch.no_grad():
        assert body[:pool](torch.rand(1, 3, 32, 32)).shape == (1, 342, 8, 8)


@pytest.mark.parametrize(
    ("name", "channels", "size", "widths", "grid"),
    [("lenet_bn32", 3, 32, [32, 64, 128], 4), ("lenet_bn28", 1, 28, [16, 32], 7)],
)
def test_eoe_lenets_have_the_papers_layers_at_their_size(name, channels, size, widths, grid):
    """EOE App. G.1: 5x5 conv + BN + leaky ReLU + 2x2 max-pool per layer (32-64-128 on CIFAR-10, 16-32 on
    (Fashion-)MNIST), then 512 units with BN; the 256-unit linear last layer is the head (hsc rep_dim)."""
    body, dim = NETWORKS[name](channels)
    assert dim == 512
    convs = [m for m in body if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == widths and all(c.kernel_size == (5, 5) for c in convs)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in body) == len(widths)
    body.eval()
    pool_index = next(i for i, m in enumerate(body) if isinstance(m, torch.nn.AdaptiveAvgPool2d))
    with torch.no_grad():
        before_pool = body[:pool_index](torch.rand(2, channels, size, size))
    assert before_pool.shape[-1] == grid  # at the paper's size the adaptive pool changes nothing
    assert build_network(name, channels, 256, [0.5] * channels, [0.25] * channels).head.out_features == 256
