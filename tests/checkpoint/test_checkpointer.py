"""
PanopticCheckpointer: atomic saves that survive a kill or a failed write, weights-only loading
with an explicit opt-in for pickled formats, clear reports of checkpoints that do not fit, and no
checkpoint of non-finite weights.
"""

from __future__ import annotations

import errno
import fractions
import io
import logging
import os
import pickle
import signal
import tempfile
from pathlib import Path

import pytest
import torch
from fuzz_testing import corrupt, fuzz_settings, fuzz_tally  # noqa: F401  (fixture)
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from panoptic_zoo.checkpoint import (
    CheckpointMismatchError,
    CheckpointWriteError,
    CorruptCheckpointError,
    PanopticCheckpointer,
    UnsafeCheckpointError,
    build_checkpointer,
)
from panoptic_zoo.config import get_cfg

OPT_IN = "MODEL.ALLOW_PICKLED_WEIGHTS True"


def tiny_model(hidden: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, hidden), nn.ReLU(), nn.Linear(hidden, 2))


def checkpointer(save_dir: Path, model: nn.Module | None = None, **kwargs) -> PanopticCheckpointer:
    return PanopticCheckpointer(model or tiny_model(), str(save_dir), **kwargs)


def files(directory: Path) -> set[str]:
    return set(os.listdir(directory))


def assert_message(error: pytest.ExceptionInfo, *parts) -> None:
    message = str(error.value)
    for part in parts:
        assert str(part) in message, f"{part!r} not in error message: {message}"


# ----------------------------------------------------------------------------------------------
# Saving


def test_save_writes_complete_file_then_pointer(tmp_path):
    saver = checkpointer(tmp_path)
    saver.save("model_0000001", iteration=1)
    assert files(tmp_path) == {"model_0000001.pth", "last_checkpoint"}  # no temporary file left
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    loaded = torch.load(tmp_path / "model_0000001.pth", weights_only=True)
    assert loaded["iteration"] == 1
    assert all(torch.equal(v, saver.model.state_dict()[k]) for k, v in loaded["model"].items())


def partial_torch_save(then):
    """A torch.save that writes half of the real bytes, then calls ``then()`` (a crash)."""
    real_save = torch.save

    def save(obj, f):
        buffer = io.BytesIO()
        real_save(obj, buffer)
        data = buffer.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        then()

    return save


@pytest.mark.parametrize(
    "error",
    [OSError(errno.ENOSPC, "No space left on device"), PermissionError(errno.EACCES, "denied")],
)
def test_failed_write_raises_and_keeps_previous_checkpoint(tmp_path, monkeypatch, error):
    saver = checkpointer(tmp_path)
    saver.save("model_0000001")
    before = (tmp_path / "model_0000001.pth").read_bytes()

    def fail():
        raise error

    monkeypatch.setattr(torch, "save", partial_torch_save(fail))
    with pytest.raises(CheckpointWriteError) as raised:
        saver.save("model_0000003")
    assert_message(
        raised, tmp_path / "model_0000003.pth", error.strerror,
        f"the latest checkpoint is still {tmp_path / 'model_0000001.pth'}",
    )  # fmt: skip
    assert files(tmp_path) == {"model_0000001.pth", "last_checkpoint"}
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert (tmp_path / "model_0000001.pth").read_bytes() == before


def test_failed_pointer_write_keeps_previous_pointer(tmp_path, monkeypatch):
    saver = checkpointer(tmp_path)
    saver.save("model_0000001")
    real_replace = os.replace

    def replace(src, dst):
        if str(dst).endswith("last_checkpoint"):
            raise OSError(errno.EIO, "Input/output error")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(CheckpointWriteError) as raised:
        saver.save("model_0000003")
    assert_message(raised, tmp_path / "last_checkpoint", "Input/output error")
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"


