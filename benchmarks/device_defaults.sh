#!/usr/bin/env bash
# A short device run (2026-11-28) that follows benchmarks/device_extract.sh's results of the same day: which CUDA
# defaults to keep now that the fused ResNet-152 runs at ~3,050 img/s model-only, and whether m-DAN trains under
# torch.compile on CUDA after the fix of sample_negatives (the earlier call's train-cli stage failed there).
#
#   first, here:  bash benchmarks/device_wheels.sh 3.12 jpeg      (.whl-jpeg/: nvImageCodec + nvJPEG)
#   device tool:  run(command="bash benchmarks/device_defaults.sh", carry=[".whl-jpeg"], timeout_s=330,
#                     kind="nvidia-h200")
#
#   extract_nvimgcodec_noprio_val2014.json  ResNet-152 on 40,504 JPEGs (store in /dev/shm), nvImageCodec decoding,
#                                           the model's stream at normal priority (--no-prioritise-model)
#   extract_pil_noprio_val2014.json         the same with torchvision's nvJPEG decoding
#   defaults.log                            the log, with m-DAN trained on the smoke data eagerly and with
#                                           --compile reduce-overhead on the GPU (the two runs' metrics)
# DAN_DEVICE_REHEARSAL=1 runs it on the CPU at toy sizes (checks the script, not the speed).
set -uo pipefail
cd "$(dirname "$0")/.."
DAN_DEVICE_BUDGET_DEFAULT=${DAN_DEVICE_BUDGET_DEFAULT:-290} DAN_DEVICE_LOG=defaults.log
source benchmarks/device_lib.sh
if [ "$rehearsal" = 1 ]; then
    dev=cpu n=48 shm="${TMPDIR:-/tmp}/dan-defaults-shm" cli_size=64 compile_mode=default
    extract=(--backbone resnet152 --random-weights --batch-size 8 --image-size 224 --model-seconds 1 --gpu-decode)
else
    dev=cuda n=40504 shm=/dev/shm/dan-defaults cli_size=448 compile_mode=reduce-overhead
    extract=(--backbone resnet152 --random-weights --batch-size 256 --model-seconds 3)
fi
long() {  # NAME RESERVE_S FILE FLAGS...: one run of $n images, no profile pass, store in $shm
    local name=$1 reserve=$2 file=$3
    shift 3
    stage "$name" "$reserve" python3 benchmarks/extract.py --device "$dev" "${extract[@]}" --timeline "$@" \
        --num-images "$n" --workdir "$shm/b" --out "$out/$file"
    local rc=$?
    rm -rf "$shm"
    return $rc
}
long extract-nvimgcodec-noprio 150 extract_nvimgcodec_noprio_val2014.json --jpeg-decoder nvimgcodec \
    --no-prioritise-model
long extract-pil-noprio 100 extract_pil_noprio_val2014.json --no-prioritise-model
cli="${TMPDIR:-/tmp}/dan-defaults-cli"
mdan() {  # m-DAN on the smoke data on "$dev": eager, then compiled; each run prints its metrics
    set -eo pipefail
    python3 -m dan.data generate --profile smoke --out "$cli/data" 2>/dev/null
    python3 -m dan.features --data "$cli/data" --out "$cli/f" --backbone resnet152 --random-weights \
        --image-size "$cli_size" --device "$dev" --quiet
    for c in off "$compile_mode"; do
        python3 -m dan.train --task matching --profile smoke --data "$cli/data" --features "$cli/f" \
            --out "$cli/mdan-$c" --device "$dev" --epochs 3 --compile "$c" --no-progress | tail -14
    done
}
rm -rf "$cli"
export -f mdan
export cli dev cli_size compile_mode
stage mdan-compile 5 bash -c mdan
rm -rf "$cli"
echo "[device] done in $((SECONDS - t0)) s; $(find "$out" -type f | wc -l) files in \$OUT"
sleep 1
