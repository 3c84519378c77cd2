#!/usr/bin/env python3
"""Helpers of tools/bench/gpu.sh (numpy and Pillow only; no torch needed).

  latents FIXTURE OUT          the parity fixture's initial latents as a latents file for ril sample
  compare-image FIXTURE DIR    worst pixel of DIR/000.png, 001.png against diffusers' image
  compare-metrics CPU CUDA     per-step training reward and loss of two metrics.jsonl files
  report OUT                   samples/s, TFLOP/s, MFU and ril / PyTorch ratios of the bench JSONs
  record OUT FILE              all of it as one JSON record (docs/bench/)

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


def records(out):
    """Every bench JSON of the run, keyed by its file name without .json (impl-dtype-what-bN)."""
    recs = {}
    for name in sorted(os.listdir(out)):
        if name.endswith(".json") and (name.startswith("ril-") or name.startswith("pytorch-")):
            try:
                recs[name[:-5]] = json.load(open(os.path.join(out, name)))
            except (OSError, ValueError) as e:
                print(f"{name}: unreadable ({e})", file=sys.stderr)
    return recs


def peak_gpu_mib(out, name):
    """The largest nvidia-smi reading of a phase (whole card, MiB), or None."""
    try:
        vals = [int(l) for l in open(os.path.join(out, name + ".mem")) if l.strip().isdigit()]
        return max(vals) if vals else None
    except OSError:
        return None


def text(out, name):
    p = os.path.join(out, name)
    return open(p).read().strip() if os.path.exists(p) else "?"


# A training step per image: the 49 guided no-grad steps, the guided last step forward and
# backward, the decode forward and backward (REFERENCE.md: about 93 TFLOP per sample); RID adds
# the teacher's guided last step (1.6 TFLOP).
TRAIN_TFLOP = {"train_step_baseline": 93.0, "train_step_rid": 93.0 + 2 * UNET_TFLOP}


def flops(op, batch, steps):
    return {
        "unet_forward": UNET_TFLOP * 2 * batch,
        "vae_decode": VAE_TFLOP * batch,
        "sample": steps * UNET_TFLOP * 2 * batch + VAE_TFLOP * batch,
    }.get(op, TRAIN_TFLOP.get(op, 0.0) * batch * steps / 50)


OPS = ["unet_forward", "vae_decode", "sample", "train_step_baseline", "train_step_rid"]


def rows(out):
    """One row per (dtype, reward, batch, operation) with ril's and PyTorch's figures."""
    recs = records(out)
    out_rows = []
    for name, r in recs.items():
        if r.get("impl") != "ril":
            continue
        pt_name = "pytorch-" + name[len("ril-"):]
        pt = recs.get(pt_name, {})
        res, pres = r.get("results", {}), pt.get("results", {})
        dt, batch, steps = r.get("dtype"), r.get("batch", 1), r.get("steps", 50)
        for op in OPS:
            if op not in res:
                continue
            t = res[op]["median_s"]
            pt_t = pres.get(op, {}).get("median_s")
            tf = flops(op, batch, steps)
            per_image = op in ("sample", "train_step_baseline", "train_step_rid")
            row = {
                "dtype": dt, "reward": r.get("reward") if op.startswith("train") else None,
                "batch": batch, "operation": op, "ril_median_s": t, "pytorch_median_s": pt_t,
                "ril_samples_per_s": batch / t if per_image else None,
                "pytorch_samples_per_s": batch / pt_t if per_image and pt_t else None,
                "ril_speed_over_pytorch": pt_t / t if pt_t else None,
                "tflop": tf, "ril_tflop_per_s": tf / t,
                "ril_mfu": tf / t / PEAK[dt], "pytorch_mfu": tf / pt_t / PEAK[dt] if pt_t else None,
                "ril_peak_gpu_mib": peak_gpu_mib(out, name),
                "pytorch_peak_gpu_mib": peak_gpu_mib(out, pt_name),
                "pytorch_peak_allocated_gib": pres.get(op, {}).get("peak_mem_gib"),
            }
            out_rows.append(row)
    return out_rows, recs


def fmt(v, f):
    return "-" if v is None else f.format(v)


def report(out):
    table, recs = rows(out)
    print(f"# sd15-shaped benches on {text(out, 'gpu.txt')}, torch {text(out, 'torch.txt')}, {text(out, 'date.txt')}\n")
    print("512x512, 50 DDIM steps, CFG 7.5 (UNet batch 2B), random weights, LoRA rank 4 on the attention "
          "projections; median of the timed repetitions after one warm-up each. Speed = PyTorch's time / "
          "ril's (above 1: ril faster). MFU against 989 TFLOP/s bf16, 67 fp32 (TRAIN_TFLOP: about 93 per "
          "image, REFERENCE.md). Peak GPU = nvidia-smi's largest reading of the whole process.\n")
    print("| dtype | reward | batch | operation | ril | PyTorch | speed | ril img/s | PyTorch img/s | ril MFU | PyTorch MFU | ril peak GPU | PyTorch peak GPU |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in table:
        print(f"| {r['dtype']} | {r['reward'] or ''} | {r['batch']} | {r['operation']} | "
              f"{r['ril_median_s'] * 1000:.1f} ms | {fmt(r['pytorch_median_s'] and r['pytorch_median_s'] * 1000, '{:.1f} ms')} | "
              f"{fmt(r['ril_speed_over_pytorch'], '{:.2f}x')} | {fmt(r['ril_samples_per_s'], '{:.3f}')} | "
              f"{fmt(r['pytorch_samples_per_s'], '{:.3f}')} | {100 * r['ril_mfu']:.1f} % | "
              f"{fmt(r['pytorch_mfu'] and 100 * r['pytorch_mfu'], '{:.1f} %')} | "
              f"{fmt(r['ril_peak_gpu_mib'] and r['ril_peak_gpu_mib'] / 1024, '{:.1f} GiB')} | "
              f"{fmt(r['pytorch_peak_gpu_mib'] and r['pytorch_peak_gpu_mib'] / 1024, '{:.1f} GiB')} |")
    print()
    for name, r in recs.items():
        res = r.get("results", {})
        first = res.get("first_train_step_since_start_s")
        if first is not None:
            print(f"- {name}: first training step finished {first:.1f} s after the process started")
    for name, r in recs.items():
        for m in ("baseline", "rid"):
            ph = r.get("results", {}).get(f"phases_{m}")
            if ph:
                print(f"- {name} {m} phases (s): " + ", ".join(f"{k} {v:.3f}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in ph.items()))


def record(out, path):
    """Everything of the run as one JSON record (docs/bench/)."""
    table, recs = rows(out)
    rec = {
        "card": text(out, "gpu.txt"), "torch": text(out, "torch.txt"), "date": text(out, "date.txt"),
        "units": {"*_median_s": "s", "*_samples_per_s": "images/s", "tflop": "TFLOP per call",
                  "*_mfu": "fraction of the dense peak", "*_peak_gpu_mib": "MiB (nvidia-smi, whole process)",
                  "pytorch_peak_allocated_gib": "GiB (torch.cuda.max_memory_allocated)",
                  "first_train_step_since_start_s": "s"},
        "rows": table, "runs": recs,
        "summary": text(out, "summary.txt").splitlines(),
    }
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(rec, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
    print(f"record: {path} ({len(table)} rows)")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"latents": latents, "compare-image": compare_image, "compare-metrics": compare_metrics, "report": report, "record": record}[cmd](*args)
