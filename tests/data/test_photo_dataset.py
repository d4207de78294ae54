"""
Your own dataset, the path docs/DATASETS.md walks through, on real photographs (scikit-image's,
written by tools/make_photo_dataset.py at a quarter of their size, 113-160 px): registered from
--dataset / DATASETS.REGISTER, checked, each method trained 2 iterations with its unchanged
shapes YAML (the dataset swap), evaluated, and its weights drawn by the demo; then each bad
input the data check must report, all at once, with file and fix.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from panoptic_testing import CONFIGS, REPO, assert_valid_evaluation, train_and_read_results
from PIL import Image

from panoptic_zoo.config import get_cfg
from panoptic_zoo.data import check
from panoptic_zoo.data.datasets.custom import register_from_config
from panoptic_zoo.engine import Trainer, setup_cfg
from panoptic_zoo.utils.config import shrink_to_test_size


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_photo_dataset = _load("make_photo_dataset", REPO / "tools" / "make_photo_dataset.py")
demo = _load("demo", REPO / "demo" / "demo.py")

METHOD_CONFIGS = [
    "panoptic_fpn_R_18.yaml",
    "upsnet_R_18.yaml",
    "panoptic_deeplab_R_18.yaml",
    "panoptic_fcn_R_18.yaml",
]
# The photos' classes: things person, cup, spoon, cat, rocket, helmet, tower, plate; stuff sky,
# wall, table, flag, ground.
THINGS, STUFF = 8, 5


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("photos")
    panoptic_json = make_photo_dataset.write_photo_dataset(root, scale=0.25)
    return {
        "root": str(root),
        "images": str(root / "images"),
        "json": str(panoptic_json),
        "pngs": str(root / "panoptic"),
    }


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """Derived semantic PNGs and check results in the test's own cache."""
    monkeypatch.setenv("PANOPTIC_ZOO_DATASETS", str(tmp_path / "cache"))


def _dataset_args(name: str, photos: dict[str, str]) -> list[str]:
    return ["--dataset", name, photos["images"], photos["json"], photos["pngs"]]


def _swap_opts(name: str) -> list[str]:
    """The dataset swap on a shapes method YAML: datasets, and the counts read from the data."""
    return [
        "DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", f"('{name}',)",
        "DATASETS.NUM_THING_CLASSES", "-1", "DATASETS.NUM_STUFF_CLASSES", "-1",
    ]  # fmt: skip


