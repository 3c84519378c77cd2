#!/usr/bin/env python3
"""LoRA reference fixtures for the `sd-model` crate, written the way diffusers/peft users write them.

Part of the parity-fixture generator (see make_fixtures.py, whose main() calls `run()` at the end);
it can also be rerun on its own once tiny-sd/ and reference/ exist:

  /tmp/parity-venv/bin/python tools/parity/make_lora_fixtures.py

Everything goes to crates/sd-model/tests/fixtures/lora/ (about 290 KB):

  a_r4.safetensors          peft LoRA "a" on the tiny UNet: r=4, lora_alpha=4 (scale 1),
                            target_modules to_q/to_k/to_v/to_out.0 (attn1 and attn2 of all 16
                            transformer blocks: 128 modules, 256 tensors).
  b_r2_alpha8.safetensors   peft LoRA "b": r=2, lora_alpha=8 (scale alpha/r = 4), to_k/to_v only
                            (64 modules, 128 tensors).
      Both made with `unet.add_adapter(LoraConfig(..., init_lora_weights=True), adapter_name=...)`,
      every lora_A / lora_B then overwritten with 0.1*randn (seeded), and saved with
      `StableDiffusionPipeline.save_lora_weights(save_directory, unet_lora_layers=
      get_peft_model_state_dict(unet, adapter_name), weight_name, safe_serialization=True,
      unet_lora_adapter_metadata=unet.peft_config[adapter_name].to_dict())`.
      Keys: `unet.<module path>.lora_A.weight` [r, in] and `unet.<module path>.lora_B.weight`
      [out, r] (float32, no bias, no `.alpha` keys). `__metadata__` = {"format": "pt",
      "lora_adapter_metadata": json.dumps({"unet.<LoraConfig field>": value, ...}, indent=2,
      sort_keys=True)}; r and lora_alpha are recorded as "unet.r" and "unet.lora_alpha".

      Two things are normalised so that the files are byte-identical from run to run, without
      changing their content:
        * LoraConfig.to_dict() holds target_modules as a Python set; diffusers turns it into a list
          in set iteration order, which depends on PYTHONHASHSEED. It is passed as a sorted list.
        * safetensors (Rust) writes `__metadata__` in HashMap order, which is random per process.
          The file diffusers wrote is kept byte for byte except that the `__metadata__` entries are
          re-serialised in sorted key order (checked: re-serialising the parsed header without
          reordering reproduces the original header bytes exactly, and the tensors are untouched).

  reference.safetensors     (float32) with the inputs `sample`, `timestep`,
                            `encoder_hidden_states` of reference/unet.safetensors:
      out_base   [2,4,16,16]  adapters disabled (== reference/unet.safetensors `out`, asserted;
                              like it, computed with autograd-enabled inputs: on CPU a no_grad
                              forward takes other attention kernels and differs by ~5e-7)
      out_a      [2,4,16,16]  only "a" active
      out_b      [2,4,16,16]  only "b" active
      out_ab     [2,4,16,16]  both active, set_adapters(["a","b"], [1.0, 1.0]):
                              every targeted Linear computes W x (+ bias) + sum_i scale_i B_i (A_i x)
      pipe_a_final_latents [2,4,8,8]   tiny pipeline + LoRA "a", the exact settings and latents of
      pipe_a_image        [2,3,64,64]  reference/pipeline.safetensors (output_type "latent" / "pt")
      merged_to_q         [8,8]        W + (alpha/r) B@A of down_blocks.0.attentions.0.
                                       transformer_blocks.0.attn1.to_q for "a", computed by hand from
                                       the tensors in a_r4.safetensors; asserted bit-equal to what
                                       pipe.fuse_lora(adapter_names=["a"]) leaves in the weight.
      All of out_* and pipe_a_* are computed from the files loaded back with
      pipe.load_lora_weights(lora/, weight_name=..., adapter_name=...) into a fresh tiny pipeline,
      and asserted equal to the in-memory adapters' outputs.
"""

import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import make_fixtures as mf  # noqa: E402  (sets the env vars, torch threads and determinism)
import torch  # noqa: E402
from diffusers import StableDiffusionPipeline, UNet2DConditionModel  # noqa: E402
from peft import LoraConfig  # noqa: E402
from peft.utils import get_peft_model_state_dict  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

