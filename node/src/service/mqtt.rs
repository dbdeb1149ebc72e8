//! The node's side of the MQTT device gateway (`int-gateway`): the topics,
//! what their bytes are, and the thread that admits published transactions.
//!
//! | topic | who publishes | bytes |
//! |---|---|---|
//! | `int/<chain>/tx` | devices | a signed `TxEnvelope`, as is; QoS 1 is acknowledged once the mempool admitted it |
//! | `int/<chain>/blocks` | the node, retained | each committed block's `BlockHeader` (its BLAKE3 hash is the block hash) |
//! | `int/<chain>/receipts/<sender-hex>` | the node | a `Receipt` per transaction of that sender: height and index once included, or height 0 and the refusal's status |
//! | `int/<chain>/sku/<kind>/<geohash-prefix>` | the node | the `TxBody` of each successful `ListSku`, `UpdateSku`, `DelistSku` in that region, under every prefix of its geohash (one copy per subscriber) |
//!
//! `<kind>` is `power`, `network`, `data`, `compute`, `storage`, `service`,
//! or a registered kind's number.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use anyhow::{Context, Result};
use int_engine::storage::{StateView, Storage};
use int_gateway::{Bytes, Handle, Ingested, Message, Refusal, Verdict};
use int_schemas::market::BUILTIN_KINDS;
use int_schemas::wire::{Payload, TxStatus};
use int_schemas::{AccountId, PayloadSpec, ReceiptFields};

/// Where `int devnet` serves MQTT unless told otherwise (MQTT's port).
pub const DEFAULT_ADDR: &str = "127.0.0.1:1883";
/// Ingest messages admitted together (one signature batch).
const INGEST_BATCH_MAX: usize = 4096;

/// The block header topic of a chain.
pub fn blocks_topic(chain_id: u32) -> String {
    format!("int/{chain_id}/blocks")
}

/// The receipt topic of an account.
pub fn receipts_topic(chain_id: u32, account: &AccountId) -> String {
    format!("int/{chain_id}/receipts/{}", hex::encode(account))
}

/// The topics of a listing of `kind` in `region`: the whole geohash first,
/// then each shorter prefix.
pub fn sku_topics(chain_id: u32, kind: u16, region: &str) -> Vec<String> {
    let kind = BUILTIN_KINDS
        .get(usize::from(kind))
        .map_or_else(|| kind.to_string(), |k| (*k).to_string());
    let region: String = region.chars().filter(char::is_ascii_alphanumeric).collect();
    (1..=region.len())
        .rev()
        .map(|n| format!("int/{chain_id}/sku/{kind}/{}", &region[..n]))
        .collect()
}

/// What a refusal's status tells a 5.0 client in its PUBACK.
fn refusal(status: TxStatus) -> Refusal {
    match status {
        TxStatus::Malformed | TxStatus::WrongChain => Refusal::PayloadInvalid,
        TxStatus::MempoolFull => Refusal::Busy,
        _ => Refusal::Unspecified,
    }
}

/// The receipt of a transaction refused before any block, and its topic;
/// `None` when the bytes do not even name a sender.
fn refusal_receipt(chain_id: u32, envelope: &[u8], status: TxStatus) -> Option<Message> {
    let tx = int_schemas::decode_tx(envelope).ok()?;
    let sender = tx.body.sender().0;
    let receipt = int_schemas::build_receipt(&ReceiptFields {
        tx_hash: *blake3::hash(tx.body_bytes).as_bytes(),
        height: 0,
        index: 0,
        status,
        fee_charged: 0,
    });
    Some(Message {
        topics: vec![receipts_topic(chain_id, &sender)],
        payload: Bytes::from(receipt),
        retain: false,
    })
}

