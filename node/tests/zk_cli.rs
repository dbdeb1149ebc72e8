//! `int zk` as a circuit developer meets it: setup, prove, verify (OK,
//! INVALID, errors), snarkjs export, and — where snarkjs is installed —
//! `snarkjs groth16 verify` on our files.
//!
//! Runs the real binary. Exit codes: 0 OK, 1 INVALID, 2 error; a hostile file
//! must give a clear error, never a panic.
//!
//! snarkjs is found through `$SNARKJS` (a path to its CLI, e.g.
//! `node_modules/.bin/snarkjs`) or `snarkjs` on `PATH`; without it the
//! snarkjs test prints a SKIPPED line and passes.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{p as path_arg, run, text};

use int_zk::Fr;
use int_zk::circuit::identity_leaf;

/// Runs `int ARGS`, expects exit 2 with an `error:` line that mentions
/// `needle`.
fn fails(args: &[&str], needle: &str) {
    let (_, stderr) = run(args, 2);
    assert!(
        stderr.contains("error:") && stderr.contains(needle),
        "`int {}`: expected an error mentioning {needle:?}, got:\n{stderr}",
        args.join(" ")
    );
}

/// A D = K = 2 setup with `--seed` and one proof of a 3-leaf tree.
struct Fixture {
    _dir: tempfile::TempDir,
    keys: PathBuf,
    proofs: PathBuf,
    root: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let keys = root.join("keys");
        let proofs = root.join("proofs");

        let (stdout, stderr) = run(
            &[
                "zk",
                "setup",
                "--out",
                path_arg(&keys),
                "--dims",
                "2",
                "--clusters",
                "2",
                "--seed",
                "42",
            ],
            0,
        );
        assert!(
            stderr.contains("WARNING") && stderr.contains("multi-party ceremony"),
            "{stderr}"
        );
        assert!(stderr.contains("[1/3]"), "progress on stderr: {stderr}");
        for f in ["proving.key", "verifying.key", "verification_key.json"] {
            assert!(keys.join(f).is_file(), "{f}");
            assert!(stdout.contains(f), "{stdout}");
        }

        let secret = Fr::from(123_456_789u64);
        let leaf = identity_leaf(secret, &[100, 200]).unwrap();
        let input = serde_json::json!({
            "secret": "123456789",
            "behaviour": [100, 200],
            "centroids": [[0, 0], [120, 210]],
            "epoch": 7,
            "scope": "0xabc",
            "leaves": ["5", leaf.to_string(), "0x77"],
            "leaf_index": 1,
        });
        std::fs::write(root.join("input.json"), input.to_string()).unwrap();
        let (stdout, _) = run(
            &[
                "zk",
                "prove",
                "--pk",
                path_arg(&keys.join("proving.key")),
                "--input",
                path_arg(&root.join("input.json")),
                "--out",
                path_arg(&proofs),
            ],
            0,
        );
        assert!(stdout.contains("cluster             1"), "{stdout}");
        Self {
            _dir: dir,
            keys,
            proofs,
            root,
        }
    }

    fn key(&self, f: &str) -> String {
        path_arg(&self.keys.join(f)).to_owned()
    }

    fn proof(&self, f: &str) -> String {
        path_arg(&self.proofs.join(f)).to_owned()
    }

    /// `int zk verify` with these files; returns stdout.
    fn verify(&self, vk: &str, proof: &str, public: &str, code: i32) -> String {
        run(
            &[
                "zk", "verify", "--vk", vk, "--proof", proof, "--public", public,
            ],
            code,
        )
        .0
    }

    /// Writes `bytes` to a new file in the fixture's directory.
    fn file(&self, name: &str, bytes: impl AsRef<[u8]>) -> String {
        let p = self.root.join(name);
        std::fs::write(&p, bytes).unwrap();
        path_arg(&p).to_owned()
    }
}