def _train_net_args(argv: list[str]) -> argparse.Namespace:
    from detectron2.engine import default_argument_parser

    from panoptic_zoo.data.datasets.custom import add_dataset_argument

    parser = default_argument_parser()
    add_dataset_argument(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize("config", METHOD_CONFIGS)
def test_register_check_train_evaluate_and_demo(config, photos, tmp_path, capsys):
    name = f"photos_{Path(config).stem}"
    args = _train_net_args(
        ["--config-file", str(CONFIGS / "shapes" / config), *_dataset_args(name, photos),
         *_swap_opts(name), "OUTPUT_DIR", str(tmp_path / "run")]  # fmt: skip
    )
    cfg = setup_cfg(args)
    # The dataset's counts reached the method's keys (the YAML names none).
    assert (cfg.DATASETS.NUM_THING_CLASSES, cfg.DATASETS.NUM_STUFF_CLASSES) == (THINGS, STUFF)
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == THINGS
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == STUFF + 1
    assert cfg.MODEL.UPSNET.NUM_STUFF_CLASSES == STUFF
    assert cfg.MODEL.PANOPTIC_DEEPLAB.NUM_THING_CLASSES == THINGS
    assert cfg.MODEL.PANOPTIC_FCN.NUM_STUFF_CLASSES == STUFF
    cfg.defrost()
    shrink_to_test_size(cfg)
    cfg.SOLVER.MAX_ITER = 2
    cfg.freeze()

    logged, results = train_and_read_results(cfg)  # checks the data first

    assert [row["iteration"] for row in logged if "total_loss" in row][-1] == 1  # 2 iterations
    assert_valid_evaluation(results, set(results))
    assert "panoptic_seg" in results
    out = tmp_path / "drawn"
    argv = ["--config-file", str(CONFIGS / "shapes" / config), *_dataset_args(name, photos),
            "--input", photos["images"], "--output", str(out), "--opts",
            "MODEL.WEIGHTS", str(tmp_path / "run" / "model_final.pth"), "MODEL.DEVICE", "cpu",
            "INPUT.MIN_SIZE_TEST", "72", "INPUT.MAX_SIZE_TEST", "128",
            *_swap_opts(name)]  # fmt: skip
    assert demo.main(argv) == 0
    assert f"classes of dataset {name}" in capsys.readouterr().out
    for image in Path(photos["images"]).iterdir():
        drawn = Image.open(out / f"{image.stem}.png")
        assert drawn.size == Image.open(image).size


def test_registered_from_config_with_derived_semantic_pngs(photos, tmp_path):
    cfg = get_cfg()
    cfg.DATASETS.REGISTER["photos_config"] = type(cfg)(
        {"IMAGE_ROOT": photos["images"], "PANOPTIC_JSON": photos["json"],
         "PANOPTIC_ROOT": photos["pngs"]}  # fmt: skip
    )
    assert register_from_config(cfg) == ["photos_config"]
    assert register_from_config(cfg) == ["photos_config"]  # the same files again: no error

    metadata = MetadataCatalog.get("photos_config")
    assert metadata.thing_classes == [
        "person", "cup", "spoon", "cat", "rocket", "helmet", "tower", "plate"
    ]  # fmt: skip
    assert metadata.stuff_classes == ["things", "sky", "wall", "table", "flag", "ground"]
    assert metadata.stuff_dataset_id_to_contiguous_id == {0: 0, 10: 1, 11: 2, 12: 3, 13: 4, 14: 5}
    # coffee: table (stuff 3) around a plate, a cup and a spoon (things: 0).
    [record] = [r for r in DatasetCatalog.get("photos_config") if "coffee" in r["file_name"]]
    labels = np.asarray(Image.open(record["sem_seg_file_name"]))
    png = np.asarray(Image.open(record["pan_seg_file_name"]).convert("RGB"), dtype=np.int64)
    ids = png[..., 0] + 256 * png[..., 1] + 65536 * png[..., 2]
    expected = np.full(ids.shape, 255)
    for segment in record["segments_info"]:
        expected[ids == segment["id"]] = 0 if segment["isthing"] else segment["category_id"]
    assert np.array_equal(labels, expected)
    assert set(np.unique(labels).tolist()) == {0, 3}
    assert Path(metadata.sem_seg_root, "DONE").is_file()  # cached: derived once


ALL_PROBLEMS = ("missing image", "unreadable image", "unknown PNG id", "wrong size")


def _broken_copy(photos, tmp_path, problems=ALL_PROBLEMS) -> Path:
    """A copy of the photos with ``problems``, each in another file."""
    root = Path(shutil.copytree(photos["root"], tmp_path / "broken"))
    if "missing image" in problems:
        (root / "images" / "chelsea.jpg").unlink()
    if "unreadable image" in problems:
        (root / "images" / "coffee.jpg").write_bytes(b"not a jpeg")
    if "unknown PNG id" in problems:
        png = root / "panoptic" / "rocket.png"
        pixels = np.asarray(Image.open(png).convert("RGB")).copy()
        pixels[0, 0] = (9, 9, 0)
        Image.fromarray(pixels).save(png)
    if "wrong size" in problems:
        content = json.loads((root / "panoptic.json").read_text())
        content["images"][0]["width"] += 5  # astronaut
        (root / "panoptic.json").write_text(json.dumps(content))
    return root


def test_check_lists_every_problem_with_file_and_fix(photos, tmp_path, capsys):
    root = _broken_copy(photos, tmp_path)
    argv = ["--dataset", "photos_broken", str(root / "images"), str(root / "panoptic.json"),
            str(root / "panoptic")]  # fmt: skip

    assert check.main(argv) == 1

    out = capsys.readouterr().out
    assert "4 problem(s) in 1 dataset(s)" in out
    expected = [
        ("chelsea.jpg", "does not exist"),
        ("coffee.jpg", "is not a readable image"),
        ("rocket.png", "appear in the PNG but not in its segments_info"),
        ("astronaut.jpg", "image is 128x128 (WxH) but the annotation JSON says 133x128"),
    ]
    lines = [line for line in out.splitlines() if line.startswith("  - ")]
    assert len(lines) == 4
    for file, problem in expected:
        [line] = [line for line in lines if file in line]
        assert problem in line and "fix:" in line
    # The summary table: images, segments per class, crowd, void.
    assert "dataset photos_broken: 4 images, 18 segments (0 crowd)" in out
    assert "  tower                           4" in out


def test_training_stops_before_the_first_iteration(photos, tmp_path):
    root = _broken_copy(photos, tmp_path)
    dataset = ["--dataset", "photos_training", str(root / "images"), str(root / "panoptic.json"),
               str(root / "panoptic")]  # fmt: skip
    argv = ["--config-file", str(CONFIGS / "shapes" / "panoptic_fpn_R_18.yaml"), *dataset,
            *_swap_opts("photos_training"), "OUTPUT_DIR", str(tmp_path / "run")]  # fmt: skip
    cfg = setup_cfg(_train_net_args(argv))
    cfg.defrost()
    shrink_to_test_size(cfg)
    cfg.SOLVER.MAX_ITER = 2
    cfg.freeze()

    with pytest.raises(check.DatasetProblemsError, match="has 4 problem") as error:
        train_and_read_results(cfg)
    assert "DATALOADER.SKIP_BAD_IMAGES" in str(error.value)
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_training_skips_bad_images_only_by_option(photos, tmp_path, caplog):
    root = _broken_copy(photos, tmp_path, ("missing image", "unknown PNG id"))
    dataset = ["--dataset", "photos_skipping", str(root / "images"), str(root / "panoptic.json"),
               str(root / "panoptic")]  # fmt: skip
    argv = ["--config-file", str(CONFIGS / "shapes" / "panoptic_fpn_R_18.yaml"), *dataset,
            *_swap_opts("photos_skipping"), "DATALOADER.SKIP_BAD_IMAGES", "True",
            "OUTPUT_DIR", str(tmp_path / "run")]  # fmt: skip
    cfg = setup_cfg(_train_net_args(argv))
    assert {Path(f).name for f in check.check_training_datasets(cfg)} == {
        "chelsea.jpg",
        "rocket.jpg",
    }
    assert "skipping 2 of the images of photos_skipping" in caplog.text
    # Training reads only the two good photos: one batch of both, no error from the others.
    cfg.defrost()
    shrink_to_test_size(cfg)
    cfg.SOLVER.MAX_ITER = 1
    cfg.DATASETS.TEST = ()
    cfg.freeze()
    trainer = Trainer(cfg)
    records = trainer._trainer.data_loader.dataset.records
    assert sorted(Path(d["file_name"]).name for d in records) == [
        "astronaut.jpg",
        "coffee.jpg",
    ]
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert trainer.iter == 1  # one iteration done


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["categories"][0].pop("isthing"), "categories[0] has no 'isthing' field"),
        (lambda c: c.pop("categories"), "has no 'categories' list"),
        (lambda c: c["categories"][1].update(id=1), "category ids must be unique"),
    ],
)
def test_bad_categories_are_named_at_registration(photos, tmp_path, edit, message):
    content = json.loads(Path(photos["json"]).read_text())
    edit(content)
    bad_json = tmp_path / "panoptic.json"
    bad_json.write_text(json.dumps(content))
    cfg = get_cfg()
    cfg.DATASETS.REGISTER["photos_bad"] = type(cfg)(
        {"IMAGE_ROOT": photos["images"], "PANOPTIC_JSON": str(bad_json),
         "PANOPTIC_ROOT": photos["pngs"]}  # fmt: skip
    )
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        register_from_config(cfg)
    assert str(bad_json) in str(error.value)


