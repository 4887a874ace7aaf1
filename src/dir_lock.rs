//! The run-directory lock: an advisory `flock` on a lock file in the directory, so that a second `train` writing
//! into a directory in use is refused, naming the holder.

use crate::fsio::file_kind;
use anyhow::{bail, ensure, Context, Result};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The lock file of a run directory (see [`lock_dir`]).
pub const LOCK_FILE: &str = ".pixelcnn.lock";

/// An exclusive lock on a directory, held until this is dropped or the process ends in any way (the operating
/// system releases it, even after `kill -9`).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    pub path: PathBuf,
}

/// Takes the exclusive lock of `dir` (created if needed): an advisory `flock` on `dir/.pixelcnn.lock`, which then
/// holds this process's id. A directory locked by another process is refused with a message naming its pid.
pub fn lock_dir(dir: &Path) -> Result<DirLock> {
    if let Ok(meta) = std::fs::metadata(dir) {
        ensure!(
            meta.is_dir(),
            "{} is {}; a run directory must be a directory",
            dir.display(),
            file_kind(&meta)
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating run directory {}", dir.display()))?;
    let path = dir.join(LOCK_FILE);
    if let Ok(meta) = std::fs::symlink_metadata(&path) {
        ensure!(
            meta.is_file(),
            "the lock file {} is {}, not a regular file; remove it",
            path.display(),
            file_kind(&meta)
        );
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let mut file = options
        .open(&path)
        .with_context(|| format!("opening the lock file {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::WouldBlock {
                bail!("cannot lock {}: {e}", path.display());
            }
            // The holder writes its pid right after locking: give it a moment.
            let mut holder = String::new();
            for _ in 0..20 {
                holder = std::fs::read_to_string(&path).unwrap_or_default().trim().to_string();
                if !holder.is_empty() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            let who = if holder.parse::<u32>().is_ok() {
                format!("pid {holder}")
            } else {
                "a process whose pid it has not written yet".to_string()
            };
            bail!(
                "{} is in use by another pixelcnn train ({who}, holding {}); wait for it to finish or stop it, or choose another directory",
                dir.display(),
                path.display()
            );
        }
    }
    file.set_len(0)
        .and_then(|_| writeln!(file, "{}", std::process::id()))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(DirLock { _file: file, path })
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_locked_directory_is_refused_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_dir(dir.path()).unwrap();
        // flock locks belong to the open file description: a second open in this process conflicts too.
        let err = lock_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
        drop(first);
        lock_dir(dir.path()).unwrap();
    }
}
