#!/usr/bin/env bash
# Idempotent set-up: .venv with Python 3.11, the locked dependencies (uv.lock) and one Detectron2.
#
#   scripts/setup.sh [--extra NAME]...
#
# Extras: dev, deploy and pretrained always (the tests need them), plus each --extra NAME (e.g.
# bench). Install extras through this script, not with a bare `uv sync --extra NAME`: uv sync
# removes whatever uv.lock does not list, a source-built Detectron2 included.
#
# Which Detectron2:
# * PANOPTIC_ZOO_DETECTRON2_SRC=/path/to/detectron2 (a checkout of upstream, e.g. main): that
#   checkout, compiled against the environment's torch with its C++ (and, where nvcc and a GPU
#   torch are present, CUDA) ops, installed editable. Named again later, a different checkout
#   replaces it. If the build fails, the Detectron2 installed before stays.
# * otherwise a source build already installed (detectron2._C imports) stays;
# * otherwise the patched Detectron2 v0.6 (third_party/detectron2), the default.
#
# UV_PROJECT_ENVIRONMENT=DIR sets up DIR instead of .venv (tools/check_upstream_detectron2.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

extras=(dev deploy pretrained)
while [ $# -gt 0 ]; do
    case "$1" in
        --extra)
            [ $# -ge 2 ] || { echo "setup.sh: --extra needs a name (see pyproject.toml's optional-dependencies)" >&2; exit 2; }
            [ "$2" = detectron2 ] || extras+=("$2")
            shift 2 ;;
        --extra=*)
            [ "${1#--extra=}" = detectron2 ] || extras+=("${1#--extra=}")
            shift ;;
        -h|--help)
            sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
            exit 0 ;;
        *)
            echo "setup.sh: unknown argument '$1' (usage: scripts/setup.sh [--extra NAME]...)" >&2
            exit 2 ;;
    esac
done
extra_args=()
for extra in $(printf '%s\n' "${extras[@]}" | awk '!seen[$0]++'); do
    extra_args+=(--extra "$extra")
done

if ! command -v uv >/dev/null 2>&1; then
    # uv, not pip, resolves the project: pip's config on some machines prefers a local
    # CPU-only torch wheel that torchvision's ops cannot load against.
    python3 -m pip install --quiet --user "uv>=0.5" 2>/dev/null || python3 -m pip install --quiet "uv>=0.5"
    export PATH="$(python3 -m site --user-base)/bin:$PATH"
fi

venv="${UV_PROJECT_ENVIRONMENT:-.venv}"
python="$venv/bin/python"

has_compiled_detectron2() {
    [ -x "$python" ] && "$python" -c "import detectron2._C" 2>/dev/null
}

# The checkout an editable source build of Detectron2 was installed from (empty if none).
installed_detectron2_src() {
    [ -x "$python" ] || return 0
    "$python" - <<'EOF' 2>/dev/null || true
import importlib.metadata, json, os.path, urllib.parse
url = json.loads(importlib.metadata.distribution("detectron2").read_text("direct_url.json"))["url"]
print(os.path.realpath(urllib.parse.unquote(urllib.parse.urlparse(url).path)))
EOF
}

install_patched_detectron2() {
    uv sync --frozen --quiet --python 3.11 "${extra_args[@]}" --extra detectron2
}

install_source_detectron2() {
    local src="$1" previous="$2"
    # Built before anything is removed: if the build fails, uv leaves the environment as it was.
    # detectron2's setup.py imports torch, so it builds against the environment's torch.
    uv pip install --quiet --python "$python" setuptools wheel
    if ! uv pip install --python "$python" --no-build-isolation -e "$src"; then
        echo "setup.sh: building Detectron2 from $src failed; the Detectron2 installed before ($previous) is unchanged" >&2
        return 1
    fi
    # The patched build's detectron2/ in site-packages would shadow the editable checkout.
    uv pip uninstall --quiet --python "$python" pb1-detectron2 2>/dev/null || true
    if ! has_compiled_detectron2; then
        echo "setup.sh: Detectron2 from $src installed but detectron2._C does not import; restoring $previous" >&2
        uv pip uninstall --quiet --python "$python" detectron2 || true
        case "$previous" in
            "the patched v0.6") install_patched_detectron2 ;;
            *) uv pip install --quiet --python "$python" --no-build-isolation -e "${previous#source build from }" ;;
        esac
        return 1
    fi
}

if [ -n "${PANOPTIC_ZOO_DETECTRON2_SRC:-}" ]; then
    src="$(cd "$PANOPTIC_ZOO_DETECTRON2_SRC" && pwd -P)" || {
        echo "setup.sh: PANOPTIC_ZOO_DETECTRON2_SRC=$PANOPTIC_ZOO_DETECTRON2_SRC is not a directory (a git checkout of Detectron2)" >&2
        exit 1
    }
    [ -f "$src/setup.py" ] && [ -d "$src/detectron2" ] || {
        echo "setup.sh: $src is not a Detectron2 checkout (no setup.py and detectron2/ in it)" >&2
        exit 1
    }
    installed="$(installed_detectron2_src)"
    if [ -n "$installed" ] && has_compiled_detectron2; then
        previous="source build from $installed"
    else
        previous="the patched v0.6"
        # A first set-up: the patched build is what a failed source build falls back to.
        [ -x "$python" ] && "$python" -c "import detectron2" 2>/dev/null || install_patched_detectron2
    fi
    # --inexact keeps the installed Detectron2, which the lock file does not know about.
    uv sync --frozen --quiet --python 3.11 "${extra_args[@]}" --inexact
    if [ "$installed" != "$src" ] || ! has_compiled_detectron2; then
        install_source_detectron2 "$src" "$previous"
    fi
elif has_compiled_detectron2; then
    uv sync --frozen --quiet --python 3.11 "${extra_args[@]}" --inexact
else
    install_patched_detectron2
fi
