//! Crash safety of `int devnet`, end to end: the real binary is SIGKILLed
//! at random moments while it produces blocks, or aborted at each step of
//! a block's commit (`INT_FAULT`), and restarted on the same data
//! directory. The head must never go back past a height the node had
//! reported as committed, and the state must audit clean at the end
//! (`int state`: recomputed root, account count, head block signatures).
//!
//! The delays come from a seeded LCG; set `INT_CRASH_SEED` to replay or
//! vary a run, `INT_CRASH_KILLS` to change the number of kills.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::child::KillOnDrop;
use common::{BIN, expect_exit, int, json, p, text};

const DEVICES: usize = 200;
/// Accounts at genesis: the devices, the validator, and the simulated
/// market's 8 sellers, 16 buyers and 3 oracles.
const GENESIS_ACCOUNTS: u64 = DEVICES as u64 + 1 + 27;

/// A 64-bit LCG (Knuth's MMIX constants); good enough for delays.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// What the devnet says on stderr.
#[derive(Debug, Clone)]
enum Event {
    /// `int devnet: ... starting at height N`
    Start(u64),
    /// `height=N txs=...`: block N is committed.
    Status(u64),
    /// Any other line.
    Other(String),
}

fn parse(line: &str) -> Event {
    if let Some(rest) = line.strip_prefix("height=")
        && let Some(h) = rest.split_whitespace().next().and_then(|h| h.parse().ok())
    {
        return Event::Status(h);
    }
    if line.starts_with("int devnet:")
        && let Some((_, n)) = line.rsplit_once("starting at height ")
        && let Ok(n) = n.trim().parse()
    {
        return Event::Start(n);
    }
    Event::Other(line.to_string())
}

struct Devnet {
    child: KillOnDrop,
    events: Receiver<Event>,
    reader: Option<JoinHandle<Vec<String>>>,
}

impl Devnet {
    fn start(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_with(data_dir, "100", extra, &[])
    }

    /// [`Devnet::start`] with another block interval and environment.
    fn start_with(data_dir: &Path, block_ms: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(BIN)
            .arg("devnet")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--devices", &DEVICES.to_string(), "--block-ms", block_ms])
            .args(extra)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning int devnet");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = channel();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(parse(&line));
                lines.push(line);
            }
            lines
        });
        Devnet {
            child: KillOnDrop(child),
            events: rx,
            reader: Some(reader),
        }
    }

    /// The next event, or a panic after `timeout`.
    fn next(&self, timeout: Duration, what: &str) -> Event {
        match self.events.recv_timeout(timeout) {
            Ok(e) => e,
            Err(RecvTimeoutError::Timeout) => panic!("timed out waiting for {what}"),
            Err(RecvTimeoutError::Disconnected) => {
                panic!("int devnet closed stderr while waiting for {what}")
            }
        }
    }

    /// Waits for the `starting at height N` line.
    fn wait_start(&self) -> u64 {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.next(left, "the `starting at height` line") {
                Event::Start(n) => return n,
                Event::Status(h) => panic!("status height={h} before the start line"),
                Event::Other(l) => assert!(!l.contains("panicked"), "devnet panicked: {l}"),
            }
        }
    }

    /// Waits for a status line with a committed height; returns it.
    fn wait_status(&self) -> u64 {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.next(left, "a status line") {
                Event::Status(h) => return h,
                Event::Start(n) => panic!("a second start line (height {n})"),
                Event::Other(l) => assert!(!l.contains("panicked"), "devnet panicked: {l}"),
            }
        }
    }

    /// SIGKILLs the node, reads stderr to its end, and returns the highest
    /// height it reported and all its stderr lines.
    fn kill(mut self) -> (Option<u64>, Vec<String>) {
        self.child.0.kill().expect("SIGKILL");
        // 9 = SIGKILL; anything else means it died before the kill.
        self.reap(9, "devnet exited on its own")
    }

    /// Waits for the node to die on its own (an armed crash point);
    /// returns the highest height it reported and its stderr lines.
    fn wait_crash(self) -> (Option<u64>, Vec<String>) {
        // 6 = SIGABRT: the crash point's abort.
        self.reap(6, "devnet did not abort at its crash point")
    }

    /// Reaps the node, which must have died of `signal`; reads stderr to
    /// its end and returns the highest height it reported and its lines.
    fn reap(mut self, signal: i32, otherwise: &str) -> (Option<u64>, Vec<String>) {
        let status = self.child.0.wait().expect("reaping the devnet");
        let lines = self.reader.take().unwrap().join().expect("stderr reader");
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(
                status.signal(),
                Some(signal),
                "{otherwise} ({status}):\n{}",
                lines.join("\n")
            );
        }
        #[cfg(not(unix))]
        let _ = (status, signal, otherwise);
        let max = self
            .events
            .try_iter()
            .filter_map(|e| match e {
                Event::Status(h) => Some(h),
                _ => None,
            })
            .max();
        (max, lines)
    }
}

