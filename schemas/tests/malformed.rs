//! Hostile input: every decoder answers `Ok` or `Err` for any bytes, never
//! panics, and whatever it accepts can be read through every accessor the
//! node uses without panicking. Also round trips of the builders.

use int_schemas::wire::{
    BlockHeader, BlockReceipts, BlockTx, Bytes32, DeviceKind, Payload, Token, TxBody, TxBodyArgs,
    TxEnvelope, TxStatus, U128,
};
use int_schemas::{
    AnonIntentSpec, BlockRef, CENTROID_COORDS_MAX, ClusterBuy, DecodeError, HeaderFields,
    INTENT_PAYLOAD_BYTES_MAX, PayloadSpec, ReceiptFields, SkuRef, TxBodySpec, TxRef, amount,
    build_block, build_envelope, build_header, build_receipt, build_receipts, build_tx_body,
    decode_block, decode_body, decode_header, decode_receipt, decode_receipts, decode_tx,
    payload_spec,
};
use proptest::prelude::*;

// ---------------------------------------------------------------- accessors

fn touch_bytes32(b: &Bytes32) -> u32 {
    b.0.iter().map(|&x| x as u32).sum::<u32>() + b.v().iter().map(|x| x as u32).sum::<u32>()
}

fn touch_u128(x: &U128) -> u128 {
    let _ = (x.lo(), x.hi());
    amount(x)
}

/// Reads every field of a verified body, as the node does.
fn touch_body(b: &TxBody<'_>) {
    let _ = b.chain_id();
    touch_bytes32(b.sender());
    let _ = b.nonce();
    touch_u128(b.fee());
    let _ = b.payload_type().variant_name();
    let _ = b.payload();
    let mut known = 0;
    if let Some(t) = b.payload_as_transfer() {
        known += 1;
        touch_bytes32(t.to());
        touch_u128(t.amount());
        let _ = t.token().variant_name();
        let _ = format!("{t:?}");
    }
    if let Some(r) = b.payload_as_register_device() {
        known += 1;
        let _ = r.public_key().0;
        let _ = r.public_key().v().iter().count();
        let _ = r.pop().0;
        let _ = r.pop().v().iter().count();
        let _ = r.kind().variant_name();
        touch_bytes32(r.metadata_hash());
        let _ = format!("{r:?}");
    }
    if let Some(r) = b.payload_as_register_identity() {
        known += 1;
        let _ = r.commitment().v().iter().count();
        let _ = format!("{r:?}");
    }
    if let Some(c) = b.payload_as_set_centroids() {
        known += 1;
        let _ = (c.epoch(), c.dims(), c.clusters());
        assert!(c.coords().len() <= CENTROID_COORDS_MAX);
        let _ = c.coords().iter().map(u32::from).sum::<u32>();
        let _ = format!("{c:?}");
    }
    if let Some(a) = b.payload_as_anon_intent() {
        known += 1;
        let _ = a.proof().v().iter().count();
        let _ = (a.root().0, a.nullifier().0, a.centroid_commitment().0);
        touch_bytes32(a.target());
        let _ = (a.epoch(), a.cluster());
        assert!(a.payload().len() <= INTENT_PAYLOAD_BYTES_MAX);
        let _ = format!("{a:?}");
    }
    // The market and token payloads: every field read through the owned
    // form (payload_spec reads them all).
    if (Payload::ListSku.0..=Payload::BidGas.0).contains(&b.payload_type().0) {
        known += 1;
        let spec = payload_spec(b).expect("a decoded body's payload is valid");
        let _ = (format!("{spec:?}"), spec.escrow());
    }
    // decode_body only lets known payloads through.
    assert_eq!(known, 1, "decoded body carries no known payload");
    payload_spec(b).expect("a decoded body's payload is valid");
    let _ = format!("{b:?}");
}

