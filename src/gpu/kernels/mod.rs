//! The kernels: one module per WGSL kernel family, beside its shader `shaders/<family>.wgsl`. Each module owns its
//! family's uniform struct(s), the named views of each entry point (from which the binding table derives), its
//! dispatch shapes and its launch functions; the CPU twin of each kernel has the same name in `cpu.rs`, and
//! `tests/gpu_kernels.rs` has one test per family that pits the two against each other.
//!
//! This file holds what the families share: the registry of shaders ([`FAMILIES`]), binding access modes, the
//! [`uniform_struct!`] and [`bindings!`] declarations (the host's half of every kernel interface, which
//! `tests/interface.rs` checks against naga's reading of the WGSL), and compiled pipelines with their variants.
//!
//! Adding a kernel family: write `shaders/<family>.wgsl` (header comment: layouts, bindings, dispatch shape) and
//! `kernels/<family>.rs` (its `FAMILY`, uniform struct, views and launch functions), then add the module and its
//! `FAMILY` to the two lists below.

use super::buffers::View;
use super::record::{Label, Program};
use super::Gpu;
use anyhow::{anyhow, bail, Result};
use std::sync::Arc;

/// How a kernel reaches a binding (binding 0 is always the uniform block, with a dynamic offset).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Access {
    /// `var<storage, read>`.
    Read,
    /// `var<storage, read_write>`.
    ReadWrite,
    /// A read-only window bound as a uniform buffer (at most `max_uniform_buffer_binding_size` bytes).
    Uniform,
}

/// One field of a uniform struct as Rust lays it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldLayout {
    pub name: &'static str,
    pub offset: usize,
    pub size: usize,
}

/// A uniform struct as Rust lays it out: the WGSL struct of the same name must agree (`tests/interface.rs`).
#[derive(Clone, Debug)]
pub struct UniformLayout {
    pub name: &'static str,
    pub size: usize,
    pub fields: Vec<FieldLayout>,
}

/// A `#[repr(C)]` mirror of a WGSL uniform struct (declared with [`uniform_struct!`]).
pub trait Uniform: bytemuck::Pod {
    fn layout() -> UniformLayout;
}

