//! Checkpoints: exact round trips (with and without training state) for both architectures, masked taps (saved as
//! zeros, ignored on load), PyTorch-style files without metadata, clear errors for broken files, and atomic saves.

mod common;
use common::*;
use pixelcnn::checkpoint::{self, ModelMeta, TrainState};
use pixelcnn::cpu::{AdamConfig, AdamState};
use pixelcnn::model::{Config, Conv, Network};
use pixelcnn::rng::SplitMix64;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;

/// The name errors must mention.
const FILE: &str = "some/file.safetensors";

/// Glorot initialisation plus a perturbation of every parameter (so biases are non-zero too). Padding between the
/// tensors stays zero: it is not part of the model and is not saved.
fn random_params(net: &Network, seed: u64) -> Vec<f32> {
    let mut params = net.init_params(seed);
    perturb(net, &mut params, seed, 0.1);
    params
}

/// Adds uniform noise in [-scale, scale) inside the parameter tensors only.
fn perturb(net: &Network, v: &mut [f32], seed: u64, scale: f32) {
    let noise = random_vec(net.param_len(), seed ^ 0x9E37);
    for (i, t) in net.params.tensors.iter().enumerate() {
        for (j, x) in net.params.cpu_mut(v, i).iter_mut().enumerate() {
            *x += scale * noise[t.cpu_offset + j];
        }
    }
}

/// Compares bit patterns, so that -0.0 vs 0.0 or a changed NaN payload would show as a difference.
fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// One tensor of a safetensors file, owned, so that tests can edit it and write the file again.
#[derive(Clone)]
struct Tensor {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl Tensor {
    fn f32s(&self) -> Vec<f32> {
        assert_eq!(self.dtype, Dtype::F32);
        self.data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    fn set_f32s(&mut self, values: &[f32]) {
        self.dtype = Dtype::F32;
        self.data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    }
}

/// Parses a safetensors file into its tensors (sorted by name: the crate lists them in hash order) and metadata.
fn parse(bytes: &[u8]) -> (Vec<Tensor>, Option<HashMap<String, String>>) {
    let st = SafeTensors::deserialize(bytes).unwrap();
    let mut tensors: Vec<Tensor> = st
        .tensors()
        .into_iter()
        .map(|(name, t)| Tensor {
            name,
            dtype: t.dtype(),
            shape: t.shape().to_vec(),
            data: t.data().to_vec(),
        })
        .collect();
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let (_, meta) = SafeTensors::read_metadata(bytes).unwrap();
    (tensors, meta.metadata().clone())
}

/// Writes tensors and metadata as a safetensors file (the same crate PyTorch's writer is compatible with).
fn write(tensors: &[Tensor], meta: Option<HashMap<String, String>>) -> Vec<u8> {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                TensorView::new(t.dtype, t.shape.clone(), &t.data).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, &meta).unwrap()
}

fn tensor<'a>(tensors: &'a mut [Tensor], name: &str) -> &'a mut Tensor {
    tensors
        .iter_mut()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no tensor {name}"))
}

/// A training state whose fields all differ from their defaults, with the floats a run would typically hold, and
/// Adam moments with random values in every live entry.
fn train_state(net: &Network, seed: u64) -> (TrainState, AdamState) {
    let mut rng = SplitMix64::new(seed);
    let step = 1000 + rng.below(100_000);
    let state = TrainState {
        step,
        epoch: 3,
        batch_in_epoch: 17,
        seed: rng.next_u64(),
        batch_size: 128,
        epochs: 10,
        adam: AdamConfig {
            lr: 1e-3,
            ..AdamConfig::default()
        },
        val_split: 0.1,
        limit: Some(5000),
        epoch_nll_sum: 12345.5,
        epoch_images: 2176,
        data: Some("some/data/dir".into()),
        data_bytes: None,
        lr_decay: 0.9,
        data_options: None,
        last_record: None,
        lr_epoch0: 0,
        ema_start: 0,
    };
    let mut adam = AdamState::new(net.param_len());
    perturb(net, &mut adam.m, seed + 1, 1e-2);
    perturb(net, &mut adam.v, seed + 2, 1e-4);
    adam.v.iter_mut().for_each(|v| *v = v.abs());
    adam.step = step;
    (state, adam)
}

