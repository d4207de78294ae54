#!/usr/bin/env python
"""
Panoptic FCN inference parity with the official implementation, run side by side.

    python tools/parity/panoptic_fcn.py --official-src path/to/PanopticFCN \\
        [--seed 1] [--write-golden tests/modeling/panoptic_fcn/golden/official_inference.pth]

Both models come from one random initialization of the official model through the real
converter (:func:`tools.parity.panoptic_fcn_models.build_model_pair`; the official deformable
position head runs through torchvision's ``deform_conv2d``, see that module). Each image is run
by the official model alone (its inference is per image) and by this project's model in a batch
of two, and every stage is compared on the image's padded extent: backbone levels P2-P7,
heatmaps and kernel features of every level, encoded features, thing candidates, fused thing
kernels' mask logits, rescored scores and classes, instance masks, stuff classes and mask
logits, and the final panoptic ids and segments_info.

Two batches: ``same-padding`` (both images pad to the same size alone) and ``mixed-padding``
(they do not: this project runs them as two groups, since GroupNorm statistics and border
convolutions would see the larger image's padding). Each image is also run alone through this
project's model: a converted checkpoint must give the official outputs.

Pass: panoptic ids identical on >= 99.9 % of each image's pixels and the same segments (ids,
categories, thing scores within 1e-4). Exit status 1 otherwise. ``--write-golden`` stores the
official weights (official key names), this project's config, both batches' inputs and the
official outputs, with the official commit, for
tests/modeling/panoptic_fcn/test_panoptic_fcn_official_golden.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tools.parity.panoptic_fcn_models import build_model_pair, official_commit  # noqa: E402

BATCHES = {
    "same-padding": [(97, 121), (113, 103)],  # both pad to 128 x 128
    "mixed-padding": [(97, 121), (145, 87)],  # 128 x 128 alone, 160 x 128 in the batch
}
PIXEL_AGREEMENT = 0.999
SCORE_TOLERANCE = 1e-4


def make_image(size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """A BGR image (3, H, W) in 0..255: smooth noise at two scales plus pixel noise, so that
    neighbouring heatmap cells are never exactly equal (flat regions would make ties that float
    rounding breaks either way)."""
    h, w = size
    image = torch.rand(3, h, w, generator=generator) * 32
    for cell in (24, 6):
        coarse = torch.rand(1, 3, h // cell + 2, w // cell + 2, generator=generator)
        image += F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)[0] * 112
    return image.round()


def _cloned(value):
    """A copy of nested tensors: the official inference edits some of them in place later."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_cloned(x) for x in value)
    if isinstance(value, dict):
        return {k: _cloned(v) for k, v in value.items()}
    return value


class OfficialRecorder:
    """Records the official model's per-stage results by wrapping its methods and modules."""

    def __init__(self, model):
        self.model = model
        self.stages: dict = {}
        model.backbone.register_forward_hook(self._hook("features"))
        model.feature_encoder.register_forward_hook(self._hook("encoded"))
        model.thing_generator.register_forward_hook(self._hook("things"))
        model.stuff_generator.register_forward_hook(self._hook("stuff"))
        self._wrap("forward_single_level", "levels")
        self._wrap("inference_single_level", "candidates")

    def _hook(self, name):
        def hook(module, inputs, output):
            self.stages[name] = _cloned(output)

        return hook

    def _wrap(self, method: str, name: str):
        original = getattr(self.model, method)

        def wrapped(*args):
            output = original(*args)
            self.stages.setdefault(name, []).append(_cloned(output))
            return output

        setattr(self.model, method, wrapped)

    def __call__(self, record: dict) -> tuple[dict, dict]:
        self.stages = {}
        with torch.no_grad():
            result = self.model([record])[0]
        return result, self.stages


class _RecordingPostprocessor:
    """A ``PanopticFCNPostprocessor`` that appends each image's inputs and stages to ``sink``."""

    def __init__(self, postprocessor, sink: list):
        self.postprocessor, self.sink = postprocessor, sink

    def __getattr__(self, name):
        return getattr(self.postprocessor, name)

    def __call__(self, *args):
        stages = {}
        self.sink.append((args, stages))
        return self.postprocessor(*args, stages=stages)


