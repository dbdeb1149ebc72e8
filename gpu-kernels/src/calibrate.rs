//! Measuring where the GPU starts to pay: the thresholds of `Accel::Auto`.
//!
//! [`calibrate`] times one kind of [`Work`] on the GPU and on the CPU path
//! the node takes without one (arkworks / blst / light-poseidon on every
//! core), side by side on the same inputs, at doubling batch sizes
//! (`2^min_log … 2^max_log`, within a time budget). Each size is first
//! computed once on both sides, untimed (that also compiles the kernel), and
//! the two results must be equal ([`GpuError::Mismatch`] otherwise); then
//! `reps` timed runs of each give the medians.
//!
//! The threshold is [`crossover`]: the smallest measured size from which the
//! GPU is faster at that size and at every larger measured size, or
//! [`NEVER`] when it is not faster at the largest. Between the last size the
//! CPU won and that size nothing was measured, so the threshold errs towards
//! the CPU.
//!
//! What each kind measures (the work the verifiers hand over under it):
//!
//! | [`Work`] | GPU | CPU |
//! |---|---|---|
//! | `Msm` | `GpuContext::msm`, BN254 G1, full-width scalars | `msm_cpu` (arkworks Pippenger) |
//! | `ScaleEach` | `GpuContext::scale_each`, BN254 G1, full-width scalars (Groth16's `rᵢ·Aᵢ`) | arkworks `P·k` on all cores |
//! | `HashToG1` | `hash_to_g1` then `scale_each` by 64-bit scalars, BLS12-381 (the BLS batch's `rᵢ·H(mᵢ)`) | blst's `hash_to_g1`, arkworks `P·r` on all cores |
//! | `Poseidon` | `poseidon_pairs` (t = 3) | `poseidon_cpu(2, …)` |

use std::time::{Duration, Instant};

use ark_ec::scalar_mul::ScalarMul;
use ark_ec::short_weierstrass::{Affine, Projective};
use ark_ff::PrimeField;
use rayon::prelude::*;

use crate::{GpuContext, GpuCurve, GpuError, Thresholds, Work};

/// The threshold of a kind of work on which the GPU never won: `Auto` then
/// keeps every batch of it on the CPU.
pub const NEVER: usize = usize::MAX;

/// Largest `max_log` [`calibrate`] accepts (2²⁰ items: far past any
/// crossover, and still bounded in memory).
pub const MAX_LOG: u32 = 20;

/// The DST of the hash-to-G1 calibration (any valid tag measures the same).
const DST: &[u8] = b"INT-GPU-CALIBRATE_XMD:SHA-256_SSWU_RO_";

/// How far and how long to measure.
#[derive(Clone, Debug, PartialEq)]
pub struct CalibrateOptions {
    /// Smallest batch, as log₂ of the item count.
    pub min_log: u32,
    /// Largest batch, as log₂ of the item count (at most [`MAX_LOG`]).
    pub max_log: u32,
    /// Timed runs per side and size (the median counts); at least 1.
    pub reps: usize,
    /// Time for one kind of work: a size whose predicted cost would run
    /// past it is not started (the first size always runs).
    pub budget: Duration,
}

impl Default for CalibrateOptions {
    /// 2⁶ … 2¹⁴ items, 3 runs a side, 2 s per kind of work: what
    /// `Accelerator::open` measures on a hardware adapter (under 10 s).
    fn default() -> Self {
        Self {
            min_log: 6,
            max_log: 14,
            reps: 3,
            budget: Duration::from_secs(2),
        }
    }
}

impl CalibrateOptions {
    /// `BadInput` unless `min_log ≤ max_log ≤` [`MAX_LOG`].
    pub fn check(&self) -> Result<(), GpuError> {
        if self.min_log > self.max_log || self.max_log > MAX_LOG {
            return Err(GpuError::BadInput(format!(
                "calibration needs min-log ≤ max-log ≤ {MAX_LOG}, got {} and {}",
                self.min_log, self.max_log
            )));
        }
        Ok(())
    }
}

