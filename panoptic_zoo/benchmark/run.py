"""Benchmark any set of configs on one input, one machine and one thread count, in one run."""

from __future__ import annotations

import logging
import math
import os
import platform
import statistics
import tempfile
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import detectron2
import torch
from detectron2.config import CfgNode
from torch import nn

from ..deploy import export_network, load
from ..deploy.check import compare_panoptic
from ..deploy.export import export_config, network_input
from ..acceleration import optimize_for_cpu, reuse_freed_heap_memory
from ..engine import Trainer, without_acceleration
from ..modeling.methods import method_of
from .floor import ConvRateProbe, measure_floor
from .flops import count_multiply_adds
from .reference import reference_for
from .reference_process import time_reference_in_fresh_process
from .report import PQ_KEYS, write_report
from .settings import (
    ONNXRUNTIME_DEFORMCONV,
    PRECISIONS,
    BenchmarkSettings,
    benchmark_inputs,
    build_model,
    image_source,
    load_config,
)
from .timing import peak_memory, time_alternately

__all__ = ["run_benchmark"]

logger = logging.getLogger(__name__)

def evaluate(cfg: CfgNode, model: nn.Module) -> dict:
    """PQ/SQ/RQ (all, things, stuff), mask AP and mIoU on ``cfg.DATASETS.TEST[0]``; None where
    the dataset has no such evaluator or the value is undefined (NaN, e.g. no detections)."""
    results = Trainer.test(cfg, model)
    found = {
        **{key: results["panoptic_seg"][key] for key in PQ_KEYS},
        "mask_AP": results.get("segm", {}).get("AP"),
        "mIoU": results.get("sem_seg", {}).get("mIoU"),
    }
    return {key: None if value is None or math.isnan(value) else value
            for key, value in found.items()}  # fmt: skip


def _time_reference(config_path, cfg, weights, settings, source, floor_layout) -> dict:
    reference = reference_for(cfg, settings.panoptic_fcn_official_src)
    result = {"name": reference.name, "note": reference.note, "timings": {}, "error": None}
    if not reference.runs_here:
        return result
    if settings.skip_reference:
        result["note"] = "not run (--skip-reference)"
        return result
    timings = time_reference_in_fresh_process(config_path, weights, settings, source, floor_layout)
    if "error" in timings:
        result["error"] = timings["error"]
        result["note"] = "reference failed on this input"
        logger.warning("%s failed: %s", reference.name, result["error"])
    else:
        result["output_agreement"] = timings.pop("output_agreement", None)
        result["timings"] = timings
    return result


def benchmark_method(
    config_path: str, weights: str, settings: BenchmarkSettings, floor: dict, source: str | None
) -> dict:  # fmt: skip
    cfg = load_config(config_path, settings)
    weights = weights or cfg.MODEL.WEIGHTS
    model = build_model(without_acceleration(cfg), weights)
    # Parameters of the checkpoint, counted before folding the norms changes them.
    parameters = sum(p.numel() for p in model.parameters())
    optimize_for_cpu(model, cfg)
    inputs = benchmark_inputs(cfg, settings, source)
    name = method_of(cfg.MODEL.META_ARCHITECTURE).name
    logger.info("%s (%s): counting multiply-adds", name, config_path)
    macs = count_multiply_adds(model, inputs)
    gflop = {"network": 2 * macs.network / 1e9, "postprocess": 2 * macs.postprocess / 1e9}
    deployed = _deploy(settings.backends, cfg, weights, settings, inputs)
    if ONNXRUNTIME_DEFORMCONV in deployed and deployed[ONNXRUNTIME_DEFORMCONV].deformable is None:
        logger.info("%s: no deformable convolution, %s not timed", name, ONNXRUNTIME_DEFORMCONV)
        del deployed[ONNXRUNTIME_DEFORMCONV]
    # The floor's convolution, timed before each timed call: the rate while this method ran.
    probe = ConvRateProbe(torch.device(settings.device), settings.floor_problem, floor["layout"])
    rates = []
    timings = {}
    backends = {}
    for precision in settings.precisions:
        # The deployment backends (float32) in turns with the eager model: under the same load.
        others = deployed if PRECISIONS[precision] is None else {}
        logger.info("%s: timing %s", name, " and ".join([precision, *others]))
        timed = time_alternately(
            {"eager": model, **others}, inputs, warmup=settings.warmup,
            repeats=settings.repeats, autocast_dtype=PRECISIONS[precision],
            before_each_timed_round=lambda: rates.append(probe()),
        )  # fmt: skip
        timings[precision] = timed.pop("eager")
        backends.update(timed)
    floor_rate = statistics.median(rates)
    with torch.inference_mode():
        expected = model(inputs)[0]
        for backend, deployed_model in deployed.items():
            backends[backend].update(compare_panoptic(expected, deployed_model(inputs)[0]))
            backends[backend]["deformable"] = deployed_model.deformable
    del deployed
    memory = peak_memory(model, inputs)
    logger.info("%s: reference", name)
    reference = _time_reference(config_path, cfg, weights, settings, source, floor["layout"])
    accuracy = None
    if settings.eval_dataset:
        logger.info("%s: evaluating on %s", name, settings.eval_dataset)
        accuracy = evaluate(cfg, model)
    return {
        "method": name,
        "meta_architecture": cfg.MODEL.META_ARCHITECTURE,
        "config": config_path,
        "weights": weights,
        "parameters": parameters,
        "cpu_optimizations": model.cpu_optimizations,
        "multiply_adds": {
            "network": macs.network,
            "postprocess": macs.postprocess,
            "uncounted_ops": list(macs.uncounted_ops),
        },
        "gflop": gflop,
        "timings": timings,
        "backends": backends,
        "peak_memory": memory,
        "floor_rate_gflop_per_s": floor_rate,
        "floor_rate_samples_gflop_per_s": rates,
        "floor_s": gflop["network"] / floor_rate,
        # The same with the rate measured at the start of the run.
        "floor_s_at_start": gflop["network"] / floor["rate_gflop_per_s"],
        "reference": reference,
        "accuracy": accuracy,
    }


