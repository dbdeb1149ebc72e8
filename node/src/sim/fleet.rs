//! Simulated devices: deterministic keys, genesis funding, and signed
//! registrations and transfers, as a fleet of real devices would send them.

use int_engine::crypto::bls::{SecretKey, tx_message};
use int_engine::storage::AccountRecord;
use int_schemas::wire::{DeviceKind, Token};
use int_schemas::{AccountId, PayloadSpec, TxBodySpec, build_envelope, build_tx_body};
use rayon::prelude::*;

/// INT each simulated device starts with.
pub const DEVICE_INT: u128 = 1_000_000_000_000;
/// GAS each simulated device starts with (fees are paid in GAS).
pub const DEVICE_GAS: u128 = 1_000_000_000_000;
/// The fee each simulated transaction offers.
pub const DEVICE_FEE: u128 = 1;

/// Milliseconds since the Unix epoch: the time the devnet and the harness
/// stamp their blocks with (0 for a clock set before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The genesis account of a validator: registered with its key, so its
/// header signatures verify, and with no balance (it earns the fees).
pub fn validator_account(sk: &SecretKey) -> (AccountId, AccountRecord) {
    let pk = sk.public_key();
    (
        pk.account_id(),
        AccountRecord {
            public_key: Some(pk.to_bytes()),
            ..Default::default()
        },
    )
}

/// A fleet of simulated devices with keys derived from a seed.
pub struct Fleet {
    /// Secret keys, by device index.
    pub keys: Vec<SecretKey>,
    /// Account ids, by device index.
    pub ids: Vec<AccountId>,
}

/// The key seed of device `i` of a fleet.
pub fn device_seed(fleet_seed: &[u8; 32], i: u64) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(fleet_seed);
    h.update(b"INT/devnet/device");
    h.update(&i.to_le_bytes());
    *h.finalize().as_bytes()
}

impl Fleet {
    /// Derives `n` devices from `seed` (in parallel: a public key costs a
    /// G2 scalar multiplication).
    pub fn derive(n: usize, seed: &[u8; 32]) -> Self {
        let keys: Vec<SecretKey> = (0..n as u64)
            .into_par_iter()
            .map(|i| SecretKey::from_seed(&device_seed(seed, i)))
            .collect();
        let ids = keys
            .par_iter()
            .map(|k| k.public_key().account_id())
            .collect();
        Self { keys, ids }
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the fleet is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Genesis accounts funding every device (unregistered: devices
    /// register on chain with a proof of possession).
    pub fn genesis_alloc(&self) -> Vec<(AccountId, AccountRecord)> {
        self.ids
            .iter()
            .map(|id| {
                (
                    *id,
                    AccountRecord {
                        int: DEVICE_INT,
                        gas: DEVICE_GAS,
                        ..Default::default()
                    },
                )
            })
            .collect()
    }

    /// The signed registration of device `i`.
    pub fn register_tx(&self, chain_id: u32, i: usize, nonce: u64) -> Vec<u8> {
        let k = &self.keys[i];
        let payload = PayloadSpec::RegisterDevice {
            public_key: k.public_key().to_bytes(),
            pop: k.prove_possession().to_bytes(),
            kind: DeviceKind::Sensor,
            metadata_hash: *blake3::hash(&(i as u64).to_le_bytes()).as_bytes(),
        };
        self.signed(chain_id, i, nonce, payload)
    }

    /// A signed INT transfer from device `from` to `to`.
    pub fn transfer_tx(
        &self,
        chain_id: u32,
        from: usize,
        nonce: u64,
        to: AccountId,
        amount: u128,
    ) -> Vec<u8> {
        let payload = PayloadSpec::Transfer {
            to,
            amount,
            token: Token::Int,
        };
        self.signed(chain_id, from, nonce, payload)
    }

    fn signed(&self, chain_id: u32, i: usize, nonce: u64, payload: PayloadSpec) -> Vec<u8> {
        let body = build_tx_body(&TxBodySpec {
            chain_id,
            sender: self.ids[i],
            nonce,
            fee: DEVICE_FEE,
            payload,
        });
        let sig = self.keys[i].sign(&tx_message(chain_id, &body));
        build_envelope(&body, &sig.to_bytes())
    }
}
