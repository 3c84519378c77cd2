//! Metrics of reward incremental learning: the forgetting measure of the paper (Eq. 3) and, as
//! they are built, the evaluation runner, CLIP score, FID and the report tables.

pub mod forgetting;

pub use forgetting::{Direction, forgetting};
