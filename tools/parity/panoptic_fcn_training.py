#!/usr/bin/env python
"""
Training-stage parity of Panoptic FCN with the official implementation (a local copy of
Jia-Research-Lab/PanopticFCN, formerly dvlab-research), run side by side:

    OMP_NUM_THREADS=1 python tools/parity/panoptic_fcn_training.py --official-src DIR \\
        [--shapes-batches 20] \\
        [--write-golden tests/modeling/panoptic_fcn/golden/panoptic_fcn_training.pt]

On one batch of two images of odd sizes (things on every level, stuff, void, padding), the
project's model (shapes config, random initialization, plain convolutions) runs forward; its
outputs (heatmap logits, kernel features of every level, encoded features) become leaf tensors
fed to both sides:

* targets: the official ``GenerateGT.generate`` against ``PanopticFCNTargetGenerator`` (thing
  heatmaps, assigned things and their classes and stride-4 masks, stuff position targets, the
  stuff classes of each level and their stride-4 masks);
* losses: the official ``PanopticFCN.losses`` (its thing and stuff generators holding the
  project's 1x1 embedding weights) against ``PanopticFCNLoss``: every term, and the gradients of
  their sum with respect to the heatmap logits, kernel features and encoded features.

Then both full models of ``build_model_pair`` (one random initialization through the converter,
deformable position head) run in training mode on the same batch: every loss term, and the
gradients of the heatmap output layers and kernel embeddings. ``--shapes-batches N`` also
compares targets and losses on N batches of the shapes training loader
(:func:`compare_on_shapes_loader`).

Pass: every loss term within 1e-4 relative, targets equal (heatmaps and resampled maps to 1e-6).
Exit status 1 on a failure. ``--write-golden`` stores the batch, the network outputs and the
official targets, losses and logit gradients (with the official commit) for
``tests/modeling/panoptic_fcn/test_panoptic_fcn_training_golden.py``, which checks them without
the official code.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch
from detectron2.structures import BitMasks, Instances
from detectron2.utils.events import EventStorage
from torch import nn

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from panoptic_zoo.config import get_cfg  # noqa: E402
from panoptic_zoo.engine import Trainer  # noqa: E402
from tools.parity.panoptic_fcn_models import (  # noqa: E402
    build_model_pair,
    import_official,
    official_commit,
)

# Loss names: official -> project.
LOSS_NAMES = {
    "loss_pos_th": "loss_pos_things",
    "loss_pos_st": "loss_pos_stuff",
    "loss_seg_th": "loss_seg_things",
    "loss_seg_st": "loss_seg_stuff",
}
LOSS_RTOL = 1e-4
MAP_ATOL = 1e-6
# Padded to 352 x 384 (size divisibility 32): P3-P7 44 x 48 ... 3 x 3, P6 and P7 not exact halves.
IMAGE_SIZES = [(331, 269), (297, 359)]
VOID = 255


def parity_cfg():
    """
    The model whose outputs feed both sides' targets and losses: the shapes config with the
    default (official COCO) scale ranges, whose things span several cells of their levels (the
    shapes ranges give a Gaussian radius of 0), 32-channel kernel features and an 8-channel
    encoder without norm (the official encoder has none) to keep the golden fixture small, on
    CPU, with plain convolutions (the heads' internals do not enter this comparison).
    """
    cfg = get_cfg()
    official_scales = cfg.MODEL.PANOPTIC_FCN.KERNEL_GENERATOR.INSTANCE_SCALES
    cfg.merge_from_file(str(REPO / "configs" / "shapes" / "panoptic_fcn_R_18.yaml"))
    cfg.MODEL.PANOPTIC_FCN.KERNEL_GENERATOR.INSTANCE_SCALES = official_scales
    cfg.MODEL.DEVICE = "cpu"
    fcn = cfg.MODEL.PANOPTIC_FCN
    fcn.POSITION_HEAD.DEFORM = False
    fcn.FEATURE_ENCODER.DEFORM = False
    fcn.FEATURE_ENCODER.NORM = ""
    fcn.FEATURE_ENCODER.CONVS_DIM = 8
    fcn.KERNEL_HEAD.CONVS_DIM = 32
    return cfg


def official_cfg(cfg, official):
    """The official config for the same heads, classes, scales and loss settings."""
    from detectron2.config import get_cfg as detectron2_cfg

    fcn = cfg.MODEL.PANOPTIC_FCN
    out = detectron2_cfg()
    official.add_panopticfcn_config(out)
    out.MODEL.DEVICE = "cpu"
    out.MODEL.IGNORE_VALUE = cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE
    out.MODEL.SEMANTIC_FPN.COMMON_STRIDE = 4
    out.MODEL.POSITION_HEAD.THING.NUM_CLASSES = fcn.NUM_THING_CLASSES
    out.MODEL.POSITION_HEAD.STUFF.NUM_CLASSES = fcn.NUM_STUFF_CLASSES + 1  # + "any thing"
    out.MODEL.POSITION_HEAD.STUFF.WITH_THING = True
    out.MODEL.POSITION_HEAD.THING.POS_NUM = fcn.LOSS.TOP_K_POINTS
    out.MODEL.POSITION_HEAD.THING.MIN_OVERLAP = fcn.TARGETS.GAUSSIAN_MIN_OVERLAP
    out.MODEL.KERNEL_HEAD.INSTANCE_SCALES = [tuple(r) for r in fcn.KERNEL_GENERATOR.INSTANCE_SCALES]
    out.MODEL.KERNEL_HEAD.CONVS_DIM = fcn.KERNEL_HEAD.CONVS_DIM
    out.MODEL.FEATURE_ENCODER.CONVS_DIM = fcn.FEATURE_ENCODER.CONVS_DIM
    out.MODEL.LOSS_WEIGHT.POSITION = fcn.LOSS.POSITION_WEIGHT
    out.MODEL.LOSS_WEIGHT.SEGMENT = fcn.LOSS.SEGMENT_WEIGHT
    out.MODEL.LOSS_WEIGHT.FOCAL_LOSS_ALPHA = fcn.LOSS.FOCAL_ALPHA
    out.MODEL.LOSS_WEIGHT.FOCAL_LOSS_GAMMA = fcn.LOSS.FOCAL_GAMMA
    return out


def make_batch(num_thing_classes: int, num_stuff_classes: int, seed: int = 0) -> list[dict]:
    """
    Two images of odd sizes: stuff bands of every class, a void strip, and things from 7 to
    ~285 px (sqrt box area), so every level of the default scale ranges gets things, most two
    levels; an L-shaped thing (mass center off its box center) under the others. Masks are what
    the panoptic mapper gives: one id map, boxes from the masks.
    """
    g = torch.Generator().manual_seed(seed)
    # (top, left, height, width) as fractions of the image, later ones on top of earlier ones.
    things = [
        [(0.02, 0.02, 0.95, 0.96), (0.1, 0.5, 0.2, 0.25), (0.7, 0.1, 0.12, 0.1),
         (0.72, 0.6, 0.02, 0.03)],
        [(0.3, 0.2, 0.45, 0.4), (0.05, 0.05, 0.08, 0.06), (0.4, 0.3, 0.1, 0.12),
         (0.8, 0.75, 0.15, 0.2)],
    ]  # fmt: skip
    batch = []
    for (h, w), boxes in zip(IMAGE_SIZES, things):
        sem = torch.empty(h, w, dtype=torch.int64)
        bands = torch.linspace(0, w, num_stuff_classes + 1).long()
        for c in range(num_stuff_classes):
            sem[:, bands[c] : bands[c + 1]] = c + 1
        sem[int(0.45 * h) : int(0.45 * h) + 9, :] = VOID
        ids = torch.zeros(h, w, dtype=torch.int64)
        for i, (t, l, bh, bw) in enumerate(boxes, start=1):
            y0, x0 = int(t * h), int(l * w)
            ids[y0 : y0 + max(5, int(bh * h)), x0 : x0 + max(5, int(bw * w))] = i
        # An L: the top-right quarter of the first thing's box goes back to stuff (a view).
        t, l, bh, bw = boxes[0]
        quarter = ids[int(t * h) : int((t + bh / 2) * h), int((l + bw / 2) * w) : int((l + bw) * w)]
        quarter[quarter == 1] = 0
        masks = torch.stack([ids == i for i in range(1, len(boxes) + 1)])
        keep = masks.flatten(1).any(dim=1)
        sem[ids > 0] = 0
        instances = Instances((h, w))
        bit_masks = BitMasks(masks[keep])
        instances.gt_masks = bit_masks
        instances.gt_boxes = bit_masks.get_bounding_boxes()
        instances.gt_classes = torch.randint(num_thing_classes, (int(keep.sum()),), generator=g)
        image = torch.randint(256, (3, h, w), generator=g, dtype=torch.uint8)
        batch.append(
            {"image": image, "instances": instances, "sem_seg": sem, "height": h, "width": w}
        )
    return batch


class NetworkOutputs:
    """The project model's outputs on a batch as leaf tensors (so both sides get gradients)."""

    def __init__(self, model, batch):
        generator = model.kernel_generator
        raw: list[torch.Tensor] = []
        hook = generator.kernel_output.register_forward_hook(lambda m, i, o: raw.append(o))
        with torch.no_grad():
            self.images = model._images(batch)
            thing_logits, stuff_logits, _, _, encoded = model._network(self.images.tensor)
        hook.remove()
        leaf = lambda x: x.detach().clone().requires_grad_()  # noqa: E731
        self.thing_logits = [leaf(x) for x in thing_logits]
        self.stuff_logits = [leaf(x) for x in stuff_logits]
        self.kernel_features = [leaf(x) for x in raw]
        self.encoded = leaf(encoded)

    def leaves(self) -> list[torch.Tensor]:
        return [*self.thing_logits, *self.stuff_logits, *self.kernel_features, self.encoded]

    def zero_grad(self):
        for x in self.leaves():
            x.grad = None


def project_side(model, batch, outputs: NetworkOutputs):
    generator = model.kernel_generator
    padded = tuple(outputs.images.tensor.shape[-2:])
    targets = [model._targets(x, padded, outputs.thing_logits, outputs.encoded) for x in batch]
    thing_kernels = [generator.thing_embed(x) for x in outputs.kernel_features]
    losses = model.criterion(
        outputs.thing_logits, outputs.stuff_logits, thing_kernels, outputs.kernel_features,
        generator.embed_stuff, outputs.encoded, targets,
    )  # fmt: skip
    return targets, losses, thing_kernels


def official_side(official, ocfg, model, batch, outputs: NetworkOutputs):
    """The official GenerateGT and PanopticFCN.losses on the same outputs; only the modules the
    losses use are built (the thing/stuff generators, with the project's embeddings)."""
    criterion = official.panoptic_seg.PanopticFCN.__new__(official.panoptic_seg.PanopticFCN)
    nn.Module.__init__(criterion)
    criterion.pos_weight = ocfg.MODEL.LOSS_WEIGHT.POSITION
    criterion.seg_weight = ocfg.MODEL.LOSS_WEIGHT.SEGMENT
    criterion.focal_loss_alpha = ocfg.MODEL.LOSS_WEIGHT.FOCAL_LOSS_ALPHA
    criterion.focal_loss_gamma = ocfg.MODEL.LOSS_WEIGHT.FOCAL_LOSS_GAMMA
    criterion.weighted_num = ocfg.MODEL.POSITION_HEAD.THING.POS_NUM
    criterion.thing_generator = official.head.ThingGenerator(ocfg)
    criterion.stuff_generator = official.head.StuffGenerator(ocfg)
    generator = model.kernel_generator
    for theirs, ours in [
        (criterion.thing_generator.embed_extractor, generator.thing_embed),
        (criterion.stuff_generator.embed_extractor, generator.stuff_embed),
    ]:
        theirs.load_state_dict(ours.state_dict())
    criterion.train()
    # GenerateGT edits sem_seg in place: give it copies.
    copies = [{"instances": x["instances"], "sem_seg": x["sem_seg"].clone()} for x in batch]
    gt = official.gt_generate.GenerateGT(ocfg).generate(
        copies, outputs.images, outputs.kernel_features, outputs.encoded
    )
    losses = criterion.losses(
        outputs.thing_logits, outputs.stuff_logits, outputs.kernel_features, outputs.encoded, gt
    )
    return gt, {LOSS_NAMES[k]: v for k, v in losses.items()}


def match_rows(rows: torch.Tensor, table: torch.Tensor) -> list[int]:
    """Index in ``table`` of each of ``rows`` (exact copies), -1 where none is."""
    found = []
    for row in rows:
        equal = (table == row).flatten(1).all(dim=1).nonzero()[:, 0]
        found.append(int(equal[0]) if len(equal) else -1)
    return found


def official_targets(gt, ocfg, official, batch, encoder_size) -> list[dict]:
    """
    Per image, the official targets in the project's layout, all read from the official code's
    output: the stride-4 thing masks (its ``decode_bitwise_mask``, padded as its slots are),
    the stride-4 stuff map of every class some level assigns (its slots), and per level the
    heatmaps, stuff position targets, the assigned things (as rows of those masks) with their
    classes, and the assigned stuff classes (the channels with a positive cell, in the order
    of its slots) with their regions.
    """
    stride = ocfg.MODEL.SEMANTIC_FPN.COMMON_STRIDE
    num_stuff = ocfg.MODEL.POSITION_HEAD.STUFF.NUM_CLASSES
    per_image = []
    for b, record in enumerate(batch):
        resized, _, _ = official.gt_generate.GenerateGT.decode_bitwise_mask(
            stride, record["instances"].gt_masks, torch.device("cpu")
        )
        thing_masks = torch.zeros(len(resized), *encoder_size)
        thing_masks[:, : resized.shape[1], : resized.shape[2]] = resized
        stuff_masks = torch.zeros(num_stuff, *encoder_size)
        assigned = torch.zeros(num_stuff, dtype=torch.bool)
        levels = []
        for level in range(len(gt["center"])):
            n = int(gt["index_mask"][level][b].sum())
            m = int(gt["sem_index"][level][b].sum())
            things = match_rows(gt["inst"][level][b][:n], thing_masks)
            classes = (gt["sem_scores"][level][b].flatten(1).sum(dim=1) > 0).nonzero()[:, 0]
            if -1 in things or len(classes) != m:
                raise AssertionError(f"image {b} level {level}: official slots not understood")
            rows = gt["sem_labels"][level][b][:m]
            if not torch.equal(stuff_masks[classes][assigned[classes]], rows[assigned[classes]]):
                raise AssertionError(
                    f"image {b} level {level}: official stuff slots differ by level"
                )
            stuff_masks[classes], assigned[classes] = rows, True
            levels.append({
                "heatmap": gt["center"][level][b],
                "stuff_map": gt["sem_scores"][level][b],
                "instance": torch.tensor(things, dtype=torch.int64),
                "classes": gt["class"][level][b][:n].long(),
                "stuff_classes": classes,
                "stuff_regions": gt["sem_masks"][level][b][:m],
            })  # fmt: skip
        per_image.append({
            "thing_masks": thing_masks, "stuff_masks": stuff_masks, "stuff_assigned": assigned,
            "levels": levels,
        })  # fmt: skip
    return per_image


def compare_targets(ours, theirs) -> list[str]:
    """Differences between the project's targets and the official ones (empty: equal)."""
    problems = []

    def check(name, a, b, exact=False):
        if a.shape != b.shape:
            problems.append(f"{name}: shape {tuple(a.shape)} vs official {tuple(b.shape)}")
            return
        diff = (a.float() - b.float()).abs().max().item() if a.numel() else 0.0
        if diff > (0 if exact else MAP_ATOL):
            problems.append(f"{name}: max difference {diff:.3g}")

    for b, (t, o) in enumerate(zip(ours, theirs)):
        check(f"image {b} thing masks", t.thing_masks, o["thing_masks"])
        assigned = o["stuff_assigned"]
        check(f"image {b} stuff masks", t.stuff_masks[assigned], o["stuff_masks"][assigned])
        for level, ol in enumerate(o["levels"]):
            a = t.assignments[level]
            where = f"image {b} level {level}"
            check(f"{where} heatmap", t.thing_heatmaps[level], ol["heatmap"])
            check(f"{where} stuff map", t.stuff_maps[level], ol["stuff_map"])
            check(f"{where} things", a.instance, ol["instance"], exact=True)
            check(f"{where} thing classes", a.classes, ol["classes"], exact=True)
            check(f"{where} stuff classes", t.stuff_classes[level], ol["stuff_classes"], exact=True)
            regions = (t.stuff_maps[level][t.stuff_classes[level]] > 0).float()
            check(f"{where} stuff regions", regions, ol["stuff_regions"], exact=True)
    return problems


def thing_id_map(masks: torch.Tensor) -> torch.Tensor:
    index = torch.arange(1, len(masks) + 1, dtype=torch.uint8)[:, None, None]
    return (masks.to(torch.uint8) * index).sum(dim=0, dtype=torch.uint8)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-12)).item()


