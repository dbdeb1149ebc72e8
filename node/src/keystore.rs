//! EIP-2335 keystores: a BLS12-381 secret key (32 bytes) encrypted under a
//! password in the JSON format Ethereum validators use, so the node's keys
//! travel with the tools that already handle that format.
//!
//! Decryption follows the EIP: the password is NFKD-normalised and stripped
//! of C0, C1 and `Delete` control codes; the KDF (`scrypt` or `pbkdf2` with
//! `hmac-sha256`) turns it into a 32-byte decryption key; the password is
//! right when `sha256(decryption_key[16..32] ++ cipher.message)` equals
//! `checksum.message`; the secret is `cipher.message` under `aes-128-ctr`
//! with `decryption_key[0..16]` and `iv`. The KDFs, the cipher and the hash
//! are RustCrypto's crates; nothing here is hand-written crypto.
//!
//! The file's `pubkey` is the engine's 96-byte compressed G2 public key
//! (BLS min_sig), so a key can be listed without its password. Files are
//! input from outside: every field is checked, and the KDF costs are
//! bounded ([`SCRYPT_MEMORY_MAX`], [`PBKDF2_ROUNDS_MAX`]) so a hostile file
//! cannot make the node allocate or compute without end.

use aes::cipher::{KeyIvInit, StreamCipher};
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization;
use zeroize::Zeroizing;

type Aes128Ctr = ctr::Ctr128BE<aes::Aes128>;

/// The keystore format's version.
pub const VERSION: u32 = 4;
/// scrypt's cost for new keystores (EIP-2335's value).
pub const SCRYPT_N: u32 = 1 << 18;
/// scrypt's block size for new keystores.
pub const SCRYPT_R: u32 = 8;
/// scrypt's parallelism for new keystores.
pub const SCRYPT_P: u32 = 1;
/// PBKDF2's rounds for new keystores (EIP-2335's value).
pub const PBKDF2_C: u32 = 1 << 18;
/// Largest scrypt memory (`128 · r · n · p` bytes) a keystore may ask for.
pub const SCRYPT_MEMORY_MAX: u64 = 1 << 30;
/// Most PBKDF2 rounds a keystore may ask for.
pub const PBKDF2_ROUNDS_MAX: u32 = 1 << 24;
/// Length of the decryption key: the cipher's key and the checksum's half.
const DKLEN: usize = 32;
/// Most salt bytes read from a file.
const SALT_BYTES_MAX: usize = 1024;

/// What can go wrong reading or opening a keystore.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    /// The text is not JSON of the keystore's shape.
    #[error("not an EIP-2335 keystore: {0}")]
    Json(#[from] serde_json::Error),
    /// A field is missing, of the wrong type or out of bounds.
    #[error("malformed keystore: {0}")]
    Malformed(String),
    /// A version, KDF, checksum or cipher this implementation does not do.
    #[error("unsupported keystore: {0}")]
    Unsupported(String),
    /// The checksum does not match: the password is not this file's.
    #[error("wrong password: checksum mismatch")]
    WrongPassword,
}

fn malformed(m: impl Into<String>) -> KeystoreError {
    KeystoreError::Malformed(m.into())
}

/// The KDF a new keystore is written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kdf {
    /// scrypt with `n`, `r`, `p`.
    Scrypt {
        /// Cost (a power of two).
        n: u32,
        /// Block size.
        r: u32,
        /// Parallelism.
        p: u32,
    },
    /// PBKDF2-HMAC-SHA-256 with `c` rounds.
    Pbkdf2 {
        /// Rounds.
        c: u32,
    },
}

impl Kdf {
    /// scrypt with EIP-2335's parameters (n = 2¹⁸, r = 8, p = 1).
    pub const SCRYPT: Kdf = Kdf::Scrypt {
        n: SCRYPT_N,
        r: SCRYPT_R,
        p: SCRYPT_P,
    };
    /// PBKDF2 with EIP-2335's rounds (2¹⁸).
    pub const PBKDF2: Kdf = Kdf::Pbkdf2 { c: PBKDF2_C };

    /// The function's name in the file.
    pub fn name(&self) -> &'static str {
        match self {
            Kdf::Scrypt { .. } => "scrypt",
            Kdf::Pbkdf2 { .. } => "pbkdf2",
        }
    }
}

/// One module of the `crypto` object: function, parameters and message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Module {
    /// Which construction.
    pub function: String,
    /// Its parameters.
    pub params: Map<String, Value>,
    /// Its input, hex.
    pub message: String,
}

