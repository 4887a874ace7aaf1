//! Loading binarized Fashion-MNIST from the original IDX files (plain or gzipped) or a Kaggle CSV, and statically
//! binarized MNIST (Larochelle & Murray 2011) from its `.amat` text files.
//!
//! Every image is binarized at load time (see [`binarize`]), so the rest of the crate only ever sees
//! pixels that are 0 or 1. Malformed input is reported as an error naming the file and the record,
//! line or byte offset; sizes are checked against the header before anything large is allocated.

use anyhow::{anyhow, bail, Result};
use flate2::read::MultiGzDecoder;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

pub const IMAGE_SIZE: usize = 28;
pub const PIXELS: usize = IMAGE_SIZE * IMAGE_SIZE;
/// Number of classes; labels are 0..=9.
pub const CLASSES: usize = 10;

/// Pixels at or above this value become 1. The reference binarizes with `x / 256 >= 0.33`, i.e.
/// `x >= 84.48`, so 84 is the last value that maps to 0.
pub const BINARIZE_THRESHOLD: u8 = 85;

/// Where `pixelcnn` looks for data when no `--data` is given and `PIXELCNN_DATA` is unset.
pub const DEFAULT_DATA_DIR: &str = "data/fashion-mnist";

/// Appended to "no data" errors so the user knows how to get out of them.
const NO_DATA_HINT: &str = "run `pixelcnn download` to fetch Fashion-MNIST, or pass --data PATH (or set \
     PIXELCNN_DATA) pointing at a directory of IDX files or a Kaggle-format CSV file";

/// The four IDX files of the official release, without the optional `.gz` suffix.
const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;

/// Upper bound for the buffer reserved up front when reading a gzipped file. The header's count is
/// not trusted for the reservation (the file may be lying); the buffer simply grows past this if the
/// data really is larger.
const MAX_RESERVE: u64 = 64 << 20;

/// How much data past the declared end of a gzipped file is decoded to check the stream's integrity.
const MAX_TRAILING_CHECK: u64 = 64 << 20;

/// Deflate cannot expand data by more than about 1032:1, so a gzip file of `n` bytes never holds more
/// than this many times `n` bytes. Used to reject absurd header counts before decompressing anything.
const MAX_DEFLATE_RATIO: u64 = 1100;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Idx,
    Csv,
    /// Larochelle & Murray's `.amat` text: one already-binary image per line, no labels.
    Amat,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Idx => "idx",
            Format::Csv => "csv",
            Format::Amat => "amat",
        }
    }
}

