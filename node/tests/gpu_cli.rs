//! End-to-end tests of `int gpu` and `int bench gpu` through the real binary.
//!
//! Without an adapter these say SKIPPED loudly, unless `INT_REQUIRE_GPU=1`
//! (CI, where lavapipe is installed) makes a missing adapter a failure.

mod common;

use common::{int, text};

fn require_gpu() -> bool {
    std::env::var("INT_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

#[test]
fn gpu_info_reports_the_adapter() {
    for gl in [false, true] {
        let mut args = vec!["gpu", "info", "--json"];
        if gl {
            args.push("--gl");
        }
        let out = int(&args);
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
            Some(0) => {
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
            Some(1) => {
                assert!(v["adapter"].is_null(), "{v}");
                assert!(stderr.contains("no GPU adapter"), "{stderr}");
                assert!(!require_gpu(), "INT_REQUIRE_GPU=1 but no adapter: {stderr}");
                eprintln!("\n*** SKIPPED: no adapter (gl: {gl}) ***\n");
            }
            other => panic!("`int {}` exited {other:?}:\n{stderr}", args.join(" ")),
        }
    }
}