/// The `crypto` object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Crypto {
    /// Password to decryption key.
    pub kdf: Module,
    /// Password check.
    pub checksum: Module,
    /// The encrypted secret.
    pub cipher: Module,
}

/// An EIP-2335 keystore file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Keystore {
    /// KDF, checksum and cipher.
    pub crypto: Crypto,
    /// What the key is for (not unique).
    #[serde(default)]
    pub description: String,
    /// The public key, hex (ours: 96-byte compressed G2).
    #[serde(default)]
    pub pubkey: String,
    /// EIP-2334 derivation path; `""`: none.
    pub path: String,
    /// RFC 4122 uuid.
    pub uuid: String,
    /// Always [`VERSION`].
    pub version: u32,
}

/// Normalises a password as EIP-2335 says: NFKD, then the C0 (0x00–0x1F),
/// `Delete` (0x7F) and C1 (0x80–0x9F) control codes removed, then UTF-8.
pub fn normalize_password(password: &str) -> Zeroizing<Vec<u8>> {
    let s: Zeroizing<String> = Zeroizing::new(
        password
            .nfkd()
            .filter(|c| !matches!(u32::from(*c), 0x00..=0x1f | 0x7f..=0x9f))
            .collect(),
    );
    Zeroizing::new(s.as_bytes().to_vec())
}

fn unhex(s: &str, what: &str) -> Result<Vec<u8>, KeystoreError> {
    hex::decode(s.strip_prefix("0x").unwrap_or(s))
        .map_err(|e| malformed(format!("{what} is not hex: {e}")))
}

fn unhex_n<const N: usize>(s: &str, what: &str) -> Result<[u8; N], KeystoreError> {
    unhex(s, what)?
        .try_into()
        .map_err(|_| malformed(format!("{what}: {N} bytes expected")))
}

fn param_u32(params: &Map<String, Value>, name: &str) -> Result<u32, KeystoreError> {
    params
        .get(name)
        .and_then(Value::as_u64)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| malformed(format!("kdf.params.{name}: an integer below 2^32")))
}

fn param_str<'a>(params: &'a Map<String, Value>, name: &str) -> Result<&'a str, KeystoreError> {
    params
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| malformed(format!("kdf.params.{name}: a string")))
}

/// The KDF of a file, checked and bounded, with its salt.
fn read_kdf(m: &Module) -> Result<(Kdf, Vec<u8>), KeystoreError> {
    let p = &m.params;
    if param_u32(p, "dklen")? as usize != DKLEN {
        return Err(KeystoreError::Unsupported(format!(
            "kdf.params.dklen must be {DKLEN}"
        )));
    }
    let salt = unhex(param_str(p, "salt")?, "kdf.params.salt")?;
    if salt.is_empty() || salt.len() > SALT_BYTES_MAX {
        return Err(malformed(format!(
            "kdf.params.salt: 1 to {SALT_BYTES_MAX} bytes"
        )));
    }
    let kdf = match m.function.as_str() {
        "scrypt" => {
            let (n, r, pp) = (param_u32(p, "n")?, param_u32(p, "r")?, param_u32(p, "p")?);
            if n < 2 || !n.is_power_of_two() {
                return Err(malformed("kdf.params.n: a power of two from 2"));
            }
            if r == 0 || pp == 0 {
                return Err(malformed("kdf.params.r and p: at least 1"));
            }
            // Below 2^103 for any u32 r, n, p: no overflow.
            let memory = 128 * u128::from(r) * u128::from(n) * u128::from(pp);
            if memory > u128::from(SCRYPT_MEMORY_MAX) {
                return Err(KeystoreError::Unsupported(format!(
                    "scrypt would need {memory} bytes (at most {SCRYPT_MEMORY_MAX})"
                )));
            }
            Kdf::Scrypt { n, r, p: pp }
        }
        "pbkdf2" => {
            if param_str(p, "prf")? != "hmac-sha256" {
                return Err(KeystoreError::Unsupported(
                    "kdf.params.prf: only hmac-sha256".into(),
                ));
            }
            let c = param_u32(p, "c")?;
            if !(1..=PBKDF2_ROUNDS_MAX).contains(&c) {
                return Err(KeystoreError::Unsupported(format!(
                    "kdf.params.c: 1 to {PBKDF2_ROUNDS_MAX} rounds"
                )));
            }
            Kdf::Pbkdf2 { c }
        }
        other => {
            return Err(KeystoreError::Unsupported(format!(
                "kdf function {other:?} (scrypt or pbkdf2)"
            )));
        }
    };
    Ok((kdf, salt))
}

