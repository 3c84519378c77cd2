//! The toy world's "beauty": a stated score of an image that does not depend on its caption,
//! the target the toy aesthetic reward is trained to predict (as the LAION aesthetic predictor
//! was trained on human ratings). Like a taste for big, warm, high-contrast, centred pictures,
//! it pulls images away from captions that ask for something else (a small blue square on a
//! purple background at the left).
//!
//! For each object: 3 if it is large; 3 x the contrast of its colour with the background (the
//! difference of their relative luminances, 0.2126 R + 0.7152 G + 0.0722 B on linear sRGB, as
//! WCAG defines luminance); 2 if its colour is warm (red, orange, yellow); 1 if it is in the
//! centre. The image's beauty is 1 plus the mean over its objects, so it lies in [1, 10].

use crate::attributes::{Colour, Labels, Object, Position, Size};

/// The relative luminance of a colour (WCAG 2: linearised sRGB, Rec. 709 weights), in [0, 1].
pub fn luminance(c: Colour) -> f32 {
    let lin = |v: u8| {
        let s = v as f32 / 255.0;
        if s <= 0.04045 {
            s / 12.92
        } else {
            ((s + 0.055) / 1.055).powf(2.4)
        }
    };
    let [r, g, b] = c.rgb();
    0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)
}

/// Whether a colour counts as warm.
pub fn warm(c: Colour) -> bool {
    matches!(c, Colour::Red | Colour::Orange | Colour::Yellow)
}

/// One object's share of the score (see the module docs), in [0, 9].
pub fn object_beauty(o: &Object, background: Colour) -> f32 {
    let large = if o.size == Size::Large { 3.0 } else { 0.0 };
    let contrast = 3.0 * (luminance(o.colour) - luminance(background)).abs();
    let warmth = if warm(o.colour) { 2.0 } else { 0.0 };
    let centre = if o.position == Position::Centre {
        1.0
    } else {
        0.0
    };
    large + contrast + warmth + centre
}

/// The beauty of an image with these labels, in [1, 10].
pub fn beauty(labels: &Labels) -> f32 {
    let n = labels.objects.len().max(1) as f32;
    let sum: f32 = labels
        .objects
        .iter()
        .map(|o| object_beauty(o, labels.background))
        .sum();
    1.0 + sum / n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::Shape;

    fn one(colour: Colour, size: Size, position: Position, background: Colour) -> Labels {
        Labels {
            objects: vec![Object {
                shape: Shape::Circle,
                colour,
                size,
                position,
            }],
            background,
        }
    }

    #[test]
    fn luminance_follows_wcag() {
        // WCAG: white 1, black 0; (245, 245, 245) and (25, 25, 25) are near them.
        assert!((luminance(Colour::White) - 0.913).abs() < 1e-3);
        assert!((luminance(Colour::Black) - 0.0097).abs() < 1e-3);
        // Yellow is the brightest object colour, blue and purple the darkest.
        let l: Vec<f32> = Colour::OBJECT.iter().map(|&c| luminance(c)).collect();
        let max = l.iter().cloned().fold(0.0, f32::max);
        assert_eq!(max, luminance(Colour::Yellow));
    }

    #[test]
    fn the_score_rewards_size_contrast_warmth_and_centring_and_ignores_shape() {
        let best = one(Colour::Yellow, Size::Large, Position::Centre, Colour::Black);
        let dull = one(Colour::Blue, Size::Small, Position::Left, Colour::Purple);
        let b = beauty(&best);
        let d = beauty(&dull);
        // 1 + 3 + 3 * (L(yellow) - L(black)) + 2 + 1.
        let want = 7.0 + 3.0 * (luminance(Colour::Yellow) - luminance(Colour::Black));
        assert!((b - want).abs() < 1e-6, "{b} vs {want}");
        assert!(
            d < 1.2,
            "a small dark cold object on a dark background: {d}"
        );
        assert!((1.0..=10.0).contains(&b) && (1.0..=10.0).contains(&d));
        let mut square = best.clone();
        square.objects[0].shape = Shape::Square;
        assert_eq!(beauty(&square), b, "the shape does not matter");
        // Two objects: the mean of their shares.
        let mut two = best.clone();
        two.objects.push(dull.objects[0]);
        two.objects[1].position = Position::Right;
        let mean = (object_beauty(&two.objects[0], Colour::Black)
            + object_beauty(&two.objects[1], Colour::Black))
            / 2.0;
        assert!((beauty(&two) - 1.0 - mean).abs() < 1e-6);
    }
}
