"""Reference values for ril's zero-terminal-SNR DDIM (rescale_betas_zero_snr, v-prediction,
trailing spacing): diffusers' DDIMScheduler with SD 1.5's betas rescaled, its alphas_cumprod,
its 20 trailing timesteps and two steps (the first at alpha_bar = 0) on seeded inputs.

    python tools/parity/make_zero_snr_fixture.py   # torch 2.11.0, diffusers 0.42.1, safetensors 0.8.0
Writes crates/sd-model/tests/fixtures/reference/ddim_zero_snr.safetensors.
"""

import pathlib

import torch
from diffusers import DDIMScheduler
from safetensors.torch import save_file

torch.set_num_threads(1)
out = pathlib.Path(__file__).resolve().parents[2] / "crates/sd-model/tests/fixtures/reference"
sched = DDIMScheduler(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type="v_prediction",
    rescale_betas_zero_snr=True,
    timestep_spacing="trailing",
)
sched.set_timesteps(20)
g = torch.Generator().manual_seed(0)
sample = torch.randn(1, 4, 4, 4, generator=g)
outputs = {"alphas_cumprod": sched.alphas_cumprod.float(), "timesteps": sched.timesteps.long(), "sample": sample.clone()}
x = sample
for i, t in enumerate(sched.timesteps[:2]):
    v = torch.randn(1, 4, 4, 4, generator=g)
    outputs[f"model_output_{i}"] = v
    x = sched.step(v, t, x, eta=0.0).prev_sample
    outputs[f"prev_sample_{i}"] = x.clone()
save_file({k: v.contiguous() for k, v in outputs.items()}, out / "ddim_zero_snr.safetensors")
print("alphas_cumprod[-3:]", sched.alphas_cumprod[-3:].tolist(), "timesteps", sched.timesteps.tolist())
