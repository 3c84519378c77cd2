#!/usr/bin/env python3
"""Reference fixtures for the `rewards` crate (differentiable reward models of AlignProp / HPSv2 / the
paper's JPEG compressibility), written next to make_fixtures.py and in its style (same deterministic
safetensors writer, same `randomise`, CPU, float32, one thread):

  /tmp/parity-venv/bin/python tools/parity/make_reward_fixtures.py

Everything goes to crates/rewards/tests/fixtures/ (about 2.8 MB, 2.36 MB of it weights; the real LAION aesthetic MLP is read
from $SD_WEIGHTS_DIR/sac+logos+ava1-l14-linearMSE.pth, default data/weights of this repository, where
it is committed; see data/README.md):

  clip-vision-tiny/            tiny transformers CLIPVisionModelWithProjection (hidden 32, 2 layers,
                               4 heads, intermediate 37, image 224, patch 32, projection_dim 768,
                               quick_gelu, eps 1e-5) written by save_pretrained(safe_serialization=True):
                               config.json + model.safetensors (keys `vision_model.*` and
                               `visual_projection.weight`; no position_ids).
  clip-full-tiny.safetensors   the same vision weights inside a full CLIPModel state dict (keys
                               `text_model.*`, `vision_model.*`, `visual_projection.weight`,
                               `text_projection.weight`, `logit_scale`), text tower vocab 1000,
                               hidden 24, intermediate 40, 2 layers, 4 heads, 77 positions.
  openclip-tiny.safetensors    tiny open_clip CLIP with the ViT-H-14 layout (exact GELU, embed 16,
                               vision width 32 / 2 layers / head_width 8 / patch 32 / 224, text width
                               24 / 4 heads / 2 layers / vocab 1000 / 77). Values are float16-exact.
  HPS_tiny.pt                  torch.save({"state_dict": <that model .half().state_dict()>, "epoch": 1})
                               in the default zip format, the layout of HPS_v2_compressed.pt.
  resize.safetensors           torchvision transforms.Resize(224) (bilinear, antialias=True) on tensors.
  clip_vision.safetensors      tiny CLIP image (and text) embeddings, input gradient.
  aesthetic.safetensors        AlignProp's aesthetic_loss_fn end to end (tiny CLIP + the real MLP), and
                               the real MLP alone (float32 and float64).
  crop.safetensors             the same on non-square images with torchvision's CenterCrop(224) after
                               the resize, each with an odd crop margin (Python's half-to-even round).
  openclip.safetensors         tiny open_clip encode_image / encode_text / HPSv2 score, input gradient.
  jpeg.safetensors             kornia 0.9.0 jpeg_codec_differentiable and the compressibility reward.

Size-driven conventions (the inputs at 224..512 pixels alone would be ~10 MB in float32):

  * Generated inputs. Large inputs and gradient projections are NOT stored: they come from a
    portable seeded generator that the Rust tests re-implement exactly (integer arithmetic plus
    exact float conversions, identical on every platform):
        splitmix64: state += 0x9E3779B97F4A7C15 (wrapping); z = state;
                    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9; z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
                    out = z ^ (z >> 31)      (u64, wrapping multiplies; initial state = seed)
        u24(out)  = out >> 40                (an integer in [0, 2^24))
        "uniform01":   x = f32(u24) * 2^-24                       one draw per element
        "uniform_sym": x = (f32(u24) * 2^-24 * 2 - 1) * f32(a)     one draw per element, each op in f32
        "normal":      x = f32(sum of 12 consecutive u24 - 6 * 2^24) * 2^-24   (Irwin-Hall, mean 0,
                        variance 1; the i64 -> f32 conversion rounds to nearest-even)
    Elements are filled in row-major (C) order, one fresh generator per tensor. For every generated
    tensor the file holds `<name>_head` (its first 16 values, f32) and `<name>_stats` (f64 [3]: sum,
    sum |x|, sum x^2 over the whole tensor) so that the Rust generator can be checked; the metadata
    entry `generated` lists {name: {kind, seed, shape[, a]}}. Small generated inputs are also stored
    in full under their own name.
  * Subsampled large outputs. A large output or gradient T [.., H, W] is stored as
    `<name>_sub` = T[..., rows, :][..., cols] with the index lists `<name>_rows`, `<name>_cols` (i64;
    every s-th index from 0 plus the last one; `subsampled` metadata gives s) and `<name>_stats`
    (f64 [3] over the FULL tensor as above). In Burn: t.select(2, rows).select(3, cols).

Tensors (float32 unless marked; G = generated, not stored (+ _head/_stats); S = subsampled (_sub,
_rows, _cols, _stats)):

  resize.safetensors     img_down G uniform01 [2,3,300,260] -> out_down S [2,3,258,224];
                         img_up G [1,3,64,64] -> out_up S [1,3,224,224]; img_sq G [1,3,512,512] ->
                         out_sq S [1,3,224,224]; proj_down / proj_sq G normal (output shapes);
                         grad_img_down S, grad_img_sq S.
  clip_vision.safetensors  pixel_values G normal [2,3,224,224]; image_embeds [2,768]; pooler_output
                         [2,32]; last_hidden_state [2,50,32]; proj [2,768] (also G); grad_pixel_values S;
                         text_input_ids i64 [2,77]; text_embeds [2,768].
  aesthetic.safetensors  images G uniform_sym(a=1.1) [2,3,64,64]; scores [2]; embed, embed_normed
                         [2,768]; grad_images S (of scores.sum()); embedding [3,768] (L2-normalised
                         G normal, stored); mlp_scores [3]; mlp_scores_f64 f64 [3].
  crop.safetensors       images_wide G uniform_sym(a=1.1) [1,3,384,640] (resized 224x373, left 74);
                         images_tall G uniform_sym(a=1.1) [1,3,73,64] (resized 255x224, top 16);
                         pixel_values_X S [1,3,224,224]; scores_X [1]; grad_images_X S.
  openclip.safetensors   pixel_values G normal [2,3,224,224]; text i64 [2,77]; image_features,
                         text_features, image_embeds_raw, text_embeds_raw [2,16]; hps [2];
                         grad_pixel_values S (of hps.sum()).
  jpeg.safetensors       img_a G uniform01 [2,3,32,48]; img_b G uniform01 [1,3,30,45]; out_a_q80,
                         out_a_q50, out_a_q30_90 [2,3,32,48]; out_b_q80 [1,3,30,45]; proj_a_q80,
                         proj_b_q80 G normal; grad_img_a_q80, grad_img_b_q80 (full); compress_a_q80 [2];
                         grad_compress_a_q80 [2,3,32,48]; table_qualities [4]; quality_scale [4];
                         qtable_y, qtable_c [4,8,8].

Numbers worth knowing (printed when the script runs): see the `notes` metadata of each file.

Reference versions: those of make_fixtures.py plus kornia 0.9.0 (kornia-rs 0.2.0) and torchvision
0.29.2 (tools/parity/requirements.txt). Deterministic: rerunning rewrites every file byte-identically.
"""

