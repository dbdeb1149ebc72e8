//! INT's GPU layer: WGSL compute kernels for the verifiers' heavy
//! arithmetic (field and curve arithmetic, multi-scalar multiplication,
//! batch hashing) and the wgpu host code that runs them, each kernel with
//! the CPU reference it is tested against.
//!
//! The crate is a leaf: the engine and the zk crate call it through their
//! own small traits (the node wires it in), so nothing consensus-critical
//! depends on a GPU being present. Every GPU result must equal the CPU's
//! bit for bit; the differential tests in `tests/` check that on random
//! and edge-case inputs, on lavapipe (Vulkan) and llvmpipe (GL).
//!
//! [`Accel`] is the switch: `Auto` uses the GPU when an adapter exists and
//! a batch is large enough to pay for the transfer, `Cpu` never opens one,
//! `Gpu` insists (and is an error without an adapter).

pub mod accel;
pub mod calibrate;
pub mod context;
pub mod curve;
pub mod field;
pub mod hash_to_g1;
pub mod limb13;
pub mod msm;
pub mod poseidon;

pub use accel::{
    Accelerator, GpuCounts, MIN_BATCH_ENV, REQUIRE_GPU_ENV, ThresholdPolicy, ThresholdSource,
    Thresholds, Work,
};
pub use calibrate::{CalRow, CalibrateOptions, Calibration, calibrate, calibrate_all, crossover};
pub use context::{
    AdapterSummary, Arg, BackendChoice, DeviceWords, GpuContext, GpuOptions, LAUNCHES_IN_FLIGHT,
    Pending, TransferStats, WORKGROUP_SIZE,
};
pub use curve::{CurveOp, GpuCurve, scale_each_cpu};
pub use field::{FieldOp, FieldSpec, GpuField, MulPath};
pub use limb13::{Layout13, mul_chain_cpu};
pub use msm::{MsmConfig, msm_cpu};

use std::str::FromStr;

/// Errors of the GPU layer. None of them is fatal to the node: a caller in
/// `Accel::Auto` falls back to the CPU.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// No adapter of the requested backends (no driver, no device).
    #[error("no GPU adapter: {0}")]
    NoAdapter(String),
    /// The device could not be opened, or lost, or a launch failed.
    #[error("GPU device error: {0}")]
    Device(String),
    /// A kernel's WGSL did not compile (a bug in this crate).
    #[error("kernel {kernel} did not compile: {message}")]
    Shader {
        /// The pipeline's cache key.
        kernel: String,
        /// The compiler's message.
        message: String,
    },
    /// A buffer would exceed the adapter's binding limit even after
    /// chunking.
    #[error("{what} needs {words} words, the adapter binds at most {max_words}")]
    TooLarge {
        /// Which buffer.
        what: String,
        /// Words needed.
        words: usize,
        /// Words allowed.
        max_words: usize,
    },
    /// A kernel returned words that are not a field element (a bug in this
    /// crate, caught rather than passed on).
    #[error("kernel {0} returned a value outside its field")]
    BadOutput(&'static str),
    /// Inputs of different lengths where equal lengths are needed.
    #[error("input lengths differ: {0} and {1}")]
    LengthMismatch(usize, usize),
    /// A caller's input the kernel cannot take (an unsupported arity, a
    /// length that is not a whole number of items); nothing was launched.
    #[error("bad input: {0}")]
    BadInput(String),
    /// An unknown `--accel` / `INT_ACCEL` value.
    #[error("unknown accelerator {0:?} (expected auto, cpu or gpu)")]
    BadAccel(String),
    /// GPU and CPU computed different results for the same input (a
    /// kernel or device fault, found while calibrating).
    #[error("{what} at n = {n}: the GPU's result differs from the CPU's")]
    Mismatch {
        /// The kernel.
        what: &'static str,
        /// The batch size.
        n: usize,
    },
    /// `INT_GPU_MIN_BATCH` is not a number of items.
    #[error("INT_GPU_MIN_BATCH={0:?} is not a number of items")]
    BadMinBatch(String),
}

/// Where batch arithmetic runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Accel {
    /// The GPU when an adapter exists and the batch is above the
    /// kernel's measured threshold; the CPU (all cores) otherwise.
    #[default]
    Auto,
    /// Always the CPU (arkworks / blst on every core).
    Cpu,
    /// Always the GPU; opening fails without an adapter.
    Gpu,
}

impl FromStr for Accel {
    type Err = GpuError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Accel::Auto),
            "cpu" => Ok(Accel::Cpu),
            "gpu" => Ok(Accel::Gpu),
            _ => Err(GpuError::BadAccel(s.to_string())),
        }
    }
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Accel::Auto => "auto",
            Accel::Cpu => "cpu",
            Accel::Gpu => "gpu",
        })
    }
}

/// The environment variable that selects the accelerator when no flag
/// does (`auto`, `cpu`, `gpu`).
pub const ACCEL_ENV: &str = "INT_ACCEL";

impl Accel {
    /// `INT_ACCEL` when set, else `Auto`.
    pub fn from_env() -> Result<Self, GpuError> {
        match std::env::var(ACCEL_ENV) {
            Ok(v) => v.parse(),
            Err(_) => Ok(Accel::Auto),
        }
    }
}

impl GpuContext {
    /// Element-wise `op` over `a` and `b` (equal lengths; `b` is ignored by
    /// the unary ops but must still match in length), chunked under the
    /// adapter's binding limit.
    pub fn field_op<F: GpuField>(&self, op: FieldOp, a: &[F], b: &[F]) -> Result<Vec<F>, GpuError> {
        if a.len() != b.len() {
            return Err(GpuError::LengthMismatch(a.len(), b.len()));
        }
        let spec = F::spec();
        let path = self.mul_path();
        let key = format!("field_ops/{}/{}", spec.prefix, path.tag());
        let pipeline = self.pipeline(&key, || field::field_ops_kernel(&spec, path))?;
        let l = F::LIMBS;
        let chunk = self.items_per_launch(l, 1 << 22);
        let mut out = Vec::with_capacity(a.len());
        self.pipelined(
            a.chunks(chunk).zip(b.chunks(chunk)),
            |(ca, cb)| {
                let mut wa = Vec::with_capacity(ca.len() * l);
                let mut wb = Vec::with_capacity(cb.len() * l);
                ca.iter().for_each(|x| x.push_words(&mut wa));
                cb.iter().for_each(|x| x.push_words(&mut wb));
                let n = ca.len() as u32;
                let params = [n, op as u32];
                let args = [Arg::Host(&wa), Arg::Host(&wb), Arg::Host(&params)];
                self.submit(&pipeline, &args, ca.len() * l, n)
            },
            |words| {
                for w in words.chunks_exact(l) {
                    out.push(F::from_words(w).ok_or(GpuError::BadOutput("field_ops"))?);
                }
                Ok(())
            },
        )?;
        Ok(out)
    }
}
