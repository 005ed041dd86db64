#!/usr/bin/env bash
# The second prepared device run: why the H100 figures of issues 4 and 5 miss their targets, and what closes the gap.
# (The first run, device_session.sh, measured r-DAN at ~0.99 x its ceiling but ~11k samples/s, and ResNet-152
# extraction end to end at ~0.81 x model-only; records in benchmarks/results/*_h100.json.)
#
#   device tool: run(command="bash benchmarks/device_perf.sh", timeout_s=460)   (no wheels needed)
#
# Stages in this order, each written to $OUT (about 6-7 minutes in all on an H100; DAN_DEVICE_BUDGET_S, default
# 420; the most decisive first, so that a short budget cuts the least informative ones):
#   gpu_checks.json      the GPU-only text path (aligned LSTM) against packing on the device: outputs and gradients
#                        (seconds; a failure here makes the training figures below suspect)
#   train_profile.json   eager step, paper sizes, bf16, resident: samples/s and a profile of the model-only step
#                        (ops and kernels per step, summed kernel time, GPU busy fraction). A busy fraction well
#                        below 1 says the host's op dispatch sets the pace, so CUDA graphs or fusion should help.
#                        (benchmarks/host_ops.py counts on the CPU what a GPU step dispatches: 473 direct aten ops,
#                        2,054 with nested ones, 169 backward nodes at the default sizes: host-bound is expected.)
#   train_graphs.json    torch.compile mode="reduce-overhead" (CUDA graphs; the LSTM stays eager)
#   train_fused.json     the eager step with the fused SGD kernel (fewer launches per step)
#   extract_cpu_decode.json  ResNet-152 extraction with JPEG decoding on 14 CPU workers (PIL) instead of on the GPU
#                        (nvJPEG and the resize then no longer share the GPU with the model)
#   extract_shm.json     GPU decoding as in the first run, the store written to /dev/shm (no disk writes or fsync)
#   extract_long.json    GPU decoding, 24,000 images (about a third of COCO train2014): start-up and final flush
#                        weigh less than in 8,192 images; its "steady" rate (between the first and last intermediate
#                        commit) is the pipeline's rate once full. A short last batch (192) checks the tail padding
#                        added since the first run (a tail batch took 4-5 s there).
#   (train_compiled.json, torch.compile's default mode, was its last stage when it ran on 2026-11-27; it is left out
#   now, so that the run leaves 8 files in $OUT with the log, the most the device tool brings back)
# Also logged: the disk's write rate with fsync (dd, 2 GB) and the free space in /dev/shm.
# Back here: `python benchmarks/collect.py FILES_AT` copies the JSONs to benchmarks/results/, named per card; then
# rerun notebook 08 (`python -m dan.study --profile default --only 08`) and choose the defaults the figures support.
# DAN_DEVICE_REHEARSAL=1 runs it on the CPU at toy sizes (checks the script, not the speed).
set -uo pipefail
cd "$(dirname "$0")/.."
DAN_DEVICE_BUDGET_DEFAULT=420 DAN_DEVICE_LOG=perf.log
source benchmarks/device_lib.sh

if [ "$rehearsal" = 1 ]; then
    dev=cpu train=(--sizes default --iters 3 --warmup 2 --store-images 64)
    extract=(--backbone resnet152 --random-weights --num-images 16 --batch-size 8 --image-size 224 --model-seconds 1)
    workers=2 shm="${TMPDIR:-/tmp}/dan-perf-shm" long=(--num-images 72 --commit-every-mb 1) dd_count=8 shm_mb=100
else
    dev=cuda train=(--sizes paper --resident --amp --iters 200 --warmup 20)
    extract=(--backbone resnet152 --random-weights --num-images 8192 --batch-size 256)
    workers=14 shm=/dev/shm/dan-perf long=(--num-images 24000) dd_count=128 shm_mb=12000
fi
tb=(python3 benchmarks/train.py --device "$dev" "${train[@]}")
eb=(python3 benchmarks/extract.py --device "$dev" "${extract[@]}")

scratch="${TMPDIR:-/tmp}/dan-perf-dd"
mkdir -p "$scratch"
stage disk-write 385 dd if=/dev/zero of="$scratch/dd.bin" bs=16M count="$dd_count" conv=fsync
rm -rf "$scratch"
df -h "$(dirname "$shm")" /tmp || true
stage gpu-checks 360 python3 benchmarks/gpu_checks.py --device "$dev" --out "$out/gpu_checks.json"
stage train-profile 290 "${tb[@]}" --profile --out "$out/train_profile.json"
# CUDA graphs second: if the profile confirms a host-bound step, this is the run that can meet issue 5's target
stage train-graphs 200 "${tb[@]}" --tasks vqa --compile --compile-mode reduce-overhead --out "$out/train_graphs.json"
stage train-fused 170 "${tb[@]}" --tasks vqa --fused-sgd --out "$out/train_fused.json"
stage extract-cpu-decode 130 "${eb[@]}" --no-gpu-decode --num-workers "$workers" --out "$out/extract_cpu_decode.json"
if (($(df --output=avail -B1M "$(dirname "$shm")" | tail -1) > shm_mb)); then  # 8,192 ResNet rows: 6.6 GB
    stage extract-shm 90 "${eb[@]}" --workdir "$shm" --out "$out/extract_shm.json"
else
    echo "[device] extract-shm skipped: under $shm_mb MB free in $(dirname "$shm")"
fi
rm -rf "$shm"
stage extract-long 5 "${eb[@]}" "${long[@]}" --out "$out/extract_long.json"
echo "[device] done in $((SECONDS - t0)) s"
sleep 1  # lets tee finish the log before the command returns