#[test]
fn round_trip_is_exact_with_and_without_training_state() {
    for config in [
        Config::pixelcnn(6, 2),
        Config::gated(5, 3).conditional(),
        Config::pixelcnn(6, 1).conditional(),
        // Another shape, class count, dilation and dropout: all in the metadata.
        Config::gated(4, 3)
            .dilated(2)
            .with_dropout(25)
            .with_classes(3)
            .with_shape(16, 20),
    ] {
        round_trip(config);
    }
}

/// Files made before models carried their shape, class names and binarization (assets/plain-fashion.safetensors, the
/// model shipped until 2026-12-06, among them) load as what they were: 28×28 Fashion-MNIST models with its class
/// names and the seed's threshold; a file that names its own classes keeps them, and its metadata round-trips.
#[test]
fn files_without_shape_or_names_load_as_28x28_fashion_mnist_models() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/plain-fashion.safetensors");
    let plain = checkpoint::load(&path).unwrap();
    let (_, meta) = parse(&std::fs::read(&path).unwrap());
    let meta = meta.unwrap();
    assert!(
        !meta.contains_key("height") && !meta.contains_key("class_names"),
        "the plain model's file predates them"
    );
    assert_eq!((plain.config.height, plain.config.width), (28, 28));
    assert_eq!(plain.config.classes, 10);
    assert_eq!(plain.meta.class_names[0], "t-shirt");
    assert_eq!(plain.meta.class_names[9], "ankle-boot");
    assert_eq!((plain.meta.threshold, plain.meta.invert), (0.33, false));
    // The same tensors with today's metadata, minus the new keys: still 28×28 Fashion-MNIST.
    let net = Network::new(Config::gated(3, 2).conditional());
    let params = random_params(&net, 9);
    let (tensors, meta) = parse(&checkpoint::to_bytes(&net, &params, None).unwrap());
    let mut old = meta.unwrap();
    for key in ["height", "width", "class_names", "threshold", "invert"] {
        assert!(old.remove(key).is_some(), "{key} is written");
    }
    let loaded = checkpoint::from_bytes(&write(&tensors, Some(old)), FILE).unwrap();
    assert_eq!(loaded.config, Config::gated(3, 2).conditional());
    assert_eq!(loaded.meta, ModelMeta::default_for(&loaded.config));
    assert_eq!(loaded.meta.class_names[7], "sneaker");
    // A model of its own classes, shape and binarization keeps them.
    let config = Config::gated(3, 2).with_classes(3).with_shape(8, 12);
    let net = Network::new(config);
    let own = ModelMeta {
        class_names: vec!["cat".into(), "dog".into(), "bird".into()],
        threshold: 0.5,
        invert: true,
    };
    let bytes = checkpoint::to_bytes_with(&net, &random_params(&net, 2), None, &own).unwrap();
    let loaded = checkpoint::from_bytes(&bytes, FILE).unwrap();
    assert_eq!((loaded.config, &loaded.meta), (config, &own));
    // Names that do not match the classes are an error naming the file.
    let mut bad = parse(&bytes).1.unwrap();
    bad.insert("class_names".into(), "[\"cat\"]".into());
    let err = checkpoint::from_bytes(&write(&parse(&bytes).0, Some(bad)), FILE)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains(FILE) && err.contains("class_names"), "{err}");
}

