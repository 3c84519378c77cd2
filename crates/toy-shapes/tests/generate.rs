//! The generator: deterministic by key, the held-out stream apart from train, labels true to
//! the pixels (colour at each object's centre, background at the corners, position by where
//! the object's pixels lie, size by their count), captions naming every attribute.

use std::collections::HashSet;

use toy_shapes::render::geometry;
use toy_shapes::{Colour, Labels, Objects, Position, Sample, Shape, Size, Spec, Split, sample};

fn px(s: &Sample, x: u32, y: u32) -> [u8; 3] {
    s.image.get_pixel(x, y).0
}

/// The pixels exactly of `colour` (anti-aliased edges are blends, so they do not count):
/// their count and centroid.
fn exact(s: &Sample, colour: Colour) -> (usize, f32, f32) {
    let (mut n, mut sx, mut sy) = (0, 0.0, 0.0);
    for (x, y, p) in s.image.enumerate_pixels() {
        if p.0 == colour.rgb() {
            n += 1;
            sx += x as f32;
            sy += y as f32;
        }
    }
    (n, sx / n.max(1) as f32, sy / n.max(1) as f32)
}

#[test]
fn the_same_key_gives_the_same_bytes_and_another_index_another_image() {
    for split in Split::ALL {
        for i in 0..20 {
            let a = sample(3, split, i);
            let b = sample(3, split, i);
            assert_eq!(a, b);
            assert_ne!(a.image, sample(3, split, i + 1).image, "{split:?} {i}");
            assert_ne!(
                a.image,
                sample(4, split, i).image,
                "seed 3 vs 4, {split:?} {i}"
            );
        }
    }
    // Random access: item 500 does not depend on having drawn 0..500 first.
    let spec = Spec::new(9, Split::Train);
    let late = spec.sample(500);
    assert_eq!(late, Spec::new(9, Split::Train).sample(500));
}

#[test]
fn the_held_out_stream_never_repeats_a_train_item() {
    // Items are compared as (labels, jitter): equal images need equal labels and, jitter being
    // 24-bit uniform draws, a repeat means the streams overlap rather than chance. 3000 items
    // each, single-object (the smallest label space: 3*6*2*5*7 = 1260 label combinations, so
    // labels alone do repeat across splits; the jitter must not).
    let key = |spec: Spec, i: u64| {
        let (labels, jitter, _) = spec.draw(i);
        format!("{labels:?}{jitter:?}")
    };
    let train = Spec::new(0, Split::Train).objects(Objects::One);
    let held = Spec::new(0, Split::Heldout).objects(Objects::One);
    let seen: HashSet<String> = (0..3000).map(|i| key(train, i)).collect();
    assert_eq!(seen.len(), 3000, "the train stream repeats itself");
    for i in 0..3000 {
        assert!(
            !seen.contains(&key(held, i)),
            "held-out item {i} is a train item"
        );
    }
}

#[test]
fn every_label_set_is_valid_and_both_object_counts_occur() {
    let mut counts = [0usize; 3];
    for i in 0..2000 {
        let s = sample(1, Split::Train, i);
        s.labels.check().unwrap_or_else(|e| panic!("item {i}: {e}"));
        counts[s.labels.objects.len()] += 1;
    }
    // Mixed: one or two with probability 1/2 each; 2000 draws, so each count is 1000 ± 22
    // (one sigma); 850 is a 6.7-sigma deviation.
    assert!(counts[1] > 850 && counts[2] > 850, "{counts:?}");
    for i in 0..200 {
        let one = Spec::new(1, Split::Train).objects(Objects::One).sample(i);
        assert_eq!(one.labels.objects.len(), 1);
        let two = Spec::new(1, Split::Train).objects(Objects::Two).sample(i);
        assert_eq!(two.labels.objects.len(), 2);
    }
}

