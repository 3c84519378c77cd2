#!/usr/bin/env python3
"""Reference-fixture generator for the `sd-model` crate (Burn port of Stable Diffusion 1.5).

What it produces (all under crates/sd-model/tests/fixtures/, about 5 MB in total):

  ../../../data/clip-tokenizer/ the real CLIP BPE tokenizer laid out as SD 1.5's tokenizer/ folder
                               (vocab.json, merges.txt, tokenizer_config.json,
                               special_tokens_map.json; no tokenizer.json), built from the
                               bpe_simple_vocab_16e6.txt.gz shipped inside open_clip_torch.
  tiny-sd/                     a tiny random diffusers StableDiffusionPipeline folder (fp32
                               safetensors): UNet (widths 8/16/32/32), AutoencoderKL (same
                               widths), CLIPTextModel (vocab 1000, hidden 24, 2 layers),
                               a 1000-token CLIP BPE tokenizer (first 486 real merges), and
                               DDIMScheduler with SD 1.5's schedule values.
  reference/tokenizer_ids.safetensors   ids [800,77] i64 of the real tokenizer on every
                               non-blank line of hpd_photo_train.txt then hpd_photo_eval.txt.
  reference/text_encoder.safetensors    tiny text encoder inputs/outputs.
  reference/unet.safetensors            tiny UNet inputs, outputs and input gradients.
  reference/vae.safetensors             tiny VAE encode/decode outputs and decode input gradient.
  reference/ddim.safetensors            DDIM schedule, timesteps and 10-step trajectories
                               (eta 0 / 0.5 / 1, epsilon and v-prediction).
  reference/pipeline.safetensors        end-to-end tiny pipeline run (10 DDIM steps, CFG 7.5).
  lora/                        (about 290 KB, written by tools/parity/make_lora_fixtures.py, which
                               main() below calls last) two peft LoRA adapters on the tiny UNet
                               saved with StableDiffusionPipeline.save_lora_weights exactly as
                               diffusers users save them (a_r4.safetensors: r 4, alpha 4, to_q/k/v/
                               out.0; b_r2_alpha8.safetensors: r 2, alpha 8, to_k/v), and
                               reference.safetensors: UNet outputs with a / b / a+b / none active,
                               the tiny pipeline with LoRA a, and one merged weight. See the header
                               of make_lora_fixtures.py.

The `rewards` crate's fixtures (crates/rewards/tests/fixtures/, about 2.8 MB: tiny HF CLIP and open_clip
weights, HPS_tiny.pt, torchvision Resize, AlignProp aesthetic, HPSv2 and kornia JPEG references) are
written by the separate script tools/parity/make_reward_fixtures.py (not called from main() below).

The `ril-metrics` crate's FID fixtures (crates/ril-metrics/tests/fixtures/fid.safetensors, about 0.38 MB:
pytorch-fid 0.3.0 InceptionV3 features with deterministic FNV-1a/splitmix64 "hash" weights that the
Rust tests regenerate, and Fréchet distances) and the key list tools/parity/fid_keys.txt are written
by the separate script tools/parity/make_fid_fixtures.py (not called from main() below either).

The `ril-metrics` crate's CLIP-score fixture (crates/ril-metrics/tests/fixtures/clipscore.safetensors,
about 3.5 MB: torchmetrics 1.9.0 CLIPScore with the tiny full CLIPModel of the rewards fixtures, the
CLIPImageProcessor/PIL bicubic preprocessing of uint8 images, embeddings and scores) is written by
tools/parity/make_clipscore_fixtures.py, which needs its OWN venv (transformers 4.57.6: torchmetrics'
CLIPScore breaks with transformers 5; pins in the "CLIP score" block of requirements.txt) and is not
called from main() below.

Tensor names, shapes and dtypes are printed when the script runs (see `describe` output) and are
documented next to each `save(...)` call below.

Reference versions (pinned in tools/parity/requirements.txt):
  torch 2.15.0, diffusers 0.42.1, transformers 5.24.0, safetensors 0.8.0, numpy 2.4.6,
  open_clip_torch 3.3.0, peft 0.21.2 (plus the transitive pins listed there).

How to rerun (from the repository root; CPU only, no network access to the HF hub is needed):

  python3 -m venv /tmp/parity-venv
  /tmp/parity-venv/bin/pip install -r tools/parity/requirements.txt
  /tmp/parity-venv/bin/python tools/parity/make_fixtures.py          # everything, lora/ included
  /tmp/parity-venv/bin/python tools/parity/make_lora_fixtures.py     # only lora/ (needs tiny-sd/ and
                                                                     # reference/ to exist)

The HPD prompt files are read from $SD_PROMPTS_DIR (default data/prompts of this repository; see
data/README.md). The script is deterministic (fixed torch.manual_seed before
every random draw, CPU, float32, one thread, safetensors written with a sorted header) and
regenerates every file byte-identically on the same platform; it takes well under a minute.
"""

