"""Network definitions shared by the methods.

- ``small_cnn``: a CPU-sized CNN for the quick and ci profiles (inputs up to ~32 px).
- ``wrn40_2`` / ``wrn16_4``: CIFAR wide ResNets (Zagoruyko & Komodakis 2016), the backbone of OE
  (Hendrycks et al. 2019: WRN-40-2) and ATOM (App. B.1: WRN-40-4).
- ``resnet18``: ResNet-18 with the CIFAR stem (3x3 conv, no max-pool), the backbone RODEO uses (App. B).
- ``densenet_bc100``: DenseNet-BC (L=100, k=12), ATOM Table 1's network (Huang et al. 2017, CIFAR form).
- ``lenet_bn32`` / ``lenet_bn28``: EOE App. G.1's LeNet-style BN networks (CIFAR-10; (Fashion-)MNIST).

Every network starts with a fixed :class:`Normalize` layer, so callers feed images in [0, 1] and the
attack's eps stays in pixel units. Build one with :func:`build_network`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

NETWORKS: dict[str, Callable[..., nn.Module]] = {}


def register_network(name: str):
    def decorator(fn):
        NETWORKS[name] = fn
        return fn

    return decorator


class Normalize(nn.Module):
    """(x - mean) / std per channel, with the statistics stored as buffers (saved with the weights)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """Normalize -> feature extractor -> linear head. ``features(x)`` exposes the penultimate layer."""

    def __init__(self, normalize: Normalize, body: nn.Module, feature_dim: int, num_outputs: int):
        super().__init__()
        self.normalize = normalize
        self.body = body
        self.head = nn.Linear(feature_dim, num_outputs)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_network(
    name: str,
    in_channels: int,
    num_outputs: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> Classifier:
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; accepted: {', '.join(NETWORKS)}")
    body, feature_dim = NETWORKS[name](in_channels)
    return Classifier(Normalize(mean, std), body, feature_dim, num_outputs)


@register_network("small_cnn")
def small_cnn(in_channels: int) -> tuple[nn.Module, int]:
    """Three 3x3 conv layers (32-64-64) with one 2x down-sampling and global average pooling."""
    body = nn.Sequential(
        nn.Conv2d(in_channels, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 128),
        nn.ReLU(),
    )
    return body, 128


@register_network("tiny_cnn")
def tiny_cnn(in_channels: int) -> tuple[nn.Module, int]:
    """:func:`small_cnn` at half the width (16-32-32, a 64-unit head), down-sampling with a stride-2
    convolution instead of a pooling layer (pooling cost as much as a convolution on 2 CPU cores): about
    3x faster, which the quick profile needs to run a full novelty-detection grid in minutes."""
    body = nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 64),
        nn.ReLU(),
    )
    return body, 64


def _strided_body(in_channels: int, layers: Sequence[tuple[int, int]]) -> tuple[nn.Module, int]:
    """3x3 convolutions ``(width, stride)`` with ReLUs, then a 2x2 average pool (it keeps the quadrants,
    where a global pool keeps no layout) and a 128-unit head."""
    modules: list[nn.Module] = []
    channels = in_channels
    for width, stride in layers:
        modules += [nn.Conv2d(channels, width, 3, stride=stride, padding=1), nn.ReLU()]
        channels = width
    modules += [nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * channels, 128), nn.ReLU()]
    return nn.Sequential(*modules), 128


@register_network("strided_cnn")
def strided_cnn(in_channels: int) -> tuple[nn.Module, int]:
    """Four 3x3 convolutions (32-64-64-128), three of them stride 2, then a 2x2 average pool and a
    128-unit head. :func:`tiny_cnn`'s receptive field is 7 px, a quarter of a 28x28 digit, and its global
    average pool keeps no layout, so at 28x28 it sees strokes, not shapes; here the receptive field is
    17 px and the 2x2 pool keeps the quadrants. About as costly per image as ``tiny_cnn`` at 28x28 (the
    strides come early): ~6.9M multiply-adds against ~5.5M."""
    return _strided_body(in_channels, [(32, 1), (64, 2), (64, 2), (128, 2)])


