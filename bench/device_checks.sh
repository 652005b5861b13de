#!/usr/bin/env bash
# The checks that need a GPU machine, in one run (a lent machine's minutes are few), most wanted first: the fill /
# extend tests on CUDA (the suite runs on CPU); the miniature world's likeness table served on CUDA in float16,
# as a studio runs the product, and in float32 (the committed tables are CPU float32); then #16's 2K shot beside a
# GPU-speed model at the GPU's own batch (SD 1.5 inpaint at its real size, batched and not). The first GPU run
# (2026-12-04) also ran bench/load.py (#12) and bench/shot_fill.py --quick --device cuda: numbers in the issues.
#
#   bash bench/device_checks.sh --wheels    here, before: the wheels the GPU machine lacks into .whl/ (ignored)
#   bash bench/device_checks.sh [OUT]       there: logs go to OUT (default $OUT, else /tmp/bd-device)
#
# The GPU machine's own Python (3.12, torch with CUDA, transformers, peft, opencv) is used; what it lacks
# travels as wheels (pinned as in constraints.txt) and is installed under /tmp/site. Each stage has its own time
# limit, so one that hangs does not cost the others.
set -u
if [ "${1:-}" = "--wheels" ]; then
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
    names='diffusers|pyzmq|OpenImageIO|OpenEXR|fileseq|ftfy|wcwidth|c2pa-python|cryptography'
    pins=$(grep -iE "^($names)==" constraints.txt)
    [ "$(echo "$pins" | wc -l)" -eq "$(echo "$names" | tr '|' '\n' | wc -l)" ] \
        || { echo "constraints.txt pins only: $pins (wanted: $names)" >&2; exit 1; }
    exec python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_26_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl $pins cffi==2.0.0 pycparser==3.12 toml==0.10.2
fi
out=${1:-${OUT:-/tmp/bd-device}}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD/plugin:$PWD/server:$PWD

stage() {   # stage NAME SECONDS COMMAND...: its output to the console and $out/NAME.txt
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit} s): $*"
    local start=$SECONDS
    timeout -k 10 "$limit" "$@" 2>&1 | grep -v "^\[transformers\]" | tee "$out/$name.txt"
    echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s"
}

stage machine 30 bash -c 'nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc;
    python3 -c "import torch, diffusers, transformers, OpenImageIO, zmq, c2pa; print(\"torch\", torch.__version__,
    \"cuda\", torch.cuda.is_available(), \"diffusers\", diffusers.__version__, \"transformers\", transformers.__version__,
    \"oiio\", OpenImageIO.__version__, \"zmq\", zmq.__version__)"'
stage cuda_tests 90 python3 -m pytest -q -n 8 -p no:cacheprovider tests/test_fill.py tests/test_extend.py \
    tests/test_frame_pipeline.py tests/test_previews.py tests/test_test_models.py tests/test_colour_passthrough.py \
    tests/test_video_models.py tests/test_model_families.py
# The likeness table served in float16, then the same adapters (kept) served in float32: the first GPU run's
# float16 table differed from the CPU's by more than the CPU in float16 does (docs/likeness.md).
stage likeness_cuda 300 python3 bench/likeness.py --quick --characters 2 --device cuda --threads 4 --keep /tmp/bd-w
stage likeness_cuda_fp32 60 python3 bench/likeness.py --quick --characters 2 --device cuda --dtype float32 \
    --threads 4 --keep /tmp/bd-w
stage shot_throughput 100 python3 bench/shot_throughput.py --frames-2k 12 --frames-4k 0 --model test:sd15-size \
    --model-steps 25 --tiny-frames 8 --model-batches 1,0
