#!/usr/bin/env python3
"""Checks that a LoRA file written by ril loads in diffusers' `load_lora_weights` and gives the
UNet output ril computed (the ril -> diffusers direction of the LoRA parity; the other direction
is a committed fixture). Not run by CI (it needs PyTorch); run it after changing the export:

  cargo run -p sd-model --example export_lora -- /tmp/ril-lora
  /tmp/parity-venv/bin/python tools/parity/check_ril_lora.py /tmp/ril-lora
  # LoRA on the 1x1-convolution projections (peft's Conv2d LoRA layout, [r, in, 1, 1]):
  cargo run -p sd-model --example export_lora -- /tmp/ril-lora-conv '.*\.proj_(in|out)'
  /tmp/parity-venv/bin/python tools/parity/check_ril_lora.py /tmp/ril-lora-conv

Versions: tools/parity/requirements.txt.
"""
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from diffusers import StableDiffusionPipeline
from safetensors import safe_open
from safetensors.torch import load_file

torch.set_num_threads(1)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(ROOT, "crates/sd-model/tests/fixtures")


def main(out_dir: str) -> None:
    path = os.path.join(out_dir, "ril_lora.safetensors")
    with safe_open(path, "pt") as f:
        meta = json.loads(f.metadata()["lora_adapter_metadata"])
    print("metadata r / alpha:", meta["unet.r"], meta["unet.lora_alpha"])
    pipe = StableDiffusionPipeline.from_pretrained(os.path.join(FIX, "tiny-sd"), safety_checker=None)
    pipe.load_lora_weights(out_dir, weight_name="ril_lora.safetensors", adapter_name="ril")
    ref = load_file(os.path.join(FIX, "reference/unet.safetensors"))
    sample = ref["sample"].clone().requires_grad_(True)
    ehs = ref["encoder_hidden_states"].clone().requires_grad_(True)
    out = pipe.unet(sample, ref["timestep"], ehs).sample.detach()
    ril = load_file(os.path.join(out_dir, "ril_out.safetensors"))["out"]
    base = ref["out"]
    diff = (out - ril).abs().max().item()
    effect = (out - base).abs().max().item()
    scale = base.abs().max().item()
    print(f"max |diffusers - ril| = {diff:.3e}; the LoRA moves the output by up to {effect:.3e} (scale {scale:.3f})")
    assert effect > 1e-3, "the LoRA has no effect: it was not loaded"
    assert diff <= 1e-5 * scale + 1e-4 * effect, "diffusers and ril disagree"
    print("OK: diffusers loads ril's LoRA file and reproduces ril's output")


if __name__ == "__main__":
    main(sys.argv[1])