def loss_differences(ours: dict, theirs: dict) -> dict[str, float]:
    """Relative difference of each loss term (infinite for a term one side lacks)."""
    return {
        name: (
            abs(ours[name].item() - theirs[name].item()) / max(abs(theirs[name].item()), 1e-12)
            if name in ours and name in theirs
            else float("inf")
        )
        for name in set(ours) | set(theirs)
    }


def compare_losses(ours: dict, theirs: dict, indent: str = "") -> bool:
    """Print each loss term of both sides; True when all are within ``LOSS_RTOL``."""
    differences = loss_differences(ours, theirs)
    for name, rel in sorted(differences.items()):
        print(f"{indent}{name:16s} ours {ours[name].item():.7f}  official "
              f"{theirs[name].item():.7f}  relative {rel:.2e}  "
              f"{'ok' if rel <= LOSS_RTOL else 'FAIL'}")  # fmt: skip
    return max(differences.values()) <= LOSS_RTOL


def compare_on_shapes_loader(official, num_batches: int, seed: int) -> bool:
    """
    ``num_batches`` batches of 2 from the project's shapes training loader (its augmentation,
    crowd regions, things cut by the border): targets and loss terms of both sides on the same
    outputs. These images pad to 96-256 px, where P7 has fewer cells than k and the official
    top-k fails, so this runs the shapes scale ranges on P3-P6 (P6 taking P7's things) with
    k = 4.
    """
    torch.manual_seed(seed)
    cfg = parity_cfg()
    cfg.merge_from_file(str(REPO / "configs" / "shapes" / "panoptic_fcn_R_18.yaml"))
    fcn = cfg.MODEL.PANOPTIC_FCN
    fcn.POSITION_HEAD.DEFORM = False
    scales = fcn.KERNEL_GENERATOR.INSTANCE_SCALES
    fcn.KERNEL_GENERATOR.IN_FEATURES = ["p3", "p4", "p5", "p6"]
    fcn.KERNEL_GENERATOR.INSTANCE_SCALES = [*scales[:3], [scales[3][0], scales[4][1]]]
    fcn.INFERENCE.HEATMAP_POOL_SIZES = fcn.INFERENCE.HEATMAP_POOL_SIZES[:4]
    fcn.LOSS.TOP_K_POINTS = 4
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.DATALOADER.NUM_WORKERS = 0
    model = Trainer.build_model(cfg).train()
    ocfg = official_cfg(cfg, official)
    worst, differing, things = 0.0, 0, 0
    for batch in itertools.islice(Trainer.build_train_loader(cfg), num_batches):
        outputs = NetworkOutputs(model, batch)
        with EventStorage():
            targets, ours, _ = project_side(model, batch, outputs)
        gt, theirs = official_side(official, ocfg, model, batch, outputs)
        encoder_size = tuple(outputs.encoded.shape[-2:])
        differing += bool(
            compare_targets(targets, official_targets(gt, ocfg, official, batch, encoder_size))
        )
        worst = max(worst, *loss_differences(ours, theirs).values())
        things += sum(len(x["instances"]) for x in batch)
    print(
        f"shapes training loader, {num_batches} batches of 2 ({things} things): batches with "
        f"different targets {differing}, largest loss-term difference {worst:.2e} relative"
    )
    return differing == 0 and worst <= LOSS_RTOL


