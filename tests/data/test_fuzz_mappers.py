"""
Fuzzing every panoptic method's dataset mapper (Panoptic FPN and Panoptic FCN share
COCOPanopticDatasetMapper; UPSNet and Panoptic-DeepLab have their own) with generated samples:
images of any size from 1x1, grayscale, RGBA, palette, bilevel, CMYK, 16-bit, with EXIF
rotations, truncated, bit-flipped, random, empty, missing or claiming a huge size; panoptic PNGs
in wrong modes, of another size, lossy, corrupt; segments_info that disagrees with the PNG, with
crowd regions or with nonsense boxes.

Each case either raises a clear error naming the file or maps, and then the targets of the
mapper without augmentation must equal an oracle computed from the intended segment ids (and the
image the intended pixels, EXIF rotation applied): no silently wrong label or image.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from fuzz_testing import (
    corrupt,
    encode,
    fuzz_settings,
    fuzz_tally,  # noqa: F401  (fixture)
    ids_to_rgb,
    rgb48_png,
    with_exif_orientation,
    with_png_size,
)
from hypothesis import given
from hypothesis import strategies as st
from panoptic_testing import CONFIGS
from PIL import Image

from panoptic_zoo.config import get_cfg
from panoptic_zoo.data import build_dataset_mapper

NUM_THINGS, NUM_STUFF = 5, 4  # the shapes configs' classes, in separated ids
IGNORE = 255
METHOD_CONFIGS = {
    "COCOPanopticDatasetMapper": "panoptic_fpn_R_18.yaml",  # also Panoptic FCN's mapper
    "UPSNetDatasetMapper": "upsnet_R_18.yaml",
    "PanopticDeepLabDatasetMapper": "panoptic_deeplab_R_18.yaml",
}


def method_cfg(config_name: str):
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIGS / "shapes" / config_name))
    cfg.INPUT.MIN_SIZE_TRAIN = (24, 40)
    cfg.INPUT.MAX_SIZE_TRAIN = 64
    cfg.INPUT.MIN_SIZE_TEST = 32
    cfg.INPUT.MAX_SIZE_TEST = 64
    return cfg


@pytest.fixture(scope="module")
def mappers() -> dict[str, dict]:
    """Per mapper: without augmentation (checked against the oracle), and as configured."""
    built = {}
    for name, config_name in METHOD_CONFIGS.items():
        cfg = method_cfg(config_name)
        assert cfg.INPUT.DATASET_MAPPER_NAME == name
        mapper_class = type(build_dataset_mapper(cfg, is_train=True))
        built[name] = {
            "plain": mapper_class(cfg, True, augmentations=[]),
            "train": build_dataset_mapper(cfg, is_train=True),
            "test": build_dataset_mapper(cfg, is_train=False),
        }
    return built


# ----------------------------------------------------------------------------------------------
# Generated samples: an image, its segment ids and segments_info (separated contiguous ids)


@st.composite
def samples(draw) -> dict:
    height, width = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    num_segments = draw(st.integers(0, 5))
    ids = draw(st.lists(st.integers(1, 2**24 - 1), min_size=num_segments,
                        max_size=num_segments, unique=True))  # fmt: skip
    # Blocky regions (upsampled from a coarse grid), so segments have several pixels.
    coarse = rng.integers(0, num_segments + 1, size=(max(1, height // 4), max(1, width // 4)))
    rows = np.arange(height) * coarse.shape[0] // height
    cols = np.arange(width) * coarse.shape[1] // width
    id_map = np.array([0, *ids], dtype=np.int64)[coarse[rows][:, cols]]
    segments = []
    for segment_id in sorted(set(np.unique(id_map).tolist()) - {0}):
        isthing = draw(st.booleans())
        segments.append({
            "id": segment_id,
            "category_id": draw(st.integers(0, NUM_THINGS - 1) if isthing
                                else st.integers(1, NUM_STUFF)),
            "isthing": isthing,
            "iscrowd": int(isthing and draw(st.integers(0, 4)) == 0),
        })  # fmt: skip
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return {"image": image, "ids": id_map, "segments_info": segments, "seed": seed}


def write_sample(
    directory: Path,
    sample: dict,
    image_bytes: bytes | None = None,
    png_bytes: bytes | None = None,
    size: tuple[int, int] | None = None,
) -> dict:
    """The sample's files (or the given bytes; None bytes mean the valid encoding) and record."""
    image_file, png_file = directory / "image.png", directory / "panoptic.png"
    if image_bytes is None:
        image_bytes = encode(Image.fromarray(sample["image"]), "PNG")
    if png_bytes is None:
        png_bytes = encode(Image.fromarray(ids_to_rgb(sample["ids"])), "PNG")
    image_file.write_bytes(image_bytes)
    png_file.write_bytes(png_bytes)
    height, width = size or sample["ids"].shape
    return {
        "file_name": str(image_file), "image_id": 1, "height": height, "width": width,
        "pan_seg_file_name": str(png_file), "segments_info": sample["segments_info"],
    }  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Oracles: the targets each mapper must produce without augmentation


