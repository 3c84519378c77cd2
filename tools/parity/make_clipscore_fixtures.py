#!/usr/bin/env python3
"""Reference fixture for the CLIP score of the `ril-metrics` crate (torchmetrics 1.9.0
`torchmetrics.multimodal.clip_score.CLIPScore`), written next to make_fixtures.py /
make_reward_fixtures.py / make_fid_fixtures.py and in their style (same deterministic safetensors
writer, same portable seeded generator and Bundle, CPU, float32, one thread).

torchmetrics' CLIPScore does not work with transformers 5 (the pin of requirements.txt), so this
script runs in its OWN virtual environment with transformers 4.57.6 (pins: the "CLIP score"
block of tools/parity/requirements.txt):

  python3 -m venv /work/venv-tm
  /work/venv-tm/bin/pip install torch==2.15.0 torchvision==0.29.2 transformers==4.57.6 \\
      torchmetrics==1.9.0 safetensors==0.8.0 numpy==2.4.6 pillow==13.0.0
  HF_HUB_OFFLINE=1 /work/venv-tm/bin/python tools/parity/make_clipscore_fixtures.py

That venv has neither diffusers, open_clip nor kornia, which make_fixtures.py and
make_reward_fixtures.py import at module level. So the house helpers are not imported as modules:
their top-level definitions (make_fixtures: `_DTYPES`, `save`, `describe`; make_reward_fixtures:
`splitmix64`, `_check_generator`, `_u24`, `gen`, `stats`, `Bundle`, `_grid`, `TINY_TEXT`,
`TINY_VISION`, `CLIP_MEAN`, `CLIP_STD`) are compiled from the very source files with `ast`
(`_house` below), so the writer and the generator stay single-sourced. The writer's dtype table
gets one extra entry here, torch.uint8 -> "U8" (safetensors' name; the house table has no uint8).

Output: crates/ril-metrics/tests/fixtures/clipscore.safetensors (about 0.5 MB) and
clipscore_crop.safetensors (an odd crop margin, below; about 10 kB). The float32
pixel_values are kept at every 8th row and column (`pixel_values*_sub8`): the bit-level check of
the PIL path is `resized_u8` / `resized_big_u8`, stored whole, from which pixel_values follow by
crop, /255 and normalisation. Nothing else is written (the tiny model / processor live in memory only).

Model and processor
  model      transformers CLIPModel(CLIPConfig(text_config=TINY_TEXT, vision_config=TINY_VISION,
             projection_dim=768)) (the full openai/clip-vit-large-patch14 layout at tiny size:
             text vocab 1000 / hidden 24 / intermediate 40 / 2 layers / 4 heads / 77 positions /
             quick_gelu / eos_token_id 2 = legacy argmax pooling; vision hidden 32 / intermediate 37
             / 2 layers / 4 heads / image 224 / patch 32 / quick_gelu; projection_dim 768), eval
             mode, loaded with load_state_dict(strict=True) from
             crates/rewards/tests/fixtures/clip-full-tiny.safetensors (written by
             make_reward_fixtures.py under transformers 5). That file has no
             `*.embeddings.position_ids`: in 4.57.6 both CLIPTextEmbeddings and
             CLIPVisionEmbeddings register `position_ids` with persistent=False, so they are not
             state-dict keys and the strict load is exact (no missing / unexpected keys; checked).
  processor  CLIPProcessor(image_processor=CLIPImageProcessor(<openai/clip-vit-large-patch14's
             preprocessor_config.json values>), tokenizer=CLIPTokenizer.from_pretrained(
             crates/sd-model/tests/fixtures/tiny-sd/tokenizer)) (the slow, PIL-based image
             processor; vocab 1000, first 486 real CLIP merges; <|startoftext|> 998,
             <|endoftext|> 999 = eos = pad).
  metric     CLIPScore(model_name_or_path=<callable returning (model, processor)>): torchmetrics
             1.9.0 documents a callable as the way to bring one's own CLIP-compatible model and
             processor, so nothing is downloaded and no monkeypatching is needed.
             metric.update(images_u8, captions) with images as uint8 [N,3,H,W], as its users do.

Preprocessing chain (transformers 4.57.6 CLIPImageProcessor.preprocess, what torchmetrics feeds
it: `processor(images=[img.cpu() for img in images], return_tensors="pt", padding=True)`, one
uint8 torch tensor [3,H,W] per image):
  1. convert_to_rgb: a no-op for non-PIL inputs; to_numpy_array -> uint8 numpy [3,H,W];
     channel format inferred as channels-first.
  2. resize: output size for shortest_edge 224 (get_resize_output_image_size, default_to_square
     False): short = min(H,W) -> 224, long -> int(224 * long / short) (Python float, truncated):
     64x80 (HxW) -> 224x280, 300x260 -> 258x224 (224*300/260 = 258.46). image_transforms.resize
     converts to PIL with to_pil_image: the array is ALREADY uint8, so _rescale_for_pil_conversion
     is False, no *255 and no rounding step: the same uint8 values become an RGB PIL image (HWC).
     PIL Image.resize((W', H'), resample=BICUBIC (3), reducing_gap=None) on that uint8 image, i.e.
     Pillow's separable antialiased bicubic (a = -0.5; support scaled by the scale factor when
     downscaling) with its 8-bit fixed-point accumulation and clamp to [0,255]. Back to numpy
     uint8, transposed to [3,H',W'] (no rescale back since none was applied).
  3. center_crop 224x224 on the uint8 array: top = (H' - 224) // 2, left = (W' - 224) // 2
     (64x80: top 0, left 28; 300x260: top 17, left 0).
  4. rescale: f32(f64(u8) * 0.00392156862745098) (computed in float64, cast to float32).
  5. normalize in float32: (x - f32(mean_c)) / f32(std_c), CLIP mean/std.
  The script re-derives pixel_values by hand with PIL (fromarray -> resize(BICUBIC) -> crop ->
  rescale -> normalize) and asserts bit equality; `resized_u8` / `resized_big_u8` are that PIL
  resize output (uint8, before the crop).
  Text: `processor(text=captions, return_tensors="pt", padding=True)`: padded with 999 to the
  longest caption of the batch (no truncation needed, all < 77 tokens).

torchmetrics' reduction (torchmetrics/functional/multimodal/clip_score.py, multimodal/clip_score.py):
  image features = model.get_image_features(pixel_values), text features =
  model.get_text_features(input_ids, attention_mask); each L2-normalised (x / x.norm(dim=-1));
  per pair score = 100 * sum(img * txt, -1) (NOT clamped per pair); update accumulates
  score.sum(0) and n; compute returns max(sum / n, 0): the clamp is on the MEAN only.

Tensors of clipscore.safetensors (float32 unless marked):
  images_u8         u8 [3,3,64,80]   G uniform01 seed 701 mapped by floor(u * 256) (exact in f32:
                                     u = k * 2^-24, so floor(u*256) = u24 >> 16), stored
  images_u8_head    u8 [16], images_u8_stats f64 [3] (sum, sum|x|, sum x^2 of the u8 values)
  images_big_u8     u8 [2,3,300,260] G uniform01 seed 702, same mapping, NOT stored:
  images_big_u8_head u8 [16], images_big_u8_stats f64 [3]
  resized_u8        u8 [3,224,280]   PIL bicubic resize of images_u8[0] (before the crop)
  resized_big_u8    u8 [3,258,224]   PIL bicubic resize of images_big_u8[0]
  pixel_values      [3,3,224,224]    processor output for images_u8
  pixel_values_big  [2,3,224,224]    processor output for images_big_u8
  input_ids / attention_mask          i64 [3,L] (L = longest caption), processor output
  input_ids_big / attention_mask_big  i64 [2,L']
  image_embeds, text_embeds           [3,768]  get_*_features, L2-normalised
  image_embeds_big, text_embeds_big   [2,768]
  scores / scores_big                 [3] / [2]  100 * cos per pair (unclamped)
  clip_score / clip_score_big         [1]  CLIPScore().update(images, captions).compute(); both
                                     are 0.0: every cosine of the random tiny model is negative
                                     (scores -3.73 / -2.13 / -3.77, big -4.29 / -2.66), so the
                                     clamp bites
  clip_score_text_text                [1]  CLIPScore().update(captions, captions rolled by one)
                                     .compute() = mean_i 100 cos(text_embeds[i], text_embeds[i+1
                                     mod 3]) = 81.8 (text-vs-text mode; unclamped mean path)
Metadata: captions, captions_big (JSON lists), generated (generator specs; kind "uniform01_u8"),
resize / crop sizes and offsets, versions, the reduction, and notes with the numbers.

Tensors of clipscore_crop.safetensors: images_odd_u8 u8 [1,3,73,64] G uniform01 seed 703 (same
mapping, NOT stored; _head, _stats), resized by the processor to 255x224, a crop margin of 31:
CLIPImageProcessor's center_crop takes top = 31 // 2 = 15, where torchvision's CenterCrop would
take int(round(15.5)) = 16 (half to even); pixel_values_odd_sub8 [1,3,28,28]; scores_odd [1] for
captions_odd (metadata). notes: how far the half-to-even crop would be off.

Deterministic: rerunning rewrites clipscore.safetensors byte-identically.
"""

