//! The run directory: its default name, the checks before a run writes into it, and its preparation (a fresh log,
//! or the resumed one repaired; temporary files of interrupted writes removed).

use super::metrics_log::repair_metrics;
use crate::checkpoint::TrainState;
use crate::fsio;
use anyhow::{bail, ensure, Context, Result};
use std::path::{Path, PathBuf};

/// `runs/<UTC timestamp>`, the default run directory.
pub fn default_run_dir() -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    PathBuf::from("runs").join(format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    ))
}

/// Checks the run directory `out` for this run: a fresh run needs one that holds no run; a resumed one its
/// checkpoint's own directory or one that holds no run (a branch of the run); and the files the run writes, where
/// they exist, must be regular files (or links to them).
pub(super) fn check_run_dir(out: &Path, resume: Option<&Path>) -> Result<()> {
    if let Ok(meta) = std::fs::metadata(out) {
        ensure!(
            meta.is_dir(),
            "{} is {}; a run directory must be a directory",
            out.display(),
            fsio::file_kind(&meta)
        );
    }
    let holds = RUN_FILES
        .iter()
        .find(|f| std::fs::symlink_metadata(out.join(f)).is_ok());
    match (resume, holds) {
        (None, Some(existing)) => bail!(
            "{} already holds a run ({existing}); continue it with --resume {} or choose another --out",
            out.display(),
            out.join("last.safetensors").display()
        ),
        (Some(ck), Some(existing)) if !same_dir(&run_dir_of(ck), out) => bail!(
            "{} holds another run ({existing}); --resume {} continues in {}, or in an --out that holds no run yet \
             (a branch of the run) — it never writes over another run",
            out.display(),
            ck.display(),
            run_dir_of(ck).display()
        ),
        _ => {}
    }
    for f in RUN_FILES {
        fsio::output_target(&out.join(f))?;
    }
    Ok(())
}

/// The files of a run directory that say it holds a run.
const RUN_FILES: [&str; 2] = ["last.safetensors", "metrics.jsonl"];

/// The directory a checkpoint lies in (its run's directory).
pub(super) fn run_dir_of(checkpoint: &Path) -> PathBuf {
    checkpoint
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Whether `a` and `b` name the same directory (both must exist).
pub(super) fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Creates the run directory and returns its `metrics.jsonl`: removed first for a fresh run; for a run resumed
/// from the checkpoint `resume`, the log beside that checkpoint brought in line with it ([`repair_metrics`]).
pub(super) fn prepare_run_dir(out_dir: &Path, resume: Option<&Path>, state: &TrainState) -> Result<PathBuf> {
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating run directory {}", out_dir.display()))?;
    remove_stale_temp_files(out_dir);
    let metrics_path = out_dir.join("metrics.jsonl");
    match resume {
        None => {
            if std::fs::symlink_metadata(&metrics_path).is_ok() {
                // A fresh run starts a fresh log rather than appending to an old run's epochs.
                std::fs::remove_file(&metrics_path)
                    .with_context(|| format!("removing the old {}", metrics_path.display()))?;
            }
        }
        Some(ck) => repair_metrics(&run_dir_of(ck).join("metrics.jsonl"), &metrics_path, state)?,
    }
    Ok(metrics_path)
}

/// Removes the temporary files of atomic writes that a run killed with SIGKILL left in its directory (the caller
/// holds the directory's lock, so no write of a run is in progress there).
fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        if name.to_str().is_some_and(fsio::is_temp_name)
            && e.file_type().is_ok_and(|t| t.is_file())
            && std::fs::remove_file(e.path()).is_ok()
        {
            log::info!("removed {}, left by an interrupted write", e.path().display());
        }
    }
}