def expected_semantic(name: str, ids: np.ndarray, segments_info: list[dict]) -> np.ndarray:
    semantic = np.full(ids.shape, IGNORE, dtype=np.int64)
    for s in segments_info:
        if name == "COCOPanopticDatasetMapper":  # stuff 1..S, every thing 0
            label = 0 if s["isthing"] else s["category_id"]
        elif name == "UPSNetDatasetMapper":  # stuff 0..S-1, things S..S+T-1
            label = NUM_STUFF + s["category_id"] if s["isthing"] else s["category_id"] - 1
        else:  # Panoptic-DeepLab's unified ids: things 0..T-1, stuff T..T+S-1
            label = s["category_id"] if s["isthing"] else NUM_THINGS + s["category_id"] - 1
        semantic[ids == s["id"]] = label
    return semantic


def check_plain_output(
    name: str, out: dict, image_rgb: np.ndarray | None, ids: np.ndarray, segments_info: list[dict]
) -> None:
    height, width = ids.shape
    assert out["image"].shape == (3, height, width) and out["image"].dtype == torch.uint8
    if image_rgb is not None:  # BGR, CHW
        assert np.array_equal(out["image"].numpy(), image_rgb[..., ::-1].transpose(2, 0, 1))
    assert np.array_equal(out["sem_seg"].numpy(), expected_semantic(name, ids, segments_info))
    if name == "PanopticDeepLabDatasetMapper":
        assert out["center"].shape[-2:] == out["offset"].shape[-2:] == (height, width)
        return
    things = [s for s in segments_info if s["isthing"] and not s["iscrowd"]]
    assert out["instances"].gt_classes.tolist() == [s["category_id"] for s in things]
    expected_masks = np.zeros((len(things), height, width), dtype=bool)
    for mask, s in zip(expected_masks, things):
        mask[ids == s["id"]] = True
    assert np.array_equal(out["instances"].gt_masks.tensor.numpy(), expected_masks)


def check_augmented_output(name: str, out: dict, is_train: bool) -> None:
    image = out["image"]
    assert image.dtype == torch.uint8 and image.shape[0] == 3 and min(image.shape[1:]) >= 1
    if not is_train:
        assert set(out) & {"sem_seg", "instances", "segments_info"} == set()
        return
    assert out["sem_seg"].shape == image.shape[1:]
    if name != "PanopticDeepLabDatasetMapper":
        assert out["instances"].image_size == tuple(image.shape[1:])


def map_everywhere(mappers, record, image_rgb, ids, segments_info):
    """The case through every mapper: without augmentation (oracle), then as configured."""
    for name, built in mappers.items():
        check_plain_output(name, built["plain"](record), image_rgb, ids, segments_info)
        check_augmented_output(name, built["train"](record), is_train=True)
        check_augmented_output(name, built["test"](record), is_train=False)


# ----------------------------------------------------------------------------------------------
# Image files

IMAGE_CASES = {
    # case: expected outcome ("ok": must map exactly; "error"; "either": maps, or clear error)
    "png": "ok", "jpeg": "ok", "bmp": "ok", "webp_lossless": "ok", "gray": "ok",
    "gray_alpha": "ok", "rgba": "ok", "palette": "ok", "bilevel": "ok", "cmyk_jpeg": "ok",
    "exif_rotated": "ok", "gray16": "error", "rgb48": "error", "truncated": "either",
    "bit_flipped": "either", "random_bytes": "error", "empty": "error", "huge_header": "error",
    "missing": "error",
}  # fmt: skip