def test_kill_during_write_leaves_last_checkpoint_complete(tmp_path):
    """SIGKILL in the middle of writing the bytes of a checkpoint (a forked child process)."""
    saver = checkpointer(tmp_path)
    saver.save("model_0000001")
    pid = os.fork()
    if pid == 0:  # the child: its save is killed halfway through the file
        try:
            torch.save = partial_torch_save(lambda: os.kill(os.getpid(), signal.SIGKILL))
            saver.save("model_0000003")
        finally:
            os._exit(1)  # only reached if the kill did not happen
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL

    leftovers = files(tmp_path) - {"model_0000001.pth", "last_checkpoint"}
    assert len(leftovers) == 1 and not leftovers.pop().endswith(".pth")  # the partial temp file
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    resumed = checkpointer(tmp_path, tiny_model(hidden=4))
    assert resumed.resume_or_load("", resume=True) == {}  # every saved entry was consumed
    expected = torch.load(tmp_path / "model_0000001.pth", weights_only=True)["model"]
    assert all(torch.equal(v, resumed.model.state_dict()[k]) for k, v in expected.items())


def test_non_finite_weights_are_not_saved(tmp_path):
    saver = checkpointer(tmp_path)
    saver.save("model_0000001")
    with torch.no_grad():
        saver.model[2].bias[1] = float("nan")
        saver.model[0].weight[0, 0] = float("inf")
    with pytest.raises(FloatingPointError) as raised:
        saver.save("model_0000003", iteration=3)
    assert_message(
        raised, "model_0000003.pth at iteration 3", "0.weight, 2.bias", "NaN or infinite"
    )
    assert files(tmp_path) == {"model_0000001.pth", "last_checkpoint"}


# ----------------------------------------------------------------------------------------------
# Loading: weights only, unless opted in


