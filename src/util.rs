//! Small helpers shared by every command: atomic file writes and output-path checks.

use anyhow::{ensure, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsync, then rename.
/// A crash or Ctrl-C leaves either the old file or the new one, never a half-written file, and a failed write
/// leaves no temporary file behind.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    ensure!(!path.is_dir(), "{} is a directory; give a file name", path.display());
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating directory {}", dir.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| -> Result<()> {
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", path.display()))?;
        f.write_all(bytes)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all().with_context(|| format!("syncing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Checks an output file path before any work: not a directory, and not the same file as any input (which the
/// output would destroy).
pub fn check_output(out: &Path, inputs: &[&Path]) -> Result<()> {
    ensure!(!out.as_os_str().is_empty(), "the output path is empty");
    ensure!(!out.is_dir(), "{} is a directory; give a file name", out.display());
    if let Ok(o) = out.canonicalize() {
        for input in inputs {
            if input.canonicalize().is_ok_and(|i| i == o) {
                anyhow::bail!(
                    "{} is also an input of this command; writing it would destroy it — choose another output",
                    out.display()
                );
            }
        }
    }
    Ok(())
}

/// Checks an output directory: it may exist (as a directory) or be created.
pub fn check_output_dir(dir: &Path) -> Result<()> {
    ensure!(
        !dir.is_file(),
        "{} is a file; --save-each needs a directory",
        dir.display()
    );
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}
