//! Drawing labels as an image with tiny-skia (anti-aliased paths on an opaque background), and
//! the geometry shared by the renderer, the generator's overlap check and the tests.

use image::RgbImage;
use serde::{Deserialize, Serialize};
use tiny_skia::{Color, FillRule, Paint, PathBuilder, Pixmap, Rect, Transform};

use crate::attributes::{Colour, Labels, Object, Shape};
use crate::rng::SplitMix64;

/// A small random change of an object's exact centre and size, so that no two items are the
/// same pixels while the labels stay true: the centre moves by at most 3 % of the image side
/// (2 px at 64) in x and y, the size by at most ±10 %.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Jitter {
    /// Centre offsets in [-1, 1], times [`Jitter::MAX_SHIFT`] of the image side.
    pub dx: f32,
    pub dy: f32,
    /// Size change in [-1, 1], times [`Jitter::MAX_SCALE`].
    pub scale: f32,
}

impl Jitter {
    /// No jitter: the nominal geometry.
    pub const NONE: Jitter = Jitter {
        dx: 0.0,
        dy: 0.0,
        scale: 0.0,
    };
    /// The largest centre shift, as a fraction of the image side.
    pub const MAX_SHIFT: f32 = 0.03;
    /// The largest relative size change.
    pub const MAX_SCALE: f32 = 0.10;

    pub(crate) fn draw(rng: &mut SplitMix64) -> Self {
        Self {
            dx: rng.signed(),
            dy: rng.signed(),
            scale: rng.signed(),
        }
    }
}

/// Where and how big an object is drawn on a `side`-pixel image: its centre (x, y) in pixels
/// (y down) and its half-extent in pixels (circle radius; half the square's side over 0.85;
/// the triangle's circumradius).
pub fn geometry(object: &Object, jitter: &Jitter, side: u32) -> ((f32, f32), f32) {
    let s = side as f32;
    let (fx, fy) = object.position.centre();
    let cx = (fx + jitter.dx * Jitter::MAX_SHIFT) * s;
    let cy = (fy + jitter.dy * Jitter::MAX_SHIFT) * s;
    let h = object.size.half_extent() * (1.0 + jitter.scale * Jitter::MAX_SCALE) * s;
    ((cx, cy), h)
}

/// The axis-aligned box an object covers, (left, top, right, bottom) in pixels.
pub fn bounds(object: &Object, jitter: &Jitter, side: u32) -> (f32, f32, f32, f32) {
    let ((cx, cy), h) = geometry(object, jitter, side);
    match object.shape {
        Shape::Circle => (cx - h, cy - h, cx + h, cy + h),
        Shape::Square => {
            let a = 0.85 * h;
            (cx - a, cy - a, cx + a, cy + a)
        }
        Shape::Triangle => {
            let w = h * 3f32.sqrt() / 2.0;
            (cx - w, cy - h, cx + w, cy + h / 2.0)
        }
    }
}

/// Whether the objects' boxes are at least 2 % of the side (1.3 px at 64) apart in x or in y,
/// so that anti-aliased edges never touch and each object is whole on its own background.
pub fn fits(objects: &[Object], jitter: &[Jitter]) -> bool {
    let gap = 0.02;
    for i in 0..objects.len() {
        for j in i + 1..objects.len() {
            // At unit side: the check is scale-free.
            let a = bounds(&objects[i], &jitter[i], 1);
            let b = bounds(&objects[j], &jitter[j], 1);
            let apart_x = a.2 + gap <= b.0 || b.2 + gap <= a.0;
            let apart_y = a.3 + gap <= b.1 || b.3 + gap <= a.1;
            if !(apart_x || apart_y) {
                return false;
            }
        }
    }
    true
}

fn colour(c: Colour) -> Color {
    let [r, g, b] = c.rgb();
    Color::from_rgba8(r, g, b, 255)
}

/// Draws `labels` on a `side`x`side` image, each object with its `jitter` (missing entries mean
/// no jitter). Objects are drawn in order, anti-aliased; a centre pixel of an object is exactly
/// its colour and a pixel away from every object exactly the background's. `side` is taken as
/// at least 1; a side past tiny-skia's pixmap limit (about 23,000) panics, so callers that take
/// it from users bound it (`ril data shapes --size` takes 8 to 1024).
pub fn render(labels: &Labels, jitter: &[Jitter], side: u32) -> RgbImage {
    let side = side.max(1);
    let mut pixmap = Pixmap::new(side, side).expect("a non-zero side");
    pixmap.fill(colour(labels.background));
    for (i, object) in labels.objects.iter().enumerate() {
        let j = jitter.get(i).copied().unwrap_or(Jitter::NONE);
        let ((cx, cy), h) = geometry(object, &j, side);
        let path = match object.shape {
            Shape::Circle => PathBuilder::from_circle(cx, cy, h),
            Shape::Square => {
                let a = 0.85 * h;
                Rect::from_ltrb(cx - a, cy - a, cx + a, cy + a).map(PathBuilder::from_rect)
            }
            Shape::Triangle => {
                let w = h * 3f32.sqrt() / 2.0;
                let mut pb = PathBuilder::new();
                pb.move_to(cx, cy - h);
                pb.line_to(cx + w, cy + h / 2.0);
                pb.line_to(cx - w, cy + h / 2.0);
                pb.close();
                pb.finish()
            }
        };
        // A degenerate path (a zero-sized shape on a tiny image) draws nothing.
        let Some(path) = path else { continue };
        let mut paint = Paint::default();
        paint.set_color(colour(object.colour));
        paint.anti_alias = true;
        pixmap.fill_path(
            &path,
            &paint,
            FillRule::Winding,
            Transform::identity(),
            None,
        );
    }
    // Opaque everywhere, so the premultiplied RGBA bytes are the RGB values.
    let rgb: Vec<u8> = pixmap
        .data()
        .chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    RgbImage::from_raw(side, side, rgb).expect("side * side * 3 bytes")
}