import copy
import json
import math
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import make_fixtures as mf  # noqa: E402  (sets the env vars, torch threads and determinism)
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.set_num_threads(1)

import kornia  # noqa: E402
import open_clip  # noqa: E402
import torchvision  # noqa: E402
from kornia.enhance import jpeg as kjpeg  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from torchvision import transforms as T  # noqa: E402
from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModelWithProjection  # noqa: E402

FIX = mf.REPO_ROOT / "crates" / "rewards" / "tests" / "fixtures"
WEIGHTS_DIR = Path(os.environ.get("SD_WEIGHTS_DIR", mf.REPO_ROOT / "data" / "weights"))
AESTHETIC_MLP = WEIGHTS_DIR / "sac+logos+ava1-l14-linearMSE.pth"

EXPECTED = {"kornia": "0.9.0", "torchvision": "0.29.2", "open_clip": "3.3.0"}

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

TINY_VISION = dict(
    hidden_size=32,
    intermediate_size=37,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=224,
    patch_size=32,
    projection_dim=768,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
)
TINY_TEXT = dict(
    vocab_size=1000,
    hidden_size=24,
    intermediate_size=40,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    projection_dim=768,
    bos_token_id=998,
    # legacy eos id, as in openai/clip-vit-large-patch14's config: transformers pools the text at
    # argmax(input_ids), i.e. the first <|endoftext|> (999 here, the largest id)
    eos_token_id=2,
    pad_token_id=1,
)
OPENCLIP_KW = dict(
    embed_dim=16,
    vision_cfg=dict(layers=2, width=32, head_width=8, mlp_ratio=4.0, patch_size=32, image_size=224),
    text_cfg=dict(context_length=77, vocab_size=1000, width=24, heads=4, layers=2),
    quick_gelu=False,
)
SOT, EOT = 998, 999


