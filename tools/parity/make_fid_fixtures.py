#!/usr/bin/env python3
"""Reference fixtures for the FID of the `ril-metrics` crate (pytorch-fid 0.3.0), written next to
make_fixtures.py / make_reward_fixtures.py and in their style (same deterministic safetensors
writer, same portable seeded generator and Bundle helpers, CPU, float32, one thread):

  /tmp/parity-venv/bin/python tools/parity/make_fid_fixtures.py

It writes

  crates/ril-metrics/tests/fixtures/fid.safetensors   (about 0.38 MB; see the tensor list below)
  tools/parity/fid_keys.txt                            every key of the FID Inception state dict
                                                       with shape, dtype and FNV-1a 64 hash

The real FID network (pt_inception-2015-12-05-6726825d.pth, 95 MB) can neither be downloaded here
nor committed, so pytorch-fid's InceptionV3 is run with deterministic "hash" weights that the Rust
tests regenerate bit-exactly (no weight file at all):

  Hash weights. Every tensor of the state dict that pytorch_fid.inception.fid_inception_v3() loads
  (torchvision Inception3 key names, num_classes 1008, aux_logits False: exactly the keys of the
  real file, `num_batches_tracked` included; the list is tools/parity/fid_keys.txt) is
    h    = FNV-1a 64 of the key's UTF-8 bytes (offset 0xcbf29ce484222325, prime 0x100000001b3,
           xor then wrapping multiply, byte by byte)
    for the flat row-major index i = 0..n-1:
      s  = h + (i + 1) * 0x9E3779B97F4A7C15                               (u64, wrapping)
      z  = s; z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9; z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
      z  = z ^ (z >> 31)                                                  (u64, wrapping)
      u  = f32(z >> 40) * 2^-24                                           (f32, in [0, 1))
    i.e. u is exactly the "uniform01" generator of make_reward_fixtures.py with seed = h.
    Values, each operation in f32 in this order (constants are f32 literals: 0.9f32, 0.2f32, ...):
      *.conv.weight [out,in,kh,kw]   (u * 2 - 1) * b,  b = f32(sqrt(6 / (in*kh*kw)) computed in f64)
      *.bn.weight, *.bn.running_var  0.9 + 0.2 * u
      *.bn.bias, *.bn.running_mean   (u - 0.5) * 0.2
      fc.weight [1008,2048]          (u * 2 - 1) * 0.01
      fc.bias [1008]                 0
      *.num_batches_tracked          i64 scalar (shape []) 0
    any other key is an error. (b is the He-uniform bound: Var = 2 / fan_in, so with ReLU and the
    near-identity BatchNorms (eps 0.001) the activations keep a moderate scale through the network.)

  Model: pytorch_fid.inception.InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True,
  normalize_input=True, use_fid_inception=True) in eval mode, with
  pytorch_fid.inception.load_state_dict_from_url monkeypatched to return the hash state dict (built
  from the very module fid_inception_v3() is about to load, so the keys are exact; strict loading).
  Features = model(x)[0].squeeze(-1).squeeze(-1): F.interpolate(x, (299, 299), bilinear,
  align_corners=False) (skipped when resize_input=False), then 2x - 1, then the blocks.

Tensors of fid.safetensors (float32 unless marked; G = generated with the portable generator of
make_reward_fixtures.py, `_head` / `_stats` stored, full tensor only where "stored"; S = subsampled
`_sub` / `_rows` / `_cols` / `_stats` as in make_reward_fixtures.py):

  images        G uniform01 seed 601 [2,3,64,48], stored
  features      [2,2048]   model(images) (resize path)
  resized       S [2,3,299,299] the network input after resize and 2x-1 (step 23)
  act_stats     f64 [17,3] (sum, sum|x|, sum x^2) of each module output for `images`; the module
                order is the metadata `act_modules` (Conv2d_1a_3x3 ... Mixed_7c, then avgpool)
  images_sq     G uniform01 seed 602 [1,3,299,299], NOT stored
  features_sq   [1,2048]   InceptionV3(..., resize_input=False, ...)(images_sq) (no resize; the
                same weights; with resize_input=True 299 -> 299 is the identity too, checked)
  weight_stats  f64 [K,3] (sum, sum|x|, sum x^2) of every floating tensor of the hash state dict, in
                the order of the metadata `weight_keys` (= fid_keys.txt without num_batches_tracked)
  w.<key>_head  the first 16 values of a few hash tensors (Conv2d_1a_3x3.*, Mixed_7c.branch_pool.*,
                fc.*); metadata `weight_fnv` gives their FNV-1a 64 hashes (hex)
  Fréchet distance, pytorch_fid.fid_score.calculate_frechet_distance on float64 statistics
  (mu = X.mean(0), sigma = np.cov(X, rowvar=False), X in f64):
  x1, x2        G normal seeds 611 [200,64], 612 [150,64], stored (f32 draws);
                X1 = f64(x1), X2 = f64(x2) * 1.2 + 0.1 (in f64)
  mu1, mu2 f64 [64]; sigma1, sigma2 f64 [64,64]; fid_a f64 [1]
  x3, x4        G normal seeds 613 [20,64], 614 [25,64], stored; X3 = f64(x3), X4 = f64(x4)
                (fewer samples than dimensions: singular covariances)
  mu3, mu4 f64 [64]; sigma3, sigma4 f64 [64,64]; fid_b f64 [1]
  fid_b_eps     f64 [1]    the eps-fallback formula of calculate_frechet_distance applied to case b
                unconditionally: tr sqrtm((sigma3 + 1e-6 I) @ (sigma4 + 1e-6 I)) (real part)
  The metadata `notes` gives whether scipy's sqrtm needed the "adding 1e-6 to diagonal" fallback
  and the eigenvalue forms of the traces (sum of sqrt of the eigenvalues of sigma1 @ sigma2).

Numbers (also in the metadata `notes` / `act_table`): 566 keys (94 num_batches_tracked, 472 float
tensors, 23,885,392 float values). Module output std for `images` stays 0.33..0.60 from
Conv2d_1a_3x3 to Mixed_7c; features in [0, 2.95], mean 0.325, std 0.437, 15.6 % exactly 0 (ReLU
channels dead over the whole 8x8 map); the two noise images' feature vectors differ by only 2 %
(relative L2), so compare features element-wise. fid_a = 18.311972051518126; fid_b =
77.56656262706372: scipy 1.17.1's sqrtm returns a finite (complex; the imaginary part, at most
9e-8, is dropped) square root of the singular product, so the eps fallback is NOT taken; the
eigenvalue form gives 77.5665633 (sqrt of the ~1e-15 null eigenvalues: allow ~1e-5 on fid_b), the
eps formula 77.5527375.

Reference versions: those of make_fixtures.py plus pytorch-fid 0.3.0, scipy 1.17.1, torchvision
0.29.2 (tools/parity/requirements.txt). Deterministic: rerunning rewrites fid.safetensors and
fid_keys.txt byte-identically. Only fid.safetensors is touched in the fixtures folder.
"""

