//! `int run`'s configuration file (TOML): where the node keeps its chain,
//! which chain, its block cadence, where it serves, its validator key and
//! the genesis of a new chain.
//!
//! Reading is two steps: serde checks the file's shape ([`Config`]; an
//! unknown key, a missing section's type or a negative number is TOML's
//! error, with its line), then [`Config::settings`] checks every value and
//! turns it into what the node uses ([`Settings`]); each bad value is a
//! [`ConfigError::Field`] that names its key, such as
//! `genesis.accounts[1].int`. Relative paths are relative to the file's
//! directory, so `int run --config /etc/int/int.toml` works from anywhere.
//!
//! [`DEFAULT_TOML`] is what `int config default` prints: every key,
//! commented, with the values of [`Config::default`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use int_engine::crypto::bls::PublicKey;
use int_engine::storage::AccountRecord;
use int_schemas::{AccountId, BLOCK_TXS_MAX, PublicKeyBytes};
use serde::{Deserialize, Deserializer, Serialize};

/// Longest block interval: an hour (longer ones are a mistake, and the
/// block timer must not overflow).
pub const BLOCK_MS_MAX: u64 = 3_600_000;
/// Most genesis accounts a config file may list.
pub const GENESIS_ACCOUNTS_MAX: usize = 1_000_000;

/// The default configuration, with a comment on every key; it parses to
/// [`Config::default`] (a unit test holds the two together).
pub const DEFAULT_TOML: &str = r#"# INT node configuration: `int run --config int.toml`.
# Relative paths are relative to the directory of this file. Amounts are
# base units, as strings (they are u128; TOML integers stop at 2^63).

# Where the chain lives (LMDB in DATA_DIR/lmdb). A data dir keeps the chain
# id it was made with; started again, the node continues from its head.
data_dir = "int-node"
# The chain produced (1 is the relay chain). Transactions sign it.
chain_id = 1
# Block interval, milliseconds (1 to 3600000).
block_ms = 500
# Most transactions per block (1 to 1048576).
block_txs_max = 50000
# Where batch verification's curve arithmetic runs: "auto" (a hardware GPU
# for large batches, else all CPU cores), "cpu" or "gpu" (any adapter, an
# error without one). Unset: $INT_ACCEL, else "auto".
# accel = "auto"

[rpc]
# JSON-RPC over HTTP, with Prometheus metrics at GET /metrics: IP:PORT, or
# "off" for none. When the port is taken another is chosen; the address
# served is printed as "JSON-RPC on http://ADDR". Port 0: any free port.
addr = "127.0.0.1:8645"

[mqtt]
# The MQTT device gateway: IP:PORT, or "off" for none; printed as
# "MQTT on mqtt://ADDR".
addr = "127.0.0.1:1883"

[validator]
# The validator's BLS key: an EIP-2335 keystore file as `int keys new --name
# validator` writes it. Its password comes from $INT_KEYSTORE_PASSWORD, else
# it is asked on the terminal.
keystore = "int-keys/validator.json"

[genesis]
# Block 0's accounts, used once: when data_dir holds no chain yet (later
# changes here are ignored). The validator's account is added by itself
# (registered with its key, no balance: it earns the fees) unless listed.
# Each account: `id` (64 hex digits) and/or `public_key` (192 hex digits, a
# compressed BLS12-381 G2 key; the account is then registered from the
# start and its id is the key's), `int` and `gas` (amounts; default "0").
# Fees are paid in GAS.
accounts = []
# accounts = [
#   { id = "0000000000000000000000000000000000000000000000000000000000000000", int = "1000000", gas = "1000000" },
#   { public_key = "<192 hex digits>", int = "0", gas = "1000" },
# ]
"#;

/// A configuration file as written: its shape, before its values are
/// checked (see [`Config::settings`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the chain lives (LMDB in `DATA_DIR/lmdb`).
    pub data_dir: PathBuf,
    /// The chain produced.
    pub chain_id: u32,
    /// Block interval, milliseconds.
    pub block_ms: u64,
    /// Most transactions per block.
    pub block_txs_max: u64,
    /// `auto`, `cpu` or `gpu`; `None`: `$INT_ACCEL`, else `auto`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accel: Option<String>,
    /// The JSON-RPC server.
    pub rpc: Listen,
    /// The MQTT gateway.
    pub mqtt: Listen,
    /// The validator's key.
    pub validator: Validator,
    /// Block 0 of a new chain.
    pub genesis: GenesisSection,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("int-node"),
            chain_id: 1,
            block_ms: 500,
            block_txs_max: 50_000,
            accel: None,
            rpc: Listen {
                addr: crate::service::rpc::DEFAULT_ADDR.into(),
            },
            mqtt: Listen {
                addr: crate::service::mqtt::DEFAULT_ADDR.into(),
            },
            validator: Validator::default(),
            genesis: GenesisSection::default(),
        }
    }
}

