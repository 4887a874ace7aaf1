//! Tests of data loading: small generated IDX and CSV fixtures, a corpus of malformed inputs, and (when
//! available) the real Fashion-MNIST files checked against an independent decoder.

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use pixelcnn::data::{self, binarize, load, Dataset, Format, Split, PIXELS};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

// ------------------------------------------------------------------------------------------------
// Fixture builders

/// Deterministic raw pixels for `n` images, covering all values 0..=255; pixels 0 and 1 of every image
/// are the binarization boundary values 84 and 85.
fn raw_images(n: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..n * PIXELS)
        .map(|i| ((i * 37 + i / PIXELS * 11) % 256) as u8)
        .collect();
    for img in 0..n {
        v[img * PIXELS] = 84;
        v[img * PIXELS + 1] = 85;
    }
    v
}

fn raw_labels(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 10) as u8).collect()
}

fn idx_images(count: u32, rows: u32, cols: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for word in [0x803, count, rows, cols] {
        v.extend_from_slice(&u32::to_be_bytes(word));
    }
    v.extend_from_slice(payload);
    v
}

fn idx_labels(count: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0x801u32.to_be_bytes());
    v.extend_from_slice(&count.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
    out
}

const TRAIN_N: usize = 20;
const TEST_N: usize = 10;

/// The four well-formed files of a small dataset, as (file name without .gz, bytes).
fn good_files() -> Vec<(&'static str, Vec<u8>)> {
    let train = raw_images(TRAIN_N);
    // Shift the test images so they differ from the training ones.
    let test: Vec<u8> = raw_images(TEST_N).iter().map(|v| v.wrapping_add(3)).collect();
    vec![
        ("train-images-idx3-ubyte", idx_images(TRAIN_N as u32, 28, 28, &train)),
        (
            "train-labels-idx1-ubyte",
            idx_labels(TRAIN_N as u32, &raw_labels(TRAIN_N)),
        ),
        ("t10k-images-idx3-ubyte", idx_images(TEST_N as u32, 28, 28, &test)),
        ("t10k-labels-idx1-ubyte", idx_labels(TEST_N as u32, &raw_labels(TEST_N))),
    ]
}

