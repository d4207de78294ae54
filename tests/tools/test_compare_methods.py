"""
tools/compare_methods.py end to end on the tiny shapes dataset: two methods x two seeds x four
iterations, interrupted in the third run, run again while another process holds that run (it
is skipped), then again (the finished runs are skipped, the interrupted one resumes from its
checkpoint), then the report: mean +- std over seeds, PQ by
size, cost, the learning curve and the plots.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from types import SimpleNamespace

import pytest
from panoptic_testing import CONFIGS, REPO

from panoptic_zoo.config import _get

# The default set: the four classic methods (why not Mask2Former: docs/COMPARISON.md).
CLASSIC_FOUR = {"PanopticFPN", "UPSNet", "PanopticDeepLabModel", "PanopticFCN"}
spec = importlib.util.spec_from_file_location(
    "compare_methods", REPO / "tools" / "compare_methods.py"
)
compare_methods = importlib.util.module_from_spec(spec)
sys.modules["compare_methods"] = compare_methods  # its dataclasses look their module up
spec.loader.exec_module(compare_methods)

METHODS = ("panoptic_fpn_MNV2", "panoptic_deeplab_MNV2")


class Interrupted(Exception):
    """Stands for the protocol's process being killed."""


def write_set(tmp_path, tiny_shapes, methods=METHODS, seeds=(1, 2), max_iter=4) -> str:
    comparison = {
        "configs": [str(CONFIGS / "shapes" / f"{m}.yaml") for m in methods],
        "seeds": list(seeds),
        "opts": [
            "SOLVER.MAX_ITER", max_iter, "SOLVER.CHECKPOINT_PERIOD", 2, "TEST.EVAL_PERIOD", 2,
            "DATASETS.TRAIN", f"('{tiny_shapes['train']}',)",
            "DATASETS.TEST", f"('{tiny_shapes['val']}',)",
        ],
        "benchmark": {"size": [67, 91], "threads": 1, "warmup": 0, "repeats": 1},
    }  # fmt: skip
    path = tmp_path / f"comparison_{max_iter}.yaml"
    path.write_text(json.dumps(comparison))  # JSON is YAML
    return str(path)


