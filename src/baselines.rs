//! `pixelcnn baselines`: the test NLL of models that need no training loop, fitted on the training split, to put
//! the network's figure in context.
//!
//! * constant: one p for every pixel;
//! * per-pixel: an independent Bernoulli per position;
//! * count table: per position, a table over the 6 causal neighbours x[r, q−1], x[r, q−2], x[r−1, q−1..q+1] and
//!   x[r−2, q] (zero outside the image): 64 contexts × H·W positions, add-½ smoothing.
//!
//! All use Laplace-style smoothing so that no probability is exactly 0 or 1.

use crate::data::{Dataset, Split};
use crate::model::{bits_per_dim, ImageShape};

#[derive(Clone, Debug, serde::Serialize)]
pub struct Baseline {
    #[serde(skip)]
    pub name: &'static str,
    pub nll_nats_per_image: f64,
    pub bits_per_dim: f64,
    /// The fitted p (the constant baseline).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p: Option<f64>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Baselines {
    pub train_images: usize,
    pub test_images: usize,
    pub constant: Baseline,
    pub per_pixel_bernoulli: Baseline,
    pub count_table: Baseline,
}

impl Baselines {
    pub fn all(&self) -> [&Baseline; 3] {
        [&self.constant, &self.per_pixel_bernoulli, &self.count_table]
    }
}

/// The 6-bit causal context of pixel `q` of `img` (of `shape`).
pub fn context(img: &[u8], shape: ImageShape, q: usize) -> usize {
    let width = shape.width;
    let (r, c) = ((q / width) as i32, (q % width) as i32);
    let at = |dy: i32, dx: i32| -> usize {
        let (y, x) = (r + dy, c + dx);
        if y < 0 || y >= shape.height as i32 || x < 0 || x >= width as i32 {
            0
        } else {
            img[y as usize * width + x as usize] as usize
        }
    };
    at(0, -1) | at(0, -2) << 1 | at(-1, -1) << 2 | at(-1, 0) << 3 | at(-1, 1) << 4 | at(-2, 0) << 5
}

/// Mean NLL (nats/image) over `split` of a model giving p(x_q = 1) = `p(img, q)`.
fn nll(ds: &Dataset, split: &Split, p: impl Fn(&[u8], usize) -> f64) -> f64 {
    let pixels = ds.height * ds.width;
    let total: f64 = split
        .images
        .chunks(pixels)
        .map(|img| {
            (0..pixels)
                .map(|q| {
                    let p = p(img, q);
                    if img[q] == 1 {
                        -p.ln()
                    } else {
                        -(1.0 - p).ln()
                    }
                })
                .sum::<f64>()
        })
        .sum();
    total / split.len().max(1) as f64
}

/// Fits every baseline on `ds.train` and evaluates it on `ds.test`.
pub fn baselines(ds: &Dataset) -> Baselines {
    baselines_on(ds, &ds.test)
}

/// Fits every baseline on `ds.train` and evaluates it on `eval` (a split of `ds`).
pub fn baselines_on(ds: &Dataset, eval: &Split) -> Baselines {
    let train = &ds.train;
    let shape = ImageShape::new(ds.height, ds.width);
    let pixels = shape.pixels();
    let n = train.len() as f64;
    let ones: f64 = train.images.iter().map(|&v| v as f64).sum();
    let p_const = (ones + 1.0) / (n * pixels as f64 + 2.0);
    let mut counts = vec![0.0f64; pixels];
    // Per (position, context): [zeros, ones].
    let mut table = vec![[0.0f64; 2]; pixels * 64];
    for img in train.images.chunks(pixels) {
        for q in 0..pixels {
            counts[q] += img[q] as f64;
            table[q * 64 + context(img, shape, q)][img[q] as usize] += 1.0;
        }
    }
    let p_pixel: Vec<f64> = counts.iter().map(|c| (c + 1.0) / (n + 2.0)).collect();
    let make = |name, nll: f64| Baseline {
        name,
        nll_nats_per_image: nll,
        bits_per_dim: bits_per_dim(nll, pixels),
        p: None,
    };
    let constant = nll(ds, eval, |_, _| p_const);
    let per_pixel = nll(ds, eval, |_, q| p_pixel[q]);
    let count_table = nll(ds, eval, |img, q| {
        let [z, o] = table[q * 64 + context(img, shape, q)];
        (o + 0.5) / (z + o + 1.0)
    });
    Baselines {
        train_images: train.len(),
        test_images: eval.len(),
        constant: Baseline {
            p: Some(p_const),
            ..make("constant", constant)
        },
        per_pixel_bernoulli: make("per-pixel Bernoulli", per_pixel),
        count_table: make("6-neighbour count table", count_table),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_reads_the_six_causal_neighbours() {
        // A non-square shape, so that rows and columns cannot be swapped unnoticed.
        let shape = ImageShape::new(9, 13);
        const WIDTH: usize = 13;
        let mut img = vec![0u8; shape.pixels()];
        let q = 5 * WIDTH + 10;
        for (dy, dx, bit) in [(0, -1, 0), (0, -2, 1), (-1, -1, 2), (-1, 0, 3), (-1, 1, 4), (-2, 0, 5)] {
            img.fill(0);
            img[((5 + dy) * WIDTH as i32 + 10 + dx) as usize] = 1;
            assert_eq!(context(&img, shape, q), 1 << bit, "({dy}, {dx})");
        }
        // The pixel itself and anything after it never enter the context.
        img.fill(0);
        img[q] = 1;
        img[q + 1] = 1;
        img[q + WIDTH] = 1;
        assert_eq!(context(&img, shape, q), 0);
        // At the top-left corner everything is padding.
        img.fill(1);
        assert_eq!(context(&img, shape, 0), 0);
    }
}
