//! Loading the data sets, every image binarized: MNIST-style IDX files (plain or gzipped, any image shape, labels
//! optional), a CSV file (the Kaggle layout, with the label first, last or absent), statically binarized MNIST
//! (Larochelle & Murray 2011) from its `.amat` text files, and a folder of images (one subfolder per class,
//! optionally under `train/` and `test/`, as torchvision's ImageFolder and Keras' `image_dataset_from_directory`
//! read them). [`export_folder`] writes any loaded set back out as such a folder.
//!
//! Every image is binarized at load time (see [`Binarize`]), so the rest of the crate only ever sees pixels that
//! are 0 or 1. Malformed input is reported as an error naming the file and the record (line, byte offset or image
//! file), never a panic; sizes are checked against headers before anything large is allocated. Loading is
//! deterministic: the same files give the same splits in the same order.
//!
//! Stated limits: [`MAX_CLASSES`] classes; images of at most [`MAX_IMAGE_SIDE`] pixels a side, refused from their
//! header before decoding; an image file of at most [`MAX_IMAGE_FILE_BYTES`]; at most [`MAX_DECODE_BYTES`] for one
//! decoded image; a CSV image of at most [`MAX_CSV_PIXELS`] values and a CSV line of at most [`MAX_CSV_LINE`] bytes.

use anyhow::{anyhow, bail, Context, Result};
use flate2::read::MultiGzDecoder;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{BufReader, Cursor, Read};
use std::path::{Path, PathBuf};

/// The side of a Fashion-MNIST (and `.amat` MNIST) image.
pub const IMAGE_SIZE: usize = 28;
/// The pixels of a Fashion-MNIST image. Loaded sets may have any shape: see [`Split::pixels`].
pub const PIXELS: usize = IMAGE_SIZE * IMAGE_SIZE;

/// 8-bit pixels at or above this value become 1 under the default [`Binarize`] (threshold 0.33 of 255:
/// `85 / 255 = 0.3333 >= 0.33 > 84 / 255`). The reference binarizes with `x / 256 >= 0.33`, i.e. `x >= 84.48`, which
/// draws the line between the same two values, so Fashion-MNIST loads bit-identically to it.
pub const BINARIZE_THRESHOLD: u8 = 85;

/// The default binarization threshold, as a fraction of the data's maximum value.
pub const DEFAULT_THRESHOLD: f64 = 0.33;

/// The most classes a labelled set may have: labels are stored in a byte.
pub const MAX_CLASSES: usize = 256;

/// The largest image side accepted anywhere (IDX header, image file, `image_size`). An image file declaring more
/// is refused from its header, before anything is decoded (a guard against decompression bombs).
pub const MAX_IMAGE_SIDE: usize = 16_384;

/// The most memory the decoder may allocate for one image file (its decoded pixels included). Converting the
/// decoded image to grey takes at most as much again.
pub const MAX_DECODE_BYTES: u64 = 256 << 20;

/// The largest image file read from a folder set.
pub const MAX_IMAGE_FILE_BYTES: u64 = 64 << 20;

/// The most pixel values on one CSV line: a 256x256 image.
pub const MAX_CSV_PIXELS: usize = 256 * 256;

/// The longest CSV line read: 8 bytes for each value of the largest CSV image and its label (a value is at most 3
/// digits for 8-bit data, plus a comma and perhaps spaces). The bound keeps a file without line breaks (or a
/// decompression bomb) from growing one record without end.
pub const MAX_CSV_LINE: usize = 8 * (MAX_CSV_PIXELS + 1);

/// The image file extensions of a folder set, matched case-insensitively. A GIF's first frame is its image.
pub const IMAGE_EXTENSIONS: [&str; 5] = ["png", "jpg", "jpeg", "bmp", "gif"];

/// The file of class names, one per line, read beside IDX or CSV data.
pub const CLASSES_TXT: &str = "classes.txt";

/// The largest `classes.txt` read (256 names fit easily).
const MAX_CLASSES_TXT_BYTES: u64 = 1 << 20;

/// Where `pixelcnn` looks for data when no `--data` is given and `PIXELCNN_DATA` is unset.
pub const DEFAULT_DATA_DIR: &str = "data/fashion-mnist";

/// Appended to "no data" errors so the user knows how to get out of them.
const NO_DATA_HINT: &str = "run `pixelcnn download` to fetch Fashion-MNIST, or pass --data PATH (or set \
     PIXELCNN_DATA) pointing at a directory of IDX files, a folder of images (one subfolder per class) or a CSV file";

/// Fashion-MNIST's class names, by label. A private copy: the model module will own them once merged.
const FASHION_CLASS_NAMES: [&str; 10] = [
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
];

/// MD5 of the decompressed official `train-labels-idx1-ubyte` (the file whose gzip download.rs checks as
/// 25c81989df183df01b3e8a0aad5dffbe), computed once with `zcat train-labels-idx1-ubyte.gz | md5sum` from
/// ../shared/data/fashion-mnist. Matching it is how an IDX directory is recognized as Fashion-MNIST whatever its
/// name.
const FASHION_TRAIN_LABELS_MD5: &str = "9018921c3c673c538a1fc5bad174d6f9";

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
    /// A folder of image files: class subfolders, optionally under `train/` and `test/`.
    Folder,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Idx => "idx",
            Format::Csv => "csv",
            Format::Amat => "amat",
            Format::Folder => "folder",
        }
    }
}

/// How grey values become 0 or 1: a pixel is 1 when `grey' / max >= threshold`, where `grey'` is `max - grey` when
/// `invert` (dark ink on a light background) and `grey` otherwise, and `max` is the data's maximum value (255 for
/// IDX files, image files and CSV by default; [`LoadOptions::max_value`] for CSV).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Binarize {
    /// In (0, 1].
    pub threshold: f64,
    pub invert: bool,
}

impl Default for Binarize {
    /// Threshold 0.33, not inverted: for 8-bit data exactly the reference's rule (see [`BINARIZE_THRESHOLD`]).
    fn default() -> Self {
        Binarize {
            threshold: DEFAULT_THRESHOLD,
            invert: false,
        }
    }
}

impl Binarize {
    /// An error unless the threshold is in (0, 1] (a threshold of 0 would make every pixel 1).
    pub fn validate(&self) -> Result<()> {
        if !(self.threshold > 0.0 && self.threshold <= 1.0) {
            bail!("the binarization threshold must be in (0, 1], got {}", self.threshold);
        }
        Ok(())
    }

    /// The binary value of `grey` (0..=max) in data whose maximum value is `max` (at least 1).
    pub fn apply(&self, grey: u32, max: u32) -> u8 {
        let grey = if self.invert { max.saturating_sub(grey) } else { grey };
        u8::from(f64::from(grey) / f64::from(max) >= self.threshold)
    }

    /// The binary value of every 8-bit grey, for data whose maximum is 255.
    fn table(&self) -> [u8; 256] {
        std::array::from_fn(|v| self.apply(v as u32, 255))
    }
}

/// Which CSV column holds the label.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelColumn {
    /// The Kaggle layout: `label,pixel1,...`.
    #[default]
    First,
    /// scikit-learn's digits layout: the pixels, then the label.
    Last,
    /// No label column: the set is unlabelled.
    None,
}

impl std::str::FromStr for LabelColumn {
    type Err = anyhow::Error;

    /// "first", "last" or "none" (any case).
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "first" => Ok(LabelColumn::First),
            "last" => Ok(LabelColumn::Last),
            "none" => Ok(LabelColumn::None),
            _ => bail!("label column {s:?}: expected \"first\", \"last\" or \"none\""),
        }
    }
}

/// Parses an image size written `HxW` (height by width, e.g. `28x28`; `X` and `×` also separate), each side
/// 1..=[`MAX_IMAGE_SIDE`].
pub fn parse_image_size(s: &str) -> Result<(usize, usize)> {
    let lower = s.trim().to_ascii_lowercase().replace('×', "x");
    let parsed = lower
        .split_once('x')
        .and_then(|(h, w)| Some((h.trim().parse::<usize>().ok()?, w.trim().parse::<usize>().ok()?)));
    let Some((h, w)) = parsed else {
        bail!("image size {s:?}: expected HxW, e.g. 28x28 (height by width)");
    };
    check_image_size((h, w))?;
    Ok((h, w))
}