def compare_full_models(official_src: Path, seed: int) -> bool:
    """
    Both full models (``build_model_pair``: one random initialization through the converter,
    deformable position head) in training mode on the same batch: each loss term, and the
    gradients of their sum on the output layers of the heatmaps and the kernel embeddings
    (the thing-score layer also receives the segment loss).
    """
    official_model, our_model, cfg = build_model_pair(official_src, seed)
    official_model.train()
    our_model.train()
    fcn = cfg.MODEL.PANOPTIC_FCN
    batch = make_batch(fcn.NUM_THING_CLASSES, fcn.NUM_STUFF_CLASSES, seed)
    with EventStorage():
        ours = our_model(batch)
    # The official GenerateGT edits sem_seg in place: give it copies.
    theirs = official_model([{**x, "sem_seg": x["sem_seg"].clone()} for x in batch])
    theirs = {LOSS_NAMES[k]: v for k, v in theirs.items()}
    sum(ours.values()).backward()
    sum(theirs.values()).backward()
    print("full models (build_model_pair, deformable position head), training mode:")
    ok = compare_losses(ours, theirs, indent="  ")
    generator = our_model.kernel_generator
    layers = {
        "thing scores": (official_model.position_head.out_inst, generator.thing_scores),
        "stuff scores": (official_model.position_head.out_sem, generator.stuff_scores),
        "thing embedding": (official_model.thing_generator.embed_extractor, generator.thing_embed),
        "stuff embedding": (official_model.stuff_generator.embed_extractor, generator.stuff_embed),
    }
    for name, (theirs_layer, our_layer) in layers.items():
        rel = relative(our_layer.weight.grad.flatten(), theirs_layer.weight.grad.flatten())
        ok &= rel <= LOSS_RTOL
        print(f"  gradient of the {name} weights: relative max difference {rel:.2e}")
    return ok


