#!/usr/bin/env bash
# The GPU checks of one lent-device session, as one command: tests/test_cuda.py, the decode=gpu benchmark rows
# (issue 17's goals) and the GPU forward tables. Each step has its own time limit, so the results of the earlier
# steps come back even when a later one runs out.
#
# The device image has torch and torchvision (maybe other versions than this machine's) but not Hydra, OmegaConf
# or ANTLR's runtime. They are pure Python, so they travel as a folder:
#
#     bash scripts/gpu_session.sh --prepare           # here, once: copies them into .gpu_site/ (git-ignored)
#
# then, with the device tool: run(command="bash scripts/gpu_session.sh", carry=[".gpu_site"], timeout_s=540).
# Results land in $OUT (the device tool's folder; else ./gpu-session-out): each step's log (versions, pytest,
# extract, forward), junit.xml, and the pages extract-gpu.md and gpu.md, written to docs/results/ in the device's
# copy of the checkout (so they name the documented command) and copied to $OUT: copy them back into docs/results/
# only from such a run.
set -uo pipefail
cd "$(dirname "$0")/.."
SITE=${GPU_SITE:-.gpu_site}  # where --prepare copies the packages, and where a run takes them from

if [[ "${1:-}" == "--prepare" ]]; then
    PYTHON=${PYTHON:-.venv/bin/python}  # the project's environment (installed by the README's command)
    rm -rf "$SITE" && mkdir -p "$SITE"
    for package in hydra omegaconf antlr4; do
        source=$("$PYTHON" -c "import $package, os; print(os.path.dirname($package.__file__))") || exit 1
        cp -r "$source" "$SITE/"
    done
    find "$SITE" -name __pycache__ -type d -prune -exec rm -rf {} +
    echo "prepared $SITE ($(du -sh "$SITE" | cut -f1)): carry it to the device with the checkout"
    exit 0
fi
if [[ $# -gt 0 ]]; then
    echo "usage: bash scripts/gpu_session.sh [--prepare]" >&2
    exit 2
fi
if [[ ! -d "$SITE/hydra" ]]; then
    echo "no $SITE/hydra: run 'bash scripts/gpu_session.sh --prepare' here and carry $SITE" >&2
    exit 2
fi

PYTHON=${PYTHON:-python3}  # on the device image, the python that holds PyTorch
OUT=${OUT:-gpu-session-out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD:$(realpath "$SITE")${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# An installed featx maps the top-level conf/ to the package featx.conf (pyproject.toml); a checkout on PYTHONPATH
# needs that link for the run, removed again when it ends.
if [[ ! -e featx/conf ]]; then
    ln -s ../conf featx/conf && trap 'rm -f featx/conf' EXIT
fi
status=0

step() {  # step NAME SECONDS COMMAND...: run it with a limit, its output in $OUT/NAME.log, and note a failure
    local name=$1 seconds=$2
    shift 2
    echo "== $name (limit ${seconds}s): $*"
    timeout "$seconds" "$@" 2>&1 | tee "$OUT/$name.log"
    local code=${PIPESTATUS[0]}
    [[ $code -eq 0 ]] || { echo "== $name failed: exit $code"; status=1; }
    return "$code"
}

step versions 60 "$PYTHON" -c "
import sys, torch, torchvision, hydra, omegaconf, featx
from featx.spec.config_files import config_dir
featx.load_spec('resnet50')  # the packaged configs are found
print('featx', featx.__file__, 'configs', config_dir())
print('python', sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__)
print('hydra', hydra.__version__, 'omegaconf', omegaconf.__version__, 'featx', featx.__version__)
print('cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-')
assert torch.cuda.is_available(), 'no CUDA: these checks need the lent GPU'
"
if [[ $status -ne 0 ]]; then exit 1; fi
step pytest 240 "$PYTHON" -m pytest tests/test_cuda.py tests/test_bench_extract.py -p no:cacheprovider -q \
    --junitxml "$OUT/junit.xml"
step extract 150 "$PYTHON" scripts/bench_extract.py --device cuda --workers 16 --output docs/results/extract-gpu.md &&
    cp docs/results/extract-gpu.md "$OUT/"
step forward 90 "$PYTHON" scripts/bench.py --device cuda --sections forward channels_last --repeats 30 \
    --warmup 10 --batches 1 8 32 --output docs/results/gpu.md && cp docs/results/gpu.md "$OUT/"
exit $status