/// `int state` audits `data_dir` clean (root, count, head block, value)
/// at a height of at least `height`, with the genesis accounts.
fn audits_clean(data_dir: &Path, height: u64) {
    let st = int_state(data_dir);
    assert_eq!(st["root_ok"], true, "{st}");
    assert_eq!(st["accounts_ok"], true, "{st}");
    assert_eq!(st["head_block_ok"], true, "{st}");
    assert!(st["height"].as_u64().unwrap() >= height, "{st}");
    assert_eq!(st["accounts"], GENESIS_ACCOUNTS, "{st}");
    assert_eq!(st["value_conserved"], true, "{st}");
}

/// `int state --json` of `data_dir`: it must succeed, without a panic.
fn int_state(data_dir: &Path) -> serde_json::Value {
    let args = ["state", "--data-dir", p(data_dir), "--json"];
    let out = int(&args);
    expect_exit(&args, &out, 0);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "int state --json printed no JSON ({e}): {}",
            text(&out.stdout)
        )
    })
}

/// Killed while creating the data dir, deriving keys or writing genesis
/// (before any block), the node must still start on that dir afterwards.
#[test]
fn devnet_survives_sigkill_during_startup() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for delay in [5u64, 30, 80, 150] {
        let node = Devnet::start(&data, &[]);
        std::thread::sleep(Duration::from_millis(delay));
        // It may have got past genesis, or not; either is fine here.
        drop(node);
    }
    let node = Devnet::start(&data, &[]);
    let start = node.wait_start();
    let h = node.wait_status();
    assert!(
        h > start,
        "no block after restarts: start {start}, status {h}"
    );
    let (max, lines) = node.kill();
    assert!(
        !lines.iter().any(|l| l.contains("panicked")),
        "{}",
        lines.join("\n")
    );
    audits_clean(&data, max.unwrap_or(h));
}

