//! End-to-end tests of the `pixelcnn` command line: every subcommand run as a child process on tiny fixtures
//! (IDX and CSV files written into a temporary directory) with tiny models, including a run killed with SIGKILL
//! and resumed, a run driven to divergence, and a table of bad command lines.
//!
//! GPU parts run on whatever adapter wgpu picks (lavapipe on machines without a GPU); without an adapter they are
//! skipped with a printed note, except under CI=true where that is a failure (see `gpu::gpu_for_tests`).

mod common;

use pixelcnn::checkpoint::{self, Checkpoint};
use pixelcnn::grid;
use pixelcnn::rng::SplitMix64;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;
use tempfile::TempDir;

const PIXELS: usize = 784;
const TRAIN_IMAGES: usize = 40;
const TEST_IMAGES: usize = 12;
/// Model flags shared by every run: tiny, so that CPU training takes well under a second.
const TINY: [&str; 4] = ["--filters", "4", "--blocks", "1"];

// ---------------------------------------------------------------------------------------------------
// Running the binary

/// Runs `pixelcnn args...` in `cwd` (so that nothing lands in the source tree), without $PIXELCNN_DATA.
fn pixelcnn(cwd: &Path, args: &[&str]) -> Output {
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_pixelcnn"))
        .args(args)
        .current_dir(cwd)
        .env_remove("PIXELCNN_DATA")
        .output()
        .expect("running the pixelcnn binary");
    eprintln!(
        "  pixelcnn {} -> {:?} in {:.2} s",
        args.join(" "),
        out.status.code(),
        t.elapsed().as_secs_f64()
    );
    out
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs and asserts success; returns stdout.
fn ok(cwd: &Path, args: &[&str]) -> String {
    let o = pixelcnn(cwd, args);
    assert!(
        o.status.success(),
        "pixelcnn {} failed with {:?}\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        o.status.code(),
        stdout(&o),
        stderr(&o)
    );
    assert!(
        !stderr(&o).contains("panicked"),
        "stderr mentions a panic:\n{}",
        stderr(&o)
    );
    stdout(&o)
}

/// Runs, asserts exit code 1 (an error, not a panic's 101) and an `error:` line without "panicked"; returns stderr.
fn fails(cwd: &Path, args: &[&str]) -> String {
    let o = pixelcnn(cwd, args);
    let err = stderr(&o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "pixelcnn {} should exit 1\nstdout:\n{}\nstderr:\n{err}",
        args.join(" "),
        stdout(&o)
    );
    assert!(
        !err.contains("panicked"),
        "pixelcnn {}: stderr mentions a panic:\n{err}",
        args.join(" ")
    );
    assert!(
        err.starts_with("error:"),
        "pixelcnn {}: stderr should start with `error:`:\n{err}",
        args.join(" ")
    );
    err
}

/// Parses the single JSON object printed on stdout.
fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}):\n{s}"))
}

fn s(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

/// Whether GPU parts run: None outside CI means skip (printed); under CI=true a missing adapter panics.
fn have_gpu() -> bool {
    pixelcnn::gpu::gpu_for_tests().is_some()
}

// ---------------------------------------------------------------------------------------------------
// Fixtures

/// Raw (0–255) images and labels of a tiny Fashion-MNIST lookalike, written as IDX files and as a CSV.
struct Fixture {
    _tmp: TempDir,
    root: PathBuf,
    /// Directory with the four IDX files.
    idx: PathBuf,
    /// Kaggle CSV holding the training images (with a header line).
    csv: PathBuf,
    train_labels: Vec<u8>,
    test_labels: Vec<u8>,
}

fn raw_images(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix64::new(seed);
    (0..n * PIXELS).map(|_| rng.below(256) as u8).collect()
}

fn raw_labels(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix64::new(seed);
    (0..n).map(|_| rng.below(10) as u8).collect()
}

fn idx_images(payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for w in [0x0803u32, (payload.len() / PIXELS) as u32, 28, 28] {
        v.extend_from_slice(&w.to_be_bytes());
    }
    v.extend_from_slice(payload);
    v
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for w in [0x0801u32, labels.len() as u32] {
        v.extend_from_slice(&w.to_be_bytes());
    }
    v.extend_from_slice(labels);
    v
}

fn csv_text(images: &[u8], labels: &[u8]) -> String {
    let mut t = String::from("label");
    for i in 1..=PIXELS {
        t.push_str(&format!(",pixel{i}"));
    }
    t.push('\n');
    for (img, label) in images.chunks(PIXELS).zip(labels) {
        t.push_str(&label.to_string());
        for v in img {
            t.push_str(&format!(",{v}"));
        }
        t.push('\n');
    }
    t
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let idx = root.join("fashion-mnist");
    std::fs::create_dir_all(&idx).unwrap();
    let train = raw_images(TRAIN_IMAGES, 1);
    let train_labels = raw_labels(TRAIN_IMAGES, 2);
    let test = raw_images(TEST_IMAGES, 3);
    let test_labels = raw_labels(TEST_IMAGES, 4);
    std::fs::write(idx.join("train-images-idx3-ubyte"), idx_images(&train)).unwrap();
    std::fs::write(idx.join("train-labels-idx1-ubyte"), idx_labels(&train_labels)).unwrap();
    std::fs::write(idx.join("t10k-images-idx3-ubyte"), idx_images(&test)).unwrap();
    std::fs::write(idx.join("t10k-labels-idx1-ubyte"), idx_labels(&test_labels)).unwrap();
    let csv = root.join("train.csv");
    std::fs::write(&csv, csv_text(&train, &train_labels)).unwrap();
    Fixture {
        _tmp: tmp,
        root,
        idx,
        csv,
        train_labels,
        test_labels,
    }
}

fn label_counts(labels: &[u8]) -> Vec<u64> {
    let mut c = vec![0u64; 10];
    for &l in labels {
        c[l as usize] += 1;
    }
    c
}

/// Trains a tiny checkpoint on the CPU for 2 steps into `<root>/ck/last.safetensors`.
fn tiny_checkpoint(f: &Fixture) -> PathBuf {
    let out = f.root.join("ck");
    #[rustfmt::skip]
    let args = [
        "train", "--device", "cpu", "--data", s(&f.idx), "--val-split", "0.25", "--batch-size", "8",
        "--steps", "2", "--seed", "5", "--out", s(&out),
    ];
    ok(&f.root, &[&args[..], &TINY[..]].concat());
    out.join("last.safetensors")
}

fn load(p: &Path) -> Checkpoint {
    checkpoint::load(p).unwrap_or_else(|e| panic!("loading {}: {e:#}", p.display()))
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Asserts two checkpoints hold bit-identical parameters and (when `with_train`) training state.
fn assert_same_checkpoint(what: &str, a: &Path, b: &Path) {
    let (a, b) = (load(a), load(b));
    assert_eq!(a.config, b.config, "{what}: configs differ");
    let differing = a
        .params
        .iter()
        .zip(&b.params)
        .filter(|(x, y)| x.to_bits() != y.to_bits())
        .count();
    let max_diff = a
        .params
        .iter()
        .zip(&b.params)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(
        bits(&a.params) == bits(&b.params),
        "{what}: {differing} of {} parameters differ (max |diff| {max_diff:e})",
        a.params.len()
    );
    let (sa, adam_a) = a.train.expect("first checkpoint has training state");
    let (sb, adam_b) = b.train.expect("second checkpoint has training state");
    assert_eq!(adam_a.step, adam_b.step, "{what}: Adam steps differ");
    assert!(bits(&adam_a.m) == bits(&adam_b.m), "{what}: Adam first moments differ");
    assert!(bits(&adam_a.v) == bits(&adam_b.v), "{what}: Adam second moments differ");
    let (ema_a, ema_b) = (
        adam_a.ema.expect("runs keep an average by default"),
        adam_b.ema.expect("average"),
    );
    assert!(bits(&ema_a) == bits(&ema_b), "{what}: the Polyak averages differ");
    assert_eq!(sa.step, sb.step, "{what}: step differs");
    assert_eq!(sa.epoch, sb.epoch, "{what}: epoch differs");
    assert_eq!(sa.batch_in_epoch, sb.batch_in_epoch, "{what}: batch_in_epoch differs");
}

fn metrics_lines(dir: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).expect("metrics.jsonl");
    text.lines().map(json).collect()
}

fn decode_png(p: &Path) -> image::GrayImage {
    image::open(p)
        .unwrap_or_else(|e| panic!("{} does not decode as an image: {e}", p.display()))
        .to_luma8()
}

// ---------------------------------------------------------------------------------------------------
// Tests

/// Parameter count from the architecture's formula.
fn expected_params(f: usize, blocks: usize) -> u64 {
    let h = f / 2;
    let conv_in = f * 49 + f;
    let block = (f * f + f) + (h * f * 9 + h) + (h * f + f);
    let heads = 2 * (f * f + f);
    let out = f + 1;
    (conv_in + blocks * block + heads + out) as u64
}

#[test]
fn summary_json_reports_532673() {
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(expected_params(128, 5), 532_673);
    let v = json(&ok(tmp.path(), &["summary", "--json"]));
    assert_eq!(v["total_params"], 532_673, "{v}");
    let layers = v["layers"].as_array().expect("layers array");
    assert!(!layers.is_empty());
    let v = json(&ok(
        tmp.path(),
        &["summary", "--json", "--filters", "6", "--blocks", "1"],
    ));
    let tensors = v["tensors"].as_array().expect("tensors");
    assert!(
        tensors
            .iter()
            .any(|t| t["name"] == "blocks.0.masked.weight" && t["shape"] == serde_json::json!([3, 6, 3, 3])),
        "{v}"
    );
    assert_eq!(v["total_params"].as_u64(), Some(expected_params(6, 1)), "{v}");
    assert_ne!(expected_params(6, 1), 532_673);
    // The text form states the same total.
    let text = ok(tmp.path(), &["summary"]);
    assert!(text.contains("532673"), "{text}");
    // An odd filter count is refused.
    let err = fails(tmp.path(), &["summary", "--filters", "5"]);
    assert!(err.contains("--filters"), "{err}");
}

#[test]
fn data_json_on_fixture() {
    let f = fixture();
    let idx = json(&ok(
        &f.root,
        &["data", "--data", s(&f.idx), "--val-split", "0.25", "--json"],
    ));
    assert_eq!(idx["format"], "idx", "{idx}");
    let sp = &idx["splits"];
    assert_eq!(sp["train"]["images"], 30, "{idx}");
    assert_eq!(sp["val"]["images"], 10, "{idx}");
    assert_eq!(sp["test"]["images"], TEST_IMAGES, "{idx}");
    let counts = |split: &str, v: &serde_json::Value| -> Vec<u64> {
        v["splits"][split]["label_counts"]
            .as_array()
            .unwrap_or_else(|| panic!("{split}: no label_counts in {v}"))
            .iter()
            .map(|c| c.as_u64().unwrap())
            .collect()
    };
    assert_eq!(counts("train", &idx), label_counts(&f.train_labels[..30]));
    assert_eq!(counts("val", &idx), label_counts(&f.train_labels[30..]));
    assert_eq!(counts("test", &idx), label_counts(&f.test_labels));
    for split in ["train", "val", "test"] {
        let sum: u64 = counts(split, &idx).iter().sum();
        assert_eq!(sum, sp[split]["images"].as_u64().unwrap(), "{split}");
        let ones = sp[split]["ones_fraction"].as_f64().unwrap();
        // Uniform 0..=255 pixels: 171 of 256 values binarize to 1.
        assert!((0.55..0.78).contains(&ones), "{split}: ones fraction {ones}");
    }

    // The same training images as a Kaggle CSV: same train/val, and test is the whole file.
    let csv = json(&ok(
        &f.root,
        &["data", "--data", s(&f.csv), "--val-split", "0.25", "--json"],
    ));
    assert_eq!(csv["format"], "csv", "{csv}");
    for split in ["train", "val"] {
        assert_eq!(
            csv["splits"][split], idx["splits"][split],
            "{split}: CSV and IDX differ"
        );
    }
    assert_eq!(csv["splits"]["test"]["images"], TRAIN_IMAGES);
    assert_eq!(counts("test", &csv), label_counts(&f.train_labels));
}

#[test]
fn bad_inputs_exit_nonzero_with_clear_message_and_no_panic() {
    let f = fixture();
    let good_dir = |name: &str| -> PathBuf {
        let d = f.root.join(name);
        std::fs::create_dir_all(&d).unwrap();
        for e in std::fs::read_dir(&f.idx).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), d.join(e.file_name())).unwrap();
        }
        d
    };
    let train_images = "train-images-idx3-ubyte";
    let original = std::fs::read(f.idx.join(train_images)).unwrap();
    // (what, path given to --data, the file the message must name, a word the message must contain)
    let mut cases: Vec<(&str, PathBuf, PathBuf, &str)> = Vec::new();

    let d = good_dir("bad_magic");
    let mut b = original.clone();
    b[3] = 0x01;
    std::fs::write(d.join(train_images), b).unwrap();
    cases.push(("bad magic", d.clone(), d.join(train_images), "magic"));

    let d = good_dir("truncated");
    std::fs::write(d.join(train_images), &original[..original.len() - 100]).unwrap();
    cases.push(("truncated IDX", d.clone(), d.join(train_images), "truncated"));

    let d = good_dir("empty_idx");
    std::fs::write(d.join("t10k-labels-idx1-ubyte"), b"").unwrap();
    cases.push(("empty IDX file", d.clone(), d.join("t10k-labels-idx1-ubyte"), "empty"));

    let csv = std::fs::read_to_string(&f.csv).unwrap();
    let mut lines: Vec<String> = csv.lines().map(String::from).collect();
    let p = f.root.join("columns.csv");
    let mut l = lines.clone();
    l[3].push_str(",0");
    std::fs::write(&p, l.join("\n")).unwrap();
    cases.push(("CSV with 786 columns", p.clone(), p, "columns"));

    let p = f.root.join("pixel300.csv");
    let mut fields: Vec<&str> = lines[2].split(',').collect();
    fields[100] = "300";
    lines[2] = fields.join(",");
    std::fs::write(&p, lines.join("\n")).unwrap();
    cases.push(("CSV with pixel 300", p.clone(), p, "300"));

    let p = f.root.join("empty.csv");
    std::fs::write(&p, b"").unwrap();
    cases.push(("empty file", p.clone(), p, "empty"));

    let p = f.root.join("no").join("such").join("dir");
    cases.push(("missing directory", p.clone(), p, "pixelcnn download"));

    for (what, data, named, word) in &cases {
        eprintln!("{what}:");
        let err = fails(&f.root, &["data", "--data", s(data)]);
        eprintln!("    {}", err.trim());
        assert!(
            err.contains(s(named)),
            "{what}: the message should name {}:\n{err}",
            named.display()
        );
        assert!(
            err.contains(word),
            "{what}: the message should mention {word:?}:\n{err}"
        );
    }
}

/// `train` args on the fixture (40 train images, 30 after the 0.25 validation split: 4 steps per epoch of 8).
fn train_args<'a>(f: &'a Fixture, device: &'a str, out: &'a Path) -> Vec<&'a str> {
    #[rustfmt::skip]
    let args = vec![
        "train", "--device", device, "--data", s(&f.idx), "--val-split", "0.25", "--batch-size", "8",
        "--epochs", "2", "--seed", "3", "--out", s(out), "--filters", "4", "--blocks", "1",
    ];
    args
}

