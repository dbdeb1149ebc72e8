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
                    .map_err(|_| GpuError::BadAccel(format!("{MIN_BATCH_ENV}={v}")))?;
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
            Accel::Gpu => Some(Arc::new(GpuContext::new(&GpuOptions::default())?)),
            Accel::Auto => match GpuContext::new(&GpuOptions::default()) {
                Ok(c) if c.summary().is_software() => {
                    tracing::info!(
                        adapter = %c.summary().name,
                        "only a software GPU adapter; batch verification on the CPU"
                    );
                    None
                }
                Ok(c) => Some(Arc::new(c)),
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
