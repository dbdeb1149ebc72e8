//! What both decode targets do with an accepted transaction body.

use int_schemas::wire::TxBody;
use int_schemas::{amount, payload_spec};

/// Reads every field of a body the decoders accepted, the payload through
/// `payload_spec` (the one decoder the node uses, which reads every field of
/// every payload kind): an accepted body's payload always decodes.
pub fn touch_body(b: &TxBody<'_>) {
    let _ = (b.chain_id(), b.sender().0, b.nonce(), amount(b.fee()));
    let _ = b.payload_type().variant_name();
    let spec = payload_spec(b).expect("an accepted body carries a valid payload");
    // An intent's payload may hold a market purchase; what it holds is
    // hostile too.
    if let int_schemas::PayloadSpec::AnonIntent(a) = &spec {
        let _ = int_schemas::ClusterBuy::decode(&a.payload);
    }
    let _ = spec.escrow();
    let _ = format!("{spec:?} {b:?}");
}
