//! `int gpu`: what the GPU layer sees on this machine.
//!
//! `int gpu info` opens the adapter the node would use (and the GL one,
//! where the portable kernels run) and prints its backend, features and
//! limits, so an operator can tell before a run whether verification will
//! go to the GPU.

use anyhow::Result;
use clap::Subcommand;
use int_gpu::{AdapterSummary, BackendChoice, GpuContext, GpuOptions};
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

/// Runs `int gpu`; the exit code is 0 with an adapter, 1 without.
pub fn run(cmd: GpuCmd) -> Result<std::process::ExitCode> {
    match cmd {
        GpuCmd::Info { gl, json } => {
            let opts = GpuOptions {
                backend: if gl {
                    BackendChoice::Gl
                } else {
                    BackendChoice::Native
                },
                ..Default::default()
            };
            match GpuContext::new(&opts) {
                Ok(ctx) => {
                    crate::print(&summary_json(ctx.summary()), json)?;
                    Ok(std::process::ExitCode::SUCCESS)
                }
                Err(e) => {
                    if json {
                        println!(
                            "{}",
                            json!({ "adapter": Value::Null, "error": e.to_string() })
                        );
                    }
                    eprintln!("int gpu info: {e}; verification runs on the CPU (all cores)");
                    Ok(std::process::ExitCode::from(1))
                }
            }
        }
    }
}