import gzip
import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

import diffusers  # noqa: E402
import open_clip  # noqa: E402
import safetensors  # noqa: E402
import transformers  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    DDIMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.utils import logging as diffusers_logging  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "crates" / "sd-model" / "tests" / "fixtures"
PROMPTS_DIR = Path(os.environ.get("SD_PROMPTS_DIR", REPO_ROOT / "data" / "prompts"))
PROMPT_FILES = ["hpd_photo_train.txt", "hpd_photo_eval.txt"]

EXPECTED_VERSIONS = {
    "torch": "2.15.0",
    "diffusers": "0.42.1",
    "transformers": "5.24.0",
    "safetensors": "0.8.0",
    "numpy": "2.4.6",
}


def check_versions():
    got = {
        "torch": torch.__version__.split("+")[0],
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
    }
    bad = {k: (got[k], v) for k, v in EXPECTED_VERSIONS.items() if got[k] != v}
    if bad:
        print(f"WARNING: versions differ from the pinned ones (got, pinned): {bad}", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# Deterministic safetensors writer (header keys sorted, metadata sorted), readable by any
# safetensors loader. Layout follows the spec: u64 LE header size, JSON header padded with
# spaces to a multiple of 8, then the tensor bytes in header order.
# --------------------------------------------------------------------------------------------
_DTYPES = {
    torch.float32: "F32",
    torch.float64: "F64",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
}


def save(path: Path, tensors: dict, metadata: dict | None = None):
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        data = t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes()
        header[name] = {
            "dtype": _DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = {k: str(metadata[k]) for k in sorted(metadata)}
    hjson = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((8 - len(hjson) % 8) % 8)
    with open(path, "wb") as f:
        f.write(len(hjson).to_bytes(8, "little"))
        f.write(hjson)
        for b in blobs:
            f.write(b)
    # round-trip check through the official loader
    back = load_file(str(path))
    for name, t in tensors.items():
        assert torch.equal(back[name], t.detach().cpu()), name
    describe(path, tensors, metadata)


def describe(path: Path, tensors: dict, metadata: dict | None):
    print(f"== {path.relative_to(REPO_ROOT)} ({path.stat().st_size} bytes)")
    for name in sorted(tensors):
        t = tensors[name].detach()
        if t.is_floating_point():
            a = t.double().abs()
            extra = f"max|x|={a.max().item():.6g} mean|x|={a.mean().item():.6g}"
            assert torch.isfinite(t).all(), f"{name} has non-finite values"
        else:
            extra = f"min={t.min().item()} max={t.max().item()}"
        print(f"   {name:28s} {str(t.dtype):14s} {list(t.shape)}  {extra}")
    if metadata:
        for k in sorted(metadata):
            v = str(metadata[k])
            print(f"   meta {k} = {v if len(v) < 100 else v[:97] + '...'}")


# --------------------------------------------------------------------------------------------
# CLIP BPE tokenizer files
# --------------------------------------------------------------------------------------------
def bytes_to_unicode():
    """Same mapping as open_clip / openai CLIP / transformers' CLIPTokenizer."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def read_bpe_merges():
    gz = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(gz).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]  # exactly what open_clip / CLIP use: 48894 merges
    assert len(merges) == 48894, len(merges)
    return [tuple(m.split()) for m in merges]


BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _added(content):
    return {"content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}


def write_clip_tokenizer(folder: Path, merges):
    """vocab.json + merges.txt + configs exactly laid out like SD 1.5's tokenizer/ folder."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    base = list(bytes_to_unicode().values())
    vocab = base + [v + "</w>" for v in base]
    vocab += ["".join(m) for m in merges]
    vocab += [BOS, EOS]
    assert len(set(vocab)) == len(vocab)
    encoder = {tok: i for i, tok in enumerate(vocab)}
    with open(folder / "vocab.json", "w", encoding="utf-8") as f:
        f.write(json.dumps(encoder, ensure_ascii=False))
    with open(folder / "merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")
    special = {
        "bos_token": _added(BOS),
        "eos_token": _added(EOS),
        "pad_token": EOS,
        "unk_token": _added(EOS),
    }
    with open(folder / "special_tokens_map.json", "w", encoding="utf-8") as f:
        f.write(json.dumps(special, indent=2) + "\n")
    config = {
        "add_prefix_space": False,
        "bos_token": {"__type": "AddedToken", **_added(BOS)},
        "do_lower_case": True,
        "eos_token": {"__type": "AddedToken", **_added(EOS)},
        "errors": "replace",
        "model_max_length": 77,
        "name_or_path": "openai/clip-vit-large-patch14",
        "pad_token": EOS,
        "special_tokens_map_file": "./special_tokens_map.json",
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": {"__type": "AddedToken", **_added(EOS)},
    }
    with open(folder / "tokenizer_config.json", "w", encoding="utf-8") as f:
        f.write(json.dumps(config, indent=2) + "\n")
    return len(vocab)


def tokenize(tok, prompts):
    return torch.tensor(
        tok(prompts, padding="max_length", max_length=77, truncation=True).input_ids, dtype=torch.int64
    )


def read_prompts():
    prompts = []
    for name in PROMPT_FILES:
        with open(PROMPTS_DIR / name, encoding="utf-8") as f:
            for line in f.read().split("\n"):
                # strip the trailing newline only (split already did); skip blank lines
                if line.strip() == "":
                    continue
                prompts.append(line)
    return prompts


def make_clip_tokenizer(merges):
    folder = REPO_ROOT / "data" / "clip-tokenizer"
    n = write_clip_tokenizer(folder, merges)
    assert n == 49408
    tok = CLIPTokenizer.from_pretrained(str(folder))
    ids = tok("a photo of a cat", padding="max_length", max_length=77, truncation=True).input_ids
    assert ids[:7] == [49406, 320, 1125, 539, 320, 2368, 49407], ids[:10]
    assert ids[7:] == [49407] * 70
    prompts = read_prompts()
    assert len(prompts) == 800, len(prompts)
    ids = tokenize(tok, prompts)
    # cross-check against open_clip's own tokenizer (pads with 0 instead of <|endoftext|>)
    oc = open_clip.tokenizer.SimpleTokenizer()(prompts, context_length=77).to(torch.int64)
    for row, (a, b) in enumerate(zip(ids, oc)):
        n = int((b != 0).sum())
        assert torch.equal(a[:n], b[:n]) and (a[n:] == 49407).all(), (row, prompts[row])
    save(
        FIXTURES / "reference" / "tokenizer_ids.safetensors",
        {"ids": ids},
        {"sources": ",".join(PROMPT_FILES), "tokenizer_class": type(tok).__name__},
    )
    return type(tok).__name__


# --------------------------------------------------------------------------------------------
# Tiny random pipeline
# --------------------------------------------------------------------------------------------
def randomise(model: torch.nn.Module):
    """Norm layers: weight = 1 + 0.1 randn, bias = 0.1 randn; any other all-zero bias: 0.02 randn."""
    with torch.no_grad():
        done = set()
        for name, m in model.named_modules():
            if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
                if m.weight is not None:
                    m.weight.copy_(1.0 + 0.1 * torch.randn_like(m.weight))
                    done.add(f"{name}.weight")
                if m.bias is not None:
                    m.bias.copy_(0.1 * torch.randn_like(m.bias))
                    done.add(f"{name}.bias")
        for name, p in model.named_parameters():
            if name in done:
                continue
            if name.endswith("bias") and torch.count_nonzero(p) == 0:
                p.copy_(0.02 * torch.randn_like(p))
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                assert torch.count_nonzero(p) == p.numel(), f"zero entries left in {name}"
    return model.eval()


def tiny_unet():
    torch.manual_seed(1)
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(8, 16, 32, 32),
        layers_per_block=2,
        norm_num_groups=4,
        cross_attention_dim=24,
        attention_head_dim=8,
    )
    return randomise(unet)


def tiny_vae():
    torch.manual_seed(2)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 32, 32),
        layers_per_block=2,
        norm_num_groups=4,
        latent_channels=4,
        sample_size=32,
    )
    return randomise(vae)


