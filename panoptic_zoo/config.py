"""
``get_cfg()``: detectron2's defaults plus every option panoptic_zoo adds. Importing this module
registers panoptic_zoo's datasets, dataset mappers and models, so that any config it makes can
be built.

Each ``add_*_config`` only adds keys of its own that are missing, so it is safe to call twice and
never changes a default another method relies on; solver and input choices live in YAML.
"""

from detectron2.config import CfgNode
from detectron2.config import get_cfg as get_detectron2_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

from . import modeling  # noqa: F401  (registers the models)
from .acceleration.config import add_acceleration_config
from .data import checked_dataset_mapper, datasets, mappers  # noqa: F401  (registers datasets and mappers)
from .modeling.backbones.build import add_mobile_backbone_config
from .modeling.mask2former.config import add_mask2former_config
from .modeling.panoptic_deeplab.config import add_panoptic_deeplab_config
from .modeling.panoptic_fcn.config import add_panoptic_fcn_config
from .modeling.upsnet.config import add_upsnet_config
from .utils.config import add_missing_options

__all__ = [
    "CLASS_COUNT_KEYS",
    "PanopticZooConfig",
    "add_panoptic_zoo_config",
    "check_class_counts",
    "dataset_class_counts",
    "get_cfg",
]

# The dataset's class counts: the one place a config states them (in the dataset's Base YAML, or
# left at -1 and read from the dataset's metadata by check_class_counts).
DATASET_COUNT_KEYS = ("DATASETS.NUM_THING_CLASSES", "DATASETS.NUM_STUFF_CLASSES")

# Every model key holding a class count, as a function of the dataset's (things, stuff); stuff
# excludes the merged "things" class 0 of the separated ids.
CLASS_COUNT_KEYS = {
    "MODEL.ROI_HEADS.NUM_CLASSES": lambda things, stuff: things,
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES": lambda things, stuff: stuff + 1,
    "MODEL.UPSNET.NUM_STUFF_CLASSES": lambda things, stuff: stuff,
    "MODEL.PANOPTIC_DEEPLAB.NUM_THING_CLASSES": lambda things, stuff: things,
    "MODEL.PANOPTIC_DEEPLAB.NUM_STUFF_CLASSES": lambda things, stuff: stuff,
    "MODEL.PANOPTIC_FCN.NUM_THING_CLASSES": lambda things, stuff: things,
    "MODEL.PANOPTIC_FCN.NUM_STUFF_CLASSES": lambda things, stuff: stuff,
    "MODEL.MASK2FORMER.NUM_THING_CLASSES": lambda things, stuff: things,
    "MODEL.MASK2FORMER.NUM_STUFF_CLASSES": lambda things, stuff: stuff,
}

# The keys each meta-architecture's model is built from.
_ARCHITECTURE_COUNT_KEYS = {
    "PanopticFPN": ("MODEL.ROI_HEADS.NUM_CLASSES", "MODEL.SEM_SEG_HEAD.NUM_CLASSES"),
    "UPSNet": ("MODEL.ROI_HEADS.NUM_CLASSES", "MODEL.UPSNET.NUM_STUFF_CLASSES"),
    "PanopticDeepLabModel": (
        "MODEL.PANOPTIC_DEEPLAB.NUM_THING_CLASSES",
        "MODEL.PANOPTIC_DEEPLAB.NUM_STUFF_CLASSES",
    ),
    "PanopticFCN": ("MODEL.PANOPTIC_FCN.NUM_THING_CLASSES", "MODEL.PANOPTIC_FCN.NUM_STUFF_CLASSES"),
    "Mask2Former": ("MODEL.MASK2FORMER.NUM_THING_CLASSES", "MODEL.MASK2FORMER.NUM_STUFF_CLASSES"),
}


