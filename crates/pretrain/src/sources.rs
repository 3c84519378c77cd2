//! The data `ril pretrain` reads: the toy world's procedural shapes stream, or any folder in
//! Hugging Face's `imagefolder` layout (metadata.jsonl with `file_name` and `text`).

use anyhow::{Context, Result};
use toy_shapes::folder::ImageFolder;
use toy_shapes::{Spec, Split};

use crate::config::PretrainConfig;
use crate::data::{Example, Source};

/// The training stream of the shapes data set (one or two objects per image).
pub struct Shapes(pub Spec);

impl Source for Shapes {
    fn describe(&self) -> String {
        format!(
            "shapes seed {} ({} split, {} objects)",
            self.0.seed,
            self.0.split.name(),
            self.0.objects.name()
        )
    }
    fn len(&self) -> Option<u64> {
        None
    }
    fn get(&self, index: u64) -> Result<Example> {
        let s = self.0.sample(index);
        Ok(Example {
            image: s.image,
            caption: s.caption,
        })
    }
    fn captions(&self, n: u64) -> Result<Vec<String>> {
        // Captions without rendering.
        Ok((0..n).map(|i| self.0.draw(i).2).collect())
    }
}

/// A folder of captioned images.
pub struct Folder(pub ImageFolder);

impl Source for Folder {
    fn describe(&self) -> String {
        format!("folder {}", self.0.dir.display())
    }
    fn len(&self) -> Option<u64> {
        Some(self.0.items.len() as u64)
    }
    fn get(&self, index: u64) -> Result<Example> {
        let item = self
            .0
            .items
            .get(index as usize)
            .with_context(|| format!("{}: no item {index}", self.describe()))?;
        Ok(Example {
            image: item.load_image()?,
            caption: item.caption.clone(),
        })
    }
    fn captions(&self, _n: u64) -> Result<Vec<String>> {
        Ok(self.0.items.iter().map(|i| i.caption.clone()).collect())
    }
}

/// The source a config names (the folder's metadata.jsonl is read and checked here).
pub fn open(config: &PretrainConfig) -> Result<Box<dyn Source>> {
    match (&config.data.shapes_seed, &config.data.folder) {
        (Some(seed), _) => Ok(Box::new(Shapes(
            Spec::new(*seed, Split::Train)
                .objects(config.shapes_objects()?)
                .size(config.resolution as u32),
        ))),
        (None, Some(dir)) => Ok(Box::new(Folder(ImageFolder::open(dir)?))),
        (None, None) => anyhow::bail!("data: give shapes_seed or folder"),
    }
}