def image_file(case: str, rgb: np.ndarray, data) -> tuple[bytes | None, np.ndarray | None]:
    """The image file's bytes for ``case`` and the RGB pixels it must decode to (None: any)."""
    image = Image.fromarray(rgb)
    if case == "png":
        return encode(image, "PNG"), rgb
    if case == "bmp":
        return encode(image, "BMP"), rgb
    if case == "webp_lossless":
        return encode(image, "WEBP", lossless=True, exact=True), rgb
    if case == "jpeg":
        return encode(image, "JPEG", quality=90), None
    if case in ("gray", "gray_alpha", "palette", "bilevel", "rgba"):
        mode = {"gray": "L", "gray_alpha": "LA", "palette": "P", "bilevel": "1", "rgba": "RGBA"}
        converted = image.convert(mode[case])
        return encode(converted, "PNG"), np.asarray(converted.convert("RGB"))
    if case == "cmyk_jpeg":
        return encode(image.convert("CMYK"), "JPEG", quality=90), None
    if case == "exif_rotated":
        return with_exif_orientation(image, data.draw(st.integers(2, 8), label="orientation")), rgb
    if case == "gray16":
        return encode(Image.fromarray(rgb[..., 0].astype(np.uint16) * 257), "PNG"), None
    if case == "rgb48":
        return rgb48_png(rgb), None
    if case in ("truncated", "bit_flipped"):
        valid = encode(image, data.draw(st.sampled_from(["PNG", "JPEG"]), label="format"))
        fraction = data.draw(st.floats(0.0, 0.999), label="fraction")
        return corrupt(valid, case, fraction, data.draw(st.integers(0, 2**16), label="seed")), None
    if case == "random_bytes":
        return data.draw(st.binary(min_size=1, max_size=200), label="bytes"), None
    if case == "empty":
        return b"", None
    if case == "huge_header":
        return with_png_size(encode(image, "PNG"), 40_000, 40_000), None
    assert case == "missing"
    return None, None


@fuzz_settings(default_examples=120)
@given(sample=samples(), case=st.sampled_from(sorted(IMAGE_CASES)), data=st.data())
def test_mappers_on_fuzzed_image_files(mappers, fuzz_tally, sample, case, data):
    image_bytes, expected_rgb = image_file(case, sample["image"], data)
    with tempfile.TemporaryDirectory() as directory:
        record = write_sample(Path(directory), sample, image_bytes=image_bytes or b"")
        if case == "missing":
            Path(record["file_name"]).unlink()
        fuzz_tally.expect(IMAGE_CASES[case], lambda: map_everywhere(
            mappers,
            record,
            expected_rgb,
            sample["ids"],
            sample["segments_info"]),  # fmt: skip
            files=[record["file_name"]],
        )


def test_exif_rotation_with_stored_size_in_json_is_a_size_error(mappers, fuzz_tally, tmp_path):
    """The JSON must give the displayed (rotated) size, as COCO's annotations do."""
    rgb = np.zeros((10, 30, 3), dtype=np.uint8)
    sample = {"image": rgb, "ids": np.zeros((10, 30), dtype=np.int64), "segments_info": []}
    record = write_sample(tmp_path, sample, image_bytes=with_exif_orientation(Image.fromarray(
        rgb.transpose(1, 0, 2)), 6), size=(10, 30))  # fmt: skip
    fuzz_tally.expect(
        "error", lambda: mappers["COCOPanopticDatasetMapper"]["plain"](record),
        files=[record["file_name"]],
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Panoptic PNGs

PNG_CASES = {
    "rgb": "ok", "palette": "ok", "rgba_opaque": "ok", "rgba_transparent": "error",
    "gray": "error", "gray16": "error", "rgb48": "error", "jpeg_lossy": "either",
    "truncated": "either", "bit_flipped": "either", "other_size": "error", "random_bytes": "error",
    "empty": "error", "missing": "error",
}  # fmt: skip


def panoptic_png(case: str, ids: np.ndarray, data) -> bytes | None:
    rgb = ids_to_rgb(ids)
    image = Image.fromarray(rgb)
    if case == "rgb":
        return encode(image, "PNG")
    if case == "palette":
        colors, indices = np.unique(rgb.reshape(-1, 3), axis=0, return_inverse=True)
        palette_image = Image.fromarray(indices.reshape(ids.shape).astype(np.uint8), mode="P")
        palette_image.putpalette(colors.astype(np.uint8).tobytes())
        return encode(palette_image, "PNG")
    if case in ("rgba_opaque", "rgba_transparent"):
        alpha = np.full(ids.shape, 255, dtype=np.uint8)
        if case == "rgba_transparent":
            alpha[0, 0] = data.draw(st.integers(0, 254), label="alpha")
        return encode(Image.fromarray(np.dstack([rgb, alpha])), "PNG")
    if case == "gray":
        return encode(image.convert("L"), "PNG")
    if case == "gray16":
        return encode(Image.fromarray((ids % 65536).astype(np.uint16)), "PNG")
    if case == "rgb48":
        return rgb48_png(rgb)
    if case == "jpeg_lossy":
        return encode(image, "JPEG", quality=data.draw(st.integers(50, 100), label="quality"))
    if case in ("truncated", "bit_flipped"):
        fraction = data.draw(st.floats(0.0, 0.999), label="fraction")
        seed = data.draw(st.integers(0, 2**16), label="seed")
        return corrupt(encode(image, "PNG"), case, fraction, seed)
    if case == "other_size":
        height, width = ids.shape
        grow = data.draw(st.sampled_from([(0, 1), (1, 0), (1, 1)]), label="grow")
        return encode(Image.fromarray(np.zeros((height + grow[0], width + grow[1], 3),
                                               dtype=np.uint8)), "PNG")  # fmt: skip
    if case == "random_bytes":
        return data.draw(st.binary(min_size=1, max_size=200), label="bytes")
    if case == "empty":
        return b""
    assert case == "missing"
    return None


@fuzz_settings(default_examples=100)
@given(sample=samples(), case=st.sampled_from(sorted(PNG_CASES)), data=st.data())
def test_mappers_on_fuzzed_panoptic_pngs(mappers, fuzz_tally, sample, case, data):
    png_bytes = panoptic_png(case, sample["ids"], data)
    with tempfile.TemporaryDirectory() as directory:
        record = write_sample(Path(directory), sample, png_bytes=png_bytes or b"")
        if case == "missing":
            Path(record["pan_seg_file_name"]).unlink()
        fuzz_tally.expect(PNG_CASES[case], lambda: map_everywhere(
            mappers,
            record,
            sample["image"],
            sample["ids"],
            sample["segments_info"]),  # fmt: skip
            files=[record["pan_seg_file_name"], record["file_name"]],
        )


# ----------------------------------------------------------------------------------------------
# segments_info against the PNG

SEGMENT_CASES = {
    "dropped_segment": "error", "phantom_segment": "error", "stray_pixels": "error",
    "nonsense_boxes": "ok", "all_crowd": "ok",
}  # fmt: skip

finite_or_not = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**6), 10**6)
)