fn is_hex32(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[test]
fn devnet_survives_sigkill_at_random_moments() {
    let t0 = Instant::now();
    let seed: u64 = std::env::var("INT_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x1A7_C8A5);
    let kills: usize = std::env::var("INT_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    eprintln!("seed {seed}, {kills} kills (INT_CRASH_SEED / INT_CRASH_KILLS to change)");
    let mut rng = Lcg(seed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");

    // The highest height any run has reported as committed.
    let mut reported: u64 = 0;
    for round in 0..kills {
        let node = Devnet::start(&data, &[]);
        let start = node.wait_start();
        if round == 0 {
            assert_eq!(start, 0, "a fresh data dir starts at genesis");
        }
        assert!(
            start >= reported,
            "round {round}: restarted at height {start}, below the reported height {reported}"
        );
        let first = node.wait_status();
        assert!(first >= 1, "status before any block: height={first}");
        assert!(
            first >= start,
            "round {round}: status height {first} below the start height {start}"
        );
        let delay = rng.range(300, 2500);
        std::thread::sleep(Duration::from_millis(delay));
        let (max, lines) = node.kill();
        let max = max.unwrap_or(first).max(first);
        assert!(
            !lines.iter().any(|l| l.contains("panicked")),
            "round {round}: devnet panicked:\n{}",
            lines.join("\n")
        );
        eprintln!(
            "round {round}: started at {start}, killed {delay} ms after height {first}, last reported {max}"
        );
        reported = reported.max(max);
    }

    // The state audits clean and holds every reported block.
    let st = int_state(&data);
    assert_eq!(st["root_ok"], true, "state root mismatch after kills: {st}");
    assert_eq!(
        st["accounts_ok"], true,
        "account count mismatch after kills: {st}"
    );
    assert_eq!(
        st["head_block_ok"], true,
        "head block does not verify: {st}"
    );
    let height = st["height"].as_u64().expect("height");
    assert!(
        height >= reported,
        "head at {height}, below the reported height {reported}: {st}"
    );
    assert_eq!(
        st["accounts"], GENESIS_ACCOUNTS,
        "devices + validator + market: {st}"
    );
    assert_eq!(st["value_conserved"], true, "{st}");

    // A clean run on top of it: starts where the audit says, ends with a
    // summary on stdout.
    let devices = DEVICES.to_string();
    let args = [
        "devnet",
        "--data-dir",
        p(&data),
        "--devices",
        &devices,
        "--block-ms",
        "100",
        "--duration",
        "2",
        "--json",
    ];
    let out = int(&args);
    expect_exit(&args, &out, 0);
    let stdout = String::from_utf8(out.stdout).expect("UTF-8 summary");
    assert_eq!(
        stdout.trim().lines().count(),
        1,
        "--json prints one line: {stdout}"
    );
    let sum = json(&stdout);
    let s_height = sum["height"].as_u64().expect("summary height");
    let s_start = sum["start_height"].as_u64().expect("summary start_height");
    assert_eq!(
        s_start, height,
        "clean run starts at the audited head: {sum}"
    );
    assert!(s_height > s_start, "clean run made no block: {sum}");
    assert!(
        sum["txs"].as_u64().expect("summary txs") > 0,
        "no txs: {sum}"
    );
    assert!(
        sum["tps"].as_f64().expect("summary tps") > 0.0,
        "tps: {sum}"
    );
    let root = sum["state_root"].as_str().expect("summary state_root");
    assert!(is_hex32(root), "state_root is not 64 hex digits: {sum}");
    assert_eq!(sum["accounts"], GENESIS_ACCOUNTS, "accounts: {sum}");
    assert_eq!(sum["value_conserved"], true, "{sum}");

    // And the audit agrees with the summary.
    let st = int_state(&data);
    assert_eq!(st["root_ok"], true, "{st}");
    assert_eq!(st["accounts_ok"], true, "{st}");
    assert_eq!(st["head_block_ok"], true, "{st}");
    assert_eq!(st["height"], s_height, "{st} vs {sum}");
    assert_eq!(st["state_root"], root, "{st} vs {sum}");
    eprintln!("done in {:.1} s", t0.elapsed().as_secs_f64());
}

/// Crashes inside the commit of a block, at each step of the commit
/// protocol (`INT_FAULT`, `engine/src/fault.rs`): half of the block's
/// state-log records written; the log synced and LMDB not committed; LMDB
/// committed and the log's memory not updated; blocks of one second, so
/// each holds all the devices' transactions of that second. The node
/// aborts there, restarts on
/// the same data dir at a height never below one it reported, and at the
/// end the state audits clean. First, two crashes inside the genesis.
#[test]
fn devnet_crashed_inside_commits_restarts_at_a_committed_height() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Crashes inside the genesis (its accounts half written to the state
    // log; its accounts in the log and in LMDB, no head): no height was
    // reported, and the next start redoes the genesis.
    for point in ["state_log_half_written", "genesis_chunk_loaded"] {
        let fault = format!("{point}:1");
        let node = Devnet::start_with(&data, "1000", &[], &[("INT_FAULT", &fault)]);
        let (max, lines) = node.wait_crash();
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("aborting at {point}"))),
            "genesis ({fault}): no abort at {point}:\n{}",
            lines.join("\n")
        );
        assert_eq!(max, None, "genesis ({fault}): a height reported");
    }
    let mut reported: u64 = 0;
    let points = [
        ("state_log_half_written", 3),
        ("state_log_synced", 3),
        ("lmdb_committed", 3),
        ("state_log_synced", 2),
        ("state_log_half_written", 2),
        ("lmdb_committed", 2),
    ];
    for (round, (point, pass)) in points.into_iter().enumerate() {
        let fault = format!("{point}:{pass}");
        let node = Devnet::start_with(&data, "1000", &[], &[("INT_FAULT", &fault)]);
        let start = node.wait_start();
        assert!(
            start >= reported,
            "round {round} ({fault}): restarted at height {start}, below the reported {reported}"
        );
        let (max, lines) = node.wait_crash();
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("aborting at {point}"))),
            "round {round}: no abort at {point}:\n{}",
            lines.join("\n")
        );
        assert!(
            !lines.iter().any(|l| l.contains("panicked")),
            "round {round}: devnet panicked:\n{}",
            lines.join("\n")
        );
        eprintln!("round {round}: {fault}: started at {start}, last reported {max:?}");
        reported = reported.max(max.unwrap_or(start));
    }
    // A run without a crash point starts where the last committed block
    // is, and goes on.
    let node = Devnet::start(&data, &[]);
    let start = node.wait_start();
    assert!(
        start >= reported,
        "restarted at {start}, below the reported {reported}"
    );
    let h = node.wait_status();
    assert!(
        h > start,
        "no block after the crashes: start {start}, status {h}"
    );
    let (max, _) = node.kill();
    audits_clean(&data, max.unwrap_or(h));
}
