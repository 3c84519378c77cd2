#!/usr/bin/env python3
"""Checks that ril's FID statistics files are pytorch-fid's `--save-stats` format in both
directions: NumPy reads what `ril fid-stats` writes exactly as pytorch-fid's
`compute_statistics_of_path` does (`np.load(path)["mu"]`, `["sigma"]`: float64, [2048] and
[2048, 2048]), and `ril fid` reads what NumPy writes with pytorch-fid's own call
(`np.savez_compressed(path, mu=m, sigma=s)`), also as float32 in Fortran order. Not run by CI
(it needs NumPy); run it after changing the .npz code:

  cargo build -p ril
  python3 -m venv /tmp/npz-venv && /tmp/npz-venv/bin/pip install numpy==2.4.6 pillow==13.0.0
  /tmp/npz-venv/bin/python tools/parity/check_fid_npz.py target/debug/ril /tmp/ril-npz

It makes two folders of 4 random 32x32 images under the work folder and uses ril's hash
Inception weights (no download). Each `ril fid` is two 2048x2048 eigen-decompositions: a few
seconds each with a release build.
"""
import os
import subprocess
import sys

import numpy as np
from PIL import Image


def ril(binary, *args):
    # The folders' cached statistics go under the work folder (RIL_CACHE_DIR, set in main), not
    # the user's cache.
    out = subprocess.run([binary, *args], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def main(binary, work):
    os.makedirs(work, exist_ok=True)
    os.environ["RIL_CACHE_DIR"] = os.path.join(work, "cache")
    rng = np.random.default_rng(0)
    stats = {}
    for name in ["a", "b"]:
        d = os.path.join(work, name)
        os.makedirs(d, exist_ok=True)
        for i in range(4):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(os.path.join(d, f"{i:02}.png"))
        stats[name] = os.path.join(work, f"{name}.npz")
        ril(binary, "fid-stats", "--images", d, "--out", stats[name], "--hash-weights")

    # NumPy reads ril's file as pytorch-fid does.
    with np.load(stats["a"]) as f:
        assert sorted(f.files) == ["mu", "sigma"], f.files
        mu, sigma = f["mu"][:], f["sigma"][:]
    assert mu.dtype == np.float64 and mu.shape == (2048,), (mu.dtype, mu.shape)
    assert sigma.dtype == np.float64 and sigma.shape == (2048, 2048), (sigma.dtype, sigma.shape)
    assert np.isfinite(mu).all() and np.isfinite(sigma).all()
    # A covariance: symmetric (ril computes X^T X / (n - 1); both triangles from the same sums).
    asym = np.abs(sigma - sigma.T).max()
    print(f"numpy reads {stats['a']}: mu {mu.shape} {mu.dtype}, sigma {sigma.shape} {sigma.dtype}, "
          f"max |sigma - sigma^T| = {asym:.1e}")

    # ril reads pytorch-fid's own files: the same statistics give the same FID, digit for digit.
    numpy64 = os.path.join(work, "a-numpy64.npz")
    np.savez_compressed(numpy64, mu=mu, sigma=sigma)
    numpy32f = os.path.join(work, "a-numpy32-fortran.npz")
    np.savez_compressed(numpy32f, mu=mu.astype(np.float32),
                        sigma=np.asfortranarray(sigma.astype(np.float32)))
    ours = ril(binary, "fid", "--real", stats["a"], "--fake", stats["b"])
    theirs = ril(binary, "fid", "--real", numpy64, "--fake", stats["b"])
    print(f"ril's file: {ours}; NumPy's float64 file: {theirs}")
    assert ours == theirs, (ours, theirs)
    f32 = ril(binary, "fid", "--real", numpy32f, "--fake", stats["b"])
    a, b = float(ours.split()[-1]), float(f32.split()[-1])
    print(f"NumPy's float32 Fortran-order file: {f32} (relative difference {abs(a - b) / a:.1e}, "
          "from rounding sigma to float32)")
    # float32 keeps ~7 digits of each entry; the distance is a sum over 2048 of them.
    assert abs(a - b) <= 1e-4 * a, (a, b)
    print("OK: ril's .npz statistics are pytorch-fid's format in both directions")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