fn round_trip(config: Config) {
    let net = Network::new(config);
    let params = random_params(&net, 1);

    let bytes = checkpoint::to_bytes(&net, &params, None).unwrap();
    let loaded = checkpoint::from_bytes(&bytes, FILE).unwrap();
    assert_eq!(loaded.config, config);
    assert_eq!(bits(&loaded.params), bits(&params));
    assert!(loaded.train.is_none(), "training state appeared from nowhere");
    eprintln!("model only: {} bytes", bytes.len());

    let (state, adam) = train_state(&net, 100);
    let bytes = checkpoint::to_bytes(&net, &params, Some((&state, &adam))).unwrap();
    let loaded = checkpoint::from_bytes(&bytes, FILE).unwrap();
    eprintln!("with training state: {} bytes", bytes.len());
    assert_eq!(loaded.config, config);
    assert_eq!(bits(&loaded.params), bits(&params));
    let (loaded_state, loaded_adam) = loaded.train.expect("training state lost");
    assert_eq!(loaded_state, state, "train_state metadata changed in the round trip");
    assert_eq!(loaded_adam.step, adam.step);
    assert_eq!(bits(&loaded_adam.m), bits(&adam.m), "Adam m changed");
    assert_eq!(bits(&loaded_adam.v), bits(&adam.v), "Adam v changed");
    assert!(loaded_adam.ema.is_none(), "an average appeared from nowhere");

    // With the parameters' Polyak average: kept bit for bit under `train.ema.*`, and the weights a model uses.
    // A decay of 0.9 counts after 10 updates.
    let mut state_ema = state.clone();
    state_ema.adam.ema_decay = 0.9;
    let mut adam_ema = adam.clone();
    let average = random_params(&net, 7);
    let average_weights = average.clone();
    adam_ema.ema = Some(average.clone());
    let bytes = checkpoint::to_bytes(&net, &params, Some((&state_ema, &adam_ema))).unwrap();
    let loaded = checkpoint::from_bytes(&bytes, FILE).unwrap();
    assert_eq!(
        bits(loaded.weights(false)),
        bits(&average),
        "the average is the default weights"
    );
    assert_eq!(
        bits(loaded.weights(true)),
        bits(&params),
        "--raw-weights gives the parameters"
    );
    assert!(loaded.averaged(false) && !loaded.averaged(true));
    // An average younger than its time constant (0.9995: 2,000 updates) leaves the parameters in use.
    let mut young = state_ema.clone();
    young.adam.ema_decay = 0.9995;
    young.ema_start = young.step - 100;
    let bytes = checkpoint::to_bytes(&net, &params, Some((&young, &adam_ema))).unwrap();
    let y = checkpoint::from_bytes(&bytes, FILE).unwrap();
    assert_eq!(y.average_updates(), Some((100, 2000)));
    assert!(!y.averaged(false) && bits(y.weights(false)) == bits(&params));
    // An average old enough to count is still left out while it scored worse than the parameters on the run's last
    // validation, and used once it scores no worse (equal included); without that validation the count decides.
    let record = |raw: Option<f64>, average: Option<f64>| pixelcnn::metrics::EpochRecord {
        epoch: 3,
        step: state_ema.step,
        partial: false,
        train_nll: 90.0,
        train_bpd: 0.16,
        val_nll: raw,
        val_bpd: raw.map(|v| v / 784.0 / std::f64::consts::LN_2),
        val_nll_ema: average,
        val_bpd_ema: average.map(|v| v / 784.0 / std::f64::consts::LN_2),
        seconds: 1.0,
        images_per_second: 1.0,
        lr: 1e-3,
    };
    for (raw, average, used) in [
        (Some(82.5), Some(87.4), false),
        (Some(82.5), Some(82.5), true),
        (Some(82.5), Some(81.9), true),
        (Some(82.5), None, true),
        (None, None, true),
    ] {
        let mut validated = state_ema.clone();
        validated.last_record = Some(record(raw, average));
        let bytes = checkpoint::to_bytes(&net, &params, Some((&validated, &adam_ema))).unwrap();
        let v = checkpoint::from_bytes(&bytes, FILE).unwrap();
        assert_eq!(v.averaged(false), used, "raw {raw:?}, average {average:?}");
        let expected = if used { &average_weights } else { &params };
        assert_eq!(
            bits(v.weights(false)),
            bits(expected),
            "raw {raw:?}, average {average:?}"
        );
        let note = v.weights_note().expect("a checkpoint with an average has a note");
        assert_eq!(note.contains("using the raw parameters"), !used, "{note}");
        assert!(!v.averaged(true) && bits(v.weights(true)) == bits(&params));
    }
    let (s2, a2) = loaded.train.expect("training state lost");
    assert_eq!(s2.adam.ema_decay, 0.9);
    assert_eq!(bits(&a2.ema.expect("average lost")), bits(&average));
    // A training state that says the run keeps an average, without its tensors (and the reverse), is refused.
    for (st, ad, what) in [(&state_ema, &adam, "lacks"), (&state, &adam_ema, "holds")] {
        let bytes = checkpoint::to_bytes(&net, &params, Some((st, ad))).unwrap();
        let err = format!("{:#}", checkpoint::from_bytes(&bytes, FILE).err().expect("accepted"));
        assert!(err.contains(what) && err.contains("train.ema"), "{err}");
    }
}

