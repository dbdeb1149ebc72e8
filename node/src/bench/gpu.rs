//! The GPU harness behind `int bench gpu`: every batch kernel of `int-gpu`
//! beside its CPU reference, in one run, on the same inputs, naming the
//! adapter.
//!
//! For each kernel and size it times the GPU path (upload, compute,
//! readback, conversion back to arkworks types; the pipeline compiled by
//! a warm-up call first) and the CPU path the node uses without a GPU
//! (arkworks' multi-threaded Pippenger, light-poseidon and blst-equivalent
//! hashing on all cores), reports the medians of `--reps` runs and their
//! ratio, and checks that both gave the same answer: a bench row is never
//! a wrong result measured fast.
//!
//! On a software adapter (lavapipe, llvmpipe) the numbers show correctness
//! and fixed overheads, not GPU speed; `gpu-kernels/README.md` gives the
//! op-count estimate to compare a real GPU's figures with.

use std::time::Instant;

use ark_ec::CurveGroup;
use ark_ec::short_weierstrass::{Affine, Projective};
use ark_ff::UniformRand;
use int_gpu::{BackendChoice, GpuContext, GpuCurve, GpuError, GpuOptions};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;

/// Options of `int bench gpu`.
#[derive(Debug, Clone, clap::Args)]
pub struct GpuArgs {
    /// Smallest batch, as log₂ of the item count.
    #[arg(long, default_value_t = 10)]
    pub min_log: u32,
    /// Largest batch, as log₂ of the item count (at most 22).
    #[arg(long, default_value_t = 14)]
    pub max_log: u32,
    /// Timed runs per row (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Use wgpu's GL backend (the portable u32 kernels) instead of
    /// Vulkan/Metal/DX12.
    #[arg(long)]
    pub gl: bool,
    /// Run the portable u32 kernels even where the adapter has 64-bit
    /// integers (to compare the two multiply paths).
    #[arg(long)]
    pub portable: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// One measured row.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Kernel name (`scale_each_bn254_g1`, `hash_to_g1_bls12_381`,
    /// `poseidon_t3`, …).
    pub kernel: String,
    /// Items in the batch (points, hashes).
    pub n: usize,
    /// Median GPU time, milliseconds.
    pub gpu_ms: f64,
    /// Median CPU time, milliseconds, all cores.
    pub cpu_ms: f64,
    /// `cpu_ms / gpu_ms`: above 1 the GPU is faster.
    pub speedup: f64,
    /// `mul_chain_*` rows only: `gpu_ms` over the 32-bit baseline's on the
    /// same `n` and `k` (the int64 path where the adapter has
    /// `SHADER_INT64`, else the portable one); below 1 this limb layout is
    /// faster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vs_32: Option<f64>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct GpuReport {
    /// Adapter name.
    pub adapter: String,
    /// wgpu backend.
    pub backend: String,
    /// Discrete, integrated, CPU (software), …
    pub device_type: String,
    /// Whether the kernels used 64-bit integer multiplies.
    pub shader_int64: bool,
    /// CPU threads the CPU side used.
    pub cpu_threads: usize,
    /// The rows, in run order.
    pub rows: Vec<Row>,
}

