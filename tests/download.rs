//! Tests of `download` against a tiny HTTP server on the loopback interface.

use md5::{Digest, Md5};
use pixelcnn::download::{download, FileStatus, FILES};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Most connections one test server answers before its thread ends, so it can never loop forever.
const MAX_REQUESTS: usize = 50;

/// A loopback HTTP/1.1 server serving fixed files, counting the requests for each path.
struct Server {
    base_url: String,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl Server {
    /// Serves each `(name, bytes)` at `/files/name`; any other path gets 404.
    fn start(files: Vec<(&str, Vec<u8>)>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base_url = format!("http://{}/files/", listener.local_addr().unwrap());
        let files: HashMap<String, Vec<u8>> = files.into_iter().map(|(n, b)| (format!("/files/{n}"), b)).collect();
        let hits = Arc::new(Mutex::new(HashMap::new()));
        let counter = Arc::clone(&hits);
        std::thread::spawn(move || {
            for stream in listener.incoming().take(MAX_REQUESTS) {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                // Skip the headers up to the blank line.
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) && !line.trim_end().is_empty() {
                    line.clear();
                }
                let path = request_line.split_whitespace().nth(1).unwrap_or("").to_string();
                *counter.lock().unwrap().entry(path.clone()).or_insert(0) += 1;
                let (status, body): (&str, &[u8]) = match files.get(&path) {
                    Some(body) => ("200 OK", body),
                    None => ("404 Not Found", b"not found"),
                };
                // Files named "*-short" announce more bytes than they send, like a dropped connection.
                // Files named "*-huge" announce a terabyte.
                let announced = if path.ends_with("-huge") {
                    1 << 40
                } else {
                    body.len() + if path.ends_with("-short") { 10 } else { 0 }
                };
                let head = format!("HTTP/1.1 {status}\r\nContent-Length: {announced}\r\nConnection: close\r\n\r\n");
                let _ = stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(body));
            }
        });
        Server { base_url, hits }
    }

    fn hits(&self, name: &str) -> usize {
        self.hits
            .lock()
            .unwrap()
            .get(&format!("/files/{name}"))
            .copied()
            .unwrap_or(0)
    }
}

fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Two small fake files with their MD5s.
fn fake_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("a.gz", (0..100_000u32).map(|i| (i * 7 % 256) as u8).collect()),
        ("b.gz", b"hello labels".to_vec()),
    ]
}

fn expected(files: &[(&'static str, Vec<u8>)]) -> Vec<(&'static str, String)> {
    files.iter().map(|(n, b)| (*n, md5_hex(b))).collect()
}

fn as_refs<'a>(expected: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    expected.iter().map(|(n, m)| (*n, m.as_str())).collect()
}

/// Files in `dir` whose names mark them as temporaries.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect()
}

fn actions(statuses: &[FileStatus]) -> Vec<&str> {
    statuses.iter().map(|s| s.action.as_str()).collect()
}

#[test]
fn downloads_verifies_and_skips_present_files() {
    let files = fake_files();
    let server = Server::start(files.clone());
    let exp = expected(&files);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("nested/data");

    let statuses = download(&target, &server.base_url, &as_refs(&exp), false).unwrap();
    assert_eq!(actions(&statuses), ["downloaded", "downloaded"]);
    for ((name, bytes), status) in files.iter().zip(&statuses) {
        assert_eq!(status.name, *name);
        assert_eq!(status.bytes, bytes.len() as u64);
        assert_eq!(&std::fs::read(target.join(name)).unwrap(), bytes);
        assert_eq!(server.hits(name), 1);
    }

    // A second call finds both files and fetches nothing.
    let statuses = download(&target, &server.base_url, &as_refs(&exp), true).unwrap();
    assert_eq!(actions(&statuses), ["present", "present"]);
    assert_eq!(statuses[0].bytes, files[0].1.len() as u64);
    assert_eq!((server.hits("a.gz"), server.hits("b.gz")), (1, 1));
    assert!(leftovers(&target).is_empty(), "{:?}", leftovers(&target));
}

#[test]
fn corrupted_local_file_is_downloaded_again() {
    let files = fake_files();
    let server = Server::start(files.clone());
    let exp = expected(&files);
    let dir = tempfile::tempdir().unwrap();
    download(dir.path(), &server.base_url, &as_refs(&exp), false).unwrap();

    std::fs::write(dir.path().join("a.gz"), b"damaged").unwrap();
    // The base URL also works without its trailing slash.
    let base = server.base_url.trim_end_matches('/');
    let statuses = download(dir.path(), base, &as_refs(&exp), true).unwrap();
    assert_eq!(actions(&statuses), ["downloaded", "present"]);
    assert_eq!(std::fs::read(dir.path().join("a.gz")).unwrap(), files[0].1);
    assert_eq!((server.hits("a.gz"), server.hits("b.gz")), (2, 1));
    assert!(leftovers(dir.path()).is_empty());
}