def test_register_node_with_missing_or_unknown_keys(photos):
    cfg = get_cfg()
    cfg.DATASETS.REGISTER["photos_typo"] = type(cfg)(
        {"IMAGE_ROOT": photos["images"], "PANOPTIC_JSN": photos["json"]}
    )
    with pytest.raises(ValueError, match=r"unknown keys \['PANOPTIC_JSN'\] / missing keys "
                       r"\['PANOPTIC_JSON', 'PANOPTIC_ROOT'\]"):  # fmt: skip
        register_from_config(cfg)


def test_class_counts_that_disagree_with_the_dataset_are_named(photos, tmp_path):
    base = ["--config-file", str(CONFIGS / "shapes" / "upsnet_R_18.yaml"),
            *_dataset_args("photos_counts", photos), "OUTPUT_DIR", str(tmp_path)]  # fmt: skip
    swap = _swap_opts("photos_counts")
    # The shapes counts (5 / 4) kept with the photos (8 / 5).
    with pytest.raises(ValueError, match="DATASETS.NUM_THING_CLASSES is 5 but dataset "
                       "'photos_counts' has 8"):  # fmt: skip
        setup_cfg(_train_net_args([*base, *swap[:4]]))
    # A method key overridden on its own, the counts read from the dataset at set-up.
    with pytest.raises(ValueError, match="MODEL.UPSNET.NUM_STUFF_CLASSES is 4, but "
                       "DATASETS.NUM_THING_CLASSES 8 and DATASETS.NUM_STUFF_CLASSES 5 make it 5"):  # fmt: skip
        setup_cfg(_train_net_args([*base, *swap, "MODEL.UPSNET.NUM_STUFF_CLASSES", "4"]))
    # A dataset count and a method key that disagree in one merge.
    with pytest.raises(ValueError, match="MODEL.ROI_HEADS.NUM_CLASSES is 3, but "
                       "DATASETS.NUM_THING_CLASSES 8"):  # fmt: skip
        setup_cfg(_train_net_args([*base, *swap[:4], "DATASETS.NUM_THING_CLASSES", "8",
                                   "DATASETS.NUM_STUFF_CLASSES", "5",
                                   "MODEL.ROI_HEADS.NUM_CLASSES", "3"]))  # fmt: skip