fn touch_tx(tx: &TxRef<'_>) {
    touch_body(&tx.body);
    let _ = tx.signature();
    let _ = tx.envelope.signature().v().iter().count();
    assert_eq!(tx.envelope.body().bytes(), tx.body_bytes);
    // Safe only because decode_tx verified the nested body.
    touch_body(&tx.envelope.body_nested_flatbuffer());
    let _ = format!("{:?}", tx.envelope);
}

fn touch_header(h: &BlockHeader<'_>) {
    let f = HeaderFields::from_wire(h);
    let _ = (h.chain_id(), h.height(), h.time_ms(), h.tx_count());
    touch_bytes32(h.parent_hash());
    touch_bytes32(h.state_root());
    touch_bytes32(h.tx_root());
    touch_bytes32(h.receipts_root());
    touch_bytes32(h.proposer());
    assert_eq!(f.tx_count, h.tx_count());
    let _ = format!("{h:?}");
}

fn touch_block(b: &BlockRef<'_>) {
    touch_header(&b.header);
    assert_eq!(b.block.header().bytes(), b.header_bytes);
    // Safe only because decode_block verified the nested header.
    touch_header(&b.block.header_nested_flatbuffer());
    let _ = b.block.tx_signature().0;
    let _ = b.block.proposer_signature().0;
    let txs = b.block.txs();
    assert_eq!(txs.len(), b.bodies.len());
    for (i, (body, bytes)) in b.bodies.iter().enumerate() {
        touch_body(body);
        let tx: BlockTx<'_> = txs.get(i);
        assert_eq!(tx.body().bytes(), *bytes);
        touch_body(&tx.body_nested_flatbuffer());
    }
}

fn touch_receipts(r: &BlockReceipts<'_>) {
    let _ = r.height();
    for rec in r.receipts().iter() {
        let f = ReceiptFields::from_wire(&rec);
        let _ = (rec.height(), rec.index(), rec.status().variant_name());
        touch_bytes32(rec.tx_hash());
        touch_u128(rec.fee_charged());
        let _ = f;
    }
    let _ = format!("{r:?}");
}

/// Feeds `bytes` to every decoder and reads whatever they accept.
fn decode_all(bytes: &[u8]) {
    if let Ok(tx) = decode_tx(bytes) {
        touch_tx(&tx);
    }
    if let Ok(b) = decode_body(bytes) {
        touch_body(&b);
    }
    if let Ok(b) = decode_block(bytes) {
        touch_block(&b);
    }
    if let Ok(h) = decode_header(bytes) {
        touch_header(&h);
    }
    if let Ok(r) = decode_receipts(bytes) {
        touch_receipts(&r);
    }
    if let Ok(r) = decode_receipt(bytes) {
        let _ = (ReceiptFields::from_wire(&r), format!("{r:?}"));
    }
    if let Some(c) = ClusterBuy::decode(bytes) {
        // What decodes can be locked: its escrow fits u128.
        assert!(int_schemas::market::total(c.qty, c.max_unit_price).is_some());
    }
}

// ---------------------------------------------------------------- strategies

fn token() -> impl Strategy<Value = Token> {
    prop_oneof![
        Just(Token::Int),
        Just(Token::Gas),
        any::<u8>().prop_map(Token)
    ]
}

fn device_kind() -> impl Strategy<Value = DeviceKind> {
    prop_oneof![
        Just(DeviceKind::Sensor),
        Just(DeviceKind::Other),
        any::<u8>().prop_map(DeviceKind)
    ]
}

fn u128_edge() -> impl Strategy<Value = u128> {
    prop_oneof![
        Just(0u128),
        Just(u128::MAX),
        Just(u64::MAX as u128),
        any::<u128>()
    ]
}

/// A canonical BN254 field element (below the modulus, whose top byte is 0x30).
fn field() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>().prop_map(|mut x| {
        x[0] &= 0x2f;
        x
    })
}

