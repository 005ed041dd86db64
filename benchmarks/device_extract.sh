#!/usr/bin/env bash
# The prepared device run for issue 4 (extraction speed), as of 2026-11-27 (fifth version; the H200 calls of that
# day ran its earlier versions: benchmarks/results/*_h200.json).
#
#   device tool: run(command="bash benchmarks/device_extract.sh", timeout_s=450)   (no wheels needed; stages
#   ~300 s expected, budget 420 s: each stage is cut to what is left minus what the later ones reserve)
#
#   gpu_checks_resize.json       the GPU-only paths on the device: aligned LSTM, training's fused optimiser, and
#                                the PIL-exact resize (dan.resize.PilResize) against Pillow pixel for pixel with
#                                TF32 off and on, timed per 256 640x480 images against torch's interpolate
#                                (blocks of 112 / dense / blocks of 64 / antialias)
#   gpu_checks_resize.json       also: the fused ResNet-152 (dan.fuse: folded BatchNorm, one Triton pass for
#                                bias + residual + ReLU) against the eager one in bf16, both against float32, and
#                                each one's ms per batch of 256
#   extract_antialias_eager_8k.json  ResNet-152, 8,192 JPEGs, store in /dev/shm, timeline, as the H200 runs of
#                                2026-11-27 ran it (interpolate resize, eager model): the baseline on this machine
#   extract_pil_eager_8k.json    the same with the package's resize (PIL-exact, a Triton kernel on CUDA): what the
#                                resize changes
#   extract_pil_8k.json          the package's defaults (PIL-exact resize, fused ResNet): what fusing changes, in
#                                the model-only ceiling and end to end. Each of the three also extracts 2,048 of the
#                                images again under torch.profiler and sums the GPU time per batch by kernel group
#                                (model, our bias+ReLU, resize, decode, copies, ...)
#   extract_pil_val2014.json     the package's defaults on 40,504 JPEGs (COCO val2014's size, store 32.5 GB in
#                                /dev/shm): the rate a real split sees (the VM disk takes ~1.5 GB/s, i.e. at most
#                                ~1,870 ResNet-152 rows/s, so /dev/shm takes the disk out)
#   extract_pil_noprio_8k.json   the defaults with the model on a stream of normal priority
#                                (--no-prioritise-model; dan.extract.model_stream): what the priority changes
#   train-cli (log only)         python -m dan.features / dan.train on the embedded smoke data on the GPU: ResNet-152
#                                (random weights) stores, r-DAN with SGD eager and with compile=reduce-overhead, m-DAN
#                                with reduce-overhead: training's own GPU path end to end, not a benchmark
# Order: gpu-checks, extract-pil, extract-val2014, extract-pil-eager, extract-antialias-eager, extract-pil-noprio,
# train-cli (the defaults first, so that a run cut short still has them).
# The timelines now carry the GPU's own time per forward and the compute stream's wait between forwards (CUDA
# events): the first says whether the forward shares the GPU with decoding/resizing, the second whether it starves.
# They also carry the cyclic GC's pauses (gc_*: the package now freezes the collector for an extraction,
# dan.extract.frozen_gc) and the seconds of check_images / file_stats before the fingerprint.
# DAN_DEVICE_SKIP="gpu-checks train-cli ..." leaves stages out; DAN_DEVICE_REHEARSAL=1 runs it on the CPU at toy sizes
# (checks the script, not the speed).
set -uo pipefail
cd "$(dirname "$0")/.."
DAN_DEVICE_BUDGET_DEFAULT=${DAN_DEVICE_BUDGET_DEFAULT:-420} DAN_DEVICE_LOG=extract.log
source benchmarks/device_lib.sh

if [ "$rehearsal" = 1 ]; then
    dev=cpu
    extract=(--backbone resnet152 --random-weights --batch-size 8 --image-size 224 --model-seconds 1 --gpu-decode)
    n_short=16 n_long=48 n_prof=8 shm="${TMPDIR:-/tmp}/dan-extract-shm" cli_size=64 cli_compile=off
else
    dev=cuda
    extract=(--backbone resnet152 --random-weights --batch-size 256 --model-seconds 3)
    n_short=8192 n_long=40504 n_prof=2048 shm=/dev/shm/dan-extract cli_size=448 cli_compile=reduce-overhead
fi
skip=" ${DAN_DEVICE_SKIP:-} "
want() { [[ "$skip" != *" $1 "* ]] || { echo "[device] $1 skipped (DAN_DEVICE_SKIP)"; return 1; }; }
eb=(python3 benchmarks/extract.py --device "$dev" "${extract[@]}" --timeline)
want gpu-checks && stage gpu-checks 300 python3 benchmarks/gpu_checks.py --device "$dev" --out "$out/gpu_checks_resize.json"
eight_k() {  # NAME RESERVE_S FILE FLAGS...: one 8,192-image run (timeline, profile) with the store in /dev/shm
    local name=$1 reserve=$2 file=$3
    shift 3
    want "$name" && stage "$name" "$reserve" "${eb[@]}" "$@" --num-images "$n_short" --profile-images "$n_prof" \
        --workdir "$shm/8k" --out "$out/$file"
    rm -rf "$shm"
}
# most telling first: the package's defaults at 8k and at val2014's size, then what each change did
eight_k extract-pil 240 extract_pil_8k.json
want extract-val2014 && stage extract-val2014 150 "${eb[@]}" --num-images "$n_long" --workdir "$shm/b" \
    --out "$out/extract_pil_val2014.json"
rm -rf "$shm"
eight_k extract-pil-eager 110 extract_pil_eager_8k.json --no-fuse
eight_k extract-antialias-eager 70 extract_antialias_eager_8k.json --no-fuse --device-resize antialias
eight_k extract-pil-noprio 30 extract_pil_noprio_8k.json --no-prioritise-model
cli="${TMPDIR:-/tmp}/dan-cli" smoke="${TMPDIR:-/tmp}/dan-cli/data"  # data/generated/ is ignored: it does not travel
train_cli() {  # the smoke data through the package's own commands on "$dev"
    set -eo pipefail
    python3 -m dan.data generate --profile smoke --out "$smoke" 2>/dev/null
    python3 -m dan.features --data "$smoke" --out "$cli/f" --backbone resnet152 --random-weights \
        --image-size "$cli_size" --device "$dev" --quiet
    for c in off "$cli_compile"; do
        python3 -m dan.train --task vqa --profile smoke --data "$smoke" --features "$cli/f" --out "$cli/vqa-$c" \
            --device "$dev" --optimizer sgd --lr 0.1 --epochs 3 --compile "$c" --no-progress | tail -12
    done
    python3 -m dan.train --task matching --profile smoke --data "$smoke" --features "$cli/f" --out "$cli/mdan" \
        --device "$dev" --epochs 3 --compile "$cli_compile" --no-progress | tail -12
}
rm -rf "$cli"
export -f train_cli
export cli smoke dev cli_size cli_compile
want train-cli && stage train-cli 5 bash -c train_cli
rm -rf "$cli"
echo "[device] done in $((SECONDS - t0)) s"
sleep 1