TINY_BOS, TINY_EOS = 998, 999


def tiny_text_encoder():
    torch.manual_seed(3)
    cfg = CLIPTextConfig(
        vocab_size=1000,
        hidden_size=24,
        intermediate_size=40,
        projection_dim=24,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        bos_token_id=TINY_BOS,
        # legacy eos id (as in SD 1.5's config): transformers then pools at argmax(input_ids),
        # which is the first <|endoftext|> (999, the largest id) of each row.
        eos_token_id=2,
        pad_token_id=1,
    )
    return randomise(CLIPTextModel(cfg))


def tiny_scheduler(**overrides):
    kw = dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
        timestep_spacing="leading",
    )
    kw.update(overrides)
    return DDIMScheduler(**kw)


def make_tiny_sd(merges):
    out = FIXTURES / "tiny-sd"
    if out.exists():
        shutil.rmtree(out)
    tmp_tok = FIXTURES / ".tiny-tokenizer-tmp"
    n = write_clip_tokenizer(tmp_tok, merges[:486])
    assert n == 1000
    tokenizer = CLIPTokenizer.from_pretrained(str(tmp_tok))
    assert tokenizer.convert_tokens_to_ids([BOS, EOS]) == [TINY_BOS, TINY_EOS]

    unet, vae, te = tiny_unet(), tiny_vae(), tiny_text_encoder()
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=te,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=tiny_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(out), safe_serialization=True)
    # Replace whatever transformers wrote for the tokenizer (e.g. tokenizer.json) by the exact
    # SD 1.5-style slow-tokenizer layout.
    shutil.rmtree(out / "tokenizer")
    shutil.copytree(tmp_tok, out / "tokenizer")
    shutil.rmtree(tmp_tok)
    tok2 = CLIPTokenizer.from_pretrained(str(out / "tokenizer"))
    ids = tokenize(tok2, ["a photo of a cat", "A DOG  on the moon!"] + read_prompts())
    assert int(ids.max()) < 1000 and int(ids.min()) >= 0
    return unet, vae, te, tok2


