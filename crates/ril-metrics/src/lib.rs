//! Metrics of reward incremental learning: the evaluation runner (same noise for every model),
//! target metrics (aesthetic, HPS, PNG/JPEG size), the forgetting measure (the paper's Eq. 3) and
//! report tables. FID and CLIP score are listed but not implemented yet (reported as skipped).

pub mod eval;
pub mod forgetting;
pub mod report;

pub use eval::{EvalResult, EvalSpec, Metric, evaluate};
pub use forgetting::{Direction, forgetting};
