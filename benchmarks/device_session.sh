#!/usr/bin/env bash
# The one prepared run for a session that is lent an H100/H200 (issues 4, 5 and 6); never run by CI.
#
#   device tool: run(command="bash benchmarks/device_session.sh", carry=[".whl"], timeout_s=600)
#   (.whl: the wheels the device's python lacks; make them with `bash benchmarks/device_wheels.sh`)
#
# In this order, each stage with a time limit so that the whole script ends within DAN_DEVICE_BUDGET_S
# (default 570 s) and whatever finished comes back:
#   1. training throughput at the paper's sizes, bf16, features resident   -> $OUT/train_gpu.json      (issue 5)
#   2. ResNet-152 448 px extraction of 8,192 640x480 JPEGs, model-only vs end-to-end -> $OUT/extract_gpu.json (4)
#   3. the whole study on the `full` profile (paper sizes; data, features, both models, ablations, analysis)
#      -> $OUT/full_profile.json (dan.record) and $OUT/full_notebooks.tar.gz (executed notebooks)  (issue 6)
#   4. with the time left, if any: the r-DAN step under torch.compile -> $OUT/train_gpu_compiled.json
# Everything printed also goes to $OUT/session.log. Back here: copy the JSONs to benchmarks/results/ and
# records/, then rerun `python -m dan.study --profile default --only 07 08` so the book shows them.
# DAN_DEVICE_REHEARSAL=1 runs the same stages on the CPU at toy sizes (checks the script, not the speed).
# DAN_DEVICE_STAGES (default "train,extract,study,compile") picks stages: after a time-out, a second call on the
# still-warm machine with DAN_DEVICE_STAGES=study resumes the study (data, features and finished runs are
# reused). Each call keeps its log under results/<profile>/device_calls/, and the record of a resumed study reads
# the earlier calls' stage times from there (dan.record --earlier-log), so its time counts each stage's work once.
set -uo pipefail
cd "$(dirname "$0")/.."
stages=",${DAN_DEVICE_STAGES:-train,extract,study,compile},"
DAN_DEVICE_BUDGET_DEFAULT=570 DAN_DEVICE_LOG=session.log DAN_DEVICE_WHEELS=1
source benchmarks/device_lib.sh

if [ "$rehearsal" = 1 ]; then
    dev=cpu train_args=(--sizes default --iters 3 --warmup 1 --store-images 64)
    extract_args=(--num-images 16 --batch-size 8 --image-size 224)
    study_profile=smoke
else
    dev=cuda train_args=(--sizes paper --resident --amp --iters 200 --warmup 20)
    extract_args=(--num-images 8192 --batch-size 256)
    study_profile=full
fi

# 1 and 2: the speed benchmarks (reserves keep >= 420 s for the study)
[[ $stages == *,train,* ]] && stage train-benchmark 440 python3 benchmarks/train.py --device "$dev" \
    "${train_args[@]}" --out "$out/train_gpu.json"
[[ $stages == *,extract,* ]] && stage extract-benchmark 420 python3 benchmarks/extract.py --backbone resnet152 \
    --random-weights --device "$dev" "${extract_args[@]}" --out "$out/extract_gpu.json"

# 3: the full study; its executed notebooks go to a scratch folder (book/notebooks keeps the default profile's)
if [[ $stages == *,study,* ]]; then
    nb_dir=/tmp/dan-full-notebooks calls_dir="results/$study_profile/device_calls"
    mkdir -p "$calls_dir"
    record_args=()
    for log in "$calls_dir"/*.log; do
        [ -f "$log" ] && record_args+=(--earlier-log "$log")
    done
    if [ -e "data/generated/$study_profile" ] || [ -e "results/$study_profile/runs" ]; then
        record_args+=(--note "resumed: data, features or runs of an earlier call were reused")
    fi
    rm -rf "$nb_dir" "results/$study_profile/study_times.json"
    stage full-study 25 python3 -m dan.study --profile "$study_profile" --out "$nb_dir" --no-book --record-times
    study_rc=$?
    python3 -m dan.record --profile "$study_profile" --out "$out/${study_profile}_profile.json" "${record_args[@]}" \
        || echo "[device] no record: the $study_profile study did not finish (rc $study_rc)"
    sleep 1  # lets tee write the stage's last line
    cp "$out/session.log" "$calls_dir/call-$(date -u +%Y%m%dT%H%M%S).log"  # read by the next call if it resumes
    if [ -d "$nb_dir" ]; then
        tar -czf "$out/${study_profile}_notebooks.tar.gz" -C "$nb_dir" . && ls -l "$out"
    fi
fi
# 4, if time is left: the r-DAN step under torch.compile (optional in issue 5)
[[ $rehearsal != 1 && $stages == *,compile,* ]] && stage train-benchmark-compiled 5 python3 benchmarks/train.py \
    --device cuda --sizes paper --resident --amp --compile --iters 200 --warmup 30 --tasks vqa \
    --out "$out/train_gpu_compiled.json"
echo "[device] done in $((SECONDS - t0)) s"
sleep 1  # lets tee finish session.log before the command returns
