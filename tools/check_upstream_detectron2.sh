#!/usr/bin/env bash
# Checks panoptic_zoo against an upstream Detectron2 compiled from source (e.g. main):
#
#   tools/check_upstream_detectron2.sh SRC [WORKDIR]
#
# SRC: a local git checkout of github.com/facebookresearch/detectron2 (its committed HEAD is
# used; it is cloned, never written to). WORKDIR (default build/upstream-detectron2) receives
# the clone, a separate environment (WORKDIR/venv, set up by scripts/setup.sh with
# PANOPTIC_ZOO_DETECTRON2_SRC; .venv is not touched), the logs and WORKDIR/summary.md. Then:
#
# 1. a short training and --eval-only of every method on the shapes dataset (ITERS iterations,
#    default 20, same seed), in WORKDIR/venv and, for comparison, in .venv when it holds the
#    patched v0.6 build (BASELINE=0 skips that);
# 2. the test suite (PYTEST_ARGS, default "tests") in WORKDIR/venv.
#
# Prints the summary (commit, pass counts, PQs) and exits non-zero if any step failed.
# CPU-heavy: run it as OMP_NUM_THREADS=1 nice tools/check_upstream_detectron2.sh SRC.
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
    [ $# -ge 1 ] && { [ "$1" = -h ] || [ "$1" = --help ]; } && exit 0
    exit 2
fi
repo="$(cd "$(dirname "$0")/.." && pwd -P)"
src="$(cd "$1" && pwd -P)" || { echo "check: $1 is not a directory" >&2; exit 2; }
git -C "$src" rev-parse --verify -q HEAD >/dev/null || {
    echo "check: $src is not a git checkout of Detectron2 (clone github.com/facebookresearch/detectron2)" >&2
    exit 2
}
work="${2:-$repo/build/upstream-detectron2}"
mkdir -p "$work"
work="$(cd "$work" && pwd -P)"
iters="${ITERS:-20}"
read -r -a pytest_args <<< "${PYTEST_ARGS:-tests}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
methods=(panoptic_fpn_R_18 upsnet_R_18 panoptic_deeplab_R_18 panoptic_fcn_R_18)

commit="$(git -C "$src" rev-parse HEAD)"
checkout="$work/detectron2"
if [ "$(git -C "$checkout" rev-parse HEAD 2>/dev/null)" != "$commit" ]; then
    rm -rf "$checkout"
    git clone --quiet "$src" "$checkout"
    git -C "$checkout" checkout --quiet "$commit"
fi

echo "== building Detectron2 $commit into $work/venv (log: $work/setup.log)"
if ! UV_PROJECT_ENVIRONMENT="$work/venv" PANOPTIC_ZOO_DETECTRON2_SRC="$checkout" \
        "$repo/scripts/setup.sh" > "$work/setup.log" 2>&1; then
    tail -30 "$work/setup.log" >&2
    echo "check: set-up failed (full log: $work/setup.log)" >&2
    exit 1
fi
source_python="$work/venv/bin/python"
"$source_python" - "$checkout" <<'EOF'
import os, sys
import detectron2, detectron2._C, torch
if not os.path.realpath(detectron2.__file__).startswith(os.path.realpath(sys.argv[1]) + os.sep):
    sys.exit(f"check: detectron2 imports from {detectron2.__file__}, not from {sys.argv[1]}")
print(f"detectron2 {detectron2.__version__} (compiled ops: yes), torch {torch.__version__}")
EOF

cd "$repo"
status=0

# train + --eval-only of one method in one environment; prints "PQ-after-training PQ-eval-only".
train_and_evaluate() {
    local python="$1" method="$2" out="$3" config="configs/shapes/$2.yaml"
    rm -rf "$out" && mkdir -p "$out"
    "$python" train_net.py --config-file "$config" SOLVER.MAX_ITER "$iters" SOLVER.STEPS "()" \
        SOLVER.CHECKPOINT_PERIOD 1000000 DATALOADER.NUM_WORKERS 0 OUTPUT_DIR "$out" \
        > "$out/train.log" 2>&1 || return 1
    local trained
    trained="$("$python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["panoptic_seg"]["PQ"])' "$out/eval_results.json")"
    "$python" train_net.py --config-file "$config" --eval-only MODEL.WEIGHTS "$out/model_final.pth" \
        OUTPUT_DIR "$out/eval_only" > "$out/eval_only.log" 2>&1 || return 1
    echo "$trained $("$python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["panoptic_seg"]["PQ"])' "$out/eval_only/eval_results.json")"
}

environments=("source:$source_python")
if [ "${BASELINE:-1}" != 0 ] && [ -x "$repo/.venv/bin/python" ] \
        && ! "$repo/.venv/bin/python" -c "import detectron2._C" 2>/dev/null; then
    environments+=("patched:$repo/.venv/bin/python")
fi
declare -A pq
for method in "${methods[@]}"; do
    for environment in "${environments[@]}"; do
        name="${environment%%:*}"
        echo "== $method, $iters iterations + --eval-only ($name build)"
        if result="$(train_and_evaluate "${environment#*:}" "$method" "$work/runs/$name/$method")"; then
            pq[$method,$name]="$result"
        else
            pq[$method,$name]="failed (log: $work/runs/$name/$method)"
            status=1
        fi
        echo "   PQ after training, PQ --eval-only: ${pq[$method,$name]}"
    done
done

echo "== test suite: pytest ${pytest_args[*]} (log: $work/pytest.log)"
"$source_python" -m pytest "${pytest_args[@]}" -q -p no:cacheprovider > "$work/pytest.log" 2>&1 || status=1
suite="$(grep -E '^=*.*[0-9]+ (passed|failed|errors?)' "$work/pytest.log" | tail -1 | tr -d '=' | sed 's/^ *//; s/ *$//')"

{
    echo "Detectron2 $commit ($(git -C "$checkout" log -1 --format='%cs %s'))"
    echo "$("$source_python" -c 'import detectron2, torch, sys; print(f"detectron2 {detectron2.__version__}, torch {torch.__version__}, Python {sys.version.split()[0]}")')"
    echo
    echo "test suite (pytest ${pytest_args[*]}): ${suite:-no result, see $work/pytest.log}"
    echo
    echo "| method ($iters iterations, shapes) | build | PQ after training | PQ --eval-only |"
    echo "|---|---|---|---|"
    for method in "${methods[@]}"; do
        for environment in "${environments[@]}"; do
            name="${environment%%:*}"
            case "${pq[$method,$name]}" in
                failed*) echo "| $method | $name | ${pq[$method,$name]} | |" ;;
                *) read -r trained evaluated <<< "${pq[$method,$name]}"
                   echo "| $method | $name | $trained | $evaluated |" ;;
            esac
        done
    done
} > "$work/summary.md"
echo
cat "$work/summary.md"
exit $status
