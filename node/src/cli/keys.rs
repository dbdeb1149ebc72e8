//! `int keys`: an operator's BLS keys (validators, devices) as EIP-2335
//! keystore files ([`crate::keystore`]), one `DIR/NAME.json` per key,
//! written with mode 0600 and never overwritten.
//!
//! The password comes from `INT_KEYSTORE_PASSWORD` when it is set (scripts,
//! tests), else from a prompt on the terminal without echo (asked twice for
//! a new key). `int tx` opens keys through [`load`] and [`unlock`].

use std::fs::OpenOptions;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use int_engine::crypto::bls::{PublicKey, SecretKey};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::keystore::{Kdf, Keystore};

/// The environment variable that holds the keystore password.
pub const PASSWORD_ENV: &str = "INT_KEYSTORE_PASSWORD";
/// Where keystores live unless `--dir` says otherwise.
pub const DEFAULT_DIR: &str = "int-keys";
/// Longest key name.
const NAME_CHARS_MAX: usize = 64;
/// Largest keystore file read (they are about 1 KiB).
const FILE_BYTES_MAX: u64 = 64 << 10;

/// `int keys` subcommands.
#[derive(Subcommand)]
pub enum KeysCmd {
    /// Generate a key from OS randomness and write DIR/NAME.json; prints
    /// the account id and the file.
    New {
        #[command(flatten)]
        new: NewKeyArgs,
    },
    /// Write a keystore for an existing secret key: 64 hex digits (the
    /// 32-byte big-endian scalar, as `int keys export` prints it) read
    /// from FILE, or from stdin without FILE or with `-`.
    Import {
        #[command(flatten)]
        new: NewKeyArgs,
        /// The file holding the secret key in hex (`-`: stdin).
        #[arg(value_name = "FILE")]
        secret_file: Option<PathBuf>,
    },
    /// The keystores in DIR: name, account id, public key (no password
    /// needed: the public key is in the file).
    List {
        #[command(flatten)]
        dir: DirArg,
        /// Print JSON (an array).
        #[arg(long)]
        json: bool,
    },
    /// Decrypt a key and print its secret (hex) on stdout.
    Export {
        /// The key's name (DIR/NAME.json).
        name: String,
        #[command(flatten)]
        dir: DirArg,
    },
}

/// The keystore directory option.
#[derive(Args)]
pub struct DirArg {
    /// Keystore directory.
    #[arg(long, default_value = DEFAULT_DIR)]
    dir: PathBuf,
}

/// Where `new` and `import` write a key, and how.
#[derive(Args)]
pub struct NewKeyArgs {
    #[command(flatten)]
    dir: DirArg,
    /// File name without `.json` (letters, digits, `.`, `_`, `-`);
    /// default `key-` and the account id's first 8 hex digits.
    #[arg(long)]
    name: Option<String>,
    /// Password KDF (EIP-2335 parameters: scrypt n=2^18 r=8 p=1,
    /// pbkdf2 c=2^18 with hmac-sha256).
    #[arg(long, value_enum, default_value_t = KdfArg::Scrypt)]
    kdf: KdfArg,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// The KDF choice of `new` and `import`.
#[derive(Clone, Copy, ValueEnum)]
pub enum KdfArg {
    /// scrypt (RFC 7914), memory-hard; the default.
    Scrypt,
    /// PBKDF2-HMAC-SHA-256 (RFC 2898).
    Pbkdf2,
}

impl KdfArg {
    fn kdf(self) -> Kdf {
        match self {
            KdfArg::Scrypt => Kdf::SCRYPT,
            KdfArg::Pbkdf2 => Kdf::PBKDF2,
        }
    }
}

/// A keystore read from its directory.
pub struct StoredKey {
    /// Its name (the file name without `.json`).
    pub name: String,
    /// Its file.
    pub path: PathBuf,
    /// Its contents.
    pub keystore: Keystore,
}

/// Checks a key name: 1 to 64 of `A-Z a-z 0-9 . _ -`, not starting with
/// `.`, so a name is always a plain file in its directory.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= NAME_CHARS_MAX
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        bail!(
            "key name {name:?}: 1 to {NAME_CHARS_MAX} letters, digits, '.', '_' or '-', not starting with '.'"
        );
    }
    Ok(())
}