fn check_image_size((h, w): (usize, usize)) -> Result<()> {
    if !(1..=MAX_IMAGE_SIDE).contains(&h) || !(1..=MAX_IMAGE_SIDE).contains(&w) {
        bail!("image size {h}x{w}: each side must be 1 to {MAX_IMAGE_SIDE} pixels");
    }
    Ok(())
}

/// How to load a data set. `Default` gives the behaviour of [`load`]. A training run records them (its
/// checkpoint's `train_state`), so that `--resume` loads the same images.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoadOptions {
    /// Fraction of the training images held out for validation (the last ones, as Keras does), in [0, 1).
    pub val_split: f64,
    pub binarize: Binarize,
    /// Height and width. A CSV's image shape (required when its pixel count is not a perfect square); for a folder,
    /// the size every image is resized to (Triangle filter); for IDX and `.amat` data it must equal the files' shape.
    pub image_size: Option<(usize, usize)>,
    /// Class names for IDX or CSV data, by label (they win over a `classes.txt`). Folder sets take their class
    /// names from the folders, so these are not used there (a note says so).
    pub class_names: Option<Vec<String>>,
    /// Where a CSV file's label is. Other formats ignore it (a note says so when it is not the default).
    pub label_column: LabelColumn,
    /// A CSV file's largest pixel value (default 255); larger values are errors. Other formats are 8-bit.
    pub max_value: Option<u32>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            val_split: 0.1,
            binarize: Binarize::default(),
            image_size: None,
            class_names: None,
            label_column: LabelColumn::First,
            max_value: None,
        }
    }
}

/// A set of binarized images and their labels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Split {
    /// `len() * pixels` values, row-major per image, each 0 or 1.
    pub images: Vec<u8>,
    /// One label per image (all 0 in an unlabelled set).
    pub labels: Vec<u8>,
    /// Pixels per image (height times width). 0 only in `Split::default()`, which holds no images.
    pub pixels: usize,
}

impl Split {
    /// An empty split of images of `pixels` pixels.
    pub fn new(pixels: usize) -> Split {
        Split {
            images: Vec::new(),
            labels: Vec::new(),
            pixels,
        }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The binarized pixels of image `i` (panics if `i >= len()`, like slice indexing).
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * self.pixels..(i + 1) * self.pixels]
    }

    /// Fraction of pixels that are 1 (0.0 for an empty split).
    pub fn ones_fraction(&self) -> f64 {
        if self.images.is_empty() {
            return 0.0;
        }
        let ones: u64 = self.images.iter().map(|&v| u64::from(v)).sum();
        ones as f64 / self.images.len() as f64
    }

    /// Number of images of each class `0..classes`. Labels `>= classes` (impossible for loaded data, whose
    /// labels are below its class count) are not counted.
    pub fn label_counts(&self, classes: usize) -> Vec<u64> {
        let mut counts = vec![0u64; classes];
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
            images: self.images[..n * self.pixels].to_vec(),
            labels: self.labels[..n].to_vec(),
            pixels: self.pixels,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Dataset {
    pub format: Format,
    /// Whether the images carry class labels (an unlabelled set has every label 0, and cannot train or evaluate a
    /// class-conditional model).
    pub labelled: bool,
    /// The directory or file the data was loaded from.
    pub source: PathBuf,
    pub height: usize,
    pub width: usize,
    /// One name per class, by label; empty when the set is unlabelled.
    pub class_names: Vec<String>,
    /// How the pixels were binarized. Not used for `.amat` data, which is already binary.
    pub binarize: Binarize,
    /// The data's maximum grey value that [`Binarize`] divides by: 255, or a CSV's `max_value`.
    pub max_value: u32,
    /// Things the user should know (options that did not apply, skipped files, where the test split came from),
    /// for the caller to print.
    pub notes: Vec<String>,
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

    /// Number of classes (0 for an unlabelled set).
    pub fn classes(&self) -> usize {
        self.class_names.len()
    }

    /// Pixels per image.
    pub fn pixels(&self) -> usize {
        self.height * self.width
    }

    fn splits(&self) -> [(&'static str, &Split); 3] {
        [("train", &self.train), ("val", &self.val), ("test", &self.test)]
    }
}

/// Binarizes one 8-bit pixel by the default rule: 0..=84 -> 0, 85..=255 -> 1.
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

/// [`load_with`] with the default options but `val_split`.
pub fn load(path: &Path, val_split: f64) -> Result<Dataset> {
    load_with(
        path,
        &LoadOptions {
            val_split,
            ..LoadOptions::default()
        },
    )
}

/// Loads a data set, binarizing every pixel. `path` is one of:
/// - a directory of `.amat` files (`*train.amat`, `*valid.amat`, `*test.amat`, each plain or `.gz`): three splits of
///   already-binary, unlabelled 28x28 images; `val_split` and the binarization do not apply;
/// - a directory with the IDX files `train-images-idx3-ubyte`, `t10k-images-idx3-ubyte` and, for a labelled set,
///   `train-labels-idx1-ubyte` and `t10k-labels-idx1-ubyte` (each plain or `.gz`): `test` is the t10k set;
/// - any other directory: a folder of images (see [`Format::Folder`] and the README);
/// - a file: a CSV (gzipped if named `.gz`) of one image per line. A CSV holds a single split, so `test` is the
///   whole file and the caller decides what it means.
///
/// The training images are split like Keras' `validation_split`: the first `int(n * (1 - val_split))` images are
/// `train`, the rest `val`.
///
/// Class names (IDX and CSV) come from `opts.class_names`, else a `classes.txt` beside the data (one name per line;
/// blank lines and surrounding spaces ignored), else Fashion-MNIST's names when the data is Fashion-MNIST (its
/// official training labels, or "fashion" in the path), else the label numbers. There are as many classes as the
/// larger of the largest label + 1 and the number of names; fewer names than that is an error.
pub fn load_with(path: &Path, opts: &LoadOptions) -> Result<Dataset> {
    if !(0.0..1.0).contains(&opts.val_split) {
        bail!("validation split must be in [0, 1), got {}", opts.val_split);
    }
    opts.binarize.validate()?;
    if let Some(size) = opts.image_size {
        check_image_size(size)?;
    }
    if opts.max_value == Some(0) {
        bail!("the maximum pixel value must be at least 1");
    }
    let meta = std::fs::metadata(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow!("no data at {}: {NO_DATA_HINT}", path.display())
        } else {
            anyhow!("cannot access {}: {e}", path.display())
        }
    })?;
    let mut ds = if !meta.is_dir() {
        load_csv(path, opts)?
    } else if let Some(files) = find_amat_files(path)? {
        load_amat(path, files, opts)?
    } else if let Some(files) = find_idx_files(path)? {
        load_idx(path, &files, opts)?
    } else {
        load_folder(path, opts)?
    };
    if ds.format != Format::Csv {
        if opts.max_value.is_some() {
            ds.notes.push(format!(
                "the maximum pixel value given applies to CSV files only; {} pixels are 8-bit (0-255)",
                ds.format.as_str()
            ));
        }
        if opts.label_column != LabelColumn::First {
            ds.notes
                .push("the label column given applies to CSV files only".to_string());
        }
    }
    if opts.class_names.is_some() && !ds.labelled {
        ds.notes
            .push("the class names given are not used: the set is unlabelled".to_string());
    }
    Ok(ds)
}

/// A labelled or unlabelled set's splits and description, before the validation split is taken off `train`.
struct Loaded {
    format: Format,
    labelled: bool,
    height: usize,
    width: usize,
    class_names: Vec<String>,
    max_value: u32,
    notes: Vec<String>,
    train: Split,
    test: Split,
}