/// One measured size.
#[derive(Clone, Debug, PartialEq)]
pub struct CalRow {
    /// Items in the batch.
    pub n: usize,
    /// Median GPU time, milliseconds (upload, compute, readback).
    pub gpu_ms: f64,
    /// Median CPU time, milliseconds, all cores.
    pub cpu_ms: f64,
}

impl CalRow {
    /// Whether the GPU was strictly faster at this size.
    pub fn gpu_faster(&self) -> bool {
        self.gpu_ms < self.cpu_ms
    }
}

/// The measurement of one kind of work.
#[derive(Clone, Debug, PartialEq)]
pub struct Calibration {
    /// The kind of work.
    pub work: Work,
    /// The kernel that stood for it (`msm_bn254_g1`, …).
    pub kernel: &'static str,
    /// The measured sizes, smallest first.
    pub rows: Vec<CalRow>,
    /// [`crossover`] of the rows, [`NEVER`] when there is none.
    pub threshold: usize,
}

/// The smallest measured size from which the GPU is faster at that size
/// and at every larger measured size; `None` when it is not faster at the
/// largest (or there are no rows). Rows may come in any order.
pub fn crossover(rows: &[CalRow]) -> Option<usize> {
    let mut sorted: Vec<&CalRow> = rows.iter().collect();
    sorted.sort_by_key(|r| r.n);
    sorted
        .iter()
        .rev()
        .take_while(|r| r.gpu_faster())
        .last()
        .map(|r| r.n)
}

/// The thresholds `cals` measured; kinds not among them keep
/// [`Thresholds::default`].
pub fn thresholds(cals: &[Calibration]) -> Thresholds {
    let mut t = Thresholds::default();
    for c in cals {
        match c.work {
            Work::Msm => t.msm = c.threshold,
            Work::ScaleEach => t.scale_each = c.threshold,
            Work::HashToG1 => t.hash_to_g1 = c.threshold,
            Work::Poseidon => t.poseidon = c.threshold,
        }
    }
    t
}

/// Measures every kind of work ([`Work::ALL`]) on `ctx`.
pub fn calibrate_all(
    ctx: &GpuContext,
    opts: &CalibrateOptions,
) -> Result<Vec<Calibration>, GpuError> {
    Work::ALL.iter().map(|w| calibrate(ctx, *w, opts)).collect()
}

/// Measures `work` on `ctx` beside the CPU (see the module doc): the rows
/// and their crossover. An error for options out of range, a failed launch,
/// or a GPU result that differs from the CPU's.
pub fn calibrate(
    ctx: &GpuContext,
    work: Work,
    opts: &CalibrateOptions,
) -> Result<Calibration, GpuError> {
    opts.check()?;
    let max = 1usize << opts.max_log;
    let mut rng = SplitMix(0x1e7_ca1 + work as u64);
    let (kernel, rows) = match work {
        Work::Msm => {
            type C = ark_bn254::g1::Config;
            let (b, s) = curve_inputs::<C>(max, &mut rng);
            let rows = measure("msm_bn254_g1", opts, |n, gpu| {
                let (b, s) = (&b[..n], &s[..n]);
                if gpu {
                    ctx.msm::<C>(b, s)
                } else {
                    crate::msm_cpu::<C>(b, s)
                }
            })?;
            ("msm_bn254_g1", rows)
        }
        Work::ScaleEach => {
            type C = ark_bn254::g1::Config;
            let (b, s) = curve_inputs::<C>(max, &mut rng);
            let rows = measure("scale_each_bn254_g1", opts, |n, gpu| {
                let (b, s) = (&b[..n], &s[..n]);
                if gpu {
                    ctx.scale_each::<C>(b, s)
                } else {
                    Ok(scale_par::<C>(b, s))
                }
            })?;
            ("scale_each_bn254_g1", rows)
        }
        Work::HashToG1 => {
            type C = ark_bls12_381::g1::Config;
            let msgs: Vec<Vec<u8>> = (0..max)
                .map(|i| format!("calibration message #{i}").into_bytes())
                .collect();
            let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
            let r: Vec<ark_bls12_381::Fr> = (0..max)
                .map(|_| ark_bls12_381::Fr::from(rng.next_u64()))
                .collect();
            let rows = measure("hash_to_g1_bls12_381", opts, |n, gpu| {
                let (m, r) = (&refs[..n], &r[..n]);
                if gpu {
                    let h = ctx.hash_to_g1(m, DST)?;
                    ctx.scale_each::<C>(&h, r)
                } else {
                    let h = crate::hash_to_g1::hash_to_g1_cpu(m, DST)?;
                    Ok(scale_par::<C>(&h, r))
                }
            })?;
            ("hash_to_g1_bls12_381", rows)
        }
        Work::Poseidon => {
            let level: Vec<ark_bn254::Fr> = (0..2 * max).map(|_| rng.field()).collect();
            let rows = measure("poseidon_t3", opts, |n, gpu| {
                let x = &level[..2 * n];
                if gpu {
                    ctx.poseidon_pairs(x)
                } else {
                    crate::poseidon::poseidon_cpu(2, x)
                }
            })?;
            ("poseidon_t3", rows)
        }
    };
    let threshold = crossover(&rows).unwrap_or(NEVER);
    Ok(Calibration {
        work,
        kernel,
        rows,
        threshold,
    })
}