/// Uninterrupted (A) against stopped after 3 steps and resumed (B); returns (A, B) run directories.
fn train_and_resume(f: &Fixture, device: &str, tag: &str) -> (PathBuf, PathBuf) {
    let a = f.root.join(format!("{tag}_A"));
    let b = f.root.join(format!("{tag}_B"));
    ok(&f.root, &train_args(f, device, &a));
    ok(&f.root, &[&train_args(f, device, &b)[..], &["--steps", "3"]].concat());
    let mid = load(&b.join("last.safetensors"));
    let (state, _) = mid.train.expect("the stopped run saved its training state");
    assert_eq!((state.step, state.epoch, state.batch_in_epoch), (3, 0, 3));
    let resume = b.join("last.safetensors");
    ok(
        &f.root,
        // --data is needed: the checkpoint stores the split and limit but not where the data lives.
        &[
            "train",
            "--resume",
            s(&resume),
            "--data",
            s(&f.idx),
            "--device",
            device,
            "--epochs",
            "2",
        ],
    );
    (a, b)
}

fn check_metrics(dir: &Path) {
    let m = metrics_lines(dir);
    assert_eq!(m.len(), 2, "{}: expected 2 epochs of metrics: {m:?}", dir.display());
    for (i, line) in m.iter().enumerate() {
        assert_eq!(line["epoch"], i + 1, "{line}");
        assert_eq!(line["step"], 4 * (i + 1), "{line}");
        assert_eq!(line["partial"], false, "{line}");
        for key in ["train_nll", "val_nll"] {
            let v = line[key].as_f64().unwrap_or(f64::NAN);
            assert!(v.is_finite() && v > 0.0, "{key} = {v} in {line}");
        }
    }
}

#[test]
fn train_cpu_resume_is_exact() {
    let f = fixture();
    let (a, b) = train_and_resume(&f, "cpu", "cpu");
    check_metrics(&a);
    let ck = load(&a.join("last.safetensors"));
    let (state, adam) = ck.train.as_ref().unwrap();
    assert_eq!((state.step, state.epoch, state.batch_in_epoch, adam.step), (8, 2, 0, 8));
    assert!(a.join("epoch_001.safetensors").is_file() && a.join("epoch_002.safetensors").is_file());
    assert_same_checkpoint(
        "CPU: resumed vs uninterrupted",
        &a.join("last.safetensors"),
        &b.join("last.safetensors"),
    );
    // The resumed run's metrics: the partial epoch 1 line, then the completed epochs 1 and 2 with the same numbers.
    let (ma, mb) = (metrics_lines(&a), metrics_lines(&b));
    assert_eq!(mb.len(), 3, "{mb:?}");
    assert_eq!(mb[0]["partial"], true);
    for (x, y) in ma.iter().zip(&mb[1..]) {
        for key in ["epoch", "step", "train_nll", "val_nll"] {
            assert_eq!(x[key], y[key], "{key}: uninterrupted {x} vs resumed {y}");
        }
    }
}

