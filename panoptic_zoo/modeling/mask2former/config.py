"""``MODEL.MASK2FORMER`` options: training input, pixel decoder, masked-attention decoder, matching,
losses, inference."""

from __future__ import annotations

from detectron2.config import CfgNode as CN

from ...utils.config import add_missing_options

__all__ = ["add_mask2former_config"]


def _mask2former_defaults() -> CN:
    """Defaults of the paper's COCO panoptic R50 setting (official maskformer2_R50_bs16_50ep)."""
    m2f = CN()
    # Classes predicted by the queries: things 0..T-1, then stuff T..T+S-1 (stuff class s of the
    # separated ids is T + s - 1), plus the "no object" class T+S.
    m2f.NUM_THING_CLASSES = 80
    m2f.NUM_STUFF_CLASSES = 53
    # Images are padded to a multiple of this (the official SIZE_DIVISIBILITY; ResNets say 0).
    m2f.SIZE_DIVISIBILITY = 32

    # Large-scale jitter of Mask2FormerLSJDatasetMapper (the official COCO training input).
    m2f.LSJ = CN()
    m2f.LSJ.IMAGE_SIZE = 1024
    m2f.LSJ.MIN_SCALE = 0.1
    m2f.LSJ.MAX_SCALE = 2.0

    m2f.PIXEL_DECODER = CN()
    # Backbone features read by the pixel decoder; the finer ones below the encoder's are the
    # FPN-style laterals down to stride 4 (res2).
    m2f.PIXEL_DECODER.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    m2f.PIXEL_DECODER.ENCODER_IN_FEATURES = ["res3", "res4", "res5"]
    m2f.PIXEL_DECODER.CONVS_DIM = 256
    m2f.PIXEL_DECODER.MASK_DIM = 256
    m2f.PIXEL_DECODER.NORM = "GN"
    m2f.PIXEL_DECODER.ENCODER_LAYERS = 6
    m2f.PIXEL_DECODER.ENCODER_HEADS = 8
    m2f.PIXEL_DECODER.ENCODER_POINTS = 4
    m2f.PIXEL_DECODER.ENCODER_FFN_DIM = 1024
    m2f.PIXEL_DECODER.ENCODER_DROPOUT = 0.0

    m2f.DECODER = CN()
    m2f.DECODER.NUM_QUERIES = 100
    # Masked-attention layers (cross-attention -> self-attention -> FFN), round-robin over the
    # three coarsest pixel-decoder scales; predictions come from the learnable queries too, so
    # there are LAYERS + 1 of them (the official DEC_LAYERS is LAYERS + 1).
    m2f.DECODER.LAYERS = 9
    m2f.DECODER.HIDDEN_DIM = 256
    m2f.DECODER.HEADS = 8
    m2f.DECODER.FFN_DIM = 2048
    m2f.DECODER.PRE_NORM = False
    # A 1x1 projection of the pixel-decoder scales even when their channels equal HIDDEN_DIM.
    m2f.DECODER.ENFORCE_INPUT_PROJECTION = False

    m2f.LOSS = CN()
    m2f.LOSS.CLASS_WEIGHT = 2.0
    m2f.LOSS.MASK_WEIGHT = 5.0  # sigmoid binary cross-entropy on the sampled points
    m2f.LOSS.DICE_WEIGHT = 5.0
    m2f.LOSS.NO_OBJECT_WEIGHT = 0.1  # class weight of "no object" in the cross-entropy
    # Every decoder prediction (the queries' own and each layer's) is matched and supervised.
    m2f.LOSS.DEEP_SUPERVISION = True
    # Mask costs and losses on sampled points, not full masks: uniform points for matching,
    # PointRend importance sampling (3x oversampled, 75% most uncertain) for the losses.
    m2f.LOSS.TRAIN_NUM_POINTS = 112 * 112
    m2f.LOSS.OVERSAMPLE_RATIO = 3.0
    m2f.LOSS.IMPORTANCE_SAMPLE_RATIO = 0.75

    m2f.INFERENCE = CN()
    # Queries whose best class (not "no object") scores at most this are dropped.
    m2f.INFERENCE.OBJECT_MASK_THRESHOLD = 0.8
    # A query's segment (its pixels of the argmax over score x mask probability, where its own
    # probability is >= 0.5) is dropped when smaller than this share of its mask (prob >= 0.5).
    m2f.INFERENCE.OVERLAP_THRESHOLD = 0.8
    return m2f


def add_mask2former_config(cfg: CN) -> None:
    """Add the missing ``MODEL.MASK2FORMER`` keys; existing values (and all other keys) stay."""
    add_missing_options(cfg.MODEL, {"MASK2FORMER": _mask2former_defaults()})
