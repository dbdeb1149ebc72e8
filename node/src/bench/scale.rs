//! `int bench scale`: the state at growing populations. For each
//! `--accounts` value, in one run: a genesis of that many accounts (one
//! block; the state log takes it as a sorted bulk load), then the same
//! stream of blocks of random transfers through the node's block loop
//! (`int bench tps`'s execution + commit: the same code), then the store
//! reopened as after a kill, then stopped as a node stops (a checkpoint)
//! and reopened again. One row per population: execution + commit tx/s,
//! block time and its split (load, execute, root, commit), state updates
//! per second, bytes written per block, peak memory, disk bytes per
//! account, recovery time, checkpoint and restart time, and the time to
//! find a transaction by hash after the blocks. `OUT/scale.json` holds the
//! report and `OUT/scale.svg` plots block time against accounts (log
//! scale).
//!
//! The genesis goes through the chain's genesis loader a chunk at a time
//! (`Chain::begin_genesis`), so a population needs the disk of its state
//! and the memory of its sort and index, not of its list. A population
//! that would not fit this machine's free disk or memory is skipped, and
//! the report says so.

use std::path::PathBuf;
use std::time::Instant;

use plotters::prelude::*;
use serde::Serialize;

use super::tps::{Machine, StageUs, TpsArgs, TpsError, Workload, exec_commit, out_dir};

/// Disk a population takes per account, with room: the state log's entry
/// (280 bytes); measured ≈ 290 bytes at 10⁷ after 10 blocks.
const DISK_BYTES_PER_ACCOUNT: f64 = 320.0;
/// Disk each measured transfer adds, with room: two entries in the state
/// log (560 bytes; compaction later takes the old ones back) and its share
/// of the block, its receipts and the transaction index.
const DISK_BYTES_PER_TRANSFER: f64 = 1000.0;
/// Memory a genesis takes per account, with room: the bench's sort (16
/// bytes) and the state log's index (16 bytes); recovery adds ≈ 4.2 bytes
/// per held entry.
const MEMORY_BYTES_PER_ACCOUNT: f64 = 48.0;

/// Options of `int bench scale`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScaleArgs {
    /// Populations, comma separated (`1e6,1e7,1e8` or plain numbers).
    #[arg(long, value_delimiter = ',', default_values_t = ["1e6".to_string(), "1e7".to_string()])]
    pub accounts: Vec<String>,
    /// Blocks measured per population.
    #[arg(long, default_value_t = 10)]
    pub blocks: usize,
    /// Transfers per block.
    #[arg(long, default_value_t = 10_000)]
    pub block_txs: usize,
    /// Accounts kept in the ECS world between blocks.
    #[arg(long, default_value_t = 200_000)]
    pub hot_capacity: usize,
    /// Print the report as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Directory for the report (JSON) and the plot (SVG) [default: bench-out].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// One population's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleRow {
    /// Accounts at genesis.
    pub accounts: u64,
    /// Execution + commit of the measured blocks, transfers per second.
    pub exec_commit_tx_per_s: f64,
    /// Mean wall time of a measured block, ms.
    pub block_ms: f64,
    /// Where a block's time went, ms per block.
    pub load_ms: f64,
    /// Execution.
    pub execute_ms: f64,
    /// The state root (planning the log's appends, staging the tree).
    pub root_ms: f64,
    /// The commit (log append and sync, LMDB's transaction).
    pub commit_ms: f64,
    /// CPU time of the process per block (user + system, every thread),
    /// ms: against `block_ms`, how much of the cores a block keeps busy.
    pub cpu_ms_per_block: Option<f64>,
    /// State updates (distinct accounts written, and the supply record)
    /// per second.
    pub updates_per_s: f64,
    /// Bytes the process wrote to storage per block as the kernel counts
    /// them (`/proc/self/io` `write_bytes`): page cache dirtied, by whole
    /// folio, so several times what reaches the disk.
    pub bytes_written_per_block: Option<f64>,
    /// Bytes it passed to write calls per block (`wchar`): what reaches
    /// the disk (at 10⁷ it matched `/proc/diskstats`' sectors written).
    pub bytes_to_write_calls_per_block: Option<f64>,
    /// Peak resident memory from the measured blocks on (recovery
    /// included), MiB: the process's own memory and the pages of LMDB's
    /// map it touched (page cache the kernel may take back).
    pub peak_rss_mib: Option<f64>,
    /// Of that, the peak of the process's own (anonymous) memory, sampled
    /// every 10 ms, MiB.
    pub peak_anon_mib: Option<f64>,
    /// Peak resident memory of the genesis, MiB.
    pub genesis_peak_rss_mib: Option<f64>,
    /// The genesis, seconds.
    pub genesis_s: f64,
    /// The data dir on disk after the blocks, bytes per account.
    pub disk_bytes_per_account: f64,
    /// Reopening the store as after a kill, until a block can be
    /// prepared, seconds.
    pub recovery_s: Option<f64>,
    /// Writing the checkpoint a stopping node writes, seconds.
    pub checkpoint_s: Option<f64>,
    /// Reopening the store after that checkpoint (a restart), seconds.
    pub restart_s: Option<f64>,
    /// A transaction found by hash after the blocks (the RPC's receipt
    /// lookup), mean µs.
    pub tx_lookup_us: f64,
}