fn payload() -> impl Strategy<Value = PayloadSpec> {
    prop_oneof![
        (any::<[u8; 32]>(), u128_edge(), token())
            .prop_map(|(to, amount, token)| PayloadSpec::Transfer { to, amount, token }),
        (
            prop::array::uniform32(any::<u8>()),
            any::<[u8; 32]>(),
            any::<[u8; 16]>(),
            device_kind(),
            any::<[u8; 32]>()
        )
            .prop_map(|(pk_a, pk_b, pop_a, kind, metadata_hash)| {
                // 96- and 48-byte arrays from smaller generated pieces.
                let mut public_key = [0u8; 96];
                public_key[..32].copy_from_slice(&pk_a);
                public_key[32..64].copy_from_slice(&pk_b);
                public_key[64..].copy_from_slice(&metadata_hash);
                let mut pop = [0u8; 48];
                pop[..16].copy_from_slice(&pop_a);
                pop[16..].copy_from_slice(&pk_a);
                PayloadSpec::RegisterDevice {
                    public_key,
                    pop,
                    kind,
                    metadata_hash,
                }
            }),
        field().prop_map(|commitment| PayloadSpec::RegisterIdentity { commitment }),
        (any::<u64>(), 0u8..=12, 0u8..=12, any::<u16>()).prop_map(|(epoch, dims, clusters, c)| {
            PayloadSpec::SetCentroids {
                epoch,
                dims,
                clusters,
                coords: vec![c; dims as usize * clusters as usize],
            }
        }),
        (
            field(),
            field(),
            any::<u64>(),
            any::<u32>(),
            prop::collection::vec(any::<u8>(), 0..=INTENT_PAYLOAD_BYTES_MAX),
        )
            .prop_map(|(a, b, epoch, cluster, payload)| {
                let mut proof = [0u8; 128];
                proof[..32].copy_from_slice(&a);
                proof[96..].copy_from_slice(&b);
                PayloadSpec::AnonIntent(Box::new(AnonIntentSpec {
                    proof,
                    root: a,
                    epoch,
                    nullifier: b,
                    cluster,
                    centroid_commitment: a,
                    target: b,
                    payload,
                }))
            }),
    ]
}

fn body_spec() -> impl Strategy<Value = TxBodySpec> {
    (
        any::<u32>(),
        any::<[u8; 32]>(),
        any::<u64>(),
        u128_edge(),
        payload(),
    )
        .prop_map(|(chain_id, sender, nonce, fee, payload)| TxBodySpec {
            chain_id,
            sender,
            nonce,
            fee,
            payload,
        })
}

fn header_fields() -> impl Strategy<Value = HeaderFields> {
    (
        (any::<u32>(), any::<u64>(), any::<u64>(), any::<u32>()),
        (
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
        ),
    )
        .prop_map(
            |(
                (chain_id, height, time_ms, tx_count),
                (parent_hash, state_root, tx_root, receipts_root, proposer),
            )| HeaderFields {
                chain_id,
                height,
                parent_hash,
                state_root,
                tx_root,
                receipts_root,
                time_ms,
                proposer,
                tx_count,
            },
        )
}

fn receipt() -> impl Strategy<Value = ReceiptFields> {
    (
        any::<[u8; 32]>(),
        any::<u64>(),
        any::<u32>(),
        any::<u16>(),
        u128_edge(),
    )
        .prop_map(
            |(tx_hash, height, index, status, fee_charged)| ReceiptFields {
                tx_hash,
                height,
                index,
                status: TxStatus(status),
                fee_charged,
            },
        )
}

fn sig() -> impl Strategy<Value = [u8; 48]> {
    (any::<[u8; 32]>(), any::<[u8; 16]>()).prop_map(|(a, b)| {
        let mut s = [0u8; 48];
        s[..32].copy_from_slice(&a);
        s[32..].copy_from_slice(&b);
        s
    })
}