import contextlib
import io
import json
import math
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import make_fixtures as mf  # noqa: E402  (sets the env vars, torch threads and determinism)
import make_reward_fixtures as rf  # noqa: E402  (portable generator, Bundle)
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.set_num_threads(1)

import pytorch_fid  # noqa: E402
import pytorch_fid.fid_score as pfs  # noqa: E402
import pytorch_fid.inception as pfi  # noqa: E402
import scipy  # noqa: E402
import torchvision  # noqa: E402

FIX = mf.REPO_ROOT / "crates" / "ril-metrics" / "tests" / "fixtures"
OUT = FIX / "fid.safetensors"
KEYS_TXT = Path(__file__).resolve().parent / "fid_keys.txt"

EXPECTED = {"pytorch_fid": "0.3.0", "scipy": "1.17.1", "torchvision": "0.29.2"}

MASK = 2**64 - 1
FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3

HASH_SPEC = (
    "h = FNV-1a 64 of the key's UTF-8 bytes (offset 0xcbf29ce484222325, prime 0x100000001b3, wrapping); "
    "for flat row-major index i = 0..n-1: s = h + (i + 1) * 0x9E3779B97F4A7C15 (wrapping); z = s; "
    "z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9; z = (z ^ (z >> 27)) * 0x94D049BB133111EB; z = z ^ (z >> 31) "
    "(wrapping u64); u = f32(z >> 40) * 2^-24 (= uniform01 generator with seed h). Values in f32, in this "
    "order: *.conv.weight [out,in,kh,kw]: (u * 2 - 1) * b, b = f32(sqrt(6 / (in*kh*kw)) in f64); "
    "*.bn.weight and *.bn.running_var: 0.9 + 0.2 * u; *.bn.bias and *.bn.running_mean: (u - 0.5) * 0.2; "
    "fc.weight: (u * 2 - 1) * 0.01; fc.bias: 0; *.num_batches_tracked: i64 scalar 0; anything else: error"
)

