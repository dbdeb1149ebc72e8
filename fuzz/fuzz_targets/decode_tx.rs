//! Hostile bytes into the transaction decoders (and the intent payload's
//! market purchase): they must return `Ok` or
//! `Err`, never panic, and every accessor of an accepted transaction must be
//! readable.
#![no_main]

mod common;

use common::touch_body;
use int_schemas::{decode_body, decode_tx};
use libfuzzer_sys::fuzz_target;

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
    // The same bytes as an intent's payload (a market purchase or opaque).
    let _ = int_schemas::ClusterBuy::decode(data);
});