fn envelope() -> impl Strategy<Value = Vec<u8>> {
    (body_spec(), sig()).prop_map(|(spec, s)| build_envelope(&build_tx_body(&spec), &s))
}

fn block() -> impl Strategy<Value = Vec<u8>> {
    (
        header_fields(),
        prop::collection::vec(body_spec(), 0..6),
        sig(),
        sig(),
    )
        .prop_map(|(mut h, specs, s1, s2)| {
            h.tx_count = specs.len() as u32;
            let bodies: Vec<Vec<u8>> = specs.iter().map(build_tx_body).collect();
            build_block(&build_header(&h), bodies.iter().map(|b| &b[..]), &s1, &s2)
        })
}

fn receipts() -> impl Strategy<Value = Vec<u8>> {
    (any::<u64>(), prop::collection::vec(receipt(), 0..8))
        .prop_map(|(h, rs)| build_receipts(h, &rs))
}

/// A valid message of any kind.
fn valid_message() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        envelope(),
        body_spec().prop_map(|s| build_tx_body(&s)),
        block(),
        header_fields().prop_map(|h| build_header(&h)),
        receipts(),
        receipt().prop_map(|r| build_receipt(&r)),
    ]
}

/// Overwrites 1..=8 positions of `bytes` with random values.
fn mutate(mut bytes: Vec<u8>, edits: &[(prop::sample::Index, u8)]) -> Vec<u8> {
    if !bytes.is_empty() {
        for (i, v) in edits {
            let at = i.index(bytes.len());
            bytes[at] = *v;
        }
    }
    bytes
}

