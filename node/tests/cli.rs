//! The `int` command line as a new user meets it: help, errors on an empty
//! data dir and on bad input, account lookups with Merkle proofs after a
//! short devnet run, and the flamegraph option.
//!
//! Runs the real binary. `RUST_BACKTRACE` is removed from its environment,
//! as a user would not have it set.

mod common;

use common::child::{KillOnDrop, wait_exit};
use common::proof::check_account_proof;
use common::{devnet_seed, devnet_validator, int, int_command, json, p, run, text};

use int_node::sim::fleet::Fleet;

/// Runs `int ARGS`, expects success, returns stdout.
fn ok(args: &[&str]) -> String {
    run(args, 0).0
}

/// Runs `int ARGS`, expects a clean failure (exit 1, no panic, an `Error:`
/// line, no backtrace); returns stderr.
fn fails(args: &[&str]) -> String {
    let (_, err) = run(args, 1);
    assert!(
        err.contains("Error: "),
        "`int {}`: no error message:\n{err}",
        args.join(" ")
    );
    assert!(
        !err.contains("Stack backtrace"),
        "`int {}`: a backtrace without RUST_BACKTRACE:\n{err}",
        args.join(" ")
    );
    err
}

#[test]
fn help_lists_the_commands() {
    let out = ok(&["--help"]);
    for cmd in ["devnet", "state", "bench"] {
        assert!(
            out.lines().any(|l| l.trim_start().starts_with(cmd)),
            "`int --help` does not list `{cmd}`:\n{out}"
        );
    }
    // Each subcommand has its own help.
    assert!(ok(&["devnet", "--help"]).contains("--data-dir"));
    assert!(ok(&["state", "--help"]).contains("account"));
    assert!(ok(&["bench", "--help"]).contains("tps"));
    // No command: usage on stderr, exit 2 (clap), no panic.
    let out = int(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("Usage"), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("panicked"));
}

/// `int … | head`: a reader that is gone ends the command quietly (by
/// SIGPIPE, as Unix tools do), never with a panic.
#[cfg(unix)]
#[test]
fn a_closed_stdout_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader); // every write now fails with EPIPE
    let out = common::int_command(&["config", "default"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("running int");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.signal(), Some(13), "ended by SIGPIPE: {stderr}");
}

#[test]
fn state_on_an_empty_dir_says_to_run_devnet() {
    let dir = tempfile::tempdir().unwrap();
    let d = p(dir.path());
    let err = fails(&["state", "--data-dir", d]);
    assert!(
        err.contains("int devnet"),
        "no hint to run `int devnet`:\n{err}"
    );
    let err = fails(&["state", "--data-dir", d, "--json"]);
    assert!(err.contains("int devnet"), "{err}");
    let id = "00".repeat(32);
    let err = fails(&["state", "--data-dir", d, "account", &id]);
    assert!(err.contains("int devnet"), "{err}");
    // A data dir that does not exist at all: same message, and nothing
    // gets created.
    let missing = dir.path().join("nope");
    let err = fails(&["state", "--data-dir", p(&missing)]);
    assert!(err.contains("int devnet"), "{err}");
    assert!(!missing.exists(), "`int state` created {missing:?}");
}

