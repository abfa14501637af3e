"""Training-time data augmentation of the paper recipes (issue 28, item 5), as pure batched functions
of images in [0, 1] (N, C, H, W) and a ``torch.Generator`` (one draw per image, no per-image loop).

- ``crop_flip``: ATOM App. B.1 ("random cropping with padding of 4 pixels ... and further augment the data
  by random horizontal flipping"), the standard CIFAR recipe of ATOM's and OE's code, for msp, energy and
  oe on ``--profile paper``; zero padding as torchvision's ``RandomCrop(32, padding=4)``.
- ``crop``: the same without the flip, for digits and house numbers (a mirrored digit is another glyph;
  our choice, the papers do not train MSP/OE on digits).
- ``eoe``: EOE App. G.1 "standard color jitter, random cropping, horizontal flipping, and Gaussian pixel
  noise" (HSC; Table 6: 96.1 with augmentation, 91.8 without). The paper gives no magnitudes; ours:
  brightness, contrast and saturation factors uniform in [0.6, 1.4] (torchvision's ColorJitter(0.4) of
  the ImageNet recipes), crop with padding 4 (ATOM's), flip with probability 1/2, pixel noise N(0, 0.01^2).
  App. G.1: MNIST trains without augmentation (the paper profile sets none there).
"""

from __future__ import annotations

import torch

AUGMENTATIONS = ("", "crop_flip", "crop", "eoe")
PADDING = 4  # ATOM App. B.1: "random cropping with padding of 4 pixels"
JITTER = 0.4  # colour jitter factors in [1 - 0.4, 1 + 0.4] (EOE states no magnitude)
NOISE_STD = 0.01  # Gaussian pixel noise (EOE states no magnitude)
LUMA = torch.tensor([0.299, 0.587, 0.114])


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``padding`` and crop back to the input size at a random offset per image."""
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    top = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    left = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    rows = (top[:, None] + torch.arange(h)[None]).to(x.device)  # (n, h)
    cols = (left[:, None] + torch.arange(w)[None]).to(x.device)  # (n, w)
    index = torch.arange(n, device=x.device)[:, None, None]
    # (n, h, w, c) gathered, then back to (n, c, h, w)
    return padded.permute(0, 2, 3, 1)[index, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = (torch.rand(len(x), generator=generator) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def color_jitter(x: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Brightness, contrast and (RGB only) saturation, each scaled by a factor in [1 - s, 1 + s]."""
    n = len(x)

    def factor():
        return (1 + strength * (2 * torch.rand(n, 1, 1, 1, generator=generator) - 1)).to(x.device)

    x = (x * factor()).clamp(0, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * factor() + mean).clamp(0, 1)
    if x.shape[1] == 3:
        gray = (x * LUMA.to(x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        x = ((x - gray) * factor() + gray).clamp(0, 1)
    return x


def augment(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """``x`` augmented by ``kind`` (one of AUGMENTATIONS; "" returns ``x`` itself)."""
    if kind == "":
        return x
    if kind not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {kind!r}; accepted: {', '.join(AUGMENTATIONS)}")
    if kind == "eoe":
        x = color_jitter(x, JITTER, generator)
    x = random_crop(x, PADDING, generator)
    if kind in ("crop_flip", "eoe"):
        x = random_flip(x, generator)
    if kind == "eoe":
        noise = torch.randn(x.shape, generator=generator).to(x.device)
        x = (x + NOISE_STD * noise).clamp(0, 1)
    return x