#[test]
fn setup_prove_verify_ok_and_tampered_is_invalid() {
    let f = Fixture::new();
    let public = f.proof("public.json");
    // Every pairing of key form and proof form.
    for vk in [f.key("verifying.key"), f.key("verification_key.json")] {
        for proof in [f.proof("proof.json"), f.proof("proof.bin")] {
            assert_eq!(
                f.verify(&vk, &proof, &public, 0).trim(),
                "OK",
                "{vk} {proof}"
            );
        }
    }

    // public.json: [root, epoch, scope, nullifier, cluster, commitment].
    let signals: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(&public).unwrap()).unwrap();
    assert_eq!(signals.len(), 6);
    assert_eq!(signals[1], "7");
    assert_eq!(signals[2], "2748");
    assert_eq!(signals[4], "1");
    for i in 0..signals.len() {
        let mut tampered = signals.clone();
        tampered[i] = if tampered[i] == "2" {
            "3".into()
        } else {
            "2".into()
        };
        let path = f.file("tampered.json", serde_json::to_string(&tampered).unwrap());
        let out = f.verify(&f.key("verifying.key"), &f.proof("proof.json"), &path, 1);
        assert_eq!(out.trim(), "INVALID", "signal {i}");
    }

    // `int zk export` gives the same snarkjs files as setup and prove wrote.
    let (vk_json, _) = run(&["zk", "export", "--vk", &f.key("verifying.key")], 0);
    assert_eq!(
        vk_json,
        std::fs::read_to_string(f.key("verification_key.json")).unwrap()
    );
    let out = f.root.join("exported.json");
    run(
        &[
            "zk",
            "export",
            "--proof",
            &f.proof("proof.bin"),
            "--format",
            "snarkjs",
            "--out",
            path_arg(&out),
        ],
        0,
    );
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        std::fs::read_to_string(f.proof("proof.json")).unwrap()
    );

    // Setup does not overwrite keys unless told to.
    fails(
        &[
            "zk",
            "setup",
            "--out",
            path_arg(&f.keys),
            "--dims",
            "2",
            "--clusters",
            "2",
        ],
        "--force",
    );
}

#[test]
fn hostile_files_are_clear_errors() {
    let f = Fixture::new();
    let vk = f.key("verifying.key");
    let vk_json = f.key("verification_key.json");
    let proof = f.proof("proof.json");
    let public = f.proof("public.json");
    // `int zk verify` with these files must exit 2 naming `needle`.
    let verify_fails = |vk: &str, proof: &str, public: &str, needle: &str| {
        fails(
            &[
                "zk", "verify", "--vk", vk, "--proof", proof, "--public", public,
            ],
            needle,
        )
    };

    // Malformed proof.json: not JSON, wrong shape, point off the curve.
    let bad = f.file("bad.json", "{\"pi_a\": [");
    verify_fails(&vk, &bad, &public, "bad.json");
    let bad = f.file("shape.json", "{\"pi_a\": 5}");
    verify_fails(&vk, &bad, &public, "shape.json");
    let mut p: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&proof).unwrap()).unwrap();
    p["pi_a"][1] = "5".into();
    let bad = f.file("off_curve.json", p.to_string());
    verify_fails(&vk, &bad, &public, "not on the curve");

    // Truncated and garbage binary keys and proofs.
    let vk_bytes = std::fs::read(&vk).unwrap();
    let short = f.file("short.key", &vk_bytes[..vk_bytes.len() / 2]);
    verify_fails(&short, &proof, &public, "short.key");
    let empty = f.file("empty.key", b"");
    verify_fails(&empty, &proof, &public, "empty.key");
    let pk_bytes = std::fs::read(f.key("proving.key")).unwrap();
    let short_pk = f.file("short_pk.key", &pk_bytes[..pk_bytes.len() - 1]);
    let input = path_arg(&f.root.join("input.json")).to_owned();
    let out = path_arg(&f.root.join("out")).to_owned();
    fails(
        &[
            "zk", "prove", "--pk", &short_pk, "--input", &input, "--out", &out,
        ],
        "proving key",
    );
    let garbage = f.file("garbage.bin", [0xffu8; 128]);
    verify_fails(&vk, &garbage, &public, "garbage.bin");

    // Public signals: wrong count, not numbers, above the modulus.
    let bad = f.file("five.json", "[\"1\", \"2\", \"3\", \"4\", \"5\"]");
    verify_fails(&vk, &proof, &bad, "6 signals");
    let bad = f.file("words.json", "[\"a\", \"2\", \"3\", \"4\", \"5\", \"6\"]");
    verify_fails(&vk, &proof, &bad, "field element");
    let modulus = "21888242871839275222246405745257275088548364400416034343698204186575808495617";
    let bad = f.file(
        "big.json",
        format!("[\"{modulus}\", \"2\", \"3\", \"4\", \"5\", \"6\"]"),
    );
    verify_fails(&vk, &proof, &bad, "modulus");

    // A snarkjs key for another number of public inputs.
    let mut k: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&vk_json).unwrap()).unwrap();
    k["IC"].as_array_mut().unwrap().pop();
    k["nPublic"] = 5.into();
    let bad = f.file("vk5.json", k.to_string());
    verify_fails(&bad, &proof, &public, "public inputs");

    // Missing files.
    fails(
        &[
            "zk",
            "verify",
            "--vk",
            "/nonexistent/vk",
            "--proof",
            &proof,
            "--public",
            &public,
        ],
        "/nonexistent/vk",
    );

    // Prover inputs: the leaf at leaf_index is not the user's, D out of range.
    let mut i: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&input).unwrap()).unwrap();
    i["leaf_index"] = 0.into();
    let bad = f.file("wrong_leaf.json", i.to_string());
    let pk = f.key("proving.key");
    fails(
        &["zk", "prove", "--pk", &pk, "--input", &bad, "--out", &out],
        "leaves[0]",
    );
    i["leaf_index"] = 9.into();
    let bad = f.file("far_leaf.json", i.to_string());
    fails(
        &["zk", "prove", "--pk", &pk, "--input", &bad, "--out", &out],
        "leaf_index",
    );
    i["leaf_index"] = 1.into();
    i["behaviour"] = serde_json::json!([1, 2, 3]);
    let bad = f.file("dims.json", i.to_string());
    fails(
        &["zk", "prove", "--pk", &pk, "--input", &bad, "--out", &out],
        "expected length 2, got 3",
    );
    i["behaviour"] = serde_json::json!([1, 70000]);
    let bad = f.file("coord.json", i.to_string());
    fails(
        &["zk", "prove", "--pk", &pk, "--input", &bad, "--out", &out],
        "coord.json",
    );
    // D = 3 against a D = 2 key (the leaf recomputed for the new vector).
    let b3 = [1u16, 2, 3];
    let leaf = identity_leaf(Fr::from(123_456_789u64), &b3).unwrap();
    i["behaviour"] = serde_json::json!(b3);
    i["centroids"] = serde_json::json!([[0, 0, 0], [9, 9, 9]]);
    i["leaves"][1] = leaf.to_string().into();
    let bad = f.file("d3.json", i.to_string());
    fails(
        &["zk", "prove", "--pk", &pk, "--input", &bad, "--out", &out],
        "key does not match",
    );

    // Parameters out of range.
    fails(&["zk", "setup", "--out", &out, "--dims", "13"], "D = 13");
}