/// A set of binarized images and their labels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Split {
    /// `len() * PIXELS` values, row-major per image, each 0 or 1.
    pub images: Vec<u8>,
    /// One label 0..=9 per image.
    pub labels: Vec<u8>,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The `PIXELS` binarized pixels of image `i` (panics if `i >= len()`, like slice indexing).
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * PIXELS..(i + 1) * PIXELS]
    }

    /// Fraction of pixels that are 1 (0.0 for an empty split).
    pub fn ones_fraction(&self) -> f64 {
        if self.images.is_empty() {
            return 0.0;
        }
        let ones: u64 = self.images.iter().map(|&v| u64::from(v)).sum();
        ones as f64 / self.images.len() as f64
    }

    /// Number of images of each class. Labels outside 0..=9 (impossible for loaded data) are not counted.
    pub fn label_counts(&self) -> [u64; CLASSES] {
        let mut counts = [0u64; CLASSES];
        for &label in &self.labels {
            if let Some(c) = counts.get_mut(usize::from(label)) {
                *c += 1;
            }
        }
        counts
    }

    /// The first `n` images (all of them if there are fewer).
    pub fn take(&self, n: usize) -> Split {
        let n = n.min(self.len());
        Split {
            images: self.images[..n * PIXELS].to_vec(),
            labels: self.labels[..n].to_vec(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Dataset {
    pub format: Format,
    /// Whether the images carry class labels (an unlabelled set has every label 0, and cannot train or evaluate a
    /// class-conditional model).
    pub labelled: bool,
    /// The directory or CSV file the data was loaded from.
    pub source: PathBuf,
    pub train: Split,
    pub val: Split,
    pub test: Split,
}

impl Dataset {
    /// The split called `name`: "train", "val" or "test".
    pub fn split(&self, name: &str) -> Result<&Split> {
        match name {
            "train" => Ok(&self.train),
            "val" => Ok(&self.val),
            "test" => Ok(&self.test),
            _ => bail!("unknown split {name:?}: expected \"train\", \"val\" or \"test\""),
        }
    }

    fn splits(&self) -> [(&'static str, &Split); 3] {
        [("train", &self.train), ("val", &self.val), ("test", &self.test)]
    }
}

/// Binarizes one 8-bit pixel: 0..=84 -> 0, 85..=255 -> 1.
pub fn binarize(v: u8) -> u8 {
    u8::from(v >= BINARIZE_THRESHOLD)
}

/// `$PIXELCNN_DATA` if set and non-empty, else `data/fashion-mnist`.
pub fn default_data_path() -> PathBuf {
    match std::env::var_os("PIXELCNN_DATA") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_DATA_DIR),
    }
}

/// Loads a dataset from a directory of IDX files or of `.amat` files, or from a Kaggle CSV file, binarizing every
/// pixel.
///
/// The training data is split like Keras' `validation_split`: the first `int(n * (1 - val_split))`
/// images are `train`, the rest `val`. For IDX, `test` is the t10k set; for a CSV file, `test` is the
/// whole file (a Kaggle CSV holds a single split, so the caller decides what it means). An `.amat` directory has
/// its own three splits (`*train.amat`, `*valid.amat`, `*test.amat`), and `val_split` does not apply to it.
pub fn load(path: &Path, val_split: f64) -> Result<Dataset> {
    if !(0.0..1.0).contains(&val_split) {
        bail!("validation split must be in [0, 1), got {val_split}");
    }
    let meta = std::fs::metadata(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow!("no data at {}: {NO_DATA_HINT}", path.display())
        } else {
            anyhow!("cannot access {}: {e}", path.display())
        }
    })?;
    if meta.is_dir() {
        if let Some(files) = find_amat_files(path)? {
            let [train, val, test] = files.map(|f| read_amat(&f));
            return Ok(Dataset {
                format: Format::Amat,
                labelled: false,
                source: path.to_path_buf(),
                train: train?,
                val: val?,
                test: test?,
            });
        }
    }
    let (format, full, test) = if meta.is_dir() {
        let (train, test) = load_idx_dir(path)?;
        (Format::Idx, train, test)
    } else {
        let all = load_csv(path)?;
        (Format::Csv, all.clone(), all)
    };
    let (train, val) = split_train_val(full, val_split);
    if train.is_empty() {
        bail!(
            "{}: the training split is empty: validation split {val_split} of {} training image(s) leaves none; \
             use a smaller validation split",
            path.display(),
            train.len() + val.len()
        );
    }
    Ok(Dataset {
        format,
        labelled: true,
        source: path.to_path_buf(),
        train,
        val,
        test,
    })
}

/// Keras semantics: `split_at = int(n * (1 - validation_split))`, train = `[:split_at]`, val = the rest.
fn split_train_val(mut full: Split, val_split: f64) -> (Split, Split) {
    let n = full.len();
    let split_at = ((n as f64 * (1.0 - val_split)) as usize).min(n);
    let val = Split {
        images: full.images.split_off(split_at * PIXELS),
        labels: full.labels.split_off(split_at),
    };
    (full, val)
}

/// Summary of every split as JSON: format, and per split the image count, ones fraction and label counts.
pub fn report_json(ds: &Dataset) -> serde_json::Value {
    let mut splits = serde_json::Map::new();
    for (name, split) in ds.splits() {
        splits.insert(
            name.to_string(),
            serde_json::json!({
                "images": split.len(),
                "ones_fraction": split.ones_fraction(),
                "label_counts": split.label_counts(),
            }),
        );
    }
    serde_json::json!({ "format": ds.format, "labelled": ds.labelled, "splits": splits })
}

