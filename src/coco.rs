//! `ril data coco`: the zero-shot MS-COCO evaluation set (the paper's FID column) from COCO's
//! own captions file and image folder: `--count` distinct images drawn with `--seed`, one of each
//! image's captions drawn with it, the images centre-cropped to a square and resized (bicubic) to
//! the generated images' side, written as an imagefolder (metadata.jsonl with `file_name`, `text`
//! and the COCO ids; PNGs) plus prompts.txt (the captions, one per line, for `ril eval
//! --prompts`). The reference statistics then come from `ril fid-stats --images DIR`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use toy_shapes::rng::SplitMix64;

use crate::cli::at_least_one;

/// Writes the zero-shot COCO evaluation set (N image-caption pairs) as an imagefolder.
///
/// DIR/metadata.jsonl: {"file_name": "000000.png", "text": CAPTION, "coco_image_id": ID,
/// "coco_caption_id": ID, "coco_file_name": NAME} per pair; DIR/prompts.txt: the captions in
/// the same order. The same files and --seed give the same set on every machine. Every chosen
/// image is checked to exist before anything is written; the folder is written under a
/// temporary name and renamed at the end; an existing DIR is refused.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct CocoArgs {
    /// COCO's captions file, e.g. annotations/captions_val2014.json (or captions_val2017.json).
    #[arg(long, value_name = "FILE")]
    pub annotations: PathBuf,
    /// The folder of its images, e.g. val2014/.
    #[arg(long, value_name = "DIR")]
    pub images: PathBuf,
    /// Number of image-caption pairs (10,000 and 30,000 are the usual sizes).
    #[arg(long, value_name = "N", value_parser = at_least_one())]
    pub count: usize,
    /// The seed of the draw of images and captions.
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,
    /// Side of the written images in pixels (the generated images' side: 512 for SD 1.5).
    #[arg(long, value_name = "PX", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(8..=2048))]
    pub size: u32,
    /// The output folder (must not exist).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Deserialize)]
struct CocoFile {
    images: Vec<CocoImage>,
    annotations: Vec<CocoCaption>,
}

#[derive(Deserialize)]
struct CocoImage {
    id: u64,
    file_name: String,
}

#[derive(Deserialize)]
struct CocoCaption {
    id: u64,
    image_id: u64,
    caption: String,
}

/// One chosen pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub image_id: u64,
    pub caption_id: u64,
    pub file_name: String,
    pub caption: String,
}

/// Stream key of the draw under the seed.
const STREAM_COCO: u64 = 0xC0C0;

/// Reads the captions file and draws `count` pairs: images in id order shuffled by the seed
/// (Fisher-Yates) and the first `count` taken; each one's caption drawn among its captions in
/// id order. Captions are trimmed and their whitespace runs made single spaces (prompts.txt is
/// one per line).
pub fn draw(annotations: &Path, count: usize, seed: u64) -> Result<Vec<Pair>> {
    let text = std::fs::read_to_string(annotations)
        .with_context(|| format!("cannot read {}", annotations.display()))?;
    let file: CocoFile = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a COCO captions file (images, annotations)",
            annotations.display()
        )
    })?;
    let mut names = BTreeMap::new();
    for im in &file.images {
        let ok = !im.file_name.is_empty()
            && !im.file_name.contains(['/', '\\', '\0'])
            && im.file_name != ".."
            && im.file_name != ".";
        if !ok {
            bail!(
                "{}: image {} has file_name {:?}, not a plain file name",
                annotations.display(),
                im.id,
                im.file_name
            );
        }
        if names.insert(im.id, im.file_name.clone()).is_some() {
            bail!(
                "{}: image id {} appears twice",
                annotations.display(),
                im.id
            );
        }
    }
    let mut captions: BTreeMap<u64, Vec<(u64, String)>> = BTreeMap::new();
    for a in &file.annotations {
        if !names.contains_key(&a.image_id) {
            bail!(
                "{}: caption {} names image {}, which the file does not list",
                annotations.display(),
                a.id,
                a.image_id
            );
        }
        let caption = a.caption.split_whitespace().collect::<Vec<_>>().join(" ");
        if caption.is_empty() {
            bail!("{}: caption {} is empty", annotations.display(), a.id);
        }
        captions
            .entry(a.image_id)
            .or_default()
            .push((a.id, caption));
    }
    let mut ids: Vec<u64> = captions.keys().copied().collect();
    if count > ids.len() {
        bail!(
            "--count {count}: {} has only {} images with captions",
            annotations.display(),
            ids.len()
        );
    }
    let mut rng = SplitMix64::keyed(&[seed, STREAM_COCO]);
    for i in (1..ids.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        ids.swap(i, j);
    }
    Ok(ids[..count]
        .iter()
        .map(|id| {
            let mut list = captions[id].clone();
            list.sort();
            let (caption_id, caption) = list[(rng.next_u64() % list.len() as u64) as usize].clone();
            Pair {
                image_id: *id,
                caption_id,
                file_name: names[id].clone(),
                caption,
            }
        })
        .collect())
}

pub fn run(a: &CocoArgs) -> Result<()> {
    if a.out.exists() {
        bail!("--out {}: exists (refusing to overwrite)", a.out.display());
    }
    let pairs = draw(&a.annotations, a.count, a.seed)?;
    for p in &pairs {
        let path = a.images.join(&p.file_name);
        if !path.is_file() {
            bail!(
                "--images: {} (COCO image {}) is missing",
                path.display(),
                p.image_id
            );
        }
    }
    let digits = (pairs.len() - 1).to_string().len().max(6);
    let bar = indicatif::ProgressBar::new(pairs.len() as u64);
    lora_group::io::write_dir_atomic(&a.out, |tmp| {
        let mut meta = String::new();
        let mut prompts = String::new();
        for (i, p) in pairs.iter().enumerate() {
            let src = a.images.join(&p.file_name);
            let what = format!("{} (COCO image {})", src.display(), p.image_id);
            let (w, h) = image::image_dimensions(&src)
                .with_context(|| format!("{what} is not a readable image"))?;
            rewards::images::check_dimensions(&what, w, h)?;
            let img = image::open(&src)
                .with_context(|| format!("{what} is not a readable image"))?
                .to_rgb8();
            let name = format!("{i:0digits$}.png");
            pretrain::data::fit(&img, a.size)
                .save(tmp.join(&name))
                .with_context(|| format!("cannot write {}", tmp.join(&name).display()))?;
            let line = serde_json::json!({
                "file_name": name, "text": p.caption, "coco_image_id": p.image_id,
                "coco_caption_id": p.caption_id, "coco_file_name": p.file_name,
            });
            meta.push_str(&format!("{line}\n"));
            prompts.push_str(&p.caption);
            prompts.push('\n');
            bar.inc(1);
        }
        for (name, text) in [("metadata.jsonl", &meta), ("prompts.txt", &prompts)] {
            let path = tmp.join(name);
            std::fs::File::create(&path)
                .and_then(|mut f| f.write_all(text.as_bytes()))
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    println!(
        "{}: {} COCO image-caption pairs (seed {}, {}x{}); prompts in prompts.txt",
        a.out.display(),
        pairs.len(),
        a.seed,
        a.size,
        a.size
    );
    Ok(())
}
