//! The off-chain half of metering and CPP, for devices and wallets: signing
//! and checking metering receipts and usage attestations.
//!
//! A **metering receipt** pays a channel up to a cumulative amount: the
//! buyer signs `channel_receipt_message(chain, channel, amount, sequence)`
//! (BLS, the scheme and ciphersuite of transaction signatures; the message
//! starts with its own domain tag, so a receipt is never a transaction).
//! Each new receipt carries a higher sequence and an amount at least the
//! last one's; the seller keeps the latest and claims it on chain with
//! `ClaimChannel` whenever it likes, up to the end of the challenge window.
//! Sequences start at 1 (the chain's channel starts at sequence 0).
//!
//! A **usage attestation** lets the seller of a CPP order release escrow
//! without the buyer sending a transaction: the buyer signs
//! `usage_attestation_message(chain, order, total)`, where `total` is the
//! number of units of the order used **in total** (cumulative, as receipts
//! are). The chain checks the seller's `ConfirmUse { qty }` against the
//! order's confirmed units: the attestation must be over `confirmed + qty`,
//! so it can be used once and never replayed.
//!
//! Pure functions: no store, no chain; a device builds the message on the
//! stack (its size is fixed).

use int_engine::crypto::bls::{PublicKey, SecretKey, Signature};
use int_schemas::market::{channel_receipt_message, usage_attestation_message};
use int_schemas::{ChannelReceipt, DealRef, SignatureBytes};

/// Signs a metering receipt: the buyer `sk` pays `channel` up to `amount`
/// GAS in total, as its `sequence`-th receipt.
pub fn sign_receipt(
    sk: &SecretKey,
    chain_id: u32,
    channel: &DealRef,
    amount: u128,
    sequence: u64,
) -> ChannelReceipt {
    let m = channel_receipt_message(chain_id, channel, amount, sequence);
    ChannelReceipt {
        channel: *channel,
        amount,
        sequence,
        signature: sk.sign(&m).to_bytes(),
    }
}

/// Whether `r` is signed by `pk` (the channel's buyer) for `chain_id`.
/// A signature that does not decode, or is not in the subgroup, is `false`.
pub fn verify_receipt(pk: &PublicKey, chain_id: u32, r: &ChannelReceipt) -> bool {
    let m = channel_receipt_message(chain_id, &r.channel, r.amount, r.sequence);
    verify(pk, &m, &r.signature)
}

/// Signs a usage attestation: the buyer `sk` attests that `total` units of
/// `order` were used in total.
pub fn sign_usage(sk: &SecretKey, chain_id: u32, order: &DealRef, total: u64) -> SignatureBytes {
    sk.sign(&usage_attestation_message(chain_id, order, total))
        .to_bytes()
}

/// Whether `sig` is `pk`'s attestation that `total` units of `order` were
/// used in total.
pub fn verify_usage(
    pk: &PublicKey,
    chain_id: u32,
    order: &DealRef,
    total: u64,
    sig: &SignatureBytes,
) -> bool {
    verify(pk, &usage_attestation_message(chain_id, order, total), sig)
}

pub(crate) fn verify(pk: &PublicKey, msg: &[u8], sig: &SignatureBytes) -> bool {
    Signature::from_bytes(sig).is_ok_and(|s| s.verify(pk, msg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use int_schemas::SkuRef;

    fn key(i: u8) -> SecretKey {
        SecretKey::from_seed(&[i; 32])
    }

    fn deal() -> DealRef {
        DealRef {
            sku: SkuRef {
                seller: [1; 32],
                seq: 4,
            },
            buyer: [2; 32],
            nonce: 9,
        }
    }

    #[test]
    fn receipts_verify_only_as_signed() {
        let (sk, other) = (key(1), key(2));
        let r = sign_receipt(&sk, 7, &deal(), 500, 3);
        assert!(verify_receipt(&sk.public_key(), 7, &r));
        assert!(!verify_receipt(&other.public_key(), 7, &r));
        assert!(!verify_receipt(&sk.public_key(), 8, &r));
        for changed in [
            ChannelReceipt { amount: 501, ..r },
            ChannelReceipt { sequence: 4, ..r },
            ChannelReceipt {
                channel: DealRef {
                    nonce: 10,
                    ..r.channel
                },
                ..r
            },
            ChannelReceipt {
                signature: [0xff; 48],
                ..r
            },
        ] {
            assert!(!verify_receipt(&sk.public_key(), 7, &changed));
        }
    }

    #[test]
    fn attestations_verify_only_as_signed() {
        let sk = key(3);
        let s = sign_usage(&sk, 7, &deal(), 5);
        assert!(verify_usage(&sk.public_key(), 7, &deal(), 5, &s));
        assert!(!verify_usage(&sk.public_key(), 7, &deal(), 4, &s));
        assert!(!verify_usage(&key(4).public_key(), 7, &deal(), 5, &s));
        // A receipt signature is not an attestation (distinct domain tags).
        let r = sign_receipt(&sk, 7, &deal(), 5, 5);
        assert!(!verify_usage(&sk.public_key(), 7, &deal(), 5, &r.signature));
    }
}