/// Human-readable table: per split the image count, ones fraction and label histogram.
pub fn report_text(ds: &Dataset) -> String {
    if !ds.labelled {
        let mut out = format!(
            "unlabelled images ({}) from {}\n{:<6} {:>7} {:>7}\n",
            ds.format.as_str(),
            ds.source.display(),
            "split",
            "images",
            "ones"
        );
        for (name, split) in ds.splits() {
            out.push_str(&format!(
                "{name:<6} {:>7} {:>7.4}\n",
                split.len(),
                split.ones_fraction()
            ));
        }
        return out;
    }
    let mut out = format!("Fashion-MNIST ({}) from {}\n", ds.format.as_str(), ds.source.display());
    out.push_str(&format!("{:<6} {:>7} {:>7}", "split", "images", "ones"));
    for class in 0..CLASSES {
        out.push_str(&format!(" {:>6}", format!("#{class}")));
    }
    out.push('\n');
    for (name, split) in ds.splits() {
        out.push_str(&format!(
            "{:<6} {:>7} {:>7.4}",
            name,
            split.len(),
            split.ones_fraction()
        ));
        for count in split.label_counts() {
            out.push_str(&format!(" {count:>6}"));
        }
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------------------------------------------
// IDX

/// Loads (all training images, test images) from a directory of IDX files.
fn load_idx_dir(dir: &Path) -> Result<(Split, Split)> {
    let names = [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS];
    let found: Vec<Option<PathBuf>> = names.iter().map(|name| find_idx_file(dir, name)).collect();
    let missing: Vec<&str> = names
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|(n, _)| *n)
        .collect();
    if missing.len() == names.len() {
        bail!("no Fashion-MNIST IDX files in {}: {NO_DATA_HINT}", dir.display());
    }
    if !missing.is_empty() {
        bail!(
            "{}: missing {} (each may also be gzipped with a .gz suffix); {NO_DATA_HINT}",
            dir.display(),
            missing.join(", ")
        );
    }
    let paths: Vec<PathBuf> = found.into_iter().flatten().collect();
    let train = load_idx_pair(&paths[0], &paths[1])?;
    let test = load_idx_pair(&paths[2], &paths[3])?;
    Ok((train, test))
}

/// `dir/name` if it exists, else `dir/name.gz` if that exists. The plain file wins when both exist:
/// it is what the user unpacked on purpose, and it loads faster. Whatever kind of file it is: reading it refuses
/// anything but a regular file, naming it (so a FIFO or directory under the name is reported, not "missing").
fn find_idx_file(dir: &Path, name: &str) -> Option<PathBuf> {
    let plain = dir.join(name);
    if std::fs::metadata(&plain).is_ok() {
        return Some(plain);
    }
    let gz = dir.join(format!("{name}.gz"));
    std::fs::metadata(&gz).is_ok().then_some(gz)
}

fn load_idx_pair(images_path: &Path, labels_path: &Path) -> Result<Split> {
    let mut images = read_idx(images_path, IdxKind::Images)?;
    let labels = read_idx(labels_path, IdxKind::Labels)?;
    let (n_images, n_labels) = (images.len() / PIXELS, labels.len());
    if n_images != n_labels {
        bail!(
            "{} has {n_images} images but {} has {n_labels} labels",
            images_path.display(),
            labels_path.display()
        );
    }
    if let Some(i) = labels.iter().position(|&l| usize::from(l) >= CLASSES) {
        bail!(
            "{}: label {} of record {i} (byte offset {}) is outside 0-9",
            labels_path.display(),
            labels[i],
            IdxKind::Labels.header_len() + i
        );
    }
    images.iter_mut().for_each(|v| *v = binarize(*v));
    Ok(Split { images, labels })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum IdxKind {
    Images,
    Labels,
}

impl IdxKind {
    fn magic(self) -> u32 {
        match self {
            IdxKind::Images => IMAGES_MAGIC,
            IdxKind::Labels => LABELS_MAGIC,
        }
    }
    fn header_len(self) -> usize {
        match self {
            IdxKind::Images => 16,
            IdxKind::Labels => 8,
        }
    }
    fn record_len(self) -> usize {
        match self {
            IdxKind::Images => PIXELS,
            IdxKind::Labels => 1,
        }
    }
    fn record_name(self) -> &'static str {
        match self {
            IdxKind::Images => "image",
            IdxKind::Labels => "label",
        }
    }
}

/// Opens a data file and returns it with its length; a FIFO, device or directory (never read, so never waited
/// on) and an empty file are errors naming it.
fn open_nonempty(path: &Path) -> Result<(File, u64)> {
    let (file, len) = crate::fsio::open_regular(path, "data file")?;
    if len == 0 {
        bail!("{}: file is empty (0 bytes)", path.display());
    }
    Ok((file, len))
}

/// The file's bytes, through a gzip decoder when `gz` (concatenated members included).
fn decompressed(file: File, gz: bool) -> Box<dyn Read> {
    if gz {
        Box::new(MultiGzDecoder::new(BufReader::with_capacity(1 << 16, file)))
    } else {
        Box::new(file)
    }
}

/// Reads one IDX file (gzipped if its name ends in `.gz`), validates its header and size, and returns
/// the raw payload after the header (`count * record_len` bytes).
fn read_idx(path: &Path, kind: IdxKind) -> Result<Vec<u8>> {
    let (file, file_len) = open_nonempty(path)?;
    let gz = path.extension().is_some_and(|e| e == "gz");
    // For gzip, offsets and sizes in messages are of the decompressed data.
    let what = if gz { "decompressed bytes" } else { "bytes" };
    let mut reader = decompressed(file, gz);
    let io_error = |e: std::io::Error, offset: usize| {
        if gz {
            anyhow!(
                "{}: corrupt or truncated gzip data (after {offset} decompressed bytes): {e}",
                path.display()
            )
        } else {
            anyhow!("{}: read error at byte offset {offset}: {e}", path.display())
        }
    };

    // Header: big-endian u32 magic, count, and for images the two dimensions.
    let header_len = kind.header_len();
    let mut header = [0u8; 16];
    let got = read_full(&mut reader, &mut header[..header_len]).map_err(|e| io_error(e, 0))?;
    if got < header_len {
        bail!(
            "{}: truncated header: {got} {what}, an IDX {} file needs a {header_len}-byte header",
            path.display(),
            kind.record_name()
        );
    }
    let word = |i: usize| u32::from_be_bytes([header[4 * i], header[4 * i + 1], header[4 * i + 2], header[4 * i + 3]]);
    let magic = word(0);
    if magic != kind.magic() {
        let hint = if header[0] == 0x1f && header[1] == 0x8b {
            " (the file looks gzip-compressed: give it a .gz suffix)"
        } else if magic == IMAGES_MAGIC || magic == LABELS_MAGIC {
            " (an IDX file of the other kind: are image and label files swapped?)"
        } else {
            ""
        };
        bail!(
            "{}: bad magic number 0x{magic:08x} at byte offset 0, expected 0x{:08x} for an IDX {} file{hint}",
            path.display(),
            kind.magic(),
            kind.record_name()
        );
    }
    if kind == IdxKind::Images {
        let (rows, cols) = (word(2), word(3));
        if (rows, cols) != (IMAGE_SIZE as u32, IMAGE_SIZE as u32) {
            bail!(
                "{}: images are {rows}x{cols} (header bytes 8-15), expected {IMAGE_SIZE}x{IMAGE_SIZE}",
                path.display()
            );
        }
    }
    let count = word(1);
    if count == 0 {
        bail!("{}: header declares 0 {}s", path.display(), kind.record_name());
    }

    // Check the size the header implies against the file before allocating for it.
    let payload_len = u64::from(count) * kind.record_len() as u64;
    let total_len = payload_len + header_len as u64;
    let declared = format!("header declares {count} {}s ({total_len} {what})", kind.record_name());
    if !gz && file_len != total_len {
        return Err(size_mismatch(path, kind, &declared, file_len, total_len, gz));
    }
    if gz && total_len > file_len.saturating_mul(MAX_DEFLATE_RATIO) {
        bail!(
            "{}: {declared}, but a {file_len}-byte gzip file cannot hold that much; the header count is corrupt",
            path.display()
        );
    }

    // Read at most one byte more than declared: enough to notice trailing data without letting a
    // lying file make us read (or allocate) without bound. A stream that ends early is truncated.
    let mut payload = Vec::with_capacity((payload_len + 1).min(MAX_RESERVE) as usize);
    (&mut reader)
        .take(payload_len + 1)
        .read_to_end(&mut payload)
        .map_err(|e| io_error(e, header_len + payload.len()))?;
    let actual_len = (header_len + payload.len()) as u64;
    if gz && actual_len > total_len {
        // More data than declared. Decode on (into a sink, so memory stays bounded) to tell a corrupt
        // stream, which often inflates to garbage, from a valid one that merely holds extra data.
        if let Err(e) = std::io::copy(&mut reader.take(MAX_TRAILING_CHECK), &mut std::io::sink()) {
            return Err(io_error(e, header_len + payload.len()));
        }
    }
    if actual_len != total_len {
        return Err(size_mismatch(path, kind, &declared, actual_len, total_len, gz));
    }
    Ok(payload)
}

/// The error for a file whose length disagrees with its header: truncated or with trailing data.
fn size_mismatch(path: &Path, kind: IdxKind, declared: &str, actual: u64, expected: u64, gz: bool) -> anyhow::Error {
    if actual < expected {
        let header_len = kind.header_len() as u64;
        let complete = actual.saturating_sub(header_len) / kind.record_len() as u64;
        let what = if gz { "decompressed bytes" } else { "bytes" };
        anyhow!(
            "{}: truncated: {declared} but the data ends after {actual} {what}, in {} {complete}",
            path.display(),
            kind.record_name()
        )
    } else if gz {
        // Only one byte past the declared size was read, so the amount of trailing data is unknown.
        anyhow!(
            "{}: {declared} but there is trailing data from decompressed byte offset {expected}",
            path.display()
        )
    } else {
        anyhow!(
            "{}: {declared} but the file has {actual} bytes: {} bytes of trailing data from byte offset {expected}",
            path.display(),
            actual - expected
        )
    }
}

/// Like `read_exact`, but returns how many bytes were read when the stream ends early.
fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

// ---------------------------------------------------------------------------------------------------
// AMAT (statically binarized MNIST)

/// The splits of an `.amat` directory, in the order train, validation, test.
const AMAT_SPLITS: [&str; 3] = ["train", "valid", "test"];

/// The three `.amat` files of a directory (`binarized_mnist_train.amat`, or any name ending in `train.amat`, each
/// plain or `.gz`), or None when it holds no `.amat` file at all. Some but not all is an error naming what is
/// missing; two candidates for one split are an error naming both.
fn find_amat_files(dir: &Path) -> Result<Option<[PathBuf; 3]>> {
    let entries = std::fs::read_dir(dir).map_err(|e| anyhow!("cannot list {}: {e}", dir.display()))?;
    let mut names: Vec<String> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| anyhow!("cannot list {}: {e}", dir.display()))?;
        if let Some(n) = entry.file_name().to_str() {
            if !n.starts_with('.') && (n.ends_with(".amat") || n.ends_with(".amat.gz")) {
                names.push(n.to_string());
            }
        }
    }
    if names.is_empty() {
        return Ok(None);
    }
    names.sort();
    let mut found = Vec::new();
    for split in AMAT_SPLITS {
        let stem = |n: &str| n.trim_end_matches(".gz").trim_end_matches(".amat").to_string();
        let matches: Vec<&String> = names.iter().filter(|n| stem(n).ends_with(split)).collect();
        // A plain file and its .gz are one split: the plain one wins, as for IDX files.
        let plain: Vec<&&String> = matches.iter().filter(|n| n.ends_with(".amat")).collect();
        let pick = match (plain.len(), matches.len()) {
            (_, 0) => bail!(
                "{}: holds .amat files ({}) but none for the {split} split (a name ending in {split}.amat or \
                 {split}.amat.gz)",
                dir.display(),
                names.join(", ")
            ),
            (1, _) => plain[0].to_string(),
            (0, 1) => matches[0].to_string(),
            _ => bail!(
                "{}: several .amat files for the {split} split ({}); keep one",
                dir.display(),
                matches.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ),
        };
        found.push(dir.join(pick));
    }
    Ok(Some(found.try_into().expect("three splits")))
}

