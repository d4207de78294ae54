#!/usr/bin/env bash
# Idempotent set-up: .venv with Python 3.11, the locked dependencies (uv.lock) and Detectron2
# v0.6 built from its pinned sdist plus our patch series (third_party/detectron2). The extras
# the tests need: dev, deploy (ONNX and ONNX Runtime: tests/deploy) and pretrained.
#
# A Detectron2 built from upstream source (with its compiled ops, detectron2._C) is used instead
# when .venv already has one, or when PANOPTIC_ZOO_DETECTRON2_SRC=/path/to/detectron2 (a git
# checkout) names one to install.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v uv >/dev/null 2>&1; then
    # uv, not pip, resolves the project: pip's config on some machines prefers a local
    # CPU-only torch wheel that torchvision's ops cannot load against.
    python3 -m pip install --quiet --user "uv>=0.5" 2>/dev/null || python3 -m pip install --quiet "uv>=0.5"
    export PATH="$(python3 -m site --user-base)/bin:$PATH"
fi

has_compiled_detectron2() {
    [ -x .venv/bin/python ] && .venv/bin/python -c "import detectron2._C" 2>/dev/null
}

if [ -n "${PANOPTIC_ZOO_DETECTRON2_SRC:-}" ] || has_compiled_detectron2; then
    # --inexact keeps the source build, which the lock file does not know about.
    uv sync --frozen --quiet --python 3.11 --extra dev --extra deploy --extra pretrained --inexact
    if ! has_compiled_detectron2; then
        # The patched build would shadow the source checkout's package.
        uv pip uninstall --quiet --python .venv/bin/python pb1-detectron2 2>/dev/null || true
        # detectron2's setup.py imports torch, so it builds against the environment's torch.
        uv pip install --quiet --python .venv/bin/python setuptools wheel
        uv pip install --python .venv/bin/python --no-build-isolation -e "$PANOPTIC_ZOO_DETECTRON2_SRC"
    fi
else
    uv sync --frozen --quiet --python 3.11 --extra dev --extra deploy --extra detectron2 --extra pretrained
fi
