//! Hostile bytes into the transaction decoders: they must return `Ok` or
//! `Err`, never panic, and every accessor of an accepted transaction must be
//! readable.
#![no_main]

use int_schemas::wire::TxBody;
use int_schemas::{amount, decode_body, decode_tx, payload_spec};
use libfuzzer_sys::fuzz_target;

fn touch_body(b: &TxBody<'_>) {
    let _ = (b.chain_id(), b.sender().0, b.nonce(), amount(b.fee()));
    let _ = b.payload_type().variant_name();
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