CHECK_KEYS = [
    "Conv2d_1a_3x3.conv.weight",
    "Conv2d_1a_3x3.bn.weight",
    "Conv2d_1a_3x3.bn.bias",
    "Conv2d_1a_3x3.bn.running_mean",
    "Conv2d_1a_3x3.bn.running_var",
    "Mixed_7c.branch_pool.conv.weight",
    "Mixed_7c.branch_pool.bn.running_var",
    "fc.weight",
    "fc.bias",
]

ACT_MODULES = [
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
    "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
    "Mixed_7a", "Mixed_7b", "Mixed_7c",
]


def check_versions():
    mf.check_versions()
    got = {"pytorch_fid": pytorch_fid.__version__, "scipy": scipy.__version__,
           "torchvision": torchvision.__version__.split("+")[0]}
    bad = {k: (got[k], v) for k, v in EXPECTED.items() if got[k] != v}
    if bad:
        print(f"WARNING: versions differ from the pinned ones (got, pinned): {bad}", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# Hash weights
# --------------------------------------------------------------------------------------------
def fnv1a64(key: str) -> int:
    h = FNV_OFFSET
    for byte in key.encode("utf-8"):
        h = ((h ^ byte) * FNV_PRIME) & MASK
    return h


def hash_u01(key: str, n: int) -> np.ndarray:
    """u_i = f32(splitmix64 output >> 40) * 2^-24 for s_i = fnv(key) + (i + 1) * GAMMA (vectorised u64)."""
    z = rf.splitmix64(fnv1a64(key), n)
    u = (z >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)
    assert u.dtype == np.float32
    return u


def hash_tensor(key: str, shape, dtype) -> torch.Tensor:
    shape = tuple(shape)
    if key.endswith(".num_batches_tracked"):
        assert shape == () and dtype == torch.int64, (key, shape, dtype)
        return torch.tensor(0, dtype=torch.int64)
    assert dtype == torch.float32, (key, dtype)
    n = int(np.prod(shape))
    one, two = np.float32(1.0), np.float32(2.0)
    if key.endswith(".conv.weight"):
        assert len(shape) == 4, (key, shape)
        fan_in = shape[1] * shape[2] * shape[3]
        b = np.float32(math.sqrt(6.0 / fan_in))
        x = (hash_u01(key, n) * two - one) * b
    elif key.endswith(".bn.weight") or key.endswith(".bn.running_var"):
        x = np.float32(0.9) + np.float32(0.2) * hash_u01(key, n)
    elif key.endswith(".bn.bias") or key.endswith(".bn.running_mean"):
        x = (hash_u01(key, n) - np.float32(0.5)) * np.float32(0.2)
    elif key == "fc.weight":
        x = (hash_u01(key, n) * two - one) * np.float32(0.01)
    elif key == "fc.bias":
        x = np.zeros(n, dtype=np.float32)
    else:
        raise KeyError(f"no hash-weight rule for key {key!r} {list(shape)}")
    assert x.dtype == np.float32, key
    return torch.from_numpy(x.reshape(shape).copy())


def hash_state_dict(template: dict) -> dict:
    return {k: hash_tensor(k, v.shape, v.dtype) for k, v in template.items()}


def _check_hash():
    """The vectorised hash equals a scalar one written the way the Rust side will write it."""
    assert fnv1a64("") == FNV_OFFSET
    assert fnv1a64("a") == 0xAF63DC4C8601EC8C  # published FNV-1a 64 test vector
    f32 = np.float32
    for key, shape in [("Conv2d_1a_3x3.conv.weight", (32, 3, 3, 3)), ("Mixed_5b.branch1x1.bn.running_var", (64,)),
                       ("Mixed_5b.branch1x1.bn.bias", (64,)), ("fc.weight", (1008, 2048))]:
        h = fnv1a64(key)
        vec = hash_tensor(key, shape, torch.float32).reshape(-1)
        for i in [0, 1, 2, 37, int(np.prod(shape)) - 1]:
            z = (h + (i + 1) * 0x9E3779B97F4A7C15) & MASK
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
            z = z ^ (z >> 31)
            u = f32(z >> 40) * f32(2.0**-24)
            if key.endswith("conv.weight"):
                v = (u * f32(2) - f32(1)) * f32(math.sqrt(6.0 / (shape[1] * shape[2] * shape[3])))
            elif key.endswith("running_var"):
                v = f32(0.9) + f32(0.2) * u
            elif key.endswith("bias"):
                v = (u - f32(0.5)) * f32(0.2)
            else:
                v = (u * f32(2) - f32(1)) * f32(0.01)
            assert np.float32(vec[i].item()) == v, (key, i)
    for bad in ["AuxLogits.fc.weight", "Conv2d_1a_3x3.conv.bias"]:
        try:
            hash_tensor(bad, (3,), torch.float32)
        except KeyError:
            continue
        raise AssertionError(bad)


def build_model(resize_input=True):
    """pytorch-fid's InceptionV3 (2048 features) with the hash weights. Returns (model, inception
    state dict template {key: (shape, dtype)} in module order, the inner torchvision Inception3)."""
    captured = {}

    def fake_load_state_dict_from_url(url, *args, **kwargs):
        assert url == pfi.FID_WEIGHTS_URL, url
        caller = sys._getframe(1)
        assert caller.f_code is pfi.fid_inception_v3.__code__, caller.f_code
        inception = caller.f_locals["inception"]  # the module about to be loaded (strictly)
        template = inception.state_dict()
        captured["template"] = {k: (tuple(v.shape), v.dtype) for k, v in template.items()}
        captured["inception"] = inception
        sd = hash_state_dict(template)
        captured["sd"] = sd
        return sd

    orig = pfi.load_state_dict_from_url
    pfi.load_state_dict_from_url = fake_load_state_dict_from_url
    try:
        model = pfi.InceptionV3(
            [pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]],
            resize_input=resize_input,
            normalize_input=True,
            use_fid_inception=True,
        )
    finally:
        pfi.load_state_dict_from_url = orig
    model.eval()
    inception = captured["inception"]
    # strict loading succeeded; double-check every tensor landed
    loaded = inception.state_dict()
    assert list(loaded) == list(captured["sd"])
    for k, v in captured["sd"].items():
        assert torch.equal(loaded[k], v), k
    return model, captured["template"], inception