/// Errors of the GPU bench.
#[derive(Debug, thiserror::Error)]
pub enum GpuBenchError {
    /// The GPU layer failed (no adapter, a launch error).
    #[error(transparent)]
    Gpu(#[from] GpuError),
    /// GPU and CPU disagree: a kernel bug, reported rather than timed.
    #[error("{kernel} at n = {n}: GPU and CPU results differ")]
    Mismatch {
        /// Kernel.
        kernel: String,
        /// Size.
        n: usize,
    },
    /// Options out of range.
    #[error("bad options: {0}")]
    BadArgs(String),
}

fn median_ms(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Times `f` `reps` times after one untimed warm-up; the median in ms and
/// the last result.
fn time<T>(reps: usize, mut f: impl FnMut() -> Result<T, GpuError>) -> Result<(f64, T), GpuError> {
    let mut last = f()?;
    let mut ms = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        last = f()?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok((median_ms(ms), last))
}

/// A checked row: an error unless GPU and CPU agree. `vs_32` is the
/// limb-layout rows' time over their 32-bit baseline.
fn row<T: PartialEq>(
    kernel: &str,
    n: usize,
    gpu: (f64, T),
    cpu: &(f64, T),
    vs_32: Option<f64>,
) -> Result<Row, GpuBenchError> {
    if gpu.1 != cpu.1 {
        return Err(GpuBenchError::Mismatch {
            kernel: kernel.into(),
            n,
        });
    }
    let r = Row {
        kernel: kernel.into(),
        n,
        gpu_ms: gpu.0,
        cpu_ms: cpu.0,
        speedup: if gpu.0 > 0.0 { cpu.0 / gpu.0 } else { 0.0 },
        vs_32,
    };
    let vs = r
        .vs_32
        .map(|v| format!("  vs 32-bit {v:>6.3}"))
        .unwrap_or_default();
    eprintln!(
        "{:<22} n = {:>7}  gpu {:>10.3} ms  cpu {:>10.3} ms  cpu/gpu {:>6.3}{vs}",
        r.kernel, r.n, r.gpu_ms, r.cpu_ms, r.speedup
    );
    Ok(r)
}

/// On `2^max_log` random points and scalars of curve `C` (named `curve`
/// in the rows), at each size: `n` independent scalar multiplications
/// `kᵢ·Pᵢ` by full-width scalars (the `rᵢ·Aᵢ` of a Groth16 batch) and one
/// MSM, GPU beside arkworks on all cores.
fn curve_rows<C: GpuCurve>(
    ctx: &GpuContext,
    curve: &str,
    args: &GpuArgs,
    rng: &mut StdRng,
    rows: &mut Vec<Row>,
) -> Result<(), GpuBenchError> {
    use rayon::prelude::*;
    let max = 1usize << args.max_log;
    // Random points as random multiples of the generator, normalised once.
    let g = Projective::<C>::from(C::GENERATOR);
    let proj: Vec<_> = (0..max).map(|_| g * C::ScalarField::rand(rng)).collect();
    let bases: Vec<Affine<C>> = Projective::<C>::normalize_batch(&proj);
    let scalars: Vec<C::ScalarField> = (0..max).map(|_| C::ScalarField::rand(rng)).collect();
    for log in args.min_log..=args.max_log {
        let n = 1usize << log;
        let (b, s) = (&bases[..n], &scalars[..n]);
        let gpu = time(args.reps, || {
            ctx.scale_each::<C>(b, s)
                .map(|p| Projective::<C>::normalize_batch(&p))
        })?;
        let cpu = time(args.reps, || {
            let p: Vec<Projective<C>> = b.par_iter().zip(s).map(|(p, k)| *p * k).collect();
            Ok(Projective::<C>::normalize_batch(&p))
        })?;
        rows.push(row(&format!("scale_each_{curve}"), n, gpu, &cpu, None)?);
    }
    for log in args.min_log..=args.max_log {
        let n = 1usize << log;
        let (b, s) = (&bases[..n], &scalars[..n]);
        let gpu = time(args.reps, || ctx.msm::<C>(b, s).map(|p| p.into_affine()))?;
        let cpu = time(args.reps, || {
            int_gpu::msm_cpu::<C>(b, s).map(|p| p.into_affine())
        })?;
        rows.push(row(&format!("msm_{curve}"), n, gpu, &cpu, None)?);
    }
    Ok(())
}

/// Hashing `n` distinct messages to BLS12-381 G1 under the node's
/// signature DST, GPU (SSWU, isogeny, cofactor) beside the CPU.
fn hash_rows(ctx: &GpuContext, args: &GpuArgs, rows: &mut Vec<Row>) -> Result<(), GpuBenchError> {
    use int_engine::crypto::bls::DST_SIG as DST;
    let max = 1usize << args.max_log;
    let msgs: Vec<Vec<u8>> = (0..max)
        .map(|i| format!("transfer #{i}").into_bytes())
        .collect();
    let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
    for log in args.min_log..=args.max_log {
        let n = 1usize << log;
        let m = &refs[..n];
        let gpu = time(args.reps, || ctx.hash_to_g1(m, DST))?;
        let cpu = time(args.reps, || int_gpu::hash_to_g1::hash_to_g1_cpu(m, DST))?;
        rows.push(row("hash_to_g1_bls12_381", n, gpu, &cpu, None)?);
    }
    Ok(())
}

fn poseidon_rows(
    ctx: &GpuContext,
    args: &GpuArgs,
    rng: &mut StdRng,
    rows: &mut Vec<Row>,
) -> Result<(), GpuBenchError> {
    let max = 1usize << args.max_log;
    let inputs: Vec<ark_bn254::Fr> = (0..2 * max).map(|_| ark_bn254::Fr::rand(rng)).collect();
    for log in args.min_log..=args.max_log {
        let n = 1usize << log;
        let x = &inputs[..2 * n];
        let gpu = time(args.reps, || ctx.poseidon_batch(2, x))?;
        let cpu = time(args.reps, || int_gpu::poseidon::poseidon_cpu(2, x))?;
        rows.push(row("poseidon_t3", n, gpu, &cpu, None)?);
    }
    Ok(())
}

/// Field inversions (Fermat: ~380 Montgomery multiplications each for
/// BN254, compute-bound) on `ctx`, named by its multiply path, beside
/// arkworks: the row that compares the int64 and portable limb paths.
fn field_rows<F: int_gpu::GpuField>(
    ctx: &GpuContext,
    name: &str,
    args: &GpuArgs,
    rng: &mut StdRng,
    rows: &mut Vec<Row>,
) -> Result<(), GpuBenchError> {
    let n = 1usize << args.min_log.max(10);
    let a: Vec<F> = (0..n).map(|_| F::rand(rng)).collect();
    let path = if ctx.int64() { "int64" } else { "portable" };
    let gpu = time(args.reps, || ctx.field_op(int_gpu::FieldOp::Inv, &a, &a))?;
    let cpu = time(args.reps, || {
        use rayon::prelude::*;
        Ok(a.par_iter()
            .map(|x| x.inverse().unwrap_or_default())
            .collect::<Vec<F>>())
    })?;
    rows.push(row(&format!("{name}_inv_{path}"), n, gpu, &cpu, None)?);
    Ok(())
}

/// Multiplications per thread in the `mul_chain_*` rows: enough that the
/// chain, not the upload and conversion, is most of the time.
pub const CHAIN_K: u32 = 256;

/// The limb-layout comparison: every thread computes `x ← x·y` `CHAIN_K`
/// times, for `n = 2^min_log … 2^max_log`, in the 32-bit layout on the
/// int64 path (when the adapter has it) and the portable path, and in the
/// 13-bit layout (`int_gpu::limb13`), each checked equal to arkworks doing
/// the same multiplications on all cores. `vs_32` is each layout's time
/// over the first 32-bit row's.
fn chain_rows<F: int_gpu::GpuField>(
    ctx: &GpuContext,
    name: &str,
    args: &GpuArgs,
    rng: &mut StdRng,
    rows: &mut Vec<Row>,
) -> Result<(), GpuBenchError> {
    use int_gpu::MulPath;
    let max = 1usize << args.max_log;
    let x: Vec<F> = (0..max).map(|_| F::rand(rng)).collect();
    let y: Vec<F> = (0..max).map(|_| F::rand(rng)).collect();
    let k = CHAIN_K;
    eprintln!("mul_chain rows: x ← x·y {k} times per thread");
    let mut layouts = Vec::new();
    if ctx.int64() {
        layouts.push(("int64-32", Some(MulPath::Int64)));
    }
    layouts.push(("portable-32", Some(MulPath::Portable)));
    layouts.push(("13-bit", None));
    for log in args.min_log..=args.max_log {
        let n = 1usize << log;
        let (x, y) = (&x[..n], &y[..n]);
        let cpu = time(args.reps, || int_gpu::mul_chain_cpu(x, y, k))?;
        let mut base = None;
        for (layout, path) in &layouts {
            let gpu = time(args.reps, || match path {
                Some(path) => ctx.mul_chain_32(*path, x, y, k),
                None => ctx.mul_chain_13(x, y, k),
            })?;
            let base_ms = *base.get_or_insert(gpu.0);
            let vs_32 = if base_ms > 0.0 { gpu.0 / base_ms } else { 0.0 };
            let kernel = format!("mul_chain_{name}_{layout}");
            rows.push(row(&kernel, n, gpu, &cpu, Some(vs_32))?);
        }
    }
    Ok(())
}

/// Runs the bench: field inversions on each multiply path, the limb-layout
/// comparison (`mul_chain_*`), independent
/// scalar multiplications and MSMs on both curves, hashing to G1 and Poseidon
/// (t = 3) at `2^min_log … 2^max_log`, GPU beside CPU.
pub fn run(args: &GpuArgs) -> Result<GpuReport, GpuBenchError> {
    if args.min_log > args.max_log || args.max_log > 22 {
        return Err(GpuBenchError::BadArgs(format!(
            "need min-log ≤ max-log ≤ 22, got {} and {}",
            args.min_log, args.max_log
        )));
    }
    let ctx = GpuContext::new(&GpuOptions {
        backend: if args.gl {
            BackendChoice::Gl
        } else {
            BackendChoice::Native
        },
        portable_only: args.portable,
        ..Default::default()
    })?;
    let s = ctx.summary().clone();
    eprintln!(
        "int bench gpu on {} ({}, {:?}, shader_int64: {}), CPU side on {} threads",
        s.name,
        s.backend,
        s.device_type,
        s.shader_int64,
        rayon::current_num_threads()
    );
    let mut rng = StdRng::seed_from_u64(0x1e7_6b0);
    let mut rows = Vec::new();
    field_rows::<ark_bn254::Fq>(&ctx, "bn254_fq", args, &mut rng, &mut rows)?;
    field_rows::<ark_bls12_381::Fq>(&ctx, "bls12_381_fq", args, &mut rng, &mut rows)?;
    if ctx.int64() {
        // The same adapter on the portable u32 path, side by side.
        let portable = GpuContext::new(&GpuOptions {
            backend: if args.gl {
                BackendChoice::Gl
            } else {
                BackendChoice::Native
            },
            portable_only: true,
            ..Default::default()
        })?;
        field_rows::<ark_bn254::Fq>(&portable, "bn254_fq", args, &mut rng, &mut rows)?;
        field_rows::<ark_bls12_381::Fq>(&portable, "bls12_381_fq", args, &mut rng, &mut rows)?;
    }
    chain_rows::<ark_bn254::Fq>(&ctx, "bn254_fq", args, &mut rng, &mut rows)?;
    chain_rows::<ark_bls12_381::Fq>(&ctx, "bls12_381_fq", args, &mut rng, &mut rows)?;
    curve_rows::<ark_bn254::g1::Config>(&ctx, "bn254_g1", args, &mut rng, &mut rows)?;
    curve_rows::<ark_bls12_381::g1::Config>(&ctx, "bls12_381_g1", args, &mut rng, &mut rows)?;
    hash_rows(&ctx, args, &mut rows)?;
    poseidon_rows(&ctx, args, &mut rng, &mut rows)?;
    Ok(GpuReport {
        adapter: s.name,
        backend: s.backend,
        device_type: format!("{:?}", s.device_type),
        shader_int64: s.shader_int64,
        cpu_threads: rayon::current_num_threads(),
        rows,
    })
}
