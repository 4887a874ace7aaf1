//! The interface between Rust and WGSL, checked by naga rather than by care:
//!
//! * every uniform struct the host declares (`uniform_struct!` in `src/gpu/kernels/`) has the size and the
//!   member names, offsets and sizes of the WGSL struct of the same name in its family, as naga lays it out;
//! * for every entry point of every pipeline variant the host builds (trainer, evaluator and samplers of several
//!   models, on both kernel versions), every binding the WGSL entry point uses is in the host's binding table with
//!   the same access mode, and every binding of the host's table is declared in the WGSL with that access mode.
//!
//! A swapped pair of uniform fields, a renumbered binding or a changed access mode on either side fails here.

use naga::valid::{Capabilities, ValidationFlags, Validator};
use naga::{AddressSpace, StorageAccess, TypeInner};
use pixelcnn::gpu::kernels::{self, Access, UniformLayout};
use pixelcnn::gpu::layers::GpuModel;
use pixelcnn::gpu::record::UNIFORM_BYTES;
use pixelcnn::gpu::trainer::Trainer;
use pixelcnn::gpu::{gpu_for_tests, shader, Gpu};
use pixelcnn::model::{Config, Network};
use std::collections::BTreeMap;

fn parse(family: &str, src: &str) -> (naga::Module, naga::valid::ModuleInfo) {
    let module = naga::front::wgsl::parse_str(src).unwrap_or_else(|e| panic!("{family}: {}", e.emit_to_string(src)));
    let info = Validator::new(ValidationFlags::all(), Capabilities::all())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{family}: {}", e.emit_to_string(src)));
    (module, info)
}

/// (member name, offset, size) of each member of a struct.
type Fields = Vec<(String, usize, usize)>;

/// The WGSL struct `name` as naga lays it out: (size, fields).
fn wgsl_layout(module: &naga::Module, name: &str) -> Option<(usize, Fields)> {
    let mut layouter = naga::proc::Layouter::default();
    layouter.update(module.to_ctx()).expect("layout");
    module.types.iter().find_map(|(handle, ty)| match &ty.inner {
        TypeInner::Struct { members, span } if ty.name.as_deref() == Some(name) => {
            assert_eq!(*span, layouter[handle].size, "{name}: span");
            let fields = members
                .iter()
                .map(|m| {
                    let field = m.name.clone().unwrap_or_default();
                    (field, m.offset as usize, layouter[m.ty].size as usize)
                })
                .collect();
            Some((*span as usize, fields))
        }
        _ => None,
    })
}

/// Differences between the Rust layout of a uniform struct and naga's layout of the WGSL struct.
fn layout_mismatches(family: &str, rust: &UniformLayout, module: &naga::Module) -> Vec<String> {
    let Some((size, fields)) = wgsl_layout(module, rust.name) else {
        return vec![format!("{family}: no WGSL struct {}", rust.name)];
    };
    let mut bad = Vec::new();
    if size != rust.size {
        bad.push(format!(
            "{family}: {} is {} bytes in Rust, {size} in WGSL",
            rust.name, rust.size
        ));
    }
    let wgsl: Fields = fields;
    let ours: Fields = rust
        .fields
        .iter()
        .map(|f| (f.name.to_string(), f.offset, f.size))
        .collect();
    if wgsl != ours {
        bad.push(format!(
            "{family}: {} fields (name, offset, size) differ\n  Rust: {ours:?}\n  WGSL: {wgsl:?}",
            rust.name
        ));
    }
    bad
}

#[test]
fn uniform_structs_match_naga_layout_of_the_wgsl() {
    let mut bad = Vec::new();
    let mut checked = 0;
    for family in kernels::FAMILIES {
        let src = shader::source(family.name, &[]).unwrap();
        let (module, _) = parse(family.name, &src);
        for layout in family.uniforms {
            let rust = layout();
            bad.extend(layout_mismatches(family.name, &rust, &module));
            if rust.size > UNIFORM_BYTES {
                bad.push(format!(
                    "{}: {} bytes exceed a program's uniform slot",
                    rust.name, rust.size
                ));
            }
            eprintln!(
                "{:<12} {:<13} {:>3} bytes, {:>2} fields: Rust = WGSL",
                family.name,
                rust.name,
                rust.size,
                rust.fields.len()
            );
            checked += 1;
        }
    }
    assert!(bad.is_empty(), "uniform layouts differ:\n{}", bad.join("\n"));
    assert!(
        checked >= kernels::FAMILIES.len(),
        "every family declares its uniform struct"
    );
}

/// The test catches what it claims to: a WGSL struct with two members swapped no longer matches.
#[test]
fn the_layout_check_catches_swapped_fields() {
    let family = kernels::family("adam").unwrap();
    let src = shader::source("adam", &[]).unwrap();
    let swapped = src.replacen(
        "    beta1: f32,\n    beta2: f32,",
        "    beta2: f32,\n    beta1: f32,",
        1,
    );
    assert_ne!(src, swapped, "adam.wgsl's AdamParams changed: update this test");
    let (module, _) = parse("adam", &swapped);
    let rust = (family.uniforms[0])();
    let bad = layout_mismatches("adam", &rust, &module);
    eprintln!("{}", bad.join("\n"));
    assert!(!bad.is_empty(), "a swapped pair of fields went unnoticed");
}

/// How the WGSL reaches a global, as a host access mode.
fn access(space: AddressSpace) -> Option<Access> {
    match space {
        AddressSpace::Uniform => Some(Access::Uniform),
        AddressSpace::Storage { access } if access.contains(StorageAccess::STORE) => Some(Access::ReadWrite),
        AddressSpace::Storage { .. } => Some(Access::Read),
        _ => None,
    }
}

