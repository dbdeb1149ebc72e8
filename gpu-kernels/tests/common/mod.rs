//! Opening the GPU for the differential tests.
//!
//! Without an adapter a test prints a loud SKIPPED line and passes, unless
//! `INT_REQUIRE_GPU=1` (set in CI), where a missing adapter fails the test:
//! a green CI run then means the kernels really ran.

#![allow(dead_code)]

use std::sync::OnceLock;

use int_gpu::{BackendChoice, GpuContext, GpuOptions};

fn require_gpu() -> bool {
    std::env::var("INT_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

fn open(opts: GpuOptions, what: &str) -> Option<&'static GpuContext> {
    open_owned(opts, what).map(|c| &*Box::leak(Box::new(c)))
}

fn open_owned(opts: GpuOptions, what: &str) -> Option<GpuContext> {
    match GpuContext::new(&opts) {
        Ok(ctx) => {
            let s = ctx.summary();
            eprintln!(
                "GPU tests on {} ({}, shader_int64: {})",
                s.name, s.backend, s.shader_int64
            );
            Some(ctx)
        }
        Err(e) => {
            if require_gpu() {
                panic!("INT_REQUIRE_GPU=1 but no {what} adapter: {e}");
            }
            eprintln!(
                "\n*** SKIPPED: no {what} adapter ({e}); install mesa-vulkan-drivers (scripts/test does) ***\n"
            );
            None
        }
    }
}

/// A context of the caller's own, not shared with other tests (for tests
/// that read its [`GpuContext::transfer_stats`]), whose batch kernels take
/// at most `items` items per launch (`0`: no cap), so that small inputs
/// can span several launches. `None` (test skipped) without an adapter.
pub fn own_context(items: usize, backend: BackendChoice) -> Option<GpuContext> {
    open_owned(
        GpuOptions {
            backend,
            max_items_per_launch: items,
            ..Default::default()
        },
        match backend {
            BackendChoice::Native => "Vulkan/Metal/DX12",
            BackendChoice::Gl => "GL",
        },
    )
}

/// The native adapter (Vulkan/Metal/DX12; lavapipe here), with 64-bit
/// integers when it has them. `None` (test skipped) without one.
pub fn native() -> Option<&'static GpuContext> {
    static CTX: OnceLock<Option<&'static GpuContext>> = OnceLock::new();
    *CTX.get_or_init(|| open(GpuOptions::default(), "Vulkan/Metal/DX12"))
}

/// The native adapter forced onto the portable `u32`-only kernels.
pub fn portable() -> Option<&'static GpuContext> {
    static CTX: OnceLock<Option<&'static GpuContext>> = OnceLock::new();
    *CTX.get_or_init(|| {
        open(
            GpuOptions {
                portable_only: true,
                ..Default::default()
            },
            "Vulkan/Metal/DX12",
        )
    })
}

/// The GL adapter (llvmpipe here; no 64-bit integers).
pub fn gl() -> Option<&'static GpuContext> {
    static CTX: OnceLock<Option<&'static GpuContext>> = OnceLock::new();
    *CTX.get_or_init(|| {
        open(
            GpuOptions {
                backend: BackendChoice::Gl,
                ..Default::default()
            },
            "GL",
        )
    })
}

/// Every context the suite runs the kernels on: native (int64 where
/// available), native portable, GL.
pub fn all() -> Vec<(&'static str, &'static GpuContext)> {
    let mut v = Vec::new();
    if let Some(c) = native() {
        v.push(("native", c));
    }
    if let Some(c) = portable() {
        v.push(("portable", c));
    }
    if let Some(c) = gl() {
        v.push(("gl", c));
    }
    v
}

/// Runs `f` on the context called `label` in [`all`] (`native`,
/// `portable`, `gl`); nothing when the machine has no such adapter.
pub fn with_ctx(label: &'static str, f: impl FnOnce(&'static str, &'static GpuContext)) {
    if let Some((l, ctx)) = all().into_iter().find(|(l, _)| *l == label) {
        f(l, ctx);
    }
}

/// A seeded RNG.
pub fn rng(seed: u64) -> rand::rngs::StdRng {
    use rand::SeedableRng;
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// `n` scalars: 0, 1, 2, r − 1, r − 2, 2^(b−1), 2^(b−1) − 1, ⌊r/2⌋,
/// 2⁶⁴ − 1, then random ones.
pub fn edge_scalars<F: ark_ff::PrimeField>(n: usize, seed: u64) -> Vec<F> {
    use ark_ff::BigInteger;
    let mut r = rng(seed);
    let top = F::from(2u64).pow([u64::from(F::MODULUS_BIT_SIZE - 1)]);
    let mut half = F::MODULUS;
    half.div2();
    let mut v = vec![
        F::zero(),
        F::one(),
        F::from(2u64),
        -F::one(),
        -F::from(2u64),
        top,
        top - F::one(),
        F::from_bigint(half).unwrap_or_default(),
        F::from(u64::MAX),
    ];
    while v.len() < n {
        v.push(F::rand(&mut r));
    }
    v.truncate(n);
    v
}
