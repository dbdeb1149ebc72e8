//! The switch between GPU and CPU for one node: [`Accelerator`] holds the
//! chosen [`Accel`] and, when a GPU may be used, the open [`GpuContext`].
//!
//! `Auto` sends a batch to the GPU only when the adapter is a real GPU
//! (a software rasteriser such as lavapipe, which runs the same arithmetic
//! on the same CPU cores, slower than native code, is closed at once) and
//! the batch is at least the kernel's threshold ([`Thresholds`]); below it
//! the upload, launch and readback cost more than the CPU's all-core
//! arkworks/blst code. The thresholds are measured when the GPU is opened
//! ([`crate::calibrate`]) unless `INT_GPU_MIN_BATCH` or the caller sets
//! them ([`ThresholdPolicy`]). `Gpu` always uses the adapter, software or
//! not (that is how the kernels are exercised on machines without a GPU).
//!
//! A batch handed to the GPU that fails there (a device error, a wrong
//! output) is served by the CPU instead, so the verdict never depends on the
//! device; but the fallback is not silent: [`Accelerator::run`] counts GPU
//! batches and fallbacks ([`GpuCounts`], the node's `/metrics` and devnet
//! summary show them), logs each fallback with `tracing::warn!`, and under
//! `INT_REQUIRE_GPU=1` ([`REQUIRE_GPU_ENV`], set by CI) panics on it, so a
//! test that requires the GPU fails instead of passing on the CPU.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::calibrate::{self, CalibrateOptions, NEVER};
use crate::{Accel, GpuContext, GpuError, GpuOptions};

/// The kinds of batch work a verifier hands over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    /// A multi-scalar multiplication (either curve) of this many points.
    Msm,
    /// Independent scalar multiplications (`rᵢ·Pᵢ`).
    ScaleEach,
    /// Hashing messages to G1.
    HashToG1,
    /// Poseidon hashes.
    Poseidon,
}

impl Work {
    /// Every kind, in the order reports list them.
    pub const ALL: [Work; 4] = [Work::Msm, Work::ScaleEach, Work::HashToG1, Work::Poseidon];

    /// The kind's name in reports and JSON (`msm`, `scale_each`,
    /// `hash_to_g1`, `poseidon`).
    pub fn name(self) -> &'static str {
        match self {
            Work::Msm => "msm",
            Work::ScaleEach => "scale_each",
            Work::HashToG1 => "hash_to_g1",
            Work::Poseidon => "poseidon",
        }
    }
}

impl std::fmt::Display for Work {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Smallest batch `Auto` sends to a (hardware) GPU, per kind of work
/// ([`calibrate::NEVER`]: no batch of that kind).
///
/// `Accelerator::open` measures them on the adapter it opens
/// ([`ThresholdPolicy::Measure`], [`crate::calibrate`]); `int gpu calibrate`
/// prints the same measurement. [`Thresholds::default`] is the fallback
/// for when no measurement runs (`INT_GPU_MIN_BATCH` unset and the
/// calibration failed, or a caller that fixes them): those values are
/// estimates from the op-count model in `gpu-kernels/README.md` (a launch
/// and its transfers cost tens of microseconds; the CPU does a BN254 mixed
/// addition in about 0.2 µs per core), not measurements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    /// Points per MSM.
    pub msm: usize,
    /// Scalar multiplications per batch.
    pub scale_each: usize,
    /// Messages per hash batch.
    pub hash_to_g1: usize,
    /// Hashes per Poseidon batch.
    pub poseidon: usize,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            msm: 1 << 12,
            scale_each: 1 << 10,
            hash_to_g1: 1 << 10,
            poseidon: 1 << 14,
        }
    }
}

/// The environment variable that sets every threshold at once (a number
/// of items; `0` sends every batch to the GPU under `Auto`).
pub const MIN_BATCH_ENV: &str = "INT_GPU_MIN_BATCH";

impl Thresholds {
    /// `n` for every kind of work.
    pub fn all(n: usize) -> Self {
        Self {
            msm: n,
            scale_each: n,
            hash_to_g1: n,
            poseidon: n,
        }
    }

    /// The threshold of `work`.
    pub fn of(&self, work: Work) -> usize {
        match work {
            Work::Msm => self.msm,
            Work::ScaleEach => self.scale_each,
            Work::HashToG1 => self.hash_to_g1,
            Work::Poseidon => self.poseidon,
        }
    }
}