/// Resuming must restore the floats of the training state bit for bit, whatever they are: the running NLL sum is an
/// arbitrary f64, and a learning rate may be too. (serde_json parses floats exactly only with its
/// `float_roundtrip` feature; without it about a third of arbitrary f64s come back one ulp off.)
#[test]
fn train_state_floats_round_trip_bit_for_bit() {
    let net = Network::new(Config::pixelcnn(2, 0));
    let params = random_params(&net, 1);
    let mut rng = SplitMix64::new(12);
    let mut changed = Vec::new();
    for _ in 0..50 {
        let (mut state, adam) = train_state(&net, 13);
        state.adam.lr = rng.next_f64() * 1e-3;
        state.val_split = rng.next_f64();
        state.epoch_nll_sum = rng.next_f64() * 1e6;
        let bytes = checkpoint::to_bytes(&net, &params, Some((&state, &adam))).unwrap();
        let (loaded, _) = checkpoint::from_bytes(&bytes, FILE).unwrap().train.unwrap();
        for (what, a, b) in [
            ("adam.lr", state.adam.lr, loaded.adam.lr),
            ("val_split", state.val_split, loaded.val_split),
            ("epoch_nll_sum", state.epoch_nll_sum, loaded.epoch_nll_sum),
        ] {
            if a.to_bits() != b.to_bits() {
                changed.push(format!("{what}: {a:?} → {b:?}"));
            }
        }
    }
    eprintln!("{} of 150 floats changed in the round trip", changed.len());
    assert!(changed.is_empty(), "train_state floats changed on reload: {changed:#?}");
}

/// Whether OIHW element `i` of conv `c`'s weight is a live tap.
fn live(c: &Conv, i: usize) -> bool {
    let [kh, kw] = c.kernel;
    let (ky, kx) = ((i / kw) % kh, i % kw);
    c.taps.iter().any(|t| t.ky == ky && t.kx == kx)
}

#[test]
fn masked_taps_are_saved_as_zeros_and_ignored_on_load() {
    for (config, garbage_in) in [
        (Config::pixelcnn(6, 2), ["conv_in.weight", "blocks.0.masked.weight"]),
        (Config::gated(4, 2), ["layers.0.h.weight", "layers.0.h.weight"]),
    ] {
        masked_taps(config, &garbage_in);
    }
}

fn masked_taps(config: Config, garbage_in: &[&str]) {
    let net = Network::new(config);
    let params = random_params(&net, 2);
    let (state, adam) = train_state(&net, 3);
    let clean = checkpoint::to_bytes(&net, &params, Some((&state, &adam))).unwrap();
    let (mut tensors, meta) = parse(&clean);

    // Saved files hold exact zeros at masked taps, for the weights and for both Adam moments; live taps are the
    // non-zero values we put there.
    let mut masked_checked = 0;
    for c in &net.convs {
        for prefix in ["", "train.adam_m.", "train.adam_v."] {
            let w = tensor(&mut tensors, &format!("{prefix}{}.weight", c.name)).f32s();
            for (i, &v) in w.iter().enumerate() {
                if live(c, i) {
                    assert!(v != 0.0, "{prefix}{}.weight[{i}] is a live tap but zero", c.name);
                } else {
                    assert_eq!(v.to_bits(), 0, "{prefix}{}.weight[{i}]: masked tap holds {v}", c.name);
                    masked_checked += 1;
                }
            }
        }
    }
    eprintln!(
        "{}: {masked_checked} masked taps saved as exact zeros",
        config.describe()
    );
    assert!(masked_checked > 0);

    // Fill masked taps with garbage, as a PyTorch model that applies its mask in forward() would store them.
    let mut garbage = 0;
    for name in garbage_in {
        let c = net
            .convs
            .iter()
            .find(|c| format!("{}.weight", c.name) == *name)
            .unwrap();
        let t = tensor(&mut tensors, name);
        let mut w = t.f32s();
        for (i, v) in w.iter_mut().enumerate() {
            if !live(c, i) {
                *v = 1000.0 + i as f32;
                garbage += 1;
            }
        }
        t.set_f32s(&w);
    }
    let dirty = write(&tensors, meta);
    assert_ne!(dirty, clean);
    eprintln!("{garbage} masked taps overwritten with garbage");

    let from_clean = checkpoint::from_bytes(&clean, FILE).unwrap();
    let from_dirty = checkpoint::from_bytes(&dirty, FILE).unwrap();
    assert_eq!(
        bits(&from_dirty.params),
        bits(&from_clean.params),
        "garbage in masked taps reached the model"
    );
    assert_eq!(bits(&from_clean.params), bits(&params));
    let (_, adam_dirty) = from_dirty.train.unwrap();
    assert_eq!(bits(&adam_dirty.m), bits(&adam.m));
    assert_eq!(bits(&adam_dirty.v), bits(&adam.v));
}

