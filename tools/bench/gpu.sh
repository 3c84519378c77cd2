#!/usr/bin/env bash
# GPU benchmarks in one command, for the device machine (not run by CI; not yet run at all: no GPU
# was lent when it was written). Build the binary here first and take it along:
#
#   CUDARC_CUDA_VERSION=13000 cargo build --release --features cuda --bin ril
#   mkdir -p .gpu && cp target/release/ril .gpu/ril-cuda    # .gpu/ in .git/info/exclude
#   device run: bash tools/bench/gpu.sh .gpu/ril-cuda        (carry .gpu, and .whl for PyTorch)
#
# It runs the tiny parity pipeline on the GPU (ril sample, compared with diffusers' image), the
# sd15-shaped benches of ril (random weights, 512x512, batch 1, 50 steps) and, when torch,
# diffusers, peft and kornia import, the PyTorch reference with the same shapes; everything lands
# in $OUT (or ./gpu-out).
set -uo pipefail
RIL=${1:?usage: gpu.sh PATH/TO/ril-cuda}
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
FIX=crates/sd-model/tests/fixtures
python3 - <<'PY' > "$OUT/latents.log" 2>&1 || true
# Writes the parity latents as a latents file (plain Python: no torch needed).
import json, struct
raw = open("crates/sd-model/tests/fixtures/reference/pipeline.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]; h = json.loads(raw[8:8 + n]); s, e = h["latents"]["data_offsets"]
data = raw[8 + n + s:8 + n + e]
hdr = json.dumps({"latents": {"dtype": "F32", "shape": [2, 4, 8, 8], "data_offsets": [0, len(data)]}}).encode()
hdr += b" " * (-len(hdr) % 8)
open("gpu-latents.safetensors", "wb").write(struct.pack("<Q", len(hdr)) + hdr + data)
PY
( time "$RIL" sample --model $FIX/tiny-sd --prompt "a photo of a cat" --prompt "a red car" \
    --negative-prompt blurry --height 64 --width 64 --steps 10 --guidance 7.5 \
    --latents gpu-latents.safetensors --out "$OUT/tiny" --backend cuda ) > "$OUT/tiny.log" 2>&1
echo "tiny parity sample: exit $?" | tee -a "$OUT/summary.txt"
( time timeout 420 "$RIL" bench --preset sd15 --backend cuda --reps 3 --json "$OUT/ril-sd15-cuda.json" ) > "$OUT/ril-bench.log" 2>&1
echo "ril sd15 bench: exit $?" | tee -a "$OUT/summary.txt"
if python3 -c "import torch, diffusers, peft, kornia" 2>/dev/null; then
  ( time timeout 300 python3 tools/bench/bench.py --preset sd15 --device cuda --reps 3 --json "$OUT/pytorch-sd15-cuda.json" ) > "$OUT/pytorch-bench.log" 2>&1
  echo "pytorch sd15 bench: exit $?" | tee -a "$OUT/summary.txt"
else
  echo "pytorch sd15 bench: skipped (torch/diffusers/peft/kornia not importable)" | tee -a "$OUT/summary.txt"
fi
nvidia-smi --query-gpu=memory.used --format=csv >> "$OUT/gpu.txt"