def test_protocol_resumes_and_reports(tiny_shapes, tmp_path, monkeypatch, capsys):
    argv = ["--set", write_set(tmp_path, tiny_shapes), "--output-dir", str(tmp_path / "out"),
            "--tiny", "--threads", "1"]  # fmt: skip
    interrupted_run = tmp_path / "out" / "runs" / METHODS[1] / "seed_1"
    before_step = compare_methods.TrainingClock.before_step

    def killed_after_first_checkpoint(clock):
        if clock.trainer.cfg.OUTPUT_DIR == str(interrupted_run) and clock.trainer.iter == 3:
            raise Interrupted
        before_step(clock)

    with monkeypatch.context() as patch:
        patch.setattr(compare_methods.TrainingClock, "before_step", killed_after_first_checkpoint)
        with pytest.raises(Interrupted):
            compare_methods.main(argv)
    assert (interrupted_run / "last_checkpoint").read_text() == "model_0000001.pth"
    assert not (tmp_path / "out" / "comparison.json").exists()
    capsys.readouterr()

    # Another process holds the interrupted run: this one skips it and trains the last.
    with compare_methods.locked(interrupted_run / "training.lock"):
        assert compare_methods.main(argv) == 0
    printed = capsys.readouterr().out
    assert f"[3/4] {METHODS[1]} seed 1: being trained by another process, skipped" in printed
    (line, recorded) = [line for line in printed.splitlines() if line.startswith("[4/4]")]
    assert recorded == f"[4/4] {METHODS[1]} seed 2: evaluation and measurements"
    assert line.startswith(f"[4/4] {METHODS[1]} seed 2: training (10 of 16 iterations done; ")
    # Both configs have timed iterations (the interrupted run's first two): a full estimate.
    assert "of training left on one free core)" in line
    assert f"not finished yet: {METHODS[1]} seed 1" in printed

    assert compare_methods.main(argv) == 0
    printed = capsys.readouterr().out
    for k, run in ((1, f"{METHODS[0]} seed 1"), (2, f"{METHODS[0]} seed 2"),
                   (4, f"{METHODS[1]} seed 2")):  # fmt: skip
        assert f"[{k}/4] {run}: finished before, skipped" in printed
    assert f"[3/4] {METHODS[1]} seed 1: resuming at iteration 2 (14 of 16" in printed
    metrics = (interrupted_run / "metrics.json").read_text()
    assert '"iteration": 3' in metrics  # the resumed run trained iterations 3 and 4

    report = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert [m["method"] for m in report["methods"]] == ["Panoptic FPN", "Panoptic-DeepLab"]
    for method in report["methods"]:
        runs = [r for r in report["runs"] if r["config"] == method["config"]]
        assert [r["seed"] for r in runs] == method["seeds"] == [1, 2]
        for key in ("PQ", "PQ_th", "mIoU"):
            values = [r["results"][key] for r in runs]
            stat = method["accuracy"][key]
            assert stat["n"] == 2 and stat["mean"] == pytest.approx(sum(values) / 2)
            assert stat["std"] == pytest.approx(abs(values[0] - values[1]) / math.sqrt(2))
        assert method["parameters"] > 1e6 and method["network_gflop"] > 0
        assert method["cost"]["total_ms"]["n"] == 2 and method["cost"]["train_cpu_h"]["mean"] > 0
        assert [p["iterations"] for p in method["learning_curve"]] == [2, 4]
        assert all(r["clock"]["wall_s"] > 0 for r in runs)
    # The learning curve's last point is the final evaluation.
    final = [r["results"]["PQ_th"] for r in report["runs"][:2]]
    assert report["methods"][0]["learning_curve"][-1]["mean"] == pytest.approx(sum(final) / 2)
    table = (tmp_path / "out" / "comparison.md").read_text()
    assert "| Panoptic FPN |" in table and "PQm" in table and " ± " in table
    for plot in ("speed_vs_pq.png", "learning_curve.png"):
        assert (tmp_path / "out" / plot).read_bytes().startswith(b"\x89PNG")
    # Configs inside the repository are recorded relative to it (the report is committed).
    assert report["runs"][0]["config"] == f"configs/shapes/{METHODS[0]}.yaml"
    # Two evaluations per run: too short a curve for the climb over the last two.
    assert report["methods"][0]["final_climb"]["mean"] is None
    assert report["methods"][0]["full_rate_climb"]["mean"] is None
    header = "| PQ_th at 2 | PQ_th at 4 | climb at the end | climb at the full rate |"
    assert header in table and "| n/a | n/a |" in table

    check_update_docs(report, tmp_path / "out", tmp_path / "repo")
    check_records_from_another_machine(report, argv, tmp_path, capsys)


