//! Hostile bytes into the block, header and receipts decoders: they must
//! return `Ok` or `Err`, never panic, and every accessor of an accepted
//! message must be readable.
#![no_main]

use int_schemas::wire::{BlockHeader, TxBody};
use int_schemas::{
    HeaderFields, ReceiptFields, amount, decode_block, decode_header, decode_receipts, payload_spec,
};
use libfuzzer_sys::fuzz_target;

fn touch_body(b: &TxBody<'_>) {
    let _ = (b.chain_id(), b.sender().0, b.nonce(), amount(b.fee()));
    // Every accessor of the payload, through the one decoder the node
    // uses; an accepted body's payload always decodes.
    let spec = payload_spec(b).expect("an accepted body carries a valid payload");
    let _ = format!("{spec:?}");
    if let Some(a) = b.payload_as_anon_intent() {
        let _ = (a.proof().0, a.root().0, a.nullifier().0, a.target().0);
        let _ = (a.epoch(), a.cluster(), a.payload().len());
    }
    if let Some(c) = b.payload_as_set_centroids() {
        let _ = c.coords().iter().map(u32::from).sum::<u32>();
    }
}

fn touch_header(h: &BlockHeader<'_>) {
    let f = HeaderFields::from_wire(h);
    assert_eq!(f.tx_count, h.tx_count());
    let _ = format!("{h:?}");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = decode_block(data) {
        touch_header(&b.header);
        // Unchecked in the generated code; safe because decode_block verified it.
        touch_header(&b.block.header_nested_flatbuffer());
        let _ = (b.block.tx_signature().0, b.block.proposer_signature().0);
        let txs = b.block.txs();
        assert_eq!(txs.len(), b.bodies.len());
        for (i, (body, bytes)) in b.bodies.iter().enumerate() {
            touch_body(body);
            assert_eq!(txs.get(i).body().bytes(), *bytes);
            touch_body(&txs.get(i).body_nested_flatbuffer());
        }
    }
    if let Ok(h) = decode_header(data) {
        touch_header(&h);
    }
    if let Ok(r) = decode_receipts(data) {
        let _ = r.height();
        for rec in r.receipts().iter() {
            let _ = ReceiptFields::from_wire(&rec);
        }
    }
});
