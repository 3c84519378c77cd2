#!/usr/bin/env python3
"""Checks that a pipeline folder written by `ril pretrain` loads in diffusers'
`StableDiffusionPipeline.from_pretrained` and gives ril's images: the same prompts and initial
latents, DDIM with classifier-free guidance, compared as 8-bit PNGs (at most 2/255 apart, the
issue's bound: the two sides round f32 sums in different orders). Not run by CI (it needs
PyTorch); run it after changing the pipeline writer or the models:

  cargo build --release --bin ril
  /tmp/parity-venv/bin/python tools/parity/check_pretrained.py data/toy/pipeline target/release/ril

Versions: tools/parity/requirements.txt (diffusers 0.42.1, transformers 5.24.0, torch 2.15.0).
"""
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline
from PIL import Image
from safetensors.torch import save_file

torch.set_num_threads(1)

PROMPTS = [
    "a large red circle in the centre, on a blue background",
    "a small green triangle on the left, on a yellow background",
]
STEPS = 20
GUIDANCE = 7.5


def main(pipeline: str, ril: str) -> None:
    pipe = StableDiffusionPipeline.from_pretrained(pipeline, safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(
        (len(PROMPTS), pipe.unet.config.in_channels, size // pipe.vae_scale_factor, size // pipe.vae_scale_factor),
        generator=gen,
    )
    out = pipe(
        PROMPTS, height=size, width=size, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
        latents=latents.clone(), output_type="np", eta=0.0,
    ).images
    ref = (np.clip(out, 0, 1) * 255).round().astype(np.int16)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "latents.safetensors")
        save_file({"latents": latents.contiguous()}, path)
        cmd = [ril, "sample", "--model", pipeline, "--latents", path, "--steps", str(STEPS),
               "--guidance", str(GUIDANCE), "--height", str(size), "--width", str(size),
               "--out", os.path.join(tmp, "ril")]
        for p in PROMPTS:
            cmd += ["--prompt", p]
        subprocess.run(cmd, check=True)
        worst = 0
        for i in range(len(PROMPTS)):
            mine = np.asarray(Image.open(os.path.join(tmp, "ril", f"{i:03}.png")).convert("RGB")).astype(np.int16)
            diff = int(np.abs(mine - ref[i]).max())
            print(f"prompt {i}: max |ril - diffusers| = {diff}/255")
            worst = max(worst, diff)
    assert worst <= 2, f"ril and diffusers differ by {worst}/255"
    print("OK: diffusers loads the pipeline and reproduces ril's images within 2/255")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