def run(
    official_src: Path, golden: Path | None = None, seed: int = 0, loader_batches: int = 0
) -> bool:
    official = import_official(official_src)
    torch.manual_seed(seed)
    cfg = parity_cfg()
    model = Trainer.build_model(cfg).train()
    fcn = cfg.MODEL.PANOPTIC_FCN
    batch = make_batch(fcn.NUM_THING_CLASSES, fcn.NUM_STUFF_CLASSES, seed)
    sem_before = [x["sem_seg"].clone() for x in batch]
    outputs = NetworkOutputs(model, batch)
    ocfg = official_cfg(cfg, official)

    with EventStorage():
        targets, ours, thing_kernels = project_side(model, batch, outputs)
    sum(ours.values()).backward()
    our_grads = [x.grad.clone() for x in outputs.leaves()]
    outputs.zero_grad()
    gt, theirs = official_side(official, ocfg, model, batch, outputs)
    sum(theirs.values()).backward()
    their_grads = [x.grad.clone() for x in outputs.leaves()]

    ok = all(torch.equal(a, x["sem_seg"]) for a, x in zip(sem_before, batch))
    print("the batch's sem_seg after the project's targets:", "unchanged" if ok else "EDITED")
    encoder_size = tuple(outputs.encoded.shape[-2:])
    reference = official_targets(gt, ocfg, official, batch, encoder_size)
    problems = compare_targets(targets, reference)
    counts = [[len(a.instance) for a in t.assignments] for t in targets]
    stuff_counts = [[len(c) for c in t.stuff_classes] for t in targets]
    print(f"things per level (image 0, image 1): {counts}; stuff classes per level: {stuff_counts}")
    print("targets:", "equal" if not problems else "DIFFERENT")
    for p in problems:
        print("  ", p)
    ok &= not problems
    ok &= compare_losses(ours, theirs)
    names = (
        [f"thing logits P{3 + i}" for i in range(len(outputs.thing_logits))]
        + [f"stuff logits P{3 + i}" for i in range(len(outputs.stuff_logits))]
        + [f"kernel features P{3 + i}" for i in range(len(outputs.kernel_features))]
        + ["encoded features"]
    )
    worst = max(relative(a, b) for a, b in zip(our_grads, their_grads))
    for name, a, b in zip(names, our_grads, their_grads):
        print(f"gradient {name:22s} relative max difference {relative(a, b):.2e}")
    ok &= worst <= LOSS_RTOL
    ok &= compare_full_models(official_src, seed)
    if loader_batches:
        ok &= compare_on_shapes_loader(official, loader_batches, seed)
    print("PASS" if ok else "FAIL")

    if golden is not None:
        golden.parent.mkdir(parents=True, exist_ok=True)
        num_levels = len(outputs.thing_logits)
        torch.save(
            {
                "official_commit": official_commit(official_src),
                "config": {
                    "num_thing_classes": fcn.NUM_THING_CLASSES,
                    "num_stuff_classes": fcn.NUM_STUFF_CLASSES,
                    "level_strides": model.target_generator.level_strides,
                    "instance_scales": [tuple(r) for r in fcn.KERNEL_GENERATOR.INSTANCE_SCALES],
                    "min_overlap": fcn.TARGETS.GAUSSIAN_MIN_OVERLAP,
                    "top_k_points": fcn.LOSS.TOP_K_POINTS,
                    "focal_alpha": fcn.LOSS.FOCAL_ALPHA,
                    "focal_gamma": fcn.LOSS.FOCAL_GAMMA,
                    "position_weight": fcn.LOSS.POSITION_WEIGHT,
                    "segment_weight": fcn.LOSS.SEGMENT_WEIGHT,
                    "ignore_value": VOID,
                },
                "batch": [
                    {
                        # Thing i + 1 where thing i is (the masks do not overlap), 0 elsewhere.
                        "thing_ids": thing_id_map(x["instances"].gt_masks.tensor),
                        "boxes": x["instances"].gt_boxes.tensor,
                        "classes": x["instances"].gt_classes,
                        "sem_seg": x["sem_seg"].to(torch.uint8),
                    }
                    for x in batch
                ],
                "padded_size": tuple(outputs.images.tensor.shape[-2:]),
                "outputs": {
                    "thing_logits": [x.detach() for x in outputs.thing_logits],
                    "stuff_logits": [x.detach() for x in outputs.stuff_logits],
                    "thing_kernels": [x.detach() for x in thing_kernels],
                    "kernel_features": [x.detach() for x in outputs.kernel_features],
                    "stuff_embed": model.kernel_generator.stuff_embed.state_dict(),
                    "encoded": outputs.encoded.detach(),
                },
                "official": {
                    "targets": reference,
                    "losses": {k: v.item() for k, v in theirs.items()},
                    "thing_logit_grads": their_grads[:num_levels],
                    "stuff_logit_grads": their_grads[num_levels : 2 * num_levels],
                },
            },
            golden,
        )
        print(f"wrote {golden} ({golden.stat().st_size / 1e6:.1f} MB)")
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official-src", type=Path, required=True,
                        help="local copy of the official PanopticFCN repository")  # fmt: skip
    parser.add_argument("--write-golden", type=Path, help="write the golden fixture here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--shapes-batches", type=int, default=0,
        help="also compare on this many batches of the shapes training loader",
    )  # fmt: skip
    args = parser.parse_args(argv)
    ok = run(args.official_src, args.write_golden, args.seed, args.shapes_batches)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