/// Declares a uniform block: a `#[repr(C)]`, `Pod` struct whose fields (padding fields included) mirror the WGSL
/// struct of the same name, member for member, and its [`UniformLayout`] for the interface test.
macro_rules! uniform_struct {
    ($(#[$doc:meta])* pub struct $name:ident { $($(#[$fdoc:meta])* pub $field:ident: $ty:ty,)* }) => {
        $(#[$doc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
        pub struct $name {
            $($(#[$fdoc])* pub $field: $ty,)*
        }

        impl $crate::gpu::kernels::Uniform for $name {
            fn layout() -> $crate::gpu::kernels::UniformLayout {
                $crate::gpu::kernels::UniformLayout {
                    name: stringify!($name),
                    size: std::mem::size_of::<$name>(),
                    fields: vec![$($crate::gpu::kernels::FieldLayout {
                        name: stringify!($field),
                        offset: std::mem::offset_of!($name, $field),
                        size: std::mem::size_of::<$ty>(),
                    },)*],
                }
            }
        }
    };
}

/// The buffers of one dispatch, named: each entry point has a struct of views, and its binding table (binding
/// number and access mode per view) derives from the same declaration.
pub trait Bindings {
    /// `(binding, access)` of every view, in the order of [`Bindings::views`].
    fn table(&self) -> Vec<(u32, Access)>;
    fn views(self) -> Vec<View>;
}

/// Declares the named views of an entry point: `field: binding Access` per binding (binding 0, the uniform block,
/// is implicit). Produces the struct and its [`Bindings`].
macro_rules! bindings {
    ($(#[$doc:meta])* pub struct $name:ident { $($(#[$fdoc:meta])* $field:ident: $binding:literal $access:ident,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $name {
            $($(#[$fdoc])* pub $field: $crate::gpu::buffers::View,)*
        }

        impl $name {
            /// The binding table of this entry point.
            pub const TABLE: &'static [(u32, $crate::gpu::kernels::Access)] =
                &[$(($binding, $crate::gpu::kernels::Access::$access),)*];
        }

        impl $crate::gpu::kernels::Bindings for $name {
            fn table(&self) -> Vec<(u32, $crate::gpu::kernels::Access)> {
                Self::TABLE.to_vec()
            }
            fn views(self) -> Vec<$crate::gpu::buffers::View> {
                vec![$(self.$field,)*]
            }
        }
    };
}

/// Views with some bindings read as uniform buffers rather than storage buffers: a variant choice made per
/// dispatch, for views that fit uniform bindings. Each `(binding, view)` of `uniform` replaces the view at that
/// binding, or adds a binding the views do not name (a weight's further windows).
pub struct UniformAt<B: Bindings> {
    pub views: B,
    pub uniform: Vec<(u32, View)>,
}

impl<B: Bindings> Bindings for UniformAt<B> {
    fn table(&self) -> Vec<(u32, Access)> {
        let mut table = self.views.table();
        for &(b, _) in &self.uniform {
            match table.iter_mut().find(|(x, _)| *x == b) {
                Some(entry) => entry.1 = Access::Uniform,
                None => table.push((b, Access::Uniform)),
            }
        }
        table
    }
    fn views(self) -> Vec<View> {
        let table = self.views.table();
        let mut views = self.views.views();
        for (b, view) in self.uniform {
            match table.iter().position(|(x, _)| *x == b) {
                Some(i) => views[i] = view,
                None => views.push(view),
            }
        }
        views
    }
}

pub mod adam;
pub mod class_bias;
pub mod conv;
pub mod elementwise;
pub mod peak;
pub mod pixel_net;
pub mod prelude;
pub mod reduce;
pub mod sample;

/// A WGSL kernel family: its file, what the host prepends to it (besides `prelude.wgsl`, which every family gets),
/// and the uniform structs it declares.
pub struct Family {
    pub name: &'static str,
    pub source: &'static str,
    pub prepend: &'static [&'static str],
    pub uniforms: &'static [fn() -> UniformLayout],
}

/// The shader registry: every family, compiled into the binary so that it runs from any directory.
pub const FAMILIES: &[Family] = &[
    conv::RASTER,
    conv::TILED,
    pixel_net::FAMILY,
    reduce::FAMILY,
    elementwise::FAMILY,
    class_bias::FAMILY,
    adam::FAMILY,
    sample::FAMILY,
    peak::FAMILY,
];

/// The family called `name`.
pub fn family(name: &str) -> Result<&'static Family> {
    FAMILIES
        .iter()
        .find(|f| f.name == name)
        .ok_or_else(|| anyhow!("no shader family {name}"))
}

/// A compiled entry point with its explicit bind-group layout (explicit, so the uniform can use dynamic offsets).
pub struct Pipeline {
    /// `family:entry CONST=value ...`, for labels and errors.
    pub name: String,
    pub family: String,
    /// The template constants it was built with.
    pub consts: Vec<(String, u32)>,
    pub entry: String,
    /// The storage and window bindings, in the order a dispatch passes its views.
    pub bindings: Vec<(u32, Access)>,
    pub layout: wgpu::BindGroupLayout,
    /// None on a dry-run device ([`Gpu::dry_run`]), which records programs but never runs them.
    pub pipeline: Option<wgpu::ComputePipeline>,
}

/// A pipeline variant the host built: its family, entry point, template constants, expanded WGSL and the binding
/// table the host binds it with (for the translation and interface tests).
#[derive(Clone, Debug)]
pub struct Variant {
    pub family: String,
    pub entry: String,
    pub consts: Vec<(String, u32)>,
    pub source: String,
    pub bindings: Vec<(u32, Access)>,
}

/// The pipeline cache's key: FNV-1a over the family, the entry point and the constants (names and values).
pub fn pipeline_key(family: &str, entry: &str, consts: &[(&str, u32)]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        h = (h ^ 0xff).wrapping_mul(0x0100_0000_01b3);
    };
    eat(family.as_bytes());
    eat(entry.as_bytes());
    for (c, v) in consts {
        eat(c.as_bytes());
        eat(&v.to_le_bytes());
    }
    h
}

/// Workgroups of 64 invocations covering `invocations`.
pub fn groups64(invocations: usize) -> usize {
    invocations.div_ceil(64)
}

/// Largest power of two ≤ min(n, cap).
pub fn pow2_at_most(n: usize, cap: usize) -> usize {
    let mut t = 1;
    while t * 2 <= n.min(cap) {
        t *= 2;
    }
    t
}

impl Gpu {
    /// The pipeline for `entry` of `family` with its template constants set to `consts` and the binding table
    /// `bindings`, compiled once per process. Shader errors come back as errors, not panics.
    pub fn pipeline(
        &self,
        family: &str,
        entry: &str,
        consts: &[(&str, u32)],
        bindings: &[(u32, Access)],
    ) -> Result<Arc<Pipeline>> {
        // The sampler looks a pipeline up for every dispatch it records (thousands per image row), so a lookup only
        // hashes and, on a hit, compares the family, entry and constants (against a collision); the name is built
        // only to compile.
        let key = pipeline_key(family, entry, consts);
        let named = |p: &Pipeline| {
            p.family == family
                && p.entry == entry
                && p.consts.len() == consts.len()
                && p.consts.iter().zip(consts).all(|((a, x), (b, y))| a == b && x == y)
        };
        if let Some(p) = self
            .pipelines
            .lock()
            .unwrap()
            .get(&key)
            .and_then(|v| v.iter().find(|p| named(p)))
        {
            if p.bindings != bindings {
                bail!(
                    "{} was built with bindings {:?}, now asked for {bindings:?}",
                    p.name,
                    p.bindings
                );
            }
            return Ok(p.clone());
        }
        let mut name = format!("{family}:{entry}");
        for (c, v) in consts {
            name.push_str(&format!(" {c}={v}"));
        }
        let src = super::shader::source(family, consts)?;
        self.variants.lock().unwrap().push(Variant {
            family: family.to_string(),
            entry: entry.to_string(),
            consts: consts.iter().map(|(c, v)| (c.to_string(), *v)).collect(),
            source: src.clone(),
            bindings: bindings.to_vec(),
        });
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&name),
            source: wgpu::ShaderSource::Wgsl(src.into()),
        });
        let buffer_entry = |binding, ty| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty,
                has_dynamic_offset: binding == 0,
                min_binding_size: None,
            },
            count: None,
        };
        let mut entries = vec![buffer_entry(0, wgpu::BufferBindingType::Uniform)];
        for &(binding, a) in bindings {
            let ty = match a {
                Access::Uniform => wgpu::BufferBindingType::Uniform,
                Access::Read => wgpu::BufferBindingType::Storage { read_only: true },
                Access::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
            };
            entries.push(buffer_entry(binding, ty));
        }
        let layout = self.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(&name),
            entries: &entries,
        });
        let pipeline_layout = self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(&name),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = (!self.dry_run).then(|| {
            self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&name),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            })
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(anyhow!("compiling {name}: {e}"));
        }
        let p = Arc::new(Pipeline {
            name: name.clone(),
            family: family.to_string(),
            consts: consts.iter().map(|(c, v)| (c.to_string(), *v)).collect(),
            entry: entry.to_string(),
            bindings: bindings.to_vec(),
            layout,
            pipeline,
        });
        self.pipelines.lock().unwrap().entry(key).or_default().push(p.clone());
        Ok(p)
    }

    /// Every pipeline variant built so far on this device (for reports and the translation and interface tests).
    pub fn variants(&self) -> Vec<Variant> {
        self.variants.lock().unwrap().clone()
    }
}

/// One dispatch to record: which entry point of which family, with what constants, views, uniform block, size.
pub struct Launch<'a, B: Bindings, U: Uniform> {
    pub family: &'static str,
    pub entry: &'static str,
    pub consts: &'a [(&'a str, u32)],
    pub views: B,
    pub uniform: U,
    pub workgroups: usize,
    pub label: Label,
}

impl<B: Bindings, U: Uniform> Launch<'_, B, U> {
    /// Appends the dispatch to `p`; returns its index (for [`Program::set_uniform`]).
    pub fn record(self, gpu: &Gpu, p: &mut Program) -> Result<usize> {
        let pipe = gpu.pipeline(self.family, self.entry, self.consts, &self.views.table())?;
        Ok(p.dispatch(
            pipe,
            self.views.views(),
            bytemuck::bytes_of(&self.uniform),
            self.workgroups,
            self.label,
        ))
    }
}