/// The environment variable that makes a GPU fallback a failure: with
/// `INT_REQUIRE_GPU=1` a batch the GPU was asked for and failed panics
/// (naming the kind of work and the error) instead of running on the CPU.
/// For tests and CI, where passing on the CPU would hide that the GPU did
/// not run; the test helpers read the same variable to fail, not skip, when
/// there is no adapter.
pub const REQUIRE_GPU_ENV: &str = "INT_REQUIRE_GPU";

/// Whether `INT_REQUIRE_GPU=1` is set.
pub fn require_gpu_from_env() -> bool {
    std::env::var(REQUIRE_GPU_ENV).is_ok_and(|v| v == "1")
}

/// How many batches an [`Accelerator`] (and its clones) sent to the GPU:
/// served there, or failed there and served by the CPU. Batches kept on the
/// CPU by choice (`Cpu`, or below a threshold under `Auto`) are in neither.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuCounts {
    /// Batches the GPU computed.
    pub gpu_batches: u64,
    /// Batches the GPU failed (a device error or a wrong output) that the
    /// CPU then computed.
    pub gpu_fallbacks: u64,
}

/// The shared counters behind [`GpuCounts`].
#[derive(Debug, Default)]
struct Counters {
    batches: AtomicU64,
    fallbacks: AtomicU64,
}

/// Where [`Accelerator::open`] takes its thresholds from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThresholdPolicy {
    /// Measure them when `Auto` opens a hardware adapter (after the
    /// warm-up, [`CalibrateOptions::default`]); [`Thresholds::default`]
    /// wherever no measurement runs.
    Measure,
    /// From `INT_GPU_MIN_BATCH` ([`ThresholdPolicy::from_env`]).
    Env(Thresholds),
    /// Fixed by the caller.
    Given(Thresholds),
}

impl ThresholdPolicy {
    /// `Env` with `INT_GPU_MIN_BATCH` for every kind when it is set,
    /// `Measure` when it is not; an error for a value that is not a number.
    pub fn from_env() -> Result<Self, GpuError> {
        Self::from_value(std::env::var_os(MIN_BATCH_ENV).as_deref())
    }

    /// [`ThresholdPolicy::from_env`] of the variable's value (`None`:
    /// unset).
    fn from_value(v: Option<&std::ffi::OsStr>) -> Result<Self, GpuError> {
        let Some(v) = v else {
            return Ok(Self::Measure);
        };
        let v = v.to_string_lossy();
        let n: usize = v
            .trim()
            .parse()
            .map_err(|_| GpuError::BadMinBatch(v.to_string()))?;
        Ok(Self::Env(Thresholds::all(n)))
    }
}

impl From<Thresholds> for ThresholdPolicy {
    fn from(t: Thresholds) -> Self {
        Self::Given(t)
    }
}

/// Where the thresholds in use came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThresholdSource {
    /// Measured on this adapter when it was opened.
    Measured,
    /// `INT_GPU_MIN_BATCH`.
    Env,
    /// Given by the caller.
    Given,
    /// [`Thresholds::default`] (the estimates): nothing was measured.
    Defaults,
}

impl std::fmt::Display for ThresholdSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ThresholdSource::Measured => "measured",
            ThresholdSource::Env => "set by INT_GPU_MIN_BATCH",
            ThresholdSource::Given => "set by the caller",
            ThresholdSource::Defaults => "defaults (estimates, not measured)",
        })
    }
}

/// The accelerator choice of a node, with its GPU when it has one.
#[derive(Clone, Debug)]
pub struct Accelerator {
    accel: Accel,
    ctx: Option<Arc<GpuContext>>,
    thresholds: Thresholds,
    source: ThresholdSource,
    /// Shared by clones: every verifier backed by this accelerator counts
    /// into the same totals.
    counters: Arc<Counters>,
    /// A fallback panics (`INT_REQUIRE_GPU=1` when opened).
    require_gpu: bool,
}

