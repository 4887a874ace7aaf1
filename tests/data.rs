//! Tests of data loading: small generated IDX and CSV fixtures, a corpus of malformed inputs, and (when
//! available) the real Fashion-MNIST files checked against an independent decoder.

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use pixelcnn::data::{
    self, binarize, export_folder, load, load_with, Binarize, Dataset, Format, LabelColumn, LoadOptions, Split, PIXELS,
};
use std::io::{Cursor, Read, Write};
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
/// A classes.txt of ten names.
const TEN_NAMES: &str = "zero\none\ntwo\nthree\nfour\nfive\nsix\nseven\neight\nnine\n";
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
    let mut counts = vec![0u64; 10];
    labels[..16].iter().for_each(|&l| counts[l as usize] += 1);
    assert_eq!(ds.train.label_counts(10), counts);
    // No classes.txt and no "fashion" in the path: the classes are named by number.
    assert_eq!(ds.class_names, (0..10).map(|c| c.to_string()).collect::<Vec<_>>());
    assert_eq!((ds.height, ds.width, ds.train.pixels), (28, 28, PIXELS));
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
        assert_eq!(counts, split.label_counts(ds.classes()), "{name}");
    }
    assert_eq!(json["height"], 28);
    assert_eq!(json["width"], 28);
    assert_eq!(json["class_names"].as_array().unwrap().len(), 10);
    assert_eq!(json["binarize"]["threshold"], 0.33);
    assert_eq!(json["binarize"]["invert"], false);
    let text = data::report_text(&ds);
    println!("{text}");
    for needle in [
        "train",
        "val",
        "test",
        "16",
        "idx",
        "28x28",
        "10 classes",
        "grey / 255 >= 0.33",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    // Two description lines, the split table (a header and three splits), the class table (a header and ten).
    assert_eq!(text.lines().count(), 2 + 4 + 11, "{text}");
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
        // Labels may be 0-255; more labels than classes.txt names is the error.
        fault("label 10 beyond classes.txt's 10 names", tl, "record 5", |d| {
            let mut l = raw_labels(TRAIN_N);
            l[5] = 10;
            std::fs::write(d.join("classes.txt"), TEN_NAMES).unwrap();
            with_replaced(d, 1, idx_labels(TRAIN_N as u32, &l), false)
        }),
        fault("label 255 gz beyond classes.txt's 10 names", sl, "label 255", |d| {
            let mut l = raw_labels(TEST_N);
            l[9] = 255;
            std::fs::write(d.join("classes.txt"), TEN_NAMES).unwrap();
            with_replaced(d, 3, idx_labels(TEST_N as u32, &l), true)
        }),
        fault(
            "classes.txt with fewer names than labels",
            "classes.txt",
            "names 3 classes",
            |d| {
                std::fs::write(d.join("classes.txt"), "a\nb\nc\n").unwrap();
                with_replaced(d, 1, idx_labels(TRAIN_N as u32, &raw_labels(TRAIN_N)), false)
            },
        ),
        fault("classes.txt with a repeated name", "classes.txt", "line 4", |d| {
            std::fs::write(d.join("classes.txt"), "a\nb\n\n  a  \n").unwrap();
            with_replaced(d, 1, idx_labels(TRAIN_N as u32, &raw_labels(TRAIN_N)), false)
        }),
        fault("classes.txt not UTF-8", "classes.txt", "UTF-8", |d| {
            std::fs::write(d.join("classes.txt"), b"a\nb\xff\n").unwrap();
            with_replaced(d, 1, idx_labels(TRAIN_N as u32, &raw_labels(TRAIN_N)), false)
        }),
        fault("train and test images of different shapes", si, "28x28", |d| {
            let test: Vec<u8> = raw_images(TEST_N).iter().map(|v| v.wrapping_add(3)).collect();
            with_replaced(d, 2, idx_images(TEST_N as u32, 16, 49, &test), false)
        }),
        fault("image side 0", ti, "28x0", move |d| {
            with_replaced(d, 0, train_images(TRAIN_N as u32, 28, 0, 0), false)
        }),
        fault("image side over the limit", ti, "100000x28", move |d| {
            with_replaced(d, 0, train_images(TRAIN_N as u32, 100_000, 28, TRAIN_N * PIXELS), true)
        }),
        fault("train labels without test labels", sl, "missing", |d| {
            write_files(d, &good_files(), &[1, 3]);
            std::fs::remove_file(d.join("t10k-labels-idx1-ubyte.gz")).unwrap();
            d.to_path_buf()
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
        fault("csv label 256", "fashion.csv", "line 5, column 1 (label)", |d| {
            write_csv(d, csv_with_field(5, 0, "256"))
        }),
        fault(
            "csv label 10 beyond classes.txt's names",
            "fashion.csv",
            "label 10 on line 5",
            |d| {
                // Without the classes.txt this loads: "fashion" in the path gives Fashion-MNIST's ten names only when
                // the labels fit them, and numbers them otherwise.
                std::fs::write(d.join("classes.txt"), TEN_NAMES).unwrap();
                write_csv(d, csv_with_field(5, 0, "10"))
            },
        ),
        fault("csv line longer than the bound", "fashion.csv", "longer than", |d| {
            write_csv(d, "1,".repeat(data::MAX_CSV_LINE))
        }),
        fault("csv not a square image", "fashion.csv", "--image-size", |d| {
            let lines: Vec<String> = good_csv()
                .lines()
                .skip(1)
                .map(|l| l.rsplit_once(',').unwrap().0.to_string())
                .collect();
            write_csv(d, lines.join("\n"))
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
    assert!(faults.len() >= 50);
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

fn counts(labels: &[u8]) -> Vec<u64> {
    let mut c = vec![0u64; 10];
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
        .label_counts(10)
        .iter()
        .zip(ds.val.label_counts(10))
        .map(|(a, b)| a + b)
        .collect();
    assert_eq!(train_val, vec![6000; 10]);
    assert_eq!(ds.test.label_counts(10), [1000; 10]);
    assert_eq!((ds.height, ds.width), (28, 28));
    assert_eq!(ds.class_names[0], "t-shirt");
    assert_eq!(ds.class_names[9], "ankle-boot");
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
    assert_eq!(ds.train.label_counts(10), counts(&train_labels[..cut]));
    assert_eq!(ds.val.label_counts(10), counts(&train_labels[cut..]));
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

// ------------------------------------------------------------------------------------------------
// Binarization options

#[test]
fn default_binarization_is_the_reference_rule_for_every_byte() {
    let rule = Binarize::default();
    assert_eq!((rule.threshold, rule.invert), (0.33, false));
    for v in 0..=255u8 {
        // The reference: x / 256 >= 0.33. The new rule: x / 255 >= 0.33. Both put the line between 84 and 85.
        let reference = u8::from(f64::from(v) / 256.0 >= 0.33);
        assert_eq!(rule.apply(u32::from(v), 255), reference, "value {v}");
        assert_eq!(binarize(v), reference, "value {v}");
        assert_eq!(reference, u8::from(v >= data::BINARIZE_THRESHOLD), "value {v}");
        // Inverting mirrors the grey.
        let inverted = Binarize { invert: true, ..rule };
        assert_eq!(
            inverted.apply(u32::from(v), 255),
            rule.apply(255 - u32::from(v), 255),
            "value {v}"
        );
    }
    // Other maxima: digits' 0-16 with 0.33 puts the line between 5 and 6.
    let ones: Vec<u8> = (0..=16).map(|v| rule.apply(v, 16)).collect();
    assert_eq!(ones, [vec![0; 6], vec![1; 11]].concat());
    // Threshold 1: only the maximum is 1.
    let top = Binarize {
        threshold: 1.0,
        invert: false,
    };
    assert_eq!((top.apply(254, 255), top.apply(255, 255)), (0, 1));
}

#[test]
fn binarization_threshold_must_be_in_0_1() {
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &good_files(), &[]);
    for bad in [0.0, -0.5, 1.0001, f64::NAN, f64::INFINITY] {
        let opts = LoadOptions {
            binarize: Binarize {
                threshold: bad,
                invert: false,
            },
            ..LoadOptions::default()
        };
        let err = format!("{:#}", load_with(dir.path(), &opts).unwrap_err());
        assert!(err.contains("threshold") && err.contains("(0, 1]"), "{bad}: {err}");
    }
    // A different threshold and inversion change the pixels as the rule says.
    let opts = LoadOptions {
        val_split: 0.2,
        binarize: Binarize {
            threshold: 0.5,
            invert: true,
        },
        ..LoadOptions::default()
    };
    let ds = load_with(dir.path(), &opts).unwrap();
    let raw = raw_images(TRAIN_N);
    let expected: Vec<u8> = raw[..16 * PIXELS]
        .iter()
        .map(|&v| u8::from((255.0 - f64::from(v)) / 255.0 >= 0.5))
        .collect();
    assert_eq!(ds.train.images, expected);
    assert_eq!(ds.binarize, opts.binarize);
    assert!(
        data::report_text(&ds).contains("(255 - grey) / 255 >= 0.5"),
        "{}",
        data::report_text(&ds)
    );
}

#[test]
fn image_size_and_label_column_parse() {
    assert_eq!(data::parse_image_size("16x20").unwrap(), (16, 20));
    assert_eq!(data::parse_image_size(" 8 X 8 ").unwrap(), (8, 8));
    assert_eq!(data::parse_image_size("28×28").unwrap(), (28, 28));
    for bad in ["16", "x20", "16x", "0x5", "5x0", "16384x16385", "-1x4", "axb"] {
        let err = format!("{:#}", data::parse_image_size(bad).unwrap_err());
        assert!(err.contains("image size"), "{bad}: {err}");
    }
    assert_eq!("Last".parse::<LabelColumn>().unwrap(), LabelColumn::Last);
    assert_eq!("first".parse::<LabelColumn>().unwrap(), LabelColumn::First);
    assert_eq!("NONE".parse::<LabelColumn>().unwrap(), LabelColumn::None);
    assert!("middle".parse::<LabelColumn>().is_err());
    assert_eq!(LabelColumn::default(), LabelColumn::First);
    let d = LoadOptions::default();
    assert_eq!((d.val_split, d.image_size, d.max_value), (0.1, None, None));
    assert!(d.class_names.is_none());
}

// ------------------------------------------------------------------------------------------------
// IDX of any shape, labels optional, class names

/// Writes an IDX set of `h`x`w` images into `dir`: `train` and `test` raw pixels, and labels when given.
fn write_idx_set(dir: &Path, h: u32, w: u32, train: &[u8], test: &[u8], labels: Option<(&[u8], &[u8])>) {
    let n = |v: &[u8]| (v.len() / (h * w) as usize) as u32;
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("train-images-idx3-ubyte"), idx_images(n(train), h, w, train)).unwrap();
    std::fs::write(
        dir.join("t10k-images-idx3-ubyte.gz"),
        gzip(&idx_images(n(test), h, w, test)),
    )
    .unwrap();
    if let Some((train_labels, test_labels)) = labels {
        let l = |v: &[u8]| idx_labels(v.len() as u32, v);
        std::fs::write(dir.join("train-labels-idx1-ubyte.gz"), gzip(&l(train_labels))).unwrap();
        std::fs::write(dir.join("t10k-labels-idx1-ubyte"), l(test_labels)).unwrap();
    }
}

/// `n` raw images of `pixels` pixels, all values 0..=255 occurring.
fn raw_pixels(n: usize, pixels: usize, seed: usize) -> Vec<u8> {
    (0..n * pixels)
        .map(|i| ((i * 97 + seed * 31 + i / pixels * 13) % 256) as u8)
        .collect()
}

#[test]
fn idx_16x20_labelled_and_unlabelled() {
    let (h, w) = (16, 20);
    let train = raw_pixels(12, h * w, 1);
    let test = raw_pixels(5, h * w, 2);
    let train_labels: Vec<u8> = (0..12).map(|i| (i % 4) as u8).collect();
    let test_labels = [3u8, 2, 1, 0, 3];
    let tmp = tempfile::tempdir().unwrap();

    let labelled = tmp.path().join("labelled");
    write_idx_set(
        &labelled,
        h as u32,
        w as u32,
        &train,
        &test,
        Some((&train_labels, &test_labels)),
    );
    let ds = load(&labelled, 0.25).unwrap();
    assert_eq!(
        (ds.format, ds.labelled, ds.height, ds.width),
        (Format::Idx, true, 16, 20)
    );
    assert_eq!((ds.train.len(), ds.val.len(), ds.test.len()), (9, 3, 5));
    assert_eq!(ds.train.pixels, 320);
    assert_eq!(ds.train.images, binarized(&train[..9 * 320]));
    assert_eq!(ds.val.image(2), &binarized(&train[11 * 320..])[..]);
    assert_eq!(ds.test.images, binarized(&test));
    assert_eq!(ds.train.labels, train_labels[..9]);
    assert_eq!(ds.test.labels, test_labels);
    assert_eq!(ds.class_names, ["0", "1", "2", "3"]);
    assert_eq!(ds.train.label_counts(4), [3, 2, 2, 2]);
    assert!(ds.notes.is_empty(), "{:?}", ds.notes);
    let text = data::report_text(&ds);
    assert!(text.contains("16x20 images, 4 classes"), "{text}");
    assert_eq!(data::report_json(&ds)["width"], 20);

    // The same images without label files: unlabelled, every label 0, no class names.
    let unlabelled = tmp.path().join("unlabelled");
    write_idx_set(&unlabelled, h as u32, w as u32, &train, &test, None);
    let u = load(&unlabelled, 0.25).unwrap();
    assert!(!u.labelled);
    assert!(u.class_names.is_empty());
    assert_eq!(u.train.images, ds.train.images);
    assert_eq!(u.test.images, ds.test.images);
    assert!(u.train.labels.iter().chain(&u.test.labels).all(|&l| l == 0));
    let text = data::report_text(&u);
    assert!(
        text.contains("16x20 images, unlabelled") && !text.contains("class"),
        "{text}"
    );

    // --image-size must agree with the header: IDX images are not resized.
    let opts = |size| LoadOptions {
        image_size: Some(size),
        ..LoadOptions::default()
    };
    assert!(load_with(&labelled, &opts((16, 20))).is_ok());
    let err = format!("{:#}", load_with(&labelled, &opts((20, 16))).unwrap_err());
    assert!(
        err.contains("train-images-idx3-ubyte") && err.contains("16x20") && err.contains("20x16"),
        "{err}"
    );
}

#[test]
fn idx_class_names_come_from_options_then_classes_txt_then_fashion_then_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let train = raw_pixels(6, 4, 1);
    let test = raw_pixels(2, 4, 2);
    let labels: (&[u8], &[u8]) = (&[0, 1, 2, 0, 1, 2], &[2, 0]);
    let plain = tmp.path().join("plain");
    write_idx_set(&plain, 2, 2, &train, &test, Some(labels));
    assert_eq!(load(&plain, 0.0).unwrap().class_names, ["0", "1", "2"]);

    // "fashion" in the path (any case): Fashion-MNIST's names, all ten even if the labels use fewer.
    let fashion = tmp.path().join("My-FASHION-subset");
    write_idx_set(&fashion, 2, 2, &train, &test, Some(labels));
    let ds = load(&fashion, 0.0).unwrap();
    assert_eq!(ds.class_names.len(), 10);
    assert_eq!(&ds.class_names[..3], ["t-shirt", "trouser", "pullover"]);
    assert_eq!(ds.class_names[9], "ankle-boot");
    assert_eq!(
        data::report_json(&ds)["splits"]["train"]["label_counts"]
            .as_array()
            .unwrap()
            .len(),
        10
    );

    // classes.txt beats the path: names trimmed, blank lines skipped; more names than labels are more classes.
    std::fs::write(fashion.join("classes.txt"), "  cat \n\ndog\r\nbird\n\nfish\n").unwrap();
    let ds = load(&fashion, 0.0).unwrap();
    assert_eq!(ds.class_names, ["cat", "dog", "bird", "fish"]);
    assert_eq!(ds.train.label_counts(ds.classes()), [2, 2, 2, 0]);

    // The names given (from the command line) beat classes.txt.
    let given = LoadOptions {
        class_names: Some(vec!["x".into(), " y ".into(), "z".into()]),
        val_split: 0.0,
        ..LoadOptions::default()
    };
    assert_eq!(load_with(&fashion, &given).unwrap().class_names, ["x", "y", "z"]);
    for (names, needle) in [
        (vec!["x", "y"], "the class names given names 2 classes"),
        (vec!["x", "", "z"], "name 2 is an empty class name"),
        (vec!["x", "y", "x"], "appears twice"),
    ] {
        let opts = LoadOptions {
            class_names: Some(names.iter().map(|n| n.to_string()).collect()),
            ..LoadOptions::default()
        };
        let err = format!("{:#}", load_with(&fashion, &opts).unwrap_err());
        assert!(err.contains(needle), "{names:?}: {err}");
    }
    // Over the class limit.
    let many = LoadOptions {
        class_names: Some((0..257).map(|i| format!("c{i}")).collect()),
        ..LoadOptions::default()
    };
    let err = format!("{:#}", load_with(&plain, &many).unwrap_err());
    assert!(err.contains("257 class names") && err.contains("256"), "{err}");

    // Labels past Fashion-MNIST's ten under a "fashion" path: numbered, with a note.
    let wide = tmp.path().join("fashion-wide");
    write_idx_set(&wide, 2, 2, &train, &test, Some((&[0, 11, 2, 0, 1, 2], &[2, 0])));
    let ds = load(&wide, 0.0).unwrap();
    assert_eq!(ds.classes(), 12);
    assert_eq!(ds.class_names[11], "11");
    assert!(ds.notes.iter().any(|n| n.contains("Fashion-MNIST")), "{:?}", ds.notes);

    // The names given are not used for an unlabelled set: a note says so.
    let unlabelled = tmp.path().join("unlabelled");
    write_idx_set(&unlabelled, 2, 2, &train, &test, None);
    let ds = load_with(&unlabelled, &given).unwrap();
    assert!(ds.class_names.is_empty());
    assert!(ds.notes.iter().any(|n| n.contains("unlabelled")), "{:?}", ds.notes);
}

/// The real Fashion-MNIST files, linked (or copied) into a directory whose path does not say "fashion", are still
/// recognized: by the MD5 of their training labels.
#[test]
fn real_fashion_mnist_names_by_md5() {
    let Some(real) = real_data_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("some-set");
    std::fs::create_dir(&dir).unwrap();
    assert!(!dir.to_string_lossy().to_lowercase().contains("fashion"));
    for name in [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ] {
        let file = format!("{name}.gz");
        #[cfg(unix)]
        std::os::unix::fs::symlink(real.join(&file), dir.join(&file)).unwrap();
        #[cfg(not(unix))]
        std::fs::copy(real.join(&file), dir.join(&file)).unwrap();
    }
    let ds = load(&dir, 0.1).unwrap();
    assert_eq!(ds.class_names[0], "t-shirt");
    assert_eq!(ds.class_names.len(), 10);
    // One label changed: no longer the official file, so numbered.
    let mut labels = decode_gz_payload(&real.join("train-labels-idx1-ubyte.gz"), 8);
    labels[0] = (labels[0] + 1) % 10;
    std::fs::remove_file(dir.join("train-labels-idx1-ubyte.gz")).unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte"), idx_labels(60000, &labels)).unwrap();
    let ds = load(&dir, 0.1).unwrap();
    assert_eq!(ds.class_names[0], "0");
}

// ------------------------------------------------------------------------------------------------
// CSV: label last, no label, other maxima and shapes

/// A digits-like CSV: `n` lines of 64 values 0-16 and then the label.
fn digits_like(n: usize) -> (String, Vec<u8>, Vec<u8>) {
    let mut text = String::new();
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for i in 0..n {
        let row: Vec<u8> = (0..64).map(|p| ((p * 5 + i * 3) % 17) as u8).collect();
        let label = (i % 10) as u8;
        text.push_str(&row.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(","));
        text.push_str(&format!(",{label}\n"));
        pixels.extend(row);
        labels.push(label);
    }
    (text, pixels, labels)
}

#[test]
fn csv_label_last_with_max_value_16() {
    let tmp = tempfile::tempdir().unwrap();
    let (text, pixels, labels) = digits_like(20);
    let path = tmp.path().join("digits.csv.gz");
    std::fs::write(&path, gzip(text.as_bytes())).unwrap();
    let opts = LoadOptions {
        label_column: LabelColumn::Last,
        max_value: Some(16),
        val_split: 0.25,
        ..LoadOptions::default()
    };
    let ds = load_with(&path, &opts).unwrap();
    assert_eq!((ds.format, ds.height, ds.width, ds.max_value), (Format::Csv, 8, 8, 16));
    assert_eq!((ds.train.len(), ds.val.len(), ds.test.len()), (15, 5, 20));
    let expected: Vec<u8> = pixels.iter().map(|&v| u8::from(f64::from(v) / 16.0 >= 0.33)).collect();
    assert_eq!(ds.test.images, expected);
    assert_eq!(ds.train.images, expected[..15 * 64]);
    assert_eq!(ds.test.labels, labels);
    assert_eq!(ds.class_names, (0..10).map(|c| c.to_string()).collect::<Vec<_>>());
    assert!(data::report_text(&ds).contains("grey / 16 >= 0.33"));
    assert_eq!(data::report_json(&ds)["binarize"]["max_value"], 16);

    // A value above the maximum names its line and column.
    let bad = text.replacen("\n16,", "\n17,", 1);
    // The first line starting with 16 (never line 1: the replacement needs the newline before it).
    let line = 1 + text.lines().position(|l| l.starts_with("16,")).unwrap();
    assert!(line > 1);
    let bad_path = tmp.path().join("bad.csv");
    std::fs::write(&bad_path, &bad).unwrap();
    let err = format!("{:#}", load_with(&bad_path, &opts).unwrap_err());
    assert!(
        err.contains(&format!(
            "line {line}, column 1 (pixel1): \"17\" is not an integer in 0-16"
        )),
        "{err}"
    );

    // With no label column, the 65 values of a line are the pixels: not a square image.
    let none = LoadOptions {
        label_column: LabelColumn::None,
        max_value: Some(16),
        ..LoadOptions::default()
    };
    let err = format!("{:#}", load_with(&path, &none).unwrap_err());
    assert!(err.contains("65 pixel values") && err.contains("--image-size"), "{err}");
    // ... unless the shape is given: 5x13 images, unlabelled.
    let ds = load_with(
        &path,
        &LoadOptions {
            image_size: Some((5, 13)),
            ..none.clone()
        },
    )
    .unwrap();
    assert!(!ds.labelled && ds.class_names.is_empty());
    assert_eq!((ds.height, ds.width, ds.train.pixels), (5, 13, 65));
    let err = format!(
        "{:#}",
        load_with(
            &path,
            &LoadOptions {
                image_size: Some((8, 8)),
                ..none
            }
        )
        .unwrap_err()
    );
    assert!(err.contains("65 pixel values") && err.contains("8x8"), "{err}");

    // A header line (no integer in it) is skipped for a label-last file too.
    let headed = tmp.path().join("headed.csv");
    let header: Vec<String> = (0..64).map(|p| format!("p{p}")).chain(["target".to_string()]).collect();
    std::fs::write(&headed, format!("{}\n{text}", header.join(","))).unwrap();
    let h = load_with(&headed, &opts).unwrap();
    assert_eq!(h.test, ds_test_of(&path, &opts));

    // The maximum must be at least 1.
    let zero = LoadOptions {
        max_value: Some(0),
        ..opts.clone()
    };
    assert!(format!("{:#}", load_with(&path, &zero).unwrap_err()).contains("at least 1"));
}

fn ds_test_of(path: &Path, opts: &LoadOptions) -> Split {
    load_with(path, opts).unwrap().test
}

/// The shared data directory (`<repo>/../shared/data`), or `$PIXELCNN_DATA/..` when that is set.
fn shared_data_file(relative: &str) -> Option<PathBuf> {
    let mut candidates = vec![Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join(relative)];
    if let Ok(v) = std::env::var("PIXELCNN_DATA") {
        if !v.is_empty() {
            candidates.push(Path::new(&v).join("..").join(relative));
        }
    }
    let found = candidates.iter().find(|p| p.is_file()).cloned();
    if found.is_none() {
        eprintln!("note: {relative} not found in {candidates:?}; skipping");
    }
    found
}

#[test]
fn real_digits_csv_loads_label_last() {
    let Some(path) = shared_data_file("digits/digits.csv.gz") else {
        return;
    };
    let opts = LoadOptions {
        label_column: LabelColumn::Last,
        max_value: Some(16),
        val_split: 0.2,
        ..LoadOptions::default()
    };
    let ds = load_with(&path, &opts).unwrap();
    println!("{}", data::report_text(&ds));
    assert_eq!((ds.height, ds.width, ds.classes()), (8, 8, 10));
    assert_eq!(ds.test.len(), 1797);
    assert_eq!(ds.train.len(), (1797.0 * 0.8) as usize);
    // Independent decode: gunzip, split on commas, binarize v / 16 >= 0.33.
    let text = String::from_utf8(gunzip(&std::fs::read(&path).unwrap())).unwrap();
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let v: Vec<u32> = line.split(',').map(|f| f.trim().parse().unwrap()).collect();
        assert_eq!(v.len(), 65);
        images.extend(v[..64].iter().map(|&x| u8::from(x >= 6)));
        labels.push(v[64] as u8);
    }
    assert!(ds.test.images == images);
    assert_eq!(ds.test.labels, labels);
    let per_class = ds.test.label_counts(10);
    assert!(per_class.iter().all(|&c| (170..=190).contains(&c)), "{per_class:?}");
    // Without the maximum, the 0-16 values are read against 255 and nearly everything is 0.
    let dark = load_with(
        &path,
        &LoadOptions {
            max_value: None,
            ..opts
        },
    )
    .unwrap();
    assert_eq!(dark.test.ones_fraction(), 0.0);
}

// ------------------------------------------------------------------------------------------------
// Folders of images: fixtures

/// Saves a `w`x`h` grey image (any supported format, by extension), creating its folder.
fn save_grey(path: &Path, w: u32, h: u32, f: impl Fn(u32, u32) -> u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::GrayImage::from_fn(w, h, |x, y| image::Luma([f(x, y)]))
        .save(path)
        .unwrap();
}

/// A 4x4 image whose first `k` pixels (row-major) are white: it binarizes to `k` ones, which identifies it.
fn save_marked(path: &Path, k: u32) {
    save_grey(path, 4, 4, |x, y| if y * 4 + x < k { 255 } else { 0 });
}

/// The mark ([`save_marked`]) of each image of a split, in order.
fn marks(split: &Split) -> Vec<u32> {
    (0..split.len())
        .map(|i| split.image(i).iter().map(|&v| u32::from(v)).sum())
        .collect()
}

fn folder_opts(val_split: f64) -> LoadOptions {
    LoadOptions {
        val_split,
        ..LoadOptions::default()
    }
}

/// Appends one PNG chunk (length, type, data, CRC).
fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&crc.sum().to_be_bytes());
}

