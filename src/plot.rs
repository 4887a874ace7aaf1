//! Training curves: reads `metrics.jsonl` and draws train / validation NLL per epoch as a PNG, with the validation
//! NLL of the Polyak-averaged weights (`train --ema`) where the run logged it.
//!
//! Text is drawn with plotters' `ab_glyph` feature and an embedded DejaVu Sans, so plotting needs no system
//! fonts and looks the same on every machine.

use anyhow::{anyhow, bail, Context, Result};
use plotters::prelude::*;
use plotters::style::register_font;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

/// Width and height of the training-curve PNG.
pub const PLOT_SIZE: (u32, u32) = (800, 500);

/// DejaVu Sans (Bitstream Vera licence, see assets/fonts/LICENSE-DejaVu.txt).
pub static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
/// Family name the font is registered under; plotters looks fonts up by this name.
const FONT_FAMILY: &str = "sans-serif";

/// One line of `metrics.jsonl`. Unknown fields are ignored, so the trainer may log more than is plotted.
#[derive(Deserialize, Clone, Debug)]
pub struct EpochMetrics {
    pub epoch: u32,
    /// Mean negative log-likelihood on the training set, nats per image.
    pub train_nll: f64,
    /// Mean negative log-likelihood on the validation set, nats per image.
    pub val_nll: f64,
    #[serde(default)]
    pub train_bpd: Option<f64>,
    #[serde(default)]
    pub val_bpd: Option<f64>,
    /// Validation NLL of the Polyak-averaged weights (`train --ema`), from the epoch the average was in use.
    #[serde(default)]
    pub val_nll_ema: Option<f64>,
}

/// Reads `metrics.jsonl`: one JSON object per line, blank lines skipped. The file must be a regular file (a FIFO or
/// device is refused before reading) of at most [`MAX_METRICS_BYTES`](crate::metrics::MAX_METRICS_BYTES), with lines
/// of at most [`MAX_METRICS_LINE`](crate::metrics::MAX_METRICS_LINE) bytes.
/// A line that does not parse is an error naming the file and the 1-based line number, except a last line without
/// its newline (a run that crashed while writing it), which is skipped with a note.
pub fn read_metrics(path: &Path) -> Result<Vec<EpochMetrics>> {
    use crate::metrics::{MAX_METRICS_BYTES, MAX_METRICS_LINE};
    let bytes = crate::fsio::read_regular(path, "metrics file", MAX_METRICS_BYTES)?;
    let text = String::from_utf8_lossy(&bytes);
    let torn = !text.is_empty() && !text.ends_with('\n');
    let count = text.lines().count();
    let mut metrics = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if line.len() > MAX_METRICS_LINE {
            bail!(
                "{} line {}: {} bytes, longer than any metrics record (at most {MAX_METRICS_LINE})",
                path.display(),
                i + 1,
                line.len()
            );
        }
        // The parse error goes into the message itself so it shows however the caller prints the error.
        match serde_json::from_str(line) {
            Ok(record) => metrics.push(record),
            Err(_) if torn && i + 1 == count => {
                eprintln!(
                    "{} line {}: skipped a torn last line (the run stopped while writing it)",
                    path.display(),
                    i + 1
                );
            }
            Err(e) => bail!("{} line {}: bad metrics record: {e}", path.display(), i + 1),
        }
    }
    Ok(metrics)
}

