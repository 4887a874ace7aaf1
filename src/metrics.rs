//! The records of `metrics.jsonl`, the per-epoch log `train` writes (one JSON object a line) and `plot` and
//! checkpoints read back, and the bounds on what is read back.

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub step: u64,
    /// True when the epoch was cut short by --steps.
    pub partial: bool,
    pub train_nll: f64,
    pub train_bpd: f64,
    /// None when there are no validation images (JSON `null`, never NaN).
    pub val_nll: Option<f64>,
    pub val_bpd: Option<f64>,
    /// The same under the Polyak average of the parameters, when the run keeps one (`--ema`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_nll_ema: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_bpd_ema: Option<f64>,
    pub seconds: f64,
    pub images_per_second: f64,
    /// The epoch's learning rate (`--lr` · `--lr-decay`^(epoch − 1), or from a branch's own start: see
    /// `TrainState::lr_epoch0`).
    pub lr: f64,
}

/// The largest `metrics.jsonl` read back (a record is about 300 bytes: this is over 200,000 epochs).
pub const MAX_METRICS_BYTES: u64 = 64 << 20;
/// The longest line of `metrics.jsonl` read back.
pub const MAX_METRICS_LINE: usize = 64 << 10;
