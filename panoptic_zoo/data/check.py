"""
Check a panoptic dataset before training on it: every problem listed at once, with its file and
its fix, and a summary of what the dataset holds.

    python -m panoptic_zoo.data.check my_train my_val                     # registered names
    python -m panoptic_zoo.data.check --config-file configs/my/panoptic_fpn.yaml   # its datasets
    python -m panoptic_zoo.data.check --dataset my_train IMAGES PANOPTIC.json PANOPTIC_PNGS

Checked: every record of the annotation JSON (known categories, unique segment ids, sizes,
...), every image and panoptic PNG is readable, sizes agree with the JSON, the ids in each PNG
are those of its segments_info, the semantic PNGs (when the dataset has them) are readable and
of the image's size, and, with a config, the class counts of the config match the dataset. The
summary gives images, segments per class, crowd segments, the void fraction and the images'
pixel mean and standard deviation (BGR, for MODEL.PIXEL_MEAN and PIXEL_STD).

Training runs the same check on DATASETS.TRAIN first (:func:`check_training_datasets`), once per
dataset content: the result is cached under a key of the JSON's checksum and every file's size
and modification time.

Given only ``--dataset`` file paths, the command imports neither torch nor detectron2 (it reads
the files with :mod:`panoptic_zoo.data.panoptic_format`); registered names and ``--config-file``
need detectron2's catalogs and config, imported when used.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..utils.io import atomic_write_json
from .panoptic_format import (
    AnnotationError,
    add_dataset_argument,
    load_json,
    open_image_checked,
    parse_panoptic_json,
    read_categories,
    read_label_png,
    read_panoptic_png,
    separated_metadata,
)

__all__ = [
    "DatasetCheck",
    "DatasetProblemsError",
    "check_dataset",
    "check_files",
    "check_records",
    "check_training_datasets",
]

logger = logging.getLogger(__name__)

# Bump when the checks change, so that cached results of older checks are not reused.
CHECK_VERSION = 2


class DatasetProblemsError(ValueError):
    """A dataset has problems that training would stop on (all of them listed)."""


@dataclass
class DatasetCheck:
    """What :func:`check_dataset` found in one dataset."""

    name: str
    images: int = 0
    segments: Counter = field(default_factory=Counter)  # per class name
    crowd: int = 0
    void_pixels: int = 0
    pixels: int = 0
    # Per-channel sums over the readable images' pixels, in BGR (detectron2's MODEL.PIXEL_MEAN
    # and PIXEL_STD order): the statistics a config for this dataset starts from.
    color_sum: np.ndarray = field(default_factory=lambda: np.zeros(3))
    color_square_sum: np.ndarray = field(default_factory=lambda: np.zeros(3))
    color_pixels: int = 0
    # (file, problem and fix): every problem found, in dataset order.
    problems: list[tuple[str, str]] = field(default_factory=list)

    @property
    def bad_files(self) -> set[str]:
        return {file for file, _ in self.problems}

    def pixel_statistics(self) -> tuple[list[float], list[float]]:
        """Mean and standard deviation of the images' pixels per channel, BGR."""
        mean = self.color_sum / max(self.color_pixels, 1)
        variance = self.color_square_sum / max(self.color_pixels, 1) - mean**2
        return mean.round(3).tolist(), np.sqrt(np.maximum(variance, 0)).round(3).tolist()

    def summary(self) -> str:
        """The summary table and the list of problems, as printed by the command."""
        void = 100.0 * self.void_pixels / self.pixels if self.pixels else 0.0
        mean, std = self.pixel_statistics()
        lines = [
            f"dataset {self.name}: {self.images} images, {sum(self.segments.values())} "
            f"segments ({self.crowd} crowd), void {void:.1f} % of pixels",
            f"  pixels (BGR): MODEL.PIXEL_MEAN {mean} MODEL.PIXEL_STD {std}",
            f"  {'class':<24} {'segments':>8}",
        ]
        lines += [f"  {name:<24} {count:>8}" for name, count in self.segments.items()]
        if self.problems:
            lines.append(f"  {len(self.problems)} problem(s):")
            lines += [f"  - {file}: {problem}" for file, problem in self.problems]
        else:
            lines.append("  no problems found")
        return "\n".join(lines)