LORA_DIR = mf.FIXTURES / "lora"
TINY_SD = mf.FIXTURES / "tiny-sd"

ADAPTERS = {
    # name: (weight file, LoraConfig kwargs, seed for the random A/B weights)
    "a": (
        "a_r4.safetensors",
        dict(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=True),
        50,
    ),
    "b": (
        "b_r2_alpha8.safetensors",
        dict(r=2, lora_alpha=8, target_modules=["to_k", "to_v"], init_lora_weights=True),
        51,
    ),
}
MERGED_MODULE = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"


# --------------------------------------------------------------------------------------------
# safetensors header canonicalisation (only the order of the __metadata__ entries changes)
# --------------------------------------------------------------------------------------------
def _serde_json(obj) -> bytes:
    # serde_json's compact form: no spaces, non-ASCII kept as UTF-8
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _pad8(h: bytes) -> bytes:
    return h + b" " * ((8 - len(h) % 8) % 8)


def canonicalise_safetensors(path: Path):
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header_bytes, data = raw[8 : 8 + n], raw[8 + n :]
    header = json.loads(header_bytes)  # keeps the order safetensors wrote
    assert _pad8(_serde_json(header)) == header_bytes, "header re-serialisation differs from safetensors'"
    assert list(header)[0] == "__metadata__", list(header)[:2]
    header["__metadata__"] = {k: header["__metadata__"][k] for k in sorted(header["__metadata__"])}
    new_header = _pad8(_serde_json(header))
    assert len(new_header) == n
    path.write_bytes(n.to_bytes(8, "little") + new_header + data)
    return header


