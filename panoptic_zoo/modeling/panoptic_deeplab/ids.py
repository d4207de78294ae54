"""
The single semantic id space of Panoptic-DeepLab's semantic head, and its mapping to the
project's separated ids.

Datasets here use separated contiguous ids: things ``0..T-1``, stuff ``1..S`` (stuff 0 is the
merged "things" class of other methods). Panoptic-DeepLab classifies every pixel into one of
``T + S`` classes, so the semantic head uses *unified* ids::

    thing t  (0 <= t < T)   ->  unified t
    stuff s  (1 <= s <= S)  ->  unified T + s - 1

Thing classes are thus ``range(T)``: the model needs only the two counts from the config, not
the training dataset's metadata, and evaluates on any dataset with the same categories.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["UnifiedIds"]


@dataclass(frozen=True)
class UnifiedIds:
    num_thing_classes: int
    num_stuff_classes: int

    def __post_init__(self):
        if self.num_thing_classes < 0 or self.num_stuff_classes < 0:
            raise ValueError(
                "MODEL.PANOPTIC_DEEPLAB.NUM_THING_CLASSES and NUM_STUFF_CLASSES must be set "
                "(the dataset's number of thing categories and of stuff categories, without "
                f"the merged 'things' class); got {self.num_thing_classes} and "
                f"{self.num_stuff_classes}"
            )
        if self.num_classes == 0:
            raise ValueError("a panoptic dataset needs at least one category")

    @classmethod
    def from_config(cls, cfg) -> "UnifiedIds":
        return cls(
            cfg.MODEL.PANOPTIC_DEEPLAB.NUM_THING_CLASSES,
            cfg.MODEL.PANOPTIC_DEEPLAB.NUM_STUFF_CLASSES,
        )

    @property
    def num_classes(self) -> int:
        return self.num_thing_classes + self.num_stuff_classes

    @property
    def thing_ids(self) -> range:
        return range(self.num_thing_classes)

    def to_unified(self, category_id: int, isthing: bool) -> int:
        if isthing:
            if not 0 <= category_id < self.num_thing_classes:
                raise ValueError(
                    f"thing category {category_id} is outside the configured thing classes "
                    f"0..{self.num_thing_classes - 1} (MODEL.PANOPTIC_DEEPLAB.NUM_THING_CLASSES)"
                )
            return category_id
        if not 1 <= category_id <= self.num_stuff_classes:
            raise ValueError(
                f"stuff category {category_id} is outside the configured stuff classes "
                f"1..{self.num_stuff_classes} (MODEL.PANOPTIC_DEEPLAB.NUM_STUFF_CLASSES)"
            )
        return self.num_thing_classes + category_id - 1

    def to_separated(self, unified_id: int) -> tuple[int, bool]:
        """``(category_id, isthing)`` in separated ids."""
        if unified_id < self.num_thing_classes:
            return unified_id, True
        return unified_id - self.num_thing_classes + 1, False