#[test]
fn pytorch_style_file_without_metadata_loads_and_infers_the_config() {
    for config in [
        Config::pixelcnn(8, 3),
        Config::pixelcnn(4, 0),
        Config::pixelcnn(4, 2).conditional(),
        Config::gated(6, 4),
        Config::gated(3, 1).conditional(),
        // Without metadata the class count comes from the class-bias tables' rows.
        Config::gated(3, 2).with_classes(4),
    ] {
        let net = Network::new(config);
        let params = random_params(&net, 4);
        // What `safetensors.torch.save_file(model.state_dict())` writes: the model tensors and no metadata at all.
        let (tensors, meta) = parse(&checkpoint::to_bytes(&net, &params, None).unwrap());
        assert!(meta.is_some());
        assert!(tensors.iter().all(|t| !t.name.starts_with("train.")));
        let bytes = write(&tensors, None);
        assert!(SafeTensors::read_metadata(&bytes).unwrap().1.metadata().is_none());

        let loaded = checkpoint::from_bytes(&bytes, FILE).unwrap();
        eprintln!("inferred {}", loaded.config.describe());
        assert_eq!(loaded.config, config);
        assert_eq!(bits(&loaded.params), bits(&params));
        assert!(loaded.train.is_none());
    }
}

/// Loads `bytes`, which must fail without panicking, with an error whose message names [`FILE`] and contains every
/// string of `expected`. Returns the full message.
fn expect_error(what: &str, bytes: &[u8], expected: &[&str]) -> String {
    let result = std::panic::catch_unwind(|| checkpoint::from_bytes(bytes, FILE).map(|c| c.config))
        .unwrap_or_else(|_| panic!("{what}: loading panicked"));
    let err = match result {
        Ok(config) => panic!("{what}: loaded (as {config:?}) instead of failing"),
        Err(e) => e,
    };
    let top = err.to_string();
    let full = format!("{err:#}");
    eprintln!("{what:<28} {full}");
    assert!(top.contains(FILE), "{what}: the message does not name the file: {full}");
    for s in expected {
        assert!(full.contains(s), "{what}: the message does not mention `{s}`: {full}");
    }
    full
}