/// `data --export-folder` writes the data set as a class-folder tree of PNGs; training from that folder is training
/// from the IDX files: the same images in the same order and split, the same labels, so the same per-epoch NLL for
/// the same seed, bit for bit (a class-conditional model, so that the labels count too).
#[test]
fn a_model_trained_from_the_exported_folder_matches_one_trained_from_idx() {
    let f = fixture();
    // Every class among the training images (a folder set cannot hold an empty class folder).
    let labels: Vec<u8> = (0..TRAIN_IMAGES).map(|i| (i * 7 % 10) as u8).collect();
    std::fs::write(f.idx.join("train-labels-idx1-ubyte"), idx_labels(&labels)).unwrap();
    let folder = f.root.join("exported");
    let o = pixelcnn(&f.root, &["data", "--data", s(&f.idx), "--export-folder", s(&folder)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let wrote = format!("wrote {} images", TRAIN_IMAGES + TEST_IMAGES);
    assert!(stderr(&o).contains(&wrote), "{}", stderr(&o));
    let summary = json(&ok(&f.root, &["data", "--data", s(&folder), "--json"]));
    assert_eq!(summary["format"], "folder", "{summary}");
    let mut runs = Vec::new();
    for (name, data) in [("from_idx", &f.idx), ("from_folder", &folder)] {
        let out = f.root.join(name);
        #[rustfmt::skip]
        let args = ["train", "--device", "cpu", "--data", s(data), "--val-split", "0.25", "--batch-size", "8",
            "--epochs", "2", "--seed", "3", "--out", s(&out), "--filters", "4", "--blocks", "1", "--conditional",
            "--epoch-samples", "0"];
        ok(&f.root, &args);
        runs.push(metrics_lines(&out));
    }
    assert_eq!(runs[0].len(), 2);
    for (a, b) in runs[0].iter().zip(&runs[1]) {
        for key in ["epoch", "step", "train_nll", "val_nll", "val_nll_ema"] {
            assert_eq!(a[key], b[key], "{key}: from IDX {a} vs from the folder {b}");
        }
    }
    eprintln!(
        "per-epoch NLL from the IDX files and from the exported folder: {:?}",
        runs[0]
    );
    // The folder resized to another shape is not what the 28×28 model scores: eval and complete say how to fit it.
    let ck = f.root.join("from_idx").join("last.safetensors");
    let png = f.root.join("completions.png");
    for cmd in ["eval", "complete"] {
        #[rustfmt::skip]
        let mut args = vec![cmd, "--device", "cpu", "--checkpoint", s(&ck), "--data", s(&folder), "--image-size", "16x20"];
        if cmd == "complete" {
            args.extend(["--out", s(&png)]);
        }
        let err = refused(&f.root, &args);
        assert!(
            err.contains("16x20") && err.contains("--image-size 28x28") && err.contains(s(&folder)),
            "{cmd}: {err}"
        );
    }
    assert!(!png.exists(), "a refused complete wrote its output");
}

/// `--lr-decay`: epoch e trains at lr · decay^e. The run's second epoch equals the CPU reference's steps from its
/// epoch-1 checkpoint at the decayed rate, bit for bit; the metrics record each epoch's rate; a resume keeps the
/// decay and refuses another.
#[test]
fn lr_decay_scales_each_epochs_learning_rate() {
    use pixelcnn::cpu::{self, AdamConfig};
    use pixelcnn::model::Network;
    let f = fixture();
    let out = f.root.join("decay");
    ok(
        &f.root,
        &[
            &train_args(&f, "cpu", &out)[..],
            &["--lr", "0.002", "--lr-decay", "0.25"],
        ]
        .concat(),
    );
    let m = metrics_lines(&out);
    assert_eq!(m.len(), 2, "{m:?}");
    assert_eq!(m[0]["lr"].as_f64(), Some(0.002), "{}", m[0]);
    assert_eq!(m[1]["lr"].as_f64(), Some(0.002 * 0.25), "{}", m[1]);

    // Epoch 2 by hand from the epoch-1 checkpoint, with the library's data order and the decayed rate.
    let start = load(&out.join("epoch_001.safetensors"));
    let (state, mut adam) = start.train.clone().expect("training state");
    assert_eq!((state.epoch, state.lr_decay), (1, 0.25));
    let net = Network::new(start.config);
    let mut params = start.params.clone();
    let ds = pixelcnn::data::load(&f.idx, 0.25).expect("fixture data");
    let n = ds.train.len();
    let order = pixelcnn::train::epoch_order(n, state.seed, 1);
    let cfg = AdamConfig {
        lr: 0.002 * 0.25,
        ..state.adam
    };
    for idx in order.chunks(state.batch_size) {
        let x: Vec<f32> = idx
            .iter()
            .flat_map(|&i| ds.train.image(i as usize).iter().map(|&v| v as f32))
            .collect();
        cpu::train_step(&net, &mut params, &mut adam, &cfg, &x, None, idx.len(), state.seed);
    }
    let end = load(&out.join("last.safetensors"));
    assert!(
        bits(&end.params) == bits(&params),
        "the run's second epoch is not the reference's steps at lr · decay"
    );
    // Without the decay the second epoch differs (the test can fail).
    let plain = f.root.join("no_decay");
    ok(
        &f.root,
        &[&train_args(&f, "cpu", &plain)[..], &["--lr", "0.002"]].concat(),
    );
    assert_same_checkpoint(
        "epoch 1 with and without decay",
        &plain.join("epoch_001.safetensors"),
        &out.join("epoch_001.safetensors"),
    );
    assert!(bits(&load(&plain.join("last.safetensors")).params) != bits(&end.params));

    let resume = out.join("last.safetensors");
    let msg = fails(
        &f.root,
        &[
            "train",
            "--resume",
            s(&resume),
            "--data",
            s(&f.idx),
            "--device",
            "cpu",
            "--lr-decay",
            "0.5",
        ],
    );
    assert!(msg.contains("--lr-decay"), "{msg}");
}

#[test]
fn train_gpu_twice_is_bitwise_identical_and_resume_exact() {
    if !have_gpu() {
        return;
    }
    let f = fixture();
    let (a, b) = train_and_resume(&f, "gpu", "gpu");
    check_metrics(&a);
    let a2 = f.root.join("gpu_A2");
    ok(&f.root, &train_args(&f, "gpu", &a2));
    assert_same_checkpoint(
        "GPU: two identical runs",
        &a.join("last.safetensors"),
        &a2.join("last.safetensors"),
    );
    assert_same_checkpoint(
        "GPU: resumed vs uninterrupted",
        &a.join("last.safetensors"),
        &b.join("last.safetensors"),
    );
}

#[test]
fn eval_json_matches_between_cpu_and_gpu() {
    let f = fixture();
    let ck = tiny_checkpoint(&f);
    let base = [
        "eval",
        "--checkpoint",
        s(&ck),
        "--data",
        s(&f.idx),
        "--split",
        "test",
        "--json",
    ];
    let cpu = json(&ok(&f.root, &[&base[..], &["--device", "cpu"]].concat()));
    let nll = |v: &serde_json::Value| -> Vec<f64> {
        v["nll_per_image"]
            .as_array()
            .expect("nll_per_image")
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    assert_eq!(cpu["images"], TEST_IMAGES, "{cpu}");
    let per_image = nll(&cpu);
    assert_eq!(per_image.len(), TEST_IMAGES);
    assert!(per_image.iter().all(|v| v.is_finite() && *v > 0.0), "{per_image:?}");
    let mean = cpu["nll_nats_per_image"].as_f64().unwrap();
    let expected_mean = per_image.iter().sum::<f64>() / per_image.len() as f64;
    assert!(
        (mean - expected_mean).abs() <= 1e-9 * expected_mean,
        "mean {mean} vs {expected_mean}"
    );
    let bpd = cpu["bits_per_dim"].as_f64().unwrap();
    let expected_bpd = mean / (784.0 * std::f64::consts::LN_2);
    assert!(
        (bpd - expected_bpd).abs() <= 1e-12 * expected_bpd,
        "bits/dim {bpd} vs {expected_bpd}"
    );

    let limited = json(&ok(
        &f.root,
        &[&base[..], &["--device", "cpu", "--limit", "5"]].concat(),
    ));
    assert_eq!(limited["images"], 5, "{limited}");
    assert_eq!(
        nll(&limited),
        per_image[..5],
        "--limit 5 should give the first 5 values"
    );

    if !have_gpu() {
        return;
    }
    let gpu = json(&ok(&f.root, &[&base[..], &["--device", "gpu"]].concat()));
    assert_eq!(gpu["images"], cpu["images"]);
    let (g, c): (Vec<f32>, Vec<f32>) = (
        nll(&gpu).iter().map(|&v| v as f32).collect(),
        per_image.iter().map(|&v| v as f32).collect(),
    );
    common::assert_close("eval nll_per_image GPU vs CPU", &g, &c, 1e-4);
    let gpu_mean = gpu["nll_nats_per_image"].as_f64().unwrap();
    assert!(
        (gpu_mean - mean).abs() <= 1e-4 * mean,
        "mean NLL GPU {gpu_mean} vs CPU {mean}"
    );
    let gpu_limited = json(&ok(
        &f.root,
        &[&base[..], &["--device", "gpu", "--limit", "5"]].concat(),
    ));
    assert_eq!(nll(&gpu_limited), nll(&gpu)[..5]);
}

#[test]
fn sample_png_is_deterministic() {
    let f = fixture();
    let ck = tiny_checkpoint(&f);
    let gpu = have_gpu();
    let device = if gpu { "gpu" } else { "cpu" };
    let sample = |out: &str, seed: &str, device: &str| -> (PathBuf, serde_json::Value) {
        let p = f.root.join(out);
        #[rustfmt::skip]
        let args = [
            "sample", "--checkpoint", s(&ck), "--count", "5", "--seed", seed, "--out", s(&p), "--json", "--device", device,
        ];
        let v = json(&ok(&f.root, &args));
        (p, v)
    };
    let (a, va) = sample("a.png", "7", device);
    assert_eq!(va["count"], 5, "{va}");
    assert!(va["seconds"].as_f64().is_some_and(|t| t >= 0.0), "{va}");
    assert_eq!(va["out"].as_str(), Some(s(&a)), "{va}");
    let (b, _) = sample("b.png", "7", device);
    let bytes_a = std::fs::read(&a).unwrap();
    assert!(bytes_a == std::fs::read(&b).unwrap(), "same seed, different files");

    // 5 images: ceil(sqrt(5)) = 3 columns, 2 rows.
    let dummy = vec![0u8; PIXELS];
    let dummies: Vec<&[u8]> = vec![&dummy[..]; 5];
    let expected = grid::render_grid(
        &dummies,
        pixelcnn::model::ImageShape::DEFAULT,
        3,
        grid::DEFAULT_SCALE,
        grid::DEFAULT_GAP,
    );
    let img_a = decode_png(&a);
    assert_eq!(img_a.dimensions(), expected.dimensions());
    let two_rows = grid::render_grid(
        &dummies[..2],
        pixelcnn::model::ImageShape::DEFAULT,
        1,
        grid::DEFAULT_SCALE,
        grid::DEFAULT_GAP,
    );
    assert_eq!(img_a.height(), two_rows.height(), "expected 2 rows of cells");

    let (c, _) = sample("c.png", "8", device);
    assert!(
        bytes_a != std::fs::read(&c).unwrap(),
        "seeds 7 and 8 gave the same file"
    );

    if gpu {
        let (d, _) = sample("d.png", "7", "cpu");
        let img_d = decode_png(&d);
        let diffs: Vec<(u32, u32, u8, u8)> = img_a
            .enumerate_pixels()
            .zip(img_d.pixels())
            .filter(|((_, _, p), q)| p.0 != q.0)
            .map(|((x, y, p), q)| (x, y, p.0[0], q.0[0]))
            .collect();
        if !diffs.is_empty() {
            eprintln!(
                "GPU and CPU samples differ in {} output pixels, first: {:?}",
                diffs.len(),
                &diffs[..diffs.len().min(10)]
            );
        }
        assert!(diffs.is_empty(), "GPU and CPU samples differ for the same seed");
    }
}

#[test]
fn complete_writes_grid() {
    let f = fixture();
    let ck = tiny_checkpoint(&f);
    let device = if have_gpu() { "gpu" } else { "cpu" };
    let out = f.root.join("c.png");
    #[rustfmt::skip]
    let args = [
        "complete", "--checkpoint", s(&ck), "--data", s(&f.idx), "--count", "2", "--rows", "14", "--samples", "3",
        "--out", s(&out), "--device", device,
    ];
    ok(&f.root, &args);
    assert!(out.is_file(), "{} was not written", out.display());
    let img = decode_png(&out);
    let dummy = vec![0u8; PIXELS];
    let row: Vec<&[u8]> = vec![&dummy[..]; 5];
    let expected = grid::render_rows(
        &[row.clone(), row],
        pixelcnn::model::ImageShape::DEFAULT,
        grid::DEFAULT_SCALE,
        grid::DEFAULT_GAP,
    );
    assert_eq!(
        img.dimensions(),
        expected.dimensions(),
        "2 rows of original | occluded | 3 completions"
    );

    // The kept top rows of every completion equal the original's (cells at scale 4, gap 2).
    let (scale, gap) = (grid::DEFAULT_SCALE, grid::DEFAULT_GAP);
    let cell = 28 * scale + gap;
    for r in 0..2 {
        for c in 2..5 {
            for y in 0..14 * scale {
                for x in 0..28 * scale {
                    let orig = img.get_pixel(gap + x, gap + r * cell + y);
                    let comp = img.get_pixel(gap + c * cell + x, gap + r * cell + y);
                    assert_eq!(orig, comp, "row {r} completion {c}: kept pixel ({x}, {y}) changed");
                }
            }
        }
    }
    // Bad arguments are errors, not panics (out-of-range values are usage errors: exit 2).
    let other = f.root.join("other.png");
    let err = refused(
        &f.root,
        &[&args[..7], &["--rows", "29", "--out", s(&other), "--device", "cpu"]].concat(),
    );
    assert!(err.contains("--rows"), "{err}");
    let err = fails(
        &f.root,
        &[&args[..5], &["--count", "13", "--out", s(&other), "--device", "cpu"]].concat(),
    );
    assert!(err.contains("only 12"), "{err}");
    assert!(!other.exists());
}

#[test]
fn train_reports_missing_data_helpfully() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nonexistent");
    for device in ["cpu", "gpu"] {
        #[rustfmt::skip]
        let args = ["train", "--data", s(&missing), "--device", device, "--epochs", "1", "--out", "run"];
        let err = fails(tmp.path(), &[&args[..], &TINY[..]].concat());
        assert!(err.contains("pixelcnn download"), "{err}");
        assert!(err.contains(s(&missing)), "{err}");
    }
    assert!(
        !tmp.path().join("run").exists(),
        "a failed start should not create the run directory"
    );
}

#[test]
fn export_strips_training_state() {
    let f = fixture();
    // An average of decay 0.5 counts after 2 updates; this run takes 4, and holds out no validation images (which
    // could find the average worse than the parameters: then they would be the weights in use).
    let run = f.root.join("ema");
    let ck = run.join("last.safetensors");
    #[rustfmt::skip]
    let args = [
        "train", "--device", "cpu", "--data", s(&f.idx), "--val-split", "0", "--batch-size", "8",
        "--steps", "4", "--seed", "5", "--ema", "0.5", "--out", s(&run),
    ];
    ok(&f.root, &[&args[..], &TINY[..]].concat());
    let exported = f.root.join("model.safetensors");
    ok(&f.root, &["export", s(&ck), "--out", s(&exported)]);
    let (full, model) = (load(&ck), load(&exported));
    assert!(
        full.train.is_some(),
        "the trained checkpoint should hold training state"
    );
    assert!(
        model.train.is_none(),
        "the exported checkpoint should hold no training state"
    );
    assert_eq!(model.config, full.config);
    // The export holds the Polyak average the run kept (training keeps one by default), or with --raw-weights
    // the parameters themselves.
    assert!(full.averaged(false), "the trained checkpoint should keep an average");
    assert!(
        bits(&model.params) == bits(full.weights(false)),
        "export did not write the averaged weights"
    );
    assert!(
        bits(full.weights(false)) != bits(&full.params),
        "the average equals the parameters"
    );
    let raw = f.root.join("raw.safetensors");
    ok(&f.root, &["export", s(&ck), "--raw-weights", "--out", s(&raw)]);
    assert!(
        bits(&load(&raw).params) == bits(&full.params),
        "export --raw-weights changed the parameters"
    );
    assert!(
        std::fs::metadata(&exported).unwrap().len() < std::fs::metadata(&ck).unwrap().len(),
        "the export should be smaller than the training checkpoint"
    );
    let err = fails(
        &f.root,
        &[
            "train",
            "--resume",
            s(&exported),
            "--data",
            s(&f.idx),
            "--device",
            "cpu",
        ],
    );
    assert!(err.contains("no training state") && err.contains(s(&exported)), "{err}");
    // Also without --data (and no data at the default path): the checkpoint is the problem, not the data.
    let err = fails(&f.root, &["train", "--resume", s(&exported), "--device", "cpu"]);
    assert!(err.contains("no training state") && err.contains(s(&exported)), "{err}");
    // Exporting a missing checkpoint names it.
    let missing = f.root.join("missing.safetensors");
    let err = fails(
        &f.root,
        &["export", s(&missing), "--out", s(&f.root.join("x.safetensors"))],
    );
    assert!(err.contains(s(&missing)), "{err}");
}

#[test]
fn download_from_loopback_server() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let names: Vec<String> = pixelcnn::download::FILES.iter().map(|(n, _)| format!("/{n}")).collect();
    std::thread::spawn(move || {
        // A bounded number of connections, so the thread cannot outlive the test by much.
        for stream in listener.incoming().take(20) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && !line.trim_end().is_empty() {
                line.clear();
            }
            let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
            let (status, body): (&str, Vec<u8>) = if names.contains(&path) {
                ("200 OK", format!("not the real content of {path}").into_bytes())
            } else {
                ("404 Not Found", b"not found".to_vec())
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(&body));
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("T");
    let url = format!("http://127.0.0.1:{port}/");
    let err = fails(tmp.path(), &["download", "--dir", s(&dir), "--base-url", &url]);
    let first = pixelcnn::download::FILES[0].0;
    assert!(err.contains(first) && err.contains("MD5"), "{err}");
    assert!(!dir.join(first).exists(), "a file with the wrong MD5 must not be saved");

    // A mirror that does not have the files: HTTP 404 named in the message.
    let err = fails(
        tmp.path(),
        &["download", "--dir", s(&dir), "--base-url", &format!("{url}missing/")],
    );
    assert!(err.contains(first) && err.contains("404"), "{err}");
}

#[test]
fn baselines_and_plot_on_fixture() {
    let f = fixture();
    let v = json(&ok(
        &f.root,
        &["baselines", "--data", s(&f.idx), "--val-split", "0.25", "--json"],
    ));
    assert_eq!(v["test_images"], TEST_IMAGES, "{v}");
    for key in ["constant", "per_pixel_bernoulli"] {
        let nll = v[key]["nll_nats_per_image"].as_f64().unwrap();
        let bpd = v[key]["bits_per_dim"].as_f64().unwrap();
        // Random pixels: about 0.9 bits/dim, never more than a little above 1.
        assert!(
            nll > 0.0 && (bpd - nll / (784.0 * std::f64::consts::LN_2)).abs() < 1e-12,
            "{v}"
        );
        assert!((0.5..1.2).contains(&bpd), "{key}: {bpd} bits/dim");
    }
    let p = v["constant"]["p"].as_f64().unwrap();
    assert!((0.55..0.78).contains(&p), "constant p {p}");
    // The count table over 6 causal neighbours, fitted on 30 random images, overfits: worse than per-pixel here.
    let table = v["count_table"]["nll_nats_per_image"].as_f64().unwrap();
    assert!(table.is_finite() && table > 0.0, "{v}");

    // The training curve of a 2-epoch run.
    let run = f.root.join("run");
    #[rustfmt::skip]
    let args = [
        "train", "--device", "cpu", "--data", s(&f.idx), "--val-split", "0.25", "--batch-size", "16", "--epochs", "2",
        "--out", s(&run), "--filters", "4", "--blocks", "1",
    ];
    ok(&f.root, &args);
    let png = f.root.join("curve.png");
    let o = pixelcnn(&f.root, &["plot", s(&run.join("metrics.jsonl")), "--out", s(&png)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let img = decode_png(&png);
    assert!(img.width() > 100 && img.height() > 100, "{:?}", img.dimensions());
    // Titled with the run's network and data (the folder or file --data named), or what --title says.
    let data_name = f.idx.file_name().unwrap().to_string_lossy().into_owned();
    let title = format!("\"pixelcnn F=4 N=1 on {data_name}\"");
    assert!(stderr(&o).contains(&title), "expected {title}: {}", stderr(&o));
    let o = pixelcnn(
        &f.root,
        &[
            "plot",
            s(&run.join("metrics.jsonl")),
            "--out",
            s(&png),
            "--title",
            "mine",
        ],
    );
    assert!(stderr(&o).contains("\"mine\""), "{}", stderr(&o));
    let err = fails(&f.root, &["plot", s(&f.root.join("missing.jsonl")), "--out", s(&png)]);
    assert!(err.contains("missing.jsonl"), "{err}");
}

// ---------------------------------------------------------------------------------------------------
// Conditional and gated models

/// Trains a tiny model of the given flags on the CPU for 2 steps into `<root>/<name>/last.safetensors`.
fn tiny_model(f: &Fixture, name: &str, model: &[&str]) -> PathBuf {
    let out = f.root.join(name);
    #[rustfmt::skip]
    let args = [
        "train", "--device", "cpu", "--data", s(&f.idx), "--val-split", "0.25", "--batch-size", "8",
        "--steps", "2", "--seed", "5", "--out", s(&out),
    ];
    ok(&f.root, &[&args[..], model].concat());
    out.join("last.safetensors")
}

#[test]
fn conditional_gated_model_trains_evaluates_and_samples_by_class() {
    let f = fixture();
    let ck = tiny_model(
        &f,
        "gc",
        &["--arch", "gated", "--filters", "4", "--layers", "2", "--conditional"],
    );
    let c = load(&ck);
    assert_eq!(c.config.describe(), "gated F=4 L=2 conditional");
    let base = [
        "eval",
        "--checkpoint",
        s(&ck),
        "--data",
        s(&f.idx),
        "--split",
        "test",
        "--json",
    ];
    let cpu = json(&ok(&f.root, &[&base[..], &["--device", "cpu"]].concat()));
    assert_eq!(cpu["conditional"], true, "{cpu}");
    let marginal = cpu["nll_nats_per_image"].as_f64().unwrap();
    let given = cpu["nll_given_label_nats_per_image"].as_f64().unwrap();
    let acc = cpu["classifier_accuracy"].as_f64().unwrap();
    // −log p(x) = −log Σ_y p(x|y)/10 ≤ −log p(x|y_true) + log 10.
    assert!(
        marginal <= given + 10f64.ln() + 1e-9,
        "marginal {marginal} vs given {given}"
    );
    assert!((0.0..=1.0).contains(&acc), "{cpu}");
    assert_eq!(cpu["nll_per_image"].as_array().unwrap().len(), TEST_IMAGES);
    assert_eq!(cpu["nll_given_label_per_image"].as_array().unwrap().len(), TEST_IMAGES);
    if have_gpu() {
        let gpu = json(&ok(&f.root, &[&base[..], &["--device", "gpu"]].concat()));
        for key in ["nll_per_image", "nll_given_label_per_image"] {
            let v = |j: &serde_json::Value| -> Vec<f32> {
                j[key]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect()
            };
            common::assert_close(&format!("eval {key} GPU vs CPU"), &v(&gpu), &v(&cpu), 1e-4);
        }
        // (The classifier's accuracy can differ where two classes are within rounding of each other in this
        // barely trained model.)
        assert!((0.0..=1.0).contains(&gpu["classifier_accuracy"].as_f64().unwrap()));
    }
    let device = if have_gpu() { "gpu" } else { "cpu" };
    // One class by name, one by number; --class all draws one labelled row per class.
    for (class, out) in [("sneaker", "sneaker.png"), ("3", "dress.png"), ("all", "all.png")] {
        let p = f.root.join(out);
        ok(
            &f.root,
            &[
                "sample",
                "--checkpoint",
                s(&ck),
                "--count",
                "3",
                "--class",
                class,
                "--out",
                s(&p),
                "--device",
                device,
            ],
        );
        let img = decode_png(&p);
        if class == "all" {
            let dummy = vec![0u8; PIXELS];
            let rows: Vec<Vec<&[u8]>> = (0..10).map(|_| vec![&dummy[..]; 3]).collect();
            let plain = grid::render_rows(
                &rows,
                pixelcnn::model::ImageShape::DEFAULT,
                grid::DEFAULT_SCALE,
                grid::DEFAULT_GAP,
            );
            assert_eq!(img.height(), plain.height(), "ten rows");
            assert!(img.width() > plain.width(), "a label column left of the rows");
        }
    }
    let err = fails(
        &f.root,
        &[
            "sample",
            "--checkpoint",
            s(&ck),
            "--class",
            "sock",
            "--out",
            s(&f.root.join("x.png")),
        ],
    );
    assert!(err.contains("sock") && err.contains("sneaker"), "{err}");
    // An unconditional model refuses --class.
    let plain = tiny_checkpoint(&f);
    let err = fails(
        &f.root,
        &[
            "sample",
            "--checkpoint",
            s(&plain),
            "--class",
            "bag",
            "--out",
            s(&f.root.join("y.png")),
        ],
    );
    assert!(err.contains("conditional"), "{err}");
    // Completion conditions on each test image's label.
    let out = f.root.join("cc.png");
    ok(
        &f.root,
        &[
            "complete",
            "--checkpoint",
            s(&ck),
            "--data",
            s(&f.idx),
            "--count",
            "2",
            "--samples",
            "2",
            "--out",
            s(&out),
            "--device",
            device,
        ],
    );
    assert!(out.is_file());
}

// ---------------------------------------------------------------------------------------------------
// Reliability: kills, divergence, bad values

/// A fixture run long enough to be killed in the middle: 30 images, batch 2, 15 steps per epoch.
/// A run of 6 short epochs that saves all the time; `gated`: the network that sees the whole image (gated, dilated,
/// class-conditional, with dropout, whose masks a resume must redraw), else the seed's plain network.
fn long_args<'a>(f: &'a Fixture, out: &'a Path, device: &'a str, gated: bool) -> Vec<&'a str> {
    #[rustfmt::skip]
    let mut args = vec![
        "train", "--device", device, "--data", s(&f.idx), "--val-split", "0.25", "--batch-size", "2", "--epochs",
        "6", "--seed", "9", "--out", s(out), "--save-every", "0.0001", "--filters", "4",
    ];
    if gated {
        #[rustfmt::skip]
        args.extend(["--arch", "gated", "--layers", "3", "--dilation-cycle", "2", "--conditional", "--dropout", "0.2"]);
    } else {
        args.extend(["--blocks", "1"]);
    }
    args
}

#[test]
fn a_run_killed_with_sigkill_or_sigterm_resumes_bit_identical() {
    let f = fixture();
    for (device, signal, gated) in [
        ("cpu", libc::SIGKILL, false),
        ("cpu", libc::SIGTERM, false),
        ("gpu", libc::SIGKILL, false),
        ("gpu", libc::SIGTERM, false),
        ("cpu", libc::SIGKILL, true),
        ("gpu", libc::SIGKILL, true),
    ] {
        if device == "gpu" && !have_gpu() {
            continue;
        }
        let net = if gated { "gated" } else { "plain" };
        let a = f.root.join(format!("kill_A_{device}_{net}"));
        let b = f.root.join(format!("kill_B_{device}_{signal}_{net}"));
        if !a.exists() {
            ok(&f.root, &long_args(&f, &a, device, gated));
        }
        // Run B is killed (SIGKILL: without warning; SIGTERM: it saves and stops) once a periodic save inside an
        // epoch (not at its end) is on disk.
        let mut child = Command::new(env!("CARGO_BIN_EXE_pixelcnn"))
            .args(long_args(&f, &b, device, gated))
            .current_dir(&f.root)
            .env_remove("PIXELCNN_DATA")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let last = b.join("last.safetensors");
        let t = Instant::now();
        let killed_at = loop {
            if let Ok(ck) = checkpoint::load(&last) {
                let (state, _) = ck.train.unwrap();
                if state.epoch >= 1 && state.batch_in_epoch > 0 {
                    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
                    break state;
                }
            }
            assert!(
                child.try_wait().unwrap().is_none(),
                "{device} {net}: run B ended before it could be killed"
            );
            assert!(
                t.elapsed().as_secs() < 300,
                "{device} {net}: no mid-epoch checkpoint appeared"
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        };
        let status = child.wait().unwrap();
        assert!(!status.success(), "{device} {net}: the killed run reported success");
        if signal == libc::SIGTERM {
            assert_eq!(
                status.code(),
                Some(130),
                "{device} {net}: SIGTERM should save and exit 130"
            );
        }
        let on_disk = load(&last).train.unwrap().0;
        eprintln!(
            "{device} {net}: killed after the save at step {} (epoch {}, batch {}); on disk: step {}",
            killed_at.step, killed_at.epoch, killed_at.batch_in_epoch, on_disk.step
        );
        ok(&f.root, &["train", "--resume", s(&last), "--device", device]);
        assert_same_checkpoint(
            &format!("{device} {net}: killed and resumed vs uninterrupted"),
            &a.join("last.safetensors"),
            &last,
        );
        let (sa, sb) = (
            load(&a.join("last.safetensors")).train.unwrap().0,
            load(&last).train.unwrap().0,
        );
        assert_eq!(
            (sa.epoch, sb.epoch),
            (6, 6),
            "both runs ran their 6 epochs (resume kept the run's length)"
        );
        // The log holds each epoch once, in order, as the uninterrupted run's does.
        let epochs = |d: &Path| -> Vec<(u64, u64)> {
            metrics_lines(d)
                .iter()
                .filter(|m| m["partial"] == false)
                .map(|m| (m["epoch"].as_u64().unwrap(), m["step"].as_u64().unwrap()))
                .collect()
        };
        assert_eq!(epochs(&b), epochs(&a), "{device} {net}: the resumed run's log");
        assert_no_temp_files(&b);
    }
}

#[test]
fn a_diverging_run_stops_with_an_error_and_keeps_the_last_good_checkpoint() {
    let f = fixture();
    let ck = tiny_checkpoint(&f);
    // Weights of 1e30 overflow every activation to ±inf and the loss to NaN at the next step.
    let bytes = std::fs::read(&ck).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| {
            let data = if n.ends_with(".weight") && !n.starts_with("train.") {
                t.data()
                    .chunks_exact(4)
                    .flat_map(|b| (f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * 1e30).to_le_bytes())
                    .collect()
            } else {
                t.data().to_vec()
            };
            (n, t.shape().to_vec(), data)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, sh, d)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, sh.clone(), d).unwrap(),
            )
        })
        .collect();
    let run = f.root.join("diverging");
    std::fs::create_dir_all(&run).unwrap();
    let start = run.join("last.safetensors");
    std::fs::write(&start, safetensors::serialize(views, meta.metadata()).unwrap()).unwrap();
    let before = std::fs::read(&start).unwrap();
    for device in ["cpu", "gpu"] {
        if device == "gpu" && !have_gpu() {
            continue;
        }
        let err = refused(
            &f.root,
            &[
                "train",
                "--resume",
                s(&start),
                "--data",
                s(&f.idx),
                "--device",
                device,
                "--epochs",
                "3",
                "--save-every",
                "0.0001",
            ],
        );
        assert!(err.contains("error: training diverged"), "{device}: {err}");
        assert!(
            err.contains(s(&start)) && err.contains("not overwritten"),
            "{device}: the message should name the last good checkpoint: {err}"
        );
        assert_eq!(
            std::fs::read(&start).unwrap(),
            before,
            "{device}: the last good checkpoint was overwritten"
        );
        let leftovers: Vec<_> = std::fs::read_dir(&run)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            leftovers
                .iter()
                .all(|n| n == "last.safetensors" || n == "metrics.jsonl" || n == pixelcnn::dir_lock::LOCK_FILE),
            "{leftovers:?}"
        );
    }
}

