//! The run's `metrics.jsonl`: one record appended per epoch, and a resumed run's log brought in line with its
//! checkpoint after a crash.

use crate::checkpoint::TrainState;
use crate::fsio;
use crate::metrics::{EpochRecord, MAX_METRICS_BYTES, MAX_METRICS_LINE};
use anyhow::{bail, ensure, Context, Result};
use std::io::Write;
use std::path::Path;

/// Appends one record to `metrics.jsonl` as a single write of the line and its newline, then syncs. Only a
/// regular file is appended to (opening never blocks: a FIFO swapped in is refused).
pub(super) fn append_metrics(path: &Path, record: &EpochRecord) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let mut f = options
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let meta = f
        .metadata()
        .with_context(|| format!("reading metadata of {}", path.display()))?;
    ensure!(
        meta.is_file(),
        "{} is {}, not a regular file; refusing to append to it",
        path.display(),
        fsio::file_kind(&meta)
    );
    let line = format!("{}\n", serde_json::to_string(record)?);
    f.write_all(line.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    f.sync_all().with_context(|| format!("syncing {}", path.display()))?;
    Ok(())
}

/// Brings a resumed run's log in line with its checkpoint before the run appends to it: reads `src` (the log
/// beside the checkpoint), completes a last line whose newline a crash lost or drops one torn mid-write, drops the
/// records of steps past the checkpoint's (written after it was saved), restores the checkpoint's own last record
/// if a crash lost it, and writes the result to `dst` (atomically; `dst` is `src` unless the run continues in
/// another directory). Says what it changed on stderr. A damaged line other than the last is an error naming it.
pub(super) fn repair_metrics(src: &Path, dst: &Path, state: &TrainState) -> Result<()> {
    let text = match std::fs::symlink_metadata(src) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        _ => fsio::read_regular(src, "metrics file", MAX_METRICS_BYTES)?,
    };
    let mut notes = Vec::new();
    let mut kept: Vec<String> = Vec::new();
    let mut steps: Vec<(u64, u64)> = Vec::new();
    let mut dropped = 0;
    let pieces: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    let last = pieces.len() - 1; // the piece after the last newline: empty unless the last line is torn
    for (i, piece) in pieces.iter().enumerate() {
        if piece.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed = (piece.len() <= MAX_METRICS_LINE)
            .then(|| serde_json::from_slice::<serde_json::Value>(piece).ok())
            .flatten()
            .filter(|v| v["step"].is_u64() && v["epoch"].is_u64());
        let Some(v) = parsed else {
            if i == last {
                notes.push(format!(
                    "dropped its torn last line ({} bytes, cut short by a crash while it was written)",
                    piece.len()
                ));
                continue;
            }
            bail!(
                "{} line {}: not a metrics record ({} bytes); fix or remove that line, then resume again",
                src.display(),
                i + 1,
                piece.len()
            );
        };
        if i == last {
            notes.push("completed its last line, whose newline a crash lost".to_string());
        }
        let step = v["step"].as_u64().expect("checked");
        if step > state.step {
            dropped += 1;
            continue;
        }
        steps.push((v["epoch"].as_u64().expect("checked"), step));
        kept.push(String::from_utf8_lossy(piece).into_owned());
    }
    if dropped > 0 {
        notes.push(format!(
            "dropped {dropped} record(s) past step {} of the checkpoint (logged after it was saved)",
            state.step
        ));
    }
    if let Some(r) = &state.last_record {
        if !steps.contains(&(r.epoch as u64, r.step)) {
            kept.push(serde_json::to_string(r)?);
            notes.push(format!(
                "restored the record of epoch {} (step {}), which a crash after the checkpoint lost",
                r.epoch, r.step
            ));
        }
    }
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    if out.as_bytes() != text.as_slice() || (src != dst && !out.is_empty()) {
        fsio::write_atomic(dst, out.as_bytes())?;
    }
    for n in notes {
        eprintln!("{}: {n}", dst.display());
    }
    Ok(())
}