def file_metadata(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


# --------------------------------------------------------------------------------------------
# Writing the adapters
# --------------------------------------------------------------------------------------------
def metadata_for(unet, name):
    d = unet.peft_config[name].to_dict()
    return {k: (sorted(v) if isinstance(v, set) else v) for k, v in d.items()}


def make_adapter_files(out_dir: Path):
    unet = UNet2DConditionModel.from_pretrained(str(TINY_SD / "unet")).eval()
    for p in unet.parameters():
        p.requires_grad_(False)
    written = {}
    for name, (fname, kw, seed) in ADAPTERS.items():
        unet.add_adapter(LoraConfig(**kw), adapter_name=name)
        torch.manual_seed(seed)
        n = 0
        with torch.no_grad():
            for pname, p in sorted(unet.named_parameters()):
                if f".lora_A.{name}." in pname or f".lora_B.{name}." in pname:
                    p.copy_(0.1 * torch.randn_like(p))
                    n += 1
        assert n > 0
        layers = get_peft_model_state_dict(unet, adapter_name=name)
        assert len(layers) == n, (len(layers), n)
        StableDiffusionPipeline.save_lora_weights(
            save_directory=str(out_dir),
            unet_lora_layers=layers,
            weight_name=fname,
            safe_serialization=True,
            unet_lora_adapter_metadata=metadata_for(unet, name),
        )
        canonicalise_safetensors(out_dir / fname)
        written[name] = {k: v.detach().clone() for k, v in layers.items()}
    for p in unet.parameters():
        p.requires_grad_(False)
    return unet, written


def check_adapter_file(path: Path, name: str, layers: dict, base_sd: dict):
    fname, kw, _ = ADAPTERS[name]
    sd = load_file(str(path))
    assert set(sd) == {f"unet.{k}" for k in layers}, "keys differ"
    r = kw["r"]
    modules = sorted({k[len("unet.") :].rsplit(".lora_", 1)[0] for k in sd})
    suffix = {m.split(".")[-1] if not m.endswith("to_out.0") else "to_out.0" for m in modules}
    assert suffix == set(kw["target_modules"]), suffix
    assert len(sd) == 2 * len(modules)
    for m in modules:
        a, b = sd[f"unet.{m}.lora_A.weight"], sd[f"unet.{m}.lora_B.weight"]
        w = base_sd[f"{m}.weight"]
        out_f, in_f = w.shape
        assert a.dtype == b.dtype == torch.float32
        assert list(a.shape) == [r, in_f], (m, a.shape, w.shape)
        assert list(b.shape) == [out_f, r], (m, b.shape, w.shape)
        assert torch.count_nonzero(a) == a.numel() and torch.count_nonzero(b) == b.numel(), m
        assert torch.equal(a, layers[f"{m}.lora_A.weight"]) and torch.equal(b, layers[f"{m}.lora_B.weight"])
    meta = file_metadata(path)
    assert set(meta) == {"format", "lora_adapter_metadata"}, meta.keys()
    assert meta["format"] == "pt"
    lam = json.loads(meta["lora_adapter_metadata"])
    assert lam["unet.r"] == r and lam["unet.lora_alpha"] == kw["lora_alpha"], lam
    assert lam["unet.target_modules"] == sorted(kw["target_modules"]), lam
    keys = sorted(sd)
    print(f"== {path.relative_to(mf.REPO_ROOT)} ({path.stat().st_size} bytes): {len(keys)} tensors, "
          f"{len(modules)} modules, r={r}, lora_alpha={kw['lora_alpha']}")
    for k in keys[:4]:
        print(f"   {k} {list(sd[k].shape)}")
    print(f"   __metadata__ = {json.dumps(meta, sort_keys=True)}")
    return sd, meta


# --------------------------------------------------------------------------------------------
# Reference outputs
# --------------------------------------------------------------------------------------------
def unet_out(unet, inputs):
    """Forward with autograd-enabled inputs, exactly like `out` of reference/unet.safetensors was
    computed: on CPU the no_grad forward takes other attention kernels and differs by ~5e-7."""
    s = inputs["sample"].clone().requires_grad_(True)
    e = inputs["encoder_hidden_states"].clone().requires_grad_(True)
    with torch.enable_grad():
        return unet(s, inputs["timestep"], encoder_hidden_states=e).sample.detach()


def load_pipe_with(names, directory=LORA_DIR):
    pipe = mf.load_tiny_pipeline()
    for name in names:
        pipe.load_lora_weights(str(directory), weight_name=ADAPTERS[name][0], adapter_name=name)
    pipe.unet.eval()
    return pipe


def manual_fused_unet(files, weights):
    """Base UNet with W <- W + sum_i weight_i * (alpha_i/r_i) B_i @ A_i written in by hand."""
    unet = UNet2DConditionModel.from_pretrained(str(TINY_SD / "unet")).eval()
    sd = unet.state_dict()
    with torch.no_grad():
        for name, wgt in weights.items():
            kw = ADAPTERS[name][1]
            scale = kw["lora_alpha"] / kw["r"] * wgt
            f = files[name]
            for k in f:
                if ".lora_A." in k:
                    m = k[len("unet.") :].rsplit(".lora_A.", 1)[0]
                    b = f[k.replace(".lora_A.", ".lora_B.")]
                    sd[f"{m}.weight"].add_((b.double() @ f[k].double() * scale).float())
    return unet


def pipe_settings():
    ref = load_file(str(mf.FIXTURES / "reference" / "pipeline.safetensors"))
    with safe_open(str(mf.FIXTURES / "reference" / "pipeline.safetensors"), framework="pt") as f:
        meta = f.metadata()
    common = dict(
        prompt=json.loads(meta["prompts"]),
        negative_prompt=json.loads(meta["negative_prompts"]),
        height=json.loads(meta["height"]),
        width=json.loads(meta["width"]),
        num_inference_steps=json.loads(meta["steps"]),
        guidance_scale=json.loads(meta["guidance"]),
        eta=json.loads(meta["eta"]),
    )
    assert common["prompt"] == ["a photo of a cat", "a red car"] and common["negative_prompt"] == ["blurry", "blurry"]
    assert (common["height"], common["width"], common["num_inference_steps"]) == (64, 64, 10)
    assert (common["guidance_scale"], common["eta"]) == (7.5, 0.0)
    return ref, common


def run_pipe(pipe, common, latents):
    with torch.no_grad():
        final = pipe(**common, latents=latents.clone(), output_type="latent").images
        image = pipe(**common, latents=latents.clone(), output_type="pt").images
    return final, image


def run():
    torch.set_num_threads(1)
    if LORA_DIR.exists():
        shutil.rmtree(LORA_DIR)
    LORA_DIR.mkdir(parents=True)

    # 1 + 2: the adapter files, written as a diffusers user writes them
    mem_unet, written = make_adapter_files(LORA_DIR)
    base_sd = UNet2DConditionModel.from_pretrained(str(TINY_SD / "unet")).state_dict()
    files, metas = {}, {}
    for name, (fname, _, _) in ADAPTERS.items():
        files[name], metas[name] = check_adapter_file(LORA_DIR / fname, name, written[name], base_sd)

    # 3: UNet outputs from the files loaded back
    ref_unet = load_file(str(mf.FIXTURES / "reference" / "unet.safetensors"))
    inputs = {k: ref_unet[k] for k in ("sample", "timestep", "encoder_hidden_states")}

    pipe_ab = load_pipe_with(["a", "b"])
    u = pipe_ab.unet
    # the config diffusers rebuilt from the file metadata
    for name, (_, kw, _) in ADAPTERS.items():
        pc = u.peft_config[name]
        assert pc.r == kw["r"] and pc.lora_alpha == kw["lora_alpha"], (name, pc.r, pc.lora_alpha)
        assert set(pc.target_modules) == set(kw["target_modules"]), pc.target_modules
    pipe_ab.disable_lora()
    out_base = unet_out(u, inputs)
    pipe_ab.enable_lora()
    pipe_ab.set_adapters("a")
    out_a = unet_out(u, inputs)
    pipe_ab.set_adapters("b")
    out_b = unet_out(u, inputs)
    pipe_ab.set_adapters(["a", "b"], adapter_weights=[1.0, 1.0])
    out_ab = unet_out(u, inputs)
    # scale_b = alpha/r * weight: weight 1/4 gives scale 1 (used for the stripped-metadata check)
    pipe_ab.set_adapters("b", adapter_weights=0.25)
    out_b_scale1 = unet_out(u, inputs)
    assert torch.equal(out_base, ref_unet["out"]), (out_base - ref_unet["out"]).abs().max()

    # each adapter loaded alone into its own fresh pipeline gives the same outputs
    for name, want in (("a", out_a), ("b", out_b)):
        p1 = load_pipe_with([name])
        assert torch.equal(unet_out(p1.unet, inputs), want), name

    # the in-memory adapters (before saving) give the same outputs
    mem_unet.disable_lora()
    assert torch.equal(unet_out(mem_unet, inputs), out_base)
    mem_unet.enable_lora()
    for names, want in ((["a"], out_a), (["b"], out_b), (["a", "b"], out_ab)):
        mem_unet.set_adapters(names, weights=[1.0] * len(names))
        got = unet_out(mem_unet, inputs)
        assert torch.equal(got, want), (names, (got - want).abs().max())

    # y = W x + sum_i scale_i B_i A_i x: compare with a UNet whose weights were merged by hand
    for weights, want in (({"a": 1.0}, out_a), ({"b": 1.0}, out_b), ({"a": 1.0, "b": 1.0}, out_ab)):
        got = unet_out(manual_fused_unet(files, weights), inputs)
        err = (got - want).abs().max().item()
        print(f"   hand-merged {sorted(weights)} vs peft: max |diff| = {err:.3g}")
        assert err < 1e-4, err

    # scale on load without metadata: strip __metadata__ and load again
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in ("a", "b"):
            fname = ADAPTERS[name][0]
            _write_plain(tmp / fname, files[name])
        p_a = load_pipe_with(["a"], tmp)
        p_b = load_pipe_with(["b"], tmp)
        stripped_a = unet_out(p_a.unet, inputs)
        stripped_b = unet_out(p_b.unet, inputs)
        stripped_info = {
            "a": (p_a.unet.peft_config["a"].r, p_a.unet.peft_config["a"].lora_alpha),
            "b": (p_b.unet.peft_config["b"].r, p_b.unet.peft_config["b"].lora_alpha),
        }
    print(f"   metadata stripped: (r, lora_alpha) rebuilt by diffusers = {stripped_info}")
    print(f"   metadata stripped: a max|diff| vs out_a = {(stripped_a - out_a).abs().max().item():.3g}; "
          f"b max|diff| vs out_b = {(stripped_b - out_b).abs().max().item():.3g}, "
          f"vs b at scale 1 = {(stripped_b - out_b_scale1).abs().max().item():.3g}")
    assert torch.equal(stripped_a, out_a)
    assert torch.equal(stripped_b, out_b_scale1) and not torch.equal(stripped_b, out_b)

    # pipeline with LoRA "a" (from the file), settings and latents of reference/pipeline.safetensors
    ref_pipe, common = pipe_settings()
    latents = ref_pipe["latents"]
    pipe_a = load_pipe_with(["a"])
    pipe_a.disable_lora()
    base_final, base_image = run_pipe(pipe_a, common, latents)
    assert torch.equal(base_final, ref_pipe["final_latents"]) and torch.equal(base_image, ref_pipe["image"])
    pipe_a.enable_lora()
    pipe_a_final, pipe_a_image = run_pipe(pipe_a, common, latents)
    # the same with the in-memory adapter
    mem_unet.set_adapters("a")
    mem_pipe = StableDiffusionPipeline(**{**mf.load_tiny_pipeline().components, "unet": mem_unet})
    mem_pipe.set_progress_bar_config(disable=True)
    mem_final, _ = run_pipe(mem_pipe, common, latents)
    assert torch.equal(mem_final, pipe_a_final)

    # merged weight of one module for adapter "a": by hand from the file, checked against fuse_lora
    fa = files["a"]
    ka, kb = f"unet.{MERGED_MODULE}.lora_A.weight", f"unet.{MERGED_MODULE}.lora_B.weight"
    kw_a = ADAPTERS["a"][1]
    scale_a = kw_a["lora_alpha"] / kw_a["r"]
    merged = base_sd[f"{MERGED_MODULE}.weight"] + (fa[kb] @ fa[ka]) * scale_a
    pipe_f = load_pipe_with(["a"])
    pipe_f.fuse_lora(components=["unet"], lora_scale=1.0, adapter_names=["a"])
    fused = pipe_f.unet.get_submodule(MERGED_MODULE).base_layer.weight.detach()
    print(f"   merged_to_q: by hand vs fuse_lora max |diff| = {(fused - merged).abs().max().item():.3g}")
    assert torch.equal(fused, merged)

    metadata = {
        "adapters": json.dumps(
            {
                n: {"file": f, "seed": s, "init": "0.1*randn for every lora_A and lora_B", **kw,
                    "scale": kw["lora_alpha"] / kw["r"]}
                for n, (f, kw, s) in ADAPTERS.items()
            },
            sort_keys=True,
        ),
        "unet_inputs": "sample, timestep, encoder_hidden_states of reference/unet.safetensors",
        "out_ab": "set_adapters(['a','b'], adapter_weights=[1.0, 1.0])",
        "pipeline": json.dumps({**common, "latents": "reference/pipeline.safetensors latents"}, sort_keys=True),
        "merged_to_q": f"{MERGED_MODULE}.weight + (lora_alpha/r) * lora_B @ lora_A of a_r4.safetensors "
        "(float32, by hand; equals fuse_lora)",
        "loaded_from_files": "pipe.load_lora_weights(lora/, weight_name=..., adapter_name=...)",
    }
    mf.save(
        LORA_DIR / "reference.safetensors",
        {
            "out_base": out_base,
            "out_a": out_a,
            "out_b": out_b,
            "out_ab": out_ab,
            "pipe_a_final_latents": pipe_a_final,
            "pipe_a_image": pipe_a_image,
            "merged_to_q": merged,
        },
        metadata,
    )
    print(f"   max |out_a - out_base| = {(out_a - out_base).abs().max().item():.4g}, "
          f"max |out_b - out_base| = {(out_b - out_base).abs().max().item():.4g}, "
          f"max |out_ab - out_base| = {(out_ab - out_base).abs().max().item():.4g}, "
          f"max |pipe_a_image - image| = {(pipe_a_image - ref_pipe['image']).abs().max().item():.4g}")
    total = sum(p.stat().st_size for p in LORA_DIR.rglob("*") if p.is_file())
    print(f"lora fixture size: {total} bytes")
    assert total < 300_000


def _write_plain(path: Path, tensors: dict):
    """The same tensors without any __metadata__ (as an older or a hand-rolled exporter would write)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    assert file_metadata(path) is None


if __name__ == "__main__":
    mf.check_versions()
    mf.diffusers_logging.disable_progress_bar()
    run()