def features(model, x):
    with torch.no_grad():
        out = model(x)
    assert len(out) == 1
    return out[0].squeeze(-1).squeeze(-1)


# --------------------------------------------------------------------------------------------
def ref_fid():
    b = rf.Bundle()
    notes = {}

    model, template, inception = build_model(resize_input=True)
    keys = list(template)
    n_params = sum(int(np.prod(s)) for s, d in template.values() if d.is_floating_point)
    n_nbt = sum(k.endswith(".num_batches_tracked") for k in keys)
    wrapper_keys = list(model.state_dict())
    print(f"== hash state dict: {len(keys)} keys ({n_nbt} num_batches_tracked), {n_params} float values; "
          f"InceptionV3 wrapper state_dict: {len(wrapper_keys)} keys (e.g. {wrapper_keys[0]})")
    sd = inception.state_dict()

    # ---- key list file
    lines = [
        "# Keys of the FID Inception state dict loaded by pytorch_fid.inception.fid_inception_v3()",
        "# (pytorch-fid 0.3.0, torchvision 0.29.2 Inception3, num_classes 1008, aux_logits False), in",
        "# state_dict order. Written by tools/parity/make_fid_fixtures.py. Columns: key, shape, dtype,",
        "# FNV-1a 64 of the key (the seed of its hash weights).",
        f"# {len(keys)} keys ({n_nbt} of them num_batches_tracked), {n_params} floating values.",
    ]
    for k in keys:
        shape, dtype = template[k]
        dt = {torch.float32: "F32", torch.int64: "I64"}[dtype]
        lines.append(f"{k} [{','.join(map(str, shape))}] {dt} 0x{fnv1a64(k):016x}")
    KEYS_TXT.write_text("\n".join(lines) + "\n")
    print(f"   wrote {KEYS_TXT.relative_to(mf.REPO_ROOT)}")

    float_keys = [k for k in keys if template[k][1].is_floating_point]
    b.add("weight_stats", torch.stack([rf.stats(sd[k]) for k in float_keys]))
    for k in CHECK_KEYS:
        b.add(f"w.{k}_head", sd[k].reshape(-1)[:16].clone())

    # ---- per-module activation statistics
    acts = {}
    hooks = [getattr(inception, name).register_forward_hook(
        lambda mod, inp, out, name=name: acts.__setitem__(name, out.detach())) for name in ACT_MODULES]
    block_out = {}
    hooks += [blk.register_forward_hook(lambda mod, inp, out, i=i: block_out.__setitem__(i, out.detach()))
              for i, blk in enumerate(model.blocks)]

    images = b.generated_input("images", "uniform01", 601, (2, 3, 64, 48), store=True)
    feats = features(model, images)
    b.add("features", feats)
    resized = 2 * F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False) - 1
    b.big("resized", resized, 23)
    act_order = ACT_MODULES + ["avgpool"]
    acts["avgpool"] = block_out[3]
    b.add("act_stats", torch.stack([rf.stats(acts[n]) for n in act_order]))
    act_table = {}
    print("== activations for `images` (module: shape, mean, std, max|x|, fraction > 0)")
    print(f"   {'input(299, 2x-1)':18s} {list(resized.shape)} mean {resized.mean():.4f} std {resized.std():.4f}")
    for n in act_order:
        a = acts[n].double()
        act_table[n] = {"shape": list(a.shape), "mean": float(a.mean()), "std": float(a.std()),
                        "max_abs": float(a.abs().max()), "frac_pos": float((a > 0).double().mean())}
        t = act_table[n]
        print(f"   {n:18s} {t['shape']} mean {t['mean']:.4f} std {t['std']:.4f} max|x| {t['max_abs']:.4f} "
              f"pos {t['frac_pos']:.3f}")
    for i in range(4):
        a = block_out[i].double()
        print(f"   block {i}: {list(a.shape)} std {float(a.std()):.4f}")
    for h in hooks:
        h.remove()

    f = feats.double()
    assert torch.isfinite(f).all() and (f != 0).any()
    notes["features_min"] = float(f.min())
    notes["features_max"] = float(f.max())
    notes["features_mean"] = float(f.mean())
    notes["features_std"] = float(f.std())
    notes["features_frac_zero"] = float((f == 0).double().mean())
    notes["features_rel_diff_between_images"] = float((f[0] - f[1]).norm() / f[0].norm())

    # ---- 299x299 input, no resize
    images_sq = b.generated_input("images_sq", "uniform01", 602, (1, 3, 299, 299))
    model_nr, _, inception_nr = build_model(resize_input=False)
    feats_sq = features(model_nr, images_sq)
    b.add("features_sq", feats_sq)
    same = features(model, images_sq)
    notes["features_sq_max_abs_diff_resize_true"] = float((same - feats_sq).abs().max())
    fs = feats_sq.double()
    assert torch.isfinite(fs).all() and (fs != 0).any()
    notes["features_sq_min"] = float(fs.min())
    notes["features_sq_max"] = float(fs.max())
    notes["features_sq_mean"] = float(fs.mean())
    # batch independence (eval mode): features of image 0 alone equal its row of the batch
    notes["features_max_abs_diff_batch_vs_single"] = float((features(model, images[:1]) - feats[:1]).abs().max())

    # ---- Fréchet distance
    def fid_case(tag, names, seeds, shapes, transform):
        stats_ = []
        for name, seed, shape, tr in zip(names, seeds, shapes, transform):
            x = b.generated_input(name, "normal", seed, shape, store=True).double().numpy()
            X = tr(x)
            mu = np.mean(X, axis=0)
            sigma = np.cov(X, rowvar=False)
            stats_.append((mu, sigma))
        (mu1, s1), (mu2, s2) = stats_
        out = io.StringIO()
        with warnings.catch_warnings(record=True) as w, contextlib.redirect_stdout(out):
            warnings.simplefilter("always")
            d = pfs.calculate_frechet_distance(mu1, s1, mu2, s2)
        printed = out.getvalue()
        notes[f"fid_{tag}_fallback_eps"] = "adding 1e-06 to diagonal" in printed
        notes[f"fid_{tag}_printed"] = printed.strip()
        notes[f"fid_{tag}_warnings"] = sorted({f"{x.category.__name__}: {x.message}" for x in w})
        # eigenvalue form: tr sqrtm(S1 S2) = sum sqrt(eig(S1 S2)) (eigenvalues real, >= 0 in exact arithmetic)
        ev = np.linalg.eigvals(s1 @ s2)
        notes[f"fid_{tag}_eig_min_real"] = float(ev.real.min())
        notes[f"fid_{tag}_eig_max_abs_imag"] = float(np.abs(ev.imag).max())
        tr = np.sqrt(np.clip(ev.real, 0, None)).sum()
        diff = mu1 - mu2
        notes[f"fid_{tag}_eigen_form"] = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr)
        notes[f"fid_{tag}_rank_sigmas"] = [int(np.linalg.matrix_rank(s1)), int(np.linalg.matrix_rank(s2))]
        covmean = scipy.linalg.sqrtm(s1 @ s2)
        notes[f"fid_{tag}_sqrtm_finite"] = bool(np.isfinite(covmean).all())
        notes[f"fid_{tag}_sqrtm_complex"] = bool(np.iscomplexobj(covmean))
        return float(d), stats_

    fid_a, ((mu1, s1), (mu2, s2)) = fid_case(
        "a", ["x1", "x2"], [611, 612], [(200, 64), (150, 64)], [lambda x: x, lambda x: x * 1.2 + 0.1])
    fid_b, ((mu3, s3), (mu4, s4)) = fid_case(
        "b", ["x3", "x4"], [613, 614], [(20, 64), (25, 64)], [lambda x: x, lambda x: x])
    for name, arr in [("mu1", mu1), ("sigma1", s1), ("mu2", mu2), ("sigma2", s2), ("fid_a", np.array([fid_a])),
                      ("mu3", mu3), ("sigma3", s3), ("mu4", mu4), ("sigma4", s4), ("fid_b", np.array([fid_b]))]:
        assert arr.dtype == np.float64, name
        b.add(name, torch.from_numpy(np.ascontiguousarray(arr)))
    notes["fid_a"] = fid_a
    notes["fid_b"] = fid_b
    # what the eps fallback of calculate_frechet_distance computes (covmean = sqrtm((s3 + eps I)(s4 + eps I)),
    # imaginary part dropped), whether or not it was taken above
    off = np.eye(64) * 1e-6
    cm = scipy.linalg.sqrtm((s3 + off) @ (s4 + off))
    d34 = mu3 - mu4
    fid_b_eps = float(d34 @ d34 + np.trace(s3) + np.trace(s4) - 2 * np.trace(cm.real))
    notes["fid_b_eps"] = fid_b_eps
    b.add("fid_b_eps", torch.tensor([fid_b_eps], dtype=torch.float64))

    print("== notes")
    for k in sorted(notes):
        print(f"   {k} = {notes[k]}")

    b.meta.update(
        {
            "hash_weights": HASH_SPEC,
            "key_count": str(len(keys)),
            "num_batches_tracked_count": str(n_nbt),
            "float_value_count": str(n_params),
            "weight_keys": json.dumps(float_keys),
            "weight_fnv": json.dumps({k: f"0x{fnv1a64(k):016x}" for k in CHECK_KEYS}, sort_keys=True),
            "model": "pytorch_fid.inception.InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True, "
            "normalize_input=True, use_fid_inception=True).eval(), pytorch_fid.inception.load_state_dict_from_url "
            "monkeypatched to return the hash state dict (strict load); features = model(x)[0].squeeze(-1)"
            ".squeeze(-1). features_sq: the same with resize_input=False",
            "resize": "F.interpolate(x, size=(299, 299), mode='bilinear', align_corners=False) then 2x - 1; "
            "`resized` holds that network input (subsampled)",
            "act_modules": json.dumps(ACT_MODULES + ["avgpool"]),
            "act_table": json.dumps(act_table, sort_keys=True),
            "frechet": "pytorch_fid.fid_score.calculate_frechet_distance(mu_a, sigma_a, mu_b, sigma_b) (eps 1e-6) on "
            "mu = X.mean(0), sigma = np.cov(X, rowvar=False) in float64; case a: X1 = f64(x1), X2 = f64(x2) * 1.2 + "
            "0.1 -> fid_a; case b (singular covariances): X3 = f64(x3), X4 = f64(x4) -> fid_b",
            "versions": json.dumps({"torch": torch.__version__, "torchvision": torchvision.__version__,
                                    "pytorch_fid": pytorch_fid.__version__, "scipy": scipy.__version__,
                                    "numpy": np.__version__}, sort_keys=True),
            "notes": json.dumps(notes, sort_keys=True),
        }
    )
    b.save(OUT)
    return notes


def main():
    check_versions()
    rf._check_generator()
    _check_hash()
    FIX.mkdir(parents=True, exist_ok=True)
    ref_fid()
    total = 0
    for p in sorted(FIX.rglob("*")):
        if p.is_file():
            total += p.stat().st_size
            print(f"   {p.stat().st_size:9d}  {p.relative_to(FIX)}")
    print(f"total ril-metrics fixture size: {total} bytes; {KEYS_TXT.name}: {KEYS_TXT.stat().st_size} bytes")
    assert total < 1_000_000, total


if __name__ == "__main__":
    main()