def test_pq_compute_cli_reads_the_ground_truth_of_a_registered_dataset(photos, tmp_path):
    from panoptic_zoo.evaluation import pq_compute

    config = tmp_path / "photos.yaml"
    config.write_text(
        "DATASETS:\n  REGISTER:\n    photos_cli:\n"
        f"      IMAGE_ROOT: {photos['images']}\n      PANOPTIC_JSON: {photos['json']}\n"
        f"      PANOPTIC_ROOT: {photos['pngs']}\n"
    )
    output = tmp_path / "pq.json"
    # The ground truth as its own prediction: PQ 1 over the 13 classes.
    argv = ["--dataset", "photos_cli", "--config-file", str(config), "--pred_json_file",
            photos["json"], "--pred_folder", photos["pngs"], "--output_json", str(output)]  # fmt: skip
    assert pq_compute.main(argv) == 0
    results = json.loads(output.read_text())
    assert results["All"]["pq"] == pytest.approx(1.0) and results["All"]["n"] == 13


def test_a_directory_named_as_an_image_is_found_before_training(photos, tmp_path, capsys):
    root = Path(shutil.copytree(photos["root"], tmp_path / "with_directory"))
    (root / "images" / "coffee.jpg").unlink()
    (root / "images" / "coffee.jpg").mkdir()
    argv = ["--dataset", "photos_directory", str(root / "images"), str(root / "panoptic.json"),
            str(root / "panoptic")]  # fmt: skip
    assert check.main(argv) == 1
    [line] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  - ")]
    assert "coffee.jpg" in line and "IsADirectoryError" in line and "fix:" in line


