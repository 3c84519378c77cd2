//! ril: reward incremental learning for text-to-image diffusion, in Burn. This root crate
//! re-exports the workspace crates and hosts the `ril` command-line tool.

pub use sd_model;

pub mod backends;