def check_records_from_another_machine(report, argv, tmp_path, capsys):
    """Runs trained elsewhere join by their records alone: the same report from them; measuring
    again needs the weights, and a record of another schedule is refused, before any work."""
    machine = report["runs"][0]["trained_on"]
    assert report["machine"] == machine == report["runs"][0]["measured_on"]
    other = tmp_path / "other"
    for record in (tmp_path / "out" / "runs").rglob(compare_methods.RUN_RECORD):
        copy = other / record.relative_to(tmp_path / "out")
        copy.parent.mkdir(parents=True)
        copy.write_bytes(record.read_bytes())
    assert [p.name for p in other.rglob("*") if p.is_file()] == [compare_methods.RUN_RECORD] * 4
    other_argv = ["--set", argv[1], "--output-dir", str(other), "--tiny", "--report-only"]
    capsys.readouterr()
    assert compare_methods.main(other_argv) == 0
    assert capsys.readouterr().out.count("finished before, skipped") == 4
    assert json.loads((other / "comparison.json").read_text())["methods"] == report["methods"]

    assert compare_methods.main([*other_argv, "--remeasure"]) == 2
    error = capsys.readouterr().err
    assert f"{METHODS[0]}/seed_1/run.json: measuring again needs the run's weights" in error
    assert compare_methods.main([*other_argv, "SOLVER.MAX_ITER", "6"]) == 2
    error = capsys.readouterr().err
    assert f"{METHODS[0]}/seed_1/run.json: a run of 4 iterations" in error
    assert "ask for 6 with steps" in error and "move " in error

    # A missing run: no report, unless a partial one is asked for (never into the docs).
    (other / "runs" / METHODS[1] / "seed_2" / compare_methods.RUN_RECORD).unlink()
    assert compare_methods.main(other_argv) == 1
    assert f"not finished yet: {METHODS[1]} seed 2;" in capsys.readouterr().out
    assert compare_methods.main([*other_argv, "--partial"]) == 0
    partial = json.loads((other / "comparison.json").read_text())
    assert partial["missing"] == [f"{METHODS[1]} seed 2"] and len(partial["runs"]) == 3
    assert partial["methods"][0] == report["methods"][0]
    one_seed = partial["methods"][1]
    assert one_seed["seeds"] == [1] and one_seed["accuracy"]["PQ"]["n"] == 1
    table = (other / "comparison.md").read_text()
    assert f"Partial: the 3 finished runs; missing: {METHODS[1]} seed 2." in table
    for wrong in (["--partial"], ["--report-only", "--partial", "--update-docs"]):
        assert compare_methods.main(["--set", argv[1], *wrong]) == 2
        assert "--partial goes with --report-only" in capsys.readouterr().err


def check_update_docs(report, output_dir, repo):
    """--update-docs on a copy of the documents: the blocks between the markers regenerated from
    the report, everything else kept; a document without markers stops it before any write."""
    paths = {
        "json": output_dir / "comparison.json",
        "markdown": output_dir / "comparison.md",
        "speed_vs_pq": output_dir / "speed_vs_pq.png",
        "learning_curve": output_dir / "learning_curve.png",
    }
    (repo / "docs").mkdir(parents=True)
    (repo / "README.md").write_text("# readme\n")
    benchmarks = (
        f"# Benchmarks\nbefore\n{compare_methods.GENERATED_BEGIN}\nold table\n"
        f"{compare_methods.GENERATED_END}\nafter\n"
    )
    (repo / "docs" / "BENCHMARKS.md").write_text(benchmarks)
    with pytest.raises(ValueError, match="README.md: needs one line"):
        compare_methods.update_docs(report, paths, repo)
    assert not (repo / "docs" / "benchmarks").exists()
    assert (repo / "docs" / "BENCHMARKS.md").read_text() == benchmarks

    (repo / "README.md").write_text(
        f"intro\n{compare_methods.GENERATED_BEGIN}\n{compare_methods.GENERATED_END}\noutro\n"
    )
    compare_methods.update_docs(report, paths, repo)
    readme = (repo / "README.md").read_text().splitlines()
    assert readme[0] == "intro" and readme[-1] == "outro"
    fpn = report["methods"][0]
    row = next(line for line in readme if line.startswith("| Panoptic FPN |"))
    assert row.split(" | ")[1] == compare_methods._cell(fpn["accuracy"]["PQ"])
    assert "old table" not in (repo / "docs" / "BENCHMARKS.md").read_text()
    text = (repo / "docs" / "BENCHMARKS.md").read_text()
    assert text.startswith("# Benchmarks\nbefore\n") and text.endswith("\nafter\n")
    assert "![PQ against CPU inference time](benchmarks/comparison_speed_vs_pq.png)" in text
    committed = repo / "docs" / "benchmarks"
    assert json.loads((committed / "comparison_shapes.json").read_text()) == report
    assert (committed / "comparison_learning_curve.png").read_bytes().startswith(b"\x89PNG")