@register_network("strided_cnn_lite")
def strided_cnn_lite(in_channels: int) -> tuple[nn.Module, int]:
    """:func:`strided_cnn` without its full-resolution layer: three 3x3 convolutions (32-64-128), all
    stride 2, the same 2x2 pool and head. Receptive field 15 px; ~2.1M multiply-adds at 28x28, a third of
    ``strided_cnn``'s: the quick profile's network at 28x28 (its main command must fit 10 minutes)."""
    return _strided_body(in_channels, [(32, 2), (64, 2), (128, 2)])


class _WideBasicBlock(nn.Module):
    """Pre-activation wide-ResNet block (BN-ReLU-conv x2) with a 1x1 shortcut when shapes change."""

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


def wide_resnet(in_channels: int, depth: int, widen_factor: int) -> tuple[nn.Module, int]:
    """WRN-depth-k for 32x32 inputs: three groups of (depth - 4) / 6 blocks, widths 16k, 32k, 64k."""
    if (depth - 4) % 6:
        raise ValueError("wide ResNet depth must be 6n + 4")
    blocks_per_group = (depth - 4) // 6
    widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
    layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)]
    in_planes = widths[0]
    for group, stride in zip(range(1, 4), (1, 2, 2), strict=True):
        for block in range(blocks_per_group):
            layers.append(_WideBasicBlock(in_planes, widths[group], stride if block == 0 else 1))
            in_planes = widths[group]
    layers += [nn.BatchNorm2d(in_planes), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers), in_planes


@register_network("wrn40_2")
def wrn40_2(in_channels: int) -> tuple[nn.Module, int]:
    return wide_resnet(in_channels, depth=40, widen_factor=2)


@register_network("wrn40_4")
def wrn40_4(in_channels: int) -> tuple[nn.Module, int]:
    """WRN-40-4, ATOM's WideResNet (App. B.1)."""
    return wide_resnet(in_channels, depth=40, widen_factor=4)


@register_network("wrn16_4")
def wrn16_4(in_channels: int) -> tuple[nn.Module, int]:
    return wide_resnet(in_channels, depth=16, widen_factor=4)


