"""
Panoptic FPN end to end through the real trainer, mapper, evaluators and command line:
train a few iterations, evaluate PQ/AP/mIoU, resume from the checkpoint, evaluate from the
command line and train with 2 gloo processes (every method's output contract and batch-of-two
inference: tests/modeling/test_method_contract.py).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from detectron2.utils.events import EventStorage
from panoptic_testing import (
    CONFIGS,
    PQ_KEYS,
    REPO,
    assert_valid_evaluation,
    shrunk_shapes_cfg,
    train_and_read_results,
)

from panoptic_zoo.engine import Trainer
from panoptic_zoo.engine.trainer import EVAL_RESULTS_FILE


CONFIG = "panoptic_fpn_R_18.yaml"


def test_train_evaluate_resume(tiny_shapes, tmp_path):
    cfg = shrunk_shapes_cfg(CONFIG, tiny_shapes, tmp_path, max_iter=3)
    cfg.SOLVER.CHECKPOINT_PERIOD = 2
    logged, results = train_and_read_results(cfg)

    files = set(os.listdir(tmp_path))
    assert {"model_0000001.pth", "model_final.pth", "last_checkpoint", "metrics.json"} <= files
    assert any(name.startswith("events.out.tfevents") for name in files)
    losses = [row["total_loss"] for row in logged if "total_loss" in row]
    assert losses and all(math.isfinite(loss) for loss in losses)
    assert_valid_evaluation(results, {"panoptic_seg", "bbox", "segm", "sem_seg"})

    # Resume: a new trainer continues from the last checkpoint (iteration 3) to iteration 5.
    cfg.defrost()
    cfg.SOLVER.MAX_ITER = 5
    resumed = Trainer(cfg)
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 3
    final_before = torch.load(tmp_path / "model_final.pth", weights_only=True)["model"]
    assert all(torch.equal(v, resumed.model.state_dict()[k]) for k, v in final_before.items())
    resumed.train()
    assert torch.load(tmp_path / "model_final.pth", weights_only=True)["iteration"] == 4


def test_training_step_on_batch_of_two_has_all_losses(tiny_shapes, tmp_path):
    cfg = shrunk_shapes_cfg(CONFIG, tiny_shapes, tmp_path)
    model = Trainer.build_model(cfg)
    batch = next(iter(Trainer.build_train_loader(cfg)))
    assert len(batch) == 2
    with EventStorage():
        losses = model(batch)
    expected = {"loss_sem_seg", "loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg",
                "loss_mask"}  # fmt: skip
    assert set(losses) == expected
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def _run(args, env, timeout=600):
    result = subprocess.run(
        [sys.executable, str(REPO / "train_net.py"), *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


def test_command_line_two_process_training_then_eval_only(tmp_path):
    """train_net.py with --num-gpus 2 on CPU (2 gloo processes), then --eval-only."""
    env = dict(os.environ, PANOPTIC_ZOO_DATASETS=str(tmp_path / "datasets"), OMP_NUM_THREADS="1")
    out = tmp_path / "run"
    shrink = [
        "MODEL.DEVICE", "cpu", "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "4",
        "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "()", "INPUT.MIN_SIZE_TRAIN", "(64,)",
        "INPUT.MAX_SIZE_TRAIN", "128", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "128",
        "DATALOADER.NUM_WORKERS", "0", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "32",
        "MODEL.RPN.POST_NMS_TOPK_TEST", "16", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16",
    ]  # fmt: skip
    config = str(CONFIGS / "shapes" / CONFIG)
    # Training evaluates on the validation split at the end; 2 processes share that work.
    train = _run(["--config-file", config, "--num-gpus", "2", *shrink, "OUTPUT_DIR", str(out)], env)
    log = (out / "log.txt").read_text()
    assert "Rank of current process: 0. World size: 2" in log
    assert (out / "model_final.pth").is_file()
    trained = json.loads((out / EVAL_RESULTS_FILE).read_text())
    assert PQ_KEYS <= set(trained["panoptic_seg"]), train.stdout[-2000:]

    # Both processes trained the same replica: the checkpoint loads into a fresh model.
    os.remove(out / EVAL_RESULTS_FILE)
    _run(["--config-file", config, "--eval-only", *shrink, "MODEL.WEIGHTS",
          str(out / "model_final.pth"), "OUTPUT_DIR", str(out)], env)  # fmt: skip
    evaluated = json.loads((out / EVAL_RESULTS_FILE).read_text())
    # --eval-only runs the inference changes (channels-last backbone): equal up to rounding.
    assert evaluated["panoptic_seg"] == pytest.approx(trained["panoptic_seg"], rel=1e-4, abs=1e-4)