import ast
import json
import math
import os
import sys
import types
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

import PIL  # noqa: E402
import safetensors  # noqa: E402
import torchmetrics  # noqa: E402
import torchvision  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from torchmetrics.multimodal.clip_score import CLIPScore  # noqa: E402
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer  # noqa: E402

PARITY = Path(__file__).resolve().parent
REPO_ROOT = PARITY.parents[1]
sys.path.insert(0, str(PARITY))

EXPECTED = {
    "torch": "2.15.0",
    "torchvision": "0.29.2",
    "transformers": "4.57.6",
    "torchmetrics": "1.9.0",
    "safetensors": "0.8.0",
    "numpy": "2.4.6",
    "pillow": "13.0.0",
}


# --------------------------------------------------------------------------------------------
# House helpers, compiled from make_fixtures.py / make_reward_fixtures.py (see the docstring)
# --------------------------------------------------------------------------------------------
def _house(filename: str, names, ns: dict) -> dict:
    src = (PARITY / filename).read_text(encoding="utf-8")
    tree = ast.parse(src, filename=filename)
    picked = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in names:
            picked.append(node)
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id in names for t in node.targets):
            picked.append(node)
    found = {n.name if not isinstance(n, ast.Assign) else n.targets[0].id for n in picked}
    missing = set(names) - found
    assert not missing, f"{filename}: {missing}"
    exec(compile(ast.Module(body=picked, type_ignores=[]), str(PARITY / filename), "exec"), ns)
    return ns