def test_longer_protocol_continues_the_shorter_ones_runs(tiny_shapes, tmp_path, capsys):
    """--continue-from: a longer schedule's run starts from the shorter protocol's checkpoint
    where their schedules part (here the end: the test size has no learning-rate steps), with
    its clock and learning curve so far, and ends exactly as the same run trained from the
    start (in the same process: the seed, not the runs trained before, sets the model's
    initialization); a run of another config is refused before any training."""

    def protocol(max_iter, output, *extra):
        path = write_set(tmp_path, tiny_shapes, METHODS[:1], seeds=[1], max_iter=max_iter)
        argv = ["--set", path, "--output-dir", str(tmp_path / output), "--tiny", "--threads", "1"]
        return compare_methods.main([*argv, *extra])

    def record(output):
        run = tmp_path / output / "runs" / METHODS[0] / "seed_1"
        return json.loads((run / compare_methods.RUN_RECORD).read_text())

    assert protocol(4, "short") == 0
    capsys.readouterr()
    assert protocol(8, "continued", "--continue-from", str(tmp_path / "short")) == 0
    assert f"[1/1] {METHODS[0]} seed 1: continuing {tmp_path / 'short'}'s run, from its " \
        "iteration 4" in capsys.readouterr().out  # fmt: skip
    assert protocol(8, "scratch") == 0
    short, continued, scratch = record("short"), record("continued"), record("scratch")
    source = tmp_path / "short" / "runs" / METHODS[0] / "seed_1"
    assert continued["continued_from"] == {"run": str(source), "iterations": 4}
    assert "continued_from" not in scratch
    assert continued["results"] == scratch["results"]
    # The shorter run's curve, its final evaluation included, then the longer one's (whose
    # metrics.json keeps only the last of evaluations closer than its writer's period).
    assert [i for i, _ in continued["learning_curve"]] == [2, 4, 6, 8]
    assert continued["learning_curve"][:2] == short["learning_curve"]
    assert continued["learning_curve"][2:] == scratch["learning_curve"][-2:]
    # The clock goes on from the shorter run's 4 iterations.
    continued_run = tmp_path / "continued" / "runs" / METHODS[0] / "seed_1"
    continued_clock = compare_methods.saved_clock(continued_run / compare_methods.CLOCK_FILE)
    assert continued_clock[4] == compare_methods.saved_clock(source / compare_methods.CLOCK_FILE)[4]
    assert continued["clock"]["cpu_s"] > continued_clock[4]["cpu_s"]
    table = (tmp_path / "continued" / "comparison.md").read_text()
    assert f"Continued: {METHODS[0]} seed 1 from the same runs of `{tmp_path / 'short'}` at " \
        "iteration 4" in table  # fmt: skip

    other = ("SOLVER.WEIGHT_DECAY", "0.001")
    assert protocol(8, "other", "--continue-from", str(tmp_path / "short"), *other) == 2
    error = capsys.readouterr().err
    assert f"{source / 'config.yaml'}: a run of another config (it differs in " \
        "SOLVER.WEIGHT_DECAY)" in error  # fmt: skip
    assert not (tmp_path / "other" / "runs" / METHODS[0] / "seed_1" / "last_checkpoint").exists()


def test_schedules_shared_up_to_the_first_step_or_not_at_all():
    """The iterations two schedules train alike: a step schedule's up to the earlier first step
    (the warm-up, a fraction of MAX_ITER, agrees to rounding); a cosine or poly one's only the
    first."""
    from panoptic_zoo.config import get_cfg

    def schedule(max_iter, steps, name="WarmupMultiStepLR"):
        cfg = get_cfg()
        cfg.merge_from_list(["SOLVER.MAX_ITER", max_iter, "SOLVER.STEPS", steps,
                             "SOLVER.LR_SCHEDULER_NAME", name, "SOLVER.WARMUP_ITERS", 100,
                             "OUTPUT_DIR", f"out/{max_iter}"])
        return cfg  # fmt: skip

    short, long = schedule(6000, (4500, 5550)), schedule(9000, (6750, 8325))
    assert compare_methods.shared_iterations(short, long, "x") == 4500
    assert compare_methods.shared_iterations(long, short, "x") == 4500
    rates = compare_methods.learning_rates(long, 6751)
    assert rates[0] == pytest.approx(0.001) and rates[100] == rates[6749] == 1.0
    assert rates[6750] == pytest.approx(0.1)
    # A longer cosine or poly schedule decays more slowly from its first step on.
    for name in ("WarmupCosineLR", "WarmupPolyLR"):
        pair = (schedule(6000, (), name), schedule(9000, (), name))
        assert compare_methods.shared_iterations(*pair, "x") == 1


