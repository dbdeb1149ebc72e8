//! Checks the Merkle proofs the node returns (`int state account ID --proof
//! --json`, the RPC's `int_getAccount` with `proof`) as a client would:
//! decode the hex bytes, recompute the account's value hash from the fields
//! shown, and run the storage-free verifier
//! (`int_engine::state::twig_proof`) against the state root the answer
//! names, never trusting the node's own `proof_ok`. Tampered proofs (a
//! sibling byte flipped, another value, another key, the opposite claim)
//! must be refused.

use int_engine::state::proof::Hash32;
use int_engine::state::twig_proof::{account_key, verify_twig_proof as verify_proof};
use int_engine::storage::AccountRecord;
use serde_json::Value;

/// 32 bytes from the hex string at `v[key]`.
fn hash_at(v: &Value, key: &str) -> Hash32 {
    let s = v[key].as_str().unwrap_or_else(|| panic!("{key}: {v}"));
    let b = hex::decode(s).unwrap_or_else(|e| panic!("{key} is not hex ({e}): {v}"));
    b.try_into()
        .unwrap_or_else(|_| panic!("{key} is not 32 bytes: {v}"))
}

/// The value hash the state commits to for the account `v` shows, computed
/// from its id and fields (nonce, balances, key, device kind, metadata hash), or
/// `None` for an absent account.
fn value_hash(v: &Value) -> Option<Hash32> {
    if v["exists"] != true {
        assert_eq!(v["exists"], false, "{v}");
        return None;
    }
    let num = |key: &str| -> u128 {
        v[key]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{key}: {v}"))
    };
    let public_key = match &v["public_key"] {
        Value::Null => None,
        Value::String(s) => Some(
            hex::decode(s)
                .ok()
                .and_then(|b| b.try_into().ok())
                .unwrap_or_else(|| panic!("public_key: {v}")),
        ),
        other => panic!("public_key {other}: {v}"),
    };
    let rec = AccountRecord {
        nonce: v["nonce"].as_u64().unwrap_or_else(|| panic!("nonce: {v}")),
        int: num("int"),
        gas: num("gas"),
        public_key,
        device_kind: v["device_kind"]
            .as_u64()
            .and_then(|k| u8::try_from(k).ok())
            .unwrap_or_else(|| panic!("device_kind: {v}")),
        metadata_hash: hash_at(v, "metadata_hash"),
    };
    let h = rec.state_hash(&hash_at(v, "id"));
    assert_eq!(
        hex::encode(h),
        v["value_hash"].as_str().unwrap_or(""),
        "{v}"
    );
    Some(h)
}

/// Verifies the proof in the account answer `v` against `v`'s state root,
/// and checks that tampered versions of it are refused. Returns whether it
/// was an inclusion proof.
pub fn check_account_proof(v: &Value) -> bool {
    let root = hash_at(v, "state_root");
    // The key the log proves is the id under the account tag, computed
    // here, not taken from the answer.
    let key = account_key(&hash_at(v, "id"));
    assert_eq!(
        hex::encode(key),
        v["state_key"].as_str().unwrap_or(""),
        "{v}"
    );
    let value = value_hash(v);
    let bytes = hex::decode(v["proof"].as_str().unwrap_or_else(|| panic!("proof: {v}")))
        .unwrap_or_else(|e| panic!("proof is not hex ({e}): {v}"));
    if let Err(e) = verify_proof(&root, &key, value.as_ref(), &bytes) {
        panic!("the node's proof does not verify ({e}): {v}");
    }
    let refused = |what: &str, root: &Hash32, key: &Hash32, value: Option<&Hash32>, b: &[u8]| {
        assert!(
            verify_proof(root, key, value, b).is_err(),
            "a proof with {what} verified: {v}"
        );
    };
    // The twig's siblings start after the tail (8 bytes), the entry's
    // length (4) and bytes, and its twig's 256 bytes of active bits: flip
    // a byte of the first.
    let entry_len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    let first_sibling = 12 + entry_len + 256;
    let mut m = bytes.clone();
    m[first_sibling] ^= 0x01;
    refused("a sibling byte flipped", &root, &key, value.as_ref(), &m);
    // And a byte of the entry's value (its last byte).
    let mut m = bytes.clone();
    m[12 + entry_len - 1] ^= 0x01;
    refused("an entry byte flipped", &root, &key, value.as_ref(), &m);
    // Another value, and the opposite claim.
    match value {
        Some(h) => {
            let mut other = h;
            other[0] ^= 0x01;
            refused("another value hash", &root, &key, Some(&other), &bytes);
            refused("the claim 'absent'", &root, &key, None, &bytes);
        }
        None => refused("the claim 'present'", &root, &key, Some(&[7; 32]), &bytes),
    }
    // Another key: its first bit flipped takes it out of the entry (an
    // inclusion) or out of the bracket (an exclusion proves absent only
    // the keys between its entry's key and next key).
    let mut other = key;
    other[0] ^= 0x80;
    let (entry_key, next_key) = (&bytes[21..53], &bytes[53..85]);
    if value.is_some() || !(entry_key < &other[..] && &other[..] < next_key) {
        refused("another key", &root, &other, value.as_ref(), &bytes);
    }
    // Another root.
    let mut other_root = root;
    other_root[31] ^= 0x01;
    refused("another root", &other_root, &key, value.as_ref(), &bytes);
    value.is_some()
}