/// Writes the files into `dir`, gzipping those whose index is in `gz` (adding the .gz suffix).
fn write_files(dir: &Path, files: &[(&str, Vec<u8>)], gz: &[usize]) {
    for (i, (name, bytes)) in files.iter().enumerate() {
        if gz.contains(&i) {
            std::fs::write(dir.join(format!("{name}.gz")), gzip(bytes)).unwrap();
        } else {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

/// A Kaggle CSV of raw images and labels, with or without the header line.
fn csv_text(images: &[u8], labels: &[u8], header: bool) -> String {
    let mut s = String::new();
    if header {
        s.push_str("label");
        for p in 1..=PIXELS {
            s.push_str(&format!(",pixel{p}"));
        }
        s.push('\n');
    }
    for (i, label) in labels.iter().enumerate() {
        s.push_str(&label.to_string());
        for v in &images[i * PIXELS..(i + 1) * PIXELS] {
            s.push(',');
            s.push_str(&v.to_string());
        }
        s.push('\n');
    }
    s
}

fn binarized(raw: &[u8]) -> Vec<u8> {
    raw.iter().map(|&v| binarize(v)).collect()
}

// ------------------------------------------------------------------------------------------------
// Well-formed input

#[test]
fn binarize_threshold_is_84_85() {
    for v in 0..=255u8 {
        let expected = u8::from(f64::from(v) / 256.0 >= 0.33);
        assert_eq!(binarize(v), expected, "value {v}");
    }
    assert_eq!(binarize(84), 0);
    assert_eq!(binarize(85), 1);
    assert_eq!(binarize(0), 0);
    assert_eq!(binarize(255), 1);
}

fn check_small_dataset(ds: &Dataset) {
    let train_raw = raw_images(TRAIN_N);
    let labels = raw_labels(TRAIN_N);
    // val_split 0.2 of 20: int(20 * 0.8) = 16 train, 4 val.
    assert_eq!((ds.train.len(), ds.val.len(), ds.test.len()), (16, 4, TEST_N));
    assert_eq!(ds.train.images, binarized(&train_raw[..16 * PIXELS]));
    assert_eq!(ds.val.images, binarized(&train_raw[16 * PIXELS..]));
    assert_eq!(ds.train.labels, labels[..16]);
    assert_eq!(ds.val.labels, labels[16..]);
    let test_raw: Vec<u8> = raw_images(TEST_N).iter().map(|v| v.wrapping_add(3)).collect();
    assert_eq!(ds.test.images, binarized(&test_raw));
    assert!(ds.train.images.iter().all(|&v| v <= 1));
    for i in 0..ds.train.len() {
        // The boundary pixels: 84 -> 0, 85 -> 1.
        assert_eq!(&ds.train.image(i)[..2], &[0, 1]);
    }
    let ones = binarized(&train_raw[..16 * PIXELS]).iter().filter(|&&v| v == 1).count();
    assert!((ds.train.ones_fraction() - ones as f64 / (16 * PIXELS) as f64).abs() < 1e-12);
    let mut counts = [0u64; 10];
    labels[..16].iter().for_each(|&l| counts[l as usize] += 1);
    assert_eq!(ds.train.label_counts(), counts);
}

#[test]
fn loads_plain_idx() {
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &good_files(), &[]);
    let ds = load(dir.path(), 0.2).unwrap();
    assert_eq!(ds.format, Format::Idx);
    assert_eq!(ds.source, dir.path());
    check_small_dataset(&ds);
}

#[test]
fn loads_gzipped_and_mixed_idx() {
    for gz in [vec![0, 1, 2, 3], vec![0, 3], vec![1, 2]] {
        let dir = tempfile::tempdir().unwrap();
        write_files(dir.path(), &good_files(), &gz);
        let ds = load(dir.path(), 0.2).unwrap_or_else(|e| panic!("gz {gz:?}: {e:#}"));
        check_small_dataset(&ds);
    }
}

#[test]
fn validation_split_follows_keras() {
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &good_files(), &[]);
    // (val_split, expected train size) with train = int(20 * (1 - val_split)).
    for (val_split, train) in [(0.0, 20), (0.1, 18), (0.25, 15), (0.33, 13), (0.5, 10), (0.99, 0)] {
        let expected_train = (20.0 * (1.0 - val_split)) as usize;
        assert_eq!(expected_train, train);
        match load(dir.path(), val_split) {
            Ok(ds) => {
                assert_eq!(
                    (ds.train.len(), ds.val.len()),
                    (train, 20 - train),
                    "val_split {val_split}"
                );
                assert_eq!(ds.train.images.len(), train * PIXELS);
                assert_eq!(ds.val.images.len(), (20 - train) * PIXELS);
            }
            Err(e) => {
                assert_eq!(train, 0, "val_split {val_split}: {e:#}");
                assert!(format!("{e:#}").contains("training split is empty"), "{e:#}");
            }
        }
    }
    for bad in [1.0, 1.5, -0.1, f64::NAN, f64::INFINITY] {
        let err = load(dir.path(), bad).unwrap_err();
        assert!(format!("{err:#}").contains("validation split"), "{bad}: {err:#}");
    }
}

#[test]
fn csv_with_and_without_header_equals_idx() {
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &good_files(), &[0, 1, 2, 3]);
    let idx = load(dir.path(), 0.2).unwrap();
    let raw = raw_images(TRAIN_N);
    let labels = raw_labels(TRAIN_N);
    for header in [true, false] {
        let csv = dir.path().join(format!("train-{header}.csv"));
        std::fs::write(&csv, csv_text(&raw, &labels, header)).unwrap();
        let ds = load(&csv, 0.2).unwrap_or_else(|e| panic!("header {header}: {e:#}"));
        assert_eq!(ds.format, Format::Csv);
        assert_eq!(ds.train, idx.train, "header {header}");
        assert_eq!(ds.val, idx.val, "header {header}");
        // The whole file is the test split.
        assert_eq!(ds.test.len(), TRAIN_N);
        assert_eq!(ds.test.images, binarized(&raw));
        let (a, b) = (data::report_json(&ds), data::report_json(&idx));
        assert_eq!(a["splits"]["train"], b["splits"]["train"]);
        assert_eq!(a["splits"]["val"], b["splits"]["val"]);
        assert_eq!(a["format"], "csv");
    }
    // Gzipped CSV and CRLF line endings load the same.
    let gz = dir.path().join("train.csv.gz");
    std::fs::write(
        &gz,
        gzip(csv_text(&raw, &labels, true).replace('\n', "\r\n").as_bytes()),
    )
    .unwrap();
    let ds = load(&gz, 0.2).unwrap();
    assert_eq!(ds.train, idx.train);
}