fn key_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.json"))
}

fn read_keystore(path: &Path) -> Result<Keystore> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut text = String::new();
    f.take(FILE_BYTES_MAX + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {}", path.display()))?;
    if text.len() as u64 > FILE_BYTES_MAX {
        bail!(
            "{}: larger than {FILE_BYTES_MAX} bytes, not a keystore",
            path.display()
        );
    }
    Keystore::from_json(&text).with_context(|| format!("reading {}", path.display()))
}

/// Reads key `name` of `dir`.
pub fn load(dir: &Path, name: &str) -> Result<StoredKey> {
    check_name(name)?;
    let path = key_path(dir, name);
    if !path.exists() {
        bail!(
            "no key {name:?}: {} does not exist (see `int keys list --dir {}`)",
            path.display(),
            dir.display()
        );
    }
    let keystore = read_keystore(&path)?;
    Ok(StoredKey {
        name: name.to_string(),
        path,
        keystore,
    })
}

/// The public key a keystore names: INT's 96-byte compressed G2 key,
/// validated.
pub fn public_key(ks: &Keystore) -> Result<PublicKey> {
    let bytes = ks.pubkey_bytes()?;
    let arr: [u8; 96] = bytes.as_slice().try_into().map_err(|_| {
        anyhow!(
            "pubkey has {} bytes; an INT key's is 96 (a BLS12-381 G2 point, min_sig)",
            bytes.len()
        )
    })?;
    PublicKey::from_bytes(&arr).map_err(|e| anyhow!("pubkey: {e}"))
}

/// Decrypts a stored key and checks it against the file's public key.
pub fn unlock(key: &StoredKey, password: &str) -> Result<SecretKey> {
    let secret = key
        .keystore
        .decrypt(password)
        .with_context(|| format!("opening key {:?} ({})", key.name, key.path.display()))?;
    let sk = SecretKey::from_bytes(&secret).map_err(|e| {
        anyhow!(
            "{}: the decrypted secret is not a BLS secret key ({e})",
            key.path.display()
        )
    })?;
    if !key.keystore.pubkey.is_empty() && public_key(&key.keystore)? != sk.public_key() {
        bail!(
            "{}: the file's pubkey is not its secret's public key",
            key.path.display()
        );
    }
    Ok(sk)
}

/// The keystore password: `INT_KEYSTORE_PASSWORD`, else asked on the
/// terminal without echo (twice with `confirm`).
pub fn password(confirm: bool) -> Result<Zeroizing<String>> {
    match std::env::var(PASSWORD_ENV) {
        Ok(p) => return Ok(Zeroizing::new(p)),
        Err(std::env::VarError::NotUnicode(_)) => bail!("{PASSWORD_ENV} is not valid UTF-8"),
        Err(std::env::VarError::NotPresent) => {}
    }
    if !std::io::stdin().is_terminal() && !std::io::stderr().is_terminal() {
        bail!("no keystore password: set {PASSWORD_ENV} (there is no terminal to ask on)");
    }
    let ask = |prompt: &str| -> Result<Zeroizing<String>> {
        rpassword::prompt_password(prompt)
            .map(Zeroizing::new)
            .context("reading the password from the terminal")
    };
    let p = ask("Keystore password: ")?;
    if confirm && *ask("Repeat the password: ")? != *p {
        bail!("the two passwords differ");
    }
    Ok(p)
}

