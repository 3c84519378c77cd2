//! Loading the checkpoints users have (fp16 variants, text encoders with or without the
//! `text_model.` prefix and with `position_ids`, old VAE attention names) and refusing bad ones
//! with an error that names the file, the key and both shapes.

mod common;

use std::path::PathBuf;

use burn::prelude::*;
use common::{
    B, RawEntry, assert_close, copy_dir, fixture, read_raw, reference, scratch, values, write_raw,
};
use safetensors::Dtype;
use sd_model::load::{LoadError, SafetensorsFile};
use sd_model::pipeline::{
    InitLatents, SampleRequest, StableDiffusion, load_text_encoder, load_unet, load_vae,
};

fn f32_to_f16_bytes(bytes: &[u8]) -> Vec<u8> {
    bytes
        .chunks_exact(4)
        .flat_map(|c| f32_to_f16(f32::from_le_bytes(c.try_into().unwrap())).to_le_bytes())
        .collect()
}

/// Round-to-nearest-even f32 → f16 for normal values (the tiny weights are far from the f16
/// range limits; subnormals flush to zero, which these weights never reach).
fn f32_to_f16(v: f32) -> u16 {
    let bits = v.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32 - 127 + 15;
    if exp <= 0 {
        return sign;
    }
    assert!(exp < 31, "value {v} out of f16 range");
    let mant = bits & 0x7f_ffff;
    let mut h = ((exp as u32) << 10) | (mant >> 13);
    let rest = mant & 0x1fff;
    if rest > 0x1000 || (rest == 0x1000 && h & 1 == 1) {
        h += 1;
    }
    sign | h as u16
}

fn unet_output(dir: &std::path::Path) -> Vec<f32> {
    let r = reference("unet");
    let device = Default::default();
    let unet = load_unet::<B>(dir, &device).unwrap();
    let t: Vec<f32> = r
        .read_i64("timestep")
        .unwrap()
        .iter()
        .map(|&t| t as f32)
        .collect();
    let t = Tensor::<B, 1>::from_data(TensorData::new(t, [2]), &device);
    values(unet.forward(
        r.tensor("sample", &device).unwrap(),
        t,
        r.tensor("encoder_hidden_states", &device).unwrap(),
    ))
}

