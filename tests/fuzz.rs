//! Bounded fuzzing of every loader a user feeds files to (issue 18): each target starts from
//! valid files (committed fixtures or files written here), writes deterministic mutations of
//! them (bit flips, boundary integers in length fields, inserted, deleted, duplicated and
//! spliced ranges, truncation, and for text formats numbers replaced by extreme ones and stray
//! syntax) to the path the loader reads, and calls the loader. Every input must give `Ok` or an
//! error: a panic fails the test (the input is kept under the scratch folder's `crashes/`), and
//! an allocation above [`ALLOC_CAP`] aborts the process (the input being read is the target's
//! `input.*` file, named on stderr when the target starts). `RIL_FUZZ_INPUTS` sets the inputs
//! per target (default [`DEFAULT_INPUTS`]; the heavy targets run a quarter of them),
//! `RIL_FUZZ_SEED` the mutation seed, `RIL_FUZZ_ONLY` a comma-separated list of targets, `RIL_FUZZ_VERBOSE` prints each refusal; the
//! report (stderr) gives the inputs run, refused and accepted per target.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Result;
use burn::prelude::*;
use image::{ImageBuffer, Luma, LumaA, Rgb, Rgba};
use lora_group::LoraModel;

type B = sd_model::backend::Cpu;

/// No loader may ask for more than this in one allocation: every input here is under 3 MiB, so
/// a request this large can only come from a size field that was trusted.
const ALLOC_CAP: usize = 256 << 20;
/// Nor hold more than this at once while reading one input.
const LIVE_CAP: usize = 1 << 30;
const DEFAULT_INPUTS: usize = 400;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting live bytes and aborting on a request above [`ALLOC_CAP`]
/// (an allocation error cannot unwind, so the message is written without allocating).
struct Capped;

fn over_cap(size: usize) -> ! {
    use std::io::Write;
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = size;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut err = std::io::stderr();
    let _ = err.write_all(b"\nfuzz: a loader asked for ");
    let _ = err.write_all(&digits[i..]);
    let _ = err.write_all(
        b" bytes in one allocation, above the 256 MiB cap; the input is the current target's input file\n",
    );
    std::process::abort()
}

