//! Training, on either device.
//!
//! * `plan`: what `pixelcnn train` was asked ([`RunRequest`]), resolved into a fresh or a resumed run
//!   ([`plan_run`]), its data loaded and its directory locked.
//! * `run_loop`: the training loop ([`run`], [`train`]): epochs, checkpoints, the NaN guard, Ctrl-C, and the hook
//!   the caller runs at each epoch's end ([`EpochEnd`]).
//! * `backend`: the CPU reference or the GPU trainer behind one interface ([`Backend`]).
//! * `metrics_log`: `metrics.jsonl`, appended per epoch and repaired on a resume.
//! * `run_dir`: the run directory: its default name, its checks and its preparation.

mod backend;
mod metrics_log;
mod plan;
mod run_dir;
mod run_loop;

pub use backend::Backend;
pub use plan::{
    fresh_state, plan_run, RunPlan, RunRequest, Start, TrainOptions, DEFAULT_BATCH_SIZE, DEFAULT_EMA, DEFAULT_EPOCHS,
};
pub use run_dir::default_run_dir;
pub use run_loop::{epoch_order, run, train, EpochEnd, TrainSummary, DEFAULT_SAVE_EVERY_MINUTES, NAN_CHECK_EVERY};