impl Accelerator {
    /// Opens the accelerator `accel` asks for: `Cpu` opens nothing; `Gpu`
    /// opens any adapter (a software one too) and without one is
    /// [`GpuError::NoAdapter`]; `Auto` keeps a hardware adapter and
    /// otherwise stays on the CPU (no adapter, or only a software one).
    ///
    /// `thresholds` is a [`ThresholdPolicy`] (or fixed [`Thresholds`]):
    /// under `Measure`, `Auto` with a hardware adapter calibrates it once
    /// here, after the warm-up (seconds), and logs what it found; a failed
    /// calibration closes the GPU like a failed warm-up.
    ///
    /// `INT_REQUIRE_GPU=1` ([`REQUIRE_GPU_ENV`]) is read here: under it a
    /// GPU fallback in [`Accelerator::run`] panics.
    pub fn open(accel: Accel, thresholds: impl Into<ThresholdPolicy>) -> Result<Self, GpuError> {
        let policy = thresholds.into();
        let ctx = match accel {
            Accel::Cpu => None,
            Accel::Gpu => {
                let c = GpuContext::new(&GpuOptions::default())?;
                warm_up(&c)?;
                Some(Arc::new(c))
            }
            Accel::Auto => match GpuContext::new(&GpuOptions::default()) {
                Ok(c) if c.summary().is_software() => {
                    tracing::info!(
                        adapter = %c.summary().name,
                        "only a software GPU adapter; batch verification on the CPU"
                    );
                    None
                }
                Ok(c) => match warm_up(&c) {
                    Ok(()) => Some(Arc::new(c)),
                    Err(e) => {
                        tracing::warn!(error = %e, "GPU failed its warm-up; batch verification on the CPU");
                        None
                    }
                },
                Err(e) => {
                    tracing::info!(error = %e, "no GPU adapter; batch verification on the CPU");
                    None
                }
            },
        };
        let (mut ctx, thresholds, source) = match policy {
            ThresholdPolicy::Env(t) => (ctx, t, ThresholdSource::Env),
            ThresholdPolicy::Given(t) => (ctx, t, ThresholdSource::Given),
            ThresholdPolicy::Measure => (ctx, Thresholds::default(), ThresholdSource::Defaults),
        };
        let mut acc = Self {
            accel,
            ctx: None,
            thresholds,
            source,
            counters: Arc::default(),
            require_gpu: require_gpu_from_env(),
        };
        let measured = match (accel, policy, &ctx) {
            (Accel::Auto, ThresholdPolicy::Measure, Some(c)) => {
                Some(calibrate::calibrate_all(c, &CalibrateOptions::default()))
            }
            _ => None,
        };
        match measured {
            None => {}
            Some(Ok(cals)) => {
                acc.thresholds = calibrate::thresholds(&cals);
                acc.source = ThresholdSource::Measured;
                for cal in &cals {
                    tracing::info!(
                        work = %cal.work,
                        kernel = cal.kernel,
                        threshold = %threshold_text(cal.threshold),
                        sizes = cal.rows.len(),
                        "GPU threshold measured"
                    );
                }
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "GPU calibration failed; batch verification on the CPU");
                ctx = None;
            }
        }
        acc.ctx = ctx;
        Ok(acc)
    }

    /// The thresholds in use and where they came from.
    pub fn thresholds(&self) -> (Thresholds, ThresholdSource) {
        (self.thresholds, self.source)
    }

    /// The context to run `n` items of `work` on, or `None` for the CPU:
    /// always the context under `Gpu`, under `Auto` only from the work's
    /// threshold on.
    pub fn gpu_for(&self, work: Work, n: usize) -> Option<&GpuContext> {
        let ctx = self.ctx.as_deref()?;
        match self.accel {
            Accel::Gpu => Some(ctx),
            Accel::Auto => (n >= self.thresholds.of(work)).then_some(ctx),
            Accel::Cpu => None,
        }
    }

    /// Runs `n` items of `work` on the GPU when [`Accelerator::gpu_for`]
    /// sends them there: `Some` of `gpu`'s result when it succeeds (counted
    /// as a GPU batch); `None` when the batch stays on the CPU (not
    /// counted) or when `gpu` fails, and the caller then computes it on the
    /// CPU. A failure is counted as a fallback and logged with
    /// `tracing::warn!`.
    ///
    /// # Panics
    ///
    /// On a failure when the accelerator requires the GPU
    /// (`INT_REQUIRE_GPU=1` at [`Accelerator::open`], or
    /// [`Accelerator::with_require_gpu`]), after counting it.
    pub fn run<T>(
        &self,
        work: Work,
        n: usize,
        gpu: impl FnOnce(&GpuContext) -> Result<T, GpuError>,
    ) -> Option<T> {
        let ctx = self.gpu_for(work, n)?;
        self.settle(work, n, gpu(ctx))
    }

    /// Counts the outcome of a batch the GPU was given (see
    /// [`Accelerator::run`]).
    fn settle<T>(&self, work: Work, n: usize, r: Result<T, GpuError>) -> Option<T> {
        match r {
            Ok(v) => {
                self.counters.batches.fetch_add(1, Ordering::Relaxed);
                Some(v)
            }
            Err(e) => {
                self.counters.fallbacks.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%work, n, error = %e, "GPU batch failed; computing it on the CPU");
                assert!(
                    !self.require_gpu,
                    "{REQUIRE_GPU_ENV}=1 but the GPU failed a {work} batch of {n} \
                     (it would have fallen back to the CPU): {e}"
                );
                None
            }
        }
    }

    /// This accelerator with fallbacks fatal (`true`) or not, whatever
    /// `INT_REQUIRE_GPU` said at open.
    pub fn with_require_gpu(mut self, require: bool) -> Self {
        self.require_gpu = require;
        self
    }

    /// Batches sent to the GPU so far by this accelerator and its clones.
    pub fn counts(&self) -> GpuCounts {
        GpuCounts {
            gpu_batches: self.counters.batches.load(Ordering::Relaxed),
            gpu_fallbacks: self.counters.fallbacks.load(Ordering::Relaxed),
        }
    }

    /// One line for logs and reports: `cpu`, or the adapter and backend;
    /// under `Auto` with a GPU also the thresholds and whether they were
    /// measured or set (by `INT_GPU_MIN_BATCH`, the caller, or the
    /// defaults).
    pub fn describe(&self) -> String {
        match &self.ctx {
            None => format!("{}: cpu", self.accel),
            Some(c) => {
                let s = c.summary();
                let head = format!(
                    "{}: {} ({}, {:?})",
                    self.accel, s.name, s.backend, s.device_type
                );
                if self.accel != Accel::Auto {
                    return head;
                }
                let t: Vec<String> = Work::ALL
                    .iter()
                    .map(|w| format!("{w} {}", threshold_text(self.thresholds.of(*w))))
                    .collect();
                format!("{head}, thresholds {}: {}", self.source, t.join(", "))
            }
        }
    }
}

