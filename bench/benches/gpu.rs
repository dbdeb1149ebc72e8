//! Criterion benches of the GPU kernels (`int-gpu`) beside their CPU
//! references, in one run, naming the adapter.
//!
//! Groups, each size benched as `gpu` and `cpu` in the same group with
//! `Throughput::Elements(n)` (criterion prints points or hashes per second):
//!
//! * `msm_bn254_g1` and `msm_bls12_381_g1`: `GpuContext::msm` beside
//!   `msm_cpu` (arkworks' Pippenger on all cores) at 2¹⁰, 2¹², … 2¹⁸ points
//!   (random points, random full-width scalars);
//! * `poseidon_t3`: `GpuContext::poseidon_pairs` beside `poseidon_cpu(2, …)`
//!   (light-poseidon on all cores) at 2¹⁰, 2¹², … 2¹⁶ hashes of two inputs.
//!
//! Before a size is timed, GPU and CPU compute it once and must agree (the
//! bench panics otherwise: a bench of a wrong answer is worthless). That run
//! also sets the size's measurement time (ten samples of one iteration
//! each when one iteration is long), so the slow software adapter does not
//! drown the output in "unable to complete 10 samples" warnings.
//!
//! The bench opens the raw `GpuContext` (`GpuOptions::default()`: Vulkan,
//! Metal or DX12, the int64 kernels where the adapter has `SHADER_INT64`),
//! whatever `INT_ACCEL` says, and prints the adapter at start. Without an
//! adapter it prints a loud `SKIPPED` line and benches the CPU side only.
//!
//! # Environment
//!
//! * `INT_BENCH_GPU_MIN_LOG` / `INT_BENCH_GPU_MAX_LOG`: bench only the sizes
//!   2^L with MIN ≤ L ≤ MAX (defaults 10 and 18: the full range above).
//!   On lavapipe (software Vulkan) a 2¹⁸ MSM takes about 11 s, so
//!   `INT_BENCH_GPU_MAX_LOG=12` is the quick run.
//!
//! Run with `cargo bench -p int-bench --bench gpu`; `-- --test` runs each
//! bench once as a smoke test.
//!
//! # Figures
//!
//! 2026-11-24, 2-core shared VM, lavapipe (`llvmpipe (LLVM 15.0.6, 256
//! bits)`, Vulkan, software, int64 path: the "GPU" is the same two cores),
//! `INT_BENCH_GPU_MAX_LOG=12 cargo bench -p int-bench --bench gpu`, medians.
//! Another bench and a build were running on the same cores (load average
//! 5), so the figures are noisy (a second run differed by up to 45 %):
//!
//! | group | n | gpu | cpu | gpu / cpu |
//! |---|---|---|---|---|
//! | `msm_bn254_g1` | 2¹⁰ | 131 ms | 8.2 ms | 16 |
//! | `msm_bn254_g1` | 2¹² | 257 ms | 31.4 ms | 8.2 |
//! | `msm_bls12_381_g1` | 2¹⁰ | 179 ms | 25.0 ms | 7.1 |
//! | `msm_bls12_381_g1` | 2¹² | 592 ms | 75.4 ms | 7.9 |
//! | `poseidon_t3` | 2¹⁰ | 50.1 ms | 17.8 ms | 2.8 |
//! | `poseidon_t3` | 2¹² | 202 ms | 107 ms | 1.9 |
//!
//! On a software adapter these are overheads and correctness, not GPU
//! speed; `gpu-kernels/README.md` has the op-count estimate for a real GPU.

use std::hint::black_box;
use std::time::{Duration, Instant};

use ark_ec::scalar_mul::ScalarMul;
use ark_ec::short_weierstrass::{Affine, Projective};
use ark_ff::UniformRand;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput};
use criterion::{criterion_group, criterion_main};
use int_gpu::poseidon::poseidon_cpu;
use int_gpu::{GpuContext, GpuCurve, GpuOptions, msm_cpu};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// Smallest size benched, as log₂ (env `INT_BENCH_GPU_MIN_LOG`).
const MIN_LOG_ENV: &str = "INT_BENCH_GPU_MIN_LOG";
/// Largest size benched, as log₂ (env `INT_BENCH_GPU_MAX_LOG`).
const MAX_LOG_ENV: &str = "INT_BENCH_GPU_MAX_LOG";
/// The MSM sizes: 2¹⁰, 2¹², … 2¹⁸ points.
const MSM_LOGS: [u32; 5] = [10, 12, 14, 16, 18];
/// Poseidon batch sizes: 2¹⁰, 2¹², … 2¹⁶ hashes.
const POSEIDON_LOGS: [u32; 4] = [10, 12, 14, 16];

/// `name` as a log₂ size, or `default` when unset; panics on a bad value
/// (a bench's configuration error should stop it, loudly).
fn env_log(name: &str, default: u32) -> u32 {
    match std::env::var(name) {
        Err(_) => default,
        Ok(v) => match v.trim().parse::<u32>() {
            Ok(l) if l <= 24 => l,
            _ => panic!("{name}={v:?}: expected a log₂ size from 0 to 24"),
        },
    }
}

/// The sizes of `logs` inside the env's range.
fn sizes(logs: &[u32]) -> Vec<usize> {
    let (lo, hi) = (env_log(MIN_LOG_ENV, 10), env_log(MAX_LOG_ENV, 18));
    logs.iter()
        .filter(|l| (lo..=hi).contains(*l))
        .map(|l| 1usize << l)
        .collect()
}