/// The report of `int bench scale`.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    /// The machine.
    pub machine: Machine,
    /// Transfers per block.
    pub block_txs: usize,
    /// Blocks per population.
    pub blocks: usize,
    /// One row per population measured.
    pub populations: Vec<ScaleRow>,
    /// Populations not measured, and why.
    pub skipped: Vec<String>,
    /// Where the JSON report was written.
    pub report_json: String,
    /// Where the plot was written.
    pub plot_svg: String,
}

fn parse_count(s: &str) -> Result<u64, TpsError> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| TpsError::BadArgs(format!("--accounts: {s:?} is not a number")))?;
    if !(1.0..=1e12).contains(&v) || v.fract() != 0.0 {
        return Err(TpsError::BadArgs(format!(
            "--accounts: {s:?} is not a whole number from 1 to 1e12"
        )));
    }
    Ok(v as u64)
}

/// Free memory, from `/proc/meminfo`'s `MemAvailable` (Linux).
fn available_bytes() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0)
}

/// Free bytes of the file system under `dir` (statvfs).
fn free_disk_bytes(dir: &std::path::Path) -> Option<f64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated string and `st` a statvfs the
    // call fills; nothing is kept past the call.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as f64 * st.f_frsize as f64)
}

/// Why a population of `n` and `transfers` measured transfers does not
/// fit, if it does not.
fn does_not_fit(n: u64, transfers: u64) -> Option<String> {
    let gib = |b: f64| b / f64::from(1 << 30);
    let disk = n as f64 * DISK_BYTES_PER_ACCOUNT + transfers as f64 * DISK_BYTES_PER_TRANSFER;
    let tmp = std::env::temp_dir();
    if let Some(free) = free_disk_bytes(&tmp)
        && disk > free
    {
        return Some(format!(
            "{n} accounts need about {:.0} GiB of disk under {}, {:.0} GiB are free (TMPDIR picks another disk)",
            gib(disk),
            tmp.display(),
            gib(free)
        ));
    }
    let memory = n as f64 * MEMORY_BYTES_PER_ACCOUNT;
    if let Some(free) = available_bytes()
        && memory > free
    {
        return Some(format!(
            "{n} accounts need about {:.1} GiB of memory, {:.1} GiB are free",
            gib(memory),
            gib(free)
        ));
    }
    None
}