#[test]
fn setup_without_seed_has_no_devnet_warning() {
    let dir = tempfile::tempdir().unwrap();
    let (_, stderr) = run(
        &[
            "zk",
            "setup",
            "--out",
            path_arg(dir.path()),
            "--dims",
            "1",
            "--clusters",
            "1",
        ],
        0,
    );
    assert!(!stderr.contains("WARNING"), "{stderr}");
}

/// The snarkjs CLI: `$SNARKJS`, else `snarkjs` on PATH.
fn snarkjs() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SNARKJS").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("snarkjs"))
            .find(|p| p.is_file())
    })
}

#[test]
fn snarkjs_verifies_our_proofs() {
    let Some(snarkjs) = snarkjs() else {
        // CI installs snarkjs through scripts/test: there the interop check
        // must run, not be skipped.
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "snarkjs is missing under CI=true: scripts/test installs it"
        );
        eprintln!(
            "\n\
             ********************************************************************\n\
             SKIPPED snarkjs_verifies_our_proofs: snarkjs not found (set SNARKJS\n\
             to its CLI, e.g. node_modules/.bin/snarkjs, or put it on PATH)\n\
             ********************************************************************\n"
        );
        return;
    };
    let f = Fixture::new();
    let sj = |public: &str| {
        let out = Command::new(&snarkjs)
            .args(["groth16", "verify", &f.key("verification_key.json"), public])
            .arg(f.proof("proof.json"))
            .env("NO_COLOR", "1")
            .output()
            .expect("running snarkjs");
        (out.status.success(), text(&out.stdout) + &text(&out.stderr))
    };
    let (ok, log) = sj(&f.proof("public.json"));
    assert!(
        ok && log.contains("OK"),
        "snarkjs rejected our proof:\n{log}"
    );

    let mut signals: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(f.proof("public.json")).unwrap()).unwrap();
    signals[3] = "1".into();
    let tampered = f.file("tampered.json", serde_json::to_string(&signals).unwrap());
    let (ok, log) = sj(&tampered);
    assert!(
        !ok && log.contains("Invalid proof"),
        "snarkjs accepted a tampered input:\n{log}"
    );
}