_base = {"__builtins__": __builtins__, "json": json, "np": np, "torch": torch, "Path": Path,
         "load_file": load_file, "REPO_ROOT": REPO_ROOT, "sys": sys, "math": math, "os": os}
mf = types.SimpleNamespace(**_house("make_fixtures.py", ["_DTYPES", "save", "describe"], dict(_base)))
mf._DTYPES[torch.uint8] = "U8"  # the same dict object the compiled `save` reads
rf = types.SimpleNamespace(**_house(
    "make_reward_fixtures.py",
    ["_GAMMA", "_M1", "_M2", "splitmix64", "_check_generator", "_u24", "gen", "stats", "Bundle", "_grid",
     "TINY_VISION", "TINY_TEXT", "CLIP_MEAN", "CLIP_STD"],
    dict(_base, mf=mf),
))

FIX = REPO_ROOT / "crates" / "ril-metrics" / "tests" / "fixtures"
OUT = FIX / "clipscore.safetensors"
OUT_ODD = FIX / "clipscore_crop.safetensors"
CLIP_FULL = REPO_ROOT / "crates" / "rewards" / "tests" / "fixtures" / "clip-full-tiny.safetensors"
TOKENIZER_DIR = REPO_ROOT / "crates" / "sd-model" / "tests" / "fixtures" / "tiny-sd" / "tokenizer"

CAPTIONS = ["a red apple on a table", "a dog", "a photo of a small house near a lake"]
CAPTIONS_BIG = ["a cat", "snowy mountains at sunrise"]
CAPTIONS_ODD = ["a tall narrow window"]

# openai/clip-vit-large-patch14 preprocessor_config.json
PREPROCESSOR_CONFIG = dict(
    do_resize=True,
    size={"shortest_edge": 224},
    resample=3,  # PIL.Image.BICUBIC
    do_center_crop=True,
    crop_size={"height": 224, "width": 224},
    do_rescale=True,
    rescale_factor=0.00392156862745098,
    do_normalize=True,
    image_mean=[0.48145466, 0.4578275, 0.40821073],
    image_std=[0.26862954, 0.26130258, 0.27577711],
    do_convert_rgb=True,
)


def check_versions():
    got = {
        "torch": torch.__version__.split("+")[0],
        "torchvision": torchvision.__version__.split("+")[0],
        "transformers": transformers.__version__,
        "torchmetrics": torchmetrics.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
    }
    bad = {k: (got[k], v) for k, v in EXPECTED.items() if got[k] != v}
    if bad:
        print(f"WARNING: versions differ from the pinned ones (got, pinned): {bad}", file=sys.stderr)
    return got


