//! The throughput harness behind `int bench tps` (being written).

use std::path::PathBuf;

/// Options of `int bench tps`.
#[derive(Debug, Clone, clap::Args)]
pub struct TpsArgs {
    /// Accounts in the state for the execution + commit measurement.
    #[arg(long, default_value_t = 1_000_000)]
    pub accounts: usize,
    /// Print the report as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Directory for the report (JSON) and the plot (SVG).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Errors of the harness.
#[derive(Debug, thiserror::Error)]
pub enum TpsError {
    /// Not built yet.
    #[error("int bench tps is not built yet")]
    NotBuilt,
}

/// The report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TpsReport {}

/// Runs the harness.
pub fn run(_args: &TpsArgs) -> Result<TpsReport, TpsError> {
    Err(TpsError::NotBuilt)
}