/// Takes the validation split off the training images (Keras semantics) and builds the data set; an empty
/// training split is an error.
fn finish(path: &Path, opts: &LoadOptions, loaded: Loaded) -> Result<Dataset> {
    let n = loaded.train.len();
    let (train, val) = split_train_val(loaded.train, opts.val_split);
    if train.is_empty() {
        bail!(
            "{}: the training split is empty: validation split {} of {n} training image(s) leaves none; use a \
             smaller validation split",
            path.display(),
            opts.val_split
        );
    }
    Ok(Dataset {
        format: loaded.format,
        labelled: loaded.labelled,
        source: path.to_path_buf(),
        height: loaded.height,
        width: loaded.width,
        class_names: loaded.class_names,
        binarize: opts.binarize,
        max_value: loaded.max_value,
        notes: loaded.notes,
        train,
        val,
        test: loaded.test,
    })
}

/// Keras semantics: `split_at = int(n * (1 - validation_split))`, train = `[:split_at]`, val = the rest.
fn split_train_val(mut full: Split, val_split: f64) -> (Split, Split) {
    let n = full.len();
    let split_at = ((n as f64 * (1.0 - val_split)) as usize).min(n);
    let val = Split {
        images: full.images.split_off(split_at * full.pixels),
        labels: full.labels.split_off(split_at),
        pixels: full.pixels,
    };
    (full, val)
}

// ---------------------------------------------------------------------------------------------------
// Reports

/// How the pixels were binarized, in words.
fn binarization_text(ds: &Dataset) -> String {
    if ds.format == Format::Amat {
        return "already binary (.amat): no threshold applied".to_string();
    }
    let b = ds.binarize;
    let max = ds.max_value;
    if b.invert {
        format!(
            "a pixel is 1 where ({max} - grey) / {max} >= {} (inverted)",
            b.threshold
        )
    } else {
        format!("a pixel is 1 where grey / {max} >= {}", b.threshold)
    }
}

/// Summary as JSON: format, source, shape, class names, binarization, notes, and per split the image count, ones
/// fraction and label counts (one per class name, in the same order).
pub fn report_json(ds: &Dataset) -> serde_json::Value {
    let mut splits = serde_json::Map::new();
    for (name, split) in ds.splits() {
        splits.insert(
            name.to_string(),
            serde_json::json!({
                "images": split.len(),
                "ones_fraction": split.ones_fraction(),
                "label_counts": split.label_counts(ds.classes()),
            }),
        );
    }
    let binarize = if ds.format == Format::Amat {
        serde_json::json!({ "already_binary": true })
    } else {
        serde_json::json!({
            "already_binary": false,
            "threshold": ds.binarize.threshold,
            "invert": ds.binarize.invert,
            "max_value": ds.max_value,
        })
    };
    serde_json::json!({
        "format": ds.format,
        "labelled": ds.labelled,
        "source": ds.source.display().to_string(),
        "height": ds.height,
        "width": ds.width,
        "class_names": ds.class_names,
        "binarize": binarize,
        "notes": ds.notes,
        "splits": splits,
    })
}

/// Human-readable report: the source and shape, the binarization, per split the image count and ones fraction,
/// for a labelled set a table of images per class (by name) and split, and the notes.
pub fn report_text(ds: &Dataset) -> String {
    let kind = if ds.labelled {
        format!("{} classes", ds.classes())
    } else {
        "unlabelled".to_string()
    };
    let mut out = format!(
        "{} data from {}: {}x{} images, {kind}\nbinarization: {}\n",
        ds.format.as_str(),
        ds.source.display(),
        ds.height,
        ds.width,
        binarization_text(ds)
    );
    out.push_str(&format!("{:<6} {:>8} {:>7}\n", "split", "images", "ones"));
    for (name, split) in ds.splits() {
        out.push_str(&format!(
            "{name:<6} {:>8} {:>7.4}\n",
            split.len(),
            split.ones_fraction()
        ));
    }
    if ds.labelled {
        let labels: Vec<String> = ds
            .class_names
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{i} {n}"))
            .collect();
        let width = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0).max(5);
        let counts = ds.splits().map(|(_, s)| s.label_counts(ds.classes()));
        out.push_str(&format!(
            "{:<width$} {:>8} {:>8} {:>8}\n",
            "class", "train", "val", "test"
        ));
        for (c, label) in labels.iter().enumerate() {
            out.push_str(&format!(
                "{label:<width$} {:>8} {:>8} {:>8}\n",
                counts[0][c], counts[1][c], counts[2][c]
            ));
        }
    }
    for note in &ds.notes {
        out.push_str(&format!("note: {note}\n"));
    }
    out
}

// ---------------------------------------------------------------------------------------------------
// Class names (IDX and CSV)

/// Picks the class names of a labelled IDX or CSV set whose largest label is `max_label` (see [`load_with`] for the
/// order of the sources). `first_label_at_least(n)` describes the first record with a label `>= n`, for the error
/// when there are fewer names than labels.
fn choose_class_names(
    opts: &LoadOptions,
    classes_txt: &Path,
    is_fashion: bool,
    max_label: u8,
    first_label_at_least: &dyn Fn(usize) -> String,
    notes: &mut Vec<String>,
) -> Result<Vec<String>> {
    let needed = usize::from(max_label) + 1;
    let (names, origin) = if let Some(given) = &opts.class_names {
        let names = given.iter().map(|n| (n.trim().to_string(), None)).collect();
        (
            check_class_names(names, "the class names given")?,
            "the class names given".to_string(),
        )
    } else if std::fs::symlink_metadata(classes_txt).is_ok() {
        (read_classes_txt(classes_txt)?, classes_txt.display().to_string())
    } else if is_fashion && needed <= FASHION_CLASS_NAMES.len() {
        return Ok(FASHION_CLASS_NAMES.iter().map(|n| n.to_string()).collect());
    } else {
        if is_fashion {
            notes.push(format!(
                "the data looks like Fashion-MNIST but has labels up to {max_label}, so the classes are named by number"
            ));
        }
        return Ok((0..needed).map(|c| c.to_string()).collect());
    };
    if names.len() < needed {
        bail!(
            "{origin} names {} classes, but the data has more: {}; give one name per label 0-{max_label}",
            names.len(),
            first_label_at_least(names.len())
        );
    }
    Ok(names)
}

/// Reads `classes.txt`: one name per line, surrounding spaces trimmed, blank lines skipped.
fn read_classes_txt(path: &Path) -> Result<Vec<String>> {
    let bytes = crate::fsio::read_regular(path, "class names file", MAX_CLASSES_TXT_BYTES)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let line = 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        anyhow!("{}: line {line} is not valid UTF-8 text", path.display())
    })?;
    let names = text
        .lines()
        .enumerate()
        .map(|(i, l)| (l.trim().to_string(), Some(i + 1)))
        .filter(|(n, _)| !n.is_empty())
        .collect();
    let names = check_class_names(names, &path.display().to_string())?;
    if names.is_empty() {
        bail!("{}: no class names (expected one per line)", path.display());
    }
    Ok(names)
}

/// Checks (name, line) pairs: at most [`MAX_CLASSES`], none empty, none repeated (a repeated name would make two
/// classes indistinguishable in reports and one folder in an export).
fn check_class_names(names: Vec<(String, Option<usize>)>, origin: &str) -> Result<Vec<String>> {
    if names.len() > MAX_CLASSES {
        bail!(
            "{origin}: {} class names, more than the limit of {MAX_CLASSES} classes",
            names.len()
        );
    }
    let at = |i: usize, line: Option<usize>| match line {
        Some(l) => format!("line {l}"),
        None => format!("name {}", i + 1),
    };
    for (i, (name, line)) in names.iter().enumerate() {
        if name.is_empty() {
            bail!("{origin}: {} is an empty class name", at(i, *line));
        }
        if let Some(j) = names[..i].iter().position(|(n, _)| n == name) {
            bail!(
                "{origin}: class name {name:?} appears twice ({} and {})",
                at(j, names[j].1),
                at(i, *line)
            );
        }
    }
    Ok(names.into_iter().map(|(n, _)| n).collect())
}

/// Whether the path names Fashion-MNIST ("fashion" anywhere in it, any case).
fn path_says_fashion(path: &Path) -> bool {
    path.to_string_lossy().to_lowercase().contains("fashion")
}

/// The `classes.txt` beside a file or in a directory.
fn classes_txt_in(dir: &Path) -> PathBuf {
    if dir.as_os_str().is_empty() {
        PathBuf::from(CLASSES_TXT)
    } else {
        dir.join(CLASSES_TXT)
    }
}