// ---------------------------------------------------------------- properties

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// A receipt on its own decodes to the fields it was built from.
    #[test]
    fn single_receipt_round_trips(r in receipt()) {
        let bytes = build_receipt(&r);
        let got = decode_receipt(&bytes).map(|w| ReceiptFields::from_wire(&w));
        prop_assert_eq!(got.ok(), Some(r));
    }

    #[test]
    fn cluster_buys_round_trip_and_their_damage_is_refused(
        seller in field(),
        seq in any::<u64>(),
        qty in any::<u64>(),
        max in u128_edge(),
        reference in any::<u64>(),
        cut in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..=8),
    ) {
        let c = ClusterBuy { sku: SkuRef { seller, seq }, qty, max_unit_price: max, reference };
        let bytes = c.encode();
        let fits = int_schemas::market::total(qty, max).is_some();
        prop_assert_eq!(ClusterBuy::decode(&bytes), fits.then_some(c));
        // A strict prefix is never a purchase; a mutation never panics.
        let cut = cut.index(bytes.len());
        prop_assert_eq!(ClusterBuy::decode(&bytes[..cut]), None);
        decode_all(&mutate(bytes.clone(), &edits));
        // Without the identifier it is an opaque payload.
        let mut other = bytes;
        other[4] ^= 0x20;
        prop_assert_eq!(ClusterBuy::decode(&other), None);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..8192)) {
        decode_all(&bytes);
    }

    #[test]
    fn truncated_messages_never_panic(msg in valid_message(), cut in any::<prop::sample::Index>()) {
        let cut = cut.index(msg.len() + 1);
        decode_all(&msg[..cut]);
        // The tail alone, too: offsets then point anywhere.
        decode_all(&msg[cut..]);
    }

    #[test]
    fn mutated_messages_never_panic(
        msg in valid_message(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..=8),
    ) {
        decode_all(&mutate(msg, &edits));
    }

    #[test]
    fn envelope_with_garbage_body_never_panics(
        body in prop::collection::vec(any::<u8>(), 0..512),
        s in sig(),
    ) {
        // The outer buffer verifies; the nested body is garbage.
        let env = build_envelope(&body, &s);
        decode_all(&env);
    }

    #[test]
    fn envelope_with_mutated_body_never_panics(
        spec in body_spec(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..=8),
        s in sig(),
    ) {
        let body = mutate(build_tx_body(&spec), &edits);
        let env = build_envelope(&body, &s);
        decode_all(&env);
    }

    #[test]
    fn block_with_garbage_parts_never_panics(
        h in header_fields(),
        header_edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..=8),
        specs in prop::collection::vec(body_spec(), 0..4),
        body_edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..=8),
        s in sig(),
    ) {
        let mut h = h;
        h.tx_count = specs.len() as u32;
        let header = mutate(build_header(&h), &header_edits);
        let bodies: Vec<Vec<u8>> = specs
            .iter()
            .map(|sp| mutate(build_tx_body(sp), &body_edits))
            .collect();
        let block = build_block(&header, bodies.iter().map(|b| &b[..]), &s, &s);
        decode_all(&block);
    }

    #[test]
    fn unknown_payload_tags_are_refused(tag in Payload::ENUM_MAX + 1..=255, payload_of in 0u8..2, spec in body_spec()) {
        // A body whose union tag is unknown, pointing at a real table.
        let mut fbb = flatbuffers::FlatBufferBuilder::new();
        let to = Bytes32([1; 32]);
        let amt = int_schemas::wire_amount(5);
        let inner = if payload_of == 0 {
            int_schemas::wire::Transfer::create(
                &mut fbb,
                &int_schemas::wire::TransferArgs { to: Some(&to), amount: Some(&amt), token: Token::Int },
            )
            .as_union_value()
        } else {
            let pk = int_schemas::wire::BlsPublicKey([2; 96]);
            let pop = int_schemas::wire::BlsSignature([3; 48]);
            int_schemas::wire::RegisterDevice::create(
                &mut fbb,
                &int_schemas::wire::RegisterDeviceArgs {
                    public_key: Some(&pk),
                    pop: Some(&pop),
                    kind: DeviceKind::Meter,
                    metadata_hash: Some(&to),
                },
            )
            .as_union_value()
        };
        let sender = Bytes32(spec.sender);
        let fee = int_schemas::wire_amount(spec.fee);
        let body = TxBody::create(
            &mut fbb,
            &TxBodyArgs {
                chain_id: spec.chain_id,
                sender: Some(&sender),
                nonce: spec.nonce,
                fee: Some(&fee),
                payload_type: Payload(tag),
                payload: Some(inner),
            },
        );
        fbb.finish_minimal(body);
        let bytes = fbb.finished_data().to_vec();
        prop_assert!(matches!(decode_body(&bytes), Err(DecodeError::UnknownPayload(t)) if t == tag));
        let env = build_envelope(&bytes, &[0; 48]);
        prop_assert!(matches!(decode_tx(&env), Err(DecodeError::UnknownPayload(t)) if t == tag));
        decode_all(&bytes);
        decode_all(&env);
    }

    #[test]
    fn tx_round_trips(spec in body_spec(), s in sig()) {
        let body = build_tx_body(&spec);
        let env = build_envelope(&body, &s);
        let tx = decode_tx(&env).expect("a built envelope decodes");
        touch_tx(&tx);
        prop_assert_eq!(tx.body_bytes, &body[..]);
        prop_assert_eq!(tx.signature(), &s);
        let b = tx.body;
        prop_assert_eq!(b.chain_id(), spec.chain_id);
        prop_assert_eq!(b.sender().0, spec.sender);
        prop_assert_eq!(b.nonce(), spec.nonce);
        prop_assert_eq!(amount(b.fee()), spec.fee);
        prop_assert_eq!(payload_spec(&b).expect("a built payload is valid"), spec.payload);
    }

    #[test]
    fn header_round_trips(h in header_fields()) {
        let bytes = build_header(&h);
        let d = decode_header(&bytes).expect("a built header decodes");
        prop_assert_eq!(HeaderFields::from_wire(&d), h);
    }

    #[test]
    fn block_round_trips(
        h in header_fields(),
        specs in prop::collection::vec(body_spec(), 0..6),
        s1 in sig(),
        s2 in sig(),
    ) {
        let mut h = h;
        h.tx_count = specs.len() as u32;
        let header = build_header(&h);
        let bodies: Vec<Vec<u8>> = specs.iter().map(build_tx_body).collect();
        let bytes = build_block(&header, bodies.iter().map(|b| &b[..]), &s1, &s2);
        let b = decode_block(&bytes).expect("a built block decodes");
        touch_block(&b);
        prop_assert_eq!(HeaderFields::from_wire(&b.header), h);
        prop_assert_eq!(b.header_bytes, &header[..]);
        prop_assert_eq!(b.block.tx_signature().0, s1);
        prop_assert_eq!(b.block.proposer_signature().0, s2);
        prop_assert_eq!(b.bodies.len(), bodies.len());
        for ((_, got), want) in b.bodies.iter().zip(&bodies) {
            prop_assert_eq!(*got, &want[..]);
        }
    }

    #[test]
    fn receipts_round_trip(height in any::<u64>(), rs in prop::collection::vec(receipt(), 0..16)) {
        let bytes = build_receipts(height, &rs);
        let d = decode_receipts(&bytes).expect("built receipts decode");
        touch_receipts(&d);
        prop_assert_eq!(d.height(), height);
        let got: Vec<ReceiptFields> = d.receipts().iter().map(|r| ReceiptFields::from_wire(&r)).collect();
        prop_assert_eq!(got, rs);
    }
}