/// A hand-built PNG: IHDR (`w`, `h`, `depth`, `color`), the `extra` chunks (PLTE, tRNS...), one IDAT of the
/// `rows` (each gets filter byte 0), IEND. For what the `image` encoder does not write (palettes) and for headers
/// that lie (the bomb).
fn hand_png(w: u32, h: u32, depth: u8, color: u8, extra: &[(&[u8; 4], Vec<u8>)], rows: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[depth, color, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    for (kind, data) in extra {
        png_chunk(&mut out, kind, data);
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), Compression::default());
    for row in rows {
        z.write_all(&[0]).unwrap();
        z.write_all(row).unwrap();
    }
    png_chunk(&mut out, b"IDAT", &z.finish().unwrap());
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// Bits written MSB first, with JPEG's byte stuffing (0xFF is followed by 0x00).
struct JpegBits {
    out: Vec<u8>,
    acc: u32,
    n: u32,
}

impl JpegBits {
    fn put(&mut self, value: u32, bits: u32) {
        for i in (0..bits).rev() {
            self.acc = (self.acc << 1) | ((value >> i) & 1);
            self.n += 1;
            if self.n == 8 {
                self.out.push(self.acc as u8);
                if self.acc == 0xff {
                    self.out.push(0);
                }
                (self.acc, self.n) = (0, 0);
            }
        }
    }
    /// Pads the last byte with ones.
    fn finish(mut self) -> Vec<u8> {
        while self.n != 0 {
            self.put(1, 1);
        }
        self.out
    }
    /// A DC difference: its category with the 4-bit code of the DC table below, then the magnitude bits.
    fn dc(&mut self, diff: i32) {
        let category = 32 - diff.unsigned_abs().leading_zeros();
        self.put(category, 4);
        let bits = if diff >= 0 { diff } else { diff + (1 << category) - 1 };
        self.put(bits as u32, category);
    }
}

fn jpeg_segment(out: &mut Vec<u8>, marker: u8, data: &[u8]) {
    out.extend_from_slice(&[0xff, marker]);
    out.extend_from_slice(&((data.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(data);
}

/// A hand-built JPEG (the `image` encoder writes only baseline YCbCr or grey) of `blocks_x` by 1 flat 8x8 blocks:
/// `levels[block][component]` is the level of each component in each block. Flat blocks have only a DC
/// coefficient (quantizer 1: DC = 8 (level - 128)), so they decode exactly. `progressive`: SOF2 with a DC scan and
/// one AC scan per component (all AC coefficients zero) instead of baseline SOF0. `adobe_cmyk`: four components
/// and an Adobe APP14 segment saying "CMYK, no transform" (Adobe's convention stores the inks inverted: 255 is no
/// ink).
fn hand_jpeg(levels: &[Vec<u8>], progressive: bool, adobe_cmyk: bool) -> Vec<u8> {
    let components = levels[0].len();
    let mut out = vec![0xff, 0xd8];
    if adobe_cmyk {
        let mut app14 = b"Adobe".to_vec();
        app14.extend_from_slice(&[0, 100, 0, 0, 0, 0, 0]); // version 100, flags 0 and 0, transform 0
        jpeg_segment(&mut out, 0xee, &app14);
    }
    jpeg_segment(&mut out, 0xdb, &[[0u8].as_slice(), &[1u8; 64]].concat());
    let mut sof = vec![8, 0, 8];
    sof.extend_from_slice(&((levels.len() * 8) as u16).to_be_bytes());
    sof.push(components as u8);
    for c in 0..components {
        sof.extend_from_slice(&[c as u8 + 1, 0x11, 0]);
    }
    jpeg_segment(&mut out, if progressive { 0xc2 } else { 0xc0 }, &sof);
    // DC table 0: categories 0-11, each a 4-bit code equal to the category. AC table 0: only EOB (0x00), code "0".
    let mut dht = vec![0x00];
    dht.extend_from_slice(&[0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    dht.extend(0..12u8);
    jpeg_segment(&mut out, 0xc4, &dht);
    let mut dht = vec![0x10, 1];
    dht.extend_from_slice(&[0; 15]);
    dht.push(0x00);
    jpeg_segment(&mut out, 0xc4, &dht);
    let sos = |comps: &[usize], ss: u8, se: u8| {
        let mut v = vec![comps.len() as u8];
        for &c in comps {
            v.extend_from_slice(&[c as u8 + 1, 0x00]);
        }
        v.extend_from_slice(&[ss, se, 0]);
        v
    };
    let all: Vec<usize> = (0..components).collect();
    // The DC scan (all of baseline's coefficients are in one scan; progressive sends the AC bands after).
    let mut bits = JpegBits {
        out: Vec::new(),
        acc: 0,
        n: 0,
    };
    let mut previous = vec![0i32; components];
    for block in levels {
        for c in 0..components {
            let dc = 8 * (i32::from(block[c]) - 128);
            bits.dc(dc - previous[c]);
            previous[c] = dc;
            if !progressive {
                bits.put(0, 1); // EOB: the AC coefficients are zero
            }
        }
    }
    jpeg_segment(&mut out, 0xda, &sos(&all, 0, if progressive { 0 } else { 63 }));
    out.extend(bits.finish());
    if progressive {
        for c in 0..components {
            let mut bits = JpegBits {
                out: Vec::new(),
                acc: 0,
                n: 0,
            };
            for _ in levels {
                bits.put(0, 1); // EOB run of one block
            }
            jpeg_segment(&mut out, 0xda, &sos(&[c], 1, 63));
            out.extend(bits.finish());
        }
    }
    out.extend_from_slice(&[0xff, 0xd9]);
    out
}

// ------------------------------------------------------------------------------------------------
// Folders of images: well-formed

#[test]
fn folder_labelled_classes_sorted_by_name_images_by_file_name() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("set");
    // Class folders in byte order: "B" < "a" < "b" < "é". File names interleave the classes.
    save_marked(&root.join("b/003.png"), 3);
    save_marked(&root.join("a/001.png"), 1);
    save_marked(&root.join("é/002.png"), 2);
    save_marked(&root.join("B/004.png"), 4);
    save_marked(&root.join("a/005.png"), 5);
    save_marked(&root.join("b/001.png"), 6); // a tie with a/001.png: class a (index 1) first
    save_marked(&root.join("B/010.png"), 7);
    save_marked(&root.join("a/009.png"), 8);
    let ds = load_with(&root, &folder_opts(0.25)).unwrap();
    assert_eq!(
        (ds.format, ds.labelled, ds.height, ds.width),
        (Format::Folder, true, 4, 4)
    );
    assert_eq!(ds.class_names, ["B", "a", "b", "é"]);
    // 001(a) 001(b) 002(é) 003(b) 004(B) 005(a) | 009(a) 010(B)
    assert_eq!(marks(&ds.train), [1, 6, 2, 3, 4, 5]);
    assert_eq!(ds.train.labels, [1, 2, 3, 2, 0, 1]);
    assert_eq!(marks(&ds.val), [8, 7]);
    assert_eq!(ds.val.labels, [1, 0]);
    // No test/ folder: the test split is the validation images, and a note says so.
    assert_eq!(ds.test, ds.val);
    assert!(ds.notes.iter().any(|n| n.contains("no test/ folder")), "{:?}", ds.notes);
    let text = data::report_text(&ds);
    println!("{text}");
    assert!(
        text.contains("folder data from") && text.contains("4x4 images, 4 classes"),
        "{text}"
    );
    assert!(text.contains("3 é"), "{text}");
    assert_eq!(data::report_json(&ds)["format"], "folder");
    // Loading again gives the same thing.
    let again = load_with(&root, &folder_opts(0.25)).unwrap();
    assert_eq!(
        (again.train, again.val, again.class_names),
        (ds.train, ds.val, ds.class_names)
    );
}

#[test]
fn folder_unlabelled_and_train_test_splits() {
    let tmp = tempfile::tempdir().unwrap();
    // Images directly in the folder: one unlabelled set.
    let flat = tmp.path().join("flat");
    for k in 1..=5 {
        save_marked(&flat.join(format!("img{k}.png")), k);
    }
    let ds = load_with(&flat, &folder_opts(0.2)).unwrap();
    assert!(!ds.labelled && ds.class_names.is_empty());
    assert_eq!((marks(&ds.train), marks(&ds.val)), (vec![1, 2, 3, 4], vec![5]));
    assert!(ds.train.labels.iter().all(|&l| l == 0));

    // train/ and test/ with class folders; test/ may lack a class, and its labels are the training classes'.
    let split = tmp.path().join("split");
    save_marked(&split.join("train/cat/1.png"), 1);
    save_marked(&split.join("train/dog/2.png"), 2);
    save_marked(&split.join("train/owl/3.png"), 3);
    save_marked(&split.join("test/owl/4.png"), 4);
    save_marked(&split.join("test/cat/5.png"), 5);
    let ds = load_with(&split, &folder_opts(0.0)).unwrap();
    assert_eq!(ds.class_names, ["cat", "dog", "owl"]);
    assert_eq!(
        (marks(&ds.train), ds.train.labels.clone()),
        (vec![1, 2, 3], vec![0, 1, 2])
    );
    assert!(ds.val.is_empty());
    assert_eq!((marks(&ds.test), ds.test.labels.clone()), (vec![4, 5], vec![2, 0]));
    assert!(!ds.notes.iter().any(|n| n.contains("test/")), "{:?}", ds.notes);

    // Unlabelled train/ and test/.
    let flat_split = tmp.path().join("flat_split");
    save_marked(&flat_split.join("train/a.png"), 1);
    save_marked(&flat_split.join("train/b.png"), 2);
    save_marked(&flat_split.join("test/c.png"), 3);
    let ds = load_with(&flat_split, &folder_opts(0.5)).unwrap();
    assert!(!ds.labelled);
    assert_eq!(
        (marks(&ds.train), marks(&ds.val), marks(&ds.test)),
        (vec![1], vec![2], vec![3])
    );

    // train/ alone: the test split is the validation images.
    let train_only = tmp.path().join("train_only");
    save_marked(&train_only.join("train/x/1.png"), 1);
    save_marked(&train_only.join("train/x/2.png"), 2);
    let ds = load_with(&train_only, &folder_opts(0.5)).unwrap();
    assert_eq!(marks(&ds.test), [2]);
    assert!(ds.notes.iter().any(|n| n.contains("no test/ folder")), "{:?}", ds.notes);
}

#[test]
fn folder_skips_hidden_and_other_files_with_a_note() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("set");
    save_marked(&root.join("a/1.PNG"), 1); // extensions in any case
    save_marked(&root.join("a/2.Png"), 2);
    save_marked(&root.join("b/3.png"), 3);
    save_marked(&root.join("a/.hidden.png"), 9);
    save_marked(&root.join(".ipynb_checkpoints/4.png"), 9); // a hidden folder, not a class
    save_marked(&root.join("a/deeper/5.png"), 9); // not searched
    std::fs::write(root.join("a/notes.txt"), "not an image").unwrap();
    std::fs::write(root.join("b/Thumbs.db"), "x").unwrap();
    std::fs::write(root.join("classes.txt"), "x\ny\n").unwrap();
    let ds = load_with(&root, &folder_opts(0.0)).unwrap();
    assert_eq!(ds.class_names, ["a", "b"]);
    assert_eq!(marks(&ds.train), [1, 2, 3]);
    let notes = ds.notes.join("\n");
    assert!(
        notes.contains("skipped 4 files that are hidden or not png/jpg/jpeg/bmp/gif images"),
        "{notes}"
    );
    assert!(notes.contains("skipped 2 folders"), "{notes}");
    assert!(notes.contains("classes.txt is not used"), "{notes}");
}

#[test]
fn folder_validation_class_coverage_note() {
    let tmp = tempfile::tempdir().unwrap();
    // Names that group by class: the last 20% (2 images) are all "dog".
    let grouped = tmp.path().join("grouped");
    for i in 0..5 {
        save_marked(&grouped.join(format!("cat/cat_{i}.png")), 1);
        save_marked(&grouped.join(format!("dog/dog_{i}.png")), 2);
    }
    let ds = load_with(&grouped, &folder_opts(0.2)).unwrap();
    assert_eq!(ds.val.labels, [1, 1]);
    let note = ds
        .notes
        .iter()
        .find(|n| n.contains("validation split"))
        .expect("a coverage note");
    assert!(
        note.contains("1 of the 2 classes") && note.contains("--val-split 0"),
        "{note}"
    );
    // Names that mix the classes: no note.
    let mixed = tmp.path().join("mixed");
    for i in 0..5 {
        save_marked(&mixed.join(format!("cat/{:02}.png", 2 * i)), 1);
        save_marked(&mixed.join(format!("dog/{:02}.png", 2 * i + 1)), 2);
    }
    let ds = load_with(&mixed, &folder_opts(0.2)).unwrap();
    assert_eq!(ds.val.labels, [0, 1]);
    assert!(
        !ds.notes.iter().any(|n| n.contains("validation split")),
        "{:?}",
        ds.notes
    );
}

#[test]
fn folder_sizes_must_agree_unless_resized() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("set");
    save_grey(&root.join("a/1.png"), 8, 8, |x, _| if x < 4 { 0 } else { 255 });
    // Period-4 columns (255, 0, 0, 0) at 16x16: a Triangle filter gives alternating 1/0 columns at 8x8, nearest
    // neighbour gives all 0, so the result tells which filter ran.
    let stripes = |x: u32, _| if x.is_multiple_of(4) { 255 } else { 0 };
    save_grey(&root.join("a/2.png"), 16, 16, stripes);
    let err = format!("{:#}", load_with(&root, &folder_opts(0.0)).unwrap_err());
    assert!(
        err.contains("2.png") && err.contains("16x16") && err.contains("1.png") && err.contains("8x8"),
        "{err}"
    );

    let opts = LoadOptions {
        image_size: Some((8, 8)),
        ..folder_opts(0.0)
    };
    let ds = load_with(&root, &opts).unwrap();
    assert_eq!((ds.height, ds.width, ds.train.pixels), (8, 8, 64));
    // The 8x8 image is not resampled.
    let first: Vec<u8> = (0..64).map(|i| u8::from(i % 8 >= 4)).collect();
    assert_eq!(ds.train.image(0), &first[..]);
    let big = image::GrayImage::from_fn(16, 16, |x, y| image::Luma([stripes(x, y)]));
    let resize = |filter| -> Vec<u8> {
        image::imageops::resize(&big, 8, 8, filter)
            .into_raw()
            .into_iter()
            .map(binarize)
            .collect()
    };
    let triangle = resize(image::imageops::FilterType::Triangle);
    assert_ne!(triangle, resize(image::imageops::FilterType::Nearest));
    assert_eq!(ds.train.image(1), &triangle[..]);
    assert!(
        ds.notes
            .iter()
            .any(|n| n.contains("1 images resized to 8x8 (Triangle filter)")),
        "{:?}",
        ds.notes
    );

    // A non-square target: height 4, width 8.
    let opts = LoadOptions {
        image_size: Some((4, 8)),
        ..folder_opts(0.0)
    };
    let ds = load_with(&root, &opts).unwrap();
    assert_eq!((ds.height, ds.width, ds.train.images.len()), (4, 8, 64));
}

#[test]
fn folder_decodes_png_variants_jpeg_bmp_and_gif() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("set");
    std::fs::create_dir_all(root.join("x")).unwrap();
    let file = |name: &str| root.join("x").join(name);
    // Every image is 4x1; expected binarized rows are checked one by one below.
    // 16-bit grey: scaled to 8 bits (v / 257, rounded), then 85 is the line.
    let l16 =
        image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_raw(4, 1, vec![0, 84 * 257, 85 * 257, 65535]).unwrap();
    l16.save(file("a_l16.png")).unwrap();
    // Palette (hand-built: the encoder writes none): black, red (luma 54), green (luma 182), white made
    // transparent by tRNS.
    let plte = vec![0, 0, 0, 255, 0, 0, 0, 255, 0, 255, 255, 255];
    let trns = vec![255, 255, 255, 0];
    std::fs::write(
        file("b_palette.png"),
        hand_png(4, 1, 8, 3, &[(b"PLTE", plte), (b"tRNS", trns)], &[vec![0, 1, 2, 3]]),
    )
    .unwrap();
    // Grey + alpha: opaque white, transparent white, half-transparent white (128), grey 200 at alpha 100 (78).
    let la =
        image::ImageBuffer::<image::LumaA<u8>, Vec<u8>>::from_raw(4, 1, vec![255, 255, 255, 0, 255, 128, 200, 100])
            .unwrap();
    la.save(file("c_grey_alpha.png")).unwrap();
    // Colour: Rec. 709 luma, so blue (18) and red (54) are 0, green (182) 1; and a transparent white pixel.
    let rgba = image::RgbaImage::from_raw(
        4,
        1,
        [[0, 0, 255, 255], [255, 0, 0, 255], [0, 255, 0, 255], [255; 4]].concat(),
    )
    .unwrap();
    let mut rgba = rgba;
    rgba.put_pixel(3, 0, image::Rgba([255, 255, 255, 0]));
    rgba.save(file("d_rgba.png")).unwrap();
    // BMP (RGB).
    let rgb = image::RgbImage::from_raw(4, 1, [[255, 255, 255], [0, 0, 0], [0, 255, 0], [255, 0, 0]].concat()).unwrap();
    rgb.save(file("e.bmp")).unwrap();
    // An animated GIF: the first frame counts.
    {
        let frame = |px: [u8; 4]| {
            let img = image::RgbaImage::from_fn(4, 1, |x, _| {
                if x < 2 {
                    image::Rgba(px)
                } else {
                    image::Rgba([0, 0, 0, 255])
                }
            });
            image::Frame::new(img)
        };
        let f = std::fs::File::create(file("f_animated.gif")).unwrap();
        let mut enc = image::codecs::gif::GifEncoder::new(f);
        enc.encode_frames([
            frame([255, 255, 255, 255]),
            frame([0, 0, 0, 255]),
            frame([0, 0, 0, 255]),
        ])
        .unwrap();
    }
    let ds = load_with(&root, &folder_opts(0.0));
    // JPEGs are 8 pixels tall (one row of blocks), so they go into a second set below.
    let ds = ds.unwrap();
    assert_eq!((ds.height, ds.width), (1, 4));
    let rows: Vec<&[u8]> = (0..ds.train.len()).map(|i| ds.train.image(i)).collect();
    assert_eq!(rows[0], [0, 0, 1, 1], "16-bit");
    assert_eq!(rows[1], [0, 0, 1, 0], "palette with a transparent entry");
    assert_eq!(rows[2], [1, 0, 1, 0], "grey + alpha");
    assert_eq!(rows[3], [0, 0, 1, 0], "RGBA");
    assert_eq!(rows[4], [1, 0, 1, 0], "BMP");
    assert_eq!(rows[5], [1, 1, 0, 0], "GIF's first frame");

    // Inverted: transparent pixels are still background (0): the image is composited onto white.
    let inverted = LoadOptions {
        binarize: Binarize {
            threshold: 0.33,
            invert: true,
        },
        ..folder_opts(0.0)
    };
    let ds = load_with(&root, &inverted).unwrap();
    assert_eq!(
        ds.train.image(1),
        [1, 1, 0, 0],
        "palette, inverted: the transparent white stays 0"
    );
    assert_eq!(ds.train.image(2), [0, 0, 0, 0], "grey + alpha, inverted");
    assert_eq!(ds.train.image(3), [1, 1, 0, 0], "RGBA, inverted");
}

#[test]
fn folder_decodes_baseline_progressive_and_cmyk_jpeg() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("jpegs");
    std::fs::create_dir_all(&root).unwrap();
    // Two flat blocks: dark (30) and light (220).
    let grey = vec![vec![30], vec![220]];
    let progressive = hand_jpeg(&grey, true, false);
    assert!(progressive.windows(2).any(|w| w == [0xff, 0xc2]), "SOF2: progressive");
    std::fs::write(root.join("a_progressive.jpg"), &progressive).unwrap();
    std::fs::write(root.join("b_baseline.jpeg"), hand_jpeg(&grey, false, false)).unwrap();
    // CMYK (Adobe, inverted inks): no ink = white; full black ink (K stored as 0) = black; magenta ink alone (M
    // stored as 0) gives RGB (255, 0, 255), luma 73: 0 although its channel mean (170) would be 1.
    let cmyk = vec![vec![255, 255, 255, 255], vec![255, 255, 255, 0], vec![255, 0, 255, 255]];
    std::fs::write(root.join("c_cmyk.jpg"), hand_jpeg(&cmyk, false, true)).unwrap();
    // The image crate's own encoder: baseline grey, 16x8, two flat blocks again.
    save_grey(&root.join("d_encoder.jpg"), 24, 8, |x, _| [30, 220, 30][x as usize / 8]);
    let opts = LoadOptions {
        image_size: Some((8, 24)),
        ..folder_opts(0.0)
    };
    let ds = load_with(&root, &opts).unwrap();
    assert_eq!(ds.train.len(), 4);
    assert!(
        ds.notes.iter().any(|n| n.contains("2 images resized")),
        "{:?}",
        ds.notes
    );
    let row = |i: usize| ds.train.image(i)[..24].to_vec();
    let blocks = |v: &[u8]| -> Vec<u8> { v.iter().flat_map(|&b| [b; 8]).collect() };
    // The 16-wide JPEGs were resized to 24 wide; their first and last columns are certain.
    for i in [0, 1] {
        assert_eq!((row(i)[0], row(i)[23]), (0, 1), "image {i}: {:?}", row(i));
        assert!(ds.train.image(i).chunks(24).all(|r| r == &row(i)[..]), "flat rows");
    }
    assert_eq!(row(2), blocks(&[1, 0, 0]), "CMYK");
    assert_eq!(row(3), blocks(&[0, 1, 0]), "image crate baseline");
    // The hand-built ones decode to their exact levels (checked with the image crate directly).
    let decoded = image::load_from_memory(&progressive).unwrap().to_luma8();
    assert_eq!((decoded.get_pixel(0, 0)[0], decoded.get_pixel(15, 7)[0]), (30, 220));
}

// ------------------------------------------------------------------------------------------------
// Folders of images: malformed

/// Loads `root` with default options and returns the error message (failing the test if it loads or panics).
fn folder_error(root: &Path) -> String {
    match std::panic::catch_unwind(|| load_with(root, &folder_opts(0.1))) {
        Err(_) => panic!("{}: panicked", root.display()),
        Ok(Ok(_)) => panic!("{}: loaded without error", root.display()),
        Ok(Err(e)) => format!("{e:#}"),
    }
}

#[test]
fn folder_malformed_inputs_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    // (what, setup returning the root and the path the message must name, another substring)
    type Setup = Box<dyn Fn(&Path) -> PathBuf>;
    let cases: Vec<(&str, Setup, &str)> = vec![
        ("empty folder", Box::new(|r: &Path| r.to_path_buf()), "no images"),
        (
            "empty class folder",
            Box::new(|r: &Path| {
                save_marked(&r.join("a/1.png"), 1);
                std::fs::create_dir_all(r.join("b")).unwrap();
                std::fs::write(r.join("b/readme.txt"), "x").unwrap();
                r.join("b")
            }),
            "empty class folder",
        ),
        (
            "images beside class folders",
            Box::new(|r: &Path| {
                save_marked(&r.join("a/1.png"), 1);
                save_marked(&r.join("stray.png"), 1);
                r.join("stray.png")
            }),
            "class folders",
        ),
        (
            "truncated PNG",
            Box::new(|r: &Path| {
                save_marked(&r.join("a/1.png"), 1);
                let mut buf = Vec::new();
                image::GrayImage::from_fn(64, 64, |x, y| image::Luma([(x * y) as u8]))
                    .write_to(&mut Cursor::new(&mut buf), image::ImageFormat::Png)
                    .unwrap();
                buf.truncate(buf.len() / 2);
                std::fs::write(r.join("a/2.png"), buf).unwrap();
                r.join("a/2.png")
            }),
            "not a valid PNG image",
        ),
        (
            "text named .jpg",
            Box::new(|r: &Path| {
                std::fs::create_dir_all(r.join("a")).unwrap();
                std::fs::write(r.join("a/photo.jpg"), "this is not an image at all").unwrap();
                r.join("a/photo.jpg")
            }),
            "not a valid JPEG image",
        ),
        (
            "empty image file",
            Box::new(|r: &Path| {
                std::fs::create_dir_all(r.join("a")).unwrap();
                std::fs::write(r.join("a/zero.gif"), "").unwrap();
                r.join("a/zero.gif")
            }),
            "not a valid GIF image",
        ),
        (
            "100,000 x 100,000 bomb",
            Box::new(|r: &Path| {
                std::fs::create_dir_all(r.join("a")).unwrap();
                let bomb = hand_png(100_000, 100_000, 8, 0, &[], &[vec![0; 16]]);
                assert!(bomb.len() < 200, "a tiny file");
                std::fs::write(r.join("a/bomb.png"), bomb).unwrap();
                r.join("a/bomb.png")
            }),
            "declares 100000x100000 pixels",
        ),
        (
            "16384 x 16384 RGBA: 1 GiB to decode",
            Box::new(|r: &Path| {
                std::fs::create_dir_all(r.join("a")).unwrap();
                std::fs::write(r.join("a/big.png"), hand_png(16_384, 16_384, 8, 6, &[], &[vec![0; 16]])).unwrap();
                r.join("a/big.png")
            }),
            "1024 MiB, over the limit of 256 MiB",
        ),
        (
            "file over 64 MiB",
            Box::new(|r: &Path| {
                std::fs::create_dir_all(r.join("a")).unwrap();
                // Sparse: the size is refused before anything is read.
                let f = std::fs::File::create(r.join("a/huge.bmp")).unwrap();
                f.set_len(data::MAX_IMAGE_FILE_BYTES + 1).unwrap();
                r.join("a/huge.bmp")
            }),
            "at most 67108864 bytes",
        ),
        (
            "test class missing from train",
            Box::new(|r: &Path| {
                save_marked(&r.join("train/a/1.png"), 1);
                save_marked(&r.join("test/a/2.png"), 1);
                save_marked(&r.join("test/zebra/3.png"), 1);
                r.join("test/zebra")
            }),
            "not in",
        ),
        (
            "labelled train, unlabelled test",
            Box::new(|r: &Path| {
                save_marked(&r.join("train/a/1.png"), 1);
                save_marked(&r.join("test/2.png"), 1);
                r.join("test")
            }),
            "same layout",
        ),
        (
            "test/ without train/",
            Box::new(|r: &Path| {
                save_marked(&r.join("test/a/1.png"), 1);
                save_marked(&r.join("cats/1.png"), 1);
                r.join("test")
            }),
            "no train/ folder",
        ),
        (
            "train/ beside a class folder",
            Box::new(|r: &Path| {
                save_marked(&r.join("train/a/1.png"), 1);
                save_marked(&r.join("cats/1.png"), 1);
                r.join("cats")
            }),
            "train/",
        ),
        (
            "more than 256 classes",
            Box::new(|r: &Path| {
                for c in 0..300 {
                    save_grey(&r.join(format!("c{c:03}/x.png")), 1, 1, |_, _| 0);
                }
                r.to_path_buf()
            }),
            "300 class folders, more than the limit of 256",
        ),
        (
            "all validation",
            Box::new(|r: &Path| {
                save_marked(&r.join("a/1.png"), 1);
                r.to_path_buf()
            }),
            "training split is empty",
        ),
    ];
    let mut failures = Vec::new();
    for (i, (what, setup, needle)) in cases.iter().enumerate() {
        let root = tmp.path().join(format!("case{i}"));
        std::fs::create_dir_all(&root).unwrap();
        let named = setup(&root);
        let message = folder_error(&root);
        println!("{what:<32} {message}");
        if !message.contains(&named.display().to_string()) || !message.contains(needle) {
            failures.push(format!("{what}: lacks {} or {needle:?}: {message}", named.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The empty folder's message says how to get data.
    assert!(folder_error(&tmp.path().join("case0")).contains("pixelcnn download"));
}

#[test]
fn folder_bomb_is_refused_from_the_header_without_decoding() {
    // The same declared size with an IDAT far too short for it: decoding would fail with a different error
    // (truncated data) after trying to allocate 10 GB, so the size message proves the header check came first.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("a")).unwrap();
    std::fs::write(
        tmp.path().join("a/wide.png"),
        hand_png(100_000, 1, 8, 0, &[], &[vec![0; 8]]),
    )
    .unwrap();
    let err = folder_error(tmp.path());
    assert!(err.contains("100000x1") && err.contains("16384"), "{err}");
    // Just under the side limit is fine for the header check; this one fails as truncated data instead.
    std::fs::write(
        tmp.path().join("a/wide.png"),
        hand_png(16_384, 1, 8, 0, &[], &[vec![0; 8]]),
    )
    .unwrap();
    let err = folder_error(tmp.path());
    assert!(
        err.contains("wide.png") && err.contains("not a valid PNG image"),
        "{err}"
    );
}

#[cfg(unix)]
#[test]
fn folder_symbolic_links() {
    use std::os::unix::fs::symlink;
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    save_marked(&outside.join("o.png"), 7);

    // A link to an image and a link to a class folder inside the root are followed.
    let root = tmp.path().join("inside");
    save_marked(&root.join("a/1.png"), 1);
    save_marked(&root.join("b/2.png"), 2);
    symlink(root.join("a/1.png"), root.join("b/3.png")).unwrap();
    symlink("a", root.join("c")).unwrap();
    let ds = load_with(&root, &folder_opts(0.0)).unwrap();
    assert_eq!(ds.class_names, ["a", "b", "c"]);
    assert_eq!(
        (marks(&ds.train), ds.train.labels.clone()),
        (vec![1, 1, 2, 1], vec![0, 2, 1, 1])
    );

    // A link to a folder outside the root, and a link to a file outside it: errors naming the link.
    let out_dir = tmp.path().join("out_dir");
    save_marked(&out_dir.join("a/1.png"), 1);
    symlink(&outside, out_dir.join("b")).unwrap();
    let err = folder_error(&out_dir);
    assert!(
        err.contains(&out_dir.join("b").display().to_string()) && err.contains("outside"),
        "{err}"
    );
    let out_file = tmp.path().join("out_file");
    save_marked(&out_file.join("a/1.png"), 1);
    symlink(outside.join("o.png"), out_file.join("a/2.png")).unwrap();
    let err = folder_error(&out_file);
    assert!(
        err.contains(&out_file.join("a/2.png").display().to_string()) && err.contains("outside"),
        "{err}"
    );

    // A loop (x -> y -> x) and a dangling link: errors naming a link.
    let looped = tmp.path().join("loop");
    save_marked(&looped.join("a/1.png"), 1);
    symlink("y.png", looped.join("a/x.png")).unwrap();
    symlink("x.png", looped.join("a/y.png")).unwrap();
    let err = folder_error(&looped);
    assert!(err.contains("symbolic link") && err.contains("a/x.png"), "{err}");
    let dangling = tmp.path().join("dangling");
    save_marked(&dangling.join("a/1.png"), 1);
    symlink("nowhere", dangling.join("b")).unwrap();
    let err = folder_error(&dangling);
    assert!(
        err.contains("symbolic link") && err.contains(&dangling.join("b").display().to_string()),
        "{err}"
    );

    // A link back to the root is a class folder holding folders only: an empty class, not an endless walk.
    let back = tmp.path().join("back");
    save_marked(&back.join("a/1.png"), 1);
    symlink(".", back.join("self")).unwrap();
    let err = folder_error(&back);
    assert!(err.contains("empty class folder") && err.contains("self"), "{err}");
}

#[cfg(unix)]
#[test]
fn folder_non_utf8_names() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    // An image file name that is not UTF-8 is read normally (and sorts by its bytes: 0xff after 'b').
    let files = tmp.path().join("files");
    save_marked(&files.join("a").join(OsStr::from_bytes(b"b\xff.png")), 2);
    save_marked(&files.join("a/b.png"), 1);
    let ds = load_with(&files, &folder_opts(0.0)).unwrap();
    assert_eq!(marks(&ds.train), [1, 2]);
    // A class folder name that is not UTF-8 cannot be a class name: an error naming it.
    let classes = tmp.path().join("classes");
    save_marked(&classes.join("a/1.png"), 1);
    save_marked(&classes.join(OsStr::from_bytes(b"caf\xe9")).join("2.png"), 1);
    let err = folder_error(&classes);
    assert!(err.contains("caf\u{fffd}") && err.contains("UTF-8"), "{err}");
}

// ------------------------------------------------------------------------------------------------
// Export

/// A small labelled IDX set: 30 training images (the last 6 are validation at 0.2), 10 test images, 3 classes named
/// by classes.txt (sorted names, so a folder set numbers them alike).
fn small_idx_set(dir: &Path, names: &str) {
    let (h, w) = (5, 7);
    let train = raw_pixels(30, h * w, 3);
    let test = raw_pixels(10, h * w, 4);
    let train_labels: Vec<u8> = (0..30).map(|i| (i * 2 % 3) as u8).collect();
    let test_labels: Vec<u8> = (0..10).map(|i| (i % 3) as u8).collect();
    write_idx_set(
        dir,
        h as u32,
        w as u32,
        &train,
        &test,
        Some((&train_labels, &test_labels)),
    );
    std::fs::write(dir.join("classes.txt"), names).unwrap();
}

fn assert_same_splits(a: &Dataset, b: &Dataset) {
    assert_eq!(a.train, b.train, "train");
    assert_eq!(a.val, b.val, "val");
    assert_eq!(a.test, b.test, "test");
    assert_eq!((a.height, a.width, a.labelled), (b.height, b.width, b.labelled));
}

#[test]
fn export_then_reload_gives_the_same_splits() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = tmp.path().join("idx");
    small_idx_set(&idx, "ant\nbee\ncat\n");
    let source = load(&idx, 0.2).unwrap();
    assert_eq!((source.train.len(), source.val.len(), source.test.len()), (24, 6, 10));
    assert_eq!(source.class_names, ["ant", "bee", "cat"]);
    let out = tmp.path().join("exported");
    assert_eq!(export_folder(&source, &out).unwrap(), 40);
    // Names padded to the largest index (29 for train + val, 9 for test), so file-name order is the original order.
    assert!(out.join("train/ant/00.png").is_file());
    let last_class = &source.class_names[usize::from(source.val.labels[5])];
    assert!(out.join(format!("train/{last_class}/29.png")).is_file());
    let first_test_class = &source.class_names[usize::from(source.test.labels[0])];
    assert!(out.join(format!("test/{first_test_class}/0.png")).is_file());
    let png = image::open(out.join("train/ant/00.png")).unwrap().to_luma8();
    assert_eq!(png.dimensions(), (7, 5));
    assert!(png.pixels().all(|p| p[0] == 0 || p[0] == 255));
    let reloaded = load(&out, 0.2).unwrap();
    assert_eq!(reloaded.format, Format::Folder);
    assert_same_splits(&source, &reloaded);
    assert_eq!(reloaded.class_names, source.class_names);
    // No temporary folder is left beside it.
    let siblings: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(siblings.len(), 2, "{siblings:?}");

    // Exporting the reloaded set again round-trips too (its test split came from test/).
    let out2 = tmp.path().join("exported2");
    export_folder(&reloaded, &out2).unwrap();
    assert_same_splits(&source, &load(&out2, 0.2).unwrap());

    // Into an existing empty folder: fine. Into a non-empty one: refused, nothing touched.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert_eq!(export_folder(&source, &empty).unwrap(), 40);
    let err = format!("{:#}", export_folder(&source, &out).unwrap_err());
    assert!(
        err.contains(&out.display().to_string()) && err.contains("not empty"),
        "{err}"
    );
}

#[test]
fn export_of_unsorted_class_names_prefixes_the_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = tmp.path().join("idx");
    small_idx_set(&idx, "zebra\nant\nmoth\n");
    let source = load(&idx, 0.2).unwrap();
    let out = tmp.path().join("out");
    export_folder(&source, &out).unwrap();
    assert!(
        out.join("train/0-zebra").is_dir() && out.join("train/1-ant").is_dir() && out.join("train/2-moth").is_dir()
    );
    let reloaded = load(&out, 0.2).unwrap();
    // The labels come back the same; the names carry the prefix.
    assert_same_splits(&source, &reloaded);
    assert_eq!(reloaded.class_names, ["0-zebra", "1-ant", "2-moth"]);
}

#[test]
fn export_of_an_unlabelled_set_has_no_class_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = tmp.path().join("idx");
    write_idx_set(&idx, 3, 3, &raw_pixels(12, 9, 1), &raw_pixels(3, 9, 2), None);
    let source = load(&idx, 0.25).unwrap();
    let out = tmp.path().join("out");
    assert_eq!(export_folder(&source, &out).unwrap(), 15);
    assert!(
        out.join("train/00.png").is_file() && out.join("train/11.png").is_file() && out.join("test/2.png").is_file()
    );
    let reloaded = load(&out, 0.25).unwrap();
    assert_same_splits(&source, &reloaded);
    assert!(reloaded.class_names.is_empty());
}