#[test]
fn split_accessors_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &good_files(), &[]);
    let ds = load(dir.path(), 0.2).unwrap();
    assert_eq!(ds.split("train").unwrap().len(), 16);
    assert_eq!(ds.split("val").unwrap().len(), 4);
    assert_eq!(ds.split("test").unwrap().len(), 10);
    let err = ds.split("validation").unwrap_err().to_string();
    assert!(err.contains("validation") && err.contains("\"val\""), "{err}");

    let first3 = ds.train.take(3);
    assert_eq!(first3.len(), 3);
    assert_eq!(first3.image(2), ds.train.image(2));
    assert_eq!(ds.train.take(1000), ds.train);
    assert!(ds.train.take(0).is_empty());
    assert!(Split::default().is_empty());
    assert_eq!(Split::default().ones_fraction(), 0.0);

    let json = data::report_json(&ds);
    assert_eq!(json["format"], "idx");
    for (name, split) in [("train", &ds.train), ("val", &ds.val), ("test", &ds.test)] {
        let s = &json["splits"][name];
        assert_eq!(s["images"], split.len(), "{name}");
        assert_eq!(s["ones_fraction"].as_f64().unwrap(), split.ones_fraction(), "{name}");
        let counts: Vec<u64> = s["label_counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(counts, split.label_counts(), "{name}");
    }
    let text = data::report_text(&ds);
    println!("{text}");
    for needle in ["train", "val", "test", "16", "idx"] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    assert_eq!(text.lines().count(), 5);
}

#[test]
fn default_data_path_honours_env() {
    // Only read the environment: setting it would race with the real-data test.
    let expected = match std::env::var("PIXELCNN_DATA") {
        Ok(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from("data/fashion-mnist"),
    };
    assert_eq!(data::default_data_path(), expected);
}

#[test]
fn missing_data_tells_how_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    for path in [dir.path().join("nowhere"), dir.path().to_path_buf()] {
        let err = format!("{:#}", load(&path, 0.1).unwrap_err());
        assert!(err.contains("pixelcnn download"), "{err}");
        assert!(err.contains("--data"), "{err}");
        assert!(err.contains("PIXELCNN_DATA"), "{err}");
    }
}

// ------------------------------------------------------------------------------------------------
// Malformed input

/// One fault: a name, a function that damages the good files (writing them into a directory and
/// returning the path to load), the file the error must name, and another substring it must contain.
struct Fault {
    name: &'static str,
    setup: Box<dyn Fn(&Path) -> PathBuf>,
    file: &'static str,
    needle: &'static str,
}

/// Writes the good files with file `index` replaced by `bytes` (gzipped if `gz`).
fn with_replaced(dir: &Path, index: usize, bytes: Vec<u8>, gz: bool) -> PathBuf {
    let mut files = good_files();
    files[index].1 = bytes;
    let gz_list = if gz { vec![index] } else { vec![] };
    write_files(dir, &files, &gz_list);
    dir.to_path_buf()
}

/// Writes the good files, gzipping file `index`, and then gives its compressed bytes to `damage`.
fn with_damaged_gz(dir: &Path, index: usize, damage: fn(&mut Vec<u8>)) -> PathBuf {
    let files = good_files();
    write_files(dir, &files, &[index]);
    let path = dir.join(format!("{}.gz", files[index].0));
    let mut bytes = std::fs::read(&path).unwrap();
    damage(&mut bytes);
    std::fs::write(&path, bytes).unwrap();
    dir.to_path_buf()
}

fn write_csv(dir: &Path, text: String) -> PathBuf {
    let path = dir.join("fashion.csv");
    std::fs::write(&path, text).unwrap();
    path
}

fn good_csv() -> String {
    csv_text(&raw_images(4), &raw_labels(4), true)
}

