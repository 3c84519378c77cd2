//! Reward Incremental Learning trainers: the adapted baseline (gradient through the last DDIM
//! step) and RID (plus an EMA teacher and last-step distillation) over sequences of reward tasks,
//! with a TOML config, checkpoints that survive a kill, and a metrics log.

pub mod adamw;
pub mod checkpoint;
pub mod config;
pub mod lock;
pub mod runner;
pub mod step;
pub mod tensorboard;
pub mod trainer;
pub mod update;

pub use config::TrainConfig;
pub use runner::{Interrupted, RunOptions, RunSummary, run, train, train_with};
pub use step::{Frozen, MicroBatch, Objective, Phases};
pub use trainer::{LoraInit, StepRecord, TaskSettings, Trainer};