@fuzz_settings(default_examples=60)
@given(sample=samples(), case=st.sampled_from(sorted(SEGMENT_CASES)), data=st.data())
def test_mappers_on_segments_info_that_disagrees_with_the_png(
    mappers, fuzz_tally, sample, case, data
):
    ids, segments = sample["ids"].copy(), [dict(s) for s in sample["segments_info"]]
    expected = SEGMENT_CASES[case]
    unused = next(i for i in range(1, 2**24) if i not in {s["id"] for s in segments})
    if case == "dropped_segment":
        if segments:
            segments.pop(data.draw(st.integers(0, len(segments) - 1), label="dropped"))
        else:
            expected = "ok"
    elif case == "phantom_segment":
        segments.append({"id": unused, "category_id": 1, "isthing": False, "iscrowd": 0})
    elif case == "stray_pixels":
        row = data.draw(st.integers(0, ids.shape[0] - 1), label="row")
        col = data.draw(st.integers(0, ids.shape[1] - 1), label="col")
        ids[row, col] = unused
        segments = [s for s in segments if (ids == s["id"]).any()]
    elif case == "nonsense_boxes":  # ignored: boxes and areas come from the PNG
        for s in segments:
            s["bbox"] = data.draw(st.lists(finite_or_not, min_size=0, max_size=6), label="bbox")
            s["area"] = data.draw(finite_or_not, label="area")
    else:
        segments = [{**s, "iscrowd": int(s["isthing"])} for s in segments]
    sample = {**sample, "ids": ids, "segments_info": segments}
    with tempfile.TemporaryDirectory() as directory:
        record = write_sample(Path(directory), sample)
        fuzz_tally.expect(
            expected,
            lambda: map_everywhere(mappers, record, sample["image"], ids, segments),
            files=[record["pan_seg_file_name"]],
        )


def test_large_image_maps(mappers, fuzz_tally, tmp_path):
    """A 2048x1024 image and PNG through the configured mappers (resized down)."""
    ids = np.zeros((1024, 2048), dtype=np.int64)
    ids[100:400, 300:900] = 7
    sample = {
        "image": np.zeros((1024, 2048, 3), dtype=np.uint8),
        "ids": ids,
        "segments_info": [{"id": 7, "category_id": 2, "isthing": True, "iscrowd": 0}],
    }
    record = write_sample(tmp_path, sample)
    for name, built in mappers.items():
        out = fuzz_tally.expect("ok", lambda: built["train"](record), files=[])
        check_augmented_output(name, out, is_train=True)
