#!/usr/bin/env python3
"""PyTorch side of `cargo run --release -p sd-model --example profile_unet_ops`: the same ops at
SD 1.5 shapes on the CPU, 2 threads. Run: /path/to/venv/bin/python tools/bench/profile_ops.py"""
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(2)
torch.manual_seed(0)


def to_tokens(x):
    """[B, H, N, D] -> [B, N, H*D], as diffusers' attention processor hands the heads to to_out."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def timed(name, gflop, fn):
    fn()
    reps = 3
    s = time.perf_counter()
    for _ in range(reps):
        fn()
    t = (time.perf_counter() - s) / reps
    print(f"{name:44} {t * 1e3:9.1f} ms {gflop / t:7.1f} GFLOP/s")


with torch.no_grad():
    x = torch.rand(2, 320, 64, 64)
    conv = torch.nn.Conv2d(320, 320, 3, padding=1)
    timed("conv3x3 320->320 [2,320,64,64]", 2 * 2 * 320 * 320 * 9 * 4096 / 1e9, lambda: conv(x))
    gn = torch.nn.GroupNorm(32, 320, eps=1e-5)
    timed("group_norm 32 groups [2,320,64,64]", 0.0, lambda: gn(x))
    tokens = torch.rand(2, 4096, 320)
    lin = torch.nn.Linear(320, 320, bias=False)
    timed("linear 320->320 [2,4096,320]", 2 * 2 * 4096 * 320 * 320 / 1e9, lambda: lin(tokens))
    q, k, v = (torch.rand(2, 8, 4096, 40) for _ in range(3))
    gf = 2 * 2 * 2 * 8 * 4096 * 4096 * 40 / 1e9
    timed("self-attention 8 heads, 4096 x 4096, d 40", gf, lambda: F.scaled_dot_product_attention(q, k, v))
    timed("  output as [B,N,H*D]", gf, lambda: to_tokens(F.scaled_dot_product_attention(q, k, v)))
    timed("  the same as matmul + softmax + matmul", gf, lambda: torch.softmax(q @ k.transpose(2, 3) / 40**0.5, -1) @ v)
    kc, vc = torch.rand(2, 8, 77, 40), torch.rand(2, 8, 77, 40)
    gf = 2 * 2 * 2 * 8 * 4096 * 77 * 40 / 1e9
    timed("cross-attention 8 heads, 4096 x 77, d 40", gf, lambda: F.scaled_dot_product_attention(q, kc, vc))
    timed("  output as [B,N,H*D]", gf, lambda: to_tokens(F.scaled_dot_product_attention(q, kc, vc)))
    qv = torch.rand(1, 1, 4096, 512)
    gf = 2 * 2 * 4096 * 4096 * 512 / 1e9
    timed("VAE attention 1 head, 4096 x 4096, d 512", gf, lambda: F.scaled_dot_product_attention(qv, qv, qv))
    timed("  output as [B,N,H*D]", gf, lambda: to_tokens(F.scaled_dot_product_attention(qv, qv, qv)))
    # The VAE decoder's last level (512x512, 128 channels) and its 128x128 level (512 channels).
    xv = torch.rand(1, 128, 512, 512)
    conv = torch.nn.Conv2d(128, 128, 3, padding=1)
    timed("conv3x3 128->128 [1,128,512,512]", 2 * 128 * 128 * 9 * 512 * 512 / 1e9, lambda: conv(xv))
    x5 = torch.rand(1, 512, 128, 128)
    conv = torch.nn.Conv2d(512, 512, 3, padding=1)
    timed("conv3x3 512->512 [1,512,128,128]", 2 * 512 * 512 * 9 * 128 * 128 / 1e9, lambda: conv(x5))
    gn = torch.nn.GroupNorm(32, 128, eps=1e-6)
    timed("group_norm [1,128,512,512]", 0.0, lambda: gn(xv))
    timed("silu [1,128,512,512]", 0.0, lambda: F.silu(xv))
    timed("group_norm + silu [1,128,512,512]", 0.0, lambda: F.silu(gn(xv)))
    timed("add [1,128,512,512]", 0.0, lambda: xv + xv)
    x2 = torch.rand(1, 128, 256, 256)
    timed("nearest 2x [1,128,256,256] -> 512", 0.0, lambda: F.interpolate(x2, scale_factor=2.0, mode="nearest"))