#[test]
fn md5_mismatch_from_server_is_an_error_naming_the_file() {
    let files = fake_files();
    let server = Server::start(files.clone());
    let mut exp = expected(&files);
    exp[1].1 = "0123456789abcdef0123456789abcdef".into();
    let dir = tempfile::tempdir().unwrap();

    let err = format!(
        "{:#}",
        download(dir.path(), &server.base_url, &as_refs(&exp), false).unwrap_err()
    );
    println!("{err}");
    assert!(err.contains("b.gz"), "{err}");
    assert!(err.contains(&server.base_url), "{err}");
    assert!(err.contains("0123456789abcdef0123456789abcdef"), "{err}");
    assert!(err.contains(&md5_hex(&files[1].1)), "{err}");
    // The file before it arrived; the bad one was not saved, and nothing temporary is left.
    assert!(dir.path().join("a.gz").is_file());
    assert!(!dir.path().join("b.gz").exists());
    assert!(leftovers(dir.path()).is_empty());
}

#[test]
fn http_404_is_an_error_naming_the_file() {
    let files = fake_files();
    let server = Server::start(files.clone());
    let mut exp = expected(&files);
    exp.push(("missing-idx1-ubyte.gz", md5_hex(b"")));
    let dir = tempfile::tempdir().unwrap();

    let err = format!(
        "{:#}",
        download(dir.path(), &server.base_url, &as_refs(&exp), false).unwrap_err()
    );
    println!("{err}");
    assert!(err.contains("missing-idx1-ubyte.gz"), "{err}");
    assert!(err.contains("404"), "{err}");
    assert_eq!(server.hits("missing-idx1-ubyte.gz"), 1);
    assert!(!dir.path().join("missing-idx1-ubyte.gz").exists());
    assert!(leftovers(dir.path()).is_empty());
}

#[test]
fn truncated_response_is_an_error_naming_the_file() {
    let body = vec![7u8; 5000];
    let server = Server::start(vec![("c.gz-short", body.clone())]);
    let dir = tempfile::tempdir().unwrap();
    let md5 = md5_hex(&body);
    let err = download(dir.path(), &server.base_url, &[("c.gz-short", md5.as_str())], true).unwrap_err();
    let err = format!("{err:#}");
    println!("{err}");
    assert!(err.contains("c.gz-short"), "{err}");
    assert!(!dir.path().join("c.gz-short").exists());
    assert!(leftovers(dir.path()).is_empty());
}

#[test]
fn a_download_larger_than_any_official_file_is_refused() {
    let body = vec![7u8; 5000];
    let server = Server::start(vec![("d.gz-huge", body.clone())]);
    let dir = tempfile::tempdir().unwrap();
    let md5 = md5_hex(&body);
    let err = download(dir.path(), &server.base_url, &[("d.gz-huge", md5.as_str())], false).unwrap_err();
    let err = format!("{err:#}");
    println!("{err}");
    assert!(
        err.contains("d.gz-huge") && err.contains("1099511627776 bytes"),
        "{err}"
    );
    assert!(!dir.path().join("d.gz-huge").exists());
    assert!(leftovers(dir.path()).is_empty());
}

#[test]
fn unreachable_server_is_an_error_naming_the_file() {
    // Bind then drop a listener, so the port is (almost certainly) closed.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let err = download(
        dir.path(),
        &format!("http://127.0.0.1:{port}/"),
        &[("x.gz", "00")],
        false,
    )
    .unwrap_err();
    let err = format!("{err:#}");
    println!("{err}");
    assert!(err.contains("x.gz") && err.contains(&port.to_string()), "{err}");
}

#[test]
fn https_url_explains_the_alternatives() {
    let dir = tempfile::tempdir().unwrap();
    let err = download(dir.path(), "https://example.invalid/", &[("x.gz", "00")], false).unwrap_err();
    let err = format!("{err:#}");
    println!("{err}");
    assert!(err.contains("x.gz") && err.contains("https"), "{err}");
    assert!(err.contains("--base-url") && err.contains("by hand"), "{err}");
}

#[test]
fn official_file_list_is_well_formed() {
    let names: Vec<&str> = FILES.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz"
        ]
    );
    for (_, md5) in FILES {
        assert!(md5.len() == 32 && md5.bytes().all(|c| c.is_ascii_hexdigit()), "{md5}");
    }
    assert!(pixelcnn::download::BASE_URL.starts_with("http://"));
}

#[test]
fn shared_data_matches_official_md5s() {
    // With the real files present, download() with the official list must find them all "present"
    // without touching the network (the base URL points nowhere).
    let dir = match std::env::var("PIXELCNN_DATA") {
        Ok(v) if !v.is_empty() => std::path::PathBuf::from(v),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/fashion-mnist"),
    };
    if !FILES.iter().all(|(n, _)| dir.join(n).is_file()) {
        eprintln!("note: no Fashion-MNIST .gz files in {}; skipping", dir.display());
        return;
    }
    let statuses = download(&dir, "http://127.0.0.1:9/", &FILES, false).unwrap();
    assert_eq!(actions(&statuses), ["present"; 4]);
}
