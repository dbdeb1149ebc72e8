//! The block's buyer signatures, checked together before the SKU groups
//! run: each `ClaimChannel` (the buyer's metering receipt) and each
//! seller's `ConfirmUse` (the buyer's usage attestation).
//!
//! They go through one BLS batch ([`bls::batch_verify_seeded`]: one final
//! exponentiation for the block, Miller loops on every core) instead of a
//! pairing check each. When the batch fails, every item is checked on its
//! own (in parallel), so one forged receipt costs the block a second pass.
//! The batch's scalars come from a BLAKE3 hash of the chain, the height and
//! every (key, message, signature) of the batch, not from a random source:
//! consensus code uses no randomness the block does not carry, so every
//! node reaches the same verdict. Someone who holds valid signatures of the
//! batch's messages could make altered ones pass together; no one can make
//! a receipt pass for a key they cannot sign with.
//!
//! The message of an attestation depends on the order's confirmed units,
//! which an earlier confirmation in the same block may change; the
//! precheck uses the committed order, and the handler checks the
//! signature again on its own when its message differs from the one
//! prechecked ([`SigChecks::verdict`]). A precheck therefore never decides
//! anything the handler would decide otherwise.

use std::collections::BTreeMap;

use int_engine::crypto::bls::{self, BatchItem, BlsG1Backend, DST_SIG, PublicKey, Signature};
use int_engine::storage::StateView;
use int_schemas::market::{channel_receipt_message, usage_attestation_message};
use int_schemas::{AccountId, PayloadSpec};
use rayon::prelude::*;

use super::MarketError;
use super::exec::TxWork;
use super::records::{OrderRecord, order_key, stored};

/// The prechecked signatures, by transaction index: the message checked
/// and whether the buyer's key signed it.
#[derive(Debug, Default)]
pub(crate) struct SigChecks(BTreeMap<u32, (Vec<u8>, bool)>);

impl SigChecks {
    /// The precheck's verdict on transaction `index` signing `msg`; `None`
    /// when it was not prechecked, or for another message.
    pub fn verdict(&self, index: u32, msg: &[u8]) -> Option<bool> {
        self.0
            .get(&index)
            .filter(|(m, _)| m.as_slice() == msg)
            .map(|(_, ok)| *ok)
    }

