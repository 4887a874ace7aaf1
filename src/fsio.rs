//! Safe file I/O shared by every command: reading inputs that must be regular files (never blocking on a FIFO or
//! reading a device without end), atomic file writes that never replace anything but a regular file, and output-path
//! checks.

use anyhow::{anyhow, bail, ensure, Context, Result};
use std::fs::{File, Metadata};
use std::io::Read;
use std::path::{Path, PathBuf};

/// What kind of file `meta` describes, for messages ("a FIFO (named pipe)", "a character device", ...).
pub fn file_kind(meta: &Metadata) -> &'static str {
    let ft = meta.file_type();
    if ft.is_file() {
        return "a regular file";
    }
    if ft.is_dir() {
        return "a directory";
    }
    if ft.is_symlink() {
        return "a symbolic link";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if ft.is_char_device() {
            return "a character device";
        }
        if ft.is_block_device() {
            return "a block device";
        }
        if ft.is_socket() {
            return "a socket";
        }
    }
    "not a regular file"
}

/// Opens the input `path` for reading after checking that it is a regular file (following symbolic links): a FIFO,
/// device, socket or directory is refused before anything is read, with a message naming the file and `what` it
/// should be. Opening never blocks (a FIFO swapped in after the check is opened non-blocking and then refused).
/// Returns the file and its length.
pub fn open_regular(path: &Path, what: &str) -> Result<(File, u64)> {
    let meta = std::fs::metadata(path).with_context(|| format!("cannot open {what} {}", path.display()))?;
    ensure!(
        meta.is_file(),
        "{what} {} is {}, not a regular file",
        path.display(),
        file_kind(&meta)
    );
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options
        .open(path)
        .with_context(|| format!("cannot open {what} {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("reading metadata of {what} {}", path.display()))?;
    ensure!(
        meta.is_file(),
        "{what} {} is {}, not a regular file",
        path.display(),
        file_kind(&meta)
    );
    Ok((file, meta.len()))
}

/// Reads the whole regular file `path` (see [`open_regular`]), refusing one of more than `max` bytes: the bound
/// holds even for files whose size the system does not know in advance.
pub fn read_regular(path: &Path, what: &str, max: u64) -> Result<Vec<u8>> {
    let (file, len) = open_regular(path, what)?;
    ensure!(
        len <= max,
        "{what} {} is {len} bytes; a {what} is at most {max} bytes",
        path.display()
    );
    read_at_most(file, path, what, len, max)
}

/// Reads `file` to its end, at most `max` bytes (`hint`: its expected length, for the first allocation).
pub fn read_at_most(file: impl Read, path: &Path, what: &str, hint: u64, max: u64) -> Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(hint.min(max) as usize);
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {what} {}", path.display()))?;
    ensure!(
        bytes.len() as u64 <= max,
        "{what} {} holds more than {max} bytes; a {what} is at most that",
        path.display()
    );
    Ok(bytes)
}

/// The file an output path stands for: the path itself, or for a symbolic link (a chain of them, dangling or not)
/// its final target, which is what gets written: a link is written through, never replaced. Anything that exists
/// and is not a regular file (directory, FIFO, device, socket) is refused.
pub fn output_target(path: &Path) -> Result<PathBuf> {
    ensure!(!path.as_os_str().is_empty(), "the output path is empty");
    match std::fs::metadata(path) {
        Ok(meta) => {
            if !meta.is_file() {
                if meta.is_dir() {
                    bail!("{} is a directory; give a file name", path.display());
                }
                bail!(
                    "{} is {}, not a regular file; refusing to write over it",
                    path.display(),
                    file_kind(&meta)
                );
            }
            // A regular file, possibly behind links: replace the file itself.
            path.canonicalize()
                .with_context(|| format!("resolving {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A new file, or a dangling link (chain): follow the links to the name to create.
            let mut p = path.to_path_buf();
            for _ in 0..40 {
                match std::fs::symlink_metadata(&p) {
                    Ok(m) if m.file_type().is_symlink() => {
                        let target = std::fs::read_link(&p).with_context(|| format!("reading link {}", p.display()))?;
                        p = match p.parent() {
                            Some(dir) if target.is_relative() => dir.join(target),
                            _ => target,
                        };
                    }
                    _ => return Ok(p),
                }
            }
            bail!("{}: too many levels of symbolic links", path.display())
        }
        Err(e) => Err(anyhow!("cannot write {}: {e}", path.display())),
    }
}

/// A short temporary name, unique enough for a retry loop with O_EXCL: fits beside any legal file name.
fn temp_name(attempt: u32) -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    h.write_u32(attempt);
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    format!(".pixelcnn-{:016x}.tmp", h.finish())
}

/// Whether `name` is one of [`write_atomic`]'s temporary files (for tests and clean-ups).
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with(".pixelcnn-") && name.ends_with(".tmp")
}

/// Writes `bytes` to `path` atomically: a temporary file with a short random name in the target's directory,
/// fsync, rename over the target, fsync of the directory. A crash or Ctrl-C leaves either the old file or the new
/// one, never a half-written file, and a failed write leaves no temporary file behind. A symbolic link is written
/// through to its target; an existing directory, FIFO, device or socket is refused (see [`output_target`]).
/// Names are handled relative to the directory, so any legal name and any path the system accepts works.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let target = output_target(path)?;
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some(name) = target.file_name() else {
        bail!("{} does not name a file", path.display());
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating directory {}", dir.display()))?;
    imp::write_in_dir(&dir, name, bytes).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(unix)]
mod imp {
    use super::temp_name;
    use std::ffi::{CString, OsStr};
    use std::fs::File;
    use std::io::Write;
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    fn cstr(name: &OsStr) -> std::io::Result<CString> {
        CString::new(name.as_bytes())
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in a file name"))
    }

    fn check(r: libc::c_int) -> std::io::Result<libc::c_int> {
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }

    /// Writes `dir/name` through a temporary file beside it, every name relative to the directory's descriptor.
    pub fn write_in_dir(dir: &Path, name: &OsStr, bytes: &[u8]) -> std::io::Result<()> {
        let dir_file = File::open(dir)?;
        let dfd = dir_file.as_raw_fd();
        let final_name = cstr(name)?;
        // Keep an existing file's permission bits.
        let mut old: libc::stat = unsafe { std::mem::zeroed() };
        let old_mode =
            (unsafe { libc::fstatat(dfd, final_name.as_ptr(), &mut old, 0) } == 0).then_some(old.st_mode & 0o7777);
        let (tmp, file) = {
            let mut attempt = 0;
            loop {
                let tmp = cstr(OsStr::new(&temp_name(attempt)))?;
                let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC | libc::O_NOFOLLOW;
                let fd = unsafe { libc::openat(dfd, tmp.as_ptr(), flags, 0o666 as libc::c_uint) };
                if fd >= 0 {
                    break (tmp, unsafe { File::from_raw_fd(fd) });
                }
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::AlreadyExists || attempt >= 16 {
                    return Err(e);
                }
                attempt += 1;
            }
        };
        let result = (|| -> std::io::Result<()> {
            let mut file = file;
            if let Some(mode) = old_mode {
                check(unsafe { libc::fchmod(file.as_raw_fd(), mode) })?;
            }
            file.write_all(bytes)?;
            file.sync_all()?;
            drop(file);
            check(unsafe { libc::renameat(dfd, tmp.as_ptr(), dfd, final_name.as_ptr()) })?;
            // Make the rename itself durable.
            dir_file.sync_all()
        })();
        if result.is_err() {
            unsafe { libc::unlinkat(dfd, tmp.as_ptr(), 0) };
        }
        result
    }
}

#[cfg(not(unix))]
mod imp {
    use super::temp_name;
    use std::ffi::OsStr;
    use std::io::Write;
    use std::path::Path;

    pub fn write_in_dir(dir: &Path, name: &OsStr, bytes: &[u8]) -> std::io::Result<()> {
        let tmp = dir.join(temp_name(0));
        let result = (|| {
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            drop(f);
            std::fs::rename(&tmp, dir.join(name))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

/// Checks an output file path before any work: not a directory or other non-regular file (a symbolic link counts
/// as its target), and not the same file as any input (which the output would destroy).
pub fn check_output(out: &Path, inputs: &[&Path]) -> Result<()> {
    let target = output_target(out)?;
    if let Ok(o) = target.canonicalize() {
        for input in inputs {
            if input.canonicalize().is_ok_and(|i| i == o) {
                bail!(
                    "{} is also an input of this command; writing it would destroy it — choose another output",
                    out.display()
                );
            }
        }
    }
    Ok(())
}

/// Checks an output directory: it may exist (as a directory, or a link to one) or be created.
pub fn check_output_dir(dir: &Path) -> Result<()> {
    ensure!(!dir.as_os_str().is_empty(), "the output directory is empty");
    if let Ok(meta) = std::fs::metadata(dir) {
        ensure!(
            meta.is_dir(),
            "{} is {}; --save-each needs a directory",
            dir.display(),
            file_kind(&meta)
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn write_atomic_replaces_keeps_mode_and_leaves_no_temp() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        write_atomic(&p, b"one").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(names(dir.path()), ["a.bin"]);
    }

    #[test]
    fn write_atomic_writes_through_links_and_refuses_special_files() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target.png");
        std::fs::write(&target, b"old").unwrap();
        let link = dir.path().join("link.png");
        std::os::unix::fs::symlink("target.png", &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        // A dangling link creates its target.
        let dangling = dir.path().join("dangling.png");
        std::os::unix::fs::symlink("made.png", &dangling).unwrap();
        write_atomic(&dangling, b"made").unwrap();
        assert!(std::fs::symlink_metadata(&dangling).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read(dir.path().join("made.png")).unwrap(), b"made");
        // A directory and a FIFO are refused, untouched.
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let err = write_atomic(&fifo, b"x").unwrap_err().to_string();
        assert!(err.contains("FIFO"), "{err}");
        assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
        let err = write_atomic(dir.path(), b"x").unwrap_err().to_string();
        assert!(err.contains("directory"), "{err}");
        let err = write_atomic(Path::new("/dev/null"), b"x").unwrap_err().to_string();
        assert!(err.contains("character device"), "{err}");
        assert!(names(dir.path()).iter().all(|n| !is_temp_name(n)));
    }

    #[test]
    fn reads_are_bounded_and_special_files_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, [7u8; 100]).unwrap();
        assert_eq!(read_regular(&p, "thing", 100).unwrap().len(), 100);
        let err = read_regular(&p, "thing", 99).unwrap_err().to_string();
        assert!(err.contains("at most 99"), "{err}");
        let err = read_regular(Path::new("/dev/zero"), "thing", 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/dev/zero") && err.contains("character device"), "{err}");
        let err = read_regular(dir.path(), "thing", 1).unwrap_err().to_string();
        assert!(err.contains("directory"), "{err}");
    }
}
