"""
``train_net.py`` on the tests' tiny shapes dataset, for tests that need a real training process
(to kill it, to resume it):

    python tests/engine/train_net_tiny_shapes.py DATASET_ROOT <train_net.py arguments>

registers the tiny dataset generated at DATASET_ROOT (the ``tiny_shapes`` fixture) under its
usual names, then runs ``train_net.main``. Needs the repository and ``tests/`` on PYTHONPATH.
"""

import sys

from detectron2.engine import default_argument_parser
from panoptic_testing import TINY_SHAPES_PREFIX, TINY_SHAPES_SPEC

import train_net
from panoptic_zoo.data.datasets import register_shapes

if __name__ == "__main__":
    root, *argv = sys.argv[1:]
    register_shapes(TINY_SHAPES_PREFIX, TINY_SHAPES_SPEC, root)
    train_net.main(default_argument_parser().parse_args(argv))