// ---------------------------------------------------------------------------------------------------
// IDX

/// The IDX files of a directory: both image files, and both label files for a labelled set.
struct IdxFiles {
    train_images: PathBuf,
    test_images: PathBuf,
    /// (train, test) label files; None for an unlabelled set.
    labels: Option<(PathBuf, PathBuf)>,
}

/// The IDX files of `dir`, or None when it holds none of the four names. Both image files are required; the label
/// files are optional, but one without the other is an error naming the missing one.
fn find_idx_files(dir: &Path) -> Result<Option<IdxFiles>> {
    let names = [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS];
    let [train_images, train_labels, test_images, test_labels] = names.map(|name| find_idx_file(dir, name));
    if [&train_images, &train_labels, &test_images, &test_labels]
        .iter()
        .all(|f| f.is_none())
    {
        return Ok(None);
    }
    let gz_hint = "(each may also be gzipped with a .gz suffix)";
    let missing_images: Vec<&str> = [(TRAIN_IMAGES, &train_images), (TEST_IMAGES, &test_images)]
        .iter()
        .filter(|(_, f)| f.is_none())
        .map(|(n, _)| *n)
        .collect();
    if !missing_images.is_empty() {
        bail!(
            "{}: missing {} {gz_hint}; {NO_DATA_HINT}",
            dir.display(),
            missing_images.join(" and ")
        );
    }
    let labels = match (train_labels, test_labels) {
        (Some(train), Some(test)) => Some((train, test)),
        (None, None) => None,
        (train, _) => {
            let (missing, present) = if train.is_none() {
                (TRAIN_LABELS, TEST_LABELS)
            } else {
                (TEST_LABELS, TRAIN_LABELS)
            };
            bail!(
                "{}: missing {missing} {gz_hint}, though {present} is there: give both label files for a labelled \
                 set, or neither for an unlabelled one",
                dir.display()
            );
        }
    };
    Ok(Some(IdxFiles {
        train_images: train_images.expect("checked above"),
        test_images: test_images.expect("checked above"),
        labels,
    }))
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

fn load_idx(dir: &Path, files: &IdxFiles, opts: &LoadOptions) -> Result<Dataset> {
    let train = read_idx(&files.train_images, IdxKind::Images)?;
    let test = read_idx(&files.test_images, IdxKind::Images)?;
    if test.shape != train.shape {
        bail!(
            "{}: images are {}x{}, but {} holds {}x{} images; the training and test images must have one shape",
            files.test_images.display(),
            test.shape.0,
            test.shape.1,
            files.train_images.display(),
            train.shape.0,
            train.shape.1
        );
    }
    let (height, width) = train.shape;
    if let Some((h, w)) = opts.image_size {
        if (h, w) != (height, width) {
            bail!(
                "{}: images are {height}x{width}, but the image size asked for is {h}x{w} (IDX images are not \
                 resized)",
                files.train_images.display()
            );
        }
    }
    let mut notes = Vec::new();
    let (labelled, train_labels, test_labels, class_names) = match &files.labels {
        None => {
            let zeros = |n: usize| vec![0u8; n];
            (false, zeros(train.count), zeros(test.count), Vec::new())
        }
        Some((train_path, test_path)) => {
            let train_labels = read_labels_for(train_path, &files.train_images, train.count)?;
            let test_labels = read_labels_for(test_path, &files.test_images, test.count)?;
            let max_label = train_labels.iter().chain(&test_labels).copied().max().unwrap_or(0);
            // The first record with a label >= n, for the error when there are fewer names than labels.
            let first_at_least = |n: usize| {
                let find = |labels: &[u8], path: &Path| {
                    labels.iter().position(|&l| usize::from(l) >= n).map(|i| {
                        format!(
                            "{} has label {} (record {i}, byte offset {})",
                            path.display(),
                            labels[i],
                            IdxKind::Labels.header_len() + i
                        )
                    })
                };
                find(&train_labels, train_path)
                    .or_else(|| find(&test_labels, test_path))
                    .unwrap_or_default()
            };
            let is_fashion = path_says_fashion(dir) || is_fashion_train_labels(&train_labels);
            let names = choose_class_names(
                opts,
                &classes_txt_in(dir),
                is_fashion,
                max_label,
                &first_at_least,
                &mut notes,
            )?;
            (true, train_labels, test_labels, names)
        }
    };
    let table = opts.binarize.table();
    let binarized = |payload: Vec<u8>, labels: Vec<u8>| Split {
        images: payload.into_iter().map(|v| table[usize::from(v)]).collect(),
        labels,
        pixels: height * width,
    };
    let loaded = Loaded {
        format: Format::Idx,
        labelled,
        height,
        width,
        class_names,
        max_value: 255,
        notes,
        train: binarized(train.payload, train_labels),
        test: binarized(test.payload, test_labels),
    };
    finish(dir, opts, loaded)
}

/// Reads a label file and checks it has one label per image of `images_path`.
fn read_labels_for(labels_path: &Path, images_path: &Path, images: usize) -> Result<Vec<u8>> {
    let labels = read_idx(labels_path, IdxKind::Labels)?;
    if labels.count != images {
        bail!(
            "{} has {images} images but {} has {} labels",
            images_path.display(),
            labels_path.display(),
            labels.count
        );
    }
    Ok(labels.payload)
}

/// Whether `labels` are the official Fashion-MNIST training labels: the MD5 of the file they came from (header
/// and payload) is the official one.
fn is_fashion_train_labels(labels: &[u8]) -> bool {
    use md5::{Digest, Md5};
    let mut md5 = Md5::new();
    md5.update(LABELS_MAGIC.to_be_bytes());
    md5.update((labels.len() as u32).to_be_bytes());
    md5.update(labels);
    let digest: String = md5.finalize().iter().map(|b| format!("{b:02x}")).collect();
    digest == FASHION_TRAIN_LABELS_MD5
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
    fn record_name(self) -> &'static str {
        match self {
            IdxKind::Images => "image",
            IdxKind::Labels => "label",
        }
    }
}