/// The devnet's simulated users register identities and send anonymous
/// intents; `int state` reports the identity tree and the head block (its
/// intent proofs included) re-verifies; a restart does not register the
/// users twice.
#[test]
fn devnet_sends_anonymous_intents() {
    let dir = tempfile::tempdir().unwrap();
    let d = p(dir.path());
    let run = |secs: &str| {
        json(&ok(&[
            "devnet",
            "--data-dir",
            d,
            "--devices",
            "20",
            "--users",
            "4",
            "--intent-ms",
            "0",
            "--duration",
            secs,
            "--block-ms",
            "100",
            "--json",
        ]))
    };
    let sum = run("10");
    assert_eq!(sum["users"], 4, "{sum}");
    assert_eq!(sum["identities"], 4, "{sum}");
    assert!(
        sum["intents_ok"].as_u64().unwrap() >= 1,
        "no intent got through: {sum}"
    );
    assert_eq!(
        sum["intents"], sum["intents_ok"],
        "an intent failed on chain: {sum}"
    );
    assert_eq!(sum["intents_refused"], 0, "{sum}");
    assert!(sum["prove_ms_mean"].as_f64().unwrap() > 0.0, "{sum}");
    // Every other intent, once listed, buys from the SKU sold to clusters.
    assert!(
        sum["cluster_buys"].as_u64().unwrap() >= 1,
        "no anonymous purchase: {sum}"
    );

    let st = json(&ok(&["state", "--data-dir", d, "--json"]));
    assert_eq!(st["root_ok"], true, "{st}");
    assert_eq!(st["head_block_ok"], true, "{st}");
    assert_eq!(st["bpk"]["identities"], 4, "{st}");
    assert_eq!(st["bpk"]["dims"], 8, "{st}");
    assert_eq!(st["bpk"]["clusters"], 8, "{st}");
    // Field elements print as `int zk clusters` prints its commitment.
    for key in ["centroid_commitment", "identity_root"] {
        let v = st["bpk"][key].as_str().unwrap_or_default();
        assert!(v.starts_with("0x") && v.len() == 66, "{key}: {st}");
    }

    let again = run("3");
    assert!(again["start_height"].as_u64().unwrap() > 0, "{again}");
    assert_eq!(again["identities"], 4, "users registered twice: {again}");
    assert_eq!(again["intents_refused"], 0, "{again}");
}

