//! The switch between GPU and CPU for one node: [`Accelerator`] holds the
//! chosen [`Accel`] and, when a GPU may be used, the open [`GpuContext`].
//!
//! `Auto` sends a batch to the GPU only when the adapter is a real GPU
//! (a software rasteriser such as lavapipe, which runs the same arithmetic
//! on the same CPU cores, slower than native code, is closed at once) and
//! the batch is at least the kernel's threshold ([`Thresholds`]); below it
//! the upload, launch and readback cost more than the CPU's all-core
//! arkworks/blst code. `Gpu` always uses the adapter, software or not
//! (that is how the kernels are exercised on machines without a GPU).

use std::sync::Arc;

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

/// Smallest batch `Auto` sends to a (hardware) GPU, per kind of work.
///
/// These are estimates, not measurements: no GPU was available where the
/// kernels were written. They come from the op-count model in
/// `gpu-kernels/README.md` (a launch and its transfers cost tens of
/// microseconds; the CPU does a BN254 mixed addition in about 0.2 µs per
/// core), and `int bench gpu` on a machine with a GPU measures the real
/// crossover. Override them with [`Thresholds::from_env`].
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
    /// The defaults, or `INT_GPU_MIN_BATCH` for all kinds when it is set.
    pub fn from_env() -> Result<Self, GpuError> {
        match std::env::var(MIN_BATCH_ENV) {
            Err(_) => Ok(Self::default()),
            Ok(v) => {
                let n: usize = v
                    .trim()
                    .parse()
                    .map_err(|_| GpuError::BadMinBatch(v.clone()))?;
                Ok(Self {
                    msm: n,
                    scale_each: n,
                    hash_to_g1: n,
                    poseidon: n,
                })
            }
        }
    }

    fn of(&self, work: Work) -> usize {
        match work {
            Work::Msm => self.msm,
            Work::ScaleEach => self.scale_each,
            Work::HashToG1 => self.hash_to_g1,
            Work::Poseidon => self.poseidon,
        }
    }
}

/// The accelerator choice of a node, with its GPU when it has one.
#[derive(Clone, Debug)]
pub struct Accelerator {
    accel: Accel,
    ctx: Option<Arc<GpuContext>>,
    thresholds: Thresholds,
}

impl Accelerator {
    /// Opens the accelerator `accel` asks for: `Cpu` opens nothing; `Gpu`
    /// opens any adapter (a software one too) and without one is
    /// [`GpuError::NoAdapter`]; `Auto` keeps a hardware adapter and
    /// otherwise stays on the CPU (no adapter, or only a software one).
    pub fn open(accel: Accel, thresholds: Thresholds) -> Result<Self, GpuError> {
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
        Ok(Self {
            accel,
            ctx,
            thresholds,
        })
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

    /// One line for logs and reports: `cpu`, or the adapter and backend.
    pub fn describe(&self) -> String {
        match &self.ctx {
            None => format!("{}: cpu", self.accel),
            Some(c) => {
                let s = c.summary();
                format!(
                    "{}: {} ({}, {:?})",
                    self.accel, s.name, s.backend, s.device_type
                )
            }
        }
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
    fn cpu_never_has_a_context() {
        let a = Accelerator::open(Accel::Cpu, Thresholds::default());
        assert!(a.is_ok_and(
            |a| a.gpu_for(Work::Msm, usize::MAX).is_none() && a.describe() == "cpu: cpu"
        ));
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
