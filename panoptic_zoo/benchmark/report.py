"""The benchmark's outputs: the JSON report, its Markdown tables and the speed-vs-PQ plot."""

from __future__ import annotations

from pathlib import Path

from ..utils.io import atomic_write_json

__all__ = [
    "ACCURACY_COLUMNS",
    "ACCURACY_KEYS",
    "PQ_KEYS",
    "SPEED_COLUMNS",
    "markdown_report",
    "plot_speed_vs_pq",
    "write_report",
]

SPEED_COLUMNS = (
    "method", "config", "precision", "params (M)", "network GFLOP", "post-proc. GFLOP",
    "network ms", "post-proc. ms", "total ms", "FPS", "post-proc. / network", "floor GFLOP/s",
    "floor ms", "network / floor", "peak memory MiB (rise)", "reference", "reference ms",
    "speed-up",
)  # fmt: skip
PQ_KEYS = ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st")
# Report keys of the accuracy table, in its column order after method, config and weights.
ACCURACY_KEYS = (*PQ_KEYS, "mask_AP", "mIoU")
ACCURACY_COLUMNS = ("method", "config", "weights", *ACCURACY_KEYS)

JSON_NAME, MARKDOWN_NAME, PLOT_NAME = "benchmark.json", "benchmark.md", "speed_vs_pq.png"


