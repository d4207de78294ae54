#!/usr/bin/env python
"""
The comparison protocol: every config of a comparison set trained for several seeds with the
same data, schedule and augmentation, each run evaluated, and one report of mean +- std over
seeds (docs/COMPARISON.md).

    python tools/compare_methods.py [--set configs/shapes/comparison.yaml] \\
        [--output-dir output/comparison] [--threads N] [--report-only] [KEY VALUE ...]
    python tools/compare_methods.py --time-iterations 20 --threads 1   # size the protocol

Run by run: a finished run (``model_final.pth`` of the last iteration) is skipped, an
interrupted one resumes from its last checkpoint (the project's Trainer resumes exactly), so an
interrupted protocol continues where it stopped when the same command is run again. The same
command started N times side by side (e.g. one per core, ``--threads 1``) shares the runs: each
run is locked by the process training it (the lock goes with the process), and the last process
to finish writes the report.

Per run, in ``runs/<config>/seed_<seed>/``: the training, its evaluation (``eval_results.json``:
PQ/SQ/RQ all/things/stuff, PQ by segment area, panoptic AP, mIoU), the periodic evaluations of
``TEST.EVAL_PERIOD`` (the learning curve, in ``metrics.json``), ``training_clock.json`` (wall and
CPU seconds of the training steps kept) and ``measurements.json`` (parameters, multiply-adds and
CPU inference time, measured by panoptic_zoo.benchmark's code on the final weights). The report,
when every run is finished: ``comparison.json``, ``comparison.md``, ``speed_vs_pq.png`` and
``learning_curve.png``. Trailing KEY VALUE pairs override every config (after the set's).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import math
import os
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog
from detectron2.engine import HookBase

from panoptic_zoo.acceleration import optimize_for_cpu
from panoptic_zoo.benchmark.flops import count_multiply_adds
from panoptic_zoo.benchmark.run import device_name
from panoptic_zoo.benchmark.settings import BenchmarkSettings, benchmark_inputs
from panoptic_zoo.benchmark.timing import time_inference
from panoptic_zoo.config import check_class_counts, get_cfg
from panoptic_zoo.data.datasets.custom import register_from_config
from panoptic_zoo.engine import Trainer, build_inference_model, without_acceleration
from panoptic_zoo.engine.trainer import EVAL_RESULTS_FILE
from panoptic_zoo.modeling.methods import method_of
from panoptic_zoo.utils.config import shrink_to_test_size
from panoptic_zoo.utils.io import atomic_write, atomic_write_json

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SET = REPO / "configs" / "shapes" / "comparison.yaml"
CLOCK_FILE, MEASUREMENTS_FILE = "training_clock.json", "measurements.json"
FINAL_CHECKPOINT = "model_final.pth"
# Report columns: evaluator keys (percent) as mean +- std over seeds.
ACCURACY_KEYS = (
    "PQ", "PQ_th", "PQ_st", "SQ", "RQ", "SQ_th", "RQ_th", "SQ_st", "RQ_st",
    "PQs", "PQm", "PQl", "PQs_th", "PQm_th", "PQl_th", "AP", "mIoU",
)  # fmt: skip
# CPU inference times of measurements.json.
INFERENCE_KEYS = ("network_ms", "postprocess_ms", "total_ms")
LEARNING_CURVE_KEY = "panoptic_seg/PQ_th"


@dataclass(frozen=True)
class ComparisonSet:
    """A comparison set file: configs (relative to the file), seeds, shared overrides, and the
    inference-time measurement's input size, threads, warm-up and repeats."""

    path: Path
    configs: tuple[Path, ...]
    seeds: tuple[int, ...]
    opts: tuple[str, ...]
    size: tuple[int, int]
    threads: int
    warmup: int
    repeats: int

    @classmethod
    def load(cls, path: Path) -> ComparisonSet:
        data = yaml.safe_load(path.read_text()) or {}
        unknown = set(data) - {"configs", "seeds", "opts", "benchmark"}
        problems = [f"unknown keys {sorted(unknown)}"] if unknown else []
        configs = tuple(path.parent / c for c in data.get("configs") or [])
        problems += [f"config {c} does not exist" for c in configs if not c.is_file()]
        if not configs:
            problems.append("'configs' must list at least one config file")
        seeds = data.get("seeds") or []
        if not seeds or len(set(seeds)) != len(seeds) or not all(isinstance(s, int) for s in seeds):
            problems.append(f"'seeds' must be distinct integers, not {seeds!r}")
        opts = [str(o) for o in data.get("opts") or []]
        if len(opts) % 2:
            problems.append("'opts' must be KEY VALUE pairs (an even number of items)")
        bench = data.get("benchmark") or {}
        size = bench.get("size", [128, 170])
        if len(size) != 2:
            problems.append(f"'benchmark: size' must be [height, width], not {size!r}")
        if problems:
            raise ValueError(f"{path}: " + "; ".join(problems))
        return cls(
            path, configs, tuple(seeds), tuple(opts), tuple(size),
            threads=bench.get("threads", 1), warmup=bench.get("warmup", 2),
            repeats=bench.get("repeats", 10),
        )  # fmt: skip


