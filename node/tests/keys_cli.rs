//! `int keys` as an operator meets it: keystores created, listed, exported
//! and imported with the password from the environment; clear errors for a
//! wrong password, a malformed file and no password.
//!
//! Runs the real binary.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::{BIN, p, text};
use int_engine::crypto::bls::SecretKey;
use serde_json::Value;

const PASSWORD: &str = "correct horse battery staple";

/// Runs `int ARGS` with `password` in INT_KEYSTORE_PASSWORD (none: unset).
fn int_pw(args: &[&str], password: Option<&str>) -> Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .env_remove("INT_KEYSTORE_PASSWORD")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    if let Some(pw) = password {
        c.env("INT_KEYSTORE_PASSWORD", pw);
    }
    c.output().expect("running int")
}

/// Runs `int ARGS` with the test's password; expects exit `code` and no
/// panic; (stdout, stderr).
fn run_pw(args: &[&str], password: Option<&str>, code: i32) -> (String, String) {
    let out = int_pw(args, password);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(code),
        "`int {}`:\nstdout:\n{stdout}\nstderr:\n{stderr}",
        args.join(" ")
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    (stdout, stderr)
}

fn ok(args: &[&str]) -> String {
    run_pw(args, Some(PASSWORD), 0).0
}

fn json_of(s: &str) -> Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[test]
fn keys_new_list_export_import() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let d = p(&dir);

    let alice = json_of(&ok(&[
        "keys", "new", "--dir", d, "--name", "alice", "--json",
    ]));
    let alice_id = alice["account_id"].as_str().unwrap().to_string();
    assert_eq!(alice_id.len(), 64, "{alice}");
    assert_eq!(alice["kdf"], "scrypt");
    let file = dir.join("alice.json");
    assert_eq!(alice["file"], file.display().to_string());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "keystore mode {mode:o}");
    }
    // An EIP-2335 file: version 4, scrypt at the EIP's cost, our 96-byte key.
    let ks = json_of(&std::fs::read_to_string(&file).unwrap());
    assert_eq!(ks["version"], 4);
    assert_eq!(ks["path"], "");
    assert_eq!(ks["crypto"]["kdf"]["params"]["n"], 262144);
    assert_eq!(ks["crypto"]["cipher"]["function"], "aes-128-ctr");
    assert_eq!(ks["pubkey"].as_str().unwrap().len(), 192);

    // Never overwritten.
    let before = std::fs::read(&file).unwrap();
    let (_, err) = run_pw(
        &["keys", "new", "--dir", d, "--name", "alice"],
        Some(PASSWORD),
        1,
    );
    assert!(err.contains("never overwritten"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), before);

    // Plain output names the account and the file.
    let out = ok(&[
        "keys", "new", "--dir", d, "--name", "bob", "--kdf", "pbkdf2",
    ]);
    assert!(out.contains("account_id"), "{out}");
    assert!(out.contains("bob.json"), "{out}");

    // Import: a known secret from a file gives that key's account.
    let sk = SecretKey::from_seed(&[7u8; 32]);
    let secret_file = tmp.path().join("secret.hex");
    std::fs::write(&secret_file, format!("{}\n", hex::encode(sk.to_bytes()))).unwrap();
    let imp = json_of(&ok(&[
        "keys",
        "import",
        "--dir",
        d,
        "--name",
        "carol",
        "--kdf",
        "pbkdf2",
        "--json",
        p(&secret_file),
    ]));
    let carol_id = hex::encode(sk.public_key().account_id());
    assert_eq!(imp["account_id"], carol_id);
    // And from stdin.
    let mut child = Command::new(BIN)
        .args([
            "keys", "import", "--dir", d, "--name", "dave", "--kdf", "pbkdf2", "--json",
        ])
        .env("INT_KEYSTORE_PASSWORD", PASSWORD)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(hex::encode(sk.to_bytes()).as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(json_of(&text(&out.stdout))["account_id"], carol_id);
    // Not a secret key.
    std::fs::write(&secret_file, "00".repeat(32)).unwrap();
    let (_, err) = run_pw(
        &[
            "keys",
            "import",
            "--dir",
            d,
            "--name",
            "zero",
            p(&secret_file),
        ],
        Some(PASSWORD),
        1,
    );
    assert!(err.contains("not a BLS secret key"), "{err}");

    // A malformed file and an Ethereum-style (48-byte pubkey) entry do not
    // stop the listing; they say what is wrong with them.
    std::fs::write(dir.join("broken.json"), "{not json").unwrap();
    let list = json_of(&ok(&["keys", "list", "--dir", d, "--json"]));
    let rows = list.as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alice", "bob", "broken", "carol", "dave"], "{list}");
    assert_eq!(rows[0]["account_id"], alice_id.as_str());
    assert_eq!(rows[0]["public_key"].as_str().unwrap().len(), 192);
    assert_eq!(rows[1]["kdf"], "pbkdf2");
    assert!(
        rows[2]["error"]
            .as_str()
            .unwrap()
            .contains("not an EIP-2335 keystore"),
        "{list}"
    );
    assert_eq!(rows[3]["account_id"], carol_id.as_str());
    let plain = ok(&["keys", "list", "--dir", d]);
    assert!(plain.contains(&alice_id), "{plain}");
    assert!(
        plain.contains("broken") && plain.contains("unreadable"),
        "{plain}"
    );

    // Export prints the secret; its account is alice's.
    let (out, err) = run_pw(&["keys", "export", "alice", "--dir", d], Some(PASSWORD), 0);
    assert!(err.contains("warning"), "{err}");
    let secret: [u8; 32] = hex::decode(out.trim()).unwrap().try_into().unwrap();
    let sk_alice = SecretKey::from_bytes(&secret).unwrap();
    assert_eq!(hex::encode(sk_alice.public_key().account_id()), alice_id);
    let (out, _) = run_pw(&["keys", "export", "carol", "--dir", d], Some(PASSWORD), 0);
    assert_eq!(out.trim(), hex::encode(sk.to_bytes()));

    // Clear errors, no secret printed.
    let (out, err) = run_pw(&["keys", "export", "bob", "--dir", d], Some("nope"), 1);
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("wrong password: checksum mismatch"), "{err}");
    let (_, err) = run_pw(&["keys", "export", "broken", "--dir", d], Some(PASSWORD), 1);
    assert!(err.contains("not an EIP-2335 keystore"), "{err}");
    let (_, err) = run_pw(&["keys", "export", "ghost", "--dir", d], Some(PASSWORD), 1);
    assert!(err.contains("does not exist"), "{err}");
    let (_, err) = run_pw(
        &["keys", "export", "../alice", "--dir", d],
        Some(PASSWORD),
        1,
    );
    assert!(err.contains("key name"), "{err}");
    let (_, err) = run_pw(&["keys", "export", "alice", "--dir", d], None, 1);
    assert!(err.contains("INT_KEYSTORE_PASSWORD"), "{err}");
    let (_, err) = run_pw(&["keys", "new", "--dir", d, "--name", "e"], Some(""), 1);
    assert!(err.contains("empty password"), "{err}");
}
