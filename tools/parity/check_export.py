#!/usr/bin/env python3
"""Checks `ril export` against diffusers: the kohya file loaded with `pipe.load_lora_weights`
(diffusers' own kohya conversion, `_convert_non_diffusers_lora_to_diffusers`) and the merged
UNet folder (`UNet2DConditionModel.from_pretrained`, swapped into the pipeline) give the images
`ril sample --lora` gives for the same prompts and initial latents, within 2/255 per pixel (the
bound of the pipeline parity: the two sides round f32 sums in different orders). Two cases on the
tiny pipeline's peft fixtures: b_r2_alpha8 alone (alpha 8 on rank 2, so the kohya `.alpha`
scaling is exercised: scale 4) and a_r4 + b_r2_alpha8 stacked (one file of rank 6). The same
again with `--fp16` (float16 values in the kohya file and the merged UNet, loaded by diffusers in
float32 and compared with ril's float32 images: the half-precision rounding of the weights must
stay within the same 2/255). Not run by CI (it needs PyTorch); run it after changing the export:

  cargo build --release --bin ril
  python3 -m venv /tmp/export-venv
  /tmp/export-venv/bin/pip install torch==2.11.0 diffusers==0.42.1 transformers==5.24.0 \
      safetensors==0.8.0 peft==0.21.2 numpy==2.4.6 pillow==13.0.0
  /tmp/export-venv/bin/python tools/parity/check_export.py target/release/ril /tmp/ril-export

Versions: tools/parity/requirements.txt (this script was last run with the ones above).
"""
import os
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from PIL import Image
from safetensors.torch import save_file

torch.set_num_threads(1)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(ROOT, "crates/sd-model/tests/fixtures")
TINY = os.path.join(FIX, "tiny-sd")
PROMPTS = ["a photo of a cat", "a red car"]
STEPS = 10
GUIDANCE = 7.5
SIZE = 64


def pipeline(unet=None):
    kwargs = {"unet": unet} if unet is not None else {}
    pipe = StableDiffusionPipeline.from_pretrained(
        TINY, safety_checker=None, requires_safety_checker=False, **kwargs)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def images(pipe, latents):
    out = pipe(PROMPTS, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
               latents=latents.clone(), output_type="np", eta=0.0).images
    return (np.clip(out, 0, 1) * 255).round().astype(np.int16)


def ril_images(ril, latents_file, loras, out):
    cmd = [ril, "sample", "--model", TINY, "--latents", latents_file, "--steps", str(STEPS),
           "--guidance", str(GUIDANCE), "--height", str(SIZE), "--width", str(SIZE), "--out", out]
    for p in PROMPTS:
        cmd += ["--prompt", p]
    for lora in loras:
        cmd += ["--lora", lora]
    subprocess.run(cmd, check=True, capture_output=True)
    return np.stack([
        np.asarray(Image.open(os.path.join(out, f"{i:03}.png")).convert("RGB")).astype(np.int16)
        for i in range(len(PROMPTS))
    ])


def main(ril, work):
    os.makedirs(work, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn((len(PROMPTS), 4, SIZE // 8, SIZE // 8), generator=gen)
    latents_file = os.path.join(work, "latents.safetensors")
    save_file({"latents": latents.contiguous()}, latents_file)
    base = images(pipeline(), latents)
    cases = {
        "b": ["b_r2_alpha8.safetensors"],
        "ab": ["a_r4.safetensors", "b_r2_alpha8.safetensors"],
    }
    worst = 0
    for name, files in cases.items():
        loras = [os.path.join(FIX, "lora", f) for f in files]
        lora_args = [x for lora in loras for x in ("--lora", lora)]
        mine = ril_images(ril, latents_file, loras, os.path.join(work, f"{name}-ril"))
        effect = int(np.abs(mine - base).max())
        assert effect > 2, f"{name}: the LoRA has no visible effect, the check would be vacuous"
        for half in [False, True]:
            tag = f"{name}-fp16" if half else name
            precision = ["--fp16"] if half else []
            kohya = os.path.join(work, f"{tag}-kohya.safetensors")
            merged = os.path.join(work, f"{tag}-unet")
            subprocess.run([ril, "export", *lora_args, "--format", "kohya", *precision,
                            "--out", kohya], check=True, capture_output=True)
            subprocess.run([ril, "export", *lora_args, "--format", "merged-unet", "--model", TINY,
                            *precision, "--out", merged], check=True, capture_output=True)
            pipe = pipeline()
            pipe.load_lora_weights(work, weight_name=os.path.basename(kohya), adapter_name="kohya")
            from_kohya = images(pipe, latents)
            unet = UNet2DConditionModel.from_pretrained(merged, torch_dtype=torch.float32)
            from_merged = images(pipeline(unet), latents)
            d_kohya = int(np.abs(from_kohya - mine).max())
            d_merged = int(np.abs(from_merged - mine).max())
            print(f"{'+'.join(files)}{' (fp16 files)' if half else ''}: the LoRA moves ril's "
                  f"images by up to {effect}/255; max |diffusers kohya - ril| = {d_kohya}/255, "
                  f"max |diffusers merged UNet - ril| = {d_merged}/255")
            worst = max(worst, d_kohya, d_merged)
    assert worst <= 2, f"diffusers and ril differ by {worst}/255"
    print("OK: diffusers loads ril's kohya file and merged UNet (float32 and float16) and "
          "reproduces ril's LoRA images within 2/255")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