/// Where a server listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// `IP:PORT`, or `off` for no server.
    pub addr: String,
}

/// The validator's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Validator {
    /// An EIP-2335 keystore file (`DIR/NAME.json`, as `int keys` writes).
    pub keystore: PathBuf,
}

impl Default for Validator {
    fn default() -> Self {
        Self {
            keystore: PathBuf::from("int-keys/validator.json"),
        }
    }
}

/// Block 0's accounts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisSection {
    /// The accounts, in any order.
    #[serde(default)]
    pub accounts: Vec<GenesisAccount>,
}

/// One genesis account as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisAccount {
    /// Account id, 64 hex digits (optional with a `public_key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Compressed BLS12-381 G2 public key, 192 hex digits: the account is
    /// registered from the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// INT, base units (a string, or a TOML integer).
    #[serde(default = "zero", deserialize_with = "amount_text")]
    pub int: String,
    /// GAS, base units (a string, or a TOML integer).
    #[serde(default = "zero", deserialize_with = "amount_text")]
    pub gas: String,
}

fn zero() -> String {
    "0".into()
}

/// An amount as a string or a non-negative TOML integer, kept as text; its
/// value is checked by [`Config::settings`], which can name the key.
fn amount_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an amount: a string of decimal digits, like \"1000000\"")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    d.deserialize_any(V)
}

/// A configuration that is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// Why (in the message, not a separate cause, so it is said once).
        error: std::io::Error,
    },
    /// The file is not TOML of the config's shape (TOML's message names the
    /// line and key).
    #[error("{path}: {error}")]
    Parse {
        /// The file.
        path: String,
        /// Why (in the message, not a separate cause).
        error: Box<toml::de::Error>,
    },
    /// A value is wrong.
    #[error("{field}: {msg}")]
    Field {
        /// The key, such as `rpc.addr` or `genesis.accounts[0].int`.
        field: String,
        /// What is wrong with it.
        msg: String,
    },
}

fn field(field: impl Into<String>, msg: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: field.into(),
        msg: msg.into(),
    }
}

/// A checked configuration: what the node runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the chain lives.
    pub data_dir: PathBuf,
    /// The chain produced.
    pub chain_id: u32,
    /// Block interval, milliseconds.
    pub block_ms: u64,
    /// Most transactions per block.
    pub block_txs_max: usize,
    /// Where batch verification runs; `None`: `$INT_ACCEL`, else auto.
    pub accel: Option<int_gpu::Accel>,
    /// The JSON-RPC server's address; `None`: no server.
    pub rpc_addr: Option<SocketAddr>,
    /// The MQTT gateway's address; `None`: no gateway.
    pub mqtt_addr: Option<SocketAddr>,
    /// The validator's keystore file.
    pub keystore: PathBuf,
    /// Block 0's accounts (without the validator's unless listed), sorted
    /// by id, each once.
    pub genesis: Vec<(AccountId, AccountRecord)>,
}

impl Config {
    /// Parses a configuration from TOML text; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_string(),
            error: Box::new(e),
        })
    }

    /// Checks every value; relative paths are taken relative to `base`
    /// (the config file's directory).
    pub fn settings(&self, base: &Path) -> Result<Settings, ConfigError> {
        let path = |p: &Path, name: &str| -> Result<PathBuf, ConfigError> {
            if p.as_os_str().is_empty() {
                return Err(field(name, "must not be empty"));
            }
            Ok(base.join(p))
        };
        if !(1..=BLOCK_MS_MAX).contains(&self.block_ms) {
            return Err(field(
                "block_ms",
                format!("{} is not between 1 and {BLOCK_MS_MAX}", self.block_ms),
            ));
        }
        let block_txs_max = usize::try_from(self.block_txs_max)
            .ok()
            .filter(|n| (1..=BLOCK_TXS_MAX).contains(n))
            .ok_or_else(|| {
                field(
                    "block_txs_max",
                    format!(
                        "{} is not between 1 and {BLOCK_TXS_MAX}",
                        self.block_txs_max
                    ),
                )
            })?;
        let accel = match &self.accel {
            None => None,
            Some(a) => Some(a.parse().map_err(|_| {
                field(
                    "accel",
                    format!("{a:?} is not \"auto\", \"cpu\" or \"gpu\""),
                )
            })?),
        };
        let keystore = path(&self.validator.keystore, "validator.keystore")?;
        if keystore.extension().is_none_or(|e| e != "json") {
            return Err(field(
                "validator.keystore",
                format!(
                    "{} is not a keystore file (DIR/NAME.json, as `int keys new` writes)",
                    self.validator.keystore.display()
                ),
            ));
        }
        Ok(Settings {
            data_dir: path(&self.data_dir, "data_dir")?,
            chain_id: self.chain_id,
            block_ms: self.block_ms,
            block_txs_max,
            accel,
            rpc_addr: listen_addr(&self.rpc.addr, "rpc.addr")?,
            mqtt_addr: listen_addr(&self.mqtt.addr, "mqtt.addr")?,
            keystore,
            genesis: genesis(&self.genesis.accounts)?,
        })
    }
}

