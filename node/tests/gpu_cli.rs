//! End-to-end tests of `int gpu` and `int bench gpu` through the real binary.
//!
//! Without an adapter these say SKIPPED loudly, unless `INT_REQUIRE_GPU=1`
//! (CI, where lavapipe is installed) makes a missing adapter a failure.

mod common;

use common::{int, text};

fn require_gpu() -> bool {
    std::env::var("INT_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

/// Runs an `int gpu … --json` command: its JSON when it found an adapter
/// (exit 0), `None` after a loud SKIPPED when there is none (exit 1, an
/// error unless `INT_REQUIRE_GPU=1` forbids it); any other outcome fails.
fn gpu_json(args: &[&str]) -> Option<serde_json::Value> {
    let out = int(args);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!stderr.contains("panicked"), "{stderr}");
    let v: serde_json::Value = match serde_json::from_str(stdout.trim()) {
        Ok(v) => v,
        Err(e) => panic!(
            "`int {}` printed no JSON ({e}):\n{stdout}\n{stderr}",
            args.join(" ")
        ),
    };
    match out.status.code() {
        Some(0) => Some(v),
        Some(1) => {
            assert!(v["adapter"].is_null(), "{v}");
            assert!(stderr.contains("no GPU adapter"), "{stderr}");
            assert!(!require_gpu(), "INT_REQUIRE_GPU=1 but no adapter: {stderr}");
            eprintln!(
                "\n*** SKIPPED: no adapter for `int {}` ***\n",
                args.join(" ")
            );
            None
        }
        other => panic!("`int {}` exited {other:?}:\n{stderr}", args.join(" ")),
    }
}

#[test]
fn gpu_info_reports_the_adapter() {
    for gl in [false, true] {
        let mut args = vec!["gpu", "info", "--json"];
        if gl {
            args.push("--gl");
        }
        if let Some(v) = gpu_json(&args) {
            assert!(v["adapter"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
            let want = if gl { "Gl" } else { "Vulkan" };
            if cfg!(target_os = "linux") {
                assert_eq!(v["backend"], want, "{v}");
            }
            assert!(
                v["max_storage_binding_bytes"]
                    .as_u64()
                    .is_some_and(|b| b > 0)
            );
            let int64 = v["shader_int64"].as_bool();
            assert!(int64.is_some(), "{v}");
            assert_eq!(
                v["mul_path"],
                if int64 == Some(true) {
                    "int64"
                } else {
                    "portable-u32"
                }
            );
        }
    }
}

/// Whether `int gpu info` finds an adapter (skips loudly when not, fails
/// when `INT_REQUIRE_GPU=1`).
fn have_gpu() -> bool {
    let ok = int(&["gpu", "info"]).status.success();
    assert!(ok || !require_gpu(), "INT_REQUIRE_GPU=1 but no adapter");
    if !ok {
        eprintln!("\n*** SKIPPED: no GPU adapter ***\n");
    }
    ok
}

#[test]
fn bench_gpu_smoke() {
    if !have_gpu() {
        return;
    }
    let (stdout, _) = common::run(
        &[
            "bench",
            "gpu",
            "--min-log",
            "3",
            "--max-log",
            "4",
            "--reps",
            "1",
            "--json",
        ],
        0,
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON report");
    assert!(v["adapter"].as_str().is_some_and(|s| !s.is_empty()));
    let rows = v["rows"].as_array().expect("rows");
    for kernel in [
        "scale_each_bn254_g1",
        "scale_each_bls12_381_g1",
        "msm_bn254_g1",
        "msm_bls12_381_g1",
        "hash_to_g1_bls12_381",
        "poseidon_t3",
    ] {
        let sizes: Vec<u64> = rows
            .iter()
            .filter(|r| r["kernel"] == kernel)
            .filter_map(|r| r["n"].as_u64())
            .collect();
        assert_eq!(sizes, vec![8, 16], "{kernel}: {v}");
    }
    // A row exists only when GPU and CPU agreed (else the run exits 1).
    assert!(rows.iter().all(|r| r["gpu_ms"].as_f64().is_some()));
    // Bad options are a clear error, not a panic.
    common::run(&["bench", "gpu", "--min-log", "5", "--max-log", "4"], 1);
}

#[test]
fn devnet_verifies_on_the_gpu() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = common::p(dir.path()).to_string();
    let devnet = |accel: &str, code: i32| {
        let args = [
            "devnet",
            "--data-dir",
            &data,
            "--devices",
            "20",
            "--duration",
            "3",
            "--users",
            "0",
            "--json",
            "--accel",
            accel,
        ];
        common::run(&args, code)
    };
    let (_, stderr) = devnet("tpu", 1);
    assert!(stderr.contains("unknown accelerator"), "{stderr}");
    if !have_gpu() {
        return;
    }
    let (stdout, _) = devnet("gpu", 0);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON summary");
    assert!(
        v["accel"].as_str().is_some_and(|s| s.starts_with("gpu: ")),
        "{v}"
    );
    assert!(v["txs_ok"].as_u64().is_some_and(|n| n > 0), "{v}");
    assert_eq!(v["rejected"], 0, "{v}");
    // The signatures were checked on the GPU, not by a silent CPU fallback.
    assert!(v["gpu_batches"].as_u64().is_some_and(|n| n > 0), "{v}");
    assert_eq!(v["gpu_fallbacks"], 0, "{v}");
}

#[test]
fn gpu_calibrate_reports_rows_and_thresholds() {
    // Bad options are a clear error before any adapter is looked for.
    let (_, stderr) = common::run(&["gpu", "calibrate", "--min-log", "5", "--max-log", "4"], 1);
    assert!(stderr.contains("min-log ≤ max-log"), "{stderr}");
    let args = [
        "gpu",
        "calibrate",
        "--json",
        "--min-log",
        "3",
        "--max-log",
        "5",
        "--reps",
        "1",
    ];
    let Some(v) = gpu_json(&args) else {
        return;
    };
    assert!(v["adapter"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
    assert!(v["software"].as_bool().is_some(), "{v}");
    let kinds = v["kinds"].as_array().expect("kinds");
    let works: Vec<&str> = kinds.iter().filter_map(|k| k["work"].as_str()).collect();
    assert_eq!(
        works,
        ["msm", "scale_each", "hash_to_g1", "poseidon"],
        "{v}"
    );
    for k in kinds {
        // The default budget is far above these sizes: every one is measured.
        let sizes: Vec<u64> = k["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .filter_map(|r| r["n"].as_u64())
            .collect();
        assert_eq!(sizes, [8, 16, 32], "{k}");
        for r in k["rows"].as_array().expect("rows") {
            let (g, c) = (r["gpu_ms"].as_f64(), r["cpu_ms"].as_f64());
            assert!(
                g.is_some_and(|g| g > 0.0) && c.is_some_and(|c| c > 0.0),
                "{r}"
            );
            assert_eq!(
                r["gpu_faster"].as_bool(),
                g.zip(c).map(|(g, c)| g < c),
                "{r}"
            );
        }
        // The threshold is a measured size or null (never), and the same in
        // the summary.
        let t = &k["threshold"];
        assert!(
            t.is_null() || sizes.contains(&t.as_u64().unwrap_or(0)),
            "{k}"
        );
        assert_eq!(
            &v["thresholds"][k["work"].as_str().expect("work")],
            t,
            "{v}"
        );
        // A threshold means the GPU won there and at every larger size.
        if let Some(t) = t.as_u64() {
            for r in k["rows"].as_array().expect("rows") {
                if r["n"].as_u64().is_some_and(|n| n >= t) {
                    assert_eq!(r["gpu_faster"], true, "{k}");
                }
            }
        }
    }
}