/// Admits what devices publish: takes the gateway's ingest batches, runs
/// them through `admit` (one answer per input), answers the gateway, and
/// publishes a receipt for each refusal. Returns when the gateway or the
/// node stops.
pub fn serve_ingest(
    input: &Receiver<Vec<Ingested>>,
    handle: &Handle,
    chain_id: u32,
    admit: &dyn Fn(Vec<Vec<u8>>) -> Vec<Result<(), TxStatus>>,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        let mut batch = match input.recv_timeout(Duration::from_millis(50)) {
            Ok(b) => b,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        while batch.len() < INGEST_BATCH_MAX {
            match input.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        let payloads: Vec<Vec<u8>> = batch.iter().map(|i| i.payload.to_vec()).collect();
        let answers = admit(payloads);
        debug_assert_eq!(answers.len(), batch.len());
        let mut verdicts = Vec::with_capacity(batch.len());
        let mut receipts = Vec::new();
        for (ingested, answer) in batch.iter().zip(answers) {
            verdicts.push((
                ingested.ticket,
                match answer {
                    Ok(()) => Verdict::Admitted,
                    Err(status) => {
                        receipts.extend(refusal_receipt(chain_id, &ingested.payload, status));
                        Verdict::Refused(refusal(status))
                    }
                },
            ));
        }
        if handle.verdicts(verdicts).is_err() {
            return;
        }
        if !receipts.is_empty() && handle.publish(receipts).is_err() {
            return;
        }
    }
}

/// Publishes the messages of each committed height it is sent, until the
/// sender is gone or the node stops: the block loop hands heights over and
/// never waits on this work.
pub fn serve_blocks(
    heights: &Receiver<u64>,
    handle: &Handle,
    store: &dyn Storage,
    chain_id: u32,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        let height = match heights.recv_timeout(Duration::from_millis(50)) {
            Ok(h) => h,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let msgs = store
            .snapshot()
            .map_err(anyhow::Error::from)
            .and_then(|view| block_messages(&*view, chain_id, height));
        match msgs {
            Ok(msgs) => {
                if handle.publish(msgs).is_err() {
                    return;
                }
            }
            Err(err) => tracing::warn!(%err, height, "MQTT messages of a block"),
        }
    }
}

/// The messages of a committed block: its header (retained), a receipt per
/// transaction on its sender's topic, and each listing change on its
/// region's topics. Read back from the store, so they say what was
/// committed.
pub fn block_messages(store: &dyn StateView, chain_id: u32, height: u64) -> Result<Vec<Message>> {
    let block_bytes = store
        .block(chain_id, height)?
        .with_context(|| format!("block {height} is not stored"))?;
    let block = int_schemas::decode_block(&block_bytes).context("decoding a stored block")?;
    let receipts_bytes = store
        .receipts(chain_id, height)?
        .with_context(|| format!("receipts of block {height} are not stored"))?;
    let receipts =
        int_schemas::decode_receipts(&receipts_bytes).context("decoding stored receipts")?;
    if receipts.receipts().len() != block.bodies.len() {
        anyhow::bail!(
            "block {height} holds {} transactions but {} receipts",
            block.bodies.len(),
            receipts.receipts().len()
        );
    }
    let mut out = Vec::with_capacity(1 + block.bodies.len());
    out.push(Message {
        topics: vec![blocks_topic(chain_id)],
        payload: Bytes::copy_from_slice(block.header_bytes),
        retain: true,
    });
    for ((body, body_bytes), r) in block.bodies.iter().zip(receipts.receipts().iter()) {
        let fields = ReceiptFields::from_wire(&r);
        let sender = body.sender().0;
        out.push(Message {
            topics: vec![receipts_topic(chain_id, &sender)],
            payload: Bytes::from(int_schemas::build_receipt(&fields)),
            retain: false,
        });
        // Only a successful listing change has a listing message; the
        // payload is decoded (owned) only for those.
        let listing_change = matches!(
            body.payload_type(),
            Payload::ListSku | Payload::UpdateSku | Payload::DelistSku
        );
        if fields.status != TxStatus::Ok || !listing_change {
            continue;
        }
        let listing = match int_schemas::payload_spec(body) {
            Ok(PayloadSpec::ListSku(l)) => Some((l.kind, l.region.clone())),
            Ok(PayloadSpec::UpdateSku { sku, .. } | PayloadSpec::DelistSku { sku }) => {
                int_systems::market::sku(store, chain_id, &sku)?
                    .map(|v| (v.listing.kind, v.listing.region.clone()))
            }
            _ => None,
        };
        if let Some((kind, region)) = listing {
            out.push(Message {
                topics: sku_topics(chain_id, kind, &region),
                payload: Bytes::copy_from_slice(body_bytes),
                retain: false,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics() {
        assert_eq!(int_gateway::Config::for_chain(7).ingest_topic, "int/7/tx");
        assert_eq!(blocks_topic(7), "int/7/blocks");
        assert_eq!(
            receipts_topic(7, &[0xab; 32]),
            format!("int/7/receipts/{}", "ab".repeat(32))
        );
        assert_eq!(
            sku_topics(7, 1, "u4p"),
            vec![
                "int/7/sku/network/u4p",
                "int/7/sku/network/u4",
                "int/7/sku/network/u"
            ]
        );
        assert_eq!(
            sku_topics(7, 300, "9q"),
            vec!["int/7/sku/300/9q", "int/7/sku/300/9"]
        );
        // Wildcards in a hostile region never reach a topic.
        assert_eq!(sku_topics(7, 0, "a/#+"), vec!["int/7/sku/power/a"]);
    }

    #[test]
    fn refusals_name_the_sender_or_nothing() {
        assert!(refusal_receipt(1, b"junk", TxStatus::Malformed).is_none());
        let body = int_schemas::build_tx_body(&int_schemas::TxBodySpec {
            chain_id: 1,
            sender: [3; 32],
            nonce: 0,
            fee: 1,
            payload: PayloadSpec::Transfer {
                to: [4; 32],
                amount: 1,
                token: int_schemas::wire::Token::Int,
            },
        });
        let env = int_schemas::build_envelope(&body, &[0; 48]);
        let m = refusal_receipt(1, &env, TxStatus::BadSignature).expect("a receipt");
        assert_eq!(m.topics, vec![receipts_topic(1, &[3; 32])]);
        let r = int_schemas::decode_receipt(&m.payload).expect("decodes");
        assert_eq!(r.status(), TxStatus::BadSignature);
        assert_eq!(r.height(), 0);
        assert_eq!(r.tx_hash().0, *blake3::hash(&body).as_bytes());
    }
}