/// The decryption key of a (normalised) password.
fn derive(kdf: Kdf, password: &[u8], salt: &[u8]) -> Result<Zeroizing<[u8; DKLEN]>, KeystoreError> {
    let mut dk = Zeroizing::new([0u8; DKLEN]);
    match kdf {
        Kdf::Scrypt { n, r, p } => {
            let params = scrypt::Params::new(n.trailing_zeros() as u8, r, p, DKLEN)
                .map_err(|e| malformed(format!("scrypt parameters: {e}")))?;
            scrypt::scrypt(password, salt, &params, &mut dk[..])
                .map_err(|e| malformed(format!("scrypt: {e}")))?;
        }
        Kdf::Pbkdf2 { c } => pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, c, &mut dk[..]),
    }
    Ok(dk)
}

fn checksum(dk: &[u8; DKLEN], cipher_message: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(&dk[16..32]);
    h.update(cipher_message);
    h.finalize().into()
}

fn apply_cipher(dk: &[u8; DKLEN], iv: &[u8; 16], data: &mut [u8]) {
    let mut key = Zeroizing::new([0u8; 16]);
    key.copy_from_slice(&dk[..16]);
    let mut c = Aes128Ctr::new(&(*key).into(), &(*iv).into());
    c.apply_keystream(data);
}

