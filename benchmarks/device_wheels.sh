#!/usr/bin/env bash
# Download the wheels of benchmarks/device_wheels.txt for the device machine (CPython 3.12, x86-64 Linux) into
# .whl/ (git-ignored through .git/info/exclude), for `carry=[".whl"]` in the device tool's run.
#   bash benchmarks/device_wheels.sh [PYTHON_VERSION] [jpeg]   (default 3.12; 3.11 fetches a set for a CPU rehearsal;
#   jpeg: the list benchmarks/device_jpeg_wheels.txt into .whl-jpeg/, for benchmarks/device_extract.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
py="${1:-3.12}"
list=benchmarks/device_wheels.txt dest=.whl
if [ "${2:-}" = jpeg ]; then
    list=benchmarks/device_jpeg_wheels.txt dest=.whl-jpeg
fi
[ "$py" = 3.12 ] || dest="$dest-$py"
mkdir -p .git/info
grep -qx "/$dest/" .git/info/exclude 2>/dev/null || echo "/$dest/" >> .git/info/exclude
platforms=()
for p in manylinux1_x86_64 manylinux2014_x86_64 manylinux_2_17_x86_64 manylinux_2_24_x86_64 manylinux_2_26_x86_64 \
         manylinux_2_27_x86_64 manylinux_2_28_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64; do
    platforms+=(--platform "$p")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
    "${platforms[@]}" -d "$dest" -r "$list"
ls "$dest" | wc -l | xargs echo "wheels in $dest:"
du -sh "$dest"
