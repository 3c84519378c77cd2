//! Metrics of reward incremental learning: the evaluation runner (same noise for every model),
//! target metrics (aesthetic, HPS, PNG/JPEG size), FID (pytorch-fid's InceptionV3 and Fréchet
//! distance; statistics files in pytorch-fid's .npz format), CLIP score (torchmetrics'
//! definition and preprocessing), the forgetting measure (the paper's Eq. 3), report tables and
//! the pieces of the HTML reports (pages, SVG charts).

pub mod clip_score;
pub mod eval;
pub mod fid;
pub mod figure;
pub mod forgetting;
pub mod html;
pub mod inception;
pub mod npz;
pub mod pil;
pub mod plot;
pub mod report;
pub mod resize;

pub use eval::{EvalResult, EvalSpec, Metric, evaluate};
pub use forgetting::{Direction, forgetting};