#[test]
fn export_refuses_unsafe_names_and_leaves_nothing_on_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = tmp.path().join("idx");
    small_idx_set(&idx, "ant\nbee\ncat\n");
    let source = load(&idx, 0.2).unwrap();
    for bad in ["a/b", "..", ".", ".hidden", "nul\0", "back\\slash"] {
        let mut ds = source.clone();
        ds.class_names[1] = bad.to_string();
        let out = tmp.path().join("unsafe");
        let err = format!("{:#}", export_folder(&ds, &out).unwrap_err());
        assert!(err.contains("class 1") && err.contains("folder"), "{bad:?}: {err}");
        assert!(!out.exists());
    }
    // A class without training or validation images cannot be exported.
    let mut ds = source.clone();
    ds.class_names.push("dog".into());
    let err = format!("{:#}", export_folder(&ds, &tmp.path().join("x")).unwrap_err());
    assert!(
        err.contains("class 3 (\"dog\")") && err.contains("no training or validation images"),
        "{err}"
    );
    // A failure after images were written (the last test image holds a pixel that is not binary) leaves no
    // folder, temporary or final.
    let mut ds = source.clone();
    let last = ds.test.images.len() - 1;
    ds.test.images[last] = 2;
    let parent = tmp.path().join("failed");
    std::fs::create_dir(&parent).unwrap();
    let err = format!("{:#}", export_folder(&ds, &parent.join("out")).unwrap_err());
    assert!(err.contains("test image 9") && err.contains("value 2"), "{err}");
    assert_eq!(std::fs::read_dir(&parent).unwrap().count(), 0);
}