/// One IDX file's records.
struct IdxData {
    /// `count` records, each `shape.0 * shape.1` bytes (images) or one byte (labels).
    payload: Vec<u8>,
    count: usize,
    /// Rows and columns of an image; (1, 1) for labels.
    shape: (usize, usize),
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
/// the raw payload after the header.
fn read_idx(path: &Path, kind: IdxKind) -> Result<IdxData> {
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
    let shape = match kind {
        IdxKind::Images => {
            let (rows, cols) = (word(2), word(3));
            let side_ok = |s: u32| (1..=MAX_IMAGE_SIDE as u64).contains(&u64::from(s));
            if !side_ok(rows) || !side_ok(cols) {
                bail!(
                    "{}: images are {rows}x{cols} (header bytes 8-15); each side must be 1 to {MAX_IMAGE_SIDE}",
                    path.display()
                );
            }
            (rows as usize, cols as usize)
        }
        IdxKind::Labels => (1, 1),
    };
    let count = word(1);
    if count == 0 {
        bail!("{}: header declares 0 {}s", path.display(), kind.record_name());
    }

    // Check the size the header implies against the file before allocating for it. At most 2^32 records of
    // 2^28 bytes: no overflow in u64.
    let record_len = (shape.0 * shape.1) as u64;
    let payload_len = u64::from(count) * record_len;
    let total_len = payload_len + header_len as u64;
    let declared = match kind {
        IdxKind::Images => format!(
            "header declares {count} images of {}x{} pixels ({total_len} {what})",
            shape.0, shape.1
        ),
        IdxKind::Labels => format!("header declares {count} labels ({total_len} {what})"),
    };
    let mismatch = |actual: u64| size_mismatch(path, kind, record_len, &declared, actual, total_len, gz);
    if !gz && file_len != total_len {
        return Err(mismatch(file_len));
    }
    if gz && total_len > file_len.saturating_mul(MAX_DEFLATE_RATIO) {
        bail!(
            "{}: {declared}, but a {file_len}-byte gzip file cannot hold that much; the header is corrupt",
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
        return Err(mismatch(actual_len));
    }
    Ok(IdxData {
        payload,
        count: count as usize,
        shape,
    })
}

/// The error for a file whose length disagrees with its header: truncated or with trailing data.
fn size_mismatch(
    path: &Path,
    kind: IdxKind,
    record_len: u64,
    declared: &str,
    actual: u64,
    expected: u64,
    gz: bool,
) -> anyhow::Error {
    if actual < expected {
        let header_len = kind.header_len() as u64;
        let complete = actual.saturating_sub(header_len) / record_len;
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

/// Loads an `.amat` directory's three splits. Its images are already binary, so the binarization options do not
/// apply (a note says so when they are not the defaults), and neither does `val_split`: the files hold their own
/// validation split.
fn load_amat(dir: &Path, files: [PathBuf; 3], opts: &LoadOptions) -> Result<Dataset> {
    if let Some((h, w)) = opts.image_size {
        if (h, w) != (IMAGE_SIZE, IMAGE_SIZE) {
            bail!(
                "{}: .amat images are {IMAGE_SIZE}x{IMAGE_SIZE}, but the image size asked for is {h}x{w} (.amat \
                 images are not resized)",
                dir.display()
            );
        }
    }
    let [train, val, test] = files.map(|f| read_amat(&f));
    let mut notes = Vec::new();
    if opts.binarize != Binarize::default() {
        notes
            .push("the binarization threshold and inversion do not apply: .amat images are already binary".to_string());
    }
    Ok(Dataset {
        format: Format::Amat,
        labelled: false,
        source: dir.to_path_buf(),
        height: IMAGE_SIZE,
        width: IMAGE_SIZE,
        class_names: Vec::new(),
        binarize: opts.binarize,
        max_value: 1,
        notes,
        train: train?,
        val: val?,
        test: test?,
    })
}

/// Reads one `.amat` file (gzipped if named `.gz`): one image per line, [`PIXELS`] values `0` or `1` separated by
/// spaces or tabs (a trailing `\r` and blank lines are allowed). Every other value, a line of the wrong length and
/// a line longer than [`MAX_CSV_LINE`] are errors naming the line.
fn read_amat(path: &Path) -> Result<Split> {
    let (file, file_len) = open_nonempty(path)?;
    let gz = path.extension().is_some_and(|e| e == "gz");
    let mut reader = BufReader::with_capacity(1 << 16, decompressed(file, gz));
    let limit = file_len.saturating_mul(if gz { MAX_DEFLATE_RATIO } else { 1 });
    let mut split = Split::new(PIXELS);
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

/// A CSV file's records, parsed and binarized.
struct CsvData {
    split: Split,
    /// For each label value, the line it first occurs on (0: never), for error messages.
    first_line_of_label: [u64; MAX_CLASSES],
}

/// Loads a CSV file (gzipped if named `*.gz`) of one image per line: the label (first, last or absent, as
/// `opts.label_column` says) and the pixels, integers 0..=max. An optional header line comes first: it is a header
/// when its first field is "label" or none of its fields is an integer. Every line must have the same number of
/// columns. The image shape is `opts.image_size`, else the square root of the pixel count when that is a whole
/// number. The whole file is also the `test` split: a CSV holds a single split.
fn load_csv(path: &Path, opts: &LoadOptions) -> Result<Dataset> {
    let max_value = opts.max_value.unwrap_or(255);
    let labelled = opts.label_column != LabelColumn::None;
    let data = read_csv(path, opts.label_column, max_value, opts.binarize)?;
    let pixels = data.split.pixels;
    let (height, width) = match opts.image_size {
        Some((h, w)) if h * w == pixels => (h, w),
        Some((h, w)) => bail!(
            "{}: the lines hold {pixels} pixel values, but the image size asked for, {h}x{w}, is {} pixels",
            path.display(),
            h * w
        ),
        None => match (1..=pixels).find(|s| s * s >= pixels) {
            Some(side) if side * side == pixels => (side, side),
            _ => bail!(
                "{}: the lines hold {pixels} pixel values, which is not a square image; give the image shape \
                 (--image-size HxW)",
                path.display()
            ),
        },
    };
    let mut notes = Vec::new();
    let class_names = if labelled {
        let max_label = data.split.labels.iter().copied().max().unwrap_or(0);
        let first_at_least = |n: usize| {
            let lines = &data.first_line_of_label;
            match (n..MAX_CLASSES).filter(|&l| lines[l] > 0).min_by_key(|&l| lines[l]) {
                Some(l) => format!("{} has label {l} on line {}", path.display(), lines[l]),
                None => path.display().to_string(),
            }
        };
        let dir = path.parent().unwrap_or(Path::new(""));
        choose_class_names(
            opts,
            &classes_txt_in(dir),
            path_says_fashion(path),
            max_label,
            &first_at_least,
            &mut notes,
        )?
    } else {
        Vec::new()
    };
    let loaded = Loaded {
        format: Format::Csv,
        labelled,
        height,
        width,
        class_names,
        max_value,
        notes,
        train: data.split.clone(),
        test: data.split,
    };
    finish(path, opts, loaded)
}

fn read_csv(path: &Path, label_column: LabelColumn, max_value: u32, binarize: Binarize) -> Result<CsvData> {
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

    let label_count = usize::from(label_column != LabelColumn::None);
    let layout = match label_column {
        LabelColumn::First => "a label and then the pixels",
        LabelColumn::Last => "the pixels and then a label",
        LabelColumn::None => "the pixels (no label column)",
    };
    // Set by the first line: its column count, and whether it is a header.
    let mut columns: Option<(usize, u64, bool)> = None;
    let mut data = CsvData {
        split: Split::default(),
        first_line_of_label: [0; MAX_CLASSES],
    };
    let mut record = csv::ByteRecord::new();
    loop {
        match csv.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => bail!("{}: {}", path.display(), describe_csv_error(&e)),
        }
        let line = record.position().map_or(0, |p| p.line());
        let (expected, first_line, header) = match columns {
            Some(c) => c,
            None => {
                let header = record
                    .get(0)
                    .is_some_and(|f| f.trim_ascii().eq_ignore_ascii_case(b"label"))
                    || record.iter().all(|f| parse_value(f).is_none());
                let pixels = record.len().saturating_sub(label_count);
                if pixels == 0 || pixels > MAX_CSV_PIXELS {
                    bail!(
                        "{}: line {line} has {} columns, so {pixels} pixel values; expected {layout}, 1 to \
                         {MAX_CSV_PIXELS} pixels (a 256x256 image at most)",
                        path.display(),
                        record.len()
                    );
                }
                data.split.pixels = pixels;
                columns = Some((record.len(), line, header));
                if header {
                    continue;
                }
                (record.len(), line, header)
            }
        };
        if record.len() != expected {
            let reference = if header {
                format!("the header (line {first_line}) has {expected}")
            } else {
                format!("line {first_line} has {expected}")
            };
            bail!(
                "{}: line {line} has {} columns, but {reference}; every line holds {layout}",
                path.display(),
                record.len()
            );
        }
        let label_at = match label_column {
            LabelColumn::First => Some(0),
            LabelColumn::Last => Some(expected - 1),
            LabelColumn::None => None,
        };
        let mut pixel = 0;
        for (col, field) in record.iter().enumerate() {
            let is_label = Some(col) == label_at;
            let max = if is_label { MAX_CLASSES as u32 - 1 } else { max_value };
            let Some(value) = parse_value(field).filter(|&v| v <= max) else {
                let what = if is_label {
                    "label".to_string()
                } else {
                    format!("pixel{}", pixel + 1)
                };
                bail!(
                    "{}: line {line}, column {} ({what}): {:?} is not an integer in 0-{max}",
                    path.display(),
                    col + 1,
                    String::from_utf8_lossy(&field[..field.len().min(40)])
                );
            };
            if is_label {
                data.split.labels.push(value as u8);
                let first = &mut data.first_line_of_label[value as usize];
                if *first == 0 {
                    *first = line;
                }
            } else {
                data.split.images.push(binarize.apply(value, max_value));
                pixel += 1;
            }
        }
        if label_at.is_none() {
            data.split.labels.push(0);
        }
    }
    if data.split.is_empty() {
        bail!("{}: no data rows (expected lines of {layout})", path.display());
    }
    Ok(data)
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

/// The error [`LineLimit`] reports.
#[derive(Debug)]
struct LineTooLong {
    line: u64,
}

impl std::fmt::Display for LineTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {} is longer than {MAX_CSV_LINE} bytes (the longest line of an image CSV: a label and \
             {MAX_CSV_PIXELS} values); is this an image CSV file?",
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

// ---------------------------------------------------------------------------------------------------
// Folder of images

/// What a directory entry of a folder set is, after following a symbolic link.
#[derive(Clone, Copy, PartialEq, Eq)]
enum EntryKind {
    Folder,
    Image,
}

struct Entry {
    name: OsString,
    path: PathBuf,
    kind: EntryKind,
}

/// The walk through a folder set: it lists only the directories it needs (the root, `train/` and `test/`, the
/// class folders), never recursing further, so it is deterministic and cannot loop. A symbolic link is followed
/// only when it resolves to something inside the root.
struct Walk {
    /// The root with its links resolved, to tell whether a link's target is inside it.
    real_root: PathBuf,
    /// Hidden files, and files that are not images by their extension.
    skipped_files: Vec<PathBuf>,
    /// Hidden folders, and folders inside class folders (not searched).
    skipped_folders: Vec<PathBuf>,
}

impl Walk {
    fn new(root: &Path) -> Result<Walk> {
        let real_root =
            std::fs::canonicalize(root).map_err(|e| anyhow!("cannot resolve the folder {}: {e}", root.display()))?;
        Ok(Walk {
            real_root,
            skipped_files: Vec::new(),
            skipped_folders: Vec::new(),
        })
    }

    /// The folders and image files directly in `dir`, sorted by name (byte order). Hidden entries (a leading '.')
    /// and files without an image extension are skipped and counted. Every other symbolic link must resolve to
    /// something inside the root: a link that cannot be resolved (dangling, or a loop) or that leads outside is an
    /// error naming it.
    fn list(&mut self, dir: &Path) -> Result<Vec<Entry>> {
        let cannot_list = |e: std::io::Error| anyhow!("cannot list {}: {e}", dir.display());
        let mut listed = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(cannot_list)? {
            let entry = entry.map_err(cannot_list)?;
            listed.push((entry.file_name(), entry.path(), entry.file_type()));
        }
        // Sorted before anything is resolved, so that of several bad entries the same one is reported every time,
        // whatever order the file system lists them in.
        listed.sort_by(|a, b| a.0.as_encoded_bytes().cmp(b.0.as_encoded_bytes()));
        let mut entries = Vec::new();
        for (name, path, file_type) in listed {
            let file_type = file_type.map_err(|e| anyhow!("cannot inspect {}: {e}", path.display()))?;
            if name.as_encoded_bytes().first() == Some(&b'.') {
                if file_type.is_dir() {
                    self.skipped_folders.push(path);
                } else {
                    self.skipped_files.push(path);
                }
                continue;
            }
            let is_dir = if file_type.is_symlink() {
                let target = std::fs::canonicalize(&path).map_err(|e| {
                    anyhow!(
                        "{}: cannot resolve this symbolic link (dangling, or part of a loop?): {e}",
                        path.display()
                    )
                })?;
                if !target.starts_with(&self.real_root) {
                    bail!(
                        "{} is a symbolic link to {}, outside the data folder {}; links are followed only within \
                         it",
                        path.display(),
                        target.display(),
                        self.real_root.display()
                    );
                }
                std::fs::metadata(&target)
                    .map_err(|e| anyhow!("{}: cannot inspect the link's target: {e}", path.display()))?
                    .is_dir()
            } else {
                file_type.is_dir()
            };
            if is_dir {
                entries.push(Entry {
                    name,
                    path,
                    kind: EntryKind::Folder,
                });
            } else if has_image_extension(&name) {
                entries.push(Entry {
                    name,
                    path,
                    kind: EntryKind::Image,
                });
            } else {
                self.skipped_files.push(path);
            }
        }
        Ok(entries)
    }
}

fn has_image_extension(name: &OsStr) -> bool {
    Path::new(name)
        .extension()
        .and_then(OsStr::to_str)
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// One image file of a folder set, before decoding.
struct ImageFile {
    name: OsString,
    class: usize,
    path: PathBuf,
}

/// The images of one split folder (the root, `train/` or `test/`), in load order.
struct FolderSplit {
    dir: PathBuf,
    /// The class folders' names, sorted; None when the images are directly in the folder (unlabelled).
    classes: Option<Vec<String>>,
    files: Vec<ImageFile>,
}

/// Reads one split folder whose entries are `entries`: either class folders (each holding images) or images, not
/// both. The load order is by file name (byte order), ties broken by class index, so that classes are not grouped.
fn scan_split(walk: &mut Walk, dir: &Path, entries: Vec<Entry>, hint: &str) -> Result<FolderSplit> {
    let (folders, images): (Vec<Entry>, Vec<Entry>) = entries.into_iter().partition(|e| e.kind == EntryKind::Folder);
    let extensions = IMAGE_EXTENSIONS.map(|e| format!(".{e}")).join("/");
    let mut files = Vec::new();
    let classes = match (folders.first(), images.first()) {
        (None, None) => bail!(
            "{}: no images: neither {extensions} files nor class folders{hint}",
            dir.display()
        ),
        (Some(folder), Some(image)) => bail!(
            "{}: holds both class folders (such as {}) and images outside them (such as {}); put every image in \
             its class folder",
            dir.display(),
            folder.path.display(),
            image.path.display()
        ),
        (None, Some(_)) => {
            files.extend(images.into_iter().map(|e| ImageFile {
                name: e.name,
                class: 0,
                path: e.path,
            }));
            None
        }
        (Some(_), None) => {
            if folders.len() > MAX_CLASSES {
                bail!(
                    "{}: {} class folders, more than the limit of {MAX_CLASSES} classes",
                    dir.display(),
                    folders.len()
                );
            }
            let mut names = Vec::with_capacity(folders.len());
            for (class, folder) in folders.into_iter().enumerate() {
                let Some(name) = folder.name.to_str() else {
                    bail!(
                        "{}: the class folder name {:?} is not valid UTF-8; class names must be text",
                        folder.path.display(),
                        folder.name.to_string_lossy()
                    );
                };
                names.push(name.to_string());
                let before = files.len();
                for entry in walk.list(&folder.path)? {
                    match entry.kind {
                        EntryKind::Folder => walk.skipped_folders.push(entry.path),
                        EntryKind::Image => files.push(ImageFile {
                            name: entry.name,
                            class,
                            path: entry.path,
                        }),
                    }
                }
                if files.len() == before {
                    bail!(
                        "{}: empty class folder (no {extensions} images in it)",
                        folder.path.display()
                    );
                }
            }
            Some(names)
        }
    };
    files.sort_by(|a, b| {
        a.name
            .as_encoded_bytes()
            .cmp(b.name.as_encoded_bytes())
            .then(a.class.cmp(&b.class))
    });
    Ok(FolderSplit {
        dir: dir.to_path_buf(),
        classes,
        files,
    })
}

/// Loads a folder of images: class subfolders (their sorted names are the class names), or images directly in it
/// (unlabelled), optionally under `train/` and `test/`. Without a `test/` folder the test split is the validation
/// images.
fn load_folder(root: &Path, opts: &LoadOptions) -> Result<Dataset> {
    let mut walk = Walk::new(root)?;
    let entries = walk.list(root)?;
    let is_folder = |e: &Entry, name: &str| e.kind == EntryKind::Folder && e.name == name;
    let train_dir = entries.iter().find(|e| is_folder(e, "train")).map(|e| e.path.clone());
    let test_dir = entries.iter().find(|e| is_folder(e, "test")).map(|e| e.path.clone());
    let mut notes = Vec::new();
    if walk
        .skipped_files
        .iter()
        .any(|p| p.file_name() == Some(OsStr::new(CLASSES_TXT)))
    {
        notes.push(format!(
            "{CLASSES_TXT} is not used: a folder set's class names are its folder names"
        ));
    }
    let (train, test) = match (&train_dir, &test_dir) {
        (Some(train_dir), _) => {
            if let Some(other) = entries.iter().find(|e| !is_folder(e, "train") && !is_folder(e, "test")) {
                bail!(
                    "{}: holds train/ and also {}; with train/ (and test/) split folders, every image and class \
                     folder goes inside them",
                    root.display(),
                    other.path.display()
                );
            }
            let listed = walk.list(train_dir)?;
            let train = scan_split(&mut walk, train_dir, listed, "")?;
            let test = match test_dir {
                Some(dir) => {
                    let listed = walk.list(&dir)?;
                    Some(scan_split(&mut walk, &dir, listed, "")?)
                }
                None => None,
            };
            (train, test)
        }
        (None, Some(test_dir)) => bail!(
            "{}: has a test/ folder but no train/ folder; put the training images in train/ (a class cannot be \
             called \"test\")",
            test_dir.display()
        ),
        (None, None) => {
            let hint = format!("; {NO_DATA_HINT}");
            (scan_split(&mut walk, root, entries, &hint)?, None)
        }
    };
    if opts.class_names.is_some() && train.classes.is_some() {
        notes.push("the class names given are not used: a folder set's class names are its folder names".into());
    }
    let mut test = test;
    if let Some(test) = &mut test {
        match (&train.classes, &test.classes) {
            (Some(train_classes), Some(test_classes)) => {
                let mut index = Vec::with_capacity(test_classes.len());
                for name in test_classes {
                    let Some(i) = train_classes.iter().position(|n| n == name) else {
                        bail!(
                            "{}: class {name:?} is in {} but not in {}; the test classes must be training classes",
                            test.dir.join(name).display(),
                            test.dir.display(),
                            train.dir.display()
                        );
                    };
                    index.push(i);
                }
                // Both class lists are sorted, so this keeps the test images' order.
                test.files.iter_mut().for_each(|f| f.class = index[f.class]);
            }
            (None, None) => {}
            (train_classes, _) => {
                let (with, without) = if train_classes.is_some() {
                    (&train.dir, &test.dir)
                } else {
                    (&test.dir, &train.dir)
                };
                bail!(
                    "{} holds class folders but {} holds images without them; both splits need the same layout",
                    with.display(),
                    without.display()
                );
            }
        }
    }

    let mut decoder = FolderDecoder {
        opts,
        size: opts.image_size.map(|(h, w)| (w as u32, h as u32, PathBuf::new())),
        resized: 0,
    };
    let train_split = decoder.decode_all(&train.files)?;
    let test_split = match &test {
        Some(t) => Some(decoder.decode_all(&t.files)?),
        None => None,
    };
    let (width, height) = decoder
        .size
        .as_ref()
        .map_or((0, 0), |(w, h, _)| (*w as usize, *h as usize));
    if decoder.resized > 0 {
        notes.push(format!(
            "{} images resized to {height}x{width} (Triangle filter)",
            decoder.resized
        ));
    }
    let labelled = train.classes.is_some();
    let has_test = test_split.is_some();
    let loaded = Loaded {
        format: Format::Folder,
        labelled,
        height,
        width,
        class_names: train.classes.unwrap_or_default(),
        max_value: 255,
        notes,
        train: train_split,
        test: test_split.unwrap_or_default(),
    };
    let mut ds = finish(root, opts, loaded)?;
    if !has_test {
        ds.test = ds.val.clone();
        ds.notes.push(format!(
            "no test/ folder: all images are training images, and the test split is the validation images ({})",
            ds.val.len()
        ));
    }
    // A validation split that misses most classes usually means file names grouped by class (cat_001, dog_001…).
    if labelled && ds.classes() >= 2 && !ds.val.is_empty() {
        let covered = ds.val.label_counts(ds.classes()).iter().filter(|&&c| c > 0).count();
        if 2 * covered <= ds.classes() {
            ds.notes.push(format!(
                "the validation split (the last {} training images in file-name order) holds only {covered} of the \
                 {} classes: the file names seem to group the images by class. Name the files so that their order \
                 mixes the classes, or give a test/ folder and --val-split 0 to validate on the test images",
                ds.val.len(),
                ds.classes()
            ));
        }
    }
    if !walk.skipped_files.is_empty() {
        ds.notes.push(format!(
            "skipped {} files that are hidden or not {} images (such as {})",
            walk.skipped_files.len(),
            IMAGE_EXTENSIONS.join("/"),
            walk.skipped_files[0].display()
        ));
    }
    if !walk.skipped_folders.is_empty() {
        ds.notes.push(format!(
            "skipped {} folders that are hidden or inside class folders, not searched (such as {})",
            walk.skipped_folders.len(),
            walk.skipped_folders[0].display()
        ));
    }
    Ok(ds)
}

/// Decodes a folder set's images into binarized pixels, checking (or making, by resizing) that they all have one
/// size.
struct FolderDecoder<'a> {
    opts: &'a LoadOptions,
    /// (width, height) every image must have, and the file that set it (empty when `image_size` did).
    size: Option<(u32, u32, PathBuf)>,
    resized: usize,
}

impl FolderDecoder<'_> {
    fn decode_all(&mut self, files: &[ImageFile]) -> Result<Split> {
        let mut split = Split::new(0);
        for file in files {
            let (w, h, levels) = decode_levels(&file.path, self.opts.binarize.invert)?;
            let levels = match &self.size {
                None => {
                    self.size = Some((w, h, file.path.clone()));
                    levels
                }
                Some((sw, sh, _)) if (*sw, *sh) == (w, h) => levels,
                Some((sw, sh, _)) if self.opts.image_size.is_some() => {
                    // Resampled in the binarization space (inverted and alpha-composited), so a transparent
                    // border blends as background.
                    let image = image::GrayImage::from_raw(w, h, levels).expect("w * h levels");
                    self.resized += 1;
                    image::imageops::resize(&image, *sw, *sh, image::imageops::FilterType::Triangle).into_raw()
                }
                Some((sw, sh, first)) => bail!(
                    "{}: the image is {h}x{w} (height x width), but {} is {sh}x{sw}; the images of a folder set \
                     must have one size, unless an image size is given (--image-size HxW) to resize them to",
                    file.path.display(),
                    first.display()
                ),
            };
            let threshold = Binarize {
                threshold: self.opts.binarize.threshold,
                invert: false, // applied by decode_levels
            };
            split
                .images
                .extend(levels.into_iter().map(|v| threshold.apply(u32::from(v), 255)));
            split.labels.push(file.class as u8);
        }
        if let Some((w, h, _)) = &self.size {
            split.pixels = *w as usize * *h as usize;
        }
        Ok(split)
    }
}

/// Decodes one image file into its width, height and one 8-bit level per pixel, row-major, in the space the
/// threshold applies to: the grey (Rec. 709 luma of a colour image, 16-bit scaled to 8), inverted when `invert`,
/// times the pixel's opacity. A transparent pixel is therefore background (level 0, binarized to 0) with or without
/// inversion: the image is composited onto black, or onto white when inverting. The size is checked from the
/// header, before decoding, against [`MAX_IMAGE_SIDE`]; decoding may allocate at most [`MAX_DECODE_BYTES`]. A JPEG's
/// EXIF orientation is not applied: the pixels are taken as stored.
fn decode_levels(path: &Path, invert: bool) -> Result<(u32, u32, Vec<u8>)> {
    use image::ImageDecoder;
    let bytes = crate::fsio::read_regular(path, "data image", MAX_IMAGE_FILE_BYTES)?;
    let mut reader = image::ImageReader::new(Cursor::new(&bytes[..]));
    // The extension is the fallback; the content decides when it is recognizable (a PNG named .jpg loads).
    if let Some(format) = path.extension().and_then(image::ImageFormat::from_extension) {
        reader.set_format(format);
    }
    let mut reader = reader
        .with_guessed_format()
        .map_err(|e| anyhow!("{}: cannot read: {e}", path.display()))?;
    let format = reader
        .format()
        .map_or_else(|| "image".to_string(), |f| format!("{f:?}").to_uppercase());
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let not_an_image = |e: image::ImageError| anyhow!("{}: not a valid {format} image: {e}", path.display());
    // Reads the header only.
    let decoder = reader.into_decoder().map_err(not_an_image)?;
    let (w, h) = decoder.dimensions();
    if w as usize > MAX_IMAGE_SIDE || h as usize > MAX_IMAGE_SIDE {
        bail!(
            "{}: the image declares {w}x{h} pixels (width x height); the limit is {MAX_IMAGE_SIDE} a side, so it \
             is not decoded (a guard against decompression bombs)",
            path.display()
        );
    }
    if w == 0 || h == 0 {
        bail!("{}: the image declares {w}x{h} pixels: it is empty", path.display());
    }
    let needed = decoder.total_bytes();
    if needed > MAX_DECODE_BYTES {
        bail!(
            "{}: decoding the {w}x{h} image would take {} MiB, over the limit of {} MiB",
            path.display(),
            needed >> 20,
            MAX_DECODE_BYTES >> 20
        );
    }
    let image = image::DynamicImage::from_decoder(decoder).map_err(not_an_image)?;
    let level = |grey: u8, alpha: u8| {
        let grey = if invert { 255 - grey } else { grey };
        // grey * alpha / 255, rounded to nearest.
        ((u32::from(grey) * u32::from(alpha) + 127) / 255) as u8
    };
    let out = match &image {
        image::DynamicImage::ImageLuma8(g) => g.pixels().map(|p| level(p.0[0], 255)).collect(),
        _ => image.to_luma_alpha8().pixels().map(|p| level(p.0[0], p.0[1])).collect(),
    };
    Ok((w, h, out))
}

// ---------------------------------------------------------------------------------------------------
// Export

/// Writes every image of `ds` as a PNG of greys 0 and 255 (its binarized pixels) into a new folder set at `dir`,
/// and returns how many it wrote:
/// - the training and then the validation images as `dir/train/<class>/NNNNN.png`, one running index over both,
///   zero-padded to the width of the largest index, so that file-name order is the original order;
/// - the test images as `dir/test/<class>/NNNNN.png`, indexed the same way (no `test/` when there are none);
/// - for an unlabelled set, no class folders: `dir/train/NNNNN.png` and `dir/test/NNNNN.png`.
///
/// Loading the export with the default options and the same validation split gives the same splits (images, labels
/// and order) and class names, provided the class names are in sorted (byte) order, which is how a folder set
/// numbers its classes. When they are not (Fashion-MNIST's are not), each class folder is named with its
/// zero-padded label first, `0-t-shirt`, `1-trouser`..., so that the labels still come back the same, under those
/// names. A class without training or validation images cannot be exported (its folder would be empty, which
/// loading refuses, and leaving it out would renumber the classes after it). An empty test split does not come
/// back as such: the reloaded set's test split is its validation images.
///
/// `dir` must not exist or be an empty folder. Everything is written into a hidden temporary folder beside it
/// (`.<name>.export-<pid>-<n>`), renamed to `dir` at the end, so a failed export leaves nothing half-written: the
/// temporary folder is removed on error.
pub fn export_folder(ds: &Dataset, dir: &Path) -> Result<usize> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{}: exists and is not empty; export into a new or empty folder",
                    dir.display()
                );
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => bail!("{}: cannot export into it: {e}", dir.display()),
    }
    let folders = export_class_folders(ds)?;
    for (name, split) in ds.splits() {
        if !split.is_empty() && split.pixels != ds.pixels() {
            bail!(
                "cannot export: the {name} split has images of {} pixels, but the set is {}x{}",
                split.pixels,
                ds.height,
                ds.width
            );
        }
    }
    if ds.labelled {
        let train = ds.train.label_counts(ds.classes());
        let val = ds.val.label_counts(ds.classes());
        if let Some(c) = (0..ds.classes()).find(|&c| train[c] + val[c] == 0) {
            bail!(
                "cannot export: class {c} ({:?}) has no training or validation images, and a folder set cannot \
                 hold an empty class (its folder would be refused on loading, and leaving it out would renumber \
                 the classes after it)",
                ds.class_names[c]
            );
        }
    }
    let Some(name) = dir.file_name() else {
        bail!("{}: does not name a folder to export into", dir.display());
    };
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let tmp = make_temp_dir(&parent, name)?;
    let written = write_export(ds, &tmp, &folders).and_then(|n| {
        if std::fs::symlink_metadata(dir).is_ok() {
            // Checked empty above; rename cannot replace a directory everywhere.
            std::fs::remove_dir(dir).with_context(|| format!("cannot replace the empty folder {}", dir.display()))?;
        }
        std::fs::rename(&tmp, dir).with_context(|| format!("cannot rename {} to {}", tmp.display(), dir.display()))?;
        Ok(n)
    });
    if written.is_err() {
        // Best effort: the error being reported matters more than one about the clean-up.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    written
}

/// A new hidden folder in `parent` for an export to `name`.
fn make_temp_dir(parent: &Path, name: &OsStr) -> Result<PathBuf> {
    let mut last_error = None;
    for attempt in 0..100 {
        let mut tmp_name = OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".export-{}-{attempt}", std::process::id()));
        let tmp = parent.join(tmp_name);
        match std::fs::create_dir(&tmp) {
            Ok(()) => return Ok(tmp),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last_error = Some(e),
            Err(e) => bail!("cannot create a temporary folder {}: {e}", tmp.display()),
        }
    }
    bail!(
        "cannot create a temporary folder in {}: {}",
        parent.display(),
        last_error.map_or_else(String::new, |e| e.to_string())
    )
}

