#!/usr/bin/env bash
# The prepared device run for issue 4 (extraction speed), tenth version (2026-11-28, not yet run). The H200 calls of
# 2026-11-27 ran versions 1-6 and the call of 2026-11-28 version 7 (benchmarks/results/*_h200.json,
# device_extract_h200.log); versions 8 and 9 were never run. It leaves 8 files in $OUT (7 JSON files and
# extract.log), the most the device tool brings back: keep it so when adding a stage. Its file names differ from
# the earlier versions', so that benchmarks/collect.py adds them beside the recorded ones.
#
#   first, here:  bash benchmarks/device_wheels.sh 3.12 jpeg      (.whl-jpeg/: nvImageCodec + nvJPEG, ~29 MB)
#   device tool:  run(command="bash benchmarks/device_extract.sh", carry=[".whl-jpeg"], timeout_s=420,
#                     kind="nvidia-h200")
#   (~320 s expected, budget 380 s: each stage is cut to what is left minus what the later ones reserve. Without
#   .whl-jpeg the nvImageCodec stage says it is skipped and the rest runs.)
#
# What version 7 left open: one of the four loader chunks of each batch took about a forward's time to stage, with
# either decoder, and the GPU waited between forwards for the rest of the batch (the ratio target's shortfall). The
# timelines say the host waits in the first chunk staged after a forward is queued, until that forward ends; with
# nvImageCodec, which decodes on the extraction's own staging stream, too. Guess (benchmarks/staging_blocks.py): the
# staging kernels, queued behind the forward's at the same priority, run only after them, and the host waits for
# them. What answers it:
#   - gpu_checks' staging section times each step's host call and its stream's completion beside busy GPU work,
#     with the staging stream at normal and at the highest priority ("starved": its work finished late);
#   - --prioritise-staging (the staging stream at the highest priority: its blocks are scheduled first), with
#     torchvision's nvJPEG (which decodes on a stream of its own, so only the resize is prioritised) and with
#     nvImageCodec (which decodes on the staging stream);
#   - --cpu-decode-share 0.5 and 1 (half, all of each batch decoded by PIL in the loader workers, which since
#     version 10 leave the resize to the GPU: those chunks need a copy and the PIL-exact resize there, and
#     nothing in their staging makes the host wait for the GPU (by reading the code), where torchvision's nvJPEG
#     decoding synchronises its stream before it returns; the CPU-decoding run of 2026-11-27,
#     extract_cpu_decode_h200.json, fed 1,760 img/s steady with 14 workers that also resized, which on the
#     development machine took longer than decoding: 4.3 ms against 1.8 ms for a 640x480 JPEG);
#   - the 8k configuration with the best end-to-end rate other than the defaults, again at COCO val2014's size.
# /dev/shm is touched first (a 32 GiB dd, twice): in version 7's calls the first 40,504-image run of each call waited
# seconds on the store writer and the second did not. Then benchmarks/worker_decode.py prints, into the log, how many
# JPEGs a second the host's loader workers decode, with and without PIL's resize (can its CPUs feed the shares?).
#
#   gpu_checks_split.json               benchmarks/gpu_checks.py: aligned LSTM, fused optimiser, PIL-exact resize and
#                                       fused ResNet-152 against their references, the JPEG decoders against Pillow,
#                                       and the staging steps beside busy GPU work (staging_blocking)
#   split_extract_8k.json               ResNet-152, 8,192 JPEGs, store in /dev/shm, timeline: the package's defaults.
#                                       Each 8k run also extracts 2,048 of the images again under torch.profiler
#   split_extract_half_8k.json          the same with --cpu-decode-share 0.5
#   split_extract_workers_8k.json       the same with --cpu-decode-share 1 (the GPU decodes none, and resizes all)
#   split_extract_stageprio_8k.json     the defaults with --prioritise-staging
#   split_extract_nvimg_stageprio_8k.json  --prioritise-staging with --jpeg-decoder nvimgcodec
#   split_extract_best_val2014.json     the fastest 8k configuration but the defaults, on 40,504 JPEGs (COCO
#                                       val2014's size; store 32.5 GB in /dev/shm). The defaults at that size:
#                                       extract_pil_noprio_val2014_h200.json (2026-11-28, another call). If it is
#                                       the share of 1, the loader's queue (14 workers x 16 chunks of 64 images)
#                                       can hold ~13 GB of unresized pixels in /dev/shm beside the store (a
#                                       reviewer's estimate, not measured; the PIL path's is ~8.6 GB)
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
    wd=(--num-images 192 --workers 2 --per-image 8)
