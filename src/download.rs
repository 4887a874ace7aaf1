//! Fetching the four Fashion-MNIST IDX files over plain HTTP, verified by MD5.
//!
//! The crate builds ureq without TLS (no extra native or crypto dependencies), so only `http://` URLs
//! work; for an `https://` mirror the user downloads the files by hand.

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use md5::{Digest, Md5};
use std::io::Read;
use std::path::Path;
use std::time::Duration;

/// The official Fashion-MNIST mirror (plain HTTP).
pub const BASE_URL: &str = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/";

/// The four files and their official MD5 checksums.
pub const FILES: [(&str, &str); 4] = [
    ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
    ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
    ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
    ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
];

/// What `download` did with one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileStatus {
    pub name: String,
    /// "present" (already there with the right MD5) or "downloaded".
    pub action: String,
    /// Size of the file on disk.
    pub bytes: u64,
}

/// Makes sure every `(name, md5)` of `expected` is in `dir` with the right MD5, fetching the missing
/// or damaged ones from `base_url` + name. Files are written atomically, so an interrupted download
/// never leaves a partial file under the real name.
pub fn download(dir: &Path, base_url: &str, expected: &[(&str, &str)], progress: bool) -> Result<Vec<FileStatus>> {
    // Every target is a new name or a regular file (or a link to one): checked before anything is fetched.
    for &(name, _) in expected {
        crate::fsio::output_target(&dir.join(name))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating directory {}", dir.display()))?;
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(30))
        .timeout_read(Duration::from_secs(60))
        .build();
    let mut statuses = Vec::with_capacity(expected.len());
    for &(name, md5) in expected {
        let path = dir.join(name);
        if path.is_file() {
            let (got, len) = md5_of_file(&path)?;
            if got.eq_ignore_ascii_case(md5) {
                statuses.push(FileStatus {
                    name: name.to_string(),
                    action: "present".into(),
                    bytes: len,
                });
                continue;
            }
            // Printed rather than logged: the user should see why a file they have is fetched again.
            eprintln!("{} has MD5 {got}, expected {md5}: downloading it again", path.display());
        }
        let url = file_url(base_url, name);
        if url.get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://")) {
            bail!(
                "cannot download {name} from {url}: this build has no TLS support, so https URLs do not work. \
                 Download the file by hand into {}, or use a plain-http mirror with --base-url",
                dir.display()
            );
        }
        let bytes = fetch(&agent, &url, name, progress)?;
        let got = md5_hex(&bytes);
        if !got.eq_ignore_ascii_case(md5) {
            bail!("{name} downloaded from {url} has MD5 {got}, expected {md5}; not saved");
        }
        crate::fsio::write_atomic(&path, &bytes)?;
        log::info!("downloaded {} ({} bytes) from {url}", path.display(), bytes.len());
        statuses.push(FileStatus {
            name: name.to_string(),
            action: "downloaded".into(),
            bytes: bytes.len() as u64,
        });
    }
    Ok(statuses)
}

/// `base_url` joined with `name`, whether or not the base ends in a slash.
fn file_url(base_url: &str, name: &str) -> String {
    format!("{}/{name}", base_url.trim_end_matches('/'))
}

fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The MD5 (hex) and length of a file already present, read in chunks (constant memory, whatever its size).
fn md5_of_file(path: &Path) -> Result<(String, u64)> {
    let (mut file, _) = crate::fsio::open_regular(path, "file")?;
    let mut hasher = Md5::new();
    let mut chunk = vec![0u8; 1 << 16];
    let mut len = 0u64;
    loop {
        let n = match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => bail!("reading {}: {e}", path.display()),
        };
        hasher.update(&chunk[..n]);
        len += n as u64;
    }
    Ok((hasher.finalize().iter().map(|b| format!("{b:02x}")).collect(), len))
}

/// The most a download may be: the largest official file is 26 MB, so a server sending more is not serving it.
pub const MAX_DOWNLOAD_BYTES: u64 = 64 << 20;

/// GETs `url` into memory (at most [`MAX_DOWNLOAD_BYTES`]), with a progress bar if asked.
fn fetch(agent: &ureq::Agent, url: &str, name: &str, progress: bool) -> Result<Vec<u8>> {
    let response = agent.get(url).call().map_err(|e| match e {
        ureq::Error::Status(code, r) => anyhow!("downloading {name} from {url}: HTTP {code} {}", r.status_text()),
        ureq::Error::Transport(t) => anyhow!("downloading {name} from {url}: {t}"),
    })?;
    let total: Option<u64> = response.header("Content-Length").and_then(|v| v.trim().parse().ok());
    if let Some(total) = total.filter(|&t| t > MAX_DOWNLOAD_BYTES) {
        bail!("downloading {name} from {url}: the server announces {total} bytes, more than any Fashion-MNIST file ({MAX_DOWNLOAD_BYTES} at most)");
    }

    let bar = if !progress {
        ProgressBar::hidden()
    } else if let Some(total) = total {
        let bar = ProgressBar::new(total);
        let style = ProgressStyle::with_template("{msg:28} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar
    } else {
        ProgressBar::new_spinner()
    };
    bar.set_message(name.to_string());

    // Reserve from Content-Length, but not blindly: a bogus header must not cause a huge allocation.
    let mut bytes = Vec::with_capacity(total.unwrap_or(0).min(64 << 20) as usize);
    let mut reader = response.into_reader();
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                bar.abandon();
                bail!(
                    "downloading {name} from {url}: connection failed after {} bytes: {e}",
                    bytes.len()
                );
            }
        };
        bytes.extend_from_slice(&chunk[..n]);
        bar.inc(n as u64);
        if bytes.len() as u64 > MAX_DOWNLOAD_BYTES {
            bar.abandon();
            bail!(
                "downloading {name} from {url}: more than {MAX_DOWNLOAD_BYTES} bytes, more than any Fashion-MNIST file"
            );
        }
    }
    bar.finish();
    if let Some(total) = total {
        if bytes.len() as u64 != total {
            bail!(
                "downloading {name} from {url}: got {} bytes, the server announced {total}",
                bytes.len()
            );
        }
    }
    Ok(bytes)
}
