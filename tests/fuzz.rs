//! Property tests of the parsers: thousands of random mutations of valid IDX (plain and gzipped), CSV and
//! safetensors files — truncations, flipped and inserted bytes, huge dimensions and counts, wrong dtypes,
//! duplicate or missing tensors, metadata of the wrong type. Every case must end in `Ok` or in an error that names
//! the file, must not panic, and must not allocate more than a small multiple of the file's size (a gzip file
//! can legitimately inflate 1,032-fold, so gzip cases are bounded by that ratio). Each test runs a fixed number of
//! cases (proptest's default seed is fixed, so CI runs the same cases every time) and prints the count.

use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, TestRunner};
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Counts the bytes allocated above the level at `reset`, and their peak.
struct Counting;
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The tests measure allocations one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Peak bytes allocated while running `f`, beyond what was allocated before.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}

const CASES: u32 = 1500;

fn runner() -> TestRunner {
    TestRunner::new(PtConfig {
        cases: CASES,
        failure_persistence: None,
        ..PtConfig::default()
    })
}

/// One mutation of a byte string.
#[derive(Clone, Debug)]
enum Mutation {
    Truncate(usize),
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    /// Overwrite a big-endian u32 at a 4-byte boundary (IDX header words, lengths).
    Word(usize, u32),
    Cut(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 1u8..=255).prop_map(|(i, x)| Mutation::Flip(i, x)),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (
            0usize..8,
            prop_oneof![
                Just(0u32),
                Just(1),
                Just(28),
                Just(u32::MAX),
                Just(0x7fff_ffff),
                any::<u32>()
            ]
        )
            .prop_map(|(i, w)| Mutation::Word(i, w)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Cut(a, b)),
    ]
}

fn apply(bytes: &[u8], muts: &[Mutation]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for m in muts {
        let n = b.len().max(1);
        match m {
            Mutation::Truncate(i) => b.truncate(i % n),
            Mutation::Flip(i, x) => {
                if !b.is_empty() {
                    b[i % n] ^= x
                }
            }
            Mutation::Insert(i, ins) => {
                let at = i % (b.len() + 1);
                b.splice(at..at, ins.iter().copied());
            }
            Mutation::Word(i, w) => {
                let at = 4 * i;
                if at + 4 <= b.len() {
                    b[at..at + 4].copy_from_slice(&w.to_be_bytes());
                }
            }
            Mutation::Cut(a, c) => {
                let (a, c) = (a % n, c % n);
                let (lo, hi) = (a.min(c), a.max(c));
                if hi <= b.len() {
                    b.drain(lo..hi);
                }
            }
        }
    }
    b
}

fn idx_images(n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for w in [0x0803u32, n as u32, 28, 28] {
        v.extend_from_slice(&w.to_be_bytes());
    }
    v.extend((0..n * 784).map(|i| (i * 37 % 256) as u8));
    v
}