# --------------------------------------------------------------------------------------------
# Reference tensors
# --------------------------------------------------------------------------------------------
def ref_text_encoder(te, tok):
    prompts = ["a photo of a cat", "A DOG  on the moon!"]
    ids = tokenize(tok, prompts)
    with torch.no_grad():
        o = te(input_ids=ids)
    save(
        FIXTURES / "reference" / "text_encoder.safetensors",
        {"input_ids": ids, "last_hidden_state": o.last_hidden_state, "pooler_output": o.pooler_output},
        {"prompts": json.dumps(prompts)},
    )


def ref_unet(unet):
    for p in unet.parameters():
        p.requires_grad_(False)
    torch.manual_seed(10)
    sample = torch.randn(2, 4, 16, 16)
    timestep = torch.tensor([981, 21], dtype=torch.int64)
    ehs = torch.randn(2, 77, 24)
    s = sample.clone().requires_grad_(True)
    e = ehs.clone().requires_grad_(True)
    out = unet(s, timestep, encoder_hidden_states=e).sample
    proj = torch.randn_like(out)
    (out * proj).sum().backward()
    save(
        FIXTURES / "reference" / "unet.safetensors",
        {
            "sample": sample,
            "timestep": timestep,
            "encoder_hidden_states": ehs,
            "out": out.detach(),
            "proj": proj,
            "grad_sample": s.grad,
            "grad_encoder_hidden_states": e.grad,
        },
    )