def _problem(file: str, error: Exception) -> tuple[str, str]:
    """(file, message and fix) of a failed check; the message without its leading file name."""
    message = str(error).removeprefix(f"{file}: ").removeprefix(f"{file} ")
    return file, f"{message} ({_fix_for(error)})"


def _json_problem(json_file: str, message: str) -> tuple[str, str]:
    """(file, message and fix) of a problem found in an annotation JSON."""
    return json_file, message.removeprefix(f"{json_file}: ")


def _fix_for(error: Exception) -> str:
    if isinstance(error, FileNotFoundError):
        return "fix: put the file there, or correct its name in the annotation JSON"
    text = str(error)
    if "segments_info" in text:
        return "fix: make the PNG's ids and its segments_info the same (re-export the annotation)"
    if "(WxH)" in text:
        return "fix: give the PNG its image's size"
    return "fix: re-export the file (or drop it from the annotation JSON)"


def check_dataset(
    name: str, class_counts: tuple[int, int] | None = None, progress: bool = True
) -> DatasetCheck:
    """
    Check every record of the registered dataset ``name``; with ``class_counts`` (things,
    stuff), also that the dataset has these counts. Never raises for a dataset problem: the
    problems are in the result.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    metadata = MetadataCatalog.get(name)
    where = metadata.get("panoptic_json", name)
    json_problems = []
    try:
        records = DatasetCatalog.get(name)
    except AnnotationError as e:
        # Every problem of the JSON; the files of its other records are still checked.
        records = e.records
        json_problems = [_json_problem(where, problem) for problem in e.problems]
    except (FileNotFoundError, OSError) as e:
        records = []
        json_problems = [(where, f"{e} (fix: correct the path; see docs/DATASETS.md)")]
    return check_records(
        name, records, metadata.get("thing_classes", []), metadata.get("stuff_classes", []),
        json_problems, class_counts, where, progress,
    )  # fmt: skip


def check_files(
    name: str, image_root: str, panoptic_json: str, panoptic_root: str, progress: bool = True
) -> DatasetCheck:
    """
    Check a COCO-panoptic-format dataset given by its files, unregistered (without torch and
    detectron2). Never raises for a dataset problem: the problems are in the result.
    """
    try:
        content = load_json(panoptic_json)
        metadata = separated_metadata(read_categories(panoptic_json, content))
        records, problems = parse_panoptic_json(
            content, panoptic_json, image_root, panoptic_root, metadata
        )
    except (AnnotationError, OSError) as e:
        fix = "" if "fix:" in str(e) else " (fix: correct the file; see docs/DATASETS.md)"
        return DatasetCheck(name, problems=[(panoptic_json, f"{e}{fix}")])
    missing = [root for root in (image_root, panoptic_root) if not os.path.isdir(root)]
    fix = "directory does not exist (fix: correct the path)"
    if missing:
        return DatasetCheck(name, problems=[(root, fix) for root in missing])
    return check_records(
        name, records, metadata["thing_classes"], metadata["stuff_classes"],
        [_json_problem(panoptic_json, p) for p in problems], progress=progress,
    )  # fmt: skip


def check_records(
    name: str,
    records: list[dict],
    thing_classes: list[str],
    stuff_classes: list[str],
    problems: list[tuple[str, str]] = (),
    class_counts: tuple[int, int] | None = None,
    where: str | None = None,
    progress: bool = True,
) -> DatasetCheck:
    """
    Read every image and PNG of ``records`` (dataset dicts in separated ids) and check them; the
    result holds ``problems`` (found before, e.g. in the JSON) followed by those found here.
    With ``class_counts`` (things, stuff), also check that the classes have these counts.
    """
    result = DatasetCheck(name, problems=list(problems))
    if class_counts is not None:
        found = (len(thing_classes), len(stuff_classes) - 1)
        if found != tuple(class_counts):
            result.problems.append(
                (
                    where or name,
                    f"the dataset has {found[0]} thing / {found[1]} stuff classes but the config "
                    f"has {class_counts[0]} / {class_counts[1]} (fix: set DATASETS.NUM_THING_CLASSES "
                    f"{found[0]} and DATASETS.NUM_STUFF_CLASSES {found[1]}, or -1 for the dataset's)",
                )
            )
    # Every class in the table, in id order, those without segments too.
    result.segments.update({class_name: 0 for class_name in [*thing_classes, *stuff_classes[1:]]})
    for record in tqdm(records, desc=f"checking {name}", unit="img", disable=not progress):
        result.images += 1
        # The PNGs are compared with the image itself where it is readable, so that a wrong
        # size in the JSON is one problem, not one per file.
        height, width = record["height"], record["width"]
        try:
            image = open_image_checked(record["file_name"])
        except (AnnotationError, FileNotFoundError, OSError) as e:
            result.problems.append(_problem(record["file_name"], e))
        else:
            bgr = np.asarray(image.convert("RGB"), dtype=np.float64)[..., ::-1].reshape(-1, 3)
            result.color_sum += bgr.sum(axis=0)
            result.color_square_sum += (bgr**2).sum(axis=0)
            result.color_pixels += len(bgr)
            if (image.height, image.width) != (height, width):
                result.problems.append(
                    (
                        record["file_name"],
                        f"image is {image.width}x{image.height} (WxH) but the annotation JSON "
                        f"says {width}x{height} (fix: correct its width/height in 'images')",
                    )
                )
                height, width = image.height, image.width
        panoptic_ok = True
        if "pan_seg_file_name" in record:
            try:
                ids = read_panoptic_png(record, (height, width))
            except (AnnotationError, FileNotFoundError, OSError) as e:
                result.problems.append(_problem(record["pan_seg_file_name"], e))
                panoptic_ok = False
            else:
                result.void_pixels += int((ids == 0).sum())
                result.pixels += ids.size
        # A bad panoptic PNG is one problem, not also one of the semantic PNG derived from it.
        if "sem_seg_file_name" in record and panoptic_ok:
            try:
                labels = read_label_png(record["sem_seg_file_name"])
                if labels.shape != (height, width):
                    raise AnnotationError(
                        f"{record['sem_seg_file_name']}: semantic PNG is {labels.shape[1]}x"
                        f"{labels.shape[0]} (WxH) but the image is {width}x{height}"
                    )
                unknown = set(np.unique(labels).tolist()) - set(range(len(stuff_classes))) - {255}
                if unknown:
                    raise AnnotationError(
                        f"{record['sem_seg_file_name']}: labels {sorted(unknown)} are no stuff "
                        f"class (0..{len(stuff_classes) - 1}, 255 void)"
                    )
            except (AnnotationError, FileNotFoundError, OSError) as e:
                result.problems.append(_problem(record["sem_seg_file_name"], e))
        for segment in record.get("segments_info", []):
            classes = thing_classes if segment["isthing"] else stuff_classes
            result.segments[classes[segment["category_id"]]] += 1
            result.crowd += int(segment.get("iscrowd", 0))
    return result


# The files of a record that the check reads.
_RECORD_FILES = ("file_name", "pan_seg_file_name", "sem_seg_file_name")


def _loadable_records(name: str) -> list[dict]:
    """The dataset dicts of ``name`` that load (those of annotations without JSON problems)."""
    from detectron2.data import DatasetCatalog

    try:
        return DatasetCatalog.get(name)
    except AnnotationError as e:
        return e.records
    except OSError:
        return []


def _content_key(name: str, records: list[dict], class_counts: tuple[int, int] | None) -> str:
    """A key that changes when any file of the dataset (or the check) changes."""
    from detectron2.data import MetadataCatalog

    metadata = MetadataCatalog.get(name)
    digest = hashlib.sha256(f"{CHECK_VERSION} {name} {class_counts}".encode())
    for key in ("panoptic_json", "json_file"):
        path = metadata.get(key)
        if path and os.path.isfile(path):
            with open(path, "rb") as f:
                digest.update(hashlib.sha256(f.read()).digest())
    for record in records:
        for key in _RECORD_FILES:
            if key in record:
                try:
                    stat = os.stat(record[key])
                    digest.update(f"{record[key]} {stat.st_size} {stat.st_mtime_ns}".encode())
                except OSError:
                    digest.update(f"{record[key]} missing".encode())
    return digest.hexdigest()[:24]


def _cache_dir() -> Path:
    base = os.environ.get("PANOPTIC_ZOO_DATASETS")
    if base:
        return Path(base).expanduser() / "checks"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser()
    return cache / "panoptic_zoo" / "checks"


def check_training_datasets(cfg) -> set[str]:
    """
    Check the datasets of ``cfg.DATASETS.TRAIN`` (cached by content: a dataset found clean is
    not read again). Raises :class:`DatasetProblemsError` listing every problem, unless
    ``cfg.DATALOADER.SKIP_BAD_IMAGES`` and every problem is in an image's own files (not in the
    annotation JSON nor the class counts); then returns the image files of the records to skip.
    """
    class_counts = (cfg.DATASETS.NUM_THING_CLASSES, cfg.DATASETS.NUM_STUFF_CLASSES)
    if min(class_counts) < 0:
        class_counts = None
    skipped = set()
    for name in cfg.DATASETS.TRAIN:
        records = _loadable_records(name)
        cached = _cache_dir() / f"{_content_key(name, records, class_counts)}.json"
        if cached.is_file():
            payload = json.loads(cached.read_text())
        else:
            result = check_dataset(name, class_counts, progress=True)
            logger.info("dataset check:\n%s", result.summary())
            record_files = {r[k] for r in records for k in _RECORD_FILES if k in r}
            payload = {
                "problems": [list(p) for p in result.problems],
                "bad_images": sorted(_bad_images(records, result.bad_files)),
                "skippable": result.bad_files <= record_files,
            }
            atomic_write_json(cached, payload)
        problems, bad_images = payload["problems"], set(payload["bad_images"])
        if not problems:
            continue
        listed = "\n".join(f"  - {file}: {problem}" for file, problem in problems)
        if not cfg.DATALOADER.SKIP_BAD_IMAGES or not payload["skippable"]:
            skip = (
                "or set DATALOADER.SKIP_BAD_IMAGES True to train without the affected images"
                if payload["skippable"]
                else "problems of the annotation JSON or the class counts cannot be skipped"
            )
            raise DatasetProblemsError(
                f"dataset {name} has {len(problems)} problem(s); fix them ({skip}):\n{listed}"
            )
        logger.warning(
            "DATALOADER.SKIP_BAD_IMAGES: skipping %d of the images of %s:\n%s",
            len(bad_images), name, listed,
        )  # fmt: skip
        skipped |= bad_images
    return skipped


def _bad_images(records: list[dict], bad_files: set[str]) -> set[str]:
    """Image files of the records that a bad file (image, PNG) belongs to."""
    return {
        record["file_name"]
        for record in records
        if {record.get(k) for k in _RECORD_FILES} & bad_files
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="registered dataset names")
    parser.add_argument("--config-file", help="check DATASETS.TRAIN and TEST of this config")
    add_dataset_argument(parser)
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE ...")
    args = parser.parse_args(argv)
    if not (args.names or args.config_file or args.dataset):
        parser.error("name a dataset, a --config-file or a --dataset")
    if args.names or args.config_file or args.opts:
        results = _check_registered(args)
        if results is None:
            return 1
    else:
        results = [check_files(*entry) for entry in args.dataset]
    for result in results:
        print(result.summary())
    problems = sum(len(r.problems) for r in results)
    print(f"{problems} problem(s) in {len(results)} dataset(s)")
    return 1 if problems else 0


def _check_registered(args: argparse.Namespace) -> list[DatasetCheck] | None:
    """The checks of registered names and of a config's datasets; None after an error."""
    from detectron2.data import DatasetCatalog

    from ..config import check_class_counts, get_cfg
    from .datasets.custom import register_from_config, set_dataset_arguments

    cfg = get_cfg()
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    set_dataset_arguments(cfg, args.dataset)
    names = list(args.names) + [entry[0] for entry in args.dataset]
    class_counts = None
    try:
        register_from_config(cfg)
        if args.config_file:
            names = list(dict.fromkeys([*names, *cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST]))
            check_class_counts(cfg)
            class_counts = (cfg.DATASETS.NUM_THING_CLASSES, cfg.DATASETS.NUM_STUFF_CLASSES)
    except (ValueError, KeyError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return None
    unknown = [n for n in names if n not in DatasetCatalog.list()]
    if unknown:
        print(f"error: datasets {unknown} are not registered (--dataset or DATASETS.REGISTER)",
              file=sys.stderr)  # fmt: skip
        return None
    return [check_dataset(name, class_counts) for name in names]


if __name__ == "__main__":
    sys.exit(main())
