"""
What every converter shares: reading release files without running their code, renaming keys
by rules, checking the result against the model a config builds, writing a safe checkpoint.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ...utils.io import atomic_write

__all__ = [
    "Conversion",
    "ConversionError",
    "RenameRule",
    "input_notes",
    "load_release_file",
    "rename_keys",
    "renamer",
    "save_converted",
    "verify_against_model",
]


class ConversionError(RuntimeError):
    """A checkpoint does not have the structure its converter expects, or does not fit the model."""


@dataclass
class Conversion:
    """
    A converted state dict and what the conversion did not carry over: ``unused`` source keys
    (no counterpart in this project's model) and ``notes`` on transformations that are not
    exact (the converted model computes something different there).
    """

    state_dict: dict[str, torch.Tensor]
    unused: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{len(self.state_dict)} tensors converted"]
        if self.unused:
            lines.append(f"{len(self.unused)} source tensors without counterpart: {self.unused}")
        lines += [f"not exact: {note}" for note in self.notes]
        return "\n".join(lines)


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts of numpy arrays (detectron2's .pkl model zoo files) and nothing else."""

    ALLOWED = frozenset(
        {
            ("collections", "OrderedDict"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "scalar"),
        }
    )

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to unpickle {module}.{name}: only arrays are expected in a weights file"
            )
        return super().find_class(module, name)


def _as_tensors(weights: dict) -> dict[str, torch.Tensor]:
    tensors = {}
    for key, value in weights.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        if isinstance(value, torch.Tensor):
            tensors[key] = value
    return tensors


def load_release_file(path: str | Path) -> dict[str, torch.Tensor]:
    """
    The weights of an official release file as tensors, without executing anything from it:
    ``.pkl`` (detectron2's model zoo, ``{"model": {name: ndarray}, "__author__": ...}``) through an
    unpickler that only builds numpy arrays, anything else through ``torch.load(weights_only=True)``.
    The state dict may sit under "model" or "state_dict"; a DataParallel ``module.`` prefix is removed.
    """
    path = Path(path)
    if path.suffix == ".pkl":
        with open(path, "rb") as f:
            loaded = _ArraysOnlyUnpickler(f, encoding="latin1").load()
    else:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(loaded, dict):
        raise ConversionError(f"{path} holds a {type(loaded).__name__}, not a dict of weights")
    for key in ("model", "state_dict"):
        if isinstance(loaded.get(key), dict):
            loaded = loaded[key]
            break
    weights = _as_tensors(loaded)
    if not weights:
        raise ConversionError(f"{path} holds no tensors")
    if all(k.startswith("module.") for k in weights):
        weights = {k.removeprefix("module."): v for k, v in weights.items()}
    return weights


@dataclass(frozen=True)
class RenameRule:
    """
    Source keys matching ``pattern`` (a full-match regex) become ``replacement`` (re.sub
    syntax); an empty replacement marks keys that are known to have no counterpart.
    """

    pattern: str
    replacement: str


def renamer(rules: Iterable[RenameRule]) -> Callable[[str], str | None]:
    """``key -> target key`` by the first matching rule; None when none matches (or it is empty)."""
    compiled = [(re.compile(r.pattern), r.replacement) for r in rules]

    def target(key: str) -> str | None:
        for pattern, replacement in compiled:
            if pattern.fullmatch(key):
                return pattern.sub(replacement, key) or None
        return None

    return target


def rename_keys(weights: dict[str, torch.Tensor], rules: Iterable[RenameRule]) -> Conversion:
    """Rename every key by :func:`renamer`; keys without a target are reported unused."""
    target_of = renamer(rules)
    conversion = Conversion({})
    for key, value in weights.items():
        target = target_of(key)
        if target is None:
            conversion.unused.append(key)
        else:
            conversion.state_dict[target] = value
    return conversion


def verify_against_model(conversion: Conversion, model: torch.nn.Module) -> None:
    """
    Raise :class:`ConversionError` unless the converted tensors fill every parameter and buffer
    of ``model`` (a model built from this project's config), with equal shapes, and name nothing
    the model lacks. Batch-norm counters and the pixel statistics (set by the config) are not
    required.
    """
    expected = {k: v.shape for k, v in model.state_dict().items()}
    converted = conversion.state_dict
    missing = sorted(k for k in expected if k not in converted and not _optional(k))
    extra = sorted(k for k in converted if k not in expected)
    wrong = sorted(
        f"{k}: converted {tuple(converted[k].shape)}, model {tuple(expected[k])}"
        for k in converted
        if k in expected and converted[k].shape != expected[k]
    )
    problems = [
        (missing, "model tensors not filled"),
        (extra, "converted tensors the model does not have"),
        (wrong, "shape mismatches"),
    ]
    message = "; ".join(f"{len(items)} {what}: {items[:10]}" for items, what in problems if items)
    if message:
        raise ConversionError(f"the converted checkpoint does not fit the model: {message}")


def _optional(key: str) -> bool:
    return key in ("pixel_mean", "pixel_std") or key.endswith("num_batches_tracked")


def save_converted(path: str | Path, conversion: Conversion, source: str) -> Path:
    """Write ``{"model": ..., "__author__": ...}``, loadable with ``torch.load(weights_only=True)``."""
    checkpoint = {
        "model": {k: v.contiguous() for k, v in conversion.state_dict.items()},
        "__author__": f"panoptic_zoo conversion of {source}",
    }
    return atomic_write(path, lambda f: torch.save(checkpoint, f))


def input_notes(
    pixel_mean,
    pixel_std,
    input_format: str,
    official_mean,
    official_std,
    official_format: str,
    detail: str = "",
) -> list[str]:
    """Why a config (its MODEL.PIXEL_MEAN/STD and INPUT.FORMAT) would not feed a converted
    official model the input it was trained on (empty when it does); ``detail`` follows the
    statistics' note."""
    notes = []
    if input_format != official_format:
        notes.append(
            f"INPUT.FORMAT is {input_format!r}; the official models take {official_format!r}"
        )
    if [round(x, 4) for x in pixel_mean] != list(official_mean) or [
        round(x, 4) for x in pixel_std
    ] != list(official_std):
        notes.append(
            f"MODEL.PIXEL_MEAN {list(pixel_mean)} / PIXEL_STD {list(pixel_std)} differ from the "
            f"official {list(official_mean)} / {list(official_std)}{detail}; set them so in "
            "the config"
        )
    return notes
