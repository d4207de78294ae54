"""
Timing one inference call split into network and post-processing, and its peak memory.

The split needs no method-specific code: the network is every module that holds weights of its
own (convolutions, norms, linear layers, anywhere in the model; in a deployed model also the
module that runs the exported network), and it ends when the last of them returns; everything
after that (resizing to the output size, mask pasting, grouping, panoptic merging) is
post-processing. Forward hooks note when each such module returns, so one call gives both
times. Measured against an in-code split of Panoptic FCN (timers around its
network call, since removed), the two agreed to microseconds. A method that ran a weighted
module in the middle of its post-processing would have that stretch counted as network, never
the reverse.
"""

from __future__ import annotations

import contextlib
import ctypes
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

__all__ = ["NetworkSplitClock", "peak_memory", "time_alternately", "time_inference"]

_PROC_STATUS = Path("/proc/self/status")
_PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


def _runs_exported_network(module: nn.Module) -> bool:
    """The module of a deployed model that runs its exported network (whose weights live in the
    export): network, as the weighted modules it replaces."""
    return getattr(module, "runs_exported_network", False)


class NetworkSplitClock:
    """
    Network and post-processing seconds of one forward pass of ``model`` (see the module
    docstring). On CUDA the times come from events on the current stream, so the hooks never
    synchronize mid-network; on CPU from ``time.perf_counter``.
    """

    def __init__(self, model: nn.Module, device: torch.device):
        self._cuda = device.type == "cuda"
        if self._cuda:
            self._start, self._network_end, self._end = (
                torch.cuda.Event(enable_timing=True) for _ in range(3)
            )
        self._network_end_s = None
        self._start_s = None
        weighted = [
            m
            for m in model.modules()
            if m is not model
            and (next(m.parameters(recurse=False), None) is not None or _runs_exported_network(m))
        ]
        if not weighted:
            raise ValueError(f"{type(model).__name__} has no module with weights to time")
        self._handles = [m.register_forward_hook(self._network_step) for m in weighted]

    def _network_step(self, *_):
        if self._cuda:
            self._network_end.record()  # the last record before the call ends is the one kept
        else:
            self._network_end_s = time.perf_counter()

    def start(self) -> None:
        self._network_end_s = None
        if self._cuda:
            self._start.record()
        else:
            self._start_s = time.perf_counter()

    def stop(self) -> tuple[float, float]:
        """(network seconds, post-processing seconds) since :meth:`start`."""
        if self._cuda:
            self._end.record()
            torch.cuda.synchronize()
            network_s = self._start.elapsed_time(self._network_end) / 1000
            return network_s, self._start.elapsed_time(self._end) / 1000 - network_s
        end_s = time.perf_counter()
        if self._network_end_s is None:
            raise RuntimeError("no module with weights ran between start() and stop()")
        return self._network_end_s - self._start_s, end_s - self._network_end_s

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


def time_inference(
    model: nn.Module,
    inputs: list[dict],
    *,
    warmup: int,
    repeats: int,
    autocast_dtype: torch.dtype | None = None,
    before_each_timed_call: Callable[[], object] | None = None,
) -> dict:
    """
    Run ``model(inputs)`` ``warmup + repeats`` times under ``torch.inference_mode`` (and
    autocast to ``autocast_dtype`` when given); medians over the last ``repeats`` calls of the
    network, post-processing and total seconds, and every sample. ``before_each_timed_call``
    (untimed) runs before each of the last ``repeats`` calls: the benchmark samples the floor's
    rate there.
    """
    return time_alternately(
        {"model": model}, inputs, warmup=warmup, repeats=repeats,
        autocast_dtype=autocast_dtype, before_each_timed_round=before_each_timed_call,
    )["model"]  # fmt: skip


def time_alternately(
    models: dict[str, nn.Module],
    inputs: list[dict],
    *,
    warmup: int,
    repeats: int,
    autocast_dtype: torch.dtype | None = None,
    before_each_timed_round: Callable[[], object] | None = None,
) -> dict[str, dict]:
    """
    :func:`time_inference` of each of ``models``, their calls in turn (round by round, one call
    of each per round): on a machine whose load changes, every model is timed under the same
    load, so their ratios hold where separate runs of them would not.
    ``before_each_timed_round`` (untimed) runs before each of the last ``repeats`` rounds.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    devices = {name: next(model.parameters()).device for name, model in models.items()}
    clocks = {name: NetworkSplitClock(model, devices[name]) for name, model in models.items()}
    autocast = (
        torch.autocast(next(iter(devices.values())).type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else contextlib.nullcontext()
    )
    samples = {name: [] for name in models}
    try:
        with torch.inference_mode(), autocast:
            for call in range(warmup + repeats):
                if call >= warmup and before_each_timed_round is not None:
                    before_each_timed_round()
                for name, model in models.items():
                    clocks[name].start()
                    model(inputs)
                    samples[name].append(clocks[name].stop())
    finally:
        for clock in clocks.values():
            clock.close()
    return {name: _medians(model_samples[warmup:]) for name, model_samples in samples.items()}


def _medians(samples: list[tuple[float, float]]) -> dict:
    network, postprocess = (list(column) for column in zip(*samples))
    totals = [n + p for n, p in zip(network, postprocess)]
    return {
        "network_s": statistics.median(network),
        "postprocess_s": statistics.median(postprocess),
        "total_s": statistics.median(totals),
        "network_samples_s": network,
        "postprocess_samples_s": postprocess,
    }


def _proc_status_kib(field: str) -> int:
    for line in _PROC_STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(f"{field} not in {_PROC_STATUS}")


def _return_free_heap_to_os() -> None:
    """glibc's ``malloc_trim``: freed heap pages of earlier calls go back to the OS, so the
    resident set before the measured call is what is in use (a no-op without glibc)."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)


def peak_memory(model: nn.Module, inputs: list[dict]) -> dict:
    """
    Peak memory of one ``model(inputs)`` call, in MiB: the process's peak and its rise above
    the memory in use before the call.

    CUDA: ``torch.cuda.max_memory_allocated`` (tensors only, not the caching allocator's
    reserve). CPU (Linux): the peak resident set size (``VmHWM``), reset first through
    ``/proc/self/clear_refs`` after returning free heap pages to the OS; the rise is still a
    lower bound where the allocator reuses pages it keeps. Elsewhere: not measured (``None``).
    """
    device = next(model.parameters()).device
    with torch.inference_mode():
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            model(inputs)
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
            method = "torch.cuda.max_memory_allocated"
        elif _PROC_CLEAR_REFS.exists():
            _return_free_heap_to_os()
            _PROC_CLEAR_REFS.write_text("5")  # 5: reset the peak RSS to the current RSS
            before = _proc_status_kib("VmRSS") * 1024
            model(inputs)
            peak = _proc_status_kib("VmHWM") * 1024
            method = "peak RSS (VmHWM) after resetting it through /proc/self/clear_refs"
        else:
            return {"peak_mib": None, "increase_mib": None, "method": "not measured (no /proc)"}
    return {"peak_mib": peak / 2**20, "increase_mib": (peak - before) / 2**20, "method": method}
