"""
detectron2's ``DetectionCheckpointer`` made safe to crash, safe to load and strict about fit.

* Saving: each checkpoint is written to a temporary file in the same directory, flushed, fsynced
  and renamed into place; only then is the ``last_checkpoint`` pointer rewritten, the same way.
  A process killed at any moment therefore leaves ``last_checkpoint`` naming a complete file. A
  failed write (disk full, no permission) raises :class:`CheckpointWriteError` naming the file and
  leaves the previous checkpoint and pointer as they were. Weights with NaN or infinity are never
  written.
* Loading: files are read with ``torch.load(weights_only=True)``, which only rebuilds tensors and
  plain containers, after checking the CRC-32 of every entry (torch.load does not: a damaged byte
  would load as a wrong weight); a damaged file raises :class:`CorruptCheckpointError`. Anything
  that needs full unpickling (detectron2's legacy ``.pkl``/``.pyth`` model-zoo formats, ``.pth``
  files holding arbitrary Python objects) can run code from the file, so it is refused with
  :class:`UnsafeCheckpointError` unless ``MODEL.ALLOW_PICKLED_WEIGHTS`` is set.
* Fit: when a checkpoint must describe this very model (resuming a run, ``--eval-only``), any key
  missing, unexpected or of another shape raises :class:`CheckpointMismatchError` listing them.
  When initializing a training run from ``MODEL.WEIGHTS`` (fine-tuning), the same report is a
  warning and the mismatched tensors keep their initialization, as in detectron2.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Sequence
from typing import Any

import torch
from detectron2.checkpoint import DetectionCheckpointer

from ..utils.io import atomic_write

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "CheckpointWriteError",
    "CorruptCheckpointError",
    "PanopticCheckpointer",
    "UnsafeCheckpointError",
    "build_checkpointer",
]

OPT_IN = "MODEL.ALLOW_PICKLED_WEIGHTS True"
# detectron2 reads these with pickle (or pycls' torch.load) and converts them by name heuristics.
LEGACY_SUFFIXES = (".pkl", ".pyth")
LAST_CHECKPOINT = "last_checkpoint"
# Keys listed per kind of mismatch before the report only counts the rest.
REPORT_LIMIT = 20


class CheckpointError(RuntimeError):
    """A checkpoint cannot be loaded as asked."""


class UnsafeCheckpointError(CheckpointError):
    """Loading the checkpoint would unpickle arbitrary objects and nobody opted in."""


class CorruptCheckpointError(CheckpointError):
    """The file is truncated or is not a checkpoint at all."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's tensors do not fit the model (names or shapes)."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the previous checkpoint is untouched."""


class PanopticCheckpointer(DetectionCheckpointer):
    """
    ``DetectionCheckpointer`` with atomic saves, weights-only loading and fit checks (module
    docstring). ``save_dir`` must be a local directory.

    Args:
        allow_pickled_weights: load files that need full unpickling (only for trusted files).
        exact_fit: every load must fit the model exactly. When False, only resuming (loading
            all checkpointables) must; loading weights alone (``MODEL.WEIGHTS`` for fine-tuning)
            reports mismatches as a warning.
    """

    def __init__(
        self,
        model,
        save_dir: str = "",
        *,
        allow_pickled_weights: bool = False,
        exact_fit: bool = True,
        save_to_disk: bool | None = None,
        **checkpointables,
    ):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.allow_pickled_weights = allow_pickled_weights
        self.exact_fit = exact_fit
        # What the load in progress reads and whether it must fit exactly: set by load() for
        # _log_incompatible_keys(), which fvcore calls without them.
        self._loading_path = ""
        self._exact_fit_for_this_load = exact_fit

    # ------------------------------------------------------------------------------------------
    # Saving

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        path = os.path.join(self.save_dir, f"{name}.pth")
        _check_finite_weights(data["model"], path, kwargs.get("iteration"))
        self.logger.info("Saving checkpoint to %s", path)
        self._write(path, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(os.path.basename(path))

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        pointer = os.path.join(self.save_dir, LAST_CHECKPOINT)
        self._write(pointer, lambda f: f.write(last_filename_basename), mode="w")

    def _write(self, path: str, write, mode: str = "wb") -> None:
        try:
            atomic_write(path, write, mode)
        except OSError as e:
            previous = self.get_checkpoint_file() if self.has_checkpoint() else ""
            kept = f"the latest checkpoint is still {previous}" if previous else "none was saved"
            raise CheckpointWriteError(f"could not write {path} ({e.strerror or e}); {kept}") from e

    # ------------------------------------------------------------------------------------------
    # Loading

    def load(self, path: str, checkpointables: Sequence[str] | None = None) -> dict[str, Any]:
        if path:
            local = self.path_manager.get_local_path(path)
            if not os.path.isfile(local):
                raise FileNotFoundError(f"checkpoint {path} does not exist")
            path = local
        # Restoring a training run (all checkpointables) needs the very model it was saved from.
        self._exact_fit_for_this_load = self.exact_fit or checkpointables is None
        self._loading_path = path
        return super().load(path, checkpointables)

    def _load_file(self, filename: str) -> dict[str, Any]:
        if filename.endswith(LEGACY_SUFFIXES):
            if not self.allow_pickled_weights:
                raise UnsafeCheckpointError(
                    f"{filename} is in a legacy detectron2 format that is read by unpickling, "
                    f"which can run arbitrary code from the file. If you trust the file, opt in "
                    f"with {OPT_IN} (or convert it once to a .pth of tensors)."
                )
            return super()._load_file(filename)
        checkpoint = self._load_tensors(filename)
        if not isinstance(checkpoint, dict):
            raise CorruptCheckpointError(
                f"{filename} holds a {type(checkpoint).__name__}, not a checkpoint dict"
            )
        return checkpoint if "model" in checkpoint else {"model": checkpoint}

    # Not named _torch_load: upstream detectron2 main has a private method of that name, which
    # its own _load_file calls; sharing the name would silently replace it.
    def _load_tensors(self, filename: str) -> Any:
        _verify_checksums(filename)
        try:
            return torch.load(filename, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            if not self.allow_pickled_weights:
                raise UnsafeCheckpointError(
                    f"{filename} is not a plain checkpoint of tensors: torch.load(weights_only="
                    f"True) refused it ({_weights_only_reason(e)}). Loading it fully would "
                    f"unpickle arbitrary objects, which can run code from the file. If you trust "
                    f"the file, opt in with {OPT_IN}."
                ) from e
        except _CORRUPT_FILE_ERRORS as e:
            raise _corrupt(filename, e) from e
        self.logger.warning("Unpickling %s fully (%s is set)", filename, OPT_IN)
        try:
            return torch.load(filename, map_location="cpu", weights_only=False)
        except (pickle.UnpicklingError, *_CORRUPT_FILE_ERRORS) as e:
            raise _corrupt(filename, e) from e

    def _log_incompatible_keys(self, incompatible) -> None:
        report = describe_mismatch(incompatible)
        if not report:
            return
        if self._exact_fit_for_this_load:
            raise CheckpointMismatchError(
                f"checkpoint {self._loading_path} does not fit the model (a different config or "
                f"method?):\n{report}"
            )
        self.logger.warning(
            "checkpoint %s does not fit the model fully; these tensors keep their "
            "initialization:\n%s",
            self._loading_path,
            report,
        )


def build_checkpointer(
    cfg, model, *, exact_fit: bool = True, **checkpointables
) -> PanopticCheckpointer:
    """The checkpointer of ``cfg``: ``OUTPUT_DIR`` and ``MODEL.ALLOW_PICKLED_WEIGHTS``."""
    return PanopticCheckpointer(
        model,
        cfg.OUTPUT_DIR,
        allow_pickled_weights=cfg.MODEL.ALLOW_PICKLED_WEIGHTS,
        exact_fit=exact_fit,
        **checkpointables,
    )


def describe_mismatch(incompatible) -> str:
    """
    One block listing the mismatched tensors of fvcore's ``_IncompatibleKeys`` (shapes as
    checkpoint -> model, then missing and unexpected keys); empty when everything fits.
    """
    sections = []
    if incompatible.incorrect_shapes:
        lines = [
            f"{key}: {tuple(checkpoint)} -> {tuple(model)}"
            for key, checkpoint, model in incompatible.incorrect_shapes
        ]
        sections.append(("of another shape (checkpoint -> model)", lines))
    if incompatible.missing_keys:
        sections.append(("in the model but not in the checkpoint", incompatible.missing_keys))
    if incompatible.unexpected_keys:
        sections.append(("in the checkpoint but not in the model", incompatible.unexpected_keys))
    blocks = []
    for title, lines in sections:
        shown = [f"    {line}" for line in lines[:REPORT_LIMIT]]
        if len(lines) > REPORT_LIMIT:
            shown.append(f"    ... and {len(lines) - REPORT_LIMIT} more")
        blocks.append(f"  {len(lines)} tensor(s) {title}:\n" + "\n".join(shown))
    return "\n".join(blocks)


def _check_finite_weights(state_dict: dict[str, torch.Tensor], path: str, iteration) -> None:
    floats = {key: t for key, t in state_dict.items() if t.is_floating_point()}
    if not floats:
        return
    # A float64 sum is non-finite exactly when an element is NaN or infinite (float32 values
    # cannot overflow it), and is ~7x cheaper than isfinite().all() on every tensor.
    sums = torch.stack([t.sum(dtype=torch.float64).cpu() for t in floats.values()])
    if torch.isfinite(sums).all():
        return
    bad = [key for key, t in floats.items() if not torch.isfinite(t).all()]
    at = "" if iteration is None else f" at iteration {iteration}"
    raise FloatingPointError(
        f"not saving {path}{at}: weights {_few(bad)} have NaN or infinite values; the previous "
        "checkpoint stays the latest"
    )


def _few(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown if len(keys) <= limit else f"{shown} (and {len(keys) - limit} more)"


# What torch.load and zipfile raise on truncated or damaged files (UnicodeDecodeError is a
# ValueError), found by fuzzing checkpoint bytes.
_CORRUPT_FILE_ERRORS = (
    RuntimeError,
    EOFError,
    ValueError,
    zipfile.BadZipFile,
    NotImplementedError,
    OverflowError,
)


def _verify_checksums(filename: str) -> None:
    """
    Check the CRC-32 of every entry of a zip-format checkpoint (torch.save's format since 1.6),
    which torch.load does not: without it a damaged byte in a tensor loads as a wrong weight.
    """
    try:
        if not zipfile.is_zipfile(filename):
            return  # torch's legacy format has no checksums; torch.load checks what it can
        with zipfile.ZipFile(filename) as archive:
            damaged = archive.testzip()
    # OSError too: damaged offsets make zipfile seek before the start of the file.
    except (OSError, *_CORRUPT_FILE_ERRORS) as e:
        raise _corrupt(filename, e) from e
    if damaged is not None:
        raise CorruptCheckpointError(
            f"{filename} is corrupt: the checksum of its entry {damaged} does not match (a damaged "
            "copy or disk?); use another checkpoint"
        )


def _weights_only_reason(error: pickle.UnpicklingError) -> str:
    """The specific cause (e.g. 'Unsupported global: GLOBAL os.system ...') in torch's message."""
    # The sentence around "unsupported"; dots inside names (posix.system) do not end it.
    sentence = r"[^.\n]*unsupported(?:[^.\n]|\.(?=\S))*"
    match = re.search(sentence, str(error), flags=re.IGNORECASE)
    return match.group(0).strip() if match else "content other than tensors and containers"


def _corrupt(filename: str, error: Exception) -> CorruptCheckpointError:
    return CorruptCheckpointError(
        f"{filename} is not a readable checkpoint: it is truncated or corrupt "
        f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'empty file'})"
    )
