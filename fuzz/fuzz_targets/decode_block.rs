//! Hostile bytes into the block, header and receipts decoders: they must
//! return `Ok` or `Err`, never panic, and every accessor of an accepted
//! message must be readable.
#![no_main]

mod common;

use common::touch_body;
use int_schemas::wire::BlockHeader;
use int_schemas::{HeaderFields, ReceiptFields, decode_block, decode_header, decode_receipts};
use libfuzzer_sys::fuzz_target;

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