def _get(cfg: CfgNode, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _set(cfg: CfgNode, key: str, value) -> None:
    *parents, last = key.split(".")
    node = cfg
    for part in parents:
        node = node[part]
    node[last] = value


def _flat_keys(node: CfgNode, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in node.items():
        if isinstance(value, dict):
            keys |= _flat_keys(value, f"{prefix}{key}.")
        else:
            keys.add(f"{prefix}{key}")
    return keys


# Keys an older panoptic_zoo wrote (e.g. in a run's config.yaml) -> where they live now.
RENAMED_KEYS = {
    **{
        f"TEST.{option}": f"ACCELERATION.CPU.{option}"
        for option in ("FOLD_BATCH_NORMS", "CHANNELS_LAST_BACKBONE")
    },
    # The depthwise C kernel's options, now the ONNX Runtime path that replaced it.
    "TEST.DEPTHWISE_KERNEL": "ACCELERATION.CPU.DEPTHWISE_ONNXRUNTIME",
    "ACCELERATION.CPU.DEPTHWISE_KERNEL": "ACCELERATION.CPU.DEPTHWISE_ONNXRUNTIME",
}


def _with_current_keys(cfg_other: CfgNode) -> CfgNode:
    """``cfg_other`` with the keys of :data:`RENAMED_KEYS` moved to their current place; where
    it also holds the current key (a version that wrote both), that one's value stays."""
    old_keys = _flat_keys(cfg_other) & set(RENAMED_KEYS)
    if not old_keys:
        return cfg_other
    cfg_other = cfg_other.clone()
    for old in old_keys:
        *parents, last = old.split(".")
        value = _get(cfg_other, ".".join(parents)).pop(last)
        node = cfg_other
        for part in RENAMED_KEYS[old].split(".")[:-1]:
            node = node.setdefault(part, CfgNode())
        node.setdefault(RENAMED_KEYS[old].split(".")[-1], value)
    return cfg_other


class PanopticZooConfig(CfgNode):
    """
    detectron2's CfgNode where merging the dataset's class counts (``DATASETS.NUM_THING_CLASSES``
    and ``NUM_STUFF_CLASSES``, from a Base YAML or the command line) sets every model key that
    holds one (:data:`CLASS_COUNT_KEYS`), so that a method YAML names none and the same method
    YAML works on any dataset. A model key merged explicitly (by a file or a list, e.g. a
    test's model with 3 classes) is never overwritten: if the dataset's counts make it another
    value, that merge is an error naming both keys; a model key merged while the dataset's
    counts are unset is compared with the dataset at set-up by :func:`check_class_counts`.
    """

    # Not a config key: the model count keys merged explicitly so far (kept by clone()).
    _EXPLICIT = "_explicit_class_count_keys"

    def merge_from_other_cfg(self, cfg_other):
        cfg_other = _with_current_keys(cfg_other)
        given = _flat_keys(cfg_other)
        super().merge_from_other_cfg(cfg_other)
        self._derive_class_counts(given)

    def merge_from_list(self, cfg_list):
        cfg_list = [
            RENAMED_KEYS.get(item, item) if i % 2 == 0 else item for i, item in enumerate(cfg_list)
        ]
        given = set(cfg_list[0::2])
        super().merge_from_list(cfg_list)
        self._derive_class_counts(given)

    def _derive_class_counts(self, given: set[str]) -> None:
        explicit = self.__dict__.setdefault(self._EXPLICIT, set())
        explicit |= given & set(CLASS_COUNT_KEYS)
        if "DATASETS" not in self or not given & set(DATASET_COUNT_KEYS):
            return
        things, stuff = (_get(self, key) for key in DATASET_COUNT_KEYS)
        if things < 0 or stuff < 0:
            return
        for key, count_of in CLASS_COUNT_KEYS.items():
            count = count_of(things, stuff)
            if key in explicit and _get(self, key) != count:
                raise ValueError(
                    f"{key} is {_get(self, key)}, but DATASETS.NUM_THING_CLASSES {things} and "
                    f"DATASETS.NUM_STUFF_CLASSES {stuff} make it {count}: remove {key} from "
                    "the config, the dataset's counts set it"
                )
            _set(self, key, count)


def add_panoptic_zoo_config(cfg: CfgNode) -> None:
    """Options shared by all methods."""
    if "DATASET_MAPPER_NAME" not in cfg.INPUT:
        # Name in panoptic_zoo.data.DATASET_MAPPER_REGISTRY of the mapper used for training and
        # evaluation; by default detectron2's DatasetMapper with checked inputs.
        cfg.INPUT.DATASET_MAPPER_NAME = "CheckedDatasetMapper"
    # Read by panoptic_zoo.solver: the optimizer (SGD, ADAM, ADAMW) and, for
    # SOLVER.LR_SCHEDULER_NAME "WarmupPolyLR", the poly power and final lr. Defaults keep
    # detectron2's SGD; methods that train otherwise say so in their YAML files.
    add_missing_options(
        cfg.SOLVER, {"OPTIMIZER": "SGD", "POLY_LR_POWER": 0.9, "POLY_LR_CONSTANT_ENDING": 0.0}
    )
    # Read by panoptic_zoo.solver: the backbone's learning-rate factor and the weight decay of
    # nn.Embedding weights (only Mask2Former has them: its queries), as Mask2Former's trainer;
    # SOLVER.CLIP_GRADIENTS.CLIP_TYPE may also be "full_model" (one norm over all gradients).
    add_missing_options(cfg.SOLVER, {"BACKBONE_MULTIPLIER": 1.0, "WEIGHT_DECAY_EMBED": 0.0})
    # Read by panoptic_zoo.evaluation.build_evaluators: "panoptic_zoo" (PanopticEvaluator: PQ,
    # panoptic AP and mIoU in one pass, no PNG files) or "panopticapi" (detectron2's
    # COCOPanopticEvaluator, PQ only), the cross-check.
    add_missing_options(cfg.TEST, {"PANOPTIC_EVALUATOR": "panoptic_zoo"})
    # Read by PanopticEvaluator: the segment areas (pixels) where medium and large segments
    # begin for PQ by size; [] = COCO's 32**2 and 96**2 scaled by the dataset's mean image area
    # over COCO's 640x480.
    add_missing_options(cfg.TEST, {"PQ_AREA_BOUNDS": []})
    # Read by panoptic_zoo.checkpoint: load weights that need full unpickling (detectron2's
    # .pkl/.pyth model-zoo formats, .pth files holding arbitrary objects). Unpickling can run code
    # from the file, so it is an explicit opt-in, for files you trust.
    add_missing_options(cfg.MODEL, {"ALLOW_PICKLED_WEIGHTS": False})
    # The dataset's class counts (see DATASET_COUNT_KEYS); -1: read from the dataset's metadata
    # at set-up. DATASETS.REGISTER: COCO-panoptic-format datasets to register by name, each a
    # node of IMAGE_ROOT, PANOPTIC_JSON, PANOPTIC_ROOT and optionally INSTANCES_JSON and
    # SEM_SEG_ROOT (panoptic_zoo.data.datasets.register_from_config).
    add_missing_options(cfg.DATASETS, {"NUM_THING_CLASSES": -1, "NUM_STUFF_CLASSES": -1})
    if "REGISTER" not in cfg.DATASETS:
        cfg.DATASETS.REGISTER = CfgNode(new_allowed=True)
    # Read by the training set-up: skip images that `python -m panoptic_zoo.data.check` finds
    # unreadable or inconsistent (their count is logged) instead of stopping before training.
    add_missing_options(cfg.DATALOADER, {"SKIP_BAD_IMAGES": False})


def get_cfg() -> CfgNode:
    """A fresh config with detectron2's defaults and the options of every method."""
    cfg = get_detectron2_cfg()
    add_panoptic_zoo_config(cfg)
    add_acceleration_config(cfg)
    add_upsnet_config(cfg)
    add_panoptic_deeplab_config(cfg)
    add_panoptic_fcn_config(cfg)
    add_mask2former_config(cfg)
    add_mobile_backbone_config(cfg)
    # Every node of one class: merging checks that a loaded node has the type of the one it
    # replaces. Converting drops the nodes' new_allowed flags; REGISTER's is set again.
    cfg = PanopticZooConfig(cfg)
    cfg.DATASETS.REGISTER.set_new_allowed(True)
    return cfg


def dataset_class_counts(name: str) -> tuple[int, int]:
    """(thing, stuff) class counts of a registered dataset, from its separated metadata."""
    if name not in DatasetCatalog.list():
        raise KeyError(
            f"dataset {name!r} is not registered: name it in DATASETS.REGISTER (or pass "
            "--dataset NAME IMAGE_ROOT PANOPTIC_JSON PANOPTIC_ROOT), see docs/DATASETS.md"
        )
    metadata = MetadataCatalog.get(name)
    things = metadata.get("thing_classes")
    stuff = metadata.get("stuff_classes")
    if things is None or stuff is None:
        raise ValueError(
            f"dataset {name!r} has no thing_classes/stuff_classes in its metadata; register it "
            "with panoptic_zoo.data.datasets.register_panoptic_dataset or DATASETS.REGISTER"
        )
    if not stuff or stuff[0] != "things":
        raise ValueError(
            f"dataset {name!r} is not in separated ids (its stuff_classes do not start with the "
            "merged 'things' class); use its *_separated registration or DATASETS.REGISTER"
        )
    return len(things), len(stuff) - 1


def check_class_counts(cfg: CfgNode) -> None:
    """
    Before a model is built for the datasets of ``cfg``: every dataset in DATASETS.TRAIN and
    DATASETS.TEST has the same class counts, DATASETS.NUM_*_CLASSES (filled from the metadata
    when -1, which needs ``cfg`` unfrozen) agree with them, and so do the model keys of
    MODEL.META_ARCHITECTURE. Raises ValueError naming the keys, values and dataset otherwise.
    """
    names = [*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST]
    counts = {name: dataset_class_counts(name) for name in names}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{n}: {t} things, {s} stuff" for n, (t, s) in counts.items())
        raise ValueError(f"DATASETS.TRAIN and DATASETS.TEST disagree on the classes ({listed})")
    configured = tuple(_get(cfg, key) for key in DATASET_COUNT_KEYS)
    if not counts:
        if min(configured) < 0:
            raise ValueError(
                "no dataset in DATASETS.TRAIN/TEST and DATASETS.NUM_THING_CLASSES/NUM_STUFF_CLASSES "
                "unset: the class counts are unknown"
            )
        return
    name, (things, stuff) = next(iter(counts.items()))
    if configured == (-1, -1):
        cfg.merge_from_list([DATASET_COUNT_KEYS[0], things, DATASET_COUNT_KEYS[1], stuff])
        configured = (things, stuff)
    for key, configured_count, count in zip(DATASET_COUNT_KEYS, configured, (things, stuff)):
        if configured_count != count:
            raise ValueError(
                f"{key} is {configured_count} but dataset {name!r} has {count} "
                f"({things} thing classes, {stuff} stuff classes besides 'things'): set {key} "
                f"to {count} in the dataset's Base YAML (or leave it at -1 to read the metadata)"
            )
    for key in _ARCHITECTURE_COUNT_KEYS.get(cfg.MODEL.META_ARCHITECTURE, ()):
        expected = CLASS_COUNT_KEYS[key](things, stuff)
        if _get(cfg, key) != expected:
            raise ValueError(
                f"{key} is {_get(cfg, key)} but dataset {name!r} ({things} thing classes, "
                f"{stuff} stuff classes) needs {expected}: remove {key} from the method YAML "
                "and set DATASETS.NUM_THING_CLASSES/NUM_STUFF_CLASSES in the dataset's Base YAML"
            )
