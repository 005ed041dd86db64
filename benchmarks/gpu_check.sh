#!/usr/bin/env bash
# One prepared GPU check (for a session that is lent an H100/H200 through the device tool; never run by CI).
# Runs both speed benchmarks at the paper's sizes and writes their JSON where the performance page reads them.
#   bash benchmarks/gpu_check.sh [OUT_DIR]      (default: benchmarks/results; on the device machine use $OUT)
# Needs torch, torchvision, numpy, pillow and tqdm; the ResNet-152 path needs no efficientnet wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-benchmarks/results}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
python3 benchmarks/train.py --device cuda --sizes paper --resident --amp --iters 200 --warmup 20 \
    --out "$out/train_gpu.json"
python3 benchmarks/train.py --device cuda --sizes paper --resident --amp --compile --iters 200 --warmup 30 \
    --tasks vqa --out "$out/train_gpu_compiled.json" || echo "torch.compile run failed (see above)"
python3 benchmarks/extract.py --backbone resnet152 --random-weights --num-images 8192 --batch-size 256 \
    --device cuda --out "$out/extract_gpu.json"
