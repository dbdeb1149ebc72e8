//! `int gpu`: what the GPU layer sees on this machine.
//!
//! `int gpu info` opens the adapter the node would use (and the GL one,
//! where the portable kernels run) and prints its backend, features and
//! limits, so an operator can tell before a run whether verification will
//! go to the GPU. `int gpu calibrate` measures, per kind of work, the
//! batch size from which that adapter beats the CPU: the thresholds
//! `--accel auto` measures when it opens a hardware GPU.

use std::time::Duration;

use anyhow::{Result, bail};
use clap::Subcommand;
use int_gpu::accel::threshold_text;
use int_gpu::calibrate::NEVER;
use int_gpu::{
    AdapterSummary, BackendChoice, CalibrateOptions, Calibration, GpuContext, GpuOptions,
};
use serde_json::{Value, json};

/// `int gpu …`
#[derive(Subcommand)]
pub enum GpuCmd {
    /// The adapter, its backend, features and limits (exit 1 without one).
    Info {
        /// Look at the GL backend instead of Vulkan/Metal/DX12.
        #[arg(long)]
        gl: bool,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Per kind of work (MSM, scalar multiplications, hash to G1,
    /// Poseidon), GPU beside CPU at doubling batch sizes on the same
    /// inputs (results compared), and the batch size from which the GPU is
    /// faster: the thresholds `--accel auto` measures when it opens a
    /// hardware GPU. Runs on software adapters too (where `auto` never uses
    /// the GPU). Exit 1 without an adapter.
    Calibrate {
        /// Use the GL backend instead of Vulkan/Metal/DX12.
        #[arg(long)]
        gl: bool,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Smallest batch, as log₂ of the item count.
        #[arg(long, default_value_t = 6)]
        min_log: u32,
        /// Largest batch, as log₂ of the item count (at most 20).
        #[arg(long, default_value_t = 14)]
        max_log: u32,
        /// Timed runs per side and size (the median counts).
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// Seconds per kind of work: a size predicted to run past it is
        /// not started.
        #[arg(long, default_value_t = 10.0)]
        budget_s: f64,
    },
}

/// The summary as the JSON `int gpu info --json` prints.
pub fn summary_json(s: &AdapterSummary) -> Value {
    json!({
        "adapter": s.name,
        "backend": s.backend,
        "device_type": format!("{:?}", s.device_type),
        "driver": s.driver,
        "vendor": format!("{:#06x}", s.vendor),
        "shader_int64": s.shader_int64,
        "mul_path": if s.shader_int64 { "int64" } else { "portable-u32" },
        "max_storage_binding_bytes": s.max_storage_binding_bytes,
        "max_buffer_bytes": s.max_buffer_bytes,
        "max_workgroups_per_dim": s.max_workgroups_per_dim,
        "max_invocations_per_workgroup": s.max_invocations_per_workgroup,
        "max_storage_buffers_per_stage": s.max_storage_buffers_per_stage,
    })
}

/// Opens the adapter `--gl` picks, or says why there is none (a JSON
/// object with a null adapter under `--json`, and a line on stderr naming
/// `int gpu <what>` and `consequence`): the caller then exits 1.
fn open_or_report(gl: bool, json: bool, what: &str, consequence: &str) -> Option<GpuContext> {
    match GpuContext::new(&options(gl)) {
        Ok(ctx) => Some(ctx),
        Err(e) => {
            if json {
                println!(
                    "{}",
                    json!({ "adapter": Value::Null, "error": e.to_string() })
                );
            }
            eprintln!("int gpu {what}: {e}; {consequence}");
            None
        }
    }
}

/// The options of the adapter `--gl` picks.
fn options(gl: bool) -> GpuOptions {
    GpuOptions {
        backend: if gl {
            BackendChoice::Gl
        } else {
            BackendChoice::Native
        },
        ..Default::default()
    }
}

/// A threshold as JSON: the item count, or `null` for never.
fn threshold_json(n: usize) -> Value {
    if n == NEVER { Value::Null } else { json!(n) }
}

/// One kind's measurement as JSON.
fn calibration_json(c: &Calibration) -> Value {
    let rows: Vec<Value> = c
        .rows
        .iter()
        .map(|r| {
            json!({
                "n": r.n,
                "gpu_ms": r.gpu_ms,
                "cpu_ms": r.cpu_ms,
                "gpu_faster": r.gpu_faster(),
            })
        })
        .collect();
    json!({
        "work": c.work.name(),
        "kernel": c.kernel,
        "threshold": threshold_json(c.threshold),
        "rows": rows,
    })
}

/// `int gpu calibrate`: measures every kind of work on the adapter and
/// prints the table and the thresholds (or one JSON object).
fn calibrate(gl: bool, json: bool, opts: &CalibrateOptions) -> Result<std::process::ExitCode> {
    if let Err(e) = opts.check() {
        bail!("int gpu calibrate: {e}");
    }
    let Some(ctx) = open_or_report(
        gl,
        json,
        "calibrate",
        "nothing to calibrate, verification runs on the CPU",
    ) else {
        return Ok(std::process::ExitCode::from(1));
    };
    let s = ctx.summary().clone();
    let threads = rayon::current_num_threads();
    if !json {
        println!(
            "adapter {} ({}, {:?}{}), shader_int64 {}, CPU side on {threads} threads",
            s.name,
            s.backend,
            s.device_type,
            if s.is_software() { ", software" } else { "" },
            s.shader_int64
        );
        println!(
            "{:<11} {:<22} {:>8} {:>11} {:>11} {:>8}",
            "work", "kernel", "n", "gpu_ms", "cpu_ms", "cpu/gpu"
        );
    }
    let mut cals = Vec::new();
    for work in int_gpu::Work::ALL {
        let c = int_gpu::calibrate(&ctx, work, opts)?;
        if !json {
            for r in &c.rows {
                let ratio = if r.gpu_ms > 0.0 {
                    r.cpu_ms / r.gpu_ms
                } else {
                    0.0
                };
                println!(
                    "{:<11} {:<22} {:>8} {:>11.3} {:>11.3} {:>8.3}",
                    work.name(),
                    c.kernel,
                    r.n,
                    r.gpu_ms,
                    r.cpu_ms,
                    ratio
                );
            }
        }
        cals.push(c);
    }
    if json {
        let thresholds: serde_json::Map<String, Value> = cals
            .iter()
            .map(|c| (c.work.name().to_string(), threshold_json(c.threshold)))
            .collect();
        let kinds: Vec<Value> = cals.iter().map(calibration_json).collect();
        println!(
            "{}",
            json!({
                "adapter": s.name,
                "backend": s.backend,
                "device_type": format!("{:?}", s.device_type),
                "software": s.is_software(),
                "shader_int64": s.shader_int64,
                "cpu_threads": threads,
                "min_log": opts.min_log,
                "max_log": opts.max_log,
                "reps": opts.reps,
                "kinds": kinds,
                "thresholds": thresholds,
            })
        );
    } else {
        let t: Vec<String> = cals
            .iter()
            .map(|c| format!("{} {}", c.work, threshold_text(c.threshold)))
            .collect();
        println!("thresholds: {}", t.join(", "));
        if s.is_software() {
            println!(
                "(a software adapter: --accel auto does not use it, whatever these say; \
                 --accel gpu does)"
            );
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// Runs `int gpu`; the exit code is 0 with an adapter, 1 without.
pub fn run(cmd: GpuCmd) -> Result<std::process::ExitCode> {
    match cmd {
        GpuCmd::Calibrate {
            gl,
            json,
            min_log,
            max_log,
            reps,
            budget_s,
        } => {
            let Ok(budget) = Duration::try_from_secs_f64(budget_s) else {
                bail!("int gpu calibrate: --budget-s must be a number of seconds, got {budget_s}");
            };
            let opts = CalibrateOptions {
                min_log,
                max_log,
                reps,
                budget,
            };
            calibrate(gl, json, &opts)
        }
        GpuCmd::Info { gl, json } => {
            let Some(ctx) =
                open_or_report(gl, json, "info", "verification runs on the CPU (all cores)")
            else {
                return Ok(std::process::ExitCode::from(1));
            };
            crate::cli::print(&summary_json(ctx.summary()), json)?;
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}