/// Mismatches between the host's binding table of `entry` and the WGSL.
fn binding_mismatches(what: &str, src: &str, entry: &str, host: &[(u32, Access)]) -> Vec<String> {
    let (module, info) = parse(what, src);
    let index = module
        .entry_points
        .iter()
        .position(|e| e.name == entry)
        .unwrap_or_else(|| panic!("{what}: no entry point {entry}"));
    let uses = info.get_entry_point(index);
    let mut host: BTreeMap<u32, Access> = host.iter().copied().collect();
    host.insert(0, Access::Uniform);
    let mut declared = BTreeMap::new();
    let mut bad = Vec::new();
    for (handle, var) in module.global_variables.iter() {
        let (Some(binding), Some(a)) = (&var.binding, access(var.space)) else {
            continue;
        };
        declared.insert(binding.binding, a);
        let used = !uses[handle].is_empty();
        match host.get(&binding.binding) {
            Some(&h) if h != a => bad.push(format!(
                "{what}: binding {} `{}` is {a:?} in WGSL, {h:?} on the host",
                binding.binding,
                var.name.as_deref().unwrap_or("?")
            )),
            None if used => bad.push(format!(
                "{what}: uses binding {} `{}` ({a:?}), which the host does not bind",
                binding.binding,
                var.name.as_deref().unwrap_or("?")
            )),
            _ => {}
        }
    }
    for (b, a) in &host {
        if !declared.contains_key(b) {
            bad.push(format!(
                "{what}: the host binds {b} ({a:?}), which the WGSL does not declare"
            ));
        }
    }
    bad
}

/// Every variant the trainer, the evaluator and the samplers build for `configs` on a dry-run device of `versions`.
fn variants(versions: &str, configs: &[Config]) -> Vec<kernels::Variant> {
    let gpu = Gpu::open_dry(Some(versions)).unwrap();
    for &config in configs {
        let net = Network::new(config);
        let model = GpuModel::new(&gpu, &net, &net.init_params(0)).unwrap();
        let mut trainer = Trainer::new(&gpu, model, Default::default(), 2).unwrap();
        trainer.record(&gpu, 2).unwrap();
        let model = GpuModel::new(&gpu, &net, &net.init_params(0)).unwrap();
        pixelcnn::gpu::sampler::record_all(&gpu, &model, 4).unwrap();
    }
    // The peak benchmark's kernels, which neither training nor sampling records.
    let out = gpu.tensor("peak out", 64).unwrap();
    for entry in ["fma_peak", "read_bandwidth"] {
        let run = kernels::peak::PeakRun {
            n: 16,
            iters: 1,
            workgroup: 8,
        };
        let views = kernels::peak::views(out.view(), gpu.dummy.view());
        kernels::peak::peak(&gpu, &mut pixelcnn::gpu::record::Program::new(), entry, views, run).unwrap();
    }
    gpu.variants()
}

#[test]
fn every_pipeline_binds_what_its_wgsl_declares() {
    let Some(gpu) = gpu_for_tests() else { return };
    let versions: &[&str] = if gpu.kernels.subgroup.is_some() {
        &["conv=raster,pixel=layers", "conv=tiled,pixel=net"]
    } else {
        &["conv=tiled,pixel=net"]
    };
    drop(gpu);
    // F = 128: masked 3×3 weights of 160 KiB, which the raster convs on lavapipe read through three uniform
    // windows (bindings 2, 10 and 11).
    let configs = [
        Config::pixelcnn(8, 1),
        Config::pixelcnn(8, 2).conditional(),
        Config::gated(8, 2).conditional(),
        Config::pixelcnn(128, 1),
    ];
    let mut entries: BTreeMap<String, usize> = BTreeMap::new();
    let mut bad = Vec::new();
    let mut n = 0;
    for v in versions.iter().flat_map(|versions| variants(versions, &configs)) {
        let consts: Vec<String> = v.consts.iter().map(|(c, x)| format!("{c}={x}")).collect();
        let what = format!("{}:{} {}", v.family, v.entry, consts.join(" "));
        bad.extend(binding_mismatches(&what, &v.source, &v.entry, &v.bindings));
        *entries.entry(format!("{}:{}", v.family, v.entry)).or_default() += 1;
        n += 1;
    }
    for (entry, count) in &entries {
        eprintln!("{entry:<40} {count:>3} variants: bindings agree");
    }
    assert!(bad.is_empty(), "bindings differ:\n{}", bad.join("\n"));
    let families: std::collections::BTreeSet<&str> = entries.keys().map(|k| k.split(':').next().unwrap()).collect();
    assert_eq!(
        families.len(),
        if versions.len() == 2 {
            kernels::FAMILIES.len()
        } else {
            kernels::FAMILIES.len() - 1
        },
        "every family is exercised: {families:?}"
    );
    eprintln!("{n} pipeline variants, {} entry points checked", entries.len());
}

/// The test catches what it claims to: a binding whose access the WGSL changes no longer matches.
#[test]
fn the_binding_check_catches_a_changed_access_mode() {
    let src = shader::source("adam", &[]).unwrap();
    let table = kernels::adam::AdamViews::TABLE;
    assert!(binding_mismatches("adam", &src, "adam_update", table).is_empty());
    let changed = src.replacen("var<storage, read> grads", "var<storage, read_write> grads", 1);
    assert_ne!(src, changed, "adam.wgsl's grads binding changed: update this test");
    let bad = binding_mismatches("adam (grads read_write)", &changed, "adam_update", table);
    eprintln!("{}", bad.join("\n"));
    assert!(!bad.is_empty(), "a changed access mode went unnoticed");
}