@dataclass(frozen=True)
class Run:
    config: Path
    seed: int
    directory: Path

    @property
    def name(self) -> str:
        return f"{self.config.stem} seed {self.seed}"


def protocol_runs(comparison: ComparisonSet, output_dir: Path) -> list[Run]:
    return [
        Run(config, seed, output_dir / "runs" / config.stem / f"seed_{seed}")
        for config in comparison.configs
        for seed in comparison.seeds
    ]


def run_config(run: Run, comparison: ComparisonSet, opts: list[str], tiny: bool) -> CfgNode:
    """The run's config: the method's file, the set's and the command line's overrides, the seed."""
    cfg = get_cfg()
    cfg.merge_from_file(str(run.config))
    cfg.merge_from_list([*comparison.opts, *opts])
    if tiny:
        shrink_to_test_size(cfg)
    cfg.SEED = run.seed
    cfg.OUTPUT_DIR = str(run.directory)
    register_from_config(cfg)
    check_class_counts(cfg)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return cfg


@contextlib.contextmanager
def locked(path: Path):
    """Yields whether this process holds the lock file ``path``; the operating system releases
    it when the process ends, however it ends."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def finished_iterations(run: Run) -> int:
    """Iterations of the run's last checkpoint (0: none yet)."""
    last = run.directory / "last_checkpoint"
    if not last.is_file():
        return 0
    checkpoint = torch.load(run.directory / last.read_text().strip(), weights_only=True)
    return checkpoint.get("iteration", -1) + 1


class TrainingClock(HookBase):
    """
    Wall and CPU seconds (this process, all its threads) of the training steps, written with
    every checkpoint as ``{iterations: {wall_s, cpu_s}}``: a resumed run continues from the time
    its checkpoint's iterations took, so iterations redone after an interruption count once.
    Periodic evaluations and checkpoint writes are not training steps and are not counted.
    """

    def __init__(self, path: Path, checkpoint_period: int):
        self.path, self.period = path, checkpoint_period
        self.step_samples: list[tuple[float, float]] = []  # (wall, CPU) of each step

    def before_train(self):
        saved = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.saved = {int(k): v for k, v in saved.items() if int(k) <= self.trainer.start_iter}
        base = self.saved.get(self.trainer.start_iter, {"wall_s": 0.0, "cpu_s": 0.0})
        self.wall, self.cpu = base["wall_s"], base["cpu_s"]

    def before_step(self):
        self._start = (time.perf_counter(), time.process_time())

    def after_step(self):
        wall = time.perf_counter() - self._start[0]
        cpu = time.process_time() - self._start[1]
        self.step_samples.append((wall, cpu))
        self.wall, self.cpu = self.wall + wall, self.cpu + cpu
        iterations = self.trainer.iter + 1
        if iterations % self.period == 0 or iterations == self.trainer.max_iter:
            self.saved[iterations] = {"wall_s": self.wall, "cpu_s": self.cpu}
            atomic_write_json(self.path, self.saved)


class ProtocolTrainer(Trainer):
    """The project's Trainer with a :class:`TrainingClock` first among its hooks, so that its
    step time excludes the other hooks' work (evaluation, checkpoints, logging)."""

    def build_hooks(self):
        self.clock = TrainingClock(
            Path(self.cfg.OUTPUT_DIR) / CLOCK_FILE, self.cfg.SOLVER.CHECKPOINT_PERIOD
        )
        return [self.clock, *super().build_hooks()]


