//! Data sets on disk in the Hugging Face `imagefolder` layout, which `datasets.load_dataset(
//! "imagefolder", data_dir=DIR)` and diffusers' `train_text_to_image.py --caption_column text`
//! read as they are:
//!
//! ```text
//! DIR/metadata.jsonl   one JSON object per line:
//!                      {"file_name": "000000.png", "text": "a large red circle ...",
//!                       "labels": {"objects": [...], "background": "blue"}}
//! DIR/000000.png ...   the images (file_name is relative to DIR; subfolders are allowed)
//! ```
//!
//! `labels` is optional (a user's own folder has only `file_name` and `text`); other fields
//! are ignored. [`ImageFolder::open`] reads any such folder and [`FolderWriter`] writes one
//! through a temporary folder that is renamed into place at the end, so a crash never leaves a
//! half-written data set under the final name.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Component, Path, PathBuf};

use image::RgbImage;
use serde_json::{Value, json};

use crate::attributes::Labels;
use crate::generate::Spec;

/// The name of the metadata file in a data-set folder.
pub const METADATA: &str = "metadata.jsonl";

/// The most pixels an item's image may have (8192 x 8192, the bound `rewards::images` puts on
/// every image ril reads): checked from the file's header, before the image is decoded, so a
/// forged or huge file is refused instead of exhausting memory.
pub const MAX_PIXELS: u64 = 8192 * 8192;

/// What can be wrong with a data-set folder; every message names the file (and line).
#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A line of metadata.jsonl that is not a valid item (1-based line number).
    #[error("{}:{line}: {msg}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    #[error("{}: no items (a data set needs at least one line)", path.display())]
    Empty { path: PathBuf },
    #[error("{}: not a decodable image: {msg}", path.display())]
    Image { path: PathBuf, msg: String },
    #[error("{}: {msg}", path.display())]
    Output { path: PathBuf, msg: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FolderError + '_ {
    move |source| FolderError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One item of a data-set folder.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The line of metadata.jsonl it comes from (1-based).
    pub line: usize,
    /// The image file: DIR joined with `file_name`.
    pub path: PathBuf,
    pub caption: String,
    /// The toy world's labels, when the line has a `labels` field.
    pub labels: Option<Labels>,
}

impl Item {
    /// The image as 8-bit RGB (any format the `image` crate was built with: PNG here; other
    /// pixel layouts such as RGBA or grey are converted).
    /// At least one and at most [`MAX_PIXELS`] pixels, read from the header first.
    pub fn load_image(&self) -> Result<RgbImage, FolderError> {
        let fail = |msg: String| FolderError::Image {
            path: self.path.clone(),
            msg,
        };
        let (w, h) = image::image_dimensions(&self.path).map_err(|e| fail(e.to_string()))?;
        if w == 0 || h == 0 || u64::from(w) * u64::from(h) > MAX_PIXELS {
            return Err(fail(format!(
                "it is {w}x{h} pixels; an item's image needs 1 to {MAX_PIXELS} (8192x8192) pixels"
            )));
        }
        let img = image::open(&self.path).map_err(|e| fail(e.to_string()))?;
        Ok(img.to_rgb8())
    }
}

/// A data-set folder's items, in metadata.jsonl's order.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    pub dir: PathBuf,
    pub items: Vec<Item>,
}

impl ImageFolder {
    /// Reads DIR/metadata.jsonl and checks every line: valid JSON with a string `file_name`
    /// (relative, inside DIR, naming an existing file) and a string `text`, and `labels`, if
    /// present, in the toy world's schema. Blank lines are skipped (and counted in line
    /// numbers). Images are not decoded here (see [`Item::load_image`]).
    pub fn open(dir: &Path) -> Result<Self, FolderError> {
        let metadata = dir.join(METADATA);
        let text = std::fs::read_to_string(&metadata).map_err(io(&metadata))?;
        let mut items = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            if raw.trim().is_empty() {
                continue;
            }
            let line = i + 1;
            let err = |msg: String| FolderError::Line {
                path: metadata.clone(),
                line,
                msg,
            };
            let value: Value =
                serde_json::from_str(raw).map_err(|e| err(format!("not valid JSON: {e}")))?;
            let Value::Object(map) = value else {
                return Err(err("not a JSON object".into()));
            };
            let field = |name: &str| match map.get(name) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(err(format!("field `{name}` is not a string"))),
                None => Err(err(format!("no field `{name}`"))),
            };
            let file_name = field("file_name")?;
            let caption = field("text")?;
            let rel = Path::new(&file_name);
            let inside = !file_name.is_empty()
                && rel
                    .components()
                    .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
            if !inside {
                return Err(err(format!(
                    "file_name {file_name:?} is not a relative path inside {}",
                    dir.display()
                )));
            }
            let path = dir.join(rel);
            if !path.is_file() {
                return Err(err(format!(
                    "file_name {file_name:?}: no such file {}",
                    path.display()
                )));
            }
            let labels = match map.get("labels") {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    serde_json::from_value::<Labels>(v.clone())
                        .map_err(|e| err(format!("field `labels`: {e}")))?,
                ),
            };
            items.push(Item {
                line,
                path,
                caption,
                labels,
            });
        }
        if items.is_empty() {
            return Err(FolderError::Empty { path: metadata });
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            items,
        })
    }
}

