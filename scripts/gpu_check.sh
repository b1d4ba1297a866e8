#!/usr/bin/env bash
# The GPU checks of the device tier, in one call on a CUDA machine; JSON under $OUT.
#
#   scripts/gpu_check.sh                 # OUT=gpu-check, PYTHON=.venv/bin/python or python3
#   OUT=/tmp/x WORKERS=8 scripts/gpu_check.sh --n 256
#
# 1. the device tests (the CUDA one included): tests.txt
# 2. scripts/device_bench.py gpu: validation epochs 1+ uncached / CacheLoader / GPU tier,
#    the train split uncached / worker suffix / device suffix, DBNet step time fp32 against
#    16-mixed: bench.json (extra arguments go to it)
# 3. a two-epoch `adaptive-cache train` with cache.gpu=auto and data.augment.on_device=true:
#    train-summary.json (epochs[1].device_tier.val: the GPU tier's hits, no misses)
# About 3-5 minutes on one recent GPU with 16 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}
WORKERS=${WORKERS:-4}
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
"$PYTHON" - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device visible to torch"
print("torch", torch.__version__, "on", torch.cuda.get_device_name())
PY
"$PYTHON" -m pytest -q -p no:cacheprovider tests/adaptive_cache/test_device.py \
    tests/adaptive_cache/test_device_memory.py \
    tests/adaptive_cache/test_device_loader.py tests/training/data/test_device_augment.py \
    2>&1 | tee "$OUT/tests.txt" | tail -3
"$PYTHON" scripts/device_bench.py gpu --out "$OUT/bench.json" --workers "$WORKERS" "$@"
RUN="$OUT/train"
rm -rf "$RUN"
"$PYTHON" -m training.cli train "data.root=$RUN/data" "output_dir=$RUN/runs" \
    data.synthetic.n_train=64 data.synthetic.n_val=32 data.batch_size=16 \
    "data.num_workers=$WORKERS" trainer.max_epochs=2 trainer.enable_progress_bar=false \
    monitoring.port=0 data.augment.on_device=true cache.gpu=auto 2>&1 | tail -8
cp "$(ls -t "$RUN"/runs/*/summary.json | head -1)" "$OUT/train-summary.json"
echo "gpu check: results in $OUT"
