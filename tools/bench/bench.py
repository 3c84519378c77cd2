#!/usr/bin/env python3
"""PyTorch reference for `cargo xtask bench --compare`: the same timings as `ril bench` with
diffusers + peft + kornia, written in the same JSON format.

Timed (after one warm-up; median, min, max of --reps runs): UNet forward (CFG batch 2B), VAE
decode, one DDIM sampling run (N guided steps + decode, no grad), and one training step of the
baseline and of RID: N-1 DDIM steps without grad, the last step with grad (CFG), VAE decode, the
compressibility reward through kornia's differentiable JPEG (q 80), loss -mean R (+ 0.1 MSE to an
EMA teacher's last step for RID), backward, clip_grad_norm_(1.0), AdamW on the LoRA pair (rank 4
on to_q/to_k/to_v/to_out.0), EMA update for RID. --reward aesthetic / hps replace the
compressibility reward by a random-weight CLIP ViT-L/14 vision tower + the LAION MLP layout
(transformers) or an open_clip ViT-H-14 cosine (tiny towers for --preset tiny), each after
CLIP's preprocessing (antialiased bilinear resize to 224, CLIP normalisation), as ril's rewards;
--gradient-checkpointing wraps the last step, the decode and the reward each in
torch.utils.checkpoint (use_reentrant=False), as ril's `gradient_checkpointing` recomputes them. Same shapes and steps as ril's presets:
tiny = the parity fixture pipeline, 64x64, batch 2, 10 steps; sd15 = SD 1.5 shapes with random
weights, 512x512, batch 1, 50 steps. On CUDA it runs bf16 weights with SDPA by default
(--dtype fp32 for the f32 comparison; TF32 stays off, PyTorch's default for matmuls) and records
each measurement's peak allocated GPU memory. The JSON is rewritten after every measurement, so
a run cut short keeps what it timed.

Rerun: /path/to/venv/bin/python tools/bench/bench.py --preset tiny --threads 2 --json out.json
(versions: tools/parity/requirements.txt).
"""
import argparse
import copy
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from kornia.enhance import jpeg_codec_differentiable
from peft import LoraConfig
from transformers import CLIPTextConfig, CLIPTextModel

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "crates/sd-model/tests/fixtures/tiny-sd")


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def timed(reps, device, fn):
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    fn()
    sync(device)
    ts = []
    for _ in range(reps):
        s = time.perf_counter()
        fn()
        sync(device)
        ts.append(time.perf_counter() - s)
    return summary(ts, device)


def summary(ts, device):
    ts = sorted(ts)
    out = {"median_s": ts[len(ts) // 2], "min_s": ts[0], "max_s": ts[-1], "reps": len(ts)}
    if device == "cuda":
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def since_process_start():
    """Seconds since this process started (Linux /proc, 10 ms ticks), as ril bench measures it."""
    try:
        ticks = float(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
        return float(open("/proc/uptime").read().split()[0]) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def build(preset, device, dtype):
    pipe = StableDiffusionPipeline.from_pretrained(TINY, safety_checker=None)
    if preset == "sd15":
        pipe.unet = UNet2DConditionModel(cross_attention_dim=768)  # SD 1.5's config defaults
        pipe.vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
            latent_channels=4,
        )
        pipe.text_encoder = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12, projection_dim=768))  # ViT-L/14's text tower
    pipe.to(device, dtype)
    return pipe


CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_pixels(img01, n=224):
    """[B, 3, H, W] in [0, 1] -> CLIP's input (square images: resize only)."""
    x = torch.nn.functional.interpolate(img01, size=(n, n), mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor(CLIP_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def make_reward(kind, tiny, prompts, device, dtype):
    """images01 [B, 3, H, W] -> rewards [B], with random weights at the reward's real shapes."""
    if kind == "compress":
        def compress(img):
            jpeg = jpeg_codec_differentiable(img.float(), torch.tensor([80.0], device=device))
            return -((img.float() - jpeg) ** 2).mean(dim=(1, 2, 3))
        return compress
    if kind == "aesthetic":
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
        cfg = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, patch_size=14)
        if tiny:
            cfg = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, patch_size=32)
        clip = CLIPVisionModelWithProjection(CLIPVisionConfig(image_size=224, projection_dim=768, hidden_act="quick_gelu", **cfg))
        width = 768
        mlp = torch.nn.Sequential(torch.nn.Linear(width, 1024), torch.nn.Dropout(0.2), torch.nn.Linear(1024, 128), torch.nn.Dropout(0.2), torch.nn.Linear(128, 64), torch.nn.Dropout(0.1), torch.nn.Linear(64, 16), torch.nn.Linear(16, 1))
        clip.to(device, dtype).requires_grad_(False).eval()
        mlp.to(device, dtype).requires_grad_(False).eval()

        def aesthetic(img):
            e = clip(pixel_values=clip_pixels(img)).image_embeds
            return mlp(e / e.norm(dim=-1, keepdim=True)).squeeze(1).float()
        return aesthetic
    import open_clip
    if tiny:
        cfg = dict(embed_dim=32, vision_cfg=dict(image_size=224, layers=2, width=32, patch_size=32, head_width=8), text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=4, layers=2))
        model = open_clip.CLIP(**cfg)
    else:
        model = open_clip.create_model("ViT-H-14", pretrained=None)
    model.to(device, dtype).requires_grad_(False).eval()
    ids = open_clip.get_tokenizer("ViT-H-14")(prompts).to(device)
    with torch.no_grad():
        text = model.encode_text(ids, normalize=True)

    def hps(img):
        image = model.encode_image(clip_pixels(img), normalize=True)
        return (image * text).sum(dim=1).float()
    return hps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="tiny", choices=["tiny", "sd15"])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--dtype", choices=["bf16", "fp32"], help="default: bf16 on cuda, fp32 on cpu")
    ap.add_argument("--what", default="all", choices=["sample", "train-step", "all"])
    ap.add_argument("--steps", type=int, help="DDIM steps (default: the preset's)")
    ap.add_argument("--batch", type=int, help="images per batch (default: the preset's)")
    ap.add_argument("--reward", default="compress", choices=["compress", "aesthetic", "hps"])
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    tiny = a.preset == "tiny"
    size, steps, batch = (64, 10, 2) if tiny else (512, 50, 1)
    steps, batch = a.steps or steps, a.batch or batch
    dname = a.dtype or ("bf16" if a.device == "cuda" else "fp32")
    dtype = torch.bfloat16 if dname == "bf16" else torch.float32
    dev = a.device
    pipe = build(a.preset, dev, dtype)
    unet, vae = pipe.unet, pipe.vae
    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(steps)
    sf = vae.config.scaling_factor
    prompts = [f"a photo of a cat number {i}" for i in range(batch)]
    with torch.no_grad():
        ids = pipe.tokenizer([""] * batch + prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids.to(dev)
        ctx = pipe.text_encoder(ids)[0]
    h = size // 8
    z = torch.randn(batch, 4, h, h, device=dev, dtype=dtype)
    res = {}
    record = {"impl": "pytorch", "preset": a.preset, "backend": dev, "dtype": dname, "threads": str(a.threads), "batch": batch, "size": size, "steps": steps, "results": res, "torch": torch.__version__}
    if dev == "cuda":
        record["gpu"] = torch.cuda.get_device_name()

    def put(name, value):
        res[name] = value
        print(name, json.dumps(value), file=sys.stderr, flush=True)
        if a.json:
            with open(a.json + ".tmp", "w") as f:
                f.write(json.dumps(record, indent=2, sort_keys=True))
            os.replace(a.json + ".tmp", a.json)

    def guided(model, x, t):
        out = model(torch.cat([x, x]), t, ctx).sample
        u, c = out.chunk(2)
        return u + 7.5 * (c - u)

    def sample():
        x = z
        for t in sched.timesteps:
            x = sched.step(guided(unet, x, t), t, x, eta=0.0).prev_sample
        return vae.decode(x / sf).sample

    if a.what != "train-step":
        with torch.no_grad():
            put("unet_forward", timed(a.reps, dev, lambda: unet(torch.cat([z, z]), torch.full((2 * batch,), 500, device=dev), ctx)))
            put("vae_decode", timed(a.reps, dev, lambda: vae.decode(z / sf).sample))
            put("sample", timed(min(a.reps, 3), dev, sample))
    if a.what == "sample":
        return finish(a, record)

    unet.requires_grad_(False)
    vae.requires_grad_(False)
    reward = make_reward(a.reward, tiny, prompts, dev, dtype)
    record["reward"] = a.reward
    record["gradient_checkpointing"] = a.gradient_checkpointing
    from torch.utils.checkpoint import checkpoint

    def segment(fn, x):
        return checkpoint(fn, x, use_reentrant=False) if a.gradient_checkpointing else fn(x)

    def make_step(rid):
        student = copy.deepcopy(unet)
        student.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
        params = [p for p in student.parameters() if p.requires_grad]
        teacher = copy.deepcopy(student) if rid else None
        opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)

        def step():
            with torch.no_grad():
                x = z
                for t in sched.timesteps[:-1]:
                    x = sched.step(guided(student, x, t), t, x, eta=0.0).prev_sample
            t = sched.timesteps[-1]
            z0 = segment(lambda x: sched.step(guided(student, x, t), t, x, eta=0.0).prev_sample, x)
            img = segment(lambda z0: (vae.decode(z0 / sf).sample / 2 + 0.5).clamp(0, 1), z0)
            r = segment(reward, img)
            loss = -r.mean()
            if rid:
                with torch.no_grad():
                    z0t = sched.step(guided(teacher, x, t), t, x, eta=0.0).prev_sample
                loss = loss + 0.1 * ((z0 - z0t) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            if rid:
                with torch.no_grad():
                    for pt, ps in zip([p for p in teacher.parameters() if p.requires_grad], params):
                        pt.mul_(0.99).add_(ps, alpha=0.01)

        return step

    # Both warmed up, then timed in turn (baseline, RID, baseline, ...) so that clock and
    # allocator drift hits both alike; the peak memory is that of both set-ups together.
    steps = {"train_step_baseline": make_step(False), "train_step_rid": make_step(True)}
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i, fn in enumerate(steps.values()):
        fn()
        sync(dev)
        age = since_process_start() if i == 0 else None
        if age is not None:
            put("first_train_step_since_start_s", age)
    ts = {name: [] for name in steps}
    for _ in range(min(a.reps, 3)):
        for name, fn in steps.items():
            s = time.perf_counter()
            fn()
            sync(dev)
            ts[name].append(time.perf_counter() - s)
    for name, t in ts.items():
        put(name, summary(t, dev))
    put("rid_over_baseline", res["train_step_rid"]["median_s"] / res["train_step_baseline"]["median_s"])
    finish(a, record)


def finish(a, record):
    print(json.dumps(record, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
