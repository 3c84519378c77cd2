//! toy-shapes: a procedural toy world in which a small text-to-image pipeline can learn
//! something meaningful in minutes on a CPU. Captioned 64x64 images of one or two coloured
//! shapes on a coloured background, drawn deterministically from (seed, split, index); the
//! Hugging Face `imagefolder` layout to write and read such data sets (and the user's own); and
//! a judge, a small attribute classifier that measures whether generated images show what their
//! captions say.
//!
//! - [`sample`] / [`Spec::sample`]: one item (caption, [`Labels`], image) by index.
//! - [`folder`]: `metadata.jsonl` + PNGs: [`folder::write_folder`], [`folder::ImageFolder`].
//! - [`beauty`]: the stated, caption-free score the toy aesthetic reward learns.
//! - [`judge`]: the classifier ([`judge::Judge`]), its training and its accuracy.

pub mod attributes;
pub mod beauty;
pub mod caption;
pub mod fit;
pub mod folder;
pub mod generate;
pub mod judge;
pub mod render;
pub mod rng;

pub use attributes::{Colour, Labels, Object, Position, Shape, Size};
pub use generate::{Objects, Sample, Spec, Split, sample};
pub use render::{Jitter, render};
