//! The data set as a function: `sample(seed, split, index)` draws the labels, jitter and caption
//! of one item from its own keyed SplitMix64 stream and renders its image. Random access, no
//! state, an unbounded stream per (seed, split).

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::attributes::{Colour, Labels, Object, Position, Shape, Size};
use crate::caption::caption;
use crate::render::{Jitter, fits, render};
use crate::rng::SplitMix64;

/// Which stream of the data set: train, or a fixed held-out stream that training never reads.
/// The split is one of the keys of every item's generator, so the two streams are unrelated
/// sequences (an item of one equals an item of the other only by chance, which the continuous
/// jitter makes vanishingly rare; `tests/generate.rs` checks the first thousands).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Heldout,
}

impl Split {
    pub const ALL: [Split; 2] = [Split::Train, Split::Heldout];

    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Heldout => "heldout",
        }
    }

    /// The split's key in the generator (arbitrary distinct constants).
    fn key(self) -> u64 {
        match self {
            Split::Train => 0x7472_6169_6E00_0001,   // "train"
            Split::Heldout => 0x6865_6C64_6F75_7402, // "heldout"
        }
    }
}

/// How many objects an image has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Objects {
    /// Exactly one (the judge's data and the evaluation captions).
    One,
    /// Exactly two, at different positions and never overlapping.
    Two,
    /// One or two, each with probability 1/2.
    Mixed,
}

impl Objects {
    pub const ALL: [Objects; 3] = [Objects::One, Objects::Two, Objects::Mixed];

    /// The command-line name: "1", "2" or "mixed".
    pub fn name(self) -> &'static str {
        match self {
            Objects::One => "1",
            Objects::Two => "2",
            Objects::Mixed => "mixed",
        }
    }

    /// Its key in the generator, so that the one-object stream is not a prefix-filtered view of
    /// the mixed one (each mode is its own stream).
    fn key(self) -> u64 {
        match self {
            Objects::One => 1,
            Objects::Two => 2,
            Objects::Mixed => 3,
        }
    }
}

/// One item of the data set.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// A natural-language caption naming every attribute of every object and the background.
    pub caption: String,
    pub labels: Labels,
    /// The exact offsets and scales drawn, one per object (to render the item again at another
    /// size with `render(&labels, &jitter, size)`).
    pub jitter: Vec<Jitter>,
    pub image: RgbImage,
}

/// A data set: which stream, how many objects per image, and the image side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub seed: u64,
    pub split: Split,
    pub objects: Objects,
    /// Image side in pixels (square images) [default: 64].
    pub size: u32,
}

impl Spec {
    /// The mixed (one or two objects) 64x64 data set of `seed` and `split`.
    pub fn new(seed: u64, split: Split) -> Self {
        Self {
            seed,
            split,
            objects: Objects::Mixed,
            size: 64,
        }
    }

    pub fn objects(self, objects: Objects) -> Self {
        Self { objects, ..self }
    }

    pub fn size(self, size: u32) -> Self {
        Self { size, ..self }
    }

    /// The generator of item `index`: keyed on (seed, split, objects mode, index).
    fn rng(&self, index: u64) -> SplitMix64 {
        SplitMix64::keyed(&[self.seed, self.split.key(), self.objects.key(), index])
    }

    /// The labels, jitter and caption of item `index`, without rendering (cheap).
    pub fn draw(&self, index: u64) -> (Labels, Vec<Jitter>, String) {
        let mut rng = self.rng(index);
        let two = match self.objects {
            Objects::One => false,
            Objects::Two => true,
            Objects::Mixed => rng.below(2) == 1,
        };
        let (objects, jitter) = if two {
            draw_two(&mut rng)
        } else {
            let (o, j) = draw_object(&mut rng, &Position::ALL);
            (vec![o], vec![j])
        };
        let used: Vec<Colour> = objects.iter().map(|o| o.colour).collect();
        let backgrounds: Vec<Colour> = Colour::ALL
            .into_iter()
            .filter(|c| !used.contains(c))
            .collect();
        let background = rng.pick(&backgrounds);
        let labels = Labels {
            objects,
            background,
        };
        // 60 = a multiple of both template counts (5 and 4): every template equally likely.
        let text = caption(&labels, rng.below(60));
        (labels, jitter, text)
    }

    /// Item `index` of the stream, rendered.
    pub fn sample(&self, index: u64) -> Sample {
        let (labels, jitter, caption) = self.draw(index);
        let image = render(&labels, &jitter, self.size);
        Sample {
            caption,
            labels,
            jitter,
            image,
        }
    }
}

/// Item `index` of the mixed (one or two objects) 64x64 data set of `seed` and `split`.
pub fn sample(seed: u64, split: Split, index: u64) -> Sample {
    Spec::new(seed, split).sample(index)
}

/// One object at one of `positions`, with its jitter.
fn draw_object(rng: &mut SplitMix64, positions: &[Position]) -> (Object, Jitter) {
    let object = Object {
        shape: rng.pick(&Shape::ALL),
        colour: rng.pick(&Colour::OBJECT),
        size: rng.pick(&Size::ALL),
        position: rng.pick(positions),
    };
    (object, Jitter::draw(rng))
}

/// Two objects at different positions whose drawn boxes are apart: drawn again until they are
/// (boxes at least 2 % of the side apart: any sizes left/right or top/bottom; at neighbouring
/// positions, and with the centre, only some small/small or small/large pairs, depending on
/// shape and jitter). After 64 failed tries (very unlikely) two small circles left and right,
/// which always fit.
fn draw_two(rng: &mut SplitMix64) -> (Vec<Object>, Vec<Jitter>) {
    for _ in 0..64 {
        let (a, ja) = draw_object(rng, &Position::ALL);
        let others: Vec<Position> = Position::ALL
            .into_iter()
            .filter(|&p| p != a.position)
            .collect();
        let (mut b, jb) = draw_object(rng, &others);
        // Two objects of one colour would read as one; and the caption names them apart.
        while b.colour == a.colour {
            b.colour = rng.pick(&Colour::OBJECT);
        }
        if fits(&[a, b], &[ja, jb]) {
            return (vec![a, b], vec![ja, jb]);
        }
    }
    let a = Object {
        shape: Shape::Circle,
        colour: Colour::Red,
        size: Size::Small,
        position: Position::Left,
    };
    let b = Object {
        colour: Colour::Blue,
        position: Position::Right,
        ..a
    };
    (vec![a, b], vec![Jitter::NONE; 2])
}