def check_versions():
    mf.check_versions()
    got = {"kornia": kornia.__version__, "torchvision": torchvision.__version__.split("+")[0],
           "open_clip": open_clip.__version__}
    bad = {k: (got[k], v) for k, v in EXPECTED.items() if got[k] != v}
    if bad:
        print(f"WARNING: versions differ from the pinned ones (got, pinned): {bad}", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# Portable seeded generator (see the module docstring) and the compact storage helpers
# --------------------------------------------------------------------------------------------
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def splitmix64(seed: int, n: int) -> np.ndarray:
    """The first n outputs of splitmix64 started at `seed` (state_i = seed + i * GAMMA, i = 1..n)."""
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + np.arange(1, n + 1, dtype=np.uint64) * _GAMMA
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def _check_generator():
    """splitmix64 is the standard one (seed 0 -> 0xE220A8397B1DCDAF, ...), and the vectorised numpy
    version equals a scalar one written the way the Rust side will write it."""
    assert [int(v) for v in splitmix64(0, 2)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4]
    mask = 2**64 - 1
    for seed in (1, 301, 2**63 + 5):
        state, outs = seed, []
        for _ in range(24):
            state = (state + 0x9E3779B97F4A7C15) & mask
            z = state
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
            outs.append(z ^ (z >> 31))
        assert outs == [int(v) for v in splitmix64(seed, 24)]
        u24 = [o >> 40 for o in outs]
        uni = [np.float32(u) * np.float32(2.0**-24) for u in u24]
        assert torch.equal(gen("uniform01", seed, (24,)), torch.tensor(uni, dtype=torch.float32))
        sym = [(np.float32(x) * np.float32(2.0) - np.float32(1.0)) * np.float32(1.1) for x in uni]
        assert torch.equal(gen("uniform_sym", seed, (24,), 1.1), torch.tensor(sym, dtype=torch.float32))
        nrm = [np.float32(sum(u24[12 * i : 12 * i + 12]) - 6 * 2**24) * np.float32(2.0**-24) for i in range(2)]
        assert torch.equal(gen("normal", seed, (2,)), torch.tensor(nrm, dtype=torch.float32))


def _u24(seed, n):
    return (splitmix64(seed, n) >> np.uint64(40)).astype(np.int64)


def gen(kind: str, seed: int, shape, a: float | None = None) -> torch.Tensor:
    n = int(np.prod(shape))
    two24 = np.float32(2.0**-24)
    if kind == "uniform01":
        x = _u24(seed, n).astype(np.float32) * two24
    elif kind == "uniform_sym":
        u = _u24(seed, n).astype(np.float32) * two24
        x = (u * np.float32(2.0) - np.float32(1.0)) * np.float32(a)
    elif kind == "normal":
        s = _u24(seed, 12 * n).reshape(n, 12).sum(axis=1) - 6 * 2**24
        x = s.astype(np.float32) * two24
    else:
        raise ValueError(kind)
    assert x.dtype == np.float32
    return torch.from_numpy(x.reshape(shape).copy())


def stats(t: torch.Tensor) -> torch.Tensor:
    d = t.detach().double()
    return torch.stack([d.sum(), d.abs().sum(), (d * d).sum()])


class Bundle:
    """Tensors + metadata of one fixture file."""

    def __init__(self):
        self.t = {}
        self.generated = {}
        self.subsampled = {}
        self.meta = {}

    def add(self, name, tensor):
        assert name not in self.t, name
        self.t[name] = tensor.detach().contiguous()

    def generated_input(self, name, kind, seed, shape, a=None, store=False):
        x = gen(kind, seed, shape, a)
        spec = {"kind": kind, "seed": seed, "shape": list(shape)}
        if a is not None:
            spec["a"] = a
        spec["stored"] = store
        self.generated[name] = spec
        self.add(f"{name}_head", x.reshape(-1)[:16].clone())
        self.add(f"{name}_stats", stats(x))
        if store:
            self.add(name, x)
        return x

    def big(self, name, tensor, step):
        """Store T[..., rows, :][..., cols] + index lists + full-tensor stats."""
        H, W = tensor.shape[-2:]
        rows = _grid(H, step)
        cols = _grid(W, step)
        sub = tensor.detach().index_select(-2, rows).index_select(-1, cols)
        self.add(f"{name}_sub", sub)
        self.add(f"{name}_rows", rows)
        self.add(f"{name}_cols", cols)
        self.add(f"{name}_stats", stats(tensor))
        self.subsampled[name] = {"shape": list(tensor.shape), "step": step, "sub_shape": list(sub.shape)}

    def save(self, path):
        meta = dict(self.meta)
        if self.generated:
            meta["generated"] = json.dumps(self.generated, sort_keys=True)
        if self.subsampled:
            meta["subsampled"] = json.dumps(self.subsampled, sort_keys=True)
        mf.save(path, self.t, meta)


def _grid(n, step):
    idx = list(range(0, n, step))
    if idx[-1] != n - 1:
        idx.append(n - 1)
    return torch.tensor(idx, dtype=torch.int64)


# --------------------------------------------------------------------------------------------
# 1. torchvision Resize(224)
# --------------------------------------------------------------------------------------------
def _aa_matrix(n_in, n_out):
    scale = n_in / n_out
    support, inv = (scale, 1.0 / scale) if scale >= 1 else (1.0, 1.0)
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        c = scale * (i + 0.5)
        lo, hi = max(int(c - support + 0.5), 0), min(int(c + support + 0.5), n_in)
        w = torch.tensor([max(0.0, 1.0 - abs((j - c + 0.5) * inv)) for j in range(lo, hi)], dtype=torch.float64)
        m[i, lo:hi] = w / w.sum()
    return m


def ref_resize():
    b = Bundle()
    resize = T.Resize(224)  # bilinear, antialias=True (torchvision >= 0.17 default), on tensors
    assert resize.antialias is True and resize.interpolation == T.InterpolationMode.BILINEAR
    cases = [
        # name, shape, seed, grad?, output subsample step, input-gradient subsample step
        ("down", (2, 3, 300, 260), 101, True, 9, 10),
        ("up", (1, 3, 64, 64), 111, False, 7, None),
        ("sq", (1, 3, 512, 512), 121, True, 7, 11),
    ]
    shapes = {}
    notes = {}
    for name, shape, seed, want_grad, step_out, step_in in cases:
        img = b.generated_input(f"img_{name}", "uniform01", seed, shape)
        x = img.clone().requires_grad_(want_grad)
        out = resize(x)
        # what torchvision does on tensors: F.interpolate(bilinear, align_corners=False, antialias=True)
        same = F.interpolate(img, size=list(out.shape[-2:]), mode="bilinear", align_corners=False, antialias=True)
        assert torch.equal(out.detach(), same), name
        plain = F.interpolate(img, size=list(out.shape[-2:]), mode="bilinear", align_corners=False, antialias=False)
        notes[f"max_abs_diff_vs_no_antialias_{name}"] = float((same - plain).abs().max())
        oh, ow = out.shape[-2:]
        by_hand = _aa_matrix(shape[-2], oh) @ img.double() @ _aa_matrix(shape[-1], ow).T
        notes[f"max_abs_diff_vs_f64_weights_{name}"] = float((by_hand - same.double()).abs().max())
        exact = F.interpolate(img.double(), size=[oh, ow], mode="bilinear", align_corners=False, antialias=True)
        assert (exact - by_hand).abs().max() < 1e-12  # the formula is torch's (in float64)
        shapes[f"out_{name}"] = list(out.shape)
        b.big(f"out_{name}", out, step_out)
        if want_grad:
            proj = b.generated_input(f"proj_{name}", "normal", seed + 1, tuple(out.shape))
            (out * proj).sum().backward()
            b.big(f"grad_img_{name}", x.grad, step_in)
    assert shapes == {"out_down": [2, 3, 258, 224], "out_up": [1, 3, 224, 224], "out_sq": [1, 3, 224, 224]}, shapes
    b.meta.update(
        {
            "transform": "torchvision.transforms.Resize(224) (interpolation bilinear, antialias=True) on float32 "
            "tensors == F.interpolate(x, size, mode='bilinear', align_corners=False, antialias=True); "
            "size: shorter side -> 224, longer side -> int(224 * long / short)",
            "aa_weights": "separable; per axis (in -> out), scale = in/out, support = scale if scale >= 1 else 1, "
            "inv = 1/scale if scale >= 1 else 1; output i: c = scale*(i+0.5), j from max(int(c-support+0.5),0) to "
            "min(int(c+support+0.5), in) (exclusive), w_j = max(0, 1-|(j-c+0.5)*inv|), normalised to sum 1 "
            "(== F.interpolate(antialias=True) on float64 inputs to 1e-12; torch's float32 kernel differs from these "
            "exact weights by up to notes.max_abs_diff_vs_f64_weights_*, as it uses a float32 scale)",
            "output_shapes": json.dumps(shapes, sort_keys=True),
            "gradients": "grad_img_X = d/d img_X of (out_X * proj_X).sum()",
            "notes": json.dumps(notes, sort_keys=True),
        }
    )
    b.save(FIX / "resize.safetensors")
    return notes


# --------------------------------------------------------------------------------------------
# 2. tiny transformers CLIP
# --------------------------------------------------------------------------------------------
def make_clip():
    torch.manual_seed(200)
    vision = mf.randomise(CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY_VISION)))
    emb = vision.vision_model.embeddings
    assert torch.count_nonzero(emb.class_embedding) == emb.class_embedding.numel()
    folder = FIX / "clip-vision-tiny"
    if folder.exists():
        shutil.rmtree(folder)
    vision.save_pretrained(str(folder), safe_serialization=True)
    for p in folder.iterdir():
        os.chmod(p, 0o644)  # save_pretrained writes model.safetensors with mode 0600

    torch.manual_seed(201)
    cfg = CLIPConfig(text_config=dict(TINY_TEXT), vision_config=dict(TINY_VISION), projection_dim=768)
    full = mf.randomise(CLIPModel(cfg))
    with torch.no_grad():
        full.vision_model.load_state_dict(vision.vision_model.state_dict())
        full.visual_projection.load_state_dict(vision.visual_projection.state_dict())
    sd = full.state_dict()
    mf.save(FIX / "clip-full-tiny.safetensors", sd, {"format": "pt"})
    return cfg


