"""
Meta-architectures, one subpackage per method. Panoptic FPN is detectron2's own registered
``PanopticFPN`` (configured entirely by YAML), so it needs no code here.
"""
