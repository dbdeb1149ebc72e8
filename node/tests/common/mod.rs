//! What the end-to-end tests of the `int` binary share: running it as a user
//! would (no backtrace variables, no colour, no stdin) and reading its output.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_int");

/// Runs `int ARGS` to completion.
pub fn int(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("running int")
}

/// Runs `int ARGS`, expects exit code `code` and no panic; returns
/// (stdout, stderr).
pub fn run(args: &[&str], code: i32) -> (String, String) {
    let out = int(args);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(code),
        "`int {}` should exit with {code} (not a signal or panic code):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        args.join(" ")
    );
    assert!(
        !stderr.contains("panicked"),
        "`int {}` panicked:\n{stderr}",
        args.join(" ")
    );
    (stdout, stderr)
}

/// Output bytes as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `int devnet` as the market and RPC tests run it: 20 devices, no BPK
/// users, 100 ms blocks for `secs` seconds, a JSON summary; `extra` goes
/// before `--json`.
pub fn devnet_args<'a>(data_dir: &'a str, secs: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "devnet",
        "--data-dir",
        data_dir,
        "--devices",
        "20",
        "--users",
        "0",
        "--duration",
        secs,
        "--block-ms",
        "100",
    ];
    args.extend_from_slice(extra);
    args.push("--json");
    args
}

/// A temp path as an argument.
pub fn p(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}
