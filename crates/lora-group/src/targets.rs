//! Which layers get LoRA pairs, as peft's `target_modules`: a list of module names matched
//! against the end of each layer's path, or one regular expression matched against the whole path.

use anyhow::{Result, bail};
use regex::Regex;

/// The layers a task adapts.
#[derive(Debug, Clone)]
pub enum Targets {
    /// Layers whose path is one of these names or ends with `.name` (peft's list form).
    Names(Vec<String>),
    /// Layers whose whole path matches this expression (peft's string form).
    Pattern(Regex),
}

impl Default for Targets {
    /// AlignProp's choice: the UNet attention projections `to_q`, `to_k`, `to_v`, `to_out.0`.
    fn default() -> Self {
        Self::Names(
            ["to_q", "to_k", "to_v", "to_out.0"]
                .map(String::from)
                .to_vec(),
        )
    }
}

impl Targets {
    /// A full-match regular expression over layer paths.
    pub fn pattern(expr: &str) -> Result<Self> {
        match Regex::new(&format!("^(?:{expr})$")) {
            Ok(re) => Ok(Self::Pattern(re)),
            Err(e) => bail!("invalid target pattern {expr:?}: {e}"),
        }
    }

    /// Whether the layer at `path` (e.g. `down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q`)
    /// is targeted.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Names(names) => names
                .iter()
                .any(|n| path == n || path.ends_with(&format!(".{n}"))),
            Self::Pattern(re) => re.is_match(path),
        }
    }

    /// A short description for error messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Names(n) => format!("{n:?}"),
            Self::Pattern(re) => format!("/{}/", re.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_path_suffixes_only_at_segment_boundaries() {
        let t = Targets::default();
        assert!(t.matches("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"));
        assert!(t.matches("mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0"));
        assert!(!t.matches("down_blocks.0.attentions.0.proj_in"));
        assert!(!t.matches("x.add_to_q"));
    }

    #[test]
    fn patterns_must_match_the_whole_path() {
        let t = Targets::pattern(r".*attn2\.to_(k|v)").unwrap();
        assert!(t.matches("up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"));
        assert!(!t.matches("up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.extra"));
        assert!(!t.matches("up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_k"));
        assert!(Targets::pattern("(").is_err());
    }
}