/// A short devnet run, then the accounts it holds, with proofs, and bad
/// account ids.
#[test]
fn devnet_then_account_proofs() {
    let dir = tempfile::tempdir().unwrap();
    let d = p(dir.path());
    let out = ok(&[
        "devnet",
        "--data-dir",
        d,
        "--devices",
        "50",
        "--duration",
        "2",
        "--block-ms",
        "100",
        "--accel",
        "cpu",
        "--json",
    ]);
    let sum = json(&out);
    assert_eq!(sum["devices"], 50, "{sum}");
    // On the CPU by choice: nothing sent to a GPU, nothing fell back.
    assert_eq!(sum["accel"], "cpu: cpu", "{sum}");
    assert_eq!(
        (&sum["gpu_batches"], &sum["gpu_fallbacks"]),
        (&serde_json::json!(0), &serde_json::json!(0)),
        "{sum}"
    );
    assert_eq!(
        sum["accounts"], 78,
        "50 devices + the validator + the simulated market's 8 sellers, 16 buyers and 3 oracles: {sum}"
    );
    let root = sum["state_root"].as_str().expect("state_root").to_string();

    // The CLI prints no account id anywhere (summary, `int state`), so the
    // ids are derived from the seeds in devnet.json, as the devnet does.
    let fleet = Fleet::derive(2, &devnet_seed(dir.path(), "fleet_seed"));
    let validator = devnet_validator(dir.path()).public_key().account_id();
    let ids = [fleet.ids[0], fleet.ids[1], validator];

    for id in ids {
        let h = hex::encode(id);
        let v = json(&ok(&[
            "state",
            "--data-dir",
            d,
            "account",
            &h,
            "--proof",
            "--json",
        ]));
        assert_eq!(v["exists"], true, "{v}");
        assert_eq!(v["proof_ok"], true, "inclusion proof: {v}");
        assert!(check_account_proof(&v), "an inclusion proof: {v}");
        assert_eq!(v["id"], h.as_str(), "{v}");
        assert_eq!(v["state_root"], root.as_str(), "{v}");
        assert_eq!(v["height"], sum["height"], "{v}");
        assert!(v["proof"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
        // `0x` prefix and upper case are accepted too.
        let v2 = json(&ok(&[
            "state",
            "--data-dir",
            d,
            "--json",
            "account",
            &format!("0x{}", h.to_uppercase()),
            "--proof",
        ]));
        assert_eq!(v2, v, "the same account, spelled differently");
    }
    // The devices sent transfers and registered: device 0 has a key and
    // a nonce by now (it is picked first).
    let v = json(&ok(&[
        "state",
        "--data-dir",
        d,
        "account",
        &hex::encode(ids[0]),
        "--json",
    ]));
    assert!(
        v["nonce"].as_u64().unwrap() > 0,
        "device 0 sent nothing: {v}"
    );
    assert!(
        v["public_key"].is_string(),
        "device 0 is not registered: {v}"
    );
    assert!(v.get("proof").is_none(), "a proof without --proof: {v}");

    // Absent accounts: an exclusion proof.
    let mut lcg = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..3 {
        let mut id = [0u8; 32];
        for b in &mut id {
            lcg = lcg
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *b = (lcg >> 56) as u8;
        }
        assert!(!ids.contains(&id) && !fleet.ids.contains(&id));
        let h = hex::encode(id);
        let v = json(&ok(&[
            "state",
            "--data-dir",
            d,
            "account",
            &h,
            "--proof",
            "--json",
        ]));
        assert_eq!(v["exists"], false, "{v}");
        assert_eq!(v["proof_ok"], true, "exclusion proof: {v}");
        assert!(!check_account_proof(&v), "an exclusion proof: {v}");
        assert!(v.get("nonce").is_none(), "{v}");
    }
    for id in ["00".repeat(32), "ff".repeat(32)] {
        let v = json(&ok(&[
            "state",
            "--data-dir",
            d,
            "account",
            &id,
            "--proof",
            "--json",
        ]));
        assert_eq!(v["exists"], false, "{v}");
        assert_eq!(v["proof_ok"], true, "exclusion proof for {id}: {v}");
        assert!(!check_account_proof(&v), "an exclusion proof: {v}");
    }

    // Plain output: one `key value` line each.
    let out = ok(&[
        "state",
        "--data-dir",
        d,
        "account",
        &hex::encode(validator),
        "--proof",
    ]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("exists") && l.ends_with("true")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("proof_ok") && l.ends_with("true")),
        "{out}"
    );

    // Bad ids fail with a message about the id, not a panic.
    let long = "ab".repeat(33);
    let short = "ab".repeat(31);
    let odd = "a".repeat(63);
    let nonascii = "é".repeat(32);
    for bad in [
        "zz", "", "0x", "xyz", &long, &short, &odd, &nonascii, "0x0x00",
    ] {
        let err = fails(&["state", "--data-dir", d, "account", bad]);
        assert!(err.contains("account id"), "`{bad}`: {err}");
        let err = fails(&[
            "state",
            "--data-dir",
            d,
            "account",
            bad,
            "--proof",
            "--json",
        ]);
        assert!(err.contains("account id"), "`{bad}`: {err}");
    }

    // The audit of the same dir.
    let st = json(&ok(&["state", "--data-dir", d, "--json"]));
    for k in ["root_ok", "accounts_ok", "head_block_ok"] {
        assert_eq!(st[k], true, "{k}: {st}");
    }
    assert_eq!(st["state_root"], root.as_str(), "{st}");
    // Another chain id has no blocks: a clear error.
    let err = fails(&["state", "--data-dir", d, "--chain-id", "7"]);
    assert!(err.contains("no blocks"), "{err}");
}

#[test]
fn devnet_writes_a_flamegraph() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("f.svg");
    let out = int(&[
        "devnet",
        "--data-dir",
        p(&dir.path().join("data")),
        "--flamegraph",
        p(&svg),
        "--devices",
        "50",
        "--duration",
        "2",
    ]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "devnet --flamegraph failed:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    let body = std::fs::read_to_string(&svg).unwrap_or_else(|e| panic!("no {svg:?} ({e}):\n{err}"));
    assert!(!body.is_empty(), "empty flamegraph");
    assert!(
        body.contains("<svg"),
        "not an SVG: {}",
        &body[..body.len().min(200)]
    );
    assert!(body.trim_end().ends_with("</svg>"), "truncated SVG");
    assert!(err.contains("flamegraph written"), "{err}");
}

#[test]
fn devnet_with_long_blocks_ends_at_its_duration() {
    // Blocks every 50 minutes: every simulator sleeps half a block between
    // steps, and must still wake when the devnet stops after 2 s (a hang
    // here is the bug: the deadline is a minute, the sleep 25).
    let dir = tempfile::tempdir().unwrap();
    let d = p(dir.path());
    let args = [
        "devnet",
        "--data-dir",
        d,
        "--devices",
        "20",
        "--duration",
        "2",
        "--block-ms",
        "3000000",
        "--json",
    ];
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let file = |path: &std::path::Path| std::fs::File::create(path).expect("output file");
    let mut child = KillOnDrop(
        int_command(&args)
            .stdout(file(&out))
            .stderr(file(&err))
            .spawn()
            .expect("starting int devnet"),
    );
    let status = wait_exit(&mut child.0, "a devnet with 50-minute blocks");
    let err = std::fs::read_to_string(&err).unwrap_or_default();
    assert!(status.success(), "devnet failed:\n{err}");
    let r = json(&std::fs::read_to_string(&out).unwrap_or_default());
    assert_eq!(r["value_conserved"], true, "{r}");
}

#[test]
fn devnet_rejects_bad_options() {
    let dir = tempfile::tempdir().unwrap();
    let d = p(dir.path());
    let err = fails(&[
        "devnet",
        "--data-dir",
        d,
        "--devices",
        "0",
        "--duration",
        "1",
    ]);
    assert!(err.contains("--devices"), "{err}");
    let err = fails(&[
        "devnet",
        "--data-dir",
        d,
        "--block-ms",
        "0",
        "--duration",
        "1",
    ]);
    assert!(err.contains("--block-ms"), "{err}");
    // Hostile devnet.json files: each an error that names what is wrong,
    // no panic, and no attempt to derive a trillion keys.
    let good_seed = "00".repeat(32);
    let cases = [
        ("{ not json".to_string(), "devnet.json"),
        (
            r#"{"chain_id":1,"devices":5,"fleet_seed":"zz","validator_seed":"00"}"#.to_string(),
            "seed",
        ),
        (
            r#"{"chain_id":1,"devices":1000000000000,"fleet_seed":"00","validator_seed":"00"}"#
                .to_string(),
            "devices",
        ),
        (
            format!(
                r#"{{"chain_id":1,"devices":5,"fleet_seed":"{good_seed}","validator_seed":"{good_seed}","users":4,"bpk_seed":"zz"}}"#
            ),
            "bpk_seed",
        ),
        (
            format!(
                r#"{{"chain_id":1,"devices":5,"fleet_seed":"{good_seed}","validator_seed":"{good_seed}","users":1000000000,"bpk_seed":"{good_seed}"}}"#
            ),
            "users",
        ),
    ];
    for (file, needle) in &cases {
        std::fs::write(dir.path().join("devnet.json"), file).unwrap();
        let err = fails(&["devnet", "--data-dir", d, "--duration", "1"]);
        assert!(err.contains(needle), "{file}: {err}");
    }
    let err = fails(&[
        "devnet",
        "--data-dir",
        d,
        "--devices",
        "10000001",
        "--duration",
        "1",
    ]);
    assert!(err.contains("--devices"), "{err}");
}

/// `r[key]` is a number above zero.
fn assert_positive(r: &serde_json::Value, key: &str) {
    let v = r[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {r}"));
    assert!(v > 0.0, "{key} = {v}");
}

/// `int bench tps` at toy sizes: it runs all three measurements, prints one
/// JSON report, and writes the report and the plot where asked.
#[test]
fn bench_tps_smoke() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let stdout = ok(&[
        "bench",
        "tps",
        "--accounts",
        "2000",
        "--sigs",
        "128",
        "--devices",
        "32",
        "--ingress-batch",
        "64",
        "--block-txs",
        "100",
        "--blocks",
        "2",
        "--sizes",
        "64",
        "--json",
        "--out",
        p(&out),
    ]);
    let r = json(&stdout);
    for key in [
        "raw_verify_sigs_per_s",
        "raw_checked_verify_sigs_per_s",
        "batch_verify_sigs_per_s",
        "batch_verify_blst_sigs_per_s",
        "e2e_tx_per_s",
        "exec_commit_tx_per_s",
    ] {
        assert_positive(&r, key);
    }
    assert_eq!(r["e2e"]["ok"], 128, "every signed transfer succeeds: {r}");
    assert_eq!(
        r["exec"]["ok"], 200,
        "every verified transfer succeeds: {r}"
    );
    let svg = std::fs::read_to_string(out.join("tps.svg")).unwrap();
    assert!(
        svg.contains("<svg") && svg.trim_end().ends_with("</svg>"),
        "plot is a whole SVG document"
    );
    let written = json(&std::fs::read_to_string(out.join("tps.json")).unwrap());
    assert_eq!(written["sigs"], 128);
}

/// `int bench scale` at toy sizes: a row per population with the keys the
/// issue names, the report and the plot written, and a population this
/// machine cannot hold skipped with a reason instead of tried.
#[test]
fn bench_scale_smoke() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let stdout = ok(&[
        "bench",
        "scale",
        "--accounts",
        "3000,1e3,1e12",
        "--blocks",
        "2",
        "--block-txs",
        "200",
        "--json",
        "--out",
        p(&out),
    ]);
    let r = json(&stdout);
    let rows = r["populations"].as_array().expect("populations");
    let accounts: Vec<u64> = rows
        .iter()
        .map(|row| row["accounts"].as_u64().unwrap())
        .collect();
    assert_eq!(accounts, [1000, 3000], "ascending, one row each: {r}");
    for row in rows {
        for key in [
            "exec_commit_tx_per_s",
            "block_ms",
            "updates_per_s",
            "bytes_written_per_block",
            "peak_rss_mib",
            "disk_bytes_per_account",
            "recovery_s",
            "checkpoint_s",
            "restart_s",
            "tx_lookup_us",
        ] {
            assert_positive(row, key);
        }
    }
    let skipped = r["skipped"].as_array().expect("skipped");
    assert_eq!(skipped.len(), 1, "{r}");
    assert!(
        skipped[0]
            .as_str()
            .unwrap()
            .starts_with("1000000000000 accounts"),
        "{r}"
    );
    let svg = std::fs::read_to_string(out.join("scale.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.trim_end().ends_with("</svg>"));
    let written = json(&std::fs::read_to_string(out.join("scale.json")).unwrap());
    assert_eq!(written["populations"], r["populations"]);
    // Nonsense is refused with a message, not a panic.
    let args = ["bench", "scale", "--accounts", "lots"];
    let bad = int(&args);
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("not a number"),
        "{}",
        text(&bad.stderr)
    );
}

/// `int bench tps --workload market` at toy sizes: transfer blocks and
/// market blocks (price tag, auction bids across a window's close, CPP
/// orders and confirmations, metering channels and claims with receipts the
/// buyers signed) on the same chain; the signature phases are skipped.
/// Every market operation is built to succeed, so `ok == total` (the
/// harness itself fails below 99%); a failure here means the harness and
/// the market's rules disagree. No wall-clock figure is checked beyond
/// being positive.
#[test]
fn bench_tps_market_smoke() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let stdout = ok(&[
        "bench",
        "tps",
        "--workload",
        "market",
        "--accounts",
        "200",
        "--block-txs",
        "60",
        "--blocks",
        "4",
        "--sizes",
        "64",
        "--json",
        "--out",
        p(&out),
    ]);
    let r = json(&stdout);
    assert_eq!(r["workload"], "market", "{r}");
    for key in [
        "exec_commit_tx_per_s",
        "exec_commit_market_ops_per_s",
        "exec_commit_market_vs_transfers",
    ] {
        assert_positive(&r, key);
    }
    for key in ["e2e", "e2e_tx_per_s", "raw_verify_sigs_per_s", "sigs"] {
        assert!(r.get(key).is_none(), "{key} under --workload market: {r}");
    }
    assert_eq!(r["exec"]["ok"], 240, "every transfer succeeds: {r}");
    let m = &r["market"];
    assert_eq!(m["total"], 240, "{m}");
    assert_eq!(m["ok"], m["total"], "every market operation succeeds: {m}");
    let ops = m["ops"].as_array().expect("ops");
    let names: Vec<&str> = ops.iter().map(|o| o["op"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "Buy",
            "PlaceBid",
            "Order",
            "ConfirmUse",
            "OpenChannel",
            "ClaimChannel"
        ]
    );
    for o in ops {
        assert!(o["total"].as_u64().unwrap() >= 10, "{o}");
        assert_eq!(o["ok"], o["total"], "{o}");
    }
    assert_eq!(m["receipts"], 40, "{m}");
    assert!(m["auction_closes"].as_u64().unwrap() > 0, "{m}");
    let written = json(&std::fs::read_to_string(out.join("tps.json")).unwrap());
    assert_eq!(written["market"]["ok"], 240);
    let svg = std::fs::read_to_string(out.join("tps.svg")).unwrap();
    assert!(
        svg.contains("market operations/s"),
        "the plot marks the market"
    );

    // Too small for a block with one of each operation.
    let err = fails(&[
        "bench",
        "tps",
        "--workload",
        "market",
        "--block-txs",
        "5",
        "--out",
        p(&out),
    ]);
    assert!(err.contains("--block-txs"), "{err}");
}
