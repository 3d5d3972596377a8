#!/usr/bin/env bash
# One-command GPU check (issue 15): the gpu-marked tests, the torch CUDA latency rows, a torch.profiler
# table of one 480x640 forward, and the training-step benchmark, all under one results folder named
# after the GPU. At most 8 minutes on one GPU; installs nothing; needs no `pip install` of refusion.
#
#   benchmarks/gpu_check.sh [RESULTS_PARENT]     results in $OUT/gpu_check_<GPU> when $OUT is set,
#                                                else in RESULTS_PARENT/gpu_check_<GPU>
#   GPU_CHECK_DEVICE=cpu benchmarks/gpu_check.sh /tmp/x     dry run: every stage on the CPU, tiny sizes
#
# Environment: PYTHON (default python3), GPU_CHECK_BUDGET_S (default 480, the whole script),
# GPU_CHECK_STAGES (default "env,tests,latency,profile,train"), GPU_CHECK_MODEL (default the bundled
# checkpoint train/models/ivif.pt; an authors' .pth needs GPU_CHECK_TASK=ivif).
# Each stage has its own timeout and a failed or slow stage does not stop the next one. The folder holds
# at most 8 files (what the lent GPU machines hand back from $OUT): summary.md, log.txt, the latency,
# profile and train-speed reports (.json + .md/.txt each).
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
PARENT=${OUT:-${1:-}}
if [ -z "$PARENT" ]; then
    echo "usage: $0 RESULTS_PARENT   (or set OUT); GPU_CHECK_DEVICE=cpu for a dry run" >&2
    exit 2
fi
DEVICE=${GPU_CHECK_DEVICE:-cuda}
case "$DEVICE" in cuda|cpu) ;; *) echo "GPU_CHECK_DEVICE must be cuda or cpu, not $DEVICE" >&2; exit 2 ;; esac
PY=${PYTHON:-python3}
BUDGET=${GPU_CHECK_BUDGET_S:-480}
STAGES=${GPU_CHECK_STAGES:-env,tests,latency,profile,train}
MODEL=${GPU_CHECK_MODEL:-$REPO/train/models/ivif.pt}
TASK_ARGS=()
[ -n "${GPU_CHECK_TASK:-}" ] && TASK_ARGS=(--task "$GPU_CHECK_TASK")
START=$(date +%s)
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