/// Constant-time equality of two equally long byte strings.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Keystore {
    /// Parses and checks a keystore's text: version, modules and field
    /// encodings (the password is checked by [`Keystore::decrypt`]).
    pub fn from_json(text: &str) -> Result<Self, KeystoreError> {
        let ks: Keystore = serde_json::from_str(text)?;
        ks.check()?;
        Ok(ks)
    }

    /// The keystore as pretty JSON.
    pub fn to_json(&self) -> String {
        // A struct of strings, maps and integers always serialises.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    fn check(&self) -> Result<(), KeystoreError> {
        if self.version != VERSION {
            return Err(KeystoreError::Unsupported(format!(
                "version {} (this reads version {VERSION})",
                self.version
            )));
        }
        uuid::Uuid::parse_str(&self.uuid)
            .map_err(|e| malformed(format!("uuid {:?}: {e}", self.uuid)))?;
        read_kdf(&self.crypto.kdf)?;
        let c = &self.crypto;
        if c.checksum.function != "sha256" {
            return Err(KeystoreError::Unsupported(format!(
                "checksum function {:?} (sha256)",
                c.checksum.function
            )));
        }
        unhex_n::<32>(&c.checksum.message, "checksum.message")?;
        if c.cipher.function != "aes-128-ctr" {
            return Err(KeystoreError::Unsupported(format!(
                "cipher function {:?} (aes-128-ctr)",
                c.cipher.function
            )));
        }
        self.iv()?;
        unhex_n::<32>(&c.cipher.message, "cipher.message (a 32-byte secret)")?;
        if !self.pubkey.is_empty() {
            unhex(&self.pubkey, "pubkey")?;
        }
        Ok(())
    }

    fn iv(&self) -> Result<[u8; 16], KeystoreError> {
        let iv = self
            .crypto
            .cipher
            .params
            .get("iv")
            .and_then(Value::as_str)
            .ok_or_else(|| malformed("cipher.params.iv: a string"))?;
        unhex_n::<16>(iv, "cipher.params.iv")
    }

    /// The public key's bytes (empty when the file has none).
    pub fn pubkey_bytes(&self) -> Result<Vec<u8>, KeystoreError> {
        unhex(&self.pubkey, "pubkey")
    }

    /// The KDF's name.
    pub fn kdf_name(&self) -> &str {
        &self.crypto.kdf.function
    }

    /// The 32-byte secret, after checking the password against the
    /// checksum ([`KeystoreError::WrongPassword`] when it does not match).
    pub fn decrypt(&self, password: &str) -> Result<Zeroizing<[u8; 32]>, KeystoreError> {
        self.check()?;
        let (kdf, salt) = read_kdf(&self.crypto.kdf)?;
        let dk = derive(kdf, &normalize_password(password), &salt)?;
        let mut secret = Zeroizing::new(unhex_n::<32>(
            &self.crypto.cipher.message,
            "cipher.message",
        )?);
        let want = unhex_n::<32>(&self.crypto.checksum.message, "checksum.message")?;
        if !ct_eq(&checksum(&dk, &secret[..]), &want) {
            return Err(KeystoreError::WrongPassword);
        }
        apply_cipher(&dk, &self.iv()?, &mut secret[..]);
        Ok(secret)
    }

    /// Encrypts `secret` under `password` with `kdf`, a fresh salt, iv and
    /// uuid from `rng`.
    pub fn encrypt<R: RngCore + CryptoRng>(
        secret: &[u8; 32],
        password: &str,
        kdf: Kdf,
        pubkey: &[u8],
        description: &str,
        rng: &mut R,
    ) -> Result<Self, KeystoreError> {
        let mut salt = [0u8; 32];
        let mut iv = [0u8; 16];
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut salt);
        rng.fill_bytes(&mut iv);
        rng.fill_bytes(&mut id);
        let dk = derive(kdf, &normalize_password(password), &salt)?;
        let mut message = Zeroizing::new(*secret);
        apply_cipher(&dk, &iv, &mut message[..]);
        let sum = checksum(&dk, &message[..]);
        let mut params = Map::new();
        params.insert("dklen".into(), json!(DKLEN));
        match kdf {
            Kdf::Scrypt { n, r, p } => {
                params.insert("n".into(), json!(n));
                params.insert("r".into(), json!(r));
                params.insert("p".into(), json!(p));
            }
            Kdf::Pbkdf2 { c } => {
                params.insert("c".into(), json!(c));
                params.insert("prf".into(), json!("hmac-sha256"));
            }
        }
        params.insert("salt".into(), json!(hex::encode(salt)));
        Ok(Keystore {
            crypto: Crypto {
                kdf: Module {
                    function: kdf.name().into(),
                    params,
                    message: String::new(),
                },
                checksum: Module {
                    function: "sha256".into(),
                    params: Map::new(),
                    message: hex::encode(sum),
                },
                cipher: Module {
                    function: "aes-128-ctr".into(),
                    params: [("iv".to_string(), Value::from(hex::encode(iv)))]
                        .into_iter()
                        .collect(),
                    message: hex::encode(&message[..]),
                },
            },
            description: description.into(),
            pubkey: hex::encode(pubkey),
            path: String::new(),
            uuid: uuid::Builder::from_random_bytes(id)
                .into_uuid()
                .hyphenated()
                .to_string(),
            version: VERSION,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const PASSWORD: &str = "𝔱𝔢𝔰𝔱𝔭𝔞𝔰𝔰𝔴𝔬𝔯𝔡🔑";
    const SECRET: &str = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f";

    /// EIP-2335's scrypt test vector, verbatim.
    const SCRYPT_VECTOR: &str = r#"{
        "crypto": {
            "kdf": {
                "function": "scrypt",
                "params": {
                    "dklen": 32,
                    "n": 262144,
                    "p": 1,
                    "r": 8,
                    "salt": "d4e56740f876aef8c010b86a40d5f56745a118d0906a34e69aec8c0db1cb8fa3"
                },
                "message": ""
            },
            "checksum": {
                "function": "sha256",
                "params": {},
                "message": "d2217fe5f3e9a1e34581ef8a78f7c9928e436d36dacc5e846690a5581e8ea484"
            },
            "cipher": {
                "function": "aes-128-ctr",
                "params": {
                    "iv": "264daa3f303d7259501c93d997d84fe6"
                },
                "message": "06ae90d55fe0a6e9c5c3bc5b170827b2e5cce3929ed3f116c2811e6366dfe20f"
            }
        },
        "description": "This is a test keystore that uses scrypt to secure the secret.",
        "pubkey": "9612d7a727c9d0a22e185a1c768478dfe919cada9266988cb32359c11f2b7b27f4ae4040902382ae2910c15e2b420d07",
        "path": "m/12381/60/3141592653/589793238",
        "uuid": "1d85ae20-35c5-4611-98e8-aa14a633906f",
        "version": 4
    }"#;

    /// EIP-2335's PBKDF2 test vector, verbatim.
    const PBKDF2_VECTOR: &str = r#"{
        "crypto": {
            "kdf": {
                "function": "pbkdf2",
                "params": {
                    "dklen": 32,
                    "c": 262144,
                    "prf": "hmac-sha256",
                    "salt": "d4e56740f876aef8c010b86a40d5f56745a118d0906a34e69aec8c0db1cb8fa3"
                },
                "message": ""
            },
            "checksum": {
                "function": "sha256",
                "params": {},
                "message": "8a9f5d9912ed7e75ea794bc5a89bca5f193721d30868ade6f73043c6ea6febf1"
            },
            "cipher": {
                "function": "aes-128-ctr",
                "params": {
                    "iv": "264daa3f303d7259501c93d997d84fe6"
                },
                "message": "cee03fde2af33149775b7223e7845e4fb2c8ae1792e5f99fe9ecf474cc8c16ad"
            }
        },
        "description": "This is a test keystore that uses PBKDF2 to secure the secret.",
        "pubkey": "9612d7a727c9d0a22e185a1c768478dfe919cada9266988cb32359c11f2b7b27f4ae4040902382ae2910c15e2b420d07",
        "path": "m/12381/60/0/0",
        "uuid": "64625def-3331-4eea-ab6f-782f3ed16a83",
        "version": 4
    }"#;

    /// Cheap parameters for round trips (the vectors keep the standard ones).
    const FAST_SCRYPT: Kdf = Kdf::Scrypt {
        n: 1 << 10,
        r: 8,
        p: 1,
    };
    const FAST_PBKDF2: Kdf = Kdf::Pbkdf2 { c: 1000 };

    fn rng() -> rand_chacha::ChaCha20Rng {
        rand_chacha::ChaCha20Rng::seed_from_u64(7)
    }

    #[test]
    fn eip2335_password_encoding() {
        assert_eq!(
            hex::encode(&normalize_password(PASSWORD)[..]),
            "7465737470617373776f7264f09f9491"
        );
    }

    #[test]
    fn eip2335_scrypt_vector() {
        let ks = Keystore::from_json(SCRYPT_VECTOR).unwrap();
        assert_eq!(ks.kdf_name(), "scrypt");
        assert_eq!(hex::encode(&ks.decrypt(PASSWORD).unwrap()[..]), SECRET);
    }

    #[test]
    fn eip2335_pbkdf2_vector() {
        let ks = Keystore::from_json(PBKDF2_VECTOR).unwrap();
        assert_eq!(hex::encode(&ks.decrypt(PASSWORD).unwrap()[..]), SECRET);
        // Another password fails on the checksum, before any decryption.
        assert!(matches!(
            ks.decrypt("testpassword"),
            Err(KeystoreError::WrongPassword)
        ));
    }

    #[test]
    fn password_normalisation_strips_control_codes_only() {
        // NFKD: the fraktur letters and the ligature decompose.
        assert_eq!(&normalize_password("ﬁ𝔞")[..], b"fia");
        // C0, Delete and C1 go; space stays.
        assert_eq!(
            &normalize_password("a\u{0}b\u{1f}c\u{7f}d\u{80}e\u{9f}f g\n")[..],
            b"abcdef g"
        );
        // Composed and decomposed forms are one password.
        assert_eq!(normalize_password("\u{e9}"), normalize_password("e\u{301}"));
        // Characters past C1 are kept (NBSP decomposes to a space).
        assert_eq!(&normalize_password("\u{a0}x")[..], b" x");
    }

    #[test]
    fn round_trip_both_kdfs() {
        let secret = [0x42u8; 32];
        for kdf in [FAST_SCRYPT, FAST_PBKDF2] {
            let ks = Keystore::encrypt(&secret, "pässword", kdf, &[1, 2, 3], "test", &mut rng())
                .unwrap();
            let text = ks.to_json();
            let back = Keystore::from_json(&text).unwrap();
            assert_eq!(back.kdf_name(), kdf.name());
            assert_eq!(back.pubkey, "010203");
            assert_eq!(back.path, "");
            assert_eq!(back.version, 4);
            assert_eq!(*back.decrypt("pässword").unwrap(), secret);
            // The decomposed spelling is the same password.
            assert_eq!(*back.decrypt("pa\u{308}ssword").unwrap(), secret);
            let e = back.decrypt("password").unwrap_err();
            assert_eq!(e.to_string(), "wrong password: checksum mismatch");
        }
    }

    #[test]
    fn standard_parameters_for_new_files() {
        let ks = Keystore::encrypt(&[1u8; 32], "pw", Kdf::PBKDF2, &[], "", &mut rng()).unwrap();
        let p = &ks.crypto.kdf.params;
        assert_eq!(p["c"], 262144);
        assert_eq!(p["prf"], "hmac-sha256");
        assert_eq!(p["dklen"], 32);
        assert_eq!(ks.crypto.cipher.function, "aes-128-ctr");
        assert_eq!(ks.crypto.checksum.function, "sha256");
        let u = uuid::Uuid::parse_str(&ks.uuid).unwrap();
        assert_eq!(u.get_version_num(), 4);
        assert_eq!(
            Kdf::SCRYPT,
            Kdf::Scrypt {
                n: 262144,
                r: 8,
                p: 1
            }
        );
    }

    /// The scrypt vector with one field replaced.
    fn vector_with(edit: impl FnOnce(&mut Value)) -> String {
        let mut v: Value = serde_json::from_str(SCRYPT_VECTOR).unwrap();
        edit(&mut v);
        v.to_string()
    }

    #[test]
    fn malformed_files_are_clear_errors() {
        let cases: Vec<(String, &str)> = vec![
            ("{not json".into(), "not an EIP-2335 keystore"),
            ("[]".into(), "not an EIP-2335 keystore"),
            ("{}".into(), "missing field `crypto`"),
            (
                vector_with(|v| v["version"] = json!(3)),
                "unsupported keystore: version 3",
            ),
            (vector_with(|v| v["uuid"] = json!("nope")), "uuid"),
            (
                vector_with(|v| v["crypto"]["kdf"]["function"] = json!("argon2")),
                "kdf function \"argon2\"",
            ),
            (
                vector_with(|v| v["crypto"]["kdf"]["params"]["n"] = json!(1000)),
                "power of two",
            ),
            (
                vector_with(|v| v["crypto"]["kdf"]["params"]["n"] = json!(1u64 << 31)),
                "scrypt would need",
            ),
            (
                // 128 · r · n · p = 2^64: past u64, and past the bound.
                vector_with(|v| {
                    v["crypto"]["kdf"]["params"]["n"] = json!(1u64 << 30);
                    v["crypto"]["kdf"]["params"]["r"] = json!(1u64 << 27);
                }),
                "scrypt would need",
            ),
            (
                vector_with(|v| v["crypto"]["kdf"]["params"]["n"] = json!("big")),
                "kdf.params.n",
            ),
            (
                vector_with(|v| v["crypto"]["kdf"]["params"]["salt"] = json!("zz")),
                "kdf.params.salt is not hex",
            ),
            (
                vector_with(|v| v["crypto"]["kdf"]["params"]["dklen"] = json!(16)),
                "dklen must be 32",
            ),
            (
                vector_with(|v| v["crypto"]["cipher"]["function"] = json!("aes-256-gcm")),
                "cipher function",
            ),
            (
                vector_with(|v| v["crypto"]["cipher"]["params"]["iv"] = json!("00")),
                "cipher.params.iv: 16 bytes",
            ),
            (
                vector_with(|v| v["crypto"]["cipher"]["message"] = json!("0011")),
                "cipher.message",
            ),
            (
                vector_with(|v| v["crypto"]["checksum"]["function"] = json!("keccak256")),
                "checksum function",
            ),
            (
                vector_with(|v| v["crypto"]["checksum"]["message"] = json!(7)),
                "invalid type",
            ),
        ];
        for (text, want) in cases {
            let e = Keystore::from_json(&text).unwrap_err().to_string();
            assert!(e.contains(want), "{want:?} not in {e:?} for {text}");
        }
        // PBKDF2 bounds.
        let mut v: Value = serde_json::from_str(PBKDF2_VECTOR).unwrap();
        v["crypto"]["kdf"]["params"]["c"] = json!(u32::MAX);
        let e = Keystore::from_json(&v.to_string()).unwrap_err().to_string();
        assert!(e.contains("rounds"), "{e}");
        v["crypto"]["kdf"]["params"]["c"] = json!(1);
        v["crypto"]["kdf"]["params"]["prf"] = json!("hmac-sha512");
        let e = Keystore::from_json(&v.to_string()).unwrap_err().to_string();
        assert!(e.contains("hmac-sha256"), "{e}");
    }

    #[test]
    fn tampered_ciphertext_is_a_wrong_password() {
        let ks = Keystore::encrypt(&[9u8; 32], "pw", FAST_PBKDF2, &[], "", &mut rng()).unwrap();
        let mut t = ks.clone();
        let mut m = hex::decode(&t.crypto.cipher.message).unwrap();
        m[0] ^= 1;
        t.crypto.cipher.message = hex::encode(m);
        assert!(matches!(t.decrypt("pw"), Err(KeystoreError::WrongPassword)));
        assert_eq!(*ks.decrypt("pw").unwrap(), [9u8; 32]);
    }
}
