"""Sharpness of RODEO's generated exposure against the inliers, per DDPM backbone (issue 12, Sec. 2).

``BENCH_DATA=... BENCH_CACHE=... bench study exposure-sharpness [--profile quick]
[--dataset mnist] [--protocol nd] [--cells class0 class1 class2] [--ddpm glyph-ddpm glyph-ddpm-32]``

For every chosen cell, on the same validation split that ``bench study validation`` carves (seed 0,
20% of the training inliers held out), it builds RODEO's exposure with each DDPM (from the cache when a
validation run made it) and prints the mean variance of the Laplacian (a 3x3 kernel, images in [0, 1]) of
all generated images, of the kept ones, of the inliers and of the validation's other-classes images (the
kind of outlier the test holds), with the keep rate and the mean pixel value of the same four. A cue on
which the kept exposure differs from the inliers *and* from the real outliers (blur, brightness) is one a
detector can learn instead of "not this class", and it does not transfer.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from bench.cache import DetectorCache
from bench.config import for_dataset, get_profile
from bench.contracts import RunContext
from bench.registry import DATASETS, PROTOCOLS
from bench.studies.validation import build_method, validation_split

LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)


def laplacian_variance(images: torch.Tensor) -> float:
    """Mean over images of the variance of the Laplacian (gray: channels averaged first)."""
    if len(images) == 0:
        return float("nan")
    gray = images.float().mean(dim=1, keepdim=True)
    return float(F.conv2d(gray, LAPLACIAN).var(dim=(1, 2, 3)).mean())


def mean_pixel(images: torch.Tensor) -> float:
    return float(images.float().mean()) if len(images) else float("nan")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="bench study exposure-sharpness", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--protocol", default="nd")
    parser.add_argument("--cells", nargs="+", default=["class0", "class1", "class2"])
    parser.add_argument("--ddpm", nargs="+", default=["glyph-ddpm", "glyph-ddpm-32"])
    args = parser.parse_args(argv)
    builder = DATASETS.get(args.dataset)
    dataset = builder()
    profile = for_dataset(get_profile(args.profile), builder)
    context = RunContext(device="cpu", cache=DetectorCache())
    print(
        "dataset,protocol,cell,ddpm,generated,kept,keep_rate,lapvar_generated,lapvar_kept,lapvar_inliers,"
        "lapvar_other_classes,mean_generated,mean_kept,mean_inliers,mean_other_classes"
    )
    for cell in PROTOCOLS.get(args.protocol)().cells(dataset, profile, 0, "cpu"):
        if cell.cell_id not in args.cells:
            continue
        split = validation_split(cell, dataset, profile, 0, 0.2, ["other-classes"])
        task = split.fit_task
        others = split.evalsets[0].images[split.evalsets[0].is_outlier] if split.evalsets else task.images[:0]
        for ddpm in args.ddpm:
            tensors, _ = build_method("rodeo", {"ddpm_backbone": ddpm}).exposure(task, context)
            images, kept = tensors["images"], tensors["kept"]
            sets = (images, images[kept], task.images, others)
            print(
                f"{args.dataset},{args.protocol},{cell.cell_id},{ddpm},{len(images)},{int(kept.sum())},"
                f"{float(kept.float().mean()):.3f},"
                + ",".join(f"{laplacian_variance(x):.4f}" for x in sets)
                + ","
                + ",".join(f"{mean_pixel(x):.4f}" for x in sets),
                flush=True,
            )
