"""
The rows of docs/MODEL_ZOO.md: one :class:`ModelZooEntry` per config, kept in
``docs/model_zoo.json`` (the source of truth, written by ``tools/train_model_zoo.py``) and
rendered into the table between the markers of ``docs/MODEL_ZOO.md``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path

from detectron2.config import CfgNode

from ..utils.io import atomic_write, atomic_write_json

__all__ = [
    "ModelZooEntry",
    "describe_backbone",
    "entry_from_run",
    "read_entries",
    "upsert",
    "write_entries",
]

TABLE_START = "<!-- model-zoo-table:start (generated from docs/model_zoo.json) -->"
TABLE_END = "<!-- model-zoo-table:end -->"

METHODS = {
    "PanopticFPN": "Panoptic FPN",
    "UPSNet": "UPSNet",
    "PanopticDeepLabModel": "Panoptic-DeepLab",
    "PanopticFCN": "Panoptic FCN",
    "Mask2Former": "Mask2Former",
}


@dataclass(frozen=True)
class ModelZooEntry:
    config: str  # relative to configs/
    method: str
    backbone: str
    schedule: str
    dataset: str
    pq: float | None
    sq: float | None
    rq: float | None
    box_ap: float | None
    mask_ap: float | None
    miou: float | None
    train_time: str
    checkpoint: str  # relative to the model zoo directory
    sha256: str
    measured: str  # date and machine

    def row(self) -> str:
        def number(value):
            return "-" if value is None else f"{value:.1f}"

        ap = f"{number(self.box_ap)} / {number(self.mask_ap)}"
        cells = [
            f"`{self.config}`", self.method, self.backbone, self.schedule, self.dataset,
            number(self.pq), number(self.sq), number(self.rq), ap, number(self.miou),
            self.train_time, f"`{self.checkpoint}`", f"`{self.sha256[:16]}`", self.measured,
        ]  # fmt: skip
        return "| " + " | ".join(cells) + " |"


HEADER = (
    "| config | method | backbone (init) | schedule | train -> eval data | PQ | SQ | RQ "
    "| AP box / mask | mIoU | train time | checkpoint | sha256 (first 16) | measured |\n"
    "|" + " --- |" * 14
)


def describe_backbone(cfg: CfgNode) -> str:
    """E.g. "R-18-FPN (scratch)", "MobileNetV2-FPN (ImageNet)"."""
    name = cfg.MODEL.BACKBONE.NAME
    if "mobilenet_v2" in name:
        network = "MobileNetV2"
    elif "efficientnet_lite0" in name:
        network = "EfficientNet-Lite0"
    else:
        network = f"R-{cfg.MODEL.RESNETS.DEPTH}"
    if "fpn" in name:
        network += "-FPN"
    weights = cfg.MODEL.WEIGHTS
    init = "scratch" if not weights else "ImageNet" if "ImageNet" in weights else Path(weights).name
    return f"{network} ({init})"


def entry_from_run(
    config: str, cfg: CfgNode, results: dict, *, train_time: str, checkpoint: str, sha256: str,
    measured: str,
) -> ModelZooEntry:  # fmt: skip
    """The row of a trained and evaluated config; ``results`` as in ``eval_results.json``."""
    panoptic = results.get("panoptic_seg", {})
    return ModelZooEntry(
        config=config,
        method=METHODS.get(cfg.MODEL.META_ARCHITECTURE, cfg.MODEL.META_ARCHITECTURE),
        backbone=describe_backbone(cfg),
        schedule=f"{cfg.SOLVER.MAX_ITER} it x {cfg.SOLVER.IMS_PER_BATCH} img",
        dataset=f"{','.join(cfg.DATASETS.TRAIN)} -> {','.join(cfg.DATASETS.TEST)}",
        pq=panoptic.get("PQ"),
        sq=panoptic.get("SQ"),
        rq=panoptic.get("RQ"),
        box_ap=results.get("bbox", {}).get("AP"),
        mask_ap=results.get("segm", {}).get("AP"),
        miou=results.get("sem_seg", {}).get("mIoU"),
        train_time=train_time,
        checkpoint=checkpoint,
        sha256=sha256,
        measured=measured,
    )


def read_entries(json_path: str | Path) -> list[ModelZooEntry]:
    path = Path(json_path)
    if not path.is_file():
        return []
    return [ModelZooEntry(**row) for row in json.loads(path.read_text())]


def write_entries(json_path: str | Path, markdown_path: str | Path, entries) -> None:
    """
    Save ``entries`` (sorted by config) to ``json_path`` and render them into the table of
    ``markdown_path``, which must contain the table markers (the text around them is kept).
    """
    entries = sorted(entries, key=lambda e: e.config)
    markdown_path = Path(markdown_path)
    text = markdown_path.read_text()
    if TABLE_START not in text or TABLE_END not in text:
        raise ValueError(f"{markdown_path} lacks the table markers {TABLE_START} ... {TABLE_END}")
    table = "\n".join([HEADER, *(e.row() for e in entries)])
    pattern = re.compile(re.escape(TABLE_START) + ".*?" + re.escape(TABLE_END), re.DOTALL)
    text = pattern.sub(lambda _: f"{TABLE_START}\n{table}\n{TABLE_END}", text)
    atomic_write_json(json_path, [dataclasses.asdict(e) for e in entries])
    atomic_write(markdown_path, lambda f: f.write(text), mode="w")


def upsert(entries: list[ModelZooEntry], entry: ModelZooEntry) -> list[ModelZooEntry]:
    """``entries`` with ``entry`` replacing the row of the same config, or added."""
    return [e for e in entries if e.config != entry.config] + [entry]
