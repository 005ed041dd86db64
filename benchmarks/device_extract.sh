#!/usr/bin/env bash
# The prepared device run for issue 4 (extraction speed), eighth version (2026-11-28). The H200 calls of 2026-11-27
# ran versions 1-6 and the call of 2026-11-28 version 7 (benchmarks/results/*_h200.json, device_extract_h200.log).
# It leaves 8 files in $OUT, the most the device tool brings back: keep it so when adding a stage. Its file names
# differ from the earlier versions', so that benchmarks/collect.py adds them beside the recorded ones.
#
#   first, here:  bash benchmarks/device_wheels.sh 3.12 jpeg      (.whl-jpeg/: nvImageCodec + nvJPEG, ~29 MB)
#   device tool:  run(command="bash benchmarks/device_extract.sh", carry=[".whl-jpeg"], timeout_s=420,
#                     kind="nvidia-h200")
#   (~340 s expected, budget 380 s: each stage is cut to what is left minus what the later ones reserve. Without
#   .whl-jpeg the nvImageCodec stages say they are skipped and the rest runs.)
#
# What version 7 left open, and the stage that answers it:
#   - in each device call the first 40,504-image run waited seconds on the store writer, the second did not. Is the
#     first large write into a fresh machine's memory slow? shm-touch writes 32 GiB into /dev/shm twice with dd
#     (both rates in extract.log), before any extraction, so that every run below writes into touched memory.
#   - one of the four chunks of each batch took about a forward's time to stage, whatever the decoder and priority
#     (benchmarks/staging_blocks.py says why). gpu_checks now times each staging step while other GPU work runs on
#     each kind of stream, and the own-stream runs put the model on a non-blocking stream of normal priority
#     (--own-model-stream), which a library's blocking stream does not wait for.
#   - the model stream's priority: one clean pair (8,192 JPEGs) favoured normal priority, now the default; here it is
#     paired again at 40,504 JPEGs, in one call.
#
#   gpu_checks_warm.json              benchmarks/gpu_checks.py: aligned LSTM, fused optimiser, PIL-exact resize and
#                                     fused ResNet-152 against their references, the JPEG decoders against Pillow,
#                                     and the staging steps' host time beside busy GPU work (staging_blocking)
#   warm_extract_8k.json              ResNet-152, 8,192 JPEGs, store in /dev/shm, timeline: the package's defaults
#                                     (torchvision decoding, PIL-exact resize, fused ResNet, the model on the current
#                                     stream). Each 8k run also extracts 2,048 of the images again under
#                                     torch.profiler and sums the GPU time per batch by kernel group
#   warm_extract_own_8k.json          the same with --own-model-stream
#   warm_extract_val2014.json         the defaults on 40,504 JPEGs (COCO val2014's size; store 32.5 GB in /dev/shm)
#   warm_extract_own_val2014.json     the same with --own-model-stream
#   warm_extract_prio_val2014.json    the same with --prioritise-model
#   warm_extract_nvimgcodec_val2014.json  the defaults with --jpeg-decoder nvimgcodec
# (m-DAN and r-DAN training under --compile on CUDA ran on 2026-11-28: benchmarks/device_defaults.sh and
# device_extract_h200.log; no longer repeated here.)
# DAN_DEVICE_SKIP="gpu-checks shm-touch ..." leaves stages out; DAN_DEVICE_REHEARSAL=1 runs it on the CPU at toy
# sizes (checks the script, not the speed).
set -uo pipefail
cd "$(dirname "$0")/.."
DAN_DEVICE_BUDGET_DEFAULT=${DAN_DEVICE_BUDGET_DEFAULT:-380} DAN_DEVICE_LOG=extract.log
source benchmarks/device_lib.sh
if [ "$rehearsal" = 1 ]; then
    dev=cpu
    extract=(--backbone resnet152 --random-weights --batch-size 8 --image-size 224 --model-seconds 1 --gpu-decode)
    n_short=16 n_long=48 n_prof=8 shm="${TMPDIR:-/tmp}/dan-extract-shm" touch_blocks=4
else
    dev=cuda
    extract=(--backbone resnet152 --random-weights --batch-size 256 --model-seconds 3)
    n_short=8192 n_long=40504 n_prof=2048 shm=/dev/shm/dan-extract touch_blocks=512  # 512 x 64 MiB = 32 GiB
fi
nvimg=1  # the import alone succeeds without a usable GPU decoder: build one (it decodes a probe JPEG) on "$dev"
timeout 90 python3 -c "import torch; from dan.jpeg import NvImageCodecJpeg, hardware_engines; d = torch.device('$dev')
NvImageCodecJpeg(d); print('[device] nvImageCodec decodes on', d, '- hardware engines alone:', hardware_engines(d))" \
    || nvimg=0
[ "$nvimg" = 1 ] || echo "[device] nvImageCodec cannot decode here: its stages are skipped (carry .whl-jpeg)"

skip=" ${DAN_DEVICE_SKIP:-} "
want() { [[ "$skip" != *" $1 "* ]] || { echo "[device] $1 skipped (DAN_DEVICE_SKIP)"; return 1; }; }
eb=(python3 benchmarks/extract.py --device "$dev" "${extract[@]}" --timeline)
want gpu-checks && stage gpu-checks 290 python3 benchmarks/gpu_checks.py --device "$dev" --out "$out/gpu_checks_warm.json"
touch_shm() {  # 32 GiB written twice into /dev/shm (dd prints each rate), then freed
    set -e
    mkdir -p "$shm"
    for pass in cold warm; do
        echo "[device] shm-touch: $pass pass"
        dd if=/dev/zero of="$shm/touch" bs=64M count="$touch_blocks" conv=fsync 2>&1 | tail -1
        rm -f "$shm/touch"
    done
}
export -f touch_shm
export shm touch_blocks
want shm-touch && stage shm-touch 265 bash -c touch_shm
rm -rf "$shm"
run() {  # NAME RESERVE_S FILE N FLAGS...: one run of N images (timeline; profile at 8k) with the store in /dev/shm
    local name=$1 reserve=$2 file=$3 n=$4
    shift 4
    local rc=1 prof=()
    [ "$n" = "$n_short" ] && prof=(--profile-images "$n_prof")
    want "$name" && stage "$name" "$reserve" "${eb[@]}" "$@" --num-images "$n" "${prof[@]}" --workdir "$shm/run" \
        --out "$out/$file"
    rc=$?
    rm -rf "$shm"
    return $rc  # the stage's status (skipped: 1), not rm's
}
nv() {  # the nvImageCodec stages need its wheels
    [ "$nvimg" = 1 ] || { echo "[device] $1 skipped: nvImageCodec not importable"; return 1; }
}
run extract-8k 225 warm_extract_8k.json "$n_short"
run extract-own-8k 190 warm_extract_own_8k.json "$n_short" --own-model-stream
run extract-val2014 145 warm_extract_val2014.json "$n_long"
run extract-own-val2014 100 warm_extract_own_val2014.json "$n_long" --own-model-stream
run extract-prio-val2014 50 warm_extract_prio_val2014.json "$n_long" --prioritise-model
nv extract-nvimgcodec-val2014 && run extract-nvimgcodec-val2014 0 warm_extract_nvimgcodec_val2014.json "$n_long" \
    --jpeg-decoder nvimgcodec
n_files=$(find "$out" -type f | wc -l)
echo "[device] done in $((SECONDS - t0)) s; $n_files files in \$OUT$( ((n_files > 8)) && echo ' (MORE THAN THE 8 THAT COME BACK)')"
sleep 1
