"""demo/demo.py on generated images, a folder and a 3-frame video, with random weights on the CPU."""

from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest
from panoptic_testing import CONFIGS, REPO

spec = importlib.util.spec_from_file_location("demo", REPO / "demo" / "demo.py")
demo = importlib.util.module_from_spec(spec)
spec.loader.exec_module(demo)

# Random weights (no MODEL.WEIGHTS), small test-time inputs.
OPTS = ["--opts", "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "64",
        "INPUT.MAX_SIZE_TEST", "96"]  # fmt: skip
CONFIG = ["--config-file", str(CONFIGS / "shapes" / "panoptic_fpn_R_18.yaml")]


def _image(seed: int, height: int = 48, width: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


def test_images_folder_and_video(tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    for i in range(2):
        cv2.imwrite(str(folder / f"picture{i}.png"), _image(i))
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (64, 48))
    for i in range(3):
        writer.write(_image(10 + i))
    writer.release()
    out = tmp_path / "out"

    assert (
        demo.main([*CONFIG, "--input", str(folder), str(video), "--output", str(out), *OPTS]) == 0
    )

    for i in range(2):
        drawn = cv2.imread(str(out / f"picture{i}.png"))
        assert drawn.shape == (48, 64, 3)
    capture = cv2.VideoCapture(str(out / "clip.mp4"))
    frames = 0
    while capture.read()[0]:
        frames += 1
    assert frames == 3


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.jpg", "does not exist"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "has no images"),
        (lambda d: (d / "notes.txt").write_text("x") and d / "notes.txt", "unknown kind"),
        (
            lambda d: (d / "broken.mp4").write_bytes(b"not a video") and d / "broken.mp4",
            "cannot be opened",
        ),
    ],
)
def test_unreadable_inputs_are_named(tmp_path, capsys, make, message):
    path = make(tmp_path)
    assert demo.main([*CONFIG, "--input", str(path), "--output", str(tmp_path / "out"), *OPTS]) == 2
    error = capsys.readouterr().err
    assert message in error and path.name in error


def test_folder_goes_on_past_an_unreadable_image(tmp_path, capsys):
    folder = tmp_path / "pictures"
    folder.mkdir()
    cv2.imwrite(str(folder / "a_good.png"), _image(0))
    (folder / "b_broken.png").write_bytes(b"not a png")
    cv2.imwrite(str(folder / "c_good.png"), _image(1))
    out = tmp_path / "out"

    assert demo.main([*CONFIG, "--input", str(folder), "--output", str(out), *OPTS]) == 1

    assert sorted(p.name for p in out.iterdir()) == ["a_good.png", "c_good.png"]
    error = capsys.readouterr().err
    assert "skipped 1 unreadable image" in error and "b_broken.png" in error
    assert "not a readable image" in error


@pytest.mark.parametrize(
    "opts, message",
    [
        (["DATASETS.TEST", "('not_registered',)"], "'not_registered' is not registered"),
        (["DATASETS.TEST", "()"], "DATASETS.TEST is empty"),
        # A model built for 3 thing classes, drawn with the shapes dataset's 5.
        (["MODEL.ROI_HEADS.NUM_CLASSES", "3"], "MODEL.ROI_HEADS.NUM_CLASSES is 3"),
    ],
)
def test_dataset_classes_checked_before_the_model_is_loaded(tmp_path, capsys, opts, message):
    image = tmp_path / "picture.png"
    cv2.imwrite(str(image), _image(0))
    # Weights that do not exist: the check must stop the demo before they are read.
    args = [*CONFIG, "--input", str(image), "--output", str(tmp_path / "out"), *OPTS, *opts]
    args[args.index("MODEL.WEIGHTS") + 1] = str(tmp_path / "missing.pth")

    assert demo.main(args) == 2

    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_onnxruntime_backend_draws_what_eager_draws(tmp_path):
    """The demo on an ONNX export of the same weights: the same drawing."""
    import torch
    from detectron2.modeling import build_model

    from panoptic_zoo.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(CONFIG[1])
    cfg.MODEL.DEVICE = "cpu"
    weights = tmp_path / "weights.pth"
    torch.save({"model": build_model(cfg).state_dict()}, weights)
    opts = [*OPTS, "MODEL.WEIGHTS", str(weights)]
    export = importlib.util.spec_from_file_location("export", REPO / "tools" / "export_model.py")
    export_model = importlib.util.module_from_spec(export)
    export.loader.exec_module(export_model)
    network = tmp_path / "net.onnx"
    assert export_model.main([*CONFIG, "--format", "onnx", "--output", str(network), "--dynamic",
                              *opts]) == 0  # fmt: skip
    cv2.imwrite(str(tmp_path / "picture.png"), _image(3, 47, 69))
    drawn = {}
    for backend in ("eager", "onnxruntime"):
        extra = [] if backend == "eager" else ["--backend", backend, "--export", str(network)]
        out = tmp_path / backend
        argv = [*CONFIG, "--input", str(tmp_path / "picture.png"), "--output", str(out), *extra]
        assert demo.main([*argv, *opts]) == 0
        drawn[backend] = cv2.imread(str(out / "picture.png"))
    assert drawn["eager"].shape == (47, 69, 3)
    assert np.array_equal(drawn["eager"], drawn["onnxruntime"])


def test_backend_needs_its_export(capsys):
    with pytest.raises(SystemExit):
        demo.parse_args(
            [*CONFIG, "--input", "x.png", "--output", "out", "--backend", "onnxruntime"]
        )
    assert "--export names the exported network" in capsys.readouterr().err
