#!/usr/bin/env bash
# GPU checks and benchmarks in one command, for the device machine (CI never runs it). Build the
# binary here first and take it along with the wheels PyTorch's side lacks there. The default
# backend is LibTorch (BACKEND=tch-cuda; the binary links libtorch dynamically, a few MB):
#
#   PATH=~/.cache/ril/torch-2.11.0-venv/bin:$PATH LIBTORCH_USE_PYTORCH=1 \
#     LIBTORCH_BYPASS_VERSION_CHECK=1 cargo build --release --features tch --bin ril
#   mkdir -p .gpu && xz -T2 -c target/release/ril > .gpu/ril-tch.xz
#
# or burn-cuda (BACKEND=cuda):
#
#   CUDARC_CUDA_VERSION=13000 cargo build --release --features cuda-base --bin ril
#   mkdir -p .gpu && xz -T2 -c target/release/ril > .gpu/ril-cuda.xz   # .gpu/ is excluded
#   target/release/ril train --config configs/tiny/rid-ahc.toml  # CPU reference, then
#   cp runs/tiny/rid-ahc/metrics.jsonl .gpu/cpu-metrics.jsonl
#   pip download diffusers==0.42.1 kornia==0.9.0 kornia_rs==0.2.0 into .whl (device README)
#   device run (carry .gpu and .whl): BUDGET=500 bash tools/bench/gpu.sh .gpu/ril-cuda.xz
# (`cuda-base`: no autotuning, far fewer kernels to JIT-compile; `--features cuda` autotunes.)
#
# Phases in this order, each under its own timeout, skipped once the budget ($BUDGET s) is spent:
#   1. tiny parity pipeline on CUDA (ril sample from the fixture latents) vs diffusers' image;
#   2. sd15-shaped benches (random weights, 512x512, batch 1, 50 DDIM steps): ril f32 sampling
#      and training steps, PyTorch bf16 and fp32; peak GPU memory polled with nvidia-smi;
#   3. tiny RID run (configs/tiny/rid-ahc.toml, backend cuda) vs the CPU run's metrics;
#   4. ril bf16 sampling;
#   5. tools/bench/gpu_report.py: samples/s, TFLOP/s, MFU and the ratios, as report.md.
# $OUT (or ./gpu-out) receives summary.txt, report.md, gpu-out.tar.gz with every log and JSON, and
# cubecl-cache.tar.gz (unpack it into .gpu/ here so that the next call starts warm).
set -uo pipefail
RIL=${1:?usage: [BACKEND=tch-cuda|cuda] gpu.sh PATH/TO/ril[.xz]}
BACKEND=${BACKEND:-tch-cuda}
FINAL=${OUT:-gpu-out}   # gets summary.txt, report.md and gpu-out.tar.gz (everything)
OUT=/tmp/gpu-out        # the device returns at most 8 files: work here, pack at the end
BUDGET=${BUDGET:-480}
rm -rf "$OUT" && mkdir -p "$OUT" "$FINAL"
export RUST_BACKTRACE=1
if [[ $RIL == *.xz ]]; then   # the binary is 72 MB, xz makes it about 13 (the tree travels <= 64 MiB)
  python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" "$RIL" /tmp/ril-cuda
  chmod +x /tmp/ril-cuda && RIL=/tmp/ril-cuda
fi
SUMMARY="$OUT/summary.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

# cudarc loads libcuda and libnvrtc at run time: put every folder holding them on the path.
LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}
for d in $(find /usr/local/cuda*/lib64 /usr/local/cuda*/targets/*/lib /usr/local/nvidia/lib64 \
    /usr/lib/x86_64-linux-gnu /opt/torch/.venv/lib/python3*/site-packages/nvidia \
    -maxdepth 3 \( -name 'libnvrtc.so*' -o -name 'libcuda.so*' \) -printf '%h\n' 2>/dev/null \
    | grep -v /stubs | sort -ru); do   # the toolkit's stub libcuda.so answers garbage: never load it
  LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
if [ "$BACKEND" = tch-cuda ]; then   # libtorch of the machine's torch (its rpath finds the nvidia wheels)
  TORCH_LIB=$(ls -d /opt/torch/.venv/lib/python3*/site-packages/torch/lib 2>/dev/null | head -1)
  [ -z "$TORCH_LIB" ] && TORCH_LIB=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
  LD_LIBRARY_PATH="$TORCH_LIB:${LD_LIBRARY_PATH:-}"