#[test]
fn each_object_centre_shows_its_colour_and_the_corners_the_background() {
    for i in 0..1500 {
        let s = sample(2, Split::Train, i);
        let side = s.image.width();
        for (o, j) in s.labels.objects.iter().zip(&s.jitter) {
            let ((cx, cy), _) = geometry(o, j, side);
            // The pixel whose square contains the centre: at least 2.8 px inside the smallest
            // shape (a small triangle's inradius), so fully covered and exactly the colour.
            let p = px(&s, cx as u32, cy as u32);
            assert_eq!(p, o.colour.rgb(), "item {i}: {o:?} centre ({cx}, {cy})");
        }
        for (x, y) in [(0, 0), (side - 1, 0), (0, side - 1), (side - 1, side - 1)] {
            assert_eq!(
                px(&s, x, y),
                s.labels.background.rgb(),
                "item {i} corner ({x}, {y})"
            );
        }
    }
}

#[test]
fn positions_are_where_the_object_pixels_are() {
    for i in 0..1500 {
        let s = sample(5, Split::Train, i);
        for o in &s.labels.objects {
            let (n, x, y) = exact(&s, o.colour);
            assert!(n > 0, "item {i}: no pixel of {o:?}");
            // Nominal centres are 16 px from the middle (at 64); jitter moves them by at most
            // 2 px, and a triangle's centroid of pixels sits up to ~1.5 px off its centre. So
            // an object's pixels centre within 4 px of its nominal centre and never in the
            // wrong half (8 px is halfway to the neighbouring position).
            let (fx, fy) = o.position.centre();
            let (ex, ey) = (fx * 64.0, fy * 64.0);
            assert!(
                (x - ex).abs() < 4.0 && (y - ey).abs() < 4.0,
                "item {i}: {o:?} pixels centred at ({x}, {y}), expected near ({ex}, {ey})"
            );
            let half_ok = match o.position {
                Position::Left => x < 32.0,
                Position::Right => x > 32.0,
                Position::Top => y < 32.0,
                Position::Bottom => y > 32.0,
                Position::Centre => (x - 32.0).abs() < 8.0 && (y - 32.0).abs() < 8.0,
            };
            assert!(half_ok, "item {i}: {o:?} at ({x}, {y})");
        }
    }
}

#[test]
fn large_objects_cover_more_pixels_than_small_ones() {
    // Per shape, the smallest large object (0.19 * 0.9 of the side) against the largest small
    // one (0.09 * 1.1): the areas differ by a factor (0.171/0.099)^2 = 3, far beyond what
    // anti-aliasing takes from an edge, so every small one is below every large one.
    for shape in Shape::ALL {
        let (mut small_max, mut large_min) = (0usize, usize::MAX);
        let spec = Spec::new(6, Split::Train).objects(Objects::One);
        for i in 0..1500 {
            let s = spec.sample(i);
            let o = s.labels.objects[0];
            if o.shape != shape {
                continue;
            }
            let (n, _, _) = exact(&s, o.colour);
            match o.size {
                Size::Small => small_max = small_max.max(n),
                Size::Large => large_min = large_min.min(n),
            }
        }
        assert!(
            small_max > 0 && large_min < usize::MAX && small_max * 2 < large_min,
            "{shape:?}: largest small {small_max} px, smallest large {large_min} px"
        );
    }
}

#[test]
fn shapes_are_told_apart_by_how_they_fill_their_box() {
    // A square fills its box, a circle pi/4 of it, a triangle half: the fraction of the box
    // drawn in the exact colour (large objects, so edges matter little) separates them.
    let spec = Spec::new(8, Split::Train).objects(Objects::One);
    for i in 0..600 {
        let s = spec.sample(i);
        let o = s.labels.objects[0];
        if o.size != Size::Large {
            continue;
        }
        let (l, t, r, b) = toy_shapes::render::bounds(&o, &s.jitter[0], 64);
        let (n, _, _) = exact(&s, o.colour);
        let fill = n as f32 / ((r - l) * (b - t));
        let (lo, hi) = match o.shape {
            Shape::Square => (0.85, 1.05),
            Shape::Circle => (0.70, 0.85),
            Shape::Triangle => (0.38, 0.55),
        };
        assert!(fill > lo && fill < hi, "item {i}: {o:?} fills {fill}");
    }
}