/// Runs and asserts a non-zero exit (1 for our errors, 2 for clap's usage errors) with a message on stderr and no
/// panic; returns stderr.
fn refused(cwd: &Path, args: &[&str]) -> String {
    let o = pixelcnn(cwd, args);
    let err = stderr(&o);
    assert!(
        matches!(o.status.code(), Some(1) | Some(2)),
        "pixelcnn {} should be refused, got {:?}\nstderr:\n{err}",
        args.join(" "),
        o.status.code()
    );
    assert!(!err.contains("panicked"), "pixelcnn {}: panic:\n{err}", args.join(" "));
    assert!(
        err.contains("error"),
        "pixelcnn {}: no error message:\n{err}",
        args.join(" ")
    );
    err
}

#[test]
fn bad_command_line_values_are_refused_clearly() {
    let f = fixture();
    let ck = tiny_checkpoint(&f);
    let idx = s(&f.idx);
    let run = f.root.join("r");
    let png = f.root.join("x.png");
    let read_only = "/proc/pixelcnn-test.png";
    let existing_run = ck.parent().unwrap();
    let nope = f.root.join("nope.safetensors");
    let txt = f.root.join("x.txt");
    let no_ext = f.root.join("x");
    let ck_metrics = ck.with_file_name("metrics.jsonl");
    // (command line, a word the message must contain)
    #[rustfmt::skip]
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["train", "--data", idx, "--lr", "nan", "--out", s(&run)], "learning rate"),
        (vec!["train", "--data", idx, "--lr", "inf", "--out", s(&run)], "learning rate"),
        (vec!["train", "--data", idx, "--lr=-1e-3", "--out", s(&run)], "learning rate"),
        (vec!["train", "--data", idx, "--lr", "0", "--out", s(&run)], "learning rate"),
        (vec!["train", "--data", idx, "--lr", "2", "--out", s(&run)], "learning rate"),
        (vec!["train", "--data", idx, "--batch-size", "0", "--out", s(&run)], "batch-size"),
        (vec!["train", "--data", idx, "--batch-size", "999999", "--out", s(&run)], "batch-size"),
        (vec!["train", "--data", idx, "--epochs", "0", "--out", s(&run)], "epochs"),
        (vec!["train", "--data", idx, "--steps", "0", "--out", s(&run)], "steps"),
        (vec!["train", "--data", idx, "--limit", "0", "--out", s(&run)], "limit"),
        (vec!["train", "--data", idx, "--val-split", "1", "--out", s(&run)], "validation split"),
        (vec!["train", "--data", idx, "--val-split", "nan", "--out", s(&run)], "validation split"),
        (vec!["train", "--data", idx, "--val-split=-0.1", "--out", s(&run)], "validation split"),
        (vec!["train", "--data", idx, "--save-every", "0", "--out", s(&run)], "save-every"),
        (vec!["train", "--data", idx, "--filters", "0", "--out", s(&run)], "filters"),
        (vec!["train", "--data", idx, "--filters", "5", "--out", s(&run)], "filters"),
        (vec!["train", "--data", idx, "--blocks", "1000", "--out", s(&run)], "blocks"),
        (vec!["train", "--data", idx, "--arch", "gated", "--blocks", "2", "--out", s(&run)], "--layers"),
        (vec!["train", "--data", idx, "--seed=-1", "--out", s(&run)], "seed"),
        (vec!["train", "--data", idx, "--out", s(existing_run)], "already holds a run"),
        (vec!["train", "--resume", s(&ck), "--data", idx, "--lr", "0.01"], "--lr"),
        (vec!["train", "--resume", s(&ck), "--data", idx, "--filters", "8"], "model"),
        (vec!["train", "--resume", s(&ck), "--data", idx, "--epochs", "0"], "epochs"),
        (vec!["sample", "--checkpoint", s(&ck), "--count", "0", "--out", s(&png)], "count"),
        (vec!["sample", "--checkpoint", s(&ck), "--count", "100000000", "--out", s(&png)], "count"),
        (vec!["sample", "--checkpoint", s(&ck), "--count", "5000", "--out", s(&png)], "--save-each"),
        (vec!["sample", "--checkpoint", s(&ck), "--scale", "0", "--out", s(&png)], "scale"),
        (vec!["sample", "--checkpoint", s(&ck), "--scale", "1000", "--out", s(&png)], "scale"),
        (vec!["sample", "--checkpoint", s(&ck), "--out", s(&ck)], "destroy"),
        (vec!["sample", "--checkpoint", s(&ck), "--out", s(&f.root)], "directory"),
        (vec!["sample", "--checkpoint", s(&ck), "--out", read_only, "--device", "cpu", "--count", "1"], "pixelcnn-test.png"),
        (vec!["sample", "--checkpoint", s(&nope), "--out", s(&png)], "nope.safetensors"),
        (vec!["sample", "--checkpoint", s(&ck), "--class", "11", "--out", s(&png)], "class"),
        (vec!["complete", "--checkpoint", s(&ck), "--data", idx, "--rows", "29", "--out", s(&png)], "rows"),
        (vec!["complete", "--checkpoint", s(&ck), "--data", idx, "--samples", "0", "--out", s(&png)], "samples"),
        (vec!["complete", "--checkpoint", s(&ck), "--data", idx, "--count", "0", "--out", s(&png)], "count"),
        (vec!["complete", "--checkpoint", s(&ck), "--data", idx, "--count", "10000", "--scale", "64", "--out", s(&png)], "--scale"),
        (vec!["sample", "--checkpoint", s(&ck), "--count", "4096", "--scale", "64", "--out", s(&png)], "--scale"),
        (vec!["train", "--data", idx, "--lr-decay", "0", "--out", s(&run)], "lr-decay"),
        (vec!["train", "--data", idx, "--lr-decay", "1.5", "--out", s(&run)], "lr-decay"),
        (vec!["train", "--data", idx, "--lr-decay", "nan", "--out", s(&run)], "lr-decay"),
        (vec!["eval", "--checkpoint", s(&ck), "--data", idx, "--limit", "0"], "limit"),
        (vec!["eval", "--checkpoint", s(&ck), "--data", idx, "--split", "holdout"], "split"),
        (vec!["eval", "--checkpoint", s(&ck), "--data", idx, "--split", "val", "--val-split", "0"], "no val images"),
        (vec!["export", s(&ck), "--out", s(&ck)], "destroy"),
        (vec!["bench", "train", "--batch-size", "0"], "batch-size"),
        (vec!["bench", "sample", "--naive-pixels", "0"], "naive-pixels"),
        (vec!["train", "--resume", s(&ck), "--data", idx, "--steps", "2"], "already at step 2"),
        (vec!["train", "--resume", s(&ck), "--data", idx, "--steps", "1", "--device", "cpu"], "--steps"),
        (vec!["sample", "--checkpoint", s(&ck), "--out", s(&txt), "--device", "cpu"], ".txt is not an image format"),
        (vec!["sample", "--checkpoint", s(&ck), "--out", s(&no_ext), "--device", "cpu"], "no file extension"),
        (vec!["complete", "--checkpoint", s(&ck), "--data", idx, "--out", s(&txt), "--device", "cpu"], ".txt"),
        (vec!["plot", s(&ck_metrics), "--out", s(&txt)], ".txt"),
    ];
    let ck_before = std::fs::read(&ck).unwrap();
    for (args, word) in &cases {
        let err = refused(&f.root, args);
        eprintln!("    {}", err.lines().next().unwrap_or(""));
        assert!(
            err.contains(word),
            "pixelcnn {}: the message should mention {word:?}:\n{err}",
            args.join(" ")
        );
    }
    assert_eq!(
        std::fs::read(&ck).unwrap(),
        ck_before,
        "a refused command changed the checkpoint"
    );
    assert!(
        !png.exists() && !run.exists() && !txt.exists() && !no_ext.exists(),
        "a refused command wrote output"
    );
    assert_no_temp_files(&f.root);
}

/// Asserts that no temporary file of an atomic write is left anywhere under `dir`.
fn assert_no_temp_files(dir: &Path) {
    let mut temps = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if pixelcnn::fsio::is_temp_name(&name) || name.contains(".tmp-") {
                temps.push(e.path());
            }
            if e.file_type().unwrap().is_dir() {
                todo.push(e.path());
            }
        }
    }
    assert!(temps.is_empty(), "temporary files left behind: {temps:?}");
}

#[test]
fn an_empty_validation_split_is_reported_as_such_never_as_nan() {
    let f = fixture();
    let out = f.root.join("noval");
    #[rustfmt::skip]
    let args = ["train", "--device", "cpu", "--data", s(&f.idx), "--val-split", "0", "--batch-size", "16", "--epochs", "1",
        "--out", s(&out), "--filters", "4", "--blocks", "1"];
    let o = pixelcnn(&f.root, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("no validation images"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("NaN"), "{}", stderr(&o));
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert!(!text.contains("NaN") && !text.contains("Infinity"), "{text}");
    assert_eq!(metrics_lines(&out)[0]["val_nll"], serde_json::Value::Null);
    // The JSON lines on stdout too.
    let out2 = f.root.join("noval2");
    let json_args: Vec<&str> = args
        .iter()
        .map(|&a| if a == s(&out) { s(&out2) } else { a })
        .chain(["--json"])
        .collect();
    let stdout_text = ok(&f.root, &json_args);
    assert!(
        !stdout_text.contains("NaN") && stdout_text.contains("\"val_nll\":null"),
        "{stdout_text}"
    );
}

// ---------------------------------------------------------------------------------------------------
// wgpu's GL backend (llvmpipe over EGL on machines without a GPU)

/// Runs the binary with extra environment variables.
fn pixelcnn_env(cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pixelcnn"));
    cmd.args(args).current_dir(cwd).env_remove("PIXELCNN_DATA");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{env:?} pixelcnn {}: {}",
        args.join(" "),
        stderr(&o)
    );
    stdout(&o)
}