/// Replaces field `col` (0-based) of line `line` (1-based) of a CSV text.
fn csv_with_field(line: usize, col: usize, value: &str) -> String {
    let mut lines: Vec<String> = good_csv().lines().map(str::to_string).collect();
    let mut fields: Vec<&str> = lines[line - 1].split(',').collect();
    fields[col] = value;
    lines[line - 1] = fields.join(",");
    lines.join("\n") + "\n"
}

fn fault(
    name: &'static str,
    file: &'static str,
    needle: &'static str,
    setup: impl Fn(&Path) -> PathBuf + 'static,
) -> Fault {
    Fault {
        name,
        setup: Box::new(setup),
        file,
        needle,
    }
}

fn faults() -> Vec<Fault> {
    let (ti, tl) = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte");
    let (si, sl) = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte");
    let train_images = |count, rows, cols, pixels: usize| idx_images(count, rows, cols, &raw_images(TRAIN_N)[..pixels]);
    vec![
        // IDX headers
        fault("images bad magic", ti, "magic", move |d| {
            let mut b = train_images(TRAIN_N as u32, 28, 28, TRAIN_N * PIXELS);
            b[3] = 0x04;
            with_replaced(d, 0, b, false)
        }),
        fault("labels bad magic", tl, "magic", |d| {
            let mut b = idx_labels(TRAIN_N as u32, &raw_labels(TRAIN_N));
            b[2] = 0x09;
            with_replaced(d, 1, b, true)
        }),
        fault("labels file in place of images", ti, "swapped", |d| {
            with_replaced(d, 0, idx_labels(TRAIN_N as u32, &raw_labels(TRAIN_N)), false)
        }),
        fault("gzip data without .gz suffix", si, "gzip", |d| {
            with_replaced(d, 2, gzip(&good_files()[2].1), false)
        }),
        fault("images 27 rows", ti, "27x28", move |d| {
            with_replaced(d, 0, train_images(TRAIN_N as u32, 27, 28, TRAIN_N * 27 * 28), false)
        }),
        fault("images 29 cols gz", ti, "28x29", move |d| {
            with_replaced(d, 0, train_images(TRAIN_N as u32, 28, 29, TRAIN_N * PIXELS), true)
        }),
        fault("truncated header", ti, "truncated header", |d| {
            with_replaced(d, 0, vec![0, 0, 8, 3, 0, 0], false)
        }),
        fault("truncated header gz", tl, "truncated header", |d| {
            with_replaced(d, 1, vec![0, 0, 8], true)
        }),
        fault("count zero", si, "0 images", |d| {
            with_replaced(d, 2, idx_images(0, 28, 28, &[]), false)
        }),
        // Sizes disagreeing with the header
        fault("truncated payload", ti, "truncated", move |d| {
            let b = train_images(TRAIN_N as u32, 28, 28, TRAIN_N * PIXELS);
            with_replaced(d, 0, b[..b.len() - 100].to_vec(), false)
        }),
        fault("truncated payload gz names the image", ti, "image 19", move |d| {
            let b = train_images(TRAIN_N as u32, 28, 28, TRAIN_N * PIXELS);
            with_replaced(d, 0, b[..b.len() - 100].to_vec(), true)
        }),
        fault("truncated labels", sl, "truncated", |d| {
            with_replaced(d, 3, idx_labels(TEST_N as u32, &raw_labels(TEST_N - 1)), false)
        }),
        fault("count one too large", ti, "truncated", move |d| {
            with_replaced(d, 0, train_images(TRAIN_N as u32 + 1, 28, 28, TRAIN_N * PIXELS), false)
        }),
        fault("count 4 billion", ti, "4000000000", move |d| {
            with_replaced(d, 0, train_images(4_000_000_000, 28, 28, TRAIN_N * PIXELS), false)
        }),
        fault("count 4 billion gz", ti, "4000000000", move |d| {
            with_replaced(d, 0, train_images(4_000_000_000, 28, 28, TRAIN_N * PIXELS), true)
        }),
        fault("label count u32::MAX gz", sl, "4294967295", |d| {
            with_replaced(d, 3, idx_labels(u32::MAX, &raw_labels(TEST_N)), true)
        }),
        fault("trailing garbage", ti, "trailing", move |d| {
            let mut b = train_images(TRAIN_N as u32, 28, 28, TRAIN_N * PIXELS);
            b.extend_from_slice(b"garbage");
            with_replaced(d, 0, b, false)
        }),
        fault("trailing garbage inside gz", tl, "trailing", |d| {
            let mut b = idx_labels(TRAIN_N as u32, &raw_labels(TRAIN_N));
            b.push(0);
            with_replaced(d, 1, b, true)
        }),
        fault("empty images file", ti, "empty", |d| with_replaced(d, 0, vec![], false)),
        fault("empty labels .gz file", tl, "empty", |d| {
            with_damaged_gz(d, 1, |b| b.clear())
        }),
        // Damaged gzip
        fault("garbage after the gzip stream", si, "gzip", |d| {
            with_damaged_gz(d, 2, |b| b.extend_from_slice(b"this is not gzip"))
        }),
        fault("corrupt gzip body", ti, "gzip", |d| {
            with_damaged_gz(d, 0, |b| {
                let mid = b.len() / 2;
                b[mid..mid + 16].iter_mut().for_each(|x| *x ^= 0x5a);
            })
        }),
        fault("gzip CRC mismatch", tl, "gzip", |d| {
            with_damaged_gz(d, 1, |b| {
                let n = b.len();
                b[n - 8] ^= 0xff;
            })
        }),
        fault("truncated gzip", si, "gzip", |d| {
            with_damaged_gz(d, 2, |b| b.truncate(b.len() / 2))
        }),
        fault(".gz that is not gzip", sl, "gzip", |d| {
            with_damaged_gz(d, 3, |b| *b = idx_labels(TEST_N as u32, &raw_labels(TEST_N)))
        }),
        // Contents and file sets
        fault("image/label count mismatch", ti, "19 labels", |d| {
            let labels = raw_labels(TRAIN_N - 1);
            with_replaced(d, 1, idx_labels(labels.len() as u32, &labels), false)
        }),
        fault("label 10", tl, "record 5", |d| {
            let mut l = raw_labels(TRAIN_N);
            l[5] = 10;
            with_replaced(d, 1, idx_labels(TRAIN_N as u32, &l), false)
        }),
        fault("label 255 gz", sl, "label 255", |d| {
            let mut l = raw_labels(TEST_N);
            l[9] = 255;
            with_replaced(d, 3, idx_labels(TEST_N as u32, &l), true)
        }),
        fault("missing train labels", tl, "missing", |d| {
            write_files(d, &good_files(), &[]);
            std::fs::remove_file(d.join("train-labels-idx1-ubyte")).unwrap();
            d.to_path_buf()
        }),
        fault("missing t10k images", si, "missing", |d| {
            write_files(d, &good_files(), &[0, 1, 2, 3]);
            std::fs::remove_file(d.join("t10k-images-idx3-ubyte.gz")).unwrap();
            d.to_path_buf()
        }),
        fault("single IDX file passed", ti, "directory", |d| {
            write_files(d, &good_files(), &[]);
            d.join("train-images-idx3-ubyte")
        }),
        // Not a fault of one file: the message names the directory, which is checked for every fault.
        fault("one image, all of it validation", "", "training split is empty", |d| {
            let mut files = good_files();
            files[0].1 = idx_images(1, 28, 28, &raw_images(1));
            files[1].1 = idx_labels(1, &[3]);
            write_files(d, &files, &[]);
            d.to_path_buf()
        }),
        // CSV
        fault("csv wrong column count", "fashion.csv", "line 3", |d| {
            let mut lines: Vec<String> = good_csv().lines().map(str::to_string).collect();
            lines[2].push_str(",0");
            write_csv(d, lines.join("\n"))
        }),
        fault("csv short row", "fashion.csv", "line 5", |d| {
            let mut lines: Vec<String> = good_csv().lines().map(str::to_string).collect();
            lines[4] = "1,2,3".into();
            write_csv(d, lines.join("\n"))
        }),
        fault("csv non-numeric pixel", "fashion.csv", "line 2, column 11", |d| {
            write_csv(d, csv_with_field(2, 10, "abc"))
        }),
        fault("csv pixel 256", "fashion.csv", "line 4, column 785", |d| {
            write_csv(d, csv_with_field(4, 784, "256"))
        }),
        fault("csv huge pixel", "fashion.csv", "line 3, column 2", |d| {
            write_csv(d, csv_with_field(3, 1, "99999999999999999999"))
        }),
        fault("csv negative pixel", "fashion.csv", "line 3, column 6", |d| {
            write_csv(d, csv_with_field(3, 5, "-1"))
        }),
        fault("csv fractional pixel", "fashion.csv", "line 3", |d| {
            write_csv(d, csv_with_field(3, 5, "1.5"))
        }),
        fault("csv empty field", "fashion.csv", "line 2", |d| {
            write_csv(d, csv_with_field(2, 7, ""))
        }),
        fault("csv label 10", "fashion.csv", "line 5, column 1 (label)", |d| {
            write_csv(d, csv_with_field(5, 0, "10"))
        }),
        fault("csv bad header width", "fashion.csv", "line 1", |d| {
            write_csv(d, good_csv().replacen(",pixel784", "", 1))
        }),
        fault("csv empty file", "fashion.csv", "empty", |d| {
            write_csv(d, String::new())
        }),
        fault("csv header only", "fashion.csv", "no data rows", |d| {
            write_csv(d, good_csv().lines().next().unwrap().to_string() + "\n")
        }),
        fault("csv of binary junk", "fashion.csv", "line", |d| {
            let path = d.join("fashion.csv");
            std::fs::write(&path, (0..5000u32).map(|i| (i * 131 % 251) as u8).collect::<Vec<_>>()).unwrap();
            path
        }),
        fault("csv.gz corrupt", "fashion.csv.gz", "gzip", |d| {
            let path = d.join("fashion.csv.gz");
            let mut b = gzip(good_csv().as_bytes());
            b.truncate(b.len() / 2);
            std::fs::write(&path, b).unwrap();
            path
        }),
    ]
}