#[test]
fn empty_and_tiny_inputs_are_refused() {
    for n in 0..16 {
        let zeros = vec![0u8; n];
        assert!(decode_tx(&zeros).is_err());
        assert!(decode_body(&zeros).is_err());
        assert!(decode_block(&zeros).is_err());
        assert!(decode_header(&zeros).is_err());
        decode_all(&zeros);
        decode_all(&vec![0xff; n]);
    }
}

#[test]
fn envelope_without_payload_is_refused() {
    // payload_type NONE with no payload: the verifier refuses the required union.
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let sender = Bytes32([0; 32]);
    let fee = int_schemas::wire_amount(0);
    // (The generated builder would refuse to build it: lay it out by hand.)
    let start = fbb.start_table();
    fbb.push_slot_always(TxBody::VT_SENDER, sender);
    fbb.push_slot_always(TxBody::VT_FEE, fee);
    let body = fbb.end_table(start);
    fbb.finish_minimal(body);
    let bytes = fbb.finished_data().to_vec();
    assert!(decode_body(&bytes).is_err());
    let env = build_envelope(&bytes, &[0; 48]);
    assert!(decode_tx(&env).is_err());
}

#[test]
fn envelope_without_body_is_refused() {
    // A required field missing in the outer buffer.
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let s = int_schemas::wire::BlsSignature([0; 48]);
    let start = fbb.start_table();
    fbb.push_slot_always(TxEnvelope::VT_SIGNATURE, s);
    let env = fbb.end_table(start);
    fbb.finish_minimal(env);
    assert!(matches!(
        decode_tx(fbb.finished_data()),
        Err(DecodeError::Malformed(_))
    ));
}

#[test]
fn block_type_is_not_a_tx() {
    // A valid block fed to the tx decoders (and the other way round).
    let h = build_header(&HeaderFields::default());
    let block = build_block(&h, std::iter::empty(), &[0; 48], &[0; 48]);
    assert!(decode_tx(&block).is_err());
    decode_all(&block);
    let body = build_tx_body(&TxBodySpec {
        chain_id: 1,
        sender: [0; 32],
        nonce: 0,
        fee: 0,
        payload: PayloadSpec::Transfer {
            to: [0; 32],
            amount: 0,
            token: Token::Int,
        },
    });
    let env = build_envelope(&body, &[0; 48]);
    assert!(decode_block(&env).is_err());
    decode_all(&env);
}