/// Reads and checks the configuration file at `path`.
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: name.clone(),
        error,
    })?;
    let base = path.parent().unwrap_or(Path::new(""));
    Config::parse(&text, &name)?.settings(base)
}

fn listen_addr(text: &str, name: &str) -> Result<Option<SocketAddr>, ConfigError> {
    if text == "off" {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        field(
            name,
            format!("{text:?} is not IP:PORT (like \"127.0.0.1:8645\") or \"off\""),
        )
    })
}

fn hex_bytes<const N: usize>(text: &str, name: &str) -> Result<[u8; N], ConfigError> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    let bytes = hex::decode(digits).map_err(|e| field(name, format!("not hex ({e})")))?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        field(
            name,
            format!(
                "{} hex digits; it must be {} ({N} bytes)",
                b.len() * 2,
                N * 2
            ),
        )
    })
}

fn amount(text: &str, name: &str) -> Result<u128, ConfigError> {
    let digits: String = text.chars().filter(|c| *c != '_').collect();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(field(
            name,
            format!("{text:?} is not an amount (decimal digits, like \"1000000\")"),
        ));
    }
    digits
        .parse()
        .map_err(|_| field(name, format!("{text:?} is larger than 2^128 - 1")))
}

fn genesis(accounts: &[GenesisAccount]) -> Result<Vec<(AccountId, AccountRecord)>, ConfigError> {
    if accounts.len() > GENESIS_ACCOUNTS_MAX {
        return Err(field(
            "genesis.accounts",
            format!(
                "{} accounts; at most {GENESIS_ACCOUNTS_MAX}",
                accounts.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(accounts.len());
    let (mut int_total, mut gas_total) = (0u128, 0u128);
    for (i, a) in accounts.iter().enumerate() {
        let name = |key: &str| format!("genesis.accounts[{i}].{key}");
        let public_key = match &a.public_key {
            None => None,
            Some(text) => {
                let bytes: PublicKeyBytes = hex_bytes(text, &name("public_key"))?;
                let pk = PublicKey::from_bytes(&bytes).map_err(|_| {
                    field(
                        name("public_key"),
                        "not a valid compressed BLS12-381 G2 key (encoding, curve or subgroup)",
                    )
                })?;
                Some(pk)
            }
        };
        let id: AccountId = match (&a.id, &public_key) {
            (Some(text), pk) => {
                let id = hex_bytes(text, &name("id"))?;
                if let Some(pk) = pk
                    && pk.account_id() != id
                {
                    return Err(field(
                        name("id"),
                        format!(
                            "is not the account of its public_key (that is {})",
                            hex::encode(pk.account_id())
                        ),
                    ));
                }
                id
            }
            (None, Some(pk)) => pk.account_id(),
            (None, None) => return Err(field(name("id"), "missing: give id or public_key")),
        };
        let int = amount(&a.int, &name("int"))?;
        let gas = amount(&a.gas, &name("gas"))?;
        int_total = int_total
            .checked_add(int)
            .ok_or_else(|| field(name("int"), "the genesis INT total exceeds 2^128 - 1"))?;
        gas_total = gas_total
            .checked_add(gas)
            .ok_or_else(|| field(name("gas"), "the genesis GAS total exceeds 2^128 - 1"))?;
        out.push((
            i,
            id,
            AccountRecord {
                int,
                gas,
                public_key: public_key.map(|pk| pk.to_bytes()),
                ..Default::default()
            },
        ));
    }
    out.sort_by_key(|(_, id, _)| *id);
    if let Some(w) = out.windows(2).find(|w| w[0].1 == w[1].1) {
        let (a, b) = (w[0].0.min(w[1].0), w[0].0.max(w[1].0));
        return Err(field(
            format!("genesis.accounts[{b}]"),
            format!(
                "account {} is listed twice (also genesis.accounts[{a}])",
                hex::encode(w[0].1)
            ),
        ));
    }
    Ok(out.into_iter().map(|(_, id, rec)| (id, rec)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use int_engine::crypto::bls::SecretKey;

    fn err(text: &str) -> String {
        match Config::parse(text, "int.toml").and_then(|c| c.settings(Path::new("/etc/int"))) {
            Ok(s) => panic!("accepted: {s:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn with_account(line: &str) -> String {
        DEFAULT_TOML.replace("accounts = []", &format!("accounts = [ {line} ]"))
    }

    #[test]
    fn default_text_is_the_default_config() {
        let c = Config::parse(DEFAULT_TOML, "default").unwrap();
        assert_eq!(c, Config::default());
        let s = c.settings(Path::new("/etc/int")).unwrap();
        assert_eq!(s.data_dir, Path::new("/etc/int/int-node"));
        assert_eq!(s.keystore, Path::new("/etc/int/int-keys/validator.json"));
        assert_eq!(s.rpc_addr, Some("127.0.0.1:8645".parse().unwrap()));
        assert_eq!(s.mqtt_addr, Some("127.0.0.1:1883".parse().unwrap()));
        assert_eq!((s.chain_id, s.block_ms, s.block_txs_max), (1, 500, 50_000));
        assert!(s.accel.is_none() && s.genesis.is_empty());
        // Every key of the default is commented.
        for key in ["data_dir", "chain_id", "block_ms", "block_txs_max", "accel"] {
            assert!(
                DEFAULT_TOML.contains(&format!("\n{key} = "))
                    || DEFAULT_TOML.contains(&format!("\n# {key} = "))
            );
        }
        // An empty file is the default too; absolute paths stay.
        assert_eq!(Config::parse("", "empty").unwrap(), Config::default());
        let c = Config::parse("data_dir = \"/var/int\"", "abs").unwrap();
        assert_eq!(
            c.settings(Path::new("/etc")).unwrap().data_dir,
            Path::new("/var/int")
        );
    }

    #[test]
    fn round_trip() {
        let sk = SecretKey::from_seed(&[7u8; 32]);
        let mut c = Config {
            data_dir: "/var/lib/int".into(),
            chain_id: 9,
            block_ms: 250,
            block_txs_max: 1000,
            accel: Some("cpu".into()),
            rpc: Listen { addr: "off".into() },
            mqtt: Listen {
                addr: "[::1]:1884".into(),
            },
            ..Config::default()
        };
        c.genesis.accounts = vec![
            GenesisAccount {
                id: Some(hex::encode([3u8; 32])),
                public_key: None,
                // u128::MAX with the other account's 5.
                int: "340282366920938463463374607431768211450".into(),
                gas: "0".into(),
            },
            GenesisAccount {
                id: None,
                public_key: Some(hex::encode(sk.public_key().to_bytes())),
                int: "5".into(),
                gas: "6".into(),
            },
        ];
        let back = Config::parse(&toml::to_string(&c).unwrap(), "rt").unwrap();
        assert_eq!(back, c);
        let s = back.settings(Path::new("")).unwrap();
        assert_eq!(s.rpc_addr, None);
        assert_eq!(s.mqtt_addr, Some("[::1]:1884".parse().unwrap()));
        assert_eq!(s.accel, Some(int_gpu::Accel::Cpu));
        assert_eq!(s.genesis.len(), 2);
        let key_account = s
            .genesis
            .iter()
            .find(|(id, _)| *id == sk.public_key().account_id())
            .expect("the key's account");
        assert_eq!(key_account.1.public_key, Some(sk.public_key().to_bytes()));
        assert_eq!((key_account.1.int, key_account.1.gas), (5, 6));
        let big = s.genesis.iter().find(|(id, _)| *id == [3u8; 32]).unwrap();
        assert_eq!(big.1.int, u128::MAX - 5);
        // Integers are amounts too.
        let c = Config::parse(
            &with_account(&format!(
                "{{ id = \"{}\", int = 12, gas = \"1_000\" }}",
                "ab".repeat(32)
            )),
            "ints",
        )
        .unwrap();
        let s = c.settings(Path::new("")).unwrap();
        assert_eq!((s.genesis[0].1.int, s.genesis[0].1.gas), (12, 1000));
    }

    #[test]
    fn unknown_fields_are_errors() {
        let e = err("chain_idd = 1");
        assert!(e.contains("chain_idd") && e.contains("int.toml"), "{e}");
        let e = err("[rpc]\naddr = \"off\"\nport = 1");
        assert!(e.contains("port"), "{e}");
        let e = err(&with_account("{ id = \"00\", nonce = 1 }"));
        assert!(e.contains("nonce"), "{e}");
        let e = err("[peers]\nx = 1");
        assert!(e.contains("peers"), "{e}");
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases: Vec<(String, &str, &str)> = vec![
            (
                with_account("{ id = \"zz\" }"),
                "genesis.accounts[0].id",
                "not hex",
            ),
            (
                with_account("{ id = \"abcd\" }"),
                "genesis.accounts[0].id",
                "64",
            ),
            (
                with_account(&format!("{{ public_key = \"{}\" }}", "00".repeat(96))),
                "genesis.accounts[0].public_key",
                "G2",
            ),
            (
                with_account(&format!(
                    "{{ id = \"{}\", int = \"12x\" }}",
                    "00".repeat(32)
                )),
                "genesis.accounts[0].int",
                "not an amount",
            ),
            (
                with_account(&format!("{{ id = \"{}\", gas = \"-1\" }}", "00".repeat(32))),
                "genesis.accounts[0].gas",
                "not an amount",
            ),
            (
                with_account(&format!(
                    "{{ id = \"{}\", int = \"340282366920938463463374607431768211456\" }}",
                    "00".repeat(32)
                )),
                "genesis.accounts[0].int",
                "2^128",
            ),
            (
                with_account(&format!(
                    "{{ id = \"{0}\", int = \"340282366920938463463374607431768211455\" }}, {{ id = \"{1}\", int = \"1\" }}",
                    "00".repeat(32),
                    "01".repeat(32)
                )),
                "genesis.accounts[1].int",
                "total",
            ),
            (
                with_account(&format!(
                    "{{ id = \"{0}\" }}, {{ id = \"{1}\" }}, {{ id = \"{0}\" }}",
                    "00".repeat(32),
                    "01".repeat(32)
                )),
                "genesis.accounts[2]",
                "twice (also genesis.accounts[0])",
            ),
            (
                with_account("{ int = \"1\" }"),
                "genesis.accounts[0].id",
                "missing",
            ),
            (
                DEFAULT_TOML.replace("127.0.0.1:8645", "localhost:8645"),
                "rpc.addr",
                "IP:PORT",
            ),
            (
                DEFAULT_TOML.replace("127.0.0.1:1883", "127.0.0.1"),
                "mqtt.addr",
                "IP:PORT",
            ),
            (
                DEFAULT_TOML.replace("block_ms = 500", "block_ms = 0"),
                "block_ms",
                "between",
            ),
            (
                DEFAULT_TOML.replace("block_txs_max = 50000", "block_txs_max = 99999999"),
                "block_txs_max",
                "between",
            ),
            (
                DEFAULT_TOML.replace("# accel = \"auto\"", "accel = \"fpga\""),
                "accel",
                "fpga",
            ),
            (
                DEFAULT_TOML.replace("int-keys/validator.json", "int-keys/validator"),
                "validator.keystore",
                "keystore file",
            ),
            (
                DEFAULT_TOML.replace("data_dir = \"int-node\"", "data_dir = \"\""),
                "data_dir",
                "empty",
            ),
        ];
        for (text, name, what) in cases {
            let e = err(&text);
            assert!(
                e.starts_with(&format!("{name}: ")) && e.contains(what),
                "expected {name}: …{what}…, got {e}"
            );
        }
        // Wrong types are TOML's errors, naming the key's line.
        let e = err("chain_id = \"one\"");
        assert!(e.contains("chain_id") && e.contains("int.toml"), "{e}");
        let e = err("chain_id = -1");
        assert!(e.contains("chain_id"), "{e}");
        let e = err(&with_account(&format!(
            "{{ id = \"{}\", int = -5 }}",
            "00".repeat(32)
        )));
        assert!(e.contains("genesis.accounts[0].int"), "{e}");
        let e = err("data_dir = [");
        assert!(e.contains("int.toml"), "{e}");
    }

    #[test]
    fn id_and_key_must_agree() {
        let sk = SecretKey::from_seed(&[8u8; 32]);
        let e = err(&with_account(&format!(
            "{{ id = \"{}\", public_key = \"{}\" }}",
            "00".repeat(32),
            hex::encode(sk.public_key().to_bytes())
        )));
        assert!(
            e.starts_with("genesis.accounts[0].id: is not the account"),
            "{e}"
        );
        let c = Config::parse(
            &with_account(&format!(
                "{{ id = \"0x{}\", public_key = \"{}\" }}",
                hex::encode(sk.public_key().account_id()),
                hex::encode(sk.public_key().to_bytes())
            )),
            "ok",
        )
        .unwrap();
        assert_eq!(c.settings(Path::new("")).unwrap().genesis.len(), 1);
    }
}