/// Opens the adapter and says which it is; `None` (with a loud line) when
/// there is none.
fn open() -> Option<GpuContext> {
    match GpuContext::new(&GpuOptions::default()) {
        Ok(ctx) => {
            let s = ctx.summary();
            eprintln!(
                "\nint-gpu bench: adapter {} ({}, {:?}, shader_int64 {}, {}), CPU side on {} threads\n",
                s.name,
                s.backend,
                s.device_type,
                s.shader_int64,
                if s.is_software() {
                    "SOFTWARE: the same CPU cores behind a GPU API, so these are overheads, not GPU speed"
                } else {
                    "hardware"
                },
                rayon::current_num_threads()
            );
            Some(ctx)
        }
        Err(e) => {
            eprintln!(
                "\n*** SKIPPED: the `gpu` benches: {e}; benching the CPU side only ({} threads) ***\n",
                rayon::current_num_threads()
            );
            None
        }
    }
}

/// Runs `f` once and returns its result and how long it took.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed())
}

/// Benches `f` as `id/n` with settings fitted to `once` (the time of one
/// untimed run): ten samples of one iteration each when one iteration is
/// long, criterion's usual sampling within a short budget otherwise.
fn bench<T>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    id: &str,
    n: usize,
    once: Duration,
    mut f: impl FnMut() -> T,
) {
    if once >= Duration::from_millis(20) {
        g.sampling_mode(SamplingMode::Flat);
        g.warm_up_time(once.min(Duration::from_secs(2)));
        g.measurement_time(once.mul_f64(13.0).max(Duration::from_secs(1)));
    } else {
        g.sampling_mode(SamplingMode::Auto);
        g.warm_up_time(Duration::from_millis(500));
        g.measurement_time(Duration::from_secs(2));
    }
    g.bench_function(BenchmarkId::new(id, n), |b| b.iter(|| black_box(f())));
}

/// `n` random points of `C` (random multiples of the generator, by
/// arkworks' fixed-base table) and `n` random scalars.
fn inputs<C: GpuCurve>(n: usize, rng: &mut StdRng) -> (Vec<Affine<C>>, Vec<C::ScalarField>) {
    let k: Vec<C::ScalarField> = (0..n).map(|_| C::ScalarField::rand(rng)).collect();
    let bases = Projective::<C>::from(C::GENERATOR).batch_mul(&k);
    let scalars = (0..n).map(|_| C::ScalarField::rand(rng)).collect();
    (bases, scalars)
}

fn msm_group<C: GpuCurve>(c: &mut Criterion, name: &str, ctx: Option<&GpuContext>) {
    let ns = sizes(&MSM_LOGS);
    let Some(&max) = ns.last() else { return };
    let mut rng = StdRng::seed_from_u64(0x6b0_35b);
    let (bases, scalars) = inputs::<C>(max, &mut rng);
    if let Some(ctx) = ctx {
        // Compile the kernels on a tiny MSM first, so the first size's
        // check run (which sets its measurement time) is not the compile.
        let (b, s) = (&bases[..2], &scalars[..2]);
        assert_eq!(ctx.msm::<C>(b, s).unwrap(), msm_cpu::<C>(b, s).unwrap());
    }
    let mut g = c.benchmark_group(name);
    g.sample_size(10);
    for n in ns {
        let (b, s) = (&bases[..n], &scalars[..n]);
        g.throughput(Throughput::Elements(n as u64));
        let (want, cpu_once) = timed(|| msm_cpu::<C>(b, s).unwrap());
        match ctx {
            Some(ctx) => {
                let (got, gpu_once) = timed(|| ctx.msm::<C>(b, s).unwrap());
                assert_eq!(got, want, "{name} at n = {n}: GPU and CPU differ");
                bench(&mut g, "gpu", n, gpu_once, || ctx.msm::<C>(b, s).unwrap());
            }
            None => eprintln!("*** SKIPPED: {name}/gpu/{n}: no GPU adapter ***"),
        }
        bench(&mut g, "cpu", n, cpu_once, || msm_cpu::<C>(b, s).unwrap());
    }
    g.finish();
}

fn poseidon_group(c: &mut Criterion, ctx: Option<&GpuContext>) {
    let ns = sizes(&POSEIDON_LOGS);
    let Some(&max) = ns.last() else { return };
    let mut rng = StdRng::seed_from_u64(0x905_e1d0);
    let level: Vec<ark_bn254::Fr> = (0..2 * max)
        .map(|_| ark_bn254::Fr::rand(&mut rng))
        .collect();
    if let Some(ctx) = ctx {
        let x = &level[..2];
        assert_eq!(ctx.poseidon_pairs(x).unwrap(), poseidon_cpu(2, x).unwrap());
    }
    let mut g = c.benchmark_group("poseidon_t3");
    g.sample_size(10);
    for n in ns {
        let x = &level[..2 * n];
        g.throughput(Throughput::Elements(n as u64));
        let (want, cpu_once) = timed(|| poseidon_cpu(2, x).unwrap());
        match ctx {
            Some(ctx) => {
                let (got, gpu_once) = timed(|| ctx.poseidon_pairs(x).unwrap());
                assert_eq!(got, want, "poseidon_t3 at n = {n}: GPU and CPU differ");
                bench(&mut g, "gpu", n, gpu_once, || {
                    ctx.poseidon_pairs(x).unwrap()
                });
            }
            None => eprintln!("*** SKIPPED: poseidon_t3/gpu/{n}: no GPU adapter ***"),
        }
        bench(&mut g, "cpu", n, cpu_once, || poseidon_cpu(2, x).unwrap());
    }
    g.finish();
}

fn gpu(c: &mut Criterion) {
    let ctx = open();
    msm_group::<ark_bn254::g1::Config>(c, "msm_bn254_g1", ctx.as_ref());
    msm_group::<ark_bls12_381::g1::Config>(c, "msm_bls12_381_g1", ctx.as_ref());
    poseidon_group(c, ctx.as_ref());
}

criterion_group!(benches, gpu);
criterion_main!(benches);
