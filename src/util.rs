//! Small helpers shared by every command: reading inputs that must be regular files (never blocking on a FIFO or
//! reading a device without end), atomic file writes that never replace anything but a regular file, output-path
//! and image-format checks, the run-directory lock, and a private XDG_RUNTIME_DIR on headless machines.

use anyhow::{anyhow, bail, ensure, Context, Result};
use std::fs::{File, Metadata};
use std::io::{Read, Write};
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

/// The image formats outputs can be written in, by file extension.
pub const IMAGE_EXTENSIONS: &str = ".png, .jpg, .jpeg, .bmp or .gif";

/// The image format an output's extension names (case-insensitive): `.png`, `.jpg`/`.jpeg`, `.bmp`, `.gif`.
pub fn image_format(path: &Path) -> Result<image::ImageFormat> {
    let Some(ext) = path.extension() else {
        bail!(
            "{} has no file extension to choose the image format by; name it {IMAGE_EXTENSIONS}",
            path.display()
        );
    };
    Ok(match ext.to_string_lossy().to_ascii_lowercase().as_str() {
        "png" => image::ImageFormat::Png,
        "jpg" | "jpeg" => image::ImageFormat::Jpeg,
        "bmp" => image::ImageFormat::Bmp,
        "gif" => image::ImageFormat::Gif,
        other => bail!(
            "{}: .{other} is not an image format pixelcnn writes; name it {IMAGE_EXTENSIONS}",
            path.display()
        ),
    })
}

/// [`check_output`] for an image, and its format from the extension ([`image_format`]): both before any work.
pub fn check_image_output(out: &Path, inputs: &[&Path]) -> Result<image::ImageFormat> {
    check_output(out, inputs)?;
    image_format(out)
}

/// Encodes `image` in the format `path`'s extension names and writes it atomically.
pub fn write_image(path: &Path, image: image::DynamicImage) -> Result<()> {
    let format = image_format(path)?;
    // GIF holds RGB(A) frames only (a palette of their colours, exact up to 256 of them).
    let image = match (&image, format) {
        (image::DynamicImage::ImageLuma8(_), image::ImageFormat::Gif) => {
            image::DynamicImage::ImageRgb8(image.to_rgb8())
        }
        _ => image,
    };
    let mut bytes = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut bytes), format)
        .with_context(|| format!("encoding {} as {format:?}", path.display()))?;
    write_atomic(path, &bytes)
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

/// On a machine without `XDG_RUNTIME_DIR` (a container, a CI job, ssh without a login session), points it at a
/// private directory, `<tmp>/pixelcnn-runtime-<uid>` (created with mode 0700, used only if this user owns it and
/// nobody else can enter it), so that the drivers do not print `error: XDG_RUNTIME_DIR is invalid or not set` on
/// every device open. Call before the first driver call; it acts once per process.
pub fn ensure_runtime_dir() {
    #[cfg(unix)]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
            if std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|v| !v.is_empty()) {
                return;
            }
            let uid = unsafe { libc::getuid() };
            let dir = std::env::temp_dir().join(format!("pixelcnn-runtime-{uid}"));
            let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
            let Ok(meta) = std::fs::symlink_metadata(&dir) else {
                return;
            };
            if !meta.is_dir() || meta.uid() != uid {
                return;
            }
            if meta.mode() & 0o077 != 0
                && std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).is_err()
            {
                return;
            }
            std::env::set_var("XDG_RUNTIME_DIR", &dir);
        });
    }
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
    fn image_formats_by_extension() {
        assert_eq!(image_format(Path::new("a.PNG")).unwrap(), image::ImageFormat::Png);
        assert_eq!(image_format(Path::new("a.jpeg")).unwrap(), image::ImageFormat::Jpeg);
        assert_eq!(image_format(Path::new("a.jpg")).unwrap(), image::ImageFormat::Jpeg);
        assert_eq!(image_format(Path::new("a.bmp")).unwrap(), image::ImageFormat::Bmp);
        assert_eq!(image_format(Path::new("a.gif")).unwrap(), image::ImageFormat::Gif);
        for bad in ["a.txt", "a", "a.tiff"] {
            let err = image_format(Path::new(bad)).unwrap_err().to_string();
            assert!(err.contains(bad) && err.contains(".png"), "{err}");
        }
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