# --------------------------------------------------------------------------------------------
# Model, processor, metric
# --------------------------------------------------------------------------------------------
def load_model():
    cfg = CLIPConfig(text_config=dict(rf.TINY_TEXT), vision_config=dict(rf.TINY_VISION), projection_dim=768)
    model = CLIPModel(cfg).eval()
    sd = load_file(str(CLIP_FULL))
    assert not any("position_ids" in k for k in sd)
    assert not any("position_ids" in k for k in model.state_dict()), "4.57.6: position_ids are non-persistent"
    assert any(k.endswith("position_ids") for k, _ in model.named_buffers())
    res = model.load_state_dict(sd, strict=True)
    assert not res.missing_keys and not res.unexpected_keys
    for p in model.parameters():
        p.requires_grad_(False)
    assert model.text_model.eos_token_id == 2 and model.config.text_config.hidden_act == "quick_gelu"
    return model


def load_processor():
    ip = CLIPImageProcessor(**PREPROCESSOR_CONFIG)
    assert ip.resample == Image.BICUBIC and ip.size == {"shortest_edge": 224}
    tok = CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR))
    assert len(tok) == 1000 and tok.pad_token_id == 999 and tok.eos_token_id == 999 and tok.bos_token_id == 998
    return CLIPProcessor(image_processor=ip, tokenizer=tok)


def gen_u8(b, name, seed, shape, store):
    u = rf.gen("uniform01", seed, shape)
    x = torch.floor(u * 256.0).to(torch.uint8)
    k = torch.from_numpy(rf._u24(seed, int(np.prod(shape))).reshape(shape) >> 16).to(torch.uint8)
    assert torch.equal(x, k)  # floor(u24 * 2^-24 * 256) = u24 >> 16, exactly
    b.generated[name] = {"kind": "uniform01_u8", "seed": seed, "shape": list(shape), "stored": store,
                         "rule": "u8 = floor(uniform01 * 256) = u24 >> 16 (row-major, one draw per element)"}
    b.add(f"{name}_head", x.reshape(-1)[:16].clone())
    b.add(f"{name}_stats", rf.stats(x))
    if store:
        b.add(name, x)
    return x


def pil_chain(img_u8: torch.Tensor):
    """Independent re-derivation of CLIPImageProcessor on one uint8 [3,H,W] image."""
    H, W = img_u8.shape[1:]
    short, long = (W, H) if W <= H else (H, W)
    new_long = int(224 * long / short)
    h2, w2 = (new_long, 224) if W <= H else (224, new_long)
    pil = Image.fromarray(img_u8.permute(1, 2, 0).contiguous().numpy(), mode="RGB")
    r = np.array(pil.resize((w2, h2), resample=Image.BICUBIC)).transpose(2, 0, 1)  # u8 [3,h2,w2]
    top, left = (h2 - 224) // 2, (w2 - 224) // 2
    c = r[:, top:top + 224, left:left + 224]
    x = (c.astype(np.float64) * 0.00392156862745098).astype(np.float32)
    mean = np.array(PREPROCESSOR_CONFIG["image_mean"], dtype=np.float32)[:, None, None]
    std = np.array(PREPROCESSOR_CONFIG["image_std"], dtype=np.float32)[:, None, None]
    x = (x - mean) / std
    return torch.from_numpy(np.ascontiguousarray(r)), torch.from_numpy(np.ascontiguousarray(x)), (h2, w2, top, left)


