#!/usr/bin/env bash
# How fast does Burn JIT-compile on the device? Two 55-s runs of the tiny CUDA sample (default
# autotune, then CUBECL_AUTOTUNE_LEVEL=minimal) with cubecl's compile and autotune logs, and the
# count of both every 5 s. Usage (device run, carry .gpu): bash tools/bench/gpu_compile_rate.sh
# .gpu/ril-cuda.xz. Findings of 2026-11-26 (H200): about 0.5 s per kernel, matmul candidates most.
set -u
mkdir -p "$OUT"
python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" "${1:?usage: gpu_compile_rate.sh PATH/TO/ril-cuda.xz}" /tmp/ril && chmod +x /tmp/ril
export LD_LIBRARY_PATH=/usr/local/nvidia/lib64:/usr/local/cuda/targets/x86_64-linux/lib
python3 tools/bench/gpu_report.py latents crates/sd-model/tests/fixtures/reference/pipeline.safetensors lat.safetensors
run() {  # NAME ENV...
  local name=$1; shift
  printf '[compilation.logger]\nlevel = "basic"\nfile = "/tmp/%s-compile.log"\n[autotune.logger]\nlevel = "full"\nfile = "/tmp/%s-autotune.log"\n' "$name" "$name" > cubecl.toml
  ( for i in $(seq 1 11); do sleep 5; echo "t=$((i*5)) compile_lines=$(cat /tmp/$name-compile.log 2>/dev/null | wc -l) autotune_lines=$(cat /tmp/$name-autotune.log 2>/dev/null | wc -l)"; done ) > "$OUT/$name-rate.txt" &
  local p=$!
  env "$@" timeout 55 /tmp/ril sample --model crates/sd-model/tests/fixtures/tiny-sd --prompt "a photo of a cat" --prompt "a red car" --negative-prompt blurry --height 64 --width 64 --steps 10 --guidance 7.5 --eta 0 --latents lat.safetensors --out /tmp/$name-img --backend cuda > "$OUT/$name.log" 2>&1
  echo "$name exit $? after $SECONDS s" | tee -a "$OUT/$name.log"
  kill $p 2>/dev/null; wait $p 2>/dev/null
  head -c 3000000 /tmp/$name-compile.log > "$OUT/$name-compile.log" 2>/dev/null
  head -c 3000000 /tmp/$name-autotune.log > "$OUT/$name-autotune.log" 2>/dev/null
  cat "$OUT/$name-rate.txt"; tail -3 "$OUT/$name.log"
}
run default X=1
run minimal CUBECL_AUTOTUNE_LEVEL=minimal
python3 tools/bench/gpu_report.py compare-image crates/sd-model/tests/fixtures/reference/pipeline.safetensors /tmp/minimal-img
python3 tools/bench/gpu_report.py compare-image crates/sd-model/tests/fixtures/reference/pipeline.safetensors /tmp/default-img