/// Whether the binary finds an adapter of wgpu's `backend` (`Vulkan`, `Gl`, as `devices --json` names them) when
/// WGPU_BACKEND selects that backend alone.
fn has_backend(cwd: &Path, backend: &str) -> bool {
    let o = Command::new(env!("CARGO_BIN_EXE_pixelcnn"))
        .args(["devices", "--json"])
        .current_dir(cwd)
        .env_remove("PIXELCNN_DATA")
        .env("WGPU_BACKEND", backend.to_lowercase())
        .output()
        .expect("running the pixelcnn binary");
    // Without an adapter `devices --json` prints `[]` and exits 1.
    serde_json::from_slice::<serde_json::Value>(&o.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .is_some_and(|a| a.iter().any(|d| d["backend"] == backend))
}

#[test]
fn the_gl_backend_gives_the_same_samples_nll_and_training_as_vulkan() {
    if !have_gpu() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // The comparison needs both: a machine with only one of them (a GL driver without a Vulkan one, say) skips.
    for (backend, name) in [("Gl", "GL"), ("Vulkan", "Vulkan")] {
        if !has_backend(tmp.path(), backend) {
            assert!(
                !std::env::var("CI").is_ok_and(|v| v == "true"),
                "CI=true but no {name} adapter"
            );
            eprintln!(
                "SKIPPING: no {name} adapter (WGPU_BACKEND={} finds none)",
                backend.to_lowercase()
            );
            return;
        }
    }
    let f = fixture();
    let ck = tiny_model(
        &f,
        "glck",
        &["--arch", "gated", "--filters", "4", "--layers", "2", "--conditional"],
    );
    // Vulkan with the same kernel versions the GL device gets (GL has no subgroups: tiled and pixel_net).
    let vk: &[(&str, &str)] = &[("WGPU_BACKEND", "vulkan"), ("PIXELCNN_KERNELS", "tiled")];
    let gl: &[(&str, &str)] = &[("WGPU_BACKEND", "gl")];
    let mut grids = Vec::new();
    for (name, env) in [("vulkan", vk), ("gl", gl)] {
        let png = f.root.join(format!("{name}.png"));
        pixelcnn_env(
            &f.root,
            env,
            &[
                "sample",
                "--checkpoint",
                s(&ck),
                "--count",
                "6",
                "--seed",
                "4",
                "--out",
                s(&png),
            ],
        );
        grids.push(std::fs::read(&png).unwrap());
    }
    assert!(
        grids[0] == grids[1],
        "the GL backend's sample grid differs from Vulkan's"
    );
    let eval = |env: &[(&str, &str)]| {
        json(&pixelcnn_env(
            &f.root,
            env,
            &["eval", "--checkpoint", s(&ck), "--data", s(&f.idx), "--json"],
        ))
    };
    let (a, b) = (eval(vk), eval(gl));
    for key in ["nll_nats_per_image", "nll_given_label_nats_per_image"] {
        let (x, y) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
        eprintln!("{key}: Vulkan {x} GL {y}");
        assert!((x - y).abs() <= 1e-6 * x, "{key}: Vulkan {x} vs GL {y}");
    }
    // Three training steps from the same start.
    let mut params = Vec::new();
    for (name, env) in [("vulkan", vk), ("gl", gl)] {
        let out = f.root.join(format!("train_{name}"));
        #[rustfmt::skip]
        let args = ["train", "--data", s(&f.idx), "--val-split", "0.25", "--batch-size", "8", "--steps", "3", "--seed", "2",
            "--out", s(&out), "--arch", "gated", "--filters", "4", "--layers", "2", "--conditional"];
        pixelcnn_env(&f.root, env, &args);
        params.push(load(&out.join("last.safetensors")).params);
    }
    common::assert_close("parameters after 3 steps: GL vs Vulkan", &params[1], &params[0], 1e-5);
}

// ---------------------------------------------------------------------------------------------------
// Nothing clobbered, nothing hangs: run-directory locks, a crash-consistent log, special files, adapters

/// Runs `pixelcnn args...` (any bytes) in `cwd` with extra environment variables (None: removed), and fails the
/// test if it is still running after `secs` seconds (it is killed first): a command that waits on a FIFO or reads a
/// device without end is caught here.
fn run_bounded(cwd: &Path, args: &[&std::ffi::OsStr], env: &[(&str, Option<&str>)], secs: u64) -> Output {
    use std::io::Read;
    use std::process::Stdio;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pixelcnn"));
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("PIXELCNN_DATA")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let t = Instant::now();
    let mut child = cmd.spawn().expect("running the pixelcnn binary");
    let mut pipes = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = pipes.0.read_to_end(&mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = pipes.1.read_to_end(&mut v);
        v
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if t.elapsed().as_secs() >= secs {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pixelcnn {args:?} was still running after {secs} s: it hangs");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    eprintln!(
        "  pixelcnn {args:?} -> {:?} in {:.2} s",
        status.code(),
        t.elapsed().as_secs_f64()
    );
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn os(args: &[&str]) -> Vec<std::ffi::OsString> {
    args.iter().map(Into::into).collect()
}

/// Runs (within 20 s) and asserts exit code 1 with an `error:` message naming `file` and containing `word`, and no
/// panic; returns stderr.
fn refused_naming(cwd: &Path, args: &[&str], file: &Path, word: &str) -> String {
    let argv = os(args);
    let refs: Vec<&std::ffi::OsStr> = argv.iter().map(|a| a.as_os_str()).collect();
    let o = run_bounded(cwd, &refs, &[], 20);
    let err = stderr(&o);
    let line = args.join(" ");
    assert_eq!(o.status.code(), Some(1), "pixelcnn {line} should exit 1:\n{err}");
    assert!(
        err.starts_with("error:") && !err.contains("panicked"),
        "pixelcnn {line}:\n{err}"
    );
    assert!(
        err.contains(s(file)),
        "pixelcnn {line}: the message should name {}:\n{err}",
        file.display()
    );
    assert!(
        err.contains(word),
        "pixelcnn {line}: the message should mention {word:?}:\n{err}"
    );
    eprintln!("    {}", err.lines().next().unwrap_or(""));
    err
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(s(p)).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo {}", p.display());
}

/// The regular files of `dir` (not its lock file) and their bytes, sorted by name.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file() && e.file_name() != pixelcnn::dir_lock::LOCK_FILE)
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// The (epoch, step) of every record of a run's log: steps strictly increase, so no epoch is logged twice.
fn logged_steps(dir: &Path) -> Vec<(u64, u64)> {
    let steps: Vec<(u64, u64)> = metrics_lines(dir)
        .iter()
        .map(|m| (m["epoch"].as_u64().unwrap(), m["step"].as_u64().unwrap()))
        .collect();
    assert!(
        steps.windows(2).all(|w| w[0].1 < w[1].1 && w[0].0 <= w[1].0),
        "{}: records out of order or repeated: {steps:?}",
        dir.display()
    );
    steps
}

#[test]
fn a_run_directory_has_one_writer_at_a_time() {
    let f = fixture();
    let idx = s(&f.idx);
    let ck = tiny_checkpoint(&f);
    let run = ck.parent().unwrap().to_path_buf();

    // While another process holds a directory's lock (here this test, standing in for a running train), a fresh
    // run into it and a resume of the run in it are refused, naming the holder's pid; nothing there changes.
    let pid = format!("pid {}", std::process::id());
    {
        let _lock = pixelcnn::dir_lock::lock_dir(&run).unwrap();
        let empty = f.root.join("empty");
        let _empty_lock = pixelcnn::dir_lock::lock_dir(&empty).unwrap();
        let before = snapshot(&run);
        let err = fails(&f.root, &train_args(&f, "cpu", &empty));
        assert!(err.contains(&pid) && err.contains("in use"), "{err}");
        #[rustfmt::skip]
        let err = fails(&f.root, &["train", "--resume", s(&ck), "--data", idx, "--device", "cpu", "--epochs", "3"]);
        assert!(err.contains(&pid), "{err}");
        assert_eq!(snapshot(&run), before, "a refused run changed the run directory");
        assert_eq!(
            snapshot(&empty),
            vec![],
            "a refused run wrote into the locked directory"
        );
    }

    // A real second writer: run A trains (long enough to be caught running); another fresh run into its directory
    // and a second resume of its checkpoint are refused, the resume naming A's pid.
    let a = f.root.join("a");
    #[rustfmt::skip]
    let long = [
        "train", "--device", "cpu", "--data", idx, "--val-split", "0.25", "--batch-size", "2", "--epochs", "100000",
        "--seed", "9", "--out", s(&a), "--save-every", "0.0001", "--filters", "4", "--blocks", "1",
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_pixelcnn"))
        .args(long)
        .current_dir(&f.root)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let a_last = a.join("last.safetensors");
    let t = Instant::now();
    while !(a.join("metrics.jsonl").is_file() && checkpoint::load(&a_last).is_ok()) {
        assert!(child.try_wait().unwrap().is_none(), "run A ended early");
        assert!(t.elapsed().as_secs() < 120, "run A wrote no checkpoint");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let a_pid = format!("pid {}", child.id());
    let err = fails(&f.root, &["train", "--resume", s(&a_last), "--device", "cpu"]);
    assert!(err.contains(&a_pid) && err.contains("in use"), "{err}");
    let err = fails(&f.root, &long);
    assert!(err.contains("already holds a run") || err.contains(&a_pid), "{err}");
    child.kill().unwrap();
    child.wait().unwrap();

    // The lock dies with its holder, even by SIGKILL: A's run resumes, and its log holds each step once.
    let step = load(&a_last).train.unwrap().0.step;
    let stop = (step + 3).to_string();
    ok(
        &f.root,
        &["train", "--resume", s(&a_last), "--device", "cpu", "--steps", &stop],
    );
    logged_steps(&a);
    assert_eq!(load(&a_last).train.unwrap().0.step, step + 3);

    // A resume into a directory that holds another run is refused, and that run is untouched.
    let before = snapshot(&run);
    #[rustfmt::skip]
    let err = fails(&f.root, &["train", "--resume", s(&a_last), "--out", s(&run), "--device", "cpu", "--steps", "100000"]);
    assert!(err.contains("holds another run") && err.contains(s(&run)), "{err}");
    assert_eq!(
        snapshot(&run),
        before,
        "a refused resume changed another run's directory"
    );
    // Into its own directory named explicitly, it continues; into a new one it branches, with the run's log so far.
    let stop = (step + 4).to_string();
    ok(
        &f.root,
        &[
            "train",
            "--resume",
            s(&a_last),
            "--out",
            s(&a),
            "--device",
            "cpu",
            "--steps",
            &stop,
        ],
    );
    let branch = f.root.join("branch");
    let stop = (step + 5).to_string();
    ok(
        &f.root,
        &[
            "train",
            "--resume",
            s(&a_last),
            "--out",
            s(&branch),
            "--device",
            "cpu",
            "--steps",
            &stop,
        ],
    );
    let (ra, rb) = (logged_steps(&a), logged_steps(&branch));
    assert_eq!(rb[..rb.len() - 1], ra[..], "the branch's log starts with the run's");
    assert_eq!(rb.last().unwrap().1, step + 5);
    assert_no_temp_files(&f.root);
}

#[test]
fn the_log_is_crash_consistent_and_resume_lengths_are_totals() {
    let f = fixture();
    let u = f.root.join("uninterrupted");
    ok(&f.root, &train_args(&f, "cpu", &u));
    let same_as_uninterrupted = |dir: &Path| {
        let (mu, md) = (metrics_lines(&u), metrics_lines(dir));
        assert_eq!(mu.len(), md.len(), "{}: {md:?}", dir.display());
        for (x, y) in mu.iter().zip(&md) {
            for key in ["epoch", "step", "partial", "train_nll", "val_nll", "lr"] {
                assert_eq!(x[key], y[key], "{}: {key}: uninterrupted {x} vs {y}", dir.display());
            }
        }
        assert_same_checkpoint(
            "resumed vs uninterrupted",
            &u.join("last.safetensors"),
            &dir.join("last.safetensors"),
        );
    };
    // Stopped at the end of epoch 1 (step 4 of 8): one record.
    let first_epoch = |name: &str| -> PathBuf {
        let r = f.root.join(name);
        ok(&f.root, &[&train_args(&f, "cpu", &r)[..], &["--steps", "4"]].concat());
        assert_eq!(logged_steps(&r), vec![(1, 4)]);
        r
    };

    // --epochs and --steps are totals: at or below where the run is, there is nothing to do: refused, nothing written.
    let r = first_epoch("torn");
    let last = r.join("last.safetensors");
    let before = snapshot(&r);
    for (flag, value, word) in [
        ("--epochs", "1", "already completed 1 epoch"),
        ("--steps", "4", "already at step 4"),
        ("--steps", "3", "already at step 4"),
    ] {
        let err = fails(
            &f.root,
            &["train", "--resume", s(&last), "--device", "cpu", flag, value],
        );
        assert!(err.contains(word), "{flag} {value}: {err}");
    }
    assert_eq!(snapshot(&r), before, "a refused resume wrote into the run");

    // A crash that left a record past the checkpoint and tore the line after it: the resume drops both (and says
    // so), and the log ends as the uninterrupted run's, which `plot` reads.
    let metrics = r.join("metrics.jsonl");
    let good = std::fs::read_to_string(&metrics).unwrap();
    let past = r#"{"epoch":2,"step":6,"partial":true,"train_nll":1.0,"val_nll":1.0}"#;
    std::fs::write(&metrics, format!("{good}{past}\n{{\"epoch\":2,\"step\":8,\"tra")).unwrap();
    let o = pixelcnn(&f.root, &["train", "--resume", s(&last), "--device", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("torn last line") && err.contains("dropped 1 record(s) past step 4"),
        "{err}"
    );
    same_as_uninterrupted(&r);
    ok(&f.root, &["plot", s(&metrics), "--out", s(&f.root.join("curve.png"))]);

    // A last line complete but for its newline is kept.
    let r = first_epoch("newline");
    let metrics = r.join("metrics.jsonl");
    let text = std::fs::read_to_string(&metrics).unwrap();
    std::fs::write(&metrics, text.trim_end()).unwrap();
    let o = pixelcnn(
        &f.root,
        &["train", "--resume", s(&r.join("last.safetensors")), "--device", "cpu"],
    );
    assert!(
        o.status.success() && stderr(&o).contains("completed its last line"),
        "{}",
        stderr(&o)
    );
    same_as_uninterrupted(&r);

    // A crash between the checkpoint and its record: the resume restores the record from the checkpoint.
    let r = first_epoch("lost");
    std::fs::write(r.join("metrics.jsonl"), "").unwrap();
    let o = pixelcnn(
        &f.root,
        &["train", "--resume", s(&r.join("last.safetensors")), "--device", "cpu"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("restored the record of epoch 1"), "{}", stderr(&o));
    same_as_uninterrupted(&r);

    // A failed save leaves no record: a directory where epoch_001.safetensors goes makes the save fail.
    let r = f.root.join("failed_save");
    std::fs::create_dir_all(r.join("epoch_001.safetensors")).unwrap();
    let err = refused(&f.root, &train_args(&f, "cpu", &r));
    assert!(
        err.contains("epoch_001.safetensors") && err.contains("directory"),
        "{err}"
    );
    let log = std::fs::read_to_string(r.join("metrics.jsonl")).unwrap_or_default();
    assert!(
        log.is_empty(),
        "the epoch was logged though its checkpoint was not saved: {log}"
    );
    assert_no_temp_files(&f.root);
}

#[test]
fn resume_finds_relative_and_non_utf8_data_paths_from_any_directory() {
    use std::os::unix::ffi::OsStrExt;
    let f = fixture();
    let elsewhere = f.root.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    // A relative --data is recorded absolute.
    #[rustfmt::skip]
    let args = ["train", "--device", "cpu", "--data", "fashion-mnist", "--val-split", "0.25", "--batch-size", "8", "--steps", "2",
        "--out", "rel", "--filters", "4", "--blocks", "1"];
    ok(&f.root, &args);
    let last = f.root.join("rel").join("last.safetensors");
    let recorded = load(&last).train.unwrap().0.data_path().unwrap();
    assert!(recorded.is_absolute(), "{}", recorded.display());
    assert_eq!(recorded.canonicalize().unwrap(), f.idx.canonicalize().unwrap());
    ok(
        &elsewhere,
        &["train", "--resume", s(&last), "--device", "cpu", "--steps", "3"],
    );

    // A data directory whose name is not UTF-8: its bytes are kept exactly, and the resume finds it.
    let weird = f.root.join(std::ffi::OsStr::from_bytes(b"fm\xffdata"));
    std::os::unix::fs::symlink(&f.idx, &weird).unwrap();
    let out = f.root.join("nonutf8");
    let mut argv = os(&["train", "--device", "cpu", "--data"]);
    argv.push(weird.clone().into_os_string());
    #[rustfmt::skip]
    argv.extend(os(&["--val-split", "0.25", "--batch-size", "8", "--steps", "2", "--out", s(&out), "--filters", "4", "--blocks", "1"]));
    let refs: Vec<&std::ffi::OsStr> = argv.iter().map(|a| a.as_os_str()).collect();
    let o = run_bounded(&f.root, &refs, &[], 120);
    assert!(o.status.success(), "{}", stderr(&o));
    let last = out.join("last.safetensors");
    let state = load(&last).train.unwrap().0;
    assert_eq!(state.data_bytes.as_deref(), Some(weird.as_os_str().as_bytes()));
    assert_eq!(state.data_path().unwrap(), weird);
    ok(
        &elsewhere,
        &["train", "--resume", s(&last), "--device", "cpu", "--steps", "3"],
    );
    assert_eq!(load(&last).train.unwrap().0.data_path().unwrap(), weird);
}

/// Copies the checkpoint `src` to `dst` with its metadata edited by `edit`.
fn rewrite_metadata(src: &Path, dst: &Path, edit: impl Fn(&mut std::collections::HashMap<String, String>)) {
    let bytes = std::fs::read(src).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut meta = meta.metadata().clone().unwrap();
    edit(&mut meta);
    let views: Vec<(String, safetensors::tensor::TensorView)> = st.tensors();
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::write(dst, safetensors::serialize(views, &Some(meta)).unwrap()).unwrap();
}

#[test]
fn checkpoint_metadata_and_training_state_are_checked_not_trusted() {
    let f = fixture();
    let idx = s(&f.idx);
    // A conditional model whose metadata says `classes: "0"`: refused, not evaluated without its class biases.
    let cond = tiny_model(&f, "cond", &["--filters", "4", "--blocks", "1", "--conditional"]);
    let zero = f.root.join("zero").join("last.safetensors");
    rewrite_metadata(&cond, &zero, |m| {
        m.insert("classes".into(), "0".into());
    });
    #[rustfmt::skip]
    refused_naming(&f.root, &["eval", "--checkpoint", s(&zero), "--data", idx, "--device", "cpu"], &zero, "classes");
    ok(
        &f.root,
        &["eval", "--checkpoint", s(&cond), "--data", idx, "--device", "cpu"],
    );

    // Training states out of range or inconsistent with the data: refused, nothing written.
    let ck = tiny_checkpoint(&f); // step 2 of 4 per epoch (30 images, batch 8)
    let edit_state = |name: &str, change: &dyn Fn(&mut serde_json::Value)| -> PathBuf {
        let dst = f.root.join(name).join("last.safetensors");
        rewrite_metadata(&ck, &dst, |m| {
            let mut ts: serde_json::Value = serde_json::from_str(&m["train_state"]).unwrap();
            change(&mut ts);
            m.insert("train_state".into(), ts.to_string());
        });
        dst
    };
    let cases: Vec<(PathBuf, &str)> = vec![
        (edit_state("beta1", &|ts| ts["adam"]["beta1"] = 1.5.into()), "beta1"),
        (edit_state("beta2", &|ts| ts["adam"]["beta2"] = (-0.1).into()), "beta2"),
        (
            edit_state("past_epoch", &|ts| {
                ts["batch_in_epoch"] = 9.into();
                ts["step"] = 9.into();
                ts["epoch_images"] = 72.into();
            }),
            "4 batches per epoch",
        ),
        (edit_state("step", &|ts| ts["step"] = 7.into()), "step 7"),
        (
            edit_state("images", &|ts| ts["epoch_images"] = 100.into()),
            "epoch_images",
        ),
        (edit_state("epochs", &|ts| ts["epoch"] = 60.into()), "epoch 60"),
    ];
    for (path, word) in &cases {
        let before = snapshot(path.parent().unwrap());
        #[rustfmt::skip]
        refused_naming(&f.root, &["train", "--resume", s(path), "--data", idx, "--device", "cpu", "--epochs", "3"], path, word);
        assert_eq!(
            snapshot(path.parent().unwrap()),
            before,
            "a refused resume wrote into the run"
        );
    }
}

#[test]
fn image_outputs_take_their_format_from_the_extension() {
    use image::ImageFormat;
    let f = fixture();
    let ck = tiny_checkpoint(&f);
    for (ext, format) in [
        ("png", ImageFormat::Png),
        ("jpg", ImageFormat::Jpeg),
        ("jpeg", ImageFormat::Jpeg),
        ("JPG", ImageFormat::Jpeg),
        ("bmp", ImageFormat::Bmp),
        ("gif", ImageFormat::Gif),
    ] {
        let out = f.root.join(format!("grid.{ext}"));
        #[rustfmt::skip]
        ok(&f.root, &["sample", "--checkpoint", s(&ck), "--count", "2", "--device", "cpu", "--out", s(&out)]);
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(image::guess_format(&bytes).unwrap(), format, "{}", out.display());
        assert!(
            image::load_from_memory(&bytes).is_ok(),
            "{} does not decode",
            out.display()
        );
    }
    let out = f.root.join("completions.jpeg");
    #[rustfmt::skip]
    ok(&f.root, &["complete", "--checkpoint", s(&ck), "--data", s(&f.idx), "--count", "1", "--samples", "1", "--device", "cpu", "--out", s(&out)]);
    assert_eq!(
        image::guess_format(&std::fs::read(&out).unwrap()).unwrap(),
        ImageFormat::Jpeg
    );
    let out = f.root.join("curve.bmp");
    ok(
        &f.root,
        &["plot", s(&ck.with_file_name("metrics.jsonl")), "--out", s(&out)],
    );
    assert_eq!(
        image::guess_format(&std::fs::read(&out).unwrap()).unwrap(),
        ImageFormat::Bmp
    );
    assert_no_temp_files(&f.root);
}

#[test]
fn outputs_never_replace_special_files_and_write_through_links() {
    use std::os::unix::fs::FileTypeExt;
    let f = fixture();
    let ck = tiny_checkpoint(&f);
    let metrics = ck.with_file_name("metrics.jsonl");
    let d = f.root.join("special");
    std::fs::create_dir_all(&d).unwrap();
    let fifo = d.join("fifo.png");
    mkfifo(&fifo);
    let sock = d.join("socket.png");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let null_link = d.join("null.png");
    std::os::unix::fs::symlink("/dev/null", &null_link).unwrap();
    let stdout_link = d.join("stdout.png");
    std::os::unix::fs::symlink("/proc/self/fd/1", &stdout_link).unwrap();
    let mut specials = vec![
        (fifo, "FIFO"),
        (sock, "socket"),
        (null_link, "character device"),
        // The command's stdout is a pipe here.
        (stdout_link, "FIFO"),
    ];
    // A character device node of our own (a copy of /dev/null's numbers), where this user may make one (root).
    let dev = d.join("device.png");
    let c = std::ffi::CString::new(s(&dev)).unwrap();
    if unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) } == 0 {
        specials.push((dev, "character device"));
    } else {
        eprintln!("(no device node of our own: mknod is not permitted here)");
    }
    let kind = |p: &Path| {
        let m = std::fs::symlink_metadata(p).unwrap();
        (m.file_type(), std::fs::read_link(p).ok())
    };
    for (p, word) in &specials {
        let before = kind(p);
        let out = s(p);
        #[rustfmt::skip]
        let commands: Vec<Vec<&str>> = vec![
            vec!["sample", "--checkpoint", s(&ck), "--count", "1", "--device", "cpu", "--out", out],
            vec!["complete", "--checkpoint", s(&ck), "--data", s(&f.idx), "--count", "1", "--samples", "1", "--device", "cpu", "--out", out],
            vec!["plot", s(&metrics), "--out", out],
            vec!["export", s(&ck), "--out", out],
        ];
        for args in &commands {
            refused_naming(&f.root, args, p, word);
            assert_eq!(kind(p), before, "{} was replaced", p.display());
        }
    }
    assert!(std::fs::symlink_metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());

    // A link to a regular file is written through: the link stays, its target gets the image.
    let target = d.join("target.png");
    std::fs::write(&target, b"old").unwrap();
    let link = d.join("link.png");
    std::os::unix::fs::symlink("target.png", &link).unwrap();
    ok(
        &f.root,
        &[
            "sample",
            "--checkpoint",
            s(&ck),
            "--count",
            "1",
            "--device",
            "cpu",
            "--out",
            s(&link),
        ],
    );
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(
        image::guess_format(&std::fs::read(&target).unwrap()).unwrap(),
        image::ImageFormat::Png
    );

    // train: a run directory whose log is a FIFO is refused before any work, without waiting on it.
    let run = f.root.join("fifo_run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::copy(&ck, run.join("last.safetensors")).unwrap();
    mkfifo(&run.join("metrics.jsonl"));
    let resume = run.join("last.safetensors");
    #[rustfmt::skip]
    refused_naming(&f.root, &["train", "--resume", s(&resume), "--data", s(&f.idx), "--device", "cpu"], &run.join("metrics.jsonl"), "FIFO");
    // download: a FIFO where a file goes is refused before anything is fetched.
    let dl = f.root.join("download");
    std::fs::create_dir_all(&dl).unwrap();
    let gz = dl.join("train-images-idx3-ubyte.gz");
    mkfifo(&gz);
    #[rustfmt::skip]
    refused_naming(&f.root, &["download", "--dir", s(&dl), "--base-url", "http://127.0.0.1:9/"], &gz, "FIFO");
    assert!(std::fs::symlink_metadata(&gz).unwrap().file_type().is_fifo());
    assert_no_temp_files(&f.root);
}

#[test]
fn inputs_that_are_not_regular_files_are_refused_without_hanging() {
    let f = fixture();
    let idx = s(&f.idx);
    let fifo = f.root.join("input.fifo");
    mkfifo(&fifo);
    let fifo_idx = f.root.join("fifo_idx");
    std::fs::create_dir_all(&fifo_idx).unwrap();
    for e in std::fs::read_dir(&f.idx).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), fifo_idx.join(e.file_name())).unwrap();
    }
    let images = fifo_idx.join("t10k-images-idx3-ubyte");
    std::fs::remove_file(&images).unwrap();
    mkfifo(&images);
    let png = f.root.join("out.png");
    let zero = Path::new("/dev/zero");
    let (fi, r) = (s(&fifo), s(&f.root));
    let (exported, r1) = (f.root.join("m.safetensors"), f.root.join("r1"));
    #[rustfmt::skip]
    let cases: Vec<(Vec<&str>, &Path, &str)> = vec![
        (vec!["eval", "--checkpoint", fi, "--data", idx, "--device", "cpu"], &fifo, "FIFO"),
        (vec!["sample", "--checkpoint", fi, "--device", "cpu", "--out", s(&png)], &fifo, "FIFO"),
        (vec!["export", fi, "--out", s(&exported)], &fifo, "FIFO"),
        (vec!["train", "--resume", fi, "--data", idx, "--device", "cpu"], &fifo, "FIFO"),
        (vec!["train", "--data", fi, "--device", "cpu", "--out", s(&r1)], &fifo, "FIFO"),
        (vec!["data", "--data", fi], &fifo, "FIFO"),
        (vec!["data", "--data", s(&fifo_idx)], &images, "FIFO"),
        (vec!["plot", fi, "--out", s(&png)], &fifo, "FIFO"),
        (vec!["eval", "--checkpoint", "/dev/zero", "--data", idx, "--device", "cpu"], zero, "character device"),
        (vec!["plot", "/dev/zero", "--out", s(&png)], zero, "character device"),
        (vec!["sample", "--checkpoint", r, "--device", "cpu", "--out", s(&png)], &f.root, "directory"),
        (vec!["train", "--resume", r, "--data", idx, "--device", "cpu"], &f.root, "directory"),
    ];
    for (args, file, word) in &cases {
        refused_naming(&f.root, args, file, word);
    }
    assert!(!png.exists(), "a refused command wrote output");
}

#[test]
fn the_longest_legal_file_names_and_paths_can_be_written() {
    let f = fixture();
    let ck = tiny_checkpoint(&f);
    // A 255-byte file name, the most a name may have.
    let name = format!("{}.png", "n".repeat(251));
    assert_eq!(name.len(), 255);
    let out = f.root.join(&name);
    ok(
        &f.root,
        &[
            "sample",
            "--checkpoint",
            s(&ck),
            "--count",
            "1",
            "--device",
            "cpu",
            "--out",
            s(&out),
        ],
    );
    assert!(image::open(&out).is_ok());
    // A 4090-byte path (the system's limit is 4095): directories of 200-byte names, then a file name.
    let mut dir = f.root.clone();
    while s(&dir).len() + 1 + 200 + 1 + 20 <= 4090 {
        dir.push("d".repeat(200));
    }
    let rest = 4090 - s(&dir).len() - 1;
    let long = dir.join(format!("{}.png", "p".repeat(rest - 4)));
    assert_eq!(s(&long).len(), 4090);
    std::fs::create_dir_all(&dir).unwrap();
    ok(
        &f.root,
        &[
            "sample",
            "--checkpoint",
            s(&ck),
            "--count",
            "1",
            "--device",
            "cpu",
            "--out",
            s(&long),
        ],
    );
    assert!(image::open(&long).is_ok());
    let export = dir.join(format!("{}.safetensors", "e".repeat(rest - 12)));
    assert_eq!(s(&export).len(), 4090);
    ok(&f.root, &["export", s(&ck), "--out", s(&export)]);
    assert_no_temp_files(&f.root);
}

#[test]
fn an_adapter_name_that_matches_nothing_is_an_error_not_a_panic() {
    let f = fixture();
    let ck = tiny_checkpoint(&f);
    let png = f.root.join("x.png");
    let run = f.root.join("run");
    #[rustfmt::skip]
    let commands: Vec<Vec<&str>> = vec![
        vec!["devices"],
        vec!["devices", "--json"],
        vec!["sample", "--checkpoint", s(&ck), "--count", "1", "--out", s(&png)],
        vec!["eval", "--checkpoint", s(&ck), "--data", s(&f.idx), "--limit", "2"],
        vec!["train", "--data", s(&f.idx), "--val-split", "0.25", "--batch-size", "8", "--steps", "1", "--out", s(&run),
             "--filters", "4", "--blocks", "1"],
        vec!["bench", "sample", "--count", "1"],
    ];
    let adapters = if have_gpu() {
        json(&ok(&f.root, &["devices", "--json"]))
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_string())
            .collect()
    } else {
        Vec::new()
    };
    for args in &commands {
        let argv = os(args);
        let refs: Vec<&std::ffi::OsStr> = argv.iter().map(|a| a.as_os_str()).collect();
        let o = run_bounded(&f.root, &refs, &[("WGPU_ADAPTER_NAME", Some("no-such-adapter"))], 60);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}:\n{err}");
        assert!(!err.contains("panicked"), "{args:?}:\n{err}");
        assert!(
            err.contains("\"no-such-adapter\" matches no adapter"),
            "{args:?}:\n{err}"
        );
        for name in &adapters {
            assert!(
                err.contains(name.as_str()),
                "{args:?}: the message should list {name}:\n{err}"
            );
        }
    }
    assert!(!png.exists() && !run.join("last.safetensors").exists());
    // A substring of a real adapter's name, in another case, selects it.
    if let Some(name) = adapters.first() {
        let part: String = name.chars().take(6).collect::<String>().to_uppercase();
        let o = run_bounded(
            &f.root,
            &[std::ffi::OsStr::new("devices")],
            &[("WGPU_ADAPTER_NAME", Some(&part))],
            60,
        );
        assert!(
            o.status.success() && stdout(&o).contains(&format!("* {name}")),
            "{}",
            stdout(&o)
        );
    }
}

#[test]
fn gpu_commands_print_no_error_lines_without_xdg_runtime_dir() {
    if !have_gpu() {
        return;
    }
    let f = fixture();
    let ck = tiny_checkpoint(&f);
    let png = f.root.join("x.png");
    for args in [
        vec!["devices"],
        vec!["sample", "--checkpoint", s(&ck), "--count", "2", "--out", s(&png)],
    ] {
        let argv = os(&args);
        let refs: Vec<&std::ffi::OsStr> = argv.iter().map(|a| a.as_os_str()).collect();
        let o = run_bounded(&f.root, &refs, &[("XDG_RUNTIME_DIR", None)], 120);
        let err = stderr(&o);
        assert!(o.status.success(), "{args:?}:\n{err}");
        let bad: Vec<&str> = err.lines().filter(|l| l.trim_start().starts_with("error")).collect();
        assert!(
            bad.is_empty(),
            "{args:?} printed error lines without XDG_RUNTIME_DIR: {bad:?}"
        );
    }
}

/// SwiftShader, a second Vulkan driver on the CPU (subgroups of 4), ships with Chromium (`chromium-common`).
const SWIFTSHADER_ICD: &str = "/usr/lib/chromium/vk_swiftshader_icd.json";

#[test]
fn devices_lists_swiftshader_when_it_is_installed() {
    if !Path::new(SWIFTSHADER_ICD).is_file() {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "CI=true but SwiftShader is not installed (.ci/run installs chromium-common)"
        );
        eprintln!("SKIPPING: SwiftShader is not installed ({SWIFTSHADER_ICD})");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let devices = |json: bool, icd: Option<&str>| {
        let args: &[&std::ffi::OsStr] = if json {
            &[std::ffi::OsStr::new("devices"), std::ffi::OsStr::new("--json")]
        } else {
            &[std::ffi::OsStr::new("devices")]
        };
        let o = run_bounded(tmp.path(), args, &[("VK_ICD_FILENAMES", icd)], 60);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    // Named as the Vulkan driver: it is the adapter, with the kernel versions for subgroups of 4.
    let listed = json(&devices(true, Some(SWIFTSHADER_ICD)));
    let ss = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"].as_str().unwrap().contains("SwiftShader") && a["backend"] == "Vulkan")
        .unwrap_or_else(|| panic!("no SwiftShader adapter in {listed}"));
    assert_eq!(ss["selected"], true, "{listed}");
    // Otherwise `devices` still says it is there and how to use it.
    let text = devices(false, None);
    assert!(text.contains("SwiftShader"), "{text}");
}

// ---------------------------------------------------------------------------------------------------
// Inspecting the model: sample --animate, receptive-field, score, complete --image, epoch samples

/// Decodes every frame of a GIF file (composited, as a viewer shows them).
fn gif_frames(p: &Path) -> Vec<image::Frame> {
    use image::AnimationDecoder;
    let file = BufReader::new(std::fs::File::open(p).unwrap());
    image::codecs::gif::GifDecoder::new(file)
        .unwrap_or_else(|e| panic!("{} is not a GIF: {e}", p.display()))
        .into_frames()
        .collect_frames()
        .unwrap_or_else(|e| panic!("{}: a frame does not decode: {e}", p.display()))
}

/// A frame as grey levels, checking that it is grey and opaque.
fn grey_frame(f: &image::Frame) -> image::GrayImage {
    let rgba = f.buffer();
    assert!(
        rgba.pixels()
            .all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2] && p.0[3] == 255),
        "the frame should be opaque grey"
    );
    image::DynamicImage::ImageRgba8(rgba.clone()).to_luma8()
}

