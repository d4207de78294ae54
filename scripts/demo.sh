#!/usr/bin/env bash
# Set up (idempotent), then train Panoptic FPN on the embedded shapes dataset on CPU, evaluate it
# against the untrained model, and write metrics, TensorBoard events, a checkpoint and
# visualizations. Extra arguments go to tools/run_shapes_demo.py (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python tools/run_shapes_demo.py "$@"