#[test]
fn broken_files_give_clear_errors_and_never_panic() {
    let net = Network::new(Config::pixelcnn(6, 2));
    let params = random_params(&net, 5);
    let (state, adam) = train_state(&net, 6);
    let good = checkpoint::to_bytes(&net, &params, Some((&state, &adam))).unwrap();
    checkpoint::from_bytes(&good, FILE).unwrap();
    let (tensors, meta) = parse(&good);

    // Rewrites the good file with one tensor changed (None: removed).
    let edit = |name: &str, change: &dyn Fn(&mut Tensor) -> Option<()>| -> Vec<u8> {
        let edited: Vec<Tensor> = tensors
            .iter()
            .filter_map(|t| {
                let mut t = t.clone();
                if t.name == name {
                    change(&mut t)?;
                }
                Some(t)
            })
            .collect();
        assert!(tensors.iter().any(|t| t.name == name), "no tensor {name}");
        write(&edited, meta.clone())
    };

    for name in [
        "head.1.weight",
        "conv_in.weight",
        "blocks.1.conv2.bias",
        "train.adam_v.blocks.1.masked.bias",
    ] {
        expect_error(&format!("missing {name}"), &edit(name, &|_| None), &[name, "missing"]);
    }

    let reshaped = edit("blocks.0.conv1.bias", &|t| {
        t.shape = vec![6, 1];
        Some(())
    });
    expect_error(
        "wrong shape (bias)",
        &reshaped,
        &["blocks.0.conv1.bias", "[6, 1]", "[6]"],
    );
    let reshaped = edit("blocks.1.masked.weight", &|t| {
        t.shape = vec![3, 6, 5, 5];
        t.set_f32s(&[0.5; 3 * 6 * 5 * 5]);
        Some(())
    });
    expect_error(
        "wrong shape (weight)",
        &reshaped,
        &["blocks.1.masked.weight", "[3, 6, 5, 5]", "[3, 6, 3, 3]"],
    );
    let reshaped = edit("conv_in.weight", &|t| {
        t.shape = vec![6, 1, 5, 5];
        t.set_f32s(&[0.5; 6 * 25]);
        Some(())
    });
    expect_error(
        "wrong shape (conv_in)",
        &reshaped,
        &["conv_in.weight", "[6, 1, 5, 5]", "7"],
    );

    let as_f64 = edit("head.0.bias", &|t| {
        let values = t.f32s();
        t.dtype = Dtype::F64;
        t.data = values.iter().flat_map(|&v| (v as f64).to_le_bytes()).collect();
        Some(())
    });
    expect_error("wrong dtype (F64)", &as_f64, &["head.0.bias", "F64"]);
    let as_f16 = edit("conv_out.weight", &|t| {
        t.dtype = Dtype::F16;
        t.data = vec![0x3C; t.data.len() / 2];
        Some(())
    });
    expect_error("wrong dtype (F16)", &as_f16, &["conv_out.weight", "F16"]);

    // NaN at a live tap of conv_in (row 0 of the kernel is live under mask A), and an infinity in a moment.
    let nan = edit("conv_in.weight", &|t| {
        let mut w = t.f32s();
        w[2 * 49 + 1] = f32::NAN;
        t.set_f32s(&w);
        Some(())
    });
    expect_error("NaN in a weight", &nan, &["conv_in.weight", "non-finite"]);
    let inf = edit("train.adam_m.head.0.weight", &|t| {
        let mut w = t.f32s();
        w[5] = f32::INFINITY;
        t.set_f32s(&w);
        Some(())
    });
    expect_error(
        "inf in an Adam moment",
        &inf,
        &["train.adam_m.head.0.weight", "non-finite"],
    );

    let mut bad_meta = meta.clone().unwrap();
    bad_meta.insert("train_state".into(), "{\"step\": 12".into());
    expect_error(
        "bad train_state JSON",
        &write(&tensors, Some(bad_meta)),
        &["train_state"],
    );

    // F must be even: a conv_in with 5 filters.
    let odd = Tensor {
        name: "conv_in.weight".into(),
        dtype: Dtype::F32,
        shape: vec![5, 1, 7, 7],
        data: vec![0; 5 * 49 * 4],
    };
    expect_error("odd filter count", &write(&[odd], None), &["F=5"]);

    // A small file whose names claim the largest model the loader accepts (F=1024, N=64: 1.1 GB of parameters)
    // must fail on the tensors it lacks, not abort the process trying to allocate that model first.
    let mut huge = vec![Tensor {
        name: "conv_in.weight".into(),
        dtype: Dtype::F32,
        shape: vec![1024, 1, 7, 7],
        data: vec![0; 1024 * 49 * 4],
    }];
    for i in 0..64 {
        huge.push(Tensor {
            name: format!("blocks.{i}.conv1.bias"),
            dtype: Dtype::F32,
            shape: vec![1024],
            data: vec![0; 1024 * 4],
        });
    }
    expect_error("huge claimed model", &write(&huge, None), &["conv_in.bias", "missing"]);

    expect_error("truncated to half", &good[..good.len() / 2], &[]);
    expect_error("truncated header", &good[..20], &[]);
    expect_error("empty file", &[], &[]);
    let mut rng = SplitMix64::new(7);
    let noise: Vec<u8> = (0..4096).map(|_| rng.next_u64() as u8).collect();
    expect_error("random bytes", &noise, &[]);
    // A plausible header length followed by bytes that are not JSON.
    let mut fake = 100u64.to_le_bytes().to_vec();
    fake.extend_from_slice(&noise[..200]);
    expect_error("header that is not JSON", &fake, &[]);
    expect_error(
        "a PNG",
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x1c\0\0\0\x1c\x08\x00\x00\x00\x00",
        &[],
    );
}