#[test]
fn malformed_inputs_are_clear_errors() {
    let mut failures = Vec::new();
    let faults = faults();
    assert!(faults.len() >= 40);
    for fault in &faults {
        let dir = tempfile::tempdir().unwrap();
        let path = (fault.setup)(dir.path());
        // The "all validation" case needs a large split; the others use a usual one.
        let val_split = if fault.name.contains("validation") { 0.5 } else { 0.1 };
        let message = match std::panic::catch_unwind(|| load(&path, val_split)) {
            Err(_) => {
                failures.push(format!("{}: panicked", fault.name));
                continue;
            }
            Ok(Ok(_)) => {
                failures.push(format!("{}: loaded without error", fault.name));
                continue;
            }
            Ok(Err(e)) => format!("{e:#}"),
        };
        println!("{:<40} {message}", fault.name);
        let loaded = path.display().to_string();
        if !message.contains(fault.file) || !message.contains(fault.needle) || !message.contains(&loaded) {
            failures.push(format!(
                "{}: message lacks {:?}, {:?} or {loaded:?}: {message}",
                fault.name, fault.file, fault.needle
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} faults mishandled:\n{}",
        failures.len(),
        faults.len(),
        failures.join("\n")
    );
}

// ------------------------------------------------------------------------------------------------
// The real data set

/// The real Fashion-MNIST directory, or None (after a `SKIPPING:` line) when it is not there outside CI.
fn real_data_dir() -> Option<PathBuf> {
    let dir = match std::env::var("PIXELCNN_DATA") {
        Ok(v) if !v.is_empty() => PathBuf::from(v),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/fashion-mnist"),
    };
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "real Fashion-MNIST data missing at {} (required when CI=true)",
            dir.display()
        );
    }
    eprintln!(
        "SKIPPING: the real data set is not at {} (set PIXELCNN_DATA)",
        dir.display()
    );
    None
}

