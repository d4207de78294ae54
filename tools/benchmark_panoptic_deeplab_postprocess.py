#!/usr/bin/env python
"""
Time Panoptic-DeepLab's post-processing: detectron2's reference ``get_panoptic_segmentation``
and panoptic_zoo's batched one, on the same synthetic Cityscapes-sized prediction, and check
that they agree.

    python tools/benchmark_panoptic_deeplab_postprocess.py                    # both (~1 min)
    python tools/benchmark_panoptic_deeplab_postprocess.py --skip-reference  # ours only

The prediction is a street-like scene: 19 classes (8 things), ~150 instances of 20-200 px as
thing blobs on stuff bands, a center peak per instance, offsets pointing to it plus noise, and a
low-level noise floor on the heatmap. Only post-processing is timed, not the network.
"""

from __future__ import annotations

import argparse
import time

import torch

from panoptic_zoo.modeling.panoptic_deeplab.postprocess import get_panoptic_segmentation

NUM_THINGS, NUM_CLASSES = 8, 19
LABEL_DIVISOR, VOID = 1000, -1


def synthetic_prediction(height: int, width: int, num_instances: int, seed: int):
    """(semantic classes [H, W], center heatmap [H, W], offsets [2, H, W])."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.arange(height, dtype=torch.float32)[:, None].expand(height, width)
    x = torch.arange(width, dtype=torch.float32)[None, :].expand(height, width)
    # Stuff: horizontal bands of the 11 stuff classes.
    sem = (NUM_THINGS + (y * (NUM_CLASSES - NUM_THINGS) / height).long()).clone()
    heatmap = torch.rand(height, width, generator=generator) * 0.05
    offsets = torch.randn(2, height, width, generator=generator) * 2.0
    centers = torch.rand(num_instances, 2, generator=generator) * torch.tensor([height, width])
    radii = 10 + torch.rand(num_instances, generator=generator) * 90
    classes = torch.randint(0, NUM_THINGS, (num_instances,), generator=generator)
    for (cy, cx), radius, thing in zip(centers.tolist(), radii.tolist(), classes.tolist()):
        y0, y1 = max(0, int(cy - radius)), min(height, int(cy + radius) + 1)
        x0, x1 = max(0, int(cx - radius)), min(width, int(cx + radius) + 1)
        dy, dx = cy - y[y0:y1, x0:x1], cx - x[y0:y1, x0:x1]
        inside = dy**2 + dx**2 <= radius**2
        sem[y0:y1, x0:x1][inside] = thing
        offsets[0, y0:y1, x0:x1][inside] += dy[inside]
        offsets[1, y0:y1, x0:x1][inside] += dx[inside]
        heatmap[int(cy), int(cx)] = 0.3 + 0.7 * torch.rand(1, generator=generator).item()
    return sem, heatmap, offsets


def timed(function, repeats: int):
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--instances", type=int, default=150)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="best of N for ours")
    parser.add_argument(
        "--skip-reference",
        action="store_true",
        help="do not run detectron2's reference (~51 s at 1024x2048 on 2 threads)",
    )
    args = parser.parse_args()  # fmt: skip
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sem, heatmap, offsets = (t.to(device) for t in synthetic_prediction(
        args.height, args.width, args.instances, seed=0))  # fmt: skip
    options = dict(label_divisor=LABEL_DIVISOR, stuff_area=2048, void_label=VOID, threshold=0.1,
                   nms_kernel=7, top_k=200)  # fmt: skip

    def ours():
        panoptic, centers = get_panoptic_segmentation(
            sem[None], heatmap[None], offsets[None], range(NUM_THINGS), NUM_CLASSES, **options
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        return panoptic[0], centers

    ours()  # warm-up (allocator, kernels)
    seconds, (panoptic, centers) = timed(ours, args.repeats)
    thing_pixels = (sem < NUM_THINGS).float().mean().item()
    print(f"input {args.height}x{args.width} on {device} with {args.threads} threads: "
          f"{len(centers)} centers, {thing_pixels:.0%} thing pixels")  # fmt: skip
    print(f"panoptic_zoo get_panoptic_segmentation:  {seconds:.3f} s (best of {args.repeats})")
    if args.skip_reference:
        return
    from detectron2.projects.panoptic_deeplab.post_processing import (
        get_panoptic_segmentation as reference,
    )

    reference_seconds, (expected, expected_centers) = timed(
        lambda: reference(sem[None], heatmap[None], offsets, thing_ids=set(range(NUM_THINGS)),
                          **options),
        repeats=1,
    )  # fmt: skip
    print(f"detectron2 reference:                    {reference_seconds:.3f} s")
    same_centers = torch.equal(centers[:, 1:], expected_centers[0])
    differing = (panoptic != expected[0]).sum().item()
    print(
        f"same centers: {same_centers}; pixels with a different label: {differing} "
        f"of {panoptic.numel()}; speed-up {reference_seconds / seconds:.0f}x"
    )
    if not same_centers or differing:
        raise SystemExit("outputs differ")


if __name__ == "__main__":
    main()
