"""
``python -m panoptic_zoo.benchmark --tiny`` without ``--configs`` (every registered method's
shapes config), evaluated on the tiny shapes dataset: the JSON report, the Markdown tables and
the plot are complete and well formed.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path

import pytest

from panoptic_zoo.acceleration.kernels import DEFORM_SAMPLING
from panoptic_zoo.benchmark import main
from panoptic_zoo.benchmark.report import (
    ACCURACY_COLUMNS,
    ACCURACY_KEYS,
    BACKEND_COLUMNS,
    JSON_NAME,
    MARKDOWN_NAME,
    PLOT_NAME,
    SPEED_COLUMNS,
)
from panoptic_zoo.modeling.methods import registered_methods

# Method name -> the config name the tables show, for every registered method.
CONFIG_NAMES = {m.name: Path(m.shapes_config).stem for m in registered_methods()}
# Shapes configs with deformable convolutions (Panoptic FCN's turns them off): also timed on
# ONNX Runtime's DeformConv.
DEFORMABLE = {"UPSNet"}
# Speed-table columns that hold text, or numbers only where a reference was timed.
TEXT_COLUMNS = {"method", "config", "precision", "reference", "reference ms", "speed-up"}


@pytest.fixture(scope="module")
def tiny_run(tiny_shapes, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("benchmark")
    report = main(
        ["--tiny", "--threads", "1", "--backend", "eager", "onnxruntime", "onnxruntime-deformconv",
         "--eval-dataset", tiny_shapes["val"], "--output-dir", str(output_dir)]
    )  # fmt: skip
    return report, output_dir


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_json_report_is_complete(tiny_run):
    report, output_dir = tiny_run
    assert json.loads((output_dir / JSON_NAME).read_text()) == json.loads(json.dumps(report))
    floor = report["floor"]
    assert _positive(floor["gemm"]["gflop_per_s"]) and _positive(floor["rate_gflop_per_s"])
    assert {m["method"] for m in report["methods"]} == set(CONFIG_NAMES)
    for method in report["methods"]:
        assert _positive(method["parameters"]) and _positive(method["gflop"]["network"])
        assert method["gflop"]["postprocess"] >= 0 and _positive(method["floor_s"])
        # the floor's rate sampled before each timed call, and the floor at the run's start
        rates = method["floor_rate_samples_gflop_per_s"]
        assert len(rates) == report["settings"]["repeats"] and all(map(_positive, rates))
        assert method["floor_rate_gflop_per_s"] == statistics.median(rates)
        assert math.isclose(
            method["floor_s"] * method["floor_rate_gflop_per_s"],
            method["floor_s_at_start"] * floor["rate_gflop_per_s"],
        )
        timing = method["timings"]["fp32"]
        assert all(_positive(timing[key]) for key in ("network_s", "postprocess_s", "total_s"))
        assert len(timing["network_samples_s"]) == report["settings"]["repeats"] == 2
        assert _positive(method["peak_memory"]["peak_mib"])
        assert set(method["accuracy"]) == set(ACCURACY_KEYS)
        assert all(v is None or 0 <= v <= 100 for v in method["accuracy"].values())
        assert method["accuracy"]["PQ"] is not None
        # The ONNX export of the same weights, timed on the same input.
        deployed = method["backends"]["onnxruntime"]
        if method["method"] in DEFORMABLE:
            assert set(method["backends"]) == {"onnxruntime", "onnxruntime-deformconv"}
            kernel = "DeformConv" if DEFORM_SAMPLING is None else "C kernel"
            assert deployed["deformable"] == kernel
            assert method["backends"]["onnxruntime-deformconv"]["deformable"] == "DeformConv"
        else:  # the same export on ONNX Runtime: not timed twice
            assert set(method["backends"]) == {"onnxruntime"} and deployed["deformable"] is None
        assert all(_positive(deployed[key]) for key in ("network_s", "postprocess_s", "total_s"))
        assert 0 <= deployed["pixel_agreement"] <= 1
        # Untrained Panoptic FCN's stuff heatmaps are flat: its networks agree to ~2e-6, but the
        # official per-cell stuff argmax then flips on ties and changes whole stuff segments.
        # tests/deploy checks its panoptic output on weights without such ties.
        if method["method"] != "Panoptic FCN":
            assert deployed["pixel_agreement"] >= 0.999 and deployed["same_segments"]
    reference = {m["method"]: m["reference"] for m in report["methods"]}
    for name in ("Panoptic FPN", "Panoptic-DeepLab"):  # references that run here
        assert reference[name]["error"] is None
        assert _positive(reference[name]["timings"]["fp32"]["total_s"])
    assert all(not reference[name]["timings"] for name in ("UPSNet", "Panoptic FCN"))
    # glibc, as CI runs: freed memory counts as reused in a process started with glibc's thread
    # cache off (the benchmark's __main__ restarts so), not in pytest's unless run so.
    tunables = os.environ.get("GLIBC_TUNABLES", "").split(":")
    assert report["environment"]["cpu_heap_reuse"] is ("glibc.malloc.tcache_count=0" in tunables)
    # The shapes configs train from scratch with group norms (nothing to fold); their backbones
    # run channels-last on the CPU; Panoptic-DeepLab's two branches have six depthwise
    # convolutions each (three 3x3 in ASPP, of dilations 1, 2, 3 there; three 5x5 in the decoder
    # and heads), all by ONNX Runtime, and a decoder each; UPSNet's semantic head has three
    # deformable layers (the shapes Panoptic FCN has none: its position head's DEFORM is off
    # there).
    # The deformable layers run the C kernel where it is built, else ONNX Runtime's.
    deformable = (
        "deformable_onnxruntime_convolutions" if DEFORM_SAMPLING is None
        else "deformable_kernel_convolutions"
    )  # fmt: skip
    replaced = {
        "Panoptic FPN": {},
        "UPSNet": {deformable: 3, "level_sum_predictors": 1},
        "Panoptic-DeepLab": {
            "depthwise_onnxruntime_convolutions": 12, "upsampling_into_concat": 2,
        },
        "Panoptic FCN": {},
        "Mask2Former": {},
    }
    for method in report["methods"]:
        assert method["cpu_optimizations"] == {
            "batch_norms_folded": 0, "channels_last_backbone": True,
            "depthwise_onnxruntime_convolutions": 0, "deformable_kernel_convolutions": 0,
            "deformable_onnxruntime_convolutions": 0, "class_map_kernels": True,
            "level_sum_predictors": 0, "upsampling_into_concat": 0,
            **replaced[method["method"]],
        }  # fmt: skip


def _tables(markdown: str) -> list[list[list[str]]]:
    """Every Markdown table: rows of cells, the header first, the separator row dropped."""
    tables, current = [], []
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            if not line.startswith("|---"):
                current.append([cell.strip() for cell in line.strip("|").split("|")])
        elif current:
            tables.append(current)
            current = []
    return tables


def test_markdown_tables_are_well_formed(tiny_run):
    _, output_dir = tiny_run
    speed, backends, accuracy = _tables((output_dir / MARKDOWN_NAME).read_text())
    assert tuple(speed[0]) == SPEED_COLUMNS and tuple(accuracy[0]) == ACCURACY_COLUMNS
    assert backends[0] == BACKEND_COLUMNS and all(len(row) == len(backends[0]) for row in backends)
    assert [row[:2] for row in backends[1:]] == [
        [name, backend]
        for name in CONFIG_NAMES
        for backend in ["onnxruntime"] + ["onnxruntime-deformconv"] * (name in DEFORMABLE)
    ]
    for table in (speed, accuracy):
        assert {row[0]: row[1] for row in table[1:]} == CONFIG_NAMES
        assert all(len(row) == len(table[0]) for row in table)
    for row in speed[1:]:
        cells = dict(zip(SPEED_COLUMNS, row))
        memory = cells.pop("peak memory MiB (rise)").split()[0]
        numbers = [float(v) for k, v in cells.items() if k not in TEXT_COLUMNS] + [float(memory)]
        assert all(math.isfinite(x) and x >= 0 for x in numbers)
        assert float(cells["total ms"]) > 0 and float(cells["network / floor"]) > 0
    for row in accuracy[1:]:
        assert all(v == "n/a" or 0 <= float(v) <= 100 for v in row[3:])
    assert (output_dir / PLOT_NAME).read_bytes().startswith(b"\x89PNG")


def test_default_configs_are_named_relative_to_the_working_directory(monkeypatch, tmp_path):
    """A report names the registered configs as a user would give them: no machine paths."""
    from panoptic_zoo.benchmark.cli import registered_method_configs
    from panoptic_zoo.model_zoo.model_zoo import CONFIG_ROOT

    monkeypatch.chdir(CONFIG_ROOT.parent)
    configs = registered_method_configs(tiny=False)
    assert configs and all(c.startswith("configs/coco/") for c in configs)
    monkeypatch.chdir(tmp_path)  # outside the checkout: absolute
    assert all(Path(c).is_absolute() for c in registered_method_configs(tiny=True))
