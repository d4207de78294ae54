"""
Training that stops abnormally loses nothing and saves nothing corrupt:

* a run killed with SIGKILL at a random moment after its first checkpoint, then resumed with
  ``train_net.py --resume``, ends with exactly the weights, optimizer state and evaluation of an
  uninterrupted run (CPU, fixed seed; the two runs even use different DATALOADER.NUM_WORKERS);
* a non-finite loss stops training with an error naming the term and the iteration, before the
  optimizer step, and no checkpoint is written from then on.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from detectron2.utils.events import get_event_storage
from panoptic_testing import REPO, shrunk_shapes_cfg

from panoptic_zoo.engine import Trainer
from panoptic_zoo.engine.train_loop import NonFiniteLossError
from panoptic_zoo.engine.trainer import EVAL_RESULTS_FILE

CONFIG = "panoptic_fpn_R_18.yaml"
TRAIN_NET = Path(__file__).with_name("train_net_tiny_shapes.py")
MAX_ITER = 7
CHECKPOINT_PERIOD = 2  # checkpoints after iterations 1, 3, 5 and the final one (6)


def write_config(tiny_shapes, path: Path) -> Path:
    cfg = shrunk_shapes_cfg(CONFIG, tiny_shapes, path.parent, max_iter=MAX_ITER)
    cfg.SOLVER.CHECKPOINT_PERIOD = CHECKPOINT_PERIOD
    path.write_text(cfg.dump())
    return path


def train_net(tiny_shapes, config: Path, output_dir: Path, *options: str) -> subprocess.Popen:
    """Start the real command line on the tiny dataset; its log goes to output_dir/stdout.txt."""
    output_dir.mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]),
    )
    command = [sys.executable, str(TRAIN_NET), tiny_shapes["root"], "--config-file", str(config),
               *options, "OUTPUT_DIR", str(output_dir)]  # fmt: skip
    with open(output_dir / "stdout.txt", "ab") as log:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def finish(process: subprocess.Popen, output_dir: Path) -> None:
    assert process.wait(timeout=300) == 0, (output_dir / "stdout.txt").read_text()[-4000:]


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"training ended before {path.name} appeared"
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout} s"
        time.sleep(0.02)


def test_killed_run_resumes_to_the_uninterrupted_result(tiny_shapes, tmp_path):
    config = write_config(tiny_shapes, tmp_path / "config.yaml")
    uninterrupted_dir, interrupted_dir = tmp_path / "uninterrupted", tmp_path / "interrupted"
    # Both at once (2 cores): the uninterrupted run with the mapper in the main process, the
    # interrupted one with a worker process. Both must see the same data.
    uninterrupted = train_net(tiny_shapes, config, uninterrupted_dir, "DATALOADER.NUM_WORKERS", "0")
    interrupted = train_net(tiny_shapes, config, interrupted_dir, "DATALOADER.NUM_WORKERS", "1")

    wait_for(interrupted_dir / "last_checkpoint", interrupted)
    delay = random.uniform(0.0, 1.5)  # anywhere in the next few iterations, saves included
    time.sleep(delay)
    interrupted.send_signal(signal.SIGKILL)
    assert interrupted.wait(timeout=60) == -signal.SIGKILL, "training ended before the kill"
    last = (interrupted_dir / "last_checkpoint").read_text()
    assert last != "model_final.pth", f"killed {delay:.2f} s after the first checkpoint: too late"
    resumed_from = torch.load(interrupted_dir / last, weights_only=True)["iteration"]

    finish(train_net(tiny_shapes, config, interrupted_dir, "--resume"), interrupted_dir)
    finish(uninterrupted, uninterrupted_dir)

    log = (interrupted_dir / "log.txt").read_text()
    assert f"Starting training from iteration {resumed_from + 1}" in log, f"delay {delay:.2f} s"
    final = [torch.load(d / "model_final.pth", weights_only=True)
             for d in (uninterrupted_dir, interrupted_dir)]  # fmt: skip
    assert final[0]["iteration"] == final[1]["iteration"] == MAX_ITER - 1
    assert_same_tensors(final[0]["model"], final[1]["model"], f"delay {delay:.2f} s")
    optimizers = [f["trainer"]["_trainer"]["optimizer"] for f in final]
    assert optimizers[0]["param_groups"] == optimizers[1]["param_groups"]
    for key, state in optimizers[0]["state"].items():
        assert_same_tensors(state, optimizers[1]["state"][key], f"optimizer state {key}")
    results = [json.loads((d / EVAL_RESULTS_FILE).read_text())
               for d in (uninterrupted_dir, interrupted_dir)]  # fmt: skip
    assert results[0] == results[1] and "panoptic_seg" in results[0]


def assert_same_tensors(expected: dict, actual: dict, context: str) -> None:
    assert expected.keys() == actual.keys()
    different = [k for k, v in expected.items() if not torch.equal(v, actual[k])]
    assert not different, f"{len(different)} tensors differ ({context}), e.g. {different[:3]}"


def nan_semantic_loss_at_iteration_1(module, inputs, losses):
    """A forward hook that makes the semantic loss NaN at iteration 1 only."""
    if module.training and get_event_storage().iter == 1:
        return {**losses, "loss_sem_seg": losses["loss_sem_seg"] * float("nan")}
    return losses


def test_non_finite_loss_stops_training_and_saves_nothing_after(tiny_shapes, tmp_path):
    cfg = shrunk_shapes_cfg(CONFIG, tiny_shapes, tmp_path, max_iter=3)
    cfg.SOLVER.CHECKPOINT_PERIOD = 1
    cfg.DATASETS.TEST = ()
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.model.register_forward_hook(nan_semantic_loss_at_iteration_1)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    with pytest.raises(NonFiniteLossError) as error:
        trainer.train()
    message = str(error.value)
    assert "iteration 1" in message and "loss_sem_seg = nan" in message
    assert "loss_mask = " in message  # the finite terms are listed too, for context

    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["model_0000000.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000000.pth"
    # The weights are those after iteration 0: the NaN step was never applied.
    saved = torch.load(tmp_path / "model_0000000.pth", weights_only=True)["model"]
    assert_same_tensors(saved, trainer.model.state_dict(), "weights after the NaN iteration")
    assert any(not torch.equal(before[k], v) for k, v in saved.items())  # training did happen