def reference_set(b, model, processor, images, captions, sfx):
    # exactly the calls torchmetrics' _get_features makes
    pimg = processor(images=[i.cpu() for i in images], return_tensors="pt", padding=True)
    ptxt = processor(text=captions, return_tensors="pt", padding=True)
    pv = pimg["pixel_values"]
    assert pv.dtype == torch.float32 and pv.shape == (len(images), 3, 224, 224)
    geo = None
    for i in range(len(images)):
        r, x, g = pil_chain(images[i])
        assert torch.equal(x, pv[i]), f"pixel_values{sfx}[{i}] differs from the PIL re-derivation"
        if i == 0:
            b.add(f"resized{sfx}_u8", r)
            geo = g
    with torch.no_grad():
        ie = model.get_image_features(pv)
        te = model.get_text_features(ptxt["input_ids"], ptxt["attention_mask"])
    ie = ie / ie.norm(p=2, dim=-1, keepdim=True)
    te = te / te.norm(p=2, dim=-1, keepdim=True)
    scores = 100 * (ie * te).sum(axis=-1)

    metric = CLIPScore(model_name_or_path=lambda: (model, processor))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric.update(images, captions)
        assert int(metric.n_samples) == len(images)
        assert torch.allclose(metric.score, scores.sum(), rtol=0, atol=1e-4), (metric.score, scores.sum())
        value = metric.compute()
    assert value.shape == () and torch.equal(value, torch.max(metric.score / metric.n_samples, torch.zeros(())))

    sfx2 = "_big" if sfx else ""
    # Every 8th row and column: the full tensor follows bit for bit from `resized*_u8` (crop, /255,
    # normalise), which is stored whole; this keeps the file small.
    b.add(f"pixel_values{sfx2}_sub8", pv[:, :, ::8, ::8].contiguous())
    b.add(f"input_ids{sfx2}", ptxt["input_ids"].to(torch.int64))
    b.add(f"attention_mask{sfx2}", ptxt["attention_mask"].to(torch.int64))
    b.add(f"image_embeds{sfx2}", ie)
    b.add(f"text_embeds{sfx2}", te)
    b.add(f"scores{sfx2}", scores)
    b.add(f"clip_score{sfx2}", value.reshape(1))
    H, W = images.shape[2:]
    h2, w2, top, left = geo
    return {"input_hw": [H, W], "resized_hw": [h2, w2], "crop_top_left": [top, left],
            "input_ids_len": ptxt["input_ids"].shape[1], "scores": [float(s) for s in scores],
            "mean": float(scores.mean()), "clip_score": float(value)}


def odd_margin_set(model, processor):
    """One image whose resized size leaves an odd crop margin 2k + 1 with k odd (73x64 -> 255x224,
    margin 31), where CLIPImageProcessor's `(H' - 224) // 2` (top 15) and torchvision's
    half-to-even `int(round(31 / 2.0))` (top 16) differ: pins which one the processor takes."""
    b = rf.Bundle()
    images = gen_u8(b, "images_odd_u8", 703, (1, 3, 73, 64), store=False)
    pimg = processor(images=[i.cpu() for i in images], return_tensors="pt", padding=True)
    ptxt = processor(text=CAPTIONS_ODD, return_tensors="pt", padding=True)
    pv = pimg["pixel_values"]
    r, x, (h2, w2, top, left) = pil_chain(images[0])
    assert (h2, w2, top, left) == (255, 224, 15, 0), (h2, w2, top, left)
    assert torch.equal(x, pv[0]), "pixel_values_odd differs from the PIL re-derivation (rounding down)"
    even = int(round((h2 - 224) / 2.0))
    assert even == 16
    mean = np.array(PREPROCESSOR_CONFIG["image_mean"], dtype=np.float32)[:, None, None]
    std = np.array(PREPROCESSOR_CONFIG["image_std"], dtype=np.float32)[:, None, None]
    x_even = ((r[:, even:even + 224, :].numpy().astype(np.float64) * 0.00392156862745098).astype(np.float32) - mean) / std
    diff_even = float(np.abs(x_even - pv[0].numpy()).max())
    assert diff_even > 0.1, diff_even  # the half-to-even crop is another image
    with torch.no_grad():
        ie = model.get_image_features(pv)
        te = model.get_text_features(ptxt["input_ids"], ptxt["attention_mask"])
        ie_even = model.get_image_features(torch.from_numpy(x_even)[None])
    ie, te = ie / ie.norm(p=2, dim=-1, keepdim=True), te / te.norm(p=2, dim=-1, keepdim=True)
    ie_even = ie_even / ie_even.norm(p=2, dim=-1, keepdim=True)
    scores = 100 * (ie * te).sum(axis=-1)
    scores_even = 100 * (ie_even * te).sum(axis=-1)
    metric = CLIPScore(model_name_or_path=lambda: (model, processor))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric.update(images, CAPTIONS_ODD)
        assert torch.allclose(metric.score, scores.sum(), rtol=0, atol=1e-4), (metric.score, scores.sum())
    b.add("pixel_values_odd_sub8", pv[:, :, ::8, ::8].contiguous())
    b.add("scores_odd", scores)
    notes = {"max_abs_diff_pixels_half_to_even_crop": diff_even,
             "score_half_to_even_crop_minus_reference": float((scores_even - scores).abs().max())}
    b.meta["captions_odd"] = json.dumps(CAPTIONS_ODD)
    b.meta["geometry"] = json.dumps({"input_hw": [73, 64], "resized_hw": [h2, w2], "crop_top_left": [top, left],
                                     "crop_top_left_half_to_even": [even, 0]}, sort_keys=True)
    b.meta["crop"] = ("transformers 4.57.6 image_transforms.center_crop: top = (H' - 224) // 2, left = "
                      "(W' - 224) // 2 (rounds down; torchvision's CenterCrop rounds half to even)")
    b.meta["preprocessor_config"] = json.dumps(PREPROCESSOR_CONFIG, sort_keys=True)
    b.meta["notes"] = json.dumps(notes, sort_keys=True)
    b.save(OUT_ODD)
    os.chmod(OUT_ODD, 0o644)
    print(f"odd margin: top {top} (half to even: {even}); scores_odd {scores.tolist()}; notes {notes}")
    print(f"{OUT_ODD.relative_to(REPO_ROOT)}: {OUT_ODD.stat().st_size} bytes")