#[test]
fn sample_animate_writes_a_gif_whose_last_frame_is_the_png_grid() {
    let f = fixture();
    let plain = tiny_checkpoint(&f);
    let gated = tiny_model(
        &f,
        "gc",
        &["--arch", "gated", "--filters", "4", "--layers", "2", "--conditional"],
    );
    let mut devices = vec!["cpu"];
    if have_gpu() {
        devices.push("gpu");
    }
    // (checkpoint, extra flags, expected frames)
    let cases: Vec<(Option<&Path>, Vec<&str>, usize)> = vec![
        (Some(&plain), vec!["--count", "5", "--frames", "100"], 9),
        (Some(&gated), vec!["--class", "all", "--count", "2"], 29),
        (None, vec!["--count", "4", "--scale", "2", "--frames", "392"], 3),
    ];
    for device in &devices {
        for (i, (ck, extra, n_frames)) in cases.iter().enumerate() {
            let png = f.root.join(format!("anim_{device}_{i}.png"));
            let gif = f.root.join(format!("anim_{device}_{i}.gif"));
            let mut args = vec!["sample", "--seed", "3", "--device", device, "--json"];
            args.extend(["--out", s(&png), "--animate", s(&gif)]);
            if let Some(ck) = ck {
                args.extend(["--checkpoint", s(ck)]);
            }
            args.extend(extra.iter().copied());
            let v = json(&ok(&f.root, &args));
            assert_eq!(v["animation"].as_str(), Some(s(&gif)), "{v}");
            let frames = gif_frames(&gif);
            assert_eq!(frames.len(), *n_frames, "{}", args.join(" "));
            let grid = decode_png(&png);
            let last = grey_frame(frames.last().unwrap());
            assert_eq!(last.dimensions(), grid.dimensions());
            assert!(
                last == grid,
                "{}: the last frame differs from the PNG grid",
                args.join(" ")
            );
            let (n, d) = frames.last().unwrap().delay().numer_denom_ms();
            assert!(n / d >= 2000, "the finished grid is held ({n}/{d} ms)");
            // Frame by frame the undrawn (grey) pixels give way to the drawn ones: fewer and fewer pixels differ
            // from the finished grid, and each one that does is undrawn grey.
            let mut last_diff = usize::MAX;
            for (k, fr) in frames.iter().enumerate() {
                let g = grey_frame(fr);
                let diff: Vec<u8> = g
                    .pixels()
                    .zip(grid.pixels())
                    .filter(|(a, b)| a != b)
                    .map(|(a, _)| a.0[0])
                    .collect();
                assert!(
                    diff.iter().all(|&v| v == 128),
                    "frame {k}: a drawn pixel differs from the grid"
                );
                assert!(
                    k + 1 == frames.len() || diff.len() < last_diff,
                    "frame {k} draws nothing new"
                );
                last_diff = diff.len();
            }
            assert_eq!(last_diff, 0);
        }
    }
    let gif_size = std::fs::metadata(f.root.join("anim_cpu_0.gif")).unwrap().len();
    eprintln!("a 5-image animation of 9 frames: {gif_size} bytes");
    // A file that is not .gif, and --frames without --animate, are refused before any sampling.
    let png = f.root.join("x.png");
    #[rustfmt::skip]
    let err = fails(&f.root, &["sample", "--checkpoint", s(&plain), "--out", s(&png), "--animate", s(&f.root.join("x.png2"))]);
    assert!(err.contains(".gif"), "{err}");
    let err = fails(
        &f.root,
        &["sample", "--checkpoint", s(&plain), "--out", s(&png), "--frames", "3"],
    );
    assert!(err.contains("--animate"), "{err}");
    assert!(!png.exists());
}