/// Reads one `.amat` file (gzipped if named `.gz`): one image per line, [`PIXELS`] values `0` or `1` separated by
/// spaces or tabs (a trailing `\r` and blank lines are allowed). Every other value, a line of the wrong length and
/// a line longer than [`MAX_CSV_LINE`] are errors naming the line.
fn read_amat(path: &Path) -> Result<Split> {
    let (file, file_len) = open_nonempty(path)?;
    let gz = path.extension().is_some_and(|e| e == "gz");
    let mut reader = BufReader::with_capacity(1 << 16, decompressed(file, gz));
    let limit = file_len.saturating_mul(if gz { MAX_DEFLATE_RATIO } else { 1 });
    let mut split = Split::default();
    let mut line = Vec::with_capacity(2 * PIXELS + 2);
    let mut line_no = 0u64;
    let mut total = 0u64;
    loop {
        line.clear();
        let n = std::io::BufRead::read_until(&mut (&mut reader).take(MAX_CSV_LINE as u64 + 1), b'\n', &mut line)
            .map_err(|e| {
                anyhow!(
                    "{}: line {}: read error (corrupt or truncated gzip?): {e}",
                    path.display(),
                    line_no + 1
                )
            })?;
        if n == 0 {
            break;
        }
        line_no += 1;
        total += n as u64;
        ensure_amat(total <= limit, path, line_no, "more data than the file can hold")?;
        ensure_amat(
            line.len() <= MAX_CSV_LINE || line.ends_with(b"\n"),
            path,
            line_no,
            &format!("longer than {MAX_CSV_LINE} bytes (an .amat line is {PIXELS} values 0 or 1)"),
        )?;
        let body = line.strip_suffix(b"\n").unwrap_or(&line);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        if body.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let before = split.images.len();
        for (col, field) in body
            .split(|b| *b == b' ' || *b == b'\t')
            .filter(|f| !f.is_empty())
            .enumerate()
        {
            let v = match field {
                b"0" => 0,
                b"1" => 1,
                _ => bail!(
                    "{}: line {line_no}, value {}: {:?} is not 0 or 1 (.amat images are already binary)",
                    path.display(),
                    col + 1,
                    String::from_utf8_lossy(&field[..field.len().min(40)])
                ),
            };
            ensure_amat(
                split.images.len() - before < PIXELS,
                path,
                line_no,
                &format!("more than {PIXELS} values (expected a 28x28 image)"),
            )?;
            split.images.push(v);
        }
        let got = split.images.len() - before;
        ensure_amat(
            got == PIXELS,
            path,
            line_no,
            &format!("{got} values, expected {PIXELS} (a 28x28 image)"),
        )?;
        split.labels.push(0);
    }
    if split.is_empty() {
        bail!(
            "{}: no images (expected lines of {PIXELS} values 0 or 1)",
            path.display()
        );
    }
    Ok(split)
}