/// Encrypts `sk` and writes it as a new `DIR/NAME.json` (mode 0600; an
/// existing file is an error, never overwritten); prints what it wrote.
fn write_new(a: NewKeyArgs, sk: &SecretKey) -> Result<()> {
    let (dir, kdf) = (a.dir.dir.as_path(), a.kdf.kdf());
    let pk = sk.public_key();
    let id = pk.account_id();
    let name = a
        .name
        .unwrap_or_else(|| format!("key-{}", &hex::encode(id)[..8]));
    check_name(&name)?;
    let path = key_path(dir, &name);
    let exists = || {
        anyhow!(
            "{} exists: keystores are never overwritten (choose another --name)",
            path.display()
        )
    };
    if path.exists() {
        return Err(exists());
    }
    let password = password(true)?;
    if password.is_empty() {
        bail!("an empty password protects nothing; choose one");
    }
    let ks = Keystore::encrypt(
        &sk.to_bytes(),
        &password,
        kdf,
        &pk.to_bytes(),
        &format!("INT key {name}"),
        &mut rand::rngs::OsRng,
    )?;
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            exists()
        } else {
            anyhow!("creating {}: {e}", path.display())
        }
    })?;
    if let Err(e) = f
        .write_all(ks.to_json().as_bytes())
        .and_then(|()| f.write_all(b"\n"))
        .and_then(|()| f.sync_all())
    {
        drop(f);
        let _ = std::fs::remove_file(&path);
        return Err(anyhow!("writing {}: {e}", path.display()));
    }
    tracing::debug!(file = %path.display(), kdf = kdf.name(), "keystore written");
    let v = json!({
        "name": name,
        "account_id": hex::encode(id),
        "public_key": hex::encode(pk.to_bytes()),
        "file": path.display().to_string(),
        "kdf": kdf.name(),
    });
    crate::cli::print(&v, a.json)
}

/// A secret key from hex text (64 digits, `0x` allowed, surrounding
/// whitespace ignored).
fn secret_from_hex(text: &str) -> Result<SecretKey> {
    let t = text.trim();
    let t = t.strip_prefix("0x").unwrap_or(t);
    let bytes =
        Zeroizing::new(hex::decode(t).map_err(|e| anyhow!("the secret key is not hex ({e})"))?);
    let arr: Zeroizing<[u8; 32]> = Zeroizing::new(
        bytes
            .as_slice()
            .try_into()
            .map_err(|_| anyhow!("the secret key must be 32 bytes (64 hex digits)"))?,
    );
    SecretKey::from_bytes(&arr)
        .map_err(|_| anyhow!("not a BLS secret key: zero, or not below the group order"))
}

fn read_secret(file: Option<&Path>) -> Result<SecretKey> {
    const LIMIT: u64 = 1024;
    let mut text = Zeroizing::new(String::new());
    match file {
        Some(p) if p != Path::new("-") => std::fs::File::open(p)
            .and_then(|f| f.take(LIMIT).read_to_string(&mut text))
            .map(drop)
            .with_context(|| format!("reading the secret key from {}", p.display()))?,
        // On a terminal, asked for without echo.
        _ if std::io::stdin().is_terminal() => {
            text = Zeroizing::new(
                rpassword::prompt_password("Secret key (hex): ")
                    .context("reading the secret key from the terminal")?,
            );
        }
        _ => std::io::stdin()
            .lock()
            .take(LIMIT)
            .read_line(&mut text)
            .map(drop)
            .context("reading the secret key from stdin")?,
    }
    secret_from_hex(&text)
}

/// One row of `int keys list`.
fn list_entry(path: &Path) -> Value {
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let read = read_keystore(path).and_then(|ks| {
        let pk = public_key(&ks)?;
        Ok((ks, pk))
    });
    match read {
        Ok((ks, pk)) => json!({
            "name": name,
            "account_id": hex::encode(pk.account_id()),
            "public_key": hex::encode(pk.to_bytes()),
            "kdf": ks.kdf_name(),
            "file": path.display().to_string(),
        }),
        Err(e) => json!({
            "name": name,
            "file": path.display().to_string(),
            "error": format!("{e:#}"),
        }),
    }
}

fn list(dir: &Path) -> Result<Vec<Value>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(anyhow!("reading {}: {e}", dir.display())),
    };
    let mut paths = Vec::new();
    for e in entries {
        let path = e
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|x| x == "json") && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths.iter().map(|p| list_entry(p)).collect())
}

