//! The attributes of the toy world (shape, colour, size, position) and the labels of one image.
//!
//! Every attribute is a closed enum with `ALL` (its values in a fixed order: the class index of a
//! judge head is the position in `ALL`) and `name()` (the word used in captions, in the
//! metadata.jsonl labels and on the command line).

use serde::{Deserialize, Serialize};

/// Defines a closed attribute enum with `ALL`, `name()`, `index()` and `from_name()`; serde uses
/// the same lower-case names.
macro_rules! attribute {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $word:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $word)] $variant),+
        }

        impl $name {
            /// Every value, in class-index order.
            pub const ALL: [$name; [$($word),+].len()] = [$($name::$variant),+];

            /// The word for this value (captions, labels, command line).
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $word),+
                }
            }

            /// The position in `ALL` (a judge head's class index).
            pub fn index(self) -> usize {
                Self::ALL.iter().position(|&v| v == self).expect("every value is in ALL")
            }

            /// The value named `name`, if any.
            pub fn from_name(name: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.name() == name)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

attribute! {
    /// The outline of an object.
    Shape {
        Circle => "circle",
        Square => "square",
        /// An equilateral triangle pointing up.
        Triangle => "triangle",
    }
}

attribute! {
    /// A named colour. Objects take one of the six chromatic colours ([`Colour::OBJECT`]);
    /// backgrounds take any of the eight, never one of the image's object colours.
    Colour {
        Red => "red",
        Green => "green",
        Blue => "blue",
        Yellow => "yellow",
        Purple => "purple",
        Orange => "orange",
        White => "white",
        Black => "black",
    }
}

impl Colour {
    /// The colours an object may have (the first six of `ALL`, so an object colour's `index()`
    /// is also its class in the judge's six-way colour head).
    pub const OBJECT: [Colour; 6] = [
        Colour::Red,
        Colour::Green,
        Colour::Blue,
        Colour::Yellow,
        Colour::Purple,
        Colour::Orange,
    ];

    /// The sRGB value drawn. Chosen far apart (every pair differs by at least 80 in some
    /// channel) so that a small classifier, and a human, never confuse two of them; orange sits
    /// between red and yellow in green only (red 40, orange 130, yellow 210).
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [220, 40, 40],
            Colour::Green => [40, 170, 70],
            Colour::Blue => [40, 90, 220],
            Colour::Yellow => [240, 210, 40],
            Colour::Purple => [140, 50, 190],
            Colour::Orange => [245, 130, 30],
            Colour::White => [245, 245, 245],
            Colour::Black => [25, 25, 25],
        }
    }
}

attribute! {
    /// How big an object is drawn: its half-extent is 9 % (small) or 19 % (large) of the image
    /// side, before jitter.
    Size {
        Small => "small",
        Large => "large",
    }
}

attribute! {
    /// Where an object's centre is: a quarter of the way in from one side (left, right, top,
    /// bottom) or the middle of the image.
    Position {
        Left => "left",
        Right => "right",
        Top => "top",
        Bottom => "bottom",
        Centre => "centre",
    }
}

impl Position {
    /// The nominal centre as fractions of the image side, (x, y) with y down.
    pub fn centre(self) -> (f32, f32) {
        match self {
            Position::Left => (0.25, 0.5),
            Position::Right => (0.75, 0.5),
            Position::Top => (0.5, 0.25),
            Position::Bottom => (0.5, 0.75),
            Position::Centre => (0.5, 0.5),
        }
    }

    /// The words that place an object, e.g. "on the left", "at the top", "in the centre".
    pub fn phrase(self) -> &'static str {
        match self {
            Position::Left => "on the left",
            Position::Right => "on the right",
            Position::Top => "at the top",
            Position::Bottom => "at the bottom",
            Position::Centre => "in the centre",
        }
    }
}

impl Size {
    /// The nominal half-extent as a fraction of the image side.
    pub fn half_extent(self) -> f32 {
        match self {
            Size::Small => 0.09,
            Size::Large => 0.19,
        }
    }
}

/// One object of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Object {
    pub shape: Shape,
    pub colour: Colour,
    pub size: Size,
    pub position: Position,
}

impl Object {
    /// "large red circle": the words of the object without its position.
    pub fn noun_phrase(&self) -> String {
        format!("{} {} {}", self.size, self.colour, self.shape)
    }
}

/// What an image shows: its objects (one or two, in caption order) and its background colour.
/// Serialised as the `labels` field of a metadata.jsonl line, e.g.
/// `{"objects":[{"shape":"circle","colour":"red","size":"large","position":"left"}],"background":"blue"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Labels {
    pub objects: Vec<Object>,
    pub background: Colour,
}

impl Labels {
    /// Why these labels cannot be drawn as the toy world draws them, if they cannot: no object
    /// or more than two, an object colour that is not one of [`Colour::OBJECT`], a background
    /// equal to an object's colour, or two objects at one position.
    pub fn check(&self) -> Result<(), String> {
        if self.objects.is_empty() || self.objects.len() > 2 {
            return Err(format!(
                "{} objects (the toy world draws one or two)",
                self.objects.len()
            ));
        }
        for o in &self.objects {
            if !Colour::OBJECT.contains(&o.colour) {
                return Err(format!(
                    "object colour {} is not an object colour",
                    o.colour
                ));
            }
            if o.colour == self.background {
                return Err(format!("object colour {} equals the background", o.colour));
            }
        }
        if let [a, b] = self.objects.as_slice()
            && a.position == b.position
        {
            return Err(format!("two objects {}", a.position.phrase()));
        }
        Ok(())
    }
}
