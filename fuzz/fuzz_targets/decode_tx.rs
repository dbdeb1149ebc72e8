//! Hostile bytes into the transaction decoders: they must return `Ok` or
//! `Err`, never panic, and every accessor of an accepted transaction must be
//! readable.
#![no_main]

use int_schemas::wire::TxBody;
use int_schemas::{amount, decode_body, decode_tx};
use libfuzzer_sys::fuzz_target;

fn touch_body(b: &TxBody<'_>) {
    let _ = (b.chain_id(), b.sender().0, b.nonce(), amount(b.fee()));
    let _ = b.payload_type().variant_name();
    let mut known = 0;
    if let Some(t) = b.payload_as_transfer() {
        known += 1;
        let _ = (t.to().0, amount(t.amount()), t.token().variant_name());
    }
    if let Some(r) = b.payload_as_register_device() {
        known += 1;
        let _ = (r.public_key().0, r.pop().0, r.kind().variant_name());
        let _ = r.metadata_hash().0;
    }
    assert_eq!(
        known, 1,
        "an accepted body carries exactly one known payload"
    );
    let _ = format!("{b:?}");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(tx) = decode_tx(data) {
        touch_body(&tx.body);
        let _ = tx.signature();
        assert_eq!(tx.envelope.body().bytes(), tx.body_bytes);
        // Unchecked in the generated code; safe here because decode_tx verified it.
        touch_body(&tx.envelope.body_nested_flatbuffer());
    }
    if let Ok(b) = decode_body(data) {
        touch_body(&b);
    }
});