def test_mean_and_std_of_defined_values():
    stat = compare_methods.mean_and_std([1.0, 2.0, None, math.nan])
    assert stat == {"mean": 1.5, "std": pytest.approx(math.sqrt(0.5)), "n": 2}
    assert compare_methods.mean_and_std([3.0]) == {"mean": 3.0, "std": None, "n": 1}


def test_training_left_uses_each_configs_own_speed(tmp_path):
    cfg = SimpleNamespace(SOLVER=SimpleNamespace(MAX_ITER=100, STEPS=(80,)))
    clocks = {  # (config, seed) -> the clock file's last entry: iterations, CPU seconds
        ("a", 1): (100, 100.0), ("a", 2): (50, 50.0),  # 1 s per iteration
        ("a", 3): "record",  # finished on another machine: only its record, 100 x 1 s
        ("b", 1): None,  # not started
        ("c", 1): (20, 80.0),  # 4 s per iteration
    }  # fmt: skip
    runs = []
    for (config, seed), clock in clocks.items():
        run = compare_methods.Run(tmp_path / f"{config}.yaml", seed, tmp_path / config / str(seed))
        run.directory.mkdir(parents=True)
        if clock == "record":
            record = {"iterations": 100, "lr_steps": [80], "clock": {"wall_s": 1, "cpu_s": 100.0}}
            (run.directory / compare_methods.RUN_RECORD).write_text(json.dumps(record))
        elif clock:
            # Wall time (a loaded machine's) is not what the estimate uses.
            saved = {"10": {"wall_s": 1.0, "cpu_s": 1.0},
                     str(clock[0]): {"wall_s": 9 * clock[1], "cpu_s": clock[1]}}  # fmt: skip
            (run.directory / compare_methods.CLOCK_FILE).write_text(json.dumps(saved))
        runs.append(run)
    done, total, estimate = compare_methods.training_left(runs, dict.fromkeys(runs, cfg))
    assert (done, total) == (270, 500)
    # a's second run: 50 x 1 s; c's: 80 x 4 s; b's run has no speed yet.
    assert estimate == (
        "about 6 min 10 s of training left on one free core, "
        "not counting 1 run(s) of configs not timed yet"
    )


def test_climb_fitted_over_the_last_evaluations_and_up_to_the_first_step():
    # Full rate up to the step at 1750, then the decayed rate.
    values = [10.0, 20.0, 24.0, 25.0, 26.0, 25.0, 27.0, 30.0, 31.0]
    curve = [(250 * (k + 1), v) for k, v in enumerate(values)]
    # Three points: the line's rise is the difference of the ends, 31 - 27.
    assert compare_methods.fitted_climb(curve) == pytest.approx(4.0)
    assert compare_methods.fitted_climb(curve[:2]) is None
    # 250..1000, by hand: sum((x - 625) * y) / sum((x - 625)^2) = 6125 / 312500, times 750.
    assert compare_methods.fitted_climb(curve[:4], evaluations=3) == pytest.approx(14.7)
    # 250..1750 (the first step): 15750 / 1750000 per iteration, times 1500.
    assert compare_methods.fitted_climb(curve, until=1750, evaluations=6) == pytest.approx(13.5)
    assert compare_methods.fitted_climb(curve, until=1500, evaluations=6) is None
    runs = [
        {"config": "c.yaml", "method": "M", "seed": seed, "iterations": 2250,
         "results": {"PQ": 1.0}, "clock": {"wall_s": 3600.0, "cpu_s": 7200.0},
         "measurements": {"parameters": 1, "network_gflop": 1.0, "postprocess_gflop": 0.1,
                          "network_ms": 1.0, "postprocess_ms": 1.0, "total_ms": 2.0},
         "learning_curve": [(i, pq + seed) for i, pq in curve[: 8 + seed]],
         "lr_steps": [1750, 2100]}
        for seed in (0, 1)
    ]  # fmt: skip
    (method,) = compare_methods.summarize(runs)
    # Seed 0 stops at 2000 (climb 30 - 25), seed 1 at 2250 (31 - 27); the table's span is the
    # first run's.
    assert method["final_climb"]["mean"] == pytest.approx((5.0 + 4.0) / 2)
    assert (method["final_climb"]["from_iterations"], method["final_climb"]["to_iterations"]) == (
        1500, 2000
    )  # fmt: skip
    # Up to the first step both rise 13.5 over the seven evaluations 250..1750.
    assert method["full_rate_climb"]["mean"] == pytest.approx(13.5)
    assert method["full_rate_climb"]["std"] == pytest.approx(0.0)
    method["input_size"] = [10, 10]
    lines = compare_methods.tables({"methods": [method], "seeds": [0, 1],
                                    "test_dataset": "d", "benchmark": {"repeats": 1, "threads": 1}})
    assert lines[-1].endswith("| 4.5 ± 0.7 (1500 to 2000) | 13.5 ± 0.0 (250 to 1750) |")