def load_clip(cfg):
    vision = CLIPVisionModelWithProjection.from_pretrained(str(FIX / "clip-vision-tiny")).eval()
    full = CLIPModel(cfg).eval()
    missing, unexpected = full.load_state_dict(load_file(str(FIX / "clip-full-tiny.safetensors")), strict=True)
    assert not missing and not unexpected
    for p in list(vision.parameters()) + list(full.parameters()):
        p.requires_grad_(False)
    vsd, fsd = vision.state_dict(), full.state_dict()
    for k, v in vsd.items():
        assert torch.equal(v, fsd[k]), k
    return vision, full


def tiny_text_ids():
    row0 = [SOT, 5, 17, 300, EOT]
    mid = (splitmix64(250, 30) % np.uint64(997)).astype(np.int64) + 1  # ids in [1, 997]
    row1 = [SOT] + [int(v) for v in mid] + [EOT]
    ids = torch.zeros(2, 77, dtype=torch.int64)
    ids[0, : len(row0)] = torch.tensor(row0)
    ids[1, : len(row1)] = torch.tensor(row1)
    return ids


def ref_clip_vision(vision, full):
    b = Bundle()
    pv = b.generated_input("pixel_values", "normal", 210, (2, 3, 224, 224))
    x = pv.clone().requires_grad_(True)
    out = vision(pixel_values=x)
    embeds = out.image_embeds
    proj = b.generated_input("proj", "normal", 211, (2, 768), store=True)
    (embeds * proj).sum().backward()
    with torch.no_grad():
        feats = full.get_image_features(pixel_values=pv)
        # transformers 5: get_image_features returns a BaseModelOutputWithPooling whose pooler_output
        # holds the projected embedding (transformers 4 returned the tensor itself)
        assert not isinstance(feats, torch.Tensor)
        assert torch.equal(feats.pooler_output, embeds.detach())
        ids = tiny_text_ids()
        text = full.get_text_features(input_ids=ids).pooler_output
        hidden = full.text_model(input_ids=ids).last_hidden_state
        eot = ids.argmax(-1)
        manual = full.text_projection(hidden[torch.arange(2), eot])
        assert torch.equal(manual, text)
    b.add("image_embeds", embeds)
    with torch.no_grad():
        pooled = vision.vision_model(pixel_values=pv).pooler_output
        assert torch.equal(pooled, vision.vision_model.post_layernorm(out.last_hidden_state[:, 0]))
    b.add("pooler_output", pooled)
    b.add("last_hidden_state", out.last_hidden_state)
    b.big("grad_pixel_values", x.grad, 7)
    b.add("text_input_ids", ids)
    b.add("text_embeds", text)
    b.meta.update(
        {
            "model": "clip-vision-tiny/ (== vision part of clip-full-tiny.safetensors)",
            "image_embeds": "CLIPVisionModelWithProjection(pixel_values).image_embeds == "
            "CLIPModel.get_image_features(pixel_values).pooler_output (unnormalised) [2,768]",
            "pooler_output": "post_layernorm(last_hidden_state[:, 0]) [2,32] (before visual_projection)",
            "last_hidden_state": "encoder output [2,50,32] (NOT post-layer-normed)",
            "grad_pixel_values": "d/d pixel_values of (image_embeds * proj).sum()",
            "text_embeds": "clip-full-tiny CLIPModel.get_text_features(text_input_ids).pooler_output [2,768]: "
            "text_projection(final_layer_norm(h)[argmax(ids)]) (eos_token_id 2 => argmax pooling)",
        }
    )
    b.save(FIX / "clip_vision.safetensors")