#[test]
fn fp16_weights_load_as_f32() {
    let dir = scratch("fp16");
    let entries: Vec<RawEntry> =
        read_raw(&fixture("tiny-sd/unet/diffusion_pytorch_model.safetensors"))
            .into_iter()
            .map(|e| RawEntry {
                dtype: Dtype::F16,
                bytes: f32_to_f16_bytes(&e.bytes),
                ..e
            })
            .collect();
    std::fs::copy(fixture("tiny-sd/unet/config.json"), dir.join("config.json")).unwrap();
    write_raw(
        &dir.join("diffusion_pytorch_model.fp16.safetensors"),
        &entries,
    );
    let out = unet_output(&dir);
    // Weights rounded to f16 (relative error ≤ 2^-11 each) move the output by far more than f32
    // rounding, but by less than 1 % of its scale.
    assert_close(
        "fp16 unet",
        &out,
        &reference("unet").read_f32("out").unwrap(),
        1e-2,
        1e-2,
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn text_encoder_with_prefix_and_position_ids_loads() {
    let dir = scratch("prefix");
    std::fs::copy(
        fixture("tiny-sd/text_encoder/config.json"),
        dir.join("config.json"),
    )
    .unwrap();
    let mut entries: Vec<RawEntry> = read_raw(&fixture("tiny-sd/text_encoder/model.safetensors"))
        .into_iter()
        .map(|e| RawEntry {
            name: format!("text_model.{}", e.name),
            ..e
        })
        .collect();
    entries.push(RawEntry {
        name: "text_model.embeddings.position_ids".into(),
        dtype: Dtype::I64,
        shape: vec![1, 77],
        bytes: (0..77i64).flat_map(|i| i.to_le_bytes()).collect(),
    });
    write_raw(&dir.join("model.safetensors"), &entries);
    let r = reference("text_encoder");
    let device = Default::default();
    let model = load_text_encoder::<B>(&dir, &device).unwrap();
    let ids = Tensor::<B, 2, Int>::from_data(
        TensorData::new(r.read_i64("input_ids").unwrap(), [2, 77]),
        &device,
    );
    let out = values(model.forward(ids).last_hidden_state);
    // The same weights under other names: the same numbers as the unprefixed file.
    assert_close(
        "prefixed",
        &out,
        &r.read_f32("last_hidden_state").unwrap(),
        1e-4,
        1e-5,
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn old_vae_attention_names_load() {
    let dir = scratch("oldvae");
    std::fs::copy(fixture("tiny-sd/vae/config.json"), dir.join("config.json")).unwrap();
    let entries: Vec<RawEntry> =
        read_raw(&fixture("tiny-sd/vae/diffusion_pytorch_model.safetensors"))
            .into_iter()
            .map(|e| RawEntry {
                name: e
                    .name
                    .replace(".to_q.", ".query.")
                    .replace(".to_k.", ".key.")
                    .replace(".to_v.", ".value.")
                    .replace(".to_out.0.", ".proj_attn."),
                ..e
            })
            .collect();
    assert!(entries.iter().any(|e| e.name.contains("proj_attn")));
    write_raw(&dir.join("diffusion_pytorch_model.safetensors"), &entries);
    let r = reference("vae");
    let device = Default::default();
    let vae = load_vae::<B>(&dir, &device).unwrap();
    let out = values(vae.decode(r.tensor("latents", &device).unwrap()));
    assert_close(
        "old names",
        &out,
        &r.read_f32("decoded").unwrap(),
        1e-4,
        1e-5,
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A copy of the tiny UNet folder with its weights file altered by `edit`; returns the load
/// error's message.
fn unet_error(name: &str, edit: impl FnOnce(&mut Vec<RawEntry>)) -> String {
    let dir = scratch(name);
    std::fs::copy(fixture("tiny-sd/unet/config.json"), dir.join("config.json")).unwrap();
    let mut entries = read_raw(&fixture("tiny-sd/unet/diffusion_pytorch_model.safetensors"));
    edit(&mut entries);
    write_raw(&dir.join("diffusion_pytorch_model.safetensors"), &entries);
    let err = load_unet::<B>(&dir, &Default::default()).expect_err("load must fail");
    std::fs::remove_dir_all(&dir).unwrap();
    format!("{err:#}")
}

#[test]
fn missing_key_is_named() {
    let err = unet_error("missing", |e| e.retain(|t| t.name != "conv_in.bias"));
    assert!(err.contains("diffusion_pytorch_model.safetensors"), "{err}");
    assert!(err.contains("missing keys: `conv_in.bias`"), "{err}");
}

#[test]
fn unexpected_key_is_named() {
    let err = unet_error("unexpected", |e| {
        let mut extra = e[0].clone();
        extra.name = "down_blocks.9.extra.weight".into();
        e.push(extra);
    });
    assert!(
        err.contains("unexpected keys: `down_blocks.9.extra.weight`"),
        "{err}"
    );
}

#[test]
fn wrong_shape_names_key_and_both_shapes() {
    let err = unet_error("shape", |e| {
        let t = e.iter_mut().find(|t| t.name == "conv_in.weight").unwrap();
        t.shape = vec![8, 4, 9, 1];
    });
    assert!(
        err.contains("`conv_in.weight`: the model expects [8, 4, 3, 3], the file has [8, 4, 9, 1]"),
        "{err}"
    );
}

#[test]
fn integer_weights_are_refused_by_name() {
    let err = unet_error("dtype", |e| {
        let t = e.iter_mut().find(|t| t.name == "conv_in.bias").unwrap();
        t.dtype = Dtype::I32;
    });
    assert!(err.contains("`conv_in.bias` (I32)"), "{err}");
}

#[test]
fn non_finite_weights_are_refused_by_file_and_key() {
    // A NaN anywhere in a weight would give black images with exit 0 (NaN becomes 0 in the PNG
    // conversion); the load must stop on it and say where it is.
    for (name, value) in [("nan", f32::NAN), ("inf", f32::INFINITY)] {
        let err = unet_error(name, |e| {
            let t = e.iter_mut().find(|t| t.name == "conv_in.bias").unwrap();
            t.bytes[4..8].copy_from_slice(&value.to_le_bytes());
        });
        assert!(
            err.contains("diffusion_pytorch_model.safetensors")
                && err.contains("tensor `conv_in.bias` holds a non-finite value")
                && err.contains("flat index 1"),
            "{err}"
        );
    }
}

#[test]
fn load_errors_are_typed() {
    // Callers can tell a missing file from a missing key or a wrong rank without parsing text.
    let missing = scratch("typed").join("absent.safetensors");
    assert!(matches!(
        SafetensorsFile::open(&missing),
        Err(LoadError::Io { path, .. }) if path == missing
    ));
    let file = SafetensorsFile::open(&fixture("tiny-sd/unet/diffusion_pytorch_model.safetensors"))
        .unwrap();
    assert!(matches!(
        file.read_f32("no.such.key"),
        Err(LoadError::MissingKey { key, .. }) if key == "no.such.key"
    ));
    assert!(matches!(
        file.tensor::<B, 2>("conv_in.weight", &Default::default()),
        Err(LoadError::Shape { found, .. }) if found == [8, 4, 3, 3]
    ));
}

#[test]
fn truncated_and_corrupt_files_are_named() {
    let dir = scratch("truncated");
    std::fs::copy(fixture("tiny-sd/unet/config.json"), dir.join("config.json")).unwrap();
    let bytes = std::fs::read(fixture("tiny-sd/unet/diffusion_pytorch_model.safetensors")).unwrap();
    let file = dir.join("diffusion_pytorch_model.safetensors");
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let err = format!(
        "{:#}",
        load_unet::<B>(&dir, &Default::default()).err().unwrap()
    );
    assert!(
        err.contains(&file.display().to_string()) && err.contains("not a valid safetensors"),
        "{err}"
    );
    std::fs::write(&file, b"\xff\xff\xff\xff\xff\xff\xff\x7fgarbage").unwrap();
    let err = format!(
        "{:#}",
        load_unet::<B>(&dir, &Default::default()).err().unwrap()
    );
    assert!(
        err.contains(&file.display().to_string()) && err.contains("not a valid safetensors"),
        "{err}"
    );
    std::fs::remove_file(&file).unwrap();
    let err = format!(
        "{:#}",
        load_unet::<B>(&dir, &Default::default()).err().unwrap()
    );
    assert!(
        err.contains("diffusion_pytorch_model.safetensors is missing"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn files_ril_wrote_are_checked_against_their_recorded_checksum() {
    // A UNet saved by ril (as `ril pretrain` writes its pipeline) records its tensors' SHA-256;
    // loading it verifies that, so a byte damaged on disk is an error naming the file, not wrong
    // weights. Files from other tools (the fixture, written by diffusers) carry none and load.
    let dir = scratch("checksum");
    std::fs::copy(fixture("tiny-sd/unet/config.json"), dir.join("config.json")).unwrap();
    let unet = load_unet::<B>(&fixture("tiny-sd/unet"), &Default::default()).unwrap();
    let config = sd_model::UNetConfig::from_file(&dir.join("config.json")).unwrap();
    let file = dir.join("diffusion_pytorch_model.safetensors");
    sd_model::save::save_module_with(
        &unet,
        &file,
        "",
        &Default::default(),
        &sd_model::save::unet_file_shape(config.use_linear_projection),
    )
    .unwrap();
    let saved = SafetensorsFile::open(&file).unwrap();
    assert_eq!(saved.metadata("ril_sha256").map(|s| s.len()), Some(64));
    assert!(
        SafetensorsFile::open(&fixture("tiny-sd/unet/diffusion_pytorch_model.safetensors"))
            .unwrap()
            .metadata("ril_sha256")
            .is_none()
    );
    let expected = unet_output(&fixture("tiny-sd/unet"));
    assert_eq!(
        unet_output(&dir),
        expected,
        "the saved UNet is the loaded one"
    );
    // One bit of the last tensor value changed.
    let mut bytes = std::fs::read(&file).unwrap();
    *bytes.last_mut().unwrap() ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();
    assert!(matches!(
        SafetensorsFile::open(&file),
        Err(LoadError::Checksum { path, .. }) if path == file
    ));
    let err = format!(
        "{:#}",
        load_unet::<B>(&dir, &Default::default()).err().unwrap()
    );
    assert!(
        err.contains(&format!("{} is corrupt", file.display())) && err.contains("ril_sha256"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unknown_block_type_names_file_and_type() {
    let dir = scratch("blocktype");
    let config = std::fs::read_to_string(fixture("tiny-sd/unet/config.json")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        config.replacen("\"DownBlock2D\"", "\"SimpleDownBlock2D\"", 1),
    )
    .unwrap();
    let err = format!(
        "{:#}",
        load_unet::<B>(&dir, &Default::default()).err().unwrap()
    );
    assert!(
        err.contains("config.json") && err.contains("`SimpleDownBlock2D`"),
        "{err}"
    );
    std::fs::write(dir.join("config.json"), "{ not json").unwrap();
    let err = format!(
        "{:#}",
        load_unet::<B>(&dir, &Default::default()).err().unwrap()
    );
    assert!(
        err.contains("invalid config") && err.contains("config.json") && err.contains("line 1"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_folder_and_index_are_named() {
    let device = Default::default();
    let err = StableDiffusion::<B>::load(std::path::Path::new("/nonexistent/sd"), &device)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("/nonexistent/sd") && err.contains("does not exist"),
        "{err}"
    );
    let dir = scratch("noindex");
    copy_dir(&fixture("tiny-sd"), &dir);
    std::fs::remove_file(dir.join("model_index.json")).unwrap();
    let err = StableDiffusion::<B>::load(&dir, &device)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("model_index.json is missing"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn empty_and_over_long_prompts_are_refused() {
    let device = Default::default();
    let sd = StableDiffusion::<B>::load(&fixture("tiny-sd"), &device).unwrap();
    let request = |prompt: String| SampleRequest::<B> {
        prompts: vec!["a cat".into(), prompt],
        negative_prompts: vec![],
        height: 64,
        width: 64,
        steps: 2,
        guidance: 7.5,
        eta: 0.0,
        noise_seed: 0,
        latents: InitLatents::Seed(0),
    };
    let err = sd
        .sample(&request("  ".into()), &device, |_, _| {})
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("prompt 1 is empty"), "{err}");
    let err = sd
        .sample(&request("cat ".repeat(80)), &device, |_, _| {})
        .err()
        .unwrap();
    let err = format!("{err:#}");
    // The tiny vocabulary splits "cat" in two: 160 tokens.
    assert!(
        err.contains("prompt 1") && err.contains("160 tokens; at most 75"),
        "{err}"
    );
}

#[test]
fn sampling_parameters_outside_their_range_are_refused_before_any_work() {
    let device = Default::default();
    let sd = StableDiffusion::<B>::load(&fixture("tiny-sd"), &device).unwrap();
    let request = |eta: f64, guidance: f64, steps: usize| SampleRequest::<B> {
        prompts: vec!["a cat".into()],
        negative_prompts: vec![],
        height: 64,
        width: 64,
        steps,
        guidance,
        eta,
        noise_seed: 0,
        latents: InitLatents::Seed(0),
    };
    // eta > 1 makes DDIM's sigma exceed the step's noise level (NaN latents, black images).
    for (req, expected) in [
        (request(1.5, 7.5, 2), "eta must be in [0, 1], got 1.5"),
        (request(-0.1, 7.5, 2), "eta must be in [0, 1], got -0.1"),
        (request(0.0, f64::NAN, 2), "guidance must be finite"),
        (request(0.0, 7.5, 0), "steps must be ≥ 1"),
        (
            SampleRequest {
                height: 1 << 20,
                ..request(0.0, 7.5, 2)
            },
            "height and width must be at most 4096 pixels, got 1048576x64",
        ),
    ] {
        let err = sd
            .sample(&req, &device, |_, _| {})
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(expected), "{err}");
    }
}

#[test]
fn non_finite_pixels_are_refused_not_written_black() {
    // NaN would become 0 in the 8-bit conversion: a black image and exit 0.
    let mut values = vec![0.5f32; 2 * 3 * 4 * 4];
    values[3 * 16 + 16 + 4 + 2] = f32::NAN; // image 1, channel 1, row 1, column 2
    let images =
        Tensor::<B, 4>::from_data(TensorData::new(values, [2, 3, 4, 4]), &Default::default());
    let err = sd_model::pipeline::to_rgb8(images)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("image 1 has a non-finite pixel value (NaN) at channel 1, row 1, column 2"),
        "{err}"
    );
}

/// The tiny pipeline copied to a scratch folder with `file` (relative) edited by `edit`.
fn edited_pipeline(name: &str, file: &str, edit: impl FnOnce(String) -> String) -> PathBuf {
    let dir = scratch(name);
    copy_dir(&fixture("tiny-sd"), &dir);
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, edit(text)).unwrap();
    dir
}

#[test]
fn config_values_that_would_divide_by_zero_or_overflow_are_refused_by_field() {
    // Each of these panicked (a division by zero, an underflow, an out-of-bounds index) or
    // tried a huge allocation before it was checked; now each is an error naming the field.
    let device = Default::default();
    let cases: [(&str, &str, &str, &str, &str); 7] = [
        (
            "unet/config.json",
            "\"norm_num_groups\": 4",
            "\"norm_num_groups\": 0",
            "norm_num_groups = 0",
            "unet",
        ),
        (
            "vae/config.json",
            "\"norm_num_groups\": 4",
            "\"norm_num_groups\": 0",
            "norm_num_groups = 0",
            "vae",
        ),
        (
            "unet/config.json",
            "\"layers_per_block\": 2",
            "\"layers_per_block\": 100000",
            "layers_per_block = 100000",
            "unet",
        ),
        (
            "vae/config.json",
            "\"latent_channels\": 4",
            "\"latent_channels\": 0",
            "latent_channels = 0",
            "vae",
        ),
        (
            "text_encoder/config.json",
            "\"hidden_size\": 24",
            "\"hidden_size\": 1000000000",
            "hidden_size = 1000000000",
            "text_encoder",
        ),
        (
            "tokenizer/tokenizer_config.json",
            "\"model_max_length\": 77",
            "\"model_max_length\": 1",
            "model_max_length = 1",
            "tokenizer_config.json",
        ),
        (
            "tokenizer/tokenizer_config.json",
            "\"model_max_length\": 77",
            "\"model_max_length\": 100",
            "longer than the text encoder's 77 positions",
            "tokenizer_config.json",
        ),
    ];
    for (i, (file, from, to, expected, names)) in cases.into_iter().enumerate() {
        let dir = edited_pipeline(&format!("cfg{i}"), file, |t| {
            assert!(t.contains(from), "{file} has no {from}");
            t.replace(from, to)
        });
        let err = format!(
            "{:#}",
            StableDiffusion::<B>::load(&dir, &device).err().unwrap()
        );
        assert!(
            err.contains(expected) && err.contains(names),
            "{file}: {err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn a_pipeline_of_another_architecture_is_refused_by_its_class_name() {
    let device = Default::default();
    for (i, (class, expected)) in [
        (
            "StableDiffusionXLPipeline",
            "`_class_name` is \"StableDiffusionXLPipeline\"",
        ),
        ("FluxPipeline", "`_class_name` is \"FluxPipeline\""),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = edited_pipeline(&format!("class{i}"), "model_index.json", |t| {
            t.replace("\"StableDiffusionPipeline\"", &format!("\"{class}\""))
        });
        let err = format!(
            "{:#}",
            StableDiffusion::<B>::load(&dir, &device).err().unwrap()
        );
        assert!(
            err.contains(expected) && err.contains("model_index.json"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
    let dir = edited_pipeline("class-json", "model_index.json", |_| "{ not json".into());
    let err = format!(
        "{:#}",
        StableDiffusion::<B>::load(&dir, &device).err().unwrap()
    );
    assert!(err.contains("model_index.json is not valid JSON"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