else
    dev=cuda
    extract=(--backbone resnet152 --random-weights --batch-size 256 --model-seconds 3)
    n_short=8192 n_long=40504 n_prof=2048 shm=/dev/shm/dan-extract touch_blocks=512  # 512 x 64 MiB = 32 GiB
    wd=(--num-images 4096 --per-image 64)  # 14 workers: the extraction's default where the workers decode
fi
nvimg=1  # the import alone succeeds without a usable GPU decoder: build one (it decodes a probe JPEG) on "$dev"
timeout 90 python3 -c "import torch; from dan.jpeg import NvImageCodecJpeg, hardware_engines; d = torch.device('$dev')
NvImageCodecJpeg(d); print('[device] nvImageCodec decodes on', d, '- hardware engines alone:', hardware_engines(d))" \
    || nvimg=0
[ "$nvimg" = 1 ] || echo "[device] nvImageCodec cannot decode here: its stages are skipped (carry .whl-jpeg)"

skip=" ${DAN_DEVICE_SKIP:-} "
want() { [[ "$skip" != *" $1 "* ]] || { echo "[device] $1 skipped (DAN_DEVICE_SKIP)"; return 1; }; }
eb=(python3 benchmarks/extract.py --device "$dev" "${extract[@]}" --timeline)
want gpu-checks && stage gpu-checks 245 python3 benchmarks/gpu_checks.py --device "$dev" --out "$out/gpu_checks_split.json"
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
want shm-touch && stage shm-touch 225 bash -c touch_shm
rm -rf "$shm"
# the host's loader: JPEGs decoded (and resized, or not) by the workers per second, into the log (no file of its own)
want worker-decode && stage worker-decode 205 python3 benchmarks/worker_decode.py "${wd[@]}"
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
declare -A flags=([split_extract_8k.json]="" [split_extract_half_8k.json]="--cpu-decode-share 0.5"
    [split_extract_workers_8k.json]="--cpu-decode-share 1" [split_extract_stageprio_8k.json]="--prioritise-staging"
    [split_extract_nvimg_stageprio_8k.json]="--prioritise-staging --jpeg-decoder nvimgcodec")
nv() {  # the nvImageCodec stage needs its wheels
    [ "$nvimg" = 1 ] || { echo "[device] $1 skipped: nvImageCodec not importable"; return 1; }
}
run extract-8k 190 split_extract_8k.json "$n_short"
run extract-half-8k 155 split_extract_half_8k.json "$n_short" ${flags[split_extract_half_8k.json]}
run extract-workers-8k 120 split_extract_workers_8k.json "$n_short" ${flags[split_extract_workers_8k.json]}
run extract-stageprio-8k 85 split_extract_stageprio_8k.json "$n_short" ${flags[split_extract_stageprio_8k.json]}
nv extract-nvimg-stageprio-8k && run extract-nvimg-stageprio-8k 50 split_extract_nvimg_stageprio_8k.json \
    "$n_short" ${flags[split_extract_nvimg_stageprio_8k.json]}
best=$(python3 - "$out" <<'PY'
import json, sys
from pathlib import Path
rates = {}
for f in Path(sys.argv[1]).glob("split_extract_*_8k.json"):  # the defaults' file is split_extract_8k.json: not matched
    try:
        result = json.loads(f.read_text())
        if not result.get("copy_check_failed"):  # a store with rows in the wrong place: not a candidate
            rates[f.name] = result["end_to_end_img_s"]
    except (OSError, ValueError, KeyError):
        pass
print(max(rates, key=rates.get) if rates else "")
PY
)
if [ -n "$best" ]; then
    echo "[device] fastest 8k configuration but the defaults: $best (${flags[$best]})"
    run extract-best-val2014 0 split_extract_best_val2014.json "$n_long" ${flags[$best]}
else
    echo "[device] extract-best-val2014 skipped: no 8k run but the defaults finished"
fi
n_files=$(find "$out" -type f | wc -l)
echo "[device] done in $((SECONDS - t0)) s; $n_files files in \$OUT$( ((n_files > 8)) && echo ' (MORE THAN THE 8 THAT COME BACK)')"
sleep 1