def train(cfg: CfgNode) -> ProtocolTrainer:
    """Train ``cfg`` to the end, resuming from its OUTPUT_DIR's last checkpoint if there is one."""
    Path(cfg.OUTPUT_DIR).mkdir(parents=True, exist_ok=True)
    atomic_write(Path(cfg.OUTPUT_DIR) / "config.yaml", lambda f: f.write(cfg.dump()), mode="w")
    trainer = ProtocolTrainer(cfg)
    trainer.resume_or_load(resume=True)
    trainer.train()
    return trainer


def measure(cfg: CfgNode, comparison: ComparisonSet, weights: Path) -> dict:
    """Parameters, multiply-adds and CPU inference time of the final weights, with the
    benchmark's code (panoptic_zoo.benchmark), on the first test image resized to the set's size."""
    settings = BenchmarkSettings(
        size=comparison.size, threads=comparison.threads, device="cpu", precisions=("fp32",),
        warmup=comparison.warmup, repeats=comparison.repeats, output_dir=Path(cfg.OUTPUT_DIR),
    )  # fmt: skip
    cpu_cfg = cfg.clone()
    cpu_cfg.defrost()
    cpu_cfg.MODEL.DEVICE = "cpu"
    cpu_cfg.freeze()
    model = build_inference_model(without_acceleration(cpu_cfg), str(weights))
    # Parameters of the trained model, counted before folding the norms changes them.
    parameters = sum(p.numel() for p in model.parameters())
    optimize_for_cpu(model, cpu_cfg)
    source = DatasetCatalog.get(cfg.DATASETS.TEST[0])[0]["file_name"]
    inputs = benchmark_inputs(cpu_cfg, settings, source)
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        macs = count_multiply_adds(model, inputs)
        timing = time_inference(model, inputs, warmup=settings.warmup, repeats=settings.repeats)
    finally:
        torch.set_num_threads(threads)
    return {
        "parameters": parameters,
        "network_gflop": 2 * macs.network / 1e9,
        "postprocess_gflop": 2 * macs.postprocess / 1e9,
        "network_ms": 1000 * timing["network_s"],
        "postprocess_ms": 1000 * timing["postprocess_s"],
        "total_ms": 1000 * timing["total_s"],
        "input_size": list(comparison.size),
        "threads": settings.threads,
    }


def evaluated_run(run: Run, cfg: CfgNode, comparison: ComparisonSet) -> dict:
    """The finished run's evaluation, clock and measurements (evaluating or measuring where the
    files are missing, e.g. after an interruption during the final evaluation)."""
    final = run.directory / FINAL_CHECKPOINT
    results_file = run.directory / EVAL_RESULTS_FILE
    if not results_file.is_file() or results_file.stat().st_mtime < final.stat().st_mtime:
        Trainer.test(cfg, build_inference_model(cfg, str(final)))
    measurements_file = run.directory / MEASUREMENTS_FILE
    if not measurements_file.is_file():
        atomic_write_json(measurements_file, measure(cfg, comparison, final))
    clock = json.loads((run.directory / CLOCK_FILE).read_text())
    return {
        "config": str(run.config),
        "seed": run.seed,
        "method": method_of(cfg.MODEL.META_ARCHITECTURE).name,
        "iterations": cfg.SOLVER.MAX_ITER,
        "results": json.loads(results_file.read_text()).get("panoptic_seg", {}),
        "clock": clock[str(cfg.SOLVER.MAX_ITER)],
        "measurements": json.loads(measurements_file.read_text()),
        "learning_curve": learning_curve(run.directory / "metrics.json", cfg.SOLVER.MAX_ITER),
    }


def learning_curve(metrics_file: Path, max_iter: int) -> list[tuple[int, float]]:
    """(iterations, things PQ) of every evaluation in the run's metrics.json; where a resumed
    run evaluated an iteration again, the last value."""
    points = {}
    for line in metrics_file.read_text().splitlines() if metrics_file.is_file() else []:
        row = json.loads(line)
        if LEARNING_CURVE_KEY in row:
            # Periodic evaluations are logged at the last iteration's index, the final one (after
            # training) at MAX_ITER.
            points[min(row["iteration"] + 1, max_iter)] = row[LEARNING_CURVE_KEY]
    return sorted(points.items())


def format_duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s"