/// The last line of `int zk clusters`: `commitment: 0x...`.
fn printed_commitment(stdout: &str) -> String {
    let last = stdout.lines().last().unwrap_or_default();
    last.strip_prefix("commitment: ")
        .unwrap_or_else(|| panic!("last line is not `commitment: ...`:\n{stdout}"))
        .to_owned()
}

#[test]
fn synth_then_clusters_writes_a_file_that_loads() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.csv");
    let out = dir.path().join("centroids.json");
    let (stdout, _) = run(
        &[
            "zk",
            "synth",
            "--out",
            path_arg(&data),
            "--n",
            "1500",
            "--dims",
            "3",
            "--k",
            "4",
            "--seed",
            "5",
        ],
        0,
    );
    assert!(stdout.contains("1500 rows"), "{stdout}");
    let rows = int_zk::clusters::parse_csv(&std::fs::read(&data).unwrap()).unwrap();
    assert_eq!(rows, int_zk::clusters::synthetic(1500, 3, 4, 5).unwrap());

    let clusters = |out: &std::path::Path| {
        run(
            &[
                "zk",
                "clusters",
                "--data",
                path_arg(&data),
                "--k",
                "4",
                "--out",
                path_arg(out),
                "--seed",
                "9",
                "--max-iter",
                "100",
            ],
            0,
        )
        .0
    };
    let stdout = clusters(&out);
    let commitment = printed_commitment(&stdout);
    assert!(
        commitment.starts_with("0x") && commitment.len() == 66,
        "{stdout}"
    );
    for line in ["rows: 1500", "dims: 3", "k: 4", "sizes: ", "inertia: "] {
        assert!(stdout.contains(line), "{line:?} in {stdout}");
    }

    let bytes = std::fs::read(&out).unwrap();
    let loaded = int_zk::clusters::Clusters::from_json(&bytes).unwrap();
    assert_eq!(loaded.commitment_hex(), commitment);
    assert!(stdout.contains(&format!("commitment_decimal: {}", loaded.commitment())));
    assert_eq!((loaded.dims(), loaded.k(), loaded.seed()), (3, 4, 9));
    assert_eq!(loaded.sizes().iter().sum::<u64>(), 1500);
    let sizes: Vec<String> = loaded.sizes().iter().map(u64::to_string).collect();
    assert!(
        stdout.contains(&format!("sizes: {}", sizes.join(" "))),
        "{stdout}"
    );

    // Deterministic: the same run writes the same bytes.
    let again = dir.path().join("again.json");
    assert_eq!(printed_commitment(&clusters(&again)), commitment);
    assert_eq!(std::fs::read(&again).unwrap(), bytes);
}

#[test]
fn clusters_rejects_bad_input_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        path_arg(&p).to_owned()
    };
    let out = path_arg(&dir.path().join("c.json")).to_owned();
    let clusters = |data: &str, k: &str, needle: &str| {
        fails(
            &["zk", "clusters", "--data", data, "--k", k, "--out", &out],
            needle,
        );
    };
    let words = file("words.csv", b"a,b\n1,2\n3,x\n");
    clusters(
        &words,
        "1",
        "words.csv: CSV line 3: column 2: \"x\" is not a number",
    );
    let ragged = file("ragged.csv", b"1,2\n3,4\n5\n");
    clusters(&ragged, "1", "CSV line 3: 1 columns, but line 1 has 2");
    let empty = file("empty.csv", b"");
    clusters(&empty, "1", "no data rows");
    let nan = file("nan.csv", b"1,2\nnan,3\n");
    clusters(&nan, "1", "not a finite number");
    let wide = file("wide.csv", "1,".repeat(13).trim_end_matches(',').as_bytes());
    clusters(&wide, "1", "more than 12 columns");
    let two = file("two.csv", b"1,2\n3,4\n");
    clusters(&two, "3", "2 rows, fewer than K = 3");
    clusters(&two, "0", "--k 0");
    clusters(&two, "13", "--k 13");
    clusters("/nonexistent/data.csv", "1", "/nonexistent/data.csv");
    assert!(!dir.path().join("c.json").exists());

    fails(&["zk", "synth", "--out", &out, "--dims", "13"], "D = 13");
    fails(&["zk", "synth", "--out", &out, "--n", "0"], "not 0");
}