/// Draws train and validation NLL (nats/image) against epoch, and the averaged weights' validation NLL for the
/// epochs that logged one, with points, legend, axis labels and `title`,
/// and writes it atomically as an 800x500 image in the format `out`'s extension names (`.png`, `.jpg`, ...).
///
/// If an epoch appears more than once (a resumed run re-logs it), the later record wins. Non-finite values
/// (a diverged epoch) are left out rather than wrecking the axis range.
pub fn plot_training_curve(metrics: &[EpochMetrics], out: &Path, title: &str) -> Result<()> {
    if metrics.is_empty() {
        bail!("no metrics to plot for {} (metrics list is empty)", out.display());
    }
    let by_epoch: BTreeMap<u32, &EpochMetrics> = metrics.iter().map(|m| (m.epoch, m)).collect();
    let train: Vec<(u32, f64)> = finite_points(&by_epoch, |m| m.train_nll);
    let val: Vec<(u32, f64)> = finite_points(&by_epoch, |m| m.val_nll);
    let averaged: Vec<(u32, f64)> = finite_points(&by_epoch, |m| m.val_nll_ema.unwrap_or(f64::NAN));
    let (y_min, y_max) = value_range(train.iter().chain(&val).chain(&averaged).map(|&(_, y)| y))
        .ok_or_else(|| anyhow!("no finite NLL values to plot for {}", out.display()))?;

    // Safe to unwrap: by_epoch is non-empty because metrics is.
    let first = *by_epoch.keys().next().unwrap();
    let last = *by_epoch.keys().next_back().unwrap();
    // A single epoch would make an empty x range; widen it so the point sits inside the axes.
    let (x_min, x_max) = if first == last {
        (first.saturating_sub(1), last + 1)
    } else {
        (first, last)
    };

    ensure_font_registered()?;
    let (width, height) = PLOT_SIZE;
    let mut rgb = vec![0u8; width as usize * height as usize * 3];
    let curves = [
        (&train[..], TRAIN_COLOUR, "train"),
        (&val[..], VAL_COLOUR, "validation"),
        (&averaged[..], AVERAGE_COLOUR, "validation, Polyak average"),
    ];
    draw_chart(&mut rgb, title, (x_min, x_max), (y_min, y_max), &curves)
        .map_err(|e| anyhow!("drawing training curve {}: {e}", out.display()))?;

    let image = image::RgbImage::from_raw(width, height, rgb).context("plot buffer has the wrong size")?;
    crate::image_out::write_image(out, image.into())
}

/// One curve: its (epoch, NLL) points, colour and legend label.
type Curve<'a> = (&'a [(u32, f64)], RGBColor, &'a str);

/// The curves' colours: colour-blind safe blue, orange and bluish green (Okabe–Ito).
const TRAIN_COLOUR: RGBColor = RGBColor(0, 114, 178);
const VAL_COLOUR: RGBColor = RGBColor(230, 159, 0);
const AVERAGE_COLOUR: RGBColor = RGBColor(0, 158, 115);

/// Draws the chart into `rgb` (PLOT_SIZE, 3 bytes per pixel).
fn draw_chart(
    rgb: &mut [u8],
    title: &str,
    x_range: (u32, u32),
    y_range: (f64, f64),
    curves: &[Curve],
) -> Result<(), Box<dyn std::error::Error>> {
    // Enough decimals to tell the ~10 y ticks apart, no more: NLLs in the hundreds need none.
    let tick_step = (y_range.1 - y_range.0) / 10.0;
    let decimals = (-tick_step.log10()).ceil().clamp(0.0, 6.0) as usize;
    let root = BitMapBackend::with_buffer(rgb, PLOT_SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT_FAMILY, 24))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range.0..x_range.1, y_range.0..y_range.1)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("NLL (nats / image)")
        .axis_desc_style((FONT_FAMILY, 16))
        .label_style((FONT_FAMILY, 13))
        // Epochs are integers; cap the tick count so long runs do not crowd the axis.
        .x_labels(12)
        .y_label_formatter(&|y| format!("{y:.decimals$}"))
        // plotters' default minor grid is dark enough to compete with the curves; keep it faint.
        .bold_line_style(RGBColor(200, 200, 200))
        .light_line_style(RGBColor(238, 238, 238))
        .draw()?;

    // A curve without points (a run without an average) gets no legend entry either.
    for &(points, colour, label) in curves.iter().filter(|(points, _, _)| !points.is_empty()) {
        chart
            .draw_series(LineSeries::new(points.iter().copied(), colour.filled().stroke_width(2)).point_size(3))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT_FAMILY, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// (epoch, value) pairs in epoch order, leaving out NaN and infinities.
fn finite_points(by_epoch: &BTreeMap<u32, &EpochMetrics>, value: impl Fn(&EpochMetrics) -> f64) -> Vec<(u32, f64)> {
    by_epoch
        .iter()
        .map(|(&epoch, m)| (epoch, value(m)))
        .filter(|(_, y)| y.is_finite())
        .collect()
}

/// The y range covering `values` with 5% headroom on both sides; None if there are no values.
fn value_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| (lo.min(y), hi.max(y)));
    if lo > hi {
        return None;
    }
    // A flat curve would give an empty range; give it some height instead.
    let pad = if hi > lo {
        0.05 * (hi - lo)
    } else {
        1.0f64.max(0.05 * hi.abs())
    };
    Some((lo - pad, hi + pad))
}