def run_protocol(
    comparison: ComparisonSet, runs: list[Run], opts: list[str], tiny: bool
) -> list[Run]:  # fmt: skip
    """
    Train every run that is not finished and not locked by another process, with progress and
    an estimate of the time left (from this process's speed so far); returns the runs that are
    not finished at the end (being trained elsewhere).
    """
    configs = {run: run_config(run, comparison, opts, tiny) for run in runs}
    done = {run: finished_iterations(run) for run in runs}
    total = sum(cfg.SOLVER.MAX_ITER for cfg in configs.values())
    trained, started = 0, time.perf_counter()
    for k, run in enumerate(runs, 1):
        cfg = configs[run]
        progress = f"[{k}/{len(runs)}] {run.name}"
        if done[run] >= cfg.SOLVER.MAX_ITER:
            print(f"{progress}: finished before, skipped", flush=True)
            continue
        with locked(run.directory / "training.lock") as mine:
            if not mine:
                print(f"{progress}: being trained by another process, skipped", flush=True)
                continue
            done[run] = finished_iterations(run)  # another process may have finished it
            if done[run] >= cfg.SOLVER.MAX_ITER:
                continue
            finished = sum(done.values())
            rate = (time.perf_counter() - started) / trained if trained else None
            eta = f", about {format_duration(rate * (total - finished))} left" if rate else ""
            state = f"resuming at iteration {done[run]}" if done[run] else "training"
            print(f"{progress}: {state} ({finished} of {total} iterations done{eta})", flush=True)
            train(cfg)
            trained += cfg.SOLVER.MAX_ITER - done[run]
            done[run] = cfg.SOLVER.MAX_ITER
    return [run for run in runs if finished_iterations(run) < configs[run].SOLVER.MAX_ITER]