class Payload:
    """Unpickling it would create ``marker``: the code execution weights-only loading prevents."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pth_with_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "malicious.pth"
    torch.save({"model": tiny_model().state_dict(), "extra": Payload(marker)}, path)
    with pytest.raises(UnsafeCheckpointError) as raised:
        checkpointer(tmp_path).load(str(path))
    assert_message(raised, path, "weights_only=True", "Unsupported global", OPT_IN)
    assert not marker.exists()


def test_pth_with_objects_loads_only_with_opt_in(tmp_path):
    path = tmp_path / "objects.pth"
    torch.save({"model": tiny_model().state_dict(), "note": fractions.Fraction(1, 3)}, path)
    with pytest.raises(UnsafeCheckpointError):
        checkpointer(tmp_path).load(str(path))
    extra = checkpointer(tmp_path, allow_pickled_weights=True).load(str(path))
    assert extra == {"note": fractions.Fraction(1, 3)}


def test_legacy_pkl_needs_opt_in(tmp_path):
    path = tmp_path / "R-18.pkl"
    weights = {k: v.numpy() for k, v in tiny_model(hidden=4).state_dict().items()}
    with open(path, "wb") as f:
        pickle.dump({"model": weights, "__author__": "tests"}, f)
    with pytest.raises(UnsafeCheckpointError) as raised:
        checkpointer(tmp_path).load(str(path))
    assert_message(raised, path, "legacy detectron2 format", "unpickling", OPT_IN)

    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    checkpointer(tmp_path, model, allow_pickled_weights=True).load(str(path))
    assert all(torch.equal(torch.from_numpy(v), model.state_dict()[k]) for k, v in weights.items())


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_corrupt_checkpoint(tmp_path, damage):
    saver = checkpointer(tmp_path)
    saver.save("model_0000001")
    path = tmp_path / "model_0000001.pth"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"")
    with pytest.raises(CorruptCheckpointError) as raised:
        checkpointer(tmp_path).resume_or_load("", resume=True)
    assert_message(raised, path, "truncated or corrupt")


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError) as raised:
        checkpointer(tmp_path).load(str(tmp_path / "nowhere.pth"))
    assert_message(raised, tmp_path / "nowhere.pth", "does not exist")


# ----------------------------------------------------------------------------------------------
# Checkpoints that do not fit the model


@pytest.fixture
def wide_checkpoint(tmp_path) -> Path:
    """A checkpoint of tiny_model(hidden=6) with an extra tensor; it does not fit hidden=4."""
    state = tiny_model(hidden=6).state_dict()
    state["head.extra"] = torch.zeros(2)
    torch.save({"model": state}, path := tmp_path / "wide.pth")
    return path


def test_mismatch_is_an_error_when_the_model_must_fit(tmp_path, wide_checkpoint):
    with pytest.raises(CheckpointMismatchError) as raised:
        checkpointer(tmp_path, tiny_model(hidden=4)).load(str(wide_checkpoint), [])
    assert_message(
        raised, wide_checkpoint, "3 tensor(s) of another shape (checkpoint -> model)",
        "0.weight: (6, 3) -> (4, 3)", "0.bias: (6,) -> (4,)", "2.weight: (2, 6) -> (2, 4)",
        "1 tensor(s) in the checkpoint but not in the model", "head.extra",
    )  # fmt: skip


def test_mismatch_is_a_warning_when_fine_tuning_but_not_when_resuming(
    tmp_path, wide_checkpoint, caplog
):
    model = tiny_model(hidden=4)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    fine_tuning = checkpointer(tmp_path, model, exact_fit=False)
    fine_tuning.logger.addHandler(caplog.handler)
    try:
        fine_tuning.load(str(wide_checkpoint), [])  # weights only: MODEL.WEIGHTS
    finally:
        fine_tuning.logger.removeHandler(caplog.handler)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("0.weight: (6, 3) -> (4, 3)" in w and "head.extra" in w for w in warnings)
    assert torch.equal(model.state_dict()["0.weight"], initial["0.weight"])  # kept its init
    assert torch.equal(model.state_dict()["2.bias"], tiny_model(hidden=6).state_dict()["2.bias"])

    with pytest.raises(CheckpointMismatchError):
        fine_tuning.load(str(wide_checkpoint))  # all checkpointables: resuming a run


def test_config_opt_in_defaults_to_off(tmp_path):
    cfg = get_cfg()
    assert cfg.MODEL.ALLOW_PICKLED_WEIGHTS is False
    cfg.OUTPUT_DIR = str(tmp_path)
    assert build_checkpointer(cfg, tiny_model()).allow_pickled_weights is False
    cfg.MODEL.ALLOW_PICKLED_WEIGHTS = True
    built = build_checkpointer(cfg, tiny_model())
    assert built.allow_pickled_weights and built.exact_fit and built.save_dir == str(tmp_path)


# ----------------------------------------------------------------------------------------------
# Fuzzing: damaged checkpoint files load exactly or fail clearly

CLEAR_ERRORS = (CorruptCheckpointError, UnsafeCheckpointError)


@fuzz_settings(default_examples=150)
@given(
    damage=st.sampled_from(["truncated", "bit_flipped", "overwritten"]),
    fraction=st.floats(0.0, 0.999),
    seed=st.integers(0, 2**16),
)
def test_damaged_checkpoint_loads_exactly_or_fails_clearly(fuzz_tally, damage, fraction, seed):
    """A damaged byte anywhere, even inside a tensor, is never loaded as a wrong weight."""
    with tempfile.TemporaryDirectory() as directory:
        saver = checkpointer(Path(directory))
        saver.save("model_0000001", iteration=1)
        path = Path(directory) / "model_0000001.pth"
        data = path.read_bytes()
        if damage == "overwritten":
            position = int(fraction * len(data))
            data = data[:position] + bytes([seed % 256] * 8) + data[position + 8 :]
        else:
            data = corrupt(data, damage, fraction, seed)
        path.write_bytes(data)
        loader = checkpointer(Path(directory), tiny_model(hidden=4))
        with torch.no_grad():
            for parameter in loader.model.parameters():
                parameter.zero_()

        def load_and_compare():
            assert loader.load(str(path)) == {"iteration": 1}
            saved = saver.model.state_dict()
            assert all(torch.equal(v, saved[k]) for k, v in loader.model.state_dict().items())

        fuzz_tally.expect("either", load_and_compare, files=[path])