#[test]
fn save_is_atomic_and_leaves_no_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    // A directory that does not exist yet: save creates it.
    let path = dir.path().join("runs").join("model.safetensors");
    let net = Network::new(Config::pixelcnn(6, 1));
    let first = random_params(&net, 8);
    let (state, adam) = train_state(&net, 9);

    let listing = || {
        let mut names: Vec<String> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };

    checkpoint::save(&path, &net, &first, Some((&state, &adam))).unwrap();
    assert_eq!(listing(), vec!["model.safetensors"], "temporary files left behind");
    let loaded = checkpoint::load(&path).unwrap();
    assert_eq!(bits(&loaded.params), bits(&first));
    assert_eq!(loaded.train.unwrap().0, state);
    // The file on disk holds what to_bytes produces. (Compared parsed: the metadata map is written in hash order,
    // so the header's bytes differ from one call to the next.)
    let (on_disk, meta_on_disk) = parse(&std::fs::read(&path).unwrap());
    let (expected, meta) = parse(&checkpoint::to_bytes(&net, &first, Some((&state, &adam))).unwrap());
    assert_eq!(meta_on_disk, meta);
    assert_eq!(on_disk.len(), expected.len());
    for (a, b) in on_disk.iter().zip(&expected) {
        assert!(
            a.name == b.name && a.dtype == b.dtype && a.shape == b.shape && a.data == b.data,
            "{}",
            a.name
        );
    }

    // Overwriting replaces the file as a whole.
    let second = random_params(&net, 10);
    assert_ne!(bits(&first), bits(&second));
    checkpoint::save(&path, &net, &second, None).unwrap();
    assert_eq!(listing(), vec!["model.safetensors"], "temporary files left behind");
    let loaded = checkpoint::load(&path).unwrap();
    assert_eq!(bits(&loaded.params), bits(&second));
    assert!(loaded.train.is_none());

    // Loading a file that is not there names it.
    let missing = dir.path().join("nope.safetensors");
    let err = format!("{:#}", checkpoint::load(&missing).err().expect("loaded a missing file"));
    eprintln!("missing file: {err}");
    assert!(err.contains("nope.safetensors"), "{err}");
}

#[test]
fn metadata_names_the_architecture_and_contradictions_are_errors() {
    let net = Network::new(Config::gated(4, 2).conditional());
    let params = random_params(&net, 20);
    let bytes = checkpoint::to_bytes(&net, &params, None).unwrap();
    let (tensors, meta) = parse(&bytes);
    let meta = meta.unwrap();
    assert_eq!((meta["arch"].as_str(), meta["classes"].as_str()), ("gated", "10"));
    assert_eq!((meta["filters"].as_str(), meta["depth"].as_str()), ("4", "2"));
    let with = |key: &str, value: &str| {
        let mut m = meta.clone();
        m.insert(key.into(), value.into());
        write(&tensors, Some(m))
    };
    expect_error("unknown arch", &with("arch", "resnet"), &["arch", "resnet"]);
    expect_error("bad classes", &with("classes", "7"), &["classes"]);
    expect_error("depth contradicts tensors", &with("depth", "3"), &["depth", "3"]);
    expect_error("filters contradicts tensors", &with("filters", "8"), &["filters", "8"]);
    // An unconditional file claimed to be conditional lacks its class biases.
    let plain = Network::new(Config::gated(4, 2));
    let (t, m) = parse(&checkpoint::to_bytes(&plain, &random_params(&plain, 21), None).unwrap());
    let mut m = m.unwrap();
    m.insert("classes".into(), "10".into());
    expect_error(
        "classes without class biases",
        &write(&t, Some(m)),
        &["class_bias", "missing"],
    );
}
