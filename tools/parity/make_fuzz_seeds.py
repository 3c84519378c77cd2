"""Writes the PyTorch pickle seeds of the loader fuzzing (tests/fuzz.rs): a tiny state dict in
torch.save's zip format and in its legacy (pre-1.6) format, float32, float16 and int64 tensors,
one a non-contiguous view, so that the fuzzed pickle reader starts from files PyTorch wrote.

    python tools/parity/make_fuzz_seeds.py   # torch==2.11.0 (tools/parity/requirements.txt)
"""

import pathlib

import torch

out = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "fuzz"
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
base = torch.randn(3, 4)
state = {
    "layer.weight": base,
    "layer.bias": torch.arange(3, dtype=torch.float16),
    "view": base.t()[1:3],
    "count": torch.tensor([7], dtype=torch.int64),
}
torch.save(state, out / "tiny_zip.pt")
torch.save(state, out / "tiny_legacy.pt", _use_new_zipfile_serialization=False)
for p in sorted(out.glob("*.pt")):
    print(p.name, p.stat().st_size, "bytes")