/// The rows of one kind: at each size, `run(n, true)` (GPU) and
/// `run(n, false)` (CPU) once untimed and compared, then `reps` timed runs
/// of each, alternating; sizes stop at `max_log` or where the next one
/// would run past the budget.
fn measure<T: PartialEq>(
    what: &'static str,
    opts: &CalibrateOptions,
    mut run: impl FnMut(usize, bool) -> Result<T, GpuError>,
) -> Result<Vec<CalRow>, GpuError> {
    // The budget counts from the end of the first size's untimed run,
    // which may include compiling the kernel (seconds on a software
    // adapter, for the hash-to-G1 kernel).
    let mut start: Option<Instant> = None;
    let reps = opts.reps.max(1);
    let mut rows: Vec<CalRow> = Vec::new();
    for log in opts.min_log..=opts.max_log {
        let n = 1usize << log;
        if let Some(last) = rows.last() {
            // Twice the last size's cost per run (the work grows about
            // linearly), for the untimed and the timed runs.
            let predicted = Duration::from_secs_f64(
                2.0 * (last.gpu_ms + last.cpu_ms) * (reps + 1) as f64 / 1e3,
            );
            let elapsed = start.map(|t| t.elapsed()).unwrap_or_default();
            if elapsed + predicted > opts.budget {
                tracing::debug!(what, n, "calibration budget reached");
                break;
            }
        }
        if run(n, true)? != run(n, false)? {
            return Err(GpuError::Mismatch { what, n });
        }
        start.get_or_insert_with(Instant::now);
        let (mut gpu, mut cpu) = (Vec::with_capacity(reps), Vec::with_capacity(reps));
        for _ in 0..reps {
            gpu.push(time_ms(|| run(n, true))?);
            cpu.push(time_ms(|| run(n, false))?);
        }
        rows.push(CalRow {
            n,
            gpu_ms: median(gpu),
            cpu_ms: median(cpu),
        });
    }
    Ok(rows)
}

/// Milliseconds `f` took (its result dropped).
fn time_ms<T>(f: impl FnOnce() -> Result<T, GpuError>) -> Result<f64, GpuError> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed().as_secs_f64() * 1e3)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// `kᵢ·Pᵢ` on every core (the CPU path of the verifiers' scalings).
fn scale_par<C: GpuCurve>(p: &[Affine<C>], k: &[C::ScalarField]) -> Vec<Projective<C>> {
    p.par_iter().zip(k).map(|(p, k)| *p * k).collect()
}

/// `n` pseudo-random points (multiples of the generator, by arkworks'
/// fixed-base table) and `n` pseudo-random full-width scalars.
fn curve_inputs<C: GpuCurve>(
    n: usize,
    rng: &mut SplitMix,
) -> (Vec<Affine<C>>, Vec<C::ScalarField>) {
    let k: Vec<C::ScalarField> = (0..n).map(|_| rng.field()).collect();
    let bases = Projective::<C>::from(C::GENERATOR).batch_mul(&k);
    let scalars = (0..n).map(|_| rng.field()).collect();
    (bases, scalars)
}