def ref_vae(vae):
    for p in vae.parameters():
        p.requires_grad_(False)
    torch.manual_seed(20)
    image = torch.rand(1, 3, 32, 32) * 2.0 - 1.0
    with torch.no_grad():
        dist = vae.encode(image).latent_dist
    latents = torch.randn(1, 4, 4, 4)
    lat = latents.clone().requires_grad_(True)
    decoded = vae.decode(lat).sample
    proj = torch.randn_like(decoded)
    (decoded * proj).sum().backward()
    save(
        FIXTURES / "reference" / "vae.safetensors",
        {
            "image": image,
            "mean": dist.mean,
            "logvar": dist.logvar,
            "latents": latents,
            "decoded": decoded.detach(),
            "proj": proj,
            "grad_latents": lat.grad,
        },
        {"scaling_factor": repr(float(vae.config.scaling_factor))},
    )


def ddim_trajectory(sched, x_t, eps, noise, eta, want_x0=False):
    sched.set_timesteps(10)
    xs, x0s = [x_t], []
    x = x_t
    for i, t in enumerate(sched.timesteps):
        kw = {"variance_noise": noise[i]} if eta > 0 else {}
        r = sched.step(eps[i], t, x, eta=eta, **kw)
        x = r.prev_sample
        xs.append(x)
        x0s.append(r.pred_original_sample)
    return torch.stack(xs), torch.stack(x0s)


def ref_ddim():
    sched = tiny_scheduler()
    sched.set_timesteps(50)
    t50 = sched.timesteps.clone().to(torch.int64)
    sched.set_timesteps(10)
    t10 = sched.timesteps.clone().to(torch.int64)
    torch.manual_seed(30)
    x_t = torch.randn(1, 4, 8, 8)
    eps = torch.randn(10, 1, 4, 8, 8)
    noise = torch.randn(10, 1, 4, 8, 8)
    traj0, x0_0 = ddim_trajectory(tiny_scheduler(), x_t, eps, noise, 0.0)
    traj1, _ = ddim_trajectory(tiny_scheduler(), x_t, eps, noise, 1.0)
    traj05, _ = ddim_trajectory(tiny_scheduler(), x_t, eps, noise, 0.5)
    trajv, _ = ddim_trajectory(tiny_scheduler(prediction_type="v_prediction"), x_t, eps, noise, 0.0)
    # the same schedule computed entirely in float64 (diffusers computes it in float32)
    betas64 = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    ac64 = torch.cumprod(1.0 - betas64, dim=0)
    save(
        FIXTURES / "reference" / "ddim.safetensors",
        {
            "alphas_cumprod": sched.alphas_cumprod.to(torch.float64),
            "alphas_cumprod_exact_f64": ac64,
            "timesteps_50": t50,
            "timesteps_10": t10,
            "x_T": x_t,
            "eps": eps,
            "noise": noise,
            "traj_eta0": traj0,
            "traj_eta1": traj1,
            "traj_eta05": traj05,
            "pred_x0_eta0": x0_0,
            "traj_v_eta0": trajv,
        },
        {
            "beta_schedule": "scaled_linear",
            "beta_start": "0.00085",
            "beta_end": "0.012",
            "steps_offset": "1",
            "set_alpha_to_one": "false",
            "timestep_spacing": "leading",
            "note": "alphas_cumprod = diffusers' float32 schedule widened to f64; "
            "alphas_cumprod_exact_f64 = same formula evaluated in f64",
        },
    )


