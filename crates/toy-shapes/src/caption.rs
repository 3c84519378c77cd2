//! Captions: a few natural templates that name every attribute of every object (size, colour,
//! shape, position) and the background colour. Which template is drawn from the item's stream.

use crate::attributes::{Colour, Labels, Object, Position, Shape, Size};

/// "large red circle on the left".
fn placed(o: &Object) -> String {
    format!("{} {}", o.noun_phrase(), o.position.phrase())
}

/// The templates for one object (`{o}`: "large red circle", `{p}`: "on the left", `{b}`: the
/// background colour, `{ab}`: it with its article, "a blue" or "an orange").
const ONE: [&str; 5] = [
    "a {o} {p}, on {ab} background",
    "a {o} {p} of {ab} picture",
    "{b} background with a {o} {p}",
    "a picture of a {o} {p}, {b} background",
    "a {o} sitting {p} on a plain {b} background",
];

/// The templates for two objects (`{a}`, `{c}`: each "large red circle on the left").
const TWO: [&str; 4] = [
    "two shapes: a {a} and a {c}, on {ab} background",
    "a {a} and a {c} on {ab} background",
    "{b} background with a {a} and a {c}",
    "a picture of two shapes, a {a} and a {c}, {b} background",
];

/// The caption of `labels` with template number `choice` (taken modulo the number of templates
/// for its object count). Labels with more than two objects list them all with the last
/// template's wording ("a ..., a ... and a ..."), which the toy world never draws.
pub fn caption(labels: &Labels, choice: usize) -> String {
    let b = labels.background.name();
    // Object phrases always start with "small" or "large"; only a background colour can start
    // with a vowel ("an orange background").
    let ab = if b.starts_with(['a', 'e', 'i', 'o', 'u']) {
        format!("an {b}")
    } else {
        format!("a {b}")
    };
    match labels.objects.as_slice() {
        [o] => ONE[choice % ONE.len()]
            .replace("{o}", &o.noun_phrase())
            .replace("{p}", o.position.phrase())
            .replace("{ab}", &ab)
            .replace("{b}", b),
        [a, c] => TWO[choice % TWO.len()]
            .replace("{a}", &placed(a))
            .replace("{c}", &placed(c))
            .replace("{ab}", &ab)
            .replace("{b}", b),
        objects => {
            let parts: Vec<String> = objects.iter().map(|o| format!("a {}", placed(o))).collect();
            format!("{} on {ab} background", parts.join(", "))
        }
    }
}

/// The drawable one-object labels whose caption with some template is exactly `text` (the
/// inverse of [`caption`] on one-object captions), or None: how the toy world's metrics read
/// a prompt file's captions back as labels.
pub fn parse_one(text: &str) -> Option<Labels> {
    let words: Vec<&str> = text
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| !w.is_empty())
        .collect();
    let named = |name: &str| words.contains(&name);
    let colours: Vec<Colour> = Colour::ALL
        .into_iter()
        .filter(|c| named(c.name()))
        .collect();
    for shape in Shape::ALL.into_iter().filter(|s| named(s.name())) {
        for size in Size::ALL.into_iter().filter(|s| named(s.name())) {
            for &colour in colours.iter().filter(|c| Colour::OBJECT.contains(c)) {
                for &background in &colours {
                    for position in Position::ALL {
                        let labels = Labels {
                            objects: vec![Object {
                                shape,
                                colour,
                                size,
                                position,
                            }],
                            background,
                        };
                        if labels.check().is_ok()
                            && (0..ONE.len()).any(|k| caption(&labels, k) == text)
                        {
                            return Some(labels);
                        }
                    }
                }
            }
        }
    }
    None
}