def mean_and_std(values: list[float]) -> dict:
    """Mean, sample standard deviation (None for one value) and count of the defined values."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    return {
        "mean": statistics.mean(values) if values else None,
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "n": len(values),
    }


def summarize(runs: list[dict]) -> list[dict]:
    """Per config: every accuracy key and cost as mean +- std over seeds, and the mean curve."""
    summary = []
    for config in dict.fromkeys(r["config"] for r in runs):
        mine = [r for r in runs if r["config"] == config]
        costs = {
            "train_wall_h": [r["clock"]["wall_s"] / 3600 for r in mine],
            "train_cpu_h": [r["clock"]["cpu_s"] / 3600 for r in mine],
            **{k: [r["measurements"][k] for r in mine] for k in INFERENCE_KEYS},
        }
        iterations = sorted({i for r in mine for i, _ in r["learning_curve"]})
        curve = {
            i: mean_and_std([dict(r["learning_curve"]).get(i) for r in mine]) for i in iterations
        }
        first = mine[0]["measurements"]
        summary.append({
            "method": mine[0]["method"],
            "config": config,
            "seeds": [r["seed"] for r in mine],
            "iterations": mine[0]["iterations"],
            "accuracy": {k: mean_and_std([r["results"].get(k) for r in mine]) for k in ACCURACY_KEYS},
            "cost": {k: mean_and_std(v) for k, v in costs.items()},
            "parameters": first["parameters"],
            "network_gflop": first["network_gflop"],
            "postprocess_gflop": first["postprocess_gflop"],
            "learning_curve": [{"iterations": i, **curve[i]} for i in iterations],
        })  # fmt: skip
    return summary


def _cell(stat: dict, digits: int = 1) -> str:
    if stat["mean"] is None:
        return "n/a"
    spread = f" ± {stat['std']:.{digits}f}" if stat["std"] is not None else ""
    return f"{stat['mean']:.{digits}f}{spread}"


def markdown(report: dict) -> str:
    methods = report["methods"]
    lines = [
        "# Comparison",
        "",
        f"Command: `{report['command']}`; comparison set: `{report['set']}`.",
        f"Mean ± sample standard deviation over seeds {report['seeds']}; "
        f"{methods[0]['iterations']} iterations per run. Accuracy in percent on "
        f"`{report['test_dataset']}`; PQs/PQm/PQl: PQ by segment area.",
        "",
        "| method | " + " | ".join(ACCURACY_KEYS) + " |",
        "|---" * (len(ACCURACY_KEYS) + 1) + "|",
    ]
    for m in methods:
        cells = [_cell(m["accuracy"][k]) for k in ACCURACY_KEYS]
        lines.append(f"| {m['method']} | " + " | ".join(cells) + " |")
    size = "x".join(map(str, methods[0]["input_size"]))
    lines += [
        "",
        f"Cost: parameters and multiply-adds (x2 = GFLOP) of one {size} image; CPU inference "
        f"time (median of {report['benchmark']['repeats']} calls, "
        f"{report['benchmark']['threads']} thread(s)); training time of the training steps "
        "(wall and CPU hours), per run.",
        "",
        "| method | params (M) | network GFLOP | post-proc. GFLOP | network ms | post-proc. ms "
        "| total ms | training h (wall) | training h (CPU) |",
        "|---" * 9 + "|",
    ]
    for m in methods:
        c = m["cost"]
        lines.append(
            f"| {m['method']} | {m['parameters'] / 1e6:.2f} | {m['network_gflop']:.2f} "
            f"| {m['postprocess_gflop']:.3f} | {_cell(c['network_ms'])} | "
            f"{_cell(c['postprocess_ms'])} | {_cell(c['total_ms'])} | "
            f"{_cell(c['train_wall_h'], 2)} | {_cell(c['train_cpu_h'], 2)} |"
        )
    lines += ["", f"Machine: {report['machine']}.", ""]
    return "\n".join(lines)


def plot(report: dict, output_dir: Path) -> list[Path]:
    """The speed-vs-PQ plot and the learning curve (things PQ against iterations), error bars
    and bands of one standard deviation over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = [output_dir / "speed_vs_pq.png", output_dir / "learning_curve.png"]
    figure, axes = plt.subplots(figsize=(6, 4.5))
    for m in report["methods"]:
        time_ms, pq = m["cost"]["total_ms"], m["accuracy"]["PQ"]
        if pq["mean"] is None:
            continue
        axes.errorbar(
            time_ms["mean"], pq["mean"], xerr=time_ms["std"] or 0, yerr=pq["std"] or 0,
            fmt="o", capsize=4, label=m["method"],
        )  # fmt: skip
    axes.set_xlabel("CPU inference time per image (ms)")
    axes.set_ylabel("PQ")
    axes.set_title("PQ against CPU inference time (mean ± std over seeds)")
    axes.legend()
    figure.tight_layout()
    figure.savefig(paths[0], dpi=120)
    plt.close(figure)

    figure, axes = plt.subplots(figsize=(6, 4.5))
    for m in report["methods"]:
        points = [p for p in m["learning_curve"] if p["mean"] is not None]
        if not points:
            continue
        x = [p["iterations"] for p in points]
        mean = [p["mean"] for p in points]
        std = [p["std"] or 0.0 for p in points]
        axes.plot(x, mean, marker=".", label=m["method"])
        axes.fill_between(x, [a - b for a, b in zip(mean, std)], [a + b for a, b in zip(mean, std)],
                          alpha=0.2)  # fmt: skip
    axes.set_xlabel("iteration")
    axes.set_ylabel("things PQ")
    axes.set_title("Learning curve (mean ± std over seeds)")
    axes.legend()
    figure.tight_layout()
    figure.savefig(paths[1], dpi=120)
    plt.close(figure)
    return paths


def write_report(
    comparison: ComparisonSet, runs: list[Run], opts, tiny, output_dir: Path, command: str
) -> dict[str, Path]:  # fmt: skip
    evaluated = []
    for k, run in enumerate(runs, 1):
        print(f"[{k}/{len(runs)}] {run.name}: evaluation and measurements", flush=True)
        evaluated.append(evaluated_run(run, run_config(run, comparison, opts, tiny), comparison))
    methods = summarize(evaluated)
    for m in methods:
        m["input_size"] = list(comparison.size)
    report = {
        "command": command,
        "set": str(comparison.path),
        "seeds": list(comparison.seeds),
        "test_dataset": run_config(runs[0], comparison, opts, tiny).DATASETS.TEST[0],
        "benchmark": {"threads": comparison.threads, "repeats": comparison.repeats},
        "machine": device_name("cpu"),
        "methods": methods,
        "runs": evaluated,
    }
    paths = {
        "json": atomic_write_json(output_dir / "comparison.json", report),
        "markdown": atomic_write(
            output_dir / "comparison.md", lambda f: f.write(markdown(report)), mode="w"
        ),
    }
    paths["speed_vs_pq"], paths["learning_curve"] = plot(report, output_dir)
    return paths