class OurRecorder:
    """Records this project's per-image post-processing inputs and stages, and the batch's
    features."""

    def __init__(self, model):
        self.model = model
        self.images: list = []
        self.backbone_calls: list = []

        def record_backbone(module, inputs, output):
            self.backbone_calls.append(output)

        model.backbone.register_forward_hook(record_backbone)
        model.postprocessor = _RecordingPostprocessor(model.postprocessor, self.images)

    def __call__(self, records: list[dict]):
        """Results, the backbone levels of each image (N, C, h, w sliced to the image's row of
        its group) and each image's inference inputs and stages."""
        self.images.clear()
        self.backbone_calls.clear()
        with torch.no_grad():
            results = self.model(records)
        # Images run in groups of equal padded size, each group in order of first appearance.
        divisibility = max(1, self.model.backbone.size_divisibility)
        groups: dict = {}
        for index, record in enumerate(records):
            h, w = record["image"].shape[-2:]
            key = (-(-h // divisibility), -(-w // divisibility))
            groups.setdefault(key, []).append(index)
        features = [None] * len(records)
        for call, members in zip(self.backbone_calls, groups.values()):
            for row, index in enumerate(members):
                features[index] = {k: v[row : row + 1] for k, v in call.items()}
        return results, features, list(self.images)


def max_difference(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float] | str:
    """(max |a - b|, that divided by max |b|), or why they cannot be compared."""
    if a.shape != b.shape:
        return f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}"
    if a.numel() == 0:
        return 0.0, 0.0
    diff = (a.float() - b.float()).abs().max().item()
    return diff, diff / max(b.float().abs().max().item(), 1e-12)


def compare_image(official: tuple, ours: tuple, report) -> dict:
    """Every stage of one image; ``report(stage, value)`` prints a line. Returns the final
    outputs' agreement."""
    (official_result, stages), (our_result, our_features, (args, our_stages)) = official, ours
    thing_logits, stuff_logits, _, kernel_features, _, encoded, _, _ = args
    for level, features in stages["features"].items():
        report(f"backbone {level}", max_difference(our_features[level], features))
    for level, (center, region, weights) in enumerate(stages["levels"]):
        report(f"thing heatmap logits L{level}", max_difference(thing_logits[level], center[0]))
        report(f"stuff heatmap logits L{level}", max_difference(stuff_logits[level], region[0]))
        report(f"kernel features L{level}", max_difference(kernel_features[level], weights[0]))
    report("encoded features", max_difference(encoded, stages["encoded"][0]))

    # Levels without candidates give empty lists officially.
    official_scores = torch.cat(
        [x[2] for x in stages["candidates"] if len(x[2])] or [torch.zeros(0)]
    )
    official_classes = torch.cat(
        [x[1] for x in stages["candidates"] if len(x[1])] or [torch.zeros(0, dtype=torch.long)]
    )
    order = official_scores.argsort(descending=True, stable=True)
    same = torch.equal(official_classes[order].long(), our_stages["candidate_classes"])
    report("thing candidates (count, classes equal)",
           (len(official_scores), len(our_stages["candidate_scores"]), same))  # fmt: skip
    report("thing candidate scores",
           max_difference(our_stages["candidate_scores"], official_scores[order]))  # fmt: skip

    mask_logits, (fused_classes, fused_scores) = stages["things"]
    if len(our_stages["fused_scores"]) or fused_scores is not None:
        report("fused things (classes equal)",
               torch.equal(our_stages["fused_classes"], fused_classes))  # fmt: skip
        report("fused thing scores", max_difference(our_stages["fused_scores"], fused_scores))
        report("thing mask logits",
               max_difference(our_stages["thing_mask_logits"], mask_logits[0]))  # fmt: skip
    official_instances, our_instances = official_result["instances"], our_result["instances"]
    if len(official_instances) and isinstance(official_instances.scores, torch.Tensor):
        report("rescored things (count)", (len(official_instances), len(our_instances)))
        report("rescored classes equal",
               torch.equal(our_instances.pred_classes, official_instances.pred_classes.long()))
        report("rescored scores", max_difference(our_instances.scores, official_instances.scores))
        agreement = (our_instances.pred_masks == official_instances.pred_masks.tensor).float()
        report("instance mask pixels equal", agreement.mean().item())
    else:
        report("rescored things (count)", (0, len(our_instances)))

    stuff_logits_official, (stuff_classes, _) = stages["stuff"]
    report("stuff classes equal", torch.equal(our_stages["stuff_classes"], stuff_classes))
    report("stuff mask logits",
           max_difference(our_stages["stuff_mask_logits"], stuff_logits_official[0]))  # fmt: skip
    report("sem_seg", max_difference(our_result["sem_seg"], official_result["sem_seg"]))
    return compare_panoptic(our_result["panoptic_seg"], official_result["panoptic_seg"], report)


def compare_panoptic(ours, official, report) -> dict:
    """Pixel agreement of the panoptic ids and whether the segments match."""
    (our_ids, our_segments), (official_ids, official_segments) = ours, official
    agreement = (our_ids == official_ids).float().mean().item()
    report("panoptic ids equal (pixels)", agreement)
    segments_match = len(our_segments) == len(official_segments) and all(
        (a["id"], a["category_id"], a["isthing"]) == (b["id"], b["category_id"], b["isthing"])
        and abs(a.get("score", 0.0) - b.get("score", 0.0)) <= SCORE_TOLERANCE
        and ("area" not in b or a["area"] == b["area"])
        for a, b in zip(our_segments, official_segments)
    )
    report("segments_info match", segments_match)
    report("segments (ours / official)",
           ([(s["category_id"], s["isthing"]) for s in our_segments],
            [(s["category_id"], s["isthing"]) for s in official_segments]))  # fmt: skip
    return {"agreement": agreement, "segments_match": segments_match}


def golden_outputs(official_results) -> list[dict]:
    """The official outputs the golden test compares with."""
    outputs = []
    for result in official_results:
        ids, segments = result["panoptic_seg"]
        instances = result["instances"]
        has_instances = len(instances) and isinstance(instances.scores, torch.Tensor)
        outputs.append({
            "panoptic_ids": ids.to(torch.int16),
            "segments_info": segments,
            "scores": instances.scores if has_instances else torch.zeros(0),
            "classes": instances.pred_classes.long() if has_instances else torch.zeros(0).long(),
            "sem_seg": result["sem_seg"],
        })  # fmt: skip
    return outputs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official-src", required=True, help="local copy of the official repo")
    # Seed 1: every image of both batches gets several things and stuff segments.
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--write-golden", type=Path, help="golden fixture to write")
    args = parser.parse_args(argv)

    official_model, our_model, cfg = build_model_pair(args.official_src, seed=args.seed)
    commit = official_commit(args.official_src)
    print(f"official commit {commit}, seed {args.seed}")
    official_run, our_run = OfficialRecorder(official_model), OurRecorder(our_model)
    generator = torch.Generator().manual_seed(args.seed)
    passed = True
    golden = {
        "official_repository": "https://github.com/dvlab-research/PanopticFCN",
        "official_commit": commit,
        "seed": args.seed,
        "config_yaml": cfg.dump(),
        "official_state_dict": {k: v.clone() for k, v in official_model.state_dict().items()},
        "batches": [],
    }
    for batch_name, sizes in BATCHES.items():
        records = [
            {"image": make_image(s, generator), "height": s[0], "width": s[1]} for s in sizes
        ]
        official = [official_run(r) for r in records]
        our_results, our_features, per_image = our_run(records)
        for index, record in enumerate(records):
            print(f"\n[{batch_name}] image {index} ({record['height']} x {record['width']}), "
                  "batch of 2 here vs official alone")  # fmt: skip

            def report(stage, value):
                print(f"  {stage:42s} {value}")

            ours = (our_results[index], our_features[index], per_image[index])
            outcome = compare_image(official[index], ours, report)
            alone, _, _ = our_run([record])
            print("  alone here vs official alone:")
            alone_outcome = compare_panoptic(
                alone[0]["panoptic_seg"], official[index][0]["panoptic_seg"], report
            )
            for result in (outcome, alone_outcome):
                passed &= result["agreement"] >= PIXEL_AGREEMENT and result["segments_match"]
        golden["batches"].append({
            "name": batch_name,
            "images": [r["image"].to(torch.uint8) for r in records],
            "outputs": golden_outputs([r for r, _ in official]),
        })  # fmt: skip
    if args.write_golden:
        args.write_golden.parent.mkdir(parents=True, exist_ok=True)
        torch.save(golden, args.write_golden)
        print(f"\nwrote {args.write_golden}")
    print("\nPASS" if passed else "\nFAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