# --------------------------------------------------------------------------------------------
# 3. AlignProp aesthetic reward
# --------------------------------------------------------------------------------------------
class MLPDiff(torch.nn.Module):
    """AlignProp's aesthetic_scorer.MLPDiff (LAION improved-aesthetic-predictor without activations)."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(768, 1024),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(1024, 128),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(128, 64),
            torch.nn.Dropout(0.1),
            torch.nn.Linear(64, 16),
            torch.nn.Linear(16, 1),
        )

    def forward(self, embed):
        return self.layers(embed)


def load_mlp():
    sd = torch.load(str(AESTHETIC_MLP), map_location="cpu", weights_only=True)
    info = [(k, list(v.shape), str(v.dtype)) for k, v in sd.items()]
    print(f"   {AESTHETIC_MLP.name}: {info}")
    mlp = MLPDiff()
    mlp.load_state_dict(sd, strict=True)
    mlp.eval()
    for p in mlp.parameters():
        p.requires_grad_(False)
    return mlp, info


def ref_aesthetic(full):
    mlp, info = load_mlp()
    resize = T.Resize(224)
    normalize = T.Normalize(mean=CLIP_MEAN, std=CLIP_STD)

    def aesthetic(x):
        im = ((x / 2) + 0.5).clamp(0, 1)
        im = resize(im)
        im = normalize(im).to(x.dtype)
        embed = full.get_image_features(pixel_values=im).pooler_output
        normed = embed / torch.linalg.vector_norm(embed, dim=-1, keepdim=True)
        return mlp(normed).squeeze(1), embed, normed

    b = Bundle()
    images = b.generated_input("images", "uniform_sym", 301, (2, 3, 64, 64), a=1.1)
    x = images.clone().requires_grad_(True)
    scores, embed, normed = aesthetic(x)
    scores.sum().backward()
    b.add("scores", scores)
    b.add("embed", embed)
    b.add("embed_normed", normed)
    b.big("grad_images", x.grad, 3)
    clamped = int(((images / 2 + 0.5) < 0).sum() + ((images / 2 + 0.5) > 1).sum())

    emb = gen("normal", 310, (3, 768))
    emb = emb / torch.linalg.vector_norm(emb, dim=-1, keepdim=True)
    b.generated["embedding"] = {"kind": "normal", "seed": 310, "shape": [3, 768], "stored": True,
                                "then": "x / torch.linalg.vector_norm(x, dim=-1, keepdim=True) in f32"}
    b.add("embedding", emb)
    with torch.no_grad():
        s32 = mlp(emb).squeeze(1)
        mlp64 = copy.deepcopy(mlp).double()
        s64 = mlp64(emb.double()).squeeze(1)
    b.add("mlp_scores", s32)
    b.add("mlp_scores_f64", s64)
    print(f"   mlp_scores f32 - f64 = {(s32.double() - s64).abs().max().item():.3g}; clamped pixels {clamped}")
    b.meta.update(
        {
            "pipeline": "im = ((images / 2) + 0.5).clamp(0, 1); im = Resize(224)(im) (64 -> 224, bilinear, "
            "antialias=True); im = Normalize(mean=%s, std=%s)(im); embed = CLIPModel(clip-full-tiny)."
            "get_image_features(pixel_values=im).pooler_output; embed_normed = embed / "
            "torch.linalg.vector_norm(embed, dim=-1, keepdim=True); scores = mlp(embed_normed).squeeze(1)"
            % (CLIP_MEAN, CLIP_STD),
            "grad_images": "d/d images of scores.sum() (plain sum)",
            "mlp": f"real LAION MLP {AESTHETIC_MLP.name}: nn.Sequential(Linear(768,1024), Dropout(0.2), "
            "Linear(1024,128), Dropout(0.2), Linear(128,64), Dropout(0.1), Linear(64,16), Linear(16,1)) "
            "in eval mode, no activations",
            "mlp_keys": json.dumps(info),
            "mlp_scores": "mlp(embedding).squeeze(1) in float32; mlp_scores_f64: the same MLP and embedding "
            "widened to float64",
            "clamped_pixels": str(clamped),
        }
    )
    b.save(FIX / "aesthetic.safetensors")


# --------------------------------------------------------------------------------------------
# 3b. Non-square images: Resize(224) then CenterCrop(224), with an odd crop margin
# --------------------------------------------------------------------------------------------
def _crop_offsets(h, w, n=224):
    """(top, left) of torchvision's F.center_crop: int(round((size - n) / 2.0)), Python's round
    (half to even); and the two other roundings of an odd margin: half away from zero (a plain
    `f64::round`) and down (transformers' `(size - n) // 2`)."""
    even = (int(round((h - n) / 2.0)), int(round((w - n) / 2.0)))
    away = (int(math.floor((h - n) / 2.0 + 0.5)), int(math.floor((w - n) / 2.0 + 0.5)))
    down = ((h - n) // 2, (w - n) // 2)
    return even, away, down


def ref_crop(full):
    """The aesthetic reward of non-square images, cropped as torchvision's CenterCrop does. Both
    cases have an odd margin 2k + 1 after the resize: k even in "wide" (half to even gives k, half
    away from zero k + 1), k odd in "tall" (half to even gives k + 1, rounding down k), so together
    they tell half-to-even from both other roundings."""
    mlp, _ = load_mlp()
    resize, crop = T.Resize(224), T.CenterCrop(224)
    normalize = T.Normalize(mean=CLIP_MEAN, std=CLIP_STD)

    def pixels(x, offsets=None):
        im = resize(((x / 2) + 0.5).clamp(0, 1))
        if offsets is None:
            im = crop(im)
        else:
            im = im[..., offsets[0] : offsets[0] + 224, offsets[1] : offsets[1] + 224]
        return normalize(im).to(x.dtype)

    def score(px):
        embed = full.get_image_features(pixel_values=px).pooler_output
        return mlp(embed / torch.linalg.vector_norm(embed, dim=-1, keepdim=True)).squeeze(1)

    b = Bundle()
    notes, offsets = {}, {}
    cases = [
        # name, shape, seed, resized size, pixel subsample step, input-gradient subsample step
        ("wide", (1, 3, 384, 640), 320, [224, 373], 11, 16),  # margin 149: left 74 (away: 75)
        ("tall", (1, 3, 73, 64), 321, [255, 224], 11, 3),  # margin 31: top 16 (down: 15)
    ]
    told_apart = set()
    for name, shape, seed, resized, step_px, step_grad in cases:
        images = b.generated_input(f"images_{name}", "uniform_sym", seed, shape, a=1.1)
        assert list(resize(images).shape[-2:]) == resized, name
        even, away, down = _crop_offsets(*resized)
        told_apart |= {k for k, o in (("away", away), ("down", down)) if o != even}
        offsets[name] = {"resized": resized, "top_left": list(even), "top_left_half_away": list(away),
                         "top_left_down": list(down)}
        x = images.clone().requires_grad_(True)
        px = pixels(x)
        assert torch.equal(px.detach(), pixels(images, even)), name  # CenterCrop took `even`
        s = score(px)
        s.sum().backward()
        b.big(f"pixel_values_{name}", px, step_px)
        b.add(f"scores_{name}", s)
        b.big(f"grad_images_{name}", x.grad, step_grad)
        for other, o in (("half_away", away), ("down", down)):
            if o != even:
                with torch.no_grad():
                    px_o = pixels(images, o)
                    notes[f"max_abs_diff_score_{other}_{name}"] = float((score(px_o) - s).abs().max())
                notes[f"max_abs_diff_pixels_{other}_{name}"] = float((px_o - px.detach()).abs().max())
    assert told_apart == {"away", "down"}, told_apart
    print(f"   crop: {notes}")
    b.meta.update(
        {
            "pipeline": "im = ((images / 2) + 0.5).clamp(0, 1); im = Resize(224)(im) (bilinear, antialias=True); "
            "im = CenterCrop(224)(im); pixel_values = Normalize(mean=%s, std=%s)(im); embed = "
            "CLIPModel(clip-full-tiny).get_image_features(pixel_values).pooler_output; scores = "
            "mlp(embed / ||embed||).squeeze(1) with the real LAION MLP (as aesthetic.safetensors, plus the crop)"
            % (CLIP_MEAN, CLIP_STD),
            "crop": "torchvision F.center_crop: top = int(round((h - 224) / 2.0)), left likewise (Python round, "
            "half to even); offsets: " + json.dumps(offsets, sort_keys=True),
            "grad_images": "d/d images_X of scores_X.sum() (plain sum)",
            "notes": json.dumps(notes, sort_keys=True),
        }
    )
    b.save(FIX / "crop.safetensors")


# --------------------------------------------------------------------------------------------
# 4. open_clip (HPSv2 family)
# --------------------------------------------------------------------------------------------
def make_openclip():
    torch.manual_seed(400)
    model = open_clip.model.CLIP(**OPENCLIP_KW)
    mf.randomise(model)
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.copy_(p.half().float())  # float16-exact, so the f32 and f16 files hold the same values
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                assert torch.count_nonzero(p) == p.numel(), name
    sd = model.state_dict()
    assert "attn_mask" not in sd  # a non-persistent buffer in open_clip 3.x
    mf.save(FIX / "openclip-tiny.safetensors", sd, {"format": "pt"})
    half_sd = copy.deepcopy(model).half().state_dict()  # OrderedDict with its `_metadata` attribute
    path = FIX / "HPS_tiny.pt"
    torch.save({"state_dict": half_sd, "epoch": 1}, str(path))
    print(f"== {path.relative_to(mf.REPO_ROOT)} ({path.stat().st_size} bytes)")


def load_openclip():
    a = open_clip.model.CLIP(**OPENCLIP_KW)
    a.load_state_dict(load_file(str(FIX / "openclip-tiny.safetensors")), strict=True)
    b = open_clip.model.CLIP(**OPENCLIP_KW)
    ck = torch.load(str(FIX / "HPS_tiny.pt"), map_location="cpu", weights_only=True)
    assert set(ck) == {"state_dict", "epoch"} and ck["epoch"] == 1
    assert all(v.dtype == torch.float16 for v in ck["state_dict"].values())
    b.load_state_dict(ck["state_dict"], strict=True)
    for k, v in a.state_dict().items():
        assert v.dtype == torch.float32 and torch.equal(v, b.state_dict()[k]), k
    a.eval()
    for p in a.parameters():
        p.requires_grad_(False)
    return a


def ref_openclip(model):
    b = Bundle()
    pv = b.generated_input("pixel_values", "normal", 410, (2, 3, 224, 224))
    ids = tiny_text_ids()
    x = pv.clone().requires_grad_(True)
    image_features = model.encode_image(x, normalize=True)
    text_features = model.encode_text(ids, normalize=True)
    logits_per_image = image_features @ text_features.T
    hps = torch.diagonal(logits_per_image)
    hps.sum().backward()
    with torch.no_grad():
        img_raw = model.encode_image(pv)
        txt_raw = model.encode_text(ids)
        # open_clip pools the text at text.argmax(-1) (text_pool_type 'argmax'): the EOT token
        assert model.text_pool_type == "argmax"
        assert torch.allclose(F.normalize(img_raw, dim=-1), image_features, atol=1e-6)
        out = model(pv, ids)
        img_f, txt_f = (out["image_features"], out["text_features"]) if isinstance(out, dict) else out[:2]
        # (the no_grad forward takes other CPU attention kernels: equal up to ~1e-7, not bitwise)
        assert torch.allclose(img_f, image_features, atol=1e-6) and torch.allclose(txt_f, text_features, atol=1e-6)
    b.add("text", ids)
    b.add("image_features", image_features)
    b.add("text_features", text_features)
    b.add("image_embeds_raw", img_raw)
    b.add("text_embeds_raw", txt_raw)
    b.add("hps", hps)
    b.big("grad_pixel_values", x.grad, 7)
    b.meta.update(
        {
            "model": "openclip-tiny.safetensors (== HPS_tiny.pt state_dict, float16 there)",
            "text": f"token ids, sot={SOT}, eot={EOT}, zero padding after eot (open_clip convention)",
            "image_features": "model.encode_image(pixel_values, normalize=True) [2,16] (F.normalize, eps 1e-12)",
            "text_features": "model.encode_text(text, normalize=True) [2,16]; pooled at text.argmax(-1)",
            "raw": "image_embeds_raw / text_embeds_raw: the same without normalize",
            "hps": "torch.diagonal(image_features @ text_features.T) (HPSv2 score, no logit scale)",
            "grad_pixel_values": "d/d pixel_values of hps.sum()",
        }
    )
    b.save(FIX / "openclip.safetensors")


# --------------------------------------------------------------------------------------------
# 5. kornia differentiable JPEG
# --------------------------------------------------------------------------------------------
class RoundingProbe:
    """Records how close the quantised DCT coefficients come to the rounding discontinuity (x.5)."""

    def __init__(self):
        self.orig = kjpeg._differentiable_polynomial_rounding
        self.min_dist = math.inf

    def __enter__(self):
        def probe(inp):
            f = inp.detach().double()
            self.min_dist = min(self.min_dist, float(((f - f.floor()) - 0.5).abs().min()))
            return self.orig(inp)

        kjpeg._differentiable_polynomial_rounding = probe
        return self

    def __exit__(self, *a):
        kjpeg._differentiable_polynomial_rounding = self.orig


def jpeg_tables(qualities):
    q = torch.tensor(qualities, dtype=torch.float32)
    scale = kjpeg._jpeg_quality_to_scale(q)
    out = []
    for table in (kjpeg._get_default_qt_y("cpu", torch.float32), kjpeg._get_default_qt_c("cpu", torch.float32)):
        scaled = table[None] * scale[:, None, None]
        out.append(
            kjpeg._differentiable_polynomial_floor(
                kjpeg._differentiable_clipping((scaled + 50.0) / 100.0, 1, 255)
            )
        )
    return scale, out[0], out[1]


def jpeg_reimpl(img, quality):
    """Independent re-implementation of kornia 0.9.0's codec as described in the report (a check of
    the description, not a reference)."""
    img = img.double()
    B, _, H, W = img.shape
    hp, wp = (-H) % 16, (-W) % 16
    x = F.pad(img, (0, wp, 0, hp), mode="replicate")
    Hp, Wp = H + hp, W + wp
    r, g, bl = x[:, 0], x[:, 1], x[:, 2]
    y = 0.299 * r + 0.587 * g + 0.114 * bl
    cb = (bl - y) * 0.564 + 0.5
    cr = (r - y) * 0.713 + 0.5
    y, cb, cr = 255 * y, 255 * cb, 255 * cr
    k = torch.tensor([math.exp(-2.0), 1.0, math.exp(-2.0)], dtype=torch.float64)
    k = k / k.sum()

    def sub(c):  # gaussian 3x3 (sigma 0.5, reflect padding) then 2x2 mean
        p = F.pad(c[:, None], (1, 1, 0, 0), mode="reflect")[:, 0]
        c = k[0] * p[..., :-2] + k[1] * p[..., 1:-1] + k[2] * p[..., 2:]
        p = F.pad(c[:, None], (0, 0, 1, 1), mode="reflect")[:, 0]
        c = k[0] * p[:, :-2] + k[1] * p[:, 1:-1] + k[2] * p[:, 2:]
        return c.reshape(B, Hp // 2, 2, Wp // 2, 2).mean(dim=(2, 4))

    q = torch.as_tensor(quality, dtype=torch.float64).reshape(-1)
    q = torch.where(q == 0, torch.ones_like(q), q)
    s = torch.where(q < 50, 5000.0 / q, 200.0 - 2.0 * q)
    pfloor = lambda v: v.floor() + (v - 0.5 - v.floor()) ** 3  # noqa: E731
    pround = lambda v: v.round() + (v - v.round()) ** 3  # noqa: E731

    def softclip(v, lo, hi):
        v = torch.where(v > hi, hi + 0.02 * (1 - torch.exp(-(v - hi))), v)
        return torch.where(v < lo, lo + 0.02 * (torch.exp(v - lo) - 1), v)

    s = pfloor(s)
    n = torch.arange(8, dtype=torch.float64)
    basis = torch.cos((2 * n[:, None] + 1) * n[None, :] * math.pi / 16)  # [spatial, freq]
    alpha = torch.ones(8, dtype=torch.float64)
    alpha[0] = 1 / math.sqrt(2)
    aa = alpha[:, None] * alpha[None, :]

    def codec(plane, table):
        bsz, h, w = plane.shape
        blocks = plane.reshape(bsz, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4)
        d = 0.25 * aa * torch.einsum("bijxy,xu,yv->bijuv", blocks - 128, basis, basis)
        tq = pfloor(softclip((table.double()[None] * s.reshape(-1, 1, 1) + 50) / 100, 1, 255))
        tq = tq[:, None, None]
        c = pround(d / tq) * tq
        p = 0.25 * torch.einsum("bijuv,xu,yv->bijxy", c * aa, basis, basis) + 128
        return p.permute(0, 1, 3, 2, 4).reshape(bsz, h, w)

    def up(c):  # bilinear x2, align_corners=False, edge-clamped
        def up1(c, dim):
            n = c.shape[dim]
            prev = torch.cat([c.narrow(dim, 0, 1), c.narrow(dim, 0, n - 1)], dim)
            nxt = torch.cat([c.narrow(dim, 1, n - 1), c.narrow(dim, n - 1, 1)], dim)
            even = 0.25 * prev + 0.75 * c
            odd = 0.75 * c + 0.25 * nxt
            return torch.stack([even, odd], dim + 1).flatten(dim, dim + 1)

        return up1(up1(c, 1), 2)

    qy = kjpeg._get_default_qt_y("cpu", torch.float64)
    qc = kjpeg._get_default_qt_c("cpu", torch.float64)
    y = codec(y, qy)
    cb = up(codec(sub(cb), qc))
    cr = up(codec(sub(cr), qc))
    y, cb, cr = y / 255, cb / 255 - 0.5, cr / 255 - 0.5
    rgb = torch.stack(
        [y + 1.4025245442 * cr, y - 0.7144034731 * cr - 0.3443401356 * cb, y + 1.7730496454 * cb], 1
    ).clamp(0, 1)
    return rgb[..., :H, :W]


def ref_jpeg():
    jpeg = kornia.enhance.jpeg_codec_differentiable
    b = Bundle()
    notes = {}
    img_a = b.generated_input("img_a", "uniform01", 501, (2, 3, 32, 48))
    img_b = b.generated_input("img_b", "uniform01", 511, (1, 3, 30, 45))
    q80 = torch.tensor([80.0])

    def run(name, img, q, proj_seed=None):
        x = img.clone().requires_grad_(proj_seed is not None)
        with RoundingProbe() as probe:
            out = jpeg(x, q)
        notes[f"min_dist_to_rounding_tie_{name}"] = probe.min_dist
        ref = jpeg_reimpl(img, q)
        notes[f"max_abs_diff_f64_reimpl_{name}"] = float((ref - out.detach().double()).abs().max())
        b.add(f"out_{name}", out)
        if proj_seed is not None:
            proj = b.generated_input(f"proj_{name}", "normal", proj_seed, tuple(out.shape))
            (out * proj).sum().backward()
            b.add(f"grad_img_{name}", x.grad)
        return out

    out_a_q80 = run("a_q80", img_a, q80, 502)
    run("a_q50", img_a, torch.tensor([50.0]))
    run("a_q30_90", img_a, torch.tensor([30.0, 90.0]))
    run("b_q80", img_b, q80, 512)
    # per-sample qualities give each image the result of coding it alone at its own quality
    o30 = jpeg(img_a[:1], torch.tensor([30.0]))
    o90 = jpeg(img_a[1:], torch.tensor([90.0]))
    notes["max_abs_diff_per_sample_vs_separate_q30_90"] = float((torch.cat([o30, o90]) - b.t["out_a_q30_90"]).abs().max())
    assert notes["max_abs_diff_per_sample_vs_separate_q30_90"] < 1e-5

    x = img_a.clone().requires_grad_(True)
    compress = -((x - jpeg(x, q80)) ** 2).mean(dim=(1, 2, 3))
    compress.sum().backward()
    notes["max_abs_diff_no_grad_vs_grad_a_q80"] = float((jpeg(img_a, q80) - out_a_q80.detach()).abs().max())
    b.add("compress_a_q80", compress)
    b.add("grad_compress_a_q80", x.grad)

    qualities = [80.0, 50.0, 30.0, 90.0]
    scale, ty, tc = jpeg_tables(qualities)
    b.add("table_qualities", torch.tensor(qualities))
    b.add("quality_scale", scale)
    b.add("qtable_y", ty)
    b.add("qtable_c", tc)
    dist = lambda v: float(((v - v.floor()) - 0.5).abs().min())  # noqa: E731
    pre = [((t[None] * scale[:, None, None]) + 50.0) / 100.0 for t in (
        kjpeg._get_default_qt_y("cpu", torch.float32), kjpeg._get_default_qt_c("cpu", torch.float32))]
    notes["table_prefloor_min_dist_to_integer"] = min(0.5 - dist(p) for p in pre)
    for k in sorted(notes):
        print(f"   {k} = {notes[k]:.3g}")
    b.meta.update(
        {
            "function": "kornia 0.9.0 kornia.enhance.jpeg_codec_differentiable(image, jpeg_quality) with the "
            "default quantization tables; jpeg_quality a float32 tensor of shape [1] (shared) or [B]",
            "cases": json.dumps(
                {
                    "out_a_q80": "img_a, quality [80.]",
                    "out_a_q50": "img_a, quality [50.]",
                    "out_a_q30_90": "img_a, quality [30., 90.] (per sample)",
                    "out_b_q80": "img_b [1,3,30,45] (padded to 32x48 inside, cropped back), quality [80.]",
                }
            ),
            "gradients": "grad_img_X = d/d img of (out_X * proj_X).sum()",
            "compress_a_q80": "-((img_a - jpeg(img_a, [80.]))**2).mean(dim=(1,2,3)) [2]; grad_compress_a_q80 = "
            "d/d img_a of compress_a_q80.sum() (through both terms)",
            "tables": "quality_scale[i] = polyfloor(5000/q if q < 50 else 200 - 2q) for q = table_qualities[i]; "
            "qtable_y/c[i] = polyfloor(softclip((QT * quality_scale[i] + 50) / 100, 1, 255)) (the divisors "
            "actually used), polyfloor(v) = floor(v) + (v - 0.5 - floor(v))**3",
            "notes": json.dumps(notes, sort_keys=True),
        }
    )
    b.save(FIX / "jpeg.safetensors")
    return notes


# --------------------------------------------------------------------------------------------
def list_keys(path):
    with safe_open(str(path), framework="pt") as f:
        keys = sorted(f.keys())
        shapes = {k: list(f.get_slice(k).get_shape()) for k in keys}
        meta = f.metadata()
    print(f"   {path.relative_to(mf.REPO_ROOT)}: {len(keys)} keys, metadata {meta}")
    for k in keys:
        print(f"      {k} {shapes[k]}")
    return keys


def compare_with_manifest(keys, manifest, n_layers):
    """The tiny key set == the real key set restricted to the first n_layers layers."""
    path = Path(os.environ.get("SD_MANIFESTS_DIR", mf.REPO_ROOT / "data" / "manifests")) / manifest
    if not path.exists():
        print(f"   ({path} not found: manifest comparison skipped)")
        return
    real = json.loads(path.read_text())
    import re

    def keep(k):
        m = re.search(r"\.(layers|resblocks)\.(\d+)\.", k)
        return m is None or int(m.group(2)) < n_layers

    want = {k for k in real if keep(k)}
    got = set(keys)
    print(f"   vs {manifest}: missing {sorted(want - got)}, extra {sorted(got - want)}")


def main():
    check_versions()
    _check_generator()
    if FIX.exists():
        shutil.rmtree(FIX)
    FIX.mkdir(parents=True)

    ref_resize()

    cfg = make_clip()
    vision, full = load_clip(cfg)
    ref_clip_vision(vision, full)
    ref_aesthetic(full)
    ref_crop(full)

    make_openclip()
    ref_openclip(load_openclip())

    ref_jpeg()

    print("== weight files")
    vkeys = list_keys(FIX / "clip-vision-tiny" / "model.safetensors")
    fkeys = list_keys(FIX / "clip-full-tiny.safetensors")
    okeys = list_keys(FIX / "openclip-tiny.safetensors")
    compare_with_manifest(fkeys, "hfclip_real.json", 2)
    compare_with_manifest(okeys, "openclip_real.json", 2)
    assert set(vkeys) <= set(fkeys)
    total = 0
    for p in sorted(FIX.rglob("*")):
        if p.is_file():
            total += p.stat().st_size
            print(f"   {p.stat().st_size:9d}  {p.relative_to(FIX)}")
    print(f"total reward fixture size: {total} bytes")
    assert total < 2_850_000, total


if __name__ == "__main__":
    main()


# --- malicious.pt: a PyTorch-style zip whose pickle calls os.system through REDUCE. It is made
# with this snippet (not run by main(); the file is committed as it is, 300 bytes):
#
#   class Evil:
#       def __reduce__(self):
#           return (os.system, ("echo ril-pickle-executed > /tmp/ril-pwned",))
#   data = pickle.dumps({"state_dict": {"layers.0.weight": Evil()}}, protocol=2)
#   with zipfile.ZipFile("crates/rewards/tests/fixtures/malicious.pt", "w") as z:
#       z.writestr("archive/data.pkl", data); z.writestr("archive/version", "3\n")
#
# A loader that executes pickles would create /tmp/ril-pwned; ril's must refuse the file.