fn grew(size: usize) {
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_CAP {
            over_cap(layout.size());
        }
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_CAP {
            over_cap(layout.size());
        }
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > ALLOC_CAP {
            over_cap(new_size);
        }
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Capped = Capped;

#[path = "fuzzing/mutate.rs"]
mod mutate;

use mutate::{Rng, mutate};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> Vec<u8> {
    let p = root().join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A config whose relative paths point into the repository, written anywhere.
fn absolute_paths(text: &[u8], from: &str) -> Vec<u8> {
    let base = root().join(from);
    let text = String::from_utf8(text.to_vec()).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        match line.split_once(" = \"") {
            Some((k, v)) if !v.starts_with('/') && (v.contains('/') || v.contains('.')) => {
                out.push_str(&format!("{k} = \"{}/{v}\n", base.display()));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out.into_bytes()
}

fn safetensors_bytes(tensors: &[(&str, safetensors::Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, dt, shape, bytes)| {
            let v = safetensors::tensor::TensorView::new(*dt, shape.clone(), bytes).unwrap();
            (n.to_string(), v)
        })
        .collect();
    let meta: std::collections::HashMap<String, String> =
        [("format".to_string(), "pt".to_string())].into();
    safetensors::serialize(views, Some(meta)).unwrap()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn png(img: image::DynamicImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// Reads the file at the path as the loader under test does.
type Loader = dyn Fn(&Path) -> Result<()>;

/// One loader under fuzzing.
struct Target {
    name: &'static str,
    /// The file the loader reads, inside the target's folder.
    file: &'static str,
    seeds: Vec<Vec<u8>>,
    /// The first `must_load` seeds load; the others are valid files the loader must refuse.
    must_load: usize,
    text: bool,
    /// Costly per input (whole models built): a quarter of the inputs.
    heavy: bool,
    /// Files the loader reads beside `file` (written once).
    beside: Vec<(&'static str, Vec<u8>)>,
    run: Box<Loader>,
}

fn target(
    name: &'static str,
    file: &'static str,
    seeds: Vec<Vec<u8>>,
    text: bool,
    run: impl Fn(&Path) -> Result<()> + 'static,
) -> Target {
    Target {
        name,
        file,
        must_load: seeds.len(),
        seeds,
        text,
        heavy: false,
        beside: Vec::new(),
        run: Box::new(run),
    }
}

fn tiny(rel: &str) -> String {
    format!("crates/sd-model/tests/fixtures/{rel}")
}

fn tokenizer_files() -> Vec<(&'static str, Vec<u8>)> {
    [
        "vocab.json",
        "merges.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ]
    .into_iter()
    .map(|f| (f, read(&tiny(&format!("tiny-sd/tokenizer/{f}")))))
    .collect()
}

fn tokenizer_target(name: &'static str, file: &'static str) -> Target {
    let beside: Vec<_> = tokenizer_files()
        .into_iter()
        .filter(|(f, _)| *f != file)
        .collect();
    let seed = read(&tiny(&format!("tiny-sd/tokenizer/{file}")));
    let mut t = target(name, file, vec![seed], true, |path| {
        let tok = sd_model::ClipTokenizer::from_dir(path.parent().unwrap())?;
        tok.encode("a photo of a red circle on the left")?;
        tok.encode("")?;
        Ok(())
    });
    t.beside = beside;
    t
}

fn all_weights(path: &Path) -> Result<()> {
    let w = sd_model::load::Weights::open(path, None)?;
    for (key, entry) in w.entries() {
        if entry.float {
            w.data(key)?;
        }
    }
    Ok(())
}

fn targets() -> Vec<Target> {
    let device: burn::tensor::Device<B> = Default::default();
    let mut v = Vec::new();

    // Safetensors weights: every dtype the loader converts, metadata, a real model file.
    let small = safetensors_bytes(&[
        (
            "a.weight",
            safetensors::Dtype::F32,
            vec![2, 3],
            f32_bytes(&[1., 2., 3., 4., 5., 6.]),
        ),
        (
            "b.bias",
            safetensors::Dtype::F16,
            vec![4],
            vec![0, 60, 0, 64, 0, 66, 0, 188],
        ),
        ("c", safetensors::Dtype::BF16, vec![2], vec![128, 63, 0, 64]),
        (
            "d",
            safetensors::Dtype::I64,
            vec![1],
            7i64.to_le_bytes().to_vec(),
        ),
    ]);
    v.push(target(
        "safetensors",
        "weights.safetensors",
        vec![
            small.clone(),
            read(&tiny("reference/text_encoder.safetensors")),
        ],
        false,
        |path| {
            let f = sd_model::load::SafetensorsFile::open(path)?;
            let keys: Vec<String> = f.keys().map(str::to_string).collect();
            for k in &keys {
                if f.read_f32(k).is_err() {
                    f.read_i64(k)?;
                }
                let _ = f.shape(k);
            }
            let _ = f.metadata("format");
            all_weights(path)
        },
    ));

    // The same loader as a text encoder's weights: shapes checked against the model.
    {
        let mut t = target(
            "text_encoder_weights",
            "model.safetensors",
            vec![read(&tiny("tiny-sd/text_encoder/model.safetensors"))],
            false,
            move |path| {
                sd_model::pipeline::load_text_encoder::<B>(path.parent().unwrap(), &device)
                    .map(drop)
            },
        );
        t.beside = vec![(
            "config.json",
            read(&tiny("tiny-sd/text_encoder/config.json")),
        )];
        t.heavy = true;
        v.push(t);
    }

    // Latents for `ril sample --latents`.
    let latents = safetensors_bytes(&[(
        "latents",
        safetensors::Dtype::F32,
        vec![1, 4, 8, 8],
        f32_bytes(&vec![0.5; 256]),
    )]);
    v.push(target(
        "latents",
        "latents.safetensors",
        vec![latents],
        false,
        move |p| {
            let t = sd_model::pipeline::read_latents::<B>(p, [1, 4, 8, 8], &device)?;
            let _ = t.into_data();
            Ok(())
        },
    ));

    // PyTorch pickles (zip and legacy formats, and one that calls a function).
    let mut pickle = target(
        "pickle",
        "weights.pt",
        vec![
            read("tests/fixtures/fuzz/tiny_zip.pt"),
            read("tests/fixtures/fuzz/tiny_legacy.pt"),
            read("crates/rewards/tests/fixtures/malicious.pt"),
        ],
        false,
        all_weights,
    );
    pickle.must_load = 2;
    v.push(pickle);

    // LoRA files: peft and kohya.
    let peft = read(&tiny("lora/b_r2_alpha8.safetensors"));
    v.push(target(
        "lora_peft",
        "lora.safetensors",
        vec![peft.clone()],
        false,
        |p| lora_group::io::read_lora(p, "unet").map(drop),
    ));
    {
        let unet = sd_model::pipeline::load_unet::<B>(&root().join(tiny("tiny-sd/unet")), &device)
            .unwrap();
        let mut layers = Vec::new();
        unet.visit_lora(&mut |p, _| layers.push(p.to_string()));
        let dir = ril_testkit::scratch("fuzz-seeds");
        let peft_path = dir.join("peft.safetensors");
        std::fs::write(&peft_path, &peft).unwrap();
        let file = lora_group::io::read_lora(&peft_path, "unet").unwrap();
        let kohya_path = dir.join("kohya.safetensors");
        lora_group::kohya::write(
            &file,
            &kohya_path,
            &BTreeMap::new(),
            lora_group::io::FileDtype::F32,
        )
        .unwrap();
        let seed = std::fs::read(&kohya_path).unwrap();
        v.push(target(
            "lora_kohya",
            "lora.safetensors",
            vec![seed],
            false,
            move |p| lora_group::kohya::read(p, &layers).map(drop),
        ));
    }

    // Training checkpoints (checksummed).
    {
        let dir = ril_testkit::scratch("fuzz-seeds-ckpt");
        let path = dir.join("checkpoint.safetensors");
        let state = rid_trainer::checkpoint::CheckpointState {
            task: 1,
            step: 3,
            adam_step: 3,
            done: false,
            config_hash: "0123abcd".into(),
        };
        let tensors: BTreeMap<String, Tensor<B, 2>> = [(
            "task1.unet.lora_A".to_string(),
            Tensor::from_data(TensorData::new(vec![0.25f32; 8], [2, 4]), &device),
        )]
        .into();
        rid_trainer::checkpoint::save(&path, &state, &tensors).unwrap();
        let seed = std::fs::read(&path).unwrap();
        v.push(target(
            "checkpoint",
            "checkpoint.safetensors",
            vec![seed],
            false,
            move |p| rid_trainer::checkpoint::load::<B>(p, &device).map(drop),
        ));
    }

    // TOML configs.
    v.push(target(
        "train_config",
        "config.toml",
        vec![
            absolute_paths(&read("configs/tiny/rid-ahc.toml"), "configs/tiny"),
            absolute_paths(&read("configs/tiny/baseline-ahc.toml"), "configs/tiny"),
            absolute_paths(&read("configs/paper/rid.toml"), "configs/paper"),
        ],
        true,
        |p| rid_trainer::config::TrainConfig::from_file(p).map(drop),
    ));
    v.push(target(
        "pretrain_config",
        "pretrain.toml",
        vec![absolute_paths(
            &read("configs/toy/pretrain.toml"),
            "configs/toy",
        )],
        true,
        |p| pretrain::PretrainConfig::from_file(p).map(drop),
    ));
    v.push(target(
        "judge_config",
        "judge.toml",
        vec![read("configs/toy/judge.toml")],
        true,
        |p| toy_shapes::judge::TrainConfig::from_file(p).map(drop),
    ));

    // diffusers and transformers config.json files.
    v.push(target(
        "unet_config",
        "config.json",
        vec![
            read(&tiny("tiny-sd/unet/config.json")),
            read("configs/toy/unet.json"),
        ],
        true,
        |p| sd_model::UNetConfig::from_file(p).map(drop),
    ));
    v.push(target(
        "vae_config",
        "config.json",
        vec![
            read(&tiny("tiny-sd/vae/config.json")),
            read("configs/toy/vae.json"),
        ],
        true,
        |p| sd_model::VaeConfig::from_file(p).map(drop),
    ));
    v.push(target(
        "text_encoder_config",
        "config.json",
        // (configs/toy/text_encoder.json leaves vocab_size to the pretraining run.)
        vec![read(&tiny("tiny-sd/text_encoder/config.json"))],
        true,
        |p| sd_model::ClipTextConfig::from_file(p).map(drop),
    ));
    v.push(target(
        "scheduler_config",
        "scheduler_config.json",
        vec![read(&tiny("tiny-sd/scheduler/scheduler_config.json"))],
        true,
        |p| {
            let c = sd_model::DdimConfig::from_file(p)?;
            sd_model::ddim::DdimScheduler::new(c, 20)?;
            Ok(())
        },
    ));
    v.push(target(
        "clip_vision_config",
        "config.json",
        vec![read(
            "crates/rewards/tests/fixtures/clip-vision-tiny/config.json",
        )],
        true,
        |p| rewards::clip_vision::ClipVisionConfig::from_file(p).map(drop),
    ));
    v.push(target(
        "openclip_config",
        "config.json",
        vec![read("configs/tiny/openclip-tiny.json")],
        true,
        |p| rewards::openclip::OpenClipConfig::from_file(p).map(drop),
    ));
    {
        // A whole pipeline folder with its model_index.json mutated (the models are copied
        // beside it at the first input).
        let fixture = root().join(tiny("tiny-sd"));
        let mut t = target(
            "model_index",
            "model_index.json",
            vec![read(&tiny("tiny-sd/model_index.json"))],
            true,
            move |p| {
                let d = p.parent().unwrap();
                for sub in ["unet", "vae", "text_encoder", "tokenizer", "scheduler"] {
                    let link = d.join(sub);
                    if !link.exists() {
                        ril_testkit::copy_dir(&fixture.join(sub), &link);
                    }
                }
                sd_model::pipeline::StableDiffusion::<B>::load(d, &device)?;
                Ok(())
            },
        );
        t.heavy = true;
        v.push(t);
    }

    // Tokenizer files.
    v.push(tokenizer_target("tokenizer_vocab", "vocab.json"));
    v.push(tokenizer_target("tokenizer_merges", "merges.txt"));
    v.push(tokenizer_target(
        "tokenizer_config",
        "tokenizer_config.json",
    ));
    {
        // tokenizer.json (Hugging Face tokenizers), written from the tiny tokenizer; it takes
        // the place of vocab.json and merges.txt, so only the config files sit beside it.
        let tok =
            sd_model::ClipTokenizer::from_dir(&root().join(tiny("tiny-sd/tokenizer"))).unwrap();
        let json = tok.to_json().unwrap().into_bytes();
        let mut t = target(
            "tokenizer_json",
            "tokenizer.json",
            vec![json],
            true,
            |path| {
                let tok = sd_model::ClipTokenizer::from_dir(path.parent().unwrap())?;
                tok.encode("a photo of a red circle on the left")?;
                Ok(())
            },
        );
        t.beside = tokenizer_files()
            .into_iter()
            .filter(|(f, _)| f.ends_with("config.json") || f.starts_with("special"))
            .collect();
        v.push(t);
    }

    // Prompts files, checked against the tokenizer.
    {
        let tok =
            sd_model::ClipTokenizer::from_dir(&root().join(tiny("tiny-sd/tokenizer"))).unwrap();
        v.push(target(
            "prompts",
            "prompts.txt",
            vec![read("configs/tiny/prompts-train.txt")],
            true,
            move |p| rid_trainer::config::read_prompts_checked(p, &tok).map(drop),
        ));
    }

    // Images: 8-bit RGB, RGBA, grey, grey+alpha, 16-bit.
    let rgb = ImageBuffer::from_fn(8, 6, |x, y| Rgb([x as u8 * 30, y as u8 * 40, 7]));
    let images = vec![
        png(image::DynamicImage::ImageRgb8(rgb.clone())),
        png(image::DynamicImage::ImageRgba8(ImageBuffer::from_fn(
            5,
            5,
            |x, _| Rgba([x as u8, 9, 200, 128]),
        ))),
        png(image::DynamicImage::ImageLuma8(ImageBuffer::from_fn(
            4,
            9,
            |x, y| Luma([(x * y) as u8]),
        ))),
        png(image::DynamicImage::ImageLumaA8(ImageBuffer::from_fn(
            3,
            3,
            |x, _| LumaA([x as u8, 255]),
        ))),
        png(image::DynamicImage::ImageRgb16(ImageBuffer::from_fn(
            4,
            4,
            |x, _| Rgb([x as u16 * 1000, 65535, 0]),
        ))),
    ];
    v.push(target(
        "image",
        "image.png",
        images.clone(),
        false,
        move |p| {
            let t = rewards::images::load_images::<B>(&[p.to_path_buf()], &device)?;
            let _ = t.into_data();
            Ok(())
        },
    ));

    // An imagefolder (metadata.jsonl) with its images.
    {
        let meta = concat!(
            r#"{"file_name": "a.png", "text": "a large red circle on the left, on a blue background", "labels": {"objects": [{"shape": "circle", "colour": "red", "size": "large", "position": "left"}], "background": "blue"}}"#,
            "\n",
            r#"{"file_name": "b.png", "text": "two shapes"}"#,
            "\n"
        );
        let mut t = target(
            "image_folder",
            "metadata.jsonl",
            vec![meta.as_bytes().to_vec()],
            true,
            |p| {
                let folder = toy_shapes::folder::ImageFolder::open(p.parent().unwrap())?;
                for item in &folder.items {
                    item.load_image()?;
                }
                Ok(())
            },
        );
        t.beside = vec![("a.png", images[0].clone()), ("b.png", images[0].clone())];
        v.push(t);
    }

    // FID statistics: ril's safetensors file and pytorch-fid's .npz.
    {
        let feats: Vec<f32> = (0..24).map(|i| ((i * 7) % 11) as f32 / 3.0).collect();
        let stats = ril_metrics::fid::Stats::from_features(&feats, 4).unwrap();
        let dir = ril_testkit::scratch("fuzz-seeds-fid");
        let path = dir.join("stats.safetensors");
        stats.save(&path, &BTreeMap::new()).unwrap();
        v.push(target(
            "fid_stats",
            "stats.safetensors",
            vec![std::fs::read(&path).unwrap()],
            false,
            |p| ril_metrics::fid::Stats::load(p).map(drop),
        ));
        let mu: Vec<f64> = (0..4).map(f64::from).collect();
        let sigma: Vec<f64> = (0..16).map(|i| f64::from(i % 5)).collect();
        let npz = ril_metrics::npz::npz_f64(
            &[
                ("mu", &[4usize][..], &mu[..]),
                ("sigma", &[4usize, 4][..], &sigma[..]),
            ],
            "fuzz seed",
        )
        .unwrap();
        v.push(target("npz", "stats.npz", vec![npz], false, |p| {
            let mut z = ril_metrics::npz::Npz::open(p)?;
            let _ = z.comment();
            z.array("mu", &[4])?;
            z.array("sigma", &[4, 4])?;
            let _ = ril_metrics::fid::Stats::load_npz(p);
            Ok(())
        }));
    }

    // Reward weights: the aesthetic MLP (safetensors or a pickle).
    v.push(target(
        "aesthetic_mlp",
        "mlp.safetensors",
        vec![read("configs/tiny/aesthetic-mlp-random.safetensors")],
        false,
        move |p| rewards::aesthetic::AestheticMlp::<B>::load(p, &device).map(drop),
    ));
    v
}

#[test]
fn every_loader_refuses_mutated_files_without_panicking_or_overallocating() {
    let inputs: usize = std::env::var("RIL_FUZZ_INPUTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_INPUTS);
    let seed: u64 = std::env::var("RIL_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let only: Option<Vec<String>> = std::env::var("RIL_FUZZ_ONLY")
        .ok()
        .map(|s| s.split(',').map(str::to_string).collect());
    let verbose = std::env::var_os("RIL_FUZZ_VERBOSE").is_some();
    let scratch = ril_testkit::scratch("fuzz");
    let crashes = scratch.join("crashes");
    // Panics are expected to be caught and reported below, not printed for each input.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut failures = Vec::new();
    let mut report = String::new();
    for t in targets() {
        if only
            .as_ref()
            .is_some_and(|o| !o.iter().any(|n| n == t.name))
        {
            continue;
        }
        let dir = scratch.join(t.name);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &t.beside {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
        let path = dir.join(t.file);
        eprintln!("fuzz {}: inputs written to {}", t.name, path.display());
        let n = if t.heavy { inputs.div_ceil(4) } else { inputs };
        let (mut refused, mut accepted, mut peak) = (0usize, 0usize, 0usize);
        let started = Instant::now();
        for i in 0..n + t.seeds.len() {
            // The seeds themselves first (each must load), then the mutations.
            let (bytes, is_seed) = if i < t.seeds.len() {
                (t.seeds[i].clone(), i < t.must_load)
            } else {
                let mut rng = Rng::new(seed, t.name, i);
                let a = rng.below(t.seeds.len());
                let b = rng.below(t.seeds.len());
                (mutate(&mut rng, &t.seeds[a], &t.seeds[b], t.text), false)
            };
            std::fs::write(&path, &bytes).unwrap();
            let before = LIVE.load(Ordering::Relaxed);
            PEAK.store(before, Ordering::Relaxed);
            let outcome = catch_unwind(AssertUnwindSafe(|| (t.run)(&path)));
            peak = peak.max(PEAK.load(Ordering::Relaxed).saturating_sub(before));
            match outcome {
                Ok(Ok(())) => accepted += 1,
                Ok(Err(e)) if is_seed => {
                    failures.push(format!("{}: seed {i} does not load: {e:#}", t.name));
                }
                Ok(Err(e)) => {
                    if verbose {
                        eprintln!("{} {i}: {e:#}", t.name);
                    }
                    refused += 1
                }
                Err(panic) => {
                    let msg = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    std::fs::create_dir_all(&crashes).unwrap();
                    let keep = crashes.join(format!("{}-{i}-{}", t.name, t.file));
                    std::fs::write(&keep, &bytes).unwrap();
                    failures.push(format!(
                        "{}: input {i} panicked: {msg} (kept as {})",
                        t.name,
                        keep.display()
                    ));
                }
            }
        }
        if peak > LIVE_CAP {
            failures.push(format!(
                "{}: held {peak} bytes at once, above the {LIVE_CAP}-byte cap",
                t.name
            ));
        }
        report.push_str(&format!(
            "{:<22} {:>6} inputs {:>6} refused {:>6} accepted  peak {:>6} KiB  {:>6.2} s\n",
            t.name,
            n + t.seeds.len(),
            refused,
            accepted,
            peak / 1024,
            started.elapsed().as_secs_f64()
        ));
    }
    std::panic::set_hook(default_hook);
    eprintln!("{report}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
