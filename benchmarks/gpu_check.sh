#!/usr/bin/env bash
# GPU check for an NVIDIA machine, in one command:
#
#   bash benchmarks/gpu_check.sh            # env: DEVICE=0 FRAMES=240 VIEWS=16 WORKERS=auto PYTHON=.venv/bin/python
#
# 1. the EGL devices (render/egl_devices.py) with their CUDA ordinals, and what --device auto|cpu|N choose;
# 2. how this driver numbers EGL_CUDA_DEVICE_NV under CUDA_VISIBLE_DEVICES (one line per visible GPU), which
#    decides between egl_index_for_cuda's two cases;
# 3. `nvsynth render --device $DEVICE` on the bundled sample (its records cycled to $FRAMES frames), then the
#    same with --device cpu: GL_RENDERER, GL_VERSION, the EGL device and images/s of each, from manifest.json.
# Needs the face template (NVSYNTH_FACE_TEMPLATE, the cache, or a download) for the sample's recon.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
[ -x "$py" ] || py=python3
device=${DEVICE:-0} frames=${FRAMES:-240} views=${VIEWS:-16} workers=${WORKERS:-auto}
tmp=$(mktemp -d /tmp/nvsynth-gpu-check.XXXX)
trap 'rm -rf "$tmp"' EXIT

echo "== GPUs (nvidia-smi) and CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-<unset>}"
nvidia-smi -L 2>/dev/null || echo "nvidia-smi: not found"

echo "== EGL devices and choices"
"$py" - <<'EOF'
from nvsynth.core.errors import RenderError
from nvsynth.render.egl_devices import list_devices, select_device

for d in list_devices():
    print(f"  {d.describe()}  [{d.kind}] {' '.join(d.extensions)}")
for request in ("auto", "cpu", 0, 1):
    try:
        print(f"  --device {request}: {select_device(request).describe()}")
    except RenderError as err:
        print(f"  {err}")
EOF

echo "== EGL_CUDA_DEVICE_NV with CUDA_VISIBLE_DEVICES set to one GPU (does the driver renumber?)"
ngpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
for ((k = 0; k < ngpu; k++)); do
    CUDA_VISIBLE_DEVICES=$k "$py" -c "
from nvsynth.render.egl_devices import list_devices
print('  CUDA_VISIBLE_DEVICES=$k:', [(d.index, d.cuda_ordinal) for d in list_devices() if d.kind == 'nvidia'])"
done

echo "== render the sample: $frames frames x $views views, --workers $workers"
"$py" benchmarks/sample_records.py "$tmp/obj" --frames "$frames" | tail -1
printf 'data:\n  mpii: {raw: %s, obj: %s}\n' "$PWD/supplementary/sample" "$tmp/obj" >"$tmp/cfg.yaml"
for dev in "$device" cpu; do
    "$py" -m nvsynth.app.cli render --config "$tmp/cfg.yaml" -save "$tmp/out-$dev" --views "$views" \
        --workers "$workers" --device "$dev" 2>&1 | tr '\r' '\n' | grep -E '^(nvsynth render|rendered )' || true
    [ -f "$tmp/out-$dev/manifest.json" ] || { echo "  --device $dev: no render"; continue; }
    "$py" - "$tmp/out-$dev/manifest.json" "$dev" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
d = m["device"]
print(f"  --device {sys.argv[2]}: GL_RENDERER {d['gl_renderer']} | GL_VERSION {d['gl_version']} | {d['egl_device']} "
      f"| {d['workers']} workers | {m['images_per_s']} images/s end to end")
EOF
done