def _number(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _table(columns, rows) -> list[str]:
    return [
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def _changes(changes: dict) -> str:
    return ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in changes.items())


def _reference_cell(reference: dict) -> str:
    """The reference's name, and how its panoptic output compared where it was compared."""
    agreement = reference.get("output_agreement")
    if not agreement:
        return reference["name"]
    segments = "same segments" if agreement["segments_equal"] else "segments differ"
    return (
        f"{reference['name']} (output: {100 * agreement['panoptic_pixels_equal']:.2f} % of "
        f"pixels equal, {segments})"
    )


def _speed_rows(report: dict):
    for method in report["methods"]:
        reference = method["reference"]
        memory = method["peak_memory"]
        memory_cell = (
            "n/a"
            if memory["peak_mib"] is None
            else f"{memory['peak_mib']:.0f} (+{memory['increase_mib']:.0f})"
        )
        for precision, timing in method["timings"].items():
            reference_timing = reference["timings"].get(precision)
            if reference_timing is not None:
                reference_ms = _number(1000 * reference_timing["total_s"])
                speed_up = f"{reference_timing['total_s'] / timing['total_s']:.2f}x"
            else:
                reference_ms, speed_up = "n/a", reference["note"]
            yield [
                method["method"], Path(method["config"]).stem, precision,
                _number(method["parameters"] / 1e6, 2),
                _number(method["gflop"]["network"], 2), _number(method["gflop"]["postprocess"], 3),
                _number(1000 * timing["network_s"]), _number(1000 * timing["postprocess_s"]),
                _number(1000 * timing["total_s"]), _number(1 / timing["total_s"]),
                _number(timing["postprocess_s"] / timing["network_s"], 3),
                _number(method["floor_rate_gflop_per_s"]), _number(1000 * method["floor_s"]),
                _number(timing["network_s"] / method["floor_s"], 2),
                memory_cell, _reference_cell(reference), reference_ms, speed_up,
            ]  # fmt: skip


def _accuracy_rows(report: dict):
    for method in report["methods"]:
        if method["accuracy"] is not None:
            yield [
                method["method"],
                Path(method["config"]).stem,
                method["weights"] or "(initialization)",
                *(_number(method["accuracy"].get(key)) for key in ACCURACY_KEYS),
            ]


BACKEND_COLUMNS = [
    "method", "backend", "deformable conv", "network ms", "post-processing ms", "total ms",
    "eager network ms",
    "eager post-processing ms", "network speed-up", "total speed-up", "pixels as eager",
    "same segments",
]  # fmt: skip


def _backend_rows(report: dict):
    """Each deployment backend against the eager float32 timing of the same run."""
    for method in report["methods"]:
        eager = method["timings"]["fp32"]
        for backend, timing in method.get("backends", {}).items():
            yield [
                method["method"], backend, timing.get("deformable") or "-",
                _number(1000 * timing["network_s"]), _number(1000 * timing["postprocess_s"]),
                _number(1000 * timing["total_s"]),
                _number(1000 * eager["network_s"]), _number(1000 * eager["postprocess_s"]),
                f"{eager['network_s'] / timing['network_s']:.2f}x",
                f"{eager['total_s'] / timing['total_s']:.2f}x",
                f"{100 * timing['pixel_agreement']:.4f} %",
                "yes" if timing["same_segments"] else "no",
            ]  # fmt: skip


def markdown_report(report: dict) -> str:
    environment, settings, floor = report["environment"], report["settings"], report["floor"]
    height, width = settings["size"]
    conv = floor["conv3x3"]
    # The committed reports under docs/benchmarks/ carry no date (docs hold no timestamps).
    generated_on = f"{environment['date']} " if "date" in environment else ""
    lines = [
        "# panoptic_zoo benchmark",
        "",
        f"Generated {generated_on}by `{environment['command']}`.",
        "",
        f"* machine: {environment['device_name']}; device `{settings['device']}`, "
        f"{settings['threads']} thread(s); torch {environment['torch']}, "
        f"detectron2 {environment['detectron2']}; load average "
        f"{environment['load_average_start']} at start, {environment['load_average_end']} at end",
        f"* input: one {height}x{width} image ({settings['image']}), batch 1; times are medians "
        f"of {settings['repeats']} calls after {settings['warmup']} warm-up call(s); network = "
        "until the last module with weights returns, post-processing = the rest",
        f"* floor: float32 {floor['gemm']['shape'][0]}^3 GEMM "
        f"{floor['gemm']['gflop_per_s']:.1f} GFLOP/s; 3x3 conv {conv['shape']['channels']}->"
        f"{conv['shape']['channels']} at {conv['shape']['height']}x{conv['shape']['width']}: "
        f"{conv['gflop_per_s']['nchw']:.1f} GFLOP/s (NCHW), "
        f"{conv['gflop_per_s']['channels_last']:.1f} GFLOP/s (channels-last), at the start of "
        "the run; floor = network GFLOP / the median rate of the faster convolution timed again "
        "before each timed call of that method (column floor GFLOP/s)",
        "* models as `train_net.py --eval-only` runs them; its CPU optimizations "
        "(ACCELERATION.CPU.* options, docs/ACCELERATION.md): "
        + "; ".join(
            f"{m['method']} {_changes(m['cpu_optimizations'])}" for m in report["methods"]
        )
        + f"; freed CPU memory reused: {'yes' if environment['cpu_heap_reuse'] else 'no'}",
        "* GFLOP = 2 x fvcore's multiply-adds (convolutions, matrix products, norms, upsampling, "
        "deformable convolution, RoIAlign, NMS; not element-wise ops, reductions or sorting)",
        "",
        "## Speed",
        "",
        *_table(SPEED_COLUMNS, _speed_rows(report)),
    ]
    backends = list(_backend_rows(report))
    if backends:
        lines += [
            "",
            "## Deployment backends",
            "",
            "The network exported at the benchmark size (panoptic_zoo.deploy), post-processing "
            "eager; speed-up = eager seconds / backend seconds, timed in turns in this run (one "
            "call of each per round: both under the same load).",
            "",
            *_table(BACKEND_COLUMNS, backends),
        ]
    accuracy = list(_accuracy_rows(report))
    if accuracy:
        lines += [
            "",
            f"## Accuracy on `{settings['eval_dataset']}`",
            "",
            *_table(ACCURACY_COLUMNS, accuracy),
        ]
    return "\n".join(lines) + "\n"


def plot_speed_vs_pq(report: dict, path: Path) -> bool:
    """
    PQ against end-to-end time per image (the first precision's), one labelled point per
    method, as Figure 3 of the Panoptic FCN paper. False (no file) without accuracy results.
    """
    points = [
        (
            1000 * next(iter(m["timings"].values()))["total_s"],
            m["accuracy"]["PQ"],
            f"{m['method']} ({Path(m['config']).stem})",
        )
        for m in report["methods"]
        if m["accuracy"] is not None
    ]
    if not points:
        return False
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    from matplotlib import pyplot as plt

    settings = report["settings"]
    figure, axes = plt.subplots(figsize=(6, 4.5))
    for milliseconds, pq, label in points:
        axes.scatter(milliseconds, pq, s=50, label=label)
    # A legend, not labels at the points: methods of similar speed and PQ would overlap.
    axes.legend(loc="best", fontsize="small")
    height, width = settings["size"]
    axes.set_xlabel(
        f"time per image (ms), {height}x{width}, {settings['device']}, "
        f"{settings['threads']} thread(s)"
    )
    axes.set_ylabel(f"PQ on {settings['eval_dataset']}")
    axes.grid(True, alpha=0.3)
    axes.margins(x=0.15, y=0.15)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def write_report(report: dict, output_dir: Path) -> dict[str, Path]:
    """Write the JSON, the Markdown and (with accuracy) the plot; returns their paths."""
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": atomic_write_json(output_dir / JSON_NAME, report)}
    paths["markdown"] = output_dir / MARKDOWN_NAME
    paths["markdown"].write_text(markdown_report(report))
    if plot_speed_vs_pq(report, output_dir / PLOT_NAME):
        paths["plot"] = output_dir / PLOT_NAME
    return paths