fn idx_labels(n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for w in [0x0801u32, n as u32] {
        v.extend_from_slice(&w.to_be_bytes());
    }
    v.extend((0..n).map(|i| (i % 10) as u8));
    v
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// The loader's outcome must be Ok or an error naming `named`; returns whether it was Ok.
fn check_outcome<T>(what: &str, r: std::thread::Result<anyhow::Result<T>>, named: &str) -> Result<bool, TestCaseError> {
    match r {
        Err(_) => Err(TestCaseError::fail(format!("{what}: the loader panicked"))),
        Ok(Ok(_)) => Ok(true),
        Ok(Err(e)) => {
            let msg = format!("{e:#}");
            prop_assert!(msg.contains(named), "{what}: the error does not name {named}: {msg}");
            Ok(false)
        }
    }
}

#[test]
fn idx_loader_survives_mutations() {
    let _guard = ONE_AT_A_TIME.lock().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let base: [(&str, Vec<u8>); 4] = [
        ("train-images-idx3-ubyte", idx_images(3)),
        ("train-labels-idx1-ubyte", idx_labels(3)),
        ("t10k-images-idx3-ubyte", idx_images(2)),
        ("t10k-labels-idx1-ubyte", idx_labels(2)),
    ];
    let ok = std::cell::Cell::new(0usize);
    let total = std::cell::Cell::new(0usize);
    runner()
        .run(
            &(0usize..4, any::<bool>(), proptest::collection::vec(mutation(), 1..4)),
            |(which, gz, muts)| {
                let case = dir.path().join(format!("case{}", total.get()));
                total.set(total.get() + 1);
                std::fs::create_dir_all(&case).unwrap();
                let mut target = String::new();
                let mut size = 0;
                for (i, (name, bytes)) in base.iter().enumerate() {
                    let (name, mut data) = if gz {
                        (format!("{name}.gz"), gzip(bytes))
                    } else {
                        (name.to_string(), bytes.clone())
                    };
                    if i == which {
                        data = apply(&data, &muts);
                        target = name.clone();
                        size = data.len();
                    }
                    std::fs::write(case.join(&name), &data).unwrap();
                }
                let (r, peak) = peak_during(|| std::panic::catch_unwind(|| pixelcnn::data::load(&case, 0.2)));
                ok.set(ok.get() + check_outcome("IDX", r, &target)? as usize);
                let files: usize = base.iter().map(|b| b.1.len()).sum();
                let bound = if gz {
                    1100 * size + 4 * files
                } else {
                    8 * (size + files)
                } + (2 << 20);
                prop_assert!(
                    peak <= bound,
                    "IDX ({target}, gz {gz}): {peak} bytes allocated for a {size}-byte file"
                );
                std::fs::remove_dir_all(&case).unwrap();
                Ok(())
            },
        )
        .unwrap();
    eprintln!(
        "IDX: {} mutated cases ({} still valid), none panicked, every error named its file",
        total.get(),
        ok.get()
    );
    assert_eq!(total.get(), CASES as usize);
}

fn csv_file() -> Vec<u8> {
    let mut t = String::from("label");
    for i in 1..=784 {
        t.push_str(&format!(",pixel{i}"));
    }
    t.push('\n');
    for r in 0..3 {
        t.push_str(&(r % 10).to_string());
        for i in 0..784 {
            t.push_str(&format!(",{}", (i * 7 + r) % 256));
        }
        t.push('\n');
    }
    t.into_bytes()
}

#[test]
fn csv_loader_survives_mutations() {
    let _guard = ONE_AT_A_TIME.lock().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let base = csv_file();
    let ok = std::cell::Cell::new(0usize);
    let total = std::cell::Cell::new(0usize);
    runner()
        .run(
            &(any::<bool>(), proptest::collection::vec(mutation(), 1..4)),
            |(gz, muts)| {
                let name = if gz { "train.csv.gz" } else { "train.csv" };
                let path = dir.path().join(format!("{}-{name}", total.get()));
                total.set(total.get() + 1);
                let data = if gz {
                    apply(&gzip(&base), &muts)
                } else {
                    apply(&base, &muts)
                };
                std::fs::write(&path, &data).unwrap();
                let (r, peak) = peak_during(|| std::panic::catch_unwind(|| pixelcnn::data::load(&path, 0.2)));
                ok.set(ok.get() + check_outcome("CSV", r, &path.display().to_string())? as usize);
                let bound = if gz { 1100 * data.len() } else { 8 * data.len() } + (2 << 20);
                prop_assert!(
                    peak <= bound,
                    "CSV (gz {gz}): {peak} bytes allocated for a {}-byte file",
                    data.len()
                );
                std::fs::remove_file(&path).unwrap();
                Ok(())
            },
        )
        .unwrap();
    eprintln!(
        "CSV: {} mutated cases ({} still valid), none panicked, every error named its file",
        total.get(),
        ok.get()
    );
}

/// A small checkpoint with training state, of either architecture.
fn checkpoint_bytes(gated: bool) -> Vec<u8> {
    use pixelcnn::model::{Config, Network};
    let config = if gated {
        Config::gated(3, 2).conditional()
    } else {
        Config::pixelcnn(4, 1)
    };
    let net = Network::new(config);
    let params = net.init_params(1);
    let state = pixelcnn::checkpoint::TrainState {
        step: 3,
        epoch: 0,
        batch_in_epoch: 3,
        seed: 1,
        batch_size: 8,
        epochs: 2,
        adam: Default::default(),
        val_split: 0.1,
        limit: None,
        epoch_nll_sum: 1.5,
        epoch_images: 24,
        data: None,
        data_bytes: None,
        lr_decay: 1.0,
        data_options: None,
        last_record: None,
        lr_epoch0: 0,
        ema_start: 0,
    };
    let adam = pixelcnn::cpu::AdamState::new(net.param_len());
    pixelcnn::checkpoint::to_bytes(&net, &params, Some((&state, &adam))).unwrap()
}

/// Structural edits of a safetensors file: its JSON header rewritten.
#[derive(Clone, Debug)]
enum HeaderEdit {
    DropTensor(usize),
    DuplicateTensor(usize),
    Dtype(usize, &'static str),
    Shape(usize, Vec<usize>),
    Offsets(usize, usize, usize),
    Metadata(&'static str, serde_json::Value),
    RemoveMetadata,
}

fn header_edit() -> impl Strategy<Value = HeaderEdit> {
    let dtypes = prop_oneof![
        Just("F64"),
        Just("F16"),
        Just("I32"),
        Just("U8"),
        Just("BOOL"),
        Just("XYZ")
    ];
    let meta_keys = prop_oneof![
        Just("arch"),
        Just("classes"),
        Just("filters"),
        Just("depth"),
        Just("train_state"),
        Just("format")
    ];
    let meta_values = prop_oneof![
        Just(serde_json::json!(7)),
        Just(serde_json::json!("gated")),
        Just(serde_json::json!("pixelcnn")),
        Just(serde_json::json!("10")),
        Just(serde_json::json!("99999999999")),
        Just(serde_json::json!({"step": "x"})),
        Just(serde_json::json!("{\"step\": 1}")),
        Just(serde_json::json!(null)),
    ];
    prop_oneof![
        any::<usize>().prop_map(HeaderEdit::DropTensor),
        any::<usize>().prop_map(HeaderEdit::DuplicateTensor),
        (any::<usize>(), dtypes).prop_map(|(i, d)| HeaderEdit::Dtype(i, d)),
        (
            any::<usize>(),
            proptest::collection::vec(
                prop_oneof![Just(0usize), Just(1), Just(7), Just(1 << 20), Just(usize::MAX / 4)],
                0..5
            )
        )
            .prop_map(|(i, s)| HeaderEdit::Shape(i, s)),
        (any::<usize>(), any::<usize>(), any::<usize>()).prop_map(|(i, a, b)| HeaderEdit::Offsets(i, a, b)),
        (meta_keys, meta_values).prop_map(|(k, v)| HeaderEdit::Metadata(k, v)),
        Just(HeaderEdit::RemoveMetadata),
    ]
}

/// Applies header edits by rewriting the JSON header (the data section is kept).
fn edit_header(bytes: &[u8], edits: &[HeaderEdit]) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    for e in edits {
        let names: Vec<String> = header.keys().filter(|k| *k != "__metadata__").cloned().collect();
        if names.is_empty() {
            break;
        }
        let pick = |i: usize| names[i % names.len()].clone();
        match e {
            HeaderEdit::DropTensor(i) => {
                header.remove(&pick(*i));
            }
            HeaderEdit::DuplicateTensor(i) => {
                let name = pick(*i);
                let v = header[&name].clone();
                header.insert(format!("{name}.copy"), v);
            }
            HeaderEdit::Dtype(i, d) => {
                header[&pick(*i)]["dtype"] = serde_json::json!(d);
            }
            HeaderEdit::Shape(i, s) => {
                header[&pick(*i)]["shape"] = serde_json::json!(s);
            }
            HeaderEdit::Offsets(i, a, b) => {
                let len = data.len().max(1);
                header[&pick(*i)]["data_offsets"] = serde_json::json!([a % (2 * len), b % (2 * len)]);
            }
            HeaderEdit::Metadata(k, v) => {
                let meta = header.entry("__metadata__").or_insert(serde_json::json!({}));
                meta[*k] = v.clone();
            }
            HeaderEdit::RemoveMetadata => {
                header.remove("__metadata__");
            }
        }
    }
    let h = serde_json::to_vec(&header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend_from_slice(data);
    out
}

#[test]
fn checkpoint_loader_survives_mutations() {
    let _guard = ONE_AT_A_TIME.lock().unwrap();
    let bases = [checkpoint_bytes(false), checkpoint_bytes(true)];
    let file = "fuzzed.safetensors";
    let ok = std::cell::Cell::new(0usize);
    let total = std::cell::Cell::new(0usize);
    let strategy = (
        any::<bool>(),
        proptest::collection::vec(header_edit(), 0..3),
        proptest::collection::vec(mutation(), 0..3),
    );
    runner()
        .run(&strategy, |(gated, edits, muts)| {
            total.set(total.get() + 1);
            let base = &bases[gated as usize];
            let bytes = apply(&edit_header(base, &edits), &muts);
            let (r, peak) = peak_during(|| std::panic::catch_unwind(|| pixelcnn::checkpoint::from_bytes(&bytes, file)));
            ok.set(ok.get() + check_outcome("safetensors", r, file)? as usize);
            let bound = 8 * bytes.len() + (2 << 20);
            prop_assert!(
                peak <= bound,
                "safetensors: {peak} bytes allocated for a {}-byte file",
                bytes.len()
            );
            Ok(())
        })
        .unwrap();
    eprintln!(
        "safetensors: {} mutated cases ({} still valid), none panicked, every error named the file",
        total.get(),
        ok.get()
    );
}

#[test]
fn the_bounds_are_not_vacuous() {
    // A valid file loads, and the counting allocator sees its allocations.
    let _guard = ONE_AT_A_TIME.lock().unwrap();
    let bytes = checkpoint_bytes(true);
    let (r, peak) = peak_during(|| pixelcnn::checkpoint::from_bytes(&bytes, "x"));
    assert!(r.is_ok());
    assert!(peak > bytes.len(), "the allocator counted {peak} bytes");
}
