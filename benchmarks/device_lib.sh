# Sourced by the device scripts (device_session.sh, device_perf.sh): output folder, log, time budget, the carried
# wheels, and `stage NAME RESERVE_S CMD...`, which runs CMD with what is left of DAN_DEVICE_BUDGET_S minus RESERVE_S
# so that a script ends inside the device tool's 600-second limit and whatever finished comes back.
# Expects DAN_DEVICE_BUDGET_DEFAULT (seconds) and DAN_DEVICE_LOG (log file name under $out) from the caller;
# DAN_DEVICE_WHEELS=1 installs the carried wheels in .whl/ first; carried .whl-jpeg/ wheels are always installed.
set -uo pipefail
out="${OUT:-/tmp/dan-device-out}"
mkdir -p "$out"
budget="${DAN_DEVICE_BUDGET_S:-$DAN_DEVICE_BUDGET_DEFAULT}"
rehearsal="${DAN_DEVICE_REHEARSAL:-0}"
exec > >(tee -a "$out/$DAN_DEVICE_LOG") 2>&1
t0=$SECONDS

stage() {  # stage NAME RESERVE_S CMD...: run CMD with what is left of the budget minus RESERVE_S
    local name=$1 reserve=$2
    shift 2
    local limit=$((budget - (SECONDS - t0) - reserve))
    if ((limit < 20)); then
        echo "[device] $name skipped: only $limit s left"
        return 1
    fi
    echo "[device] $name: start (limit $limit s) at $((SECONDS - t0)) s"
    local start=$SECONDS rc
    timeout --signal=INT --kill-after=20 "$limit" "$@"
    rc=$?
    echo "[device] $name: rc $rc after $((SECONDS - start)) s"
    return $rc
}

if [ "${DAN_DEVICE_WHEELS:-0}" = 1 ] && ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/dan-site \
        .whl/*.whl || { echo "[device] wheel install failed"; exit 1; }
    export PYTHONPATH="/tmp/dan-site"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if ls .whl-jpeg/*.whl >/dev/null 2>&1; then  # nvImageCodec and nvJPEG where carried (device_wheels.sh 3.12 jpeg)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/dan-jpeg \
        .whl-jpeg/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/dan-jpeg" || echo "[device] jpeg wheel install failed"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "[device] no nvidia-smi"
python3 -c "import torch, torchvision, sys; print('[device] python', sys.version.split()[0], 'torch', torch.__version__,
'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0)
if torch.cuda.is_available() else '')" || exit 1

