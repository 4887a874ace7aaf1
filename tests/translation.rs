//! Every pipeline variant the host builds — each entry point with each template-constant set that the default
//! model and small models use, for every kernel version — through every backend's shader compiler: naga (the
//! version wgpu uses) translates it to SPIR-V (Vulkan), MSL (Metal), HLSL (DX12, shader model 6.0 where subgroups
//! are used) and GLSL compute (wgpu's GL backend), after validating it with that backend's capabilities. Prints
//! the matrix of entry point × backend.
//!
//! Where a variant cannot run on a backend — the raster kernels need subgroups, which wgpu's GL
//! backend does not offer — a version that can (tiled, pixel_net) exists, and the version choice picks it there:
//! the test checks that too.

use naga::back::{glsl, hlsl, msl, spv};
use naga::valid::{ValidationFlags, Validator};
use pixelcnn::gpu::gpu_for_tests;
use pixelcnn::gpu::layers::GpuModel;
use pixelcnn::gpu::trainer::Trainer;
use pixelcnn::gpu::versions::{AdapterFacts, ConvVersion, KernelChoice, PixelVersion};
use pixelcnn::gpu::Gpu;
use pixelcnn::model::{Config, Network};
use std::collections::BTreeMap;

const BACKENDS: [&str; 4] = ["SPIR-V", "MSL", "HLSL", "GLSL"];