// ------------------------------------------------------------------------------------------------
// .amat

#[test]
fn amat_is_already_binary() {
    let tmp = tempfile::tempdir().unwrap();
    for (split, n) in [("train", 3), ("valid", 2), ("test", 1)] {
        let line = |i: usize| {
            (0..PIXELS)
                .map(|p| u8::from((p + i).is_multiple_of(3)))
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let text: String = (0..n).map(|i| line(i) + "\n").collect();
        std::fs::write(tmp.path().join(format!("binarized_mnist_{split}.amat")), text).unwrap();
    }
    let ds = load(tmp.path(), 0.1).unwrap();
    assert_eq!(
        (ds.format, ds.height, ds.width, ds.labelled),
        (Format::Amat, 28, 28, false)
    );
    assert_eq!((ds.train.len(), ds.val.len(), ds.test.len()), (3, 2, 1));
    assert!(ds.notes.is_empty());
    assert!(data::report_text(&ds).contains("already binary"));
    assert_eq!(data::report_json(&ds)["binarize"]["already_binary"], true);
    // Non-default binarization options change nothing, and a note says they do not apply.
    let opts = LoadOptions {
        binarize: Binarize {
            threshold: 0.9,
            invert: true,
        },
        ..LoadOptions::default()
    };
    let other = load_with(tmp.path(), &opts).unwrap();
    assert_eq!(other.train, ds.train);
    assert!(
        other.notes.iter().any(|n| n.contains("already binary")),
        "{:?}",
        other.notes
    );
    // An image size other than 28x28 is an error.
    let opts = LoadOptions {
        image_size: Some((32, 32)),
        ..LoadOptions::default()
    };
    let err = format!("{:#}", load_with(tmp.path(), &opts).unwrap_err());
    assert!(err.contains("32x32") && err.contains("28x28"), "{err}");
}
