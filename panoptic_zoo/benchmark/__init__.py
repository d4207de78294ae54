"""
Benchmark of the panoptic methods side by side, on one input, machine and thread count::

    python -m panoptic_zoo.benchmark [--configs A.yaml B.yaml] [--weights A.pth B.pth] \\
        [--size 800 1333] [--threads 2] [--device cpu] [--precisions fp32 amp] \\
        [--warmup 2] [--repeats 10] [--eval-dataset NAME] [--output-dir DIR] [--tiny] \\
        [--skip-reference] [--opts KEY VALUE ...]

Without ``--configs``, every method registered in :mod:`panoptic_zoo.modeling.methods` (its COCO
config; with ``--tiny`` its shapes config). Per config: parameters; fvcore multiply-adds of the
network and of the post-processing (:mod:`.flops`); median network and post-processing time (:mod:`.timing`); peak memory; the
FLOP-bound time on this machine and the ratio of the network time to it (:mod:`.floor`); the
time of the reference implementation on the same weights and input (:mod:`.reference`); with
``--eval-dataset``, PQ/SQ/RQ (all, things, stuff), mask AP and mIoU through the project's
``Trainer.test``. Outputs (:mod:`.report`): ``benchmark.json``, ``benchmark.md`` and, with
accuracy, ``speed_vs_pq.png``. docs/BENCHMARKS.md explains the measurements.
"""

from .cli import main
from .run import run_benchmark
from .settings import BenchmarkSettings

__all__ = ["BenchmarkSettings", "main", "run_benchmark"]