/// Writes a data-set folder: images and metadata go into a temporary folder beside DIR
/// (`.NAME.tmp<pid>`), which [`FolderWriter::finish`] renames to DIR. Dropped unfinished, the
/// temporary folder is removed.
#[derive(Debug)]
pub struct FolderWriter {
    dir: PathBuf,
    tmp: PathBuf,
    metadata: Option<BufWriter<File>>,
    count: usize,
    digits: usize,
}

impl FolderWriter {
    /// Starts writing DIR; refuses a DIR that exists and is not an empty folder. `expected` is
    /// the number of items to come (it sets the width of the zero-padded file names, at least
    /// six digits).
    pub fn create(dir: &Path, expected: usize) -> Result<Self, FolderError> {
        let out = |msg: &str| FolderError::Output {
            path: dir.to_path_buf(),
            msg: msg.to_string(),
        };
        if dir.exists() {
            let mut entries =
                std::fs::read_dir(dir).map_err(|_| out("exists and is not a folder"))?;
            if entries.next().is_some() {
                return Err(out("exists and is not empty (refusing to overwrite)"));
            }
        }
        let name = dir
            .file_name()
            .ok_or_else(|| out("has no folder name"))?
            .to_string_lossy()
            .to_string();
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(io(&parent))?;
        let tmp = parent.join(format!(".{name}.tmp{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        std::fs::create_dir(&tmp).map_err(io(&tmp))?;
        let meta_path = tmp.join(METADATA);
        let file = File::create(&meta_path).map_err(io(&meta_path))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            tmp,
            metadata: Some(BufWriter::new(file)),
            count: 0,
            digits: expected.saturating_sub(1).to_string().len().max(6),
        })
    }

    /// Adds one item: `NNNNNN.png` and its metadata line.
    pub fn push(
        &mut self,
        image: &RgbImage,
        caption: &str,
        labels: Option<&Labels>,
    ) -> Result<(), FolderError> {
        let file_name = format!("{:0width$}.png", self.count, width = self.digits);
        let path = self.tmp.join(&file_name);
        image.save(&path).map_err(|e| FolderError::Output {
            path: path.clone(),
            msg: e.to_string(),
        })?;
        let mut line = json!({ "file_name": file_name, "text": caption });
        if let Some(l) = labels {
            line["labels"] = serde_json::to_value(l).expect("labels serialise");
        }
        let meta_path = self.tmp.join(METADATA);
        let w = self.metadata.as_mut().expect("open until finish");
        writeln!(w, "{line}").map_err(io(&meta_path))?;
        self.count += 1;
        Ok(())
    }

    /// Flushes the metadata and renames the temporary folder to DIR; returns the item count.
    pub fn finish(mut self) -> Result<usize, FolderError> {
        let meta_path = self.tmp.join(METADATA);
        let w = self.metadata.take().expect("open until finish");
        let file = w.into_inner().map_err(|e| FolderError::Io {
            path: meta_path.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(io(&meta_path))?;
        drop(file);
        if self.count == 0 {
            return Err(FolderError::Output {
                path: self.dir.clone(),
                msg: "no items were written".into(),
            });
        }
        // An empty DIR (checked in create) gives way; rename(2) then moves the folder in one step.
        if self.dir.exists() {
            std::fs::remove_dir(&self.dir).map_err(io(&self.dir))?;
        }
        std::fs::rename(&self.tmp, &self.dir).map_err(|e| FolderError::Output {
            path: self.dir.clone(),
            msg: format!("cannot rename {} to it: {e}", self.tmp.display()),
        })?;
        Ok(self.count)
    }
}

impl Drop for FolderWriter {
    fn drop(&mut self) {
        if self.tmp.exists() {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

/// Writes items `0..count` of `spec` as a data-set folder at `dir` (with labels); returns the
/// item count. Refuses `count == 0` and a non-empty `dir`.
pub fn write_shapes(
    dir: &Path,
    spec: &Spec,
    count: u64,
    mut progress: impl FnMut(u64),
) -> Result<usize, FolderError> {
    if count == 0 {
        return Err(FolderError::Output {
            path: dir.to_path_buf(),
            msg: "a data set needs at least one item (count is 0)".into(),
        });
    }
    let mut w = FolderWriter::create(dir, count as usize)?;
    for i in 0..count {
        let s = spec.sample(i);
        w.push(&s.image, &s.caption, Some(&s.labels))?;
        progress(i + 1);
    }
    w.finish()
}