def test_update_docs_needs_the_markers_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(compare_methods, "GENERATED_DOCS", {"missing.md": lambda report: []})
    monkeypatch.setattr(compare_methods, "REPO", tmp_path)
    (tmp_path / "missing.md").write_text("no markers\n")
    argv = ["--update-docs", "--output-dir", str(tmp_path / "out")]
    assert compare_methods.main(argv) == 2
    assert "missing.md: needs one line" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bad_comparison_set_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("configs: [missing.yaml]\nseeds: [1, 1]\nopts: [SOLVER.MAX_ITER]\nextra: 1\n")
    assert compare_methods.main(["--set", str(path)]) == 2
    error = capsys.readouterr().err
    for problem in (
        "unknown keys ['extra']",
        "missing.yaml does not exist",
        "'seeds' must be distinct integers",
        "'opts' must be KEY VALUE pairs",
    ):
        assert problem in error  # fmt: skip


def test_default_set_shares_one_schedule_and_backbone_initialization():
    comparison = compare_methods.ComparisonSet.load(compare_methods.DEFAULT_SET)
    assert len(comparison.configs) == 4 and len(comparison.seeds) >= 3
    runs = compare_methods.protocol_runs(comparison, REPO / "output" / "unused")
    configs = [compare_methods.run_config(run, comparison, [], tiny=False) for run in runs]
    assert {c.MODEL.META_ARCHITECTURE for c in configs} == CLASSIC_FOUR
    for key in (
        "SOLVER.MAX_ITER",
        "SOLVER.STEPS",
        "SOLVER.IMS_PER_BATCH",
        "SOLVER.BASE_LR",
        "MODEL.WEIGHTS",
        "INPUT.MIN_SIZE_TRAIN",
        "DATASETS.TRAIN",
        "TEST.EVAL_PERIOD",
    ):
        assert len({str(_get(c, key)) for c in configs}) == 1, key
    assert configs[0].MODEL.WEIGHTS.startswith("panoptic_zoo://ImageNetPretrained/")
    assert sorted(c.SEED for c in configs) == sorted(comparison.seeds * 4)


def test_committed_comparison_tables_are_the_committed_reports():
    """The README's and BENCHMARKS.md's comparison blocks are what the committed report renders
    to, and the plots they show are committed."""
    report = json.loads((REPO / compare_methods.DOCS_FILES["json"]).read_text())
    for path, text in compare_methods.generated_docs(report, REPO).items():
        assert path.read_text() == text, (
            f"{path}: regenerate with python tools/compare_methods.py --report-only "
            "--update-docs"
        )
    for kind in ("speed_vs_pq", "learning_curve"):
        assert (REPO / compare_methods.DOCS_FILES[kind]).read_bytes().startswith(b"\x89PNG")
    assert report["set"] == "configs/shapes/comparison.yaml" and len(report["runs"]) == 12