def time_iterations(comparison: ComparisonSet, opts, tiny, iterations: int, output_dir: Path):
    """
    Train each config ``iterations`` iterations (first seed, in a temporary folder) and evaluate
    the result once; print the median wall and CPU seconds per training step after the first
    quarter, the seconds of one evaluation, and the CPU hours of the set's schedule, seeds and
    evaluations (``TEST.EVAL_PERIOD``) made of them.
    """
    rows = []
    for config in comparison.configs:
        with tempfile.TemporaryDirectory(dir=output_dir) as folder:
            cfg = run_config(Run(config, comparison.seeds[0], Path(folder)), comparison, opts, tiny)
            schedule, period = cfg.SOLVER.MAX_ITER, cfg.TEST.EVAL_PERIOD
            evaluations = -(-schedule // period) if period > 0 else 1
            timed = cfg.clone()
            timed.defrost()
            timed.SOLVER.MAX_ITER = timed.SOLVER.CHECKPOINT_PERIOD = iterations
            timed.DATASETS.TEST = ()
            load_before = os.getloadavg()[0]
            trainer = train(timed)
            wall, cpu = (
                statistics.median(column)
                for column in zip(*trainer.clock.step_samples[iterations // 4 :])
            )
            start = (time.perf_counter(), time.process_time())
            Trainer.test(cfg, trainer.model)
            eval_wall = time.perf_counter() - start[0]
            eval_cpu = time.process_time() - start[1]
            load = f"{load_before:.1f}-{os.getloadavg()[0]:.1f}"
            rows.append((config.stem, wall, cpu, eval_wall, eval_cpu, load, schedule, evaluations))
    seeds = len(comparison.seeds)
    print(
        f"{torch.get_num_threads()} torch thread(s); steps {iterations // 4 + 1}-{iterations} "
        f"(median); {seeds} seeds"
    )
    print(
        "| config | s/iter (wall) | s/iter (CPU) | evaluation s (wall) | evaluation s (CPU) "
        "| load (1 min) | iterations | evaluations | CPU h, all seeds |"
    )
    print("|---" * 9 + "|")
    total = 0.0
    for name, wall, cpu, eval_wall, eval_cpu, load, schedule, evaluations in rows:
        hours = (cpu * schedule + eval_cpu * evaluations) * seeds / 3600
        total += hours
        print(
            f"| {name} | {wall:.2f} | {cpu:.2f} | {eval_wall:.1f} | {eval_cpu:.1f} | {load} "
            f"| {schedule} | {evaluations} | {hours:.2f} |"
        )
    print(f"whole protocol (training steps and evaluations): {total:.2f} CPU hours")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", type=Path, default=DEFAULT_SET, help="comparison set YAML")
    parser.add_argument("--output-dir", type=Path, default=REPO / "output" / "comparison")
    parser.add_argument(
        "--threads", type=int, help="torch threads for training (default: torch's, all cores)"
    )
    parser.add_argument(
        "--report-only", action="store_true", help="no training: the report of finished runs"
    )
    parser.add_argument(
        "--time-iterations", type=int, metavar="N",
        help="only time N training iterations of each config and size the protocol",
    )  # fmt: skip
    parser.add_argument(
        "--tiny", action="store_true", help="configs shrunk to test size (CI smoke runs)"
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        comparison = ComparisonSet.load(args.set)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.output_dir.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if args.time_iterations:
            time_iterations(comparison, args.opts, args.tiny, args.time_iterations, args.output_dir)
            return 0
        runs = protocol_runs(comparison, args.output_dir)
        unfinished = run_protocol(
            comparison, [] if args.report_only else runs, args.opts, args.tiny
        )
        if args.report_only:
            unfinished = [
                r for r in runs
                if finished_iterations(r)
                < run_config(r, comparison, args.opts, args.tiny).SOLVER.MAX_ITER
            ]  # fmt: skip
        if unfinished:
            names = ", ".join(r.name for r in unfinished)
            print(f"not finished yet: {names}; the process that finishes them writes the report")
            return 0 if not args.report_only else 1
        with locked(args.output_dir / "report.lock") as mine:
            if not mine:
                print("another process is writing the report")
                return 0
            command = shlex.join(["python", "tools/compare_methods.py", *(argv or sys.argv[1:])])
            paths = write_report(comparison, runs, args.opts, args.tiny, args.output_dir, command)
    finally:
        torch.set_num_threads(threads)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