fn mask_rows(v: &serde_json::Value) -> Vec<Vec<u8>> {
    v.as_array()
        .expect("28 rows")
        .iter()
        .map(|r| {
            r.as_array()
                .expect("28 columns")
                .iter()
                .map(|x| x.as_u64().unwrap() as u8)
                .collect()
        })
        .collect()
}

#[test]
fn receptive_field_shows_the_blind_spot_of_the_plain_network_only() {
    let f = fixture();
    let rf = |args: &[&str]| json(&ok(&f.root, &[&["receptive-field", "--json"][..], args].concat()));
    let trained = tiny_model(&f, "p3", &["--filters", "4", "--blocks", "3"]);
    let plain: [&[&str]; 3] = [
        &["--arch", "pixelcnn", "--filters", "4", "--blocks", "4"],
        &["--filters", "6", "--blocks", "3", "--conditional", "--seed", "4"],
        &["--checkpoint", s(&trained)],
    ];
    let gated: [&[&str]; 2] = [
        &["--arch", "gated", "--filters", "4", "--layers", "3"],
        &["--layers", "3", "--filters", "2", "--conditional"],
    ];
    for (model, is_plain) in plain.iter().map(|m| (m, true)).chain(gated.iter().map(|m| (m, false))) {
        for (r, c) in [(12usize, 10usize), (20, 3), (5, 20)] {
            let pixel = format!("{r},{c}");
            let v = rf(&[&model[..], &["--pixel", &pixel]].concat());
            let what = format!("{model:?} at {pixel}");
            let mask = mask_rows(&v["mask"]);
            assert_eq!(mask.len(), 28);
            assert_eq!(v["leaks"], 0, "{what}");
            assert_eq!(v["causal_pixels"], r * 28 + c, "{what}");
            let mut count = 0;
            for (y, row) in mask.iter().enumerate() {
                for (x, &m) in row.iter().enumerate() {
                    assert!(
                        m == 0 || y * 28 + x < r * 28 + c,
                        "{what}: depends on a later pixel ({y}, {x})"
                    );
                    count += m as usize;
                }
            }
            assert_eq!(v["depends_on"], count, "{what}");
            let blind = mask_rows(&v["blind_spot"]);
            if is_plain {
                assert!(count > 0 && mask[r - 1][c + 3] == 1, "{what}");
                assert_eq!(mask[r - 1][c + 5], 0, "{what}: sees x[r−1, c+5]");
                assert_eq!(blind[r - 1][c + 5], 1, "{what}: x[r−1, c+5] is not marked blind");
            } else {
                assert_eq!(mask[r - 1][c + 5], 1, "{what}: does not see x[r−1, c+5]");
                assert_eq!(v["blind_spot_pixels"], 0, "{what}");
            }
        }
    }
    // A gated network deep enough to reach every earlier pixel: the mask is the whole causal region.
    let v = rf(&["--arch", "gated", "--filters", "2", "--layers", "13", "--pixel", "2,14"]);
    let mask = mask_rows(&v["mask"]);
    for (y, row) in mask.iter().enumerate() {
        for (x, &m) in row.iter().enumerate() {
            assert_eq!(m == 1, y * 28 + x < 2 * 28 + 14, "({y}, {x})");
        }
    }
    // The first pixel depends on nothing: an empty mask, not an error. The shipped model, as JSON.
    let v = rf(&["--pixel", "0,0"]);
    assert_eq!(v["depends_on"], 0, "{v}");
    assert!(mask_rows(&v["mask"]).iter().flatten().all(|&m| m == 0));
    assert_eq!(v["model"], "gated F=32 L=8 dilated 1–16 conditional", "{v}");
    // The picture, and the text map.
    let png = f.root.join("field.png");
    ok(&f.root, &["receptive-field", "--pixel", "14,14", "--out", s(&png)]);
    let img = decode_png(&png);
    assert!(img.width() >= 280 && img.height() >= 280, "{:?}", img.dimensions());
    let text = ok(
        &f.root,
        &[
            "receptive-field",
            "--pixel",
            "3,3",
            "--arch",
            "gated",
            "--layers",
            "2",
            "--filters",
            "2",
        ],
    );
    assert!(
        text.contains('X') && text.contains('#') && text.contains("depends on"),
        "{text}"
    );
    // Bad pixels and conflicting flags are refused.
    for (args, word) in [
        (vec!["--pixel", "30,3"], "outside the model's 28×28 image"),
        (vec!["--pixel", "3,28"], "outside"),
        (vec!["--pixel", "3"], "ROW,COLUMN"),
        (
            vec!["--pixel", "1,1", "--checkpoint", s(&trained), "--arch", "gated"],
            "cannot be used with",
        ),
    ] {
        let err = refused(&f.root, &[&["receptive-field"][..], &args].concat());
        assert!(err.contains(word), "{args:?}: {err}");
    }
}

/// The fixture's first `n` test images (raw grey levels) saved as 28×28 grey PNGs.
fn test_images_as_png(f: &Fixture, n: usize) -> Vec<PathBuf> {
    let raw = raw_images(TEST_IMAGES, 3);
    (0..n)
        .map(|i| {
            let p = f.root.join(format!("test_{i}.png"));
            image::GrayImage::from_raw(28, 28, raw[i * PIXELS..][..PIXELS].to_vec())
                .unwrap()
                .save(&p)
                .unwrap();
            p
        })
        .collect()
}

#[test]
fn score_of_test_images_saved_as_png_equals_evals_nll() {
    let f = fixture();
    let plain = tiny_checkpoint(&f);
    let gated = tiny_model(
        &f,
        "gc",
        &["--arch", "gated", "--filters", "4", "--layers", "2", "--conditional"],
    );
    let pngs = test_images_as_png(&f, 5);
    let mut devices = vec!["cpu"];
    if have_gpu() {
        devices.push("gpu");
    }
    for ck in [&plain, &gated] {
        for device in &devices {
            #[rustfmt::skip]
            let e = json(&ok(&f.root, &["eval", "--checkpoint", s(ck), "--data", s(&f.idx), "--limit", "5", "--json", "--device", device]));
            let heat = f.root.join(format!("heat_{device}.png"));
            let mut args = vec![
                "score",
                "--checkpoint",
                s(ck),
                "--json",
                "--device",
                device,
                "--heatmap",
                s(&heat),
            ];
            args.extend(pngs.iter().map(|p| s(p)));
            let v = json(&ok(&f.root, &args));
            let images = v["images"].as_array().unwrap();
            assert_eq!(images.len(), 5);
            for (i, img) in images.iter().enumerate() {
                let got = img["nll_nats"].as_f64().unwrap();
                let want = e["nll_per_image"][i].as_f64().unwrap();
                assert!(
                    (got - want).abs() <= 1e-5 * want,
                    "{} on {device}, image {i}: score {got} vs eval {want}",
                    ck.display()
                );
                assert!((img["bits_per_dim"].as_f64().unwrap() - got / (784.0 * 2f64.ln())).abs() < 1e-12);
                assert_eq!(img["file"].as_str(), Some(s(&pngs[i])));
                if v["conditional"] == true {
                    let p: Vec<f64> = img["class_probabilities"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_f64().unwrap())
                        .collect();
                    assert_eq!(p.len(), 10);
                    assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9);
                    assert!(img["most_likely_class"].is_string(), "{img}");
                } else {
                    assert!(img.get("class_probabilities").is_none(), "{img}");
                }
            }
            let h = decode_png(&heat);
            assert!(h.height() > 5 * 28 && h.width() > 2 * 28, "{:?}", h.dimensions());
        }
    }
    // The shipped model scores them too (text output names each file), on the GPU where there is one.
    let device = devices.last().expect("the CPU at least");
    let text = ok(&f.root, &["score", "--device", device, s(&pngs[0]), s(&pngs[1])]);
    assert!(
        text.contains("test_0.png") && text.contains("bits/dim") && text.contains("p(class | image)"),
        "{text}"
    );
}

/// A 60×40 colour picture of a dark blue shape on white (a user's drawing): only `--invert` makes it light on
/// black like the data.
fn drawing(path: &Path) {
    let img = image::RgbImage::from_fn(60, 40, |x, y| {
        if (15..45).contains(&x) && (5..35).contains(&y) && !((27..33).contains(&x) && y > 18) {
            image::Rgb([20, 30, 120])
        } else {
            image::Rgb([250, 250, 245])
        }
    });
    img.save(path).unwrap();
}

