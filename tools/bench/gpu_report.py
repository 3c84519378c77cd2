#!/usr/bin/env python3
"""Helpers of tools/bench/gpu.sh (numpy and Pillow only; no torch needed).

  latents FIXTURE OUT          the parity fixture's initial latents as a latents file for ril sample
  compare-image FIXTURE DIR    worst pixel of DIR/000.png, 001.png against diffusers' image
  compare-metrics CPU CUDA     per-step training reward and loss of two metrics.jsonl files
  report OUT                   samples/s, TFLOP/s, MFU and ril / PyTorch ratios of the bench JSONs

FLOP counts (REFERENCE.md, measured with PyTorch's counter): a UNet forward is 0.803 TFLOP per
64x64 latent, a VAE decode 2.51 TFLOP per 512x512 image. Peaks for MFU are the H100/H200 SXM
datasheet's dense rates: 989 TFLOP/s bf16, 67 TFLOP/s fp32 without tensor cores (PyTorch's fp32
convolutions use TF32 tensor cores by default, so its fp32 MFU can pass 100 %).
"""
import json
import os
import struct
import sys

import numpy as np

UNET_TFLOP, VAE_TFLOP = 0.803, 2.51
PEAK = {"bf16": 989.0, "fp32": 67.0, "f32": 67.0}


def read_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    head = json.loads(raw[8:8 + n])
    out = {}
    for k, v in head.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        out[k] = np.frombuffer(raw[8 + n + s:8 + n + e], dtype=np.float32).reshape(v["shape"])
    return out


def latents(fixture, out):
    data = read_safetensors(fixture)["latents"].astype(np.float32)
    hdr = json.dumps({"latents": {"dtype": "F32", "shape": list(data.shape), "data_offsets": [0, data.nbytes]}}).encode()
    hdr += b" " * (-len(hdr) % 8)
    with open(out, "wb") as f:
        f.write(struct.pack("<Q", len(hdr)) + hdr + data.tobytes())


def compare_image(fixture, folder):
    from PIL import Image

    ref = read_safetensors(fixture)["image"]
    worst = 0.0
    for i in range(ref.shape[0]):
        path = os.path.join(folder, f"{i:03}.png")
        if not os.path.exists(path):
            print(f"tiny parity image: {path} missing")
            return
        got = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
        exp = ref[i].transpose(1, 2, 0).astype(np.float64) * 255.0
        worst = max(worst, float(np.abs(got - exp).max()))
    verdict = "PASS" if worst <= 2.0 else "FAIL"
    print(f"tiny parity image on CUDA vs diffusers: worst pixel {worst:.3f}/255 (bound 2/255) {verdict}")


def compare_metrics(cpu, cuda):
    def rows(p):
        return [json.loads(l) for l in open(p) if l.strip()]

    a, b = rows(cpu), rows(cuda)
    if len(a) != len(b):
        print(f"tiny RID run: {len(a)} CPU rows vs {len(b)} CUDA rows")
    worst = {}
    keys = ("loss", "reward_mean", "distill", "grad_norm")
    # Differences relative to the largest magnitude of each value over the run (the distillation
    # term starts at 1e-14, where a per-step relative difference says nothing).
    scale = {k: max([abs(r.get(k) or 0.0) for r in a] + [1e-30]) for k in keys}
    for ra, rb in zip(a, b):
        for k in keys:
            if isinstance(ra.get(k), (int, float)) and isinstance(rb.get(k), (int, float)):
                worst[k] = max(worst.get(k, 0.0), abs(ra[k] - rb[k]) / scale[k])
    print("tiny RID run CUDA vs CPU, worst difference relative to each value's largest magnitude over "
          f"{min(len(a), len(b))} steps: " + ", ".join(f"{k} {v:.2e}" for k, v in sorted(worst.items())))


def load(out, name):
    p = os.path.join(out, name)
    return json.load(open(p)) if os.path.exists(p) else None


def report(out):
    recs = {
        ("ril", "f32"): [load(out, "ril-sample-f32.json"), load(out, "ril-train-f32.json")],
        ("ril", "bf16"): [load(out, "ril-sample-bf16.json")],
        ("pytorch", "fp32"): [load(out, "pytorch-fp32.json")],
        ("pytorch", "bf16"): [load(out, "pytorch-bf16.json")],
    }
    merged, meta = {}, {}
    for key, parts in recs.items():
        res = {}
        for r in parts:
            if r:
                res.update(r["results"])
                meta[key] = r
        merged[key] = res
    gpu = open(os.path.join(out, "gpu.txt")).read().strip() if os.path.exists(os.path.join(out, "gpu.txt")) else "?"
    batch = next((m["batch"] for m in meta.values()), 1)
    steps = next((m["steps"] for m in meta.values()), 50)
    print(f"# sd15-shaped benches on {gpu}\n")
    print(f"512x512, batch {batch}, {steps} DDIM steps, CFG (UNet batch {2 * batch}); random weights. "
          "Median of the timed repetitions after one warm-up.\n")
    flops = {
        "unet_forward": UNET_TFLOP * 2 * batch,
        "vae_decode": VAE_TFLOP * batch,
        "sample": steps * UNET_TFLOP * 2 * batch + VAE_TFLOP * batch,
    }
    names = ["unet_forward", "vae_decode", "sample", "train_step_baseline", "train_step_rid"]
    print("| impl | dtype | operation | median | samples/s | TFLOP/s | MFU |")
    print("|---|---|---|---|---|---|---|")
    for (impl, dt), res in merged.items():
        for n in names:
            if n not in res:
                continue
            t = res[n]["median_s"]
            sps = f"{batch / t:.3f}" if n in ("sample", "train_step_baseline", "train_step_rid") else ""
            tf = flops.get(n)
            tfs = f"{tf / t:.1f}" if tf else ""
            mfu = f"{100 * tf / t / PEAK[dt]:.1f} %" if tf else ""
            print(f"| {impl} | {dt} | {n} | {t * 1000:.1f} ms | {sps} | {tfs} | {mfu} |")
    print("\n| operation | ril f32 / PyTorch fp32 | ril bf16 / PyTorch bf16 | ril f32 / PyTorch bf16 |")
    print("|---|---|---|---|")
    for n in names:
        def ratio(a, b):
            ra, rb = merged[a].get(n), merged[b].get(n)
            return f"{ra['median_s'] / rb['median_s']:.2f}" if ra and rb else "-"
        print(f"| {n} | {ratio(('ril', 'f32'), ('pytorch', 'fp32'))} | {ratio(('ril', 'bf16'), ('pytorch', 'bf16'))} | {ratio(('ril', 'f32'), ('pytorch', 'bf16'))} |")
    for key in merged:
        r = merged[key].get("rid_over_baseline")
        if r:
            print(f"\nRID / baseline step time, {key[0]} {key[1]}: {r:.3f}")
    for key, res in merged.items():
        mem = [f"{n} {v['peak_mem_gib']:.2f} GiB" for n, v in res.items() if isinstance(v, dict) and "peak_mem_gib" in v]
        if mem:
            print(f"\nPyTorch {key[1]} peak allocated memory: " + ", ".join(mem))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"latents": latents, "compare-image": compare_image, "compare-metrics": compare_metrics, "report": report}[cmd](*args)