fn ensure_amat(ok: bool, path: &Path, line: u64, what: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        bail!("{}: line {line}: {what}", path.display())
    }
}

// ---------------------------------------------------------------------------------------------------
// CSV

/// Loads a Kaggle-format CSV (`label,pixel1,...,pixel784`, values 0-255), gzipped if named `*.gz`.
/// The header line is optional.
fn load_csv(path: &Path) -> Result<Split> {
    let (file, _) = open_nonempty(path)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.contains("-idx") {
        bail!(
            "{}: this is a single IDX file; pass the directory that holds all four IDX files",
            path.display()
        );
    }
    let reader = LineLimit {
        inner: decompressed(file, name.ends_with(".gz")),
        since_newline: 0,
        lines: 0,
    };
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(false) // detected below, so a headerless file also works
        .flexible(true) // column counts are checked here, to name the line
        .buffer_capacity(1 << 16)
        .from_reader(reader);

    let columns = PIXELS + 1;
    let mut split = Split::default();
    let mut record = csv::ByteRecord::new();
    let mut first = true;
    loop {
        match csv.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => bail!("{}: {}", path.display(), describe_csv_error(&e)),
        }
        let line = record.position().map_or(0, |p| p.line());
        if first
            && record
                .get(0)
                .is_some_and(|f| f.trim_ascii().eq_ignore_ascii_case(b"label"))
        {
            first = false;
            if record.len() != columns {
                bail!(
                    "{}: line {line}: header has {} columns, expected {columns} (label,pixel1,...,pixel{PIXELS})",
                    path.display(),
                    record.len()
                );
            }
            continue;
        }
        first = false;
        if record.len() != columns {
            bail!(
                "{}: line {line} has {} columns, expected {columns} (a label and {PIXELS} pixels)",
                path.display(),
                record.len()
            );
        }
        for (col, field) in record.iter().enumerate() {
            let max = if col == 0 { CLASSES as u32 - 1 } else { 255 };
            let value = parse_value(field).filter(|&v| v <= max).ok_or_else(|| {
                let what = if col == 0 {
                    "label".to_string()
                } else {
                    format!("pixel{col}")
                };
                anyhow!(
                    "{}: line {line}, column {} ({what}): {:?} is not an integer in 0-{max}",
                    path.display(),
                    col + 1,
                    String::from_utf8_lossy(field)
                )
            })?;
            if col == 0 {
                split.labels.push(value as u8);
            } else {
                split.images.push(binarize(value as u8));
            }
        }
    }
    if split.is_empty() {
        bail!(
            "{}: no data rows (expected label,pixel1,...,pixel{PIXELS} lines)",
            path.display()
        );
    }
    Ok(split)
}