def _json_problems_copy(photos, tmp_path) -> Path:
    """A copy of the photos with three problems in the JSON, a missing and a broken image."""
    root = Path(shutil.copytree(photos["root"], tmp_path / "json_problems"))
    content = json.loads((root / "panoptic.json").read_text())
    [chelsea] = [image for image in content["images"] if image["file_name"] == "chelsea.jpg"]
    del chelsea["height"]
    by_png = {ann["file_name"]: ann for ann in content["annotations"]}
    by_png["coffee.png"]["segments_info"][0]["category_id"] = 99
    rocket = by_png["rocket.png"]["segments_info"]
    rocket[1]["id"] = rocket[0]["id"]
    (root / "panoptic.json").write_text(json.dumps(content))
    (root / "images" / "astronaut.jpg").unlink()
    # The image of an annotation with a problem in its segments is still read.
    (root / "images" / "coffee.jpg").write_bytes(b"not a jpeg")
    return root


JSON_PROBLEMS = [
    ("panoptic.json", "image", "has no 'height' field"),
    ("panoptic.json", "coffee.png) segments_info[0]", "category_id 99"),
    ("panoptic.json", "rocket.png) segments_info[1]", "segment ids must be unique"),
    ("astronaut.jpg", "", "does not exist"),
    ("coffee.jpg", "", "is not a readable image"),
]


def test_problems_of_the_json_and_the_files_are_listed_at_once(photos, tmp_path, capsys):
    root = _json_problems_copy(photos, tmp_path)
    dataset = [str(root / "images"), str(root / "panoptic.json"), str(root / "panoptic")]

    # The command, on the files alone.
    assert check.main(["--dataset", "photos_json_problems", *dataset]) == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  - ")]
    assert len(lines) == len(JSON_PROBLEMS)
    for line, (file, record, problem) in zip(lines, JSON_PROBLEMS):
        assert f"{file}: " in line and record in line and problem in line and "fix:" in line

    # Training: the same problems before any iteration; those of the JSON cannot be skipped.
    argv = ["--config-file", str(CONFIGS / "shapes" / "panoptic_fpn_R_18.yaml"),
            "--dataset", "photos_json_training", *dataset, *_swap_opts("photos_json_training"),
            "DATALOADER.SKIP_BAD_IMAGES", "True", "OUTPUT_DIR", str(tmp_path / "run")]  # fmt: skip
    cfg = setup_cfg(_train_net_args(argv))
    with pytest.raises(check.DatasetProblemsError, match="has 5 problem") as error:
        check.check_training_datasets(cfg)
    assert "cannot be skipped" in str(error.value)
    for file, record, problem in JSON_PROBLEMS:
        assert record in str(error.value) and problem in str(error.value)

    # The loader itself names every problem of the JSON, not only the first.
    with pytest.raises(ValueError, match="has 3 problems") as error:
        DatasetCatalog.get("photos_json_training")
    assert all(problem in str(error.value) for _, _, problem in JSON_PROBLEMS[:3])


def test_check_command_on_files_imports_neither_torch_nor_detectron2(photos):
    # As `python -m panoptic_zoo.data.check --dataset ...` runs, then what it imported.
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['check', '--dataset', 'photos', *{_dataset_args('photos', photos)[2:]!r}]\n"
        "try:\n"
        "    runpy.run_module('panoptic_zoo.data.check', run_name='__main__', alter_sys=True)\n"
        "except SystemExit as e:\n"
        "    status = e.code\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'detectron2'))\n"
        "print('status', status, 'heavy', heavy)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert "0 problem(s) in 1 dataset(s)" in run.stdout
    assert run.stdout.splitlines()[-1] == "status 0 heavy []"