def load_tiny_pipeline():
    pipe = StableDiffusionPipeline.from_pretrained(str(FIXTURES / "tiny-sd"), safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe.scheduler, DDIMScheduler), type(pipe.scheduler)
    assert pipe.unet.dtype == pipe.vae.dtype == pipe.text_encoder.dtype == torch.float32
    pipe.unet.eval(), pipe.vae.eval(), pipe.text_encoder.eval()
    return pipe


def ref_pipeline(pipe):
    prompts = ["a photo of a cat", "a red car"]
    negs = ["blurry", "blurry"]
    steps, guidance, eta, h, w = 10, 7.5, 0.0, 64, 64
    torch.manual_seed(40)
    latents = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        pos, neg = pipe.encode_prompt(prompts, "cpu", 1, True, negs)
        prompt_embeds = torch.cat([neg, pos])
        common = dict(
            prompt=prompts,
            negative_prompt=negs,
            height=h,
            width=w,
            num_inference_steps=steps,
            guidance_scale=guidance,
            eta=eta,
        )
        final = pipe(**common, latents=latents.clone(), output_type="latent").images
        sf = pipe.vae.config.scaling_factor
        image_raw = pipe.vae.decode(final / sf).sample
        image = pipe(**common, latents=latents.clone(), output_type="pt").images
    assert torch.allclose(image, (image_raw / 2 + 0.5).clamp(0, 1), atol=1e-6)
    save(
        FIXTURES / "reference" / "pipeline.safetensors",
        {
            "latents": latents,
            "prompt_embeds": prompt_embeds,
            "final_latents": final,
            "image_raw": image_raw,
            "image": image,
        },
        {
            "prompts": json.dumps(prompts),
            "negative_prompts": json.dumps(negs),
            "steps": json.dumps(steps),
            "guidance": json.dumps(guidance),
            "eta": json.dumps(eta),
            "height": json.dumps(h),
            "width": json.dumps(w),
            "scaling_factor": repr(float(sf)),
        },
    )


def main():
    check_versions()
    diffusers_logging.disable_progress_bar()
    FIXTURES.mkdir(parents=True, exist_ok=True)
    merges = read_bpe_merges()
    cls = make_clip_tokenizer(merges)
    print(f"tokenizer class returned by CLIPTokenizer.from_pretrained: {cls}")
    unet, vae, te, _ = make_tiny_sd(merges)
    # All references use the models loaded back from tiny-sd/, i.e. exactly what the Rust side loads.
    pipe = load_tiny_pipeline()
    for fresh, loaded in ((unet, pipe.unet), (vae, pipe.vae), (te, pipe.text_encoder)):
        a, b = fresh.state_dict(), loaded.state_dict()
        assert a.keys() == b.keys(), set(a.keys()) ^ set(b.keys())
        assert all(torch.equal(a[k], b[k]) for k in a)
    ref_text_encoder(pipe.text_encoder, pipe.tokenizer)
    ref_unet(pipe.unet)
    ref_vae(pipe.vae)
    ref_ddim()
    ref_pipeline(pipe)
    # LoRA fixtures (separate script; reads tiny-sd/ and reference/ written above)
    import make_lora_fixtures

    make_lora_fixtures.run()
    total = sum(p.stat().st_size for p in FIXTURES.rglob("*") if p.is_file())
    print(f"total fixture size: {total} bytes")


if __name__ == "__main__":
    main()
