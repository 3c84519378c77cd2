//! Metrics of reward incremental learning: the evaluation runner (same noise for every model),
//! target metrics (aesthetic, HPS, PNG/JPEG size), FID (pytorch-fid's InceptionV3 and Fréchet
//! distance), the forgetting measure (the paper's Eq. 3) and report tables. CLIP score is listed
//! but not implemented yet (reported as skipped).

pub mod eval;
pub mod fid;
pub mod forgetting;
pub mod inception;
pub mod report;
pub mod resize;

pub use eval::{EvalResult, EvalSpec, Metric, evaluate};
pub use forgetting::{Direction, forgetting};