fn translate(backend: &str, src: &str, entry: &str, subgroups: bool) -> Result<(), String> {
    let module = naga::front::wgsl::parse_str(src).map_err(|e| e.emit_to_string(src))?;
    let caps = match backend {
        "SPIR-V" => spv::supported_capabilities(),
        "MSL" => msl::supported_capabilities(),
        "HLSL" => hlsl::supported_capabilities(),
        _ => glsl::supported_capabilities(),
    };
    let info = Validator::new(ValidationFlags::all(), caps)
        .validate(&module)
        .map_err(|e| format!("validation: {}", e.emit_to_string(src)))?;
    let stage = naga::ShaderStage::Compute;
    match backend {
        "SPIR-V" => {
            let opts = spv::PipelineOptions {
                shader_stage: stage,
                entry_point: entry.into(),
            };
            spv::write_vec(&module, &info, &spv::Options::default(), Some(&opts))
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        "MSL" => {
            let opts = msl::Options {
                lang_version: (2, 4),
                fake_missing_bindings: true,
                ..Default::default()
            };
            let p = msl::PipelineOptions {
                entry_point: Some((stage, entry.into())),
                ..Default::default()
            };
            msl::write_string(&module, &info, &opts, &p)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        "HLSL" => {
            let model = if subgroups {
                hlsl::ShaderModel::V6_0
            } else {
                hlsl::ShaderModel::V5_1
            };
            let opts = hlsl::Options {
                shader_model: model,
                fake_missing_bindings: true,
                ..Default::default()
            };
            let p = hlsl::PipelineOptions {
                entry_point: Some((stage, entry.into())),
            };
            let mut out = String::new();
            hlsl::Writer::new(&mut out, &opts, &p)
                .write(&module, &info, None)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        _ => {
            let opts = glsl::Options {
                version: glsl::Version::Desktop(430),
                ..Default::default()
            };
            let p = glsl::PipelineOptions {
                shader_stage: stage,
                entry_point: entry.into(),
                multiview: None,
            };
            let mut out = String::new();
            let mut w = glsl::Writer::new(&mut out, &module, &info, &opts, &p, Default::default())
                .map_err(|e| e.to_string())?;
            w.write().map(|_| ()).map_err(|e| e.to_string())
        }
    }
}

/// Every variant the trainer, the evaluator and the samplers build for `configs` on a dry-run device of `versions`.
fn variants(versions: &str, configs: &[Config]) -> Option<Vec<pixelcnn::gpu::kernels::Variant>> {
    let gpu = match Gpu::open_dry(Some(versions)) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("NOTE: {versions} cannot be opened here ({e:#}); its variants are not enumerated");
            return None;
        }
    };
    for &config in configs {
        let net = Network::new(config);
        let model = GpuModel::new(&gpu, &net, &net.init_params(0)).unwrap();
        let mut trainer = Trainer::new(&gpu, model, Default::default(), 2).unwrap();
        trainer.record(&gpu, 2).unwrap();
        let model = GpuModel::new(&gpu, &net, &net.init_params(0)).unwrap();
        pixelcnn::gpu::sampler::record_all(&gpu, &model, 4).unwrap();
    }
    Some(gpu.variants())
}

#[test]
fn every_pipeline_translates_on_every_backend_or_has_a_chosen_fallback() {
    if gpu_for_tests().is_none() {
        return;
    }
    let configs = [
        Config::default(),
        Config::pixelcnn(32, 2).conditional(),
        Config::gated(32, 3).conditional(),
        Config::gated(128, 5),
    ];
    let mut all = Vec::new();
    for versions in ["conv=raster,pixel=layers", "conv=tiled,pixel=net"] {
        if let Some(v) = variants(versions, &configs) {
            all.extend(v);
        }
    }
    // One line per distinct (entry point, constants).
    let mut rows: BTreeMap<String, (String, String, bool)> = BTreeMap::new();
    for v in &all {
        let consts: Vec<String> = v.consts.iter().map(|(c, x)| format!("{c}={x}")).collect();
        let key = format!("{}:{} {}", v.family, v.entry, consts.join(" "));
        // Subgroup builtins or operations in code (not comments).
        let code: String = v.source.lines().map(|l| l.split("//").next().unwrap_or("")).collect();
        let subgroups = [
            "subgroupBroadcast(",
            "subgroupShuffle(",
            "subgroupAdd(",
            "subgroup_invocation_id",
        ]
        .iter()
        .any(|s| code.contains(s));
        rows.entry(key)
            .or_insert((v.source.clone(), v.entry.clone(), subgroups));
    }
    assert!(rows.len() >= 20, "only {} variants enumerated", rows.len());
    let families: std::collections::BTreeSet<&str> = all.iter().map(|v| v.family.as_str()).collect();
    eprintln!("{} pipeline variants of {} families", rows.len(), families.len());
    eprintln!(
        "{:<72} {:>7} {:>7} {:>7} {:>7}",
        "entry point and constants", BACKENDS[0], BACKENDS[1], BACKENDS[2], BACKENDS[3]
    );
    let mut failures = Vec::new();
    for (key, (src, entry, subgroups)) in &rows {
        let mut line = format!("{key:<72}");
        for b in BACKENDS {
            match translate(b, src, entry, *subgroups) {
                Ok(()) => line.push_str(&format!(" {:>7}", "ok")),
                Err(e) => {
                    line.push_str(&format!(" {:>7}", "FAIL"));
                    failures.push(format!("{key} on {b}: {e}"));
                }
            }
        }
        if *subgroups {
            line.push_str("  (subgroups)");
        }
        eprintln!("{line}");
    }
    assert!(failures.is_empty(), "translations failed:\n{}", failures.join("\n"));

    // Backends whose wgpu device has no subgroups (GL) get the versions without them.
    let gl = AdapterFacts {
        name: "llvmpipe".into(),
        backend: "Gl".into(),
        software: true,
        subgroups: false,
        subgroup_min: 0,
        subgroup_max: 0,
        max_uniform_buffers_per_stage: 12,
        max_uniform_binding: 65536,
    };
    let choice = KernelChoice::choose(&gl, None).unwrap();
    assert_eq!(
        (choice.conv, choice.pixel),
        (ConvVersion::Tiled, PixelVersion::Net),
        "{}",
        choice.reason
    );
    for (k, r) in &rows {
        let subgroup_family = k.starts_with("conv_raster");
        assert_eq!(r.2, subgroup_family, "{k}: only the raster kernels use subgroups");
    }
    let no_subgroups = rows.values().filter(|r| !r.2).count();
    eprintln!("{no_subgroups} variants need no subgroups: the set a device without subgroups runs");
}
