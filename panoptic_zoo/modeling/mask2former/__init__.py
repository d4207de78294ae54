"""
Mask2Former (Cheng et al., "Masked-attention Mask Transformer for Universal Image
Segmentation", CVPR 2022): learnable queries, each predicting a class and a mask, refined by a
masked-attention transformer decoder over a deformable-attention pixel decoder.

Importing registers ``Mask2Former`` (META_ARCH_REGISTRY) and ``Mask2FormerLSJDatasetMapper``
(DATASET_MAPPER_REGISTRY). See docs/methods/mask2former.md.
"""

from ..methods import PanopticMethod, register_method
from .config import add_mask2former_config
from .deformable_attention import MultiScaleDeformableAttention, multi_scale_deformable_attention
from .losses import Mask2FormerLoss
from .mapper import Mask2FormerLSJDatasetMapper, large_scale_jitter
from .matcher import HungarianMatcher
from .meta_arch import Mask2Former, Mask2FormerHead
from .pixel_decoder import MSDeformAttnPixelDecoder, sine_position_embedding
from .postprocess import Mask2FormerPostprocessor, panoptic_merge
from .transformer_decoder import MaskedAttentionDecoder

__all__ = [
    "HungarianMatcher",
    "MSDeformAttnPixelDecoder",
    "Mask2Former",
    "Mask2FormerHead",
    "Mask2FormerLSJDatasetMapper",
    "Mask2FormerLoss",
    "Mask2FormerPostprocessor",
    "MaskedAttentionDecoder",
    "MultiScaleDeformableAttention",
    "add_mask2former_config",
    "large_scale_jitter",
    "multi_scale_deformable_attention",
    "panoptic_merge",
    "sine_position_embedding",
]

register_method(
    PanopticMethod(
        name="Mask2Former",
        meta_architecture="Mask2Former",
        shapes_config="shapes/mask2former_R_18.yaml",
        coco_config="coco/mask2former_R_50.yaml",
    )
)