/// A plain non-negative decimal integer (surrounding spaces allowed), saturating on overflow so that
/// huge numbers are reported as out of range rather than as non-numeric.
fn parse_value(field: &[u8]) -> Option<u32> {
    let digits = field.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0u32, |acc, d| {
        acc.saturating_mul(10).saturating_add(u32::from(d - b'0'))
    }))
}

/// The longest CSV line read: a Fashion-MNIST line is a label and 784 values, under 4 KB even with spaces. The bound
/// keeps a file without line breaks (or a decompression bomb) from growing one record without end.
pub const MAX_CSV_LINE: usize = 64 << 10;

/// The error [`LineLimit`] reports.
#[derive(Debug)]
struct LineTooLong {
    line: u64,
}

impl std::fmt::Display for LineTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {} is longer than {MAX_CSV_LINE} bytes (a Fashion-MNIST CSV line is a label and {PIXELS} values); is this a Fashion-MNIST CSV file?",
            self.line
        )
    }
}

impl std::error::Error for LineTooLong {}

/// A reader that fails once a line grows past [`MAX_CSV_LINE`] bytes.
struct LineLimit<R> {
    inner: R,
    since_newline: usize,
    lines: u64,
}

impl<R: Read> Read for LineLimit<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let got = &buf[..n];
        match got.iter().rposition(|&b| b == b'\n') {
            Some(p) => {
                self.lines += got.iter().filter(|&&b| b == b'\n').count() as u64;
                self.since_newline = n - 1 - p;
            }
            None => self.since_newline += n,
        }
        if self.since_newline > MAX_CSV_LINE {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                LineTooLong { line: self.lines + 1 },
            ));
        }
        Ok(n)
    }
}

fn describe_csv_error(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Io(io) if io.get_ref().is_some_and(|e| e.is::<LineTooLong>()) => io.to_string(),
        csv::ErrorKind::Io(io) => format!("read error (corrupt or truncated gzip?): {io}"),
        _ => match e.position() {
            Some(p) => format!("line {}: {e}", p.line()),
            None => e.to_string(),
        },
    }
}
