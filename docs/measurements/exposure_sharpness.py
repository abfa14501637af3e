"""Sharpness of RODEO's generated exposure against the inliers, per DDPM backbone (issue 12, Sec. 2).

``BENCH_DATA=... BENCH_CACHE=... python docs/measurements/exposure_sharpness.py [--profile quick]
[--cells class0 class1 class2] [--ddpm glyph-ddpm glyph-ddpm-32]``

For every nd cell of MNIST, on the same validation split that ``python -m bench.validation`` carves
(seed 0, 20% of the training inliers held out), it builds RODEO's exposure with each DDPM (from the cache
when a validation run made it) and prints the mean variance of the Laplacian (a 3x3 kernel, images in
[0, 1]) of all generated images, of the kept ones and of the inliers, with the keep rate. Blur that the
inliers lack is a cue a detector can learn instead of "not this class".
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from bench.cache import DetectorCache
from bench.config import for_dataset, get_profile
from bench.contracts import RunContext
from bench.registry import DATASETS, PROTOCOLS
from bench.validation import build_method, validation_split

LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)


def laplacian_variance(images: torch.Tensor) -> float:
    """Mean over images of the variance of the Laplacian (gray: channels averaged first)."""
    if len(images) == 0:
        return float("nan")
    gray = images.float().mean(dim=1, keepdim=True)
    return float(F.conv2d(gray, LAPLACIAN).var(dim=(1, 2, 3)).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--cells", nargs="+", default=["class0", "class1", "class2"])
    parser.add_argument("--ddpm", nargs="+", default=["glyph-ddpm", "glyph-ddpm-32"])
    args = parser.parse_args()
    builder = DATASETS.get("mnist")
    dataset = builder()
    profile = for_dataset(get_profile(args.profile), builder)
    context = RunContext(device="cpu", cache=DetectorCache())
    print("cell,ddpm,generated,kept,keep_rate,lapvar_generated,lapvar_kept,lapvar_inliers")
    for cell in PROTOCOLS.get("nd")().cells(dataset, profile, 0, "cpu"):
        if cell.cell_id not in args.cells:
            continue
        task = validation_split(cell, dataset, profile, 0, 0.2, ["oe"]).fit_task
        for ddpm in args.ddpm:
            tensors, _ = build_method("rodeo", {"ddpm_backbone": ddpm}).exposure(task, context)
            images, kept = tensors["images"], tensors["kept"]
            print(
                f"{cell.cell_id},{ddpm},{len(images)},{int(kept.sum())},{float(kept.float().mean()):.3f},"
                f"{laplacian_variance(images):.4f},{laplacian_variance(images[kept]):.4f},"
                f"{laplacian_variance(task.images):.4f}"
            )


if __name__ == "__main__":
    main()