/// Decodes an IDX .gz file directly, returning its payload after the `header`-byte header.
fn decode_gz_payload(path: &Path, header: usize) -> Vec<u8> {
    gunzip(&std::fs::read(path).unwrap()).split_off(header)
}

fn counts(labels: &[u8]) -> [u64; 10] {
    let mut c = [0u64; 10];
    labels.iter().for_each(|&l| c[l as usize] += 1);
    c
}

#[test]
fn real_fashion_mnist_matches_independent_decode() {
    let Some(dir) = real_data_dir() else { return };
    let start = std::time::Instant::now();
    let ds = load(&dir, 0.1).unwrap();
    println!("loaded real Fashion-MNIST in {:.3} s", start.elapsed().as_secs_f64());
    println!("{}", data::report_text(&ds));
    assert_eq!(ds.format, Format::Idx);
    assert_eq!((ds.train.len(), ds.val.len(), ds.test.len()), (54000, 6000, 10000));

    let train_val: Vec<u64> = ds
        .train
        .label_counts()
        .iter()
        .zip(ds.val.label_counts())
        .map(|(a, b)| a + b)
        .collect();
    assert_eq!(train_val, vec![6000; 10]);
    assert_eq!(ds.test.label_counts(), [1000; 10]);
    for split in [&ds.train, &ds.val, &ds.test] {
        let f = split.ones_fraction();
        assert!(f > 0.2 && f < 0.6, "ones fraction {f}");
    }

    // Independent decode: gunzip directly and binarize with the 0.33 * 256 rule written out.
    let bin = |raw: Vec<u8>| -> Vec<u8> {
        raw.into_iter()
            .map(|v| u8::from(f64::from(v) >= 0.33 * 256.0))
            .collect()
    };
    let train_images = bin(decode_gz_payload(&dir.join("train-images-idx3-ubyte.gz"), 16));
    let train_labels = decode_gz_payload(&dir.join("train-labels-idx1-ubyte.gz"), 8);
    let test_images = bin(decode_gz_payload(&dir.join("t10k-images-idx3-ubyte.gz"), 16));
    let test_labels = decode_gz_payload(&dir.join("t10k-labels-idx1-ubyte.gz"), 8);
    assert_eq!(
        (train_images.len(), test_images.len()),
        (60000 * PIXELS, 10000 * PIXELS)
    );
    let cut = 54000;
    assert_eq!(ds.train.labels, train_labels[..cut]);
    assert_eq!(ds.val.labels, train_labels[cut..]);
    assert_eq!(ds.test.labels, test_labels);
    assert_eq!(ds.train.label_counts(), counts(&train_labels[..cut]));
    assert_eq!(ds.val.label_counts(), counts(&train_labels[cut..]));
    let ones = |v: &[u8]| v.iter().filter(|&&x| x == 1).count() as f64 / v.len() as f64;
    assert_eq!(ds.train.ones_fraction(), ones(&train_images[..cut * PIXELS]));
    assert_eq!(ds.val.ones_fraction(), ones(&train_images[cut * PIXELS..]));
    assert_eq!(ds.test.ones_fraction(), ones(&test_images));
    // Whole-vector comparisons with assert! (not assert_eq!) so a failure does not print 40 MB.
    assert!(ds.train.images == train_images[..cut * PIXELS]);
    assert!(ds.val.images == train_images[cut * PIXELS..]);
    assert!(ds.test.images == test_images);
}

#[test]
fn real_fashion_mnist_csv_matches_idx() {
    let Some(dir) = real_data_dir() else { return };
    let idx = load(&dir, 0.1).unwrap();
    // Write the raw training set as a Kaggle CSV (decoded here, not through data.rs).
    let images = decode_gz_payload(&dir.join("train-images-idx3-ubyte.gz"), 16);
    let labels = decode_gz_payload(&dir.join("train-labels-idx1-ubyte.gz"), 8);
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("fashion-mnist_train.csv");
    std::fs::write(&csv, csv_text(&images, &labels, true)).unwrap();

    let start = std::time::Instant::now();
    let ds = load(&csv, 0.1).unwrap();
    println!("loaded the 60000-row CSV in {:.3} s", start.elapsed().as_secs_f64());
    assert_eq!(ds.format, Format::Csv);
    let (a, b) = (data::report_json(&ds), data::report_json(&idx));
    assert_eq!(a["splits"]["train"], b["splits"]["train"]);
    assert_eq!(a["splits"]["val"], b["splits"]["val"]);
    assert_eq!(a["splits"]["test"]["images"], 60000);
    assert!(ds.train == idx.train);
    assert!(ds.val == idx.val);
}