#[test]
fn complete_and_score_take_the_users_own_images() {
    let f = fixture();
    let plain = tiny_checkpoint(&f);
    let gated = tiny_model(
        &f,
        "gc",
        &["--arch", "gated", "--filters", "4", "--layers", "2", "--conditional"],
    );
    let jpg = f.root.join("drawing.jpg");
    let bmp = f.root.join("drawing.bmp");
    drawing(&jpg);
    drawing(&bmp);
    let device = if have_gpu() { "gpu" } else { "cpu" };
    // Inverted, the drawing is a light shape on black; not inverted, mostly light background.
    #[rustfmt::skip]
    let score = |extra: &[&str]| json(&ok(&f.root, &[&["score", s(&bmp), "--json", "--device", device, "--resize"][..], extra].concat()));
    let inv = score(&["--invert"]);
    let raw = score(&[]);
    // An image of another size than the model's is refused unless --resize asks for the resize.
    let err = fails(&f.root, &["score", s(&bmp), "--device", device]);
    assert!(
        err.contains("drawing.bmp") && err.contains("60×40") && err.contains("--resize"),
        "{err}"
    );
    let ones = |v: &serde_json::Value| v["images"][0]["ones"].as_u64().unwrap();
    // The shape covers about 170 of the 784 pixels, the light background about 350 (the padding is black).
    assert!((100..300).contains(&ones(&inv)), "{inv}");
    assert!((250..500).contains(&ones(&raw)), "{raw}");
    assert_eq!(inv["images"][0]["width"], 60);

    for (ck, conditional) in [(&plain, false), (&gated, true)] {
        let out = f.root.join("done.png");
        #[rustfmt::skip]
        let args = ["complete", "--checkpoint", s(ck), "--image", s(&jpg), "--image", s(&bmp), "--invert", "--resize",
            "--rows", "10", "--samples", "2", "--out", s(&out), "--device", device, "--json"];
        let v = json(&ok(&f.root, &args));
        assert_eq!(v["count"], 2, "{v}");
        let imgs = v["images"].as_array().unwrap();
        assert_eq!(imgs.len(), 2);
        if conditional {
            assert!(imgs.iter().all(|i| i["class"].is_string()), "{v}");
            let p = imgs[0]["class_probability_given_kept_rows"].as_f64().unwrap();
            assert!((0.0999..=1.0).contains(&p), "{v}");
            let v = json(&ok(&f.root, &[&args[..], &["--class", "sneaker"]].concat()));
            assert!(
                v["images"].as_array().unwrap().iter().all(|i| i["class"] == "sneaker"),
                "{v}"
            );
        } else {
            let err = fails(&f.root, &[&args[..], &["--class", "sneaker"]].concat());
            assert!(err.contains("class-conditional"), "{err}");
        }
        // 2 rows of original | occluded | 2 completions, the kept rows unchanged.
        let img = decode_png(&out);
        let (scale, gap) = (grid::DEFAULT_SCALE, grid::DEFAULT_GAP);
        let cell = 28 * scale + gap;
        assert_eq!(img.dimensions(), (4 * cell + gap, 2 * cell + gap));
        for r in 0..2 {
            for c in 2..4 {
                for y in 0..10 * scale {
                    for x in 0..28 * scale {
                        let orig = img.get_pixel(gap + x, gap + r * cell + y);
                        assert_eq!(
                            orig,
                            img.get_pixel(gap + c * cell + x, gap + r * cell + y),
                            "kept pixel changed"
                        );
                    }
                }
            }
        }
    }
}

/// A PNG file of 0×0 pixels (a valid signature and header, no pixels), written by hand: encoders refuse to make
/// one.
fn empty_png() -> Vec<u8> {
    let chunk = |kind: &[u8], data: &[u8]| -> Vec<u8> {
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        c.extend_from_slice(kind);
        c.extend_from_slice(data);
        c.extend_from_slice(&crc.sum().to_be_bytes());
        c
    };
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &[0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0]));
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&[]).unwrap();
    png.extend(chunk(b"IDAT", &z.finish().unwrap()));
    png.extend(chunk(b"IEND", &[]));
    png
}

#[test]
fn bad_image_files_are_clear_errors_naming_the_file() {
    let f = fixture();
    let text = f.root.join("notes.png");
    std::fs::write(&text, "these are notes, not a picture\n").unwrap();
    let empty = f.root.join("empty.png");
    std::fs::write(&empty, empty_png()).unwrap();
    let zero = f.root.join("zero.png");
    std::fs::write(&zero, b"").unwrap();
    let truncated = f.root.join("truncated.png");
    let good = f.root.join("good.png");
    image::GrayImage::from_pixel(28, 28, image::Luma([200]))
        .save(&good)
        .unwrap();
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let missing = f.root.join("no").join("such.png");
    let dir = f.root.join("a_directory.png");
    std::fs::create_dir_all(&dir).unwrap();
    let out = f.root.join("out.png");
    // (file, a word the message must contain)
    let cases = [
        (&text, "not an image"),
        (&empty, "empty.png"),
        (&zero, "empty"),
        (&truncated, "truncated.png"),
        (&missing, "cannot open"),
        (&dir, "is a directory"),
    ];
    for (file, word) in cases {
        for cmd in [
            vec!["score", s(&good), s(file)],
            vec!["score", s(file), "--heatmap", s(&out)],
            vec!["complete", "--image", s(file), "--out", s(&out)],
        ] {
            let err = fails(&f.root, &cmd);
            eprintln!("    {}", err.trim());
            assert!(
                err.contains(s(file)),
                "{cmd:?}: the message should name the file:\n{err}"
            );
            assert!(err.contains(word), "{cmd:?}: the message should say {word:?}:\n{err}");
        }
    }
    assert!(!out.exists(), "a refused command wrote output");
    // A FIFO or a device is refused as an input without waiting on it, and as an output without writing into it.
    let fifo = f.root.join("pipe.png");
    mkfifo(&fifo);
    let gif_fifo = f.root.join("pipe.gif");
    mkfifo(&gif_fifo);
    let zero = Path::new("/dev/zero");
    #[rustfmt::skip]
    let specials: Vec<(Vec<&str>, &Path, &str)> = vec![
        (vec!["score", s(&fifo)], &fifo, "FIFO"),
        (vec!["score", "/dev/zero"], zero, "character device"),
        (vec!["complete", "--image", s(&fifo), "--out", s(&out)], &fifo, "FIFO"),
        (vec!["score", s(&good), "--heatmap", s(&fifo)], &fifo, "FIFO"),
        (vec!["receptive-field", "--pixel", "3,3", "--out", s(&fifo)], &fifo, "FIFO"),
        (vec!["sample", "--count", "1", "--out", s(&out), "--animate", s(&gif_fifo)], &gif_fifo, "FIFO"),
    ];
    for (args, file, word) in &specials {
        refused_naming(&f.root, args, file, word);
    }
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(!out.exists(), "a refused command wrote output");
    // A pixel outside the image.
    let err = refused(&f.root, &["receptive-field", "--pixel", "30,3"]);
    assert!(err.contains("30,3") && err.contains("outside"), "{err}");
    // The output may not overwrite an input image.
    let err = fails(&f.root, &["score", s(&good), "--heatmap", s(&good)]);
    assert!(err.contains("destroy"), "{err}");
}

#[test]
fn train_writes_a_sample_grid_at_the_end_of_every_epoch() {
    let f = fixture();
    let mut devices = vec!["cpu"];
    if have_gpu() {
        devices.push("gpu");
    }
    for device in devices {
        // Resumed mid-epoch or not, the run ends with the same grids (the same parameters, the same seed).
        let (a, b) = train_and_resume(&f, device, &format!("epochs_{device}"));
        for dir in [&a, &b] {
            for e in 1..=2 {
                let p = dir.join(format!("samples_epoch_{e:03}.png"));
                let img = decode_png(&p);
                let dummy = vec![0u8; PIXELS];
                let expected = grid::render_grid(
                    &[&dummy[..]; 16],
                    pixelcnn::model::ImageShape::DEFAULT,
                    4,
                    grid::DEFAULT_SCALE,
                    grid::DEFAULT_GAP,
                );
                assert_eq!(
                    img.dimensions(),
                    expected.dimensions(),
                    "{}: 16 images, 4 × 4",
                    p.display()
                );
            }
            assert!(!dir.join("samples_epoch_003.png").exists());
        }
        let grid = |d: &Path| std::fs::read(d.join("samples_epoch_002.png")).unwrap();
        assert!(grid(&a) == grid(&b), "{device}: the resumed run's last grid differs");
        // --epoch-samples 4: a 2 × 2 grid; 0: none.
        for (n, side) in [("4", Some(2usize)), ("0", None)] {
            let out = f.root.join(format!("es_{device}_{n}"));
            let mut args = train_args(&f, device, &out);
            let e = args.iter().position(|a| *a == "--epochs").unwrap();
            args[e + 1] = "1";
            ok(&f.root, &[&args[..], &["--epoch-samples", n]].concat());
            let p = out.join("samples_epoch_001.png");
            match side {
                Some(k) => {
                    let dummy = vec![0u8; PIXELS];
                    let cells = vec![&dummy[..]; k * k];
                    let expected = grid::render_grid(
                        &cells,
                        pixelcnn::model::ImageShape::DEFAULT,
                        k,
                        grid::DEFAULT_SCALE,
                        grid::DEFAULT_GAP,
                    );
                    assert_eq!(decode_png(&p).dimensions(), expected.dimensions());
                }
                None => assert!(!p.exists(), "--epoch-samples 0 wrote {}", p.display()),
            }
        }
    }
    let err = refused(
        &f.root,
        &[
            &train_args(&f, "cpu", &f.root.join("x"))[..],
            &["--epoch-samples", "300"],
        ]
        .concat(),
    );
    assert!(err.contains("epoch-samples"), "{err}");
}

/// The epoch's grid is what `sample --seed 0` draws from that epoch's checkpoint: from the Polyak average once it
/// has taken the updates it needs to count (`--ema 0.5`: 2), from the raw parameters before that (`--ema 0.99`:
/// 100, more than the run's 4 steps), as `sample` and `eval` choose.
#[test]
fn the_epoch_grid_uses_the_weights_sample_uses() {
    let f = fixture();
    for ema in ["0.5", "0.99"] {
        let out = f.root.join(format!("grid_ema_{ema}"));
        let mut args = train_args(&f, "cpu", &out);
        let e = args.iter().position(|a| *a == "--epochs").unwrap();
        args[e + 1] = "1";
        // No validation images: a validation that found the average worse would also leave the raw parameters in
        // use (tests/checkpoint.rs tests that rule); here the count alone decides.
        let v = args.iter().position(|a| *a == "--val-split").unwrap();
        args[v + 1] = "0";
        ok(&f.root, &[&args[..], &["--ema", ema]].concat());
        let drawn = f.root.join(format!("sampled_{ema}.png"));
        let epoch_1 = out.join("epoch_001.safetensors");
        #[rustfmt::skip]
        let sample = ["sample", "--device", "cpu", "--checkpoint", s(&epoch_1),
            "--seed", "0", "--count", "16", "--out", s(&drawn)];
        let o = pixelcnn(&f.root, &sample);
        assert!(o.status.success(), "{}", stderr(&o));
        // sample says which weights it draws from.
        let says = if ema == "0.5" {
            "Polyak-averaged weights"
        } else {
            "using the raw parameters"
        };
        assert!(stderr(&o).contains(says), "--ema {ema}: {}", stderr(&o));
        let grid = decode_png(&out.join("samples_epoch_001.png"));
        assert!(
            grid == decode_png(&drawn),
            "--ema {ema}: the epoch grid is not what sample draws from the epoch's checkpoint"
        );
        let raw = f.root.join(format!("sampled_raw_{ema}.png"));
        ok(
            &f.root,
            &[&sample[..7], &["--raw-weights", "--count", "16", "--out", s(&raw)]].concat(),
        );
        let averaged = ema == "0.5";
        assert_eq!(
            grid != decode_png(&raw),
            averaged,
            "--ema {ema}: the grid should come from the {} weights",
            if averaged { "averaged" } else { "raw" }
        );
    }
}

#[test]
fn polyak_average_is_kept_logged_and_branches_set_their_own_schedule() {
    let f = fixture();
    let train = |out: &Path, extra: &[&str]| {
        #[rustfmt::skip]
        let args = [
            "train", "--device", "cpu", "--data", s(&f.idx), "--val-split", "0.25", "--batch-size", "8",
            "--seed", "3", "--out", s(out),
        ];
        let all: Vec<&str> = [&args[..], &TINY[..], extra].concat();
        let o = pixelcnn(&f.root, &all);
        assert!(o.status.success(), "pixelcnn {} failed:\n{}", all.join(" "), stderr(&o));
        stderr(&o)
    };
    // The default keeps an average: each epoch logs the validation NLL of both, and the checkpoint keeps it.
    let avg = f.root.join("avg");
    train(&avg, &["--epochs", "2"]);
    for m in metrics_lines(&avg) {
        let (raw, ema) = (m["val_nll"].as_f64(), m["val_nll_ema"].as_f64());
        assert!(raw.is_some() && ema.is_some(), "{m}");
        assert_ne!(raw, ema, "the average should differ from the parameters: {m}");
    }
    let ck = load(&avg.join("last.safetensors"));
    let (state, adam) = ck.train.clone().unwrap();
    assert_eq!(state.adam.ema_decay, pixelcnn::train::DEFAULT_EMA);
    // Eight updates are too few for 0.9995's average to count: the parameters stay in use until 2,000.
    assert!(adam.ema.is_some() && !ck.averaged(false));
    assert_eq!(ck.average_updates(), Some((8, 2000)));
    // 0.5's average counts after two updates, when it also validated no worse than the parameters.
    let counts_where_it_validates_no_worse = |run: &Path| {
        let m = metrics_lines(run).pop().expect("no metrics");
        let (raw, ema) = (m["val_nll"].as_f64().unwrap(), m["val_nll_ema"].as_f64().unwrap());
        let ck = load(&run.join("last.safetensors"));
        assert_eq!(ck.averaged(false), ema <= raw, "{m}");
        assert!(!ck.averaged(true));
    };
    let short = f.root.join("short");
    train(&short, &["--epochs", "2", "--ema", "0.5"]);
    counts_where_it_validates_no_worse(&short);
    // --ema 0: no average, no such field.
    let plain = f.root.join("plain");
    train(&plain, &["--epochs", "1", "--ema", "0"]);
    assert!(metrics_lines(&plain).iter().all(|m| m.get("val_nll_ema").is_none()));
    assert!(!load(&plain.join("last.safetensors")).averaged(false));
    // Resuming that run with --ema starts an average at its parameters.
    let err = train(
        &plain,
        &[
            "--resume",
            s(&plain.join("last.safetensors")),
            "--epochs",
            "2",
            "--ema",
            "0.5",
        ],
    );
    assert!(err.contains("averaging them from step"), "{err}");
    // It counts its own updates, from where it started.
    let resumed = load(&plain.join("last.safetensors"));
    assert_eq!(resumed.train.as_ref().unwrap().0.ema_start, 4);
    assert_eq!(resumed.average_updates(), Some((4, 2)));
    counts_where_it_validates_no_worse(&plain);
    // In place, the learning rate is the run's own; a branch may set its own schedule from where it starts.
    let last = avg.join("last.safetensors");
    let err = fails(
        &f.root,
        &[
            &[
                "train",
                "--device",
                "cpu",
                "--data",
                s(&f.idx),
                "--resume",
                s(&last),
                "--epochs",
                "3",
                "--lr",
                "0.002",
            ][..],
            &TINY[..],
        ]
        .concat(),
    );
    assert!(err.contains("--lr") && err.contains("branch"), "{err}");
    let branch = f.root.join("branch");
    let err = train(
        &branch,
        &[
            "--resume",
            s(&last),
            "--epochs",
            "4",
            "--lr",
            "0.002",
            "--lr-decay",
            "0.5",
        ],
    );
    assert!(err.contains("branching"), "{err}");
    let lines = metrics_lines(&branch);
    let lr_of = |e: u64| {
        lines
            .iter()
            .find(|m| m["epoch"] == e)
            .map(|m| m["lr"].as_f64().unwrap())
    };
    assert_eq!(lr_of(3), Some(0.002), "{lines:?}");
    assert_eq!(lr_of(4), Some(0.001), "{lines:?}");
    assert_eq!(load(&branch.join("last.safetensors")).train.unwrap().0.lr_epoch0, 2);
    // The original run is untouched by its branch.
    assert_eq!(metrics_lines(&avg).len(), 2);
}
