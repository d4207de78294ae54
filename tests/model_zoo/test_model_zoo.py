"""
The model zoo: configs and checkpoints by name from any working directory, clear errors naming
what to run, and tools/train_model_zoo.py training (or taking a finished run), installing the
weights with their sha256 and writing the MODEL_ZOO.md row.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from detectron2.modeling import build_model
from panoptic_testing import REPO

from panoptic_zoo import model_zoo
from panoptic_zoo.model_zoo.table import TABLE_END, TABLE_START, read_entries
from panoptic_zoo.utils.checksum import sha256_of

spec = importlib.util.spec_from_file_location(
    "train_model_zoo", REPO / "tools" / "train_model_zoo.py"
)
train_model_zoo = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train_model_zoo)

CONFIG = "shapes/panoptic_fpn_R_18.yaml"


def _model():
    cfg = model_zoo.get_config(CONFIG)
    cfg.MODEL.DEVICE = "cpu"
    return build_model(cfg)


@pytest.fixture
def zoo(tmp_path, monkeypatch):
    monkeypatch.setenv("PANOPTIC_ZOO_MODEL_ZOO", str(tmp_path / "zoo"))
    monkeypatch.chdir(tmp_path)  # configs are found from any working directory
    return tmp_path / "zoo"


def test_config_files_by_name(zoo):
    assert model_zoo.get_config_file(CONFIG) == str(REPO / "configs" / CONFIG)
    with pytest.raises(FileNotFoundError, match="shapes/upsnet_R_18.yaml"):
        model_zoo.get_config_file("shapes/no_such_config.yaml")
    for bad in ("/etc/passwd.yaml", "../configs/shapes/panoptic_fpn_R_18.yaml", "shapes/x.yml"):
        with pytest.raises(ValueError, match="relative to"):
            model_zoo.get_config_file(bad)


def test_missing_checkpoint_names_path_and_command(zoo):
    expected = zoo / "shapes" / "panoptic_fpn_R_18" / "model_final.pth"
    with pytest.raises(model_zoo.CheckpointNotInstalledError) as error:
        model_zoo.get(CONFIG, trained=True)
    assert str(expected) in str(error.value)
    assert f"python tools/train_model_zoo.py --config {CONFIG}" in str(error.value)


def test_get_loads_the_installed_checkpoint(zoo):
    torch.manual_seed(0)
    trained = _model()
    path = model_zoo.checkpoint_path(CONFIG)
    path.parent.mkdir(parents=True)
    torch.save({"model": trained.state_dict()}, path)

    assert model_zoo.get_checkpoint_path(CONFIG) == str(path)
    model = model_zoo.get(CONFIG, trained=True)
    assert not model.training
    for key, value in trained.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    untrained = model_zoo.get(CONFIG, trained=False)
    assert not torch.equal(untrained.state_dict()["sem_seg_head.predictor.weight"],
                           trained.state_dict()["sem_seg_head.predictor.weight"])  # fmt: skip


def _docs(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "MODEL_ZOO.md").write_text(
        f"# Model zoo\n\nintro\n\n{TABLE_START}\n{TABLE_END}\n\nafter\n"
    )
    return docs


def test_publish_a_finished_run(zoo, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    model = _model()
    torch.save(
        {"model": model.state_dict(), "optimizer": {"state": {}}, "iteration": 799},
        run / "model_final.pth",
    )
    results = {"panoptic_seg": {"PQ": 42.44, "SQ": 72.4, "RQ": 48.2}, "bbox": {"AP": 6.3},
               "segm": {"AP": 4.6}, "sem_seg": {"mIoU": 87.4}}  # fmt: skip
    (run / "eval_results.json").write_text(json.dumps(results))
    (run / "log.txt").write_text("[x] Total training time: 0:08:11 (0:00:05 on hooks)\n")
    run_config = model_zoo.get_config(CONFIG).dump()
    (run / "config.yaml").write_text(run_config)
    docs = _docs(tmp_path)
    argv = ["--config", CONFIG, "--from-output", str(run), "--docs-dir", str(docs),
            "--measured", "test machine", "MODEL.DEVICE", "cpu"]  # fmt: skip

    assert train_model_zoo.main(argv) == 0
    installed = model_zoo.checkpoint_path(CONFIG)
    saved = torch.load(installed, weights_only=True)
    assert set(saved) == {"model", "__author__"}  # no optimizer state
    [entry] = read_entries(docs / "model_zoo.json")
    assert entry.sha256 == sha256_of(installed)
    assert (entry.pq, entry.box_ap, entry.mask_ap, entry.miou) == (42.44, 6.3, 4.6, 87.4)
    assert entry.train_time == "8 min 11 s"
    assert entry.backbone == "R-18-FPN (scratch)" and entry.method == "Panoptic FPN"
    text = (docs / "MODEL_ZOO.md").read_text()
    assert "| 42.4 | 72.4 | 48.2 | 6.3 / 4.6 | 87.4 |" in text
    assert text.startswith("# Model zoo\n\nintro") and text.endswith("after\n")

    results["panoptic_seg"]["PQ"] = 50.0  # publishing again replaces the row
    (run / "eval_results.json").write_text(json.dumps(results))
    assert train_model_zoo.main(argv) == 0
    assert [e.pq for e in read_entries(docs / "model_zoo.json")] == [50.0]
    assert (run / "config.yaml").read_text() == run_config  # the run's own file, untouched


def _finished_run(run, cfg, iteration):
    run.mkdir()
    torch.save({"model": _model().state_dict(), "iteration": iteration}, run / "model_final.pth")
    (run / "eval_results.json").write_text(json.dumps({"panoptic_seg": {"PQ": 1.0}}))
    (run / "config.yaml").write_text(cfg.dump())


def test_a_run_of_another_dataset_or_schedule_is_refused(zoo, tmp_path, capsys):
    # The case: a 20-class 30-iteration run on another dataset.
    other = model_zoo.get_config(CONFIG)
    other.merge_from_list(["DATASETS.NUM_THING_CLASSES", 12, "DATASETS.NUM_STUFF_CLASSES", 8,
                           "SOLVER.MAX_ITER", 30, "DATASETS.TRAIN", ("photos_train",)])  # fmt: skip
    run = tmp_path / "run"
    _finished_run(run, other, iteration=29)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    docs = _docs(tmp_path)
    argv = ["--config", CONFIG, "--from-output", str(run), "--docs-dir", str(docs),
            "MODEL.DEVICE", "cpu"]  # fmt: skip

    assert train_model_zoo.main(argv) == 2

    error = capsys.readouterr().err
    for key in ("DATASETS.TRAIN", "DATASETS.NUM_THING_CLASSES", "MODEL.ROI_HEADS.NUM_CLASSES",
                "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "SOLVER.MAX_ITER", "iteration 30"):  # fmt: skip
        assert key in error
    assert not (docs / "model_zoo.json").exists()
    assert not model_zoo.checkpoint_path(CONFIG).exists()
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_a_run_stopped_early_is_refused(zoo, tmp_path, capsys):
    run = tmp_path / "run"
    _finished_run(run, model_zoo.get_config(CONFIG), iteration=99)
    argv = ["--config", CONFIG, "--from-output", str(run), "--docs-dir", str(_docs(tmp_path)),
            "MODEL.DEVICE", "cpu"]  # fmt: skip
    assert train_model_zoo.main(argv) == 2
    assert "model_final.pth is of iteration 100, SOLVER.MAX_ITER is 800" in capsys.readouterr().err


def test_a_run_without_its_config_is_refused(zoo, tmp_path, capsys):
    run = tmp_path / "run"
    _finished_run(run, model_zoo.get_config(CONFIG), iteration=799)
    (run / "config.yaml").unlink()
    argv = ["--config", CONFIG, "--from-output", str(run), "--docs-dir", str(_docs(tmp_path)),
            "MODEL.DEVICE", "cpu"]  # fmt: skip
    assert train_model_zoo.main(argv) == 2
    assert "config.yaml does not exist" in capsys.readouterr().err
