//! `ril export` on the tiny pipeline's peft fixtures (made with peft/diffusers,
//! tools/parity/make_lora_fixtures.py): kohya keys read back to the same weights (alone, and
//! stacked files to the same update), float16 is the rounding of the float32 values, and the
//! merged UNet folder loads and gives the LoRA-adapted UNet's output; bad requests are refused.

mod common;

use std::path::{Path, PathBuf};

use burn::prelude::*;
use common::ril;
use lora_group::io::read_lora;
use lora_group::{LoraModel, import_task};
use ril_testkit::{assert_close, scratch};
use sd_model::UNet2DConditionModel;
use sd_model::load::SafetensorsFile;
use sd_model::pipeline::load_unet;

type B = sd_model::backend::Cpu;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("crates/sd-model/tests/fixtures")
        .join(name)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn export(args: &[&str]) -> String {
    let (ok, out, err) = ril(&[&["export"], args].concat());
    assert!(ok, "{args:?}: {err}");
    out
}

/// The diffusers paths of the tiny UNet's LoRA-capable layers.
fn layers(unet: &UNet2DConditionModel<B>) -> Vec<String> {
    let mut v = Vec::new();
    unet.visit_lora(&mut |p, _| v.push(p.to_string()));
    v
}

fn tiny_unet() -> UNet2DConditionModel<B> {
    load_unet(&fixture("tiny-sd/unet"), &Default::default()).unwrap()
}

/// The UNet output on the parity inputs of reference/unet.safetensors.
fn forward(unet: &UNet2DConditionModel<B>) -> Vec<f32> {
    let r = SafetensorsFile::open(&fixture("reference/unet.safetensors")).unwrap();
    let device = Default::default();
    let t: Vec<f32> = r
        .read_i64("timestep")
        .unwrap()
        .iter()
        .map(|&t| t as f32)
        .collect();
    ril_testkit::values(unet.forward(
        r.tensor("sample", &device).unwrap(),
        Tensor::from_data(TensorData::new(t, [2]), &device),
        r.tensor("encoder_hidden_states", &device).unwrap(),
    ))
}

/// Per layer, the dense update `alpha / r · B A` ([out, in], f64) of a set of pairs.
fn updates(file: &lora_group::io::LoraFile) -> Vec<(String, Vec<f64>)> {
    file.pairs
        .iter()
        .map(|(layer, (a, b))| {
            let (r, d_in, d_out) = (a.shape[0], a.shape[1], b.shape[0]);
            let (a, b) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
            let s = file.alpha / r as f64;
            let mut d = vec![0f64; d_out * d_in];
            for o in 0..d_out {
                for i in 0..d_in {
                    d[o * d_in + i] = s
                        * (0..r)
                            .map(|k| b[o * r + k] as f64 * a[k * d_in + i] as f64)
                            .sum::<f64>();
                }
            }
            (layer.clone(), d)
        })
        .collect()
}