fi
export LD_LIBRARY_PATH
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" > "$OUT/env.txt"
for d in ${LD_LIBRARY_PATH//:/ }; do ls -l "$d"/libcuda.so* "$d"/libnvrtc* 2>/dev/null; done >> "$OUT/env.txt"
# Kernel (PTX) and autotune caches in .gpu/cubecl-cache: shared by this call's ril processes, and
# returned as cubecl-cache.tar.gz so that a later call can carry them (unpack into .gpu/). Burn's
# CUDA backend JIT-compiles every kernel with NVRTC (about 0.5 s each on the H200) and autotunes
# each matmul shape by compiling ~8 candidates: without a cache, a fresh process spends minutes.
mkdir -p .gpu/cubecl-cache
printf '[compilation]\ncache = { file = "%s" }\n[autotune]\ncache = { file = "%s" }\n' \
  "$PWD/.gpu/cubecl-cache" "$PWD/.gpu/cubecl-cache" > cubecl.toml

if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl > "$OUT/pip.log" 2>&1 && export PYTHONPATH=/tmp/site
fi

# phase NAME MAX_SECONDS COMMAND...: runs COMMAND with a timeout (MAX or what is left of the
# budget), its output in $OUT/NAME.log, GPU memory polled every 100 ms into $OUT/NAME.mem.
phase() {
  local name=$1 max=$2; shift 2
  local left=$((BUDGET - SECONDS))
  if [ "$left" -lt 20 ]; then echo "$name: skipped (budget spent)" | tee -a "$SUMMARY"; return; fi
  [ "$max" -gt "$left" ] && max=$left
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$OUT/$name.mem" 2>/dev/null &
  local poll=$! start=$SECONDS
  timeout "$max" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  kill "$poll" 2>/dev/null
  local peak
  peak=$(sort -n "$OUT/$name.mem" | tail -1)
  echo "$name: exit $rc, $((SECONDS - start)) s (limit $max), peak GPU memory ${peak:-?} MiB" | tee -a "$SUMMARY"
  [ "$rc" -ne 0 ] && tail -n 12 "$OUT/$name.log" | sed 's/^/    /' | tee -a "$SUMMARY"
  LAST_RC=$rc
  return 0
}

FIX=crates/sd-model/tests/fixtures
python3 tools/bench/gpu_report.py latents "$FIX/reference/pipeline.safetensors" gpu-latents.safetensors
TINY=(sample --model $FIX/tiny-sd --prompt "a photo of a cat" --prompt "a red car"
  --negative-prompt blurry --height 64 --width 64 --steps 10 --guidance 7.5 --eta 0
  --latents gpu-latents.safetensors --out "$OUT/tiny" --backend "$BACKEND")
phase tiny-sample 90 "$RIL" "${TINY[@]}"
if [ "${LAST_RC:-1}" -ne 0 ] && [ "$BACKEND" = cuda ]; then   # once more without the kernel cache and with PyTorch's nvrtc
  rm -f cubecl.toml
  LD_LIBRARY_PATH=$(ls -d /usr/local/nvidia/lib64 /opt/torch/.venv/lib/python3*/site-packages/nvidia/cu13/lib 2>/dev/null | paste -sd:)
  echo "retry with LD_LIBRARY_PATH=$LD_LIBRARY_PATH" | tee -a "$SUMMARY"
  phase tiny-sample 90 "$RIL" "${TINY[@]}"
fi
python3 tools/bench/gpu_report.py compare-image "$FIX/reference/pipeline.safetensors" "$OUT/tiny" | tee -a "$SUMMARY"


phase ril-sample-f32 150 "$RIL" bench --preset sd15 --backend "$BACKEND" --what sample --reps 3 --json "$OUT/ril-sample-f32.json"
phase ril-train-bf16 150 "$RIL" bench --preset sd15 --backend "$BACKEND" --dtype bf16 --what train-step --reps 2 --json "$OUT/ril-train-bf16.json"
phase ril-train-f32 150 "$RIL" bench --preset sd15 --backend "$BACKEND" --what train-step --reps 2 --json "$OUT/ril-train-f32.json"
phase pytorch-bf16 100 python3 tools/bench/bench.py --preset sd15 --device cuda --dtype bf16 --threads 16 --reps 3 --json "$OUT/pytorch-bf16.json"
phase pytorch-fp32 100 python3 tools/bench/bench.py --preset sd15 --device cuda --dtype fp32 --threads 16 --reps 3 --json "$OUT/pytorch-fp32.json"
sed -e "s/^backend = \"cpu\"/backend = \"$BACKEND\"/" -e 's#^output = .*#output = "../../runs/tiny/rid-ahc-cuda"#' \
  configs/tiny/rid-ahc.toml > configs/tiny/rid-ahc-cuda.toml
rm -rf runs/tiny/rid-ahc-cuda
phase tiny-train 90 "$RIL" train --config configs/tiny/rid-ahc-cuda.toml
cp runs/tiny/rid-ahc-cuda/metrics.jsonl "$OUT/cuda-metrics.jsonl" 2>/dev/null
if [ -f .gpu/cpu-metrics.jsonl ] && [ -f runs/tiny/rid-ahc-cuda/metrics.jsonl ]; then
  python3 tools/bench/gpu_report.py compare-metrics .gpu/cpu-metrics.jsonl runs/tiny/rid-ahc-cuda/metrics.jsonl | tee -a "$SUMMARY"
fi

phase ril-sample-bf16 90 "$RIL" bench --preset sd15 --backend "$BACKEND" --dtype bf16 --what sample --reps 3 --json "$OUT/ril-sample-bf16.json"

python3 tools/bench/gpu_report.py report "$OUT" > "$OUT/report.md" 2>&1
cp "$SUMMARY" "$OUT/report.md" "$FINAL/"
tar czf "$FINAL/gpu-out.tar.gz" -C /tmp gpu-out
tar czf "$FINAL/cubecl-cache.tar.gz" -C .gpu cubecl-cache
ls -la "$FINAL"
cat "$SUMMARY" "$OUT/report.md"