/// SplitMix64: reproducible inputs without a `rand` dependency (the
/// values only need to look random to the arithmetic).
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A field element from 64 random bytes, reduced.
    fn field<F: PrimeField>(&mut self) -> F {
        let bytes: Vec<u8> = (0..8).flat_map(|_| self.next_u64().to_le_bytes()).collect();
        F::from_le_bytes_mod_order(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(v: &[(usize, f64, f64)]) -> Vec<CalRow> {
        v.iter()
            .map(|&(n, gpu_ms, cpu_ms)| CalRow { n, gpu_ms, cpu_ms })
            .collect()
    }

    #[test]
    fn gpu_never_faster() {
        let r = rows(&[(64, 2.0, 1.0), (128, 3.0, 2.0), (256, 5.0, 4.0)]);
        assert_eq!(crossover(&r), None);
        assert_eq!(crossover(&[]), None);
    }

    #[test]
    fn gpu_always_faster() {
        let r = rows(&[(64, 0.5, 1.0), (128, 0.6, 2.0), (256, 0.7, 4.0)]);
        assert_eq!(crossover(&r), Some(64));
    }

    #[test]
    fn crossing_once() {
        let r = rows(&[
            (64, 2.0, 1.0),
            (128, 2.1, 2.0),
            (256, 2.2, 4.0),
            (512, 2.5, 8.0),
        ]);
        assert_eq!(crossover(&r), Some(256));
    }

    #[test]
    fn non_monotone_rows() {
        // Faster at 128, slower at 256 again, faster from 512 on: 512.
        let r = rows(&[
            (64, 2.0, 1.0),
            (128, 1.0, 2.0),
            (256, 5.0, 4.0),
            (512, 2.5, 8.0),
        ]);
        assert_eq!(crossover(&r), Some(512));
        // Faster early, slower at the largest: never.
        let r = rows(&[(64, 0.5, 1.0), (128, 1.0, 2.0), (256, 5.0, 4.0)]);
        assert_eq!(crossover(&r), None);
        // A tie is not faster.
        let r = rows(&[(64, 1.0, 1.0), (128, 1.0, 2.0)]);
        assert_eq!(crossover(&r), Some(128));
    }

    #[test]
    fn order_of_rows_does_not_matter() {
        let r = rows(&[
            (512, 2.5, 8.0),
            (64, 2.0, 1.0),
            (256, 2.2, 4.0),
            (128, 2.1, 2.0),
        ]);
        assert_eq!(crossover(&r), Some(256));
    }

    #[test]
    fn thresholds_from_calibrations() {
        let cal = |work, threshold| Calibration {
            work,
            kernel: "k",
            rows: Vec::new(),
            threshold,
        };
        let t = thresholds(&[cal(Work::Msm, 1 << 8), cal(Work::Poseidon, NEVER)]);
        let d = Thresholds::default();
        assert_eq!(
            t,
            Thresholds {
                msm: 1 << 8,
                poseidon: NEVER,
                ..d
            }
        );
    }

    #[test]
    fn options_are_checked() {
        assert!(CalibrateOptions::default().check().is_ok());
        let at = |min_log, max_log| CalibrateOptions {
            min_log,
            max_log,
            ..Default::default()
        };
        assert!(at(5, 4).check().is_err());
        assert!(at(0, MAX_LOG + 1).check().is_err());
        assert!(at(MAX_LOG, MAX_LOG).check().is_ok());
    }

    #[test]
    fn splitmix_is_reproducible() {
        let (mut a, mut b) = (SplitMix(7), SplitMix(7));
        let fa: ark_bn254::Fr = a.field();
        let fb: ark_bn254::Fr = b.field();
        assert_eq!(fa, fb);
        assert_ne!(a.next_u64(), SplitMix(8).next_u64());
    }
}
