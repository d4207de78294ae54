#!/usr/bin/env python
"""
Mask2Former parity with the official implementation (facebookresearch/Mask2Former), run side by
side on the same weights and inputs.

    python tools/parity/mask2former.py --official-src path/to/Mask2Former \\
        [--seed 1] [--write-golden tests/modeling/mask2former/golden/official_parity.pth]

The official package is imported as it is, with two stand-ins put into ``sys.modules`` first:
its compiled ``MultiScaleDeformableAttention`` op (not built here; the stand-in refuses every
call, so the official module falls back to its pure-PyTorch ``ms_deform_attn_core_pytorch``,
whose calls are counted and must be > 0) and ``timm`` (imported by its Swin backbone only,
which is not built).

A tiny official model (ResNet-18 with GroupNorm, 32 channels, 12 queries, 3 encoder layers, the
paper's 9 decoder layers, 5 thing + 4 stuff classes) is randomly initialized, its weights
perturbed (so that no layer keeps an initialization of zeros or ones, and queries score above
the official 0.8 object-mask threshold), and copied into this project's model through the
converter. Compared on a batch of two odd-sized images that pad to the same size:

* every prediction's class and mask logits (the learnable queries' and each decoder layer's);
* the final panoptic ids and segments, the semantic maps and the instances;
* on a fixed training batch (things and stuff segments), with torch seeded the same before both
  forwards (the matcher's uniform points and the losses' importance sampling then draw the same
  points): each prediction's Hungarian assignment and every loss term;
* a third image (another padded size) run alone by the official model and in a mixed-size batch
  by this project's model (run per padded size): the same panoptic output.

Exit status 1 on any difference beyond the tolerances. ``--write-golden`` stores the official
head weights (official key names), this project's config, the batch's backbone features, the
official outputs of every stage, the training targets, assignments and losses, and the official
commit, for tests/modeling/mask2former/test_mask2former_official_golden.py (ResNet-18 weights
would not fit a small fixture; the backbone is detectron2's own in both models).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Instances

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from panoptic_zoo.config import get_cfg  # noqa: E402
from panoptic_zoo.model_zoo.converters import convert_official_mask2former  # noqa: E402
from panoptic_zoo.modeling.images import normalized_image_batch  # noqa: E402
from tools.parity.panoptic_fcn import make_image  # noqa: E402  (3 channels of smooth noise)

NUM_THINGS, NUM_STUFF = 5, 4
SAME_PADDING = [(83, 67), (71, 89)]  # both pad to 96 x 96
OTHER_PADDING = (101, 75)  # pads to 128 x 96
METADATA_NAME = "mask2former_parity"
LOGIT_TOLERANCE = 1e-4
LOSS_TOLERANCE = 1e-5
PIXEL_AGREEMENT = 0.999


class OfficialCode:
    """The official package imported with stand-ins for its compiled op and for timm."""

    def __init__(self, src: Path):
        if not (src / "mask2former" / "maskformer_model.py").is_file():
            raise SystemExit(f"{src} is not a copy of facebookresearch/Mask2Former")
        self.src = src
        self.compiled_op_calls = 0
        self.pytorch_path_calls = 0

        def refuse(*args, **kwargs):
            self.compiled_op_calls += 1
            raise RuntimeError("compiled MultiScaleDeformableAttention op: not built here")

        op = types.ModuleType("MultiScaleDeformableAttention")
        op.ms_deform_attn_forward = op.ms_deform_attn_backward = refuse
        sys.modules["MultiScaleDeformableAttention"] = op
        for name in ("timm", "timm.models", "timm.models.layers"):
            sys.modules.setdefault(name, types.ModuleType(name))
        for name in ("DropPath", "to_2tuple", "trunc_normal_"):
            setattr(sys.modules["timm.models.layers"], name, refuse)
        sys.path.insert(0, str(src))
        import mask2former
        from mask2former.modeling.pixel_decoder.ops.modules import ms_deform_attn

        original = ms_deform_attn.ms_deform_attn_core_pytorch

        def counted(*args, **kwargs):
            self.pytorch_path_calls += 1
            return original(*args, **kwargs)

        ms_deform_attn.ms_deform_attn_core_pytorch = counted
        self.package = mask2former

    def commit(self) -> str:
        result = subprocess.run(["git", "-C", str(self.src), "rev-parse", "HEAD"],
                                capture_output=True, text=True)  # fmt: skip
        return result.stdout.strip() if result.returncode == 0 else "unknown"


def our_config():
    cfg = get_cfg()
    cfg.merge_from_list([
        "MODEL.META_ARCHITECTURE", "Mask2Former",
        "MODEL.DEVICE", "cpu",
        "MODEL.BACKBONE.NAME", "build_resnet_backbone",
        "MODEL.BACKBONE.FREEZE_AT", 0,
        "MODEL.RESNETS.DEPTH", 18,
        "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
        "MODEL.RESNETS.STRIDE_IN_1X1", False,
        "MODEL.RESNETS.NORM", "GN",
        "MODEL.RESNETS.OUT_FEATURES", ["res2", "res3", "res4", "res5"],
        "MODEL.PIXEL_MEAN", [123.675, 116.28, 103.53],
        "MODEL.PIXEL_STD", [58.395, 57.12, 57.375],
        "MODEL.MASK2FORMER.NUM_THING_CLASSES", NUM_THINGS,
        "MODEL.MASK2FORMER.NUM_STUFF_CLASSES", NUM_STUFF,
        "MODEL.MASK2FORMER.PIXEL_DECODER.CONVS_DIM", 32,
        "MODEL.MASK2FORMER.PIXEL_DECODER.MASK_DIM", 32,
        "MODEL.MASK2FORMER.PIXEL_DECODER.ENCODER_LAYERS", 3,
        "MODEL.MASK2FORMER.PIXEL_DECODER.ENCODER_HEADS", 4,
        "MODEL.MASK2FORMER.DECODER.NUM_QUERIES", 12,
        "MODEL.MASK2FORMER.DECODER.HIDDEN_DIM", 32,
        "MODEL.MASK2FORMER.DECODER.HEADS", 4,
        "MODEL.MASK2FORMER.DECODER.FFN_DIM", 64,
        "MODEL.MASK2FORMER.LOSS.TRAIN_NUM_POINTS", 256,
        "TEST.DETECTIONS_PER_IMAGE", 20,
    ])  # fmt: skip
    return cfg


def official_config(official: OfficialCode, cfg):
    """The official config of the model ``cfg`` (this project's) builds."""
    from detectron2.config import get_cfg as get_detectron2_cfg
    from detectron2.projects.deeplab import add_deeplab_config

    m2f = cfg.MODEL.MASK2FORMER
    # The official encoder's FFN dimension and sampling points are fixed; its heads are the
    # decoder's (MASK_FORMER.NHEADS; its DEFORMABLE_TRANSFORMER_ENCODER_N_* keys are unread).
    if (m2f.PIXEL_DECODER.ENCODER_FFN_DIM, m2f.PIXEL_DECODER.ENCODER_POINTS) != (1024, 4) or (
        m2f.PIXEL_DECODER.ENCODER_HEADS != m2f.DECODER.HEADS
    ):
        raise ValueError("no official config: encoder FFN 1024, 4 points, heads = decoder heads")
    ocfg = get_detectron2_cfg()
    add_deeplab_config(ocfg)
    official.package.add_maskformer2_config(ocfg)
    ocfg.merge_from_file(str(official.src / "configs/coco/panoptic-segmentation/"
                             "maskformer2_R50_bs16_50ep.yaml"))  # fmt: skip
    ocfg.MODEL.WEIGHTS = ""
    ocfg.MODEL.DEVICE = "cpu"
    ocfg.MODEL.RESNETS = cfg.MODEL.RESNETS.clone()
    ocfg.MODEL.PIXEL_MEAN, ocfg.MODEL.PIXEL_STD = cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD
    ocfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = m2f.NUM_THING_CLASSES + m2f.NUM_STUFF_CLASSES
    ocfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = list(m2f.PIXEL_DECODER.IN_FEATURES)
    ocfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = list(
        m2f.PIXEL_DECODER.ENCODER_IN_FEATURES
    )
    ocfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = m2f.PIXEL_DECODER.CONVS_DIM
    ocfg.MODEL.SEM_SEG_HEAD.MASK_DIM = m2f.PIXEL_DECODER.MASK_DIM
    ocfg.MODEL.SEM_SEG_HEAD.NORM = m2f.PIXEL_DECODER.NORM
    ocfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = m2f.PIXEL_DECODER.ENCODER_LAYERS
    ocfg.MODEL.MASK_FORMER.NHEADS = m2f.DECODER.HEADS
    ocfg.MODEL.MASK_FORMER.DROPOUT = m2f.PIXEL_DECODER.ENCODER_DROPOUT
    ocfg.MODEL.MASK_FORMER.HIDDEN_DIM = m2f.DECODER.HIDDEN_DIM
    ocfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES = m2f.DECODER.NUM_QUERIES
    ocfg.MODEL.MASK_FORMER.DIM_FEEDFORWARD = m2f.DECODER.FFN_DIM
    ocfg.MODEL.MASK_FORMER.DEC_LAYERS = m2f.DECODER.LAYERS + 1
    ocfg.MODEL.MASK_FORMER.PRE_NORM = m2f.DECODER.PRE_NORM
    ocfg.MODEL.MASK_FORMER.TRAIN_NUM_POINTS = m2f.LOSS.TRAIN_NUM_POINTS
    ocfg.MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD = m2f.INFERENCE.OBJECT_MASK_THRESHOLD
    ocfg.MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD = m2f.INFERENCE.OVERLAP_THRESHOLD
    ocfg.TEST.DETECTIONS_PER_IMAGE = cfg.TEST.DETECTIONS_PER_IMAGE
    # The official inference reads which classes are things from the training set's metadata.
    MetadataCatalog.get(METADATA_NAME).set(
        thing_dataset_id_to_contiguous_id={i + 1: i for i in range(m2f.NUM_THING_CLASSES)}
    )
    ocfg.DATASETS.TRAIN = (METADATA_NAME,)
    return ocfg


def perturbed(state_dict: dict, generator: torch.Generator) -> dict:
    """Every float tensor plus noise of its own scale; the decoder layers' residual updates
    made smaller (random layers otherwise make all queries alike), class logits peaked (so
    queries pass the 0.8 object-mask threshold) and mask embeddings larger (masks of both signs).
    The state dict's metadata (module versions) is kept: without it the official head renames
    its keys as if loading an old checkpoint."""
    result = type(state_dict)()
    result._metadata = state_dict._metadata
    for key, value in state_dict.items():
        if not value.is_floating_point() or "empty_weight" in key:
            result[key] = value
            continue
        scale = value.std().item() if value.numel() > 1 and value.std() > 0 else 0.1
        value = value + torch.randn(value.shape, generator=generator) * 0.5 * scale
        if "predictor" in key and ("out_proj.weight" in key or "linear2.weight" in key):
            value = value * 0.2
        if "class_embed" in key:
            value = value * 6
        if "mask_embed.layers.2" in key:
            value = value * 15
        result[key] = value
    return result


def make_merge_case(generator, queries: int, classes: int, size=(45, 59)):
    """Inputs of the panoptic merge alone, richer than a random network gives: class logits
    (Q, K+1) peaked on random classes (several queries per stuff class) and smooth mask logits
    (Q, h, w) at stride 4 of an image of ``size``."""
    class_logits = torch.randn(queries, classes + 1, generator=generator)
    chosen = torch.randint(0, classes + 1, (queries,), generator=generator)
    class_logits[torch.arange(queries), chosen] += 1 + 5 * torch.rand(queries, generator=generator)
    h, w = -(-size[0] // 4), -(-size[1] // 4)
    coarse = torch.randn(1, queries, 4, 5, generator=generator) * 6 - 4  # blobs, ~1/4 each
    mask_logits = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0]
    return class_logits, mask_logits, size


def official_merge(official_model, class_logits, mask_logits, size):
    """The official inference steps on one image: masks upsampled to the (padded) input,
    cropped and resized (sem_seg_postprocess), then its panoptic_inference."""
    from detectron2.modeling.postprocessing import sem_seg_postprocess

    padded = (mask_logits.shape[-2] * 4, mask_logits.shape[-1] * 4)
    upsampled = F.interpolate(mask_logits[None], size=padded, mode="bilinear",
                              align_corners=False)[0]  # fmt: skip
    upsampled = sem_seg_postprocess(upsampled, size, *size)
    return official_model.panoptic_inference(class_logits, upsampled)


def make_segments(size, generator):
    """Ground truth: a few rectangles of thing classes over a stuff layout (two stuff classes
    split by a random column, a void band). Returns (thing masks, thing classes, sem_seg in
    separated ids: stuff 1..S, things 0, void 255)."""
    h, w = size
    split = int(torch.randint(w // 4, 3 * w // 4, (1,), generator=generator))
    stuff = torch.randint(1, NUM_STUFF + 1, (2,), generator=generator)
    sem_seg = torch.full((h, w), int(stuff[0]))
    sem_seg[:, split:] = int(stuff[1])
    sem_seg[: h // 10] = 255
    masks, classes = [], []
    for _ in range(3):
        y0, x0 = (int(torch.randint(0, s // 2, (1,), generator=generator)) for s in (h, w))
        dy, dx = (int(torch.randint(s // 6, s // 2, (1,), generator=generator)) for s in (h, w))
        mask = torch.zeros((h, w), dtype=torch.bool)
        mask[y0 : y0 + dy, x0 : x0 + dx] = True
        for earlier in masks:
            mask &= ~earlier
        masks.append(mask)
        classes.append(int(torch.randint(0, NUM_THINGS, (1,), generator=generator)))
    masks = torch.stack(masks)
    sem_seg[masks.any(0)] = 0
    return masks, torch.tensor(classes), sem_seg


def our_training_record(image, masks, classes, sem_seg) -> dict:
    instances = Instances(tuple(image.shape[1:]))
    instances.gt_masks = BitMasks(masks)
    instances.gt_classes = classes
    return {"image": image, "instances": instances, "sem_seg": sem_seg}


def official_training_record(image, masks, classes, sem_seg) -> dict:
    """The official mapper's targets: every non-void segment, things first then the stuff
    classes present, in unified classes (stuff s -> T + s - 1)."""
    stuff = [s for s in torch.unique(sem_seg).tolist() if 0 < s != 255]
    instances = Instances(tuple(image.shape[1:]))
    instances.gt_masks = torch.cat([masks, torch.stack([sem_seg == s for s in stuff])])
    instances.gt_classes = torch.cat([classes, torch.tensor(stuff) + NUM_THINGS - 1])
    return {"image": image, "instances": instances}


def record_matches(criterion) -> list:
    """The list each later call of ``criterion.matcher`` (either implementation) appends its
    assignments to."""
    calls = []
    matcher = criterion.matcher
    call = matcher.forward if isinstance(matcher, torch.nn.Module) else matcher.__call__

    def recorded(*args, **kwargs):
        result = call(*args, **kwargs)
        calls.append([(q.clone(), t.clone()) for q, t in result])
        return result

    if isinstance(matcher, torch.nn.Module):
        matcher.forward = recorded  # the instance attribute shadows the class's forward
    else:
        criterion.matcher = recorded
    return calls


def official_predictions(official_model, records):
    """The official head's outputs: (class logits, mask logits) per prediction, first to last."""
    captured = {}

    def hook(module, inputs, output):
        captured["output"] = output

    handle = official_model.sem_seg_head.register_forward_hook(hook)
    with torch.no_grad():
        results = official_model(records)
    handle.remove()
    output = captured["output"]
    layers = [*output["aux_outputs"], {"pred_logits": output["pred_logits"],
                                       "pred_masks": output["pred_masks"]}]  # fmt: skip
    return results, [x["pred_logits"] for x in layers], [x["pred_masks"] for x in layers]


def our_predictions(model, records):
    images = normalized_image_batch(records, model.pixel_mean, model.pixel_std, 32)
    with torch.no_grad():
        features = model.backbone(images.tensor)
        class_logits, mask_logits = model.head(features, all_predictions=True)
    return features, class_logits, mask_logits


class Report:
    def __init__(self):
        self.failures = 0

    def check(self, name: str, ok: bool, detail: str) -> None:
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
        self.failures += not ok

    def close(self, name, ours, official, tolerance) -> None:
        difference = (ours - official).abs().max().item() if ours.numel() else 0.0
        self.check(name, ours.shape == official.shape and difference <= tolerance,
                   f"max |ours - official| {difference:.2e} (tolerance {tolerance:g})")  # fmt: skip

    def panoptic(self, name, ours, official, min_segments: int = 1) -> None:
        ids, segments = ours
        official_ids, official_segments = official
        agreement = (ids == official_ids).float().mean().item()
        same = len(segments) == len(official_segments) and all(
            (a["id"], a["isthing"], a["category_id"]) == (b["id"], b["isthing"], b["category_id"])
            for a, b in zip(segments, separated(official_segments))
        )
        self.check(name, agreement >= PIXEL_AGREEMENT and same and len(segments) >= min_segments,
                   f"{agreement:.4%} of pixels, {len(segments)} segments "
                   f"(official {len(official_segments)}), same ids and classes: {same}")  # fmt: skip


def separated(official_segments: list[dict]) -> list[dict]:
    """Official unified categories -> this project's separated ids (stuff 1..S)."""
    return [
        {**s, "category_id": s["category_id"] if s["isthing"]
         else s["category_id"] - NUM_THINGS + 1}  # fmt: skip
        for s in official_segments
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official-src", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--write-golden", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    official = OfficialCode(args.official_src)
    generator = torch.Generator().manual_seed(args.seed)

    cfg = our_config()
    torch.manual_seed(args.seed)
    official_model = build_model(official_config(official, cfg)).eval()
    official_state = perturbed(official_model.state_dict(), generator)
    official_model.load_state_dict(official_state)
    model = build_model(cfg).eval()
    conversion = convert_official_mask2former(official_state)
    model.load_state_dict(conversion.state_dict)
    report = Report()
    report.check("conversion", not conversion.notes and conversion.unused == ["criterion.empty_weight"],
                 f"{len(conversion.state_dict)} tensors, unused {conversion.unused}")  # fmt: skip

    images = [make_image(size, generator) for size in SAME_PADDING]
    records = [{"image": image, "height": image.shape[1], "width": image.shape[2]}
               for image in images]  # fmt: skip
    official_results, official_classes, official_masks = official_predictions(
        official_model, records
    )
    report.check("official deformable attention ran its PyTorch path",
                 official.pytorch_path_calls > 0,
                 f"{official.pytorch_path_calls} calls, compiled op refused "
                 f"{official.compiled_op_calls} times")  # fmt: skip
    features, our_classes, our_masks = our_predictions(model, records)
    report.check("predictions", len(our_classes) == len(official_classes) == 10,
                 f"{len(our_classes)} (official {len(official_classes)})")  # fmt: skip
    for i, (a, b, c, d) in enumerate(zip(our_classes, official_classes, our_masks, official_masks)):
        report.close(f"prediction {i} class logits", a, b, LOGIT_TOLERANCE)
        report.close(f"prediction {i} mask logits", c, d, LOGIT_TOLERANCE)

    with torch.no_grad():
        results = model(records)
    for index, (ours, theirs) in enumerate(zip(results, official_results)):
        report.panoptic(f"image {index} panoptic", ours["panoptic_seg"], theirs["panoptic_seg"])
        semantic = theirs["sem_seg"]
        report.close(f"image {index} sem_seg", ours["sem_seg"],
                     torch.cat([semantic[:NUM_THINGS].sum(0, keepdim=True),
                                semantic[NUM_THINGS:]]), 1e-4)  # fmt: skip
        ours_i, theirs_i = ours["instances"], theirs["instances"]
        order_a, order_b = ours_i.scores.argsort(), theirs_i.scores.argsort()
        report.close(f"image {index} instance scores", ours_i.scores[order_a],
                     theirs_i.scores[order_b], 1e-5)  # fmt: skip
        report.check(f"image {index} instance classes and masks",
                     torch.equal(ours_i.pred_classes[order_a], theirs_i.pred_classes[order_b])
                     and (ours_i.pred_masks[order_a] == theirs_i.pred_masks[order_b].bool())
                     .float().mean().item() >= PIXEL_AGREEMENT,
                     f"{len(ours_i)} instances (official {len(theirs_i)})")  # fmt: skip

    # The merge rules on richer inputs, at the official thresholds and at lower ones.
    merge_cases = [make_merge_case(generator, 12, NUM_THINGS + NUM_STUFF) for _ in range(3)]
    merge_outputs = []
    for object_threshold, overlap_threshold in ((0.8, 0.8), (0.3, 0.5)):
        official_model.object_mask_threshold = model.postprocessor.object_mask_threshold = (
            object_threshold
        )
        official_model.overlap_threshold = model.postprocessor.overlap_threshold = (
            overlap_threshold
        )
        for index, (class_logits, mask_logits, size) in enumerate(merge_cases):
            expected = official_merge(official_model, class_logits, mask_logits, size)
            padded = (mask_logits.shape[-2] * 4, mask_logits.shape[-1] * 4)
            ours = model.postprocessor(class_logits, mask_logits, padded, size, size)
            ours = ours["panoptic_seg"]
            report.panoptic(f"merge case {index} at thresholds {object_threshold}/"
                            f"{overlap_threshold}", ours, expected)  # fmt: skip
            merge_outputs.append(expected)
    official_model.object_mask_threshold = model.postprocessor.object_mask_threshold = 0.8
    official_model.overlap_threshold = model.postprocessor.overlap_threshold = 0.8

    other = make_image(OTHER_PADDING, generator)
    other_record = {"image": other, "height": other.shape[1], "width": other.shape[2]}
    with torch.no_grad():
        official_alone = official_model([other_record])[0]
        mixed = model([records[0], other_record])
    report.panoptic("mixed-size batch, image 0", mixed[0]["panoptic_seg"],
                    official_results[0]["panoptic_seg"])  # fmt: skip
    report.panoptic("mixed-size batch, image 1 (alone officially)", mixed[1]["panoptic_seg"],
                    official_alone["panoptic_seg"])  # fmt: skip

    # Training: the same targets, the same seed before each forward.
    segments = [make_segments(size, generator) for size in SAME_PADDING]
    official_model.train()
    model.train()
    official_calls = record_matches(official_model.criterion)
    our_calls = record_matches(model.criterion)
    torch.manual_seed(args.seed)
    official_losses = official_model(
        [official_training_record(image, *s) for image, s in zip(images, segments)]
    )
    torch.manual_seed(args.seed)
    our_losses = model([our_training_record(image, *s) for image, s in zip(images, segments)])
    report.check("loss terms", sorted(our_losses) == sorted(official_losses),
                 f"{len(our_losses)} (official {len(official_losses)})")  # fmt: skip
    for name in sorted(official_losses):
        report.close(
            name, our_losses[name].detach(), official_losses[name].detach(), LOSS_TOLERANCE
        )
    same_matches = len(our_calls) == len(official_calls) == 10 and all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        for ours, theirs in zip(our_calls, official_calls)
        for a, b in zip(ours, theirs)
    )
    report.check("Hungarian assignments", same_matches,
                 f"{len(our_calls)} predictions x {len(our_calls[0])} images")  # fmt: skip

    if args.write_golden:
        golden = {
            "official_commit": official.commit(),
            "seed": args.seed,
            "config_yaml": cfg.dump(),
            "official_head_state_dict": {k: v for k, v in official_state.items()
                                         if not k.startswith("backbone.")},  # fmt: skip
            "image_sizes": SAME_PADDING,
            "features": {k: v for k, v in features.items()},
            "class_logits": official_classes,
            "mask_logits": official_masks,
            "panoptic": [r["panoptic_seg"] for r in official_results],
            # float16 keeps the fixture small; the test's tolerance allows for it.
            "sem_seg": [r["sem_seg"].half() for r in official_results],
            "instances": [{"scores": r["instances"].scores, "classes": r["instances"].pred_classes,
                           "masks": r["instances"].pred_masks.bool()}
                          for r in official_results],  # fmt: skip
            "merge_cases": merge_cases,
            "merge_thresholds": [(0.8, 0.8), (0.3, 0.5)],
            "merge_outputs": merge_outputs,
            "training_segments": [(m, c, sem.to(torch.uint8)) for m, c, sem in segments],
            "matches": official_calls,
            "losses": {k: v.detach() for k, v in official_losses.items()},
        }
        args.write_golden.parent.mkdir(parents=True, exist_ok=True)
        torch.save(golden, args.write_golden)
        print(f"wrote {args.write_golden} ({args.write_golden.stat().st_size / 1e6:.2f} MB)")
    print("PASS" if report.failures == 0 else f"{report.failures} FAILED")
    return int(report.failures > 0)


if __name__ == "__main__":
    sys.exit(main())