def _deploy(backends, cfg, weights, settings, inputs) -> dict[str, nn.Module]:
    """Per backend, the network of ``cfg``'s model with ``weights`` exported at the size of
    ``inputs`` (once per format), loaded with :func:`panoptic_zoo.deploy.load`
    (``settings.threads`` threads); ``onnxruntime-deformconv``: the ONNX export on ONNX Runtime
    with its own DeformConv, not the C kernel."""
    formats = {b: "torchscript" if b == "torchscript" else "onnx" for b in backends}
    deployed = {}
    with tempfile.TemporaryDirectory() as folder:
        for format in dict.fromkeys(formats.values()):
            export_cfg = export_config(cfg, format)
            model = build_model(without_acceleration(export_cfg), weights)
            optimize_for_cpu(model, export_cfg)
            logger.info("%s: exporting to %s", type(model).__name__, format)
            path = export_network(
                model, export_cfg, network_input(model, inputs),
                Path(folder) / f"network.{format}", format,
            )  # fmt: skip
            for backend in [b for b, f in formats.items() if f == format]:
                if backend == ONNXRUNTIME_DEFORMCONV:
                    deployed[backend] = load(path, "onnxruntime", settings.threads, False)
                else:
                    deployed[backend] = load(path, backend, threads=settings.threads)
    return deployed


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    cpuinfo = Path("/proc/cpuinfo")
    model_names = [
        line.split(":", 1)[1].strip()
        for line in (cpuinfo.read_text().splitlines() if cpuinfo.exists() else [])
        if line.startswith("model name")
    ]
    cpu = model_names[0] if model_names else platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} logical cores"


def _load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_benchmark(
    configs: list[str], weights: list[str], settings: BenchmarkSettings, command: str
) -> tuple[dict, dict[str, Path]]:
    """Benchmark every config (with its weights, "" = the config's initialization); write and
    return the report and the paths of the files written."""
    if len(weights) != len(configs):
        raise ValueError(f"{len(weights)} weights for {len(configs)} configs: give one per config")
    heap_reused = settings.device == "cpu" and reuse_freed_heap_memory()
    threads_before = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        environment = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": command,
            "device_name": device_name(settings.device),
            "torch": torch.__version__,
            "detectron2": detectron2.__version__,
            "python": platform.python_version(),
            "load_average_start": _load_average(),
            # Whether freed CPU memory is reused, as train_net.py does (acceleration.allocator).
            "cpu_heap_reuse": heap_reused,
        }
        device = torch.device(settings.device)
        floor = measure_floor(device, settings.floor_problem)
        source = image_source(settings)
        methods = [
            benchmark_method(config, config_weights, settings, floor, source)
            for config, config_weights in zip(configs, weights)
        ]
        environment["load_average_end"] = _load_average()
    finally:
        torch.set_num_threads(threads_before)
    settings_record = {**asdict(settings), "output_dir": str(settings.output_dir)}
    settings_record["image"] = source or "random pixels (seed 0)"
    report = {
        "environment": environment,
        "settings": settings_record,
        "floor": floor,
        "methods": methods,
    }
    return report, write_report(report, settings.output_dir)
