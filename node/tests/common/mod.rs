//! What the end-to-end tests of the `int` binary share: running it as a user
//! would (no backtrace variables, no colour, no stdin) and reading its output;
//! [`child`] keeps a running node (or any child) in hand, [`rpc`] talks to
//! its JSON-RPC server, [`proof`] checks the Merkle proofs it returns.

#![allow(dead_code)] // each test binary uses its own subset

pub mod child;
pub mod proof;
pub mod rpc;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use int_engine::crypto::bls::SecretKey;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_int");

/// How long anything that should happen may take (generous: CI machines
/// are shared); nothing is asserted about how fast it happens.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// `int ARGS` as a user would run it: no backtrace variables, no colour,
/// stdin closed.
pub fn int_command(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    c
}

/// Runs `int ARGS` to completion.
pub fn int(args: &[&str]) -> Output {
    int_command(args).output().expect("running int")
}

/// Runs `int ARGS`, expects exit code `code` and no panic; returns
/// (stdout, stderr).
pub fn run(args: &[&str], code: i32) -> (String, String) {
    expect_exit(args, &int(args), code)
}

/// Expects `out`, of `int ARGS`, to have exited with `code` and without a
/// panic; returns (stdout, stderr).
pub fn expect_exit(args: &[&str], out: &Output, code: i32) -> (String, String) {
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

/// The keystore password the tests' keys are made with.
pub const PASSWORD: &str = "correct horse battery staple";

/// Runs `int ARGS` with `password` in INT_KEYSTORE_PASSWORD (none: unset).
pub fn int_pw(args: &[&str], password: Option<&str>) -> Output {
    let mut c = int_command(args);
    c.env_remove("INT_KEYSTORE_PASSWORD");
    if let Some(pw) = password {
        c.env("INT_KEYSTORE_PASSWORD", pw);
    }
    c.output().expect("running int")
}

/// Runs `int ARGS` with `password` (see [`int_pw`]); expects exit `code`
/// and no panic; (stdout, stderr).
pub fn run_pw(args: &[&str], password: Option<&str>, code: i32) -> (String, String) {
    expect_exit(args, &int_pw(args, password), code)
}

/// Text that must be one JSON value.
pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
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

/// The 32-byte seed `key` (`validator_seed`, `fleet_seed`) of the
/// devnet.json that `int devnet` wrote in `data_dir`.
pub fn devnet_seed(data_dir: &Path, key: &str) -> [u8; 32] {
    let file = json(&std::fs::read_to_string(data_dir.join("devnet.json")).expect("devnet.json"));
    let s = file[key]
        .as_str()
        .unwrap_or_else(|| panic!("devnet.json has no {key}: {file}"));
    hex::decode(s)
        .expect("hex seed")
        .try_into()
        .expect("32-byte seed")
}

/// The devnet validator's key, from its devnet.json in `data_dir`.
pub fn devnet_validator(data_dir: &Path) -> SecretKey {
    SecretKey::from_seed(&devnet_seed(data_dir, "validator_seed"))
}
