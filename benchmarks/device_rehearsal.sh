#!/usr/bin/env bash
# Rehearse benchmarks/device_session.sh on this CPU machine before spending device time: a copy of the working
# tree (what the device tool sends), a fresh venv holding only what the device's python has that we use (torch,
# torchvision, numpy, pandas, matplotlib, seaborn, ...), the carried wheels (.whl-3.11: same pins, this Python),
# and DAN_DEVICE_REHEARSAL=1 (toy sizes, smoke study). A missing wheel or a broken stage shows up here.
#   bash benchmarks/device_rehearsal.sh        (about 3 minutes once the venv exists; log in /tmp/dan-rehearsal.log)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=/tmp/dan-device-venv copy=/tmp/dan-device-tree out=/tmp/dan-device-rehearsal-out
if [ ! -x "$venv/bin/python3" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q torch==2.14.1 torchvision==0.29.1 numpy pandas matplotlib seaborn pillow tqdm pyyaml \
        requests click attrs pygments psutil aiohttp jinja2 packaging
fi
[ -d .whl-3.11 ] || bash benchmarks/device_wheels.sh 3.11
rm -rf "$copy" "$out"
mkdir -p "$copy"
git ls-files -co --exclude-standard | tar -cf - -T - | tar -xf - -C "$copy"
cp -r .whl-3.11 "$copy/.whl"
cd "$copy"
PATH="$venv/bin:$PATH" OUT="$out" DAN_DEVICE_REHEARSAL=1 DAN_DEVICE_BUDGET_S=900 bash benchmarks/device_session.sh \
    > /tmp/dan-rehearsal.log 2>&1 || true
grep '^\[device\]\|error' /tmp/dan-rehearsal.log
ls "$out"
test -s "$out/smoke_profile.json" && test -s "$out/train_gpu.json" && test -s "$out/extract_gpu.json"
figures=$(tar -xzOf "$out/smoke_notebooks.tar.gz" | grep -c '"image/png"' || true)
echo "figures in the executed notebooks: $figures"
test "$figures" -gt 10
