#!/usr/bin/env bash
# GPU checks and benchmarks in one command, for the device machine (CI never runs it). Build the
# binary here first and take it along with the wheels PyTorch's side lacks there. The default
# backend is LibTorch (BACKEND=tch-cuda; the binary links libtorch dynamically, about 35 MB, 7.5 xz'd):
#
#   PATH=~/.cache/ril/torch-2.11.0-venv/bin:$PATH LIBTORCH_USE_PYTORCH=1 \
#     LIBTORCH_BYPASS_VERSION_CHECK=1 cargo build --release --features tch --bin ril
#   mkdir -p .gpu && xz -T2 -c target/release/ril > .gpu/ril-tch.xz   # .gpu/ and .whl/ are excluded
#   pip download --no-deps (device README) diffusers==0.42.1 kornia==0.9.0 kornia_rs==0.2.0
#     open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 importlib_metadata==10.2.0 peft==0.21.2 into .whl
#   device run (carry .gpu and .whl): BUDGET=420 bash tools/bench/gpu.sh .gpu/ril-tch.xz
#
# or burn-cuda (BACKEND=cuda; `CUDARC_CUDA_VERSION=13000 cargo build --release --features
# cuda-base --bin ril`), whose JIT kernel cache travels in .gpu/cubecl-cache.
#
# Phases in this order, each under its own timeout, skipped once the budget ($BUDGET s) is spent:
#   1. tiny parity pipeline on the GPU (ril sample from the fixture latents) vs diffusers' image;
#   2. sd15 shapes with random weights, ril and PyTorch in turn (pair below): the training steps
#      (baseline and RID, each with its per-phase profile) with each reward, bf16 and f32, batch 1
#      and the paper's RID micro-batch 8 (then 16); UNet forward with CFG, VAE decode and the
#      50-step sampling run; peak GPU memory of each process polled with nvidia-smi;
#   3. tools/bench/gpu_report.py: samples/s, TFLOP/s, MFU and the ratios, as report.md, and
#      record.json (everything, for docs/bench/).
# $OUT (or ./gpu-out) receives summary.txt, report.md, record.json and gpu-out.tar.gz (every log).
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
if [ "$BACKEND" = cuda ]; then
mkdir -p .gpu/cubecl-cache
printf '[compilation]\ncache = { file = "%s" }\n[autotune]\ncache = { file = "%s" }\n' \
  "$PWD/.gpu/cubecl-cache" "$PWD/.gpu/cubecl-cache" > cubecl.toml
fi
python3 -c 'import torch; print(torch.__version__, torch.version.cuda)' > "$OUT/torch.txt" 2>&1
date -u +%Y-%m-%dT%H:%M:%SZ > "$OUT/date.txt"

if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl > "$OUT/pip.log" 2>&1 && export PYTHONPATH=/tmp/site
fi

# phase NAME MAX_SECONDS COMMAND...: runs COMMAND with a timeout (MAX or what is left of the
# budget), its output in $OUT/NAME.log, GPU memory polled every 100 ms into $OUT/NAME.mem.
phase() {
  local name=$1 max=$2; shift 2
  # ONLY="name ..." runs just those phases (a second call for what the first one's budget cut).
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return 0; fi
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
[ -d "$OUT/tiny" ] && python3 tools/bench/gpu_report.py compare-image "$FIX/reference/pipeline.safetensors" "$OUT/tiny" | tee -a "$SUMMARY"


# sd15 shapes, random weights, 512x512, 50 DDIM steps: ril and PyTorch in turn, the most
# important first (the budget may end the list). NAME = impl-dtype-reward-bBATCH (what = sample for
# the sampling timings); each ril process also records the time from its start to its first
# finished training step, each phase the peak GPU memory nvidia-smi saw.
SD15=(--preset sd15 --backend "$BACKEND")
PT=(python3 tools/bench/bench.py --preset sd15 --device cuda --threads 16)
pair() {   # pair DTYPE WHAT REWARD BATCH REPS RIL_LIMIT PT_LIMIT
  local dt=$1 what=$2 reward=$3 b=$4 reps=$5 n
  n=$dt-$reward-b$b; [ "$what" = sample ] && n=$dt-sample-b$b
  phase "ril-$n" "$6" "$RIL" bench "${SD15[@]}" --dtype "$dt" --what "$what" --reward "$reward" \
    --batch "$b" --reps "$reps" --json "$OUT/ril-$n.json"
  local pdt=$dt; [ "$dt" = f32 ] && pdt=fp32
  phase "pytorch-$n" "$7" "${PT[@]}" --dtype "$pdt" --what "$what" --reward "$reward" \
    --batch "$b" --reps "$reps" --json "$OUT/pytorch-$n.json"
}
pair bf16 train-step compress 1 2 120 90
pair bf16 sample compress 1 3 90 60
pair bf16 train-step aesthetic 1 2 120 90
pair bf16 train-step hps 1 2 120 90
pair f32 train-step compress 1 2 120 90
pair bf16 train-step compress 8 1 150 120   # the paper's RID micro-batch
pair f32 sample compress 1 3 90 60
pair f32 train-step aesthetic 1 2 120 90
pair f32 train-step hps 1 2 120 90
pair bf16 train-step compress 16 1 150 120

python3 tools/bench/gpu_report.py report "$OUT" > "$OUT/report.md" 2>&1
python3 tools/bench/gpu_report.py record "$OUT" "$OUT/record.json" >> "$OUT/report.md" 2>&1
cp "$SUMMARY" "$OUT/report.md" "$OUT/record.json" "$FINAL/"
tar czf "$FINAL/gpu-out.tar.gz" -C /tmp gpu-out
[ "$BACKEND" = cuda ] && tar czf "$FINAL/cubecl-cache.tar.gz" -C .gpu cubecl-cache
ls -la "$FINAL"
cat "$SUMMARY" "$OUT/report.md"