fn assert_mentions(caption: &str, labels: &Labels) {
    for o in &labels.objects {
        for word in [
            o.size.name(),
            o.colour.name(),
            o.shape.name(),
            o.position.phrase(),
        ] {
            assert!(
                caption.contains(word),
                "{caption:?} lacks {word:?} of {o:?}"
            );
        }
        assert!(caption.contains(&o.noun_phrase()), "{caption:?}: {o:?}");
    }
    assert!(
        caption.contains(&format!("{} background", labels.background))
            || caption.contains(&format!("{} picture", labels.background)),
        "{caption:?} lacks the background {}",
        labels.background
    );
}

#[test]
fn captions_name_every_attribute_in_several_wordings() {
    let mut wordings = HashSet::new();
    for i in 0..1000 {
        let s = sample(0, Split::Heldout, i);
        assert_mentions(&s.caption, &s.labels);
        assert!(
            !s.caption.contains("a orange"),
            "{:?}: an orange",
            s.caption
        );
        // The template: the caption with the attribute words taken out.
        let mut t = s.caption.clone();
        for c in Colour::ALL {
            t = t.replace(c.name(), "C");
        }
        for w in Shape::ALL
            .map(Shape::name)
            .into_iter()
            .chain(Size::ALL.map(Size::name))
        {
            t = t.replace(w, "W");
        }
        for p in Position::ALL {
            t = t.replace(p.phrase(), "P");
        }
        wordings.insert(t.replace("an C", "a C"));
    }
    // 5 one-object and 4 two-object templates.
    assert_eq!(wordings.len(), 9, "{wordings:#?}");
    let s = Spec::new(0, Split::Train).objects(Objects::One).sample(0);
    assert!(s.caption.starts_with('a') || s.caption.contains("background with"));
}

#[test]
fn the_palette_is_well_separated_and_backgrounds_differ_from_objects() {
    for (i, a) in Colour::ALL.iter().enumerate() {
        for b in &Colour::ALL[i + 1..] {
            let d = (0..3)
                .map(|c| (a.rgb()[c] as i32 - b.rgb()[c] as i32).abs())
                .max()
                .unwrap();
            assert!(d >= 80, "{a} and {b} differ by only {d} in any channel");
        }
    }
    for i in 0..500 {
        let s = sample(4, Split::Train, i);
        for o in &s.labels.objects {
            assert_ne!(o.colour, s.labels.background, "item {i}");
        }
    }
}

#[test]
fn labels_serialise_with_the_caption_words() {
    let s = Spec::new(0, Split::Train).objects(Objects::One).sample(0);
    let json = serde_json::to_string(&s.labels).unwrap();
    let o = s.labels.objects[0];
    for w in [
        o.shape.name(),
        o.colour.name(),
        o.size.name(),
        o.position.name(),
    ] {
        assert!(json.contains(&format!("\"{w}\"")), "{json}");
    }
    let back: Labels = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s.labels);
}

#[test]
fn one_object_captions_parse_back_to_their_labels() {
    use toy_shapes::caption::parse_one;
    for split in [Split::Train, Split::Heldout] {
        let spec = Spec::new(7, split).objects(Objects::One);
        for i in 0..300 {
            let s = spec.sample(i);
            assert_eq!(
                parse_one(&s.caption),
                Some(s.labels.clone()),
                "{}",
                s.caption
            );
        }
    }
    // Two objects, a changed word or free text are not one-object captions of the world.
    let two = Spec::new(7, Split::Train).objects(Objects::Two).sample(0);
    assert_eq!(parse_one(&two.caption), None, "{}", two.caption);
    let one = Spec::new(7, Split::Train).objects(Objects::One).sample(0);
    assert_eq!(parse_one(&format!("{} today", one.caption)), None);
    assert_eq!(parse_one(&one.caption.replace(" a ", " one ")), None);
    assert_eq!(parse_one("a cat on a sofa"), None);
}
