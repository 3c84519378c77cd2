"""The toy world's VAE round trip as diffusers computes it: held-out images (row 1) and each
pipeline's VAE reconstruction from the posterior mean (one row per pipeline), 2x nearest.

    ril data shapes --count 12 --split heldout --objects 1 --out /tmp/held12
    python tools/toy/vae_reconstructions.py /tmp/held12 OUT.png RUN_A/pipeline [RUN_B/pipeline ...]

Run with torch==2.11.0, diffusers==0.42.1 (docs/toy/vae-reconstructions-2026-12-03.png).
"""

import sys

import numpy as np
import torch
from diffusers import AutoencoderKL
from PIL import Image

torch.set_num_threads(2)
held, out, pipelines = sys.argv[1], sys.argv[2], sys.argv[3:]
x = torch.stack(
    [
        torch.from_numpy(
            np.asarray(Image.open(f"{held}/{i:06d}.png").convert("RGB")).astype(np.float32) / 127.5 - 1
        ).permute(2, 0, 1)
        for i in range(12)
    ]
)
to_u8 = lambda t: ((t.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
rows = [to_u8(x)]
for p in pipelines:
    vae = AutoencoderKL.from_pretrained(f"{p}/vae").eval()
    with torch.no_grad():
        rows.append(to_u8(vae.decode(vae.encode(x).latent_dist.mean).sample))
grid = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(out)