/// plotters' ab_glyph backend has no built-in fonts: register the embedded one once per process.
fn ensure_font_registered() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    if !*REGISTERED.get_or_init(|| register_font(FONT_FAMILY, FontStyle::Normal, FONT).is_ok()) {
        bail!("the embedded plot font could not be loaded");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_metrics() -> Vec<EpochMetrics> {
        [(1, 260.0, 250.0), (2, 220.5, 224.0), (3, 205.25, 214.0)]
            .into_iter()
            .map(|(epoch, train_nll, val_nll)| EpochMetrics {
                epoch,
                train_nll,
                val_nll,
                train_bpd: None,
                val_bpd: None,
                val_nll_ema: None,
            })
            .collect()
    }

    #[test]
    fn plot_writes_png_of_expected_size() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("curve.png");
        plot_training_curve(&fake_metrics(), &out, "PixelCNN training").unwrap();
        let image = image::load_from_memory(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!((image.width(), image.height()), PLOT_SIZE);
        // Something besides the white background was drawn, including both curve colours.
        let rgb = image.to_rgb8();
        let has = |c: RGBColor| rgb.pixels().any(|p| p.0 == [c.0, c.1, c.2]);
        assert!(has(TRAIN_COLOUR) && has(VAL_COLOUR));
        assert!(!has(AVERAGE_COLOUR), "a run without an average draws no average curve");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temp files may be left behind: {names:?}");
    }

    #[test]
    fn the_average_is_drawn_for_the_epochs_that_logged_it() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("curve.png");
        let mut metrics = fake_metrics();
        metrics[1].val_nll_ema = Some(221.0);
        metrics[2].val_nll_ema = Some(209.0);
        plot_training_curve(&metrics, &out, "averaged").unwrap();
        let rgb = image::open(&out).unwrap().to_rgb8();
        let has = |c: RGBColor| rgb.pixels().any(|p| p.0 == [c.0, c.1, c.2]);
        assert!(has(TRAIN_COLOUR) && has(VAL_COLOUR) && has(AVERAGE_COLOUR));
    }

    #[test]
    fn single_epoch_and_repeated_epochs_plot() {
        let dir = tempfile::tempdir().unwrap();
        let mut metrics = fake_metrics();
        plot_training_curve(&metrics[..1], &dir.path().join("one.png"), "one epoch").unwrap();
        // A resumed run re-logging epoch 2, plus a diverged value, must still plot.
        metrics.push(EpochMetrics {
            epoch: 2,
            train_nll: f64::NAN,
            ..metrics[1].clone()
        });
        plot_training_curve(&metrics, &dir.path().join("resumed.png"), "resumed").unwrap();
    }

    #[test]
    fn empty_metrics_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("curve.png");
        let err = plot_training_curve(&[], &out, "empty").unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        assert!(!out.exists());
    }

    #[test]
    fn reads_metrics_skipping_blank_lines_and_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let text = concat!(
            "{\"epoch\":1,\"train_nll\":250.5,\"val_nll\":240.0,\"lr\":0.001}\n",
            "\n",
            "   \n",
            "{\"epoch\":2,\"train_nll\":200.0,\"val_nll\":210.0,\"train_bpd\":0.37,\"val_bpd\":0.39,\"secs\":12.5}\n",
        );
        std::fs::write(&path, text).unwrap();
        let metrics = read_metrics(&path).unwrap();
        assert_eq!(metrics.len(), 2);
        assert_eq!(metrics[0].epoch, 1);
        assert_eq!(metrics[0].train_bpd, None);
        assert_eq!(metrics[1].val_nll, 210.0);
        assert_eq!(metrics[1].val_bpd, Some(0.39));
    }

    #[test]
    fn bad_line_error_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let text = "{\"epoch\":1,\"train_nll\":1.0,\"val_nll\":2.0}\n\n{\"epoch\":2,\"train_nll\":oops}\n";
        std::fs::write(&path, text).unwrap();
        let err = read_metrics(&path).unwrap_err().to_string();
        assert!(err.contains("metrics.jsonl line 3"), "{err}");
        let missing = read_metrics(&dir.path().join("nope.jsonl")).unwrap_err();
        assert!(format!("{missing:#}").contains("nope.jsonl"), "{missing:#}");
    }
}