#[test]
fn kohya_keys_read_back_to_the_same_weights_alone_stacked_and_in_float16() {
    let dir = scratch("export-kohya");
    let a = fixture("lora/a_r4.safetensors");
    let b = fixture("lora/b_r2_alpha8.safetensors");
    let layers = layers(&tiny_unet());
    let kohya = dir.join("a-kohya.safetensors");
    let out = export(&["--lora", s(&a), "--format", "kohya", "--out", s(&kohya)]);
    assert!(out.contains("kohya, 128 layers, rank 4, alpha 4"), "{out}");
    // The key layout: three tensors per layer, named after the diffusers path.
    let file = SafetensorsFile::open(&kohya).unwrap();
    let keys: Vec<&str> = file.keys().collect();
    assert_eq!(keys.len(), 3 * 128);
    assert!(keys.iter().all(|k| k.starts_with("lora_unet_")), "{keys:?}");
    let name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0";
    assert_eq!(
        file.shape(&format!("{name}.lora_down.weight")),
        Some(&[4, 8][..])
    );
    assert_eq!(
        file.shape(&format!("{name}.lora_up.weight")),
        Some(&[8, 4][..])
    );
    assert_eq!(file.shape(&format!("{name}.alpha")), Some(&[][..]));
    assert_eq!(file.read_f32(&format!("{name}.alpha")).unwrap(), [4.0]);
    // Read back onto the model's layer paths: the same pairs, bit for bit, and the same alpha.
    let back = lora_group::kohya::read(&kohya, &layers).unwrap();
    let orig = read_lora(&a, "unet").unwrap();
    assert_eq!((back.rank, back.alpha), (orig.rank, orig.alpha));
    assert_eq!(back.pairs, orig.pairs);
    // Two files stacked: one file (rank 6 = 4 + 2, alpha = rank) whose update per layer is the
    // sum of the two files' updates. Both sides sum the same f32 products in f64; the stacked
    // B holds b's columns times its scale 4 rounded to f32 (exact: a power of two), so only the
    // f64 summation order differs.
    let stacked = dir.join("ab-kohya.safetensors");
    export(&[
        "--lora",
        s(&a),
        "--lora",
        s(&b),
        "--format",
        "kohya",
        "--out",
        s(&stacked),
    ]);
    let ab = lora_group::kohya::read(&stacked, &layers).unwrap();
    assert_eq!((ab.rank, ab.alpha), (6, 6.0));
    let mut expected = updates(&orig);
    for (layer, d) in updates(&read_lora(&b, "unet").unwrap()) {
        let e = &mut expected.iter_mut().find(|(l, _)| *l == layer).unwrap().1;
        e.iter_mut().zip(&d).for_each(|(e, d)| *e += d);
    }
    for ((la, got), (le, want)) in updates(&ab).iter().zip(&expected) {
        assert_eq!(la, le);
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= 1e-12 * (1.0 + w.abs()), "{la}: {g} vs {w}");
        }
    }
    // float16: every value is the float32 value rounded to the nearest half.
    let half = dir.join("a-kohya-fp16.safetensors");
    export(&[
        "--lora",
        s(&a),
        "--format",
        "kohya",
        "--fp16",
        "--out",
        s(&half),
    ]);
    let h = lora_group::kohya::read(&half, &layers).unwrap();
    for (layer, (ha, hb)) in &h.pairs {
        let (oa, ob) = &orig.pairs[layer];
        for (got, want) in [(ha, oa), (hb, ob)] {
            let rounded: Vec<f32> = want
                .to_vec::<f32>()
                .unwrap()
                .iter()
                .map(|&v| burn::tensor::f16::from_f32(v).to_f32())
                .collect();
            assert_eq!(got.to_vec::<f32>().unwrap(), rounded, "{layer}");
        }
    }
    // peft (the default) writes the file ril reads, with the same pairs.
    let peft = dir.join("a-peft.safetensors");
    export(&["--lora", s(&a), "--out", s(&peft)]);
    assert_eq!(read_lora(&peft, "unet").unwrap().pairs, orig.pairs);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_merged_unet_folder_gives_the_lora_adapted_output() {
    let dir = scratch("export-merged");
    let a = fixture("lora/a_r4.safetensors");
    let b = fixture("lora/b_r2_alpha8.safetensors");
    let out = dir.join("unet");
    let printed = export(&[
        "--lora",
        s(&a),
        "--lora",
        s(&b),
        "--format",
        "merged-unet",
        "--model",
        s(&fixture("tiny-sd")),
        "--out",
        s(&out),
    ]);
    assert!(printed.contains("128 layers adapted"), "{printed}");
    // The base's config as it is, and the base file's keys with the same shapes.
    let base_dir = fixture("tiny-sd/unet");
    assert_eq!(
        std::fs::read(out.join("config.json")).unwrap(),
        std::fs::read(base_dir.join("config.json")).unwrap()
    );
    let merged_file =
        SafetensorsFile::open(&out.join("diffusion_pytorch_model.safetensors")).unwrap();
    let base_file =
        SafetensorsFile::open(&base_dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    let mut keys: Vec<&str> = merged_file.keys().collect();
    let mut base_keys: Vec<&str> = base_file.keys().collect();
    keys.sort();
    base_keys.sort();
    assert_eq!(keys, base_keys);
    for k in &keys {
        assert_eq!(merged_file.shape(k), base_file.shape(k), "{k}");
        // Only the adapted projections change; every other tensor is the base's, bit for bit.
        let adapted = [".to_q.", ".to_k.", ".to_v.", ".to_out.0."]
            .iter()
            .any(|p| k.contains(p))
            && k.ends_with(".weight");
        let same = merged_file.read_f32(k).unwrap() == base_file.read_f32(k).unwrap();
        assert_eq!(same, !adapted, "{k}");
    }
    // The merged UNet computes what the base UNet with both pairs computes: W x + s B (A x)
    // against (W + s B A) x, the same maths with the f32 rounding in another place (the LoRA
    // tests' merge tolerance: 1e-5 of the output's scale).
    let merged = load_unet::<B>(&out, &Default::default()).unwrap();
    let mut adapted = tiny_unet();
    import_task(&mut adapted, &a, "unet").unwrap();
    import_task(&mut adapted, &b, "unet").unwrap();
    let expected = forward(&adapted);
    let base = forward(&tiny_unet());
    assert!(
        expected
            .iter()
            .zip(&base)
            .any(|(e, b)| (e - b).abs() > 1e-2),
        "the pairs move the output"
    );
    assert_close("merged unet", &forward(&merged), &expected, 0.0, 1e-5);
    // The merged file records its tensors' checksum, and a byte changed in its data (the last
    // byte: a tensor value, not the header) is refused by name when it is loaded again.
    let weights = out.join("diffusion_pytorch_model.safetensors");
    assert!(merged_file.metadata("ril_sha256").is_some());
    let mut bytes = std::fs::read(&weights).unwrap();
    let good = bytes.clone();
    *bytes.last_mut().unwrap() ^= 0x01;
    std::fs::write(&weights, &bytes).unwrap();
    let err = load_unet::<B>(&out, &Default::default())
        .expect_err("a damaged merged UNet is refused")
        .to_string();
    assert!(
        err.contains("diffusion_pytorch_model.safetensors is corrupt")
            && err.contains("ril_sha256"),
        "{err}"
    );
    std::fs::write(&weights, &good).unwrap();
    // A second export replaces the earlier one; a folder holding anything else is not replaced.
    std::fs::write(out.join("notes.txt"), b"mine").unwrap();
    let (ok, _, err) = ril(&[
        "export",
        "--lora",
        s(&a),
        "--format",
        "merged-unet",
        "--model",
        s(&fixture("tiny-sd")),
        "--out",
        s(&out),
    ]);
    assert!(
        !ok && err.contains(s(&out)) && err.contains("not replacing"),
        "{err}"
    );
    assert!(out.join("notes.txt").exists());
    let (ok, _, err) = ril(&[
        "export",
        "--lora",
        s(&a),
        "--format",
        "merged-unet",
        "--out",
        "x",
    ]);
    assert!(!ok && err.contains("--model"), "{err}");
    let (ok, _, err) = ril(&[
        "export",
        "--lora",
        s(&a),
        "--format",
        "kohya",
        "--model",
        "m",
        "--out",
        "x",
    ]);
    assert!(
        !ok && err.contains("--model is only used by --format merged-unet"),
        "{err}"
    );
    let (ok, _, err) = ril(&["export", "--lora", s(&a), "--format", "a1111", "--out", "x"]);
    assert!(
        !ok && err.contains("--format") && err.contains("merged-unet"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn pairs_on_1x1_convolutions_keep_their_kernel_shape_in_every_layout() {
    let dir = scratch("export-conv");
    // A task on the transformers' proj_in / proj_out (1x1 convolutions in SD 1.x checkpoints),
    // with non-zero up-projections.
    let mut unet = tiny_unet();
    let targets = lora_group::Targets::pattern(r".*\.proj_(in|out)").unwrap();
    lora_group::push_task(&mut unet, &targets, 2, 4.0).unwrap();
    let mut rng = sd_model::noise::NoiseRng::new(5);
    unet.visit_lora_mut(&mut |_, l| {
        for p in &mut l.lora {
            let [o, r] = p.lora_B.val().dims();
            p.lora_B = burn::module::Param::from_tensor(
                rng.tensor::<B, 2>([o, r], &Default::default()) * 0.1,
            );
        }
    });
    let task = dir.join("conv.safetensors");
    lora_group::export_task(&unet, 0, "unet", &task).unwrap();
    let name = "lora_unet_down_blocks_0_attentions_0_proj_in";
    let kohya = dir.join("conv-kohya.safetensors");
    export(&["--lora", s(&task), "--format", "kohya", "--out", s(&kohya)]);
    let file = SafetensorsFile::open(&kohya).unwrap();
    assert_eq!(
        file.shape(&format!("{name}.lora_down.weight")),
        Some(&[2, 8, 1, 1][..])
    );
    assert_eq!(
        file.shape(&format!("{name}.lora_up.weight")),
        Some(&[8, 2, 1, 1][..])
    );
    let back = lora_group::kohya::read(&kohya, &layers(&unet)).unwrap();
    assert_eq!(back.pairs, read_lora(&task, "unet").unwrap().pairs);
    // Two files stacked in the peft layout (as `ril soup` writes them): still 1x1 kernels.
    let stacked = dir.join("conv-twice.safetensors");
    export(&["--lora", s(&task), "--lora", s(&task), "--out", s(&stacked)]);
    let key = "unet.down_blocks.0.attentions.0.proj_in.lora_A.weight";
    assert_eq!(
        SafetensorsFile::open(&stacked).unwrap().shape(key),
        Some(&[4, 8, 1, 1][..])
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
