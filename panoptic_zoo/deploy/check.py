"""The end-to-end check of an export: its panoptic output against the eager model's."""

from __future__ import annotations

import torch

__all__ = ["MIN_PIXEL_AGREEMENT", "compare_panoptic", "check_deployed"]

# Exported networks compute in other orders (other kernels, fused operations): float rounding
# may flip a pixel whose two best candidates tie to ~1e-6.
MIN_PIXEL_AGREEMENT = 0.999


def _segments(info: list[dict]) -> list[tuple]:
    return [(x["id"], x["category_id"], bool(x["isthing"])) for x in info]


def compare_panoptic(expected: dict, got: dict) -> dict:
    """Pixel agreement of the two ``panoptic_seg`` maps and whether their segments (id,
    category, thing or stuff) are the same."""
    (expected_ids, expected_info), (got_ids, got_info) = (
        expected["panoptic_seg"],
        got["panoptic_seg"],
    )
    if expected_ids.shape != got_ids.shape:
        raise ValueError(f"panoptic maps of shapes {expected_ids.shape} and {got_ids.shape}")
    return {
        "pixel_agreement": (expected_ids == got_ids).double().mean().item(),
        "same_segments": _segments(expected_info) == _segments(got_info),
        "segments": len(expected_info),
    }


@torch.no_grad()
def check_deployed(
    eager_model, deployed, batched_inputs: list[dict], batch_size: int = 1
) -> list[dict]:
    """
    ``compare_panoptic`` of each input's eager and deployed predictions, ``batch_size`` images
    per call (both models get the same batches); raises when an image's agreement is under
    :data:`MIN_PIXEL_AGREEMENT`, its segments differ, or its ``instances`` have other classes;
    ``sem_seg`` must have the same shape.
    """
    reports = []
    for start in range(0, len(batched_inputs), batch_size):
        batch = batched_inputs[start : start + batch_size]
        for inputs, expected, got in zip(batch, eager_model(batch), deployed(batch)):
            reports.append({"batch": len(batch), **_compare_image(inputs, expected, got)})
    return reports


def _compare_image(inputs: dict, expected: dict, got: dict) -> dict:
    if set(expected) != set(got):
        raise AssertionError(f"outputs {sorted(got)} instead of {sorted(expected)}")
    if "sem_seg" in expected and expected["sem_seg"].shape != got["sem_seg"].shape:
        raise AssertionError("sem_seg shapes differ")
    report = compare_panoptic(expected, got)
    if "instances" in expected:
        classes = [x["instances"].pred_classes.tolist() for x in (expected, got)]
        report["same_segments"] &= classes[0] == classes[1]
        report["instances"] = len(classes[0])
    size = tuple(inputs["image"].shape[-2:])
    if report["pixel_agreement"] < MIN_PIXEL_AGREEMENT or not report["same_segments"]:
        raise AssertionError(
            f"image of size {size}: exported output differs: {report}; first segments "
            f"{expected['panoptic_seg'][1][:2]} (eager), {got['panoptic_seg'][1][:2]}"
        )
    return {"size": size, **report}