/// The folder name of each class (empty for an unlabelled set): the class names, checked to be safe as folder
/// names, each prefixed with its zero-padded label when the names are not in sorted order (see [`export_folder`]).
fn export_class_folders(ds: &Dataset) -> Result<Vec<String>> {
    if !ds.labelled {
        return Ok(Vec::new());
    }
    for (c, name) in ds.class_names.iter().enumerate() {
        if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\', '\0']) {
            bail!(
                "cannot export: class {c} is named {name:?}, which cannot be a class folder's name (it is empty, \
                 starts with '.', which hides it, or holds '/', '\\' or NUL)"
            );
        }
    }
    let sorted = ds.class_names.windows(2).all(|w| w[0].as_bytes() < w[1].as_bytes());
    if sorted {
        return Ok(ds.class_names.clone());
    }
    let width = digits(ds.classes().saturating_sub(1));
    Ok(ds
        .class_names
        .iter()
        .enumerate()
        .map(|(c, name)| format!("{c:0width$}-{name}"))
        .collect())
}

/// The number of decimal digits of `n`.
fn digits(n: usize) -> usize {
    n.to_string().len()
}

/// Writes the images into `root` (the temporary folder) and returns how many.
fn write_export(ds: &Dataset, root: &Path, folders: &[String]) -> Result<usize> {
    let (w, h) = (ds.width as u32, ds.height as u32);
    let mut written = 0;
    let groups: [(&str, Vec<(&str, &Split)>); 2] = [
        ("train", vec![("train", &ds.train), ("val", &ds.val)]),
        ("test", vec![("test", &ds.test)]),
    ];
    for (folder, splits) in groups {
        let total: usize = splits.iter().map(|(_, s)| s.len()).sum();
        if total == 0 {
            continue;
        }
        let width = digits(total - 1);
        let mut index = 0;
        for (split_name, split) in splits {
            for i in 0..split.len() {
                let mut path = root.join(folder);
                if ds.labelled {
                    let label = split.labels[i];
                    let Some(class_folder) = folders.get(usize::from(label)) else {
                        bail!(
                            "cannot export {split_name} image {i}: its label {label} is not one of the {} classes",
                            folders.len()
                        );
                    };
                    path.push(class_folder);
                }
                if index == 0 || ds.labelled {
                    std::fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
                }
                path.push(format!("{index:0width$}.png"));
                let pixels = split.image(i);
                if let Some(v) = pixels.iter().find(|&&v| v > 1) {
                    bail!("cannot export {split_name} image {i}: it has a pixel of value {v}, not 0 or 1");
                }
                let grey = pixels.iter().map(|&v| v * 255).collect();
                let image = image::GrayImage::from_raw(w, h, grey).expect("checked: pixels = height * width");
                image
                    .save_with_format(&path, image::ImageFormat::Png)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                index += 1;
                written += 1;
            }
        }
    }
    Ok(written)
}