/// Runs every population.
pub fn run(args: &ScaleArgs) -> Result<ScaleReport, TpsError> {
    if args.blocks == 0 || args.block_txs == 0 {
        return Err(TpsError::BadArgs(
            "--blocks and --block-txs must be > 0".into(),
        ));
    }
    let mut counts = args
        .accounts
        .iter()
        .map(|s| parse_count(s))
        .collect::<Result<Vec<_>, _>>()?;
    counts.sort_unstable();
    counts.dedup();
    let out_dir = out_dir(args.out.as_deref())?;
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    for &n in &counts {
        if let Some(why) = does_not_fit(n, (args.blocks * args.block_txs) as u64) {
            eprintln!("int bench scale: skipped: {why}");
            skipped.push(why);
            continue;
        }
        eprintln!("int bench scale: {n} accounts ...");
        let targs = TpsArgs {
            accounts: n as usize,
            json: false,
            out: None,
            sigs: 0,
            devices: 1,
            ingress_batch: 1,
            block_txs: args.block_txs,
            blocks: args.blocks,
            block_ms: 0,
            hot_capacity: args.hot_capacity,
            sizes: Vec::new(),
            workload: Workload::Transfers,
        };
        let t = Instant::now();
        let r = exec_commit(&targs, &[], true)?;
        let blocks = args.blocks as f64;
        let ms = |us: u64| us as f64 / 1e3 / blocks;
        let StageUs {
            load,
            execute,
            root,
            commit,
            ..
        } = r.stage_us;
        let row = ScaleRow {
            accounts: n,
            exec_commit_tx_per_s: r.report.ok as f64 / r.report.seconds.max(1e-9),
            block_ms: r.report.seconds * 1e3 / blocks,
            load_ms: ms(load),
            execute_ms: ms(execute),
            root_ms: ms(root),
            commit_ms: ms(commit),
            cpu_ms_per_block: r.report.cpu_ms_per_block,
            updates_per_s: r.updates as f64 / r.report.seconds.max(1e-9),
            bytes_written_per_block: r.report.written_mib_per_block.map(|m| m * 1048576.0),
            bytes_to_write_calls_per_block: r
                .report
                .write_calls_mib_per_block
                .map(|m| m * 1048576.0),
            peak_rss_mib: r.blocks_peak_rss_mib,
            peak_anon_mib: r.blocks_peak_anon_mib,
            genesis_peak_rss_mib: r.genesis_peak_rss_mib,
            genesis_s: r.genesis_s,
            disk_bytes_per_account: r.disk_bytes as f64 / n as f64,
            recovery_s: r.recovery_s,
            checkpoint_s: r.restart.map(|r| r.0),
            restart_s: r.restart.map(|r| r.1),
            tx_lookup_us: r.tx_lookup_us,
        };
        eprintln!(
            "  {n} accounts: {:.0} tx/s, {:.1} ms per block (load {:.1}, execute {:.1}, root {:.1}, commit {:.1}; {:.1} ms of CPU), {:.0} updates/s, {:.0} B on disk per account, recovery {:.2} s, restart after a checkpoint {:.2} s ({:.0} s in all)",
            row.exec_commit_tx_per_s,
            row.block_ms,
            row.load_ms,
            row.execute_ms,
            row.root_ms,
            row.commit_ms,
            row.cpu_ms_per_block.unwrap_or(f64::NAN),
            row.updates_per_s,
            row.disk_bytes_per_account,
            row.recovery_s.unwrap_or(f64::NAN),
            row.restart_s.unwrap_or(f64::NAN),
            t.elapsed().as_secs_f64()
        );
        rows.push(row);
    }
    let json_path = out_dir.join("scale.json");
    let svg_path = out_dir.join("scale.svg");
    let report = ScaleReport {
        machine: Machine::current(),
        block_txs: args.block_txs,
        blocks: args.blocks,
        populations: rows,
        skipped,
        report_json: json_path.display().to_string(),
        plot_svg: svg_path.display().to_string(),
    };
    std::fs::write(&json_path, serde_json::to_vec_pretty(&report)?).map_err(|source| {
        TpsError::Io {
            path: json_path.clone(),
            source,
        }
    })?;
    draw(&svg_path, &report).map_err(TpsError::Plot)?;
    Ok(report)
}

/// Block time against accounts, log-scale accounts.
fn draw(path: &std::path::Path, r: &ScaleReport) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let pts: Vec<(f64, f64)> = r
        .populations
        .iter()
        .map(|p| ((p.accounts as f64).log10(), p.block_ms))
        .collect();
    let (x0, x1) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (x0, x1) = if pts.is_empty() {
        (5.0, 9.0)
    } else {
        (x0.floor() - 0.5, x1.ceil() + 0.5)
    };
    let y1 = pts.iter().map(|p| p.1).fold(1.0, f64::max) * 1.2;
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "int bench scale: block of {} transfers, time against accounts",
                r.block_txs
            ),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, 0.0..y1)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("accounts")
        .y_desc("ms per block (execution + commit)")
        .x_label_formatter(&|x| format!("1e{x:.0}"))
        .draw()
        .map_err(|e| err(&e))?;
    chart
        .draw_series(LineSeries::new(pts.iter().copied(), &BLUE))
        .map_err(|e| err(&e))?;
    chart
        .draw_series(pts.iter().map(|p| Circle::new(*p, 4, BLUE.filled())))
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn populations_parse_and_refuse_nonsense() {
        assert_eq!(parse_count("1e6").unwrap(), 1_000_000);
        assert_eq!(parse_count("2500").unwrap(), 2500);
        for bad in ["", "x", "0", "1.5", "-3", "1e13", "nan"] {
            assert!(parse_count(bad).is_err(), "{bad}");
        }
    }
}
