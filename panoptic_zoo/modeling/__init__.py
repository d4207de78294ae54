"""
Meta-architectures, one subpackage per method. Panoptic FPN is detectron2's own registered
``PanopticFPN`` (configured entirely by YAML), so it needs no code here.
"""

from . import upsnet  # noqa: F401  (registers UPSNet and UPSNetDatasetMapper)
from . import panoptic_deeplab  # noqa: F401  (registers PanopticDeepLabModel, heads, mapper)
from . import panoptic_fcn  # noqa: F401  (registers PanopticFCN and its P2-P7 backbone)
from . import mask2former  # noqa: F401  (registers Mask2Former)
from . import backbones  # noqa: F401  (registers the MobileNetV2 / EfficientNet-Lite0 backbones)