def main():
    got = check_versions()
    rf._check_generator()
    model = load_model()
    processor = load_processor()

    b = rf.Bundle()
    images = gen_u8(b, "images_u8", 701, (3, 3, 64, 80), store=True)
    images_big = gen_u8(b, "images_big_u8", 702, (2, 3, 300, 260), store=False)
    small = reference_set(b, model, processor, images, CAPTIONS, "")
    big = reference_set(b, model, processor, images_big, CAPTIONS_BIG, "_big")

    # With the random tiny model every image/caption cosine is negative, so clip_score and
    # clip_score_big are clamped to 0. A text-vs-text CLIPScore (torchmetrics' same-modality mode)
    # on the stored captions keeps the unclamped mean path covered: source CAPTIONS, target
    # CAPTIONS rolled by one (pair i = (CAPTIONS[i], CAPTIONS[(i + 1) % 3])).
    rolled = CAPTIONS[1:] + CAPTIONS[:1]
    metric = CLIPScore(model_name_or_path=lambda: (model, processor))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric.update(CAPTIONS, rolled)
        tt = metric.compute()
    te = b.t["text_embeds"]
    want = (100 * (te * te.roll(-1, 0)).sum(-1)).mean()
    assert abs(float(tt) - float(want)) < 1e-4 and float(tt) > 0, (tt, want)
    b.add("clip_score_text_text", tt.reshape(1))

    b.meta["captions"] = json.dumps(CAPTIONS)
    b.meta["captions_big"] = json.dumps(CAPTIONS_BIG)
    b.meta["geometry"] = json.dumps({"small": {k: small[k] for k in ("input_hw", "resized_hw", "crop_top_left")},
                                     "big": {k: big[k] for k in ("input_hw", "resized_hw", "crop_top_left")}},
                                    sort_keys=True)
    b.meta["preprocessor_config"] = json.dumps(PREPROCESSOR_CONFIG, sort_keys=True)
    b.meta["versions"] = json.dumps(got, sort_keys=True)
    b.meta["model"] = ("transformers CLIPModel(CLIPConfig(text_config=TINY_TEXT, vision_config=TINY_VISION, "
                       "projection_dim=768)) <- crates/rewards/tests/fixtures/clip-full-tiny.safetensors (strict); "
                       "tokenizer crates/sd-model/tests/fixtures/tiny-sd/tokenizer")
    b.meta["reduction"] = ("per pair 100*sum(img/|img| * txt/|txt|) (unclamped); clip_score = "
                           "max(sum(scores)/n, 0) (torchmetrics 1.9.0 CLIPScore.compute)")
    b.meta["resize"] = ("uint8 -> PIL RGB (no rescale, no rounding), Image.resize((W',H'), BICUBIC, "
                        "reducing_gap=None); short side -> 224, long -> int(224*long/short); "
                        "center crop top=(H'-224)//2, left=(W'-224)//2; then f32(f64(u8)*(1/255)), "
                        "(x - mean)/std in f32")
    b.meta["notes"] = json.dumps({"small": small, "big": big}, sort_keys=True)
    b.save(OUT)
    os.chmod(OUT, 0o644)
    print(f"scores {small['scores']} mean {small['mean']} clip_score {small['clip_score']}")
    print(f"scores_big {big['scores']} mean {big['mean']} clip_score_big {big['clip_score']}")
    print(f"{OUT.relative_to(REPO_ROOT)}: {OUT.stat().st_size} bytes")
    odd_margin_set(model, processor)


if __name__ == "__main__":
    main()