/// Runs an `int keys` command.
pub fn run(cmd: KeysCmd) -> Result<()> {
    match cmd {
        KeysCmd::New { new } => write_new(new, &SecretKey::random(&mut rand::rngs::OsRng))?,
        KeysCmd::Import { new, secret_file } => {
            // A bad name is said before the secret is asked for.
            if let Some(n) = &new.name {
                check_name(n)?;
            }
            let sk = read_secret(secret_file.as_deref())?;
            write_new(new, &sk)?;
        }
        KeysCmd::List { dir, json } => {
            let rows = list(&dir.dir)?;
            if json {
                println!("{}", serde_json::to_string(&rows)?);
            } else if rows.is_empty() {
                eprintln!("no keystores in {}", dir.dir.display());
            } else {
                let w = rows
                    .iter()
                    .filter_map(|r| r["name"].as_str())
                    .map(str::len)
                    .fold(4, usize::max);
                println!("{:<w$}  {:<64}  kdf", "name", "account id");
                for r in &rows {
                    let name = r["name"].as_str().unwrap_or_default();
                    match (r["account_id"].as_str(), r["error"].as_str()) {
                        (Some(id), _) => println!(
                            "{name:<w$}  {id}  {}",
                            r["kdf"].as_str().unwrap_or_default()
                        ),
                        (None, e) => {
                            println!("{name:<w$}  unreadable: {}", e.unwrap_or("unknown error"))
                        }
                    }
                }
            }
        }
        KeysCmd::Export { name, dir } => {
            let key = load(&dir.dir, &name)?;
            let password = password(false)?;
            let sk = unlock(&key, &password)?;
            eprintln!(
                "warning: the line below is the secret key of {name:?} in plain text; whoever reads it controls the account"
            );
            println!("{}", hex::encode(sk.to_bytes()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_in_their_directory() {
        for ok in ["validator", "dev-0", "a.b_c", "X9"] {
            check_name(ok).unwrap();
        }
        for bad in ["", ".hidden", "../x", "a/b", "a b", "é", &"n".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn secret_hex_is_checked() {
        let sk = SecretKey::from_seed(&[3u8; 32]);
        let hex = hex::encode(sk.to_bytes());
        let back = secret_from_hex(&format!("  0x{hex}\n")).unwrap();
        assert_eq!(back.public_key(), sk.public_key());
        for (bad, want) in [
            ("zz", "not hex"),
            ("00ff", "32 bytes"),
            (&"00".repeat(32)[..], "not a BLS secret key"),
            (&"ff".repeat(32)[..], "not a BLS secret key"),
        ] {
            let e = secret_from_hex(bad).expect_err("an error").to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn keys_must_be_ours_to_unlock() {
        // A 48-byte (min_pk) public key, as in EIP-2335's own vectors, is
        // not an INT key.
        let sk = SecretKey::from_seed(&[5u8; 32]);
        let mut ks = Keystore::encrypt(
            &sk.to_bytes(),
            "pw",
            Kdf::Pbkdf2 { c: 16 },
            &[0u8; 48],
            "",
            &mut rand::rngs::OsRng,
        )
        .unwrap();
        assert!(public_key(&ks).unwrap_err().to_string().contains("96"));
        // A file whose pubkey belongs to another key does not unlock.
        ks.pubkey = hex::encode(SecretKey::from_seed(&[6u8; 32]).public_key().to_bytes());
        let key = StoredKey {
            name: "k".into(),
            path: "k.json".into(),
            keystore: ks.clone(),
        };
        let e = unlock(&key, "pw").expect_err("mismatch").to_string();
        assert!(e.contains("not its secret's public key"), "{e}");
        ks.pubkey = hex::encode(sk.public_key().to_bytes());
        let key = StoredKey {
            keystore: ks,
            ..key
        };
        assert_eq!(unlock(&key, "pw").unwrap().public_key(), sk.public_key());
        let e = format!("{:#}", unlock(&key, "nope").expect_err("wrong password"));
        assert!(e.contains("wrong password: checksum mismatch"), "{e}");
    }
}