# refusion without pip install: setup.cfg maps refusion.<pkg> to the top-level folders, so a temporary
# folder with a `refusion` namespace directory of symlinks makes this tree importable as installed.
# (`pip install --no-index --no-deps --no-build-isolation -e .` is no substitute offline: in a fresh
# venv with setuptools 65 and no `wheel` it fails with "invalid command 'bdist_wheel'".)
BOOT=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
trap 'rm -rf "$BOOT"' EXIT
mkdir "$BOOT/refusion"
for pkg in train export runtime benchmarks; do ln -s "$REPO/$pkg" "$BOOT/refusion/$pkg"; done
export PYTHONPATH="$BOOT:$REPO${PYTHONPATH:+:$PYTHONPATH}"
if ! where=$("$PY" -c 'import refusion.runtime as r; print(r.__file__)' 2>&1) || [[ "$where" != "$BOOT"/* ]]; then
    echo "bootstrap failed: refusion.runtime comes from ${where:-nowhere}, not $BOOT" >&2
    exit 1
fi
RFBENCH=("$PY" -c 'import sys; sys.argv[0] = "rfbench"; from refusion.benchmarks.cli import main; main()')

# The results folder, named after the device.
if [ "$DEVICE" = cuda ]; then
    NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1)
    [ -n "$NAME" ] || NAME=$("$PY" -c 'import torch; print(torch.cuda.get_device_name(0))' 2>/dev/null)
    [ -n "$NAME" ] || NAME=unknown-gpu
    SIZES=(--size 480x640 --size 1080x1920)
    LAT_BACKENDS=(--backend torch-cuda --backend torch-cuda-fp16 --backend torch-backend-cuda)
    LAT_ITERS=(--warmup 3 --iters 20 --max-row-seconds 8)
    PROF_SIZE=480x640
    TRAIN_ARGS=(--device cuda)
else
    NAME="cpu-dryrun $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | sed 's/^ *//')"
    SIZES=(--size 48x64 --size 64x80)
    LAT_BACKENDS=(--backend torch-cpu --backend torch-backend-cpu)
    LAT_ITERS=(--warmup 1 --iters 2 --max-row-seconds 5 --threads 1)
    PROF_SIZE=48x64
    TRAIN_ARGS=(--device cpu --size 32 --batch 2 --repeats 1 --warmup 0 --threads 1)
fi
SLUG=$(printf '%s' "$NAME" | tr -cs 'A-Za-z0-9.' '-' | sed 's/^-*//; s/-*$//')
RES="$PARENT/gpu_check_$SLUG"
mkdir -p "$RES"
LOG="$RES/log.txt"
SUMMARY="$RES/summary.md"
: >"$LOG"
{
    echo "# GPU check: $NAME"
    echo
    echo "- started $(date -u +%Y-%m-%dT%H:%M:%SZ), device mode \`$DEVICE\`, budget ${BUDGET} s, model \`$(basename "$MODEL")\`"
    if commit=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null); then
        git -C "$REPO" diff --quiet HEAD -- 2>/dev/null || commit="$commit, with local changes"
    else
        commit="unknown (no git checkout)"
    fi
    echo "- commit \`$commit\`"
    echo "- command: \`benchmarks/gpu_check.sh\` (GPU_CHECK_DEVICE=$DEVICE, stages $STAGES)"
    echo
    echo "| stage | status | exit | seconds | limit s |"
    echo "|---|---|---|---|---|"
} >"$SUMMARY"

# stage NAME LIMIT_S CMD...: run CMD with its own timeout (never past the budget), log its output.
stage() {
    local name=$1 limit=$2
    shift 2
    if [[ ",$STAGES," != *",$name,"* ]]; then return; fi
    local left=$((BUDGET - ($(date +%s) - START) - 5))
    if [ "$left" -lt 15 ]; then
        echo "| $name | skipped: budget spent | - | 0 | $limit |" >>"$SUMMARY"
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "=== $name (limit ${limit} s) $(date -u +%H:%M:%S): $*" | tee -a "$LOG"
    local t0 rc status
    t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
    rc=$?
    case $rc in
        0) status=ok ;;
        124|137) status="TIMED OUT" ;;
        *) status=FAILED ;;
    esac
    echo "=== $name: $status (exit $rc) in $(($(date +%s) - t0)) s" | tee -a "$LOG"
    echo "| $name | $status | $rc | $(($(date +%s) - t0)) | $limit |" >>"$SUMMARY"
}

env_report() {
    command -v nvidia-smi >/dev/null && nvidia-smi
    "$PY" - <<'EOF'
import importlib.metadata as md, platform, sys
print("python", sys.version.split()[0], platform.platform())
for name in ("torch", "triton", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "opencv-python-headless",
             "cuda-bindings", "cupy-cuda13x", "tensorrt", "pytest", "click", "scipy"):
    try:
        print(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name} -")
import torch
print("torch cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, "cc", f"{p.major}.{p.minor}", "SMs", p.multi_processor_count, "memory GiB",
          round(p.total_memory / 2**30, 1))
EOF
}

export -f env_report
export PY
stage env 30 bash -c env_report
# -p no:cacheprovider: nothing written into the tree; the gpu marker selects GPU tests only (they skip on CPU).
# A test module that cannot be imported there must not stop the GPU tests of the others.
stage tests 120 "$PY" -m pytest -q -m gpu -p no:cacheprovider --continue-on-collection-errors "$REPO/tests"
stage latency 150 "${RFBENCH[@]}" latency --model "$MODEL" "${TASK_ARGS[@]}" "${LAT_BACKENDS[@]}" "${SIZES[@]}" \
    "${LAT_ITERS[@]}" --out "$RES" --tag gpu-check
stage profile 60 "${RFBENCH[@]}" profile --model "$MODEL" "${TASK_ARGS[@]}" --size "$PROF_SIZE" --device "$DEVICE" \
    --out "$RES/profile_forward.txt"
stage train 90 "${RFBENCH[@]}" train "${TRAIN_ARGS[@]}" --out "$RES"

{
    echo
    echo "Finished $(date -u +%Y-%m-%dT%H:%M:%SZ), $(($(date +%s) - START)) s in all. Stage output: log.txt."
    for md in "$RES"/latency_*.md; do
        [ -f "$md" ] && { echo; sed 's/^# /## /' "$md"; }
    done
} >>"$SUMMARY"
ls -1 "$RES" | tee -a "$LOG"
echo "results: $RES"
grep -q -E "FAILED|TIMED OUT" "$SUMMARY" && exit 1
exit 0
