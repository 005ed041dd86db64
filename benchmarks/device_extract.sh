#!/usr/bin/env bash
# The prepared device run for issue 4 (extraction speed), as of 2026-11-28 (eighth version; the H200 calls of
# 2026-11-27 ran its earlier versions, the call of 2026-11-28 its seventh: benchmarks/results/*_h200.json). It
# leaves 8 files in $OUT, the most the device tool brings back: keep it so when adding a stage.
#
#   first, here:  bash benchmarks/device_wheels.sh 3.12 jpeg      (.whl-jpeg/: nvImageCodec + nvJPEG, ~29 MB)
#   device tool:  run(command="bash benchmarks/device_extract.sh", carry=[".whl-jpeg"], timeout_s=480,
#                     kind="nvidia-h200")
#   (~400 s expected, budget 450 s: each stage is cut to what is left minus what the later ones reserve. Without
#   .whl-jpeg the nvImageCodec stages say they are skipped and the rest runs.)
#
#   gpu_checks_resize.json       the GPU-only paths on the device: aligned LSTM, training's fused optimiser, the
#                                PIL-exact resize (dan.resize.PilResize) against Pillow pixel for pixel, the fused
#                                ResNet-152 (dan.fuse) against the eager one, each timed; and the JPEG decoders
#                                (dan.jpeg: torchvision's nvJPEG, nvImageCodec with the hardware engines and with
#                                CUDA only): their pixels against Pillow's and their img/s (reported, not checked)
#   extract_pil_8k.json          ResNet-152, 8,192 JPEGs, store in /dev/shm, timeline: the package's defaults
#                                (torchvision decoding, PIL-exact resize, fused ResNet). Each 8k run also extracts
#                                2,048 of the images again under torch.profiler and sums the GPU time per batch by
#                                kernel group (model, our bias+ReLU, resize, decode, copies, ...)
#   extract_nvimgcodec_8k.json   the same with --jpeg-decoder nvimgcodec: decoding on the GPU's JPEG engines, off
#                                the multiprocessors the forward needs (the hypothesis: the forward's steady period,
#                                0.142 s per batch of 256 against 0.128 s model-only, lost that time to nvJPEG's
#                                CUDA kernels)
#   extract_pil_val2014.json     the defaults on 40,504 JPEGs (COCO val2014's size, store 32.5 GB in /dev/shm; the VM
#                                disk takes ~1.5 GB/s, i.e. at most ~1,870 ResNet-152 rows/s)
#   extract_nvimgcodec_val2014.json  the same with nvImageCodec
#   extract_pil_eager_8k.json    the defaults with --no-fuse: what fusing changes
#   extract_pil_prio_8k.json     the defaults with the model on a stream of the highest priority (--prioritise-model;
#                                off by default since the A/B of 2026-11-28, which ran it the other way round)
#   train-cli (log only)         python -m dan.features / dan.train on the embedded smoke data on the GPU: ResNet-152
#                                (random weights) stores, r-DAN with SGD eager and with compile=reduce-overhead, m-DAN
#                                with reduce-overhead: training's own GPU path end to end, not a benchmark
# The timelines carry the GPU's own time per forward and the compute stream's wait between forwards (CUDA events),
# the cyclic GC's pauses (gc_*) and the seconds of check_images / file_stats before the fingerprint. Each extraction
# JSON is written before its profile pass and again with the profile; gpu_checks' after each of its sections.
# DAN_DEVICE_SKIP="gpu-checks train-cli ..." leaves stages out; DAN_DEVICE_REHEARSAL=1 runs it on the CPU at toy sizes
# (checks the script, not the speed).
set -uo pipefail
cd "$(dirname "$0")/.."
DAN_DEVICE_BUDGET_DEFAULT=${DAN_DEVICE_BUDGET_DEFAULT:-450} DAN_DEVICE_LOG=extract.log
source benchmarks/device_lib.sh
if ls .whl-jpeg/*.whl >/dev/null 2>&1; then  # nvImageCodec and nvJPEG, carried (benchmarks/device_wheels.sh 3.12 jpeg)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/dan-jpeg \
        .whl-jpeg/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/dan-jpeg" || echo "[device] jpeg wheel install failed"
fi
if [ "$rehearsal" = 1 ]; then
    dev=cpu
    extract=(--backbone resnet152 --random-weights --batch-size 8 --image-size 224 --model-seconds 1 --gpu-decode)
    n_short=16 n_long=48 n_prof=8 shm="${TMPDIR:-/tmp}/dan-extract-shm" cli_size=64 cli_compile=off
else
    dev=cuda
    extract=(--backbone resnet152 --random-weights --batch-size 256 --model-seconds 3)
    n_short=8192 n_long=40504 n_prof=2048 shm=/dev/shm/dan-extract cli_size=448 cli_compile=reduce-overhead
fi
nvimg=1  # the import alone succeeds without a usable GPU decoder: build one (it decodes a probe JPEG) on "$dev"
timeout 90 python3 -c "import torch; from dan.jpeg import NvImageCodecJpeg, hardware_engines; d = torch.device('$dev')
NvImageCodecJpeg(d); print('[device] nvImageCodec decodes on', d, '- hardware engines alone:', hardware_engines(d))" \
    || nvimg=0
[ "$nvimg" = 1 ] || echo "[device] nvImageCodec cannot decode here: its stages are skipped (carry .whl-jpeg)"

skip=" ${DAN_DEVICE_SKIP:-} "
want() { [[ "$skip" != *" $1 "* ]] || { echo "[device] $1 skipped (DAN_DEVICE_SKIP)"; return 1; }; }
eb=(python3 benchmarks/extract.py --device "$dev" "${extract[@]}" --timeline)
want gpu-checks && stage gpu-checks 330 python3 benchmarks/gpu_checks.py --device "$dev" --out "$out/gpu_checks_resize.json"
eight_k() {  # NAME RESERVE_S FILE FLAGS...: one 8,192-image run (timeline, profile) with the store in /dev/shm
    local name=$1 reserve=$2 file=$3
    shift 3
    local rc=1
    want "$name" && stage "$name" "$reserve" "${eb[@]}" "$@" --num-images "$n_short" --profile-images "$n_prof" \
        --workdir "$shm/8k" --out "$out/$file"
    rc=$?
    rm -rf "$shm"
    return $rc  # the stage's status (skipped: 1), not rm's
}
long() {  # NAME RESERVE_S FILE FLAGS...: one 40,504-image run (timeline) with the store in /dev/shm
    local name=$1 reserve=$2 file=$3
    shift 3
    local rc=1
    want "$name" && stage "$name" "$reserve" "${eb[@]}" "$@" --num-images "$n_long" --workdir "$shm/b" \
        --out "$out/$file"
    rc=$?
    rm -rf "$shm"
    return $rc
}
nv() {  # the nvImageCodec stages need its wheels
    [ "$nvimg" = 1 ] || { echo "[device] $1 skipped: nvImageCodec not importable"; return 1; }
}
# most telling first: the defaults and nvImageCodec at 8k and at val2014's size, then what each change did
eight_k extract-pil 280 extract_pil_8k.json
nv8k=1
nv extract-nvimgcodec && eight_k extract-nvimgcodec 230 extract_nvimgcodec_8k.json --jpeg-decoder nvimgcodec && nv8k=0
long extract-val2014 170 extract_pil_val2014.json
if [ "$nv8k" = 0 ]; then  # only after nvImageCodec's 8k run went through
    long extract-nvimgcodec-val2014 115 extract_nvimgcodec_val2014.json --jpeg-decoder nvimgcodec
else
    echo "[device] extract-nvimgcodec-val2014 skipped: nvImageCodec's 8k run did not go through"
fi
eight_k extract-pil-eager 75 extract_pil_eager_8k.json --no-fuse
eight_k extract-pil-prio 40 extract_pil_prio_8k.json --prioritise-model
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
n_files=$(find "$out" -type f | wc -l)
echo "[device] done in $((SECONDS - t0)) s; $n_files files in \$OUT$( ((n_files > 8)) && echo ' (MORE THAN THE 8 THAT COME BACK)')"
sleep 1