    /// How many signatures were prechecked.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// One signature to check: the buyer, the message, the signature bytes.
struct Item {
    index: u32,
    buyer: AccountId,
    msg: Vec<u8>,
    sig: [u8; 48],
}

/// The signature a transaction needs checked, with the message it must
/// sign (as of the committed state).
fn wanted(
    store: &dyn StateView,
    chain_id: u32,
    t: &TxWork<'_>,
) -> Result<Option<Item>, MarketError> {
    Ok(match t.payload {
        PayloadSpec::ClaimChannel {
            channel,
            amount,
            sequence,
            buyer_signature,
        } if t.sender == channel.sku.seller => Some(Item {
            index: t.index,
            buyer: channel.buyer,
            msg: channel_receipt_message(chain_id, channel, *amount, *sequence).to_vec(),
            sig: *buyer_signature,
        }),
        PayloadSpec::ConfirmUse {
            order,
            qty,
            attestation: Some(sig),
        } if t.sender != order.buyer && t.sender == order.sku.seller => {
            let Some(o) = stored(store, chain_id, &order_key(order), OrderRecord::decode)? else {
                return Ok(None);
            };
            o.confirmed.checked_add(*qty).map(|total| Item {
                index: t.index,
                buyer: order.buyer,
                msg: usage_attestation_message(chain_id, order, total).to_vec(),
                sig: *sig,
            })
        }
        _ => None,
    })
}

/// The batch's scalar seed: a hash of everything in it.
fn seed(chain_id: u32, height: u64, batch: &[BatchItem<'_>]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("INT market receipt batch v1");
    h.update(&chain_id.to_be_bytes());
    h.update(&height.to_be_bytes());
    for b in batch {
        h.update(&b.pk.to_bytes());
        h.update(&(b.msg.len() as u64).to_be_bytes());
        h.update(b.msg);
        h.update(&b.sig.to_bytes());
    }
    *h.finalize().as_bytes()
}

/// Checks the signatures of the block's market transactions `txs`
/// together (see the module documentation).
pub(crate) fn precheck(
    store: &dyn StateView,
    chain_id: u32,
    height: u64,
    txs: &[TxWork<'_>],
    parallel: bool,
    g1: &dyn BlsG1Backend,
) -> Result<SigChecks, MarketError> {
    let mut items = Vec::new();
    for t in txs {
        if let Some(i) = wanted(store, chain_id, t)? {
            items.push(i);
        }
    }
    // Keys and signatures that do not decode fail without a pairing.
    let mut good: Vec<(usize, PublicKey, Signature)> = Vec::with_capacity(items.len());
    for (n, i) in items.iter().enumerate() {
        let pk = store
            .account(chain_id, &i.buyer)?
            .and_then(|r| r.public_key)
            .and_then(|b| PublicKey::from_bytes(&b).ok());
        if let (Some(pk), Ok(sig)) = (pk, Signature::from_bytes(&i.sig)) {
            good.push((n, pk, sig));
        }
    }
    let batch: Vec<BatchItem<'_>> = good
        .iter()
        .map(|(n, pk, sig)| BatchItem {
            pk,
            msg: &items[*n].msg,
            sig,
        })
        .collect();
    let verdicts: Vec<bool> =
        if bls::batch_verify_seeded_on(&batch, DST_SIG, seed(chain_id, height, &batch), g1) {
            vec![true; batch.len()]
        } else if parallel {
            batch
                .par_iter()
                .map(|b| b.sig.verify(b.pk, b.msg))
                .collect()
        } else {
            batch.iter().map(|b| b.sig.verify(b.pk, b.msg)).collect()
        };
    let mut ok = vec![false; items.len()];
    for ((n, _, _), v) in good.iter().zip(verdicts) {
        ok[*n] = v;
    }
    Ok(SigChecks(
        items
            .into_iter()
            .zip(ok)
            .map(|(i, ok)| (i.index, (i.msg, ok)))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use int_engine::crypto::bls::SecretKey;
    use int_engine::storage::{AccountRecord, BlockWrite, Head, state_writes};
    use int_schemas::{DealRef, SkuRef};

    use super::*;
    use crate::market::receipt::sign_receipt;

    const CHAIN: u32 = 3;

    fn key(i: u8) -> SecretKey {
        SecretKey::from_seed(&[i; 32])
    }

    fn deal(buyer: &SecretKey, nonce: u64) -> DealRef {
        DealRef {
            sku: SkuRef {
                seller: [9; 32],
                seq: 1,
            },
            buyer: buyer.public_key().account_id(),
            nonce,
        }
    }

    #[test]
    fn the_batch_gives_each_signature_its_own_verdict() {
        let dir = tempfile::tempdir().unwrap();
        let storage = int_engine::storage::open(dir.path()).unwrap();
        let (a, b, keyless) = (key(1), key(2), key(3));
        let accounts: Vec<(AccountId, AccountRecord)> = [&a, &b]
            .iter()
            .map(|k| {
                (
                    k.public_key().account_id(),
                    AccountRecord {
                        public_key: Some(k.public_key().to_bytes()),
                        ..Default::default()
                    },
                )
            })
            .collect();
        let state = storage
            .snapshot()
            .unwrap()
            .prepare_state(CHAIN, &state_writes(&accounts, &[]))
            .unwrap();
        storage
            .commit_block(&BlockWrite {
                chain_id: CHAIN,
                accounts: &accounts,
                state: &state,
                height: 0,
                block: b"",
                receipts: b"",
                tx_hashes: &[],
                head: Head::default(),
                objects: &[],
            })
            .unwrap();
        let store = storage.snapshot().unwrap();
        let claim = |r: int_schemas::ChannelReceipt| PayloadSpec::ClaimChannel {
            channel: r.channel,
            amount: r.amount,
            sequence: r.sequence,
            buyer_signature: r.signature,
        };
        let payloads = [
            claim(sign_receipt(&a, CHAIN, &deal(&a, 0), 10, 1)),
            // Signed by b for a's channel.
            claim(sign_receipt(&b, CHAIN, &deal(&a, 1), 10, 1)),
            claim(sign_receipt(&b, CHAIN, &deal(&b, 0), 10, 1)),
            // The buyer has no account, so no key.
            claim(sign_receipt(&keyless, CHAIN, &deal(&keyless, 0), 10, 1)),
            // Not a point.
            PayloadSpec::ClaimChannel {
                channel: deal(&a, 2),
                amount: 1,
                sequence: 1,
                buyer_signature: [0xff; 48],
            },
        ];
        let seller = [9; 32];
        let mut txs: Vec<TxWork<'_>> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| TxWork {
                index: i as u32,
                sender: seller,
                nonce: i as u64,
                payload: p,
                escrow: p.escrow(),
                intent: None,
            })
            .collect();
        // A claim not sent by the seller is refused before any signature.
        let by_buyer = claim(sign_receipt(&a, CHAIN, &deal(&a, 3), 10, 1));
        txs.push(TxWork {
            index: 9,
            sender: a.public_key().account_id(),
            nonce: 0,
            payload: &by_buyer,
            escrow: by_buyer.escrow(),
            intent: None,
        });
        for parallel in [true, false] {
            let checks = precheck(&*store, CHAIN, 5, &txs, parallel, &bls::CpuG1).unwrap();
            assert_eq!(checks.len(), 5);
            let msg = |i: usize| msg_of(&txs[i]);
            let got: Vec<Option<bool>> =
                (0..5).map(|i| checks.verdict(i as u32, &msg(i))).collect();
            assert_eq!(
                got,
                vec![
                    Some(true),
                    Some(false),
                    Some(true),
                    Some(false),
                    Some(false)
                ]
            );
            // Another message: no verdict, the handler checks it itself.
            assert_eq!(checks.verdict(0, &msg(2)), None);
            assert_eq!(checks.verdict(9, &msg(0)), None);
        }
        // All good: one batch, all true.
        let good = precheck(&*store, CHAIN, 5, &[txs[0], txs[2]], true, &bls::CpuG1).unwrap();
        assert_eq!(good.verdict(0, &msg_of(&txs[0])), Some(true));
        assert_eq!(good.verdict(2, &msg_of(&txs[2])), Some(true));
    }

    fn msg_of(t: &TxWork<'_>) -> Vec<u8> {
        match t.payload {
            PayloadSpec::ClaimChannel {
                channel,
                amount,
                sequence,
                ..
            } => channel_receipt_message(CHAIN, channel, *amount, *sequence).to_vec(),
            _ => unreachable!(),
        }
    }
}