/// `≥ n`, or `never` for [`NEVER`].
pub fn threshold_text(n: usize) -> String {
    if n == NEVER {
        "never".into()
    } else {
        format!("≥ {n}")
    }
}

/// Compiles the kernels the verifiers use (hash to G1, the G1 kernels of
/// both curves) by running each once on a tiny input whose answer is
/// known, so that the first batch of a run does not wait for the shader
/// compiler (seconds on a software adapter) and a device that computes
/// wrong answers is refused at start ([`GpuError::BadOutput`]).
fn warm_up(ctx: &GpuContext) -> Result<(), GpuError> {
    tracing::info!(adapter = %ctx.summary().name, "compiling the GPU kernels");
    let h = ctx.hash_to_g1(&[b"INT warm-up"], b"INT-GPU-WARM-UP")?;
    let want = crate::hash_to_g1::hash_to_g1_cpu(&[b"INT warm-up"], b"INT-GPU-WARM-UP")?;
    if h != want {
        return Err(GpuError::BadOutput("hash_to_g1 (warm-up)"));
    }
    warm_up_curve::<ark_bn254::g1::Config>(ctx)?;
    warm_up_curve::<ark_bls12_381::g1::Config>(ctx)
}

/// `1·G` by `scale_each` and `1·G + 2·G` by the MSM must give `G` and `3·G`.
fn warm_up_curve<C: crate::GpuCurve>(ctx: &GpuContext) -> Result<(), GpuError> {
    use ark_ec::AffineRepr;
    let g = ark_ec::short_weierstrass::Affine::<C>::generator();
    let (one, two) = (C::ScalarField::from(1u64), C::ScalarField::from(2u64));
    let scaled = ctx.scale_each::<C>(&[g], &[one])?;
    let sum = ctx.msm::<C>(&[g, g], &[one, two])?;
    if scaled.as_slice() != [g.into_group()] || sum != g * C::ScalarField::from(3u64) {
        return Err(GpuError::BadOutput("G1 kernels (warm-up)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_batch_values() {
        use std::ffi::OsStr;
        let parse = |v: Option<&str>| ThresholdPolicy::from_value(v.map(OsStr::new));
        assert_eq!(parse(None).ok(), Some(ThresholdPolicy::Measure));
        assert_eq!(
            parse(Some("0")).ok(),
            Some(ThresholdPolicy::Env(Thresholds::all(0)))
        );
        assert_eq!(
            parse(Some(" 4096\n")).ok(),
            Some(ThresholdPolicy::Env(Thresholds::all(4096)))
        );
        for bad in ["lots", "", "-1", "1e3", "99999999999999999999999"] {
            assert!(
                matches!(parse(Some(bad)), Err(GpuError::BadMinBatch(ref v)) if v == bad),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn cpu_never_has_a_context() {
        let a = Accelerator::open(Accel::Cpu, Thresholds::default());
        assert!(a.is_ok_and(
            |a| a.gpu_for(Work::Msm, usize::MAX).is_none() && a.describe() == "cpu: cpu"
        ));
    }

    #[test]
    fn policy_from_thresholds_is_given() {
        let t = Thresholds::default();
        assert_eq!(ThresholdPolicy::from(t), ThresholdPolicy::Given(t));
        let a = Accelerator::open(Accel::Cpu, t);
        assert!(a.is_ok_and(|a| a.thresholds() == (t, ThresholdSource::Given)));
        // Nothing to measure without a GPU: the defaults, said so.
        let a = Accelerator::open(Accel::Cpu, ThresholdPolicy::Measure);
        assert!(a.is_ok_and(|a| a.thresholds() == (t, ThresholdSource::Defaults)));
        assert_eq!(threshold_text(NEVER), "never");
        assert_eq!(threshold_text(64), "≥ 64");
    }

    /// A batch the GPU fails is counted as a fallback (and the caller gets
    /// `None`, so it computes on the CPU); a served batch is counted as a
    /// GPU batch; clones share the totals.
    #[test]
    fn a_device_error_is_counted_as_a_fallback() {
        let a = Accelerator::open(Accel::Cpu, Thresholds::default())
            .expect("Cpu opens nothing")
            .with_require_gpu(false);
        let b = a.clone();
        // `Cpu`: nothing goes to the GPU, nothing is counted.
        assert_eq!(a.run(Work::Msm, 1 << 20, |_| Ok(())), None);
        assert_eq!(a.counts(), GpuCounts::default());
        let failed: Option<()> = b.settle(
            Work::HashToG1,
            64,
            Err(GpuError::Device("lost (injected)".into())),
        );
        assert_eq!(failed, None);
        assert_eq!(b.settle(Work::Msm, 64, Ok(7)), Some(7));
        let want = GpuCounts {
            gpu_batches: 1,
            gpu_fallbacks: 1,
        };
        assert_eq!(a.counts(), want);
        assert_eq!(b.counts(), want);
    }

    /// Under `INT_REQUIRE_GPU=1` (here set on the accelerator, as `open`
    /// does from the variable) a device error panics, naming the work and
    /// the error, and is still counted.
    #[test]
    fn require_gpu_turns_a_fallback_into_a_failure() {
        let a = Accelerator::open(Accel::Cpu, Thresholds::default())
            .expect("Cpu opens nothing")
            .with_require_gpu(true);
        let b = a.clone();
        let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            b.settle::<()>(
                Work::Poseidon,
                9,
                Err(GpuError::Device("lost (injected)".into())),
            )
        }))
        .expect_err("a fallback under INT_REQUIRE_GPU=1 must panic");
        let msg = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            msg.contains("INT_REQUIRE_GPU=1") && msg.contains("poseidon") && msg.contains("lost"),
            "{msg}"
        );
        assert_eq!(a.counts().gpu_fallbacks, 1);
        // A success is not a failure.
        assert_eq!(a.settle(Work::Msm, 1, Ok(1)), Some(1));
    }

    #[test]
    fn accel_parses() {
        assert_eq!("AUTO".parse::<Accel>().ok(), Some(Accel::Auto));
        assert_eq!(" gpu ".parse::<Accel>().ok(), Some(Accel::Gpu));
        assert_eq!("cpu".parse::<Accel>().ok(), Some(Accel::Cpu));
        assert!("tpu".parse::<Accel>().is_err());
        for a in [Accel::Auto, Accel::Cpu, Accel::Gpu] {
            assert_eq!(a.to_string().parse::<Accel>().ok(), Some(a));
        }
    }
}
