#!/usr/bin/env bash
# The third prepared device run (2026-11-27, after device_perf.sh): checks and figures for the changes it prompted.
#
#   device tool: run(command="bash benchmarks/device_extract.sh", timeout_s=300)   (no wheels needed)
#
#   gpu_checks.json          aligned LSTM path, and training's optimiser (now the fused kernel on CUDA) on the device
#   train.json               benchmarks/train.py at the paper's sizes, both tasks, with training's own optimiser
#   extract_timeline.json    ResNet-152, 8,192 JPEGs, store in /dev/shm, with the host-side timeline
#                            (benchmarks/timeline.py): where the fixed start-up seconds go after the loader reads
#                            each batch as 4 chunks in parallel
#   extract_val2014.json     the same for 40,504 JPEGs, COCO val2014's size (store 32.5 GB, in /dev/shm): the rate a
#                            real split sees. The VM's disk takes ~1.5 GB/s (dd with fsync, perf.log of
#                            device_perf.sh), i.e. at most ~1,870 ResNet-152 rows/s; /dev/shm takes the disk out.
# DAN_DEVICE_REHEARSAL=1 runs it on the CPU at toy sizes (checks the script, not the speed).
set -uo pipefail
cd "$(dirname "$0")/.."
DAN_DEVICE_BUDGET_DEFAULT=270 DAN_DEVICE_LOG=extract.log
source benchmarks/device_lib.sh

if [ "$rehearsal" = 1 ]; then
    dev=cpu train=(--sizes default --iters 3 --warmup 2 --store-images 64)
    extract=(--backbone resnet152 --random-weights --batch-size 8 --image-size 224 --model-seconds 1)
    n_short=16 n_long=48 shm="${TMPDIR:-/tmp}/dan-extract-shm"
else
    dev=cuda train=(--sizes paper --resident --amp --iters 200 --warmup 20)
    extract=(--backbone resnet152 --random-weights --batch-size 256 --model-seconds 3)
    n_short=8192 n_long=40504 shm=/dev/shm/dan-extract
fi
eb=(python3 benchmarks/extract.py --device "$dev" "${extract[@]}" --timeline)
stage gpu-checks 230 python3 benchmarks/gpu_checks.py --device "$dev" --out "$out/gpu_checks.json"
stage train 170 python3 benchmarks/train.py --device "$dev" "${train[@]}" --out "$out/train.json"
stage extract-timeline 110 "${eb[@]}" --num-images "$n_short" --workdir "$shm/a" --out "$out/extract_timeline.json"
rm -rf "$shm"
stage extract-val2014 5 "${eb[@]}" --num-images "$n_long" --workdir "$shm/b" --out "$out/extract_val2014.json"
rm -rf "$shm"
echo "[device] done in $((SECONDS - t0)) s"
sleep 1