def _timm_body(name: str, in_channels: int, cifar_stem: bool = False) -> tuple[nn.Module, int]:
    """A timm model without its classifier (``num_classes=0``: pooled features), randomly initialised; with
    ``cifar_stem`` the ResNet stem is a 3x3 stride-1 convolution without max-pool (He et al. 2016, Sec. 4.2,
    as the CIFAR papers use it)."""
    import timm

    model = timm.create_model(name, num_classes=0, in_chans=in_channels, pretrained=False)
    if cifar_stem:
        model.conv1 = nn.Conv2d(in_channels, model.conv1.out_channels, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    return model, int(model.num_features)


@register_network("resnet18")
def resnet18_cifar(in_channels: int) -> tuple[nn.Module, int]:
    """ResNet-18 (He et al. 2016; timm) with the CIFAR stem, for <= 64 px inputs."""
    return _timm_body("resnet18", in_channels, cifar_stem=True)


@register_network("resnet18_224")
def resnet18_224(in_channels: int) -> tuple[nn.Module, int]:
    """ResNet-18 (timm) with the ImageNet stem (7x7 stride-2 conv, max-pool), for 224 px inputs (RODEO
    Sec. 5 and EOE App. G.1 on the high-resolution sets)."""
    return _timm_body("resnet18", in_channels)


@register_network("vit_b16")
def vit_b16(in_channels: int) -> tuple[nn.Module, int]:
    """ViT-B/16 (Dosovitskiy et al. 2021; timm ``vit_base_patch16_224``), 224 px inputs, 768 features."""
    return _timm_body("vit_base_patch16_224", in_channels)


class _DenseBottleneck(nn.Module):
    """DenseNet-BC layer (Huang et al. 2017, Sec. 3): BN-ReLU-conv1x1 (4k) - BN-ReLU-conv3x3 (k), its k new
    maps concatenated to its input."""

    def __init__(self, in_planes: int, growth_rate: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, 4 * growth_rate, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth_rate)
        self.conv2 = nn.Conv2d(4 * growth_rate, growth_rate, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([x, out], dim=1)


def densenet_bc(in_channels: int, depth: int, growth_rate: int) -> tuple[nn.Module, int]:
    """DenseNet-BC for 32x32 inputs (Huang et al. 2017, CIFAR): a 3x3 conv to 2k maps, three dense blocks of
    (depth - 4) / 6 bottleneck layers, BN-ReLU-conv1x1-avgpool transitions with compression 0.5, then
    BN-ReLU and a global average pool. Our own, like the WRNs: timm's DenseNet has the ImageNet stem, and
    importing timm takes 3-10 s, which the dry run's estimate (it builds the paper network) cannot spend."""
    if (depth - 4) % 6:
        raise ValueError("DenseNet-BC depth must be 6n + 4")
    layers_per_block = (depth - 4) // 6
    planes = 2 * growth_rate
    modules: list[nn.Module] = [nn.Conv2d(in_channels, planes, 3, padding=1, bias=False)]
    for block in range(3):
        for _ in range(layers_per_block):
            modules.append(_DenseBottleneck(planes, growth_rate))
            planes += growth_rate
        if block < 2:
            out_planes = planes // 2
            modules += [
                nn.BatchNorm2d(planes),
                nn.ReLU(),
                nn.Conv2d(planes, out_planes, 1, bias=False),
                nn.AvgPool2d(2),
            ]
            planes = out_planes
    modules += [nn.BatchNorm2d(planes), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*modules), planes


@register_network("densenet_bc100")
def densenet_bc100(in_channels: int) -> tuple[nn.Module, int]:
    """DenseNet-BC, L = 100, k = 12, dropout 0: ATOM Table 1's network (App. B.1). 342 features, 0.77M
    parameters (the 0.8M of Huang et al. Table 2)."""
    return densenet_bc(in_channels, depth=100, growth_rate=12)


def _lenet_bn(in_channels: int, widths: Sequence[int], image_size: int) -> tuple[nn.Module, int]:
    """EOE App. G.1's LeNet-style network without its last layer: 5x5 convolutions (padding 2, no bias),
    each followed by batch norm, a leaky ReLU and a 2x2 max-pool, then a 512-unit layer with batch norm
    and a leaky ReLU (512 features). The paper's last layer, "just a linear transformation" to 256 units,
    is the :class:`Classifier` head (hsc: ``rep_dim`` = 256). The conv widths are the paper's per data set;
    at the paper's ``image_size`` the adaptive pool before the flatten is the identity, at other sizes it
    brings the map to that size's grid (the layer widths stay)."""
    modules: list[nn.Module] = []
    channels, size = in_channels, image_size
    for width in widths:
        modules += [
            nn.Conv2d(channels, width, 5, padding=2, bias=False),
            nn.BatchNorm2d(width),
            nn.LeakyReLU(),
            nn.MaxPool2d(2),
        ]
        channels, size = width, size // 2
    modules += [
        nn.AdaptiveAvgPool2d(size),
        nn.Flatten(),
        nn.Linear(channels * size * size, 512, bias=False),
        nn.BatchNorm1d(512),
        nn.LeakyReLU(),
    ]
    return nn.Sequential(*modules), 512


@register_network("lenet_bn32")
def lenet_bn32(in_channels: int) -> tuple[nn.Module, int]:
    """EOE App. G.1 (CIFAR-10), 32x32 inputs: three convolutions with 32, 64 and 128 kernels, fully
    connected layers of 512 and (the head) 256 units."""
    return _lenet_bn(in_channels, (32, 64, 128), 32)


@register_network("lenet_bn28")
def lenet_bn28(in_channels: int) -> tuple[nn.Module, int]:
    """EOE App. G.1 (Fashion-MNIST; MNIST "the same setup"), 28x28 inputs: "only two convolutional layers
    with 16 and 32 kernels"; the fully connected 512 and 256 units are CIFAR-10's ("a similar setup": the
    paper gives no other sizes)."""
    return _lenet_bn(in_channels, (16, 32), 28)
