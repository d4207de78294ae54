"""
Timing a method's reference implementation in a fresh process, as a user would run it:
detectron2's code with glibc's default heap (the benchmark's own process reuses freed memory,
which a fresh process running detectron2's tools does not), the weights as the checkpoint holds
them, the same input, threads and device. :func:`time_reference_in_fresh_process` runs
:func:`main` in a new interpreter (``python -c``: ``-m`` would execute this module a second
time, since importing its package imports it too).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch

from ..engine import without_acceleration
from ..utils.io import atomic_write_json
from .floor import ConvRateProbe
from .reference import build_reference
from .settings import PRECISIONS, BenchmarkSettings, benchmark_inputs, build_model, load_config
from .timing import time_inference

__all__ = ["time_reference_in_fresh_process"]

# panoptic_zoo.config is imported first: it registers the models and datasets, as train_net.py
# does.
_FRESH_PROCESS_CODE = (
    "import sys, panoptic_zoo.config; "
    "from panoptic_zoo.benchmark.reference_process import main; main(sys.argv[1:])"
)


def time_reference_in_fresh_process(
    config_path: str, weights: str, settings: BenchmarkSettings, source: str | None,
    floor_layout: str,
) -> dict:  # fmt: skip
    """Timings per precision of ``config_path``'s reference (:mod:`.reference`), or
    ``{"error": message}`` where it failed on this input. As for the method, the floor's
    convolution (in ``floor_layout``) runs before each timed call: both are timed after the
    same cache-flushing work."""
    request = {
        "config": config_path,
        "weights": weights,
        "source": source,
        "floor_layout": floor_layout,
        "settings": {**asdict(settings), "output_dir": str(settings.output_dir)},
    }
    with tempfile.TemporaryDirectory(prefix="panoptic_zoo_reference_") as folder:
        request_path, result_path = Path(folder, "request.json"), Path(folder, "result.json")
        request_path.write_text(json.dumps(request))
        run = subprocess.run(
            [sys.executable, "-c", _FRESH_PROCESS_CODE, str(request_path), str(result_path)],
            capture_output=True, text=True,
        )  # fmt: skip
        if run.returncode != 0 or not result_path.exists():
            tail = (run.stderr or run.stdout).strip().splitlines()[-5:]
            return {"error": f"reference process exited with {run.returncode}: " + " | ".join(tail)}
        return json.loads(result_path.read_text())


def _settings(record: dict) -> BenchmarkSettings:
    return BenchmarkSettings(**{
        **record,
        "size": tuple(record["size"]),
        "precisions": tuple(record["precisions"]),
        "opts": tuple(record["opts"]),
        "datasets": tuple(tuple(entry) for entry in record["datasets"]),
        "output_dir": Path(record["output_dir"]),
        # Nothing is evaluated here: the model's classes are those of the config's own datasets
        # (a dataset registered in the parent's Python code is unknown to this process).
        "eval_dataset": None,
    })  # fmt: skip


@torch.no_grad()
def panoptic_agreement(model: torch.nn.Module, reference: torch.nn.Module, inputs) -> dict | None:
    """How far the reference's panoptic output is from the method's on ``inputs``: the share of
    pixels with the same segment id and whether the segments (id, category, thing) are the same;
    None where the reference gives no panoptic ids in the method's format."""
    ours, theirs = model(inputs), reference(inputs)
    equal_pixels, pixels, same_segments = 0, 0, True
    for a, b in zip(ours, theirs):
        (ids, segments), (reference_ids, reference_segments) = a["panoptic_seg"], b["panoptic_seg"]
        if reference_segments is None or ids.shape != reference_ids.shape:
            return None
        equal_pixels += int((ids == reference_ids).sum())
        pixels += ids.numel()
        keys = ("id", "category_id", "isthing")
        same_segments &= [[s[k] for k in keys] for s in segments] == [
            [s[k] for k in keys] for s in reference_segments
        ]
    return {"panoptic_pixels_equal": equal_pixels / pixels, "segments_equal": same_segments}


def main(argv: list[str]) -> None:
    request_path, result_path = (Path(a) for a in argv)
    request = json.loads(request_path.read_text())
    settings = _settings(request["settings"])
    torch.set_num_threads(settings.threads)
    cfg = load_config(request["config"], settings)
    inputs = benchmark_inputs(cfg, settings, request["source"])
    try:
        as_checkpointed = build_model(without_acceleration(cfg), request["weights"])
        model = build_reference(cfg, as_checkpointed, settings.panoptic_fcn_official_src)
        probe = ConvRateProbe(
            torch.device(settings.device), settings.floor_problem, request["floor_layout"]
        )
        result = {
            precision: time_inference(
                model, inputs, warmup=settings.warmup, repeats=settings.repeats,
                autocast_dtype=PRECISIONS[precision], before_each_timed_call=probe,
            )
            for precision in settings.precisions
        }  # fmt: skip
        if model is not as_checkpointed:
            result["output_agreement"] = panoptic_agreement(as_checkpointed, model, inputs)
    except Exception as e:  # someone else's code rejecting the input is a result, not a crash
        result = {"error": f"{type(e).__name__}: {e}"}
    atomic_write_json(result_path, result)

