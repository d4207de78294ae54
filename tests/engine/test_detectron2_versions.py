"""
What the trainer does the same on the patched Detectron2 v0.6 build and on upstream main compiled
from source (tools/check_upstream_detectron2.sh runs these there):

* resuming loads the optimizer exactly once, and a checkpoint without the optimizer state (what
  plain detectron2 0.6 writes) resumes with a warning instead of a KeyError;
* the non-finite loss check runs in the training thread, before the optimizer step, also when
  detectron2 writes its metrics from another thread (``async_write_metrics``, main only);
* DistributedDataParallel gets no device_ids for a CPU model.
"""

from __future__ import annotations

import inspect
import logging

import pytest
import torch
from detectron2.config import CfgNode
from detectron2.engine import SimpleTrainer
from detectron2.utils.events import EventStorage
from panoptic_testing import shrunk_shapes_cfg

from panoptic_zoo.engine import Trainer
from panoptic_zoo.engine.train_loop import FiniteLossSimpleTrainer, NonFiniteLossError
from panoptic_zoo.engine.trainer import ddp_device_ids

CONFIG = "panoptic_fpn_R_18.yaml"


def count_calls(monkeypatch, obj, name: str) -> list:
    calls = []
    method = getattr(obj, name)
    monkeypatch.setattr(obj, name, lambda *args, **kwargs: calls.append(1) or method(*args, **kwargs))
    return calls


def test_resume_loads_optimizer_once_and_accepts_checkpoint_without_it(
    tiny_shapes, tmp_path, monkeypatch, caplog
):
    cfg = shrunk_shapes_cfg(CONFIG, tiny_shapes, tmp_path / "run", max_iter=1)
    cfg.DATASETS.TEST = ()
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()  # one SGD step with momentum: the optimizer has state to restore
    saved = torch.load(tmp_path / "run" / "model_final.pth", weights_only=True)
    saved_optimizer = saved["trainer"]["_trainer"]["optimizer"]
    assert saved_optimizer["state"], "no momentum buffers to compare"

    resumed = Trainer(cfg)
    loads = count_calls(monkeypatch, resumed._trainer.optimizer, "load_state_dict")
    resumed.resume_or_load(resume=True)
    assert len(loads) == 1
    assert resumed.start_iter == 1
    restored = resumed._trainer.optimizer.state_dict()
    assert restored["param_groups"] == saved_optimizer["param_groups"]
    for key, state in saved_optimizer["state"].items():
        assert torch.equal(restored["state"][key]["momentum_buffer"], state["momentum_buffer"])

    # The same checkpoint as plain detectron2 0.6 writes it: no "_trainer" entry.
    plain_cfg = cfg.clone()
    plain_cfg.OUTPUT_DIR = str(tmp_path / "plain")
    (tmp_path / "plain").mkdir()
    del saved["trainer"]["_trainer"]
    torch.save(saved, tmp_path / "plain" / "model_final.pth")
    (tmp_path / "plain" / "last_checkpoint").write_text("model_final.pth")
    plain = Trainer(plain_cfg)
    loads = count_calls(monkeypatch, plain._trainer.optimizer, "load_state_dict")
    with caplog.at_level(logging.WARNING, logger="panoptic_zoo.engine.trainer"):
        plain.resume_or_load(resume=True)
    assert not loads and plain.start_iter == 1
    assert "no optimizer state" in caplog.text


class NaNLossAtIteration1(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(2))

    def forward(self, batch):
        scale = float("nan") if batch == 1 else 1.0
        return {"loss_a": self.weight.sum() * scale, "loss_b": self.weight.mean()}


ASYNC_METRICS = "async_write_metrics" in inspect.signature(SimpleTrainer.__init__).parameters


@pytest.mark.parametrize(
    "options",
    [
        {},
        pytest.param(
            {"async_write_metrics": True},
            marks=pytest.mark.skipif(not ASYNC_METRICS, reason="this detectron2 has no option"),
        ),
    ],
)
def test_non_finite_loss_raises_in_the_training_thread(options):
    model = NaNLossAtIteration1()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    trainer = FiniteLossSimpleTrainer(model, [0, 1], optimizer, **options)
    with EventStorage(0) as trainer.storage:
        storage = trainer.storage
        trainer.iter = storage.iter = 0
        trainer.run_step()
        after_first_step = model.weight.detach().clone()
        # SGD with lr 0.5 on loss_a + loss_b: each weight moves by 0.5 * (1 + 0.5).
        assert after_first_step.tolist() == [0.25, 0.25]
        trainer.iter = storage.iter = 1
        with pytest.raises(NonFiniteLossError, match=r"iteration 1: loss_a = nan .*loss_b = 0\.25"):
            trainer.run_step()
        trainer.after_train()  # waits for metrics written by another thread
        # Only iteration 0 was logged: loss_a + loss_b = 2 + 1.
        assert storage.history("total_loss").values() == [(3.0, 0)]
    assert torch.equal(model.weight.detach(), after_first_step)  # no step with the NaN loss
    # The check's hook lives for one step only.
    assert not model._forward_hooks


def test_ddp_device_ids():
    cfg = CfgNode({"MODEL": CfgNode({"DEVICE": "cpu"})})
    assert ddp_device_ids(cfg) is None
    cfg.MODEL.DEVICE = "cuda"
    assert ddp_device_ids(cfg) == [0]  # this process's GPU: local rank 0 outside launch()