def test_benchmark_takes_a_dataset_and_checks_its_class_counts(photos, tmp_path, monkeypatch):
    from panoptic_zoo.benchmark import cli
    from panoptic_zoo.benchmark.settings import image_source, load_config

    loaded = {}

    def load_only(configs, weights, settings, command):
        # As the run begins: the benchmark image is the evaluated dataset's first.
        assert Path(image_source(settings)).parent == Path(photos["images"])
        for config in configs:
            loaded[config] = load_config(config, settings)
        return {}, {}

    monkeypatch.setattr(cli, "run_benchmark", load_only)
    config = str(CONFIGS / "shapes" / "upsnet_R_18.yaml")
    argv = ["--configs", config, "--tiny", "--dataset", "photos_benchmark", photos["images"],
            photos["json"], photos["pngs"], "--eval-dataset", "photos_benchmark",
            "--output-dir", str(tmp_path)]  # fmt: skip
    cli.main([*argv, "--opts", "DATASETS.NUM_THING_CLASSES", "-1",
              "DATASETS.NUM_STUFF_CLASSES", "-1"])  # fmt: skip
    cfg = loaded[config]
    assert cfg.DATASETS.TEST == ("photos_benchmark",)
    assert (cfg.MODEL.ROI_HEADS.NUM_CLASSES, cfg.MODEL.UPSNET.NUM_STUFF_CLASSES) == (THINGS, STUFF)
    # The shapes counts kept: named before any model is built.
    with pytest.raises(ValueError, match="DATASETS.NUM_THING_CLASSES is 5 but dataset "
                       "'photos_benchmark' has 8"):  # fmt: skip
        cli.main(argv)


def test_the_training_check_reads_a_dataset_once_per_content(photos, tmp_path, monkeypatch):
    root = Path(shutil.copytree(photos["root"], tmp_path / "cached"))
    argv = ["--config-file", str(CONFIGS / "shapes" / "panoptic_fpn_R_18.yaml"),
            "--dataset", "photos_cached", str(root / "images"), str(root / "panoptic.json"),
            str(root / "panoptic"), *_swap_opts("photos_cached"),
            "OUTPUT_DIR", str(tmp_path / "run")]  # fmt: skip
    cfg = setup_cfg(_train_net_args(argv))
    checked = []
    check_dataset = check.check_dataset
    monkeypatch.setattr(
        check,
        "check_dataset",
        lambda name, *a, **k: checked.append(name) or check_dataset(name, *a, **k),
    )

    assert check.check_training_datasets(cfg) == set()
    assert check.check_training_datasets(cfg) == set()
    assert checked == ["photos_cached"]  # the second time from the cache

    # A file changed: read again, and its new problem found.
    png = root / "panoptic" / "rocket.png"
    pixels = np.asarray(Image.open(png).convert("RGB")).copy()
    pixels[0, 0] = (9, 9, 0)
    Image.fromarray(pixels).save(png)
    with pytest.raises(check.DatasetProblemsError, match="rocket.png"):
        check.check_training_datasets(cfg)
    assert checked == ["photos_cached", "photos_cached"]


def test_check_measures_the_pixel_statistics_of_a_config(photos):
    result = check.check_files("photos_pixels", photos["images"], photos["json"], photos["pngs"])
    pixels = np.concatenate(
        [
            np.asarray(Image.open(p).convert("RGB")).reshape(-1, 3)
            for p in Path(photos["images"]).iterdir()
        ]
    )[:, ::-1].astype(
        np.float64
    )  # BGR, as MODEL.PIXEL_MEAN
    mean, std = result.pixel_statistics()
    np.testing.assert_allclose(mean, pixels.mean(axis=0), atol=1e-3)
    np.testing.assert_allclose(std, pixels.std(axis=0), atol=1e-3)
    assert f"MODEL.PIXEL_MEAN {mean} MODEL.PIXEL_STD {std}" in result.summary()
